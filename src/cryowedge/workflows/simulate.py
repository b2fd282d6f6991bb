"""``cryowedge simulate``: phantom → tilt series (+ even/odd halves) as MRC + .tlt files.

``make_phantom`` and ``simulate_from_config`` live in :mod:`cryowedge.simulate.from_config`
(re-exported here).
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryowedge.config.models import SimulateConfig
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.from_config import make_phantom, simulate_from_config
from cryowedge.workflows._record import ProgressFn, report_progress, write_run_record

logger = logging.getLogger(__name__)

__all__ = ["make_phantom", "simulate_to_files", "simulate_from_config"]


def simulate_to_files(config: SimulateConfig, output_dir: str | Path, *,
                      progress: ProgressFn | None = None, device: str | None = None) -> dict[str, Path]:
    """Simulate and write ``ground_truth.mrc``, ``tilt_series.mrc`` (+ ``.tlt``), even/odd halves."""
    out = Path(output_dir)
    report_progress(progress, "phantom", 0.0)
    volume, sim = simulate_from_config(config, device=device)
    report_progress(progress, "writing", 0.8)
    px = config.pixel_size_angstrom
    files = {
        "ground_truth": write_mrc(out / "ground_truth.mrc", volume, voxel_size_angstrom=px),
        "tilt_series": write_mrc(out / "tilt_series.mrc", sim.tilt_series, voxel_size_angstrom=px, image_stack=True),
        "angles": write_tilt_angles(out / "tilt_series.tlt", sim.geometry.tilt_angles_deg),
    }
    if sim.even is not None and sim.odd is not None:
        files["even"] = write_mrc(out / "tilt_series_even.mrc", sim.even, voxel_size_angstrom=px, image_stack=True)
        files["odd"] = write_mrc(out / "tilt_series_odd.mrc", sim.odd, voxel_size_angstrom=px, image_stack=True)
        files["even_angles"] = write_tilt_angles(out / "tilt_series_even.tlt", sim.geometry.tilt_angles_deg)
        files["odd_angles"] = write_tilt_angles(out / "tilt_series_odd.tlt", sim.geometry.tilt_angles_deg)
    files = {k: Path(v) for k, v in files.items()}
    files["run"] = write_run_record(out, "simulate", config.model_dump(mode="json"),
                                    {k: str(v) for k, v in files.items()})
    report_progress(progress, "done", 1.0)
    return files
