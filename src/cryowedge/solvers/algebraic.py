"""Algebraic reconstruction: SIRT, SART (block) and ART (row-action Kaczmarz).

All three use the normalisation of eq. 19 of the CRM paper (Andersen & Kak):
``x ← x + w · V⁻¹ Aᵀ W⁻¹ (b − A x)`` with ``W = diag(A·1)`` (row sums) and
``V = diag(Aᵀ·1)`` (column sums) of the rows in play, which assumes a non-negative operator
(a projector). SIRT uses all rows per update, SART one block of rows (one tilt by default),
ART one row (eq. 1: ``x ← x + λ (b_i − ⟨A_i, x⟩)/‖A_i‖² · A_i``).

With a consistent system, ART from ``x0 = 0`` converges to the minimum-norm solution;
SIRT converges to the minimiser of ``‖Ax − b‖²_{W⁻¹}`` (the least-squares solution for a
consistent or full-column-rank system).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cryowedge._validation import check_choice
from cryowedge.operators._sparse import csr_matmul, to_torch_csr
from cryowedge.operators.base import LinearOperatorLike
from cryowedge.operators.elementary import RangeSubset
from cryowedge.solvers._common import (
    Callback,
    IterationInfo,
    SolverResult,
    check_common,
    norm,
    prepare,
    relative_change,
    report,
    safe_reciprocal,
)

__all__ = ["sirt", "sart", "art"]

logger = logging.getLogger(__name__)

ORDERS = ("random", "sequential")
#: Above this many bytes SART recomputes each block's column sums instead of caching them.
_SART_CACHE_BYTES = 1 << 30


def sirt(
    operator: LinearOperatorLike,
    data: Any,
    *,
    x0: Any = None,
    n_iter: int = 100,
    relaxation: float = 1.0,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """Simultaneous iterative reconstruction: ``x ← x + w V⁻¹ Aᵀ W⁻¹ (b − A x)``.

    Parameters
    ----------
    operator
        Any non-negative linear operator with ``forward``/``adjoint``/shapes (e.g. a
        :class:`~cryowedge.operators.TiltProjector`).
    data
        Measurements ``b`` of shape ``operator.range_shape`` (tensor or array).
    x0
        Start, ``operator.domain_shape`` (default zeros).
    n_iter
        Iterations (each one forward and one adjoint), ≥ 1.
    relaxation
        ``w`` in (0, 2); 1 is the classical SIRT.
    positivity
        Clamp the iterate at 0 after each update.
    callback
        Called with an :class:`IterationInfo` after each iteration; ``True`` stops.
    tol
        Stop once the relative change of ``x`` falls below ``tol``.
    device, dtype
        Where and in which precision to compute (default: those of ``data``; float32 for
        non-float input).

    Returns
    -------
    SolverResult
        ``x`` in the operator's domain shape, plus the residual history.
    """
    check_common(operator, n_iter, relaxation, tol)
    b, x = prepare(operator, data, x0, device, dtype)
    w_inv = safe_reciprocal(operator.forward(torch.ones_like(x)))
    v_inv = safe_reciprocal(operator.adjoint(torch.ones_like(b))).mul_(relaxation)
    result = SolverResult(x=x, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        residual = b - operator.forward(x)
        res_norm = norm(residual)
        update = operator.adjoint(residual.mul_(w_inv)).mul_(v_inv)
        if positivity:
            new = (x + update).clamp_(min=0.0)
            change = relative_change(new, x)
            x = new
        else:
            x_norm = norm(x)
            change = norm(update) / x_norm if x_norm > 0 else float("inf")
            x.add_(update)
        info = IterationInfo(k, n_iter, x, residual_norm=res_norm, objective=0.5 * res_norm**2,
                             relative_change=change)
        if report(result, callback, info, tol):
            break
    return result


def _blocks(operator: LinearOperatorLike, n_blocks: int | None) -> list[np.ndarray]:
    n_rows = int(operator.range_shape[0])
    n_blocks = n_rows if n_blocks is None else int(n_blocks)
    if not 1 <= n_blocks <= n_rows:
        raise ValueError(
            f"n_blocks must lie in [1, {n_rows}] (the first range axis, e.g. tilts), "
            f"got {n_blocks}."
        )
    return [np.asarray(b) for b in np.array_split(np.arange(n_rows), n_blocks)]


def sart(
    operator: LinearOperatorLike,
    data: Any,
    *,
    x0: Any = None,
    n_iter: int = 20,
    relaxation: float = 0.2,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    order: str = "random",
    n_blocks: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """Simultaneous algebraic reconstruction: eq. 19 applied block by block.

    Blocks are slices of the first range axis (one tilt each by default); for each block
    ``s``: ``x ← x + w V_s⁻¹ A_sᵀ W_s⁻¹ (b_s − A_s x)``. One iteration visits every block
    once. Operators with ``row_form()`` (the tilt projector, matrices) run on row blocks of
    their matrix with the iterate kept in column layout (no per-block reshuffling; for a
    warped tilt geometry this is the aligned-frame system, as for :func:`art`); operators
    with a ``subset(indices)`` method use it; others fall back to
    :class:`~cryowedge.operators.elementary.RangeSubset`.

    Parameters are those of :func:`sirt`, plus:

    relaxation
        ``w`` in (0, 2); default 0.2 as in the CRM paper's experiments.
    order
        ``"random"`` (a fresh permutation of the blocks per iteration, from ``seed``) or
        ``"sequential"``.
    n_blocks
        Number of blocks (default: one per entry of the first range axis).
    """
    check_common(operator, n_iter, relaxation, tol)
    order = check_choice(order, "order", ORDERS)
    b, x = prepare(operator, data, x0, device, dtype)
    blocks = _blocks(operator, n_blocks)
    if callable(getattr(operator, "row_form", None)):
        return _sart_rows(
            operator, b, x, blocks, n_iter, relaxation, positivity, callback, tol, order, seed
        )
    subset = getattr(operator, "subset", None)
    ops = [subset(idx) if callable(subset) else RangeSubset(operator, idx) for idx in blocks]
    index_dev = [torch.as_tensor(idx, device=b.device) for idx in blocks]
    ones_x = torch.ones_like(x)
    w_inv = [safe_reciprocal(op.forward(ones_x)).mul_(relaxation) for op in ops]
    cache_v = len(ops) * x.numel() * x.element_size() <= _SART_CACHE_BYTES
    v_cache: dict[int, torch.Tensor] = {}

    def v_inv(i: int) -> torch.Tensor:
        if i in v_cache:
            return v_cache[i]
        value = safe_reciprocal(ops[i].adjoint(torch.ones_like(w_inv[i])))
        if cache_v:
            v_cache[i] = value
        return value

    if not cache_v:
        logger.info(
            "SART: column sums recomputed per block (cache would exceed %d bytes)",
            _SART_CACHE_BYTES,
        )
    rng = np.random.default_rng(seed)
    result = SolverResult(x=x, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        previous = x.clone()
        visit = rng.permutation(len(ops)) if order == "random" else np.arange(len(ops))
        sq_residual = 0.0
        for i in visit:
            residual = b.index_select(0, index_dev[i]) - ops[i].forward(x)
            sq_residual += float(torch.sum(residual * residual))
            x.addcmul_(ops[i].adjoint(residual.mul_(w_inv[i])), v_inv(i))
            if positivity:
                x.clamp_(min=0.0)
        info = IterationInfo(
            k,
            n_iter,
            x,
            residual_norm=sq_residual**0.5,
            objective=0.5 * sq_residual,
            relative_change=relative_change(x, previous),
        )
        if report(result, callback, info, tol):
            break
    return result


def _row_setup(operator: LinearOperatorLike, b: torch.Tensor, x: torch.Tensor):
    """Row form of ``operator``: ``(rows, CSR matrix, data as rows, iterate as columns)``."""
    rows = operator.row_form()
    rhs = rows.data_to_rows(b).contiguous()
    cols = rows.to_columns(x).contiguous().clone()
    return rows, rows.matrix.tocsr(), rhs, cols


def _sart_rows(
    operator: LinearOperatorLike,
    b: torch.Tensor,
    x: torch.Tensor,
    blocks: list[np.ndarray],
    n_iter: int,
    relaxation: float,
    positivity: bool,
    callback: Callback | None,
    tol: float | None,
    order: str,
    seed: int,
) -> SolverResult:
    """SART on the operator's row form: block ``s`` = rows of the range entries ``blocks[s]``."""
    rows, matrix, rhs, cols = _row_setup(operator, b, x)
    per_entry = matrix.shape[0] // int(operator.range_shape[0])  # rows per first-axis entry
    mats, mats_t, w_inv, v_inv, spans = [], [], [], [], []
    for block in blocks:
        r0, r1 = int(block[0]) * per_entry, (int(block[-1]) + 1) * per_entry
        sub = matrix[r0:r1]
        mats.append(to_torch_csr(sub, dtype=b.dtype, device=b.device))
        mats_t.append(to_torch_csr(sub.T.tocsr(), dtype=b.dtype, device=b.device))
        row_sums = torch.as_tensor(
            np.asarray(sub.sum(axis=1)).ravel(), dtype=b.dtype, device=b.device
        )
        col_sums = torch.as_tensor(
            np.asarray(sub.sum(axis=0)).ravel(), dtype=b.dtype, device=b.device
        )
        w_inv.append(safe_reciprocal(row_sums).mul_(relaxation)[:, None])
        v_inv.append(safe_reciprocal(col_sums)[:, None])
        spans.append((r0, r1))
    rng = np.random.default_rng(seed)
    result = SolverResult(x=x, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        previous = cols.clone()
        visit = rng.permutation(len(blocks)) if order == "random" else np.arange(len(blocks))
        sq_residual = 0.0
        for i in visit:
            r0, r1 = spans[i]
            residual = rhs[r0:r1] - csr_matmul(mats[i], cols)
            sq_residual += float(torch.sum(residual * residual))
            cols.addcmul_(csr_matmul(mats_t[i], residual.mul_(w_inv[i])), v_inv[i])
            if positivity:
                cols.clamp_(min=0.0)
        x = rows.from_columns(cols)
        info = IterationInfo(
            k,
            n_iter,
            x,
            residual_norm=sq_residual**0.5,
            objective=0.5 * sq_residual,
            relative_change=relative_change(cols, previous),
        )
        if report(result, callback, info, tol):
            break
    return result


def art(
    operator: LinearOperatorLike,
    data: Any,
    *,
    x0: Any = None,
    n_iter: int = 5,
    relaxation: float = 1.0,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    order: str = "random",
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """ART / Kaczmarz (eq. 1 of the CRM paper), one row at a time.

    The operator must offer ``row_form()`` (see :class:`~cryowedge.operators.elementary.RowForm`;
    :class:`~cryowedge.operators.TiltProjector` and
    :class:`~cryowedge.operators.MatrixOperator` do). For the tilt projector a row is one
    detector pixel ``(tilt, u)`` and all tilt-axis slices are updated together, which is
    exactly the sequential method because slices share no unknowns.

    Parameters are those of :func:`sirt`; one iteration is one sweep over all rows, in
    ``order`` ``"random"`` (a new permutation per sweep) or ``"sequential"`` (eq. 1's
    cyclic ``i = k mod m``). ``relaxation`` is λ in (0, 2). ``positivity`` projects the
    touched unknowns onto ``x ≥ 0`` after every row update.
    """
    check_common(operator, n_iter, relaxation, tol)
    order = check_choice(order, "order", ORDERS)
    row_form = getattr(operator, "row_form", None)
    if not callable(row_form):
        raise TypeError(
            f"ART needs the operator's rows; {type(operator).__name__} has no row_form(). "
            "Use sart or sirt for matrix-free operators."
        )
    b, x = prepare(operator, data, x0, device, dtype)
    rows, matrix, rhs, cols = _row_setup(operator, b, x)
    indptr = matrix.indptr
    indices = torch.as_tensor(matrix.indices.astype(np.int64), device=b.device)
    values = torch.as_tensor(matrix.data, dtype=b.dtype, device=b.device)
    norms2 = np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()
    active = np.flatnonzero(norms2 > 0)
    inv_norms2 = np.zeros_like(norms2)
    inv_norms2[active] = relaxation / norms2[active]
    m_torch = to_torch_csr(matrix, dtype=b.dtype, device=b.device)
    rng = np.random.default_rng(seed)
    result = SolverResult(x=x, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        previous = cols.clone()
        residual_norm = norm(rhs - csr_matmul(m_torch, cols))
        visit = active[rng.permutation(active.size)] if order == "random" else active
        for i in visit:
            p0, p1 = indptr[i], indptr[i + 1]
            idx = indices[p0:p1]
            a_i = values[p0:p1]
            x_i = cols.index_select(0, idx)  # (nnz_i, batch)
            step = (rhs[i] - a_i @ x_i) * float(inv_norms2[i])  # (batch,)
            x_i.addcmul_(a_i[:, None], step[None, :])
            if positivity:
                x_i.clamp_(min=0.0)
            cols.index_copy_(0, idx, x_i)
        x = rows.from_columns(cols)
        info = IterationInfo(k, n_iter, x, residual_norm=residual_norm,
                             objective=0.5 * residual_norm**2,
                             relative_change=relative_change(cols, previous))
        if report(result, callback, info, tol):
            break
    return result
