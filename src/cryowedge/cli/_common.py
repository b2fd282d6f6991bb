"""Shared CLI plumbing: the console, logging set-up, progress, error reporting."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console, ConsoleDimensions
from rich.logging import RichHandler
from rich.markup import escape

from cryowedge.cli._progress import DEFAULT_LOG_EVERY_S, ProgressReporter

#: Line width used when the console is not a terminal (a file, a pipe, CI, a batch queue)
#: and neither ``COLUMNS`` nor an explicit width says otherwise: tables are not wrapped.
NON_TERMINAL_WIDTH = 1000


class CliConsole(Console):
    """A rich console that does not wrap at 80 columns when it is not a terminal."""

    def _get_size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and "COLUMNS" not in self._environ and not self.is_terminal:
            return ConsoleDimensions(max(size.width, NON_TERMINAL_WIDTH), size.height)
        return size

    size = property(_get_size, Console.size.fset)  # type: ignore[assignment]


console = CliConsole(stderr=True)


class _PlainLogHandler(logging.Handler):
    """Log records as plain, unwrapped lines (``WARNING name: message``) for a non-terminal."""

    def __init__(self, target: Console) -> None:
        super().__init__()
        self.target = target
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            datefmt="%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.target.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _ConsoleLogHandler(logging.Handler):
    """Rich log lines on a terminal, plain unwrapped lines otherwise (decided per record)."""

    def __init__(self, target: Console) -> None:
        super().__init__()
        self.rich = RichHandler(console=target, show_path=False, rich_tracebacks=False)
        self.plain = _PlainLogHandler(target)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        (self.rich if self.target.is_terminal else self.plain).emit(record)


def setup_logging(verbosity: int) -> None:
    """Only the CLI configures logging (the library just uses ``getLogger(__name__)``)."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger("cryowedge")
    root.handlers[:] = [_ConsoleLogHandler(console)]
    root.setLevel(level)


@contextlib.contextmanager
def progress_bar(
    description: str,
    *,
    target: Console | None = None,
    clock: Callable[[], float] | None = None,
    log_every: float = DEFAULT_LOG_EVERY_S,
) -> Iterator[ProgressReporter]:
    """Progress of a command as a ``progress(step, fraction)`` callback.

    A live bar with an ETA from the first update on when ``target`` (default: the CLI
    console, stderr) is a terminal; otherwise a plain log line per phase and at most every
    ``log_every`` seconds. ``clock`` (seconds, monotonic) is for tests. See
    :class:`~cryowedge.cli._progress.ProgressReporter`.
    """
    reporter = ProgressReporter(
        description, console=target or console, clock=clock, log_every=log_every
    )
    with reporter:
        yield reporter


def format_validation_error(exc: ValidationError) -> str:
    """One line per invalid option: ``option: problem (got value)``, without pydantic's links."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "options"
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        got = err.get("input")
        suffix = f" (got {got!r})" if where != "options" and not isinstance(got, dict) else ""
        lines.append(msg if where == "options" else f"{where}: {msg}{suffix}")
    return "invalid options: " + "; ".join(lines)


def fail(message: str) -> typer.Exit:
    """Print a clear error and return the exit to raise (exit code 2)."""
    # escaped: a path or message may hold "[...]", which rich would read as markup
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn bad-input exceptions into a one-line error and exit code 2 (no traceback)."""
    try:
        yield
    except ValidationError as exc:
        raise fail(format_validation_error(exc)) from None
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, TypeError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:  # a full disk, a read-only or vanished directory: one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        raise fail(f"{exc.strerror or exc}{where}") from None


def print_written(result: Any, out: Path) -> None:
    """One line: how many files a workflow wrote to ``out``, in how long, and their names."""
    console.print(f"wrote {len(result.files)} files to {out}/ in {result.seconds:.1f} s "
                  f"({', '.join(sorted(p.name for p in result.files.values()))})",
                  markup=False, soft_wrap=True)


def interrupted_exit(out: Path) -> typer.Exit:
    """Say that ``out`` may hold partial outputs after Ctrl-C; the exit (code 130) to raise."""
    console.print(f"[bold yellow]interrupted; {out} may hold a partial set of outputs.[/]",
                  soft_wrap=True)
    return typer.Exit(code=130)
