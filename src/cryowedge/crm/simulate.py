"""Simulated CRM data sets: the paper's 2D experiments, its 3D setting, and a particle tomogram.

Han et al. (../shared/seeds/000_…, §4) simulate ``N`` copies of one particle, each "stained" by
its own surroundings outside a support, each measured over a limited tilt range whose start is
rotated per copy. Every simulator here returns data that obey the model of
:mod:`cryowedge.crm.problem` (eq. 6)::

    b_i = P_i ( R_i (S · h) + (1 − S_i) · g_i )   (+ noise)

with ``truth = S · h`` (the particle inside its support, zero outside), ``backgrounds[i] =
(1 − S_i) · g_i`` in the copy frame, ``P_i`` the project's tilt projector at the copy's
microscope angles (tilt axis = y) and ``R_i = copies[i].rotation_xyz`` (object rotation,
``out(R r) = in(r)``).

**How ``R_i`` is applied** (``rotation=``):

- ``"exact"`` (default): no interpolation of the particle. In 2D the particle is projected at
  the angles ``θ_j + φ_i`` (what the authors' simulator does: it rotates the tilt range per
  copy), which equals projecting the copy rotated by ``R_i`` at ``θ_j`` for the continuous
  object (:func:`cryowedge.crm.operator.rotation_about_y` fixes the sign). Angles beyond ±90°
  are wrapped by 180° with the projection mirrored about the centre pixel, exactly (the
  detector is padded to an odd width first). In 3D a particle given as atoms is re-rendered
  from the rotated atoms; a map is rotated with cubic splines. The data then hold the model
  error a real measurement has against a discrete rotation operator.
- ``"linear"``: ``R_i`` is :class:`~cryowedge.operators.Rotation3D` (trilinear) applied to
  ``S · h``, the discrete operator a CRM solver uses, so the data lie exactly in the range of
  that model (for convergence tests).

**Noise.** ``snr`` adds white Gaussian noise with
:func:`cryowedge.simulate.noise.add_gaussian_noise`:
``SNR = var(clean) / σ²`` (a variance ratio, not dB), one ``σ`` per copy from the variance of
that copy's whole clean sub-tilt-series. (The authors' C++ used ``σ = std / 10^(SNR/10)``.)

**Paper settings.** 2D Shepp–Logan 320² and ribosome slice 200² (support radius 65 as in
the authors' runs), ±50° at 3°, ``N = 3 … 49``; 3D ±50° at 5°, SNR ≈ 1 (here at a small scale:
a 48³ box at 3 Å/voxel). All simulators are deterministic for a given ``rng``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import ndimage

from cryowedge.crm.operator import rotation_about_y
from cryowedge.crm.particles import ParticleList, write_particle_star
from cryowedge.crm.problem import CRMCopy, CRMData, sphere_support
from cryowedge.geometry.rotations import random_rotations, rotate_volume
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.operators.rotation import Rotation3D
from cryowedge.operators.subvolume import insert_subvolumes
from cryowedge.operators.tilt_projector import TiltProjector, build_projection_matrix
from cryowedge.simulate.noise import add_gaussian_noise
from cryowedge.simulate.pdb import atom_weights, gaussian_atom_map, read_pdb_atoms
from cryowedge.simulate.phantoms import crowded_cell, shepp_logan_2d

__all__ = [
    "CRMSimulation",
    "TomogramSimulation",
    "ROTATION_MODES",
    "BACKGROUNDS_2D",
    "ORIENTATION_SPACINGS",
    "NOISE_DOMAINS",
    "DEFAULT_RIBOSOME_MAP",
    "paper_tilt_angles",
    "copy_orientations_2d",
    "shepp_logan_particle",
    "central_slice_particle",
    "simulate_crm_2d",
    "simulate_shepp_logan_2d",
    "simulate_ribosome_2d",
    "simulate_crm_3d",
    "simulate_particle_tomogram",
    "write_tomogram_simulation",
]

logger = logging.getLogger(__name__)

ROTATION_MODES = ("exact", "linear")
BACKGROUNDS_2D = ("blocks", "noise", "discs", "authors", "none")
#: How :func:`copy_orientations_2d` spreads the copies over the circle.
ORIENTATION_SPACINGS = ("sector", "even")
#: Where the 2D simulator puts each copy's noise (:func:`simulate_crm_2d`).
NOISE_DOMAINS = ("projection", "image")
#: File name of the ribosome map in ../shared/data (a clean 70S map, 65³; GPL, not vendored).
DEFAULT_RIBOSOME_MAP = "aspire_70S_ribosome_65.mrc"
_EXAMPLE_PDB = "1A5T.pdb.gz"  # bundled with cryowedge.simulate (PDB data, CC0)


# ============================================================================ results
@dataclass
class CRMSimulation:
    """A simulated CRM data set with its ground truth.

    Attributes
    ----------
    data
        The :class:`CRMData` to solve: ``projections`` ``(N, n_tilts, ny, nx)`` (noisy when
        ``snr`` was given), ``copies``, ``support`` ``(nz, ny, nx)``, ``truth`` = ``S · h``.
    clean
        ``(N, n_tilts, ny, nx)`` float32 noise-free projections (with 2D image-domain noise,
        the projections of the noisy images: the data themselves).
    backgrounds
        ``(N, nz, ny, nx)`` float32 ``(1 − S) · g_i`` of every copy in the frame
        ``data.background_frame`` (zero on the support; without image noise).
    rotation
        ``"exact"`` or ``"linear"`` (module docstring).
    orientations_deg
        ``(N,)`` 2D copy angles ``φ_i`` in degrees (``rotation_xyz = rotation_about_y(φ_i)``);
        ``None`` in 3D.
    noise_sigma
        ``(N,)`` Gaussian noise standard deviation per copy (projection units; image units for
        2D image-domain noise), or ``None``.
    snr
        The requested SNR (variance ratio), or ``None`` for noise-free data.
    """

    data: CRMData
    clean: np.ndarray
    backgrounds: np.ndarray
    rotation: str
    orientations_deg: np.ndarray | None = None
    noise_sigma: np.ndarray | None = None
    snr: float | None = None

    @property
    def truth(self) -> np.ndarray:
        """``(nz, ny, nx)`` ground-truth particle ``S · h`` (particle frame)."""
        assert self.data.truth is not None
        return self.data.truth

    def copy_volume(self, i: int) -> np.ndarray:
        """``(nz, ny, nx)`` float32 copy ``i`` in its copy frame: ``R_i(S h) + backgrounds[i]``.

        ``R_i`` is applied with :class:`~cryowedge.operators.Rotation3D` (trilinear): for
        ``rotation="linear"`` this is exactly the volume whose projections are
        ``clean[i]``; for ``"exact"`` it is an interpolated picture of it (for display).
        """
        copy = self.data.copies[i]
        particle = torch.from_numpy(np.ascontiguousarray(self.truth, dtype=np.float64))
        if not copy.is_identity:
            particle = Rotation3D(self.truth.shape, copy.rotation_xyz)(particle)
        return (particle.numpy() + self.backgrounds[i]).astype(np.float32)


@dataclass
class TomogramSimulation:
    """A simulated tomogram with a particle list: the real-use CRM input, with its truth.

    Attributes
    ----------
    tilt_series
        ``(n_tilts, ny, nx)`` float32 images (noisy when ``snr`` was given).
    clean
        ``(n_tilts, ny, nx)`` float32 noise-free images.
    geometry
        The aligned :class:`TiltGeometry` (pixel size in Å).
    tomogram
        ``(nz, ny, nx)`` float32 ground-truth volume.
    particles
        The particles (0-based voxel centres, RELION angles; ``rotate_volume(reference, R_i)``
        sits at each centre).
    reference
        ``(b, b, b)`` float32 ground-truth particle ``S · h`` in its frame (``b = box_size``).
    support_radius_px
        Radius of the spherical support (voxels).
    noise_sigma
        Gaussian noise standard deviation (projection units), or ``None``.
    """

    tilt_series: np.ndarray
    clean: np.ndarray
    geometry: TiltGeometry
    tomogram: np.ndarray
    particles: ParticleList
    reference: np.ndarray
    support_radius_px: float
    noise_sigma: float | None = None

    @property
    def tomogram_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.tomogram.shape)  # type: ignore[return-value]

    @property
    def box_size(self) -> int:
        return int(self.reference.shape[-1])


# ============================================================================ small pieces
def _check_mode(rotation: str) -> str:
    if rotation not in ROTATION_MODES:
        raise ValueError(f"rotation must be one of {ROTATION_MODES}, got {rotation!r}.")
    return rotation


def _check_count(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {n!r}.")
    return int(n)


def _check_snr(snr: float | None) -> float | None:
    if snr is None:
        return None
    if not np.isfinite(snr) or snr <= 0:
        raise ValueError(
            f"snr must be > 0 (a variance ratio, not dB) or None for no noise, got {snr!r}."
        )
    return float(snr)


def paper_tilt_angles(range_deg: float = 50.0, step_deg: float = 3.0) -> np.ndarray:
    """The paper's tilt scheme ``−range, −range + step, …`` up to ``+range`` (degrees).

    Same rule as :meth:`TiltGeometry.from_range`: ±50° at 3° gives 34 angles, −50 … 49.

    Returns
    -------
    numpy.ndarray
        ``(n_tilts,)`` float64 angles in degrees.
    """
    if not 0 < range_deg <= 90:
        raise ValueError(f"range_deg must lie in (0, 90] degrees, got {range_deg!r}.")
    if not step_deg > 0:
        raise ValueError(f"step_deg must be > 0 degrees, got {step_deg!r}.")
    n = int(np.floor(2 * range_deg / step_deg + 1e-9)) + 1
    return -float(range_deg) + float(step_deg) * np.arange(n)


def copy_orientations_2d(
    n_copies: int, rng: np.random.Generator | int | None = None, *, spacing: str = "sector"
) -> np.ndarray:
    """Copy angles spread over the circle (degrees).

    * ``spacing="sector"`` (default): one uniform angle per sector of ``360/N``,
      ``φ_m = −180 + (m + u_m)·360/N``, ``u_m`` uniform in ``[0, 1)`` per copy, wrapped into
      ``(−180, 180]``.
    * ``spacing="even"``: the authors' run scripts (``run_simulatorb0.sh`` of their code), which
      start copy ``m``'s tilt range at ``φ_m = (o + m·360/N) mod 360 − 180``, ``m = 1..N``, with
      one offset ``o`` uniform in ``[0, 360)``: evenly spaced copies, ``[−180, 180)``.

    Returns
    -------
    numpy.ndarray
        ``(n_copies,)`` float64 degrees.
    """
    n = _check_count(n_copies, "n_copies")
    if spacing not in ORIENTATION_SPACINGS:
        raise ValueError(f"spacing must be one of {ORIENTATION_SPACINGS}, got {spacing!r}.")
    gen = np.random.default_rng(rng)
    if spacing == "even":
        offset = gen.uniform(0.0, 360.0)
        return np.mod(offset + np.arange(1, n + 1) * 360.0 / n, 360.0) - 180.0
    phi = -180.0 + (np.arange(n) + gen.uniform(0.0, 1.0, n)) * 360.0 / n
    return np.where(phi <= -180.0, phi + 360.0, phi)


def _wrap_tilt(alpha_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles folded into ``[−90, 90)`` and whether each was turned by an odd multiple of 180°."""
    wrapped = np.mod(alpha_deg + 90.0, 180.0) - 90.0
    turns = np.round((alpha_deg - wrapped) / 180.0).astype(np.int64)
    return wrapped, (turns % 2) == 1


def _project_slice(image_zx: np.ndarray, angles_deg: np.ndarray, n_det: int) -> np.ndarray:
    """Projection ``(n_angles, n_det)`` of a ``(nz, nx)`` slice at any angles (degrees).

    Kept independent of :class:`cryowedge.crm.operator.CopyProjector` (which folds angles the
    same way) on purpose: simulated data are then a check of the CRM operator, not a copy of it.

    The slice matrix of :class:`TiltProjector` (:func:`build_projection_matrix`) at angles
    folded into ``[−90, 90)``; a fold by 180° mirrors the detector about its centre pixel,
    which is exact on odd grids, so the slice and the detector are zero-padded at the end to
    odd sizes (the centre pixel ``N // 2`` does not move) and cropped back.
    """
    nz, nx = image_zx.shape
    nz_o, nx_o, nd_o = nz | 1, nx | 1, n_det | 1
    padded = np.zeros((nz_o, nx_o))
    padded[:nz, :nx] = image_zx
    wrapped, flip = _wrap_tilt(np.asarray(angles_deg, dtype=np.float64))
    a = build_projection_matrix(wrapped, nd_o, nz_o, nx_o)
    proj = (a @ padded.ravel()).reshape(wrapped.size, nd_o)
    proj[flip] = proj[flip, ::-1]
    return proj[:, :n_det]


def _child_rngs(gen: np.random.Generator, n: int) -> list[np.random.Generator]:
    seeds = gen.integers(0, 2**63 - 1, size=n)
    return [np.random.default_rng(int(s)) for s in seeds]


def _add_noise(
    clean: np.ndarray, snr: float | None, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Noise per copy: ``clean`` ``(N, T, ny, nx)`` → noisy, ``σ`` ``(N,)``."""
    if snr is None:
        return clean.astype(np.float32), None
    n, t, ny, nx = clean.shape
    noisy, sigma = add_gaussian_noise(
        clean.reshape(n, t * ny, nx), snr=snr, rng=gen, per_image=True
    )
    return noisy.reshape(clean.shape), np.atleast_1d(np.asarray(sigma, dtype=np.float64))


# ============================================================================ 2D backgrounds
def _blocks(
    shape: tuple[int, int],
    gen: np.random.Generator,
    *,
    n_blocks: int = 14,
    size_fraction: tuple[float, float] = (0.04, 0.16),
    intensity: tuple[float, float] = (0.3, 1.0),
) -> np.ndarray:
    """Random rotated rectangles (the Shepp–Logan "blocks"), overlapping by their maximum."""
    nz, nx = shape
    m = min(shape)
    z, x = np.meshgrid(
        np.arange(nz, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij"
    )
    out = np.zeros(shape)
    for _ in range(int(n_blocks)):
        hz, hx = gen.uniform(*size_fraction, 2) * m / 2
        cz, cx = gen.uniform(0, nz), gen.uniform(0, nx)
        ang = gen.uniform(0, np.pi)
        dz, dx = z - cz, x - cx
        a = np.abs(dx * np.cos(ang) + dz * np.sin(ang))
        b = np.abs(-dx * np.sin(ang) + dz * np.cos(ang))
        np.maximum(out, np.where((a <= hx) & (b <= hz), gen.uniform(*intensity), 0.0), out=out)
    return out


def _smoothed_noise(
    shape: tuple[int, int],
    gen: np.random.Generator,
    *,
    sigma_px: float = 2.0,
    level: float = 0.3,
    contrast: float = 0.5,
) -> np.ndarray:
    """Smoothed Gaussian noise ``level · (1 + contrast · n)``, ``n`` of unit std, clipped at 0."""
    n = ndimage.gaussian_filter(gen.standard_normal(shape), float(sigma_px), mode="wrap")
    n /= max(float(n.std()), 1e-12)
    return np.clip(level * (1.0 + contrast * n), 0.0, None)


def _discs(
    shape: tuple[int, int],
    gen: np.random.Generator,
    *,
    n_range: tuple[int, int] = (100, 110),
    radius_px: tuple[float, float] = (2.0, 8.0),
    intensity: tuple[float, float] = (0.2, 1.0),
) -> np.ndarray:
    """100–110 random discs (the authors' alternative stain), overlapping by their maximum."""
    nz, nx = shape
    z, x = np.meshgrid(
        np.arange(nz, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij"
    )
    out = np.zeros(shape)
    for _ in range(int(gen.integers(n_range[0], n_range[1] + 1))):
        r = gen.uniform(*radius_px)
        cz, cx = gen.uniform(0, nz), gen.uniform(0, nx)
        np.maximum(
            out,
            np.where((z - cz) ** 2 + (x - cx) ** 2 <= r * r, gen.uniform(*intensity), 0.0),
            out=out,
        )
    return out


def _authors_noise(
    particle_image: np.ndarray,
    outside: np.ndarray,
    gen: np.random.Generator,
    *,
    sigma_px: float = 0.8,
) -> np.ndarray:
    """The authors' ribosome stain (their ``simulator/main.cpp``): white Gaussian noise with the
    particle image's mean and standard deviation outside the support, smoothed by a Gaussian
    of ``sigma_px`` (``cvSmooth``), masked to the outside again (they smooth after masking,
    which leaks about 1 px into the support; the leak is cut so that the stain is zero on
    ``S``). ``(nz, nx)``; weak: mean 0.033, std 0.040 for the ribosome slice of maximum 1."""
    avg, dev = float(particle_image.mean()), float(particle_image.std())
    white = gen.normal(avg, dev, particle_image.shape) * outside
    return ndimage.gaussian_filter(white, float(sigma_px), mode="constant") * outside


_BACKGROUND_MAKERS: dict[str, Callable[..., np.ndarray]] = {
    "blocks": _blocks,
    "noise": _smoothed_noise,
    "discs": _discs,
    "authors": _authors_noise,  # needs the particle image: called apart
    "none": lambda shape, gen, **_: np.zeros(shape),
}


# ============================================================================ 2D particles
def shepp_logan_particle(
    size: int = 320, phantom_size: int = 200, *, oversample: int = 2
) -> np.ndarray:
    """The Shepp–Logan phantom ``phantom_size`` px wide, centred in a ``size × size`` image.

    Its outer ellipse has semi-axes 0.69 and 0.92 × ``phantom_size / 2`` (69 × 92 px at the
    default), so a support of radius ``0.48 · phantom_size`` (96 px) holds it and leaves room
    for the blocks around it.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32 image, read as the ``(z, x)`` plane; values in ``[0, 1]``.
    """
    if not 1 <= phantom_size <= size:
        raise ValueError(f"phantom_size must lie in 1..size={size}, got {phantom_size!r}.")
    phantom = shepp_logan_2d(int(phantom_size), oversample=oversample)
    out = np.zeros((size, size), dtype=np.float32)
    o = size // 2 - phantom_size // 2  # keeps the phantom's centre pixel on size // 2
    out[o : o + phantom_size, o : o + phantom_size] = phantom
    return out


def _default_ribosome_path() -> Path:
    candidates = [Path.cwd().parent / "shared" / "data" / DEFAULT_RIBOSOME_MAP]
    try:
        candidates.append(
            Path(__file__).resolve().parents[3].parent / "shared" / "data" / DEFAULT_RIBOSOME_MAP
        )
    except IndexError:  # pragma: no cover - installed very shallowly
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"the ribosome map {DEFAULT_RIBOSOME_MAP} was not found in ../shared/data; pass density= "
        "(a (z, y, x) map or an MRC path)."
    )


def central_slice_particle(
    density: ArrayLike | str | os.PathLike[str],
    size: int = 200,
    support_radius_px: float = 65.0,
    *,
    fill: float = 0.95,
    axis: int = 1,
) -> np.ndarray:
    """A 2D particle from the central slice of a 3D map, scaled to fill a circular support.

    The authors' simulator pastes the (binned, cut) central slice of EMD-3489 into a 200²
    image with a mask of radius 65. Here the slice ``index n // 2`` along ``axis`` (default
    ``y``: the ``(z, x)`` plane perpendicular to the tilt axis) is resampled (cubic splines,
    about the centre pixels) so that its extent — the farthest pixel above 5 % of the maximum —
    reaches ``fill · support_radius_px``, then scaled to maximum 1.

    Parameters
    ----------
    density
        ``(z, y, x)`` map, or the path of an MRC file.
    size
        Output side (pixels).
    support_radius_px
        Radius of the support the particle must fit (pixels).
    fill
        Fraction of the support radius the particle's extent reaches, in ``(0, 1]``.
    axis
        Axis of the map the slice is taken across (0, 1 or 2).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32 image (``(z, x)`` plane), maximum 1; not yet masked.
    """
    vol = (
        read_mrc(density).data
        if isinstance(density, (str, os.PathLike))
        else np.asarray(density, np.float64)
    )
    if vol.ndim != 3:
        raise ValueError(f"density must be a (z, y, x) map, got shape {vol.shape}.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}.")
    if not 0 < fill <= 1:
        raise ValueError(f"fill must lie in (0, 1], got {fill!r}.")
    if not 0 < support_radius_px < size / 2:
        raise ValueError(
            f"support_radius_px must lie in (0, size/2 = {size / 2}), got {support_radius_px!r}."
        )
    sl = np.take(vol, vol.shape[axis] // 2, axis=axis).astype(np.float64)
    peak = float(sl.max())
    if peak <= 0:
        raise ValueError(
            "the central slice has no positive density; pass a map with dense = positive."
        )
    centre_in = np.array([n // 2 for n in sl.shape], dtype=np.float64)
    idx = np.argwhere(sl > 0.05 * peak)
    extent = float(np.linalg.norm(idx - centre_in, axis=1).max()) + 0.5
    scale = fill * float(support_radius_px) / extent  # output px per input px
    grid = (np.arange(size, dtype=np.float64) - size // 2) / scale
    zz, xx = np.meshgrid(grid + centre_in[0], grid + centre_in[1], indexing="ij")
    out = ndimage.map_coordinates(sl, [zz, xx], order=3, mode="constant", cval=0.0)
    out = np.clip(out, 0.0, None)
    return (out / out.max()).astype(np.float32)


# ============================================================================ 2D simulators
def simulate_crm_2d(
    particle_image: ArrayLike,
    n_copies: int,
    *,
    support_radius_px: float,
    tilt_angles_deg: ArrayLike | None = None,
    orientations_deg: ArrayLike | None = None,
    orientations: str = "sector",
    background: str = "blocks",
    background_options: dict[str, Any] | None = None,
    background_frame: str = "copy",
    snr: float | None = None,
    noise_domain: str = "projection",
    rotation: str = "exact",
    pixel_size_angstrom: float = 1.0,
    rng: np.random.Generator | int | None = None,
) -> CRMSimulation:
    """``N`` copies of a 2D particle, each in its own stain, each over its own rotated tilt range.

    The authors' set-up (their ``icthrm/CRM`` code, ../shared/research/anchors_tomo.md §3.1):
    ``orientations="even"``, ``background_frame="particle"``, and for the ribosome
    ``background="authors"`` (for Shepp–Logan their block code is not published; ``"blocks"``
    stands in). Noise-free data are then exactly in the range of the CRM operator.

    Parameters
    ----------
    particle_image
        ``(nz, nx)`` particle image (the x–z plane; e.g. :func:`shepp_logan_particle`,
        :func:`central_slice_particle`). The volume is ``(nz, 1, nx)``.
    n_copies
        Number of copies ``N``.
    support_radius_px
        Radius of the centred circular support (pixels); the particle outside it is cut.
    tilt_angles_deg
        ``(n_tilts,)`` microscope angles (degrees), the same for every copy; default
        :func:`paper_tilt_angles` (±50° at 3°).
    orientations_deg
        ``(N,)`` copy angles ``φ_i`` (degrees; ``R_i = rotation_about_y(φ_i)``); default
        :func:`copy_orientations_2d` with ``spacing=orientations``.
    orientations
        ``"sector"`` (default: one uniform angle per sector of ``360/N``) or ``"even"`` (the
        authors': evenly spaced, one random offset); used when ``orientations_deg`` is None.
    background
        The stain outside the support, different per copy: ``"blocks"`` (random rotated
        rectangles), ``"noise"`` (smoothed Gaussian noise, σ 2 px, mean 0.3, std 0.15),
        ``"discs"`` (100–110 random discs), ``"authors"`` (the authors' ribosome stain: white
        noise of the particle image's mean and std, smoothed σ 0.8 px; weak) or ``"none"``.
        ``"authors"`` stains are drawn in turn from ``rng`` after the others' per-copy seeds,
        which keeps the data of benchmarks/results_crm_*.py bit for bit.
    background_options
        Keyword arguments of the stain (blocks: ``n_blocks``, ``size_fraction``,
        ``intensity``; noise: ``sigma_px``, ``level``, ``contrast``; discs: ``n_range``,
        ``radius_px``, ``intensity``; authors: ``sigma_px``).
    background_frame
        ``"copy"`` (default): each stain fills the copy's own square box and is projected at
        the microscope angles ``θ`` (only the particle goes to ``θ + φ``), as a real
        sub-tilt-series. ``"particle"`` (the authors'): the stained image (particle + stain)
        is projected at ``θ + φ``, i.e. the stain is drawn in the particle frame.
        ``data.background_frame`` records it (the CRM operator follows it).
    snr
        SNR (variance ratio, module docstring), or ``None`` for clean data.
    noise_domain
        ``"projection"`` (default; the paper's text): white noise on each copy's projections,
        ``σ² = var(clean sub-tilt-series) / snr``. ``"image"`` (the authors' simulator code;
        needs ``background_frame="particle"``): noise of ``σ² = var(stained image) / snr``
        added to each stained image before projection, which keeps the data in the range of
        the model and is much milder after the line integrals.
    rotation
        ``"exact"`` (project the particle at ``θ + φ``) or ``"linear"`` (trilinear ``R_i``).
    pixel_size_angstrom
        Pixel size recorded in the data (Å).
    rng
        Seed or generator; the result is deterministic for a fixed seed.

    Returns
    -------
    CRMSimulation
        ``data.projections`` ``(N, n_tilts, 1, nx)``, ``backgrounds`` ``(N, nz, 1, nx)``,
        ``truth`` ``(nz, 1, nx)``, ``orientations_deg`` ``(N,)``.
    """
    img = np.asarray(particle_image, dtype=np.float64)
    if img.ndim == 3 and img.shape[1] == 1:
        img = img[:, 0, :]
    if img.ndim != 2 or min(img.shape) < 2:
        raise ValueError(
            f"particle_image must be a (nz, nx) image, got shape {np.shape(particle_image)}."
        )
    if not np.isfinite(img).all():
        raise ValueError("particle_image holds non-finite values.")
    n = _check_count(n_copies, "n_copies")
    mode = _check_mode(rotation)
    snr = _check_snr(snr)
    if background not in _BACKGROUND_MAKERS:
        raise ValueError(f"background must be one of {BACKGROUNDS_2D}, got {background!r}.")
    if orientations not in ORIENTATION_SPACINGS:
        raise ValueError(
            f"orientations must be one of {ORIENTATION_SPACINGS}, got {orientations!r}."
        )
    if background_frame not in ("copy", "particle"):
        raise ValueError(
            f"background_frame must be 'copy' or 'particle', got {background_frame!r}."
        )
    if noise_domain not in NOISE_DOMAINS:
        raise ValueError(f"noise_domain must be one of {NOISE_DOMAINS}, got {noise_domain!r}.")
    if background_frame == "particle" and mode != "exact":
        raise ValueError(
            "background_frame='particle' projects the stained image at θ + φ; it needs "
            "rotation='exact', not 'linear'."
        )
    if noise_domain == "image" and background_frame != "particle":
        raise ValueError(
            "noise_domain='image' adds noise to the stained image, which exists only with "
            "background_frame='particle'."
        )
    angles = (
        paper_tilt_angles()
        if tilt_angles_deg is None
        else np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    )
    gen = np.random.default_rng(rng)
    phi = (
        copy_orientations_2d(n, gen, spacing=orientations)
        if orientations_deg is None
        else np.asarray(orientations_deg, dtype=np.float64).reshape(-1)
    )
    if phi.shape != (n,) or not np.isfinite(phi).all():
        raise ValueError(
            f"orientations_deg must hold {n} finite angles (degrees), got {orientations_deg!r}."
        )
    nz, nx = img.shape
    volume_shape = (nz, 1, nx)
    support = sphere_support(volume_shape, support_radius_px)  # validates the radius
    support2d = support[:, 0, :]
    if support2d.all():
        raise ValueError(
            f"support radius {support_radius_px} px covers the whole {nz}×{nx} image; "
            "use a smaller one."
        )
    truth2d = img * support2d
    rotations = np.stack([rotation_about_y(p) for p in phi])  # (N, 3, 3)
    copies = [CRMCopy(angles, rotations[i]) for i in range(n)]  # validates the angles

    maker = _BACKGROUND_MAKERS[background]
    options = dict(background_options or {})
    children = _child_rngs(gen, n)
    if background == "authors":
        backgrounds = np.stack([_authors_noise(img, ~support2d, gen, **options) for _ in range(n)])
    else:
        backgrounds = np.stack(
            [maker((nz, nx), g, **options) * ~support2d for g in children]
        )  # (N, nz, nx)

    n_t = angles.size
    image_sigma = None
    if background_frame == "particle":
        stained = truth2d[None] + backgrounds  # (N, nz, nx), the particle frame
        if snr is not None and noise_domain == "image":
            image_sigma = np.array([float(st.std()) / np.sqrt(snr) for st in stained])
            stained = np.stack(
                [
                    st + gen.normal(0.0, sg, st.shape)
                    for st, sg in zip(stained, image_sigma, strict=True)
                ]
            )
        clean = np.stack([_project_slice(stained[i], angles + phi[i], nx) for i in range(n)])
    elif mode == "exact":
        a_bg = build_projection_matrix(angles, nx, nz, nx)  # the microscope's slice matrix
        clean = (a_bg @ backgrounds.reshape(n, -1).T).T.reshape(n, n_t, nx)
        for i in range(n):
            clean[i] += _project_slice(truth2d, angles + phi[i], nx)
    else:
        a_bg = build_projection_matrix(angles, nx, nz, nx)
        clean = (a_bg @ backgrounds.reshape(n, -1).T).T.reshape(n, n_t, nx)
        rot = Rotation3D(volume_shape, rotations)
        stack = torch.from_numpy(np.broadcast_to(truth2d[:, None, :], (n, *volume_shape)).copy())
        rotated = rot(stack).numpy()[:, :, 0, :]  # (N, nz, nx)
        clean += (a_bg @ rotated.reshape(n, -1).T).T.reshape(n, n_t, nx)
    clean = clean[:, :, None, :]  # (N, T, 1, nx)
    if image_sigma is None:
        noisy, sigma = _add_noise(clean, snr, gen)
    else:  # the noise is in the images already
        noisy, sigma = clean.astype(np.float32), image_sigma
    data = CRMData(
        projections=noisy,
        copies=copies,
        support=support,
        pixel_size_angstrom=pixel_size_angstrom,
        truth=truth2d[:, None, :].astype(np.float32),
        names=[f"copy{i:03d}" for i in range(n)],
        background_frame=background_frame,
    )
    logger.info(
        "simulated %d 2D copies of %d×%d px, %d tilts (%s rotation, %s-frame %s stain, "
        "%s orientations, snr %s in the %s)",
        n,
        nz,
        nx,
        n_t,
        mode,
        background_frame,
        background,
        orientations,
        snr,
        noise_domain,
    )
    return CRMSimulation(
        data=data,
        clean=clean.astype(np.float32),
        backgrounds=backgrounds[:, :, None, :].astype(np.float32),
        rotation=mode,
        orientations_deg=phi,
        noise_sigma=sigma,
        snr=snr,
    )


def simulate_shepp_logan_2d(
    n_copies: int = 3,
    *,
    size: int = 320,
    phantom_size: int = 200,
    support_radius_px: float | None = None,
    background: str = "blocks",
    **kwargs: Any,
) -> CRMSimulation:
    """The paper's Shepp–Logan data set: a 320² image, copies stained with random blocks.

    The phantom is ``phantom_size`` px wide (:func:`shepp_logan_particle`); the support
    radius defaults to ``0.48 · phantom_size`` (96 px). Other keywords go to
    :func:`simulate_crm_2d` (``tilt_angles_deg``, ``orientations_deg``, ``snr``,
    ``rotation``, ``background_options``, ``rng`` …).

    Returns
    -------
    CRMSimulation
        Volumes ``(size, 1, size)``; see :func:`simulate_crm_2d`.
    """
    radius = 0.48 * phantom_size if support_radius_px is None else support_radius_px
    return simulate_crm_2d(
        shepp_logan_particle(size, phantom_size),
        n_copies,
        support_radius_px=radius,
        background=background,
        **kwargs,
    )


def simulate_ribosome_2d(
    n_copies: int = 3,
    *,
    density: ArrayLike | str | os.PathLike[str] | None = None,
    size: int = 200,
    support_radius_px: float = 65.0,
    background: str = "noise",
    **kwargs: Any,
) -> CRMSimulation:
    """The paper's ribosome data set: a central slice in 200², radius 65, copies stained with noise.

    Parameters
    ----------
    density
        ``(z, y, x)`` map or MRC path; default ``../shared/data/aspire_70S_ribosome_65.mrc``
        (:data:`DEFAULT_RIBOSOME_MAP`; ``FileNotFoundError`` when absent).
    size, support_radius_px
        Image side and support radius (pixels), the authors' 200 and 65.
    background
        ``"noise"`` (default, smoothed Gaussian noise) or ``"discs"`` (the authors' other
        stain), or any of :data:`BACKGROUNDS_2D`.
    **kwargs
        Passed to :func:`simulate_crm_2d`.

    Returns
    -------
    CRMSimulation
        Volumes ``(size, 1, size)``; see :func:`simulate_crm_2d`.
    """
    source = _default_ribosome_path() if density is None else density
    image = central_slice_particle(source, size, support_radius_px)
    return simulate_crm_2d(
        image, n_copies, support_radius_px=support_radius_px, background=background, **kwargs
    )


# ============================================================================ 3D particles
class _Particle3D:
    """A 3D particle in a ``box³``: atoms (exact rotations) or a map (spline rotations)."""

    def __init__(
        self,
        particle: ArrayLike | str | os.PathLike[str] | None,
        box: int,
        pixel_size_angstrom: float,
        resolution_angstrom: float | None,
    ) -> None:
        self.box = box
        self.pixel_size = pixel_size_angstrom
        self.resolution = resolution_angstrom
        self.coords: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        if particle is None or (
            isinstance(particle, (str, os.PathLike))
            and not str(particle).lower().endswith((".mrc", ".map", ".mrcs", ".rec", ".mrc.gz"))
        ):
            if particle is None:
                ref = resources.files("cryowedge.simulate").joinpath("data", _EXAMPLE_PDB)
                with resources.as_file(ref) as path:
                    coords, elements = read_pdb_atoms(path)
            else:
                coords, elements = read_pdb_atoms(particle)
            self.coords, self.weights = coords, atom_weights(elements)
            raw = self._render(np.eye(3))
        else:
            vol = (
                read_mrc(particle).data
                if isinstance(particle, (str, os.PathLike))
                else np.asarray(particle, np.float64)
            )
            if vol.ndim != 3:
                raise ValueError(f"particle map must be (z, y, x), got shape {vol.shape}.")
            raw = _centre_box(np.asarray(vol, dtype=np.float64), box)
        peak = float(raw.max())
        if not peak > 0:
            raise ValueError(
                "the particle has no positive density; pass a map with dense = positive."
            )
        self.scale = 1.0 / peak
        self.reference = raw * self.scale  # (box, box, box), max 1

    def _render(self, rot: np.ndarray) -> np.ndarray:
        assert self.coords is not None
        return gaussian_atom_map(
            self.coords @ rot.T,
            weights=self.weights,
            pixel_size_angstrom=self.pixel_size,
            box_size=self.box,
            resolution_angstrom=self.resolution,
            center=True,
        ).astype(np.float64)

    def extent_px(self) -> float:
        """Distance from the centre voxel of the farthest voxel above 5 % of the maximum."""
        idx = np.argwhere(self.reference > 0.05)
        return float(np.linalg.norm(idx - self.box // 2, axis=1).max())

    def rotated(self, rot: np.ndarray) -> np.ndarray:
        """The particle rotated by ``rot`` (object rotation): exact (atoms) or cubic splines."""
        if self.coords is not None:
            return self._render(rot) * self.scale
        return rotate_volume(self.reference, rot, order=3).astype(np.float64)


def _centre_box(vol: np.ndarray, box: int) -> np.ndarray:
    """Crop or zero-pad ``vol`` about its centre voxels ``N // 2`` to ``box³``."""
    out = np.zeros((box,) * 3)
    src, dst = [], []
    for n in vol.shape:
        lo = n // 2 - box // 2  # input index of output index 0
        s0, s1 = max(lo, 0), min(lo + box, n)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def _support_radius(particle: _Particle3D, box: int, radius: float | None) -> float:
    r = particle.extent_px() + 1.5 if radius is None else float(radius)
    if not 0 < r < box / 2:
        raise ValueError(
            f"support radius {r:.1f} voxels does not fit a {box}³ box (needs < {box / 2}); "
            "enlarge box_size, pass a smaller support_radius_px or a coarser pixel_size_angstrom."
        )
    return r


def _cell_background(
    shape: tuple[int, int, int],
    pixel_size_angstrom: float,
    gen: np.random.Generator,
    options: dict[str, Any],
) -> np.ndarray:
    """A :func:`crowded_cell` volume (float64); when its small particles do not all fit in a
    small box, fewer are placed (the draw stays deterministic for the generator)."""
    opts = dict(options)
    seed = int(gen.integers(0, 2**63 - 1))
    while True:
        try:
            cell = crowded_cell(shape, pixel_size_angstrom=pixel_size_angstrom, rng=seed, **opts)
            return cell.volume.astype(np.float64)
        except ValueError:
            if opts.get("n_particles", 0) <= 0:
                raise
            opts["n_particles"] = int(opts["n_particles"]) - 1
            logger.debug("crowded_cell: retrying with n_particles=%d", opts["n_particles"])


def _project_batched(volumes: np.ndarray, projector: TiltProjector, batch: int = 16) -> np.ndarray:
    out = np.empty((volumes.shape[0], *projector.range_shape), dtype=np.float64)
    for s in range(0, volumes.shape[0], batch):
        out[s : s + batch] = projector(
            torch.from_numpy(np.ascontiguousarray(volumes[s : s + batch]))
        ).numpy()
    return out


def simulate_crm_3d(
    n_copies: int = 20,
    *,
    particle: ArrayLike | str | os.PathLike[str] | None = None,
    box_size: int = 48,
    pixel_size_angstrom: float = 3.0,
    resolution_angstrom: float | None = None,
    support_radius_px: float | None = None,
    tilt_angles_deg: ArrayLike | None = None,
    rotations_xyz: ArrayLike | None = None,
    background: str = "cell",
    background_options: dict[str, Any] | None = None,
    snr: float | None = 1.0,
    rotation: str = "exact",
    rng: np.random.Generator | int | None = None,
) -> CRMSimulation:
    """The paper's 3D setting at small scale: copies of a real density at random orientations.

    Each copy is the particle rotated by a uniformly random rotation, inside its own
    ``box³`` whose surroundings are a piece of a crowded cell
    (:func:`cryowedge.simulate.phantoms.crowded_cell`: a membrane bilayer, cytoplasm
    texture, other small particles), zero on the support; each is projected over the same
    tilt scheme (default ±50° at 5°) and noise at ``snr`` (default 1) is added.

    Parameters
    ----------
    n_copies
        Number of copies ``N``.
    particle
        ``None`` (default): the bundled PDB entry 1A5T as Gaussian atoms (exact rotations);
        a PDB/mmCIF path (atoms); an MRC path or a ``(z, y, x)`` map at
        ``pixel_size_angstrom`` (cubic-spline rotations), cropped/padded to the box.
    box_size
        Box side (voxels).
    pixel_size_angstrom
        Voxel size (Å); sets the atom map's scale and the membrane geometry.
    resolution_angstrom
        Gaussian-atom width (default ``2 ×`` voxel size, :func:`gaussian_atom_map`).
    support_radius_px
        Support sphere radius (voxels); default the particle's extent + 1.5 voxels.
    tilt_angles_deg
        ``(n_tilts,)`` microscope angles (degrees); default ±50° at 5°.
    rotations_xyz
        ``(N, 3, 3)`` copy rotations; default :func:`random_rotations`.
    background
        ``"cell"`` (default) or ``"none"``.
    background_options
        Keywords of :func:`crowded_cell` (defaults: ``n_particles=4, n_vesicles=0,
        membrane=1, slab_fraction=1.0``).
    snr
        Projection SNR (variance ratio, per copy), or ``None`` for clean data.
    rotation
        ``"exact"`` or ``"linear"`` (module docstring).
    rng
        Seed or generator.

    Returns
    -------
    CRMSimulation
        ``data.projections`` ``(N, n_tilts, box, box)``, ``backgrounds`` ``(N, box, box, box)``,
        ``truth`` ``(box, box, box)`` (maximum about 1).
    """
    n = _check_count(n_copies, "n_copies")
    box = _check_count(box_size, "box_size")
    mode = _check_mode(rotation)
    snr = _check_snr(snr)
    if background not in ("cell", "none"):
        raise ValueError(f"background must be 'cell' or 'none', got {background!r}.")
    if not pixel_size_angstrom > 0:
        raise ValueError(f"pixel_size_angstrom must be > 0 Å, got {pixel_size_angstrom!r}.")
    angles = (
        paper_tilt_angles(50.0, 5.0)
        if tilt_angles_deg is None
        else np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    )
    gen = np.random.default_rng(rng)
    rots = (
        random_rotations(n, gen)
        if rotations_xyz is None
        else np.asarray(rotations_xyz, dtype=np.float64)
    )
    if rots.shape != (n, 3, 3):
        raise ValueError(f"rotations_xyz must be ({n}, 3, 3), got {rots.shape}.")
    copies = [CRMCopy(angles, rots[i]) for i in range(n)]  # validates angles and matrices
    source = _Particle3D(particle, box, float(pixel_size_angstrom), resolution_angstrom)
    radius = _support_radius(source, box, support_radius_px)
    volume_shape = (box, box, box)
    support = sphere_support(volume_shape, radius)
    truth = source.reference * support

    options = {"n_particles": 4, "n_vesicles": 0, "membrane": 1, "slab_fraction": 1.0}
    options.update(background_options or {})
    backgrounds = np.zeros((n, *volume_shape))
    for i, g in enumerate(_child_rngs(gen, n)):
        if background == "cell":
            backgrounds[i] = (
                _cell_background(volume_shape, pixel_size_angstrom, g, options) * ~support
            )

    volumes = backgrounds.copy()
    if mode == "exact":
        for i in range(n):
            volumes[i] += source.rotated(rots[i]) * support
    else:
        rot = Rotation3D(volume_shape, rots, broadcast=True)
        volumes += rot(torch.from_numpy(truth)).numpy()
    geometry = TiltGeometry(
        angles, detector_shape=(box, box), pixel_size_angstrom=pixel_size_angstrom
    )
    clean = _project_batched(volumes, TiltProjector(geometry, volume_shape))
    noisy, sigma = _add_noise(clean, snr, gen)
    data = CRMData(
        projections=noisy,
        copies=copies,
        support=support,
        pixel_size_angstrom=float(pixel_size_angstrom),
        truth=truth.astype(np.float32),
        names=[f"copy{i:03d}" for i in range(n)],
    )
    logger.info(
        "simulated %d 3D copies in %d³ boxes, %d tilts (%s rotation, snr %s)",
        n,
        box,
        angles.size,
        mode,
        snr,
    )
    return CRMSimulation(
        data=data,
        clean=clean.astype(np.float32),
        backgrounds=backgrounds.astype(np.float32),
        rotation=mode,
        noise_sigma=sigma,
        snr=snr,
    )


# ============================================================================ tomogram
def _place_centres(
    n: int,
    shape: tuple[int, int, int],
    box: int,
    radius: float,
    gap: float,
    gen: np.random.Generator,
    max_attempts: int = 20000,
) -> np.ndarray:
    """``(n, 3)`` integer ``(z, y, x)`` centres: x/y boxes and z spheres inside, spheres apart."""
    nz, ny, nx = shape
    r = int(np.ceil(radius))
    lo = np.array([r, box // 2, box // 2])
    hi = np.array([nz - 1 - r, ny - box + box // 2, nx - box + box // 2])
    if np.any(hi < lo):
        raise ValueError(
            f"a {box}-voxel box with a support of radius {radius:.1f} does not fit the "
            f"tomogram {shape}; "
            "enlarge the tomogram or use a smaller box."
        )
    centres: list[np.ndarray] = []
    for _ in range(max_attempts):
        if len(centres) == n:
            break
        c = gen.integers(lo, hi + 1)
        if centres and np.min(np.linalg.norm(np.asarray(centres) - c, axis=1)) < 2 * radius + gap:
            continue
        centres.append(c)
    if len(centres) < n:
        raise ValueError(
            f"could place only {len(centres)} of {n} non-overlapping particles in the "
            f"tomogram {shape}; "
            "use fewer particles or a larger tomogram."
        )
    return np.asarray(centres, dtype=np.float64)


def simulate_particle_tomogram(
    n_particles: int = 6,
    *,
    particle: ArrayLike | str | os.PathLike[str] | None = None,
    tomogram_shape: Sequence[int] = (48, 96, 96),
    box_size: int = 32,
    pixel_size_angstrom: float = 3.0,
    support_radius_px: float | None = None,
    tilt_angles_deg: ArrayLike | None = None,
    background: str = "cell",
    background_options: dict[str, Any] | None = None,
    snr: float | None = None,
    tomo_name: str = "tomo01",
    rng: np.random.Generator | int | None = None,
) -> TomogramSimulation:
    """A tomogram with particle copies at known positions and orientations, and its tilt series.

    The particles (exactly rotated, as in :func:`simulate_crm_3d`) sit at random integer
    voxel centres, their ``box_size`` boxes inside the tomogram in ``x`` and ``y`` and their
    supports inside it in ``z``, supports not overlapping. The crowded-cell background is
    zeroed on every particle's support (so each copy obeys the CRM model inside its box),
    and the tomogram is projected with :class:`TiltProjector` (aligned geometry, default
    ±60° at 3°). The particle list is what :func:`cryowedge.crm.particles.extract_subtilt_series`
    reads back.

    Parameters
    ----------
    n_particles
        Number of particle copies.
    particle, pixel_size_angstrom, support_radius_px, background, background_options
        As in :func:`simulate_crm_3d` (``background_options`` go to :func:`crowded_cell`,
        default ``n_particles=6, n_vesicles=0, membrane=1, slab_fraction=0.8``).
    tomogram_shape
        ``(nz, ny, nx)`` voxels (the detector is ``(ny, nx)``).
    box_size
        Side of the particle box (voxels).
    tilt_angles_deg
        ``(n_tilts,)`` degrees; default ±60° at 3°.
    snr
        Tilt-series SNR (variance ratio over the whole series), or ``None``.
    tomo_name
        Name written to the particle list.
    rng
        Seed or generator.

    Returns
    -------
    TomogramSimulation
    """
    n = _check_count(n_particles, "n_particles")
    box = _check_count(box_size, "box_size")
    shape = tuple(int(s) for s in tomogram_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"tomogram_shape must be (nz, ny, nx), got {tomogram_shape!r}.")
    snr = _check_snr(snr)
    if background not in ("cell", "none"):
        raise ValueError(f"background must be 'cell' or 'none', got {background!r}.")
    angles = (
        paper_tilt_angles(60.0, 3.0)
        if tilt_angles_deg is None
        else np.asarray(tilt_angles_deg, dtype=np.float64).reshape(-1)
    )
    geometry = TiltGeometry(
        angles, detector_shape=shape[1:], pixel_size_angstrom=pixel_size_angstrom
    )
    gen = np.random.default_rng(rng)
    source = _Particle3D(particle, box, float(pixel_size_angstrom), None)
    radius = _support_radius(source, box, support_radius_px)
    support = sphere_support((box, box, box), radius)
    centres_zyx = _place_centres(n, shape, box, radius, 2.0, gen)
    rots = random_rotations(n, gen)

    if background == "cell":
        options = {"n_particles": 6, "n_vesicles": 0, "membrane": 1, "slab_fraction": 0.8}
        options.update(background_options or {})
        tomogram = _cell_background(shape, pixel_size_angstrom, gen, options)
    else:
        tomogram = np.zeros(shape)
    boxes = np.stack([source.rotated(rots[i]) * support for i in range(n)])  # (n, b, b, b)
    masks = np.broadcast_to(support.astype(np.float64), boxes.shape).copy()
    cover = insert_subvolumes(torch.from_numpy(masks), centres_zyx, shape).numpy()
    tomogram = (
        tomogram * (cover < 0.5)
        + insert_subvolumes(torch.from_numpy(boxes), centres_zyx, shape).numpy()
    )

    clean = TiltProjector(geometry, shape)(torch.from_numpy(tomogram)).numpy()
    sigma: float | None = None
    if snr is None:
        series = clean.astype(np.float32)
    else:
        series, s = add_gaussian_noise(clean, snr=snr, rng=gen, per_image=False)
        sigma = float(s)
    particles = ParticleList.from_rotations(centres_zyx[:, ::-1], rots, [tomo_name] * n)
    logger.info("simulated a %s tomogram with %d particles, %d tilts", shape, n, angles.size)
    return TomogramSimulation(
        tilt_series=series,
        clean=clean.astype(np.float32),
        geometry=geometry,
        tomogram=tomogram.astype(np.float32),
        particles=particles,
        reference=(source.reference * support).astype(np.float32),
        support_radius_px=radius,
        noise_sigma=sigma,
    )


def write_tomogram_simulation(
    simulation: TomogramSimulation,
    directory: str | os.PathLike[str],
    *,
    stem: str = "crm_sim",
    overwrite: bool = True,
) -> dict[str, Path]:
    """Write a :class:`TomogramSimulation` as the files a real CRM run reads, plus its truth.

    Files in ``directory``: ``<stem>.mrc`` (tilt series, image stack), ``<stem>.tlt``
    (angles), ``<stem>_particles.star`` (:func:`write_particle_star`),
    ``<stem>_tomogram.mrc`` and ``<stem>_reference.mrc`` (ground truth), all at the
    simulation's pixel size (Å).

    Returns
    -------
    dict
        ``{"tilt_series", "angles", "particles", "tomogram", "reference"}`` → paths.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    px = simulation.geometry.pixel_size_angstrom
    paths = {
        "tilt_series": write_mrc(
            out / f"{stem}.mrc",
            simulation.tilt_series,
            voxel_size_angstrom=px,
            image_stack=True,
            overwrite=overwrite,
        ),
        "angles": write_tilt_angles(
            out / f"{stem}.tlt", simulation.geometry.tilt_angles_deg, overwrite=overwrite
        ),
        "particles": write_particle_star(
            out / f"{stem}_particles.star", simulation.particles, overwrite=overwrite
        ),
        "tomogram": write_mrc(
            out / f"{stem}_tomogram.mrc",
            simulation.tomogram,
            voxel_size_angstrom=px,
            overwrite=overwrite,
        ),
        "reference": write_mrc(
            out / f"{stem}_reference.mrc",
            simulation.reference,
            voxel_size_angstrom=px,
            overwrite=overwrite,
        ),
    }
    logger.info("wrote the simulated tomogram data set to %s", out)
    return paths
