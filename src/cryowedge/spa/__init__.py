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
