"""Trilinear interpolation as an explicit gather, and its exact transpose as a scatter-add.

Shared by :class:`~cryowedge.operators.rotation.Rotation3D` and
:class:`~cryowedge.operators.subvolume.SubvolumeExtract`. A sample at sub-voxel position
``p = (z, y, x)`` (voxel indices, float64) reads the 8 voxels around it with the usual
trilinear weights; corners outside the volume get weight 0 (zero outside, no clamping).
The forward gather and the adjoint scatter use the *same* indices and weights, so the
adjoint is the exact transpose of the forward map.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["trilinear_plan", "gather", "scatter_add", "chunk_elements", "Kernels"]

#: Samples per chunk (the 8 int64 indices and 8 weights of a sample take 128 B, plus the
#: gathered values): ~2**18 samples ≈ 50 MiB of temporaries on CPU, 2**20 on GPU.
_CPU_CHUNK = 2**18
_GPU_CHUNK = 2**20


def chunk_elements(device: torch.device, n_lead: int) -> int:
    """Samples per chunk so that ``n_lead`` gathered values per corner stay bounded."""
    base = _CPU_CHUNK if device.type == "cpu" else _GPU_CHUNK
    return max(1024, base // max(1, n_lead))


def trilinear_plan(
    coords_zyx: torch.Tensor, shape: tuple[int, int, int], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and weights of trilinear interpolation at ``coords_zyx``.

    Parameters
    ----------
    coords_zyx
        ``(n, 3)`` float64 sample positions in voxel indices ``(z, y, x)`` of a volume of
        ``shape``.
    shape
        ``(nz, ny, nx)`` of the sampled volume.
    dtype
        Dtype of the returned weights (the data dtype).

    Returns
    -------
    idx, weight
        ``(n, 8)`` int64 flat indices into the ``nz·ny·nx`` volume (0 where the corner lies
        outside) and ``(n, 8)`` weights (0 where outside).
    """
    nz, ny, nx = shape
    base = torch.floor(coords_zyx)
    frac = coords_zyx - base  # (n, 3) in [0, 1)
    base = base.to(torch.int64)
    idx = torch.zeros((coords_zyx.shape[0], 8), dtype=torch.int64, device=coords_zyx.device)
    weight = torch.zeros((coords_zyx.shape[0], 8), dtype=torch.float64, device=coords_zyx.device)
    k = 0
    for dz in (0, 1):
        iz = base[:, 0] + dz
        wz = frac[:, 0] if dz else 1.0 - frac[:, 0]
        ok_z = (iz >= 0) & (iz < nz)
        for dy in (0, 1):
            iy = base[:, 1] + dy
            wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
            ok_zy = ok_z & (iy >= 0) & (iy < ny)
            for dx in (0, 1):
                ix = base[:, 2] + dx
                wx = frac[:, 2] if dx else 1.0 - frac[:, 2]
                ok = ok_zy & (ix >= 0) & (ix < nx)
                idx[:, k] = torch.where(ok, (iz * ny + iy) * nx + ix, 0)
                weight[:, k] = torch.where(ok, wz * wy * wx, 0.0)
                k += 1
    return idx, weight.to(dtype)


def gather(src: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``out[l, i] = Σ_c weight[i, c] · src[l, idx[i, c]]``: ``(L, M)`` → ``(L, n)``."""
    values = src[:, idx.reshape(-1)].reshape(src.shape[0], *idx.shape)  # (L, n, 8)
    return (values * weight).sum(dim=-1)


def scatter_add(
    dst: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor, values: torch.Tensor
) -> None:
    """Transpose of :func:`gather`, in place: ``dst[l, idx[i, c]] += w[i, c] · values[l, i]``."""
    contrib = values[:, :, None] * weight  # (L, n, 8)
    dst.index_add_(1, idx.reshape(-1), contrib.reshape(dst.shape[0], -1))


class Kernels:
    """The raw (non-differentiable) forward/adjoint of an operator with ``_apply(t, adjoint=)``.

    Operators wrap it with :func:`cryowedge.operators.autograd.apply_forward` /
    ``apply_adjoint`` so that their public ``forward`` and ``adjoint`` are differentiable.
    """

    def __init__(self, op: Any) -> None:
        self.op = op
        self.domain_shape = op.domain_shape
        self.range_shape = op.range_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._apply(x, adjoint=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op._apply(y, adjoint=True)
