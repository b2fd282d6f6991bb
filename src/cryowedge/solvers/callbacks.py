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

    Use as a context manager (``with ProgressCallback("SIRT") as cb: sirt(..., callback=cb)``)
    or pass an existing ``rich.progress.Progress`` to share one display.
    """

    def __init__(self, description: str = "solving", *, progress: Any = None, total: int | None = None) -> None:
        self.description = description
        self._own = progress is None
        self._progress = progress
        self._task: Any = None
        self._total = total

    def __enter__(self) -> ProgressCallback:
        if self._own:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._own and self._progress is not None:
            self._progress.stop()

    def __call__(self, info: IterationInfo) -> None:
        if self._progress is None:
            self.__enter__()
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


class CallbackList:
    """Call several callbacks in order; stop if any of them asks to."""

    def __init__(self, callbacks: Iterable[Callback | None]) -> None:
        self.callbacks = [cb for cb in callbacks if cb is not None]

    def __call__(self, info: IterationInfo) -> bool:
        stop = False
        for cb in self.callbacks:
            stop = (cb(info) is True) or stop
        return stop
