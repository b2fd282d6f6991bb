"""Solvers of the constrained reconstruction model (CRM), with the project's one solver signature.

=================  ===========================================================================
``crm_sart``       CRM-SART (eq. 20–24): copies visited in turn, the particle ``h`` passed from
                   copy to copy, each copy's background ``g_i`` kept from the previous iteration,
                   one SART sweep over the copy's views per visit (paper defaults: 20
                   iterations, λ = 0.2)
``crm_sirt``       simultaneous over all copies and views: :func:`~cryowedge.solvers.sirt` on
                   :class:`~cryowedge.crm.operator.CRMOperator`
``crm_kaczmarz``   sparse Kaczmarz (Algorithm 1, eq. 16–17): :func:`~cryowedge.solvers.art` on
                   the operator's ``row_form()``, rows in the order of eq. 8
``crm_tv``         CRM with isotropic TV on the particle only (not in the paper):
                   :func:`~cryowedge.solvers.tv_admm` with ``L = ∇ S · [slot 0]``
=================  ===========================================================================

Each takes ``(operator, data, *, x0, n_iter, relaxation, positivity, callback, tol, device,
dtype, …)``, where ``operator`` is a :class:`CRMOperator` or a
:class:`~cryowedge.crm.problem.CRMData` (then ``data`` defaults to its projections), and returns
a :class:`~cryowedge.solvers.SolverResult` whose ``x`` is the whole unknown
``(N + 1, nz, ny, nx)`` (slot 0 the particle, slots ``1..N`` the backgrounds); the particle is
``operator.particle(result.x)`` (``S·h``). Progress goes through
:class:`~cryowedge.solvers.IterationInfo` callbacks, once per outer iteration.

Registry: :data:`CRM_SOLVERS` names them for the CRM command line (``cryowedge crm run
--method sart|sirt|kaczmarz|tv``). They are not in :data:`cryowedge.solvers.SOLVERS` nor in the
method registry (:mod:`cryowedge.config.registry`), whose entries reconstruct *one* tilt
series with a :class:`~cryowedge.geometry.TiltGeometry` (``reconstruct --method``); a CRM
problem is a set of copies with a support, which those runners cannot take.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cryowedge._validation import check_choice
from cryowedge.crm.operator import CRMOperator, SlotSelect, _ByteCache, as_crm_operator
from cryowedge.crm.problem import CRMData
from cryowedge.operators._sparse import csr_matmul, to_torch_csr
from cryowedge.operators.elementary import FiniteDifference, MaskOperator
from cryowedge.solvers._common import (
    Callback,
    IterationInfo,
    SolverResult,
    check_common,
    prepare,
    relative_change,
    report,
    safe_reciprocal,
)
from cryowedge.solvers.admm import tv_admm
from cryowedge.solvers.algebraic import ORDERS, art, sirt

__all__ = ["CRM_SOLVERS", "crm_kaczmarz", "crm_sart", "crm_sirt", "crm_tv", "resolve_problem"]

logger = logging.getLogger(__name__)

BLOCKS = ("view", "copy")
PARTICLE_CHOICES = ("last", "mean")
_HOST_PLAN_BYTES = 4 << 30
_GPU_PLAN_FRACTION = 0.4


def resolve_problem(operator: CRMOperator | CRMData, data: Any) -> tuple[CRMOperator, Any]:
    """``(CRMOperator, data)`` from an operator or a :class:`CRMData` (data: its projections)."""
    op = as_crm_operator(operator)
    if data is None:
        if not isinstance(operator, CRMData):
            raise ValueError("data is required when a CRMOperator (not a CRMData) is given.")
        data = operator.projections
    return op, data


def _canonical(op: CRMOperator, x: torch.Tensor) -> None:
    """Zero what the model ignores: ``h`` off ``S`` and each ``g_i`` on ``S_i`` (in place)."""
    s = torch.from_numpy(op.support).to(device=x.device, dtype=x.dtype)
    x[0].mul_(s)
    for i in range(op.n_copies):
        mask = (
            s if op.copy_supports[i] is op.support else torch.from_numpy(op.copy_supports[i]).to(x)
        )
        x[1 + i].mul_(1.0 - mask)


# ----------------------------------------------------------------------------- CRM-SART
class _Plans:
    """Per-copy SART plans (per-view sparse matrices and weights), cached within a byte budget."""

    def __init__(
        self,
        op: CRMOperator,
        dtype: torch.dtype,
        device: torch.device,
        relaxation: float,
        block: str,
        max_bytes: int | None,
    ) -> None:
        self.op, self.dtype, self.device, self.relaxation, self.block = (
            op,
            dtype,
            device,
            relaxation,
            block,
        )
        if max_bytes is None:
            if device.type == "cuda" and torch.cuda.is_available():
                max_bytes = int(
                    _GPU_PLAN_FRACTION * torch.cuda.get_device_properties(device).total_memory
                )
            else:
                max_bytes = _HOST_PLAN_BYTES
        self.cache = _ByteCache(max_bytes, evict=False)  # copies come in turn: keep the first
        self.n_builds = 0
        self.s = torch.from_numpy(op.support).to(device=device, dtype=dtype)

    def get(self, i: int) -> dict[str, Any]:
        return self.cache.get(i, lambda: self._build(i))

    def _build(self, i: int) -> tuple[dict[str, Any], int]:
        self.n_builds += 1
        op, dtype, dev = self.op, self.dtype, self.device
        nz, ny, nx = op.volume_shape
        elt = torch.empty((), dtype=dtype).element_size()
        bg = 1.0 - (
            self.s
            if op.copy_supports[i] is op.support
            else torch.from_numpy(op.copy_supports[i]).to(device=dev, dtype=dtype)
        )
        plan: dict[str, Any] = {"bg": bg}
        size = 0
        if self.block == "copy":
            proj = op.copy_projector(i)  # B_i = proj · (1 − S_i); D_i = dpart (mask inside)
            dpart = op.particle_part(i)
            plan["proj"], plan["dpart"] = proj, dpart
            ones = torch.ones(proj.range_shape, dtype=dtype, device=dev)
            rowsum = dpart.forward(torch.ones_like(bg)) + proj.forward(bg)
            plan["w_inv"] = safe_reciprocal(rowsum).mul_(self.relaxation)
            plan["vd_inv"] = safe_reciprocal(dpart.adjoint(ones) * self.s)
            plan["vb_inv"] = safe_reciprocal(proj.adjoint(ones) * bg)
            size = 3 * int(np.prod(op.volume_shape)) * elt + 4 * proj.matrix.nnz * (elt + 4)
            return plan, size
        m = (
            op.combined_slice_matrix(i, cache=False)
            if op.shared_projector
            else op.slice_matrix(i, cache=False)
        )
        bg_slice = None
        if not op.shared_projector:
            # D_i = P_i R_i S on the support voxels (rows (t, y, u)); bg as columns (nz·nx, ny)
            d_all = op.particle_matrix(i, support_columns=True, cache=False)
            bg_cols = bg.permute(0, 2, 1).reshape(nz * nx, ny).contiguous()
            plan["bg_cols"] = bg_cols
            size += nz * nx * ny * elt
            mask = op.copy_supports[i]
            if np.all(mask == mask[:, :1, :]):  # B_i's columns on S_i are zero for every y: drop
                bg_slice = sp.diags((~mask[:, 0, :]).ravel().astype(np.float64))
        views = []
        for t in range(op.n_tilts):
            sub = m[t * nx : (t + 1) * nx]
            if bg_slice is not None:
                sub = (sub @ bg_slice).tocsr()
                sub.eliminate_zeros()
            a = to_torch_csr(sub, dtype=dtype, device=dev)
            at = to_torch_csr(sub.T.tocsr(), dtype=dtype, device=dev)
            rowsum = torch.as_tensor(np.asarray(sub.sum(axis=1)).ravel(), dtype=dtype, device=dev)
            colsum = torch.as_tensor(np.asarray(sub.sum(axis=0)).ravel(), dtype=dtype, device=dev)
            view: dict[str, Any] = {"a": a, "at": at}
            size += 2 * sub.nnz * (elt + 4) + (sub.shape[0] + sub.shape[1]) * elt
            view["v_inv"] = safe_reciprocal(colsum)[:, None]  # (nz·nx, 1)
            if op.shared_projector:
                view["w_inv"] = safe_reciprocal(rowsum).mul_(self.relaxation)[:, None]  # (nx, 1)
            else:
                d = d_all[t * ny * nx : (t + 1) * ny * nx]
                view["d"] = to_torch_csr(d, dtype=dtype, device=dev)
                view["dt"] = to_torch_csr(d.T.tocsr(), dtype=dtype, device=dev)
                view["vd_inv"] = safe_reciprocal(
                    torch.as_tensor(np.asarray(d.sum(axis=0)).ravel(), dtype=dtype, device=dev)
                )
                # row sums of [D_i, B_i] for this view, as (nx, ny): they depend on y
                d_rows = torch.as_tensor(np.asarray(d.sum(axis=1)).ravel(), dtype=dtype, device=dev)
                rows_sum = csr_matmul(a, bg_cols) + d_rows.reshape(ny, nx).T
                view["w_inv"] = safe_reciprocal(rows_sum).mul_(self.relaxation)
                size += 2 * d.nnz * (elt + 4) + (d.shape[1] + nx * ny) * elt
            views.append(view)
        plan["views"] = views
        return plan, size


def _sweep_folded(
    plan: dict[str, Any], f: torch.Tensor, rows: torch.Tensor, visit: np.ndarray, positivity: bool
) -> float:
    """One SART sweep over a copy's views on its particle-frame ``f`` ``(nz·nx, ny)`` (in place)."""
    sq = 0.0
    views = plan["views"]
    for t in visit:
        v = views[int(t)]
        residual = rows[int(t)] - csr_matmul(v["a"], f)
        sq += float(torch.sum(residual * residual))
        f.addcmul_(csr_matmul(v["at"], residual.mul_(v["w_inv"])), v["v_inv"])
        if positivity:
            f.clamp_(min=0.0)
    return sq


def _sweep_rotated(
    plan: dict[str, Any],
    hs: torch.Tensor,
    g: torch.Tensor,
    rows: torch.Tensor,
    visit: np.ndarray,
    positivity: bool,
) -> float:
    """One SART sweep over a copy's views on ``[D_i, B_i]`` (in place).

    ``hs`` ``(n_h,)`` is the particle on its support voxels, ``g`` ``(nz·nx, ny)`` the copy's
    background (zero on ``S_i``) in column layout; ``D_i``'s view blocks are explicit sparse
    matrices (the rotation is inside them), ``B_i``'s are the slice matrix times ``1 − S_i``.
    """
    bg = plan["bg_cols"]
    nx, ny = rows.shape[1], rows.shape[2]
    sq = 0.0
    for t in visit:
        v = plan["views"][int(t)]
        pred = csr_matmul(v["a"], g) + csr_matmul(v["d"], hs[:, None]).reshape(ny, nx).T
        residual = rows[int(t)] - pred
        sq += float(torch.sum(residual * residual))
        residual.mul_(v["w_inv"])  # (nx, ny)
        g.add_(csr_matmul(v["at"], residual).mul_(v["v_inv"]).mul_(bg))
        dh = csr_matmul(v["dt"], residual.T.reshape(-1, 1)).squeeze(1).mul_(v["vd_inv"])
        if positivity:
            g.clamp_(min=0.0)
            dh = (hs + dh).clamp_(min=0.0) - hs
        hs.add_(dh)
    return sq


def _update_copy_block(
    plan: dict[str, Any],
    s: torch.Tensor,
    h: torch.Tensor,
    g: torch.Tensor,
    b_i: torch.Tensor,
    positivity: bool,
) -> float:
    """One simultaneous update over all views of a copy (eq. 23 as printed), in place."""
    bg, proj, dpart = plan["bg"], plan["proj"], plan["dpart"]
    residual = b_i - dpart.forward(h) - proj.forward(bg * g)
    sq = float(torch.sum(residual * residual))
    residual.mul_(plan["w_inv"])
    g.addcmul_(proj.adjoint(residual), plan["vb_inv"])
    h.add_(dpart.adjoint(residual).mul_(plan["vd_inv"]))
    if positivity:
        h.clamp_(min=0.0)
        g.clamp_(min=0.0)
    return sq


def crm_sart(
    operator: CRMOperator | CRMData,
    data: Any = None,
    *,
    x0: Any = None,
    n_iter: int = 20,
    relaxation: float = 0.2,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    order: str = "random",
    seed: int = 0,
    block: str = "view",
    particle: str = "last",
    plan_cache_bytes: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """CRM-SART (eq. 20–24, Fig. 2): copies in turn, the particle handed on, backgrounds kept.

    One outer iteration visits copies ``1..N`` in order. At copy ``i`` the unknowns are the
    current particle ``h`` (as the previous copy left it) and the copy's own background ``g_i``
    (as the previous iteration left it); one SART sweep over the copy's views updates both
    on the system ``D_i h + B_i g_i = b_i``: per view ``s``,
    ``[h; g_i] ← [h; g_i] + λ V_s⁻¹ [D_i; B_i]_sᵀ W_s⁻¹ (b_s − D_i,s h − B_i,s g_i)`` with ``W_s``,
    ``V_s`` the row and column sums of the view's rows of ``[D_i, B_i]`` (the normalisation of
    :func:`~cryowedge.solvers.sart`). When the copy's rows are one slice matrix ``C_i`` on
    ``f_i = S h + (1 − S) g_i`` (``operator.shared_projector``: folded problems with ``S_i = S``,
    e.g. every 2D problem with a disc support, in either background frame; see
    :meth:`CRMOperator.combined_slice_matrix`), this is exactly a SART sweep of ``C_i`` on
    ``f_i`` (so with one copy and particle-frame backgrounds it equals
    :func:`~cryowedge.solvers.sart` on the copy's projector).
    Otherwise each view's block of ``D_i = P_i R_i S`` is an explicit sparse matrix, built once
    per copy (folded: the projector at ``θ + φ`` on the support columns; rotated: composed with
    the trilinear plan of :class:`~cryowedge.operators.Rotation3D`), and ``B_i``'s is the
    copy's projector at ``θ`` on the columns off ``S_i``; the sweep equals SART on the explicit
    ``[D_i, B_i]`` and interpolates nothing per view.

    Parameters
    ----------
    operator, data
        A :class:`CRMOperator` and the ``(N, n_tilts, ny, nx)`` projections, or a
        :class:`CRMData` (``data`` then defaults to its projections).
    x0
        Start ``(N + 1, nz, ny, nx)`` (default zeros); ``h`` off ``S`` and ``g_i`` on ``S_i``
        are zeroed.
    n_iter
        Outer iterations (default 20, as in the paper's Table 1).
    relaxation
        λ in (0, 2) (default 0.2, the paper's).
    positivity
        Clamp ``h`` and ``g_i`` at 0 after each update.
    callback, tol
        As for :func:`~cryowedge.solvers.sirt`: one :class:`IterationInfo` per outer iteration;
        ``residual_norm`` is the root of the summed squared view residuals met during the
        sweep (as in ``sart``); ``extras["particle_change"]`` is the relative change of ``S·h``.
    order
        Views within a copy: ``"random"`` (a new permutation per visit, from ``seed``) or
        ``"sequential"`` (stack order, as the authors' code).
    block
        ``"view"`` (default): one SART update per view, as the authors' code. ``"copy"``: one
        simultaneous update per copy with all its views (eq. 23 as printed): no per-view
        matrices (less memory; rotated copies use :class:`Rotation3D` once each way per visit)
        but much slower to converge.
    particle
        What slot 0 of the returned ``x`` holds: ``"last"`` (default; Algorithm 1 returns
        ``h_old``, the particle after the last copy's sweep, which has seen every copy's data)
        or ``"mean"``: the mean of the particles after each copy's sweep in the last
        iteration, which is what the authors' C++ code writes (its voxel-wise mean over
        all copies, whose particle regions hold these successive iterates). The mean
        smooths the sweep-to-sweep jitter at the price of lagging the newest update.
    plan_cache_bytes
        Budget for the per-copy view matrices kept between iterations (default 4 GiB on the
        host, 40 % of a GPU's memory); copies beyond it are rebuilt at each visit (logged).
        Measured in float32: a 2D copy of 200² with 34 views takes 46 MB (N = 49 fits the
        host default, N = 200 does not), a 3D copy of 48³ with 21 views and a support of
        radius 16 takes 47 MB.
    device, dtype
        Where and in which precision to compute (default: those of ``data``).

    Returns
    -------
    SolverResult
        ``x`` ``(N + 1, nz, ny, nx)``; ``operator.particle(x)`` is the particle.
    """
    op, data = resolve_problem(operator, data)
    check_common(op, n_iter, relaxation, tol)
    order = check_choice(order, "order", ORDERS)
    block = check_choice(block, "block", BLOCKS)
    particle = check_choice(particle, "particle", PARTICLE_CHOICES)
    b, x = prepare(op, data, x0, device, dtype)
    _canonical(op, x)
    plans = _Plans(op, b.dtype, b.device, relaxation, block, plan_cache_bytes)
    s = plans.s
    nz, ny, nx = op.volume_shape
    rows = b.permute(0, 1, 3, 2).contiguous()  # (N, n_t, nx, ny): view t of copy i is rows[i, t]
    support_index = torch.as_tensor(np.flatnonzero(op.support.ravel()), device=b.device)
    rng = np.random.default_rng(seed)
    result = SolverResult(x=x, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        previous = x.clone()
        sq = 0.0
        mean = torch.zeros_like(x[0]) if particle == "mean" else None
        for i in range(op.n_copies):
            plan = plans.get(i)
            h, g = x[0], x[1 + i]
            visit = rng.permutation(op.n_tilts) if order == "random" else np.arange(op.n_tilts)
            if block == "copy":
                sq += _update_copy_block(plan, s, h, g, b[i], positivity)
            elif op.shared_projector:
                f = (h + g).permute(0, 2, 1).reshape(nz * nx, ny).contiguous()  # h on S, g off S
                sq += _sweep_folded(plan, f, rows[i], visit, positivity)
                vol = f.reshape(nz, nx, ny).permute(0, 2, 1)
                h.copy_(vol * s)
                g.copy_(vol * plan["bg"])
            else:
                hs = h.reshape(-1).index_select(0, support_index)
                g_cols = g.permute(0, 2, 1).reshape(nz * nx, ny).contiguous()
                sq += _sweep_rotated(plan, hs, g_cols, rows[i], visit, positivity)
                h.view(-1).index_copy_(0, support_index, hs)
                g.copy_(g_cols.reshape(nz, nx, ny).permute(0, 2, 1))
            if mean is not None:
                mean.add_(h, alpha=1.0 / op.n_copies)
        if k == 1 and plans.n_builds > op.n_copies:
            logger.info(
                "crm_sart: copy plans exceed plan_cache_bytes; they are rebuilt at each visit"
            )
        reported = x
        if mean is not None:
            reported = x.clone()
            reported[0] = mean
        info = IterationInfo(
            k,
            n_iter,
            reported,
            residual_norm=sq**0.5,
            objective=0.5 * sq,
            relative_change=relative_change(x, previous),
            extras={"particle_change": relative_change(x[0], previous[0])},
        )
        if report(result, callback, info, tol):
            break
    return result


# ----------------------------------------------------------------------------- the others
def crm_sirt(
    operator: CRMOperator | CRMData,
    data: Any = None,
    *,
    x0: Any = None,
    n_iter: int = 120,
    relaxation: float = 1.0,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """CRM-SIRT: :func:`~cryowedge.solvers.sirt` on ``A_CRM``, all copies and views at once.

    ``x ← x + λ V⁻¹ A_CRMᵀ W⁻¹ (b − A_CRM x)``: the particle's column sums ``V`` add over all
    copies, so its update is the copies' back-projected residuals averaged. Defaults: 120
    iterations (the authors' SIRT runs) with λ = 1 (their λ = 0.2 was for a per-copy SIRT
    with the particle handed on; the simultaneous update needs the full step). Other
    parameters and the result as for :func:`crm_sart`.
    """
    op, data = resolve_problem(operator, data)
    return sirt(
        op,
        data,
        x0=x0,
        n_iter=n_iter,
        relaxation=relaxation,
        positivity=positivity,
        callback=callback,
        tol=tol,
        device=device,
        dtype=dtype,
    )


def crm_kaczmarz(
    operator: CRMOperator | CRMData,
    data: Any = None,
    *,
    x0: Any = None,
    n_iter: int = 5,
    relaxation: float = 1.0,
    positivity: bool = False,
    callback: Callback | None = None,
    tol: float | None = None,
    order: str = "sequential",
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """Sparse Kaczmarz for CRM (Algorithm 1, eq. 16–17): :func:`~cryowedge.solvers.art` on A_CRM.

    Rows come from :meth:`CRMOperator.row_form` in the order of eq. 8 (copy, tilt, detector
    pixel); ``order="sequential"`` (default) visits them cyclically as eq. 16 does, so the
    particle passes from copy to copy and each row's update touches only the non-zeros of
    ``[D_i,q, B_i,q]``. One iteration is one sweep over all rows. Meant for small problems
    (a Python loop over rows); use :func:`crm_sart` for real sizes.
    """
    op, data = resolve_problem(operator, data)
    return art(
        op,
        data,
        x0=x0,
        n_iter=n_iter,
        relaxation=relaxation,
        positivity=positivity,
        callback=callback,
        tol=tol,
        order=order,
        seed=seed,
        device=device,
        dtype=dtype,
    )


def crm_tv(
    operator: CRMOperator | CRMData,
    data: Any = None,
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
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SolverResult:
    """CRM with a TV prior on the particle: ``min ½‖A_CRM x − b‖² + λ TV(S·h)`` by ADMM + CG.

    :func:`~cryowedge.solvers.tv_admm` with ``reg_operator = ∇ ∘ S ∘ (slot 0)``: the
    backgrounds are not regularised; ``∇`` runs over the volume axes longer than 1 (so a 2D
    problem gets 2D TV). ``regularizer="tv-aniso"`` or ``"l1"`` (then ``L = S ∘ slot 0``) as in
    ``tv_admm``; ``lam`` is in the units of ``½‖A x − b‖²`` for the given data.
    """
    op, data = resolve_problem(operator, data)
    n = op.n_copies
    select = SlotSelect(n + 1, op.volume_shape, 0)
    reg = MaskOperator(op.support) @ select
    if regularizer != "l1":
        axes = [k for k, size in enumerate(op.volume_shape) if size > 1]
        reg = FiniteDifference(op.volume_shape, axes) @ reg
    return tv_admm(
        op,
        data,
        x0=x0,
        n_iter=n_iter,
        relaxation=relaxation,
        positivity=positivity,
        callback=callback,
        tol=tol,
        lam=lam,
        regularizer=regularizer,
        rho=rho,
        adaptive_rho=adaptive_rho,
        cg_iter=cg_iter,
        cg_tol=cg_tol,
        reg_operator=reg,
        device=device,
        dtype=dtype,
    )


#: CRM solvers by their ``cryowedge crm run --method`` name (module notes: why a table apart).
CRM_SOLVERS = {"sart": crm_sart, "sirt": crm_sirt, "kaczmarz": crm_kaczmarz, "tv": crm_tv}
