"""Robust standardisation of tomograms: ``(x - centre) / scale`` and back.

Losses of self-supervised denoisers are not scale-free: a tomogram whose voxels are of order
1e-6 (AreTomo3, Warp) gives losses of 1e-12 that look like zero, and a network fitted on one
intensity scale does not transfer to another (MLI-lab/DeepDeWedge#17, #28, #31). So every
tomogram is standardised before fitting and refining, and the result is mapped back to the
input's scale afterwards.

The centre is the **median** and the scale the **interquartile range / 1.349** (equal to the
standard deviation for Gaussian data, but blind to the few very bright or dark voxels of gold
beads, carbon edges and reconstruction streaks). Both are computed in float64 from a
**subsample** of the volume: a few sections (``z``) of the central region, read one at a
time, so a memory-mapped or lazily read tomogram of any size costs a few reads. With a
sample mask only the voxels inside the mask count.

Stats are a plain value (:class:`StandardizationStats`) that is saved in the ``prepared.yaml``
manifest and with the fitted model, so refinement applies exactly what fitting applied. The
two halves of a pair (and the full-tilt-series tomogram refined later) share **one** set of
stats, computed from both halves pooled: the halves then keep their common signal scale, and
the full tomogram reaches the network with the amplitude the network was fitted on.

Axes: volumes ``(z, y, x)`` (docs/conventions.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "IQR_TO_STD",
    "StandardizationStats",
    "central_box",
    "robust_stats",
    "sample_voxels",
]

logger = logging.getLogger(__name__)

#: Interquartile range of a unit-variance Gaussian, 2·Φ⁻¹(0.75): IQR / 1.349 estimates the std.
IQR_TO_STD = 1.3489795003921634

#: Default number of voxels drawn for the statistics (quantiles to about ±0.1 % of the IQR).
DEFAULT_MAX_SAMPLES = 1_000_000
#: Default number of ``z`` sections read for the statistics.
DEFAULT_MAX_SECTIONS = 16
#: Fewest in-mask samples that replace the whole central region's samples.
MIN_MASKED_SAMPLES = 1000


@dataclass(frozen=True)
class StandardizationStats:
    """Centre and scale of a standardisation ``y = (x - centre) / scale``.

    Attributes
    ----------
    centre : float
        Subtracted first, in the input's units (the median of the sampled voxels).
    scale : float
        Divides next, in the input's units, > 0 (IQR / 1.349 of the sampled voxels).
    method : {"robust", "none"}
        How the values were found; ``"none"`` is the identity (centre 0, scale 1).
    n_samples : int
        Voxels the statistics were computed from (0 for ``"none"``).
    """

    centre: float = 0.0
    scale: float = 1.0
    method: Literal["robust", "none"] = "none"
    n_samples: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.centre) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(
                f"standardisation needs a finite centre and a finite scale > 0, got centre "
                f"{self.centre!r}, scale {self.scale!r}."
            )

    @classmethod
    def identity(cls) -> StandardizationStats:
        """No standardisation (``standardize: none``)."""
        return cls()

    def apply(self, x: Any) -> Any:
        """``(x - centre) / scale`` for a NumPy array (→ float32) or torch tensor (same dtype)."""
        if isinstance(x, torch.Tensor):
            return (x - self.centre) / self.scale
        out = np.asarray(x, dtype=np.float32) - np.float32(self.centre)
        out /= np.float32(self.scale)
        return out

    def invert(self, y: Any) -> Any:
        """``y · scale + centre``: standardised values back in the input's units."""
        if isinstance(y, torch.Tensor):
            return y * self.scale + self.centre
        out = np.asarray(y, dtype=np.float32) * np.float32(self.scale)
        out += np.float32(self.centre)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain values for YAML/JSON (and :meth:`from_dict`)."""
        return {"centre": float(self.centre), "scale": float(self.scale),
                "method": self.method, "n_samples": int(self.n_samples)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StandardizationStats:
        """Inverse of :meth:`to_dict`."""
        return cls(centre=float(data["centre"]), scale=float(data["scale"]),
                   method=data.get("method", "robust"), n_samples=int(data.get("n_samples", 0)))


def central_box(shape: Sequence[int], fraction: float | Sequence[float]) -> tuple[slice, ...]:
    """Slices of the central ``fraction`` of each axis of ``shape`` (at least one voxel).

    ``fraction`` is one number for all axes or one per axis, in ``(0, 1]``; the box is
    centred on ``N // 2``.
    """
    fracs = np.broadcast_to(np.asarray(fraction, dtype=np.float64), (len(shape),))
    if np.any(fracs <= 0) or np.any(fracs > 1):
        raise ValueError(f"central fraction must lie in (0, 1], got {fraction!r}.")
    box = []
    for n, f in zip(shape, fracs, strict=True):
        width = max(1, int(round(int(n) * float(f))))
        start = max(0, min(int(n) // 2 - width // 2, int(n) - width))
        box.append(slice(start, start + width))
    return tuple(box)


def sample_voxels(
    volume: Any,
    *,
    mask: Any | None = None,
    central_fraction: float | Sequence[float] = 0.5,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    max_sections: int = DEFAULT_MAX_SECTIONS,
) -> tuple[np.ndarray, bool]:
    """Voxel values for statistics, read section by section from the central region.

    Parameters
    ----------
    volume
        ``(z, y, x)`` array, ``numpy.memmap`` or :class:`~cryowedge.io.mrc.LazyMrcArray`:
        anything indexable as ``volume[z, y0:y1, x0:x1]``.
    mask
        Optional ``(z, y, x)`` sample mask (0/1), indexable the same way; only voxels with
        ``mask == 1`` are kept when at least :data:`MIN_MASKED_SAMPLES` of them are drawn,
        otherwise the mask is ignored (logged).
    central_fraction
        Central part of each axis read (one number or ``(z, y, x)``), to stay clear of the
        empty or streaky borders of a tomogram.
    max_samples, max_sections
        At most ``max_sections`` evenly spaced ``z`` sections are read, and a regular
        sub-grid of each so that about ``max_samples`` voxels are drawn in all.

    Returns
    -------
    values : numpy.ndarray
        1D float64 voxel values.
    masked : bool
        True when the values come from inside the mask only.
    """
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {shape}.")
    if mask is not None and tuple(int(s) for s in mask.shape) != shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from the volume's {shape}.")
    bz, by, bx = central_box(shape, central_fraction)
    zs = np.unique(np.linspace(bz.start, bz.stop - 1, min(max_sections, bz.stop - bz.start))
                   .round().astype(int))
    per_section = max(1, max_samples // len(zs))
    area = (by.stop - by.start) * (bx.stop - bx.start)
    step = max(1, int(math.floor(math.sqrt(area / per_section))))
    values, inside = [], []
    for z in zs:
        section = np.asarray(volume[int(z), by, bx])[::step, ::step]
        values.append(section.astype(np.float64, copy=False).ravel())
        if mask is not None:
            inside.append(np.asarray(mask[int(z), by, bx])[::step, ::step].ravel() != 0)
    all_values = np.concatenate(values)
    if mask is not None:
        keep = np.concatenate(inside)
        if int(keep.sum()) >= MIN_MASKED_SAMPLES:
            return all_values[keep], True
        logger.info("only %d of %d sampled voxels lie inside the mask; statistics from the "
                    "central region instead", int(keep.sum()), keep.size)
    return all_values, False


def robust_stats(
    volumes: Any,
    *,
    masks: Any | None = None,
    central_fraction: float | Sequence[float] = 0.5,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    max_sections: int = DEFAULT_MAX_SECTIONS,
) -> StandardizationStats:
    """Median and IQR/1.349 of one volume, or of several pooled (the two halves of a pair).

    Parameters
    ----------
    volumes
        One ``(z, y, x)`` volume or a sequence of volumes (arrays, memory maps or
        :class:`~cryowedge.io.mrc.LazyMrcArray`); each is subsampled by
        :func:`sample_voxels` and the samples pooled.
    masks
        None, one mask for all volumes, or one mask (or None) per volume.
    central_fraction, max_samples, max_sections
        See :func:`sample_voxels` (``max_samples`` is shared among the volumes).

    Returns
    -------
    StandardizationStats
        ``method="robust"``. The statistics scale with the data: volumes multiplied by ``a >
        0`` give ``a ×`` the centre and scale, so the standardised volume is the same.

    Raises
    ------
    ValueError
        Non-finite voxels in the sample, or a constant volume (zero spread, nothing to
        standardise: the file is probably empty or wrong).
    """
    items = list(volumes) if isinstance(volumes, (list, tuple)) else [volumes]
    if not items:
        raise ValueError("robust_stats needs at least one volume.")
    if masks is None or not isinstance(masks, (list, tuple)):
        mask_items = [masks] * len(items)
    else:
        mask_items = list(masks)
        if len(mask_items) != len(items):
            raise ValueError(f"got {len(mask_items)} masks for {len(items)} volumes.")
    samples = []
    for volume, mask in zip(items, mask_items, strict=True):
        values, _ = sample_voxels(volume, mask=mask, central_fraction=central_fraction,
                                  max_samples=max(1, max_samples // len(items)),
                                  max_sections=max_sections)
        samples.append(values)
    pooled = np.concatenate(samples)
    if not np.all(np.isfinite(pooled)):
        raise ValueError("the tomogram holds NaN or Inf voxels; fix the input (re-reconstruct it "
                         "or replace the bad voxels) before standardising.")
    q25, median, q75 = np.quantile(pooled, [0.25, 0.5, 0.75])
    scale = float(q75 - q25) / IQR_TO_STD
    if not scale > 0:  # more than half the samples equal: fall back on the std
        scale = float(np.std(pooled))
        logger.info("interquartile range is 0 (many equal voxels); standard deviation used as "
                    "the scale instead")
    if not scale > 0:
        raise ValueError(
            f"the tomogram is constant (every sampled voxel equals {float(median)!r}); there is "
            "nothing to standardise or denoise: check that the right file was given."
        )
    return StandardizationStats(centre=float(median), scale=scale, method="robust",
                                n_samples=int(pooled.size))
