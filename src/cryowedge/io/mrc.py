"""Read and write MRC/CCP4 files (volumes, tilt series, images) through :mod:`mrcfile`.

Arrays follow ``docs/conventions.md``: a volume is ``(z, y, x)``, a tilt series is
``(n_tilts, y, x)`` (stored with ``ispg = 0``), an image is ``(y, x)``. Voxel sizes and
origins are ``(z, y, x)`` tuples in ångström (the reverse of ``mrcfile``'s ``(x, y, z)``
records).

Header values are float32. On reading, a voxel size is reported as the shortest decimal
that reproduces the stored header exactly, and an origin as the shortest decimal that
round-trips through float32, so that a value written with up to about seven significant
digits (``10.52``, ``0.8345``) comes back exactly.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .._arrays import to_numpy
from .._validation import check_finite, check_ndim, check_positive
from ._atomic import atomic_write

__all__ = ["MrcVolume", "read_mrc", "write_mrc", "read_fei_tilt_series"]

logger = logging.getLogger(__name__)

Triplet = tuple[float, float, float]

#: Offset added to int16 data of legacy FEI stacks (unsigned counts stored as signed).
FEI_UNSIGNED_OFFSET = 32768
_FEI_RECORD_BYTES = 128  # legacy FEI extended header: 32 float32 per section
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_EXACT_INT = 2**24  # every integer with |n| <= 2**24 is exact in float32


# --------------------------------------------------------------------------- container


@dataclass(frozen=True, eq=False)
class MrcVolume:
    """An array read from (or destined for) an MRC or TIFF file, with its geometry.

    Attributes
    ----------
    data : numpy.ndarray
        ``(z, y, x)`` volume, ``(n_tilts, y, x)`` tilt series or ``(y, x)`` image.
    voxel_size_angstrom : tuple of float
        ``(z, y, x)`` voxel size in Å, as stored in the file. ``0.0`` means the file
        stores no voxel size (see :attr:`has_voxel_size`).
    origin_angstrom : tuple of float
        ``(z, y, x)`` origin in Å (MRC header ``origin`` field; ``nstart`` is ignored).
    is_image_stack : bool
        True for a 3D MRC stack of 2D images (``ispg = 0``), e.g. a tilt series.
    voxel_size_known : bool, default True
        False when the reader had to invent ``voxel_size_angstrom`` (e.g. a TIFF without
        physical resolution, reported as 1.0 Å).

    Notes
    -----
    Equality is identity (arrays make value equality ambiguous). The instance is frozen,
    but ``data`` itself is an ordinary writeable array.
    """

    data: np.ndarray
    voxel_size_angstrom: Triplet
    origin_angstrom: Triplet = (0.0, 0.0, 0.0)
    is_image_stack: bool = False
    voxel_size_known: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.data, np.ndarray):
            raise TypeError(
                f"MrcVolume.data must be a numpy.ndarray, got {type(self.data).__name__}; "
                "wrap it with numpy.asarray()."
            )
        object.__setattr__(
            self,
            "voxel_size_angstrom",
            _as_zyx_triplet(self.voxel_size_angstrom, "voxel_size_angstrom"),
        )
        object.__setattr__(
            self, "origin_angstrom", _as_zyx_triplet(self.origin_angstrom, "origin_angstrom")
        )

    @property
    def has_voxel_size(self) -> bool:
        """True if the file gave a usable voxel size (all three components > 0)."""
        return self.voxel_size_known and all(v > 0 for v in self.voxel_size_angstrom)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(self.data.shape)


# --------------------------------------------------------------------------- helpers


def _as_zyx_triplet(value: float | Sequence[float] | ArrayLike, name: str) -> Triplet:
    """Turn a scalar or a length-3 ``(z, y, x)`` sequence into a tuple of 3 finite floats."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.full(2, np.nan)  # wrong shape: reported below
    if arr.ndim == 0:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,):
        raise ValueError(
            f"{name} must be a number or a (z, y, x) sequence of 3 numbers in Å, got {value!r}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def _shortest_float32(value: Any) -> float:
    """Shortest decimal that round-trips the float32 ``value`` (e.g. 10.52, not 10.5200005)."""
    return float(str(np.float32(value)))


def _voxel_size_from_cell(cell_length: Any, n_samples: Any) -> float:
    """Voxel size in Å from one ``cella`` component and the matching ``mx/my/mz``.

    Returns the shortest decimal ``d`` whose float32 ``d * n`` equals the stored cell length,
    i.e. the value that, written by :func:`write_mrc` (or ``mrcfile``), gives this header.
    """
    cell = np.float32(cell_length)
    n = int(n_samples)
    if n <= 0 or cell == 0:
        return 0.0
    plain = float(cell) / n
    for digits in range(1, 10):
        candidate = float(f"{plain:.{digits}g}")
        if np.float32(candidate * n) == cell:
            return candidate
    return plain  # pragma: no cover - 9 significant digits always suffice


def _check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{what} not found: {str(path)!r}. Check the path (relative paths are resolved "
            f"from the working directory {os.getcwd()!r})."
        )
    if path.is_dir():
        raise IsADirectoryError(f"{what} path {str(path)!r} is a directory, not a file.")


def _log_caught(caught: list[warnings.WarningMessage], path: Path, quiet: set[str]) -> None:
    """Forward warnings emitted by mrcfile to logging (DEBUG for expected ones)."""
    for item in caught:
        message = str(item.message)
        level = logging.DEBUG if any(q in message for q in quiet) else logging.WARNING
        logger.log(level, "mrcfile warning for %s: %s", path, message)


def _open_mrc(path: Path, permissive: bool, quiet: frozenset[str] = frozenset()):
    """Open ``path`` with mrcfile, turning its failures into ValueErrors that name the file.

    Returns the open ``MrcFile`` (caller closes it). A file that opens but has no readable
    data block is closed and refused here, quoting mrcfile's warnings.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.open(path, mode="r", permissive=permissive)
        except (ValueError, EOFError) as err:
            if permissive:
                raise ValueError(
                    f"cannot read {str(path)!r} as an MRC file even with permissive=True: "
                    f"mrcfile says: {err}. The file is corrupt, truncated or not MRC."
                ) from err
            raise ValueError(
                f"cannot read {str(path)!r} as an MRC file: mrcfile says: {err}. "
                "If it is an old FEI/Tecnai file (no 'MAP ' id, no machine stamp), read it "
                "with read_mrc(path, permissive=True) or read_fei_tilt_series(path); "
                "otherwise the file is corrupt, truncated or not MRC."
            ) from err
    _log_caught(caught, path, set(quiet))
    messages = [str(w.message) for w in caught]
    if mrc.data is None:
        mrc.close()
        details = "; ".join(messages) or "no data block"
        raise ValueError(
            f"cannot read the data block of {str(path)!r}: mrcfile says: {details}. "
            "The file is corrupt or truncated."
        )
    return mrc


def _native(array: np.ndarray) -> np.ndarray:
    """Copy of ``array`` in native byte order (writeable, C-contiguous)."""
    return np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True)


def _byte_order(mrc: Any) -> str:
    order = mrc.header.mode.dtype.byteorder
    if order in ("=", "|"):
        order = "<" if sys.byteorder == "little" else ">"
    return order


# --------------------------------------------------------------------------- read


def read_mrc(
    path: str | os.PathLike[str],
    *,
    permissive: bool = False,
    dtype: DTypeLike | None = np.float32,
) -> MrcVolume:
    """Read an MRC/CCP4 file (also ``.mrc.gz`` / ``.mrc.bz2``) into memory.

    Parameters
    ----------
    path : str or os.PathLike
        File to read.
    permissive : bool, default False
        Passed to :func:`mrcfile.open`. Use ``True`` for slightly non-standard files (e.g.
        old FEI stacks without ``MAP`` id or machine stamp). mrcfile's complaints are then
        sent to this module's logger as warnings instead of raising.
    dtype : numpy dtype or None, default numpy.float32
        dtype of the returned data; ``None`` keeps the file's dtype (int8, int16, uint16,
        float16, float32, complex64).

    Returns
    -------
    MrcVolume
        ``data`` is ``(z, y, x)`` for a volume, ``(n_tilts, y, x)`` for an image stack
        (``is_image_stack=True``) and ``(y, x)`` for a single image (also for a stack of
        one image: MRC cannot tell them apart). ``voxel_size_angstrom`` and
        ``origin_angstrom`` are ``(z, y, x)`` in Å, exactly as in the header: a voxel size
        of 0 means "not set" and gives ``has_voxel_size == False``; callers decide on a
        fallback.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is corrupt, truncated or not MRC (the message quotes mrcfile and, in
        strict mode, suggests ``permissive=True`` for old FEI files), or a complex file is
        read with a real ``dtype``.

    Notes
    -----
    Legacy FEI stacks keep unsigned counts in int16 with an offset; use
    :func:`read_fei_tilt_series` to undo it and to get the tilt angles.
    """
    path = Path(path)
    _check_readable(path, "MRC file")
    mrc = _open_mrc(path, permissive)
    with mrc:
        raw = mrc.data
        header = mrc.header
        voxel = (
            _voxel_size_from_cell(header.cella.z, header.mz),
            _voxel_size_from_cell(header.cella.y, header.my),
            _voxel_size_from_cell(header.cella.x, header.mx),
        )
        origin = (
            _shortest_float32(header.origin.z),
            _shortest_float32(header.origin.y),
            _shortest_float32(header.origin.x),
        )
        is_stack = bool(raw.ndim == 3 and mrc.is_image_stack())
        if raw.ndim not in (2, 3):
            raise ValueError(
                f"{str(path)!r} holds a {raw.ndim}D array (shape {raw.shape}, a volume "
                "stack); cryowedge reads 2D images and 3D volumes or image stacks only."
            )
        if dtype is None:
            data = _native(raw)
        else:
            target = np.dtype(dtype)
            if np.iscomplexobj(raw) and not np.issubdtype(target, np.complexfloating):
                raise ValueError(
                    f"{str(path)!r} holds complex data ({raw.dtype}) but dtype={target} is "
                    "real; pass dtype=None (or a complex dtype) to keep the imaginary part."
                )
            data = np.array(raw, dtype=target, order="C", copy=True)
    volume = MrcVolume(
        data=data,
        voxel_size_angstrom=voxel,
        origin_angstrom=origin,
        is_image_stack=is_stack,
    )
    logger.debug("read %s: shape %s, dtype %s, voxel %s Å", path, data.shape, data.dtype, voxel)
    return volume


# --------------------------------------------------------------------------- write


def _mrc_compatible(array: np.ndarray, name: str = "data") -> np.ndarray:
    """Convert ``array`` to a dtype that MRC stores exactly (see :func:`write_mrc`)."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.int8)
    if kind in "iu":
        if array.dtype in (np.int8, np.int16, np.uint16):
            return array
        if array.dtype == np.uint8:
            return array.astype(np.uint16)
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if -(2**15) <= low and high < 2**15:
            return array.astype(np.int16)
        if 0 <= low and high < 2**16:
            return array.astype(np.uint16)
        if -_FLOAT32_EXACT_INT <= low and high <= _FLOAT32_EXACT_INT:
            return array.astype(np.float32)
        raise ValueError(
            f"{name} has integer values in [{low}, {high}] ({array.dtype}); MRC cannot store "
            f"them exactly (float32 holds integers up to ±{_FLOAT32_EXACT_INT}). Rescale or "
            "convert to float32 yourself if the precision loss is acceptable."
        )
    if kind == "f":
        check_finite(array, name)
        if array.dtype == np.float32:
            return array
        if array.size and float(np.max(np.abs(array))) > _FLOAT32_MAX:
            raise ValueError(
                f"{name} has values up to {float(np.max(np.abs(array)))!r}, beyond the float32 "
                f"range (±{_FLOAT32_MAX:.4g}) that MRC stores. Rescale the data first."
            )
        return array.astype(np.float32)
    if kind == "c":
        raise ValueError(
            f"{name} is complex ({array.dtype}); write the real and imaginary parts (or "
            "numpy.abs) as separate real MRC files."
        )
    raise TypeError(f"{name} has dtype {array.dtype}, which is not numeric; MRC stores numbers.")


def write_mrc(
    path: str | os.PathLike[str],
    data: ArrayLike,
    *,
    voxel_size_angstrom: float | Sequence[float] = 1.0,
    origin_angstrom: float | Sequence[float] = (0.0, 0.0, 0.0),
    image_stack: bool = False,
    overwrite: bool = True,
) -> Path:
    """Write a volume, tilt series or image to an MRC file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (``.mrc``, ``.map``, ``.st``, ``.ali``, ``.rec``…). Parent directories
        are created; a failed write leaves an existing file untouched.
    data : array_like
        ``(z, y, x)`` volume, ``(n_tilts, y, x)`` tilt series (with ``image_stack=True``) or
        ``(y, x)`` image. Must be finite. dtypes: float32, int8, int16 and uint16 are stored
        as they are; float64/float16 become float32; bool becomes int8; uint8 becomes
        uint16; wider integers become the smallest of int16, uint16 or float32 that holds
        their values exactly (else ``ValueError``). NumPy arrays and CPU/GPU torch tensors
        are accepted.
    voxel_size_angstrom : float or (z, y, x) sequence of float, default 1.0
        Voxel size in Å; ``0`` means "unknown" (MRC convention).
    origin_angstrom : float or (z, y, x) sequence of float, default (0, 0, 0)
        Header ``origin`` in Å.
    image_stack : bool, default False
        True marks a 3D array as a stack of 2D images (``ispg = 0``, e.g. a tilt series);
        False marks it as a volume (``ispg = 1``). Requires 3D data when True.
    overwrite : bool, default True
        If False, refuse to replace an existing file (``FileExistsError``).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        ``data`` is not 2D/3D, is empty, has NaN/Inf or values that MRC cannot store; a
        voxel size is negative or not finite; ``image_stack=True`` with 2D data.
    FileExistsError
        ``path`` exists and ``overwrite=False``.

    Notes
    -----
    Header values are float32; see the module docstring for how they read back exactly.
    An image stack with a single image reads back as a 2D ``(y, x)`` image.
    """
    array = to_numpy(data)
    check_ndim(
        array, (2, 3), "data", "(z, y, x) volume, (n_tilts, y, x) tilt series or (y, x) image"
    )
    if array.size == 0:
        raise ValueError(f"data is empty (shape {array.shape}); nothing to write to {str(path)!r}.")
    if image_stack and array.ndim != 3:
        raise ValueError(
            f"image_stack=True needs a 3D (n_tilts, y, x) array, got shape {array.shape}; "
            "use data[None] for a single image or image_stack=False."
        )
    array = _mrc_compatible(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    voxel = _as_zyx_triplet(voxel_size_angstrom, "voxel_size_angstrom")
    for axis, size in zip("zyx", voxel, strict=True):
        check_positive(size, f"voxel_size_angstrom ({axis})", allow_zero=True)
    origin = _as_zyx_triplet(origin_angstrom, "origin_angstrom")
    final = Path(path)
    with atomic_write(final, overwrite=overwrite) as tmp:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(np.ascontiguousarray(array))
                if array.ndim == 3:
                    if image_stack:
                        mrc.set_image_stack()
                    else:
                        mrc.set_volume()
                mrc.voxel_size = (voxel[2], voxel[1], voxel[0])  # mrcfile wants (x, y, z)
                mrc.header.origin.x = origin[2]
                mrc.header.origin.y = origin[1]
                mrc.header.origin.z = origin[0]
        _log_caught(caught, final, set())
    logger.debug("wrote %s: shape %s, dtype %s, voxel %s Å", final, array.shape, array.dtype, voxel)
    return final


# --------------------------------------------------------------------------- legacy FEI


def _legacy_fei_angles(mrc: Any, n_sections: int) -> np.ndarray | None:
    """Tilt angles from a legacy (pre-2014) FEI extended header, or None if there is none.

    Legacy FEI/Tecnai files have a blank ``exttyp``, ``nint = 0`` and ``nreal = 32`` (32
    float32 values per section, 128-byte records, usually 1024 records = 131072 bytes),
    with the alpha tilt in degrees as value #0 of each record. We accept the header if its
    size fits ``n_sections`` records, ``(nint, nreal) == (0, 32)`` or a label names FEI,
    and the angles are finite, within ±90° and not all identical (for > 1 section).
    """
    header = mrc.header
    nsymbt = int(header.nsymbt)
    if nsymbt <= 0 or nsymbt % _FEI_RECORD_BYTES or nsymbt < n_sections * _FEI_RECORD_BYTES:
        return None
    if bytes(header.exttyp).strip(b"\x00 "):
        return None  # typed extended header (FEI1, FEI2, SERI, AGAR, CCP4, MRCO)
    order = _byte_order(mrc)
    raw_header = header.tobytes()
    nint, nreal = (int(v) for v in np.frombuffer(raw_header[128:132], dtype=f"{order}i2"))
    labels = b" ".join(bytes(lab) for lab in header.label[: max(0, int(header.nlabl))])
    if not ((nint, nreal) == (0, 32) or (nint == 0 and b"fei" in labels.lower())):
        return None
    ext = np.frombuffer(
        mrc.extended_header.tobytes()[: n_sections * _FEI_RECORD_BYTES], dtype=f"{order}f4"
    ).reshape(n_sections, _FEI_RECORD_BYTES // 4)
    angles = ext[:, 0]
    if not np.all(np.isfinite(angles)) or np.any(np.abs(angles) > 90.0):
        return None
    if n_sections > 1 and np.all(angles == angles[0]):
        return None
    return np.array([_shortest_float32(a) for a in angles], dtype=np.float64)


def _typed_fei_angles(mrc: Any, n_sections: int) -> np.ndarray | None:
    """Alpha tilts (degrees) from an ``FEI1``/``FEI2`` extended header, if present."""
    if bytes(mrc.header.exttyp) not in (b"FEI1", b"FEI2"):
        return None
    try:
        indexed = mrc.indexed_extended_header
    except (ValueError, TypeError):  # pragma: no cover - malformed FEI1 header
        return None
    if indexed is None or len(indexed) < n_sections or "Alpha tilt" not in indexed.dtype.names:
        return None
    angles = np.asarray(indexed["Alpha tilt"][:n_sections], dtype=np.float64)
    return angles if np.all(np.isfinite(angles)) else None


def read_fei_tilt_series(
    path: str | os.PathLike[str],
    *,
    unsigned_offset: bool | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a tilt series written by FEI/Thermo microscope software, with its tilt angles.

    Old FEI/Tecnai stacks (such as ``etspy_HAADF_needle_tiltseries.mrc`` in the shared
    data) lack the ``MAP`` id and machine stamp, so they are opened permissively, and they
    store unsigned detector counts in int16 (mode 1) with an offset: ``counts = data +
    32768``. The tilt angles are in the extended header.

    Parameters
    ----------
    path : str or os.PathLike
        MRC stack ``(n_tilts, y, x)`` (a single 2D image is returned as ``(1, y, x)``).
    unsigned_offset : bool or None, default None
        Whether to add 32768 to int16 data. ``None`` decides automatically (heuristic):
        add it when the file is int16 **and** has a legacy FEI extended header (blank
        ``exttyp``, ``nint = 0``, ``nreal = 32`` or an FEI label, 128-byte records whose
        first float is a plausible angle). Files with a typed ``FEI1``/``FEI2`` header or
        no FEI header are left as they are. Pass True/False to override.

    Returns
    -------
    counts : numpy.ndarray
        ``(n_tilts, y, x)`` float32 (offset-corrected counts for legacy FEI int16 files).
    tilt_angles_deg : numpy.ndarray or None
        ``(n_tilts,)`` float64 alpha tilt in degrees, in stack order, from a legacy FEI
        (float32 #0 of each 128-byte record) or ``FEI1``/``FEI2`` extended header; None if
        the file has no FEI extended header.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be read even permissively, or does not hold 2D/3D data.

    Notes
    -----
    The header voxel size of legacy FEI files is usually meaningless (1.0); legacy records
    keep the true pixel size in metres as float32 #11, which this function does not use.
    """
    path = Path(path)
    _check_readable(path, "FEI tilt series")
    expected = frozenset({"Map ID string not found", "Unrecognised machine stamp"})
    mrc = _open_mrc(path, permissive=True, quiet=expected)
    with mrc:
        raw = mrc.data
        if raw.ndim == 2:
            raw = raw[np.newaxis]
        if raw.ndim != 3:
            raise ValueError(
                f"{str(path)!r} holds a {raw.ndim}D array (shape {raw.shape}); expected a "
                "(n_tilts, y, x) stack."
            )
        n_sections = raw.shape[0]
        legacy = _legacy_fei_angles(mrc, n_sections)
        angles = legacy if legacy is not None else _typed_fei_angles(mrc, n_sections)
        is_int16 = int(mrc.header.mode) == 1
        if unsigned_offset is None:
            unsigned_offset = is_int16 and legacy is not None
        elif unsigned_offset and not is_int16:
            raise ValueError(
                f"unsigned_offset=True applies to int16 (mode 1) files, but {str(path)!r} "
                f"is {raw.dtype}; pass unsigned_offset=None or False."
            )
        counts = np.array(raw, dtype=np.float32, order="C", copy=True)
    if unsigned_offset:
        counts += np.float32(FEI_UNSIGNED_OFFSET)
        logger.info(
            "%s: int16 FEI stack, added %d to recover unsigned counts", path, FEI_UNSIGNED_OFFSET
        )
    if angles is None:
        logger.info("%s: no FEI extended header, tilt angles unknown", path)
    return counts, angles
