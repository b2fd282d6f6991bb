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
from cryowedge.operators.rotation import Rotation3D
from cryowedge.operators.subvolume import (
    CenterCrop,
    SubvolumeExtract,
    extract_subvolumes,
    insert_subvolumes,
)
from cryowedge.operators.tilt_projector import TiltProjector

__all__ = [
    "AdjointOperator",
    "CenterCrop",
    "ComposedOperator",
    "DetectorWarp",
    "IdentityOperator",
    "LinearOperator",
    "LinearOperatorLike",
    "OperatorModule",
    "Rotation3D",
    "SubvolumeExtract",
    "TiltProjector",
    "apply_adjoint",
    "apply_forward",
    "as_autograd",
    "extract_subvolumes",
    "insert_subvolumes",
    "power_norm",
]
