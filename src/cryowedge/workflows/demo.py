"""``cryowedge demo``: simulate a small crowded cell, reconstruct, evaluate, draw."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cryowedge.config.models import DemoConfig
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

__all__ = ["run_demo"]


def run_demo(output_dir: str | Path = "cryowedge_demo", config: DemoConfig | None = None, *,
             progress: ProgressFn | None = None, overwrite: bool = False,
             config_path: str | Path | None = None) -> dict[str, object]:
    """Run the demo and write MRCs, orthoslices.png, fsc.png, metrics.md/.json, run.yaml.

    The reconstructions are ``config.methods``: by default the ``demo`` presets of the
    registered methods (:mod:`cryowedge.config.registry`). The outputs are checked before
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
    check_outputs(outputs, inputs=[config_path], overwrite=overwrite, n_bytes=n_bytes)
    if overwrite:
        keep_backups(outputs)
    report_progress(progress, "simulating cell + tilt series", 0.0)
    truth, sim = simulate_from_config(sim_cfg)
    px = sim_cfg.pixel_size_angstrom
    files = {
        "ground_truth": write_mrc(out / "ground_truth.mrc", truth, voxel_size_angstrom=px),
        "tilt_series": write_mrc(out / "tilt_series.mrc", sim.tilt_series, voxel_size_angstrom=px, image_stack=True),
        "angles": write_tilt_angles(out / "tilt_series.tlt", sim.geometry.tilt_angles_deg),
    }
    volumes: dict[str, np.ndarray] = {}
    for i, (name, method_cfg) in enumerate(cfg.methods.items()):
        report_progress(progress, f"reconstructing ({name})", 0.2 + 0.5 * i / len(cfg.methods))
        rcfg = method_cfg.updated(thickness=truth.shape[0])
        volumes[name] = reconstruct_array(sim.tilt_series, sim.geometry, rcfg)
        files[name] = write_mrc(out / f"{name}.mrc", volumes[name], voxel_size_angstrom=px)
    report_progress(progress, "metrics + figures", 0.75)
    rows = evaluate_arrays(volumes, truth, pixel_size_angstrom=px,
                           tilt_range_deg=sim.geometry.tilt_range_deg, output_dir=out)
    panel = {"ground truth": truth, **volumes}
    files["orthoslices"] = orthoslice_panel(panel, out / "orthoslices.png", pixel_size_angstrom=px)
    files.update({"metrics_md": out / "metrics.md", "metrics_json": out / "metrics.json", "fsc": out / "fsc.png"})
    seconds = time.perf_counter() - start
    write_text_atomic(out / "metrics.md", metrics_table_markdown(rows, normalize=DEFAULT_NORMALIZE)
                      + f"\n\nwall time: {seconds:.1f} s\n")
    files["run"] = write_run_record(out, "demo", cfg.model_dump(mode="json"),
                                    {k: str(v) for k, v in files.items()})
    report_progress(progress, "done", 1.0)
    return {"metrics": rows, "files": files, "seconds": seconds}
