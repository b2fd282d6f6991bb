"""``cryowedge stet``: the random-beam STET file workflows (thesis ch. 3, Donati et al. 2017).

:func:`stet_simulate_files` writes a simulated RB-STET series with its scan mask;
:func:`stet_reconstruct_file` reads a series and its mask and writes the CS-TV (or
inpaint-then-TV) tomogram. The pieces live in their layers: the operator ``S·H`` in
:mod:`cryowedge.operators.scan`, the simulation in :mod:`cryowedge.simulate.stet`, the
reconstructions in :mod:`cryowedge.recon.stet` and the scan-mask files in
:mod:`cryowedge.io.scan_mask`; they are re-exported here for older imports.

File convention: the scan mask of ``<name>.mrc`` is ``<name>_mask.mrc`` next to it, an
8-bit (MRC mode 0) image stack of the data's shape with 1 = scanned, 0 = not scanned.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.models import SimulateConfig, StetReconstructConfig, StetSimulateConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.scan_mask import MASK_SUFFIX, mask_path_for, read_scan_mask
from cryowedge.operators.scan import stet_operator
from cryowedge.recon.stet import (
    inpaint_projections,
    inpaint_then_reconstruct,
    reconstruct_stet,
    reconstruct_tds,
)
from cryowedge.simulate.stet import StetSimulation, simulate_stet
from cryowedge.solvers import Callback, CallbackList
from cryowedge.workflows._record import (
    ProgressFn,
    iteration_progress,
    report_progress,
    write_run_record,
)

__all__ = [
    "stet_simulate_files",
    "stet_reconstruct_file",
    # re-exported from their layers (import them from there in new code)
    "MASK_SUFFIX",
    "StetSimulation",
    "inpaint_projections",
    "inpaint_then_reconstruct",
    "mask_path_for",
    "read_scan_mask",
    "reconstruct_stet",
    "reconstruct_tds",
    "simulate_stet",
    "stet_operator",
]

logger = logging.getLogger(__name__)


def stet_simulate_files(
    config: StetSimulateConfig | None = None,
    output_dir: str | Path = ".",
    *,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    config_path: str | Path | None = None,
) -> dict[str, Path]:
    """Simulate RB-STET data and write them (atomically, voxel size set).

    Writes into ``output_dir``: ``ground_truth.mrc`` (the phantom), ``tilt_series.mrc``
    (measured values, 0 where not scanned), ``tilt_series.tlt`` (angles, degrees),
    ``tilt_series_mask.mrc`` (the scan mask, 8-bit 0/1, next to the data) and ``run.yaml``.
    Existing files are refused unless ``overwrite`` (then kept as ``<name>~``), and the
    directory is checked for writability and space before the simulation
    (:func:`cryowedge.workflows.outputs.check_outputs`).

    Returns
    -------
    dict
        Output name → path.
    """
    from cryowedge.io.mrc import write_mrc
    from cryowedge.io.tilt_files import write_tilt_angles
    from cryowedge.simulate.from_config import make_phantom
    from cryowedge.utils.device import resolve_device
    from cryowedge.workflows.outputs import check_outputs, keep_backups
    from cryowedge.workflows.simulate import simulated_outputs

    cfg = config or StetSimulateConfig()
    device = resolve_device(device or cfg.device)  # fail early on an unavailable GPU
    out = Path(output_dir)
    outputs, n_bytes = simulated_outputs(cfg, out)
    outputs.append(mask_path_for(out / "tilt_series.mrc"))
    check_outputs(outputs, inputs=[config_path], overwrite=overwrite, n_bytes=n_bytes * 5 // 4)
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
    if overwrite:
        keep_backups(outputs)
    px = cfg.pixel_size_angstrom
    series = out / "tilt_series.mrc"
    files = {
        "ground_truth": write_mrc(out / "ground_truth.mrc", volume, voxel_size_angstrom=px),
        "tilt_series": write_mrc(series, sim.data, voxel_size_angstrom=px, image_stack=True),
        "angles": write_tilt_angles(out / "tilt_series.tlt", geometry.tilt_angles_deg),
        # bool → MRC mode 0 (8-bit), 1 = scanned
        "mask": write_mrc(mask_path_for(series), sim.mask, voxel_size_angstrom=px,
                          image_stack=True),
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
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    callback: Callback | None = None,
    config_path: str | Path | None = None,
) -> Path:
    """Reconstruct an RB-STET tilt-series file with its scan mask; write the tomogram MRC.

    Every input check happens before any work: the output is none of the inputs, may be
    written (:func:`cryowedge.workflows.outputs.check_outputs`: existing only with
    ``overwrite``, writable directory, free space), the tilt series and the mask exist, the
    angles match the images, the mask is binary and has the data's shape. The tomogram keeps
    the data's voxel size and is written atomically, with ``<output stem>.run.yaml`` next to
    it; if that write fails, the volume is kept in a ``.failed-write.npy`` fallback file
    named in the error.

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
        Replace an existing output (the old one is kept as ``<name>~``).
    progress
        ``progress(step, fraction)`` callback (the CLI's progress bar).
    callback
        Extra per-iteration solver callback.
    config_path
        The YAML file the config came from (never overwritten).

    Returns
    -------
    pathlib.Path
        The written tomogram.
    """
    from cryowedge.io.mrc import write_mrc
    from cryowedge.io.tilt_series import load_tilt_series
    from cryowedge.utils.device import resolve_device
    from cryowedge.workflows.outputs import check_outputs, keep_backups, mrc_nbytes, write_or_keep

    cfg = config or StetReconstructConfig()
    series_path, output_path = Path(tilt_series_path), Path(output_path)
    mask_path = mask_path_for(series_path) if mask_path is None else Path(mask_path)
    record_path = output_path.with_name(output_path.stem + ".run.yaml")
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
    check_outputs([output_path, record_path],
                  inputs=[series_path, mask_path, angles_path, config_path], overwrite=overwrite)
    series = load_tilt_series(series_path, angles_path, tilt_axis_angle_deg=cfg.tilt_axis_angle_deg,
                              pixel_size_angstrom=pixel_size_angstrom)
    mask = read_scan_mask(mask_path, series.data.shape)
    if not mask.any():
        raise ValueError(f"scan mask {mask_path} has no scanned pixel (all 0).")
    outside = int(np.count_nonzero(series.data[~mask]))
    if outside:
        logger.info("%d non-zero values at unscanned pixels are ignored", outside)
    shape = series.geometry.default_volume_shape(cfg.thickness)
    check_outputs([output_path], overwrite=True, n_bytes=mrc_nbytes(shape) + 65536)  # free space
    common = dict(volume_shape=shape, tv_lambda=cfg.tv_lambda, n_iter=cfg.n_iter,
                  regularizer=cfg.regularizer, positivity=cfg.positivity, cg_iter=cfg.cg_iter,
                  rho=cfg.rho, normalize=cfg.normalize, device=device)
    if cfg.method == "tv":
        cb = CallbackList([iteration_progress(progress, "CS-TV", 0.1, 0.8), callback])
        result = reconstruct_stet(series.data, mask, series.geometry, callback=cb, **common)
    else:
        inpaint_cb = iteration_progress(progress, "inpainting", 0.1, 0.2)
        cb = CallbackList([iteration_progress(progress, "TV", 0.3, 0.6), callback])
        result = inpaint_then_reconstruct(series.data, mask, series.geometry, mu=cfg.inpaint_mu,
                                          inpaint_iter=cfg.inpaint_iter,
                                          inpaint_callback=inpaint_cb, callback=cb, **common)
    volume = result.x.detach().cpu().numpy().astype(np.float32)
    report_progress(progress, "writing", 0.9)
    if overwrite:
        keep_backups([output_path, record_path])
    write_or_keep(lambda: write_mrc(output_path, volume,
                                    voxel_size_angstrom=series.geometry.pixel_size_angstrom),
                  volume, output_path)
    write_run_record(
        output_path.parent, "stet reconstruct",
        {**cfg.model_dump(mode="json"), "input": str(series_path), "mask": str(mask_path),
         "angles": str(angles_path) if angles_path else None,
         "measured_fraction": float(mask.mean()),
         "geometry": series.geometry.to_dict()},
        {"volume": str(output_path)}, name=record_path.name,
    )
    report_progress(progress, "done", 1.0)
    return output_path
