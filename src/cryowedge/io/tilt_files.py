"""Tilt-angle files: IMOD ``.tlt`` / ``.rawtlt`` and SerialEM ``.mdoc`` metadata.

All angles are in degrees (``docs/conventions.md``). Arrays are in stack order: element
``i`` belongs to image ``i`` of the tilt series ``(n_tilts, y, x)``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .._validation import check_finite, check_ndim, check_readable_file
from ._atomic import write_text_atomic

__all__ = ["read_tilt_angles", "write_tilt_angles", "MdocInfo", "read_mdoc"]

logger = logging.getLogger(__name__)




# --------------------------------------------------------------------------- .tlt / .rawtlt


def read_tilt_angles(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IMOD tilt-angle file (``.tlt``, ``.rawtlt``): one angle per line.

    Parameters
    ----------
    path : str or os.PathLike
        Text file with one angle in degrees per line. Blank lines and surrounding
        whitespace are ignored.

    Returns
    -------
    numpy.ndarray
        ``(n_tilts,)`` float64 tilt angles in degrees, in file (= stack) order.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A line is not a single finite number (the message names the file, the 1-based line
        number and the text), or the file holds no angles.
    """
    path = Path(path)
    check_readable_file(path, "tilt-angle file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{str(path)!r} is not a text file ({err}); a .tlt/.rawtlt file holds one angle "
            "in degrees per line."
        ) from err
    angles: list[float] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            value = float(stripped)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(
                f"{str(path)!r}, line {number}: expected one tilt angle in degrees, got "
                f"{stripped!r}. Fix or delete that line (IMOD .tlt files hold exactly one "
                "number per line)."
            )
        angles.append(value)
    if not angles:
        raise ValueError(
            f"{str(path)!r} contains no tilt angles (empty or blank lines only); expected one "
            "angle in degrees per line."
        )
    return np.asarray(angles, dtype=np.float64)


def _decimals_needed(angles: np.ndarray, low: int = 2, high: int = 6) -> int:
    """Smallest number of decimals in ``[low, high]`` that writes every angle exactly."""
    for decimals in range(low, high + 1):
        if all(float(f"{a:.{decimals}f}") == a for a in angles):
            return decimals
    return high


def write_tilt_angles(
    path: str | os.PathLike[str],
    angles_deg: ArrayLike,
    *,
    overwrite: bool = True,
) -> Path:
    """Write tilt angles as an IMOD ``.tlt`` / ``.rawtlt`` file, atomically.

    Every line holds one right-aligned angle with a common number of decimals: 2 like IMOD
    (``" -60.00"``), or up to 6 if the angles need them to be written exactly.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; parent directories are created.
    angles_deg : array_like
        ``(n_tilts,)`` tilt angles in degrees, in stack order. Must be finite.
    overwrite : bool, default True
        If False, refuse to replace an existing file (``FileExistsError``).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        ``angles_deg`` is not 1D, is empty or holds NaN/Inf.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    check_ndim(angles, 1, "angles_deg", "(n_tilts,) of tilt angles in degrees")
    if angles.size == 0:
        raise ValueError("angles_deg is empty; a tilt-angle file needs at least one angle.")
    check_finite(angles, "angles_deg")
    decimals = _decimals_needed(angles)
    width = decimals + 5  # sign, up to 3 integer digits, point: " -60.00" for 2 decimals
    text = "".join(f"{a:{width}.{decimals}f}\n" for a in angles)
    return write_text_atomic(path, text, overwrite=overwrite)


# --------------------------------------------------------------------------- .mdoc


@dataclass(frozen=True, eq=False)
class MdocInfo:
    """Tilt-series metadata from a SerialEM ``.mdoc`` file, in stack (ZValue) order.

    Attributes
    ----------
    tilt_angles_deg : numpy.ndarray
        ``(n_tilts,)`` float64 tilt angles in degrees; element ``i`` is image ``i`` of the
        stack (``[ZValue = i]``).
    acquisition_order : numpy.ndarray
        ``(n_tilts,)`` int64, 0-based rank in time of each stack image: ``0`` is the first
        image acquired. From the ``DateTime`` fields (ties keep file order), falling back
        to the order of the sections in the file when any ``DateTime`` is missing or
        unparsable. ``numpy.argsort(acquisition_order)`` lists stack indices in time order.
    tilt_axis_angle_deg : float or None
        In-plane tilt-axis angle in degrees from the ``[T = Tilt axis angle = ...]`` title
        line (SerialEM's convention; see ``docs/conventions.md``), or None.
    pixel_size_angstrom : float or None
        ``PixelSpacing`` in Å (global header, else the first section that has it), or None.
    exposure_dose_e_per_angstrom2 : numpy.ndarray or None
        ``(n_tilts,)`` float64 ``ExposureDose`` of each image in e⁻/Å², or None if any
        section lacks it or all are 0 (dose not calibrated in SerialEM).
    image_file : str or None
        ``ImageFile`` named in the global header (the stack file), or None.

    Notes
    -----
    Arrays are read-only. Equality is identity.
    """

    tilt_angles_deg: np.ndarray
    acquisition_order: np.ndarray
    tilt_axis_angle_deg: float | None
    pixel_size_angstrom: float | None
    exposure_dose_e_per_angstrom2: np.ndarray | None
    image_file: str | None

    @property
    def n_tilts(self) -> int:
        """Number of images in the stack."""
        return int(self.tilt_angles_deg.shape[0])


_TILT_AXIS_RE = re.compile(r"tilt\s*axis\s*angle\s*=\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", re.I)
_DATETIME_FORMATS = (
    "%d-%b-%y %H:%M:%S",  # SerialEM: 21-Nov-26  10:00:05
    "%d-%b-%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%d-%b-%y %H:%M",
)


def _parse_datetime(text: str | None) -> datetime | None:
    if text is None:
        return None
    normalised = " ".join(str(text).split())
    for fmt in _DATETIME_FORMATS:
        try:
            return datetime.strptime(normalised, fmt)
        except ValueError:
            continue
    return None


def _tilt_axis_from_titles(titles: Sequence[str], extras: dict[str, Any]) -> float | None:
    for title in titles:
        match = _TILT_AXIS_RE.search(title)
        if match:
            return float(match.group(1))
    for key in ("TiltAxisAngle", "Tilt axis angle"):
        if key in extras:
            try:
                return float(extras[key])
            except (TypeError, ValueError):
                return None
    return None


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_mdoc(path: str | os.PathLike[str]) -> MdocInfo:
    """Read tilt-series metadata from a SerialEM ``.mdoc`` file (via :mod:`mdocfile`).

    Parameters
    ----------
    path : str or os.PathLike
        A tilt-series mdoc (sections ``[ZValue = i]``; montage and frame-set mdocs are
        rejected).

    Returns
    -------
    MdocInfo
        Per-image arrays in ZValue (stack) order, whatever the order of the sections in
        the file; see :class:`MdocInfo`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be parsed, has no ``[ZValue = ...]`` sections, repeats a ZValue, or
        a section lacks ``TiltAngle``.

    Notes
    -----
    Uses :class:`mdocfile.data_models.Mdoc` rather than :func:`mdocfile.read`: the
    DataFrame of ``mdocfile.read`` (0.2.x) overwrites per-section columns that share a
    name with a global one (``PixelSpacing``) and loses them when the global value is
    missing. ``mdocfile`` logs its own warnings (e.g. about unknown fields) to the
    ``mdocfile`` logger.
    """
    path = Path(path)
    check_readable_file(path, "mdoc file")
    from mdocfile.data_models import Mdoc

    try:
        mdoc = Mdoc.from_file(path)
    except Exception as err:  # pydantic ValidationError, ValueError, UnicodeDecodeError...
        raise ValueError(
            f"cannot parse {str(path)!r} as a SerialEM mdoc file: mdocfile says: {err}"
        ) from err
    sections = list(mdoc.section_data)
    if not sections or any(s.ZValue is None for s in sections):
        raise ValueError(
            f"{str(path)!r} has no tilt-series sections ('[ZValue = i]'); montage or "
            "frame-set mdocs are not supported. Use the .mdoc written with the tilt series."
        )
    z_values = np.array([int(s.ZValue) for s in sections])
    if len(np.unique(z_values)) != len(z_values):
        repeated = sorted({int(z) for z in z_values if np.sum(z_values == z) > 1})
        raise ValueError(
            f"{str(path)!r} repeats ZValue(s) {repeated}; each image needs one section."
        )
    missing = [int(s.ZValue) for s in sections if s.TiltAngle is None]
    if missing:
        raise ValueError(f"{str(path)!r}: section(s) ZValue {missing} have no TiltAngle.")

    stack_order = np.argsort(z_values, kind="stable")  # file position of each stack index
    ordered = [sections[i] for i in stack_order]
    tilts = np.array([float(s.TiltAngle) for s in ordered], dtype=np.float64)

    times = [_parse_datetime(s.DateTime) for s in sections]
    if all(t is not None for t in times):
        reference = min(times)  # type: ignore[type-var]
        seconds = np.array([(t - reference).total_seconds() for t in times])  # type: ignore[operator]
        time_rank_of_file = np.empty(len(sections), dtype=np.int64)
        time_rank_of_file[np.argsort(seconds, kind="stable")] = np.arange(len(sections))
    else:
        logger.info(
            "%s: DateTime missing or unparsable in some sections; acquisition order falls "
            "back to the order of sections in the file",
            path,
        )
        time_rank_of_file = np.arange(len(sections), dtype=np.int64)
    acquisition = time_rank_of_file[stack_order]

    doses_raw = [s.ExposureDose for s in ordered]
    doses: np.ndarray | None = None
    if all(d is not None for d in doses_raw):
        doses = np.array([float(d) for d in doses_raw], dtype=np.float64)  # type: ignore[arg-type]
        if not np.any(doses):
            logger.info("%s: ExposureDose is 0 in every section (dose not calibrated)", path)
            doses = None
    elif any(d is not None for d in doses_raw):
        logger.warning("%s: ExposureDose missing in some sections; doses not reported", path)

    global_data = mdoc.global_data
    pixel = _optional_float(global_data.PixelSpacing)
    if pixel is None:
        pixel = next(
            (_optional_float(s.PixelSpacing) for s in ordered if s.PixelSpacing is not None), None
        )
    if pixel is not None and pixel <= 0:
        pixel = None
    image_file = str(global_data.ImageFile) if global_data.ImageFile is not None else None
    tilt_axis = _tilt_axis_from_titles(mdoc.titles, dict(global_data.model_extra or {}))

    for array in (tilts, acquisition, doses):
        if array is not None:
            array.flags.writeable = False
    return MdocInfo(
        tilt_angles_deg=tilts,
        acquisition_order=acquisition,
        tilt_axis_angle_deg=tilt_axis,
        pixel_size_angstrom=pixel,
        exposure_dose_e_per_angstrom2=doses,
        image_file=image_file,
    )
