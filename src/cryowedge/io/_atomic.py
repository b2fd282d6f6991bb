"""Atomic file writes: write to a hidden temporary file, then rename it into place.

A reader never sees a half-written file, and a failed write (an exception, a full disk,
Ctrl-C) leaves any existing file at the destination untouched. The temporary file lives in
the destination directory so that the final :func:`os.replace` is a same-filesystem rename,
which is atomic on POSIX and on Windows.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "write_text_atomic"]

logger = logging.getLogger(__name__)


def _temporary_sibling(path: Path) -> Path:
    """Return an unused hidden path next to ``path`` that keeps its suffix.

    ``/d/vol.mrc`` becomes e.g. ``/d/.vol.3f9a1c2e.tmp.mrc``: hidden, clearly temporary,
    and still ending in ``.mrc`` for libraries that choose a format from the extension.
    """
    suffix = path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    for _ in range(100):
        candidate = path.with_name(f".{stem}.{secrets.token_hex(4)}.tmp{suffix}")
        if not os.path.lexists(candidate):
            return candidate
    raise FileExistsError(  # pragma: no cover - 100 collisions of 32 random bits
        f"could not find an unused temporary file name next to {str(path)!r}; "
        "remove stale '.*.tmp*' files from that directory."
    )


def _check_can_write(path: Path, overwrite: bool) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"cannot write {str(path)!r}: it is an existing directory. Choose a file name."
        )
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(
            f"{str(path)!r} already exists and overwrite=False. "
            "Pass overwrite=True to replace it, or choose another output path."
        )


@contextmanager
def atomic_write(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Context manager that yields a temporary path and moves it onto ``path`` on success.

    Write the complete file to the yielded path inside the ``with`` block. On normal exit
    the temporary file is flushed to disk and renamed onto ``path`` with :func:`os.replace`
    (atomic). If the block raises (any exception, including ``KeyboardInterrupt``), the
    temporary file is deleted, the exception propagates, and a pre-existing ``path`` is left
    exactly as it was.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination. Missing parent directories are created.
    overwrite : bool, default True
        If ``False`` and ``path`` already exists, raise :class:`FileExistsError` before
        anything is written.

    Yields
    ------
    pathlib.Path
        A hidden, not yet existing path in the same directory, e.g. ``.vol.1a2b3c4d.tmp.mrc``
        for ``vol.mrc`` (the real suffix stays last so that extension-sniffing writers work).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite=False``.
    FileNotFoundError
        The block finished without creating the temporary file.

    Examples
    --------
    >>> with atomic_write("out/angles.tlt") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("-60.00\\n0.00\\n60.00\\n")
    """
    final = Path(path)
    _check_can_write(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"the writer for {str(final)!r} did not create its temporary file {str(tmp)!r}; "
                "write to the path yielded by atomic_write()."
            )
        # Make the content durable before the rename publishes it.
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # Re-check: another process may have created the file while we were writing.
        _check_can_write(final, overwrite)
        os.replace(tmp, final)
        logger.debug("wrote %s atomically", final)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError as cleanup_error:  # pragma: no cover - e.g. permissions changed
            logger.warning("could not remove temporary file %s: %s", tmp, cleanup_error)
        raise


def write_text_atomic(
    path: str | os.PathLike[str],
    text: str,
    *,
    overwrite: bool = True,
    encoding: str = "utf-8",
) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; parent directories are created.
    text : str
        Full file content. Newlines are written as ``"\\n"`` on every platform.
    overwrite : bool, default True
        If ``False``, refuse to replace an existing file.
    encoding : str, default "utf-8"
        Text encoding.

    Returns
    -------
    pathlib.Path
        The destination path.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}; decode bytes first.")
    final = Path(path)
    with atomic_write(final, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding=encoding, newline="\n") as handle:
            handle.write(text)
    return final
