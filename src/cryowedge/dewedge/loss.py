"""Fitting losses: the DeepDeWedge masked Fourier loss (paper eq. 2) and Noise2Noise.

Notation (all masks on the ``rfftn`` half grid of the ``(z, y, x)`` sub-tomogram, values in
``[0, 1]``, point-symmetric ``m(k) = m(−k)`` as every wedge and sphere is):

* ``rot_measured`` — the target's measured region: the canonical measured wedge of the
  tomogram, rotated with the sub-tomogram (``wedge_mask(..., rotation_xyz=Rᵀ)`` for a crop
  rotated by ``R``; see :mod:`cryowedge.dewedge.data`);
* ``measured`` — the canonical measured wedge, i.e. what the network input kept;
* ``sphere`` — ``|k| ≤ loss_radius`` (cycles/voxel).

With the residual ``r = target − output`` and its unitary FFT ``R̂ = F r`` (``norm="ortho"``):

``term_measured = (1/N) Σ_k |rot_measured · measured · sphere · R̂(k)|²`` — the region both
halves measured (Noise2Noise denoising),

``term_wedge = (1/N) Σ_k |rot_measured · (1 − measured) · sphere · R̂(k)|²`` — the region the
target measured but the input lacks (wedge filling),

``loss = term_measured + wedge_weight · term_wedge``, averaged over the batch.

The sums run over the **full** FFT grid (``N = D·H·W`` voxels). By Parseval each term equals
the mean over voxels of ``|F⁻¹(mask · F r)|²``, the real-space mean squared magnitude of the
masked residual that the reference code computes with an inverse FFT; no inverse FFT is needed
here. On the ``rfft`` half grid the columns ``0 < kx < nx/2`` stand for two points each (``k``
and ``−k``, equal magnitudes for a real residual and point-symmetric masks) and get weight 2;
the ``kx = 0`` column and, for even ``nx``, the ``kx = nx/2`` column get weight 1. The losses
are computed in float32 whatever the autocast state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from cryowedge.geometry.wedge import fourier_grid_xyz

__all__ = [
    "rfft_weights",
    "sphere_mask",
    "residual_power",
    "masked_fourier_loss",
    "masked_fourier_terms",
    "n2n_loss",
]

logger = logging.getLogger(__name__)

#: |k| of the farthest corner of the Nyquist cube, cycles/voxel (sqrt(3)/2).
MAX_RADIUS = math.sqrt(3.0) / 2.0


def rfft_weights(shape: Sequence[int], *, device: torch.device | str | None = None) -> torch.Tensor:
    """Multiplicity of each ``rfftn`` column in the full grid: ``(1, 1, nx // 2 + 1)`` float32.

    1 for ``kx = 0`` and (even ``nx``) ``kx = nx/2``; 2 for the others.
    """
    nx = int(shape[-1])
    w = torch.full((nx // 2 + 1,), 2.0, dtype=torch.float32, device=device)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w.reshape(1, 1, -1)


def sphere_mask(
    shape: Sequence[int], radius: float, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """``|k| ≤ radius`` (cycles/voxel) on the ``rfftn`` grid of ``(z, y, x)`` ``shape``: float32
    ``(nz, ny, nx // 2 + 1)``. ``radius ≥ √3/2`` covers the whole cube."""
    r = float(radius)
    if not r > 0:
        raise ValueError(f"loss_radius must be > 0 cycles/voxel, got {radius!r}.")
    kx, ky, kz = fourier_grid_xyz(tuple(int(s) for s in shape), rfft=True, device=device)
    return ((kx**2 + ky**2 + kz**2) <= r * r + 1e-12).to(torch.float32)


def residual_power(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``w(k) |F(target − output)(k)|² / N`` on the ``rfftn`` grid, float32.

    ``output``, ``target``: ``(..., D, H, W)`` (e.g. ``(B, 1, D, H, W)``). Returns
    ``(..., D, H, W // 2 + 1)``; summing it over the last three axes gives the mean over voxels
    of ``(target − output)²`` (Parseval, with the column weights of :func:`rfft_weights`).
    """
    if output.shape != target.shape:
        raise ValueError(
            f"output and target must have the same shape, got {tuple(output.shape)} and "
            f"{tuple(target.shape)}."
        )
    shape = tuple(output.shape[-3:])
    n_vox = math.prod(shape)
    with torch.autocast(device_type=output.device.type, enabled=False):
        r = target.to(torch.float32) - output.to(torch.float32)
        spec = torch.fft.rfftn(r, dim=(-3, -2, -1), norm="ortho")
        power = spec.real.square() + spec.imag.square()
        return power * (rfft_weights(shape, device=output.device) / n_vox)


def masked_fourier_terms(
    output: torch.Tensor,
    target: torch.Tensor,
    rot_measured: torch.Tensor,
    measured: torch.Tensor,
    *,
    loss_radius: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(term_measured, term_wedge)`` of the module docstring, each ``(B,)`` float32.

    Parameters
    ----------
    output, target
        ``(B, 1, D, H, W)`` network output and target sub-tomogram (voxel-value units).
    rot_measured
        Target's measured region, ``rfftn`` layout, broadcastable to ``(B, 1, D, H, W//2+1)``
        (e.g. ``(B, 1, D, H, W//2+1)`` or ``(B, D, H, W//2+1)`` which is unsqueezed).
    measured
        Canonical measured region (what the input kept), same layout, broadcastable.
    loss_radius
        Frequencies with ``|k| > loss_radius`` (cycles/voxel) are left out.
    """
    if output.ndim != 5:
        raise ValueError(f"output must be (B, C, D, H, W), got shape {tuple(output.shape)}.")
    shape = tuple(output.shape[-3:])
    power = residual_power(output, target)  # (B, C, D, H, W')
    sphere = sphere_mask(shape, loss_radius, device=output.device)
    rot = _as_mask(rot_measured, power, "rot_measured")
    meas = _as_mask(measured, power, "measured")
    weight_t = rot * sphere
    term_measured = (power * (weight_t * meas)).sum(dim=(-4, -3, -2, -1))
    term_wedge = (power * (weight_t * (1.0 - meas))).sum(dim=(-4, -3, -2, -1))
    return term_measured, term_wedge


def masked_fourier_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    rot_measured: torch.Tensor,
    measured: torch.Tensor,
    *,
    wedge_weight: float = 2.0,
    loss_radius: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """DeepDeWedge loss ``term_measured + wedge_weight · term_wedge`` (module docstring).

    ``reduction``: ``"mean"`` over the batch (a scalar), ``"sum"``, or ``"none"`` (``(B,)``).
    Shapes as in :func:`masked_fourier_terms`.
    """
    t_meas, t_wedge = masked_fourier_terms(
        output, target, rot_measured, measured, loss_radius=loss_radius
    )
    return _reduce(t_meas + float(wedge_weight) * t_wedge, reduction)


def n2n_loss(
    output: torch.Tensor,
    target: torch.Tensor,
    *,
    loss_radius: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Noise2Noise loss: mean over voxels of ``(target − output)²`` per sample.

    With ``loss_radius`` (cycles/voxel, ``< √3/2``) only frequencies ``|k| ≤ loss_radius``
    count (by Parseval, the mean squared low-passed residual). Shapes ``(B, C, D, H, W)``;
    ``reduction`` as in :func:`masked_fourier_loss`. Computed in float32.
    """
    if output.shape != target.shape:
        raise ValueError(
            f"output and target must have the same shape, got {tuple(output.shape)} and "
            f"{tuple(target.shape)}."
        )
    if loss_radius is None or float(loss_radius) >= MAX_RADIUS:
        with torch.autocast(device_type=output.device.type, enabled=False):
            diff = target.to(torch.float32) - output.to(torch.float32)
            per = diff.square().flatten(1).sum(dim=1) / math.prod(diff.shape[-3:])
        return _reduce(per, reduction)
    power = residual_power(output, target)
    sphere = sphere_mask(tuple(output.shape[-3:]), float(loss_radius), device=output.device)
    return _reduce((power * sphere).flatten(1).sum(dim=1), reduction)


def _as_mask(mask: torch.Tensor, power: torch.Tensor, name: str) -> torch.Tensor:
    m = mask.to(device=power.device, dtype=torch.float32)
    if m.ndim == power.ndim - 1 and m.shape[0] == power.shape[0] and m.ndim == 4:
        m = m.unsqueeze(1)  # (B, D, H, W') -> (B, 1, D, H, W')
    try:
        torch.broadcast_shapes(m.shape, power.shape)
    except RuntimeError as exc:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)}, which does not broadcast to the rfft grid "
            f"{tuple(power.shape)} (build it with wedge_mask(..., rfft=True))."
        ) from exc
    return m


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
