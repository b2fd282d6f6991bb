"""``cryowedge reconstruct``: tilt-series file → tomogram MRC (voxel size kept)."""

from __future__ import annotations

import logging
from pathlib import Path

from typing import Any

import numpy as np
import torch

from cryowedge.config.models import ITERATIVE_METHODS, ReconstructConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.solvers import Callback
from cryowedge.utils.device import resolve_device
from cryowedge.workflows._record import ProgressCallback, iteration_progress, report, write_run_record

logger = logging.getLogger(__name__)

__all__ = ["data_scale", "reconstruct_array", "reconstruct_file", "solver_kwargs"]


def reconstruct_array(
    tilt_series: np.ndarray,
    geometry: TiltGeometry,
    config: ReconstructConfig,
    *,
    progress: ProgressCallback | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
) -> np.ndarray:
    """Reconstruct ``(n_tilts, y, x)`` with ``config`` → ``(z, y, x)`` float32 NumPy volume.

    Direct methods (fbp, wbp) filter and back-project; iterative methods (sirt, sart, art,
    cgls, tv) run the solver of :mod:`cryowedge.solvers` on the tilt projector.
    ``checkpoint_path``/``resume`` apply to iterative methods (see
    :mod:`cryowedge.workflows.checkpoint`); ``callback`` receives each iteration's report.
    """
    from cryowedge.recon.fbp import fbp, wbp

    device = resolve_device(config.device)
    shape = geometry.default_volume_shape(config.thickness)
    if config.method in ITERATIVE_METHODS:
        return _reconstruct_iterative(
            tilt_series, geometry, config, shape, device, progress, checkpoint_path, resume, callback
        )
    common = dict(
        volume_shape=shape, filter_name=config.filter_name, cutoff=config.cutoff,
        radial_cutoff=config.radial_cutoff, radial_falloff=config.radial_falloff,
        padding=config.padding, device=device,
    )
    if config.method == "fbp":
        vol = fbp(tilt_series, geometry, sirt_iterations=config.sirt_iterations, **common)
    else:
        vol = wbp(tilt_series, geometry, **common)
    return vol.cpu().numpy().astype(np.float32)


def solver_kwargs(config: ReconstructConfig) -> dict[str, Any]:
    """The keyword arguments of ``cryowedge.solvers.SOLVERS[config.method]`` from a config."""
    kwargs: dict[str, Any] = {
        "n_iter": config.resolved_iterations,
        "relaxation": config.resolved_relaxation,
        "positivity": config.positivity,
        "tol": config.tol,
    }
    if config.method in ("sart", "art"):
        kwargs.update(order=config.order, seed=config.seed)
    if config.method == "tv":
        kwargs.update(lam=config.tv_lambda, regularizer=config.regularizer, rho=config.rho,
                      cg_iter=config.cg_iter)
    return kwargs


def data_scale(values: torch.Tensor, normalize: bool = True) -> float:
    """Standard deviation of ``values``, the factor iterative workflows divide the data by.

    1 when not normalising or when the values are constant, too few or not finite, so the
    division is always safe.
    """
    if not normalize or values.numel() < 2:
        return 1.0
    scale = float(values.double().std())
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def _reconstruct_iterative(
    tilt_series: np.ndarray,
    geometry: TiltGeometry,
    config: ReconstructConfig,
    shape: tuple[int, int, int],
    device: torch.device,
    progress: ProgressCallback | None,
    checkpoint_path: str | Path | None,
    resume: bool,
    callback: Callback | None,
) -> np.ndarray:
    from cryowedge.operators.tilt_projector import TiltProjector
    from cryowedge.recon.fbp import check_tilt_series
    from cryowedge.solvers import SOLVERS, CallbackList
    from cryowedge.workflows.checkpoint import Checkpointer, load_checkpoint

    check_tilt_series(tilt_series, geometry)
    data = torch.as_tensor(np.asarray(tilt_series, dtype=np.float32), device=device)
    scale = data_scale(data, config.normalize)
    data = data / scale
    op = TiltProjector(geometry, shape)
    kwargs = solver_kwargs(config)
    total = kwargs["n_iter"]
    x0, done = None, 0
    if resume:
        if checkpoint_path is None:
            raise ValueError("resume needs a checkpoint path.")
        state = load_checkpoint(checkpoint_path, method=config.method,
                                data_shape=tuple(data.shape), volume_shape=shape)
        x0, done = state.x.to(device), state.iterations_done
        logger.info("resuming %s from iteration %d of %d", config.method, done, total)
        if done >= total:
            return (state.x * scale).numpy().astype(np.float32)
        kwargs["n_iter"] = total - done

    callbacks: list[Any] = [iteration_progress(progress, config.method, 0.2, 0.7, done=done, total=total),
                            callback]
    if checkpoint_path is not None and config.checkpoint_every:
        callbacks.append(Checkpointer(checkpoint_path, config.checkpoint_every, method=config.method,
                                      data_shape=tuple(data.shape), offset=done,
                                      meta={"data_scale": scale}))
    result = SOLVERS[config.method](op, data, x0=x0, callback=CallbackList(callbacks), **kwargs)
    logger.info("%s: %d iterations, final residual %.4g", config.method, done + result.n_iter,
                result.history["residual_norm"][-1] * scale)
    return (result.x * scale).cpu().numpy().astype(np.float32)


def reconstruct_file(
    tilt_series_path: str | Path,
    output_path: str | Path,
    config: ReconstructConfig,
    *,
    angles_path: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    overwrite: bool = True,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> Path:
    """Read, validate, reconstruct and write atomically; returns the output path.

    All input checks (file exists, angles match images, finite values, writable output)
    happen before the reconstruction starts. Iterative methods with
    ``config.checkpoint_every`` save ``<output stem>.ckpt.pt`` next to the output;
    ``resume=True`` continues from it. The checkpoint is removed once the output is written.
    """
    from cryowedge.workflows.checkpoint import checkpoint_path_for

    output_path = Path(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass --overwrite to replace it.")
    resolve_device(config.device)  # fail early on an unavailable GPU
    report(progress, "reading", 0.0)
    series = load_tilt_series(
        tilt_series_path, angles_path, tilt_axis_angle_deg=config.tilt_axis_angle_deg,
        pixel_size_angstrom=pixel_size_angstrom,
    )
    report(progress, config.method, 0.2)
    ckpt = checkpoint_path_for(output_path)
    if resume and not ckpt.exists():
        raise FileNotFoundError(f"--resume given but no checkpoint {ckpt} exists; run without --resume.")
    volume = reconstruct_array(series.data, series.geometry, config, progress=progress,
                               checkpoint_path=ckpt if (config.checkpoint_every or resume) else None,
                               resume=resume)
    report(progress, "writing", 0.9)
    write_mrc(output_path, volume, voxel_size_angstrom=series.geometry.pixel_size_angstrom, overwrite=overwrite)
    write_run_record(
        output_path.parent, "reconstruct",
        {**config.model_dump(mode="json"), "input": str(tilt_series_path),
         "angles": str(angles_path) if angles_path else None, "geometry": series.geometry.to_dict()},
        {"volume": str(output_path)}, name=output_path.stem + ".run.yaml",
    )
    if ckpt.exists():
        ckpt.unlink()  # the finished output supersedes it
    report(progress, "done", 1.0)
    return output_path
