"""Solver callbacks: the ``on_end`` hook and a ProgressCallback whose display always stops."""

from __future__ import annotations

import gc

import pytest

from cryowedge.operators.elementary import MatrixOperator
from cryowedge.solvers import SOLVERS, CallbackList, ProgressCallback, cgls, sirt


class _EndSpy:
    """Records every iteration and every ``on_end`` call."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.iterations: list[int] = []
        self.ends: list[int] = []
        self.stop_at = stop_at

    def __call__(self, info) -> bool:
        self.iterations.append(info.iteration)
        return info.iteration == self.stop_at

    def on_end(self, info) -> None:
        self.ends.append(info.iteration)


def _problem(rng):
    return MatrixOperator(rng.random((12, 6))), rng.random(12)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_calls_on_end_once_at_the_last_iteration(name, rng):
    op, b = _problem(rng)
    spy = _EndSpy()
    kwargs = {"lam": 0.01} if name == "tv" else {}
    result = SOLVERS[name](op, b, n_iter=4, callback=spy, **kwargs)
    assert spy.ends == [result.n_iter] == [spy.iterations[-1]]


def test_on_end_follows_a_stop_by_callback_or_tolerance(rng):
    op, b = _problem(rng)
    spy = _EndSpy(stop_at=3)
    sirt(op, b, n_iter=50, callback=spy)
    assert spy.ends == [3]
    by_tol = _EndSpy()
    res = cgls(op, b, n_iter=500, tol=1e-3, callback=by_tol)
    assert res.stopped_early and by_tol.ends == [res.n_iter]


def test_callback_list_forwards_on_end(rng):
    op, b = _problem(rng)
    first, second = _EndSpy(), _EndSpy()
    sirt(op, b, n_iter=3, callback=CallbackList([first, lambda info: None, second]))
    assert first.ends == second.ends == [3]


def test_progress_callback_outside_with_stops_its_display(rng):
    op, b = _problem(rng)
    cb = ProgressCallback("SIRT")
    sirt(op, b, n_iter=5, callback=cb)
    progress = cb.progress
    assert progress is not None and progress.tasks[0].completed == 5
    assert not progress.live.is_started
    # stopped early by the tolerance, inside a CallbackList: stopped too
    cb2 = ProgressCallback("CGLS")
    res = cgls(op, b, n_iter=500, tol=1e-3, callback=CallbackList([cb2]))
    assert res.stopped_early and not cb2.progress.live.is_started
    # a second run with the same callback gets a fresh bar, stopped again
    sirt(op, b, n_iter=2, callback=cb)
    assert cb.progress is not progress and not cb.progress.live.is_started


def test_progress_callback_is_stopped_when_collected_or_closed(rng):
    cb = ProgressCallback("x")
    info_like = type("Info", (), {"iteration": 1, "n_iter": 9, "residual_norm": 1.0,
                                  "objective": float("nan")})()
    cb(info_like)  # started, the run has not ended
    progress = cb.progress
    assert progress.live.is_started
    cb.close()
    assert not progress.live.is_started
    cb.close()  # idempotent
    cb = ProgressCallback("y")
    cb(info_like)
    progress = cb.progress
    del cb
    gc.collect()
    assert not progress.live.is_started


def test_progress_callback_in_with_lives_until_the_block_ends(rng):
    op, b = _problem(rng)
    with ProgressCallback("SIRT") as cb:
        sirt(op, b, n_iter=3, callback=cb)
        assert cb.progress.live.is_started  # a second run could share the display
        sirt(op, b, n_iter=3, callback=cb)
        assert cb.progress.tasks[0].completed == 3
    assert not cb.progress.live.is_started


def test_progress_callback_never_stops_a_shared_display(rng):
    import io

    from rich.console import Console
    from rich.progress import Progress

    op, b = _problem(rng)
    with Progress(console=Console(file=io.StringIO(), force_terminal=False)) as progress:
        sirt(op, b, n_iter=3, callback=ProgressCallback("SIRT", progress=progress))
        assert progress.live.is_started and progress.tasks[0].completed == 3
    assert not progress.live.is_started


def test_cgls_calls_on_end_when_it_reaches_the_exact_solution_early():
    import numpy as np

    op = MatrixOperator(np.eye(3))  # CGLS solves an identity system in one step
    spy = _EndSpy()
    result = cgls(op, np.array([1.0, 2.0, 3.0]), n_iter=10, callback=spy)
    assert result.stopped_early and result.n_iter == 1
    assert spy.ends == [1]
