"""Constrained reconstruction model (CRM) for subtomogram averaging."""

from cryowedge.crm.problem import CRMCopy, CRMData, sphere_support

__all__ = ["CRMCopy", "CRMData", "sphere_support"]

# Simulators and the real-use input (STAR particle list -> sub-tilt-series).
from cryowedge.crm.particles import (  # noqa: E402
    ParticleList,
    extract_subtilt_series,
    particle_projection_centres,
    read_particle_star,
    write_particle_star,
)
from cryowedge.crm.simulate import (  # noqa: E402
    CRMSimulation,
    TomogramSimulation,
    central_slice_particle,
    copy_orientations_2d,
    paper_tilt_angles,
    shepp_logan_particle,
    simulate_crm_2d,
    simulate_crm_3d,
    simulate_particle_tomogram,
    simulate_ribosome_2d,
    simulate_shepp_logan_2d,
    write_tomogram_simulation,
)

__all__ += [
    "ParticleList",
    "extract_subtilt_series",
    "particle_projection_centres",
    "read_particle_star",
    "write_particle_star",
    "CRMSimulation",
    "TomogramSimulation",
    "central_slice_particle",
    "copy_orientations_2d",
    "paper_tilt_angles",
    "shepp_logan_particle",
    "simulate_crm_2d",
    "simulate_crm_3d",
    "simulate_particle_tomogram",
    "simulate_ribosome_2d",
    "simulate_shepp_logan_2d",
    "write_tomogram_simulation",
]
