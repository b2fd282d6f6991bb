"""Shared CLI plumbing: logging set-up, rich progress bars, error reporting."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def setup_logging(verbosity: int) -> None:
    """Only the CLI configures logging (the library just uses ``getLogger(__name__)``)."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    root = logging.getLogger("cryowedge")
    root.handlers[:] = [RichHandler(console=console, show_path=False, rich_tracebacks=False)]
    root.setLevel(level)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar with ETA, exposed as a ``progress(step, fraction)`` callback."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=1.0)

        def update(step: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"{description}: {step}")

        yield update


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
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
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
