"""Torch missing-wedge masks: measured (or missing) Fourier region of a single-axis tilt series.

The wedge follows docs/conventions.md: with the tilt axis along the volume's ``y`` axis, a
Fourier point ``(kz, ky, kx)`` (cycles/pixel) is **measured** when ``kx² + kz² = 0`` or when
its direction ``atan2(kz, kx)``, folded into ``(-90°, 90°]``, lies inside the tilt range
``[min(angles), max(angles)]`` (asymmetric ranges are kept as they are). With
``tilt_axis_angle_deg = 0`` and no rotation, :func:`wedge_mask` equals
:meth:`cryowedge.geometry.tilt.TiltGeometry.missing_wedge_mask` (``missing=True``).

Two optional frame changes, both with matrices acting on **(x, y, z)** vectors:

* ``tilt_axis_angle_deg = α`` puts the tilt axis at ``α`` degrees counter-clockwise from ``+y``
  in the volume's xy plane (direction ``(-sin α, cos α, 0)``, the sense of
  ``TiltGeometry.tilt_axis_angle_deg``). ``α = 180°`` mirrors the tilt range. Note that the
  tomograms of cryowedge always have the axis along ``y`` (α = 0); other values describe
  e.g. sub-volumes cut from a differently oriented frame.
* ``rotation_xyz = R`` gives the mask in the frame of a reference ``ref`` whose rotated copy
  ``out(R r) = ref(r)`` (:func:`~cryowedge.geometry.rotations.rotate_volume`,
  ``Rotation3D``) was imaged: ``mask(k) = W(R k)``, the wedge condition evaluated at the
  R-rotated frequency (the Fourier transform of a rotated object is rotated by the same
  matrix). Equivalently, the unrotated mask rotated by ``Rᵀ``.

Together: ``mask(k) = W₀(Q_αᵀ R k)`` with ``Q_α`` the in-plane rotation taking ``+y`` to the
tilt axis and ``W₀`` the axis-along-``y`` wedge above.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from cryowedge.geometry.rotations import _check_matrix, euler_zyz_to_matrix

__all__ = ["wedge_mask", "fourier_grid_xyz"]

logger = logging.getLogger(__name__)

#: Angular tolerance (degrees) at the range ends, as in geometry/tilt.py.
_ANGLE_TOL_DEG = 1e-9


def fourier_grid_xyz(
    volume_shape: Sequence[int],
    *,
    rfft: bool = False,
    centered: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frequencies ``(kx, ky, kz)`` (cycles/pixel, float64) broadcastable to the FFT grid.

    Parameters
    ----------
    volume_shape
        ``(nz, ny, nx)``.
    rfft
        Half grid of ``torch.fft.rfftn`` (last axis ``nx // 2 + 1``, never shifted).
    centered
        Zero frequency at index ``N // 2`` (after ``fftshift``) instead of FFT order.
    device
        Device of the returned tensors (default CPU).

    Returns
    -------
    kx, ky, kz
        Shapes ``(1, 1, nx')``, ``(1, ny, 1)``, ``(nz, 1, 1)``.
    """
    nz, ny, nx = (int(s) for s in volume_shape)
    dev = torch.device("cpu") if device is None else torch.device(device)
    f64 = torch.float64
    kz = torch.fft.fftfreq(nz, dtype=f64, device=dev)
    ky = torch.fft.fftfreq(ny, dtype=f64, device=dev)
    kx = (
        torch.fft.rfftfreq(nx, dtype=f64, device=dev)
        if rfft
        else torch.fft.fftfreq(nx, dtype=f64, device=dev)
    )
    if centered:
        kz, ky = torch.fft.fftshift(kz), torch.fft.fftshift(ky)
        if not rfft:
            kx = torch.fft.fftshift(kx)
    return kx.reshape(1, 1, -1), ky.reshape(1, -1, 1), kz.reshape(-1, 1, 1)


def _tilt_range(tilt_angles_deg: ArrayLike) -> tuple[float, float]:
    angles = np.asarray(tilt_angles_deg, dtype=np.float64).ravel()
    if angles.size == 0:
        raise ValueError(
            "tilt_angles_deg is empty; pass the tilt angles in degrees (or a (min, max) pair)."
        )
    if not np.isfinite(angles).all() or np.abs(angles).max() > 90.0:
        raise ValueError(
            f"tilt_angles_deg must be finite degrees within [-90, 90], got range "
            f"[{angles.min()}, {angles.max()}] (radians or NaN?)."
        )
    return float(angles.min()), float(angles.max())


def wedge_mask(
    volume_shape: Sequence[int],
    tilt_angles_deg: ArrayLike,
    *,
    tilt_axis_angle_deg: float = 0.0,
    rotation_xyz: ArrayLike | torch.Tensor | None = None,
    missing: bool = False,
    rfft: bool = False,
    centered: bool = False,
    soft_edge_deg: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Measured (default) or missing Fourier region of a ``(z, y, x)`` volume, as a torch mask.

    Parameters
    ----------
    volume_shape
        ``(nz, ny, nx)`` of the real-space volume (voxels are cubic; frequencies are in
        cycles/pixel per axis, so non-cubic shapes are handled).
    tilt_angles_deg
        Tilt angles in degrees (e.g. ``TiltGeometry.tilt_angles_deg``); only their minimum and
        maximum are used, so a ``(min, max)`` pair works too. Within ``[-90, 90]``.
    tilt_axis_angle_deg
        In-plane angle of the tilt axis in the volume's xy plane, degrees counter-clockwise
        from ``+y`` (module docstring). 0 for cryowedge tomograms.
    rotation_xyz
        Optional ``(..., 3, 3)`` rotation matrices on (x, y, z) vectors: the mask in the frame of
        a reference seen as ``out(R r) = ref(r)``, i.e. ``mask(k) = W(R k)``. The batch shape
        ``...`` leads the output.
    missing
        Return the missing region (``1 − measured``) instead of the measured one.
    rfft, centered
        Layout: half grid of ``rfftn`` (last axis ``nx // 2 + 1``), and/or zero frequency at
        index ``N // 2`` (see :func:`fourier_grid_xyz`).
    soft_edge_deg
        Width in degrees of a raised-cosine taper **outside** the tilt range (the measured
        weight falls from 1 at the range end to 0 at ``soft_edge_deg`` beyond it, measured as
        the angle of ``atan2(kz, kx)`` on the 180°-periodic circle). 0 = hard edge.
    dtype
        Output dtype: a floating dtype, or ``torch.bool`` for a hard edge.
    device
        Device of the mask (default CPU); it is computed there.

    Returns
    -------
    torch.Tensor
        ``(..., nz, ny, nx)`` (or ``(..., nz, ny, nx // 2 + 1)`` with ``rfft``); 1/True where
        measured (or missing with ``missing=True``).
    """
    shape = tuple(int(s) for s in volume_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"volume_shape must be (nz, ny, nx) with positive sizes, got {volume_shape!r}."
        )
    lo, hi = _tilt_range(tilt_angles_deg)
    axis = float(tilt_axis_angle_deg)
    if not np.isfinite(axis):
        raise ValueError(
            f"tilt_axis_angle_deg must be finite degrees, got {tilt_axis_angle_deg!r}."
        )
    soft = float(soft_edge_deg)
    if not np.isfinite(soft) or soft < 0:
        raise ValueError(f"soft_edge_deg must be >= 0 degrees, got {soft_edge_deg!r}.")
    if dtype == torch.bool and soft > 0:
        raise ValueError(
            "a soft-edged mask cannot be boolean; pass a floating dtype or soft_edge_deg=0."
        )
    if dtype != torch.bool and not dtype.is_floating_point:
        raise ValueError(f"dtype must be torch.bool or a floating dtype, got {dtype}.")
    dev = torch.device("cpu") if device is None else torch.device(device)

    # Total frequency transform T = Q_αᵀ R on (x, y, z); Q_αᵀ is RELION's Rz(α) (passive).
    transform = np.eye(3) if axis == 0.0 else euler_zyz_to_matrix(axis, 0.0, 0.0)
    batch: tuple[int, ...] = ()
    if rotation_xyz is not None:
        if isinstance(rotation_xyz, torch.Tensor):
            rotation_xyz = rotation_xyz.detach().cpu().numpy()
        r = _check_matrix(rotation_xyz, "rotation_xyz")
        dev_orth = np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(3)).max() if r.size else 0.0
        if dev_orth > 1e-5:
            raise ValueError(
                f"rotation_xyz is not orthogonal (max |R Rᵀ − I| = {dev_orth:.3g}); "
                "pass rotation matrices."
            )
        batch = r.shape[:-2]
        transform = transform @ r
    t = torch.as_tensor(np.asarray(transform, dtype=np.float64), device=dev)

    kx, ky, kz = fourier_grid_xyz(shape, rfft=rfft, centered=centered, device=dev)
    if rotation_xyz is None and axis == 0.0:
        kx_t, kz_t = kx, kz  # exact grid (agrees bit-for-bit with geometry/tilt.py)
    else:
        t = t.reshape(*batch, 1, 1, 1, 3, 3)
        kx_t = t[..., 0, 0] * kx + t[..., 0, 1] * ky + t[..., 0, 2] * kz
        kz_t = t[..., 2, 0] * kx + t[..., 2, 1] * ky + t[..., 2, 2] * kz
    on_axis = kx_t**2 + kz_t**2 <= 1e-18  # the tilt axis (ky) is always measured
    angle = torch.rad2deg(torch.atan2(kz_t, kx_t))  # (-180, 180]
    angle = torch.where(angle <= -90.0, angle + 180.0, angle)
    angle = torch.where(angle > 90.0, angle - 180.0, angle)  # folded into (-90, 90]
    out_shape = (*batch, shape[0], shape[1], kx.shape[-1])
    if soft == 0.0:
        measured = ((angle >= lo - _ANGLE_TOL_DEG) & (angle <= hi + _ANGLE_TOL_DEG)) | on_axis
        mask = ~measured if missing else measured
        return mask.expand(out_shape).to(dtype).contiguous()
    # Angular distance to [lo, hi] on the 180°-periodic circle of directions.
    dist = torch.stack(
        [
            torch.clamp(torch.maximum(lo - a, a - hi), min=0.0)
            for a in (angle, angle - 180.0, angle + 180.0)
        ]
    ).amin(dim=0)
    weight = torch.where(
        dist <= _ANGLE_TOL_DEG,
        torch.ones_like(dist),
        torch.where(
            dist < soft, 0.5 * (1.0 + torch.cos(torch.pi * dist / soft)), torch.zeros_like(dist)
        ),
    )
    weight = torch.where(on_axis, torch.ones_like(weight), weight)
    if missing:
        weight = 1.0 - weight
    return weight.expand(out_shape).to(dtype).contiguous()
