"""View exclusion and binning of an input tilt series (``reconstruct --exclude``, ``--bin``).

Exclusion lists follow IMOD's ``EXCLUDELIST``: 1-based view numbers in stack order, commas
between items, inclusive ranges ``a-b`` (``"1,2,40-41"``). :func:`parse_view_list` turns one
into sorted 0-based indices; :func:`kept_views` checks it against a stack and returns the
views to keep, for ``TiltGeometry.__getitem__`` (which slices per-view shifts and matrices).

Binning is a block mean of ``factor × factor`` pixels (IMOD ``newstack -bin``), which
averages away the frequencies above the new Nyquist (a box anti-aliasing filter);
rows/columns past a multiple of ``factor`` are dropped. The pixel size is multiplied and the
per-view shifts divided by ``factor``. The binned grid is not re-centred: its centre pixel
``n // factor // 2`` lies ``(factor - 1) / 2 - (n // 2 - factor · (n // factor // 2))`` raw
pixels from the raw centre pixel ``n // 2`` (half a raw pixel for ``factor = 2`` and even
``n``), i.e. less than half a binned pixel; correcting it would need an interpolation.

Axes: tilt series ``(n_tilts, y, x)`` (docs/conventions.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cryowedge._validation import parse_view_list
from cryowedge.geometry.tilt import TiltGeometry

__all__ = [
    "MIN_BINNED_PIXELS",
    "ViewSubset",
    "bin_images",
    "binned_geometry",
    "check_bin_factor",
    "kept_views",
    "parse_view_list",
    "read_views",
]

#: Smallest binned image size (pixels, either axis) that ``--bin`` accepts.
MIN_BINNED_PIXELS = 16


def kept_views(exclude: str | int | None, n_views: int) -> np.ndarray:
    """0-based indices of the views kept after excluding ``exclude`` from ``n_views`` views.

    Raises ``ValueError`` for a malformed list, a view that does not exist, or one that
    excludes every view.
    """
    keep = np.arange(n_views)
    if exclude is None:
        return keep
    dropped = parse_view_list(exclude, n_views)
    keep = np.setdiff1d(keep, dropped)
    if keep.size == 0:
        raise ValueError(f"exclusion list {str(exclude)!r} excludes all {n_views} views; keep "
                         "at least one.")
    return keep


def check_bin_factor(factor: int, detector_shape: Sequence[int]) -> int:
    """``factor`` as an int, if it is a whole number >= 1 that (when above 1) leaves at least
    :data:`MIN_BINNED_PIXELS` pixels on both axes of ``detector_shape`` ``(ny, nx)``."""
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"--bin must be a whole number >= 1, got {factor!r}.")
    factor = int(factor)
    ny, nx = (int(s) for s in detector_shape)
    if factor > 1 and min(ny, nx) // factor < MIN_BINNED_PIXELS:
        largest = max(1, min(ny, nx) // MIN_BINNED_PIXELS)
        raise ValueError(
            f"--bin {factor} leaves {ny // factor}×{nx // factor} pixels of the {ny}×{nx} images; "
            f"at least {MIN_BINNED_PIXELS} are needed on each axis (use --bin {largest} or less)."
        )
    return factor


def bin_images(images: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of ``(..., ny, nx)`` images over ``factor × factor`` pixels → float32
    ``(..., ny // factor, nx // factor)`` (trailing rows/columns dropped)."""
    images = np.asarray(images, dtype=np.float32)
    if factor == 1:
        return images
    ny, nx = images.shape[-2:]
    by, bx = ny // factor, nx // factor
    cropped = images[..., : by * factor, : bx * factor]
    blocks = cropped.reshape(*images.shape[:-2], by, factor, bx, factor)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def binned_geometry(geometry: TiltGeometry, factor: int) -> TiltGeometry:
    """``geometry`` for images binned by ``factor``: detector ``(ny // f, nx // f)``, pixel size
    ``× f`` (Å), shifts ``/ f`` (binned pixels); view matrices are unchanged (pixel-size free).

    Raises ``ValueError`` if the binned images would be smaller than :data:`MIN_BINNED_PIXELS`.
    """
    return geometry.binned(check_bin_factor(factor, geometry.detector_shape))


class ViewSubset:
    """Read-only ``(n_kept, y, x)`` view of some sections of a stack, read on indexing.

    ``base`` is anything indexable as ``base[t, y_key, x_key]`` with an integer ``t`` (a NumPy
    array, a memory map, a :class:`~cryowedge.io.mrc.LazyMrcArray`); ``indices`` are the 0-based
    sections kept, in order. Indexing takes an int or slice on the first axis and passes the
    rest on, so streaming reads only the kept views' rows.
    """

    ndim = 3

    def __init__(self, base: Any, indices: Sequence[int] | np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shape = (int(self.indices.size), *(int(s) for s in base.shape[1:]))
        self.dtype = np.dtype(base.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if key == (Ellipsis,):
            key = (slice(None),)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        chosen = self.indices[first]
        if np.ndim(chosen) == 0:
            return np.asarray(self.base[(int(chosen), *rest)])
        parts = [np.asarray(self.base[(int(t), *rest)]) for t in chosen]
        if not parts:
            return np.asarray(self.base[(slice(0, 0), *rest)])
        return np.stack(parts)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)


def read_views(
    data: Any, indices: Sequence[int] | np.ndarray | None, factor: int = 1
) -> np.ndarray:
    """Read views ``indices`` (all when None) of ``(n_tilts, y, x)`` ``data`` one at a time,
    each binned by ``factor`` (:func:`bin_images`) → float32 ``(n_kept, y // f, x // f)``.

    Only one full-size view is in memory at a time, so a binned stack too large to read
    whole can still be read.
    """
    indices = np.arange(data.shape[0]) if indices is None else np.asarray(indices)
    ny, nx = (int(s) for s in data.shape[1:])
    out = np.empty((indices.size, ny // factor, nx // factor), dtype=np.float32)
    for i, t in enumerate(indices):
        out[i] = bin_images(np.asarray(data[int(t)]), factor)
    return out
