"""File input/output: MRC volumes and tilt series, TIFF stacks, tilt-angle and mdoc files.

Arrays follow ``docs/conventions.md``: volumes ``(z, y, x)``, tilt series
``(n_tilts, y, x)``, angles in degrees, lengths in Å. Every writer is atomic: it writes a
hidden temporary file next to the destination and renames it into place, so a failed write
never leaves a truncated file behind.
"""

from __future__ import annotations

from ._atomic import atomic_write, write_text_atomic
from .mrc import MrcVolume, read_fei_tilt_series, read_mrc, write_mrc
from .tiff import read_tiff_volume, write_tiff_volume
from .tilt_files import MdocInfo, read_mdoc, read_tilt_angles, write_tilt_angles

__all__ = [
    "MdocInfo",
    "MrcVolume",
    "atomic_write",
    "read_fei_tilt_series",
    "read_mdoc",
    "read_mrc",
    "read_tiff_volume",
    "read_tilt_angles",
    "write_mrc",
    "write_text_atomic",
    "write_tiff_volume",
    "write_tilt_angles",
]
