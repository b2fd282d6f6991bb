"""In-plane detector transform: tilt-axis rotation, per-tilt matrices and shifts.

:class:`DetectorWarp` maps a tilt series in the *aligned* frame (tilt axis along ``+Y``,
shape ``(n_tilts, n_axis, n_perp)``) to the *raw* detector frame ``(n_tilts, ny, nx)`` by
bilinear interpolation (the only resampling: per-tilt rotation, magnification and shift
are composed into one map per tilt). It is a sparse matrix, so its adjoint is the exact transpose.
For quarter-turn tilt-axis angles and integer shifts every weight is 0 or 1 and the
transform is an exact (partial) permutation about the centre pixel ``N // 2``.
See docs/conventions.md for the rotation direction.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators._sparse import csr_matmul, to_torch_csr
from cryowedge.operators.base import LinearOperator

__all__ = ["DetectorWarp", "needs_detector_warp"]


def needs_detector_warp(geometry: TiltGeometry) -> bool:
    """True unless the tilt axis is ``+Y``, no view has an in-plane matrix and no tilt is
    shifted along the axis.

    Shifts perpendicular to the axis (``dx``) are folded into the projector itself.
    """
    if geometry.tilt_axis_angle_deg != 0.0 or geometry.view_matrices is not None:
        return True
    return geometry.shifts_px is not None and bool(np.any(geometry.shifts_px[:, 0] != 0))


#: Raw pixels per vectorised block when per-tilt shifts make every tilt's pattern different;
#: bounds the temporaries (~100 B per pixel) while keeping the numpy calls long.
_BLOCK_PIXELS = 2**18


def _bilinear_rows(
    geometry: TiltGeometry, shifts: np.ndarray, to_aligned: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp rows of ``len(shifts)`` tilts at once: ``(weights, columns, counts)``.

    ``shifts`` is ``(n, 2)`` ``(dy, dx)`` raw pixels; ``to_aligned`` is ``(n, 2, 2)``, the
    inverse of each tilt's aligned → raw matrix on ``(y, x)``. Returns the kept weights and their
    within-tilt aligned column indices in CSR order (raw pixel by pixel, columns increasing),
    and the ``(n·ny·nx,)`` number of entries of each raw pixel.
    """
    ny, nx = geometry.detector_shape
    nv, nu = geometry.aligned_detector_shape
    cy = (np.arange(ny) - ny // 2).astype(np.float64)[None, :, None]
    cx = (np.arange(nx) - nx // 2).astype(np.float64)[None, None, :]
    dy = shifts[:, 0][:, None, None]
    dx = shifts[:, 1][:, None, None]
    m = to_aligned[:, :, :, None, None]  # (n, 2, 2, 1, 1)
    # raw = M @ aligned + shift  =>  aligned = M⁻¹ @ (raw - shift), on (y, x); (n, ny, nx)
    al_y = m[:, 0, 0] * (cy - dy) + m[:, 0, 1] * (cx - dx) + nv // 2
    al_x = m[:, 1, 0] * (cy - dy) + m[:, 1, 1] * (cx - dx) + nu // 2
    # Snap to integers when within rounding error, so exact cases stay exact.
    for al in (al_x, al_y):
        nearest = np.round(al)
        snap = np.abs(al - nearest) < 1e-9
        al[snap] = nearest[snap]
    j0 = np.floor(al_x)
    i0 = np.floor(al_y)
    fx = al_x - j0
    fy = al_y - i0
    j0 = j0.astype(np.int64)
    i0 = i0.astype(np.int64)
    # Neighbours in increasing column order: (i0, j0), (i0, j0+1), (i0+1, j0), (i0+1, j0+1).
    weights = np.empty((*fx.shape, 4))
    weights[..., 0] = (1.0 - fy) * (1.0 - fx)
    weights[..., 1] = (1.0 - fy) * fx
    weights[..., 2] = fy * (1.0 - fx)
    weights[..., 3] = fy * fx
    in_i = np.stack([(i0 >= 0) & (i0 < nv), (i0 >= -1) & (i0 < nv - 1)], axis=-1)
    in_j = np.stack([(j0 >= 0) & (j0 < nu), (j0 >= -1) & (j0 < nu - 1)], axis=-1)
    keep = in_i[..., [0, 0, 1, 1]] & in_j[..., [0, 1, 0, 1]] & (weights != 0)
    base = i0 * nu + j0
    columns = base[..., None] + np.array([0, 1, nu, nu + 1])
    counts = keep.reshape(-1, 4).sum(axis=1)
    return weights[keep], columns[keep], counts


def _raw_to_aligned_matrices(geometry: TiltGeometry) -> np.ndarray:
    """``(n_tilts, 2, 2)`` inverse of each tilt's aligned → raw matrix, on ``(y, x)``.

    A pure rotation is inverted by transposing (exact 0/±1 entries stay exact).
    """
    forward = geometry.aligned_to_raw_matrices()
    if geometry.view_matrices is None:
        return np.ascontiguousarray(np.swapaxes(forward, 1, 2))
    return np.linalg.inv(forward)


def build_warp_matrix(geometry: TiltGeometry) -> sp.csr_matrix:
    """SciPy CSR ``(n_tilts·ny·nx, n_tilts·n_axis·n_perp)`` bilinear warp matrix, float64.

    Row ``t·ny·nx + i·nx + j`` (raw pixel) holds the bilinear weights of its centre, rotated
    into the aligned frame, on the (up to) four aligned pixels around it; weights that fall
    outside the aligned detector are dropped (none are, without shifts, since
    :attr:`TiltGeometry.aligned_detector_shape` holds the rotated raw detector). The CSR
    arrays are written directly: without shifts or view matrices every tilt has the same
    pattern, computed once and tiled; otherwise blocks of tilts are computed by broadcasting.
    """
    n_t = geometry.n_tilts
    ny, nx = geometry.detector_shape
    nv, nu = geometry.aligned_detector_shape
    n_raw, n_aligned = ny * nx, nv * nu
    shape = (n_t * n_raw, n_t * n_aligned)
    index_dtype = np.int32 if max(shape) < 2**31 - 1 else np.int64
    to_aligned = _raw_to_aligned_matrices(geometry)
    if geometry.shifts_px is None and geometry.view_matrices is None:
        data, cols, counts = _bilinear_rows(geometry, np.zeros((1, 2)), to_aligned[:1])
        offsets = np.arange(n_t, dtype=index_dtype) * index_dtype(n_aligned)
        indices = (cols.astype(index_dtype)[None, :] + offsets[:, None]).ravel()
        data = np.tile(data, n_t)
        counts = np.tile(counts, n_t)
    else:
        step = max(1, _BLOCK_PIXELS // n_raw)
        shifts = np.zeros((n_t, 2)) if geometry.shifts_px is None else geometry.shifts_px
        parts = []
        for t0 in range(0, n_t, step):
            block = slice(t0, t0 + step)
            d, c, k = _bilinear_rows(geometry, shifts[block], to_aligned[block])
            tilt = np.repeat(np.arange(t0, t0 + len(k) // n_raw), n_raw)
            offset = np.repeat(tilt, k).astype(index_dtype) * index_dtype(n_aligned)
            c = c.astype(index_dtype) + offset
            parts.append((d, c, k))
        data = np.concatenate([p[0] for p in parts])
        indices = np.concatenate([p[1] for p in parts])
        counts = np.concatenate([p[2] for p in parts])
    indptr = np.zeros(n_t * n_raw + 1, dtype=index_dtype)
    np.cumsum(counts, out=indptr[1:])
    return sp.csr_matrix((data, indices, indptr), shape=shape)


class DetectorWarp(LinearOperator):
    """Aligned-frame tilt series → raw detector frame (rotation by the tilt-axis angle + shifts).

    Parameters
    ----------
    geometry
        The tilt geometry; uses ``tilt_axis_angle_deg``, ``view_matrices``, ``shifts_px`` and
        the detector shape.

    Notes
    -----
    ``domain_shape = (n_tilts, n_axis, n_perp)`` (aligned), ``range_shape = (n_tilts, ny, nx)``
    (raw). Leading batch dimensions are allowed.
    """

    def __init__(self, geometry: TiltGeometry) -> None:
        self.geometry = geometry
        self.domain_shape = (geometry.n_tilts, *geometry.aligned_detector_shape)
        self.range_shape = geometry.tilt_series_shape
        self._scipy = build_warp_matrix(geometry)
        self._cache: dict[tuple[torch.dtype, torch.device, bool], torch.Tensor] = {}

    def _matrix(self, dtype: torch.dtype, device: torch.device, transpose: bool) -> torch.Tensor:
        key = (dtype, device, transpose)
        if key not in self._cache:
            m = self._scipy.T.tocsr() if transpose else self._scipy
            self._cache[key] = to_torch_csr(m, dtype=dtype, device=device)
        return self._cache[key]

    def _apply(self, x: torch.Tensor, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               transpose: bool) -> torch.Tensor:
        lead = x.shape[: x.ndim - 3]
        flat = x.reshape(-1, int(np.prod(in_shape))).T.contiguous()  # (n_in, batch)
        out = csr_matmul(self._matrix(x.dtype, x.device, transpose), flat)  # (n_out, batch)
        return out.T.reshape(*lead, *out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., n_tilts, n_axis, n_perp)`` aligned → ``(..., n_tilts, ny, nx)`` raw."""
        self._check_domain(x)
        return self._apply(x, self.domain_shape, self.range_shape, transpose=False)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Exact transpose of :meth:`forward`: raw ``(..., n_tilts, ny, nx)`` → aligned."""
        self._check_range(y)
        return self._apply(y, self.range_shape, self.domain_shape, transpose=True)
