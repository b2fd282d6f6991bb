"""Real-use CRM input: a RELION-style STAR particle list and the tilt series → sub-tilt-series.

Subtomogram averaging starts from a tilt series and a list of particles picked (and usually
aligned) in its tomogram. For CRM (:mod:`cryowedge.crm.problem`) every particle becomes one
copy: its own small sub-tilt-series, a ``box × box`` patch cut around the particle's projected
centre on every tilt, plus its orientation.

**STAR columns.** Read with ``starfile`` (a plain table, or the ``particles`` block of a
RELION 3.1+ file with ``data_optics``):

- required: ``rlnCoordinateX``, ``rlnCoordinateY``, ``rlnCoordinateZ`` — the particle centre
  in **voxels of the tomogram** the list refers to, ``x`` = column, ``y`` = row (along the tilt
  axis), ``z`` = section, as :func:`cryowedge.io.mrc.write_mrc` stores a cryowedge tomogram
  (docs/conventions.md: it is IMOD's tomogram after ``trimvol -rx``). Coordinate ``0`` is the
  centre of the first voxel (NumPy indexing); a list that counts from 1 is read with
  ``coordinate_origin_px=1``. The tomogram's voxel is the tilt series' pixel: bin the series
  (``TiltGeometry.binned``) to the tomogram's voxel size first;
- required: ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi`` — RELION ZYZ Euler angles in
  degrees (:func:`cryowedge.geometry.rotations.euler_zyz_to_matrix`);
- optional: ``rlnTomoName`` (or ``rlnMicrographName``) — which tomogram;
- optional: ``rlnOriginXAngst``, ``rlnOriginYAngst``, ``rlnOriginZAngst`` — RELION's shifts in Å:
  the centre is ``coordinate − origin / pixel_size`` (needs ``pixel_size_angstrom``);
- refused: non-zero ``rlnTomoSubtomogramRot/Tilt/Psi`` (RELION 4 pre-oriented subtomograms:
  their composition with the particle angles is not implemented).

**Orientation direction.** The particle sits in the tomogram as the reference rotated by
``R = euler_zyz_to_matrix(rot, tilt, psi)``: ``particle_in_tomogram = rotate_volume(reference,
R)`` (object rotation, ``out(R r) = in(r)``), RELION's meaning of a particle's angles. That
``R`` carries the particle frame into the copy frame, so it is exactly
:attr:`cryowedge.crm.problem.CRMCopy.rotation_xyz`, and CRM recovers the particle in the
reference frame. (Un-rotating a copy's own reconstruction is ``rotate_volume(rec, R.T)``.)

**Projected centre.** A tomogram voxel at centred coordinates ``(z, y, x)`` (``c = index −
N // 2``) projects, on tilt ``θ``, to the aligned detector point ``(v, u) = (y, x·cos θ +
z·sin θ)`` and to the raw detector point ``M_t·(v, u) + shift_t`` (centred pixels, ``M_t`` =
:meth:`TiltGeometry.aligned_to_raw_matrices`), exactly as
:class:`~cryowedge.operators.TiltProjector` projects. Patch pixel ``(j, i)`` is the aligned
point ``(v0 + j − box//2, u0 + i − box//2)`` around the particle's ``(v0, u0)``, sampled from the
raw image by spline interpolation (bilinear by default; sub-pixel centres are exact up to
that interpolation). So the patches are the projection of a ``(box_depth, box, box)`` volume
centred on the particle (its centre voxel ``box // 2``), in the aligned frame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile
from numpy.typing import ArrayLike
from scipy import ndimage

from cryowedge.crm.problem import CRMCopy, CRMData, sphere_support
from cryowedge.geometry.rotations import euler_zyz_to_matrix, matrix_to_euler_zyz
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io._atomic import atomic_write

__all__ = [
    "ParticleList",
    "read_particle_star",
    "write_particle_star",
    "particle_projection_centres",
    "extract_subtilt_series",
    "COORDINATE_COLUMNS",
    "ANGLE_COLUMNS",
    "ORIGIN_COLUMNS",
    "TOMO_NAME_COLUMNS",
]

logger = logging.getLogger(__name__)

COORDINATE_COLUMNS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGIN_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
TOMO_NAME_COLUMNS = ("rlnTomoName", "rlnMicrographName")
_SUBTOMO_ANGLE_COLUMNS = (
    "rlnTomoSubtomogramRot",
    "rlnTomoSubtomogramTilt",
    "rlnTomoSubtomogramPsi",
)


@dataclass(frozen=True)
class ParticleList:
    """Particles of one or more tomograms: centres and RELION Euler angles.

    Parameters
    ----------
    coordinates_xyz_px
        ``(n, 3)`` particle centres ``(x, y, z)`` in tomogram voxels, 0-based (voxel index,
        fractions allowed; see the module docstring).
    angles_deg
        ``(n, 3)`` RELION ZYZ Euler angles ``(rot, tilt, psi)`` in degrees.
    tomo_names
        ``n`` tomogram names, or empty when the list does not say.
    """

    coordinates_xyz_px: np.ndarray
    angles_deg: np.ndarray
    tomo_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        coords = np.array(self.coordinates_xyz_px, dtype=np.float64)
        angles = np.array(self.angles_deg, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(
                f"coordinates_xyz_px must be (n, 3) as (x, y, z) voxels, got shape {coords.shape}."
            )
        if angles.shape != coords.shape:
            raise ValueError(
                f"angles_deg must be (n, 3) = {coords.shape} as (rot, tilt, psi) degrees, "
                f"got shape {angles.shape}."
            )
        for arr, what in ((coords, "coordinate"), (angles, "angle")):
            bad = ~np.isfinite(arr).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"particle {i} has a {what} that is not a finite number: {arr[i].tolist()}."
                )
        names = tuple(str(n) for n in self.tomo_names)
        if names and len(names) != coords.shape[0]:
            raise ValueError(
                f"{len(names)} tomo_names for {coords.shape[0]} particles; "
                "give one per particle or none."
            )
        coords.setflags(write=False)
        angles.setflags(write=False)
        object.__setattr__(self, "coordinates_xyz_px", coords)
        object.__setattr__(self, "angles_deg", angles)
        object.__setattr__(self, "tomo_names", names)

    @classmethod
    def from_rotations(
        cls,
        coordinates_xyz_px: ArrayLike,
        rotations_xyz: ArrayLike,
        tomo_names: Sequence[str] = (),
    ) -> ParticleList:
        """From ``(n, 3)`` centres and ``(n, 3, 3)`` object rotations (on ``(x, y, z)`` vectors).

        ``rotations_xyz[i]`` rotates the reference into particle ``i`` (``rotate_volume``'s
        convention); the Euler angles are :func:`matrix_to_euler_zyz` of it.
        """
        rot, tilt, psi = matrix_to_euler_zyz(
            np.asarray(rotations_xyz, dtype=np.float64).reshape(-1, 3, 3)
        )
        return cls(
            np.asarray(coordinates_xyz_px, dtype=np.float64),
            np.stack([rot, tilt, psi], axis=1),
            tuple(tomo_names),
        )

    @property
    def n(self) -> int:
        """Number of particles."""
        return int(self.coordinates_xyz_px.shape[0])

    def __len__(self) -> int:
        return self.n

    @property
    def positions_zyx(self) -> np.ndarray:
        """``(n, 3)`` centres as ``(z, y, x)`` voxel indices (the order of the arrays)."""
        return self.coordinates_xyz_px[:, ::-1].copy()

    @property
    def rotations_xyz(self) -> np.ndarray:
        """``(n, 3, 3)`` rotations carrying the reference into each particle (on ``(x, y, z)``)."""
        return euler_zyz_to_matrix(
            self.angles_deg[:, 0], self.angles_deg[:, 1], self.angles_deg[:, 2]
        )

    def subset(self, indices: ArrayLike) -> ParticleList:
        """The particles ``indices`` (ints or a boolean mask)."""
        idx = np.arange(self.n)[np.asarray(indices)]
        return ParticleList(
            self.coordinates_xyz_px[idx],
            self.angles_deg[idx],
            tuple(self.tomo_names[i] for i in idx) if self.tomo_names else (),
        )

    def select(self, tomo_name: str | None) -> tuple[ParticleList, np.ndarray]:
        """The particles of tomogram ``tomo_name`` and their indices in this list.

        ``None`` keeps all particles, which is allowed only when the list names at most one
        tomogram.

        Raises
        ------
        ValueError
            For ``None`` with several tomograms, or a name the list does not hold.
        """
        unique = sorted(set(self.tomo_names))
        if tomo_name is None:
            if len(unique) > 1:
                raise ValueError(
                    f"the particle list holds {len(unique)} tomograms ({', '.join(unique[:5])}"
                    f"{', …' if len(unique) > 5 else ''}); pass tomo_name= to choose one."
                )
            return self, np.arange(self.n)
        if not self.tomo_names:
            return self, np.arange(self.n)
        idx = np.flatnonzero(np.asarray(self.tomo_names) == str(tomo_name))
        if idx.size == 0:
            raise ValueError(
                f"no particle of tomogram {tomo_name!r}; the list holds {', '.join(unique[:5])}"
                f"{', …' if len(unique) > 5 else ''}."
            )
        return self.subset(idx), idx

    def to_dataframe(self) -> pd.DataFrame:
        """The RELION table (``rlnTomoName`` if named, coordinates, angles)."""
        columns: dict[str, Any] = {}
        if self.tomo_names:
            columns["rlnTomoName"] = list(self.tomo_names)
        for k, name in enumerate(COORDINATE_COLUMNS):
            columns[name] = self.coordinates_xyz_px[:, k]
        for k, name in enumerate(ANGLE_COLUMNS):
            columns[name] = self.angles_deg[:, k]
        return pd.DataFrame(columns)


def _particle_table(data: Any, path: Path) -> pd.DataFrame:
    """The particle block of what ``starfile.read`` returned."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        if "particles" in data and isinstance(data["particles"], pd.DataFrame):
            return data["particles"]
        tables = [(k, v) for k, v in data.items() if isinstance(v, pd.DataFrame)]
        with_coords = [(k, v) for k, v in tables if "rlnCoordinateX" in v.columns]
        if len(with_coords) == 1:
            return with_coords[0][1]
        if len(tables) == 1:
            return tables[0][1]
        names = ", ".join(f"data_{k}" for k, _ in tables) or "none"
        raise ValueError(
            f"{path}: cannot tell which block holds the particles (blocks: {names}); "
            "name it data_particles."
        )
    raise ValueError(f"{path}: no particle table found (starfile returned {type(data).__name__}).")


def _numeric(df: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    out = np.empty((len(df), len(columns)), dtype=np.float64)
    for k, name in enumerate(columns):
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{path}: column {name} of particle {i} is {df[name].iloc[i]!r}, not a number."
            )
        out[:, k] = values
    return out


def read_particle_star(
    path: str | os.PathLike[str],
    *,
    pixel_size_angstrom: float | None = None,
    coordinate_origin_px: float = 0.0,
) -> ParticleList:
    """Read a RELION-style particle list (see the module docstring for the columns).

    Parameters
    ----------
    path
        ``.star`` file: one table, or a RELION 3.1+ file whose ``data_particles`` block holds
        the particles.
    pixel_size_angstrom
        Tomogram voxel size in Å; needed only to apply non-zero ``rlnOrigin{X,Y,Z}Angst``
        shifts (centre = coordinate − origin / pixel size).
    coordinate_origin_px
        The coordinate value of the first voxel's centre: ``0`` (default; NumPy indexing,
        what :func:`write_particle_star` writes) or ``1`` for 1-based lists. It is
        subtracted from every coordinate.

    Returns
    -------
    ParticleList
        Centres ``(n, 3)`` in 0-based voxels, angles ``(n, 3)`` in degrees, tomogram names.

    Raises
    ------
    ValueError
        If required columns are missing (they are named), a value is not a number, origins
        are given without ``pixel_size_angstrom``, or the file holds pre-oriented
        subtomogram angles.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"particle list {p} does not exist.")
    try:
        data = starfile.read(p, always_dict=True)
    except Exception as exc:  # starfile raises assorted errors on malformed files
        raise ValueError(f"cannot read {p} as a STAR file: {exc}") from None
    df = _particle_table(data, p)
    missing = [c for c in (*COORDINATE_COLUMNS, *ANGLE_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(
            f"{p} lacks the required column(s) {', '.join(missing)}; a CRM particle list needs "
            f"{', '.join(COORDINATE_COLUMNS)} (voxels) and {', '.join(ANGLE_COLUMNS)} (degrees)."
        )
    if len(df) == 0:
        raise ValueError(f"{p} holds no particles.")
    present_sub = [c for c in _SUBTOMO_ANGLE_COLUMNS if c in df.columns]
    if present_sub and np.any(_numeric(df, present_sub, p) != 0):
        raise ValueError(
            f"{p} has non-zero {', '.join(present_sub)} (RELION 4 pre-oriented subtomograms); "
            "compose them into rlnAngleRot/Tilt/Psi first — cryowedge reads only the "
            "particle angles."
        )
    coords = _numeric(df, COORDINATE_COLUMNS, p) - float(coordinate_origin_px)
    angles = _numeric(df, ANGLE_COLUMNS, p)
    present_origin = [c for c in ORIGIN_COLUMNS if c in df.columns]
    if present_origin:
        origin = np.zeros((len(df), 3))
        for c in present_origin:
            origin[:, ORIGIN_COLUMNS.index(c)] = _numeric(df, [c], p)[:, 0]
        if np.any(origin != 0):
            if pixel_size_angstrom is None or not pixel_size_angstrom > 0:
                raise ValueError(
                    f"{p} has non-zero {', '.join(present_origin)} (Å); pass pixel_size_angstrom "
                    "(the tomogram voxel size) to convert them to voxels."
                )
            coords = coords - origin / float(pixel_size_angstrom)
    names: tuple[str, ...] = ()
    for c in TOMO_NAME_COLUMNS:
        if c in df.columns:
            names = tuple(str(v) for v in df[c].tolist())
            break
    particles = ParticleList(coords, angles, names)
    logger.info("read %d particles from %s", particles.n, p)
    return particles


def write_particle_star(
    path: str | os.PathLike[str],
    particles: ParticleList,
    *,
    overwrite: bool = True,
) -> Path:
    """Write a particle list as a RELION-style STAR file (block ``data_particles``), atomically.

    Columns: ``rlnTomoName`` (if the list names tomograms), ``rlnCoordinateX/Y/Z`` (0-based
    voxels), ``rlnAngleRot/Tilt/Psi`` (degrees), six decimals. :func:`read_particle_star`
    reads it back.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not isinstance(particles, ParticleList):
        raise TypeError(f"particles must be a ParticleList, got {type(particles).__name__}.")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, overwrite=overwrite) as tmp:
        starfile.write({"particles": particles.to_dataframe()}, tmp, float_format="%.6f")
    return out


def _tomogram_shape(tomogram_shape: Sequence[int], geometry: TiltGeometry) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in tomogram_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"tomogram_shape must be (nz, ny, nx) voxels, got {tomogram_shape!r}.")
    n_axis = geometry.aligned_detector_shape[0]
    if shape[1] != n_axis:
        raise ValueError(
            f"tomogram_shape {shape} does not fit the tilt series: its y size must equal the "
            "detector "
            f"length along the tilt axis ({n_axis} px); pass tomogram_shape=(nz, {n_axis}, nx)."
        )
    return shape  # type: ignore[return-value]


def _aligned_centres(
    coords_xyz: np.ndarray, geometry: TiltGeometry, shape: tuple[int, int, int]
) -> np.ndarray:
    """``(n, n_tilts, 2)`` aligned-frame centred ``(v, u)`` of each particle on each tilt."""
    nz, ny, nx = shape
    xc = coords_xyz[:, 0] - nx // 2
    yc = coords_xyz[:, 1] - ny // 2
    zc = coords_xyz[:, 2] - nz // 2
    theta = geometry.tilt_angles_rad
    u = xc[:, None] * np.cos(theta)[None, :] + zc[:, None] * np.sin(theta)[None, :]
    v = np.broadcast_to(yc[:, None], u.shape)
    return np.stack([v, u], axis=-1)


def _to_raw(aligned_vu: np.ndarray, geometry: TiltGeometry) -> np.ndarray:
    """Raw detector pixel indices ``(..., n_tilts, 2)`` (y, x) of aligned centred ``(v, u)``."""
    mats = geometry.aligned_to_raw_matrices()  # (T, 2, 2) on (y, x)
    raw = np.einsum("tij,...tj->...ti", mats, aligned_vu)
    if geometry.shifts_px is not None:
        raw = raw + geometry.shifts_px
    ny, nx = geometry.detector_shape
    return raw + np.array([ny // 2, nx // 2], dtype=np.float64)


def particle_projection_centres(
    particles: ParticleList | ArrayLike,
    geometry: TiltGeometry,
    tomogram_shape: Sequence[int],
) -> np.ndarray:
    """Where each particle centre projects on each raw tilt image.

    Parameters
    ----------
    particles
        A :class:`ParticleList`, or ``(n, 3)`` centres ``(x, y, z)`` in 0-based tomogram voxels.
    geometry
        The tilt series' geometry (angles in degrees, tilt-axis angle, shifts, view matrices).
    tomogram_shape
        ``(nz, ny, nx)`` of the tomogram the coordinates refer to (``ny`` = detector length
        along the tilt axis).

    Returns
    -------
    numpy.ndarray
        ``(n, n_tilts, 2)`` float64 ``(y, x)`` pixel indices on the raw images (the projector's
        convention, module docstring).
    """
    coords = (
        particles.coordinates_xyz_px
        if isinstance(particles, ParticleList)
        else np.asarray(particles, float)
    )
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(
            f"particle centres must be (n, 3) as (x, y, z) voxels, got shape {coords.shape}."
        )
    shape = _tomogram_shape(tomogram_shape, geometry)
    return _to_raw(_aligned_centres(coords, geometry, shape), geometry)


def _check_box(
    box_size: Any, geometry: TiltGeometry, shape: tuple[int, int, int], box_depth: Any
) -> tuple[int, int]:
    if isinstance(box_size, bool) or not isinstance(box_size, (int, np.integer)) or box_size < 2:
        raise ValueError(f"box_size must be a whole number of pixels >= 2, got {box_size!r}.")
    n_axis, n_perp = geometry.aligned_detector_shape
    limit = min(n_axis, n_perp, shape[1], shape[2])
    if box_size > limit:
        raise ValueError(
            f"box_size {box_size} px is larger than the detector/tomogram "
            f"({n_axis}×{n_perp} px detector, "
            f"tomogram {shape}); use at most {limit}."
        )
    depth = int(box_size) if box_depth is None else box_depth
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"box_depth must be a whole number of voxels >= 1, got {box_depth!r}.")
    return int(box_size), int(depth)


def _describe(coords: np.ndarray, i: int) -> str:
    x, y, z = coords[i]
    return f"particle {i} at (x, y, z) = ({x:.1f}, {y:.1f}, {z:.1f}) voxels"


def extract_subtilt_series(
    tilt_series: ArrayLike,
    geometry: TiltGeometry,
    particles: ParticleList,
    *,
    tomogram_shape: Sequence[int],
    box_size: int,
    box_depth: int | None = None,
    support_radius_px: float | None = None,
    tomo_name: str | None = None,
    interpolation_order: int = 1,
    drop_outside: bool = False,
) -> CRMData:
    """Cut every particle's sub-tilt-series out of a tilt series: the CRM input of real data.

    Parameters
    ----------
    tilt_series
        ``(n_tilts, ny, nx)`` raw images in the order of ``geometry.tilt_angles_deg``.
    geometry
        Its :class:`TiltGeometry` (angles in degrees, tilt-axis angle, shifts, view matrices;
        pixel size in Å = the tomogram voxel size).
    particles
        The particle list (0-based tomogram voxels, RELION angles).
    tomogram_shape
        ``(nz, ny, nx)`` of the tomogram the coordinates refer to; ``ny`` is the detector
        length along the tilt axis (as for :class:`~cryowedge.operators.TiltProjector`).
    box_size
        Patch side in pixels (``box`` along the tilt axis and across it).
    box_depth
        ``nz`` of each copy's volume (voxels); default ``box_size``.
    support_radius_px
        Radius of the centred spherical support (voxels); default ``0.4 · box_size``.
    tomo_name
        Keep only the particles of this tomogram (needed when the list names several).
    interpolation_order
        Spline order of the sub-pixel sampling: 1 (bilinear, default) or 3 (cubic).
    drop_outside
        Drop (with a warning) particles whose box leaves the tomogram or the detector
        instead of refusing them.

    Returns
    -------
    CRMData
        ``projections`` ``(n, n_tilts, box, box)`` float32 in the aligned frame, one
        :class:`CRMCopy` per particle (the series' tilt angles, ``rotation_xyz`` =
        ``euler_zyz_to_matrix`` of its angles), ``support`` ``(box_depth, box, box)``,
        ``pixel_size_angstrom`` of the geometry, ``names`` ``"<tomo>:<index>"`` (index in the
        given list).

    Raises
    ------
    ValueError
        Before any sampling: a tilt series that does not fit the geometry, a bad box size,
        a tomogram shape that does not fit the detector, or a particle whose box leaves the
        tomogram (``x``/``y`` box, ``z`` centre) or the detector on some tilt (the first one
        is named with its coordinates and the tilt).
    """
    images = np.asarray(tilt_series)
    if images.ndim != 3 or images.shape != geometry.tilt_series_shape:
        raise ValueError(
            f"tilt_series has shape {images.shape} but the geometry expects "
            f"{geometry.tilt_series_shape} "
            "(n_tilts, ny, nx)."
        )
    if not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"tilt_series must be numeric, got dtype {images.dtype}.")
    shape = _tomogram_shape(tomogram_shape, geometry)
    box, depth = _check_box(box_size, geometry, shape, box_depth)
    if interpolation_order not in (1, 3):
        raise ValueError(
            f"interpolation_order must be 1 (bilinear) or 3 (cubic), got {interpolation_order!r}."
        )
    if not isinstance(particles, ParticleList):
        raise TypeError(f"particles must be a ParticleList, got {type(particles).__name__}.")
    chosen, index = particles.select(tomo_name)
    coords = chosen.coordinates_xyz_px
    eps = 1e-6

    # --- the box inside the tomogram: x and y box, z centre --------------------------
    lo = coords - np.array([box // 2, box // 2, 0.0])
    hi = lo + np.array([box - 1, box - 1, 0.0])
    upper = np.array([shape[2] - 1, shape[1] - 1, shape[0] - 1], dtype=np.float64)
    bad_tomo = np.any(lo < -eps, axis=1) | np.any(hi > upper + eps, axis=1)

    # --- every patch corner on the raw detector ----------------------------------------
    centres = _aligned_centres(coords, geometry, shape)  # (n, T, 2) centred (v, u)
    offsets = np.array([-(box // 2), box - 1 - box // 2], dtype=np.float64)
    corner_off = np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1).reshape(4, 2)
    corners = _raw_corners(centres, corner_off, geometry)  # (n, T, 4, 2)
    ny_det, nx_det = geometry.detector_shape
    outside = (
        (corners[..., 0] < -eps)
        | (corners[..., 0] > ny_det - 1 + eps)
        | (corners[..., 1] < -eps)
        | (corners[..., 1] > nx_det - 1 + eps)
    ).any(axis=2)  # (n, T)
    bad_det = outside.any(axis=1)
    bad = bad_tomo | bad_det
    if bad.any():
        first = int(np.argmax(bad))
        n_bad = int(bad.sum())
        if bad_tomo[first]:
            where = (
                f"its {box}-px box leaves the tomogram {shape} (z, y, x) "
                f"(the x/y box must lie inside, and z within 0..{shape[0] - 1})"
            )
        else:
            t = int(np.argmax(outside[first]))
            where = (
                f"its {box}-px patch leaves the {ny_det}×{nx_det} detector on tilt {t} "
                f"({geometry.tilt_angles_deg[t]:+.1f}°)"
            )
        message = f"{_describe(coords, first)} (list index {int(index[first])}): {where}" + (
            f"; {n_bad - 1} more particle(s) too" if n_bad > 1 else ""
        )
        if not drop_outside:
            raise ValueError(
                message + ". Use a smaller box_size, or drop_outside=True to skip them."
            )
        logger.warning("dropping %d particle(s) near the edges; first: %s", n_bad, message)
        keep = ~bad
        if not keep.any():
            raise ValueError(
                f"every particle's box leaves the tomogram or detector; first: {message}."
            )
        chosen, index, coords, centres = (
            chosen.subset(keep),
            index[keep],
            coords[keep],
            centres[keep],
        )

    # --- sample the patches -----------------------------------------------------------------
    n, n_t = coords.shape[0], geometry.n_tilts
    grid = np.arange(box, dtype=np.float64) - box // 2
    dv, du = np.meshgrid(grid, grid, indexing="ij")  # (box, box)
    patch_off = np.stack([dv, du], axis=-1)  # (box, box, 2) aligned (v, u)
    mats = geometry.aligned_to_raw_matrices()
    shifts = np.zeros((n_t, 2)) if geometry.shifts_px is None else np.asarray(geometry.shifts_px)
    det_centre = np.array([ny_det // 2, nx_det // 2], dtype=np.float64)
    out = np.empty((n, n_t, box, box), dtype=np.float32)
    chunk = max(
        1, 2**22 // (box * box)
    )  # sample positions per call bounded (~64 MB of coordinates)
    for t in range(n_t):
        image = np.asarray(images[t], dtype=np.float64)
        if interpolation_order > 1:
            image = ndimage.spline_filter(image, order=interpolation_order, mode="nearest")
        for p0 in range(0, n, chunk):
            p1 = min(n, p0 + chunk)
            pts = centres[p0:p1, t][:, None, None, :] + patch_off[None]  # (m, box, box, 2)
            raw = pts @ mats[t].T + shifts[t] + det_centre
            vals = ndimage.map_coordinates(
                image,
                [raw[..., 0].ravel(), raw[..., 1].ravel()],
                order=interpolation_order,
                mode="nearest",
                prefilter=False,
            )
            out[p0:p1, t] = vals.reshape(p1 - p0, box, box)

    radius = 0.4 * box if support_radius_px is None else float(support_radius_px)
    rotations = chosen.rotations_xyz
    copies = [CRMCopy(geometry.tilt_angles_deg, rotations[i]) for i in range(n)]
    names_src = chosen.tomo_names
    names = [f"{names_src[i] if names_src else 'tomogram'}:{int(index[i])}" for i in range(n)]
    logger.info("extracted %d sub-tilt-series of %d×%d px × %d tilts", n, box, box, n_t)
    return CRMData(
        projections=out,
        copies=copies,
        support=sphere_support((depth, box, box), radius),
        pixel_size_angstrom=geometry.pixel_size_angstrom,
        names=names,
    )


def _raw_corners(centres: np.ndarray, corner_off: np.ndarray, geometry: TiltGeometry) -> np.ndarray:
    """``(n, T, 4, 2)`` raw (y, x) indices of the patch corners around aligned centres
    ``(n, T, 2)``."""
    pts = centres[:, :, None, :] + corner_off[None, None]  # (n, T, 4, 2)
    pts = np.swapaxes(pts, 1, 2)  # (n, 4, T, 2): the tilt axis second to last for _to_raw
    return np.swapaxes(_to_raw(pts, geometry), 1, 2)
