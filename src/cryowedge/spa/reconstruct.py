"""Model-based SPA reconstruction on the Toeplitz normal operator (thesis Ch. 4.1 and 4.3).

Problem (thesis eq. 4.9, with the optional non-negativity of eq. 4.42)::

    ĉ_s = argmin_c ½‖H_s c − b‖² + λ ‖∇c‖₂,₁  [+ ι_{c ≥ 0}(c)]

``c`` are the KBWF coefficients on the grid of step ``s`` (:mod:`cryowedge.spa.basis`), ``H_s``
the blob projector (:class:`~cryowedge.spa.projector.SpaProjector`) and ``∇`` forward
differences **on the coefficient grid** with Neumann boundary
(:class:`~cryowedge.operators.elementary.FiniteDifference`), as the thesis writes the TV
(``‖L_s c_s‖``, ``L_s = ∇`` on ``Ω_s``). The volume on the fine grid is :func:`expand` of ``c``.

Only ``HᵀH`` (as the Toeplitz convolution ``T`` of :class:`ToeplitzNormalOperator`, built once)
and ``Hᵀb`` (Theorem 2, :func:`fast_adjoint`, computed once) enter the iterations, so their cost
does not depend on the number of particles. The data term is evaluated without projecting:
``½‖Hc − b‖² = ½ cᵀTc − cᵀHᵀb + ½‖b‖²``. ``T`` treats the detector as unbounded (Theorem 1), so
the data outside the box count as zeros: the particle must lie inside the box (it does in
extracted particles).

Solvers (scaled-dual ADMM, the sign convention of thesis.md §2.1; ``y⁰ = 0``, §13 item 3):

* :func:`admm_cg` — thesis Algorithm 2: ``n_admm`` outer iterations (30), each solving
  ``(T + ρLᵀL [+ ρI]) c = Hᵀb + ρLᵀ(u − y_u) [+ ρ(v − y_v)]`` by ``n_cg`` (7) warm-started CG steps;
  ``u = prox_{(λ/ρ)‖·‖₂,₁}(Lc + y_u)``, ``v = max(c + y_v, 0)``.
* :func:`ilf_admm` — the inner-loop-free ADMM of thesis §4.3 (Algorithm 6, eq. 4.55): the extra
  split ``w = (A − T)^{1/2} c`` with ``A = a·I ⪰ T`` turns the linear step into
  ``(a + ρ_v) c + ρLᵀL c = Hᵀb + (aI − T)c^k + ρLᵀ(u − y_u) + ρ_v(v − y_v)``, solved **exactly**
  by one fast cosine transform: with Neumann forward differences ``LᵀL`` is diagonal in the
  DCT-II basis (eigenvalues ``Σ_d 4 sin²(π k_d / 2n)``); the thesis uses a periodic ``L`` and the
  FFT instead. Keeping the Neumann ``L`` makes both solvers minimise the *same* objective. The
  updates are ordered c, then u/v, then the duals (Algorithm 6 orders u/v first; the sequences are
  the same up to relabelling). ``a`` is by default the largest eigenvalue of ``T``'s circulant
  embedding (``max |FFT(kernel)|``: a safe bound, thesis.md §6.4) or, by default, ``1.01 ‖T‖``
  by power iteration (the thesis's ``A = ‖H‖² I``).

Both report through the project's callbacks (:class:`~cryowedge.solvers.IterationInfo`): the
objective of the current iterate (``v`` with positivity, ``c`` otherwise), the residual
``‖Hc − b‖``, and in ``extras`` the algorithm's wall time ``time_s`` (objective evaluation
excluded) and the cumulative count of ``T`` applications ``normal_applications`` — the cost unit
of thesis §6.1 (ADMM-CG: ``n_cg`` per iteration; ILF: one, plus one DCT pair).

Defaults (research/thesis.md §4.2, §10): KBWF(4, 19, 2), 30 ADMM × 7 CG, λ swept over
10⁻² … 10² (:func:`lambda_sweep`). The thesis sets ρ "proportional to λ" without the factor;
here ``ρ = 100·λ`` for both splits: over factors 10–1000 it gave the lowest objective after
30 × 7 iterations for λ = 1, 10, 100 on simulated 16³ (P = 60) and 32³ (P = 500) data sets
(within 0.2 % of the minimum; 10·λ was up to 1.5 % off at λ = 100). The data
are divided by their standard deviation before solving (``normalize=True``; the volume is
multiplied back), so λ is unit-free (docs/conventions.md, "Regularisation weights").
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import torch

from cryowedge.io.mrc import write_mrc
from cryowedge.metrics.fourier import FSCResult, fourier_shell_correlation
from cryowedge.operators.elementary import FiniteDifference
from cryowedge.solvers._common import Callback, IterationInfo, SolverResult, report
from cryowedge.spa.basis import (
    RECONSTRUCTION_BLOB,
    KaiserBesselBlob,
    check_scale,
    coarse_size,
    expand,
    refine_coefficients,
)
from cryowedge.spa.ctf_model import correct_ctf, stack_ctfs
from cryowedge.spa.particles import ParticleStack
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.toeplitz import ToeplitzNormalOperator, fast_adjoint, toeplitz_kernel

__all__ = [
    "CTF_MODES",
    "SpaProblem",
    "SpaReconstruction",
    "LambdaSweep",
    "HalfMapResult",
    "AngularErrorResult",
    "build_problem",
    "admm_cg",
    "ilf_admm",
    "neumann_solve",
    "spa_objective",
    "reconstruct_spa",
    "reconstruct_multiscale",
    "lambda_sweep",
    "half_map_reconstruction",
    "compare_ilf_admm_cg",
    "angular_error_experiment",
    "THESIS_LAMBDAS",
]

logger = logging.getLogger(__name__)

#: How the CTF enters: ``"auto"`` (phase-flip the images when the stack has CTF parameters, else
#: nothing), ``"model"`` (the CTF is part of ``H``: exact, but the Toeplitz kernel then costs
#: ``O(P (2n)³)`` look-ups), ``"phase_flip"``/``"wiener"`` (correct the images first, no CTF in
#: ``H``), ``"none"`` (ignore it).
CTF_MODES = ("auto", "model", "phase_flip", "wiener", "none")

#: The thesis's λ sweep (§4.2): five powers of ten.
THESIS_LAMBDAS = (1e-2, 1e-1, 1.0, 1e1, 1e2)

#: ``ρ = RHO_PER_LAMBDA · λ`` by default (the thesis: "ρ proportional to λ").
RHO_PER_LAMBDA = 100.0


# ---------------------------------------------------------------------------- the problem
@dataclass(eq=False)
class SpaProblem:
    """Everything the iterations need, built once per data set and scale.

    Attributes
    ----------
    normal : ToeplitzNormalOperator
        ``T ≈ HᵀH`` on the ``(n_s, n_s, n_s)`` coefficient grid.
    atb : torch.Tensor
        ``(n_s, n_s, n_s)`` ``Hᵀb`` of the (normalised) data.
    data_norm2 : float
        ``‖b‖²`` of the normalised data.
    data_scale : float
        The data were divided by this (their standard deviation, or 1); volumes are multiplied back.
    box_size : int
        Fine grid ``n`` (the image size).
    scale : int
        Coefficient grid step ``s``.
    blob : KaiserBesselBlob
        Basis.
    pixel_size_angstrom : float
        Voxel size (Å).
    n_particles : int
        Images used.
    timings : dict
        ``kernel_s`` and ``adjoint_s`` (seconds).
    """

    normal: ToeplitzNormalOperator
    atb: torch.Tensor
    data_norm2: float
    data_scale: float
    box_size: int
    scale: int
    blob: KaiserBesselBlob
    pixel_size_angstrom: float
    n_particles: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def coefficient_shape(self) -> tuple[int, int, int]:
        """``(n_s, n_s, n_s)``."""
        return tuple(self.atb.shape)  # type: ignore[return-value]

    def volume(self, coefficients: torch.Tensor) -> np.ndarray:
        """``(n, n, n)`` float32 volume of ``coefficients`` in the units of the data."""
        v = expand(coefficients.to(torch.float64), self.blob, self.scale, self.box_size)
        return (v * self.data_scale).to(torch.float32).cpu().numpy()


def _check_lam(lam: float) -> float:
    lam = float(lam)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(
            f"lam (the TV weight λ) must be a finite number >= 0, got {lam!r}; 0 gives least "
            "squares."
        )
    return lam


def _check_stack(stack: Any, need_rotations: bool = True) -> ParticleStack:
    if not isinstance(stack, ParticleStack):
        raise ValueError(
            f"expected a ParticleStack (cryowedge.spa.particles), got {type(stack).__name__}."
        )
    if need_rotations and stack.rotations is None:
        raise ValueError(
            "the particle stack has no orientations (rotations is None); reconstruction needs "
            "rlnAngleRot/Tilt/Psi or rotations= (run an angular assignment first)."
        )
    return stack


def _ctf_mode(stack: ParticleStack, ctf: str) -> str:
    if ctf not in CTF_MODES:
        raise ValueError(f"ctf must be one of {', '.join(CTF_MODES)}, got {ctf!r}.")
    if ctf == "auto":
        return "phase_flip" if stack.ctf is not None else "none"
    if ctf in ("model", "phase_flip", "wiener") and stack.ctf is None:
        raise ValueError(
            f"ctf={ctf!r} needs CTF parameters, but the stack has none (no rlnDefocusU/V); use "
            "ctf='none' or read the STAR file with its defocus columns."
        )
    return ctf


def build_problem(
    stack: ParticleStack,
    *,
    scale: int = 1,
    blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
    ctf: str = "auto",
    normalize: bool = True,
    adjoint_oversample: int = 4,
    batch_size: int = 1024,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> SpaProblem:
    """Build the Toeplitz kernel and ``Hᵀb`` of a particle stack at scale ``s`` (Alg. 2, steps 1–3).

    Parameters
    ----------
    stack : ParticleStack
        ``P`` images ``(P, n, n)`` with rotations (and shifts, CTF). The volume is ``n³``.
    scale : int
        Coefficient grid step ``s`` (1, 2, 3, 4…); ``coarse_size(n, s)`` coefficients per axis.
    blob : KaiserBesselBlob
        Reconstruction basis (default KBWF(4, 19, 2)).
    ctf : str
        See :data:`CTF_MODES` (default ``"auto"``: phase flip when the stack has a CTF; the thesis
        notes that modelling the PSF is only useful at ``s = 1``).
    normalize : bool
        Divide the images by their standard deviation (λ unit-free).
    adjoint_oversample : int
        Fine-grid factor of the fast ``Hᵀb`` (4: relative error ~5e-5).
    batch_size : int
        Particles per ``Hᵀb`` batch (memory).
    dtype, device
        Working precision and device (float64 for exact tests).

    Returns
    -------
    SpaProblem
    """
    stack = _check_stack(stack)
    s = check_scale(scale)
    mode = _ctf_mode(stack, ctf)
    n = stack.image_size
    n_s = coarse_size(n, s)
    n_proj = stack.n_particles
    t0 = time.perf_counter()
    images = stack.images
    if mode in ("phase_flip", "wiener"):
        images = correct_ctf(stack, mode)
    data_scale = 1.0
    if normalize:
        sq = total = 0.0
        mean = float(np.mean(images, dtype=np.float64))
        for p0 in range(0, n_proj, batch_size):
            sq += float(np.square(images[p0 : p0 + batch_size] - mean, dtype=np.float64).sum())
            total += images[p0 : p0 + batch_size].size
        data_scale = math.sqrt(sq / total) if sq > 0 else 1.0
    ctf_fn: Callable[[np.ndarray], np.ndarray] | None = None
    if mode == "model":

        def ctf_fn(indices: np.ndarray) -> np.ndarray:
            return stack_ctfs(stack, indices)

    projector = SpaProjector(
        n_s,
        np.array(stack.rotations),
        np.array(stack.shifts_px),
        blob=blob,
        scale=s,
        detector_size=n,
        ctf=ctf_fn,
        dtype=dtype,
        device=device,
    )
    atb = torch.zeros((n_s,) * 3, dtype=dtype, device=projector.device)
    norm2 = 0.0
    for p0 in range(0, n_proj, batch_size):
        p1 = min(p0 + batch_size, n_proj)
        b = torch.as_tensor(np.asarray(images[p0:p1], dtype=np.float64) / data_scale)
        norm2 += float(torch.sum(b * b))
        sub = projector if (p0 == 0 and p1 == n_proj) else projector.subset(np.arange(p0, p1))
        atb += fast_adjoint(sub, b, oversample=adjoint_oversample)
    t1 = time.perf_counter()
    kernel = toeplitz_kernel(projector)
    normal = ToeplitzNormalOperator(kernel, dtype=dtype, device=projector.device)
    t2 = time.perf_counter()
    logger.info(
        "SPA problem: %d particles, n=%d, s=%d (%d³ coefficients), ctf=%s; Hᵀb %.2f s, kernel "
        "%.2f s",
        n_proj,
        n,
        s,
        n_s,
        mode,
        t1 - t0,
        t2 - t1,
    )
    return SpaProblem(
        normal=normal,
        atb=atb,
        data_norm2=norm2,
        data_scale=data_scale,
        box_size=n,
        scale=s,
        blob=blob,
        pixel_size_angstrom=stack.pixel_size_angstrom,
        n_particles=n_proj,
        timings={"adjoint_s": t1 - t0, "kernel_s": t2 - t1},
    )


# ---------------------------------------------------------------------------- pieces
def _neumann_eigenvalues(n: int, size: int, *, dtype, device) -> torch.Tensor:
    """``4 sin²(π k / (2n))`` for ``k = 0 … size − 1`` (Laplacian eigenvalues)."""
    k = torch.arange(size, dtype=torch.float64, device=device)
    return (4.0 * torch.sin(math.pi * k / (2 * n)) ** 2).to(dtype)


def neumann_solve(
    rhs: torch.Tensor, diagonal: float, rho: float, *, backend: str = "auto"
) -> torch.Tensor:
    """Solve ``(diagonal·I + ρ ∇ᵀ∇) x = rhs`` exactly; ``∇`` = Neumann forward differences.

    ``∇ᵀ∇`` (of :class:`~cryowedge.operators.elementary.FiniteDifference` over all axes) is the
    Neumann Laplacian, diagonal in the DCT-II basis with eigenvalues ``Σ_d 4 sin²(π k_d / 2n_d)``.

    Parameters
    ----------
    rhs : torch.Tensor
        ``(n0, n1, n2)`` right-hand side.
    diagonal : float
        ``> 0`` (or ``≥ 0`` with ``ρ > 0`` and a mean-free ``rhs``).
    rho : float
        ``≥ 0``.
    backend : {"auto", "scipy", "torch"}
        ``"scipy"``: ``scipy.fft.dctn`` (CPU); ``"torch"``: an FFT of the even (mirrored)
        extension on a ``(2n)³`` grid (any device); ``"auto"``: scipy on the CPU.

    Returns
    -------
    torch.Tensor
        ``x``, same shape, dtype and device as ``rhs``.
    """
    shape = tuple(rhs.shape)
    if backend == "auto":
        backend = "scipy" if rhs.device.type == "cpu" else "torch"
    if backend == "scipy":
        x = rhs.detach().cpu().numpy()  # float32 stays float32 (scipy.fft keeps the precision)
        spec = scipy.fft.dctn(x, type=2, norm="ortho")
        denom = np.full((1, 1, 1), float(diagonal))
        for i, n in enumerate(shape):
            eig = 4.0 * np.sin(np.pi * np.arange(n) / (2 * n)) ** 2
            denom = denom + rho * eig.reshape([n if d == i else 1 for d in range(3)])
        out = scipy.fft.idctn(spec / denom.astype(x.dtype), type=2, norm="ortho")
        return torch.as_tensor(out, dtype=rhs.dtype, device=rhs.device)
    if backend != "torch":
        raise ValueError(f"backend must be 'auto', 'scipy' or 'torch', got {backend!r}.")
    ext = rhs
    for d in range(3):
        ext = torch.cat([ext, torch.flip(ext, dims=(d,))], dim=d)
    big = tuple(2 * n for n in shape)
    spec = torch.fft.rfftn(ext, s=big)
    denom = torch.full(spec.shape, float(diagonal), dtype=rhs.dtype, device=rhs.device)
    for i, n in enumerate(shape):
        size = spec.shape[i]
        eig = _neumann_eigenvalues(n, size, dtype=rhs.dtype, device=rhs.device)
        denom = denom + rho * eig.reshape([size if d == i else 1 for d in range(3)])
    out = torch.fft.irfftn(spec / denom, s=big)
    return out[: shape[0], : shape[1], : shape[2]].contiguous()


def _gradient_magnitude(g: torch.Tensor) -> torch.Tensor:
    """``‖g_n‖₂`` over the 3 gradient components (axis 0) of ``g (3, …)``.

    Written out because ``torch.linalg.vector_norm(g, dim=0)`` is ~100× slower on the CPU
    (50 ms against 0.4 ms for 3 × 64³ float32 in torch 2.13).
    """
    return torch.addcmul(torch.addcmul(g[0] * g[0], g[1], g[1]), g[2], g[2]).sqrt_()


def _group_shrink(g: torch.Tensor, threshold: float) -> torch.Tensor:
    """Prox of ``threshold·‖·‖₂,₁`` (thesis eq. 2.19), groups along axis 0 of ``g (3, …)``."""
    mag = _gradient_magnitude(g).clamp_min_(torch.finfo(g.dtype).tiny)
    return g * (1.0 - threshold / mag).clamp_min_(0.0)


def spa_objective(
    problem: SpaProblem, c: torch.Tensor, lam: float, tc: torch.Tensor | None = None
) -> tuple[float, float]:
    """``(½‖Hc − b‖² + λ‖∇c‖₂,₁, ‖Hc − b‖)`` from ``T`` (``tc = Tc`` if known)."""
    if tc is None:
        tc = problem.normal.forward(c)
    data = 0.5 * float(torch.sum(c * tc)) - float(torch.sum(c * problem.atb))
    data += 0.5 * problem.data_norm2
    data = max(data, 0.0)
    reg = 0.0
    if lam > 0:
        reg = lam * float(_gradient_magnitude(FiniteDifference(tuple(c.shape)).forward(c)).sum())
    return data + reg, math.sqrt(2.0 * data)


@dataclass
class _State:
    """ADMM variables (scaled duals) shared by both solvers."""

    c: torch.Tensor
    tc: torch.Tensor
    u: torch.Tensor | None
    yu: torch.Tensor | None
    v: torch.Tensor | None
    yv: torch.Tensor | None


def _init_state(
    problem: SpaProblem, x0: Any, lam: float, positivity: bool
) -> tuple[_State, FiniteDifference]:
    shape = problem.coefficient_shape
    atb = problem.atb
    if x0 is None:
        c = torch.zeros_like(atb)
    else:
        c = torch.as_tensor(x0 if isinstance(x0, torch.Tensor) else np.asarray(x0))
        c = c.to(dtype=atb.dtype, device=atb.device).clone()
        if tuple(c.shape) != shape:
            raise ValueError(
                f"x0 has shape {tuple(c.shape)}, but the coefficient grid is {shape} (coarse_size"
                "(n, scale) per axis); use refine_coefficients to change scales."
            )
    grad = FiniteDifference(shape)
    tc = problem.normal.forward(c) if x0 is not None else torch.zeros_like(c)
    u = yu = v = yv = None
    if lam > 0:
        u = grad.forward(c)
        yu = torch.zeros_like(u)
    if positivity:
        v = c.clamp(min=0.0)
        yv = torch.zeros_like(c)
    return _State(c, tc, u, yu, v, yv), grad


def _split_rhs(
    problem: SpaProblem, st: _State, grad: FiniteDifference, rho: float, rho_v: float
) -> torch.Tensor:
    rhs = problem.atb.clone()
    if st.u is not None:
        rhs.add_(grad.adjoint(st.u - st.yu), alpha=rho)
    if st.v is not None:
        rhs.add_(st.v - st.yv, alpha=rho_v)
    return rhs


def _prox_and_duals(
    st: _State, grad: FiniteDifference, lam: float, rho: float
) -> tuple[float, float]:
    """u, v and dual updates; returns the primal and dual residual norms."""
    primal = dual = 0.0
    if st.u is not None:
        lc = grad.forward(st.c)
        u_old = st.u
        st.u = _group_shrink(lc + st.yu, lam / rho)
        st.yu.add_(lc - st.u)
        primal += float(torch.sum((lc - st.u) ** 2))
        dual += rho**2 * float(torch.sum(grad.adjoint(st.u - u_old) ** 2))
    if st.v is not None:
        v_old = st.v
        st.v = (st.c + st.yv).clamp(min=0.0)
        st.yv.add_(st.c - st.v)
        primal += float(torch.sum((st.c - st.v) ** 2))
        dual += rho**2 * float(torch.sum((st.v - v_old) ** 2))
    return math.sqrt(primal), math.sqrt(dual)


def _report(
    problem: SpaProblem,
    st: _State,
    result: SolverResult,
    callback: Callback | None,
    tol: float | None,
    *,
    k: int,
    n_iter: int,
    lam: float,
    previous: torch.Tensor,
    extras: dict[str, float],
) -> bool:
    out = st.v if st.v is not None else st.c
    tout = problem.normal.forward(out) if st.v is not None else st.tc
    objective, res = spa_objective(problem, out, lam, tout)
    denom = float(torch.linalg.vector_norm(previous))
    change = float(torch.linalg.vector_norm(out - previous))
    rel = change / denom if denom > 0 else (0.0 if change == 0 else float("inf"))
    info = IterationInfo(
        k, n_iter, out, residual_norm=res, objective=objective, relative_change=rel, extras=extras
    )
    return report(result, callback, info, tol)


def _check_solver_args(
    problem: SpaProblem, lam: float, rho: float | None, n_iter: int, name: str
) -> tuple[float, float]:
    if not isinstance(problem, SpaProblem):
        raise ValueError(
            f"problem must be a SpaProblem from build_problem, got {type(problem).__name__}."
        )
    lam = _check_lam(lam)
    if rho is None:
        # λ = 0 (positivity only): a penalty on the scale of T (1 % of its largest eigenvalue).
        rho = (
            RHO_PER_LAMBDA * lam if lam > 0 else 1e-2 * float(problem.normal.kernel_fft.abs().max())
        )
    rho = float(rho)
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho (the ADMM penalty) must be > 0, got {rho!r}.")
    check_scale(n_iter, name)
    return lam, rho


# ---------------------------------------------------------------------------- ADMM-CG
def admm_cg(
    problem: SpaProblem,
    *,
    lam: float = 1.0,
    rho: float | None = None,
    n_admm: int = 30,
    n_cg: int = 7,
    positivity: bool = False,
    adaptive_rho: bool = False,
    recompute_residual: bool = False,
    x0: Any = None,
    callback: Callback | None = None,
    tol: float | None = None,
) -> SolverResult:
    """TV-regularised SPA reconstruction by ADMM with inner CG on ``T`` (thesis Algorithm 2).

    Parameters
    ----------
    problem : SpaProblem
        From :func:`build_problem` (kernel and ``Hᵀb`` already built; reused across calls).
    lam : float
        TV weight λ ≥ 0 (0: least squares by CG, ``n_admm·n_cg`` steps in all).
    rho : float, optional
        ADMM penalty for both splits (default ``100·λ``; with λ = 0, 1 % of ``T``'s largest
        circulant eigenvalue).
    n_admm, n_cg : int
        Outer iterations and CG steps per linear solve (thesis: 30 and 7).
    positivity : bool
        Constrain ``c ≥ 0`` (an extra split ``v = c``); the result is then exactly ``≥ 0``.
    adaptive_rho : bool
        Residual balancing (ρ ×2 or ÷2 when the primal and dual residuals differ by 10×).
    recompute_residual : bool
        Apply ``T`` to ``c`` at the start of every CG solve for its initial residual, as a
        textbook CG does (``n_cg + 1`` applications per iteration: the thesis's cost model,
        §6.1). By default ``Tc`` is instead carried along the CG updates
        (``Tc ← Tc + α·Tp``), so an iteration costs ``n_cg`` applications.
    x0 : array or tensor, optional
        Initial coefficients ``(n_s, n_s, n_s)`` (e.g. from a coarser scale).
    callback, tol
        As for the project's solvers (a callback returning True stops; ``tol`` on the relative
        change).

    Returns
    -------
    SolverResult
        ``x`` = coefficients ``(n_s, n_s, n_s)``; history: ``objective``, ``residual_norm``,
        ``relative_change``, ``time_s``, ``normal_applications``, ``primal_residual``,
        ``dual_residual``, ``rho``.
    """
    lam, rho = _check_solver_args(problem, lam, rho, n_admm, "n_admm")
    check_scale(n_cg, "n_cg")
    st, grad = _init_state(problem, x0, lam, positivity)
    t_alg = 0.0
    n_apply = 1 if x0 is not None else 0
    result = SolverResult(x=st.c, n_iter=0, history={})
    n_admm_eff = n_admm
    for k in range(1, n_admm_eff + 1):
        t0 = time.perf_counter()
        previous = (st.v if st.v is not None else st.c).clone()
        rho_v = rho if positivity else 0.0
        rhs = _split_rhs(problem, st, grad, rho if lam > 0 else 0.0, rho_v)
        if recompute_residual:
            st.tc = problem.normal.forward(st.c)
            n_apply += 1
        n_apply += _cg(problem, st, grad, rhs, rho if lam > 0 else 0.0, rho_v, n_cg)
        primal, dual = _prox_and_duals(st, grad, lam, rho)
        t_alg += time.perf_counter() - t0
        extras = {
            "time_s": t_alg,
            "normal_applications": float(n_apply),
            "primal_residual": primal,
            "dual_residual": dual,
            "rho": rho,
        }
        if _report(
            problem,
            st,
            result,
            callback,
            tol,
            k=k,
            n_iter=n_admm_eff,
            lam=lam,
            previous=previous,
            extras=extras,
        ):
            break
        if adaptive_rho and (st.u is not None or st.v is not None):
            factor = 2.0 if primal > 10.0 * dual else 0.5 if dual > 10.0 * primal else 1.0
            if factor != 1.0:
                rho *= factor
                for y in (st.yu, st.yv):
                    if y is not None:
                        y.div_(factor)
    return result


def _cg(
    problem: SpaProblem,
    st: _State,
    grad: FiniteDifference,
    rhs: torch.Tensor,
    rho: float,
    rho_v: float,
    n_iter: int,
) -> int:
    """``n_iter`` CG steps on ``(T + ρLᵀL + ρ_v I) c = rhs`` from ``st.c``; keeps ``st.tc = Tc``.

    Returns the number of ``T`` applications (``n_iter``; the initial residual reuses ``Tc``).
    """
    t = problem.normal

    def lhs_rest(p: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(p)
        if rho:
            out.add_(grad.adjoint(grad.forward(p)), alpha=rho)
        if rho_v:
            out.add_(p, alpha=rho_v)
        return out

    c, tc = st.c, st.tc
    r = rhs - tc - lhs_rest(c)
    p = r.clone()
    rr = float(torch.sum(r * r))
    threshold = (1e-12 * float(torch.linalg.vector_norm(rhs))) ** 2
    applied = 0
    for _ in range(n_iter):
        if rr <= threshold:
            break
        tp = t.forward(p)
        applied += 1
        q = tp + lhs_rest(p)
        pq = float(torch.sum(p * q))
        if pq <= 0.0:
            break
        alpha = rr / pq
        c.add_(p, alpha=alpha)
        tc.add_(tp, alpha=alpha)
        r.sub_(q, alpha=alpha)
        rr_new = float(torch.sum(r * r))
        p.mul_(rr_new / rr).add_(r)
        rr = rr_new
    return applied


# ---------------------------------------------------------------------------- ILF-ADMM
def _majorant(problem: SpaProblem, majorant: str | float, n_power: int = 50) -> float:
    """``a`` with ``aI ⪰ T``: circulant bound, power iteration (+1 %), or a given number."""
    if isinstance(majorant, (int, float)) and not isinstance(majorant, bool):
        a = float(majorant)
        if not (math.isfinite(a) and a > 0):
            raise ValueError(f"majorant must be > 0, got {majorant!r}.")
        return a
    if majorant == "circulant":
        return float(problem.normal.kernel_fft.abs().max())
    if majorant == "power":
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(problem.coefficient_shape, generator=gen, dtype=torch.float64)
        x = x.to(dtype=problem.atb.dtype, device=problem.atb.device)
        est = 0.0
        for _ in range(n_power):
            y = problem.normal.forward(x)
            est = float(torch.linalg.vector_norm(y) / torch.linalg.vector_norm(x))
            x = y / torch.linalg.vector_norm(y)
        return 1.01 * est
    raise ValueError(
        f"majorant must be 'circulant', 'power' or a positive number, got {majorant!r}."
    )


def ilf_admm(
    problem: SpaProblem,
    *,
    lam: float = 1.0,
    rho: float | None = None,
    n_iter: int = 200,
    positivity: bool = True,
    majorant: str | float = "power",
    adaptive_rho: bool = False,
    x0: Any = None,
    callback: Callback | None = None,
    tol: float | None = None,
) -> SolverResult:
    """Inner-loop-free ADMM (thesis §4.3, Algorithm 6, eq. 4.55) on the Toeplitz operator.

    Parameters
    ----------
    problem : SpaProblem
        From :func:`build_problem`.
    lam : float
        TV weight λ ≥ 0.
    rho : float, optional
        Penalty ρ_u = ρ_v = ρ (thesis; default as :func:`admm_cg`); ρ_w = 1.
    n_iter : int
        Iterations (thesis Fig. 4.16: 200).
    positivity : bool
        The non-negativity split ``v = c`` of eq. 4.42 (default on, as in the thesis).
    majorant : {"circulant", "power"} or float
        ``a`` in ``A = aI ⪰ T``: ``1.01 ×`` a 50-step power iteration for ``‖T‖ = ‖H‖²`` (the
        thesis's ``A = ‖H‖² I``; default), ``max |FFT|`` of the circulant embedding of ``T``
        (a guaranteed bound, thesis.md §6.4, but ~2.5× larger in tests, so slower), or a number.
    adaptive_rho, x0, callback, tol
        As for :func:`admm_cg`.

    Returns
    -------
    SolverResult
        As :func:`admm_cg`; ``extras`` also hold ``majorant``.
    """
    lam, rho = _check_solver_args(problem, lam, rho, n_iter, "n_iter")
    t0 = time.perf_counter()
    a = _majorant(problem, majorant)
    st, grad = _init_state(problem, x0, lam, positivity)
    t_alg = time.perf_counter() - t0
    n_apply = 1 if x0 is not None else 0
    result = SolverResult(x=st.c, n_iter=0, history={})
    for k in range(1, n_iter + 1):
        t0 = time.perf_counter()
        previous = (st.v if st.v is not None else st.c).clone()
        rho_u = rho if lam > 0 else 0.0
        rho_v = rho if positivity else 0.0
        rhs = _split_rhs(problem, st, grad, rho_u, rho_v)
        rhs.add_(st.c, alpha=a).sub_(st.tc)  # + (aI − T) c^k
        st.c = neumann_solve(rhs, a + rho_v, rho_u)
        st.tc = problem.normal.forward(st.c)
        n_apply += 1
        primal, dual = _prox_and_duals(st, grad, lam, rho)
        t_alg += time.perf_counter() - t0
        extras = {
            "time_s": t_alg,
            "normal_applications": float(n_apply),
            "primal_residual": primal,
            "dual_residual": dual,
            "rho": rho,
            "majorant": a,
        }
        if _report(
            problem,
            st,
            result,
            callback,
            tol,
            k=k,
            n_iter=n_iter,
            lam=lam,
            previous=previous,
            extras=extras,
        ):
            break
        if adaptive_rho and (st.u is not None or st.v is not None):
            factor = 2.0 if primal > 10.0 * dual else 0.5 if dual > 10.0 * primal else 1.0
            if factor != 1.0:
                rho *= factor
                for y in (st.yu, st.yv):
                    if y is not None:
                        y.div_(factor)
    return result


# ---------------------------------------------------------------------------- workflows
METHODS = ("admm_cg", "ilf")


@dataclass(eq=False)
class SpaReconstruction:
    """A reconstruction: the volume, its coefficients and the solver's record.

    Attributes
    ----------
    volume : numpy.ndarray
        ``(n, n, n)`` float32 map in the units of the images (``expand`` of the coefficients).
    coefficients : torch.Tensor
        ``(n_s, n_s, n_s)`` coefficients (normalised data units).
    result : SolverResult
        Iterations, objective history, times.
    problem : SpaProblem
        The kernel and ``Hᵀb`` used (reusable for another λ).
    lam : float
        λ.
    method : str
        ``"admm_cg"`` or ``"ilf"``.
    """

    volume: np.ndarray
    coefficients: torch.Tensor
    result: SolverResult
    problem: SpaProblem
    lam: float
    method: str

    @property
    def scale(self) -> int:
        """Coefficient grid step ``s``."""
        return self.problem.scale

    @property
    def pixel_size_angstrom(self) -> float:
        """Voxel size (Å)."""
        return self.problem.pixel_size_angstrom

    def write(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write the volume as MRC with its voxel size."""
        return write_mrc(
            path, self.volume, voxel_size_angstrom=self.pixel_size_angstrom, overwrite=overwrite
        )


def _solve(
    problem: SpaProblem,
    method: str,
    lam: float,
    *,
    n_iter: int | None,
    n_cg: int,
    **kwargs: Any,
) -> SolverResult:
    if method == "admm_cg":
        return admm_cg(
            problem, lam=lam, n_admm=30 if n_iter is None else n_iter, n_cg=n_cg, **kwargs
        )
    if method == "ilf":
        return ilf_admm(problem, lam=lam, n_iter=200 if n_iter is None else n_iter, **kwargs)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")


def reconstruct_spa(
    stack: ParticleStack | None = None,
    *,
    problem: SpaProblem | None = None,
    method: str = "admm_cg",
    lam: float = 1.0,
    scale: int = 1,
    n_iter: int | None = None,
    n_cg: int = 7,
    positivity: bool | None = None,
    rho: float | None = None,
    x0: Any = None,
    callback: Callback | None = None,
    blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
    ctf: str = "auto",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    **solver_kwargs: Any,
) -> SpaReconstruction:
    """Reconstruct a particle stack at one scale (builds the problem unless given one).

    Parameters
    ----------
    stack : ParticleStack, optional
        Images with poses; not needed when ``problem`` is given.
    problem : SpaProblem, optional
        A problem from :func:`build_problem` to reuse (its kernel and ``Hᵀb``).
    method : {"admm_cg", "ilf"}
        :func:`admm_cg` (default; 30 × ``n_cg``) or :func:`ilf_admm` (200 iterations, positivity).
    lam : float
        TV weight λ (unit-free: data normalised).
    scale : int
        Coefficient grid step (ignored with ``problem``).
    n_iter : int, optional
        Outer iterations (default 30 for ADMM-CG, 200 for ILF).
    n_cg : int
        CG steps per ADMM iteration (ADMM-CG).
    positivity : bool, optional
        ``c ≥ 0``; default: off for ADMM-CG (thesis Alg. 2), on for ILF (thesis eq. 4.42).
    rho, x0, callback
        Solver options.
    blob, ctf, dtype, device
        Problem options (:func:`build_problem`).

    Returns
    -------
    SpaReconstruction
    """
    lam = _check_lam(lam)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    if problem is None:
        if stack is None:
            raise ValueError("pass a particle stack or a problem from build_problem.")
        problem = build_problem(stack, scale=scale, blob=blob, ctf=ctf, dtype=dtype, device=device)
    kw = dict(solver_kwargs, rho=rho, x0=x0, callback=callback)
    kw["positivity"] = (method == "ilf") if positivity is None else bool(positivity)
    result = _solve(problem, method, lam, n_iter=n_iter, n_cg=n_cg, **kw)
    return SpaReconstruction(
        volume=problem.volume(result.x),
        coefficients=result.x,
        result=result,
        problem=problem,
        lam=lam,
        method=method,
    )


def reconstruct_multiscale(
    stack: ParticleStack,
    *,
    scales: Sequence[int] = (4, 2, 1),
    lam: float | Sequence[float] = 1.0,
    method: str = "admm_cg",
    **kwargs: Any,
) -> list[SpaReconstruction]:
    """Coarse-to-fine reconstruction: each scale starts from the previous one's function.

    The coefficients of scale ``s`` are re-expanded in the basis of the next scale ``s'``
    (:func:`~cryowedge.spa.basis.refine_coefficients`; ``s'`` must divide ``s``) and used as
    ``x0`` (thesis §4.4: "use multiscale reconstruction early, increasing s⁻¹ progressively").

    Parameters
    ----------
    stack : ParticleStack
        Images with poses.
    scales : sequence of int
        Decreasing scales, each dividing the previous (default 4, 2, 1).
    lam : float or sequence of float
        λ for every scale, or one per scale.
    method, kwargs
        As for :func:`reconstruct_spa`.

    Returns
    -------
    list of SpaReconstruction
        One per scale, coarsest first.
    """
    scales = [check_scale(s) for s in scales]
    if not scales:
        raise ValueError("scales must hold at least one scale, e.g. (4, 2, 1).")
    for a, b in zip(scales, scales[1:], strict=False):
        if a <= b or a % b:
            raise ValueError(
                f"scales must decrease and each must divide the previous one, got {scales}."
            )
    lams = [lam] * len(scales) if isinstance(lam, (int, float)) else list(lam)
    if len(lams) != len(scales):
        raise ValueError(f"give one λ or one per scale ({len(scales)}), got {len(lams)}.")
    out: list[SpaReconstruction] = []
    x0 = None
    for i, s in enumerate(scales):
        if out:
            prev = out[-1]
            x0 = refine_coefficients(
                prev.coefficients.to(torch.float64),
                prev.problem.blob,
                prev.scale,
                s,
                shape=coarse_size(stack.image_size, s),
            )
        rec = reconstruct_spa(stack, method=method, lam=lams[i], scale=s, x0=x0, **kwargs)
        out.append(rec)
    return out


@dataclass(eq=False)
class LambdaSweep:
    """Reconstructions of one problem for several λ (the kernel built once).

    Attributes
    ----------
    lams : list of float
    reconstructions : list of SpaReconstruction
    fsc : list of FSCResult or None
        FSC against the truth, when given.
    resolution_05_angstrom : list of float or None
        FSC = 0.5 resolution against the truth (Å).
    best_index : int or None
        Best λ by that resolution (ties: by the correlation coefficient with the truth).
    """

    lams: list[float]
    reconstructions: list[SpaReconstruction]
    fsc: list[FSCResult] | None = None
    resolution_05_angstrom: list[float] | None = None
    correlation: list[float] | None = None
    best_index: int | None = None

    @property
    def best(self) -> SpaReconstruction | None:
        """The best reconstruction (None without a truth)."""
        return None if self.best_index is None else self.reconstructions[self.best_index]


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else 0.0


def lambda_sweep(
    stack_or_problem: ParticleStack | SpaProblem,
    lams: Sequence[float] = THESIS_LAMBDAS,
    *,
    truth: np.ndarray | None = None,
    method: str = "admm_cg",
    scale: int = 1,
    problem_kwargs: dict[str, Any] | None = None,
    **solver_kwargs: Any,
) -> LambdaSweep:
    """Reconstruct for each λ reusing one kernel and ``Hᵀb`` (thesis §4.2: 10⁻² … 10²).

    Parameters
    ----------
    stack_or_problem : ParticleStack or SpaProblem
        The data (the problem is built once) or a built problem.
    lams : sequence of float
        λ values (each ≥ 0).
    truth : numpy.ndarray, optional
        ``(n, n, n)`` ground truth: picks the λ with the best FSC = 0.5 resolution.
    method, scale, problem_kwargs, solver_kwargs
        As for :func:`reconstruct_spa` / :func:`build_problem`.

    Returns
    -------
    LambdaSweep
    """
    lams = [_check_lam(v) for v in lams]
    if not lams:
        raise ValueError("lams must hold at least one λ.")
    if isinstance(stack_or_problem, SpaProblem):
        problem = stack_or_problem
    else:
        problem = build_problem(stack_or_problem, scale=scale, **(problem_kwargs or {}))
    if truth is not None and tuple(np.shape(truth)) != (problem.box_size,) * 3:
        raise ValueError(
            f"truth must be ({problem.box_size},)*3 like the reconstruction, got "
            f"{tuple(np.shape(truth))}."
        )
    recs = [
        reconstruct_spa(problem=problem, method=method, lam=lam, **solver_kwargs) for lam in lams
    ]
    sweep = LambdaSweep(lams=lams, reconstructions=recs)
    if truth is not None:
        sweep.fsc = [fourier_shell_correlation(r.volume, truth) for r in recs]
        px = problem.pixel_size_angstrom
        sweep.resolution_05_angstrom = [f.resolution_angstrom(0.5, px) for f in sweep.fsc]
        sweep.correlation = [_cc(r.volume, truth) for r in recs]
        keys = [
            (res, -cc)
            for res, cc in zip(sweep.resolution_05_angstrom, sweep.correlation, strict=True)
        ]
        sweep.best_index = int(min(range(len(keys)), key=keys.__getitem__))
        logger.info(
            "λ sweep: FSC-0.5 resolutions %s Å; best λ = %g",
            [round(v, 2) for v in sweep.resolution_05_angstrom],
            lams[sweep.best_index],
        )
    return sweep


@dataclass(eq=False)
class HalfMapResult:
    """Gold-standard half maps and their FSC.

    Attributes
    ----------
    half_maps : tuple of SpaReconstruction
        Reconstructions of half sets 1 and 2.
    fsc : FSCResult
        Half-map FSC.
    resolution_0143_angstrom, resolution_05_angstrom : float
        Resolution (Å) where the FSC drops below 0.143 and 0.5.
    """

    half_maps: tuple[SpaReconstruction, SpaReconstruction]
    fsc: FSCResult
    resolution_0143_angstrom: float
    resolution_05_angstrom: float

    @property
    def average(self) -> np.ndarray:
        """``(n, n, n)`` mean of the two half maps."""
        return 0.5 * (self.half_maps[0].volume + self.half_maps[1].volume)

    def write(
        self, directory: str | os.PathLike[str], *, prefix: str = "spa", overwrite: bool = True
    ) -> dict[str, Path]:
        """Write ``<prefix>_half1.mrc``, ``_half2.mrc``, ``_average.mrc`` and ``_fsc.csv``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        px = self.half_maps[0].pixel_size_angstrom
        paths = {
            "half1": self.half_maps[0].write(out / f"{prefix}_half1.mrc", overwrite=overwrite),
            "half2": self.half_maps[1].write(out / f"{prefix}_half2.mrc", overwrite=overwrite),
            "average": write_mrc(
                out / f"{prefix}_average.mrc",
                self.average,
                voxel_size_angstrom=px,
                overwrite=overwrite,
            ),
        }
        csv = out / f"{prefix}_fsc.csv"
        f = self.fsc.frequency_cycles_per_pixel
        rows = ["frequency_cycles_per_pixel,resolution_angstrom,fsc"]
        rows += [
            f"{fi:.6f},{px / fi:.4f},{ci:.6f}"
            for fi, ci in zip(f, self.fsc.correlation, strict=True)
        ]
        csv.write_text("\n".join(rows) + "\n")
        paths["fsc"] = csv
        return paths


def half_map_reconstruction(
    stack: ParticleStack,
    *,
    seed: int | None = 0,
    mask: np.ndarray | None = None,
    **kwargs: Any,
) -> HalfMapResult:
    """Reconstruct the two half sets independently and compute their FSC (thesis F25).

    Parameters
    ----------
    stack : ParticleStack
        Images with poses; half sets from ``half_sets`` (``rlnRandomSubset``) or, when absent,
        assigned at random with ``seed``.
    mask : numpy.ndarray, optional
        ``(n, n, n)`` real-space mask for the FSC (default none: unmasked FSC).
    kwargs
        As for :func:`reconstruct_spa` (method, lam, scale, …).

    Returns
    -------
    HalfMapResult
    """
    stack = _check_stack(stack)
    if stack.half_sets is None:
        stack = stack.with_random_halves(seed)
    halves = tuple(reconstruct_spa(stack.half(i), **kwargs) for i in (1, 2))
    fsc = fourier_shell_correlation(halves[0].volume, halves[1].volume, mask=mask)
    px = stack.pixel_size_angstrom
    res = HalfMapResult(
        half_maps=halves,  # type: ignore[arg-type]
        fsc=fsc,
        resolution_0143_angstrom=fsc.resolution_angstrom(0.143, px),
        resolution_05_angstrom=fsc.resolution_angstrom(0.5, px),
    )
    logger.info(
        "half-map FSC: %.2f Å at 0.143, %.2f Å at 0.5",
        res.resolution_0143_angstrom,
        res.resolution_05_angstrom,
    )
    return res


# ---------------------------------------------------------------------------- experiments
def compare_ilf_admm_cg(
    problem: SpaProblem | ParticleStack,
    *,
    lam: float,
    rho: float | None = None,
    n_iter: int = 200,
    cg_iters: Sequence[int] = (1, 3),
    positivity: bool = True,
    majorant: str | float = "power",
    recompute_residual: bool = False,
) -> dict[str, dict[str, list[float]]]:
    """Objective against wall time and iteration: ILF-ADMM vs ADMM-CG_K (thesis Fig. 4.16).

    All runs solve the same problem (same λ, ρ, positivity, start 0) for ``n_iter``
    iterations (thesis: 200; ADMM-CG with 1 and 3 CG steps). ``problem`` may be a particle
    stack (its problem is then built with the defaults of :func:`build_problem`).
    ``recompute_residual`` gives ADMM-CG the thesis's cost of ``K + 1`` applications of ``T``
    per iteration (see :func:`admm_cg`); by default it needs ``K``. The majorant's power
    iteration is counted in ILF's time.

    Returns
    -------
    dict
        ``{"ilf": h, "admm_cg1": h, "admm_cg3": h, …}``, each ``h`` with lists ``iteration``,
        ``time_s`` (algorithm time, objective evaluation excluded), ``objective`` and
        ``normal_applications``.
    """
    if isinstance(problem, ParticleStack):
        problem = build_problem(problem)
    runs: dict[str, SolverResult] = {
        "ilf": ilf_admm(
            problem, lam=lam, rho=rho, n_iter=n_iter, positivity=positivity, majorant=majorant
        )
    }
    for k in cg_iters:
        runs[f"admm_cg{k}"] = admm_cg(
            problem,
            lam=lam,
            rho=rho,
            n_admm=n_iter,
            n_cg=k,
            positivity=positivity,
            recompute_residual=recompute_residual,
        )
    out = {}
    for name, res in runs.items():
        h = res.history
        out[name] = {
            "iteration": list(range(1, len(h["objective"]) + 1)),
            "time_s": list(h["time_s"]),
            "objective": list(h["objective"]),
            "normal_applications": list(h["normal_applications"]),
        }
    return out


@dataclass(eq=False)
class AngularErrorResult:
    """FSC-0.5 resolution against angular-error variance and scale (thesis Fig. 4.2).

    Attributes
    ----------
    variances_deg2 : list of float
    scales : list of int
    resolution_05_angstrom : numpy.ndarray
        ``(n_variances, n_scales)`` FSC = 0.5 resolution against the truth (Å).
    lam : numpy.ndarray
        ``(n_variances, n_scales)`` λ used (the sweep's best when several were given).
    fsc : list of list of FSCResult
        ``[variance][scale]`` curves.
    mean_error_deg : list of float
        Mean geodesic error of the assigned poses (or of the class averages) per variance.
    pixel_size_angstrom : float
    """

    variances_deg2: list[float]
    scales: list[int]
    resolution_05_angstrom: np.ndarray
    lam: np.ndarray
    fsc: list[list[FSCResult]]
    mean_error_deg: list[float]
    pixel_size_angstrom: float


def angular_error_experiment(
    density: Any = "1a5t",
    *,
    box_size: int = 64,
    n_particles: int = 5000,
    snr: float = 1.0,
    variances_deg2: Sequence[float] = (0.0, 5.0, 15.47, 30.0, 60.0),
    scales: Sequence[int] = (1, 2, 4),
    n_classes: int | None = None,
    lams: Sequence[float] = THESIS_LAMBDAS,
    method: str = "admm_cg",
    seed: int = 0,
    simulation_kwargs: dict[str, Any] | None = None,
    **solver_kwargs: Any,
) -> AngularErrorResult:
    """Robustness of each scale to orientation errors (thesis §4.1.7, Fig. 4.2a/b).

    One data set (same true poses, images and noise) is simulated; for each variance the
    assigned Euler angles get a uniform error of that variance, optionally the particles are
    class-averaged (``n_classes``, Fig. 4.2b), and each scale is reconstructed with every λ
    of ``lams`` (one kernel per variance and scale); the best FSC = 0.5 resolution against the
    truth is kept (the thesis's selection).

    Parameters
    ----------
    density, box_size, n_particles, snr, seed, simulation_kwargs
        Passed to :func:`cryowedge.spa.simulate.simulate_spa` (thesis: 20,000 projections,
        SNR 1; research/thesis.md §4.4(b): 64³, 5,000–20,000).
    variances_deg2 : sequence of float
        Angular-error variances (deg²; Fig. 4.2b uses 15.47).
    scales : sequence of int
        Scales (thesis: 1–4).
    n_classes : int, optional
        Class averages (thesis: 80 in Fig. 4.2a; 11–99 in Fig. 4.2b).
    lams : sequence of float
        λ values tried per reconstruction.
    method, solver_kwargs
        As for :func:`reconstruct_spa`.

    Returns
    -------
    AngularErrorResult
    """
    from cryowedge.geometry.rotations import euler_zyz_to_matrix
    from cryowedge.spa.simulate import _class_averages, geodesic_distance_deg, simulate_spa

    variances = [float(v) for v in variances_deg2]
    if any(not (math.isfinite(v) and v >= 0) for v in variances):
        raise ValueError(f"variances_deg2 must be >= 0 deg², got {variances}.")
    scales = [check_scale(s) for s in scales]
    if n_classes is not None and (simulation_kwargs or {}).get("ctf"):
        raise ValueError(
            "class averaging with a CTF is not simulated; drop ctf from simulation_kwargs or "
            "pass n_classes=None."
        )
    sim = simulate_spa(
        density,
        box_size=box_size,
        n_particles=n_particles,
        snr=snr,
        angular_error_variance_deg2=1.0,  # unit-variance draws, rescaled per variance below
        seed=seed,
        **(simulation_kwargs or {}),
    )
    true_angles = sim.true_angles_deg
    res = np.zeros((len(variances), len(scales)))
    lam_used = np.zeros_like(res)
    curves: list[list[FSCResult]] = []
    errors: list[float] = []
    for i, var in enumerate(variances):
        perturb = sim.angle_perturbation_deg * math.sqrt(var)
        assigned = (
            euler_zyz_to_matrix(*(true_angles + perturb).T) if var > 0 else sim.true_rotations
        )
        if n_classes is None:
            data = sim.stack.replace(rotations=assigned)
            errors.append(float(geodesic_distance_deg(assigned, sim.true_rotations).mean()))
        else:
            data, _, class_err = _class_averages(
                sim.coefficients,
                sim.true_rotations,
                assigned,
                sim.noise_sigma,
                int(n_classes),
                n=box_size,
                o=sim.oversample,
                px=sim.pixel_size_angstrom,
                blob=sim.blob,
                batch=256,
                rng=np.random.default_rng(seed + 1000 + i),
            )
            errors.append(float(class_err.mean()))
        row = []
        for j, s in enumerate(scales):
            sweep = lambda_sweep(
                data, lams, truth=sim.truth, method=method, scale=s, **solver_kwargs
            )
            b = sweep.best_index
            res[i, j] = sweep.resolution_05_angstrom[b]
            lam_used[i, j] = sweep.lams[b]
            row.append(sweep.fsc[b])
            logger.info(
                "angular error variance %g deg², s=%d: %.2f Å (λ=%g)",
                var,
                s,
                res[i, j],
                lam_used[i, j],
            )
        curves.append(row)
    return AngularErrorResult(
        variances_deg2=variances,
        scales=scales,
        resolution_05_angstrom=res,
        lam=lam_used,
        fsc=curves,
        mean_error_deg=errors,
        pixel_size_angstrom=sim.pixel_size_angstrom,
    )
