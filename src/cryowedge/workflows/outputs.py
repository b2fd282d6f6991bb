"""Output safety shared by every command that writes files.

Every file-writing workflow (``reconstruct``, ``simulate``, ``evaluate``, ``demo``,
``stet simulate``, ``stet reconstruct``) goes through this module:

* :func:`check_outputs`, before any work: no output is the same file as an input (links
  resolved); an existing output is refused unless ``overwrite`` (the CLI's ``--overwrite``);
  every output directory exists or can be created, is writable (a file is really created
  and removed there, which also catches read-only mounts for root) and has free space for
  the estimated size (:func:`cryowedge.io.mrc.check_output_space`).
* :func:`keep_backups`, just before writing: with ``overwrite``, each existing output is kept
  as ``<name>~`` (IMOD's convention) — a hard link where possible, so it costs no space.
* :func:`write_or_keep`, for an expensive result: an ``OSError`` while writing becomes one
  line saying where the result is kept (a checkpoint, or a ``.failed-write.npy`` fallback
  file in the system temporary directory or the working directory).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from cryowedge.io.mrc import check_output_space

__all__ = [
    "BACKUP_SUFFIX",
    "FALLBACK_SUFFIX",
    "backup_path",
    "check_outputs",
    "keep_backups",
    "mrc_nbytes",
    "same_file",
    "save_fallback",
    "write_or_keep",
]

logger = logging.getLogger(__name__)

#: Suffix of the backup of a replaced output (IMOD's ``file~``).
BACKUP_SUFFIX = "~"
#: Suffix of the file that keeps a result whose output could not be written.
FALLBACK_SUFFIX = ".failed-write.npy"

PathLike = str | os.PathLike[str]


def mrc_nbytes(shape: Iterable[int], itemsize: int = 4) -> int:
    """Bytes of an MRC file of ``shape`` (1024-byte header + data of ``itemsize`` bytes)."""
    n = 1
    for s in shape:
        n *= int(s)
    return 1024 + n * int(itemsize)


def backup_path(path: PathLike) -> Path:
    """Where :func:`keep_backups` keeps the old ``path``: ``tomo.mrc`` → ``tomo.mrc~``."""
    path = Path(path)
    return path.with_name(path.name + BACKUP_SUFFIX)


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (symbolic and hard links resolved)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:  # pragma: no cover - a vanished or unreadable file
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _nearest_existing(directory: Path) -> Path:
    existing = directory
    while not os.path.exists(existing) and existing != existing.parent:
        existing = existing.parent
    return existing


def _check_directory(directory: Path, output: Path) -> None:
    """The directory of ``output`` exists or can be created, and a file can be created there."""
    existing = _nearest_existing(directory.absolute())
    if not existing.is_dir():
        raise ValueError(
            f"cannot write {str(output)!r}: {str(existing)!r} is a file, not a directory; "
            "choose another output path."
        )
    try:  # really create a file: os.access does not see read-only mounts for root
        fd, probe = tempfile.mkstemp(prefix=".cryowedge-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(
            f"cannot write {str(output)!r}: directory {str(existing)!r} is not writable "
            f"({err.strerror or err}); choose another output path."
        ) from None


def check_outputs(
    outputs: Iterable[PathLike],
    *,
    inputs: Iterable[PathLike | None] = (),
    overwrite: bool = False,
    n_bytes: int = 0,
) -> None:
    """Check where a command will write, before any work; one-line errors.

    Parameters
    ----------
    outputs
        Every file the command will write.
    inputs
        Every file it reads (``None`` entries are skipped).
    overwrite
        Allow replacing existing outputs (they are kept as ``<name>~``, :func:`keep_backups`).
    n_bytes
        Estimated total size of the outputs, bytes; checked against the free space of each
        output directory.

    Raises
    ------
    ValueError
        An output is an input, or a directory cannot be created, is not writable or lacks
        free space.
    IsADirectoryError
        An output is an existing directory.
    FileExistsError
        An output exists and ``overwrite`` is False.
    """
    outs = [Path(p) for p in outputs]
    ins = [Path(p) for p in inputs if p is not None]
    for out in outs:
        for inp in ins:
            if same_file(out, inp):
                raise ValueError(
                    f"the output {str(out)!r} is the input {str(inp)!r}; writing it would destroy "
                    "the input. Choose another output name."
                )
    for out in outs:
        if out.is_dir():
            raise IsADirectoryError(
                f"cannot write {str(out)!r}: it is an existing directory. Choose a file name."
            )
    existing = [out for out in outs if os.path.lexists(out)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(
            f"{str(existing[0])!r}{more} already exists; pass --overwrite to replace it (the old "
            f"file is kept as {backup_path(existing[0]).name!r}) or choose another output."
        )
    directories: dict[Path, Path] = {}
    for out in outs:
        directories.setdefault(out.parent, out)
    for directory, out in directories.items():
        _check_directory(directory, out)
        check_output_space(out, int(n_bytes))


def keep_backups(paths: Iterable[PathLike]) -> list[Path]:
    """Keep each existing file of ``paths`` as ``<name>~`` (replacing an older backup).

    A hard link where the file system allows it (no space used; the atomic write then
    replaces the name, not the data), else a copy. Returns the backups made.
    """
    made = []
    for path in (Path(p) for p in paths):
        if not path.is_file():
            continue
        backup = backup_path(path)
        if os.path.lexists(backup):
            backup.unlink()
        try:
            os.link(path, backup)
        except OSError:
            shutil.copy2(path, backup)
        logger.info("kept the old %s as %s", path, backup)
        made.append(backup)
    return made


def save_fallback(volume: np.ndarray, output: PathLike) -> Path | None:
    """Save ``volume`` to ``<output name>.<random>.failed-write.npy``; None if nowhere works.

    Tries the system temporary directory, then the working directory. Load it back with
    ``numpy.load``.
    """
    name = Path(output).name
    for directory in (tempfile.gettempdir(), os.getcwd()):
        path = None
        try:
            fd, path = tempfile.mkstemp(prefix=name + ".", suffix=FALLBACK_SUFFIX, dir=directory)
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.asarray(volume))
            return Path(path)
        except OSError as err:
            logger.warning("could not keep the result in %s: %s", directory, err)
            if path is not None and os.path.exists(path):
                os.unlink(path)
    return None


def write_or_keep(
    write: Callable[[], Path],
    volume: np.ndarray,
    output: PathLike,
    *,
    kept_in: str | None = None,
) -> Path:
    """Run ``write()``; on an ``OSError`` keep ``volume`` safe and raise one clear line.

    Parameters
    ----------
    write
        Writes the output and returns its path.
    volume
        The result, e.g. ``(z, y, x)`` float32.
    output
        The output path (for the message and the fallback name).
    kept_in
        Where the result is already kept (e.g. ``"checkpoint tomo.ckpt.pt (iteration 50);
        rerun with --resume to write it"``); None saves a fallback file
        (:func:`save_fallback`).

    Raises
    ------
    OSError
        With the original ``errno`` and a message naming where the result is.
    """
    try:
        return write()
    except OSError as err:
        reason = err.strerror or str(err)
        if kept_in is None:
            fallback = save_fallback(volume, output)
            kept_in = (
                f"the result is kept in {str(fallback)!r} (numpy.load)"
                if fallback is not None
                else "the result could not be kept anywhere"
            )
        message = f"could not write {str(output)!r} ({reason}); {kept_in}."
        raise OSError(err.errno, message) from None
