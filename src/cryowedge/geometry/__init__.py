"""Geometry: tilt series, missing wedge, rotations. Never imports operators."""

from cryowedge.geometry.tilt import TiltGeometry, angular_weights_rad, missing_wedge_mask

__all__ = ["TiltGeometry", "angular_weights_rad", "missing_wedge_mask"]
