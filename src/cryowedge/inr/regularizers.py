"""Regularisers of the coordinate-network fit: the Crowther/missing-wedge Fourier penalty and TV.

**Crowther/wedge penalty** (the report's Fig. 4). Each XZ slice ``v[:, y, :]`` of a
``(z, y, x)`` volume (the plane of the missing wedge; the tilt axis ``y`` is always measured)
is transformed with an orthonormal 2-D FFT ``V = F₂ v`` over ``(z, x)``. The penalty of the
slice is

    R(v_y) = (1 / (nz·nx)) Σ_k W(k) |V(k)|^p,
    W(k)   = (|k| / 0.5) · 1[k ∈ missing wedge ∨ |k| > k_c]

with ``k = (kz, kx)`` in cycles/pixel (docs/conventions.md), ``|k| / 0.5`` the frequency in
units of Nyquist (the weight grows linearly with frequency), the missing wedge of the tilt
range from :func:`cryowedge.geometry.wedge.wedge_mask` (the measured region includes its edge
directions and ``k = 0``) and ``k_c`` the Crowther frequency below. ``p = 1`` (default) is
the report's "absolute" spectrum; ``p = 2`` its energy. The sum runs over the whole FFT
grid: the ``rfft`` half used here counts every column that stands for two by weight 2.
The penalty of a batch of slices is the mean over its slices, so a volume's penalty is the
mean of its slices' whatever the batching, and it is exactly zero for a volume whose
spectrum lies inside the measured region below ``k_c`` (tests/test_inr_regularizers.py).

**Crowther frequency.** ``N`` views at an angular step ``Δθ`` (radians) sample Fourier
space on radial lines ``Δθ`` apart; at radius ``k`` neighbouring lines are ``k·Δθ`` apart,
which resolves the spectrum of an object ``D`` pixels thick only while ``k·Δθ ≤ 1/D``, so
``k_c = 1 / (D·Δθ)`` cycles/pixel (Crowther et al. 1970; ``d = π D / N`` for ``N`` views
over 180°). ``Δθ`` is the mean step of the tilt angles; ``D`` defaults to the volume's
thickness ``nz`` (the specimen's extent along the beam). ``k_c`` above ``√2 / 2`` (the
corner of the Fourier square) leaves only the wedge term.

**TV** is anisotropic: the mean over voxels of ``|∂z v| + |∂y v| + |∂x v|`` (forward
differences, none across the volume's border). A batch of rows ``y0:y1`` that is not the last
also takes the difference between row ``y1 − 1`` and row ``y1`` (the caller evaluates the
network on that one extra row), so batched TV adds up to the whole volume's.

All functions compute in float32 (or float64) with autocast off: half-precision inputs are
upcast, as :mod:`cryowedge.operators.autograd` does for the projector.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from cryowedge.geometry.wedge import fourier_grid_xyz, wedge_mask

__all__ = [
    "CrowtherWedgePenalty",
    "crowther_frequency",
    "crowther_wedge_weights",
    "total_variation",
]

logger = logging.getLogger(__name__)


def crowther_frequency(tilt_angles_deg: ArrayLike, diameter_px: float) -> float:
    """Crowther frequency ``1 / (D·Δθ)`` in cycles/pixel (module docstring).

    Parameters
    ----------
    tilt_angles_deg : array_like, shape (n_tilts,)
        Tilt angles in degrees (any order; at least two distinct).
    diameter_px : float
        Object thickness ``D`` in pixels (> 0).

    Returns
    -------
    float
        ``k_c`` in cycles/pixel.
    """
    angles = np.unique(np.asarray(tilt_angles_deg, dtype=np.float64).ravel())
    if angles.size < 2:
        raise ValueError(
            f"the Crowther frequency needs at least two distinct tilt angles, got "
            f"{angles.tolist()}."
        )
    if not (math.isfinite(diameter_px) and diameter_px > 0):
        raise ValueError(f"crowther diameter must be > 0 pixels, got {diameter_px!r}.")
    step = math.radians((angles[-1] - angles[0]) / (angles.size - 1))
    return 1.0 / (float(diameter_px) * step)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def crowther_wedge_weights(
    nz: int,
    nx: int,
    tilt_angles_deg: ArrayLike,
    *,
    crowther_frequency_cpp: float | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The penalty weights ``W(k)`` on the ``rfft2`` grid of an ``(nz, nx)`` XZ slice.

    Parameters
    ----------
    nz, nx : int
        Slice size in voxels.
    tilt_angles_deg : array_like
        Tilt angles in degrees (only the range is used for the wedge).
    crowther_frequency_cpp : float, optional
        ``k_c`` in cycles/pixel (None: no Crowther term, the wedge only).
    dtype, device
        Of the result.

    Returns
    -------
    torch.Tensor
        ``(nz, nx // 2 + 1)``: ``W(k)`` times the Hermitian multiplicity of each ``rfft``
        column (1 for ``kx = 0`` and, for even ``nx``, the Nyquist column; 2 otherwise), so
        that a sum over this half grid equals the sum over the full grid.
    """
    missing = wedge_mask((nz, 1, nx), tilt_angles_deg, missing=True, rfft=True,
                         dtype=torch.bool, device=device)[:, 0, :]
    kx, _, kz = fourier_grid_xyz((nz, 1, nx), rfft=True, device=device)
    radius = torch.sqrt(kx[0] ** 2 + kz[:, 0] ** 2)  # (nz, nx//2+1), cycles/pixel
    penalised = missing
    if crowther_frequency_cpp is not None:
        penalised = penalised | (radius > float(crowther_frequency_cpp))
    weight = torch.where(penalised, radius / 0.5, torch.zeros_like(radius))
    multiplicity = torch.full((nx // 2 + 1,), 2.0, dtype=torch.float64, device=radius.device)
    multiplicity[0] = 1.0
    if nx % 2 == 0:
        multiplicity[-1] = 1.0
    return (weight * multiplicity).to(dtype)


class CrowtherWedgePenalty(torch.nn.Module):
    """``R`` of the module docstring for XZ slices of size ``(nz, nx)``.

    Parameters
    ----------
    nz, nx : int
        Slice size in voxels.
    tilt_angles_deg : array_like
        Tilt angles in degrees.
    crowther_diameter_px : float, optional
        Object thickness ``D`` for the Crowther frequency (default ``nz``).
    crowther : bool
        Include the Crowther term (False: the missing wedge only).
    power : {1, 2}
        ``|V|^p``.
    device : torch.device or str, optional
        Where the weights live.

    Notes
    -----
    Call it on a ``(nz, rows, nx)`` slab (any leading batch dimensions before ``nz`` are
    not allowed; rows are the tilt-axis ``y``). It returns the mean penalty over the rows
    (``reduction="mean"``) or the ``(rows,)`` per-slice penalties (``"none"``).
    ``frequency_cpp`` holds ``k_c``.
    """

    weights: torch.Tensor

    def __init__(
        self,
        nz: int,
        nx: int,
        tilt_angles_deg: ArrayLike,
        *,
        crowther_diameter_px: float | None = None,
        crowther: bool = True,
        power: int = 1,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if power not in (1, 2):
            raise ValueError(f"power must be 1 (|V|) or 2 (|V|²), got {power!r}.")
        self.nz, self.nx, self.power = int(nz), int(nx), int(power)
        diameter = float(nz if crowther_diameter_px is None else crowther_diameter_px)
        self.frequency_cpp = crowther_frequency(tilt_angles_deg, diameter) if crowther else None
        self.register_buffer(
            "weights",
            crowther_wedge_weights(self.nz, self.nx, tilt_angles_deg,
                                   crowther_frequency_cpp=self.frequency_cpp,
                                   dtype=torch.float64, device=device),
        )

    def forward(self, slab: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if slab.ndim != 3 or slab.shape[0] != self.nz or slab.shape[2] != self.nx:
            raise ValueError(
                f"slab must be (nz, rows, nx) = ({self.nz}, rows, {self.nx}), got "
                f"{tuple(slab.shape)}."
            )
        with _no_autocast(slab.device):
            v = slab if slab.dtype in (torch.float32, torch.float64) else slab.float()
            spectrum = torch.fft.rfftn(v, dim=(0, 2), norm="ortho")  # (nz, rows, nx//2+1)
            magnitude = spectrum.abs() if self.power == 1 else spectrum.real**2 + spectrum.imag**2
            w = self.weights.to(device=v.device, dtype=v.dtype)[:, None, :]
            per_row = (w * magnitude).sum(dim=(0, 2)) / (self.nz * self.nx)
        if reduction == "none":
            return per_row
        if reduction != "mean":
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
        return per_row.mean()


def total_variation(slab: torch.Tensor, next_row: torch.Tensor | None = None) -> torch.Tensor:
    """Anisotropic TV of a ``(nz, rows, nx)`` slab, per voxel (module docstring).

    Parameters
    ----------
    slab : torch.Tensor
        ``(nz, rows, nx)``.
    next_row : torch.Tensor, optional
        ``(nz, 1, nx)`` or ``(nz, nx)``: the volume's row just after the slab (None at the
        volume's last row); its difference to the slab's last row is included.

    Returns
    -------
    torch.Tensor
        Scalar: the sum of absolute forward differences divided by ``slab.numel()``.
    """
    if slab.ndim != 3:
        raise ValueError(f"slab must be (nz, rows, nx), got shape {tuple(slab.shape)}.")
    with _no_autocast(slab.device):
        v = slab if slab.dtype in (torch.float32, torch.float64) else slab.float()
        total = (v[1:] - v[:-1]).abs().sum() + (v[:, :, 1:] - v[:, :, :-1]).abs().sum()
        total = total + (v[:, 1:] - v[:, :-1]).abs().sum()
        if next_row is not None:
            nxt = next_row.to(v.dtype).reshape(v.shape[0], 1, v.shape[2])
            total = total + (nxt - v[:, -1:]).abs().sum()
    return total / slab.numel()
