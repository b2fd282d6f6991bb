"""Rotation of a batch of volumes as a linear operator with an exact adjoint.

Matrices follow :mod:`cryowedge.geometry.rotations`: ``(3, 3)`` rotations acting on
**(x, y, z) column vectors** (centred voxel coordinates), RELION ZYZ Euler angles in degrees.
The object is rotated, ``out(R r) = in(r)``, exactly as in
:func:`~cryowedge.geometry.rotations.rotate_volume`, about the centre voxel ``N // 2`` of each
axis, with trilinear interpolation and zero outside the volume. The map is an explicit
gather (8 weighted voxels per output voxel) and the adjoint is the matching scatter-add,
so ``⟨Ax, y⟩ = ⟨x, Aᵀy⟩`` holds to rounding. Note that the adjoint of a trilinear rotation
is *not* the rotation by ``Rᵀ`` (interpolation is not orthogonal).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from cryowedge.geometry.rotations import (
    _snap_integers,
    euler_zyz_to_matrix,
    quaternion_to_matrix,
    xyz_to_zyx_matrix,
)
from cryowedge.operators import _interp
from cryowedge.operators.autograd import apply_adjoint, apply_forward
from cryowedge.operators.base import LinearOperator

__all__ = ["Rotation3D", "as_rotation_matrices"]

logger = logging.getLogger(__name__)


def as_rotation_matrices(
    matrices_xyz: ArrayLike | torch.Tensor, name: str = "matrices_xyz"
) -> np.ndarray:
    """Check and return ``(..., 3, 3)`` proper rotation matrices as float64 NumPy.

    Entries within 1e-12 of an integer are rounded, so quarter turns are exact
    permutations. Raises ``ValueError`` for a wrong shape, non-finite entries, or a
    matrix that is not a rotation (``R Rᵀ ≠ I`` beyond 1e-5, or ``det R < 0``).
    """
    if isinstance(matrices_xyz, torch.Tensor):
        matrices_xyz = matrices_xyz.detach().cpu().numpy()
    m = np.asarray(matrices_xyz, dtype=np.float64)
    if m.ndim < 2 or m.shape[-2:] != (3, 3):
        raise ValueError(
            f"{name} must have shape (..., 3, 3), got {m.shape}; "
            "build them with euler_zyz_to_matrix or random_rotations."
        )
    if not np.isfinite(m).all():
        raise ValueError(f"{name} contains non-finite entries.")
    dev = np.abs(m @ np.swapaxes(m, -1, -2) - np.eye(3)).max() if m.size else 0.0
    if dev > 1e-5 or (m.size and np.linalg.det(m).min() < 0):
        raise ValueError(
            f"{name} are not proper rotations (max |R Rᵀ − I| = {dev:.3g}, or det < 0); "
            "pass rotation matrices."
        )
    return _snap_integers(m)


class Rotation3D(LinearOperator):
    """Rotate ``(z, y, x)`` volumes by rotation matrices (trilinear, exact adjoint).

    Parameters
    ----------
    volume_shape
        ``(nz, ny, nx)`` of each volume (any sizes; the centre is ``N // 2`` per axis).
    matrices_xyz
        ``(3, 3)`` or ``(B, 3, 3)`` rotation matrices acting on **(x, y, z)** column vectors
        (:func:`~cryowedge.geometry.rotations.euler_zyz_to_matrix`, NumPy or torch). The
        object is rotated: ``out(R r) = in(r)`` for centred (x, y, z) voxel coordinates
        ``r``, i.e. ``out(r') = in(Rᵀ r')`` sampled trilinearly, zero outside.
    broadcast
        With ``B`` matrices: ``False`` (default) rotates volume ``b`` of a ``(B, nz, ny, nx)``
        stack by matrix ``b``; ``True`` rotates **one** ``(nz, ny, nx)`` volume by all ``B``
        matrices into ``(B, nz, ny, nx)`` (the adjoint then sums over ``B``).
    center
        Rotation centre ``(z, y, x)`` in voxel indices; default ``N // 2`` per axis.

    Notes
    -----
    Shapes: ``domain_shape`` is ``(nz, ny, nx)`` for one matrix or ``broadcast=True``,
    ``(B, nz, ny, nx)`` otherwise; ``range_shape`` is ``(nz, ny, nx)`` for one matrix,
    ``(B, nz, ny, nx)`` otherwise. Further leading dimensions are batch dimensions.
    Any device works; float32/float64 inputs keep their dtype, half-precision inputs are
    computed in float32 and return float32 (the policy of
    :mod:`cryowedge.operators.autograd`). Matrices and sampling positions are kept in float64
    on the input's device; the weights are cast to the data dtype. ``forward`` and
    ``adjoint`` are differentiable (the backward of one is the other).
    """

    def __init__(
        self,
        volume_shape: Sequence[int],
        matrices_xyz: ArrayLike | torch.Tensor,
        *,
        broadcast: bool = False,
        center: Sequence[float] | None = None,
    ) -> None:
        shape = tuple(int(s) for s in volume_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(
                f"volume_shape must be (nz, ny, nx) with positive sizes, got {volume_shape!r}."
            )
        m = as_rotation_matrices(matrices_xyz)
        if m.ndim not in (2, 3):
            raise ValueError(f"matrices_xyz must be (3, 3) or (B, 3, 3), got {m.shape}.")
        self.single = m.ndim == 2
        if self.single and broadcast:
            raise ValueError("broadcast=True needs a (B, 3, 3) stack of matrices, got one (3, 3).")
        self.matrices_xyz = m.reshape(-1, 3, 3)
        self.matrices_xyz.setflags(write=False)
        self.n_rotations = self.matrices_xyz.shape[0]
        if center is None:
            c = np.array([n // 2 for n in shape], dtype=np.float64)
        else:
            c = np.asarray(center, dtype=np.float64)
            if c.shape != (3,) or not np.isfinite(c).all():
                raise ValueError(f"center must be 3 finite numbers (z, y, x), got {center!r}.")
        self.center_zyx = c
        self.volume_shape = shape
        self.broadcast = bool(broadcast)
        stack = (self.n_rotations, *shape)
        self.domain_shape = shape if (self.single or self.broadcast) else stack
        self.range_shape = shape if self.single else stack
        # Source position of output voxel o (zyx indices): p = M (o - c) + c, with M = Rᵀ on
        # (z, y, x) vectors (out(r') = in(Rᵀ r')).
        self._sample = np.ascontiguousarray(
            np.swapaxes(xyz_to_zyx_matrix(self.matrices_xyz), -1, -2)
        )
        self._kernel = _interp.Kernels(self)
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_euler(
        cls,
        volume_shape: Sequence[int],
        rot_deg: ArrayLike,
        tilt_deg: ArrayLike,
        psi_deg: ArrayLike,
        **kwargs: object,
    ) -> Rotation3D:
        """From RELION ZYZ Euler angles in degrees (scalars → one matrix, ``(B,)`` → B)."""
        return cls(volume_shape, euler_zyz_to_matrix(rot_deg, tilt_deg, psi_deg), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_quaternions(
        cls, volume_shape: Sequence[int], quaternions: ArrayLike, **kwargs: object
    ) -> Rotation3D:
        """From ``(4,)`` or ``(B, 4)`` quaternions ``(w, x, y, z)`` (active rotations)."""
        return cls(volume_shape, quaternion_to_matrix(quaternions), **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ application
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate: ``(..., [B,] nz, ny, nx)`` → ``(..., [B,] nz, ny, nx)`` (see class notes)."""
        self._check_domain(x, "volume")
        return apply_forward(self._kernel, x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Exact transpose of :meth:`forward` (a trilinear scatter-add)."""
        self._check_range(y, "y")
        return apply_adjoint(self._kernel, y)

    def _plan_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = (
                torch.from_numpy(self._sample).to(device),
                torch.from_numpy(self.center_zyx).to(device),
            )
        return self._device_cache[device]

    def _apply(self, t: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        if not t.dtype.is_floating_point:
            raise TypeError(f"Rotation3D input must be a floating-point tensor, got {t.dtype}.")
        nz, ny, nx = self.volume_shape
        n_vox = nz * ny * nx
        in_shape = self.range_shape if adjoint else self.domain_shape
        out_shape = self.domain_shape if adjoint else self.range_shape
        lead = t.shape[: t.ndim - len(in_shape)]
        src = t.reshape(-1, int(np.prod(in_shape)))  # (L, [B·]V)
        n_lead = src.shape[0]
        out = torch.zeros((n_lead, int(np.prod(out_shape))), dtype=t.dtype, device=t.device)
        mats, c = self._plan_tensors(t.device)
        strides = torch.tensor([ny * nx, nx, 1], dtype=torch.int64, device=t.device)
        dims = torch.tensor([nz, ny, nx], dtype=torch.int64, device=t.device)
        total = self.n_rotations * n_vox  # samples = output voxels of the forward map
        chunk = _interp.chunk_elements(t.device, n_lead)
        volume_offset = not self.broadcast  # source voxels of rotation b live in volume b
        for k0 in range(0, total, chunk):
            k1 = min(total, k0 + chunk)
            k = torch.arange(k0, k1, dtype=torch.int64, device=t.device)
            b = k // n_vox
            v = k % n_vox
            o = ((v[:, None] // strides) % dims).to(torch.float64)  # (n, 3) zyx indices
            p = torch.einsum("nij,nj->ni", mats[b], o - c) + c  # (n, 3) source positions
            idx, w = _interp.trilinear_plan(p, self.volume_shape, t.dtype)
            if volume_offset:
                idx = idx + (b * n_vox)[:, None]
            if adjoint:
                _interp.scatter_add(out, idx, w, src[:, k0:k1])
            else:
                out[:, k0:k1] = _interp.gather(src, idx, w)
        return out.reshape(*lead, *out_shape)

    def __repr__(self) -> str:
        return (
            f"Rotation3D(volume_shape={self.volume_shape}, n_rotations={self.n_rotations}, "
            f"broadcast={self.broadcast})"
        )
