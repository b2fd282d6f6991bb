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

__all__ = ["INR_DEMO_FILES", "inr_demo_panel", "progress_callback", "run_inr"]

#: Files of the demo's INR panel (:func:`inr_demo_panel`), under the demo's directory.
INR_DEMO_FILES = ("inr_demo.png", "inr_demo.md")

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


def inr_demo_panel(
    tilt_series: np.ndarray,
    geometry: TiltGeometry,
    truth: np.ndarray,
    config: Any,
    output_dir: str | Path,
    *,
    pixel_size_angstrom: float = 1.0,
    progress: Any = None,
) -> dict[str, Any]:
    """The INR panel of ``cryowedge demo``: a small network fitted to the central rows.

    The tilt axis is ``y``, so the central ``config.rows`` rows of the aligned series are a
    reconstruction problem of their own. They are reconstructed by FBP
    (``config.filter_name``) and by :func:`cryowedge.inr.fit.fit_inr` with
    ``config.inr_config`` (:class:`~cryowedge.config.inr.DemoInrConfig`), scored against the
    same rows of the truth (PSNR after the affine calibration, Pearson CC, Fourier
    correlations inside and outside the missing wedge) and drawn as orthoslices.

    Parameters
    ----------
    tilt_series : numpy.ndarray
        ``(n_tilts, ny, nx)`` the demo's aligned series.
    geometry : TiltGeometry
        Its geometry (aligned: tilt axis along ``y``).
    truth : numpy.ndarray
        ``(nz, ny, nx)`` the demo's phantom.
    config : DemoInrConfig
        The panel's settings.
    output_dir : path
        Where ``inr_demo.png`` and ``inr_demo.md`` go.
    pixel_size_angstrom : float
        Voxel size, Å.
    progress : callable, optional
        ``progress(step, fraction)`` of the panel (0…1).

    Returns
    -------
    dict
        ``{"metrics": {name: row}, "files": {name: path}, "seconds": s}``.

    Raises
    ------
    ValueError
        ``config.rows`` larger than the series' ``y`` size.
    """
    import time

    from cryowedge.config.registry import get_method
    from cryowedge.geometry.tilt import missing_wedge_mask
    from cryowedge.inr.fit import fit_inr
    from cryowedge.io._atomic import write_text_atomic
    from cryowedge.metrics import (
        metrics_table_markdown,
        missing_wedge_correlations,
        normalize_intensity,
        pearson_correlation,
        psnr,
    )
    from cryowedge.viz.figures import orthoslice_panel
    from cryowedge.workflows._record import report_progress
    from cryowedge.workflows.reconstruct import reconstruct_array

    n_tilts, ny, nx = tilt_series.shape
    if config.rows > ny:
        raise ValueError(f"inr.rows {config.rows} is larger than the demo's {ny} y-slices; "
                         f"use rows <= {ny}.")
    out = Path(output_dir)
    y0 = ny // 2 - config.rows // 2
    y1 = y0 + config.rows
    series = np.ascontiguousarray(tilt_series[:, y0:y1])
    geom = geometry.with_(detector_shape=(config.rows, nx))
    rows_truth = np.asarray(truth[:, y0:y1], dtype=np.float32)
    shape = rows_truth.shape
    report_progress(progress, "inr panel: fbp", 0.0)
    fbp = get_method("fbp").config(filter_name=config.filter_name, thickness=shape[0])
    volumes = {f"fbp ({fbp.filter_name})": reconstruct_array(series, geom, fbp)}
    tracker = progress_callback(progress, 0.05, 0.9, name="inr panel: inr")
    start = time.perf_counter()
    result = fit_inr(series, geom, config.inr_config(shape[0]), volume_shape=shape,
                     device="cpu", callback=tracker)
    seconds = time.perf_counter() - start
    volumes["inr"] = result.volume
    wedge = missing_wedge_mask(shape, geom.tilt_range_deg)
    metrics = {}
    for name, vol in volumes.items():
        calibrated = normalize_intensity(vol, rows_truth, "affine")
        metrics[name] = {"psnr": psnr(calibrated, rows_truth),
                         "pearson": pearson_correlation(vol, rows_truth),
                         **missing_wedge_correlations(calibrated, rows_truth, wedge)}
    report_progress(progress, "inr panel: figure", 0.97)
    files = {"inr_demo_png": orthoslice_panel({"ground truth": rows_truth, **volumes},
                                              out / INR_DEMO_FILES[0],
                                              pixel_size_angstrom=pixel_size_angstrom)}
    note = (f"INR panel: the central {config.rows} y-slices (rows {y0}:{y1}) of the demo's "
            f"series, {n_tilts} views; MLP {config.width} wide on {config.n_frequencies} "
            f"Fourier features at σ {config.encoding_scale:g} cycles/voxel, {config.epochs} "
            f"epochs in batches of {config.slice_batch} rows, lam_c {config.lam_c:g}; fitted "
            f"in {seconds:.1f} s. Scores against the same rows of the truth.")
    files["inr_demo_md"] = out / INR_DEMO_FILES[1]
    write_text_atomic(files["inr_demo_md"], note + "\n\n" + metrics_table_markdown(
        metrics, normalize="affine") + "\n")
    return {"metrics": metrics, "files": files, "seconds": seconds}
