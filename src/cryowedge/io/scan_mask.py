"""STET scan-mask files: ``<name>_mask.mrc`` next to the tilt series ``<name>.mrc``.

A scan mask is an 8-bit (MRC mode 0) image stack of the data's shape
``(n_tilts, ny, nx)`` with 1 = scanned, 0 = not scanned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cryowedge._validation import check_scan_mask_shape

__all__ = ["MASK_SUFFIX", "mask_path_for", "read_scan_mask"]

#: Suffix of the scan-mask file next to a tilt series: ``ts.mrc`` → ``ts_mask.mrc``.
MASK_SUFFIX = "_mask.mrc"


def mask_path_for(tilt_series_path: str | Path) -> Path:
    """The scan-mask file next to a tilt series: ``dir/name.mrc`` → ``dir/name_mask.mrc``."""
    path = Path(tilt_series_path)
    name = path.name
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    stem = Path(name).stem
    return path.with_name(stem + MASK_SUFFIX)


def read_scan_mask(
    path: str | Path, expected_shape: tuple[int, int, int] | None = None
) -> np.ndarray:
    """Read a scan-mask MRC (0/1, any numeric mode) as a ``(n_tilts, ny, nx)`` bool array.

    Raises ``FileNotFoundError`` if the file is missing and ``ValueError`` if it holds values
    other than 0 and 1 or its shape differs from ``expected_shape`` (both shapes named).
    """
    from cryowedge.io.mrc import read_mrc

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scan mask {path} does not exist.")
    raw = read_mrc(path, dtype=None).data
    if raw.ndim == 2:  # MRC cannot tell a one-image stack from an image
        raw = raw[None]
    values = np.unique(raw)
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(
            f"scan mask {path.name} must contain only 0 and 1 (1 = measured), got values "
            f"{values[:6].tolist()}{' ...' if values.size > 6 else ''}; pass a binary mask."
        )
    mask = raw != 0
    if expected_shape is not None:
        check_scan_mask_shape(mask.shape, tuple(expected_shape), "tilt-series")
    return mask
