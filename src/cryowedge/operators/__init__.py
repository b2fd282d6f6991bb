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
from cryowedge.operators.scan import stet_operator
from cryowedge.operators.subvolume import (
    CenterCrop,
    SubvolumeExtract,
    extract_subvolumes,
    insert_subvolumes,
)
from cryowedge.operators.tilt_projector import TiltProjector

__all__ = [
    "AdjointOperator",
    "apply_adjoint",
    "apply_forward",
    "as_autograd",
    "CenterCrop",
    "ComposedOperator",
    "DetectorWarp",
    "extract_subvolumes",
    "IdentityOperator",
    "insert_subvolumes",
    "LinearOperator",
    "LinearOperatorLike",
    "OperatorModule",
    "power_norm",
    "Rotation3D",
    "stet_operator",
    "SubvolumeExtract",
    "TiltProjector",
]
