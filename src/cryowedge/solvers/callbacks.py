"""Ready-made solver callbacks: history, stored iterates, a progress bar, and combinations.

A callback is any callable taking an :class:`~cryowedge.solvers.IterationInfo`; returning
``True`` stops the solver. Solvers never print: pass :class:`ProgressCallback` to see a bar.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from cryowedge.solvers._common import Callback, IterationInfo, append_history

__all__ = ["HistoryCallback", "StoreIterates", "ProgressCallback", "CallbackList"]


class HistoryCallback:
    """Collect the scalar reports: ``self.history["residual_norm"]`` etc., one per iteration."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}

    def __call__(self, info: IterationInfo) -> None:
        append_history(self.history, info)


class StoreIterates:
    """Keep a CPU copy of every ``every``-th iterate (and the last): ``self.iterates``."""

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every!r}.")
        self.every = every
        self.iterates: list[tuple[int, torch.Tensor]] = []

    def __call__(self, info: IterationInfo) -> None:
        if info.iteration % self.every == 0 or info.iteration == info.n_iter:
            self.iterates.append((info.iteration, info.x.detach().to("cpu", copy=True)))


class ProgressCallback:
    """A rich progress bar with ETA and the current residual/objective.

    Three ways to use it:

    * passed straight to a solver (``sirt(..., callback=ProgressCallback("SIRT"))``): the
      bar starts at the first iteration and its display stops when the run ends (last
      iteration, tolerance or a stopping callback: the solver calls :meth:`on_end`), or
      at the latest when the callback is garbage-collected or :meth:`close` is called;
    * as a context manager (``with ProgressCallback("SIRT") as cb: ...``): the display
      lives until the ``with`` block ends, so several runs can share it;
    * with an existing ``rich.progress.Progress`` (``progress=``): one task is added to
      that display, which the caller starts and stops.

    ``progress`` is the ``rich.progress.Progress`` in use (``None`` before the first call).
    """

    def __init__(
        self, description: str = "solving", *, progress: Any = None, total: int | None = None
    ) -> None:
        self.description = description
        self._own = progress is None
        self._progress = progress
        self._task: Any = None
        self._total = total
        self._running = False  # this object started the display and has not stopped it
        self._in_with = False

    @property
    def progress(self) -> Any:
        """The ``rich.progress.Progress`` showing the bar (``None`` before it was needed)."""
        return self._progress

    def _start(self) -> None:
        """Start a fresh display of our own (no-op for a shared ``Progress``)."""
        if not self._own or self._running:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            _eta_column(),
            TextColumn("{task.fields[status]}"),
            transient=False,
        )
        self._task = None
        self._progress.start()
        self._running = True

    def close(self) -> None:
        """Stop the display if this object started it (idempotent; a shared one is left alone)."""
        if self._running and self._progress is not None:
            self._running = False
            self._progress.stop()

    def __enter__(self) -> ProgressCallback:
        self._start()
        self._in_with = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._in_with = False
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser (interpreter shutdown)
            pass

    def __call__(self, info: IterationInfo) -> None:
        if self._own and not self._running:
            self._start()
        if self._task is None:
            self._task = self._progress.add_task(
                self.description, total=self._total or info.n_iter, status=""
            )
        status = []
        if info.residual_norm == info.residual_norm:  # not NaN
            status.append(f"residual {info.residual_norm:.4g}")
        if info.objective == info.objective:
            status.append(f"objective {info.objective:.4g}")
        self._progress.update(self._task, completed=info.iteration, status=", ".join(status))

    def on_end(self, info: IterationInfo) -> None:
        """The solver's run ended at ``info.iteration``: stop a display started outside ``with``.

        The next run (if any) gets a fresh bar; inside ``with`` the display stays until the
        block ends, and a shared ``Progress`` is never stopped here.
        """
        if not self._in_with:
            self.close()


def _eta_column() -> Any:
    """A rich column ``ETA m:ss`` from the mean time per iteration so far (elapsed / completed).

    rich's ``TimeRemainingColumn`` needs several updates for its speed estimate and shows
    ``-:--:--`` until then; this one has an ETA from the first iteration on.
    """
    from rich.progress import ProgressColumn
    from rich.text import Text

    class EtaColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            elapsed, done, total = task.elapsed, task.completed, task.total
            if not elapsed or not done or total is None:
                return Text("ETA …", style="progress.remaining")
            left = max(0, round(elapsed / done * max(total - done, 0)))
            hours, rest = divmod(left, 3600)
            minutes, secs = divmod(rest, 60)
            text = f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
            return Text(f"ETA {text}", style="progress.remaining")

    return EtaColumn()


class CallbackList:
    """Call several callbacks in order; stop if any of them asks to."""

    def __init__(self, callbacks: Iterable[Callback | None]) -> None:
        self.callbacks = [cb for cb in callbacks if cb is not None]

    def __call__(self, info: IterationInfo) -> bool:
        stop = False
        for cb in self.callbacks:
            stop = (cb(info) is True) or stop
        return stop

    def on_end(self, info: IterationInfo) -> None:
        """Pass the end of the run on to every callback that has an ``on_end`` hook."""
        for cb in self.callbacks:
            end = getattr(cb, "on_end", None)
            if callable(end):
                end(info)
