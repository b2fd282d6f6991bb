"""Phantoms and tilt series described by a :class:`~cryowedge.config.SimulateConfig`.

No files: :mod:`cryowedge.workflows.simulate` writes what these functions return.
"""

from __future__ import annotations

import numpy as np

from cryowedge.config.models import SimulateConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.simulate.tilt_series import SimulatedTiltSeries, simulate_tilt_series

__all__ = ["make_phantom", "simulate_from_config"]


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


def simulate_from_config(
    config: SimulateConfig, device: str | None = None
) -> tuple[np.ndarray, SimulatedTiltSeries]:
    """Ground truth and simulated series for ``config`` (no files written).

    ``device`` overrides ``config.device`` (``"auto"``: the GPU when there is one).
    """
    from cryowedge.utils.device import resolve_device

    device = str(resolve_device(device or config.device))
    volume = make_phantom(config)
    geometry = TiltGeometry.from_range(
        config.tilt_min_deg,
        config.tilt_max_deg,
        config.tilt_step_deg,
        config.shape[1:],
        pixel_size_angstrom=config.pixel_size_angstrom,
    )
    sim = simulate_tilt_series(
        volume,
        geometry,
        snr=config.snr,
        dose_e_per_angstrom2=config.dose_e_per_angstrom2,
        defocus_angstrom=config.defocus_angstrom,
        oversample=config.oversample,
        even_odd=config.even_odd,
        rng=config.seed,
        device=device,
    )
    return volume, sim
