"""File input/output: MRC volumes and tilt series, TIFF stacks, tilt-angle and mdoc files.

Arrays follow ``docs/conventions.md``: volumes ``(z, y, x)``, tilt series
``(n_tilts, y, x)``, angles in degrees, lengths in Å. Every writer is atomic: it writes a
hidden temporary file next to the destination and renames it into place, so a failed write
never leaves a truncated file behind.
"""

from __future__ import annotations

from ._atomic import atomic_write, write_text_atomic
from .alignment import Alignment, apply_alignment, load_alignment
from .mrc import (
    LazyMrcArray,
    MrcSlabWriter,
    MrcVolume,
    open_mrc_lazy,
    read_fei_tilt_series,
    read_mrc,
    write_mrc,
)
from .scan_mask import mask_path_for, read_scan_mask
from .tiff import read_tiff_volume, write_tiff_volume
from .tilt_files import MdocInfo, read_mdoc, read_tilt_angles, write_tilt_angles
from .tilt_series import TiltSeriesData, load_tilt_series

__all__ = [
    "Alignment",
    "apply_alignment",
    "atomic_write",
    "LazyMrcArray",
    "load_alignment",
    "load_tilt_series",
    "mask_path_for",
    "MdocInfo",
    "MrcSlabWriter",
    "MrcVolume",
    "open_mrc_lazy",
    "read_fei_tilt_series",
    "read_mdoc",
    "read_mrc",
    "read_scan_mask",
    "read_tiff_volume",
    "read_tilt_angles",
    "TiltSeriesData",
    "write_mrc",
    "write_text_atomic",
    "write_tiff_volume",
    "write_tilt_angles",
]
