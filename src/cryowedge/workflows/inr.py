"""Runner of ``cryowedge reconstruct --method inr`` (see :mod:`cryowedge.config.registry`).

``run_inr(tilt_series, geometry, config, context)`` fits the coordinate network of
:class:`~cryowedge.config.inr.InrConfig` with :func:`cryowedge.inr.fit.fit_inr` and returns
the ``(z, y, x)`` float32 tomogram. It reports every optimiser step to ``context.progress``
as ``"inr k/n, loss L"`` (the CLI's bar shows the loss and an ETA from the first step) and
to ``context.callback``, and keeps a checkpoint at ``context.checkpoint_path`` every
``config.checkpoint_every`` steps (``context.resume`` continues from it).
``reconstruct_file`` writes the final volume into that checkpoint before writing the output
(the form the iterative methods use); resuming from such a file returns that volume.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.config.inr import InrConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.solvers import IterationInfo
from cryowedge.workflows.methods import MethodContext

__all__ = ["progress_callback", "run_inr"]

logger = logging.getLogger(__name__)


def progress_callback(
    progress: Any, start: float = 0.2, span: float = 0.7, *, name: str = "inr"
) -> Any:
    """An ``IterationInfo`` callback that reports ``"<name> k/n, loss L"`` to ``progress``.

    ``k`` counts the whole run's optimiser steps (``extras["step"]``), so a resumed run's
    bar continues where it stopped; the fraction is mapped onto ``start … start + span``.
    """
    if progress is None:
        return None

    def callback(info: IterationInfo) -> None:
        k = int(info.extras.get("step", info.iteration))
        n = k - info.iteration + info.n_iter
        progress(f"{name} {k}/{n}, loss {info.objective:.4g}", start + span * k / max(n, 1))

    return callback


def _final_volume(path: Path, tilt_series: np.ndarray, config: InrConfig,
                  volume_shape: tuple[int, int, int]) -> np.ndarray | None:
    """The finished volume a checkpoint holds (``reconstruct_file``'s final save), else None."""
    from cryowedge.inr.fit import read_checkpoint
    from cryowedge.recon.scaling import data_scale
    from cryowedge.workflows.checkpoint import load_checkpoint

    if "x" not in read_checkpoint(path):
        return None
    state = load_checkpoint(path, method=config.method, data_shape=tuple(tilt_series.shape),
                            volume_shape=volume_shape)
    scale = data_scale(torch.as_tensor(np.asarray(tilt_series, dtype=np.float32)),
                       config.normalize)
    logger.info("the checkpoint %s holds the finished volume (step %d)", path,
                state.iterations_done)
    return (state.x * scale).numpy().astype(np.float32)


def run_inr(
    tilt_series: np.ndarray, geometry: TiltGeometry, config: InrConfig, context: MethodContext
) -> np.ndarray:
    """Coordinate-network reconstruction (:func:`cryowedge.inr.fit.fit_inr`).

    Parameters
    ----------
    tilt_series : numpy.ndarray
        ``(n_tilts, y, x)`` float series matching ``geometry``.
    geometry : TiltGeometry
        Its geometry.
    config : InrConfig
        The method's options.
    context : MethodContext
        Volume shape ``(nz, ny, nx)``, device, progress, checkpoint path, resume, callback.

    Returns
    -------
    numpy.ndarray
        ``(nz, ny, nx)`` float32 tomogram in the units of the series.
    """
    from cryowedge.inr.fit import fit_inr
    from cryowedge.solvers import CallbackList

    ckpt = None if context.checkpoint_path is None else Path(context.checkpoint_path)
    if context.resume:
        if ckpt is None:
            raise ValueError("resume needs a checkpoint path.")
        final = _final_volume(ckpt, tilt_series, config, tuple(context.volume_shape))
        if final is not None:
            return final
    callbacks = CallbackList([progress_callback(context.progress), context.callback])
    result = fit_inr(
        tilt_series,
        geometry,
        config,
        volume_shape=tuple(context.volume_shape),
        device=context.device,
        callback=callbacks if callbacks.callbacks else None,
        checkpoint_path=ckpt,
        resume=context.resume,
    )
    if result.history:
        last = result.history[-1]
        logger.info("inr: %d steps, last epoch loss %.4g (data %.4g)", result.steps_done,
                    last["loss"], last["data"])
    return result.volume
