"""Input checks shared by the public API.

Every check raises ``ValueError`` (or ``TypeError``) with a message that shows
the offending value and says how to fix it, *before* any long computation starts.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "check_finite",
    "check_ndim",
    "check_positive",
    "check_in_range",
    "check_choice",
    "check_positive_int",
    "check_scan_mask_shape",
    "check_tilt_series",
    "parse_view_list",
]


def _describe(array: Any) -> str:
    shape = tuple(getattr(array, "shape", ()))
    dtype = getattr(array, "dtype", type(array).__name__)
    return f"shape={shape}, dtype={dtype}"


def check_ndim(array: Any, ndim: int | Sequence[int], name: str, expected: str) -> None:
    """Raise if ``array.ndim`` is not one of ``ndim``.

    ``expected`` describes the wanted layout in words, e.g. ``"(n_tilts, y, x)"``.
    """
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    got = getattr(array, "ndim", None)
    if got not in allowed:
        raise ValueError(
            f"{name} must be a {' or '.join(f'{n}D' for n in allowed)} array {expected}, "
            f"got {got}D ({_describe(array)}). See docs/conventions.md for axis order."
        )


def check_finite(array: Any, name: str) -> None:
    """Raise if ``array`` contains NaN or Inf, naming how many and where the first one is."""
    torch = sys.modules.get("torch")  # only tensors need torch; don't import it for NumPy input
    if torch is not None:
        if isinstance(array, torch.Tensor):
            finite = torch.isfinite(array)
            if bool(finite.all()):
                return
            bad = (~finite).nonzero()
            n_bad = int(bad.shape[0])
            first = tuple(int(i) for i in bad[0])
            value = array[first].item()
            raise ValueError(
                f"{name} contains {n_bad} non-finite value(s) (first: {value} at index {first}). "
                "Replace or mask them (e.g. numpy.nan_to_num) before reconstructing."
            )
    arr = np.asarray(array)
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = np.argwhere(~finite)
    first = tuple(int(i) for i in bad[0])
    raise ValueError(
        f"{name} contains {len(bad)} non-finite value(s) (first: {arr[first]} at index {first}). "
        "Replace or mask them (e.g. numpy.nan_to_num) before reconstructing."
    )


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> None:
    """Raise unless ``value > 0`` (or ``>= 0`` with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not np.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")


def check_positive_int(value: int, name: str) -> None:
    """Raise unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}.")


def check_in_range(
    value: float,
    name: str,
    low: float,
    high: float,
    *,
    low_inclusive: bool = False,
    high_inclusive: bool = False,
) -> None:
    """Raise unless ``low < value < high`` (inclusive ends on request)."""
    lo_ok = value >= low if low_inclusive else value > low
    hi_ok = value <= high if high_inclusive else value < high
    if not (np.isfinite(value) and lo_ok and hi_ok):
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{hb}, got {value!r}.")


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` lower-cased if it is one of ``choices``; raise otherwise."""
    normalised = str(value).lower()
    if normalised not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}.")
    return normalised


def check_tilt_series(tilt_series: Any, geometry: Any, name: str = "tilt_series") -> None:
    """Validate a ``(n_tilts, y, x)`` stack against its :class:`~cryowedge.geometry.TiltGeometry`.

    Checks the number of dimensions (a batch ``(b, n_tilts, y, x)`` is allowed), one image
    per tilt angle, the ``(y, x)`` image size against ``geometry.detector_shape`` (pixels)
    and finiteness. The geometry is only read (``n_tilts``, ``detector_shape``).
    """
    check_ndim(tilt_series, (3, 4), name, "(n_tilts, y, x) (or a batch (b, n_tilts, y, x))")
    shape = tuple(tilt_series.shape[-3:])
    if shape[0] != geometry.n_tilts:
        raise ValueError(
            f"{name} has {shape[0]} images but the geometry has {geometry.n_tilts} tilt angles; "
            "the tilt-angle file must list exactly one angle per image (check .tlt/.rawtlt)."
        )
    if shape[1:] != geometry.detector_shape:
        raise ValueError(
            f"{name} images are {shape[1:]} (y, x) but the geometry's detector_shape is "
            f"{geometry.detector_shape}."
        )
    check_finite(tilt_series, name)


def check_scan_mask_shape(
    mask_shape: Sequence[int], data_shape: Sequence[int], what: str = "data"
) -> None:
    """Raise unless a STET scan mask's ``(n_tilts, ny, nx)`` shape equals the data's (both
    named)."""
    if tuple(mask_shape) != tuple(data_shape):
        raise ValueError(
            f"scan mask shape {tuple(mask_shape)} does not match the {what} shape "
            f"{tuple(data_shape)} (n_tilts, ny, nx); use the mask written with these data."
        )


_ITEM = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_view_list(text: str | int, n_views: int | None = None) -> np.ndarray:
    """Sorted unique 0-based indices of an IMOD-style list of 1-based views (``"1,2,40-41"``).

    With ``n_views`` every view must exist (``1..n_views``). Raises ``ValueError`` naming the
    bad item (a malformed item, a view 0, a reversed range, a view past ``n_views``).
    """
    text = str(text)
    items = text.split(",")
    if not text.strip():
        raise ValueError("the exclusion list is empty; give views like --exclude 1,2,40-41.")
    indices: list[int] = []
    for item in items:
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(
                f"exclusion list {text!r}: cannot read {item.strip()!r}; give 1-based view "
                "numbers and inclusive ranges separated by commas, e.g. --exclude 1,2,40-41."
            )
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if lo < 1:
            raise ValueError(f"exclusion list {text!r}: views are numbered from 1, got {lo}.")
        if hi < lo:
            raise ValueError(f"exclusion list {text!r}: range {item.strip()!r} runs backwards; "
                             f"write {hi}-{lo}.")
        if n_views is not None and hi > n_views:
            raise ValueError(f"exclusion list {text!r}: view {hi} does not exist; the stack has "
                             f"views 1-{n_views}.")
        indices.extend(range(lo - 1, hi))
    return np.unique(np.asarray(indices, dtype=np.int64))


def check_readable_file(path: Path, what: str) -> None:
    """Raise a one-line error unless ``path`` is an existing file (``what`` names it, e.g.
    "MRC file"); relative paths are reported with the working directory they resolve from."""
    import os

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: {str(path)!r}. Check the path (relative paths are resolved "
            f"from the working directory {os.getcwd()!r})."
        )
    if path.is_dir():
        raise IsADirectoryError(f"{what} path {str(path)!r} is a directory, not a file.")
