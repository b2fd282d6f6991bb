"""Conjugate gradient on the normal equations (CGLS) for ``min ‖Ax − b‖²``."""

from __future__ import annotations

from typing import Any

import torch

from cryowedge.operators.base import LinearOperatorLike
from cryowedge.solvers._common import (
    Callback,
    IterationInfo,
    SolverResult,
    check_common,
    norm,
    prepare,
    report,
)

__all__ = ["cgls"]


def cgls(
    operator: LinearOperatorLike,
    data: Any,
    *,
    x0: Any = None,
    n_iter: int = 20,
    relaxation: float = 1.0,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """CGLS: conjugate gradient applied to ``AᵀA x = Aᵀb`` without forming ``AᵀA``.

    Takes the shared solver signature (see :func:`~cryowedge.solvers.sirt`). CG fixes its
    own step lengths, so ``relaxation`` must stay 1, and it cannot enforce positivity
    (use :func:`~cryowedge.solvers.sirt` or :func:`~cryowedge.solvers.tv_admm`); both are
    refused with a clear error rather than silently ignored. From ``x0 = 0`` the iterates
    converge to the minimum-norm least-squares solution; stopping early regularises.
    """
    check_common(operator, n_iter, relaxation, tol)
    if relaxation != 1.0:
        raise ValueError(
            f"CGLS chooses its own step lengths; relaxation must be 1.0, got {relaxation!r}."
        )
    if positivity:
        raise ValueError(
            "CGLS cannot enforce positivity; use method 'sirt', 'sart' or 'tv' instead."
        )
    b, x = prepare(operator, data, x0, device, dtype)
    r = b - operator.forward(x)
    s = operator.adjoint(r)
    p = s.clone()
    gamma = float(torch.sum(s * s))
    result = SolverResult(x=x, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        q = operator.forward(p) if gamma > 0.0 else None
        qq = 0.0 if q is None else float(torch.sum(q * q))
        if qq == 0.0:  # exact solution reached (Aᵀr = 0 or A p = 0): the run ends here
            result.stopped_early = True
            if callable(getattr(callback, "on_end", None)):
                res_norm = norm(r)
                callback.on_end(IterationInfo(k - 1, n_iter, x, residual_norm=res_norm,
                                              objective=0.5 * res_norm**2, relative_change=0.0))
            break
        alpha = gamma / qq
        x_norm = norm(x)
        x.add_(p, alpha=alpha)
        r.sub_(q, alpha=alpha)
        s = operator.adjoint(r)
        gamma_new = float(torch.sum(s * s))
        change = abs(alpha) * norm(p) / x_norm if x_norm > 0 else float("inf")
        p.mul_(gamma_new / gamma).add_(s)
        gamma = gamma_new
        res_norm = norm(r)
        info = IterationInfo(k, n_iter, x, residual_norm=res_norm, objective=0.5 * res_norm**2,
                             relative_change=change, extras={"normal_residual_norm": gamma**0.5})
        if report(result, callback, info, tol):
            break
    return result
