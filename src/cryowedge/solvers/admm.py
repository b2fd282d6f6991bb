"""Regularised least squares by ADMM with an inner conjugate-gradient solve (thesis Alg. 1).

Solves ``min_x ½‖Ax − b‖² + λ R(Lx)  [+ ι_{x ≥ 0}(x)]`` with

* ``"tv"``: isotropic TV, ``L = ∇``, ``R = ‖·‖₂,₁`` (thesis eq. 2.11);
* ``"tv-aniso"``: anisotropic TV, ``L = ∇``, ``R = ‖·‖₁`` (thesis eq. 3.6, STET);
* ``"l1"``: sparsity, ``L = I``, ``R = ‖·‖₁``.

Sign convention (thesis.md §2.1, fixing the mixed signs of the printed Alg. 1), with the
scaled dual ``y = α/ρ`` for each split ``u = Lx``::

    x ← argmin ½‖Ax − b‖² + (ρ/2)‖Lx − u + y‖²   i.e. (AᵀA + ρLᵀL) x = Aᵀb + ρLᵀ(u − y)   [CG]
    u ← prox_{(λ/ρ)R}(Lx + y)
    y ← y + Lx − u

Positivity is one more split ``v = x`` whose prox is the projection onto ``x ≥ 0``
(so the x-step stays a linear solve). ``y⁰ = 0`` (standard; thesis §13 item 3). With
``adaptive_rho`` the penalty follows Boyd et al.'s residual balancing (×2 or ÷2 whenever the
primal and dual residuals differ by more than 10×), which makes the default ρ scale-free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cryowedge._validation import check_choice, check_positive, check_positive_int
from cryowedge.operators.base import IdentityOperator, LinearOperatorLike
from cryowedge.operators.elementary import FiniteDifference
from cryowedge.solvers._common import (
    Callback,
    IterationInfo,
    SolverResult,
    check_common,
    norm,
    prepare,
    relative_change,
    report,
)
from cryowedge.solvers.prox import (
    group_soft_threshold,
    l21_norm,
    project_nonnegative,
    soft_threshold,
)

__all__ = ["tv_admm", "REGULARIZERS", "regularizer_value"]

logger = logging.getLogger(__name__)

REGULARIZERS = ("tv", "tv-aniso", "l1")


@dataclass
class _Split:
    """One ADMM splitting ``u = L x`` with its prox, weight and state."""

    op: LinearOperatorLike
    prox: Callable[[torch.Tensor, float], torch.Tensor]
    weight: float
    u: torch.Tensor
    y: torch.Tensor


def regularizer_value(
    x: torch.Tensor, regularizer: str, tv_axes: Sequence[int] | None = None
) -> float:
    """``R(Lx)`` for ``regularizer`` in :data:`REGULARIZERS` (without the weight λ)."""
    regularizer = check_choice(regularizer, "regularizer", REGULARIZERS)
    if regularizer == "l1":
        return float(x.abs().sum())
    grad = FiniteDifference(tuple(x.shape), tv_axes).forward(x)
    return l21_norm(grad, dim=0) if regularizer == "tv" else float(grad.abs().sum())


def tv_admm(
    operator: LinearOperatorLike,
    data: Any,
    *,
    x0: Any = None,
    n_iter: int = 50,
    relaxation: float = 1.0,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    lam: float = 0.1,
    regularizer: str = "tv",
    rho: float | None = None,
    adaptive_rho: bool = True,
    cg_iter: int = 10,
    cg_tol: float = 1e-6,
    tv_axes: Sequence[int] | None = None,
    reg_operator: LinearOperatorLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """Regularised reconstruction ``min ½‖Ax − b‖² + λ R(Lx)`` by ADMM with inner CG.

    Parameters
    ----------
    operator, data, x0, callback, tol, device, dtype
        As for :func:`~cryowedge.solvers.sirt` (shared signature).
    n_iter
        Outer ADMM iterations (each runs up to ``cg_iter`` CG steps).
    relaxation
        ADMM over-relaxation α in (0, 2): ``Lx`` is replaced by ``α Lx + (1 − α) u`` in the
        u- and y-updates; 1 is plain ADMM, 1.5–1.8 often converges faster.
    positivity
        Add the constraint ``x ≥ 0`` (the returned ``x`` is then exactly non-negative).
    lam
        Regularisation weight λ ≥ 0 (in the units of ``½‖Ax − b‖²``); 0 gives least squares.
    regularizer
        ``"tv"`` (isotropic), ``"tv-aniso"`` or ``"l1"``.
    rho
        Initial ADMM penalty ρ > 0 (default ``10·λ``, or 1 when λ = 0).
    adaptive_rho
        Rebalance ρ from the primal/dual residuals (recommended; off gives textbook ADMM).
    cg_iter, cg_tol
        Inner CG steps per x-update (warm-started) and their relative tolerance.
    tv_axes
        Domain axes the gradient runs over (default all; ``(1, 2)`` gives 2-D TV per slice
        of a ``(n_tilts, y, x)`` stack).
    reg_operator
        Optional ``L`` replacing the default (``∇`` over ``tv_axes``, or ``I`` for ``"l1"``),
        e.g. the gradient of one part of a stacked unknown (CRM: TV of the particle only).
        For ``"tv"`` its output's first axis holds the gradient components.

    Returns
    -------
    SolverResult
        ``x`` plus per-iteration ``objective``, ``residual_norm``, ``relative_change``,
        ``primal_residual``, ``dual_residual`` and ``rho``.
    """
    check_common(operator, n_iter, relaxation, tol)
    check_positive(lam, "lam (the regularisation weight λ)", allow_zero=True)
    regularizer = check_choice(regularizer, "regularizer", REGULARIZERS)
    if rho is not None:
        check_positive(rho, "rho")
    check_positive_int(cg_iter, "cg_iter")
    check_positive(cg_tol, "cg_tol")
    b, x = prepare(operator, data, x0, device, dtype)
    domain = tuple(operator.domain_shape)
    rho = float(rho) if rho is not None else (10.0 * lam if lam > 0 else 1.0)

    splits: list[_Split] = []
    if lam > 0:
        if regularizer == "l1":
            reg_op: LinearOperatorLike = IdentityOperator(domain)
            reg_prox: Callable[[torch.Tensor, float], torch.Tensor] = soft_threshold
        else:
            reg_op = FiniteDifference(domain, tv_axes)
            reg_prox = (
                (lambda v, t: group_soft_threshold(v, t, dim=0))
                if regularizer == "tv"
                else soft_threshold
            )
        if reg_operator is not None:
            if tuple(reg_operator.domain_shape) != domain:
                raise ValueError(
                    f"reg_operator acts on {tuple(reg_operator.domain_shape)}, but the operator's "
                    f"domain is {domain}."
                )
            reg_op = reg_operator
        lx = reg_op.forward(x)
        splits.append(_Split(reg_op, reg_prox, lam, lx.clone(), torch.zeros_like(lx)))
    if positivity:
        splits.append(
            _Split(IdentityOperator(domain), lambda v, t: project_nonnegative(v), 0.0,
                   x.clamp(min=0.0), torch.zeros_like(x))
        )

    def reg_value(z: torch.Tensor) -> float:
        if lam == 0:
            return 0.0
        if reg_operator is None:
            return regularizer_value(z, regularizer, tv_axes)
        lz = reg_operator.forward(z)
        return l21_norm(lz, dim=0) if regularizer == "tv" else float(lz.abs().sum())

    atb = operator.adjoint(b)
    ax: torch.Tensor | None = None  # A·x of the current x when already known
    result = SolverResult(x=x, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        previous = x.clone()
        rhs = atb.clone()
        for s in splits:
            rhs.add_(s.op.adjoint(s.u - s.y), alpha=rho)
        x = _conjugate_gradient(operator, splits, rho, rhs, x, cg_iter, cg_tol, ax=ax)
        primal_sq = dual_sq = 0.0
        for s in splits:
            lx = s.op.forward(x)
            lx_hat = lx if relaxation == 1.0 else relaxation * lx + (1.0 - relaxation) * s.u
            u_old = s.u
            s.u = s.prox(lx_hat + s.y, s.weight / rho)
            s.y.add_(lx_hat - s.u)
            primal_sq += norm(lx - s.u) ** 2
            dual_sq += (rho * norm(s.op.adjoint(s.u - u_old))) ** 2
        out = splits[-1].u if positivity else x
        a_out = operator.forward(out)
        # Without positivity out is x, so A·x seeds the next CG residual: no second forward.
        ax = None if positivity else a_out
        res_norm = norm(a_out - b)
        objective = 0.5 * res_norm**2 + lam * reg_value(out)
        extras = {"primal_residual": primal_sq**0.5, "dual_residual": dual_sq**0.5, "rho": rho}
        info = IterationInfo(k, n_iter, out, residual_norm=res_norm, objective=objective,
                             relative_change=relative_change(x, previous), extras=extras)
        if report(result, callback, info, tol):
            break
        if adaptive_rho and splits:
            primal, dual = primal_sq**0.5, dual_sq**0.5
            factor = 2.0 if primal > 10.0 * dual else 0.5 if dual > 10.0 * primal else 1.0
            if factor != 1.0:
                rho *= factor
                for s in splits:
                    s.y.div_(factor)  # the scaled dual y = α/ρ follows ρ
                logger.debug("ADMM iteration %d: rho -> %.4g", k, rho)
    return result


def _conjugate_gradient(
    operator: LinearOperatorLike,
    splits: list[_Split],
    rho: float,
    rhs: torch.Tensor,
    x: torch.Tensor,
    n_iter: int,
    rel_tol: float,
    *,
    ax: torch.Tensor | None = None,
) -> torch.Tensor:
    """Solve ``(AᵀA + ρ Σ LᵀL) x = rhs`` by CG, warm-started at ``x`` (updated in place).

    ``ax`` is ``A·x`` when the caller already has it (saves one forward projection).
    """

    def normal(v: torch.Tensor, av: torch.Tensor | None = None) -> torch.Tensor:
        out = operator.adjoint(operator.forward(v) if av is None else av)
        for s in splits:
            out.add_(s.op.adjoint(s.op.forward(v)), alpha=rho)
        return out

    r = rhs - normal(x, ax)
    p = r.clone()
    rr = float(torch.sum(r * r))
    threshold = (rel_tol * norm(rhs)) ** 2
    for _ in range(n_iter):
        if rr <= threshold:
            break
        q = normal(p)
        pq = float(torch.sum(p * q))
        if pq <= 0.0:
            break
        alpha = rr / pq
        x.add_(p, alpha=alpha)
        r.sub_(q, alpha=alpha)
        rr_new = float(torch.sum(r * r))
        p.mul_(rr_new / rr).add_(r)
        rr = rr_new
    return x
