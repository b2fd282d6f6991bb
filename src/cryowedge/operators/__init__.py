"""Linear operators (forward/adjoint/shapes) and their PyTorch autograd wrappers."""

from cryowedge.operators.autograd import OperatorModule, apply_adjoint, apply_forward, as_autograd
from cryowedge.operators.base import (
    AdjointOperator,
    ComposedOperator,
    IdentityOperator,
    LinearOperator,
    LinearOperatorLike,
    power_norm,
)
from cryowedge.operators.detector import DetectorWarp
from cryowedge.operators.tilt_projector import TiltProjector

__all__ = [
    "AdjointOperator",
    "ComposedOperator",
    "DetectorWarp",
    "IdentityOperator",
    "LinearOperator",
    "LinearOperatorLike",
    "OperatorModule",
    "TiltProjector",
    "apply_adjoint",
    "apply_forward",
    "as_autograd",
    "power_norm",
]
