"""Synthetic phantoms: Shepp-Logan, hollow spheres and a crowded "cell" tomogram.

All volumes are ``(z, y, x)`` float32 arrays with the centre at ``N // 2`` per axis
(docs/conventions.md). Every generator is deterministic for a given ``rng``
(a ``numpy.random.Generator``, an integer seed, or ``None`` for fresh entropy).

Display orientation: row index increases with ``y``, so images look "right way up"
when shown with the origin at the bottom left (as 3dmod does, and matplotlib with
``origin="lower"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.special import erf

from cryowedge._validation import (
    check_finite,
    check_in_range,
    check_ndim,
    check_positive,
    check_positive_int,
)
from cryowedge.geometry.rotations import random_rotations, rotate_volume

__all__ = [
    "shepp_logan_2d",
    "shepp_logan_3d",
    "hollow_spheres",
    "gaussian_blob_particle",
    "CellPhantom",
    "crowded_cell",
    "LABEL_BACKGROUND",
    "LABEL_MEMBRANE",
    "LABEL_VESICLE",
    "LABEL_PARTICLE",
]

logger = logging.getLogger(__name__)

LABEL_BACKGROUND = 0
LABEL_MEMBRANE = 1
LABEL_VESICLE = 2
LABEL_PARTICLE = 3

# Modified Shepp-Logan (Toft's "modified" intensities, so the values lie in [0, 1]).
# Columns: intensity, semi-axis a (x), semi-axis b (y), centre x0, centre y0, angle (deg).
_SHEPP_LOGAN_2D = np.array(
    [
        [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
        [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
        [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
        [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
        [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
        [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
        [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
        [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
        [0.1, 0.023, 0.023, 0.0, -0.606, 0.0],
        [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
    ]
)

# 3D version (Kak & Slaney ellipsoids with the modified intensities).
# Columns: intensity, a (x), b (y), c (z), x0, y0, z0, angle about z (deg).
_SHEPP_LOGAN_3D = np.array(
    [
        [1.0, 0.69, 0.92, 0.81, 0.0, 0.0, 0.0, 0.0],
        [-0.8, 0.6624, 0.874, 0.78, 0.0, -0.0184, 0.0, 0.0],
        [-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18.0],
        [-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, 0.0, 18.0],
        [0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.15, 0.0],
        [0.1, 0.046, 0.046, 0.05, 0.0, 0.1, 0.25, 0.0],
        [0.1, 0.046, 0.046, 0.05, 0.0, -0.1, 0.25, 0.0],
        [0.1, 0.046, 0.023, 0.05, -0.08, -0.605, 0.0, 0.0],
        [0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0.0],
        [0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0.0],
    ]
)


def _shape3(shape: int | Sequence[int], name: str = "shape") -> tuple[int, int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),) * 3
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"{name} must be an int or 3 integers (z, y, x), got {shape!r}.")
    for n in shape:
        check_positive_int(n, name)
    return tuple(int(n) for n in shape)  # type: ignore[return-value]


def _centred_normalised(n: int) -> np.ndarray:
    """Coordinates ``(i - n // 2) / (n / 2)``: the centre pixel maps to 0, the edges to ~±1."""
    return (np.arange(n, dtype=np.float64) - n // 2) / (n / 2.0)


def shepp_logan_2d(n: int, *, oversample: int = 1) -> np.ndarray:
    """Modified Shepp-Logan head phantom.

    Ten ellipses with Toft's "modified" intensities (better contrast than the
    original; values in ``[0, 1]``). The unit disc ``[-1, 1]²`` fills the image and the
    phantom's origin is pixel ``n // 2`` (docs/conventions.md).

    Parameters
    ----------
    n : int
        Image side in pixels.
    oversample : int
        Sub-pixel samples per axis averaged into each pixel (1 = point sampling at
        pixel centres, larger values anti-alias the edges).

    Returns
    -------
    numpy.ndarray
        ``(y, x) = (n, n)`` float32 image. Row index grows with ``y``: shown with the
        origin at the bottom (3dmod, ``origin="lower"``) the phantom is upright, i.e.
        the array is ``numpy.flipud`` of ``skimage.data.shepp_logan_phantom()``.
    """
    check_positive_int(n, "n")
    check_positive_int(oversample, "oversample")
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    coords = (
        (np.arange(n)[:, None] + sub[None, :]).reshape(-1) - n // 2
    ) / (n / 2.0)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    image = np.zeros_like(x)
    for intensity, a, b, x0, y0, phi in _SHEPP_LOGAN_2D:
        t = np.deg2rad(phi)
        dx, dy = x - x0, y - y0
        u = dx * np.cos(t) + dy * np.sin(t)
        v = -dx * np.sin(t) + dy * np.cos(t)
        image[(u / a) ** 2 + (v / b) ** 2 <= 1.0] += intensity
    if oversample > 1:
        image = image.reshape(n, oversample, n, oversample).mean(axis=(1, 3))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def shepp_logan_3d(shape: int | Sequence[int]) -> np.ndarray:
    """3D modified Shepp-Logan phantom (Kak-Slaney ellipsoids, Toft intensities).

    The cube ``[-1, 1]³`` is stretched over the box, so a non-cubic ``shape`` gives a
    squashed head. The central ``z`` slice resembles :func:`shepp_logan_2d`.

    Parameters
    ----------
    shape : int or (nz, ny, nx)
        Volume shape; an int means a cube.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 volume with values in ``[0, 1]``, origin at ``N // 2``.
    """
    nz, ny, nx = _shape3(shape)
    z = _centred_normalised(nz)[:, None, None]
    y = _centred_normalised(ny)[None, :, None]
    x = _centred_normalised(nx)[None, None, :]
    volume = np.zeros((nz, ny, nx), dtype=np.float32)
    for intensity, a, b, c, x0, y0, z0, phi in _SHEPP_LOGAN_3D:
        t = np.deg2rad(phi)
        dx, dy, dz = x - x0, y - y0, z - z0
        u = dx * np.cos(t) + dy * np.sin(t)
        v = -dx * np.sin(t) + dy * np.cos(t)
        inside = (u / a) ** 2 + (v / b) ** 2 + (dz / c) ** 2 <= 1.0
        volume[inside] += np.float32(intensity)
    return np.clip(volume, 0.0, 1.0)


def _local_box(
    center: np.ndarray, radius: float, shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], list[np.ndarray]]:
    """Slices of the box ``center ± radius`` clipped to ``shape`` and the centred grids."""
    lo = np.maximum(np.floor(center - radius).astype(int), 0)
    hi = np.minimum(np.ceil(center + radius).astype(int) + 1, shape)
    slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=False))
    grids = [
        (np.arange(s.start, s.stop, dtype=np.float64) - c).reshape(
            [-1 if i == ax else 1 for i in range(len(shape))]
        )
        for ax, (s, c) in enumerate(zip(slices, center, strict=False))
    ]
    return slices, grids


def hollow_spheres(
    shape: int | Sequence[int],
    *,
    n_spheres: int = 12,
    radius_range_px: tuple[float, float] | None = None,
    shell_thickness_px: float = 2.0,
    density_range: tuple[float, float] = (1.0, 1.0),
    min_gap_px: float = 2.0,
    max_attempts: int = 10000,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Non-overlapping hollow spherical shells in an empty box.

    Modelled on the simulated "collection of hollow spheres" of the coordinate-network
    report (seeds/002): a 1024 × 1024 × 256 (x, y, z) volume of hollow spheres
    reconstructed from 60 tilts, also used 8× binned as 128 × 128 × 32. To mimic that
    slab call ``hollow_spheres((32, 128, 128))``. Every sphere lies entirely inside the
    box, spheres keep ``min_gap_px`` apart, and shell edges are anti-aliased (a linear
    partial-volume ramp one voxel wide around the nominal shell).

    Parameters
    ----------
    shape : int or (nz, ny, nx)
        Volume shape.
    n_spheres : int
        Number of spheres.
    radius_range_px : (float, float), optional
        Range of mid-shell radii in voxels, drawn uniformly. Default
        ``(max(3, 0.05 m), max(4, 0.125 m))`` with ``m = min(shape)``, i.e. (6.4, 16)
        for a 128³ box.
    shell_thickness_px : float
        Full shell thickness in voxels.
    density_range : (float, float)
        Range of the shell densities in ``[0, 1]``, drawn uniformly per sphere.
    min_gap_px : float
        Minimum clearance between the outer surfaces of two spheres.
    max_attempts : int
        Random placements tried before giving up.
    rng : numpy.random.Generator or int or None
        Random generator or seed.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 volume with values in ``[0, 1]``.

    Raises
    ------
    ValueError
        If the spheres do not fit (reduce ``n_spheres`` or the radii).
    """
    box = _shape3(shape)
    check_positive_int(n_spheres, "n_spheres")
    check_positive(shell_thickness_px, "shell_thickness_px")
    check_positive(min_gap_px, "min_gap_px", allow_zero=True)
    check_positive_int(max_attempts, "max_attempts")
    lo_d, hi_d = (float(v) for v in density_range)
    if not 0.0 <= lo_d <= hi_d <= 1.0:
        raise ValueError(
            f"density_range must satisfy 0 <= low <= high <= 1, got {density_range!r}."
        )
    if radius_range_px is None:
        m = min(box)
        radius_range_px = (max(3.0, 0.05 * m), max(4.0, 0.125 * m))
    r_lo, r_hi = (float(v) for v in radius_range_px)
    if not 0.0 < r_lo <= r_hi:
        raise ValueError(
            f"radius_range_px must satisfy 0 < low <= high, got {radius_range_px!r}."
        )
    half_t = 0.5 * shell_thickness_px
    outer_hi = r_hi + half_t + 1.0
    if 2 * outer_hi > min(box):
        raise ValueError(
            f"spheres of radius up to {r_hi} px (+ shell {shell_thickness_px} px) do not fit "
            f"in shape {box}; lower radius_range_px to below {(min(box) / 2 - half_t - 1):.1f}."
        )
    gen = np.random.default_rng(rng)
    centers: list[np.ndarray] = []
    radii: list[float] = []
    attempts = 0
    while len(centers) < n_spheres and attempts < max_attempts:
        attempts += 1
        r = gen.uniform(r_lo, r_hi)
        outer = r + half_t + 1.0
        c = np.array([gen.uniform(outer, n - 1 - outer) for n in box])
        if centers:
            dist = np.linalg.norm(np.asarray(centers) - c, axis=1)
            outer_others = np.asarray(radii) + half_t + 1.0
            if np.any(dist < outer + outer_others + min_gap_px):
                continue
        centers.append(c)
        radii.append(r)
    if len(centers) < n_spheres:
        raise ValueError(
            f"could place only {len(centers)} of n_spheres={n_spheres} non-overlapping spheres "
            f"in shape {box} after {max_attempts} attempts; reduce n_spheres or "
            "radius_range_px, or enlarge the box."
        )
    densities = gen.uniform(lo_d, hi_d, size=n_spheres)
    volume = np.zeros(box, dtype=np.float32)
    for c, r, dens in zip(centers, radii, densities, strict=True):
        slices, (gz, gy, gx) = _local_box(c, r + half_t + 1.5, box)
        d = np.sqrt(gz**2 + gy**2 + gx**2)
        shell = np.clip(half_t + 0.5 - np.abs(d - r), 0.0, 1.0) * dens
        np.maximum(volume[slices], shell.astype(np.float32), out=volume[slices])
    return volume


# Gaussians of the default particle: offset (x, y, z) in units of box_size / 16, sigma
# (same units) and weight. Arms of different length along x, y and z make it chiral.
_BLOB_PARTICLE = (
    ((0.0, 0.0, 0.0), 1.8, 1.0),
    ((3.4, 0.0, 0.0), 1.3, 0.8),
    ((0.0, 2.6, 0.0), 1.2, 0.7),
    ((0.0, 0.0, 1.9), 1.0, 0.6),
    ((-1.8, -1.6, -1.2), 1.0, 0.5),
)


def gaussian_blob_particle(box_size: int = 16) -> np.ndarray:
    """A small asymmetric (chiral) particle made of five Gaussians.

    Its shape is fixed (no randomness), so orientations of its copies are visible and
    recoverable. The box centre ``box_size // 2`` is the particle origin.

    Parameters
    ----------
    box_size : int
        Cube side in voxels; the particle scales with it (about 0.75 × box_size across).

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 cube with maximum 1.
    """
    check_positive_int(box_size, "box_size")
    if box_size < 6:
        raise ValueError(f"box_size must be >= 6 voxels for a resolvable particle, got {box_size}.")
    scale = box_size / 16.0
    c = box_size // 2
    ax = np.arange(box_size, dtype=np.float64) - c
    z, y, x = ax[:, None, None], ax[None, :, None], ax[None, None, :]
    out = np.zeros((box_size,) * 3)
    for (ox, oy, oz), sigma, weight in _BLOB_PARTICLE:
        s = sigma * scale
        r2 = (x - ox * scale) ** 2 + (y - oy * scale) ** 2 + (z - oz * scale) ** 2
        out += weight * np.exp(-r2 / (2 * s * s))
    return (out / out.max()).astype(np.float32)


@dataclass(frozen=True)
class CellPhantom:
    """Result of :func:`crowded_cell`.

    Attributes
    ----------
    volume : numpy.ndarray
        ``(z, y, x)`` float32 density, roughly in ``[0, 1]`` (vacuum 0).
    labels : numpy.ndarray
        ``(z, y, x)`` uint8: 0 background (vacuum, ice, cytoplasm, vesicle lumen),
        1 membrane bilayer, 2 vesicle bilayer, 3 particle.
    particle_positions_zyx : numpy.ndarray
        ``(n, 3)`` float64 voxel indices (integers) where the centre voxel
        (``box // 2``) of each rotated particle copy lies.
    particle_rotations : numpy.ndarray
        ``(n, 3, 3)`` float64 matrices on (x, y, z) vectors: copy ``i`` is
        ``rotate_volume(particle, particle_rotations[i])`` (object rotation, see
        :mod:`cryowedge.geometry.rotations`).
    particle : numpy.ndarray
        The (unrotated) particle template used, ``(d, d, d)`` float32, max 1.
    vesicle_centers_zyx : numpy.ndarray
        ``(n_vesicles, 3)`` float64 vesicle centres (voxels).
    vesicle_radii_px : numpy.ndarray
        ``(n_vesicles,)`` float64 mid-bilayer vesicle radii (voxels).
    pixel_size_angstrom : float
        Voxel size used for the membrane geometry (Å).
    """

    volume: np.ndarray
    labels: np.ndarray
    particle_positions_zyx: np.ndarray
    particle_rotations: np.ndarray
    particle: np.ndarray
    vesicle_centers_zyx: np.ndarray
    vesicle_radii_px: np.ndarray
    pixel_size_angstrom: float


def _bilayer(d: np.ndarray, half_separation: float, sigma: float) -> np.ndarray:
    """Two Gaussian leaflets at signed distance ``±half_separation`` (peak value ~1)."""
    inv = 1.0 / (2.0 * sigma * sigma)
    return np.exp(-((d - half_separation) ** 2) * inv) + np.exp(
        -((d + half_separation) ** 2) * inv
    )


def _crop_template(template: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """Centre-crop/pad a template to an odd cube that holds its support under any rotation."""
    centre = np.array([n // 2 for n in template.shape], dtype=np.float64)
    idx = np.argwhere(template > threshold)
    if len(idx) == 0:
        raise ValueError("particle has no voxel above 5 % of its maximum; pass a density map.")
    radius = float(np.linalg.norm(idx - centre, axis=1).max()) + 1.0
    k = int(np.ceil(radius)) + 1
    pad = [(k, k)] * 3
    padded = np.pad(template, pad)
    sl = tuple(slice(int(c), int(c) + 2 * k + 1) for c in centre)
    return np.ascontiguousarray(padded[sl], dtype=np.float32), radius


def crowded_cell(
    shape: int | Sequence[int] = 128,
    *,
    particle: ArrayLike | None = None,
    n_particles: int = 40,
    n_vesicles: int = 3,
    membrane: bool | int = True,
    pixel_size_angstrom: float = 10.0,
    slab_fraction: float = 0.6,
    vesicle_radius_range_angstrom: tuple[float, float] = (100.0, 200.0),
    bilayer_separation_angstrom: float = 40.0,
    cytoplasm_density: float = 0.15,
    ice_density: float = 0.06,
    texture_amplitude: float = 0.04,
    membrane_density: float = 0.8,
    particle_density: float = 1.0,
    blur_sigma_px: float = 0.6,
    min_gap_px: float = 1.0,
    particle_label_threshold: float = 0.2,
    rng: np.random.Generator | int | None = None,
) -> CellPhantom:
    """A crowded "cell" tomogram with membranes, vesicles and randomly oriented particles.

    The specimen is a slab of thickness ``slab_fraction * nz`` centred in ``z`` (vacuum
    above and below). One or two large curved membranes (pieces of big spheres
    whose surfaces cross the slab, lipid-bilayer profile: two dense leaflets
    ``bilayer_separation_angstrom`` apart) separate the cytoplasm (the side holding the
    box centre, density ``cytoplasm_density`` plus smooth random texture) from the
    outside (ice, ``ice_density``). Inside the cytoplasm lie ``n_vesicles`` bilayer
    vesicles and ``n_particles`` copies of ``particle`` at random non-overlapping
    positions (bounding spheres ``min_gap_px`` apart) with uniformly random
    orientations. Objects replace the solvent: ``v = f + (1 - f) · background`` for an
    object density ``f`` in ``[0, 1]``; the result is Gaussian-blurred with
    ``blur_sigma_px`` and clipped to ``[0, 1]``.

    Parameters
    ----------
    shape : int or (nz, ny, nx)
        Volume shape (voxels).
    particle : array_like, optional
        ``(d, d, d)`` density map of the particle at the same voxel size, its origin at
        ``d // 2`` (e.g. :func:`cryowedge.simulate.pdb.load_example_particle`). It is
        scaled to maximum 1 (then times ``particle_density``). Default:
        :func:`gaussian_blob_particle`.
    n_particles : int
        Number of particle copies (0 allowed).
    n_vesicles : int
        Number of vesicles (0 allowed).
    membrane : bool or int
        Number of large membranes: ``True`` = 1, ``False`` = 0, or 2.
    pixel_size_angstrom : float
        Voxel size in Å; sets the bilayer geometry and vesicle radii in voxels.
    slab_fraction : float
        Specimen thickness as a fraction of ``nz`` in ``(0, 1]``.
    vesicle_radius_range_angstrom : (float, float)
        Range of vesicle radii (Å, mid-bilayer). Radii are capped so that a vesicle
        spans at most 70 % of the slab and half the box width, and reduced further (at
        most by half) when they do not fit in the remaining space.
    bilayer_separation_angstrom : float
        Distance between the two leaflets (Å); leaflets have a Gaussian profile with
        sigma ``max(5 Å, 0.6 voxel)``.
    cytoplasm_density, ice_density : float
        Background densities inside / outside the cell.
    texture_amplitude : float
        Standard deviation of the smooth random cytoplasm texture.
    membrane_density, particle_density : float
        Peak densities of the bilayers and of the particles (in ``(0, 1]``).
    blur_sigma_px : float
        Final Gaussian blur (voxels); 0 disables it.
    min_gap_px : float
        Clearance between bounding spheres of placed objects (voxels).
    particle_label_threshold : float
        Rotated particle density (relative to its maximum) above which a voxel gets
        label 3.
    rng : numpy.random.Generator or int or None
        Random generator or seed; the result is deterministic for a fixed seed.

    Returns
    -------
    CellPhantom
        Volume, labels and the ground-truth particle positions and rotations.

    Raises
    ------
    ValueError
        On bad parameters, or when the objects cannot be placed without overlap
        (the message says how many fitted; reduce the counts or enlarge the box).
    """
    box = _shape3(shape)
    nz, ny, nx = box
    for value, name in ((n_particles, "n_particles"), (n_vesicles, "n_vesicles")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
    n_membranes = int(membrane) if isinstance(membrane, (bool, int, np.integer)) else -1
    if n_membranes not in (0, 1, 2):
        raise ValueError(f"membrane must be True/False or 0, 1, 2 membranes, got {membrane!r}.")
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")
    check_in_range(slab_fraction, "slab_fraction", 0.0, 1.0, high_inclusive=True)
    check_positive(bilayer_separation_angstrom, "bilayer_separation_angstrom")
    for value, name in (
        (cytoplasm_density, "cytoplasm_density"),
        (ice_density, "ice_density"),
        (texture_amplitude, "texture_amplitude"),
        (blur_sigma_px, "blur_sigma_px"),
        (min_gap_px, "min_gap_px"),
    ):
        check_positive(value, name, allow_zero=True)
    check_in_range(membrane_density, "membrane_density", 0.0, 1.0, high_inclusive=True)
    check_in_range(particle_density, "particle_density", 0.0, 1.0, high_inclusive=True)
    check_in_range(particle_label_threshold, "particle_label_threshold", 0.0, 1.0)
    v_lo, v_hi = (float(v) / pixel_size_angstrom for v in vesicle_radius_range_angstrom)
    if not 0.0 < v_lo <= v_hi:
        raise ValueError(
            "vesicle_radius_range_angstrom must satisfy 0 < low <= high, got "
            f"{vesicle_radius_range_angstrom!r}."
        )

    gen = np.random.default_rng(rng)

    # --- particle template -------------------------------------------------------
    if particle is None:
        template = gaussian_blob_particle()
    else:
        template = np.asarray(particle, dtype=np.float32)
        check_ndim(template, 3, "particle", "(z, y, x) density map")
        if not np.isfinite(template).all():  # check_finite imports torch: only call it to report
            check_finite(template, "particle")
        if template.max() <= 0:
            raise ValueError(
                f"particle must have a positive maximum, got max {template.max()!r}; "
                "pass a density map (dense = positive)."
            )
    template = np.clip(template / template.max(), 0.0, None).astype(np.float32)
    template, bound_r = _crop_template(template, 0.05)
    k = template.shape[0] // 2

    # --- geometry: slab, membranes -----------------------------------------------
    zc = np.arange(nz, dtype=np.float32)[:, None, None]
    yc = np.arange(ny, dtype=np.float32)[None, :, None]
    xc = np.arange(nx, dtype=np.float32)[None, None, :]
    thickness = slab_fraction * nz
    z0 = nz // 2 - thickness / 2.0
    z1 = nz // 2 + thickness / 2.0
    edge = 1.0  # slab edge width (voxels)

    slab_z = 0.5 * (erf((zc - z0) / (np.sqrt(2) * edge)) - erf((zc - z1) / (np.sqrt(2) * edge)))
    slab_z = slab_z.astype(np.float32)

    half_sep = 0.5 * bilayer_separation_angstrom / pixel_size_angstrom
    leaf_sigma = max(5.0 / pixel_size_angstrom, 0.6)
    bilayer_halfwidth = half_sep + 3.0 * leaf_sigma

    centre_zyx = np.array([nz // 2, ny // 2, nx // 2], dtype=np.float64)
    lateral = float(min(ny, nx))
    membrane_spheres: list[tuple[np.ndarray, float]] = []
    phi0 = gen.uniform(0, 2 * np.pi)
    for i in range(n_membranes):
        phi = phi0 + (np.pi + gen.uniform(-0.6, 0.6)) * i
        u = np.array([0.0, np.sin(phi), np.cos(phi)])
        big_r = gen.uniform(1.0, 2.0) * lateral
        s = gen.uniform(0.28, 0.4) * lateral
        sphere_c = centre_zyx + u * (s - big_r)
        membrane_spheres.append((sphere_c, big_r))

    inside_cell = np.ones(box, dtype=bool)
    membrane_layer = np.zeros(box, dtype=np.float32)
    for sphere_c, big_r in membrane_spheres:
        d = (
            np.sqrt(
                (zc - sphere_c[0]) ** 2 + (yc - sphere_c[1]) ** 2 + (xc - sphere_c[2]) ** 2
            )
            - big_r
        ).astype(np.float32)
        np.maximum(membrane_layer, _bilayer(d, half_sep, leaf_sigma), out=membrane_layer)
        inside_cell &= d < 0
    membrane_layer = membrane_layer * np.float32(membrane_density)

    def signed_dist_membranes(p: np.ndarray) -> float:
        if not membrane_spheres:
            return -np.inf
        return max(float(np.linalg.norm(p - c) - r) for c, r in membrane_spheres)

    # --- placement of vesicles and particles ---------------------------------------
    placed_c: list[np.ndarray] = []
    placed_r: list[float] = []

    def try_place(radius: float, n_try: int, margin: float) -> np.ndarray | None:
        # Centres are whole voxels; the object stays in the slab and ``margin`` voxels
        # away from the box faces.
        lo = np.array([max(z0 + radius + edge, margin), margin, margin])
        hi = np.array(
            [min(z1 - radius - edge, nz - 1 - margin), ny - 1 - margin, nx - 1 - margin]
        )
        lo, hi = np.ceil(lo), np.floor(hi)
        if np.any(hi < lo):
            return None
        for _ in range(n_try):
            c = np.floor(gen.uniform(lo, hi + 1.0)).clip(lo, hi)
            if signed_dist_membranes(c) > -(radius + bilayer_halfwidth + min_gap_px):
                continue
            if placed_c:
                dist = np.linalg.norm(np.asarray(placed_c) - c, axis=1)
                if np.any(dist < np.asarray(placed_r) + radius + min_gap_px):
                    continue
            return c
        return None

    # Shrink the vesicle radii if they would fill the slab / box (small volumes): a vesicle
    # may span at most 70 % of the slab thickness and half the lateral size.
    r_fit = min(0.35 * thickness, 0.25 * min(ny, nx)) - bilayer_halfwidth
    if n_vesicles > 0 and v_hi > r_fit:
        if r_fit < 2.0:
            raise ValueError(
                f"no vesicle fits in a {thickness:.0f}-voxel slab of shape {box}; "
                "use n_vesicles=0 or a larger box / slab_fraction."
            )
        logger.info(
            "crowded_cell: vesicle radii %.1f-%.1f voxels do not fit the slab; using <= %.1f.",
            v_lo,
            v_hi,
            r_fit,
        )
        v_hi = r_fit
        v_lo = min(v_lo, 0.6 * r_fit)
    vesicle_c: list[np.ndarray] = []
    vesicle_r: list[float] = []
    for i in range(int(n_vesicles)):
        c = None
        for attempt in range(40):  # a fresh radius for each batch of tries ...
            # ... shrinking it (to half) when the box is too crowded for the range given.
            shrink = 1.0 if attempt < 20 else 1.0 - 0.5 * (attempt - 19) / 20
            r = gen.uniform(v_lo, v_hi) * shrink
            outer = r + bilayer_halfwidth
            c = try_place(outer, 100, outer)
            if c is not None:
                break
        if c is None:
            raise ValueError(
                f"could place only {i} of n_vesicles={n_vesicles} vesicles of radius "
                f"{vesicle_radius_range_angstrom} Å in shape {box} (slab {thickness:.0f} voxels "
                "thick); reduce n_vesicles or the radii, or enlarge the box / slab_fraction."
            )
        vesicle_c.append(c)
        vesicle_r.append(r)
        placed_c.append(c)
        placed_r.append(outer)

    n_part = int(n_particles)
    rotations = random_rotations(n_part, gen) if n_part else np.zeros((0, 3, 3))
    positions = np.zeros((n_part, 3), dtype=np.float64)
    for i in range(n_part):
        c = try_place(bound_r, 5000, float(k))
        if c is None:
            raise ValueError(
                f"could place only {i} of n_particles={n_particles} non-overlapping particles "
                f"(bounding radius {bound_r:.1f} voxels) in shape {box}; reduce n_particles, "
                "n_vesicles or the particle size, or enlarge the box."
            )
        positions[i] = c
        placed_c.append(c)
        placed_r.append(bound_r)

    # --- background ---------------------------------------------------------------
    inside = inside_cell
    background = np.where(inside, np.float32(cytoplasm_density), np.float32(ice_density))
    if texture_amplitude > 0:
        noise = gen.standard_normal(box, dtype=np.float32)
        texture = ndimage.gaussian_filter(noise, 2.0, mode="wrap")
        texture *= np.float32(texture_amplitude / max(float(texture.std()), 1e-12))
        background = background + np.where(inside, texture, np.float32(0.0))
    background = background.astype(np.float32)

    # --- objects --------------------------------------------------------------------
    objects = membrane_layer * slab_z
    labels = np.zeros(box, dtype=np.uint8)
    labels[objects > 0.5 * membrane_density] = LABEL_MEMBRANE
    lumen_density = np.float32(0.5 * cytoplasm_density)
    for c, r in zip(vesicle_c, vesicle_r, strict=True):
        slices, (gz, gy, gx) = _local_box(c, r + bilayer_halfwidth + 1.0, box)
        d = np.sqrt(gz**2 + gy**2 + gx**2) - r
        shell = (membrane_density * _bilayer(d, half_sep, leaf_sigma)).astype(np.float32)
        # A clear lumen (lower density, no texture) inside the vesicle.
        lumen = d < -half_sep
        background[slices] = np.where(lumen, lumen_density, background[slices])
        np.maximum(objects[slices], shell, out=objects[slices])
        labels[slices][shell > 0.5 * membrane_density] = LABEL_VESICLE
    for c, m in zip(positions, rotations, strict=True):
        rotated = rotate_volume(template, m, order=1)
        ci = c.astype(int)
        sl = tuple(slice(int(a) - k, int(a) + k + 1) for a in ci)
        objects[sl] = np.maximum(objects[sl], particle_density * rotated)
        labels[sl][rotated > particle_label_threshold] = LABEL_PARTICLE

    volume = objects + (1.0 - objects) * background
    volume *= slab_z
    if blur_sigma_px > 0:
        volume = ndimage.gaussian_filter(volume, blur_sigma_px, mode="nearest")
    volume = np.clip(volume, 0.0, 1.0).astype(np.float32)
    return CellPhantom(
        volume=volume,
        labels=labels,
        particle_positions_zyx=positions,
        particle_rotations=rotations,
        particle=template,
        vesicle_centers_zyx=np.asarray(vesicle_c, dtype=np.float64).reshape(-1, 3),
        vesicle_radii_px=np.asarray(vesicle_r, dtype=np.float64),
        pixel_size_angstrom=float(pixel_size_angstrom),
    )
