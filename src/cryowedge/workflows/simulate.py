"""``cryowedge simulate``: phantom → tilt series (+ even/odd halves) as MRC + .tlt files.

``make_phantom`` and ``simulate_from_config`` live in :mod:`cryowedge.simulate.from_config`
(re-exported here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cryowedge.config.models import SimulateConfig
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.from_config import make_phantom, simulate_from_config
from cryowedge.workflows._record import ProgressFn, report_progress, write_run_record

logger = logging.getLogger(__name__)

__all__ = ["make_phantom", "simulate_from_config", "simulate_to_files", "simulated_outputs"]


def simulated_outputs(
    config: SimulateConfig | Any, output_dir: str | Path
) -> tuple[list[Path], int]:
    """The files a simulation into ``output_dir`` writes, and their estimated total size (bytes).

    ``config`` is a :class:`SimulateConfig` or anything with its phantom and tilt fields (the
    STET simulation); the stacks are ``(n_tilts, y, x)`` float32, the volume ``shape``.
    """
    from cryowedge.geometry.tilt import TiltGeometry
    from cryowedge.workflows.outputs import mrc_nbytes

    out = Path(output_dir)
    geometry = TiltGeometry.from_range(config.tilt_min_deg, config.tilt_max_deg,
                                       config.tilt_step_deg, config.shape[1:])
    stack = (geometry.n_tilts, *config.shape[1:])
    names = ["ground_truth.mrc", "tilt_series.mrc", "tilt_series.tlt", "run.yaml"]
    n_bytes = mrc_nbytes(config.shape) + mrc_nbytes(stack) + 65536
    if getattr(config, "even_odd", False):
        names += ["tilt_series_even.mrc", "tilt_series_odd.mrc", "tilt_series_even.tlt",
                  "tilt_series_odd.tlt"]
        n_bytes += 2 * mrc_nbytes(stack)
    return [out / name for name in names], n_bytes


def simulate_to_files(config: SimulateConfig, output_dir: str | Path, *,
                      progress: ProgressFn | None = None, device: str | None = None,
                      overwrite: bool = False,
                      config_path: str | Path | None = None) -> dict[str, Path]:
    """Simulate and write ``ground_truth.mrc``, ``tilt_series.mrc`` (+ ``.tlt``), even/odd halves.

    Before simulating, the outputs are checked (:func:`cryowedge.workflows.outputs.check_outputs`):
    existing files are refused unless ``overwrite`` (then kept as ``<name>~``), and the
    directory must be writable with room for the stacks. ``config_path`` (the YAML read) is
    never overwritten.
    """
    from cryowedge.workflows.outputs import check_outputs, keep_backups

    out = Path(output_dir)
    outputs, n_bytes = simulated_outputs(config, out)
    check_outputs(outputs, inputs=[config_path], overwrite=overwrite, n_bytes=n_bytes)
    report_progress(progress, "phantom", 0.0)
    volume, sim = simulate_from_config(config, device=device)
    report_progress(progress, "writing", 0.8)
    if overwrite:
        keep_backups(outputs)
    px = config.pixel_size_angstrom
    files = {
        "ground_truth": write_mrc(out / "ground_truth.mrc", volume, voxel_size_angstrom=px),
        "tilt_series": write_mrc(out / "tilt_series.mrc", sim.tilt_series, voxel_size_angstrom=px,
                                 image_stack=True),
        "angles": write_tilt_angles(out / "tilt_series.tlt", sim.geometry.tilt_angles_deg),
    }
    if sim.even is not None and sim.odd is not None:
        files["even"] = write_mrc(out / "tilt_series_even.mrc", sim.even,
                                  voxel_size_angstrom=px, image_stack=True)
        files["odd"] = write_mrc(out / "tilt_series_odd.mrc", sim.odd,
                                 voxel_size_angstrom=px, image_stack=True)
        files["even_angles"] = write_tilt_angles(out / "tilt_series_even.tlt",
                                                  sim.geometry.tilt_angles_deg)
        files["odd_angles"] = write_tilt_angles(out / "tilt_series_odd.tlt",
                                                 sim.geometry.tilt_angles_deg)
    files = {k: Path(v) for k, v in files.items()}
    files["run"] = write_run_record(out, "simulate", config.model_dump(mode="json"),
                                    {k: str(v) for k, v in files.items()})
    report_progress(progress, "done", 1.0)
    return files
