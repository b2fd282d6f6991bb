"""Read and write TIFF volumes (ImageJ hyperstacks) through :mod:`tifffile`.

A volume is ``(z, y, x)`` (one TIFF page per ``z``), an image ``(y, x)``. The voxel size
comes from the ``XResolution``/``YResolution`` tags (pixels per unit) and the ImageJ
``spacing`` (z step) in the ImageJ ``unit``, converted to ångström.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from numpy.typing import ArrayLike

from .._arrays import to_numpy
from .._validation import check_finite, check_ndim, check_positive
from ._atomic import atomic_write
from .mrc import MrcVolume, _as_zyx_triplet

__all__ = ["read_tiff_volume", "write_tiff_volume"]

logger = logging.getLogger(__name__)

#: Length of one unit in Å, for the unit names ImageJ and others write (lower-cased).
_UNIT_TO_ANGSTROM: dict[str, float] = {
    "a": 1.0,
    "å": 1.0,
    "\u212b": 1.0,  # ANGSTROM SIGN
    "angstrom": 1.0,
    "angstroms": 1.0,
    "nm": 10.0,
    "nanometer": 10.0,
    "nanometers": 10.0,
    "nanometre": 10.0,
    "um": 1e4,
    "µm": 1e4,
    "μm": 1e4,
    "\\u00b5m": 1e4,  # ImageJ's escaped micro sign
    "micron": 1e4,
    "microns": 1e4,
    "micrometer": 1e4,
    "micrometre": 1e4,
    "mm": 1e7,
    "millimeter": 1e7,
    "cm": 1e8,
    "centimeter": 1e8,
    "m": 1e10,
    "meter": 1e10,
}
#: ``ResolutionUnit`` tag values with a physical length (INCH is ignored, see below).
_RESUNIT_TO_ANGSTROM = {3: 1e8, 4: 1e7, 5: 1e4}  # CENTIMETER, MILLIMETER, MICROMETER
_SIGNIFICANT_DIGITS = 9  # rationals and text spacing carry ~10 digits; drop the noise


def _tidy(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT_DIGITS}g}")


def _pixel_size_from_tag(page: Any, tag_name: str, unit_angstrom: float | None) -> float | None:
    """Pixel size in Å from a ``X/YResolution`` rational (pixels per unit), or None."""
    if unit_angstrom is None:
        return None
    tag = page.tags.get(tag_name)
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, tuple) and len(value) == 2:
        numerator, denominator = float(value[0]), float(value[1])
    else:  # pragma: no cover - unusual writers store a float
        numerator, denominator = float(value), 1.0
    if numerator <= 0 or denominator <= 0:
        return None
    return _tidy(denominator / numerator * unit_angstrom)


def read_tiff_volume(path: str | os.PathLike[str]) -> MrcVolume:
    """Read a single-channel TIFF image or stack as a volume with its voxel size.

    Parameters
    ----------
    path : str or os.PathLike
        ``.tif``/``.tiff`` file: a 2D image or a stack of pages (ImageJ hyperstack with
        only a Z axis, or plain multi-page TIFF).

    Returns
    -------
    MrcVolume
        ``data`` ``(z, y, x)`` (or ``(y, x)``) in the file's dtype; ``voxel_size_angstrom``
        ``(z, y, x)`` in Å; ``origin_angstrom`` (0, 0, 0); ``is_image_stack`` False.
        The x/y sizes come from ``XResolution``/``YResolution`` in the ImageJ ``unit`` (or
        a ``ResolutionUnit`` of cm, mm or µm); the z size from ImageJ ``spacing``, else the
        x size (voxels are cubic, ``docs/conventions.md``). When the unit is unknown,
        ``pixel``, absent or inches (a print setting like 72 dpi, not a pixel size), the
        voxel size is reported as (1, 1, 1) with ``has_voxel_size == False``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is not a readable TIFF, or has channels/time/RGB samples (more than 3
        axes).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"TIFF file not found: {str(path)!r}. Check the path (relative paths are resolved "
            f"from the working directory {os.getcwd()!r})."
        )
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            ij = tif.imagej_metadata or {}
            resolution_unit = (
                int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else None
            )
            unit_name = str(ij.get("unit", "")).strip().lower() if ij else ""
            if unit_name:
                unit_angstrom = _UNIT_TO_ANGSTROM.get(unit_name)
                if unit_angstrom is None:
                    logger.info("%s: unknown ImageJ unit %r; voxel size unknown", path, unit_name)
            else:
                unit_angstrom = _RESUNIT_TO_ANGSTROM.get(resolution_unit or 0)
                if resolution_unit == 2:
                    logger.info(
                        "%s: resolution in dots per inch is not a pixel size; ignored", path
                    )
            size_x = _pixel_size_from_tag(page, "XResolution", unit_angstrom)
            size_y = _pixel_size_from_tag(page, "YResolution", unit_angstrom)
            spacing = ij.get("spacing") if unit_angstrom is not None else None
    except tifffile.TiffFileError as err:
        raise ValueError(
            f"cannot read {str(path)!r} as a TIFF file: tifffile says: {err}. The file is "
            "corrupt, truncated or not TIFF."
        ) from err
    kept = [(axis, n) for axis, n in zip(axes, data.shape, strict=True) if n != 1]
    if data.ndim > len(kept) and len(kept) >= 2:
        data = data.reshape([n for _, n in kept])
        axes = "".join(axis for axis, _ in kept)
    if data.ndim not in (2, 3) or "S" in axes or "C" in axes:
        raise ValueError(
            f"{str(path)!r} has shape {data.shape} (axes {axes!r}); only single-channel 2D "
            "images and (z, y, x) stacks are supported. Split channels/colour samples or time "
            "points first."
        )
    if size_x is None or size_y is None:
        voxel = (1.0, 1.0, 1.0)
        known = False
    else:
        size_z = _tidy(float(spacing) * unit_angstrom) if spacing else size_x  # type: ignore[operator]
        voxel = (size_z, size_y, size_x)
        known = True
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    logger.debug("read %s: shape %s, dtype %s, voxel %s Å", path, data.shape, data.dtype, voxel)
    return MrcVolume(
        data=np.ascontiguousarray(data),
        voxel_size_angstrom=voxel,
        origin_angstrom=(0.0, 0.0, 0.0),
        is_image_stack=False,
        voxel_size_known=known,
    )


def _imagej_compatible(array: np.ndarray) -> np.ndarray:
    """Convert ``array`` to a dtype ImageJ reads (uint8, uint16, int16, float32) exactly."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8)
    if array.dtype in (np.uint8, np.uint16, np.int16, np.float32):
        return array
    if kind in "iu":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for candidate in (np.uint8, np.int16, np.uint16):
            info = np.iinfo(candidate)
            if info.min <= low and high <= info.max:
                return array.astype(candidate)
        if -(2**24) <= low and high <= 2**24:
            return array.astype(np.float32)
        raise ValueError(
            f"data has integer values in [{low}, {high}] ({array.dtype}) that ImageJ TIFF "
            "cannot store exactly; rescale or convert to float32 yourself."
        )
    if kind == "f":
        check_finite(array, "data")
        limit = float(np.finfo(np.float32).max)
        if array.size and float(np.max(np.abs(array))) > limit:
            raise ValueError(
                f"data has values up to {float(np.max(np.abs(array)))!r}, beyond float32; "
                "rescale it first."
            )
        return array.astype(np.float32)
    raise TypeError(f"data has dtype {array.dtype}; ImageJ TIFF stores real numbers only.")


def write_tiff_volume(
    path: str | os.PathLike[str],
    data: ArrayLike,
    *,
    voxel_size_angstrom: float | Sequence[float],
    overwrite: bool = True,
) -> Path:
    """Write a volume or image as an ImageJ-compatible TIFF, atomically.

    The voxel size is stored in nanometres (ImageJ ``unit=nm``: ``XResolution`` /
    ``YResolution`` in pixels per nm and ``spacing`` in nm), which ImageJ/Fiji, napari
    and :func:`read_tiff_volume` understand.

    Parameters
    ----------
    path : str or os.PathLike
        Destination ``.tif``; parent directories are created.
    data : array_like
        ``(z, y, x)`` volume or ``(y, x)`` image, finite. uint8, uint16, int16 and float32
        are written as they are; bool becomes uint8, other integers the smallest of
        uint8/int16/uint16/float32 that holds them exactly, float64/float16 float32.
    voxel_size_angstrom : float or (z, y, x) sequence of float
        Voxel size in Å, > 0.
    overwrite : bool, default True
        If False, refuse to replace an existing file (``FileExistsError``).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        ``data`` is not 2D/3D, is empty or not finite; a voxel size is not > 0.
    """
    array = to_numpy(data)
    check_ndim(array, (2, 3), "data", "(z, y, x) volume or (y, x) image")
    if array.size == 0:
        raise ValueError(f"data is empty (shape {array.shape}); nothing to write to {str(path)!r}.")
    array = _imagej_compatible(array)
    voxel = _as_zyx_triplet(voxel_size_angstrom, "voxel_size_angstrom")
    for axis, size in zip("zyx", voxel, strict=True):
        check_positive(size, f"voxel_size_angstrom ({axis})")
    z_nm, y_nm, x_nm = (size / 10.0 for size in voxel)
    axes = "ZYX" if array.ndim == 3 else "YX"
    metadata: dict[str, Any] = {"axes": axes, "unit": "nm"}
    if array.ndim == 3:
        metadata["spacing"] = z_nm
    final = Path(path)
    with atomic_write(final, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            np.ascontiguousarray(array),
            imagej=True,
            resolution=(1.0 / x_nm, 1.0 / y_nm),
            metadata=metadata,
        )
    logger.debug("wrote %s: shape %s, dtype %s, voxel %s Å", final, array.shape, array.dtype, voxel)
    return final
