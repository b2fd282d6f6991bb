"""Single-particle image stacks: images, orientations, in-plane shifts, CTF parameters.

A :class:`ParticleStack` holds everything a model-based SPA reconstruction needs to know
about ``P`` particle images of ``n × n`` pixels. It is what :mod:`cryowedge.spa.io` reads
from (and writes to) a RELION STAR file with its MRCS stack(s).

Conventions (docs/conventions.md; RELION's own where cryowedge has none)
-------------------------------------------------------------------------
* **Images** ``(P, n, n)`` float32, each ``(y, x)``: row ``y`` (``data[y][x]`` of the MRC
  file, RELION's image Y), column ``x``. The centre pixel is ``n // 2`` on both axes (RELION's
  ``(int)(xdim / 2)`` as well).
* **Rotations** ``(P, 3, 3)`` float64 act on ``(x, y, z)`` column vectors and are
  :func:`cryowedge.geometry.rotations.euler_zyz_to_matrix` of RELION's ``rlnAngleRot``,
  ``rlnAngleTilt``, ``rlnAnglePsi``. ``R`` maps a map coordinate ``r`` to the projection
  frame ``R @ r``: rows 1–2 are the detector axes ``(x, y)`` (the thesis's ``M⊥``), row 3 the
  beam direction. So, without shift and CTF, image ``p`` is the projection of the reference
  rotated by ``R_p`` (RELION: "orientations rotate the reference into the particle image"),
  ``image_p = sum_z rotate_volume(reference, R_p)``, and a map point at centred ``(x, y, z)``
  lands at detector ``(x', y') = (R_p @ r)[:2]``, image pixel ``(n//2 + y', n//2 + x')``.
* **Shifts** ``shifts_px`` ``(P, 2)`` float64 are ``(dy, dx)`` in pixels, with the meaning of
  the tilt series' ``shifts_px``: the projection of the map centre (the particle centre) lies
  at pixel ``(n//2 + dy, n//2 + dx)`` of the image; :func:`shift_images` by ``-shifts_px``
  centres the particle. RELION's ``rlnOriginXAngst``/``rlnOriginYAngst`` (``rlnOriginX/Y`` in
  pixels before RELION 3.1) are the translation that brings the particle *to* the centre
  ("translations shift observations into the reference projection"; RELION's
  ``ObservationModel::predictObservation`` shifts the reference projection by ``−origin``).
  Hence ``dx = −rlnOriginXAngst / pixel_size``, ``dy = −rlnOriginYAngst / pixel_size``.
* **CTF** parameters (:class:`CTFParams`) are in Å, degrees, kV, mm, Å² and follow
  :func:`cryowedge.simulate.ctf.ctf_2d` (RELION's and CTFFIND's meaning of ``rlnDefocusU``,
  ``rlnDefocusV``, ``rlnDefocusAngle``: the angle from the image ``+x`` axis towards ``+y``).
  ``ctf_2d`` has ``C(0) = −A``: a dense object is imaged dark, as in raw micrographs.
  RELION's CTF has the opposite sign (``C(0) = +A``), because RELION particles are normally
  extracted with inverted contrast (dense = bright). :attr:`ParticleStack.inverted_contrast`
  records which of the two the images are; :func:`cryowedge.spa.ctf_model.stack_ctfs` returns
  the CTF that maps a positive density to *these* images (``−ctf_2d`` when inverted).
* **Half sets** ``half_sets`` ``(P,)`` int8 in ``{1, 2}`` (RELION ``rlnRandomSubset``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from cryowedge.geometry.rotations import euler_zyz_to_matrix, matrix_to_euler_zyz

__all__ = ["CTFParams", "ParticleStack", "shift_images"]

logger = logging.getLogger(__name__)

# Tolerance of the orthonormality check of rotation matrices: STAR files store angles with
# 6 decimals (1e-8 rad), float32 round trips give ~1e-7; anything beyond 1e-4 is not a rotation.
_ROTATION_TOL = 1e-4


def _vector(value: Any, n: int, name: str, *, default: float | None = None) -> np.ndarray:
    """A read-only ``(n,)`` float64 copy of a scalar or ``(n,)`` array, checked finite."""
    if value is None:
        if default is None:
            raise ValueError(f"{name} is required.")
        value = default
    arr = np.array(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(
            f"{name} must be a number or an array of {n} values, got shape {arr.shape}."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name} of particle {i} is {arr[i]!r}; it must be a finite number.")
    arr.setflags(write=False)
    return arr


def _index(indices: ArrayLike | slice, n: int) -> np.ndarray:
    """Integer indices (``(k,)`` int64) of ``indices`` (ints, a boolean mask or a slice)."""
    if isinstance(indices, slice):
        return np.arange(n)[indices]
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"a boolean mask must have shape ({n},), got {idx.shape}.")
        return np.flatnonzero(idx)
    if idx.ndim == 0:
        idx = idx[None]
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(
            f"indices must be integers, a boolean mask or a slice, got {idx.dtype} {idx.shape}."
        )
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(
            f"particle index out of range for {n} particles: {idx.min()}..{idx.max()}."
        )
    return np.arange(n)[idx.astype(np.int64)]


@dataclass(frozen=True, eq=False)
class CTFParams:
    """Per-particle CTF parameters (one value per particle in every field).

    Each field is a read-only ``(P,)`` float64 array; the constructor also takes scalars
    (broadcast to all particles) once ``defocus_u_angstrom`` fixes ``P``.

    Attributes
    ----------
    defocus_u_angstrom : (P,) float64
        Defocus along the azimuth ``astigmatism_angle_deg`` (Å, positive = underfocus;
        RELION ``rlnDefocusU``).
    defocus_v_angstrom : (P,) float64
        Defocus perpendicular to it (Å; ``rlnDefocusV``). Default: ``defocus_u_angstrom``.
    astigmatism_angle_deg : (P,) float64
        Azimuth of the ``u`` direction, degrees from the image ``+x`` axis towards ``+y``
        (``rlnDefocusAngle``). Default 0.
    voltage_kv : (P,) float64
        Acceleration voltage (kV, > 0; ``rlnVoltage``). Default 300.
    spherical_aberration_mm : (P,) float64
        ``C_s`` (mm, >= 0; ``rlnSphericalAberration``). Default 2.7.
    amplitude_contrast : (P,) float64
        Amplitude-contrast fraction in ``[0, 1]`` (``rlnAmplitudeContrast``). Default 0.07.
    b_factor_angstrom2 : (P,) float64
        Envelope B-factor (Å², >= 0): the CTF is multiplied by ``exp(−B k² / 4)``, ``k`` in
        cycles/Å (``rlnCtfBfactor``, RELION's convention). Default 0.
    phase_shift_deg : (P,) float64
        Extra phase shift (degrees, e.g. a phase plate; ``rlnPhaseShift``). Default 0.
    scale : (P,) float64
        Multiplies the CTF (``rlnCtfScalefactor``). Default 1.
    aperture_cutoff_per_angstrom : float or None
        Objective-aperture cut-off frequency (cycles/Å, > 0), the same for every particle:
        the CTF is 0 beyond it (thesis §1.1, ``Â(k) = 1`` for ``|k| <= cut-off``). ``None``
        (default): no aperture. RELION has no such column; it is not written to STAR files.
    """

    defocus_u_angstrom: np.ndarray
    defocus_v_angstrom: np.ndarray | None = None
    astigmatism_angle_deg: np.ndarray | float = 0.0
    voltage_kv: np.ndarray | float = 300.0
    spherical_aberration_mm: np.ndarray | float = 2.7
    amplitude_contrast: np.ndarray | float = 0.07
    b_factor_angstrom2: np.ndarray | float = 0.0
    phase_shift_deg: np.ndarray | float = 0.0
    scale: np.ndarray | float = 1.0
    aperture_cutoff_per_angstrom: float | None = None

    def __post_init__(self) -> None:
        u = np.array(self.defocus_u_angstrom, dtype=np.float64)
        if u.ndim != 1 or u.size == 0:
            raise ValueError(
                f"defocus_u_angstrom must be a (P,) array with P >= 1 (Å), got shape {u.shape}; "
                "use CTFParams.constant(P, ...) for equal values."
            )
        n = u.size
        set_ = object.__setattr__
        set_(self, "defocus_u_angstrom", _vector(u, n, "defocus_u_angstrom"))
        v = self.defocus_u_angstrom if self.defocus_v_angstrom is None else self.defocus_v_angstrom
        set_(self, "defocus_v_angstrom", _vector(v, n, "defocus_v_angstrom"))
        for name in (
            "astigmatism_angle_deg",
            "voltage_kv",
            "spherical_aberration_mm",
            "amplitude_contrast",
            "b_factor_angstrom2",
            "phase_shift_deg",
            "scale",
        ):
            set_(self, name, _vector(getattr(self, name), n, name))
        checks = (
            ("voltage_kv", self.voltage_kv <= 0, "> 0 kV"),
            ("spherical_aberration_mm", self.spherical_aberration_mm < 0, ">= 0 mm"),
            (
                "amplitude_contrast",
                (self.amplitude_contrast < 0) | (self.amplitude_contrast > 1),
                "in [0, 1]",
            ),
            (
                "b_factor_angstrom2",
                self.b_factor_angstrom2 < 0,
                ">= 0 Å² (the envelope exp(-B k²/4) must decay)",
            ),
        )
        for name, bad, rule in checks:
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"{name} of particle {i} is {getattr(self, name)[i]!r}; it must be {rule}."
                )
        cut = self.aperture_cutoff_per_angstrom
        if cut is not None:
            cut = float(cut)
            if not (np.isfinite(cut) and cut > 0):
                raise ValueError(
                    f"aperture_cutoff_per_angstrom must be > 0 cycles/Å (or None), got {cut!r}."
                )
            set_(self, "aperture_cutoff_per_angstrom", cut)

    @classmethod
    def constant(cls, n_particles: int, **values: Any) -> CTFParams:
        """``n_particles`` particles sharing the given values (keyword names of the fields)."""
        if isinstance(n_particles, bool) or not isinstance(n_particles, (int, np.integer)):
            raise ValueError(f"n_particles must be an integer, got {n_particles!r}.")
        if n_particles < 1:
            raise ValueError(f"n_particles must be >= 1, got {n_particles}.")
        u = values.pop("defocus_u_angstrom")
        return cls(np.broadcast_to(np.asarray(u, dtype=np.float64), (n_particles,)), **values)

    @property
    def n_particles(self) -> int:
        """Number of particles ``P``."""
        return int(self.defocus_u_angstrom.size)

    def __len__(self) -> int:
        return self.n_particles

    def subset(self, indices: ArrayLike | slice) -> CTFParams:
        """The parameters of particles ``indices`` (ints, a boolean mask or a slice)."""
        idx = _index(indices, self.n_particles)
        if idx.size == 0:
            raise ValueError("the selection holds no particle; a CTFParams needs at least one.")
        fields = {
            f.name: getattr(self, f.name)[idx]
            for f in dataclasses.fields(self)
            if f.name != "aperture_cutoff_per_angstrom"
        }
        return CTFParams(**fields, aperture_cutoff_per_angstrom=self.aperture_cutoff_per_angstrom)

    def ctf_2d_kwargs(self, i: int) -> dict[str, float]:
        """Keyword arguments of :func:`cryowedge.simulate.ctf.ctf_2d` for particle ``i``.

        ``scale`` and the aperture are not ``ctf_2d`` arguments; :mod:`cryowedge.spa.ctf_model`
        applies them.
        """
        return {
            "defocus_u_angstrom": float(self.defocus_u_angstrom[i]),
            "defocus_v_angstrom": float(self.defocus_v_angstrom[i]),
            "astigmatism_angle_deg": float(self.astigmatism_angle_deg[i]),
            "voltage_kv": float(self.voltage_kv[i]),
            "spherical_aberration_mm": float(self.spherical_aberration_mm[i]),
            "amplitude_contrast": float(self.amplitude_contrast[i]),
            "b_factor_angstrom2": float(self.b_factor_angstrom2[i]),
            "phase_shift_deg": float(self.phase_shift_deg[i]),
        }


def _labels(value: Any, n: int, name: str, allowed: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one label per particle, shape ({n},), got {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_float = np.asarray(arr, dtype=np.float64)
        if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
            raise ValueError(f"{name} must be whole numbers, got {arr[:5].tolist()}….")
        arr = as_float
    out = np.array(arr, dtype=np.int64)
    if allowed is not None:
        bad = ~np.isin(out, allowed)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{name} of particle {i} is {out[i]}; allowed values are "
                f"{', '.join(map(str, allowed))}."
            )
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class ParticleStack:
    """``P`` single-particle images with their pose, CTF and bookkeeping labels.

    Conventions: see the module docstring (shift sign, rotation direction, CTF sign).

    Attributes
    ----------
    images : numpy.ndarray
        ``(P, n, n)`` float32 images ``(y, x)``; may be a read-only memory map of an MRCS
        file (see :func:`cryowedge.spa.io.read_relion_particles`). Not copied.
    pixel_size_angstrom : float
        Pixel size (Å, > 0), the same for every image.
    rotations : numpy.ndarray or None
        ``(P, 3, 3)`` float64 rotation matrices on ``(x, y, z)`` vectors
        (``euler_zyz_to_matrix(rot, tilt, psi)``), or ``None`` when the orientations are
        unknown (e.g. freshly extracted particles).
    shifts_px : numpy.ndarray
        ``(P, 2)`` float64 ``(dy, dx)`` pixels: the particle centre lies at
        ``(n//2 + dy, n//2 + dx)``. Default zeros.
    ctf : CTFParams or None
        Per-particle CTF parameters, or ``None`` (no CTF known).
    half_sets : numpy.ndarray or None
        ``(P,)`` int64 labels 1 or 2 (RELION ``rlnRandomSubset``), or ``None``.
    class_ids : numpy.ndarray or None
        ``(P,)`` int64 class labels (``rlnClassNumber``), or ``None``.
    optics_groups : numpy.ndarray or None
        ``(P,)`` int64 optics-group numbers (``rlnOpticsGroup``, from 1), or ``None``.
    inverted_contrast : bool
        ``True`` when dense matter is *bright* in the images (RELION's usual extraction with
        inverted contrast; the CTF that models them is ``−ctf_2d``, RELION's own sign).
        ``False`` (default): dense matter is dark, as in a raw micrograph and as
        :func:`cryowedge.simulate.ctf.ctf_2d` models it.
    metadata : pandas.DataFrame or None
        ``P`` rows of other per-particle STAR columns (e.g. ``rlnMicrographName``,
        ``rlnCoordinateX``), carried through :meth:`subset` and written back by
        :func:`cryowedge.spa.io.write_relion_particles`.
    """

    images: np.ndarray
    pixel_size_angstrom: float
    rotations: np.ndarray | None = None
    shifts_px: np.ndarray | None = None
    ctf: CTFParams | None = None
    half_sets: np.ndarray | None = None
    class_ids: np.ndarray | None = None
    optics_groups: np.ndarray | None = None
    inverted_contrast: bool = False
    metadata: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        images = self.images
        if not isinstance(images, np.ndarray):
            images = np.asarray(images)
        if images.ndim != 3 or images.shape[0] < 1:
            raise ValueError(
                f"images must be a (P, n, n) stack with P >= 1, got shape {images.shape}; "
                "add a leading axis for a single image (image[None])."
            )
        if images.shape[1] != images.shape[2]:
            raise ValueError(
                f"images must be square (P, n, n) for single-particle analysis, got "
                f"{images.shape[1]}×{images.shape[2]} (y × x); pad or crop them to a square box."
            )
        if images.dtype != np.float32:
            if not np.issubdtype(images.dtype, np.number) or np.iscomplexobj(images):
                raise ValueError(f"images must be real numbers, got dtype {images.dtype}.")
            images = images.astype(np.float32)
        set_(self, "images", images)
        n = images.shape[0]
        px = self.pixel_size_angstrom
        try:
            px = float(px)
        except (TypeError, ValueError):
            raise ValueError(f"pixel_size_angstrom must be a number (Å), got {px!r}.") from None
        if not (np.isfinite(px) and px > 0):
            raise ValueError(
                f"pixel_size_angstrom must be > 0 Å, got {px!r}; pass the detector pixel size."
            )
        set_(self, "pixel_size_angstrom", px)
        if self.rotations is not None:
            rot = np.array(self.rotations, dtype=np.float64)
            if rot.shape != (n, 3, 3):
                raise ValueError(
                    f"rotations must be ({n}, 3, 3) matrices, got shape {rot.shape}; build them "
                    "with euler_zyz_to_matrix or use ParticleStack.from_angles."
                )
            bad = ~np.isfinite(rot).all(axis=(1, 2))
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"rotations[{i}] has non-finite entries: {rot[i].tolist()}.")
            err = np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max(axis=(1, 2))
            det = np.linalg.det(rot)
            bad = (err > _ROTATION_TOL) | (det <= 0)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"rotations[{i}] is not a rotation (|R Rᵀ − I| = {err[i]:.2g}, det = "
                    f"{det[i]:.3g}); pass proper rotation matrices (det +1)."
                )
            rot.setflags(write=False)
            set_(self, "rotations", rot)
        shifts = np.zeros((n, 2)) if self.shifts_px is None else np.array(self.shifts_px, float)
        if shifts.shape != (n, 2):
            raise ValueError(f"shifts_px must be ({n}, 2) as (dy, dx) pixels, got {shifts.shape}.")
        bad = ~np.isfinite(shifts).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"shifts_px[{i}] is {shifts[i].tolist()}; shifts must be finite.")
        shifts.setflags(write=False)
        set_(self, "shifts_px", shifts)
        if self.ctf is not None:
            if not isinstance(self.ctf, CTFParams):
                raise TypeError(f"ctf must be a CTFParams or None, got {type(self.ctf).__name__}.")
            if self.ctf.n_particles != n:
                raise ValueError(
                    f"ctf holds {self.ctf.n_particles} particles but there are {n} images."
                )
        if self.half_sets is not None:
            set_(self, "half_sets", _labels(self.half_sets, n, "half_sets", (1, 2)))
        if self.class_ids is not None:
            set_(self, "class_ids", _labels(self.class_ids, n, "class_ids"))
        if self.optics_groups is not None:
            set_(self, "optics_groups", _labels(self.optics_groups, n, "optics_groups"))
        set_(self, "inverted_contrast", bool(self.inverted_contrast))
        if self.metadata is not None:
            if not isinstance(self.metadata, pd.DataFrame) or len(self.metadata) != n:
                raise ValueError(
                    f"metadata must be a pandas.DataFrame with {n} rows, got "
                    f"{type(self.metadata).__name__} of length {len(self.metadata)}."
                )
            set_(self, "metadata", self.metadata.reset_index(drop=True))

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_angles(
        cls, images: ArrayLike, angles_deg: ArrayLike | None, pixel_size_angstrom: float, **kwargs
    ) -> ParticleStack:
        """Build a stack from ``(P, 3)`` RELION Euler angles ``(rot, tilt, psi)`` in degrees.

        Other keyword arguments are the dataclass fields (``shifts_px``, ``ctf``, …).
        """
        rotations = None
        if angles_deg is not None:
            ang = np.asarray(angles_deg, dtype=np.float64)
            if ang.ndim != 2 or ang.shape[1] != 3:
                raise ValueError(
                    f"angles_deg must be (P, 3) as (rot, tilt, psi) degrees, got shape {ang.shape}."
                )
            rotations = euler_zyz_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2])
        return cls(np.asarray(images), pixel_size_angstrom, rotations=rotations, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def n_particles(self) -> int:
        """Number of particles ``P``."""
        return int(self.images.shape[0])

    def __len__(self) -> int:
        return self.n_particles

    @property
    def image_size(self) -> int:
        """Box size ``n`` (pixels)."""
        return int(self.images.shape[1])

    @property
    def angles_deg(self) -> np.ndarray | None:
        """``(P, 3)`` RELION Euler angles ``(rot, tilt, psi)`` in degrees, or ``None``.

        ``rot``, ``psi`` in ``(−180, 180]``, ``tilt`` in ``[0, 180]``
        (:func:`~cryowedge.geometry.rotations.matrix_to_euler_zyz`).
        """
        if self.rotations is None:
            return None
        return np.stack(matrix_to_euler_zyz(self.rotations), axis=1)

    @property
    def shifts_angstrom(self) -> np.ndarray:
        """``(P, 2)`` shifts ``(dy, dx)`` in Å (``shifts_px · pixel_size``)."""
        return self.shifts_px * self.pixel_size_angstrom

    # ------------------------------------------------------------------ selection

    def subset(self, indices: ArrayLike | slice) -> ParticleStack:
        """The particles ``indices`` (ints, a boolean mask, or a slice; order kept).

        A slice keeps a view of the images (no copy, also of a memory map); integer or
        boolean indices copy the selected images.
        """
        idx = _index(indices, self.n_particles)
        if idx.size == 0:
            raise ValueError("the selection holds no particle; a ParticleStack needs at least one.")
        images = self.images[indices] if isinstance(indices, slice) else self.images[idx]

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[idx]

        return ParticleStack(
            images=images,
            pixel_size_angstrom=self.pixel_size_angstrom,
            rotations=pick(self.rotations),
            shifts_px=self.shifts_px[idx],
            ctf=None if self.ctf is None else self.ctf.subset(idx),
            half_sets=pick(self.half_sets),
            class_ids=pick(self.class_ids),
            optics_groups=pick(self.optics_groups),
            inverted_contrast=self.inverted_contrast,
            metadata=None if self.metadata is None else self.metadata.iloc[idx],
        )

    def half(self, which: int) -> ParticleStack:
        """The particles of half set ``which`` (1 or 2; RELION ``rlnRandomSubset``)."""
        if which not in (1, 2):
            raise ValueError(f"which must be 1 or 2, got {which!r}.")
        if self.half_sets is None:
            raise ValueError(
                "this stack has no half-set labels (rlnRandomSubset); assign them first, e.g. "
                "stack.with_random_halves(seed)."
            )
        mask = self.half_sets == which
        if not mask.any():
            raise ValueError(f"half set {which} is empty ({self.n_particles} particles).")
        return self.subset(mask)

    def with_random_halves(self, rng: np.random.Generator | int | None = None) -> ParticleStack:
        """A copy with half sets assigned at random, as equal in size as possible."""
        gen = np.random.default_rng(rng)
        labels = np.ones(self.n_particles, dtype=np.int64)
        labels[gen.permutation(self.n_particles)[self.n_particles // 2 :]] = 2
        return self.replace(half_sets=labels)

    def replace(self, **changes: Any) -> ParticleStack:
        """A copy with some fields replaced (``dataclasses.replace``; validated again)."""
        return dataclasses.replace(self, **changes)

    def centered_images(self, indices: ArrayLike | slice | None = None) -> np.ndarray:
        """Images translated by ``−shifts_px`` so that the particle centre is at ``n // 2``.

        Parameters
        ----------
        indices : ints, boolean mask, slice or None
            Which particles (default all).

        Returns
        -------
        numpy.ndarray
            ``(k, n, n)`` float32, Fourier-shifted (periodic boundary).
        """
        idx = np.arange(self.n_particles) if indices is None else _index(indices, self.n_particles)
        return shift_images(self.images[idx], -self.shifts_px[idx])

    def __repr__(self) -> str:
        extras = [
            name
            for name in ("rotations", "ctf", "half_sets", "class_ids", "optics_groups", "metadata")
            if getattr(self, name) is not None
        ]
        return (
            f"ParticleStack({self.n_particles} × {self.image_size}² px, "
            f"{self.pixel_size_angstrom:g} Å/px, with {', '.join(extras) or 'images only'}"
            f"{', inverted contrast' if self.inverted_contrast else ''})"
        )


def shift_images(images: ArrayLike, shifts_px: ArrayLike) -> np.ndarray:
    """Translate images by sub-pixel shifts (multiplication by a phase ramp in Fourier space).

    ``out[p](r) = images[p](r − shifts_px[p])``: content at pixel ``r`` moves to
    ``r + shifts_px[p]``. Boundaries are periodic. At the Nyquist frequency of an even axis
    the ramp's real part is used (the result stays real); integer shifts are exact rolls.

    Parameters
    ----------
    images : array_like
        ``(..., ny, nx)`` real images.
    shifts_px : array_like
        ``(..., 2)`` shifts ``(dy, dx)`` in pixels, broadcast against the leading
        dimensions of ``images`` (``(2,)`` shifts every image by the same amount).

    Returns
    -------
    numpy.ndarray
        ``(..., ny, nx)`` float32 shifted images.
    """
    img = np.asarray(images, dtype=np.float64)
    if img.ndim < 2:
        raise ValueError(f"images must be (..., ny, nx), got shape {img.shape}.")
    s = np.asarray(shifts_px, dtype=np.float64)
    if s.ndim < 1 or s.shape[-1] != 2:
        raise ValueError(f"shifts_px must be (..., 2) as (dy, dx) pixels, got shape {s.shape}.")
    if not np.all(np.isfinite(s)):
        raise ValueError("shifts_px must be finite.")
    ny, nx = img.shape[-2:]
    ky = np.fft.fftfreq(ny)  # cycles/pixel, unshifted
    kx = np.fft.fftfreq(nx)
    dy = s[..., 0][..., None, None]
    dx = s[..., 1][..., None, None]
    phase = -2.0 * np.pi * (ky[:, None] * dy + kx[None, :] * dx)
    ramp = np.exp(1j * phase)
    out = np.fft.ifft2(np.fft.fft2(img) * ramp).real
    return out.astype(np.float32)
