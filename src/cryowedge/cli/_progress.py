"""Progress of a CLI command: a live bar on a terminal, log lines elsewhere, with a useful ETA.

A workflow reports ``progress(step, fraction)`` (see
:data:`cryowedge.workflows._record.ProgressFn`). :class:`ProgressReporter` turns those calls
into

* an ETA from the first update on, computed from elapsed time, not from rich's speed
  estimate (which needs many updates and jumps to absurd values when the fraction jumps):

  - counted steps ``"<name> k/n"`` (solver iterations, slabs): the mean time per step since
    the phase began times the steps left, so the first iteration already gives one;
  - input/output steps (``reading``, ``writing``, ``saving``, ``done``): no ETA (their
    length is unrelated to the computing before them);
  - other steps: elapsed time since the first computing step, scaled by the fraction done
    since then.

  Between updates the ETA counts down;
* a live bar when the console is a terminal, else (CI, ``nohup``, a batch queue) one plain
  log line per phase change and at most every ``log_every`` seconds, such as
  ``reconstruct (tv): tv 12/30, 40 %, elapsed 1:02, ETA 1:33``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.text import Text

__all__ = ["ProgressReporter", "format_duration", "IO_STEPS", "DEFAULT_LOG_EVERY_S"]

#: First words of steps that read or write files: shown without an ETA.
IO_STEPS = frozenset({"reading", "writing", "saving", "done"})

#: Seconds between two log lines when the output is not a terminal.
DEFAULT_LOG_EVERY_S = 5.0

#: ``"<name> k/n"``, optionally followed by ``", <note>"`` (e.g. ``"inr 12/300, loss 0.031"``).
_COUNTED = re.compile(r"^(?P<name>.*?)\s*(?P<k>\d+)\s*/\s*(?P<n>\d+)(?:,\s*(?P<note>.*))?$")


def format_duration(seconds: float) -> str:
    """``m:ss`` below an hour, else ``h:mm:ss`` (seconds rounded; negative counts as 0)."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _is_io(step: str) -> bool:
    words = step.strip().split()
    return bool(words) and words[0].lower() in IO_STEPS


class ProgressReporter:
    """The ``progress(step, fraction)`` callback of one CLI command (see the module docstring).

    Parameters
    ----------
    description
        What runs, e.g. ``"reconstruct (tv)"``; prefixes the bar and every log line.
    console
        Where to draw or log; a live bar only if ``console.is_terminal`` (unless ``live``).
    clock
        Seconds, monotonic (default :func:`time.monotonic`); tests pass a fake clock.
    log_every
        Seconds between two log lines when not live (phase changes are logged at once).
    live
        Force the live bar on or off (default: ``console.is_terminal``).
    """

    def __init__(
        self,
        description: str,
        *,
        console: Console,
        clock: Callable[[], float] | None = None,
        log_every: float = DEFAULT_LOG_EVERY_S,
        live: bool | None = None,
    ) -> None:
        if not log_every >= 0:
            raise ValueError(f"log_every must be >= 0 seconds, got {log_every!r}.")
        self.description = description
        self.console = console
        self.clock = clock or time.monotonic
        self.log_every = float(log_every)
        self.live = console.is_terminal if live is None else bool(live)
        self.step = ""
        self.fraction = 0.0
        self._t0 = self.clock()
        self._last_t = self._t0
        self._counted: tuple[str, float, int, int] | None = None  # name, t anchor, k anchor, last k
        self._compute_anchor: tuple[float, float] | None = None  # first computing update (t, f)
        self._eta: tuple[float, float] | None = None  # (ETA in s, time it was computed)
        self._phase: str | None = None
        self._last_log: float | None = None
        self._bar: Progress | None = None
        self._task: Any = None

    # ------------------------------------------------------------------ display lifetime
    def __enter__(self) -> ProgressReporter:
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                _ElapsedColumn(self),
                _EtaColumn(self),
                console=self.console,
                transient=False,
                get_time=self.clock,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    # ------------------------------------------------------------------ the callback
    def __call__(self, step: str, fraction: float) -> None:
        now = self.clock()
        fraction = min(max(float(fraction), 0.0), 1.0)
        self.step, self.fraction = step, fraction
        self._eta = self._estimate(step, fraction, now)
        self._last_t = now
        if self._bar is not None:
            self._bar.update(
                self._task, completed=fraction, description=f"{self.description}: {step}"
            )
        else:
            self._maybe_log(now)

    def _estimate(self, step: str, fraction: float, now: float) -> tuple[float, float] | None:
        """``(ETA in s, now)`` after this update, or None when there is none."""
        if _is_io(step):
            self._counted = None
            return None
        match = _COUNTED.match(step.strip())
        if match:
            name, k, n = match["name"], int(match["k"]), int(match["n"])
            if self._counted is None or self._counted[0] != name or k <= self._counted[3]:
                # a new counted phase: it began at the previous update, one step ago
                self._counted = (name, self._last_t, k - 1, k)
            _, t_anchor, k_anchor, _ = self._counted
            self._counted = (name, t_anchor, k_anchor, k)
            steps = k - k_anchor
            if steps <= 0 or n < k:
                return None
            return (now - t_anchor) / steps * (n - k), now
        self._counted = None
        if self._compute_anchor is None:
            self._compute_anchor = (now, fraction)
            return None
        t_c, f_c = self._compute_anchor
        if fraction <= f_c:
            return None
        return (now - t_c) * (1.0 - fraction) / (fraction - f_c), now

    # ------------------------------------------------------------------ what is shown
    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the reporter was made."""
        return (self.clock() if now is None else now) - self._t0

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left (counting down since the last update), or None: none during I/O or yet."""
        if self._eta is None:
            return None
        eta, at = self._eta
        now = self.clock() if now is None else now
        return max(0.0, eta - (now - at))

    def eta_text(self, now: float | None = None) -> str:
        """``"1:33"``; ``""`` while reading/writing; ``"…"`` before an estimate exists."""
        if _is_io(self.step):
            return ""
        eta = self.eta_seconds(now)
        return "…" if eta is None else format_duration(eta)

    def status_line(self, now: float | None = None) -> str:
        """``"<description>: <step>, 40 %, elapsed 1:02, ETA 1:33"``.

        No ETA part during input/output or before an estimate exists.
        """
        now = self.clock() if now is None else now
        parts = [
            f"{self.description}: {self.step}",
            f"{100 * self.fraction:.0f} %",
            f"elapsed {format_duration(self.elapsed(now))}",
        ]
        eta = self.eta_text(now)
        if eta and eta != "…":  # a log line leaves out an ETA not known yet
            parts.append(f"ETA {eta}")
        return ", ".join(parts)

    def _maybe_log(self, now: float) -> None:
        match = _COUNTED.match(self.step.strip())
        phase = f"{match['name']} k/n" if match else self.step  # its first count is logged too
        due = self._last_log is None or now - self._last_log >= self.log_every
        if phase != self._phase or due:
            self._phase, self._last_log = phase, now
            self.console.print(self.status_line(now), markup=False, highlight=False, soft_wrap=True)


class _EtaColumn(ProgressColumn):
    """``ETA m:ss`` from :meth:`ProgressReporter.eta_text`; nothing during reading/writing."""

    def __init__(self, reporter: ProgressReporter) -> None:
        super().__init__()
        self.reporter = reporter

    def render(self, task: Any) -> Text:
        eta = self.reporter.eta_text()
        return Text(f"ETA {eta}" if eta else "", style="progress.remaining")


class _ElapsedColumn(ProgressColumn):
    """Elapsed time in the ETA's format (``m:ss``, ``h:mm:ss``)."""

    def __init__(self, reporter: ProgressReporter) -> None:
        super().__init__()
        self.reporter = reporter

    def render(self, task: Any) -> Text:
        return Text(format_duration(self.reporter.elapsed()), style="progress.elapsed")
