"""Regenerate ``needle_aligned_crop.mrc`` and ``needle_aligned_crop.tlt`` (one-off script).

Source: ``../shared/data/etspy_HAADF_needle_aligned.mrc`` (77, 256, 256) float32, 33.6 Å/px,
aligned STEM-HAADF tilt series whose tilt axis is the image X axis, and its ``.tlt``.

Steps: average-bin 2×2 in (y, x) -> (77, 128, 128) at 67.2 Å/px; keep the central 32
columns along X (x indices 48:80, along the tilt axis) -> (77, 128, 32) float32; write it
as an MRC image stack (ispg 0) with voxel size 67.2 Å; copy the .tlt unchanged.

Run from the repository root::

    python tests/data/make_needle_crop.py [path/to/shared/data]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import mrcfile
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1].parent / "shared" / "data"
BIN = 2
X_SLICE = slice(48, 80)
VOXEL_SIZE_ANGSTROM = 33.6 * BIN


def main(source_dir: Path = DEFAULT_SOURCE) -> None:
    source = source_dir / "etspy_HAADF_needle_aligned.mrc"
    with mrcfile.open(source) as mrc:
        series = np.asarray(mrc.data, dtype=np.float64)
        source_voxel = float(mrc.voxel_size.x)
    if series.shape != (77, 256, 256) or not np.isclose(source_voxel, 33.6, atol=1e-3):
        raise SystemExit(f"unexpected source {source}: shape {series.shape}, voxel {source_voxel}")
    n, ny, nx = series.shape
    binned = series.reshape(n, ny // BIN, BIN, nx // BIN, BIN).mean(axis=(2, 4))
    crop = np.ascontiguousarray(binned[:, :, X_SLICE], dtype=np.float32)
    assert crop.shape == (77, 128, 32), crop.shape

    out = HERE / "needle_aligned_crop.mrc"
    with mrcfile.new(out, overwrite=True) as mrc:
        mrc.set_data(crop)
        mrc.set_image_stack()
        mrc.voxel_size = VOXEL_SIZE_ANGSTROM
        mrc.add_label("etspy HAADF_Aligned (NIST): bin 2x2 in y,x, x 48:80; see README.md")
    shutil.copyfile(source_dir / "etspy_HAADF_needle_aligned.tlt", HERE / "needle_aligned_crop.tlt")
    print(f"wrote {out} {crop.shape} {crop.dtype}, voxel {VOXEL_SIZE_ANGSTROM} Å")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE)
