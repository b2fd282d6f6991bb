"""Orientation of a written tomogram: XY sections (cryowedge, ``trimvol -rx``) or IMOD's XZ.

cryowedge writes a tomogram ``(z, y, x)`` with sections along ``z``: XY slices, the way 3dmod
shows a tomogram, the same hand and z direction as IMOD's ``tilt`` output after ``trimvol -rx``
or ``clip rotx`` (docs/conventions.md, "Handedness and IMOD"). ``tilt`` itself writes XZ
slices: sections along the tilt axis ``Y``, rows the thickness running along ``−Z``. Scripts
that expect ``tilt``'s raw output (``trimvol`` without ``-rx``, some sub-tomogram pickers) get
it with orientation ``"xz"``:

======  ==========================  ====================================================
name    file array (sections first)  relation to the ``(z, y, x)`` tomogram ``v``
======  ==========================  ====================================================
xy      ``(z, y, x)``                ``v`` itself (default)
xz      ``(y, thickness, x)``        ``out[y, r, x] = v[nz − 1 − r, y, x]`` (IMOD ``tilt``)
======  ==========================  ====================================================

``clip rotx`` maps an ``"xz"`` file back to ``"xy"`` exactly (its output section ``k`` is input
row ``ny − 1 − k``). The voxel size is cubic and kept; the origin's components are permuted
with the axes (the flip of the thickness axis is not representable by an origin alone).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["ORIENTATIONS", "orient_volume", "orient_origin", "reorient_mrc_file"]

logger = logging.getLogger(__name__)

#: Orientations a tomogram can be written in (see the module table).
ORIENTATIONS = ("xy", "xz")


def _check(orientation: str) -> str:
    if orientation not in ORIENTATIONS:
        raise ValueError(
            f"orientation {orientation!r} is not one of {', '.join(ORIENTATIONS)} (xy: XY "
            "sections like trimvol -rx; xz: IMOD tilt's raw XZ sections)."
        )
    return orientation


def orient_volume(volume: np.ndarray, orientation: str) -> np.ndarray:
    """The ``(z, y, x)`` tomogram as the file array of ``orientation`` (a view, no copy).

    ``"xy"`` returns ``volume``; ``"xz"`` returns ``(y, z, x)`` with ``z`` reversed, IMOD
    ``tilt``'s own layout.
    """
    if _check(orientation) == "xy":
        return volume
    return np.flip(volume, axis=0).transpose(1, 0, 2)


def orient_origin(origin_zyx_angstrom: Sequence[float], orientation: str) -> tuple[float, ...]:
    """Header origin ``(z, y, x)`` Å of a tomogram, permuted for the file of ``orientation``."""
    z, y, x = (float(v) for v in origin_zyx_angstrom)
    return (z, y, x) if _check(orientation) == "xy" else (y, z, x)


def reorient_mrc_file(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    orientation: str,
    *,
    rows_per_chunk: int = 64,
) -> Path:
    """Copy an ``"xy"`` tomogram MRC to ``destination`` in ``orientation``, chunk by chunk.

    Reads ``rows_per_chunk`` rows of ``y`` at a time through a memory map, so a tomogram of
    any size needs only ``nz · rows_per_chunk · nx`` floats of memory; the destination is
    written atomically (voxel size kept, origin permuted by :func:`orient_origin`).
    """
    from cryowedge.io.mrc import MrcSlabWriter, open_mrc_lazy

    _check(orientation)
    data = open_mrc_lazy(source)
    nz, ny, nx = data.shape
    shape = (nz, ny, nx) if orientation == "xy" else (ny, nz, nx)
    with MrcSlabWriter(
        destination, shape, voxel_size_angstrom=data.voxel_size_angstrom,
        origin_angstrom=orient_origin(data.origin_angstrom, orientation), overwrite=True,
    ) as writer:
        for y0 in range(0, ny, rows_per_chunk):
            y1 = min(ny, y0 + rows_per_chunk)
            block = np.asarray(data[:, y0:y1], dtype=np.float32)
            if orientation == "xy":
                writer.write_rows(y0, block)
            else:
                writer.write_sections(y0, np.ascontiguousarray(orient_volume(block, "xz")))
    return Path(destination)
