"""``cryowedge reconstruct``: tilt-series file → tomogram MRC (voxel size kept)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.config.models import IterativeConfig, ReconstructConfig
from cryowedge.config.registry import get_method
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.solvers import Callback
from cryowedge.utils.device import resolve_device
from cryowedge.workflows._record import ProgressFn, report_progress, write_run_record
from cryowedge.workflows.methods import MethodContext, data_scale

logger = logging.getLogger(__name__)

__all__ = ["data_scale", "reconstruct_array", "reconstruct_file", "solver_kwargs"]


def reconstruct_array(
    tilt_series: np.ndarray,
    geometry: TiltGeometry,
    config: ReconstructConfig,
    *,
    progress: ProgressFn | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
) -> np.ndarray:
    """Reconstruct ``(n_tilts, y, x)`` with ``config`` → ``(z, y, x)`` float32 NumPy volume.

    Runs the runner that the method registry (:mod:`cryowedge.config.registry`) holds for
    ``config.method``: direct methods (fbp, wbp) filter and back-project; iterative methods
    (sirt, sart, art, cgls, tv) run their solver of :mod:`cryowedge.solvers` on the tilt
    projector. ``checkpoint_path``/``resume`` apply to iterative methods (see
    :mod:`cryowedge.workflows.checkpoint`); ``callback`` receives each iteration's report.
    """
    device = resolve_device(config.device)
    context = MethodContext(volume_shape=geometry.default_volume_shape(config.thickness), device=device,
                            progress=progress, checkpoint_path=checkpoint_path, resume=resume,
                            callback=callback)
    return get_method(config.method).load_runner()(tilt_series, geometry, config, context)


def solver_kwargs(config: IterativeConfig) -> dict[str, Any]:
    """The keyword arguments of ``cryowedge.solvers.SOLVERS[config.method]`` from a config."""
    return config.solver_kwargs()


def reconstruct_file(
    tilt_series_path: str | Path,
    output_path: str | Path,
    config: ReconstructConfig,
    *,
    angles_path: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    overwrite: bool = True,
    progress: ProgressFn | None = None,
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
    report_progress(progress, "reading", 0.0)
    series = load_tilt_series(
        tilt_series_path, angles_path, tilt_axis_angle_deg=config.tilt_axis_angle_deg,
        pixel_size_angstrom=pixel_size_angstrom,
    )
    report_progress(progress, config.method, 0.2)
    ckpt = checkpoint_path_for(output_path)
    if resume and not ckpt.exists():
        raise FileNotFoundError(f"--resume given but no checkpoint {ckpt} exists; run without --resume.")
    volume = reconstruct_array(series.data, series.geometry, config, progress=progress,
                               checkpoint_path=ckpt if (config.checkpoint_every or resume) else None,
                               resume=resume)
    report_progress(progress, "writing", 0.9)
    write_mrc(output_path, volume, voxel_size_angstrom=series.geometry.pixel_size_angstrom, overwrite=overwrite)
    write_run_record(
        output_path.parent, "reconstruct",
        {**config.model_dump(mode="json"), "input": str(tilt_series_path),
         "angles": str(angles_path) if angles_path else None, "geometry": series.geometry.to_dict()},
        {"volume": str(output_path)}, name=output_path.stem + ".run.yaml",
    )
    if ckpt.exists():
        ckpt.unlink()  # the finished output supersedes it
    report_progress(progress, "done", 1.0)
    return output_path
