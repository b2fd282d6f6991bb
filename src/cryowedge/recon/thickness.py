"""Specimen thickness from the data: the z-extent of a coarse reconstruction's signal.

The rule (like AreTomo's): bin the tilt series so that it is at most ``target_width`` pixels
across the tilt axis, reconstruct it by FBP at the full coarse width in ``z``, and measure
per ``z`` slice the energy of the local structure (the variance left after removing a
smooth background, which the ramp filter and the missing wedge leave unreliable). The
specimen is the centred ``z`` range holding ``fraction`` of that energy above the level of
the emptiest slices; the thickness is that range plus a margin on each side, rounded up to
a multiple of ``multiple`` voxels and clamped to ``[minimum, detector width]``.

The missing wedge elongates objects in ``z``, so the signal extent is an overestimate of the
specimen itself by a few coarse voxels; with the margin, the result errs on the side of a
thicker volume (nothing is cut off), at a fraction of the cost of the detector-width
default. Axes: tilt series ``(n_tilts, y, x)``, volumes ``(z, y, x)`` (docs/conventions.md).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from cryowedge._arrays import to_numpy
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.views import bin_images

__all__ = ["ThicknessEstimate", "estimate_thickness"]

logger = logging.getLogger(__name__)

#: Share of the way from the background floor to the plateau of the structure-energy profile
#: below which a ``z`` slice counts as empty. With a missing wedge the edges of a slab are
#: ramps; the 20 % point lies about at the true surface for ±60° series.
_LEVEL = 0.2


@dataclass(frozen=True)
class ThicknessEstimate:
    """Result of :func:`estimate_thickness`.

    Attributes
    ----------
    thickness : int
        Suggested volume thickness in full-resolution voxels (a multiple of ``multiple``,
        within ``[minimum, width]``).
    signal_thickness : float
        Full-resolution voxels of ``z`` holding ``fraction`` of the signal, before the
        margin and rounding.
    z_offset : float
        Centre of that signal range relative to the volume centre (full-resolution voxels,
        ``+z`` up); the estimated thickness is centred on the volume centre regardless.
    binning : int
        Binning factor used for the coarse reconstruction.
    profile : numpy.ndarray, shape (nz_coarse,)
        Background-subtracted structure energy per coarse ``z`` slice (arbitrary units).
    """

    thickness: int
    signal_thickness: float
    z_offset: float
    binning: int
    profile: np.ndarray


def estimate_thickness(
    tilt_series: Any,
    geometry: TiltGeometry,
    *,
    target_width: int = 128,
    fraction: float = 0.98,
    margin_fraction: float = 0.2,
    multiple: int = 8,
    minimum: int = 16,
) -> ThicknessEstimate:
    """Estimate the specimen thickness (voxels) from a tilt series.

    Parameters
    ----------
    tilt_series : array_like or torch.Tensor, shape (n_tilts, ny, nx)
        Raw tilt images, as for :func:`~cryowedge.recon.fbp.fbp`.
    geometry : TiltGeometry
        Its geometry (angles in degrees, tilt axis, shifts).
    target_width : int
        Bin by the smallest whole factor that leaves at most this many pixels across the
        tilt axis (>= 16); the coarse reconstruction is about ``target_width``³ voxels.
    fraction : float
        Share of the above-background structure energy the thickness must hold, in (0, 1].
    margin_fraction : float
        Margin added on each side, as a fraction of the signal thickness (at least one
        coarse voxel).
    multiple : int
        Round the thickness up to a multiple of this many voxels (>= 1).
    minimum : int
        Smallest thickness returned (voxels, >= 1); the largest is the detector width
        across the tilt axis.

    Returns
    -------
    ThicknessEstimate
        ``.thickness`` is the value to reconstruct with.

    Raises
    ------
    ValueError
        If the series does not match the geometry, or an option is out of range.
    """
    from cryowedge.recon.fbp import fbp

    series = np.array(to_numpy(tilt_series), dtype=np.float32)  # a writable copy
    if series.ndim != 3 or series.shape != tuple(geometry.tilt_series_shape):
        raise ValueError(
            f"tilt_series must be (n_tilts, ny, nx) = {tuple(geometry.tilt_series_shape)} "
            f"to match the geometry, got shape {series.shape}."
        )
    if int(target_width) != target_width or target_width < 16:
        raise ValueError(
            f"target_width must be a whole number >= 16 (pixels), got {target_width!r}."
        )
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}; 0.98 is usual.")
    if not float(margin_fraction) >= 0.0:
        raise ValueError(f"margin_fraction must be >= 0, got {margin_fraction!r}.")
    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"multiple must be a whole number >= 1 (voxels), got {multiple!r}.")
    if int(minimum) != minimum or minimum < 1:
        raise ValueError(f"minimum must be a whole number >= 1 (voxels), got {minimum!r}.")
    if not np.isfinite(series).all():
        raise ValueError("tilt_series contains non-finite values; cannot estimate the thickness.")

    width = geometry.aligned_detector_shape[1]
    factor = max(1, math.ceil(width / int(target_width)))
    coarse = bin_images(series, factor)
    coarse_geom = geometry.binned(factor)
    volume = fbp(coarse, coarse_geom, volume_shape=coarse_geom.default_volume_shape(),
                 filter_name="hann").cpu().numpy().astype(np.float64)

    # Local structure: the band-passed volume's energy per z slice. The lower Gaussian
    # takes out pixel noise, the subtraction of the wider one the smooth background
    # (slab mean, ramp-filter offsets); borders in y/x where FBP streaks pile up are left out.
    band = ndimage.gaussian_filter(volume, 1.0) - ndimage.gaussian_filter(volume, 4.0)
    nz, ny, nx = band.shape
    cy, cx = max(ny // 8, 1), max(nx // 8, 1)
    energy = (band[:, cy : ny - cy, cx : nx - cx] ** 2).mean(axis=(1, 2))
    # Above background: the emptiest slices set the floor (noise and FBP streaks), and a
    # slice counts only for its energy above ``level`` of the way from that floor to the
    # plateau (streak energy outside the specimen fluctuates up to ~10 % of the plateau).
    floor = float(np.percentile(energy, 10))
    plateau = float(np.percentile(energy, 90))
    profile = np.clip(energy - (floor + _LEVEL * (plateau - floor)), 0.0, None)
    total = float(profile.sum())
    if total <= 0.0 or plateau <= floor:
        logger.info("thickness estimate: no structure above background; using the width %d", width)
        return ThicknessEstimate(int(width), float(width), 0.0, factor, profile)

    cumulative = np.cumsum(profile) / total
    tail = (1.0 - float(fraction)) / 2.0
    lo = int(np.searchsorted(cumulative, tail, side="left"))
    hi = int(np.searchsorted(cumulative, 1.0 - tail, side="left"))
    signal = (hi - lo + 1) * factor  # full-resolution voxels
    centre = (lo + hi) / 2.0 - nz // 2
    # The volume is centred on z = 0: cover the signal on both sides of the centre.
    half = max(abs(lo - nz // 2), abs(hi - nz // 2) + 1) * factor
    margin = max(float(margin_fraction) * signal, float(factor))
    needed = 2.0 * (half + margin)
    thickness = int(math.ceil(needed / multiple) * multiple)
    thickness = int(min(max(thickness, int(minimum)), width))
    logger.info(
        "thickness estimate: signal %d voxels (bin %d, %.0f %% of the structure energy, "
        "centre %+.1f), thickness %d of width %d",
        signal, factor, 100 * fraction, centre * factor, thickness, width,
    )
    return ThicknessEstimate(thickness, float(signal), float(centre * factor), factor, profile)
