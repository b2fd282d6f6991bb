"""Joint angular refinement and reconstruction for single-particle analysis (thesis §4.2).

Model (research/thesis.md §5.1; thesis eqs. 4.23–4.32). Particle ``p`` is
``b_p = C_p · S(θ_p, t_p) c + n_p`` with ``S`` the blob splat of
:class:`~cryowedge.spa.projector.SpaProjector` (``ψ_s`` = projected blob), ``C_p`` its CTF,
``θ_p`` the RELION ZYZ Euler angles (rot, tilt, psi) and ``t_p = (dy, dx)`` the in-plane shift in
pixels. The joint problem ``min_{c,Θ,Γ} ½‖b − H(Θ, Γ) c‖² + λR(Lc)`` is solved by alternation
(Algorithm 3): a reconstruction of ``c`` at fixed orientations (Algorithm 4; here any callable,
by default CG on the Toeplitz normal operator with a small ridge), then per-particle gradient
descent on ``J_p(θ, t) = ½‖b_p − H(θ, t) c‖²`` at fixed ``c`` (Algorithm 5: semi-coordinate-wise,
angles then shifts, each with a backtracking line search, in mini-batches of particles).

Gradients (Theorem 3). With ``u_k = s M k + t`` the detector position of coefficient ``k``,
``∂J_p/∂u_k = −c_k Σ_j ẽ_j ∇ψ_s(j − u_k)`` where ``ẽ = C_pᵀ(C_p S c − b_p)`` is the
back-filtered residual and ``∇ψ_s(y) = ψ_s'(|y|) y/|y|`` the analytic derivative of the projected
blob (thesis 4.41). Then ``∂J_p/∂M = Σ_k ∂J_p/∂u_k (s k)ᵀ`` (a ``2 × 3`` matrix),
``∂J_p/∂θ_i = ⟨∂J_p/∂M, ∂M⊥/∂θ_i⟩`` with the closed-form ``∂M⊥/∂θ_i``
(:func:`~cryowedge.spa.angles.euler_matrix_derivatives_rad`), and ``∂J_p/∂t = Σ_k ∂J_p/∂u_k``.
Two evaluations are offered (``method``):

* ``"direct"``: the formula above on the explicit footprints (one forward projection and one
  gather of ``ẽ`` with the derivative table) — the exact derivative of the discrete model, any
  CTF. Cost ``O(n³ ⌈2sa⌉²)`` per particle.
* ``"kernel"``: Theorem 3's form ``J_p = ½ cᵀ(w(θ) ⋆ c) − cᵀ Hᵀ(θ, t) b_p + ½‖b_p‖²``. The first
  term is ``½ s⁴ Σ_d a[d] G(|M d|)`` with ``a`` the autocorrelation of ``c`` (one FFT per
  reconstruction) and ``G`` the projected-blob autocorrelation, summed over the cylinder
  ``|M d| < 2a`` only (``O(a² n)`` look-ups; its gradient uses ``dG/dρ²``: thesis 4.36). The
  second term reads ``B_p(u) = (b_p ⋆ ψ_s)(u)`` and its gradient ``b_p ⋆ ∇ψ_s`` (the analytic
  4.41 again) from tables sampled exactly on a grid ``oversample`` times finer than the detector
  (one FFT convolution each, once per particle and mini-batch), by cubic B-spline interpolation
  at ``u_k`` (thesis 4.37–4.39): ``O(16 n³)`` per particle. Exact up to the radial Nyquist
  approximation of the Toeplitz kernel (research/thesis.md §4.4: ~3e-4 for KBWF(4, 19, 2) at
  s = 1) and the table interpolation (~1e-4); it assumes no footprint leaves the detector
  (:func:`support_sphere`) and no CTF.

``"auto"`` picks ``"kernel"`` when there is no CTF and every footprint of the (masked)
coefficients stays on the detector, ``"direct"`` otherwise. Measured (float32, one core, 32
particles, 32³ with the support ball): value 0.35 s direct vs 0.18 s kernel, value and
gradients 1.8 s vs 0.18 s (plus 0.4 s of table building per mini-batch and update).

Step sizes. The thesis's ``γ⁰_θ = 1e-7``, ``γ⁰_t = 1e-5`` (§5.2) are in the units of its
un-normalised ``J_p`` and do not carry over to other data scales. Here the first trial step of
each line search has a fixed *length*: ``γ⁰ = angle_step_deg / ‖∇_θ J_p‖`` (and
``shift_step_px / ‖∇_t J_p‖``), then ``γ ← η γ`` until the Armijo condition
``J_p(new) ≤ J_p(old) − c₁ γ ‖∇J_p‖²`` holds (thesis: plain decrease, ``c₁ = 0``). ``K_GD = 3``
and ``η = 0.25`` are the thesis's (§5.2). Absolute ``γ⁰`` as in the thesis can be given instead.

Projection matching (the baseline, :func:`projection_matching`): every particle is compared
with the projections of the current volume at a near-uniform SO(3) grid (super-Fibonacci), by
least squares ``‖b_p − C_p H(R) c‖²`` (or normalised correlation); the best orientation is then
refined by rounds of random local candidates in a shrinking ball.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.fft
import torch
from scipy import interpolate

from cryowedge._arrays import to_numpy
from cryowedge.geometry.rotations import matrix_to_euler_zyz
from cryowedge.spa.angles import (
    cell_radius_deg,
    euler_matrices_rad,
    euler_matrix_derivatives_rad,
    geodesic_distance_deg,
    rotation_vector_exp,
    rotations_near,
    super_fibonacci_rotations,
    tangent_generators,
)
from cryowedge.spa.basis import RECONSTRUCTION_BLOB, KaiserBesselBlob, RadialTable, check_scale
from cryowedge.spa.projector import CtfLike, SpaProjector, check_rotations
from cryowedge.spa.toeplitz import ToeplitzNormalOperator, conjugate_gradient, fast_adjoint

__all__ = [
    "ParticleObjective",
    "ParticleGradients",
    "particle_gradients",
    "LatentUpdateOptions",
    "update_latent",
    "RidgeReconstruction",
    "TVReconstruction",
    "ReconstructFn",
    "RefinementInfo",
    "RefinementResult",
    "joint_refinement",
    "MatchResult",
    "projection_matching",
    "projection_matching_refinement",
    "sphere_mask",
    "support_sphere",
]

logger = logging.getLogger(__name__)

ReconstructFn = Callable[[SpaProjector, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""A reconstruction step: ``fn(projector, data, x0) -> coefficients``.

``projector`` carries the current orientations, shifts, basis and CTF; ``data`` is
``(P, L, L)``; ``x0`` the previous coefficients ``(n, n, n)`` (warm start) or ``None``. It returns
``(n, n, n)`` coefficients. :class:`RidgeReconstruction` is the default; :class:`TVReconstruction`
(TV-ADMM, thesis Algorithm 4) fits the same signature."""

Method = Literal["auto", "kernel", "direct"]


# ============================================================================ helpers
def _check_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}.")
    return v


def support_sphere(projector: SpaProjector) -> np.ndarray:
    """The largest centred ball of coefficients whose blob footprints stay on the detector.

    A coefficient at centred position ``s·k`` projects within ``s·|k|`` of the detector centre
    and its footprint has radius ``s·a``; the ball ``s·|k| + s·a ≤ L − 1 − L // 2`` therefore
    never reaches the detector edge, which the kernel form of the objective assumes.

    Returns
    -------
    numpy.ndarray
        ``(n, n, n)`` bool mask (radius in coefficient steps ``(L − 1 − L//2)/s − a``, at least 1).
    """
    room = projector.n_det - 1 - projector.n_det // 2
    radius = max(1.0, room / projector.scale - projector.blob.radius)
    return sphere_mask(projector.n, radius)


def sphere_mask(n: int, radius: float | None = None) -> np.ndarray:
    """Boolean ``(n, n, n)`` ball of coefficients within ``radius`` of the centre index ``n // 2``.

    Parameters
    ----------
    n : int
        Coefficients per axis.
    radius : float, optional
        In coefficient steps; default ``n // 2`` (the inscribed ball).

    Returns
    -------
    numpy.ndarray
        ``(n, n, n)`` bool in (z, y, x) order.
    """
    n = _check_int(n, "n")
    r = float(n // 2) if radius is None else _check_positive(radius, "radius")
    ax = np.arange(n) - n // 2
    d2 = ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2
    return d2 <= r * r + 1e-9


@functools.lru_cache(maxsize=16)
def _derivative_samples(blob: KaiserBesselBlob, scale: int, n_samples: int) -> np.ndarray:
    """``D(r²) = ψ_s'(r)/r`` at ``r² = linspace(0, (s a)², n)`` so that ``∇ψ_s(y) = D(|y|²) y``."""
    r2 = np.linspace(0.0, (scale * blob.radius) ** 2, n_samples)
    r = np.sqrt(r2)
    out = np.empty_like(r2)
    out[1:] = blob.projected_derivative(r[1:], scale) / r[1:]
    # r → 0 (thesis 4.41): −(α A / (a s)) I_{m−½}(α), A = √(2π/α) / I_m(α).
    from scipy import special

    a, alpha, m = blob.radius, blob.alpha, blob.order
    amp = math.sqrt(2.0 * math.pi / alpha) / special.iv(m, alpha)
    out[0] = -(alpha * amp / (a * scale)) * special.iv(m - 0.5, alpha)
    out[-1] = 0.0
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _autocorrelation_pair(blob: KaiserBesselBlob, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``G(ρ²)`` and ``dG/dρ²`` (scale 1) at ``ρ² = linspace(0, (2a)², n)``.

    ``G`` from the Hankel quadrature of :meth:`KaiserBesselBlob.projected_autocorrelation` at 4097
    points uniform in ``ρ²``, carried to the table (and differentiated) by a cubic spline in ``ρ²``
    (as the Toeplitz kernel's table is built).
    """
    r2_max = (2.0 * blob.radius) ** 2
    nodes = np.linspace(0.0, r2_max, 4097)
    exact = blob.projected_autocorrelation(np.sqrt(nodes))
    exact[-1] = 0.0
    spline = interpolate.CubicSpline(nodes, exact)
    grid = np.linspace(0.0, r2_max, n_samples)
    g, dg = spline(grid), spline(grid, 1)
    g[-1] = dg[-1] = 0.0
    g.setflags(write=False)
    dg.setflags(write=False)
    return g, dg


def _bspline_symbol(size: int, *, half: bool, device: torch.device) -> torch.Tensor:
    """DFT of the sampled cubic B-spline ``(4 + 2 cos(2π k/size))/6`` (full or rfft axis)."""
    k = torch.arange(size // 2 + 1 if half else size, device=device, dtype=torch.float64)
    return (4.0 + 2.0 * torch.cos(2.0 * math.pi * k / size)) / 6.0


# ============================================================================ objective
@dataclass
class ParticleGradients:
    """Per-particle data terms and their gradients at given orientations and shifts.

    Attributes
    ----------
    objective : numpy.ndarray
        ``(P,)`` ``J_p = ½‖b_p − H(θ_p, t_p) c‖²`` (data units²).
    grad_matrix : numpy.ndarray
        ``(P, 2, 3)`` ``∂J_p/∂M⊥`` (rows: detector x (column), y (row); columns: x, y, z).
    grad_euler_deg : numpy.ndarray
        ``(P, 3)`` ``∂J_p/∂(rot, tilt, psi)`` per **degree**.
    grad_shifts_px : numpy.ndarray
        ``(P, 2)`` ``∂J_p/∂(dy, dx)`` per pixel.
    """

    objective: np.ndarray
    grad_matrix: np.ndarray
    grad_euler_deg: np.ndarray
    grad_shifts_px: np.ndarray


class ParticleObjective:
    """``J_p(R, t) = ½‖b_p − C_p S(R, t) c‖²`` for every particle, with analytic gradients.

    Parameters
    ----------
    projector : SpaProjector
        Supplies the coefficient grid ``n``, basis (blob, scale), detector size ``L``, CTF, dtype
        and device, and the default orientations and shifts.
    coefficients : array_like or torch.Tensor
        ``(n, n, n)`` volume coefficients ``c`` (fixed while the objective lives).
    data : array_like or torch.Tensor
        ``(P, L, L)`` particle images ``b``.
    method : {"auto", "kernel", "direct"}
        Evaluation (module docstring); ``"kernel"`` needs a projector without CTF.
    mask : array_like of bool, optional
        ``(n, n, n)``: the objective uses ``c · mask`` (fewer coefficients, faster).
    oversample : int
        Kernel method: refinement of the grid on which ``b_p ⋆ ψ_s`` is sampled.
    chunk_elements : int
        Upper bound on footprint or interpolation samples held at once.
    table_samples : int
        Samples of the derivative and autocorrelation look-up tables (uniform in ``r²``).
    """

    def __init__(
        self,
        projector: SpaProjector,
        coefficients: Any,
        data: Any,
        *,
        method: Method = "auto",
        mask: Any = None,
        oversample: int = 4,
        chunk_elements: int = 1 << 21,
        table_samples: int = 1 << 18,
    ) -> None:
        if not isinstance(projector, SpaProjector):
            raise ValueError(f"projector must be a SpaProjector, got {type(projector).__name__}.")
        if method not in ("auto", "kernel", "direct"):
            raise ValueError(f"method must be 'auto', 'kernel' or 'direct', got {method!r}.")
        if method == "kernel" and projector.has_ctf:
            raise ValueError(
                "method='kernel' does not model a CTF (its autocorrelation kernel would depend "
                "on each particle's CTF); use method='direct' or 'auto'."
            )
        self.projector = projector
        self.dtype, self.device = projector.dtype, projector.device
        self.n, self.L, self.scale = projector.n, projector.n_det, projector.scale
        c = (
            coefficients
            if isinstance(coefficients, torch.Tensor)
            else torch.as_tensor(np.asarray(coefficients))
        )
        if tuple(c.shape) != projector.domain_shape:
            raise ValueError(
                f"coefficients must have shape {projector.domain_shape} (the projector's grid), "
                f"got {tuple(c.shape)}."
            )
        b = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
        if tuple(b.shape) != projector.range_shape:
            raise ValueError(
                f"data must have shape {projector.range_shape} (one {self.L}×{self.L} image per "
                f"orientation), got {tuple(b.shape)}; pass as many rotations as particles."
            )
        self.data = b.to(dtype=self.dtype, device=self.device)
        if not bool(torch.isfinite(self.data).all()):
            raise ValueError("data contains NaN or Inf values; clean or mask them first.")
        c = c.to(dtype=self.dtype, device=self.device)
        if mask is not None:
            m = torch.as_tensor(np.asarray(to_numpy(mask), dtype=bool), device=self.device)
            if tuple(m.shape) != projector.domain_shape:
                raise ValueError(
                    f"mask must have shape {projector.domain_shape}, got {tuple(m.shape)}."
                )
            c = c * m
        self.coefficients = c
        self.n_particles = projector.n_proj
        self.chunk_elements = _check_int(chunk_elements, "chunk_elements")
        self.oversample = check_scale(oversample, "oversample")
        # Active coefficients: positions (3, K) in fine pixels (x, y, z), values (K,).
        flat = c.reshape(-1)
        keep = torch.nonzero(flat != 0).reshape(-1)
        self._values = flat[keep]
        self._positions = (
            projector._positions[:, keep] if keep.numel() else projector._positions[:, :0]
        )
        self._pos_norm = (
            float(torch.linalg.vector_norm(self._positions, dim=0).max()) if keep.numel() else 0.0
        )
        n_tab = _check_int(table_samples, "table_samples", 2)
        blob, s = projector.blob, self.scale
        self.radius_px = s * blob.radius
        # The kernel form assumes every footprint lies on the detector (no truncation).
        room = self.L - 1 - self.L // 2
        self.footprints_inside = self._pos_norm + self.radius_px <= room
        if method == "auto":
            method = "kernel" if not projector.has_ctf and self.footprints_inside else "direct"
        elif method == "kernel" and not self.footprints_inside:
            logger.warning(
                "method='kernel': coefficients up to %.1f px from the centre have footprints "
                "(radius %.1f px) beyond the detector edge (%d px); the kernel form ignores the "
                "truncation. Use a smaller mask (support_sphere) or method='direct'.",
                self._pos_norm,
                self.radius_px,
                room,
            )
        self.method = method
        self._table = blob.projected_table(s, n_samples=n_tab, dtype=self.dtype, device=self.device)
        self._dtable = RadialTable(
            _derivative_samples(blob, s, n_tab),
            (s * blob.radius) ** 2,
            dtype=self.dtype,
            device=self.device,
        )
        self._width = int(math.ceil(2.0 * self.radius_px))
        if self.method == "kernel":
            g, dg = _autocorrelation_pair(blob, n_tab)
            r2 = (2.0 * blob.radius) ** 2
            self._gtable = RadialTable(g, r2, dtype=self.dtype, device=self.device)
            self._dgtable = RadialTable(dg, r2, dtype=self.dtype, device=self.device)
            size = 2 * self.n
            spec = torch.fft.rfftn(c.to(torch.float64), s=(size,) * 3)
            auto = torch.fft.irfftn(spec.real**2 + spec.imag**2, s=(size,) * 3)
            self._auto = auto.to(self.dtype).reshape(-1)  # a[d] at circular index d mod 2n
            self._prepare_kernel_constants()

    # ------------------------------------------------------------------ public
    def batch(self, p0: int, p1: int) -> _Batch:
        """The objective restricted to particles ``p0:p1`` (tables built once for the batch)."""
        if not 0 <= p0 < p1 <= self.n_particles:
            raise ValueError(f"batch {p0}:{p1} outside 0:{self.n_particles}.")
        return _Batch(self, p0, p1)

    def gradients(
        self,
        rotations: Any = None,
        shifts_px: Any = None,
        *,
        batch_size: int = 32,
    ) -> ParticleGradients:
        """``J_p`` and its gradients for all particles (default: the projector's geometry).

        Parameters
        ----------
        rotations : array_like, optional
            ``(P, 3, 3)`` RELION ZYZ matrices.
        shifts_px : array_like, optional
            ``(P, 2)`` shifts ``(dy, dx)`` in pixels.
        batch_size : int
            Particles per mini-batch.
        """
        rot, sh = self._geometry(rotations, shifts_px)
        bs = _check_int(batch_size, "batch_size")
        j_all, gm_all, gt_all = [], [], []
        for p0 in range(0, self.n_particles, bs):
            p1 = min(p0 + bs, self.n_particles)
            j, gm, gt = self.batch(p0, p1).value_and_grad(rot[p0:p1], sh[p0:p1])
            j_all.append(j)
            gm_all.append(gm)
            gt_all.append(gt)
        j = torch.cat(j_all)
        gm = torch.cat(gm_all)
        gt = torch.cat(gt_all)
        ang = np.deg2rad(np.stack(matrix_to_euler_zyz(rot.cpu().numpy()), axis=-1))
        _, dr = euler_matrix_derivatives_rad(torch.as_tensor(ang, dtype=gm.dtype, device=gm.device))
        ge = torch.einsum("pac,piac->pi", gm, dr[:, :, :2, :]) * (math.pi / 180.0)
        return ParticleGradients(
            objective=j.cpu().numpy(),
            grad_matrix=gm.cpu().numpy(),
            grad_euler_deg=ge.cpu().numpy(),
            grad_shifts_px=gt.cpu().numpy(),
        )

    def values(
        self, rotations: Any = None, shifts_px: Any = None, *, batch_size: int = 32
    ) -> np.ndarray:
        """``(P,)`` values ``J_p`` (default: the projector's geometry)."""
        rot, sh = self._geometry(rotations, shifts_px)
        bs = _check_int(batch_size, "batch_size")
        out = []
        for p0 in range(0, self.n_particles, bs):
            p1 = min(p0 + bs, self.n_particles)
            out.append(self.batch(p0, p1).evaluate(rot[p0:p1], sh[p0:p1]))
        return torch.cat(out).cpu().numpy()

    # ------------------------------------------------------------------ internals
    def _geometry(self, rotations: Any, shifts_px: Any) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.n_particles
        rot = self.projector.rotations_np if rotations is None else check_rotations(rotations)
        if rot.shape[0] != p:
            raise ValueError(
                f"rotations hold {rot.shape[0]} matrices but there are {p} particles; pass one "
                "(3, 3) matrix per particle."
            )
        sh = (
            self.projector.shifts_np
            if shifts_px is None
            else np.asarray(to_numpy(shifts_px), dtype=np.float64)
        )
        if sh.shape != (p, 2) or not np.isfinite(sh).all():
            raise ValueError(
                f"shifts_px must be finite with shape ({p}, 2) as (dy, dx) pixels, got {sh.shape}."
            )
        return (
            torch.as_tensor(rot, dtype=self.dtype, device=self.device),
            torch.as_tensor(sh, dtype=self.dtype, device=self.device),
        )

    def _prepare_kernel_constants(self) -> None:
        n = self.n
        radius = 2.0 * self.projector.blob.radius  # support of G, coefficient steps
        h = int(math.ceil(radius * math.sqrt(2.0) + 0.5))
        self._cyl_offsets = torch.arange(-h, h + 1, device=self.device, dtype=self.dtype)
        self._cyl_t = torch.arange(-(n - 1), n, device=self.device, dtype=self.dtype)
        size = 2 * n
        # circular strides of the (z, y, x) autocorrelation for x, y, z
        self._auto_strides = torch.tensor([1, size, size * size], device=self.device)

    def _work(self, shifts: torch.Tensor) -> tuple[int, int]:
        """Margin and size of the padded work detector holding every footprint."""
        obj = self
        reach = (
            obj._pos_norm + obj.radius_px + 2.0 + float(shifts.abs().max())
            if shifts.numel()
            else 0.0
        )
        margin = max(0, int(math.ceil(reach - (obj.L - 1 - obj.L // 2))))
        return margin, obj.L + 2 * margin

    def _footprints(
        self, m: torch.Tensor, origin: torch.Tensor, k0: int, k1: int, nw: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat indices ``(K, kc, W, W)``, table steps ``t`` and offsets ``j − u`` (cols, rows)."""
        obj = self
        pos = obj._positions[:, k0:k1]
        u = torch.matmul(m, pos) + origin[:, :, None]  # (K, 2, kc): (col, row)
        j0 = torch.floor(u - obj.radius_px) + 1.0
        offs = torch.arange(obj._width, device=obj.device, dtype=obj.dtype)
        d = (j0 - u)[..., None] + offs  # (K, 2, kc, W): j − u
        ds = d * d * obj._table.inv_step
        t = ds[:, 1, :, :, None] + ds[:, 0, :, None, :]  # (K, kc, W rows, W cols)
        jl = j0.to(torch.long)
        base = torch.arange(m.shape[0], device=obj.device)[:, None] * (nw * nw)
        start = jl[:, 1] * nw + jl[:, 0] + base  # (K, kc)
        w_ar = torch.arange(obj._width, device=obj.device)
        block = w_ar[:, None] * nw + w_ar[None, :]
        idx = start[..., None, None] + block
        return idx, t, d[:, 0], d[:, 1]

    def _splat(
        self, rot: torch.Tensor, shifts: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, int, torch.Tensor, int]]:
        """Bare projections ``S(R, t) (c · mask)``: ``(K, L, L)``, and the work-detector layout."""
        k = rot.shape[0]
        margin, nw = self._work(shifts)
        centre = float(self.L // 2 + margin)
        origin = torch.stack([centre + shifts[:, 1], centre + shifts[:, 0]], dim=1)  # (K, 2)
        m = rot[:, :2, :]
        n_coef = self._values.numel()
        kc = max(1, self.chunk_elements // max(1, k * self._width**2))
        work = torch.zeros(k * nw * nw, dtype=self.dtype, device=self.device)
        for k0 in range(0, n_coef, kc):
            k1 = min(k0 + kc, n_coef)
            idx, t, _, _ = self._footprints(m, origin, k0, k1, nw)
            w = self._table.lookup_steps(t)
            w.mul_(self._values[k0:k1][None, :, None, None])
            work.index_add_(0, idx.reshape(-1), w.reshape(-1))
        img = work.reshape(k, nw, nw)[:, margin : margin + self.L, margin : margin + self.L]
        return img, (margin, nw, origin, kc)

    def project(self, rotations: Any, shifts_px: Any = None) -> torch.Tensor:
        """Projections of the (masked) volume without CTF at any orientations.

        Parameters
        ----------
        rotations : array_like
            ``(K, 3, 3)`` RELION ZYZ matrices.
        shifts_px : array_like, optional
            ``(K, 2)`` shifts ``(dy, dx)`` (default 0).

        Returns
        -------
        torch.Tensor
            ``(K, L, L)`` images (equal to ``SpaProjector(...).forward(c · mask)``; only the
            non-zero coefficients are splatted).
        """
        rot = torch.as_tensor(check_rotations(rotations), dtype=self.dtype, device=self.device)
        if shifts_px is None:
            sh = torch.zeros(rot.shape[0], 2, dtype=self.dtype, device=self.device)
        else:
            sh = torch.as_tensor(
                np.asarray(to_numpy(shifts_px)), dtype=self.dtype, device=self.device
            )
            if tuple(sh.shape) != (rot.shape[0], 2):
                raise ValueError(
                    f"shifts_px must have shape ({rot.shape[0]}, 2), got {tuple(sh.shape)}."
                )
        return self._splat(rot, sh)[0]

    # -- kernel method: first term ½ s⁴ Σ_d a[d] G(|M d|²) and its M-gradient -----------
    def _cylinder_term(
        self, rot: torch.Tensor, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, size = self.n, 2 * self.n
        k = rot.shape[0]
        v = rot[:, 2, :]  # (K, 3) projection directions (x, y, z)
        dom = torch.argmax(v.abs(), dim=1)
        others = torch.tensor([[1, 2], [0, 2], [0, 1]], device=self.device)[dom]
        perm = torch.cat([others, dom[:, None]], dim=1)  # (K, 3): (e1, e2, dominant)
        vp = torch.gather(v, 1, perm)
        ratio = vp[:, :2] / vp[:, 2:3]  # (K, 2)
        mperm = torch.gather(rot[:, :2, :], 2, perm[:, None, :].expand(k, 2, 3))  # (K, 2, 3)
        t = self._cyl_t  # (T,)
        o = self._cyl_offsets  # (H,)
        d1 = torch.round(t[None, :] * ratio[:, 0:1])[..., None] + o  # (K, T, H)
        d2 = torch.round(t[None, :] * ratio[:, 1:2])[..., None] + o
        md = (
            mperm[:, :, 0, None, None, None] * d1[:, None, :, :, None]
            + mperm[:, :, 1, None, None, None] * d2[:, None, :, None, :]
            + mperm[:, :, 2, None, None, None] * t[None, None, :, None, None]
        )  # (K, 2, T, H, H)
        rho2 = md[:, 0] ** 2 + md[:, 1] ** 2  # (K, T, H, H)
        valid = (d1.abs() <= n - 1)[..., :, None] & (d2.abs() <= n - 1)[..., None, :]
        strides = self._auto_strides[perm]  # (K, 3)
        i1 = (d1.to(torch.long) % size) * strides[:, 0, None, None]
        i2 = (d2.to(torch.long) % size) * strides[:, 1, None, None]
        i3 = (t.to(torch.long) % size)[None, :] * strides[:, 2, None]  # (K, T)
        idx = i1[..., :, None] + i2[..., None, :] + i3[..., None, None]
        a = self._auto.index_select(0, idx.reshape(-1)).reshape(idx.shape) * valid
        s4 = float(self.scale) ** 4
        steps = rho2 * self._gtable.inv_step
        g = self._gtable.lookup_steps(steps.clone())
        value = 0.5 * s4 * (a * g).sum(dim=(1, 2, 3))
        if not need_grad:
            return value, None
        dg = self._dgtable.lookup_steps(steps)
        w = a * dg * s4  # (K, T, H, H); ∂/∂M = Σ w (M d) dᵀ
        wm = w[:, None] * md  # (K, 2, T, H, H)
        g1 = (wm * d1[:, None, :, :, None]).sum(dim=(2, 3, 4))
        g2 = (wm * d2[:, None, :, None, :]).sum(dim=(2, 3, 4))
        g3 = (wm.sum(dim=(3, 4)) * t).sum(dim=2)
        gperm = torch.stack([g1, g2, g3], dim=2)  # (K, 2, 3) in permuted columns
        grad = torch.zeros_like(gperm)
        grad.scatter_(2, perm[:, None, :].expand(k, 2, 3), gperm)
        return value, grad


class _Batch:
    """The objective of particles ``p0:p1``; ``which`` selects (possibly repeated) rows of it."""

    def __init__(self, obj: ParticleObjective, p0: int, p1: int) -> None:
        self.obj, self.p0, self.p1 = obj, p0, p1
        self.b = obj.data[p0:p1]
        self.b_norm2 = (self.b.to(torch.float64) ** 2).sum(dim=(1, 2))
        proj = obj.projector
        self.ctf = proj.ctf_half(p0, p1) if proj.has_ctf else None
        if obj.method == "kernel":
            self._build_grids()

    # ------------------------------------------------------------------ public
    def evaluate(self, rot: torch.Tensor, shifts: torch.Tensor, which: Any = None) -> torch.Tensor:
        """``J`` ``(K,)`` for rotations ``(K, 3, 3)``, shifts ``(K, 2)`` of batch rows ``which``."""
        which = self._which(which, rot.shape[0])
        if self.obj.method == "kernel":
            return self._kernel(rot, shifts, which, need_grad=False)[0]
        return self._direct(rot, shifts, which, need_grad=False)[0]

    def value_and_grad(
        self, rot: torch.Tensor, shifts: torch.Tensor, which: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``J (K,)``, ``∂J/∂M⊥ (K, 2, 3)`` and ``∂J/∂(dy, dx) (K, 2)``."""
        which = self._which(which, rot.shape[0])
        if self.obj.method == "kernel":
            return self._kernel(rot, shifts, which, need_grad=True)
        return self._direct(rot, shifts, which, need_grad=True)

    def _which(self, which: Any, k: int) -> torch.Tensor:
        if which is None:
            if k != self.p1 - self.p0:
                raise ValueError(f"expected {self.p1 - self.p0} rotations for the batch, got {k}.")
            return torch.arange(k, device=self.obj.device)
        return torch.as_tensor(which, device=self.obj.device, dtype=torch.long)

    # ------------------------------------------------------------------ direct method
    def _direct(
        self, rot: torch.Tensor, shifts: torch.Tensor, which: torch.Tensor, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        obj = self.obj
        k = rot.shape[0]
        img, (margin, nw, origin, kc) = obj._splat(rot, shifts)
        m = rot[:, :2, :]
        n_coef = obj._values.numel()
        ctf = self.ctf[which] if self.ctf is not None else None
        if ctf is not None:
            img = torch.fft.irfft2(torch.fft.rfft2(img) * ctf, s=img.shape[-2:])
        resid = img - self.b[which]
        value = 0.5 * (resid.to(torch.float64) ** 2).sum(dim=(1, 2)).to(obj.dtype)
        if not need_grad:
            return value, None, None
        if ctf is not None:
            resid = torch.fft.irfft2(torch.fft.rfft2(resid) * ctf, s=resid.shape[-2:])
        pad = torch.zeros(k, nw, nw, dtype=obj.dtype, device=obj.device)
        pad[:, margin : margin + obj.L, margin : margin + obj.L] = resid
        flat = pad.reshape(-1)
        g_u = torch.zeros(k, 2, n_coef, dtype=obj.dtype, device=obj.device)  # ∂J/∂u (col, row)
        for k0 in range(0, n_coef, kc):
            k1 = min(k0 + kc, n_coef)
            idx, t, dcol, drow = obj._footprints(m, origin, k0, k1, nw)
            dv = obj._dtable.lookup_steps(t)  # ψ'(r)/r
            a = flat.index_select(0, idx.reshape(-1)).reshape(idx.shape) * dv  # (K, kc, W, W)
            gc = (a.sum(dim=2) * dcol).sum(dim=-1)  # Σ ẽ D (j − u)_col
            gr = (a.sum(dim=3) * drow).sum(dim=-1)
            cv = obj._values[k0:k1][None, :]
            g_u[:, 0, k0:k1] = -cv * gc
            g_u[:, 1, k0:k1] = -cv * gr
        grad_m = torch.matmul(g_u, obj._positions.T)  # (K, 2, 3)
        grad_t = torch.stack([g_u[:, 1].sum(dim=1), g_u[:, 0].sum(dim=1)], dim=1)  # (dy, dx)
        return value, grad_m, grad_t

    # ------------------------------------------------------------------ kernel method
    def _build_grids(self) -> None:
        """Tables of ``B_p(y) = Σ_j b_p[j] ψ_s(j − y)`` and ``∇B_p`` on a fine grid (thesis 4.37).

        ``∇B_p = b_p ∗ ∇ψ_s`` uses the analytic derivative of the projected blob (4.41). The three
        tables are sampled exactly on a grid ``oversample`` times finer than the detector (one
        FFT convolution each) and stored as cubic B-spline coefficients (prefilter folded in).
        """
        obj = self.obj
        o, L, device, dtype = obj.oversample, obj.L, obj.device, obj.dtype
        pad = int(math.ceil(obj.radius_px)) + 4
        nf = o * (L + 2 * pad - 1) + 1
        hk = int(math.floor(o * obj.radius_px))
        offs = torch.arange(-hk, hk + 1, device=device, dtype=torch.float64) / o
        r2 = offs[:, None] ** 2 + offs[None, :] ** 2
        kern = obj._table.to(torch.float64, device)(r2)
        dker = obj._dtable.to(torch.float64, device)(r2)  # ψ'(r)/r: ∇ψ(z) = D z
        kernels = torch.stack([kern, dker * offs[None, :], dker * offs[:, None]])  # ψ, ∂x, ∂y
        conv = scipy.fft.next_fast_len(nf + 2 * hk, real=True)  # ≥ the linear convolution
        sym_y = _bspline_symbol(conv, half=False, device=device)
        sym_x = _bspline_symbol(conv, half=True, device=device)
        kern_fft = torch.fft.rfft2(kernels, s=(conv, conv)) / (sym_y[:, None] * sym_x[None, :])
        up = torch.zeros(self.p1 - self.p0, 1, nf, nf, dtype=dtype, device=device)
        sl = slice(o * pad, o * (pad + L - 1) + 1, o)
        up[:, 0, sl, sl] = self.b
        spec = torch.fft.rfft2(up, s=(conv, conv)) * kern_fft.to(
            torch.fft.rfft2(up[:1, :, :1, :1]).dtype
        )
        # (B, 3, conv, conv): B, ∂B/∂x, ∂B/∂y as B-spline coefficients
        self.grid = torch.fft.irfft2(spec, s=(conv, conv)).contiguous()
        self._pad, self._hk, self._conv = pad, hk, conv

    def _sample(
        self, which: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, channels: int
    ) -> torch.Tensor:
        """Cubic B-spline interpolation of the tables at fine-grid ``rows, cols`` ``(K, kc)``.

        Each 4 × 4 B-spline stencil is evaluated as four bilinear fetches (the weights are
        positive, so ``w₀f₀ + w₁f₁ = (w₀ + w₁)·lerp(f₀, f₁, w₁/(w₀ + w₁))``; Sigg & Hadwiger,
        GPU Gems 2, ch. 20) done by :func:`torch.nn.functional.grid_sample`. Returns
        ``(K, channels, kc)``; points whose stencil leaves the table read 0.
        """
        g = self._conv
        grids = self.grid[which, :channels]  # (K, C, g, g)

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            x0 = torch.floor(x)
            t = x - x0
            w0 = (1 - t) ** 3 / 6
            w1 = (3 * t**3 - 6 * t**2 + 4) / 6
            w3 = t**3 / 6
            w2 = 1 - w0 - w1 - w3
            g0, g1 = w0 + w1, w2 + w3
            return x0 - 1 + w1 / g0, x0 + 1 + w3 / g1, g0, g1

        ra, rb, gr0, gr1 = split(rows)
        ca, cb, gc0, gc1 = split(cols)
        scale = 2.0 / (g - 1)  # align_corners=True: index i ↦ 2i/(g − 1) − 1
        ys = torch.cat([ra, ra, rb, rb], dim=1) * scale - 1
        xs = torch.cat([ca, cb, ca, cb], dim=1) * scale - 1
        pts = torch.stack([xs, ys], dim=-1)[:, None]  # (K, 1, 4 kc, 2) as (x, y)
        out = torch.nn.functional.grid_sample(
            grids, pts, mode="bilinear", padding_mode="zeros", align_corners=True
        )[:, :, 0]  # (K, C, 4 kc)
        kc = rows.shape[1]
        wts = torch.cat([gr0 * gc0, gr0 * gc1, gr1 * gc0, gr1 * gc1], dim=1)  # (K, 4 kc)
        return (out * wts[:, None]).reshape(out.shape[0], channels, 4, kc).sum(dim=2)

    def _kernel(
        self, rot: torch.Tensor, shifts: torch.Tensor, which: torch.Tensor, need_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        obj = self.obj
        k = rot.shape[0]
        o, pad, hk = obj.oversample, self._pad, self._hk
        centre = float(obj.L // 2)
        origin = torch.stack([centre + shifts[:, 1], centre + shifts[:, 0]], dim=1)  # (K, 2)
        m = rot[:, :2, :]
        n_coef = obj._values.numel()
        channels = 3 if need_grad else 1
        kc = max(1, obj.chunk_elements // max(1, k * 4 * (channels + 2)))
        t2 = torch.zeros(k, dtype=torch.float64, device=obj.device)
        g_u = torch.zeros(k, 2, n_coef, dtype=obj.dtype, device=obj.device) if need_grad else None
        for k0 in range(0, n_coef, kc):
            k1 = min(k0 + kc, n_coef)
            u = torch.matmul(m, obj._positions[:, k0:k1]) + origin[:, :, None]  # (K, 2, kc)
            vals = self._sample(which, (u[:, 1] + pad) * o + hk, (u[:, 0] + pad) * o + hk, channels)
            cv = obj._values[k0:k1][None, :]
            t2 += (vals[:, 0] * cv).sum(dim=1).to(torch.float64)
            if need_grad:
                g_u[:, 0, k0:k1] = -cv * vals[:, 1]  # ∂J/∂u = −c_k ∇B(u_k)
                g_u[:, 1, k0:k1] = -cv * vals[:, 2]
        t1, grad1 = obj._cylinder_term(rot, need_grad)
        value = (t1.to(torch.float64) - t2 + 0.5 * self.b_norm2[which]).to(obj.dtype)
        if not need_grad:
            return value, None, None
        grad_m = grad1 + torch.matmul(g_u, obj._positions.T)
        grad_t = torch.stack([g_u[:, 1].sum(dim=1), g_u[:, 0].sum(dim=1)], dim=1)
        return value, grad_m, grad_t


def particle_gradients(
    projector: SpaProjector,
    coefficients: Any,
    data: Any,
    *,
    method: Method = "auto",
    mask: Any = None,
    batch_size: int = 32,
    oversample: int = 4,
) -> ParticleGradients:
    """``J_p`` and its analytic gradients at the projector's orientations and shifts (Theorem 3).

    Parameters
    ----------
    projector : SpaProjector
        Orientations ``(P, 3, 3)``, shifts ``(P, 2)``, basis, detector and CTF.
    coefficients : array_like or torch.Tensor
        ``(n, n, n)`` volume coefficients.
    data : array_like or torch.Tensor
        ``(P, L, L)`` particle images.
    method : {"auto", "kernel", "direct"}
        See the module docstring.
    mask : array_like of bool, optional
        ``(n, n, n)`` support: the objective uses ``c · mask``.
    batch_size : int
        Particles per mini-batch.
    oversample : int
        Kernel method's table refinement.

    Returns
    -------
    ParticleGradients
        Values ``(P,)``, ``∂J/∂M⊥`` ``(P, 2, 3)``, per-degree Euler gradients ``(P, 3)`` and
        per-pixel shift gradients ``(P, 2)``.
    """
    obj = ParticleObjective(
        projector, coefficients, data, method=method, mask=mask, oversample=oversample
    )
    return obj.gradients(batch_size=batch_size)


# ============================================================================ latent update
@dataclass(frozen=True)
class LatentUpdateOptions:
    """Options of the per-particle gradient descent (thesis Algorithm 5).

    Attributes
    ----------
    n_steps : int
        ``K_GD``: gradient steps per particle and update (thesis §5.2: 3).
    shrink : float
        ``η`` of the backtracking (thesis: 0.25).
    angle_step_deg : float
        Length of the first trial step on the angles (degrees in the parameters' norm):
        ``γ⁰_θ = angle_step_deg / ‖∇_θ J_p‖``. Later steps of the same update first try twice
        the previous accepted length, at most this. Ignored when ``gamma_angles`` is given.
    shift_step_px : float
        The same for the shifts (pixels).
    gamma_angles, gamma_shifts : float, optional
        Absolute initial steps ``γ⁰_θ`` (rad² per objective unit) and ``γ⁰_t`` as in the thesis
        (1e-7 and 1e-5 for its data scale).
    armijo : float
        ``c₁`` of the sufficient-decrease test (0: the thesis's plain decrease).
    max_backtracks : int
        Trial steps after the first; a particle whose steps all fail keeps its value.
    batch_size : int
        Particles per mini-batch.
    refine_shifts : bool
        Update ``t_p`` as well (thesis: yes).
    max_shift_px : float, optional
        Shifts are clipped to ``[−max_shift_px, max_shift_px]``; default ``L / 4``.
    parametrization : {"euler", "rotation"}
        ``"euler"``: descend on (rot, tilt, psi) (thesis); ``"rotation"``: on a rotation vector
        ``ω`` in the projection frame, ``R = exp([ω]×) R_0`` (no gimbal lock).
    """

    n_steps: int = 3
    shrink: float = 0.25
    angle_step_deg: float = 3.0
    shift_step_px: float = 0.5
    gamma_angles: float | None = None
    gamma_shifts: float | None = None
    armijo: float = 1e-4
    max_backtracks: int = 8
    batch_size: int = 64
    refine_shifts: bool = True
    max_shift_px: float | None = None
    parametrization: Literal["euler", "rotation"] = "euler"

    def __post_init__(self) -> None:
        _check_int(self.n_steps, "n_steps")
        if not 0.0 < float(self.shrink) < 1.0:
            raise ValueError(f"shrink (η) must lie in (0, 1), got {self.shrink!r}.")
        _check_positive(self.angle_step_deg, "angle_step_deg")
        _check_positive(self.shift_step_px, "shift_step_px")
        if self.gamma_angles is not None:
            _check_positive(self.gamma_angles, "gamma_angles")
        if self.gamma_shifts is not None:
            _check_positive(self.gamma_shifts, "gamma_shifts")
        if not 0.0 <= float(self.armijo) < 1.0:
            raise ValueError(f"armijo (c1) must lie in [0, 1), got {self.armijo!r}.")
        _check_int(self.max_backtracks, "max_backtracks", 0)
        _check_int(self.batch_size, "batch_size")
        if self.max_shift_px is not None:
            _check_positive(self.max_shift_px, "max_shift_px")
        if self.parametrization not in ("euler", "rotation"):
            raise ValueError(
                f"parametrization must be 'euler' or 'rotation', got {self.parametrization!r}."
            )


def _line_search(
    x0: torch.Tensor,
    j0: torch.Tensor,
    grad: torch.Tensor,
    step0: torch.Tensor,
    evaluate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    opts: LatentUpdateOptions,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backtracking (Armijo) from ``x0 (K, d)`` along ``−grad``; returns (x, J, accepted)."""
    x, j = x0.clone(), j0.clone()
    gg = (grad * grad).sum(dim=1)
    step = step0.clone()
    pending = (gg > 0) & torch.isfinite(gg)
    accepted = torch.zeros_like(pending)
    for _ in range(opts.max_backtracks + 1):
        idx = torch.nonzero(pending).reshape(-1)
        if idx.numel() == 0:
            break
        trial = x0[idx] - step[idx, None] * grad[idx]
        if project is not None:
            trial = project(trial)
        jt = evaluate(idx, trial)
        ok = torch.isfinite(jt) & (jt <= j0[idx] - opts.armijo * step[idx] * gg[idx])
        good = idx[ok]
        x[good] = trial[ok]
        j[good] = jt[ok]
        accepted[good] = True
        pending[good] = False
        step[idx[~ok]] *= opts.shrink
    return x, j, accepted


def _batch_update(
    batch: _Batch,
    rot0: torch.Tensor,
    shifts0: torch.Tensor,
    opts: LatentUpdateOptions,
    max_shift: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Algorithm 5 for one mini-batch; returns (R, t, J_before, J_after, accepted fraction)."""
    k = rot0.shape[0]
    dtype, device = rot0.dtype, rot0.device
    euler = opts.parametrization == "euler"
    if euler:
        ang = np.deg2rad(np.stack(matrix_to_euler_zyz(rot0.cpu().numpy()), axis=-1))
        x = torch.as_tensor(ang, dtype=dtype, device=device)
    else:
        x = torch.zeros(k, 3, dtype=dtype, device=device)  # ω, relative to `base`
    base = rot0

    def matrices(params: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        if euler:
            return euler_matrices_rad(params)
        return rotation_vector_exp(params) @ (base if rows is None else base[rows])

    def dmatrix(params: torch.Tensor) -> torch.Tensor:
        """∂M⊥/∂x_i ``(K, 3, 2, 3)`` (rotation vectors: at ω = 0)."""
        if euler:
            return euler_matrix_derivatives_rad(params)[1][:, :, :2, :]
        return tangent_generators(base)[:, :, :2, :]

    def first_step(gamma: float | None, length: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if gamma is not None:
            return torch.full((k,), float(gamma), dtype=dtype, device=device)
        return length / torch.linalg.vector_norm(g, dim=1).clamp_min(1e-300)

    def next_length(
        length: torch.Tensor, cap: float, x0: torch.Tensor, x1: torch.Tensor, acc: torch.Tensor
    ) -> torch.Tensor:
        """Next first-trial length: twice the accepted step's, at most the configured one."""
        moved = torch.linalg.vector_norm(x1 - x0, dim=1)
        return torch.where(acc, torch.clamp(2.0 * moved, max=cap), length)

    len_a = torch.full((k,), math.radians(opts.angle_step_deg), dtype=dtype, device=device)
    len_t = torch.full((k,), float(opts.shift_step_px), dtype=dtype, device=device)

    shifts = shifts0.clone()
    rot = matrices(x)
    j, gm, gt = batch.value_and_grad(rot, shifts)
    j_start = j.clone()
    n_acc, n_try = 0, 0
    clip = (lambda t: t.clamp(-max_shift, max_shift)) if max_shift > 0 else None
    for step in range(opts.n_steps):
        last = step == opts.n_steps - 1
        # --- angles (thesis Alg. 5 lines 4-9)
        g = torch.einsum("kac,kiac->ki", gm, dmatrix(x))
        step0 = first_step(opts.gamma_angles, len_a, g)

        def eval_angles(
            idx: torch.Tensor, trial: torch.Tensor, sh: torch.Tensor = shifts
        ) -> torch.Tensor:
            return batch.evaluate(matrices(trial, idx), sh[idx], idx)

        x_old = x
        x, j, acc = _line_search(x, j, g, step0, eval_angles, opts)
        len_a = next_length(len_a, math.radians(opts.angle_step_deg), x_old, x, acc)
        rot = matrices(x)
        if not euler:
            base, x = rot, torch.zeros_like(x)
        n_acc += int(acc.sum())
        n_try += k
        if not opts.refine_shifts:
            if not last:
                j, gm, gt = batch.value_and_grad(rot, shifts)
            continue
        # --- shifts, gradient at the new angles (lines 10-15)
        j, gm, gt = batch.value_and_grad(rot, shifts)
        step0 = first_step(opts.gamma_shifts, len_t, gt)

        def eval_shifts(
            idx: torch.Tensor, trial: torch.Tensor, r: torch.Tensor = rot
        ) -> torch.Tensor:
            return batch.evaluate(r[idx], trial, idx)

        t_old = shifts
        shifts, j, acc = _line_search(shifts, j, gt, step0, eval_shifts, opts, clip)
        len_t = next_length(len_t, float(opts.shift_step_px), t_old, shifts, acc)
        n_acc += int(acc.sum())
        n_try += k
        if not last:
            j, gm, gt = batch.value_and_grad(rot, shifts)
    return rot, shifts, j_start, j, n_acc / max(1, n_try)


def update_latent(
    objective: ParticleObjective,
    rotations: Any,
    shifts_px: Any,
    options: LatentUpdateOptions | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One latent-variable update (thesis Algorithm 5) for every particle at fixed ``c``.

    Parameters
    ----------
    objective : ParticleObjective
        The data terms (volume, data, basis, CTF).
    rotations : array_like
        ``(P, 3, 3)`` current orientations.
    shifts_px : array_like
        ``(P, 2)`` current shifts ``(dy, dx)`` in pixels.
    options : LatentUpdateOptions, optional
        Steps, line search, mini-batches.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, dict)
        New rotations ``(P, 3, 3)``, shifts ``(P, 2)`` and statistics: ``objective_before`` and
        ``objective`` (``Σ_p J_p``), ``accepted`` (fraction of line searches that moved),
        ``mean_angle_change_deg``, ``mean_shift_change_px``. ``J_p`` never increases.
    """
    opts = LatentUpdateOptions() if options is None else options
    if not isinstance(opts, LatentUpdateOptions):
        raise ValueError(f"options must be LatentUpdateOptions, got {type(opts).__name__}.")
    rot, sh = objective._geometry(rotations, shifts_px)
    max_shift = objective.L / 4.0 if opts.max_shift_px is None else float(opts.max_shift_px)
    p = objective.n_particles
    new_rot = torch.empty_like(rot)
    new_sh = torch.empty_like(sh)
    before = after = 0.0
    acc_sum = 0.0
    n_batches = 0
    for p0 in range(0, p, opts.batch_size):
        p1 = min(p0 + opts.batch_size, p)
        batch = objective.batch(p0, p1)
        r, t, j0, j1, acc = _batch_update(batch, rot[p0:p1], sh[p0:p1], opts, max_shift)
        new_rot[p0:p1], new_sh[p0:p1] = r, t
        before += float(j0.sum())
        after += float(j1.sum())
        acc_sum += acc * (p1 - p0)
        n_batches += 1
    r_np = new_rot.cpu().numpy().astype(np.float64)
    # Re-orthonormalise (float32 drift) through the SVD.
    u, _, vt = np.linalg.svd(r_np)
    r_np = u @ vt
    t_np = new_sh.cpu().numpy().astype(np.float64)
    old_r = rot.cpu().numpy().astype(np.float64)
    u0, _, vt0 = np.linalg.svd(old_r)
    change = geodesic_distance_deg(u0 @ vt0, r_np)
    stats = {
        "objective_before": before,
        "objective": after,
        "accepted": acc_sum / max(1, p),
        "mean_angle_change_deg": float(change.mean()),
        "mean_shift_change_px": float(np.linalg.norm(t_np - sh.cpu().numpy(), axis=1).mean()),
    }
    return r_np, t_np, stats


# ============================================================================ reconstruction
@dataclass(frozen=True)
class RidgeReconstruction:
    """Default reconstruction step: CG on ``(HᵀH + μ I) c = Hᵀb`` with the Toeplitz ``HᵀH``.

    ``μ = ridge · r[0]``, with ``r[0] = s⁴ P G(0)`` the diagonal of ``HᵀH`` (the kernel's
    centre), so ``ridge`` does not depend on the number of particles or the data scale.
    Warm-started from the previous coefficients. Defaults (ours; the thesis uses TV-ADMM): on the
    24³ pseudo-particle of :mod:`~cryowedge.spa.refine_experiment` (P = 200, true orientations)
    the FSC-0.5 frequency after 1, 3 and 6 calls changed by at most 0.005 cycles/px over
    ``ridge`` = 0.005 … 0.3 at SNR 3.6 and −0.6 dB (0.279 / 0.274 / 0.275 at 3.6 dB, 0.05):
    the early-stopped CG does most of the regularising.

    Attributes
    ----------
    ridge : float
        Relative Tikhonov weight (≥ 0).
    n_iter : int
        CG iterations per call.
    fast_adjoint : bool
        ``Hᵀb`` by Theorem 2 (:func:`~cryowedge.spa.toeplitz.fast_adjoint`) instead of the
        explicit back-projection.
    mask : None, "sphere" or array_like of bool
        ``(n, n, n)``: coefficients outside are set to 0 after the solve (a support constraint,
        like the masks of refinement packages); ``"sphere"``: as in :func:`joint_refinement`.
    """

    ridge: float = 0.05
    n_iter: int = 10
    fast_adjoint: bool = True
    mask: Any = None

    def __post_init__(self) -> None:
        _check_positive(self.ridge, "ridge", allow_zero=True)
        _check_int(self.n_iter, "n_iter")

    def __call__(
        self, projector: SpaProjector, data: torch.Tensor, x0: torch.Tensor | None = None
    ) -> torch.Tensor:
        op = ToeplitzNormalOperator.from_projector(projector)
        rhs = fast_adjoint(projector, data) if self.fast_adjoint else projector.adjoint(data)
        n = projector.n
        mu = self.ridge * float(op.kernel[n - 1, n - 1, n - 1])
        x0t = None if x0 is None else x0.to(dtype=rhs.dtype, device=rhs.device)
        x, _ = conjugate_gradient(op, rhs, x0=x0t, shift=mu, n_iter=self.n_iter, tol=1e-12)
        m = _resolve_mask(self.mask, projector)
        if m is not None:
            x = x * torch.as_tensor(m, device=x.device)
        return x


@dataclass(frozen=True)
class TVReconstruction:
    """Reconstruction step by TV-ADMM with inner CG on the Toeplitz ``HᵀH`` (thesis Algorithm 4).

    Wraps :func:`cryowedge.spa.reconstruct.admm_cg` (thesis Algorithm 2) for
    :func:`joint_refinement`: ``n_admm`` = ``K_ADMM`` (thesis §5.2: 2 or 5) ADMM iterations of
    ``n_cg`` CG steps, warm-started from the previous coefficients. The data are divided by
    their standard deviation first (``λ`` unit-free, as in ``reconstruct_spa``; the result is
    multiplied back).

    Attributes
    ----------
    lam : float
        TV weight λ for the normalised data (≥ 0).
    n_admm, n_cg : int
        ADMM iterations per call and CG steps per ADMM iteration.
    rho : float, optional
        ADMM penalty (default: ``admm_cg``'s ``100 λ``).
    positivity : bool
        Constrain ``c ≥ 0``.
    """

    lam: float = 0.1
    n_admm: int = 5
    n_cg: int = 7
    rho: float | None = None
    positivity: bool = False

    def __post_init__(self) -> None:
        _check_positive(self.lam, "lam", allow_zero=True)
        _check_int(self.n_admm, "n_admm")
        _check_int(self.n_cg, "n_cg")

    def __call__(
        self, projector: SpaProjector, data: torch.Tensor, x0: torch.Tensor | None = None
    ) -> torch.Tensor:
        from cryowedge.spa.reconstruct import SpaProblem, admm_cg

        scale = float(data.to(torch.float64).std()) or 1.0
        b = data / scale
        problem = SpaProblem(
            normal=ToeplitzNormalOperator.from_projector(projector),
            atb=fast_adjoint(projector, b),
            data_norm2=float((b.to(torch.float64) ** 2).sum()),
            data_scale=scale,
            box_size=projector.n_det,
            scale=projector.scale,
            blob=projector.blob,
            pixel_size_angstrom=1.0,
            n_particles=projector.n_proj,
        )
        start = None if x0 is None else x0.to(dtype=b.dtype, device=b.device) / scale
        result = admm_cg(
            problem,
            lam=self.lam,
            rho=self.rho,
            n_admm=self.n_admm,
            n_cg=self.n_cg,
            positivity=self.positivity,
            x0=start,
        )
        return result.x * scale


# ============================================================================ joint refinement
@dataclass
class RefinementInfo:
    """What :func:`joint_refinement` reports after each outer iteration (to the callback).

    Attributes
    ----------
    iteration, n_iter : int
        Outer iteration (from 1) and the planned number.
    objective : float
        ``Σ_p J_p`` after the latent update, at the current volume.
    mean_angle_change_deg : float
        Mean geodesic change of the orientations in this update (degrees).
    mean_shift_change_px : float
        Mean change of the shifts (pixels).
    accepted : float
        Fraction of line searches that moved.
    rotations : numpy.ndarray
        ``(P, 3, 3)`` current orientations (do not modify).
    shifts_px : numpy.ndarray
        ``(P, 2)`` current shifts.
    coefficients : torch.Tensor
        ``(n, n, n)`` volume the update used.
    seconds : float
        Wall time since the start.
    """

    iteration: int
    n_iter: int
    objective: float
    mean_angle_change_deg: float
    mean_shift_change_px: float
    accepted: float
    rotations: np.ndarray
    shifts_px: np.ndarray
    coefficients: torch.Tensor
    seconds: float
    extras: dict[str, float] = field(default_factory=dict)


@dataclass
class RefinementResult:
    """Result of :func:`joint_refinement` or :func:`projection_matching_refinement`.

    Attributes
    ----------
    coefficients : torch.Tensor
        ``(n, n, n)`` final volume (reconstructed with the final orientations).
    rotations : numpy.ndarray
        ``(P, 3, 3)`` refined orientations.
    shifts_px : numpy.ndarray
        ``(P, 2)`` refined shifts ``(dy, dx)``.
    history : dict of list of float
        Per outer iteration: ``objective``, ``mean_angle_change_deg``, ``mean_shift_change_px``,
        ``accepted``, ``seconds`` and any callback extras.
    n_iter : int
        Outer iterations run.
    """

    coefficients: torch.Tensor
    rotations: np.ndarray
    shifts_px: np.ndarray
    history: dict[str, list[float]]
    n_iter: int


def _resolve_mask(mask: Any, projector: SpaProjector) -> np.ndarray | None:
    n = projector.n
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "sphere":
            raise ValueError(
                f"mask must be None, 'sphere' or a boolean (n, n, n) array, got {mask!r}."
            )
        room = projector.n_det - 1 - projector.n_det // 2
        if room / projector.scale - projector.blob.radius >= 0.25 * n:
            return support_sphere(projector)
        return sphere_mask(n)  # tiny box: the inscribed ball (method "auto" then goes direct)
    m = np.asarray(to_numpy(mask), dtype=bool)
    if m.shape != (n, n, n):
        raise ValueError(f"mask must have shape ({n}, {n}, {n}), got {m.shape}.")
    return m


def _check_particles(
    data: Any, rotations: Any, shifts_px: Any
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    b = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    if b.ndim != 3 or b.shape[1] != b.shape[2]:
        raise ValueError(
            f"data must be a (P, L, L) stack of square particle images, got shape {tuple(b.shape)}."
        )
    rot = check_rotations(rotations)
    if rot.shape[0] != b.shape[0]:
        raise ValueError(
            f"rotations hold {rot.shape[0]} matrices but data holds {b.shape[0]} particles; pass "
            "one (3, 3) matrix per particle."
        )
    if shifts_px is None:
        sh = np.zeros((b.shape[0], 2))
    else:
        sh = np.asarray(to_numpy(shifts_px), dtype=np.float64)
        if sh.shape != (b.shape[0], 2) or not np.isfinite(sh).all():
            raise ValueError(
                f"shifts_px must be finite with shape ({b.shape[0]}, 2) as (dy, dx) pixels, got "
                f"{sh.shape}."
            )
    return b, rot, sh


def joint_refinement(
    data: Any,
    rotations: Any,
    shifts_px: Any = None,
    *,
    shape: int | None = None,
    coefficients: Any = None,
    blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
    scale: int = 1,
    ctf: CtfLike | None = None,
    n_iter: int = 10,
    reconstruct: ReconstructFn | None = None,
    options: LatentUpdateOptions | None = None,
    method: Method = "auto",
    mask: Any = "sphere",
    callback: Callable[[RefinementInfo], Any] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> RefinementResult:
    """Joint refinement of the volume, orientations and shifts (thesis Algorithm 3).

    Each outer iteration reconstructs ``c`` at the current orientations (``reconstruct``,
    warm-started) and then runs one latent update (:func:`update_latent`, Algorithm 5) at that
    ``c``. After the last iteration the volume is reconstructed once more with the final
    orientations, so the returned volume and orientations belong together.

    Parameters
    ----------
    data : array_like or torch.Tensor
        ``(P, L, L)`` particle images.
    rotations : array_like
        ``(P, 3, 3)`` initial RELION ZYZ orientations.
    shifts_px : array_like, optional
        ``(P, 2)`` initial shifts ``(dy, dx)`` (default 0, as in the thesis).
    shape : int, optional
        Coefficients per axis ``n``; default ``ceil(L / scale)``.
    coefficients : array_like, optional
        ``(n, n, n)`` initial volume (e.g. an ab-initio model); default: reconstructed at the
        initial orientations.
    blob, scale, ctf
        Basis and CTF as for :class:`~cryowedge.spa.projector.SpaProjector`.
    n_iter : int
        Outer iterations.
    reconstruct : callable, optional
        :data:`ReconstructFn`; default :class:`RidgeReconstruction` ``()``.
    options : LatentUpdateOptions, optional
        Gradient-descent settings (thesis defaults K_GD = 3, η = 0.25).
    method : {"auto", "kernel", "direct"}
        Evaluation of ``J_p`` and its gradients.
    mask : None, "sphere" or (n, n, n) bool
        Support used by the latent update (``c · mask``); ``"sphere"``: the largest ball whose
        footprints stay on the detector (:func:`support_sphere`; the kernel form needs it), or
        the inscribed ball when that one would be narrower than ``n / 4`` (tiny boxes; ``"auto"``
        then evaluates directly).
    callback : callable, optional
        Receives a :class:`RefinementInfo` after each outer iteration; returning ``True`` stops.
    dtype, device
        Working precision and device.

    Returns
    -------
    RefinementResult
    """
    b, rot, sh = _check_particles(data, rotations, shifts_px)
    L = int(b.shape[-1])
    s = check_scale(scale)
    n = -(-L // s) if shape is None else _check_int(shape, "shape")
    n_iter = _check_int(n_iter, "n_iter")
    opts = LatentUpdateOptions() if options is None else options
    if not isinstance(opts, LatentUpdateOptions):
        raise ValueError(f"options must be LatentUpdateOptions, got {type(opts).__name__}.")
    recon = RidgeReconstruction() if reconstruct is None else reconstruct
    if not callable(recon):
        raise ValueError("reconstruct must be a callable (projector, data, x0) -> coefficients.")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    b = b.to(dtype=dtype, device=dev)

    def make_projector(r: np.ndarray, t: np.ndarray) -> SpaProjector:
        return SpaProjector(
            n, r, t, blob=blob, scale=s, detector_size=L, ctf=ctf, dtype=dtype, device=dev
        )

    m = _resolve_mask(mask, make_projector(rot[:1], sh[:1]))

    c = None
    if coefficients is not None:
        c = (
            coefficients
            if isinstance(coefficients, torch.Tensor)
            else torch.as_tensor(np.asarray(coefficients))
        )
        if tuple(c.shape) != (n, n, n):
            raise ValueError(f"coefficients must have shape ({n}, {n}, {n}), got {tuple(c.shape)}.")
        c = c.to(dtype=dtype, device=dev)
    history: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    done = 0
    for it in range(1, n_iter + 1):
        proj = make_projector(rot, sh)
        c = recon(proj, b, c)
        obj = ParticleObjective(proj, c, b, method=method, mask=m)
        rot, sh, stats = update_latent(obj, rot, sh, opts)
        done = it
        info = RefinementInfo(
            iteration=it,
            n_iter=n_iter,
            objective=stats["objective"],
            mean_angle_change_deg=stats["mean_angle_change_deg"],
            mean_shift_change_px=stats["mean_shift_change_px"],
            accepted=stats["accepted"],
            rotations=rot,
            shifts_px=sh,
            coefficients=c,
            seconds=time.perf_counter() - t_start,
        )
        stop = bool(callback(info)) if callback is not None else False
        for key in (
            "objective",
            "mean_angle_change_deg",
            "mean_shift_change_px",
            "accepted",
            "seconds",
        ):
            history.setdefault(key, []).append(float(getattr(info, key)))
        for key, value in info.extras.items():
            history.setdefault(key, []).append(float(value))
        logger.debug(
            "joint refinement %d/%d: objective %.6g, mean angle change %.3f°, accepted %.2f",
            it,
            n_iter,
            info.objective,
            info.mean_angle_change_deg,
            info.accepted,
        )
        if stop:
            break
    c = recon(make_projector(rot, sh), b, c)
    return RefinementResult(
        coefficients=c, rotations=rot, shifts_px=sh, history=history, n_iter=done
    )


# ============================================================================ projection matching
@dataclass
class MatchResult:
    """Result of :func:`projection_matching`.

    Attributes
    ----------
    rotations : numpy.ndarray
        ``(P, 3, 3)`` best orientations.
    objective : numpy.ndarray
        ``(P,)`` ``J_p`` at the best orientation (least squares; also for ``metric="correlation"``).
    """

    rotations: np.ndarray
    objective: np.ndarray


def projection_matching(
    data: Any,
    coefficients: Any,
    shifts_px: Any = None,
    *,
    blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
    scale: int = 1,
    ctf: CtfLike | None = None,
    n_orientations: int = 2000,
    candidates: Any = None,
    metric: Literal["least_squares", "correlation"] = "least_squares",
    local_rounds: int = 2,
    local_candidates: int = 32,
    mask: Any = "sphere",
    rng: np.random.Generator | int | None = 0,
    template_batch: int = 256,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> MatchResult:
    """Orientation of each particle by matching with projections of the volume (baseline).

    1. Templates ``T_c = S(R_c) c`` at the candidate orientations (a super-Fibonacci grid of
       ``n_orientations``, or ``candidates``); each particle (shifted back by its ``t_p``, with
       its CTF applied to the template) picks the template minimising ``‖b_p − C_p T_c‖²``
       (``"least_squares"``) or maximising the normalised correlation (``"correlation"``).
    2. ``local_rounds`` rounds: ``local_candidates`` random rotations in a ball around the best
       one (radius: the grid's cell radius, halved each round), scored exactly by ``J_p``
       (with the particle's shift, no resampling), keep the best.

    Parameters
    ----------
    data : array_like
        ``(P, L, L)`` particle images.
    coefficients : array_like
        ``(n, n, n)`` volume.
    shifts_px : array_like, optional
        ``(P, 2)`` known shifts ``(dy, dx)`` (not searched).
    blob, scale, ctf
        Basis and CTF.
    n_orientations : int
        Size of the SO(3) grid (cell radius :func:`~cryowedge.spa.angles.cell_radius_deg`).
    candidates : array_like, optional
        ``(N, 3, 3)`` explicit candidate orientations instead of the grid.
    metric : {"least_squares", "correlation"}
        Score of the global search.
    local_rounds, local_candidates : int
        Local refinement (0 rounds: grid only).
    mask : None, "sphere" or (n, n, n) bool
        Support of the volume used for matching (as in :func:`joint_refinement`).
    rng : numpy.random.Generator or int or None
        Random source of the local candidates.
    template_batch : int
        Templates projected at once.
    dtype, device
        Working precision and device.

    Returns
    -------
    MatchResult
    """
    b = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    if b.ndim != 3 or b.shape[1] != b.shape[2]:
        raise ValueError(f"data must be a (P, L, L) stack, got shape {tuple(b.shape)}.")
    p, L = int(b.shape[0]), int(b.shape[-1])
    c = (
        coefficients
        if isinstance(coefficients, torch.Tensor)
        else torch.as_tensor(np.asarray(coefficients))
    )
    if c.ndim != 3 or len(set(c.shape)) != 1:
        raise ValueError(f"coefficients must be a cube (n, n, n), got shape {tuple(c.shape)}.")
    n = int(c.shape[0])
    sh = (
        np.zeros((p, 2)) if shifts_px is None else np.asarray(to_numpy(shifts_px), dtype=np.float64)
    )
    if sh.shape != (p, 2):
        raise ValueError(f"shifts_px must have shape ({p}, 2), got {sh.shape}.")
    if metric not in ("least_squares", "correlation"):
        raise ValueError(f"metric must be 'least_squares' or 'correlation', got {metric!r}.")
    local_rounds = _check_int(local_rounds, "local_rounds", 0)
    local_candidates = _check_int(local_candidates, "local_candidates")
    if candidates is None:
        cand = super_fibonacci_rotations(_check_int(n_orientations, "n_orientations"))
    else:
        cand = check_rotations(candidates, "candidates")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = np.random.default_rng(rng)
    c = c.to(dtype=dtype, device=dev)
    bt = b.to(dtype=dtype, device=dev)
    # Particles whose shift is t: compare b(· + t) with the centred template.
    from cryowedge.spa.particles import shift_images

    centred = (
        bt
        if not np.any(sh)
        else torch.as_tensor(shift_images(bt.cpu().numpy(), -sh), dtype=dtype, device=dev)
    )
    proj = SpaProjector(
        n,
        np.eye(3)[None].repeat(p, 0),
        sh,
        blob=blob,
        scale=scale,
        detector_size=L,
        ctf=ctf,
        dtype=dtype,
        device=dev,
    )
    # The exact J_p (direct model, the particle's own shift) of the masked volume.
    obj = ParticleObjective(proj, c, bt, method="direct", mask=_resolve_mask(mask, proj))
    ctf_half = proj.ctf_half(0, p)  # (P, L, L//2+1) or None
    fb = centred.reshape(p, -1)
    if ctf_half is not None:
        fb = torch.fft.irfft2(torch.fft.rfft2(centred) * ctf_half, s=(L, L)).reshape(p, -1)
    # Hermitian multiplicities of the rfft2 columns for Parseval.
    wcol = torch.full((L // 2 + 1,), 2.0, dtype=dtype, device=dev)
    wcol[0] = 1.0
    if L % 2 == 0:
        wcol[-1] = 1.0
    best = torch.full((p,), float("inf"), dtype=torch.float64, device=dev)
    best_idx = torch.zeros(p, dtype=torch.long, device=dev)
    b_norm = (fb.to(torch.float64) ** 2).sum(1).sqrt() if metric == "correlation" else None
    for c0 in range(0, cand.shape[0], template_batch):
        c1 = min(c0 + template_batch, cand.shape[0])
        tmpl = obj.project(cand[c0:c1])  # (nc, L, L), no CTF, no shift
        cross = (fb @ tmpl.reshape(c1 - c0, -1).T).to(torch.float64)  # ⟨C b, T⟩ (P, nc)
        spec = torch.fft.rfft2(tmpl)
        power = (spec.real**2 + spec.imag**2) * wcol / (L * L)  # (nc, L, L//2+1)
        if ctf_half is None:
            tn2 = power.reshape(c1 - c0, -1).sum(1).to(torch.float64)[None, :].expand(p, -1)
        else:
            tn2 = ((ctf_half**2).reshape(p, -1) @ power.reshape(c1 - c0, -1).T).to(torch.float64)
        if metric == "least_squares":
            score = tn2 - 2.0 * cross  # ‖C T‖² − 2⟨b, C T⟩ (+ ‖b‖²)
        else:
            score = -cross / (tn2.clamp_min(1e-30).sqrt() * b_norm[:, None].clamp_min(1e-30))
        val, arg = score.min(dim=1)
        better = val < best
        best = torch.where(better, val, best)
        best_idx = torch.where(better, arg + c0, best_idx)
    rot = cand[best_idx.cpu().numpy()]
    # Local refinement with the exact J_p.
    radius = cell_radius_deg(cand.shape[0])
    shifts_t = torch.as_tensor(sh, dtype=dtype, device=dev)
    j_best = torch.as_tensor(obj.values(rot, sh), dtype=torch.float64)
    per_batch = max(1, 256 // local_candidates)
    for _ in range(local_rounds):
        near = rotations_near(rot, local_candidates, radius, gen)  # (P, k, 3, 3)
        for p0 in range(0, p, per_batch):
            p1 = min(p0 + per_batch, p)
            batch = obj.batch(p0, p1)
            which = torch.arange(p1 - p0, device=dev).repeat_interleave(local_candidates)
            r_t = torch.as_tensor(near[p0:p1].reshape(-1, 3, 3), dtype=dtype, device=dev)
            j = batch.evaluate(r_t, shifts_t[p0:p1][which], which)
            val, arg = j.to(torch.float64).reshape(p1 - p0, -1).min(dim=1)
            val, arg = val.cpu(), arg.cpu().numpy()
            better = (val < j_best[p0:p1]).numpy()
            j_best[p0:p1] = torch.minimum(val, j_best[p0:p1])
            rows = np.flatnonzero(better)
            rot[p0 + rows] = near[p0 + rows, arg[rows]]
        radius *= 0.5
    return MatchResult(rotations=rot, objective=j_best.cpu().numpy())


def projection_matching_refinement(
    data: Any,
    rotations: Any = None,
    shifts_px: Any = None,
    *,
    coefficients: Any = None,
    shape: int | None = None,
    blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
    scale: int = 1,
    ctf: CtfLike | None = None,
    n_iter: int = 5,
    reconstruct: ReconstructFn | None = None,
    n_orientations: int = 2000,
    metric: Literal["least_squares", "correlation"] = "least_squares",
    local_rounds: int = 2,
    local_candidates: int = 32,
    mask: Any = "sphere",
    callback: Callable[[RefinementInfo], Any] | None = None,
    rng: np.random.Generator | int | None = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> RefinementResult:
    """Baseline: alternate reconstruction and :func:`projection_matching` (shifts kept fixed).

    Parameters
    ----------
    data : array_like
        ``(P, L, L)`` particle images.
    rotations : array_like, optional
        ``(P, 3, 3)`` initial orientations, used for the first reconstruction when no
        ``coefficients`` are given.
    shifts_px : array_like, optional
        ``(P, 2)`` known shifts.
    coefficients : array_like, optional
        ``(n, n, n)`` initial volume.
    n_iter : int
        Outer iterations (match, then reconstruct).
    Other parameters
        As in :func:`joint_refinement` and :func:`projection_matching`.

    Returns
    -------
    RefinementResult
        ``history`` holds ``objective`` (``Σ_p J_p`` after matching) and
        ``mean_angle_change_deg``.
    """
    b = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    if b.ndim != 3 or b.shape[1] != b.shape[2]:
        raise ValueError(f"data must be a (P, L, L) stack, got shape {tuple(b.shape)}.")
    p, L = int(b.shape[0]), int(b.shape[-1])
    if rotations is None and coefficients is None:
        raise ValueError(
            "give initial rotations or initial coefficients (a volume to match against)."
        )
    if rotations is not None:
        b, rot, sh = _check_particles(b, rotations, shifts_px)
    else:
        _, _, sh = _check_particles(b, np.eye(3)[None].repeat(p, 0), shifts_px)
        rot = None
    s = check_scale(scale)
    n = -(-L // s) if shape is None else _check_int(shape, "shape")
    n_iter = _check_int(n_iter, "n_iter")
    recon = RidgeReconstruction() if reconstruct is None else reconstruct
    dev = torch.device(device) if device is not None else torch.device("cpu")
    b = b.to(dtype=dtype, device=dev)
    gen = np.random.default_rng(rng)

    def make_projector(r: np.ndarray) -> SpaProjector:
        return SpaProjector(
            n, r, sh, blob=blob, scale=s, detector_size=L, ctf=ctf, dtype=dtype, device=dev
        )

    if coefficients is not None:
        c = (
            coefficients
            if isinstance(coefficients, torch.Tensor)
            else torch.as_tensor(np.asarray(coefficients))
        )
        if tuple(c.shape) != (n, n, n):
            raise ValueError(f"coefficients must have shape ({n}, {n}, {n}), got {tuple(c.shape)}.")
        c = c.to(dtype=dtype, device=dev)
    else:
        c = recon(make_projector(rot), b, None)
    history: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    for it in range(1, n_iter + 1):
        match = projection_matching(
            b,
            c,
            sh,
            blob=blob,
            scale=s,
            ctf=ctf,
            n_orientations=n_orientations,
            metric=metric,
            local_rounds=local_rounds,
            local_candidates=local_candidates,
            mask=mask,
            rng=gen,
            dtype=dtype,
            device=dev,
        )
        change = (
            geodesic_distance_deg(rot, match.rotations).mean() if rot is not None else float("nan")
        )
        rot = match.rotations
        info = RefinementInfo(
            iteration=it,
            n_iter=n_iter,
            objective=float(match.objective.sum()),
            mean_angle_change_deg=float(change),
            mean_shift_change_px=0.0,
            accepted=float("nan"),
            rotations=rot,
            shifts_px=sh,
            coefficients=c,
            seconds=time.perf_counter() - t_start,
        )
        stop = bool(callback(info)) if callback is not None else False
        for key in ("objective", "mean_angle_change_deg", "seconds"):
            history.setdefault(key, []).append(float(getattr(info, key)))
        for key, value in info.extras.items():
            history.setdefault(key, []).append(float(value))
        c = recon(make_projector(rot), b, c)
        if stop:
            break
    return RefinementResult(coefficients=c, rotations=rot, shifts_px=sh, history=history, n_iter=it)
