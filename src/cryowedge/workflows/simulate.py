"""``cryowedge simulate``: phantom → tilt series (+ even/odd halves) as MRC + .tlt files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cryowedge.config.models import SimulateConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.tilt_series import SimulatedTiltSeries, simulate_tilt_series
from cryowedge.workflows._record import ProgressFn, report_progress, write_run_record

logger = logging.getLogger(__name__)

__all__ = ["make_phantom", "simulate_to_files", "simulate_from_config"]


def make_phantom(config: SimulateConfig) -> np.ndarray:
    """The ``(z, y, x)`` ground-truth volume described by ``config``."""
    from cryowedge.simulate import phantoms

    if config.phantom == "shepp-logan":
        return phantoms.shepp_logan_3d(config.shape).astype(np.float32)
    if config.phantom == "spheres":
        return phantoms.hollow_spheres(config.shape, rng=config.seed).astype(np.float32)
    from cryowedge.simulate.pdb import load_example_particle

    particle = load_example_particle(pixel_size_angstrom=config.pixel_size_angstrom)
    # vesicles must fit inside the specimen slab (60 % of the box height)
    slab_angstrom = 0.6 * config.shape[0] * config.pixel_size_angstrom
    radii = (min(100.0, 0.2 * slab_angstrom), min(200.0, 0.35 * slab_angstrom))
    cell = phantoms.crowded_cell(
        config.shape,
        vesicle_radius_range_angstrom=radii,
        particle=particle,
        n_particles=config.n_particles,
        pixel_size_angstrom=config.pixel_size_angstrom,
        rng=config.seed,
    )
    return np.asarray(cell.volume, dtype=np.float32)


def simulate_from_config(config: SimulateConfig, device: str | None = None
                         ) -> tuple[np.ndarray, SimulatedTiltSeries]:
    """Ground truth and simulated series for ``config`` (no files written).

    ``device`` overrides ``config.device`` (``"auto"``: the GPU when there is one).
    """
    from cryowedge.utils.device import resolve_device

    device = str(resolve_device(device or config.device))
    volume = make_phantom(config)
    geometry = TiltGeometry.from_range(
        config.tilt_min_deg, config.tilt_max_deg, config.tilt_step_deg,
        config.shape[1:], pixel_size_angstrom=config.pixel_size_angstrom,
    )
    sim = simulate_tilt_series(
        volume, geometry, snr=config.snr, dose_e_per_angstrom2=config.dose_e_per_angstrom2,
        defocus_angstrom=config.defocus_angstrom, oversample=config.oversample,
        even_odd=config.even_odd, rng=config.seed, device=device,
    )
    return volume, sim


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
