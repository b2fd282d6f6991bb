"""Geometry: tilt series, missing wedge, rotations. Never imports operators."""

from cryowedge.geometry.rotations import (
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    random_rotations,
    rotate_volume,
)
from cryowedge.geometry.tilt import TiltGeometry, angular_weights_rad, missing_wedge_mask
from cryowedge.geometry.wedge import wedge_mask

__all__ = [
    "TiltGeometry",
    "angular_weights_rad",
    "euler_zyz_to_matrix",
    "matrix_to_euler_zyz",
    "missing_wedge_mask",
    "random_rotations",
    "rotate_volume",
    "wedge_mask",
]
