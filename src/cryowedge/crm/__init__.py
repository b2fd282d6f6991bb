"""Constrained reconstruction model (CRM) for subtomogram averaging."""

from cryowedge.crm.problem import BACKGROUND_FRAMES, CRMCopy, CRMData, sphere_support

__all__ = ["BACKGROUND_FRAMES", "CRMCopy", "CRMData", "sphere_support"]

# The model operator, its solvers and the averaging baselines.
from cryowedge.crm.baselines import (  # noqa: E402
    BASELINES,
    masked_fourier_average,
    reconstruct_copies,
    simple_average,
)
from cryowedge.crm.operator import (  # noqa: E402
    CopyProjector,
    CRMOperator,
    averaging_matrix,
    crm_matrix,
    fold_angles,
    rotation_about_y,
    solution_space_dim,
    y_rotation_deg,
)
from cryowedge.crm.solvers import CRM_SOLVERS, crm_kaczmarz, crm_sart, crm_sirt, crm_tv  # noqa: E402

__all__ += [
    "BASELINES",
    "CRM_SOLVERS",
    "CopyProjector",
    "CRMOperator",
    "averaging_matrix",
    "crm_kaczmarz",
    "crm_matrix",
    "crm_sart",
    "crm_sirt",
    "crm_tv",
    "fold_angles",
    "masked_fourier_average",
    "reconstruct_copies",
    "rotation_about_y",
    "simple_average",
    "solution_space_dim",
    "y_rotation_deg",
]

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
