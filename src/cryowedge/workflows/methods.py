"""Runners of the registered reconstruction methods (see :mod:`cryowedge.config.registry`).

A runner turns an in-memory tilt series into a tomogram for one method::

    runner(tilt_series, geometry, config, context) -> (z, y, x) float32 NumPy volume

``tilt_series`` is ``(n_tilts, y, x)`` (NumPy, finite, matching ``geometry``), ``config`` the
method's model and ``context`` a :class:`MethodContext`. The registry refers to the runners
here by ``"cryowedge.workflows.methods:<name>"`` so that reading the registry (the CLI's
``--help``) does not import torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.config.models import FbpConfig, IterativeConfig, WbpConfig
from cryowedge.config.registry import get_method
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.recon.scaling import data_scale
from cryowedge.solvers import Callback
from cryowedge.workflows._record import ProgressFn, iteration_progress

__all__ = ["MethodContext", "data_scale", "run_fbp", "run_iterative", "run_wbp"]

logger = logging.getLogger(__name__)


@dataclass
class MethodContext:
    """What a runner gets besides the data and its config.

    Attributes
    ----------
    volume_shape
        ``(nz, ny, nx)`` of the tomogram, voxels.
    device
        Resolved torch device.
    progress
        ``progress(step, fraction)`` of the workflow; runners report within 0.2–0.9.
    checkpoint_path
        Where iterative runners save checkpoints (None: no checkpoints).
    resume
        Continue from ``checkpoint_path``.
    callback
        Extra per-iteration solver callback.
    """

    volume_shape: tuple[int, int, int]
    device: torch.device
    progress: ProgressFn | None = None
    checkpoint_path: str | Path | None = None
    resume: bool = False
    callback: Callback | None = None


def _filter_options(config: FbpConfig | WbpConfig, context: MethodContext) -> dict[str, Any]:
    return dict(
        volume_shape=context.volume_shape,
        filter_name=config.filter_name,
        cutoff=config.cutoff,
        radial_cutoff=config.radial_cutoff,
        radial_falloff=config.radial_falloff,
        padding=config.padding,
        device=context.device,
    )


def run_fbp(
    tilt_series: np.ndarray, geometry: TiltGeometry, config: FbpConfig, context: MethodContext
) -> np.ndarray:
    """Filtered back-projection (:func:`cryowedge.recon.fbp`)."""
    from cryowedge.recon.fbp import fbp

    vol = fbp(
        tilt_series,
        geometry,
        sirt_iterations=config.sirt_iterations,
        **_filter_options(config, context),
    )
    return vol.cpu().numpy().astype(np.float32)


def run_wbp(
    tilt_series: np.ndarray, geometry: TiltGeometry, config: WbpConfig, context: MethodContext
) -> np.ndarray:
    """Weighted back-projection (:func:`cryowedge.recon.wbp`)."""
    from cryowedge.recon.fbp import wbp

    vol = wbp(tilt_series, geometry, **_filter_options(config, context))
    return vol.cpu().numpy().astype(np.float32)


def run_iterative(
    tilt_series: np.ndarray, geometry: TiltGeometry, config: IterativeConfig, context: MethodContext
) -> np.ndarray:
    """The method's solver (its registry ``solver``) on the tilt projector, data scaled to unit std.

    Saves a checkpoint every ``config.checkpoint_every`` iterations when
    ``context.checkpoint_path`` is set, and continues from it with ``context.resume``.
    """
    from cryowedge._validation import check_tilt_series
    from cryowedge.operators.tilt_projector import TiltProjector
    from cryowedge.solvers import CallbackList
    from cryowedge.workflows.checkpoint import Checkpointer, load_checkpoint

    solver = get_method(config.method).load_solver()
    if solver is None:
        raise ValueError(f"method {config.method!r} registers no solver; run_iterative needs one.")
    check_tilt_series(tilt_series, geometry)
    device, shape = context.device, context.volume_shape
    data = torch.as_tensor(np.asarray(tilt_series, dtype=np.float32), device=device)
    scale = data_scale(data, config.normalize)
    data = data / scale
    op = TiltProjector(geometry, shape)
    kwargs = config.solver_kwargs()
    total = kwargs["n_iter"]
    x0, done = None, 0
    if context.resume:
        if context.checkpoint_path is None:
            raise ValueError("resume needs a checkpoint path.")
        state = load_checkpoint(
            context.checkpoint_path,
            method=config.method,
            data_shape=tuple(data.shape),
            volume_shape=shape,
        )
        x0, done = state.x.to(device), state.iterations_done
        logger.info("resuming %s from iteration %d of %d", config.method, done, total)
        if done >= total:
            return (state.x * scale).numpy().astype(np.float32)
        kwargs["n_iter"] = total - done

    callbacks: list[Any] = [
        iteration_progress(context.progress, config.method, 0.2, 0.7, done=done, total=total),
        context.callback,
    ]
    if context.checkpoint_path is not None and config.checkpoint_every:
        callbacks.append(
            Checkpointer(
                context.checkpoint_path,
                config.checkpoint_every,
                method=config.method,
                data_shape=tuple(data.shape),
                offset=done,
                meta={"data_scale": scale},
            )
        )
    result = solver(op, data, x0=x0, callback=CallbackList(callbacks), **kwargs)
    logger.info(
        "%s: %d iterations, final residual %.4g",
        config.method,
        done + result.n_iter,
        result.history["residual_norm"][-1] * scale,
    )
    return (result.x * scale).cpu().numpy().astype(np.float32)
