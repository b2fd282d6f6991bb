"""Compressed-sensing STEM tomography: RB-STET reconstructions (thesis ch. 3, Donati et al.).

Forward model (thesis eq. 3.4): ``b = S H x + n``. ``H`` is the tilt projector
(:class:`~cryowedge.operators.TiltProjector`, volume ``(z, y, x)`` → tilt series
``(n_tilts, ny, nx)``) and ``S`` the diagonal 0/1 scan mask (:class:`MaskOperator`), with an
independent uniformly random pattern per tilt (:func:`~cryowedge.simulate.random_scan_mask`).
Unmeasured pixels are stored as 0 and ignored. The reconstruction (eq. 3.6) is::

    x̂ = argmin_x ½‖S H x − b‖² + λ ‖∇x‖₁   [+ x ≥ 0]

by ADMM + CG (:func:`~cryowedge.solvers.tv_admm`, ``regularizer="tv-aniso"``). The thesis
writes the data term without the ½; its λ is twice ours. Baselines at equal dose:

* T-DS (:func:`reconstruct_tds`): the same TV on an evenly spaced subset of the tilts with
  all pixels scanned;
* two-step inpainting (:func:`inpaint_then_reconstruct`, Saghi et al.): 2-D TV inpainting
  ``min ½‖S(p − b)‖² + μ TV(p)`` of every projection, then TV reconstruction from the
  inpainted projections.

With ``normalize=True`` (default) the data are divided by the standard deviation of the
measured pixels before solving and the volume is multiplied back, so the TV weight
``tv_lambda`` (the solver's λ) and the inpainting weight ``mu`` do not depend on the data's
units: the convention of ``cryowedge reconstruct --method tv``. Because the noise per
scanned pixel does not change with the dose fraction, one λ suits every dose (MAP view:
λ ≈ σ²/β does not depend on the number of measurements).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cryowedge._validation import check_finite, check_ndim, check_scan_mask_shape, check_tilt_series
from cryowedge.config.models import StetReconstructConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.base import LinearOperatorLike
from cryowedge.operators.elementary import MaskOperator, as_binary_mask
from cryowedge.operators.scan import stet_operator
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.scaling import data_scale
from cryowedge.simulate.scan_mask import uniform_tilt_subset
from cryowedge.solvers import Callback, SolverResult, tv_admm

__all__ = ["reconstruct_stet", "reconstruct_tds", "inpaint_projections", "inpaint_then_reconstruct"]

logger = logging.getLogger(__name__)

_REC = StetReconstructConfig()


def _shape(array: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in array.shape)


def _check_series(data: Any, geometry: TiltGeometry, name: str = "data") -> None:
    check_ndim(data, 3, name, "(n_tilts, ny, nx)")  # STET takes one series, no batch
    check_tilt_series(data, geometry, name)


def _volume_shape(
    geometry: TiltGeometry, volume_shape: tuple[int, int, int] | None
) -> tuple[int, int, int]:
    if volume_shape is None:
        return geometry.default_volume_shape()
    return tuple(int(s) for s in volume_shape)


def _solve_tv(
    op: LinearOperatorLike,
    b: torch.Tensor,
    scale: float,
    *,
    tv_lambda: float,
    n_iter: int,
    regularizer: str,
    positivity: bool,
    cg_iter: int,
    rho: float | None,
    x0: Any,
    callback: Callback | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    solver_options: dict[str, Any],
) -> SolverResult:
    """TV-ADMM on ``b / scale`` with ``λ = tv_lambda``; ``x`` is multiplied back by ``scale``."""
    b = b / scale
    if x0 is not None:
        x0 = torch.as_tensor(x0 if isinstance(x0, torch.Tensor) else np.asarray(x0)) / scale
    result = tv_admm(
        op,
        b,
        x0=x0,
        n_iter=n_iter,
        lam=tv_lambda,
        regularizer=regularizer,
        positivity=positivity,
        cg_iter=cg_iter,
        rho=rho,
        callback=callback,
        device=device,
        dtype=dtype,
        **solver_options,
    )
    result.x = result.x * scale
    return result


def reconstruct_stet(
    data: Any,
    mask: Any,
    geometry: TiltGeometry,
    *,
    volume_shape: tuple[int, int, int] | None = None,
    tv_lambda: float = _REC.tv_lambda,
    n_iter: int = _REC.n_iter,
    regularizer: str = _REC.regularizer,
    positivity: bool = _REC.positivity,
    cg_iter: int = _REC.cg_iter,
    rho: float | None = _REC.rho,
    normalize: bool = _REC.normalize,
    x0: Any = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **solver_options: Any,
) -> SolverResult:
    """CS-TV reconstruction directly from randomly undersampled data (thesis eq. 3.6).

    Solves ``min_x ½‖S H x − b‖² + λ R(∇x)`` (``R = ‖·‖₁`` for ``"tv-aniso"``) by ADMM + CG.

    Parameters
    ----------
    data
        ``(n_tilts, ny, nx)`` measured tilt series; values where ``mask`` is False are
        ignored (stored as 0 by convention).
    mask
        ``(n_tilts, ny, nx)`` bool or 0/1 scan mask, True = scanned.
    geometry
        The tilt geometry of ``data`` (degrees, Å).
    volume_shape
        ``(nz, ny, nx)`` of the tomogram; default thickness = detector width.
    tv_lambda
        TV weight λ ≥ 0 on the data normalised to unit std (when ``normalize``).
    n_iter, cg_iter, rho
        Outer ADMM iterations, inner CG steps per x-update, initial ADMM penalty (default
        10 × ``tv_lambda``).
    regularizer
        ``"tv-aniso"`` (thesis), ``"tv"`` (isotropic) or ``"l1"``.
    positivity
        Constrain ``x ≥ 0``.
    normalize
        Divide the data by the standard deviation of the measured pixels first (and the
        result back), which makes λ independent of the data's units.
    x0, callback, device, dtype
        As for :func:`~cryowedge.solvers.tv_admm` (``x0`` in data units).
    **solver_options
        Further :func:`~cryowedge.solvers.tv_admm` options (``relaxation``, ``tol``,
        ``cg_tol``, ``adaptive_rho``).

    Returns
    -------
    SolverResult
        ``x``: ``(nz, ny, nx)`` tomogram in data units; ``history`` in normalised units.

    Raises
    ------
    ValueError
        If ``data``, ``mask`` and ``geometry`` disagree in shape (the message names both
        shapes), the mask is not binary, or no pixel is scanned.
    """
    _check_series(data, geometry)
    m = as_binary_mask(mask)
    check_scan_mask_shape(_shape(m), _shape(data), "data")
    if not bool(m.any()):
        raise ValueError("the scan mask has no scanned pixel (all 0); nothing to reconstruct.")
    op = stet_operator(geometry, volume_shape, m)
    b = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    b = b.to(
        dtype=dtype or (b.dtype if b.dtype in (torch.float32, torch.float64) else torch.float32)
    )
    m_dev = m.to(b.device)
    b = torch.where(m_dev, b, torch.zeros((), dtype=b.dtype, device=b.device))  # unscanned: no role
    scale = data_scale(b[m_dev], normalize)
    return _solve_tv(
        op,
        b,
        scale,
        tv_lambda=tv_lambda,
        n_iter=n_iter,
        regularizer=regularizer,
        positivity=positivity,
        cg_iter=cg_iter,
        rho=rho,
        x0=x0,
        callback=callback,
        device=device,
        dtype=dtype,
        solver_options=solver_options,
    )


def reconstruct_tds(
    tilt_series: Any,
    geometry: TiltGeometry,
    *,
    fraction: float | None = None,
    tilt_indices: Any = None,
    volume_shape: tuple[int, int, int] | None = None,
    tv_lambda: float = _REC.tv_lambda,
    n_iter: int = _REC.n_iter,
    regularizer: str = _REC.regularizer,
    positivity: bool = _REC.positivity,
    cg_iter: int = _REC.cg_iter,
    rho: float | None = _REC.rho,
    normalize: bool = _REC.normalize,
    x0: Any = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **solver_options: Any,
) -> SolverResult:
    """TV reconstruction from an evenly spaced subset of tilts, all pixels (T-DS).

    Parameters
    ----------
    tilt_series
        ``(n_tilts, ny, nx)`` full-dose series (every tilt, every pixel).
    geometry
        Its tilt geometry.
    fraction
        Keep :func:`~cryowedge.simulate.uniform_tilt_subset` ``(n_tilts, fraction)``; 1 gives
        the full-dose TV reconstruction.
    tilt_indices
        Explicit tilt indices instead of ``fraction`` (give exactly one of the two).
    volume_shape, tv_lambda, n_iter, regularizer, positivity, cg_iter, rho, normalize
        As for :func:`reconstruct_stet`.
    x0, callback, device, dtype, **solver_options
        As for :func:`reconstruct_stet`.

    Returns
    -------
    SolverResult
        ``x``: ``(nz, ny, nx)`` tomogram in data units.
    """
    _check_series(tilt_series, geometry, "tilt_series")
    if (fraction is None) == (tilt_indices is None):
        raise ValueError("give exactly one of fraction (e.g. 0.1) or tilt_indices.")
    if fraction is not None:
        idx = uniform_tilt_subset(geometry.n_tilts, fraction)
    else:
        idx = np.atleast_1d(np.asarray(tilt_indices, dtype=np.int64))
        if idx.size == 0 or idx.min() < 0 or idx.max() >= geometry.n_tilts:
            raise ValueError(
                f"tilt_indices must select tilts in [0, {geometry.n_tilts}), got {idx.tolist()}."
            )
    op = TiltProjector(geometry[idx], _volume_shape(geometry, volume_shape))
    b = (
        tilt_series
        if isinstance(tilt_series, torch.Tensor)
        else torch.as_tensor(np.asarray(tilt_series))
    )
    b = b[torch.as_tensor(idx)]
    b = b.to(
        dtype=dtype or (b.dtype if b.dtype in (torch.float32, torch.float64) else torch.float32)
    )
    scale = data_scale(b, normalize)
    logger.debug("T-DS: %d of %d tilts", idx.size, geometry.n_tilts)
    return _solve_tv(
        op,
        b,
        scale,
        tv_lambda=tv_lambda,
        n_iter=n_iter,
        regularizer=regularizer,
        positivity=positivity,
        cg_iter=cg_iter,
        rho=rho,
        x0=x0,
        callback=callback,
        device=device,
        dtype=dtype,
        solver_options=solver_options,
    )


def _normalized_convolution_fill(b: np.ndarray, mask: np.ndarray, fraction: float) -> np.ndarray:
    """Fill unmeasured pixels by Gaussian normalised convolution (a warm start for inpainting)."""
    from scipy import ndimage

    sigma = (0.0, *(2 * [max(1.0, 0.7 / np.sqrt(max(fraction, 1e-6)))]))
    num = ndimage.gaussian_filter(np.where(mask, b, 0.0).astype(np.float64), sigma, mode="nearest")
    den = ndimage.gaussian_filter(mask.astype(np.float64), sigma, mode="nearest")
    fallback = float(b[mask].mean()) if mask.any() else 0.0
    filled = np.where(den > 1e-3, num / np.maximum(den, 1e-3), fallback)
    return np.where(mask, b, filled).astype(np.float32)


def inpaint_projections(
    data: Any,
    mask: Any,
    *,
    mu: float = _REC.inpaint_mu,
    n_iter: int = _REC.inpaint_iter,
    regularizer: str = "tv",
    positivity: bool = False,
    cg_iter: int = _REC.cg_iter,
    normalize: bool = _REC.normalize,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Per-projection 2-D TV inpainting ``min_p ½‖S(p − b)‖² + μ TV(p)`` (Saghi et al.).

    Parameters
    ----------
    data
        ``(n_tilts, ny, nx)`` measured values (ignored where ``mask`` is False).
    mask
        ``(n_tilts, ny, nx)`` bool or 0/1 scan mask, True = scanned.
    mu
        TV weight μ ≥ 0 (for the normalised data when ``normalize``). The TV runs over the
        image axes only (``tv_axes=(1, 2)``), so every projection is inpainted on its own.
    n_iter, cg_iter
        ADMM iterations and inner CG steps. ADMM starts from a Gaussian normalised-convolution
        fill of the gaps, which is also the result for ``μ = 0``.
    regularizer
        ``"tv"`` (isotropic, default) or ``"tv-aniso"``.
    positivity
        Constrain the inpainted projections to be ≥ 0.
    normalize, callback, device, dtype
        As for :func:`reconstruct_stet`.

    Returns
    -------
    torch.Tensor
        ``(n_tilts, ny, nx)`` inpainted projections in data units (measured pixels are
        denoised too, as the model prescribes).
    """
    check_ndim(data, 3, "data", "(n_tilts, ny, nx)")
    check_finite(data, "data")
    m = as_binary_mask(mask)
    check_scan_mask_shape(_shape(m), _shape(data), "data")
    if not bool(m.any()):
        raise ValueError("the scan mask has no scanned pixel (all 0); nothing to inpaint.")
    b_np = np.asarray(
        data.detach().cpu() if isinstance(data, torch.Tensor) else data, dtype=np.float32
    )
    m_np = m.numpy()
    x0 = _normalized_convolution_fill(b_np, m_np, float(m_np.mean()))
    b = torch.as_tensor(np.where(m_np, b_np, np.float32(0.0)))
    scale = data_scale(b[m], normalize)
    if mu == 0:
        return torch.as_tensor(x0).to(device=device or "cpu", dtype=dtype or torch.float32)
    result = tv_admm(
        MaskOperator(m),
        b / scale,
        x0=x0 / scale,
        n_iter=n_iter,
        lam=mu,
        regularizer=regularizer,
        positivity=positivity,
        cg_iter=cg_iter,
        tv_axes=(1, 2),
        callback=callback,
        device=device,
        dtype=dtype,
    )
    return result.x * scale


def inpaint_then_reconstruct(
    data: Any,
    mask: Any,
    geometry: TiltGeometry,
    *,
    mu: float = _REC.inpaint_mu,
    inpaint_iter: int = _REC.inpaint_iter,
    volume_shape: tuple[int, int, int] | None = None,
    tv_lambda: float = _REC.tv_lambda,
    n_iter: int = _REC.n_iter,
    regularizer: str = _REC.regularizer,
    positivity: bool = _REC.positivity,
    cg_iter: int = _REC.cg_iter,
    rho: float | None = _REC.rho,
    normalize: bool = _REC.normalize,
    inpaint_callback: Callback | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **solver_options: Any,
) -> SolverResult:
    """The two-step baseline: 2-D TV inpainting of every projection, then TV reconstruction.

    Parameters
    ----------
    data, mask, geometry
        As for :func:`reconstruct_stet`.
    mu, inpaint_iter
        Inpainting weight μ and ADMM iterations (:func:`inpaint_projections`).
    volume_shape, tv_lambda, n_iter, regularizer, positivity, cg_iter, rho, normalize, device, dtype
        The TV reconstruction from the inpainted (complete) projections, as for
        :func:`reconstruct_stet` with a full mask.
    inpaint_callback, callback
        Per-iteration callbacks of the inpainting and of the reconstruction.
    **solver_options
        Further :func:`~cryowedge.solvers.tv_admm` options of the reconstruction step.

    Returns
    -------
    SolverResult
        Of the reconstruction step; ``x`` is the ``(nz, ny, nx)`` tomogram in data units.
    """
    _check_series(data, geometry)
    inpainted = inpaint_projections(
        data,
        mask,
        mu=mu,
        n_iter=inpaint_iter,
        cg_iter=cg_iter,
        normalize=normalize,
        callback=inpaint_callback,
        device=device,
        dtype=dtype,
    )
    op = TiltProjector(geometry, _volume_shape(geometry, volume_shape))
    scale = data_scale(inpainted, normalize)
    return _solve_tv(
        op,
        inpainted,
        scale,
        tv_lambda=tv_lambda,
        n_iter=n_iter,
        regularizer=regularizer,
        positivity=positivity,
        cg_iter=cg_iter,
        rho=rho,
        x0=None,
        callback=callback,
        device=device,
        dtype=dtype,
        solver_options=solver_options,
    )
