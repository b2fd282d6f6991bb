"""``cryowedge demo``: simulate a small crowded cell, reconstruct, evaluate, draw."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.config.models import DemoConfig, DemoDewedgeConfig
from cryowedge.io._atomic import write_text_atomic
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.metrics import metrics_table_markdown
from cryowedge.viz.figures import orthoslice_panel
from cryowedge.workflows._record import ProgressFn, report_progress, write_run_record
from cryowedge.workflows.evaluate import DEFAULT_NORMALIZE, EVALUATION_FILES, evaluate_arrays
from cryowedge.workflows.outputs import check_outputs, keep_backups, mrc_nbytes
from cryowedge.workflows.reconstruct import reconstruct_array
from cryowedge.workflows.simulate import simulate_from_config, simulated_outputs

__all__ = ["DEWEDGE_NAME", "dewedge_panel", "run_demo"]

#: Output name (``<out>/dewedge.mrc``, the table row, the orthoslice panel) of the dewedge panel.
DEWEDGE_NAME = "dewedge"
_DEWEDGE_DIR = "dewedge_fit"


def _dewedge_configs(cfg: DemoDewedgeConfig, thickness: int) -> tuple[Any, Any]:
    """The FBP of the halves/full series and the :class:`DewedgeConfig` of the demo panel."""
    from cryowedge.config.dewedge import DewedgeConfig
    from cryowedge.config.registry import get_method

    fbp = get_method("fbp").config(filter_name=cfg.filter_name, thickness=thickness)
    dewedge = DewedgeConfig.model_validate({
        "shared": {"subtomo_size": cfg.subtomo_size, "chans": cfg.chans, "depth": cfg.depth,
                   "seed": cfg.seed},
        "fit": {"epochs": cfg.epochs, "subtomos_per_epoch": cfg.subtomos_per_epoch,
                "batch_size": cfg.batch_size, "lr": cfg.lr, "checkpoint_every": cfg.epochs},
    })
    return fbp, dewedge


def dewedge_panel(tilt_series: np.ndarray, geometry: Any, thickness: int,
                  config: DemoDewedgeConfig, work_dir: str | Path, *,
                  overwrite: bool = False, progress: ProgressFn | None = None) -> np.ndarray:
    """The demo's dewedge result: a tiny DeepDeWedge fit on the even/odd halves, in memory.

    Parameters
    ----------
    tilt_series : numpy.ndarray, shape (n_tilts, y, x)
        The demo's tilt series.
    geometry : TiltGeometry
        Its geometry.
    thickness : int
        Tomogram thickness ``z``, voxels.
    config : DemoDewedgeConfig
        The panel's settings.
    work_dir : path
        Where the fit's checkpoints and ``fit_log.csv`` go.
    overwrite : bool
        Replace the checkpoints of an earlier demo.
    progress : callable, optional
        ``progress(step, fraction)`` of the panel.

    Returns
    -------
    numpy.ndarray, shape (thickness, y, x), float32
        The FBP of the full series (``config.filter_name``) refined by the fitted network
        (each tile kept to the band the loss fitted, as ``refine.band_limit`` does), in the
        FBP's units.
    """
    from cryowedge.dewedge.fit import fit, load_model
    from cryowedge.dewedge.refine import refine_array
    from cryowedge.io.even_odd import even_odd_indices

    fbp, dcfg = _dewedge_configs(config, thickness)
    even, odd = even_odd_indices(geometry.n_tilts)
    report_progress(progress, "dewedge: half tomograms", 0.0)
    half_a = reconstruct_array(tilt_series[even], geometry[even], fbp)
    half_b = reconstruct_array(tilt_series[odd], geometry[odd], fbp)
    full = reconstruct_array(tilt_series, geometry, fbp)

    def on_step(p: Any) -> None:
        done = (p.epoch - 1) * p.steps_per_epoch + p.step
        report_progress(progress, f"dewedge: fit epoch {p.epoch}/{p.epochs}",
                        0.05 + 0.85 * done / max(1, p.epochs * p.steps_per_epoch))

    result = fit((half_a, half_b), geometry.tilt_angles_deg, dcfg, output_dir=work_dir,
                 overwrite=overwrite, callback=on_step if progress else None)
    model, _ = load_model(result.last_checkpoint)
    report_progress(progress, "dewedge: refine", 0.9)
    band = dcfg.fit.loss_radius if dcfg.refine.band_limit else None  # as refine's default
    return refine_array(full, model, subtomo_size=config.refine_tile, stats=result.stats[0],
                        wedge_tilt_angles_deg=geometry.tilt_angles_deg, device="cpu",
                        band_radius=band)


def run_demo(output_dir: str | Path = "cryowedge_demo", config: DemoConfig | None = None, *,
             progress: ProgressFn | None = None, overwrite: bool = False,
             config_path: str | Path | None = None) -> dict[str, object]:
    """Run the demo and write MRCs, orthoslices.png, fsc.png, metrics.md/.json, run.yaml.

    The reconstructions are ``config.methods``: by default the ``demo`` presets of the
    registered methods (:mod:`cryowedge.config.registry`), and, unless ``config.dewedge`` is
    None, the dewedge panel (:func:`dewedge_panel`, ``dewedge.mrc``; its fit under
    ``dewedge_fit/``). The outputs are checked before
    the simulation (:func:`cryowedge.workflows.outputs.check_outputs`): existing files only
    with ``overwrite`` (then kept as ``<name>~``), a writable directory with room for them.

    Returns a dict with the metrics table rows, the output paths and the wall time (s).
    """
    start = time.perf_counter()
    cfg = config or DemoConfig()
    out = Path(output_dir)
    sim_cfg = cfg.simulate
    outputs, n_bytes = simulated_outputs(sim_cfg.model_copy(update={"even_odd": False}), out)
    outputs += [out / f"{name}.mrc" for name in cfg.methods]
    outputs += [out / name for name in (*EVALUATION_FILES, "orthoslices.png")]
    n_bytes += len(cfg.methods) * mrc_nbytes(sim_cfg.shape) + 4 * 2**20
    if cfg.dewedge is not None:
        if DEWEDGE_NAME in cfg.methods:
            raise ValueError(f"the method name {DEWEDGE_NAME!r} is the dewedge panel's; rename "
                             "that method, or set dewedge: null.")
        _dewedge_configs(cfg.dewedge, sim_cfg.shape[0])  # a bad filter fails now
        outputs += [out / f"{DEWEDGE_NAME}.mrc", out / _DEWEDGE_DIR / "checkpoints" / "last.pt"]
        n_bytes += mrc_nbytes(sim_cfg.shape) + 8 * 2**20
    if cfg.crm is not None:
        from cryowedge.workflows.crm import CRM_DEMO_FILES

        outputs += [out / name for name in CRM_DEMO_FILES]
    if cfg.inr is not None:
        from cryowedge.workflows.inr import INR_DEMO_FILES

        if cfg.inr.rows > sim_cfg.shape[1]:
            raise ValueError(f"inr.rows {cfg.inr.rows} is larger than the demo's "
                             f"{sim_cfg.shape[1]} y-slices; use rows <= {sim_cfg.shape[1]}.")
        outputs += [out / name for name in INR_DEMO_FILES]
    check_outputs(outputs, inputs=[config_path], overwrite=overwrite, n_bytes=n_bytes)
    if overwrite:
        keep_backups(outputs)
    report_progress(progress, "simulating cell + tilt series", 0.0)
    truth, sim = simulate_from_config(sim_cfg)
    px = sim_cfg.pixel_size_angstrom
    files = {
        "ground_truth": write_mrc(out / "ground_truth.mrc", truth, voxel_size_angstrom=px),
        "tilt_series": write_mrc(out / "tilt_series.mrc", sim.tilt_series, voxel_size_angstrom=px,
                                 image_stack=True),
        "angles": write_tilt_angles(out / "tilt_series.tlt", sim.geometry.tilt_angles_deg),
    }
    volumes: dict[str, np.ndarray] = {}
    for i, (name, method_cfg) in enumerate(cfg.methods.items()):
        report_progress(progress, f"reconstructing ({name})", 0.2 + 0.5 * i / len(cfg.methods))
        rcfg = method_cfg.updated(thickness=truth.shape[0])
        volumes[name] = reconstruct_array(sim.tilt_series, sim.geometry, rcfg)
        files[name] = write_mrc(out / f"{name}.mrc", volumes[name], voxel_size_angstrom=px)
    if cfg.dewedge is not None:
        def part(step: str, fraction: float) -> None:
            report_progress(progress, step, 0.7 + 0.05 * fraction)

        volumes[DEWEDGE_NAME] = dewedge_panel(
            sim.tilt_series, sim.geometry, truth.shape[0], cfg.dewedge, out / _DEWEDGE_DIR,
            overwrite=overwrite, progress=part if progress else None)
        files[DEWEDGE_NAME] = write_mrc(out / f"{DEWEDGE_NAME}.mrc", volumes[DEWEDGE_NAME],
                                        voxel_size_angstrom=px)
    crm_rows = None
    if cfg.crm is not None:  # CRM vs AVG on a tiny 2D problem (crm_demo.png, crm_demo.md)
        from cryowedge.workflows.crm import crm_demo_panel

        report_progress(progress, "crm panel", 0.74)
        panel_result = crm_demo_panel(out, cfg.crm)
        files.update(panel_result["files"])
        crm_rows = panel_result["metrics"]
    inr_rows = None
    if cfg.inr is not None:  # a small network on the central rows (inr_demo.png, inr_demo.md)
        from cryowedge.workflows.inr import inr_demo_panel

        def inr_part(step: str, fraction: float) -> None:
            report_progress(progress, step, 0.745 + 0.005 * fraction)

        inr_result = inr_demo_panel(sim.tilt_series, sim.geometry, truth, cfg.inr, out,
                                    pixel_size_angstrom=px,
                                    progress=inr_part if progress else None)
        files.update(inr_result["files"])
        inr_rows = inr_result["metrics"]
    report_progress(progress, "metrics + figures", 0.75)
    rows = evaluate_arrays(volumes, truth, pixel_size_angstrom=px,
                           tilt_range_deg=sim.geometry.tilt_range_deg, output_dir=out)
    panel = {"ground truth": truth, **volumes}
    files["orthoslices"] = orthoslice_panel(panel, out / "orthoslices.png", pixel_size_angstrom=px)
    files.update({"metrics_md": out / "metrics.md", "metrics_json": out / "metrics.json",
                  "fsc": out / "fsc.png"})
    seconds = time.perf_counter() - start
    write_text_atomic(out / "metrics.md", metrics_table_markdown(rows, normalize=DEFAULT_NORMALIZE)
                      + f"\n\nwall time: {seconds:.1f} s\n")
    files["run"] = write_run_record(out, "demo", cfg.model_dump(mode="json"),
                                    {k: str(v) for k, v in files.items()})
    report_progress(progress, "done", 1.0)
    return {"metrics": rows, "files": files, "seconds": seconds, "crm_metrics": crm_rows,
            "inr_metrics": inr_rows}
