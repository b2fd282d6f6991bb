"""Simulated single-particle data sets from a real density (research/thesis.md §4.1.7, §4.2).

:func:`simulate_spa` makes ``P`` particle images of a density at uniformly random orientations,
with optional in-plane shifts, per-particle CTFs, white Gaussian noise at a target SNR,
errors on the assigned Euler angles and class averaging, and returns them as a
:class:`~cryowedge.spa.particles.ParticleStack` together with the truth
(:class:`SpaSimulation`). :func:`write_spa_simulation` writes the stack as RELION STAR + MRCS
and the truth as an MRC map.

How the images are made (and why it is not an inverse crime)
------------------------------------------------------------
The density (an MRC map, or the Gaussian-atom map of a PDB model) is band-limited to the
target grid's Nyquist frequency, resampled (cubic splines) onto a grid ``oversample`` times
finer than the target ``n³`` box and softly masked by a sphere. Its samples become the
coefficients of the thesis's **data-generation basis** KBWF(a = 2, α = 10.8, m = 2)
(:data:`~cryowedge.spa.basis.SIMULATION_BLOB`). The images are the exact X-ray transforms of
that continuous function (closed-form projected blobs,
:class:`~cryowedge.spa.projector.SpaProjector`) on a detector ``oversample`` times finer,
averaged over ``oversample²`` sub-pixels (a pixel-integrating detector). The **truth** is the
same function averaged over each voxel of the ``n³`` box. Reconstructions use the different
basis KBWF(4, 19, 2) on the ``n³`` grid (thesis §4.2: "different, to avoid inverse crime");
with ``oversample ≥ 2`` the generating grid is also finer than the reconstruction grid.

Other model choices
-------------------
* **Orientations** are Haar-uniform (:func:`~cryowedge.geometry.rotations.random_rotations`);
  shifts ``(dy, dx)`` uniform in ``[−max_shift_px, max_shift_px]``.
* **CTF** per particle (:class:`~cryowedge.spa.particles.CTFParams`): defocus U uniform in
  ``defocus_range_angstrom``, defocus V = U − astigmatism × U(0, 1), azimuth uniform in
  ``[0°, 180°)``, 300 kV, C_s 2.7 mm, amplitude contrast 0.07 by default. It is
  :func:`cryowedge.simulate.ctf.ctf_2d` (``C(0) = −A``: dense matter dark, the stack's
  ``inverted_contrast`` is ``False``), applied with periodic boundaries before the noise.
* **Noise**: white Gaussian with ``SNR = var(signal) / σ²`` (the definition of
  :func:`cryowedge.simulate.noise.add_gaussian_noise`). By default one σ for the whole data set,
  from the variance of all noise-free images (thesis.md §13 item 10: a data-set SNR; the
  variance is over the whole box, so the SNR depends on how much of the box the particle fills);
  ``snr_per_image=True`` gives every image its own σ.
* **Angular error** (thesis §4.1.7, Fig. 4.2): a zero-mean random variable of the requested
  variance (deg²) is added to each of the three assigned Euler angles (rot, tilt, psi): uniform
  ``U(−e, e)`` with ``e = √(3·variance)`` (the thesis's choice) or Gaussian. The images are
  always made at the true pose; the stack carries the perturbed (assigned) rotations.
* **Class averaging** (thesis §4.1.7): ``n_classes`` template directions on a Fibonacci sphere
  (in-plane angle 0); each particle joins the template nearest to its *assigned* projection
  direction, is aligned in-plane and in translation to the template and averaged. The thesis
  aligned the noisy images with MATLAB's ``imregister``; here the alignment is ideal: the
  in-plane angle that brings the true pose closest to the template (closed form) and no
  residual shift. Each member's aligned image is simulated directly, and the average's noise is
  the average of the members' noises (drawn as one Gaussian of that variance: equal in
  distribution, and rotating white noise leaves it white). The class averages are returned as a
  second stack with the template rotations. Class averaging with a CTF is refused (the thesis
  simulates no PSF there; CTF-affected averages would need a CTF correction first).
* **Random streams**: orientations, shifts, CTFs, angular errors, noise and half sets come from
  independent streams of one seed, so changing e.g. the angular error leaves the images and
  noise unchanged (the robustness experiment relies on this).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import ndimage

from cryowedge.geometry.rotations import euler_zyz_to_matrix, matrix_to_euler_zyz, random_rotations
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.simulate.ctf import apply_ctf
from cryowedge.simulate.pdb import gaussian_atom_map, read_pdb_atoms
from cryowedge.spa.basis import SIMULATION_BLOB, KaiserBesselBlob, expand
from cryowedge.spa.ctf_model import ctf_arrays
from cryowedge.spa.io import write_relion_particles
from cryowedge.spa.particles import CTFParams, ParticleStack
from cryowedge.spa.projector import SpaProjector

__all__ = [
    "DENSITY_SOURCES",
    "DensitySource",
    "SpaSimulation",
    "load_density_source",
    "resample_density",
    "simulate_spa",
    "write_spa_simulation",
    "geodesic_distance_deg",
    "fibonacci_templates",
]

logger = logging.getLogger(__name__)

#: Named densities: the bundled PDB entry 1A5T (Gaussian atoms; always available) and two real
#: maps of ``../shared/data`` (the 70S ribosome of ASPIRE, 65³; EMDB EMD-5170, 100³ at 2.38 Å).
DENSITY_SOURCES = ("1a5t", "ribosome", "emd_5170")
_SHARED_FILES = {"ribosome": "aspire_70S_ribosome_65.mrc", "emd_5170": "emd_5170.map"}

#: The ribosome map has no voxel size in its header; this value (Å) is an *assumption* that makes
#: the 70S ribosome (~250 Å across) fill most of its 65³ box. Pass ``source_pixel_size_angstrom``
#: to override it. It only sets the Å scale of resolutions, not the images.
RIBOSOME_ASSUMED_PIXEL_SIZE_ANGSTROM = 4.0

#: Pixel size (Å) and resolution (Å) of the Gaussian-atom map of 1A5T before resampling.
_ATOM_MAP_PIXEL_ANGSTROM = 1.5

#: Names of the independent random streams drawn from one seed.
_STREAMS = ("orientations", "shifts", "ctf", "angles", "noise", "halves", "classes")


# ---------------------------------------------------------------------------- density sources
@dataclass(frozen=True)
class DensitySource:
    """A density map with its voxel size, before resampling to a simulation box.

    Attributes
    ----------
    volume : numpy.ndarray
        ``(N, N, N)`` float64 ``(z, y, x)`` map, its centre at voxel ``N // 2`` (dense = positive).
    pixel_size_angstrom : float
        Voxel size (Å).
    name : str
        Where it came from (a source name or a path).
    """

    volume: np.ndarray
    pixel_size_angstrom: float
    name: str


def _shared_data_file(filename: str) -> Path:
    """``../shared/data/<filename>`` next to the checkout (or the working directory)."""
    candidates = [Path.cwd().parent / "shared" / "data" / filename]
    here = Path(__file__).resolve()
    if len(here.parents) > 4:
        candidates.append(here.parents[4] / "shared" / "data" / filename)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"{filename} was not found in ../shared/data; pass a (z, y, x) map or an MRC path "
        "instead, or use the bundled source '1a5t'."
    )


@functools.lru_cache(maxsize=2)
def _atom_map_1a5t() -> np.ndarray:
    ref = resources.files("cryowedge.simulate").joinpath("data", "1A5T.pdb.gz")
    with resources.as_file(ref) as path:
        coords, elements = read_pdb_atoms(path)
    vol = gaussian_atom_map(
        coords,
        elements,
        pixel_size_angstrom=_ATOM_MAP_PIXEL_ANGSTROM,
        resolution_angstrom=2.0 * _ATOM_MAP_PIXEL_ANGSTROM,
        center=True,
    )
    vol = np.asarray(vol, dtype=np.float64)
    vol.setflags(write=False)
    return vol


def load_density_source(
    source: str | os.PathLike[str] | ArrayLike | DensitySource = "1a5t",
    *,
    source_pixel_size_angstrom: float | None = None,
) -> DensitySource:
    """A density to simulate from: a name of :data:`DENSITY_SOURCES`, an MRC path or an array.

    Parameters
    ----------
    source : str, path, array or DensitySource
        ``"1a5t"`` (Gaussian-atom map of the bundled PDB entry, 1.5 Å voxels), ``"ribosome"`` or
        ``"emd_5170"`` (files of ``../shared/data``), an MRC/CCP4 file, or a cubic ``(N, N, N)``
        ``(z, y, x)`` array.
    source_pixel_size_angstrom : float, optional
        Voxel size of the source (Å). Required for an array; overrides an MRC header; for the
        ribosome default :data:`RIBOSOME_ASSUMED_PIXEL_SIZE_ANGSTROM`.

    Returns
    -------
    DensitySource
    """
    if isinstance(source, DensitySource):
        return source
    px = None if source_pixel_size_angstrom is None else float(source_pixel_size_angstrom)
    if px is not None and not (math.isfinite(px) and px > 0):
        raise ValueError(f"source_pixel_size_angstrom must be > 0 Å, got {px!r}.")
    if isinstance(source, str) and source.lower() in DENSITY_SOURCES:
        name = source.lower()
        if name == "1a5t":
            if px is not None:
                raise ValueError(
                    "the 1a5t source is built at 1.5 Å voxels; source_pixel_size_angstrom does "
                    "not apply (set the simulation's pixel_size_angstrom instead)."
                )
            return DensitySource(_atom_map_1a5t(), _ATOM_MAP_PIXEL_ANGSTROM, name)
        path = _shared_data_file(_SHARED_FILES[name])
        mrc = read_mrc(path)
        if px is None:
            px = (
                float(mrc.voxel_size_angstrom[0])
                if mrc.has_voxel_size
                else RIBOSOME_ASSUMED_PIXEL_SIZE_ANGSTROM
            )
        vol = np.asarray(mrc.data, dtype=np.float64)
        name_out = name
    elif isinstance(source, (str, os.PathLike)):
        mrc = read_mrc(source)
        if px is None:
            if not mrc.has_voxel_size:
                raise ValueError(
                    f"{source} has no voxel size in its header; pass source_pixel_size_angstrom."
                )
            px = float(mrc.voxel_size_angstrom[0])
        vol = np.asarray(mrc.data, dtype=np.float64)
        name_out = str(source)
    else:
        vol = np.asarray(source, dtype=np.float64)
        if px is None:
            raise ValueError("pass source_pixel_size_angstrom (Å) with a density array.")
        name_out = "array"
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(
            f"the density must be a cubic (N, N, N) (z, y, x) map, got shape {vol.shape}; pad or "
            "crop it to a cube."
        )
    if not np.isfinite(vol).all():
        raise ValueError("the density contains NaN or Inf values.")
    if vol.max() <= 0:
        raise ValueError("the density has no positive value; pass a map with dense = positive.")
    return DensitySource(vol, px, name_out)


def _lowpass(vol: np.ndarray, cutoff_cycles_per_voxel: float) -> np.ndarray:
    """Raised-cosine low-pass: 1 below 0.85·cut-off, 0 above the cut-off (cycles/voxel)."""
    if cutoff_cycles_per_voxel >= 0.5:
        return vol
    axes = [np.fft.fftfreq(n) for n in vol.shape[:-1]] + [np.fft.rfftfreq(vol.shape[-1])]
    f = np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2] ** 2)
    lo = 0.85 * cutoff_cycles_per_voxel
    t = np.clip((f - lo) / (cutoff_cycles_per_voxel - lo), 0.0, 1.0)
    filt = 0.5 * (1.0 + np.cos(np.pi * t))
    return np.fft.irfftn(np.fft.rfftn(vol) * filt, s=vol.shape, axes=(0, 1, 2))


def _extent_angstrom(source: DensitySource, threshold: float = 0.05) -> float:
    """Distance (Å) from the centre voxel of the farthest voxel above ``threshold``·max."""
    vol = source.volume
    n = vol.shape[0]
    idx = np.argwhere(vol > threshold * vol.max()) - n // 2
    return (float(np.sqrt((idx.astype(np.float64) ** 2).sum(axis=1)).max()) + 0.5) * (
        source.pixel_size_angstrom
    )


def resample_density(
    source: DensitySource,
    box_size: int,
    *,
    pixel_size_angstrom: float | None = None,
    fill: float = 0.7,
    oversample: int = 1,
    mask: bool = True,
) -> tuple[np.ndarray, float]:
    """Resample a density onto a simulation grid ``oversample`` times finer than ``box_size³``.

    The map is low-passed to the target Nyquist frequency ``1 / (2·pixel_size)`` (raised cosine
    from 85 %), then sampled with cubic splines. Fine voxel ``j`` (per axis) sits at target
    coordinate ``(j − o·(n // 2) − (o − 1)/2) / o`` (target voxels from the centre ``n // 2``), so
    the mean over each block of ``o³`` fine voxels is the target voxel's cell average.

    Parameters
    ----------
    source : DensitySource
        The density.
    box_size : int
        Target box ``n`` (voxels per axis, >= 4).
    pixel_size_angstrom : float, optional
        Target voxel size (Å). Default: the one at which the particle (farthest voxel above 5 %
        of the maximum) reaches ``fill · n / 2`` from the centre.
    fill : float
        Particle radius as a fraction of the half box, in ``(0, 1]`` (default 0.7).
    oversample : int
        Fine grid factor ``o`` (>= 1).
    mask : bool
        Multiply by a soft sphere (radius ``min(1.1 × particle radius, n/2 − 1)`` target voxels,
        cosine edge 2 voxels) so nothing lies in the box corners.

    Returns
    -------
    (numpy.ndarray, float)
        ``(o·n, o·n, o·n)`` float64 fine grid and the target voxel size (Å).
    """
    n = int(box_size)
    o = int(oversample)
    if n < 4:
        raise ValueError(f"box_size must be >= 4 voxels, got {box_size!r}.")
    if o < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}.")
    if not 0 < fill <= 1:
        raise ValueError(f"fill must lie in (0, 1], got {fill!r}.")
    extent = _extent_angstrom(source)
    if pixel_size_angstrom is None:
        px = extent / (fill * n / 2.0)
    else:
        px = float(pixel_size_angstrom)
        if not (math.isfinite(px) and px > 0):
            raise ValueError(f"pixel_size_angstrom must be > 0 Å, got {pixel_size_angstrom!r}.")
    src_px = source.pixel_size_angstrom
    vol = _lowpass(source.volume, 0.5 * src_px / px)
    n_src = vol.shape[0]
    # fine index j -> target coordinate x(j) = (j - o·(n//2) - (o-1)/2)/o voxels -> source index
    step = px / (o * src_px)
    offset = n_src // 2 - (o * (n // 2) + (o - 1) / 2.0) * step
    fine = ndimage.affine_transform(
        vol,
        np.full(3, step),
        offset=offset,
        output_shape=(o * n,) * 3,
        order=3,
        mode="grid-constant",
        cval=0.0,
    )
    if mask:
        radius = min(1.1 * extent / px, n / 2.0 - 1.0)
        x = (np.arange(o * n) - o * (n // 2) - (o - 1) / 2.0) / o
        r = np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2)
        t = np.clip((r - (radius - 2.0)) / 2.0, 0.0, 1.0)
        fine = fine * (0.5 * (1.0 + np.cos(np.pi * t)))
    return fine, px


# ---------------------------------------------------------------------------- geometry helpers
def geodesic_distance_deg(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Angle (degrees) of the rotation ``a bᵀ`` between two sets of rotations ``(..., 3, 3)``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    tr = np.einsum("...ij,...ij->...", a, b)  # trace(a bᵀ)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def fibonacci_templates(n: int) -> np.ndarray:
    """``n`` near-uniform template rotations: Fibonacci-sphere directions, in-plane angle 0.

    Returns
    -------
    numpy.ndarray
        ``(n, 3, 3)`` RELION ZYZ matrices whose third rows (projection directions) cover the
        sphere evenly.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n!r}.")
    i = np.arange(n) + 0.5
    cos_tilt = 1.0 - 2.0 * i / n
    rot = np.degrees(np.pi * (1.0 + 5**0.5) * i) % 360.0
    tilt = np.degrees(np.arccos(cos_tilt))
    return euler_zyz_to_matrix(rot, tilt, np.zeros(n))


def _inplane_alignment(rotations: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """``Rz(φ) R`` closest to each template (Frobenius), ``φ`` an in-plane (detector) rotation."""
    q = rotations @ np.swapaxes(templates, 1, 2)  # R Tᵀ
    phi = np.arctan2(q[:, 0, 1] - q[:, 1, 0], q[:, 0, 0] + q[:, 1, 1])
    c, s = np.cos(phi), np.sin(phi)
    rz = np.zeros((len(phi), 3, 3))
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
    return rz @ rotations


# ---------------------------------------------------------------------------- simulation
@dataclass(frozen=True, eq=False)
class SpaSimulation:
    """A simulated single-particle data set and everything known about how it was made.

    Attributes
    ----------
    stack : ParticleStack
        ``P`` noisy images ``(P, n, n)`` with the **assigned** rotations (the true ones perturbed
        by the angular error; equal to them without error), the true shifts, the CTF parameters
        (or ``None``) and random half sets.
    truth : numpy.ndarray
        ``(n, n, n)`` float32 ground truth: the imaged function averaged over each voxel
        (maximum scaled to 1).
    true_rotations : numpy.ndarray
        ``(P, 3, 3)`` true poses.
    angle_perturbation_deg : numpy.ndarray
        ``(P, 3)`` error added to the true (rot, tilt, psi) (degrees).
    angular_error_deg : numpy.ndarray
        ``(P,)`` geodesic angle between true and assigned rotation (degrees).
    noise_sigma : numpy.ndarray
        ``(P,)`` noise standard deviation of each image (all equal unless per-image SNR); 0
        without noise.
    clean_images : numpy.ndarray or None
        ``(P, n, n)`` noise-free images (with CTF), when ``keep_clean`` was set.
    coefficients : numpy.ndarray
        ``(o·n)³`` float64 KBWF(2, 10.8, 2) coefficients of the imaged function on the
        simulation grid (scaled like ``truth``).
    blob : KaiserBesselBlob
        The data-generation basis.
    oversample : int
        Simulation grid factor ``o``.
    class_averages : ParticleStack or None
        Class averages ``(k, n, n)`` with their template rotations (``class_ids`` 1…k), when
        ``n_classes`` was set; empty classes are dropped.
    class_of_particle : numpy.ndarray or None
        ``(P,)`` 0-based index into ``class_averages`` of each particle.
    class_error_deg : numpy.ndarray or None
        ``(k,)`` mean geodesic angle between each class's template and its members' aligned true
        poses (the effective orientation error of the average).
    source : str
        Density name or path.
    """

    stack: ParticleStack
    truth: np.ndarray
    true_rotations: np.ndarray
    angle_perturbation_deg: np.ndarray
    angular_error_deg: np.ndarray
    noise_sigma: np.ndarray
    clean_images: np.ndarray | None
    coefficients: np.ndarray
    blob: KaiserBesselBlob
    oversample: int
    class_averages: ParticleStack | None = None
    class_of_particle: np.ndarray | None = None
    class_error_deg: np.ndarray | None = None
    source: str = ""

    @property
    def pixel_size_angstrom(self) -> float:
        """Voxel and pixel size (Å)."""
        return self.stack.pixel_size_angstrom

    @property
    def true_angles_deg(self) -> np.ndarray:
        """``(P, 3)`` true RELION (rot, tilt, psi) in degrees."""
        return np.stack(matrix_to_euler_zyz(self.true_rotations), axis=1)

    def with_true_poses(self) -> ParticleStack:
        """The stack with the true rotations (the oracle for reconstructions)."""
        return self.stack.replace(rotations=self.true_rotations)


def _check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value


def _fine_shifts(
    rotations: np.ndarray, shifts_px: np.ndarray, n: int, n_det: int, o: int
) -> np.ndarray:
    """Shifts ``(dy, dx)`` on the ``o``-times finer detector that put every point where the
    target-grid model puts it after ``o × o`` binning (see :func:`resample_density`)."""
    if o == 1:
        return shifts_px
    delta_v = o * (n // 2) + (o - 1) / 2.0 - (o * n) // 2  # fine volume offset of the centre
    delta_d = o * (n_det // 2) + (o - 1) / 2.0 - (o * n_det) // 2  # fine detector offset
    m1 = rotations[:, :2, :].sum(axis=2)  # (P, 2) = M·(1, 1, 1) as (x', y')
    dy = o * shifts_px[:, 0] + delta_d - delta_v * m1[:, 1]
    dx = o * shifts_px[:, 1] + delta_d - delta_v * m1[:, 0]
    return np.stack([dy, dx], axis=1)


def _project(
    coefficients: np.ndarray,
    rotations: np.ndarray,
    shifts_px: np.ndarray,
    *,
    n: int,
    n_det: int,
    o: int,
    blob: KaiserBesselBlob,
    batch: int,
) -> np.ndarray:
    """Noise-free images ``(P, n_det, n_det)`` float32 (pixel-integrated, target units)."""
    n_proj = rotations.shape[0]
    out = np.empty((n_proj, n_det, n_det), dtype=np.float32)
    c = torch.as_tensor(coefficients, dtype=torch.float64)
    fine_shifts = _fine_shifts(rotations, shifts_px, n, n_det, o)
    for p0 in range(0, n_proj, batch):
        p1 = min(p0 + batch, n_proj)
        proj = SpaProjector(
            o * n,
            rotations[p0:p1],
            fine_shifts[p0:p1],
            blob=blob,
            detector_size=o * n_det,
            dtype=torch.float64,
        )
        img = proj.forward(c)
        if o > 1:
            img = img.reshape(p1 - p0, n_det, o, n_det, o).mean(dim=(2, 4)) / o
        out[p0:p1] = img.to(torch.float32).numpy()
    return out


def simulate_spa(
    density: str | os.PathLike[str] | ArrayLike | DensitySource = "1a5t",
    *,
    box_size: int = 32,
    n_particles: int = 500,
    pixel_size_angstrom: float | None = None,
    source_pixel_size_angstrom: float | None = None,
    fill: float = 0.7,
    snr: float | None = 1.0,
    snr_per_image: bool = False,
    max_shift_px: float = 0.0,
    ctf: bool = False,
    defocus_range_angstrom: tuple[float, float] = (10_000.0, 25_000.0),
    astigmatism_angstrom: float = 0.0,
    b_factor_angstrom2: float = 0.0,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    angular_error_variance_deg2: float = 0.0,
    angular_error_distribution: str = "uniform",
    n_classes: int | None = None,
    oversample: int = 1,
    seed: int | None = 0,
    keep_clean: bool = False,
    batch_size: int = 256,
) -> SpaSimulation:
    """Simulate a single-particle data set from a density (see the module docstring).

    Parameters
    ----------
    density : str, path, array or DensitySource
        ``"1a5t"`` (bundled, default), ``"ribosome"``, ``"emd_5170"``, an MRC path or an array
        (:func:`load_density_source`).
    box_size : int
        Image and volume size ``n`` (pixels; >= 4).
    n_particles : int
        Number of particles ``P``.
    pixel_size_angstrom : float, optional
        Target pixel size (Å); default: the particle radius fills ``fill`` of the half box.
    source_pixel_size_angstrom : float, optional
        Voxel size of the source map (Å) if its header lacks it (see
        :func:`load_density_source`).
    fill : float
        Particle radius / half box when the pixel size is chosen automatically.
    snr : float or None
        ``var(signal) / σ²`` (a ratio, not dB); ``None``: no noise.
    snr_per_image : bool
        One σ per image instead of one for the whole data set.
    max_shift_px : float
        Shifts uniform in ``[−max_shift_px, max_shift_px]`` pixels per axis.
    ctf : bool
        Apply a per-particle CTF (parameters below).
    defocus_range_angstrom : (float, float)
        Range of the defocus U (Å, positive = underfocus).
    astigmatism_angstrom : float
        Largest ``U − V`` (Å, >= 0).
    b_factor_angstrom2, voltage_kv, spherical_aberration_mm, amplitude_contrast
        CTF parameters (:class:`~cryowedge.spa.particles.CTFParams`).
    angular_error_variance_deg2 : float
        Variance (deg²) of the zero-mean error added to each assigned Euler angle (>= 0).
    angular_error_distribution : {"uniform", "gaussian"}
        Its distribution (the thesis: uniform).
    n_classes : int, optional
        Also make this many class averages (ideal in-plane alignment; no CTF).
    oversample : int
        Simulation grid and detector factor ``o`` (>= 1; 1 is the thesis's set-up).
    seed : int or None
        Seed of all random streams.
    keep_clean : bool
        Keep the noise-free images in the result.
    batch_size : int
        Projections per projector call (memory ≈ batch · (o·n)² · 8 bytes).

    Returns
    -------
    SpaSimulation
    """
    n = _positive_int(box_size, "box_size")
    if n < 4:
        raise ValueError(f"box_size must be >= 4 pixels, got {n}.")
    n_proj = _positive_int(n_particles, "n_particles")
    o = _positive_int(oversample, "oversample")
    batch = _positive_int(batch_size, "batch_size")
    if snr is not None and not (math.isfinite(snr) and snr > 0):
        raise ValueError(
            f"snr must be > 0 (a variance ratio, not dB) or None for no noise, got {snr!r}."
        )
    if not (math.isfinite(max_shift_px) and max_shift_px >= 0):
        raise ValueError(f"max_shift_px must be >= 0 pixels, got {max_shift_px!r}.")
    if not (math.isfinite(angular_error_variance_deg2) and angular_error_variance_deg2 >= 0):
        raise ValueError(
            f"angular_error_variance_deg2 must be >= 0 deg², got {angular_error_variance_deg2!r}."
        )
    _check_choice(angular_error_distribution, "angular_error_distribution", ("uniform", "gaussian"))
    lo, hi = (float(v) for v in defocus_range_angstrom)
    if ctf and not (0 < lo <= hi):
        raise ValueError(
            f"defocus_range_angstrom must be (low, high) with 0 < low <= high Å, got "
            f"{defocus_range_angstrom!r}."
        )
    if astigmatism_angstrom < 0 or (ctf and astigmatism_angstrom >= lo):
        raise ValueError(
            f"astigmatism_angstrom must be >= 0 and below the smallest defocus, got "
            f"{astigmatism_angstrom!r}."
        )
    if n_classes is not None:
        _positive_int(n_classes, "n_classes")
        if ctf:
            raise ValueError(
                "class averaging with a CTF is not simulated (the thesis's class-average "
                "experiments have no PSF); pass ctf=False or n_classes=None."
            )
    streams = {
        name: np.random.default_rng(child)
        for name, child in zip(
            _STREAMS, np.random.SeedSequence(seed).spawn(len(_STREAMS)), strict=True
        )
    }

    source = load_density_source(density, source_pixel_size_angstrom=source_pixel_size_angstrom)
    fine, px = resample_density(
        source, n, pixel_size_angstrom=pixel_size_angstrom, fill=fill, oversample=o
    )
    blob = SIMULATION_BLOB
    truth_fine = expand(fine, blob, 1, o * n).numpy()
    truth = truth_fine.reshape(n, o, n, o, n, o).mean(axis=(1, 3, 5)) if o > 1 else truth_fine
    peak = float(truth.max())
    if peak <= 0:
        raise ValueError("the resampled density has no positive value; check box_size and fill.")
    coefficients = fine / peak
    truth = (truth / peak).astype(np.float32)

    true_rot = random_rotations(n_proj, streams["orientations"])
    shifts = streams["shifts"].uniform(-max_shift_px, max_shift_px, size=(n_proj, 2))
    if max_shift_px == 0:
        shifts = np.zeros((n_proj, 2))

    ctf_params = None
    if ctf:
        g = streams["ctf"]
        du = g.uniform(lo, hi, n_proj)
        dv = du - astigmatism_angstrom * g.uniform(0.0, 1.0, n_proj)
        ang = g.uniform(0.0, 180.0, n_proj)
        ctf_params = CTFParams(
            du,
            dv,
            astigmatism_angle_deg=ang,
            voltage_kv=voltage_kv,
            spherical_aberration_mm=spherical_aberration_mm,
            amplitude_contrast=amplitude_contrast,
            b_factor_angstrom2=b_factor_angstrom2,
        )

    # Assigned poses: true Euler angles plus the error (one unit draw per angle, scaled).
    true_angles = np.stack(matrix_to_euler_zyz(true_rot), axis=1)
    var = float(angular_error_variance_deg2)
    if angular_error_distribution == "uniform":
        unit = streams["angles"].uniform(-1.0, 1.0, size=(n_proj, 3))
        perturb = unit * math.sqrt(3.0 * var)
    else:
        perturb = streams["angles"].standard_normal((n_proj, 3)) * math.sqrt(var)
    if var > 0:
        assigned = euler_zyz_to_matrix(*(true_angles + perturb).T)
    else:
        assigned = true_rot.copy()
    ang_err = geodesic_distance_deg(assigned, true_rot)

    clean = _project(coefficients, true_rot, shifts, n=n, n_det=n, o=o, blob=blob, batch=batch)
    if ctf_params is not None:
        for p0 in range(0, n_proj, batch):
            p1 = min(p0 + batch, n_proj)
            c = ctf_arrays(ctf_params, n, px, indices=slice(p0, p1), rfft=True)
            clean[p0:p1] = apply_ctf(clean[p0:p1], c)

    sigma = _noise_sigma(clean, snr, snr_per_image)
    images = clean.copy() if keep_clean else clean
    if snr is not None:
        g = streams["noise"]
        for p0 in range(0, n_proj, batch):
            p1 = min(p0 + batch, n_proj)
            noise = g.standard_normal((p1 - p0, n, n), dtype=np.float32)
            images[p0:p1] += noise * sigma[p0:p1, None, None].astype(np.float32)

    stack = ParticleStack(
        images,
        px,
        rotations=assigned,
        shifts_px=shifts,
        ctf=ctf_params,
    ).with_random_halves(streams["halves"])

    class_stack = class_of = class_err = None
    if n_classes is not None:
        class_stack, class_of, class_err = _class_averages(
            coefficients,
            true_rot,
            assigned,
            sigma,
            int(n_classes),
            n=n,
            o=o,
            px=px,
            blob=blob,
            batch=batch,
            rng=streams["classes"],
        )
    logger.info(
        "simulated %d particles of %s in a %d³ box at %.3g Å/px (SNR %s, CTF %s, angular error "
        "variance %g deg², %s class averages)",
        n_proj,
        source.name,
        n,
        px,
        snr,
        "yes" if ctf else "no",
        var,
        n_classes,
    )
    return SpaSimulation(
        stack=stack,
        truth=truth,
        true_rotations=true_rot,
        angle_perturbation_deg=perturb,
        angular_error_deg=ang_err,
        noise_sigma=sigma,
        clean_images=clean if keep_clean else None,
        coefficients=coefficients,
        blob=blob,
        oversample=o,
        class_averages=class_stack,
        class_of_particle=class_of,
        class_error_deg=class_err,
        source=source.name,
    )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _noise_sigma(clean: np.ndarray, snr: float | None, per_image: bool) -> np.ndarray:
    """``(P,)`` σ with ``var(signal) / σ² = snr`` (per image or over the whole data set)."""
    n_proj = clean.shape[0]
    if snr is None:
        return np.zeros(n_proj)
    if per_image:
        var = clean.astype(np.float64).reshape(n_proj, -1).var(axis=1)
    else:
        total = clean.size
        mean = float(clean.sum(dtype=np.float64)) / total
        sq = sum(
            float(np.square(clean[p0 : p0 + 1024], dtype=np.float64).sum())
            for p0 in range(0, n_proj, 1024)
        )
        var = np.full(n_proj, sq / total - mean * mean)
    if np.any(var <= 0):
        raise ValueError(
            "a noise-free image has zero variance, so the SNR is undefined; the particle may lie "
            "outside the box (check fill and max_shift_px)."
        )
    return np.sqrt(var / snr)


def _class_averages(
    coefficients: np.ndarray,
    true_rot: np.ndarray,
    assigned: np.ndarray,
    sigma: np.ndarray,
    n_classes: int,
    *,
    n: int,
    o: int,
    px: float,
    blob: KaiserBesselBlob,
    batch: int,
    rng: np.random.Generator,
) -> tuple[ParticleStack, np.ndarray, np.ndarray]:
    """Class averages (ideal in-plane alignment) with their templates; see the module doc."""
    templates = fibonacci_templates(n_classes)
    label = np.argmax(assigned[:, 2, :] @ templates[:, 2, :].T, axis=1)  # nearest direction
    aligned = _inplane_alignment(true_rot, templates[label])
    err = geodesic_distance_deg(aligned, templates[label])
    img = _project(
        coefficients,
        aligned,
        np.zeros((len(aligned), 2)),
        n=n,
        n_det=n,
        o=o,
        blob=blob,
        batch=batch,
    )
    used = np.unique(label)
    averages = np.empty((used.size, n, n), dtype=np.float32)
    class_err = np.empty(used.size)
    class_of = np.empty(len(label), dtype=np.int64)
    for j, t in enumerate(used):
        members = np.flatnonzero(label == t)
        class_of[members] = j
        noise_sd = math.sqrt(float(np.sum(sigma[members] ** 2))) / members.size
        averages[j] = img[members].mean(axis=0) + noise_sd * rng.standard_normal((n, n))
        class_err[j] = err[members].mean()
    stack = ParticleStack(
        averages, px, rotations=templates[used], class_ids=np.arange(1, used.size + 1)
    )
    logger.info(
        "%d class averages (of %d templates), %.1f particles per class, mean orientation "
        "error %.2f°",
        used.size,
        n_classes,
        len(label) / used.size,
        float(err.mean()),
    )
    return stack, class_of, class_err


def write_spa_simulation(
    simulation: SpaSimulation,
    directory: str | os.PathLike[str],
    *,
    name: str = "particles",
    overwrite: bool = True,
) -> dict[str, Path]:
    """Write a simulation: RELION STAR + MRCS (assigned and true poses) and the truth map.

    Files in ``directory``: ``<name>.star`` + ``<name>.mrcs`` (the stack with the assigned
    poses), ``<name>_true_poses.star`` (same images, true poses), ``truth.mrc`` (voxel size
    set), and with class averages ``class_averages.star`` + ``.mrcs``.

    Returns
    -------
    dict
        ``{"star", "stack", "star_true", "truth"[, "class_star", "class_stack"]}`` paths.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    star, mrcs = write_relion_particles(out / f"{name}.star", simulation.stack, overwrite=overwrite)
    star_true, _ = write_relion_particles(
        out / f"{name}_true_poses.star",
        simulation.with_true_poses(),
        stack_path=mrcs,
        overwrite=True,
    )
    truth = write_mrc(
        out / "truth.mrc",
        simulation.truth,
        voxel_size_angstrom=simulation.pixel_size_angstrom,
        overwrite=overwrite,
    )
    paths = {"star": star, "stack": mrcs, "star_true": star_true, "truth": truth}
    if simulation.class_averages is not None:
        cs, cm = write_relion_particles(
            out / "class_averages.star", simulation.class_averages, overwrite=overwrite
        )
        paths.update(class_star=cs, class_stack=cm)
    return paths
