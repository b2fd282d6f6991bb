"""Compressed-sensing STEM tomography: random-beam STET (thesis ch. 3, Donati et al. 2017).

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

File convention: the scan mask of ``<name>.mrc`` is ``<name>_mask.mrc`` next to it, an
8-bit (MRC mode 0) image stack of the data's shape with 1 = scanned, 0 = not scanned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge._validation import check_finite, check_ndim
from cryowedge.config.models import SimulateConfig, StetReconstructConfig, StetSimulateConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.base import ComposedOperator, LinearOperatorLike
from cryowedge.operators.elementary import MaskOperator, as_binary_mask
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import check_tilt_series
from cryowedge.simulate.scan_mask import check_dose_fraction, random_scan_mask, uniform_tilt_subset
from cryowedge.solvers import Callback, CallbackList, SolverResult, tv_admm
from cryowedge.workflows._record import ProgressFn, iteration_progress, report_progress, write_run_record
from cryowedge.workflows.methods import data_scale

__all__ = [
    "StetSimulation",
    "stet_operator",
    "simulate_stet",
    "reconstruct_stet",
    "reconstruct_tds",
    "inpaint_projections",
    "inpaint_then_reconstruct",
    "mask_path_for",
    "read_scan_mask",
    "stet_simulate_files",
    "stet_reconstruct_file",
]

logger = logging.getLogger(__name__)

_SIM = StetSimulateConfig()
_REC = StetReconstructConfig()

#: Suffix of the scan-mask file next to a tilt series: ``ts.mrc`` → ``ts_mask.mrc``.
MASK_SUFFIX = "_mask.mrc"


# ----------------------------------------------------------------------------- helpers


def _shape(array: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in array.shape)


def _check_mask_shape(mask_shape: tuple[int, ...], data_shape: tuple[int, ...], what: str) -> None:
    if tuple(mask_shape) != tuple(data_shape):
        raise ValueError(
            f"scan mask shape {tuple(mask_shape)} does not match the {what} shape "
            f"{tuple(data_shape)} (n_tilts, ny, nx); use the mask written with these data."
        )


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
        op, b, x0=x0, n_iter=n_iter, lam=tv_lambda, regularizer=regularizer, positivity=positivity,
        cg_iter=cg_iter, rho=rho, callback=callback, device=device, dtype=dtype, **solver_options,
    )
    result.x = result.x * scale
    return result


# ----------------------------------------------------------------------------- operator


def stet_operator(
    geometry: TiltGeometry,
    volume_shape: tuple[int, int, int] | None,
    mask: Any,
) -> ComposedOperator:
    """The RB-STET forward operator ``S·H``: volume ``(z, y, x)`` → masked tilt series.

    Parameters
    ----------
    geometry
        Tilt geometry (angles in degrees, detector shape, pixel size in Å).
    volume_shape
        ``(nz, ny, nx)`` of the volume; None = :meth:`TiltGeometry.default_volume_shape`.
    mask
        ``(n_tilts, ny, nx)`` bool or 0/1 scan mask, True = scanned.

    Returns
    -------
    ComposedOperator
        ``MaskOperator(mask) @ TiltProjector(geometry, volume_shape)`` with the exact adjoint
        ``Hᵀ S``.

    Raises
    ------
    ValueError
        If the mask shape differs from ``geometry.tilt_series_shape`` or holds values other
        than 0 and 1.
    """
    m = as_binary_mask(mask)
    _check_mask_shape(_shape(m), geometry.tilt_series_shape, "tilt-series (from the geometry)")
    return MaskOperator(m) @ TiltProjector(geometry, _volume_shape(geometry, volume_shape))


# ----------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class StetSimulation:
    """Result of :func:`simulate_stet`.

    Attributes
    ----------
    data
        ``(n_tilts, ny, nx)`` float32 noisy measured values, 0 where not scanned.
    mask
        ``(n_tilts, ny, nx)`` bool scan mask, True = scanned.
    full
        ``(n_tilts, ny, nx)`` float32 full-dose noisy series (every pixel scanned with the
        same per-pixel dose and noise realisation); ``data == full * mask``. T-DS keeps
        whole images of it.
    clean
        ``(n_tilts, ny, nx)`` float32 noise-free projections.
    geometry
        The geometry of the series.
    noise_sigma
        Standard deviation of the added Gaussian noise (projection units).
    """

    data: np.ndarray
    mask: np.ndarray
    full: np.ndarray
    clean: np.ndarray
    geometry: TiltGeometry
    noise_sigma: float

    @property
    def dose_fraction(self) -> float:
        """Measured fraction of the pixels (the dose relative to a full scan)."""
        return float(self.mask.mean())


def simulate_stet(
    volume: Any,
    geometry: TiltGeometry,
    *,
    dose_fraction: float = _SIM.dose_fraction,
    snr: float = _SIM.snr,
    oversample: int = _SIM.oversample,
    seed: int | np.random.Generator | None = _SIM.seed,
    device: torch.device | str | None = None,
) -> StetSimulation:
    """Simulate random-beam STET data ``b = S (H x + n)`` of a ``(z, y, x)`` volume.

    Parameters
    ----------
    volume
        ``(nz, ny, nx)`` density; ``ny`` must equal the detector length along the tilt axis.
    geometry
        Tilt angles (degrees), detector shape, pixel size (Å); aligned (tilt axis along Y, no
        shifts) when ``oversample > 1``.
    dose_fraction
        Fraction of the pixels of every tilt that are scanned, in ``(0, 1]``.
    snr
        Per-pixel Gaussian-noise SNR ``var(clean series) / σ²`` (a ratio, not dB). Scanning
        fewer pixels keeps the dose per scanned pixel, so σ does not depend on the fraction.
    oversample
        Project an ``oversample``-times finer copy of the volume and bin (avoids the inverse
        crime of simulating with the reconstruction operator).
    seed
        Seed or generator for the noise, then the mask; with a fixed seed the full noisy
        series is the same for every ``dose_fraction``.
    device
        Projection device.

    Returns
    -------
    StetSimulation
    """
    from cryowedge.simulate.tilt_series import simulate_tilt_series

    dose_fraction = check_dose_fraction(dose_fraction, "dose_fraction")
    rng = np.random.default_rng(seed)
    sim = simulate_tilt_series(volume, geometry, snr=snr, oversample=oversample, rng=rng, device=device)
    mask = random_scan_mask(geometry.tilt_series_shape, dose_fraction, seed=rng)
    data = np.where(mask, sim.tilt_series, np.float32(0.0)).astype(np.float32)
    logger.info("STET simulation: %d tilts, %.1f %% of pixels scanned, noise sigma %.4g",
                geometry.n_tilts, 100.0 * mask.mean(), float(sim.noise_sigma[0]))
    return StetSimulation(data=data, mask=mask, full=sim.tilt_series, clean=sim.clean,
                          geometry=geometry, noise_sigma=float(sim.noise_sigma[0]))


# ----------------------------------------------------------------------------- reconstruction


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
    _check_mask_shape(_shape(m), _shape(data), "data")
    if not bool(m.any()):
        raise ValueError("the scan mask has no scanned pixel (all 0); nothing to reconstruct.")
    op = stet_operator(geometry, volume_shape, m)
    b = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    b = b.to(dtype=dtype or (b.dtype if b.dtype in (torch.float32, torch.float64) else torch.float32))
    m_dev = m.to(b.device)
    b = torch.where(m_dev, b, torch.zeros((), dtype=b.dtype, device=b.device))  # unscanned: no role
    scale = data_scale(b[m_dev], normalize)
    return _solve_tv(op, b, scale, tv_lambda=tv_lambda, n_iter=n_iter, regularizer=regularizer,
                     positivity=positivity, cg_iter=cg_iter, rho=rho, x0=x0, callback=callback,
                     device=device, dtype=dtype, solver_options=solver_options)


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
    b = tilt_series if isinstance(tilt_series, torch.Tensor) else torch.as_tensor(np.asarray(tilt_series))
    b = b[torch.as_tensor(idx)]
    b = b.to(dtype=dtype or (b.dtype if b.dtype in (torch.float32, torch.float64) else torch.float32))
    scale = data_scale(b, normalize)
    logger.debug("T-DS: %d of %d tilts", idx.size, geometry.n_tilts)
    return _solve_tv(op, b, scale, tv_lambda=tv_lambda, n_iter=n_iter, regularizer=regularizer,
                     positivity=positivity, cg_iter=cg_iter, rho=rho, x0=x0, callback=callback,
                     device=device, dtype=dtype, solver_options=solver_options)


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
    _check_mask_shape(_shape(m), _shape(data), "data")
    if not bool(m.any()):
        raise ValueError("the scan mask has no scanned pixel (all 0); nothing to inpaint.")
    b_np = np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data, dtype=np.float32)
    m_np = m.numpy()
    x0 = _normalized_convolution_fill(b_np, m_np, float(m_np.mean()))
    b = torch.as_tensor(np.where(m_np, b_np, np.float32(0.0)))
    scale = data_scale(b[m], normalize)
    if mu == 0:
        return torch.as_tensor(x0).to(device=device or "cpu", dtype=dtype or torch.float32)
    result = tv_admm(
        MaskOperator(m), b / scale, x0=x0 / scale, n_iter=n_iter, lam=mu, regularizer=regularizer,
        positivity=positivity, cg_iter=cg_iter, tv_axes=(1, 2), callback=callback, device=device,
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
    inpainted = inpaint_projections(data, mask, mu=mu, n_iter=inpaint_iter, cg_iter=cg_iter,
                                    normalize=normalize, callback=inpaint_callback, device=device,
                                    dtype=dtype)
    op = TiltProjector(geometry, _volume_shape(geometry, volume_shape))
    scale = data_scale(inpainted, normalize)
    return _solve_tv(op, inpainted, scale, tv_lambda=tv_lambda, n_iter=n_iter, regularizer=regularizer,
                     positivity=positivity, cg_iter=cg_iter, rho=rho, x0=None, callback=callback,
                     device=device, dtype=dtype, solver_options=solver_options)


# ----------------------------------------------------------------------------- files


def mask_path_for(tilt_series_path: str | Path) -> Path:
    """The scan-mask file next to a tilt series: ``dir/name.mrc`` → ``dir/name_mask.mrc``."""
    path = Path(tilt_series_path)
    name = path.name
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    stem = Path(name).stem
    return path.with_name(stem + MASK_SUFFIX)


def read_scan_mask(path: str | Path, expected_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Read a scan-mask MRC (0/1, any numeric mode) as a ``(n_tilts, ny, nx)`` bool array.

    Raises ``FileNotFoundError`` if the file is missing and ``ValueError`` if it holds values
    other than 0 and 1 or its shape differs from ``expected_shape`` (both shapes named).
    """
    from cryowedge.io.mrc import read_mrc

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scan mask {path} does not exist.")
    raw = read_mrc(path, dtype=None).data
    if raw.ndim == 2:  # MRC cannot tell a one-image stack from an image
        raw = raw[None]
    mask = as_binary_mask(raw, f"scan mask {path.name}").numpy()
    if expected_shape is not None:
        _check_mask_shape(mask.shape, tuple(expected_shape), "tilt-series")
    return mask


def stet_simulate_files(
    config: StetSimulateConfig | None = None,
    output_dir: str | Path = ".",
    *,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Path]:
    """Simulate RB-STET data and write them (atomically, voxel size set).

    Writes into ``output_dir``: ``ground_truth.mrc`` (the phantom), ``tilt_series.mrc``
    (measured values, 0 where not scanned), ``tilt_series.tlt`` (angles, degrees),
    ``tilt_series_mask.mrc`` (the scan mask, 8-bit 0/1, next to the data) and ``run.yaml``.

    Returns
    -------
    dict
        Output name → path.
    """
    from cryowedge.io.mrc import write_mrc
    from cryowedge.io.tilt_files import write_tilt_angles
    from cryowedge.workflows.simulate import make_phantom

    from cryowedge.utils.device import resolve_device

    cfg = config or StetSimulateConfig()
    device = resolve_device(device or cfg.device)  # fail early on an unavailable GPU
    out = Path(output_dir)
    report_progress(progress, "phantom", 0.0)
    volume = make_phantom(SimulateConfig(phantom=cfg.phantom, shape=cfg.shape,
                                         pixel_size_angstrom=cfg.pixel_size_angstrom,
                                         n_particles=cfg.n_particles, seed=cfg.seed))
    geometry = TiltGeometry.from_range(cfg.tilt_min_deg, cfg.tilt_max_deg, cfg.tilt_step_deg,
                                       cfg.shape[1:], pixel_size_angstrom=cfg.pixel_size_angstrom)
    report_progress(progress, "projecting", 0.2)
    sim = simulate_stet(volume, geometry, dose_fraction=cfg.dose_fraction, snr=cfg.snr,
                        oversample=cfg.oversample, seed=cfg.seed, device=device)
    report_progress(progress, "writing", 0.8)
    px = cfg.pixel_size_angstrom
    series = out / "tilt_series.mrc"
    files = {
        "ground_truth": write_mrc(out / "ground_truth.mrc", volume, voxel_size_angstrom=px),
        "tilt_series": write_mrc(series, sim.data, voxel_size_angstrom=px, image_stack=True),
        "angles": write_tilt_angles(out / "tilt_series.tlt", geometry.tilt_angles_deg),
        # bool → MRC mode 0 (8-bit), 1 = scanned
        "mask": write_mrc(mask_path_for(series), sim.mask, voxel_size_angstrom=px, image_stack=True),
    }
    files = {k: Path(v) for k, v in files.items()}
    files["run"] = write_run_record(
        out, "stet simulate",
        {**cfg.model_dump(mode="json"), "measured_fraction": sim.dose_fraction,
         "noise_sigma": sim.noise_sigma},
        {k: str(v) for k, v in files.items()},
    )
    report_progress(progress, "done", 1.0)
    return files


def stet_reconstruct_file(
    tilt_series_path: str | Path,
    output_path: str | Path,
    config: StetReconstructConfig | None = None,
    *,
    mask_path: str | Path | None = None,
    angles_path: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    overwrite: bool = True,
    progress: ProgressFn | None = None,
    callback: Callback | None = None,
) -> Path:
    """Reconstruct an RB-STET tilt-series file with its scan mask; write the tomogram MRC.

    Every input check happens before any work: the output may be written, the tilt series
    and the mask exist, the angles match the images, the mask is binary and has the data's
    shape. The tomogram keeps the data's voxel size and is written atomically, with
    ``<output stem>.run.yaml`` next to it.

    Parameters
    ----------
    tilt_series_path
        MRC stack ``(n_tilts, ny, nx)``, 0 where not scanned.
    output_path
        Tomogram MRC ``(z, y, x)``.
    config
        Method and solver options (default :class:`StetReconstructConfig`).
    mask_path
        Scan mask; default :func:`mask_path_for` (``<name>_mask.mrc`` next to the data).
    angles_path
        ``.tlt``/``.rawtlt``/``.mdoc``; default: next to the data.
    pixel_size_angstrom
        Override the header's pixel size (Å).
    overwrite
        Replace an existing output.
    progress
        ``progress(step, fraction)`` callback (the CLI's progress bar).
    callback
        Extra per-iteration solver callback.

    Returns
    -------
    pathlib.Path
        The written tomogram.
    """
    from cryowedge.io.mrc import write_mrc
    from cryowedge.io.tilt_series import load_tilt_series
    from cryowedge.utils.device import resolve_device

    cfg = config or StetReconstructConfig()
    series_path, output_path = Path(tilt_series_path), Path(output_path)
    mask_path = mask_path_for(series_path) if mask_path is None else Path(mask_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass --overwrite to replace it.")
    if not series_path.exists():
        raise FileNotFoundError(f"tilt series {series_path} does not exist.")
    if not mask_path.exists():
        raise FileNotFoundError(
            f"scan mask {mask_path} not found; STET data need the 0/1 mask of the scanned pixels "
            f"(written next to the data as {mask_path_for(series_path).name} by "
            "`cryowedge stet simulate`). Pass --mask FILE."
        )
    device = resolve_device(cfg.device)  # fail early on an unavailable GPU
    report_progress(progress, "reading", 0.0)
    series = load_tilt_series(series_path, angles_path, tilt_axis_angle_deg=cfg.tilt_axis_angle_deg,
                              pixel_size_angstrom=pixel_size_angstrom)
    mask = read_scan_mask(mask_path, series.data.shape)
    if not mask.any():
        raise ValueError(f"scan mask {mask_path} has no scanned pixel (all 0).")
    outside = int(np.count_nonzero(series.data[~mask]))
    if outside:
        logger.info("%d non-zero values at unscanned pixels are ignored", outside)
    shape = series.geometry.default_volume_shape(cfg.thickness)
    common = dict(volume_shape=shape, tv_lambda=cfg.tv_lambda, n_iter=cfg.n_iter, regularizer=cfg.regularizer,
                  positivity=cfg.positivity, cg_iter=cfg.cg_iter, rho=cfg.rho,
                  normalize=cfg.normalize, device=device)
    if cfg.method == "tv":
        cb = CallbackList([iteration_progress(progress, "CS-TV", 0.1, 0.8), callback])
        result = reconstruct_stet(series.data, mask, series.geometry, callback=cb, **common)
    else:
        inpaint_cb = iteration_progress(progress, "inpainting", 0.1, 0.2)
        cb = CallbackList([iteration_progress(progress, "TV", 0.3, 0.6), callback])
        result = inpaint_then_reconstruct(series.data, mask, series.geometry, mu=cfg.inpaint_mu,
                                          inpaint_iter=cfg.inpaint_iter, inpaint_callback=inpaint_cb,
                                          callback=cb, **common)
    volume = result.x.detach().cpu().numpy().astype(np.float32)
    report_progress(progress, "writing", 0.9)
    write_mrc(output_path, volume, voxel_size_angstrom=series.geometry.pixel_size_angstrom,
              overwrite=overwrite)
    write_run_record(
        output_path.parent, "stet reconstruct",
        {**cfg.model_dump(mode="json"), "input": str(series_path), "mask": str(mask_path),
         "angles": str(angles_path) if angles_path else None, "measured_fraction": float(mask.mean()),
         "geometry": series.geometry.to_dict()},
        {"volume": str(output_path)}, name=output_path.stem + ".run.yaml",
    )
    report_progress(progress, "done", 1.0)
    return output_path
