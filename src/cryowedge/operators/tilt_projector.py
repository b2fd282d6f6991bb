"""Parallel-beam single-axis tilt projector with an exact adjoint.

Every voxel along the tilt axis (``y``) shares the same interpolation weights, so ``y`` is a
batch dimension: the projection is one sparse ``(n_tilts·n_perp, nz·nx)`` matrix ``A`` times
a dense ``(nz·nx, y)`` block, and the back-projection is ``Aᵀ`` (stored as its own CSR
matrix, so both directions stream contiguous rows with no atomics). Columns are processed
in chunks that fit in cache (CPU) or in bounded memory (GPU). The model is linear
interpolation on the detector: a voxel's unit mass is split between the two nearest detector
columns. Geometry and sign conventions: docs/conventions.md.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators._sparse import csr_matmul, to_torch_csr
from cryowedge.operators.base import LinearOperator
from cryowedge.operators.detector import DetectorWarp, needs_detector_warp
from cryowedge.operators.elementary import RowForm

__all__ = ["TiltProjector", "build_projection_matrix", "chunk_columns_for"]

logger = logging.getLogger(__name__)

#: Columns (y rows × batch) per sparse product on CPU, forward / back-projection. They keep
#: the dense block of a 256² slice (256·256·32·4 B = 8 MiB) in the last-level cache;
#: measured best on 2 cores (back-projection prefers the narrower block).
_CPU_CHUNK_COLUMNS = 32
_CPU_CHUNK_COLUMNS_ADJOINT = 16
#: Upper bound on the dense working block on GPU, in elements (2**24 float32 = 64 MiB per
#: block; the input block, the product and the sparse matrix are what a call holds).
_GPU_CHUNK_ELEMENTS = 2**24

#: Slice matrices per (angles, n_perp, nz, nx, x-shifts): ``(A, Aᵀ, device copies)``. The
#: device copies, keyed by (dtype, device), are shared by every projector of that slice
#: geometry (e.g. one per streamed slab), so each is converted once.
_MATRIX_CACHE: OrderedDict[
    Any, tuple[sp.csr_matrix, sp.csr_matrix, dict[Any, tuple[torch.Tensor, torch.Tensor]]]
] = OrderedDict()
_MATRIX_CACHE_SIZE = 4


def build_projection_matrix(
    tilt_angles_deg: np.ndarray,
    n_perp: int,
    nz: int,
    nx: int,
    shifts_x_px: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Sparse matrix of one XZ slice's projection, ``(n_tilts·n_perp, nz·nx)``, float64.

    Voxel ``(z, x)`` (centred coordinates) lands at detector column
    ``u = x·cos θ + z·sin θ + shift_x`` (centred); its unit mass is split linearly between
    columns ``floor(u)`` and ``floor(u) + 1``. Row index ``t·n_perp + u``, column ``z·nx + x``.
    """
    return _build_transposed(tilt_angles_deg, n_perp, nz, nx, shifts_x_px).T.tocsr()


#: Entries ``(voxel, tilt)`` computed at once while building the matrix (bounds the
#: temporaries to ~100 MB whatever the volume).
_BUILD_BLOCK_ENTRIES = 2**21


def _build_transposed(
    tilt_angles_deg: np.ndarray,
    n_perp: int,
    nz: int,
    nx: int,
    shifts_x_px: np.ndarray | None = None,
) -> sp.csr_matrix:
    """``Aᵀ`` of :func:`build_projection_matrix` as CSR ``(nz·nx, n_tilts·n_perp)``, float64.

    Vectorised over tilts and voxels: a voxel's row of ``Aᵀ`` holds two weights per tilt,
    already in increasing column order ``t·n_perp + u``, so the CSR arrays are written
    in place (blocks of ``z`` rows bound the temporaries). Weights that fall off the
    detector are written as zeros and removed at the end.
    """
    angles = np.deg2rad(np.asarray(tilt_angles_deg, dtype=np.float64))
    n_t = angles.size
    shifts = np.zeros(n_t) if shifts_x_px is None else np.asarray(shifts_x_px, float)
    cos_t, sin_t = np.cos(angles), np.sin(angles)
    offset = n_perp // 2 + shifts  # (n_t,)
    xc = (np.arange(nx) - nx // 2).astype(np.float64)[None, :, None]
    row_base = np.arange(n_t, dtype=np.int64) * n_perp
    z_block = max(1, _BUILD_BLOCK_ENTRIES // max(1, nx * n_t))
    per_voxel = 2 * n_t
    index_dtype = np.int32 if n_t * n_perp < 2**31 else np.int64
    cols = np.empty(nz * nx * per_voxel, dtype=index_dtype)
    vals = np.empty(nz * nx * per_voxel, dtype=np.float64)
    for z0 in range(0, nz, z_block):
        z1 = min(nz, z0 + z_block)
        zc = (np.arange(z0, z1) - nz // 2).astype(np.float64)[:, None, None]
        # u[z, x, t] = x·cos θ + z·sin θ + centre + shift_x (the same arithmetic, in the
        # same order, as a per-tilt evaluation)
        u = (cos_t * xc + sin_t * zc) + offset
        i0f = np.floor(u)
        frac = u - i0f
        i0 = i0f.astype(np.int64)
        block = slice(z0 * nx * per_voxel, z1 * nx * per_voxel)
        c = cols[block].reshape(z1 - z0, nx, n_t, 2)
        v = vals[block].reshape(z1 - z0, nx, n_t, 2)
        c[..., 0] = np.clip(i0, 0, n_perp - 1) + row_base
        c[..., 1] = np.clip(i0 + 1, 0, n_perp - 1) + row_base
        v[..., 0] = np.where((i0 >= 0) & (i0 < n_perp), 1.0 - frac, 0.0)
        v[..., 1] = np.where((i0 >= -1) & (i0 < n_perp - 1), frac, 0.0)
    indptr = np.arange(0, nz * nx * per_voxel + 1, per_voxel, dtype=np.int64)
    at = sp.csr_matrix((vals, cols, indptr), shape=(nz * nx, n_t * n_perp))
    at.eliminate_zeros()
    return at


def _cached_matrices(
    angles: np.ndarray, n_perp: int, nz: int, nx: int, shifts_x: np.ndarray | None
) -> tuple[sp.csr_matrix, sp.csr_matrix, dict[Any, tuple[torch.Tensor, torch.Tensor]]]:
    key = (
        angles.tobytes(),
        n_perp,
        nz,
        nx,
        None if shifts_x is None else np.asarray(shifts_x, float).tobytes(),
    )
    if key in _MATRIX_CACHE:
        _MATRIX_CACHE.move_to_end(key)
        return _MATRIX_CACHE[key]
    at = _build_transposed(angles, n_perp, nz, nx, shifts_x)
    a = at.T.tocsr()
    _MATRIX_CACHE[key] = (a, at, {})
    while len(_MATRIX_CACHE) > _MATRIX_CACHE_SIZE:
        _MATRIX_CACHE.popitem(last=False)
    return _MATRIX_CACHE[key]


def chunk_columns_for(
    device: torch.device | str,
    n_rows: int,
    ny: int,
    *,
    adjoint: bool = False,
    requested: int | None = None,
) -> int:
    """Dense columns (tilt-axis rows) per sparse product: never more than ``ny``.

    Parameters
    ----------
    device
        Where the product runs; CPU uses cache-sized blocks, other devices a block of at most
        ``_GPU_CHUNK_ELEMENTS`` elements.
    n_rows
        Rows of the dense block, i.e. ``max(nz·nx, n_tilts·n_perp)`` of the slice product.
    ny
        Columns available (volume rows along the tilt axis).
    adjoint
        Back-projection (CPU prefers a narrower block there).
    requested
        An explicit ``chunk_columns``; still capped at ``ny``.

    Returns
    -------
    int
        The chunk width, in ``[1, ny]``.
    """
    ny = max(1, int(ny))
    if requested is not None:
        return min(ny, max(1, int(requested)))
    if torch.device(device).type == "cpu":
        return min(ny, _CPU_CHUNK_COLUMNS_ADJOINT if adjoint else _CPU_CHUNK_COLUMNS)
    return min(ny, max(1, _GPU_CHUNK_ELEMENTS // max(int(n_rows), 1)))


def _work_buffers(
    device: torch.device, dtype: torch.dtype, in_shape: tuple[int, int], n_out: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The dense input block ``(R_in, C_in, chunk)`` and, on CPU only, a reused output block.

    On CPU the product writes into one reused ``(n_out, chunk)`` buffer: a fresh allocation
    per chunk costs page faults that showed up as ~5 % of back-projection. Elsewhere (GPU)
    the caching allocator makes that moot, so no second block is held (``None``).
    """
    buf = torch.empty((*in_shape, chunk), dtype=dtype, device=device)
    out_buf = (
        torch.empty((n_out, chunk), dtype=dtype, device=device) if device.type == "cpu" else None
    )
    return buf, out_buf


class TiltProjector(LinearOperator):
    """Project a ``(z, y, x)`` volume to a ``(n_tilts, ny, nx)`` tilt series, and back.

    Parameters
    ----------
    geometry
        The tilt geometry (angles in degrees, detector shape, tilt-axis angle, shifts).
    volume_shape
        ``(nz, ny, nx)`` of the volume; ``ny`` must equal the detector length along the tilt
        axis. Default: :meth:`TiltGeometry.default_volume_shape` (thickness = ``nx``).
    chunk_columns
        Dense columns (tilt-axis rows × batch) per sparse product; the default suits the device.

    Notes
    -----
    ``forward`` accepts ``(..., nz, ny, nx)`` and returns ``(..., n_tilts, ny_det, nx_det)``;
    ``adjoint`` is its exact transpose. Any float dtype and device work; the sparse matrices
    are built once per geometry (and cached) and moved to the input's dtype/device on demand.
    Use :func:`cryowedge.operators.autograd.as_autograd` for a differentiable version.
    """

    def __init__(
        self,
        geometry: TiltGeometry,
        volume_shape: tuple[int, int, int] | None = None,
        *,
        chunk_columns: int | None = None,
    ) -> None:
        if not isinstance(geometry, TiltGeometry):
            raise TypeError(f"geometry must be a TiltGeometry, got {type(geometry).__name__}.")
        n_axis, n_perp = geometry.aligned_detector_shape
        shape = geometry.default_volume_shape() if volume_shape is None else tuple(volume_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"volume_shape must be (nz, ny, nx), got {volume_shape!r}.")
        nz, ny, nx = (int(s) for s in shape)
        if ny != n_axis:
            raise ValueError(
                f"volume y size {ny} must equal the detector length along the tilt axis "
                f"({n_axis} px for detector {geometry.detector_shape} with tilt axis at "
                f"{geometry.tilt_axis_angle_deg}°); pass volume_shape=(nz, {n_axis}, nx)."
            )
        self.geometry = geometry
        self.domain_shape = (nz, ny, nx)
        self.range_shape = geometry.tilt_series_shape
        self.aligned_shape = (geometry.n_tilts, n_axis, n_perp)
        self.chunk_columns = chunk_columns
        self.warp = DetectorWarp(geometry) if needs_detector_warp(geometry) else None
        shifts_x = None
        if self.warp is None and geometry.shifts_px is not None:
            shifts_x = geometry.shifts_px[:, 1]
        self._a, self._at, self._torch = _cached_matrices(
            geometry.tilt_angles_deg, n_perp, nz, nx, shifts_x
        )
        self._warp_weight: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    @property
    def nnz(self) -> int:
        """Stored non-zeros of the slice matrix ``A``."""
        return int(self._a.nnz)

    def _matrices(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not dtype.is_floating_point:
            raise TypeError(f"projector input must be a floating-point tensor, got {dtype}.")
        key = (dtype, device)
        if key not in self._torch:
            self._torch[key] = (
                to_torch_csr(self._a, dtype=dtype, device=device),
                to_torch_csr(self._at, dtype=dtype, device=device),
            )
        return self._torch[key]

    def _chunk(self, device: torch.device, n_rows: int, ny: int, adjoint: bool = False) -> int:
        return chunk_columns_for(device, n_rows, ny, adjoint=adjoint, requested=self.chunk_columns)

    def _slice_product(
        self, matrix: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, adjoint: bool = False
    ) -> None:
        """``dst[b, r, y, c] = Σ_k matrix[r·C + c, k] · src[b, k // K, y, k % K]``.

        ``src`` is ``(B, R_in, ny, C_in)`` and ``dst`` is ``(B, R_out, ny, C_out)``; the
        matrix acts on the flattened ``(R, C)`` plane and ``y`` is the batch dimension.
        """
        n_b, r_in, ny, c_in = src.shape
        _, r_out, _, c_out = dst.shape
        chunk = self._chunk(src.device, max(r_in * c_in, r_out * c_out), ny, adjoint)
        src_cols = src.permute(0, 2, 1, 3)  # (B, ny, R_in, C_in) view
        dst_cols = dst.permute(0, 2, 1, 3)  # (B, ny, R_out, C_out) view
        buf, out_buf = _work_buffers(src.device, src.dtype, (r_in, c_in), r_out * c_out, chunk)
        for b in range(n_b):
            for y0 in range(0, ny, chunk):
                y1 = min(ny, y0 + chunk)
                block = buf[..., : y1 - y0]
                block.copy_(src_cols[b, y0:y1].permute(1, 2, 0))  # (R_in, C_in, cols)
                dense = block.reshape(r_in * c_in, y1 - y0)
                if out_buf is not None and y1 - y0 == chunk:
                    out = csr_matmul(matrix, dense, out=out_buf)
                else:
                    out = csr_matmul(matrix, dense)
                dst_cols[b, y0:y1].copy_(out.reshape(r_out, c_out, y1 - y0).permute(2, 0, 1))

    def forward_aligned(self, volume: torch.Tensor) -> torch.Tensor:
        """Project into the aligned frame: ``(..., nz, ny, nx)`` →
        ``(..., n_tilts, ny, n_perp)``."""
        self._check_domain(volume, "volume")
        lead = volume.shape[:-3]
        vol = volume.reshape(-1, *self.domain_shape)
        a, _ = self._matrices(vol.dtype, vol.device)
        out = torch.empty((vol.shape[0], *self.aligned_shape), dtype=vol.dtype, device=vol.device)
        self._slice_product(a, vol, out)
        return out.reshape(*lead, *self.aligned_shape)

    def adjoint_aligned(self, projections: torch.Tensor) -> torch.Tensor:
        """Back-project aligned-frame ``(..., n_tilts, ny, n_perp)`` → ``(..., nz, ny, nx)``."""
        n = len(self.aligned_shape)
        if tuple(projections.shape[projections.ndim - n :]) != self.aligned_shape:
            raise ValueError(
                f"aligned projections must end in shape {self.aligned_shape}, "
                f"got {tuple(projections.shape)}."
            )
        lead = projections.shape[:-3]
        proj = projections.reshape(-1, *self.aligned_shape)
        _, at = self._matrices(proj.dtype, proj.device)
        out = torch.empty((proj.shape[0], *self.domain_shape), dtype=proj.dtype, device=proj.device)
        self._slice_product(at, proj, out, adjoint=True)
        return out.reshape(*lead, *self.domain_shape)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Project ``(..., nz, ny, nx)`` → raw tilt series ``(..., n_tilts, ny_det, nx_det)``."""
        aligned = self.forward_aligned(volume)
        return aligned if self.warp is None else self.warp.forward(aligned)

    def adjoint(self, tilt_series: torch.Tensor) -> torch.Tensor:
        """Exact transpose: raw ``(..., n_tilts, ny_det, nx_det)`` → ``(..., nz, ny, nx)``."""
        self._check_range(tilt_series, "tilt_series")
        aligned = tilt_series if self.warp is None else self.warp.adjoint(tilt_series)
        return self.adjoint_aligned(aligned)

    def to_aligned(self, tilt_series: torch.Tensor) -> torch.Tensor:
        """Resample a raw tilt series into the aligned frame (tilt axis along ``Y``).

        Exact for quarter-turn axes and integer shifts; bilinear (adjoint-normalised)
        otherwise. Used by FBP, which filters perpendicular to the axis.
        """
        self._check_range(tilt_series, "tilt_series")
        if self.warp is None:
            return tilt_series
        key = (tilt_series.dtype, tilt_series.device)
        weight = self._warp_weight.get(key)
        if weight is None:
            ones = torch.ones(self.range_shape, dtype=tilt_series.dtype, device=tilt_series.device)
            weight = self.warp.adjoint(ones).clamp_min(1e-6)
            self._warp_weight[key] = weight
        return self.warp.adjoint(tilt_series) / weight

    def subset(self, tilt_indices: np.ndarray | list[int]) -> TiltProjector:
        """The projector of a subset of tilts (block methods such as SART use one per tilt)."""
        return TiltProjector(
            self.geometry[np.asarray(tilt_indices)],
            self.domain_shape,
            chunk_columns=self.chunk_columns,
        )

    def restrict_rows(self, y0: int, y1: int) -> TiltProjector:
        """The projector of the slab of tilt-axis rows ``y0:y1``, sharing this one's matrices.

        Rows along the tilt axis are independent, so the slab operator maps a
        ``(nz, y1 − y0, nx)`` volume to a ``(n_tilts, y1 − y0, n_perp)`` tilt series with the
        same sparse slice matrices (no rebuild, the device copies are shared too), and
        ``restrict_rows(y0, y1)(x[:, y0:y1])`` equals ``self(x)[:, :, y0:y1]``. Its geometry is
        this one's with ``detector_shape = (y1 − y0, n_perp)``.

        Only for geometries without a detector warp (aligned stacks: tilt axis along ``Y``,
        no shift along it); resample others first (``to_aligned``, or the streaming
        workflow's :func:`~cryowedge.workflows.streaming.align_tilt_series`).

        Raises
        ------
        ValueError
            If the geometry needs a detector warp, or unless ``0 <= y0 < y1 <= ny``.
        """
        nz, ny, nx = self.domain_shape
        if self.warp is not None:
            raise ValueError(
                f"restrict_rows needs an aligned geometry (tilt axis along Y, no y-shifts); this "
                f"one has tilt_axis_angle_deg={self.geometry.tilt_axis_angle_deg} or y-shifts: "
                "resample the tilt series into the aligned frame first."
            )
        y0, y1 = int(y0), int(y1)
        if not 0 <= y0 < y1 <= ny:
            raise ValueError(f"rows {y0}:{y1} must satisfy 0 <= y0 < y1 <= ny = {ny}.")
        rows = y1 - y0
        slab = object.__new__(TiltProjector)
        slab.__dict__.update(self.__dict__)
        slab.geometry = self.geometry.with_(detector_shape=(rows, self.aligned_shape[2]))
        slab.domain_shape = (nz, rows, nx)
        slab.range_shape = slab.geometry.tilt_series_shape
        slab.aligned_shape = (self.aligned_shape[0], rows, self.aligned_shape[2])
        # _a, _at and the per-device torch copies (the same dict) are shared, not copied
        slab._warp_weight = {}
        return slab

    def row_form(self) -> RowForm:
        """The slice matrix and reshapes for row-action methods (ART).

        Rows are detector pixels ``(tilt, u)`` of the aligned frame, batch columns are the
        ``ny`` slices along the tilt axis. With a non-trivial detector warp (tilt axis not a
        quarter turn, or sub-pixel y-shifts) the data are first resampled into the aligned
        frame with :meth:`to_aligned`, so ART then solves the aligned-frame system.
        """
        nz, ny, nx = self.domain_shape
        n_tilts, _, n_perp = self.aligned_shape

        def to_columns(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 1).reshape(nz * nx, ny)

        def from_columns(c: torch.Tensor) -> torch.Tensor:
            return c.reshape(nz, nx, ny).permute(0, 2, 1).contiguous()

        def data_to_rows(b: torch.Tensor) -> torch.Tensor:
            aligned = self.to_aligned(b)
            return aligned.permute(0, 2, 1).reshape(n_tilts * n_perp, ny)

        return RowForm(self._a, to_columns, from_columns, data_to_rows)

    def __repr__(self) -> str:
        return f"TiltProjector(volume_shape={self.domain_shape}, geometry={self.geometry!r})"
