"""Sub-volume (box) extraction at sub-voxel positions, its exact adjoint (insertion), and
centre crop/pad.

Positions are **voxel indices (z, y, x)** of the volume, floats allowed; a box of shape
``(bz, by, bx)`` is centred on its voxel ``(bz // 2, by // 2, bx // 2)`` (the project's
``N // 2`` convention, docs/conventions.md). Fractional positions are sampled trilinearly;
box voxels that fall outside the volume read zeros (no error, no clamping). Insertion is the
exact transpose of extraction: a trilinear scatter-add, so overlapping boxes add up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from cryowedge.geometry.rotations import xyz_to_zyx_matrix
from cryowedge.operators import _interp
from cryowedge.operators.autograd import apply_adjoint, apply_forward
from cryowedge.operators.base import LinearOperator
from cryowedge.operators.rotation import as_rotation_matrices

__all__ = ["SubvolumeExtract", "CenterCrop", "extract_subvolumes", "insert_subvolumes"]

logger = logging.getLogger(__name__)


def _shape3(shape: Sequence[int], name: str, what: str) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        out = ()
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name} must be {what} with positive sizes, got {shape!r}.")
    return out  # type: ignore[return-value]


class SubvolumeExtract(LinearOperator):
    """Extract ``N`` boxes from a ``(z, y, x)`` volume; the adjoint inserts them (scatter-add).

    Parameters
    ----------
    volume_shape
        ``(nz, ny, nx)`` of the volume.
    positions_zyx
        ``(N, 3)`` box centres in voxel indices ``(z, y, x)`` of the volume (floats allowed:
        sub-voxel positions are interpolated trilinearly). NumPy or torch.
    box_shape
        ``(bz, by, bx)`` of every box; box voxel ``(bz//2, by//2, bx//2)`` sits on the
        position.
    rotations_xyz
        Optional ``(3, 3)`` or ``(N, 3, 3)`` rotation matrices acting on (x, y, z) vectors
        (:mod:`cryowedge.geometry.rotations`). Box ``n`` is then the rotated neighbourhood,
        ``box(R r) = volume(position + r)`` for centred (x, y, z) box coordinates ``r``
        (the same object rotation as :class:`~cryowedge.operators.rotation.Rotation3D`), in
        one interpolation. To bring a particle that appears as ``Rotation3D(R)(reference)``
        back to the reference frame, pass ``Rᵀ``.

    Notes
    -----
    ``forward``: ``(..., nz, ny, nx)`` → ``(..., N, bz, by, bx)``; ``adjoint`` (= insertion):
    ``(..., N, bz, by, bx)`` → ``(..., nz, ny, nx)``, the exact transpose. Leading dimensions
    are batch dimensions (every volume uses the same positions). Both are differentiable and
    run on any device; positions are kept in float64; half-precision inputs are computed in
    float32 and return float32 (:mod:`cryowedge.operators.autograd`).
    """

    def __init__(
        self,
        volume_shape: Sequence[int],
        positions_zyx: ArrayLike | torch.Tensor,
        box_shape: Sequence[int],
        *,
        rotations_xyz: ArrayLike | torch.Tensor | None = None,
    ) -> None:
        self.volume_shape = _shape3(volume_shape, "volume_shape", "(nz, ny, nx)")
        self.box_shape = _shape3(box_shape, "box_shape", "(bz, by, bx)")
        if isinstance(positions_zyx, torch.Tensor):
            positions_zyx = positions_zyx.detach().cpu().numpy()
        pos = np.asarray(positions_zyx, dtype=np.float64)
        if pos.ndim == 1 and pos.shape == (3,):
            pos = pos[None]
        if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] < 1:
            raise ValueError(
                f"positions_zyx must have shape (N, 3) as (z, y, x) voxel indices, got {pos.shape}."
            )
        if not np.isfinite(pos).all():
            i = int(np.argmax(~np.isfinite(pos).all(axis=1)))
            raise ValueError(f"positions_zyx[{i}] = {pos[i].tolist()} is not finite.")
        self.positions_zyx = pos
        self.positions_zyx.setflags(write=False)
        self.n_boxes = pos.shape[0]
        self._sample: np.ndarray | None = None
        if rotations_xyz is not None:
            m = as_rotation_matrices(rotations_xyz, "rotations_xyz")
            if m.shape not in ((3, 3), (self.n_boxes, 3, 3)):
                raise ValueError(
                    f"rotations_xyz must be (3, 3) or (N, 3, 3) = ({self.n_boxes}, 3, 3), "
                    f"got {m.shape}."
                )
            m = np.broadcast_to(m, (self.n_boxes, 3, 3))
            # Source offset of box voxel o: M (o - bc) with M = Rᵀ on (z, y, x) vectors.
            self._sample = np.ascontiguousarray(np.swapaxes(xyz_to_zyx_matrix(m), -1, -2))
        self.domain_shape = self.volume_shape
        self.range_shape = (self.n_boxes, *self.box_shape)
        self._kernel = _interp.Kernels(self)
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Extract: ``(..., nz, ny, nx)`` → ``(..., N, bz, by, bx)``; zero outside the volume."""
        self._check_domain(volume, "volume")
        return apply_forward(self._kernel, volume)

    def adjoint(self, boxes: torch.Tensor) -> torch.Tensor:
        """Insert (scatter-add) ``(..., N, bz, by, bx)`` boxes → ``(..., nz, ny, nx)``."""
        self._check_range(boxes, "boxes")
        return apply_adjoint(self._kernel, boxes)

    insert = adjoint

    def _tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        if device not in self._device_cache:
            self._device_cache[device] = (
                torch.tensor(self.positions_zyx, device=device),
                None if self._sample is None else torch.from_numpy(self._sample).to(device),
            )
        return self._device_cache[device]

    def _apply(self, t: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        if not t.dtype.is_floating_point:
            raise TypeError(
                f"SubvolumeExtract input must be a floating-point tensor, got {t.dtype}."
            )
        in_shape = self.range_shape if adjoint else self.domain_shape
        out_shape = self.domain_shape if adjoint else self.range_shape
        lead = t.shape[: t.ndim - len(in_shape)]
        src = t.reshape(-1, int(np.prod(in_shape)))
        n_lead = src.shape[0]
        out = torch.zeros((n_lead, int(np.prod(out_shape))), dtype=t.dtype, device=t.device)
        pos, mats = self._tensors(t.device)
        bz, by, bx = self.box_shape
        n_box_vox = bz * by * bx
        strides = torch.tensor([by * bx, bx, 1], dtype=torch.int64, device=t.device)
        dims = torch.tensor(self.box_shape, dtype=torch.int64, device=t.device)
        bc = torch.tensor([bz // 2, by // 2, bx // 2], dtype=torch.float64, device=t.device)
        total = self.n_boxes * n_box_vox  # samples = box voxels
        chunk = _interp.chunk_elements(t.device, n_lead)
        for k0 in range(0, total, chunk):
            k1 = min(total, k0 + chunk)
            k = torch.arange(k0, k1, dtype=torch.int64, device=t.device)
            n = k // n_box_vox
            offset = ((k % n_box_vox)[:, None] // strides % dims).to(torch.float64) - bc  # (n, 3)
            if mats is not None:
                offset = torch.einsum("nij,nj->ni", mats[n], offset)
            idx, w = _interp.trilinear_plan(pos[n] + offset, self.volume_shape, t.dtype)
            if adjoint:
                _interp.scatter_add(out, idx, w, src[:, k0:k1])
            else:
                out[:, k0:k1] = _interp.gather(src, idx, w)
        return out.reshape(*lead, *out_shape)

    def __repr__(self) -> str:
        return (
            f"SubvolumeExtract(volume_shape={self.volume_shape}, n_boxes={self.n_boxes}, "
            f"box_shape={self.box_shape}, rotated={self._sample is not None})"
        )


def extract_subvolumes(
    volume: torch.Tensor,
    positions_zyx: ArrayLike | torch.Tensor,
    box_shape: Sequence[int],
    *,
    rotations_xyz: ArrayLike | torch.Tensor | None = None,
) -> torch.Tensor:
    """Boxes ``(..., N, bz, by, bx)`` cut from ``volume`` ``(..., nz, ny, nx)``.

    See :class:`SubvolumeExtract` (positions, rotations, zeros outside).
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim < 3:
        raise ValueError("volume must be a torch tensor (..., nz, ny, nx).")
    op = SubvolumeExtract(
        tuple(volume.shape[-3:]), positions_zyx, box_shape, rotations_xyz=rotations_xyz
    )
    return op(volume)


def insert_subvolumes(
    boxes: torch.Tensor,
    positions_zyx: ArrayLike | torch.Tensor,
    volume_shape: Sequence[int],
    *,
    rotations_xyz: ArrayLike | torch.Tensor | None = None,
) -> torch.Tensor:
    """Scatter-add boxes ``(..., N, bz, by, bx)`` into a zero volume ``(..., nz, ny, nx)``.

    The exact adjoint of :func:`extract_subvolumes` with the same positions (and rotations).
    """
    if not isinstance(boxes, torch.Tensor) or boxes.ndim < 4:
        raise ValueError("boxes must be a torch tensor (..., N, bz, by, bx).")
    op = SubvolumeExtract(
        volume_shape, positions_zyx, tuple(boxes.shape[-3:]), rotations_xyz=rotations_xyz
    )
    return op.adjoint(boxes)


class CenterCrop(LinearOperator):
    """Crop or zero-pad the trailing axes about the centre pixel ``N // 2``; exact adjoint.

    Parameters
    ----------
    domain_shape
        Trailing input shape, e.g. ``(nz, ny, nx)`` (any number of axes).
    range_shape
        Trailing output shape, same number of axes. Per axis a smaller size crops and a
        larger one zero-pads; input index ``n // 2`` lands on output index ``m // 2``.

    Notes
    -----
    ``forward``: ``(..., *domain_shape)`` → ``(..., *range_shape)``; ``adjoint`` is the
    transpose (pad where forward crops, crop where it pads). Plain slicing, so both are
    differentiable and run on any device/dtype.
    """

    def __init__(self, domain_shape: Sequence[int], range_shape: Sequence[int]) -> None:
        d = tuple(int(s) for s in domain_shape)
        r = tuple(int(s) for s in range_shape)
        if len(d) != len(r) or len(d) == 0 or min(d + r) < 1:
            raise ValueError(
                "CenterCrop needs two shapes with the same number of positive axes, "
                f"got {d} and {r}."
            )
        self.domain_shape, self.range_shape = d, r
        self._src = tuple(
            slice(max(0, n // 2 - m // 2), max(0, n // 2 - m // 2) + min(n, m))
            for n, m in zip(d, r, strict=True)
        )
        self._dst = tuple(
            slice(max(0, m // 2 - n // 2), max(0, m // 2 - n // 2) + min(n, m))
            for n, m in zip(d, r, strict=True)
        )

    def _move(
        self, t: torch.Tensor, shape: tuple[int, ...], src: tuple, dst: tuple
    ) -> torch.Tensor:
        out = t.new_zeros((*t.shape[: t.ndim - len(shape)], *shape))
        out[(Ellipsis, *dst)] = t[(Ellipsis, *src)]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Crop/pad ``(..., *domain_shape)`` → ``(..., *range_shape)``."""
        self._check_domain(x)
        return self._move(x, self.range_shape, self._src, self._dst)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Transpose: ``(..., *range_shape)`` → ``(..., *domain_shape)``."""
        self._check_range(y)
        return self._move(y, self.domain_shape, self._dst, self._src)

    def __repr__(self) -> str:
        return f"CenterCrop({self.domain_shape} -> {self.range_shape})"
