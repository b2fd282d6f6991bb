"""Kaiser–Bessel window functions ("blobs"), their X-ray transform, and the scaled basis.

The single-particle model (research/thesis.md §2.1, §4.1) expands a volume in shifted,
isotropic Kaiser–Bessel window functions (KBWF) of radius ``a``, taper ``α`` and order ``m``
(thesis eq. 2.4)::

    ϕ(x) = (1 − (|x|/a)²)^{m/2} I_m(α √(1 − (|x|/a)²)) / I_m(α)     for |x| ≤ a, else 0

and, at scale ``s`` (a positive integer here), on a grid of step ``s`` (thesis 4.1–4.2)::

    f̃_s(x) = Σ_k c_s[k] ϕ_s(x − s k),     ϕ_s = ϕ(·/s).

Lengths are in fine voxels (= detector pixels); frequencies in cycles per fine voxel.
Closed forms (thesis Prop. 1, A.22; Lewitt 1990 for the Fourier transform), with
``β(r) = √(1 − (r/a)²)`` and ``A = √(2π/α) / I_m(α)``::

    P{ϕ}(r)      = a A β^{m+½} I_{m+½}(α β)                  X-ray transform (projected blob)
    dP{ϕ}/dr (r) = −(α r / a) A β^{m−½} I_{m−½}(α β)          its radial derivative
    ϕ̂(q)         = (2π)^{3/2} a³ α^m / I_m(α) · Λ(α² − (2π a q)²),
                   Λ(t) = I_{m+3/2}(√t)/√t^{m+3/2}  (t > 0),  J_{m+3/2}(√−t)/√−t^{m+3/2}  (t < 0)

``ϕ̂`` is the 3D Fourier transform (``∫ ϕ(x) e^{−2πi q·x} dx``); by the central-slice theorem
it is also the 2D Fourier transform of ``P{ϕ}``. ``G = P{ϕ} ⋆ P{ϕ}``, the autocorrelation of the
projected blob (radial, support ``2a``), is computed here by a Hankel transform of ``ϕ̂²``. The
scaled versions follow from ``ϕ_s = ϕ(·/s)``: ``P{ϕ_s}(r) = s P{ϕ}(r/s)``, ``ϕ̂_s(q) = s³ ϕ̂(s q)``,
``G_s(ρ) = s⁴ G(ρ/s)`` (thesis 4.18 and §13 item 4).

Defaults: :data:`RECONSTRUCTION_BLOB` is the thesis's reconstruction basis KBWF(a = 4,
α = 19, m = 2) and :data:`SIMULATION_BLOB` its data-generation basis KBWF(a = 2, α = 10.8, m = 2)
(research/thesis.md §4.2, §10).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy import interpolate, special

__all__ = [
    "KaiserBesselBlob",
    "RECONSTRUCTION_BLOB",
    "SIMULATION_BLOB",
    "RadialTable",
    "check_scale",
    "coarse_size",
    "coefficient_positions",
    "expand",
    "refine_coefficients",
]

logger = logging.getLogger(__name__)


def check_scale(scale: int, name: str = "scale") -> int:
    """Return ``scale`` as an ``int`` if it is a positive integer; raise ``ValueError`` otherwise.

    Parameters
    ----------
    scale : int
        The basis scale ``s`` (grid step in fine voxels).
    name : str
        Name used in the error message.
    """
    ok = isinstance(scale, (int, np.integer)) and not isinstance(scale, bool) and scale >= 1
    if not ok and isinstance(scale, float) and scale.is_integer() and scale >= 1:
        return int(scale)
    if not ok:
        raise ValueError(
            f"{name} must be a positive integer (the coefficient grid step in voxels: 1, 2, 3, "
            "...), "
            f"got {scale!r}."
        )
    return int(scale)


def coarse_size(n: int, scale: int) -> int:
    """Number of coefficients per axis at scale ``s`` covering ``n`` fine voxels: ``ceil(n / s)``.

    Coefficient ``k`` (0-based) sits at fine centred coordinate ``s·(k − n_s // 2)``, so the
    ``n_s`` coefficients span ``[−s·(n_s // 2), s·(n_s − 1 − n_s // 2)]``, which covers the fine
    centred range ``[−(n // 2), n − 1 − n // 2]``.
    """
    scale = check_scale(scale)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (voxels per axis), got {n!r}.")
    return -(-int(n) // scale)


def coefficient_positions(n_s: int, scale: int = 1) -> np.ndarray:
    """Centred fine-voxel coordinates ``s·(k − n_s // 2)`` of the coefficients along one axis.

    Returns
    -------
    numpy.ndarray
        ``(n_s,)`` float64, in fine voxels relative to the centre voxel ``n // 2``.
    """
    scale = check_scale(scale)
    return scale * (np.arange(n_s, dtype=np.float64) - n_s // 2)


def _lambda_fn(nu: float, t: np.ndarray) -> np.ndarray:
    """``I_ν(√t)/√t^ν`` for ``t ≥ 0`` and ``J_ν(√−t)/√−t^ν`` for ``t < 0`` (entire in ``t``)."""
    t = np.asarray(t, dtype=np.float64)
    out = np.empty_like(t)
    limit = 1.0 / (2.0**nu * special.gamma(nu + 1.0))
    small = np.abs(t) < 1e-10
    pos = (t > 0) & ~small
    neg = (t < 0) & ~small
    x = np.sqrt(t[pos])
    out[pos] = special.iv(nu, x) / x**nu
    y = np.sqrt(-t[neg])
    out[neg] = special.jv(nu, y) / y**nu
    out[small] = limit
    return out


@dataclass(frozen=True)
class KaiserBesselBlob:
    """A Kaiser–Bessel window function ``ϕ`` of radius ``a``, taper ``α`` and order ``m``.

    All methods take radii in fine voxels (detector pixels) and an optional integer
    ``scale`` ``s`` for the dilated blob ``ϕ_s = ϕ(·/s)`` (support radius ``s·a``). Values are
    NumPy float64 arrays of the input's shape.

    Parameters
    ----------
    radius : float
        Support radius ``a`` in grid steps (> 0).
    alpha : float
        Taper ``α`` (> 0).
    order : float
        Bessel order ``m`` (≥ 0; 2 in the thesis).
    """

    radius: float = 4.0
    alpha: float = 19.0
    order: float = 2.0

    def __post_init__(self) -> None:
        for value, name in ((self.radius, "radius"), (self.alpha, "alpha")):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"KaiserBesselBlob {name} must be finite and > 0, got {value!r}.")
        if not np.isfinite(self.order) or self.order < 0:
            raise ValueError(f"KaiserBesselBlob order must be >= 0, got {self.order!r}.")

    # ------------------------------------------------------------------ space domain
    def value(self, r: ArrayLike, scale: int = 1) -> np.ndarray:
        """The 3D blob ``ϕ_s(r) = ϕ(r/s)`` at radius ``r`` (voxels)."""
        s = check_scale(scale)
        a, alpha, m = self.radius, self.alpha, self.order
        rr = np.abs(np.asarray(r, dtype=np.float64)) / s
        inside = rr <= a
        beta = np.sqrt(np.clip(1.0 - (rr / a) ** 2, 0.0, None))
        out = beta**m * special.iv(m, alpha * beta) / special.iv(m, alpha)
        return np.where(inside, out, 0.0)

    def projected(self, r: ArrayLike, scale: int = 1) -> np.ndarray:
        """Closed-form X-ray transform ``P{ϕ_s}(r) = s·P{ϕ}(r/s)`` (thesis 4.40) at radius ``r``.

        Parameters
        ----------
        r : array_like
            Distance in the detector plane from the projected blob centre (pixels).
        scale : int
            Blob scale ``s``.

        Returns
        -------
        numpy.ndarray
            Line integrals of the blob (units: value × voxels), same shape as ``r``.
        """
        s = check_scale(scale)
        a, alpha, m = self.radius, self.alpha, self.order
        rr = np.abs(np.asarray(r, dtype=np.float64)) / s
        inside = rr < a
        beta = np.sqrt(np.clip(1.0 - (rr / a) ** 2, 0.0, None))
        amp = a * math.sqrt(2.0 * math.pi / alpha) / special.iv(m, alpha)
        out = amp * beta ** (m + 0.5) * special.iv(m + 0.5, alpha * beta)
        return s * np.where(inside, out, 0.0)

    def projected_derivative(self, r: ArrayLike, scale: int = 1) -> np.ndarray:
        """Radial derivative ``d/dr P{ϕ_s}(r) = P{ϕ}'(r/s)`` (thesis 4.41) at detector radius ``r``.

        Returns
        -------
        numpy.ndarray
            Per pixel (value × voxels / pixel), same shape as ``r``; 0 at ``r = 0`` and outside
            the support. Singular at ``r = s·a`` only for ``m < ½``.
        """
        s = check_scale(scale)
        a, alpha, m = self.radius, self.alpha, self.order
        rr = np.abs(np.asarray(r, dtype=np.float64)) / s
        inside = rr < a
        beta = np.sqrt(np.clip(1.0 - (rr / a) ** 2, 1e-300, None))
        amp = math.sqrt(2.0 * math.pi / alpha) / special.iv(m, alpha)
        out = -(alpha * rr / a) * amp * beta ** (m - 0.5) * special.iv(m - 0.5, alpha * beta)
        return np.where(inside, out, 0.0)

    def projected_gradient(self, y: ArrayLike, scale: int = 1) -> np.ndarray:
        """Gradient ``∇_y P{ϕ_s}(y)`` with respect to the detector position ``y``.

        Parameters
        ----------
        y : array_like
            ``(..., 2)`` detector offsets from the projected blob centre (pixels, any fixed order).

        Returns
        -------
        numpy.ndarray
            ``(..., 2)`` gradient in the same component order (thesis 4.41:
            ``−α y_j A/(a s) β^{m−½} I_{m−½}(αβ)`` at ``r/s``).
        """
        yy = np.asarray(y, dtype=np.float64)
        if yy.ndim < 1 or yy.shape[-1] != 2:
            raise ValueError(f"y must have shape (..., 2), got {yy.shape}.")
        r = np.sqrt(np.sum(yy * yy, axis=-1))
        d = self.projected_derivative(r, scale)
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.where(r[..., None] > 0, yy / np.where(r > 0, r, 1.0)[..., None], 0.0)
        return d[..., None] * unit

    # ------------------------------------------------------------------ Fourier domain
    def fourier(self, q: ArrayLike, scale: int = 1) -> np.ndarray:
        """3D Fourier transform ``ϕ̂_s(q) = s³ ϕ̂(s q)``, also the 2D FT of the projected blob.

        Parameters
        ----------
        q : array_like
            Frequency magnitude (cycles per voxel).

        Returns
        -------
        numpy.ndarray
            ``∫ ϕ_s(x) e^{−2πi q·x} dx`` (value × voxels³), same shape as ``q``.
        """
        s = check_scale(scale)
        a, alpha, m = self.radius, self.alpha, self.order
        qq = np.abs(np.asarray(q, dtype=np.float64)) * s
        t = alpha**2 - (2.0 * math.pi * a * qq) ** 2
        amp = (2.0 * math.pi) ** 1.5 * a**3 * alpha**m / special.iv(m, alpha)
        return s**3 * amp * _lambda_fn(m + 1.5, t)

    def integral(self, scale: int = 1) -> float:
        """``∫ ϕ_s(x) dx = ϕ̂_s(0)`` (value × voxels³)."""
        return float(self.fourier(0.0, scale))

    def projected_autocorrelation(self, rho: ArrayLike, scale: int = 1) -> np.ndarray:
        """``G_s(ρ) = (P{ϕ_s} ⋆ P{ϕ_s})(ρ) = s⁴ G(ρ/s)``: autocorrelation of the projected blob.

        ``G(ρ) = 2π ∫ ϕ̂(q)² J₀(2π q ρ) q dq`` (2D inverse Hankel transform), evaluated by
        composite Gauss–Legendre quadrature up to the frequency where ``ϕ̂²`` has decayed
        below ~1e-20 of its peak (accuracy ~1e-12 relative). Support ``ρ < 2 s a``.

        Parameters
        ----------
        rho : array_like
            Distance in the detector plane (pixels).

        Returns
        -------
        numpy.ndarray
            Same shape as ``rho`` (value² × voxels⁴ / pixels²... i.e. ``∫ ψ(y) ψ(y + ρ) dy``).
        """
        s = check_scale(scale)
        rr = np.abs(np.asarray(rho, dtype=np.float64)) / s
        nodes, weights = _hankel_rule(self)
        flat = rr.reshape(-1)
        out = np.empty_like(flat)
        integrand_w = weights * self.fourier(nodes) ** 2 * nodes * 2.0 * math.pi
        for start in range(0, flat.size, 2048):
            chunk = flat[start : start + 2048]
            out[start : start + 2048] = (
                special.j0(2.0 * math.pi * np.outer(chunk, nodes)) @ integrand_w
            )
        out = np.where(flat < 2.0 * self.radius, out, 0.0)
        return s**4 * out.reshape(rr.shape)

    # ------------------------------------------------------------------ tables
    def projected_table(
        self,
        scale: int = 1,
        *,
        n_samples: int = 1 << 16,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> RadialTable:
        """Look-up table of ``P{ϕ_s}`` (closed form), uniform in ``r²`` on ``[0, (s a)²]``."""
        s = check_scale(scale)
        r2_max = (s * self.radius) ** 2
        r2 = np.linspace(0.0, r2_max, n_samples)
        return RadialTable(self.projected(np.sqrt(r2), s), r2_max, dtype=dtype, device=device)

    def autocorrelation_table(
        self,
        scale: int = 1,
        *,
        n_samples: int = 1 << 18,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> RadialTable:
        """Look-up table of ``G_s`` sampled uniformly in ``ρ²`` on ``[0, (2 s a)²]``."""
        s = check_scale(scale)
        r2_max = (2.0 * s * self.radius) ** 2
        values = _autocorrelation_samples(self, n_samples) * s**4
        return RadialTable(values, r2_max, dtype=dtype, device=device)


RECONSTRUCTION_BLOB = KaiserBesselBlob(radius=4.0, alpha=19.0, order=2.0)
SIMULATION_BLOB = KaiserBesselBlob(radius=2.0, alpha=10.8, order=2.0)


@functools.lru_cache(maxsize=16)
def _hankel_rule(blob: KaiserBesselBlob) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre nodes/weights on ``[0, Q]`` for the Hankel integral of ``ϕ̂²``."""
    # Beyond 2π a q = α + 80 the envelope of ϕ̂/ϕ̂(0) is far below 1e-10 for the usual (a, α, m).
    q_max = (blob.alpha + 80.0) / (2.0 * math.pi * blob.radius)
    # J0(2π q ρ) with ρ ≤ 2a and ϕ̂ (period ~1/a) oscillate ≲ 4 a q_max times: 24 nodes per panel.
    n_panels = int(math.ceil(8.0 * blob.radius * q_max)) + 16
    x, w = np.polynomial.legendre.leggauss(24)
    edges = np.linspace(0.0, q_max, n_panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    nodes = (mid[:, None] + half[:, None] * x[None, :]).reshape(-1)
    weights = (half[:, None] * w[None, :]).reshape(-1)
    return nodes, weights


@functools.lru_cache(maxsize=16)
def _autocorrelation_samples(blob: KaiserBesselBlob, n_samples: int) -> np.ndarray:
    """``G`` (scale 1) at ``ρ = sqrt(linspace(0, (2a)², n_samples))`` (cached per blob).

    ``G`` is computed by the Hankel quadrature at 4097 points uniform in ``ρ²`` and carried to the
    table by a cubic spline in ``ρ²`` (``G`` is analytic in ``ρ²`` near 0 and vanishes to high order
    at ``2a``; spline error ≲ 1e-12 relative), so large tables cost no more quadrature.
    """
    r2_max = (2.0 * blob.radius) ** 2
    nodes = np.linspace(0.0, r2_max, 4097)
    exact = blob.projected_autocorrelation(np.sqrt(nodes))
    exact[-1] = 0.0
    spline = interpolate.CubicSpline(nodes, exact)  # not-a-knot ends
    values = spline(np.linspace(0.0, r2_max, n_samples))
    values[-1] = 0.0
    values.setflags(write=False)
    return values


class RadialTable:
    """A radial function tabulated uniformly in the **squared** radius, linearly interpolated.

    Indexing by ``r²`` avoids square roots in the projector's inner loop; the blob functions
    are smooth in ``r²`` near the centre. Values beyond the last sample are 0.

    Parameters
    ----------
    values : array_like
        ``(n_samples,)`` samples at ``r² = linspace(0, r2_max, n_samples)``.
    r2_max : float
        Squared radius of the last sample (pixels²); the support.
    """

    def __init__(
        self,
        values: ArrayLike,
        r2_max: float,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1 or v.size < 2:
            raise ValueError(
                f"values must be a 1D array of at least 2 samples, got shape {v.shape}."
            )
        self.r2_max = float(r2_max)
        self.n_samples = int(v.size)
        # One extra zero sample so that index n_samples - 1 + 1 is valid.
        self.values = torch.as_tensor(np.append(v, 0.0), dtype=dtype, device=device)
        self.inv_step = (self.n_samples - 1) / self.r2_max
        self._pairs = torch.stack([self.values[:-1], self.values[1:] - self.values[:-1]], dim=1)
        # With a zero last sample the clamp below already gives 0 outside the support.
        self._needs_mask = bool(v[-1] != 0.0)

    def to(self, dtype: torch.dtype, device: torch.device | str | None) -> RadialTable:
        """The same table as ``dtype`` on ``device`` (self if unchanged)."""
        if self.values.dtype == dtype and (
            device is None or self.values.device == torch.device(device)
        ):
            return self
        out = RadialTable.__new__(RadialTable)
        out.r2_max, out.n_samples, out.inv_step = self.r2_max, self.n_samples, self.inv_step
        out._needs_mask = self._needs_mask
        out.values = self.values.to(dtype=dtype, device=device)
        out._pairs = self._pairs.to(dtype=dtype, device=device)
        return out

    def lookup_steps(self, t: torch.Tensor) -> torch.Tensor:
        """Values at ``r² = t / inv_step`` (``t``: squared radius in table steps; overwritten).

        The projector's inner loop: it scales the per-axis squared offsets once, so a single
        broadcast sum gives ``t``. Requires a zero last sample (true for the blob tables).
        """
        if self._needs_mask:
            return self(t / self.inv_step)
        if t.dtype != self.values.dtype:
            t = t.to(self.values.dtype)
        t = t.clamp_(max=float(self.n_samples - 1))
        # int32 indices convert and gather several times faster than int64 on CPU; one gather of
        # (value, slope) pairs replaces two gathers of neighbouring samples.
        pairs = self._pairs.index_select(0, t.to(torch.int32).reshape(-1))
        out = torch.addcmul(pairs[:, 0], torch.frac(t).reshape(-1), pairs[:, 1])
        return out.reshape(t.shape)

    def __call__(self, r2: torch.Tensor) -> torch.Tensor:
        """Interpolated values at squared radii ``r2`` (any shape; pixels²)."""
        if r2.dtype != self.values.dtype:
            r2 = r2.to(self.values.dtype)
        t = torch.clamp(r2 * self.inv_step, max=float(self.n_samples - 1))
        i = t.to(torch.long)
        out = torch.lerp(self.values[i], self.values[i + 1], t - i)
        if self._needs_mask:
            out = torch.where(
                r2 < self.r2_max, out, torch.zeros((), dtype=out.dtype, device=out.device)
            )
        return out


# ---------------------------------------------------------------------- expansion on grids
def _as_volume(coefficients: ArrayLike | torch.Tensor, name: str = "coefficients") -> torch.Tensor:
    c = (
        coefficients
        if isinstance(coefficients, torch.Tensor)
        else torch.as_tensor(np.asarray(coefficients))
    )
    if c.ndim != 3 or len(set(c.shape)) != 1:
        raise ValueError(
            f"{name} must be a cubic (n, n, n) array in (z, y, x) order, got shape "
            f"{tuple(c.shape)}; "
            "pad or crop it to a cube."
        )
    if not c.is_floating_point():
        c = c.to(torch.float64)
    return c


def _blob_kernel(blob: KaiserBesselBlob, scale: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``ϕ_s`` sampled at integer offsets ``|j| ≤ ⌊s a⌋`` per axis: ``(w, w, w)``, ``w`` odd."""
    h = int(math.floor(scale * blob.radius))
    j = np.arange(-h, h + 1, dtype=np.float64)
    r = np.sqrt(j[:, None, None] ** 2 + j[None, :, None] ** 2 + j[None, None, :] ** 2)
    return torch.as_tensor(blob.value(r, scale), dtype=dtype, device=device)


def _fft_convolve_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Linear 3D convolution of ``x`` with an odd, centred ``kernel``, cropped to ``x``'s shape."""
    h = [k // 2 for k in kernel.shape]
    full = [n + k - 1 for n, k in zip(x.shape, kernel.shape, strict=True)]
    fx = torch.fft.rfftn(x, s=full)
    fk = torch.fft.rfftn(kernel, s=full)
    y = torch.fft.irfftn(fx * fk, s=full)
    return y[h[0] : h[0] + x.shape[0], h[1] : h[1] + x.shape[1], h[2] : h[2] + x.shape[2]]


def expand(
    coefficients: ArrayLike | torch.Tensor,
    blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
    scale: int = 1,
    shape: int | None = None,
) -> torch.Tensor:
    """Re-expand coefficients on the fine voxel grid: ``f̃_s(x) = Σ_k c_s[k] ϕ_s(x − s k)`` (4.1).

    Coefficient ``k`` sits at fine centred coordinate ``s·(k − n_s // 2)`` (per axis); fine voxel
    ``i`` at ``i − n // 2`` (docs/conventions.md). Computed exactly as a zero-inserted
    upsampling followed by an FFT convolution with ``ϕ_s`` sampled on the integer grid.

    Parameters
    ----------
    coefficients : array_like or torch.Tensor
        ``(n_s, n_s, n_s)`` coefficients in (z, y, x) order.
    blob : KaiserBesselBlob
        The basis function ``ϕ``.
    scale : int
        Grid step ``s`` (positive integer).
    shape : int, optional
        Fine grid size ``n`` per axis; default ``s·n_s``.

    Returns
    -------
    torch.Tensor
        ``(n, n, n)`` volume (same dtype and device as the coefficients; float64 for NumPy input).
    """
    s = check_scale(scale)
    c = _as_volume(coefficients)
    n_s = c.shape[0]
    n = s * n_s if shape is None else int(shape)
    if n < 1:
        raise ValueError(f"shape must be a positive integer, got {shape!r}.")
    kernel = _blob_kernel(blob, s, c.dtype, c.device)
    h = kernel.shape[0] // 2
    # Fine centred coordinate of coefficient k: s (k - n_s//2); fine index i = coordinate + n//2.
    # Work on a padded fine grid with index offset `lo` so every coefficient and footprint fits.
    first = s * (0 - n_s // 2) + n // 2  # fine index of coefficient 0
    lo = min(0, first) - h
    hi = max(n - 1, first + s * (n_s - 1)) + h
    size = hi - lo + 1
    up = torch.zeros((size,) * 3, dtype=c.dtype, device=c.device)
    idx = first - lo + s * torch.arange(n_s, device=c.device)
    up[idx[:, None, None], idx[None, :, None], idx[None, None, :]] = c
    vol = _fft_convolve_same(up, kernel)
    start = 0 - lo
    return vol[start : start + n, start : start + n, start : start + n].contiguous()


def refine_coefficients(
    coefficients: ArrayLike | torch.Tensor,
    blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
    scale: int = 2,
    new_scale: int = 1,
    shape: int | None = None,
) -> torch.Tensor:
    """Re-expand scale-``s`` coefficients in the finer basis of scale ``s'`` (next-scale start).

    Returns ``c'`` with ``Σ_l c'[l] ϕ_{s'}(s' k − s' l) = f̃_s(s' k)`` at the new grid points
    ``s' k`` (interpolation: the samples of the coarse expansion, on the new grid extended by the
    blob radius, are divided in the Fourier domain by the symbol of ``ϕ_{s'}`` sampled on its own
    grid, after zero padding; then cropped to ``n'``). The interpolation is exact where no
    coefficient outside the ``n'`` crop contributes, i.e. more than ``s' a`` inside the border.
    ``s'`` must divide ``s`` so the new grid contains the old one.

    Parameters
    ----------
    coefficients : array_like or torch.Tensor
        ``(n_s, n_s, n_s)`` coefficients at scale ``s`` in (z, y, x) order.
    blob : KaiserBesselBlob
        Basis function.
    scale, new_scale : int
        Old and new grid steps, ``new_scale`` dividing ``scale``.
    shape : int, optional
        Number of new coefficients per axis; default ``n_s·s / s'``.

    Returns
    -------
    torch.Tensor
        ``(n', n', n')`` coefficients at scale ``s'``.
    """
    s = check_scale(scale)
    s_new = check_scale(new_scale, "new_scale")
    if s % s_new:
        raise ValueError(f"new_scale ({s_new}) must divide scale ({s}) so the grids nest.")
    c = _as_volume(coefficients)
    n_new = c.shape[0] * s // s_new if shape is None else int(shape)
    if s_new == s and n_new == c.shape[0]:
        return c.clone()
    # f̃_s at the new grid points s'·(k − n'//2), on a grid extended by a margin so that the
    # coarse expansion's tails are interpolated too; they are fine voxels, so expand on a fine
    # grid that holds them all and subsample every s'-th voxel.
    margin = int(math.ceil(blob.radius * s / s_new)) + 2
    n_ext = n_new + 2 * margin
    n_fine = s_new * n_ext + 2
    fine = expand(c, blob, s, n_fine)
    idx = s_new * (torch.arange(n_ext, device=c.device) - n_ext // 2) + n_fine // 2
    samples = fine[idx[:, None, None], idx[None, :, None], idx[None, None, :]]
    # Interpolation prefilter of ϕ_{s'} on its own grid: symbol Σ_j ϕ(j) e^{-2πi ξ j} (|j| ≤ a).
    kernel = _blob_kernel(blob, 1, c.dtype, c.device)  # ϕ_{s'}(s' j) = ϕ(j)
    h = kernel.shape[0] // 2
    size = n_ext + 2 * h + 2
    padded = torch.zeros((size,) * 3, dtype=c.dtype, device=c.device)
    padded[h : h + n_ext, h : h + n_ext, h : h + n_ext] = samples
    k_full = torch.zeros_like(padded)
    k_full[: 2 * h + 1, : 2 * h + 1, : 2 * h + 1] = kernel
    k_full = torch.roll(k_full, shifts=(-h, -h, -h), dims=(0, 1, 2))
    symbol = torch.fft.rfftn(k_full).real  # ϕ is even: real symbol
    coef = torch.fft.irfftn(torch.fft.rfftn(padded) / symbol, s=padded.shape)
    # Both grids are centred (index n//2 ↔ coordinate 0): new coefficient k is extended-grid
    # point k + n_ext//2 − n_new//2.
    o = h + n_ext // 2 - n_new // 2
    return coef[o : o + n_new, o : o + n_new, o : o + n_new].contiguous()
