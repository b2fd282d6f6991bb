"""Load a tilt series and its geometry in one call (MRC stack + IMOD angles or SerialEM mdoc)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryowedge._validation import check_finite, check_ndim
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import LazyMrcArray, open_mrc_lazy, read_fei_tilt_series, read_mrc
from cryowedge.io.tilt_files import read_mdoc, read_tilt_angles

__all__ = ["TiltSeriesData", "load_tilt_series", "find_angle_file"]

logger = logging.getLogger(__name__)

_ANGLE_SUFFIXES = (".tlt", ".rawtlt", ".mrc.mdoc", ".mdoc", ".st.mdoc")


@dataclass(frozen=True)
class TiltSeriesData:
    """A tilt series ``(n_tilts, y, x)`` with its :class:`TiltGeometry`.

    ``data`` is a float32 array, or with ``load_tilt_series(..., lazy=True)`` a
    :class:`~cryowedge.io.mrc.LazyMrcArray` in the file's dtype that reads slabs on indexing.
    ``tilt_axis_source`` says where the geometry's tilt-axis angle came from: ``"argument"``
    (given by the caller), ``"mdoc"`` or ``"default"`` (0°, nothing said otherwise).
    """

    data: np.ndarray | LazyMrcArray
    geometry: TiltGeometry
    source: Path
    tilt_axis_source: str = "argument"


def find_angle_file(stack_path: str | Path) -> Path | None:
    """The ``.tlt``/``.rawtlt``/``.mdoc`` next to a stack with the same stem, if any."""
    stack = Path(stack_path)
    for suffix in _ANGLE_SUFFIXES:
        for candidate in (stack.with_suffix(suffix), Path(str(stack) + ".mdoc")):
            if candidate.exists() and candidate != stack:
                return candidate
    return None


#: Messages of mrcfile's strict reader that mark an old FEI/Tecnai stack (no 'MAP ' id).
_OLD_FEI_SIGNS = ("Map ID string not found", "Unrecognised machine stamp")


def _read_stack(
    stack_path: Path, permissive: bool, lazy: bool = False
) -> tuple[np.ndarray | LazyMrcArray, float | None, np.ndarray | None]:
    """``(data, header pixel size in Å or None, FEI tilt angles or None)`` of a stack.

    With ``lazy`` the data are a :class:`LazyMrcArray` (nothing read yet), except for old
    FEI stacks, which are small and read whole.

    A file the strict reader refuses for lacking the ``MAP`` id or machine stamp is retried
    as an old FEI/Tecnai stack (:func:`~cryowedge.io.mrc.read_fei_tilt_series`: int16 counts
    offset, angles from the extended header); its header pixel size is not trusted.
    """
    try:
        mrc = open_mrc_lazy(stack_path, permissive=permissive) if lazy else read_mrc(
            stack_path, permissive=permissive)
    except ValueError as exc:
        if not any(sign in str(exc) for sign in _OLD_FEI_SIGNS):
            raise
        data, fei_angles = read_fei_tilt_series(stack_path)
        if fei_angles is None:
            raise  # no FEI extended header either: a corrupt file, not an old FEI stack
        logger.warning("%s is an old FEI/Tecnai stack (no 'MAP ' id): read with the FEI reader "
                       "(int16 counts offset, tilt angles from its extended header)",
                       stack_path.name)
        return data, None, fei_angles
    if lazy and mrc.file_ndim != 3:  # a single image, which the lazy view shows as one section
        raise ValueError(f"tilt series {stack_path.name} must be a 3D array (n_tilts, y, x), got "
                         f"{mrc.file_ndim}D (one image of {mrc.shape[1:]}).")
    pixel = float(mrc.voxel_size_angstrom[-1]) if mrc.has_voxel_size else None
    return (mrc if lazy else mrc.data), pixel, None


def load_tilt_series(
    stack_path: str | Path,
    angles_path: str | Path | None = None,
    *,
    tilt_axis_angle_deg: float | None = None,
    pixel_size_angstrom: float | None = None,
    permissive: bool = False,
    lazy: bool = False,
) -> TiltSeriesData:
    """Read an MRC tilt series and its angles, and check they belong together.

    Parameters
    ----------
    stack_path
        MRC stack ``(n_tilts, y, x)``.
    angles_path
        IMOD ``.tlt``/``.rawtlt`` or SerialEM ``.mdoc``; default: a sibling file with the
        same stem.
    tilt_axis_angle_deg
        In-plane tilt-axis angle (degrees); default: from the mdoc, else 0 (aligned stack).
    pixel_size_angstrom
        Override the header's pixel size (Å); default: the header, else the mdoc, else 1.
    permissive
        Let the MRC reader accept old/non-standard headers (logged as warnings) and return
        the stored values as they are. With the default ``False`` (as the CLI uses), a stack
        the strict reader refuses for lacking the ``MAP`` id is recognised as an old
        FEI/Tecnai stack and read with :func:`~cryowedge.io.mrc.read_fei_tilt_series`
        (int16 counts offset undone); its extended-header angles serve when no angle file is
        found, and its header pixel size is ignored.
    lazy
        Read only the header now and return ``data`` as a
        :class:`~cryowedge.io.mrc.LazyMrcArray` (file dtype; slabs are read when indexed), for
        stacks larger than memory (see :mod:`cryowedge.workflows.streaming`). The finiteness
        check then reads the stack once, one image at a time. Needs an uncompressed file.

    Raises
    ------
    ValueError
        If the stack is not 3D, contains NaN/Inf, or the number of angles differs from the
        number of images, before anything else is done.
    """
    stack_path = Path(stack_path)
    angles_path = find_angle_file(stack_path) if angles_path is None else Path(angles_path)
    data, header_pixel, fei_angles = _read_stack(stack_path, permissive, lazy)
    if angles_path is None and fei_angles is None:
        raise FileNotFoundError(
            f"no tilt-angle file found next to {stack_path} (looked for "
            f"{', '.join(stack_path.stem + s for s in _ANGLE_SUFFIXES)}); pass --angles FILE "
            "(from Python: angles_path=FILE)."
        )
    check_ndim(data, 3, f"tilt series {stack_path.name}", "(n_tilts, y, x)")
    if isinstance(data, LazyMrcArray):
        if data.dtype.kind == "f":  # integer stacks are finite by construction
            for t in range(data.shape[0]):
                check_finite(data[t], f"tilt series {stack_path.name} (image {t})")
    else:
        check_finite(data, f"tilt series {stack_path.name}")
    mdoc_axis = mdoc_pixel = None
    if angles_path is None:
        angles, angles_name = np.asarray(fei_angles, dtype=np.float64), "the FEI extended header"
    elif angles_path.suffix == ".mdoc":
        info = read_mdoc(angles_path)
        angles, angles_name = np.asarray(info.tilt_angles_deg, dtype=np.float64), angles_path.name
        mdoc_axis, mdoc_pixel = info.tilt_axis_angle_deg, info.pixel_size_angstrom
    else:
        angles, angles_name = read_tilt_angles(angles_path), angles_path.name
    if fei_angles is not None and angles_path is not None and angles.size == fei_angles.size:
        worst = float(np.max(np.abs(angles - fei_angles)))
        if worst > 0.05:
            logger.warning("%s and the FEI extended header of %s disagree by up to %.2f°; using %s",
                           angles_name, stack_path.name, worst, angles_name)
    if angles.size != data.shape[0]:
        raise ValueError(
            f"{angles_name} lists {angles.size} tilt angles but {stack_path.name} has "
            f"{data.shape[0]} images; they must match one-to-one (wrong angle file, or "
            "excluded views not removed from both?)."
        )
    if pixel_size_angstrom is None:
        if header_pixel is not None:
            pixel_size_angstrom = header_pixel
        elif mdoc_pixel:
            pixel_size_angstrom = float(mdoc_pixel)
        else:
            logger.warning("%s has no pixel size; assuming 1 Å (pass --pixel-size; from Python: "
                           "pixel_size_angstrom=)", stack_path.name)
            pixel_size_angstrom = 1.0
    axis_source = "argument"
    if tilt_axis_angle_deg is None:
        axis_source = "mdoc" if mdoc_axis is not None else "default"
        tilt_axis_angle_deg = float(mdoc_axis) if mdoc_axis is not None else 0.0
    geometry = TiltGeometry(
        tilt_angles_deg=angles,
        detector_shape=data.shape[1:],
        pixel_size_angstrom=pixel_size_angstrom,
        tilt_axis_angle_deg=tilt_axis_angle_deg,
    )
    if not isinstance(data, LazyMrcArray):
        data = np.asarray(data, dtype=np.float32)
    return TiltSeriesData(data=data, geometry=geometry, source=stack_path,
                          tilt_axis_source=axis_source)
