"""Single-particle analysis (SPA): Kaiser–Bessel basis, blob projector, Toeplitz normal operator.

Conventions (docs/conventions.md, research/thesis.md §1, §4): volumes and coefficients are
``(z, y, x)``; rotations are RELION ZYZ matrices acting on ``(x, y, z)`` vectors (rows 1–2 = the
detector plane ``M⊥``); shifts are ``(dy, dx)`` pixels; the centre is index ``n // 2``.
"""

from cryowedge.spa.basis import (
    RECONSTRUCTION_BLOB,
    SIMULATION_BLOB,
    KaiserBesselBlob,
    RadialTable,
    check_scale,
    coarse_size,
    coefficient_positions,
    expand,
    refine_coefficients,
)
from cryowedge.spa.projector import SpaProjector, check_cubic_shape, check_rotations
from cryowedge.spa.toeplitz import (
    ToeplitzNormalOperator,
    conjugate_gradient,
    fast_adjoint,
    time_operators,
    toeplitz_kernel,
)

__all__ = [
    "KaiserBesselBlob",
    "RECONSTRUCTION_BLOB",
    "SIMULATION_BLOB",
    "RadialTable",
    "check_scale",
    "coarse_size",
    "coefficient_positions",
    "expand",
    "refine_coefficients",
    "SpaProjector",
    "check_cubic_shape",
    "check_rotations",
    "ToeplitzNormalOperator",
    "conjugate_gradient",
    "fast_adjoint",
    "time_operators",
    "toeplitz_kernel",
]

# Particle stacks, per-particle CTFs and RELION STAR + MRCS input/output.
from cryowedge.spa.ctf_model import (  # noqa: E402
    aperture_mask,
    correct_ctf,
    ctf_arrays,
    effective_ctf,
    stack_ctfs,
    wiener_filter,
)
from cryowedge.spa.io import read_relion_particles, write_relion_particles  # noqa: E402
from cryowedge.spa.particles import CTFParams, ParticleStack, shift_images  # noqa: E402

__all__ += [
    "CTFParams",
    "ParticleStack",
    "shift_images",
    "aperture_mask",
    "ctf_arrays",
    "stack_ctfs",
    "effective_ctf",
    "wiener_filter",
    "correct_ctf",
    "read_relion_particles",
    "write_relion_particles",
]

# Simulated data sets and reconstruction (TV-ADMM-CG, ILF-ADMM, λ sweep, multiscale, half maps).
from cryowedge.spa.reconstruct import (  # noqa: E402
    HalfMapResult,
    LambdaSweep,
    SpaProblem,
    SpaReconstruction,
    admm_cg,
    build_problem,
    half_map_reconstruction,
    ilf_admm,
    lambda_sweep,
    reconstruct_multiscale,
    reconstruct_spa,
)
from cryowedge.spa.simulate import (  # noqa: E402
    SpaSimulation,
    load_density_source,
    simulate_spa,
    write_spa_simulation,
)

__all__ += [
    "HalfMapResult",
    "LambdaSweep",
    "SpaProblem",
    "SpaReconstruction",
    "admm_cg",
    "build_problem",
    "half_map_reconstruction",
    "ilf_admm",
    "lambda_sweep",
    "reconstruct_multiscale",
    "reconstruct_spa",
    "SpaSimulation",
    "load_density_source",
    "simulate_spa",
    "write_spa_simulation",
]

# Joint angular refinement (thesis §4.2), projection-matching baseline, orientation metrics.
from cryowedge.spa.angles import (  # noqa: E402
    align_rotations,
    align_shifts,
    angular_errors_deg,
    euler_differences_deg,
    geodesic_distance_deg,
    perturb_euler,
    shift_errors_px,
    super_fibonacci_rotations,
)
from cryowedge.spa.refine import (  # noqa: E402
    LatentUpdateOptions,
    ParticleObjective,
    RefinementInfo,
    RefinementResult,
    RidgeReconstruction,
    TVReconstruction,
    joint_refinement,
    particle_gradients,
    projection_matching,
    projection_matching_refinement,
    support_sphere,
    update_latent,
)
from cryowedge.spa.refine_experiment import joint_refinement_experiment  # noqa: E402

__all__ += [
    "align_rotations",
    "align_shifts",
    "angular_errors_deg",
    "euler_differences_deg",
    "geodesic_distance_deg",
    "perturb_euler",
    "shift_errors_px",
    "super_fibonacci_rotations",
    "LatentUpdateOptions",
    "ParticleObjective",
    "RefinementInfo",
    "RefinementResult",
    "RidgeReconstruction",
    "TVReconstruction",
    "joint_refinement",
    "particle_gradients",
    "projection_matching",
    "projection_matching_refinement",
    "support_sphere",
    "update_latent",
    "joint_refinement_experiment",
]
