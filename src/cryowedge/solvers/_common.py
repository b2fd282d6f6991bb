"""What every solver shares: input checks, the per-iteration report and the result."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cryowedge._validation import check_in_range, check_positive, check_positive_int
from cryowedge.operators.base import LinearOperatorLike

__all__ = ["IterationInfo", "SolverResult", "Callback"]

logger = logging.getLogger(__name__)


@dataclass
class IterationInfo:
    """What a solver reports after each iteration (passed to the callback).

    ``iteration`` counts from 1. ``x`` is the current iterate (do not modify it in place;
    clone it to keep it). ``residual_norm`` is ``‖b − A x‖₂`` (for SIRT/SART/ART the
    residual of the iterate that entered the step, which the step computes anyway),
    ``objective`` the solver's objective where it has one (``½‖Ax − b‖²`` plus the
    regulariser), ``relative_change`` is ``‖x_k − x_{k−1}‖ / ‖x_{k−1}‖``.
    """

    iteration: int
    n_iter: int
    x: torch.Tensor
    residual_norm: float = float("nan")
    objective: float = float("nan")
    relative_change: float = float("nan")
    extras: dict[str, float] = field(default_factory=dict)


#: A callback receives an :class:`IterationInfo`; returning ``True`` stops the solver. It may
#: also have an ``on_end(info)`` method, called once when the run ends (see :func:`report`).
Callback = Callable[[IterationInfo], Any]


@dataclass
class SolverResult:
    """A solver's output: the solution ``x`` (domain shape), iterations run, and history.

    ``history`` maps ``"residual_norm"``, ``"objective"``, ``"relative_change"`` (and any
    solver extras) to per-iteration lists. ``stopped_early`` is true when the tolerance or
    a callback ended the run before ``n_iter``.
    """

    x: torch.Tensor
    n_iter: int
    history: dict[str, list[float]]
    stopped_early: bool = False

    def record(self, info: IterationInfo) -> None:
        append_history(self.history, info)


def append_history(history: dict[str, list[float]], info: IterationInfo) -> None:
    """Append ``info``'s scalars (and extras) to ``history``, one list per name."""
    for key in ("residual_norm", "objective", "relative_change"):
        history.setdefault(key, []).append(float(getattr(info, key)))
    for key, value in info.extras.items():
        history.setdefault(key, []).append(float(value))


def check_common(
    operator: LinearOperatorLike,
    n_iter: int,
    relaxation: float,
    tol: float | None,
    *,
    relaxation_name: str = "relaxation",
) -> None:
    """Validate the shared arguments before any work starts."""
    for attr in ("forward", "adjoint", "domain_shape", "range_shape"):
        if not hasattr(operator, attr):
            raise TypeError(
                f"operator must provide forward, adjoint, domain_shape and range_shape; "
                f"{type(operator).__name__} has no {attr!r}."
            )
    check_positive_int(n_iter, "n_iter")
    check_in_range(relaxation, relaxation_name, 0.0, 2.0)
    if tol is not None:
        check_positive(tol, "tol")


def prepare(
    operator: LinearOperatorLike,
    data: Any,
    x0: Any,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move ``data`` and ``x0`` to tensors on one device and check their shapes.

    Returns ``(b, x)``; ``x`` is a fresh tensor (zeros when ``x0`` is None).
    """
    b = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    if dtype is None:
        dtype = b.dtype if b.dtype.is_floating_point else torch.float32
        if dtype == torch.float16:
            dtype = torch.float32
    b = b.to(device=device if device is not None else b.device, dtype=dtype)
    if tuple(b.shape) != tuple(operator.range_shape):
        raise ValueError(
            f"data has shape {tuple(b.shape)} but the operator's range is "
            f"{tuple(operator.range_shape)}; pass data matching the geometry."
        )
    if not bool(torch.isfinite(b).all()):
        raise ValueError("data contains NaN or Inf values; clean or mask them first.")
    if x0 is None:
        x = torch.zeros(tuple(operator.domain_shape), dtype=dtype, device=b.device)
    else:
        x = torch.as_tensor(x0 if isinstance(x0, torch.Tensor) else np.asarray(x0))
        x = x.to(device=b.device, dtype=dtype).clone()
        if tuple(x.shape) != tuple(operator.domain_shape):
            raise ValueError(
                f"x0 has shape {tuple(x.shape)} but the operator's domain is "
                f"{tuple(operator.domain_shape)}."
            )
    return b, x


def norm(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x))


def relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    denom = norm(old)
    diff = norm(new - old)
    return diff / denom if denom > 0 else (0.0 if diff == 0 else float("inf"))


def safe_reciprocal(values: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``1/values`` where ``|values| > eps`` and 0 elsewhere (rows/columns the operator misses)."""
    out = torch.zeros_like(values)
    ok = values.abs() > eps
    out[ok] = 1.0 / values[ok]
    return out


def report(
    result: SolverResult,
    callback: Callback | None,
    info: IterationInfo,
    tol: float | None,
) -> bool:
    """Record ``info`` into ``result`` (iterate, count, history); True when the solver should stop.

    Stopping comes from the tolerance or a callback; ``result.stopped_early`` is set when
    that happens before the last iteration. When the run ends here (a stop, or the last
    iteration), the callback's optional ``on_end(info)`` method is called once.
    """
    result.x, result.n_iter = info.x, info.iteration
    result.record(info)
    stop = False
    if callback is not None and callback(info) is True:
        logger.info("callback stopped the solver at iteration %d", info.iteration)
        stop = True
    if tol is not None and info.relative_change < tol:
        logger.info(
            "relative change %.3g < tol %.3g at iteration %d",
            info.relative_change,
            tol,
            info.iteration,
        )
        stop = True
    if stop:
        result.stopped_early = info.iteration < info.n_iter
    if (stop or info.iteration >= info.n_iter) and callable(getattr(callback, "on_end", None)):
        callback.on_end(info)  # optional hook: the run ends here (e.g. a progress bar stops)
    return stop
