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

import errno
import logging
import math
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .._arrays import to_numpy
from .._validation import check_finite, check_ndim, check_positive, check_readable_file
from ._atomic import atomic_write

__all__ = [
    "LazyMrcArray",
    "MrcSlabWriter",
    "MrcVolume",
    "open_mrc_lazy",
    "read_fei_tilt_series",
    "read_mrc",
    "write_mrc",
]

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




def _log_caught(caught: list[warnings.WarningMessage], path: Path, quiet: set[str]) -> None:
    """Forward warnings emitted by mrcfile to logging (DEBUG for expected ones)."""
    for item in caught:
        message = str(item.message)
        level = logging.DEBUG if any(q in message for q in quiet) else logging.WARNING
        logger.log(level, "mrcfile warning for %s: %s", path, message)


#: What to do about a file shorter than its header says (CLI and library users alike).
_TRUNCATED_ADVICE = (
    "cut short, e.g. by an interrupted copy or a full disk: copy or write it again, and compare "
    "its size with the original"
)

def _nonstandard_advice(path: Path) -> str:
    """What to do about a file mrcfile's strict reader refuses (a non-standard header)."""
    return (
        f"The header is not standard MRC, or the file is corrupt or not MRC. `mrcfile-validate "
        f"{path}` lists what is wrong. `cryowedge reconstruct` reads old FEI/Tecnai tilt series "
        "(no 'MAP ' id, no machine stamp) by itself; for other files, write a standard copy with "
        "another tool (for example IMOD's `newstack in.mrc out.mrc`) and use that. From Python: "
        "read_mrc(path, permissive=True), or read_fei_tilt_series(path) for an old FEI stack."
    )


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
            if "bytes in data block" in str(err):
                raise ValueError(
                    f"cannot read {str(path)!r} as an MRC file: mrcfile says: {err}. The file "
                    f"is truncated ({_TRUNCATED_ADVICE}; permissive=True does not help: the "
                    "data are missing)."
                ) from err
            raise ValueError(
                f"cannot read {str(path)!r} as an MRC file: mrcfile says: {err}. "
                + _nonstandard_advice(path)
            ) from err
    _log_caught(caught, path, set(quiet))
    messages = [str(w.message) for w in caught]
    if mrc.data is None:
        mrc.close()
        details = "; ".join(messages) or "no data block"
        raise ValueError(
            f"cannot read the data block of {str(path)!r}: mrcfile says: {details}. "
            f"The file is corrupt or truncated ({_TRUNCATED_ADVICE})."
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
    check_readable_file(path, "MRC file")
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


def _label_header(header: Any) -> None:
    """Replace mrcfile's "Created by mrcfile.py <date time>" label by a fixed one.

    The same data written twice must give the same bytes (a resumed batch run is compared
    byte for byte with an uninterrupted one); the file's modification time keeps the date.
    """
    from .._version import __version__

    header.label[0] = f"Created by cryowedge {__version__}".encode("ascii")[:80]
    header.nlabl = max(int(header.nlabl), 1)


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
                _label_header(mrc.header)
        _log_caught(caught, final, set())
    logger.debug("wrote %s: shape %s, dtype %s, voxel %s Å", final, array.shape, array.dtype, voxel)
    return final


# --------------------------------------------------------------------------- lazy / slab I/O


class LazyMrcArray:
    """Read-only view of an MRC data block that reads only what is indexed.

    Indexing (``lazy[t]``, ``lazy[:, y0:y1]``, ``lazy[:, y0:y1, x0:x1]``; integers and slices
    on the three axes) returns a NumPy array in the file's dtype, native byte order. Each
    read is one positioned read per section (``os.pread``), not a memory map: a map of the
    whole file would count against an address-space limit (``ulimit -v``) and its touched
    pages against the resident size, which is what streaming must keep bounded.
    ``numpy.asarray(lazy)`` reads everything.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    shape : tuple of int
        ``(n_sections, ny, nx)``: ``(n_tilts, y, x)`` for a tilt series, ``(z, y, x)`` for a
        volume (a 2D file is ``(1, ny, nx)``).
    dtype : numpy.dtype
        The stored dtype (int8, int16, uint16, float16, float32), native byte order.
    voxel_size_angstrom, origin_angstrom : tuple of float
        ``(z, y, x)`` in Å, as :func:`read_mrc` reports them.
    is_image_stack : bool
        True for an image stack (``ispg = 0``).
    """

    def __init__(self, path: Path, header: Any, shape: tuple[int, int, int],
                 file_dtype: np.dtype, data_offset: int) -> None:
        self.path = path
        self.shape = shape
        self._file_dtype = file_dtype
        self.dtype = file_dtype.newbyteorder("=")
        self._offset = int(data_offset)
        self.voxel_size_angstrom: Triplet = (
            _voxel_size_from_cell(header.cella.z, header.mz),
            _voxel_size_from_cell(header.cella.y, header.my),
            _voxel_size_from_cell(header.cella.x, header.mx),
        )
        self.origin_angstrom: Triplet = (
            _shortest_float32(header.origin.z),
            _shortest_float32(header.origin.y),
            _shortest_float32(header.origin.x),
        )
        self.is_image_stack = int(header.ispg) == 0 and int(header.nz) > 1
        #: 2 for a single image (shown as one section), else 3; mrcfile's ``data.ndim``.
        self.file_ndim = len(mrcfile.utils.data_shape_from_header(header))

    ndim = 3

    @property
    def nbytes(self) -> int:
        """Bytes of the whole data block."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def has_voxel_size(self) -> bool:
        """True if the header gives a usable voxel size (all three components > 0)."""
        return all(v > 0 for v in self.voxel_size_angstrom)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyMrcArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def _key(self, key: Any) -> list[Any]:
        items = list(key) if isinstance(key, tuple) else [key]
        if any(k is Ellipsis for k in items):
            i = next(j for j, k in enumerate(items) if k is Ellipsis)
            items[i : i + 1] = [slice(None)] * (3 - (len(items) - 1))
        items += [slice(None)] * (3 - len(items))
        if len(items) != 3 or not all(isinstance(k, (slice, int, np.integer)) for k in items):
            raise TypeError(
                f"LazyMrcArray supports integers and slices on its 3 axes, got {key!r}; "
                "index the array read with numpy.asarray() for anything else."
            )
        for axis, (k, n) in enumerate(zip(items, self.shape, strict=True)):
            if not isinstance(k, slice) and not -n <= int(k) < n:
                raise IndexError(f"index {int(k)} is out of bounds for axis {axis} with size {n}.")
        return items

    def __getitem__(self, key: Any) -> np.ndarray:
        kt, ky, kx = self._key(key)
        n_sec, ny, nx = self.shape
        sections = range(n_sec)[kt] if isinstance(kt, slice) else [range(n_sec)[int(kt)]]
        rows = range(ny)[ky] if isinstance(ky, slice) else range(ny)[int(ky) : int(ky) + 1 or None]
        y_lo, y_hi = (min(rows), max(rows) + 1) if len(rows) else (0, 0)
        item = self._file_dtype.itemsize
        out = np.empty((len(sections), y_hi - y_lo, nx), dtype=self.dtype)
        if out.size:
            with open(self.path, "rb") as handle:
                fd = handle.fileno()
                for i, t in enumerate(sections):
                    start = self._offset + (t * ny + y_lo) * nx * item
                    _pread_into(fd, out[i], start, self._file_dtype, self.path)
        if len(rows) and rows.step != 1:
            out = out[:, np.asarray(rows) - y_lo]
        out = out[:, :, kx] if isinstance(kx, slice) else out[:, :, int(kx)]
        if not isinstance(ky, slice):
            out = out[:, 0]
        if not isinstance(kt, slice):
            out = out[0]
        return np.ascontiguousarray(out)

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)


def _pread_into(fd: int, target: np.ndarray, offset: int, file_dtype: np.dtype, path: Path) -> None:
    """Fill the C-contiguous ``target`` from ``fd`` at ``offset`` (file dtype → native)."""
    raw = target.view(np.uint8).reshape(-1)
    done = 0
    while done < raw.size:
        n = os.preadv(fd, [memoryview(raw[done:])], offset + done)
        if n == 0:
            raise ValueError(f"{str(path)!r} is truncated: its data block ends early.")
        done += n
    if not file_dtype.isnative and file_dtype.itemsize > 1:
        target.byteswap(inplace=True)


def open_mrc_lazy(path: str | os.PathLike[str], *, permissive: bool = False) -> LazyMrcArray:
    """Open an MRC file for lazy reading: only the header is read now.

    Parameters
    ----------
    path : str or os.PathLike
        An uncompressed MRC/CCP4 file (2D image or 3D volume / image stack).
    permissive : bool, default False
        Passed to :func:`mrcfile.open` (header only).

    Returns
    -------
    LazyMrcArray
        ``(n_sections, ny, nx)`` view; index it to read slabs.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file is compressed, not MRC, holds complex or 4D data, or is shorter than its
        header says.
    """
    path = Path(path)
    check_readable_file(path, "MRC file")
    if path.suffix in (".gz", ".bz2"):
        raise ValueError(
            f"{str(path)!r} is compressed; lazy (slab) reading needs an uncompressed MRC file: "
            "decompress it first (gunzip / bunzip2)."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mrcfile.open(path, mode="r", permissive=permissive, header_only=True) as mrc:
                header = mrc.header.copy()
                file_dtype = mrcfile.utils.data_dtype_from_header(header)
                shape = tuple(int(s) for s in mrcfile.utils.data_shape_from_header(header))
                offset = int(header.nbytes) + int(header.nsymbt)
        except (ValueError, EOFError) as err:
            advice = "" if permissive else " " + _nonstandard_advice(path)
            raise ValueError(
                f"cannot read {str(path)!r} as an MRC file: mrcfile says: {err}.{advice}"
            ) from err
    _log_caught(caught, path, set())
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ValueError(f"{str(path)!r} holds a {len(shape)}D array {shape}; expected 2D or 3D.")
    if np.dtype(file_dtype).kind == "c":
        raise ValueError(f"{str(path)!r} holds complex data; lazy reading supports real data only.")
    needed = offset + math.prod(shape) * np.dtype(file_dtype).itemsize
    if path.stat().st_size < needed:
        raise ValueError(
            f"{str(path)!r} is truncated: its header promises {needed} bytes, the file has "
            f"{path.stat().st_size} ({_TRUNCATED_ADVICE})."
        )
    return LazyMrcArray(path, header, shape, np.dtype(file_dtype), offset)


def check_output_space(final: Path, n_bytes: int) -> None:
    """One-line errors, before any work, for an unwritable directory or too little space."""
    parent = final.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write {str(final)!r}: directory {str(existing)!r} is not writable; "
            "choose another output path."
        )
    free = shutil.disk_usage(existing).free
    if n_bytes > free:
        raise ValueError(
            f"not enough free disk space for {str(final)!r}: it needs {n_bytes / 1e9:.3g} GB "
            f"and {str(existing)!r} has {free / 1e9:.3g} GB free; free space or choose "
            "another output directory."
        )


class MrcSlabWriter:
    """Write a ``(nz, ny, nx)`` float32 MRC volume by slabs of ``y`` rows, atomically.

    Use as a context manager. On entry the output directory is checked (writable, enough
    free space), and a hidden temporary MRC file with the final header is created next to
    ``path`` and its blocks reserved (``posix_fallocate``), so a full disk fails here, before
    any work. :meth:`write_rows` writes slabs with positioned writes (no memory map, so the
    resident size stays that of one slab). On a clean exit with every row written, the
    header statistics (min, max, mean, rms) are filled in and the file is renamed onto
    ``path``; on any exception, or if rows are missing, the temporary file is removed and
    an existing ``path`` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; parent directories are created.
    shape : (int, int, int)
        ``(nz, ny, nx)`` of the volume.
    voxel_size_angstrom : float or (z, y, x) sequence, default 1.0
        Voxel size in Å.
    origin_angstrom : float or (z, y, x) sequence, default (0, 0, 0)
        Header origin in Å.
    overwrite : bool, default True
        If False, refuse an existing ``path`` (``FileExistsError``) before anything is written.

    Examples
    --------
    >>> with MrcSlabWriter(
    ...     "tomo.mrc", (64, 512, 512), voxel_size_angstrom=10.0
    ... ) as out:  # doctest: +SKIP
    ...     for y0 in range(0, 512, 128):
    ...         out.write_rows(y0, reconstruct(y0, y0 + 128))  # (64, 128, 512)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: Sequence[int],
        *,
        voxel_size_angstrom: float | Sequence[float] = 1.0,
        origin_angstrom: float | Sequence[float] = (0.0, 0.0, 0.0),
        overwrite: bool = True,
    ) -> None:
        dims = tuple(int(s) for s in shape)
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(
                f"shape must be (nz, ny, nx) with positive sizes, got {tuple(shape)!r}."
            )
        self.path = Path(path)
        self.shape = dims
        self.voxel_size_angstrom = _as_zyx_triplet(voxel_size_angstrom, "voxel_size_angstrom")
        for axis, size in zip("zyx", self.voxel_size_angstrom, strict=True):
            check_positive(size, f"voxel_size_angstrom ({axis})", allow_zero=True)
        self.origin_angstrom = _as_zyx_triplet(origin_angstrom, "origin_angstrom")
        self.overwrite = overwrite
        self._stack: ExitStack | None = None
        self._fd = -1
        self._offset = 0
        self._written = np.zeros(dims[:2], dtype=bool)  # (z, y) lines done
        self._stats = (0, 0.0, 0.0, np.inf, -np.inf)  # count, mean, M2, min, max (float64)
        self.tmp_path: Path | None = None

    @property
    def nbytes(self) -> int:
        """Size of the file to write (header + float32 data), in bytes."""
        return 1024 + math.prod(self.shape) * 4

    def __enter__(self) -> MrcSlabWriter:
        from ._atomic import _check_can_write

        _check_can_write(self.path, self.overwrite)
        check_output_space(self.path, self.nbytes)
        stack = ExitStack()
        try:
            tmp = stack.enter_context(atomic_write(self.path, overwrite=self.overwrite))
            self.tmp_path = tmp
            header = self._header(tmp)
            self._offset = int(header.nbytes)
            handle = stack.enter_context(open(tmp, "r+b"))
            handle.write(header.tobytes())
            handle.flush()
            self._fd = handle.fileno()
            self._reserve(self.nbytes)
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        self._stack = stack
        return self

    def _header(self, tmp: Path) -> Any:
        """The final header, made by mrcfile for a placeholder and given the real shape."""
        nz, ny, nx = self.shape
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(np.zeros((2, 1, 1), dtype=np.float32))
                mrc.set_volume()
                _label_header(mrc.header)
                header = mrc.header.copy()
        header.nx, header.ny, header.nz = nx, ny, nz
        header.mx, header.my, header.mz = nx, ny, nz
        vz, vy, vx = self.voxel_size_angstrom
        header.cella.x, header.cella.y, header.cella.z = vx * nx, vy * ny, vz * nz
        header.origin.x, header.origin.y, header.origin.z = self.origin_angstrom[::-1]
        return header

    def _reserve(self, n_bytes: int) -> None:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(self._fd, 0, n_bytes)
            else:  # pragma: no cover - non-POSIX: a sparse file, space checked above
                os.ftruncate(self._fd, n_bytes)
        except OSError as err:
            raise _write_error(self.path, err) from None

    def write_rows(self, y0: int, block: ArrayLike) -> None:
        """Write the slab ``volume[:, y0 : y0 + rows, :] = block``.

        Parameters
        ----------
        y0 : int
            First row along ``y``.
        block : array_like
            ``(nz, rows, nx)`` finite values (stored as float32).
        """
        if self._stack is None:
            raise RuntimeError("MrcSlabWriter.write_rows must be called inside its 'with' block.")
        nz, ny, nx = self.shape
        data = np.ascontiguousarray(to_numpy(block), dtype=np.float32)
        rows = data.shape[1] if data.ndim == 3 else -1
        if data.ndim != 3 or data.shape[0] != nz or data.shape[2] != nx or not 0 <= y0 <= ny - rows:
            raise ValueError(
                f"slab of shape {data.shape} at y0={y0} does not fit the volume {self.shape}; "
                f"expected ({nz}, rows, {nx}) with 0 <= y0 and y0 + rows <= {ny}."
            )
        check_finite(data, f"slab at rows {y0}:{y0 + rows}")
        for z in range(nz):
            self._pwrite(data[z], self._offset + (z * ny + y0) * nx * 4)
        self._written[:, y0 : y0 + rows] = True
        self._update_stats(data)

    def write_sections(self, z0: int, block: ArrayLike) -> None:
        """Write whole sections ``volume[z0 : z0 + k] = block`` (``(k, ny, nx)``, one write).

        For a tilt series written image by image (``z`` is then the tilt index).
        """
        if self._stack is None:
            raise RuntimeError(
                "MrcSlabWriter.write_sections must be called inside its 'with' block."
            )
        nz, ny, nx = self.shape
        data = np.ascontiguousarray(to_numpy(block), dtype=np.float32)
        k = data.shape[0] if data.ndim == 3 else -1
        if data.ndim != 3 or data.shape[1:] != (ny, nx) or not 0 <= z0 <= nz - k:
            raise ValueError(
                f"sections of shape {data.shape} at z0={z0} do not fit the volume {self.shape}; "
                f"expected (k, {ny}, {nx}) with 0 <= z0 and z0 + k <= {nz}."
            )
        check_finite(data, f"sections {z0}:{z0 + k}")
        self._pwrite(data, self._offset + z0 * ny * nx * 4)
        self._written[z0 : z0 + k] = True
        self._update_stats(data)

    def _pwrite(self, data: np.ndarray, start: int) -> None:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], start + done)
        except OSError as err:
            raise _write_error(self.path, err) from None

    def _update_stats(self, data: np.ndarray) -> None:
        n_a, mean_a, m2_a, lo, hi = self._stats
        n_b = data.size
        mean_b = float(data.mean(dtype=np.float64))
        m2_b = float(np.square(data - mean_b, dtype=np.float64).sum())
        n = n_a + n_b
        delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n
        m2 = m2_a + m2_b + delta**2 * n_a * n_b / n
        self._stats = (n, mean, m2, min(lo, float(data.min())), max(hi, float(data.max())))

    def _finish(self) -> None:
        missing = np.argwhere(~self._written)
        if missing.size:
            z, y = (int(v) for v in missing[0])
            raise ValueError(
                f"{len(missing)} of {self._written.size} (z, y) lines were never written "
                f"(first: z = {z}, y = {y}); {str(self.path)!r} was not created."
            )
        n, mean, m2, lo, hi = self._stats
        patch = np.zeros((), dtype=mrcfile.dtypes.HEADER_DTYPE)
        fields = {"dmin": lo, "dmax": hi, "dmean": mean, "rms": math.sqrt(m2 / n)}
        try:
            for name, value in fields.items():
                field_dtype, field_offset = mrcfile.dtypes.HEADER_DTYPE.fields[name][:2]
                patch[name] = value
                os.pwrite(self._fd, patch[name].tobytes(), field_offset)
        except OSError as err:
            raise _write_error(self.path, err) from None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        stack, self._stack = self._stack, None
        if stack is None:  # pragma: no cover - __enter__ failed
            return False
        if exc_type is None:
            try:
                self._finish()
            except BaseException:
                stack.__exit__(*sys.exc_info())  # removes the temporary file, re-raises
                raise
        return bool(stack.__exit__(exc_type, exc, tb))  # renames (or removes on error)


def _write_error(path: Path, err: OSError) -> OSError:
    if err.errno == errno.ENOSPC:
        message = f"no space left on the device while writing {str(path)!r}"
    else:
        message = f"writing {str(path)!r} failed: {err.strerror or err}"
    return OSError(err.errno, f"{message}; nothing was written (the temporary file is removed).")


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
    check_readable_file(path, "FEI tilt series")
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
