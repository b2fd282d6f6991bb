"""Sample masks of the non-empty region of a tomogram, and where sub-tomograms may be cut.

A tomogram is mostly ice, vacuum and reconstruction streaks; sub-tomograms cut there teach a
denoiser little and waste fitting time (MLI-lab/DeepDeWedge#2, #28). As in IsoNet's
``make_mask``, the **sample mask** keeps the voxels where

* the local standard deviation is above the ``std_percentile``-th percentile (texture:
  particles and membranes rather than flat ice or vacuum), **and**
* the local mean departs from the tomogram's typical (median) local mean by more than the
  ``density_percentile``-th percentile of that departure (dense material, whatever the sign
  convention: dark protein in raw cryo-ET tomograms, bright in density maps and simulations),

both measured with a Gaussian of width ``smooth_voxels`` on a binned copy (block mean, bin 2
or more, so that a tomogram of any size costs one read and a small in-memory copy). A
percentile of 0 switches its criterion off. ``z_crop`` then removes a fraction of the sections
at the top and bottom (where the slab ends), and the mask is brought back to full size by
repetition. Masks are ``uint8`` arrays of 0 and 1, ``(z, y, x)`` like the tomogram
(docs/conventions.md).

:func:`valid_centres` lists the sub-tomogram centres whose cube holds at least a given
fraction of mask (box sums of the mask), for the fitting sampler; :func:`check_mask` refuses a
mask that is not 0/1, does not match the tomogram, or is empty.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "DEFAULT_MAX_BINNED_VOXELS",
    "binned_copy",
    "check_mask",
    "make_sample_mask",
    "mask_fraction",
    "valid_centres",
]

logger = logging.getLogger(__name__)

#: Largest binned copy :func:`make_sample_mask` builds by default (voxels; 256 MB of float32).
DEFAULT_MAX_BINNED_VOXELS = 2**26
#: Default cap on the number of candidate centres :func:`valid_centres` examines.
DEFAULT_MAX_CENTRES = 1_000_000


def _shape3(volume: Any, name: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in getattr(volume, "shape", ()))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be a (z, y, x) volume, got shape {shape}.")
    return shape  # type: ignore[return-value]


def binned_copy(volume: Any, factor: int) -> np.ndarray:
    """Block mean of ``volume`` over ``factor³`` voxels, read ``factor`` sections at a time.

    Parameters
    ----------
    volume
        ``(z, y, x)`` array, ``numpy.memmap`` or :class:`~cryowedge.io.mrc.LazyMrcArray`.
    factor
        Block edge, voxels (>= 1). Axes that are not a multiple of ``factor`` get a last,
        partial block (the mean of the voxels it has), so every voxel maps to block
        ``index // factor``.

    Returns
    -------
    numpy.ndarray
        ``(ceil(z / f), ceil(y / f), ceil(x / f))`` float32.
    """
    nz, ny, nx = _shape3(volume, "volume")
    f = int(factor)
    if f < 1:
        raise ValueError(f"bin factor must be >= 1, got {factor!r}.")
    by, bx = -(-ny // f), -(-nx // f)
    out = np.empty((-(-nz // f), by, bx), dtype=np.float32)
    # voxels per (y, x) block, for the partial blocks at the ends
    count_y = np.minimum(f, ny - np.arange(by) * f).astype(np.float64)
    count_x = np.minimum(f, nx - np.arange(bx) * f).astype(np.float64)
    for i, z0 in enumerate(range(0, nz, f)):
        chunk = np.asarray(volume[z0 : z0 + f], dtype=np.float64)  # (<=f, ny, nx)
        col = chunk.sum(axis=0)
        col = np.add.reduceat(col, np.arange(0, ny, f), axis=0)
        col = np.add.reduceat(col, np.arange(0, nx, f), axis=1)
        out[i] = col / (chunk.shape[0] * count_y[:, None] * count_x[None, :])
    return out


def _auto_bin(shape: Sequence[int], max_binned_voxels: int) -> int:
    return max(2, math.ceil((math.prod(shape) / max_binned_voxels) ** (1 / 3)))


def make_sample_mask(
    volume: Any,
    *,
    std_percentile: float = 50.0,
    density_percentile: float = 50.0,
    smooth_voxels: float = 4.0,
    z_crop: float = 0.0,
    bin_factor: int | None = None,
    max_binned_voxels: int = DEFAULT_MAX_BINNED_VOXELS,
) -> np.ndarray:
    """Sample mask (1 = sample) of the non-empty region of a tomogram, IsoNet ``make_mask``-like.

    Parameters
    ----------
    volume
        ``(z, y, x)`` tomogram: array, ``numpy.memmap`` or
        :class:`~cryowedge.io.mrc.LazyMrcArray` (read once, ``bin_factor`` sections at a time).
    std_percentile
        Keep voxels whose local standard deviation is above this percentile (0–100; 0: no
        std criterion). IsoNet's ``std_percentage`` (default 50).
    density_percentile
        Keep voxels whose local mean departs from the median local mean by more than this
        percentile of the departures (0–100; 0: no density criterion). Sign-agnostic, so it
        works for dark-protein cryo-ET tomograms and bright-density simulations alike.
    smooth_voxels
        Standard deviation of the Gaussian of the local mean and std, in full-size voxels
        (at least half a binned voxel is used).
    z_crop
        Fraction of the sections removed at the top and at the bottom (each), in ``[0, 0.5)``.
    bin_factor
        Block mean applied first (default: 2, or more so that the binned copy has at most
        ``max_binned_voxels`` voxels).
    max_binned_voxels
        Size cap of the automatic bin factor.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` uint8 of 0 and 1.

    Raises
    ------
    ValueError
        A percentile outside ``[0, 100)``, ``z_crop`` outside ``[0, 0.5)``, a negative
        ``smooth_voxels``, or a mask that comes out empty (the message says which criterion
        to relax).
    """
    shape = _shape3(volume, "volume")
    for name, value in (("std_percentile", std_percentile),
                        ("density_percentile", density_percentile)):
        if not 0 <= float(value) < 100:
            raise ValueError(f"{name} must lie in [0, 100), got {value!r}.")
    if not 0 <= float(z_crop) < 0.5:
        raise ValueError(f"z_crop must lie in [0, 0.5) (fraction removed at each end), got "
                         f"{z_crop!r}.")
    if not float(smooth_voxels) >= 0:
        raise ValueError(f"smooth_voxels must be >= 0, got {smooth_voxels!r}.")
    b = int(bin_factor) if bin_factor is not None else _auto_bin(shape, max_binned_voxels)
    b = max(1, min(b, max(shape)))
    small = binned_copy(volume, b).astype(np.float64)
    sigma = max(float(smooth_voxels) / b, 0.5) if smooth_voxels > 0 else 0.0
    local_mean = ndimage.gaussian_filter(small, sigma, mode="reflect") if sigma else small
    keep = np.ones(small.shape, dtype=bool)
    if std_percentile > 0:
        second = (ndimage.gaussian_filter(small * small, sigma, mode="reflect") if sigma
                  else small**2)
        local_std = np.sqrt(np.maximum(second - local_mean**2, 0.0))
        keep &= local_std > np.percentile(local_std, std_percentile)
    if density_percentile > 0:
        departure = np.abs(local_mean - np.median(local_mean))
        keep &= departure > np.percentile(departure, density_percentile)
    mask = _upsample(keep, shape, b)
    if z_crop > 0:
        cut = int(round(shape[0] * float(z_crop)))
        mask[:cut] = 0
        mask[shape[0] - cut :] = 0
    if not mask.any():
        raise ValueError(
            f"the sample mask is empty (std_percentile {std_percentile}, density_percentile "
            f"{density_percentile}, z_crop {z_crop}); lower the percentiles or z_crop, or give "
            "no mask."
        )
    logger.info("sample mask: %.1f %% of the voxels (bin %d, smoothing %.3g voxels)",
                100.0 * mask.mean(), b, smooth_voxels)
    return mask


def _upsample(binned: np.ndarray, shape: Sequence[int], factor: int) -> np.ndarray:
    """Each full voxel takes the value of its block ``index // factor`` (uint8)."""
    out = binned.astype(np.uint8)
    for axis, n in enumerate(shape):
        out = np.repeat(out, factor, axis=axis).take(np.arange(int(n)), axis=axis)
    return np.ascontiguousarray(out)


def check_mask(mask: Any, shape: Sequence[int] | None = None, *, name: str = "mask") -> None:
    """Refuse, in one line, a mask that is not a 0/1 ``(z, y, x)`` volume of ``shape``.

    Parameters
    ----------
    mask
        Array, ``numpy.memmap`` or :class:`~cryowedge.io.mrc.LazyMrcArray` (checked section
        by section).
    shape
        The tomogram's ``(z, y, x)`` shape the mask must have (None: not checked).
    name
        How the error names the mask (e.g. its file name).

    Raises
    ------
    ValueError
        Wrong shape or dimensionality, values other than 0 and 1 (NaN included), or no
        voxel set.
    """
    mshape = tuple(int(s) for s in getattr(mask, "shape", ()))
    if len(mshape) != 3:
        raise ValueError(f"{name} must be a (z, y, x) volume, got shape {mshape}.")
    if shape is not None and mshape != tuple(int(s) for s in shape):
        raise ValueError(f"{name} has shape {mshape} but the tomogram has "
                         f"{tuple(int(s) for s in shape)}; give the mask made for this tomogram.")
    any_set = False
    for z in range(mshape[0]):
        section = np.asarray(mask[z])
        bad = ~((section == 0) | (section == 1))
        if bad.any():
            examples = sorted({float(v) for v in section[bad].ravel()[:1000].tolist()}, key=str)[:3]
            raise ValueError(
                f"{name} holds values other than 0 and 1 (e.g. {examples} in section z = {z}); "
                "a sample mask must be binary: threshold it (mask > 0) or make a new one."
            )
        any_set = any_set or bool(section.any())
    if not any_set:
        raise ValueError(f"{name} is empty (no voxel is 1); give a mask that covers the sample, "
                         "or no mask.")


def mask_fraction(mask: Any) -> float:
    """Fraction of voxels set in a ``(z, y, x)`` 0/1 mask (read section by section)."""
    shape = _shape3(mask, "mask")
    total = sum(int(np.count_nonzero(np.asarray(mask[z]))) for z in range(shape[0]))
    return total / math.prod(shape)


def _size3(size: int | Sequence[int]) -> tuple[int, int, int]:
    sizes = (int(size),) * 3 if np.ndim(size) == 0 else tuple(int(s) for s in size)  # type: ignore[arg-type]
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"sub-tomogram size must be a positive int or (z, y, x), got {size!r}.")
    return sizes  # type: ignore[return-value]


def valid_centres(
    mask: Any,
    size: int | Sequence[int],
    min_fraction: float,
    *,
    stride: int | None = None,
    max_centres: int = DEFAULT_MAX_CENTRES,
) -> np.ndarray:
    """Centres of the sub-tomograms that lie inside the volume and hold enough mask.

    A sub-tomogram of edge ``s`` centred at ``c`` covers ``c - s // 2 … c - s // 2 + s - 1``
    on each axis (centre pixel ``N // 2`` of the cube, docs/conventions.md). A centre is
    valid when the whole cube lies inside the volume and at least ``min_fraction`` of its
    voxels are 1 in ``mask``. The fractions are box sums of the mask (cumulative sums,
    computed by groups of ``y`` rows, so memory stays a few rows of cubes whatever the
    volume size).

    Parameters
    ----------
    mask
        ``(z, y, x)`` 0/1 mask: array, ``numpy.memmap`` or
        :class:`~cryowedge.io.mrc.LazyMrcArray`.
    size
        Cube edge in voxels, or ``(sz, sy, sx)``. The fitting sampler passes the size of
        the region it reads around each centre.
    min_fraction
        Smallest fraction of mask voxels in the cube, in ``[0, 1]`` (0: every cube inside
        the volume is valid).
    stride
        Candidate centres lie on a grid of this step (voxels) starting at ``s // 2``. Default:
        1, or the smallest step that keeps the candidates at most ``max_centres`` (large
        volumes). A sampler that wants every position reachable adds a random offset in
        ``[0, stride)`` (clipped to the volume).
    max_centres
        Cap of the automatic stride.

    Returns
    -------
    numpy.ndarray
        ``(N, 3)`` int64 ``(z, y, x)`` centres in voxels, in lexicographic order (``N`` may
        be 0: then no cube has enough mask).

    Raises
    ------
    ValueError
        A cube larger than the volume, ``min_fraction`` outside ``[0, 1]``, or a stride < 1.
    """
    shape = _shape3(mask, "mask")
    sizes = _size3(size)
    if not 0 <= float(min_fraction) <= 1:
        raise ValueError(f"min_fraction must lie in [0, 1], got {min_fraction!r}.")
    for axis, (s, n) in enumerate(zip(sizes, shape, strict=True)):
        if s > n:
            raise ValueError(
                f"sub-tomogram size {s} exceeds the volume's {'zyx'[axis]} size {n} "
                f"(volume {shape}); choose a size of at most {min(shape)} or a larger tomogram."
            )
    n_start = [n - s + 1 for s, n in zip(sizes, shape, strict=True)]
    if stride is None:
        stride = 1
        while math.prod(-(-k // stride) for k in n_start) > max_centres:
            stride += 1
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}.")
    t = int(stride)
    starts = [np.arange(0, k, t) for k in n_start]
    sz, sy, sx = sizes
    need = math.ceil(float(min_fraction) * sz * sy * sx - 1e-9)
    group = max(1, sy // t)  # candidate y starts per read: about 2·sy rows at a time
    found = []
    for g0 in range(0, starts[1].size, group):
        ys = starts[1][g0 : g0 + group]
        r0, r1 = int(ys[0]), int(ys[-1]) + sy
        block = np.asarray(mask[:, r0:r1, :]) != 0  # (nz, rows, nx)
        cz = np.zeros((shape[0] + 1, *block.shape[1:]), dtype=np.int32)
        np.cumsum(block, axis=0, dtype=np.int32, out=cz[1:])
        sums = cz[starts[0] + sz] - cz[starts[0]]  # (n_cz, rows, nx)
        cy = np.zeros((sums.shape[0], sums.shape[1] + 1, shape[2]), dtype=np.int32)
        np.cumsum(sums, axis=1, out=cy[:, 1:])
        rel = ys - r0
        sums = cy[:, rel + sy] - cy[:, rel]  # (n_cz, G, nx)
        cx = np.zeros((*sums.shape[:2], shape[2] + 1), dtype=np.int32)
        np.cumsum(sums, axis=2, out=cx[:, :, 1:])
        sums = cx[:, :, starts[2] + sx] - cx[:, :, starts[2]]  # (n_cz, G, n_cx)
        iz, iy, ix = np.nonzero(sums >= need)
        found.append(np.stack([starts[0][iz] + sz // 2, ys[iy] + sy // 2,
                               starts[2][ix] + sx // 2], axis=1))
    centres = np.concatenate(found).astype(np.int64) if found else np.zeros((0, 3), np.int64)
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0]))
    logger.debug("valid_centres: %d of %d candidates (size %s, stride %d, min fraction %.3g)",
                 len(centres), math.prod(len(s) for s in starts), sizes, t, min_fraction)
    return centres[order]
