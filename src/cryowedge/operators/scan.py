"""The random-beam STET forward operator ``S·H`` (thesis ch. 3, eq. 3.4).

``H`` is the tilt projector (volume ``(z, y, x)`` → tilt series ``(n_tilts, ny, nx)``) and
``S`` the diagonal 0/1 scan mask (:class:`~cryowedge.operators.elementary.MaskOperator`),
one random pattern per tilt (:func:`~cryowedge.simulate.random_scan_mask`).
"""

from __future__ import annotations

from typing import Any

from cryowedge._validation import check_scan_mask_shape
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.base import ComposedOperator
from cryowedge.operators.elementary import MaskOperator, as_binary_mask
from cryowedge.operators.tilt_projector import TiltProjector

__all__ = ["stet_operator"]


def stet_operator(
    geometry: TiltGeometry,
    volume_shape: tuple[int, int, int] | None,
    mask: Any,
) -> ComposedOperator:
    """The RB-STET forward operator ``S·H``: volume ``(z, y, x)`` → masked tilt series.

    Parameters
    ----------
    geometry
        Tilt geometry (angles in degrees, detector shape, pixel size in Å).
    volume_shape
        ``(nz, ny, nx)`` of the volume; None = :meth:`TiltGeometry.default_volume_shape`.
    mask
        ``(n_tilts, ny, nx)`` bool or 0/1 scan mask, True = scanned.

    Returns
    -------
    ComposedOperator
        ``MaskOperator(mask) @ TiltProjector(geometry, volume_shape)`` with the exact adjoint
        ``Hᵀ S``.

    Raises
    ------
    ValueError
        If the mask shape differs from ``geometry.tilt_series_shape`` or holds values other
        than 0 and 1.
    """
    m = as_binary_mask(mask)
    check_scan_mask_shape(m.shape, geometry.tilt_series_shape, "tilt-series (from the geometry)")
    shape = (
        geometry.default_volume_shape()
        if volume_shape is None
        else tuple(int(s) for s in volume_shape)
    )
    return MaskOperator(m) @ TiltProjector(geometry, shape)
