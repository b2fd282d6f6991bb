"""In-plane detector transform: tilt-axis rotation and per-tilt shifts.

:class:`DetectorWarp` maps a tilt series in the *aligned* frame (tilt axis along ``+Y``,
shape ``(n_tilts, n_axis, n_perp)``) to the *raw* detector frame ``(n_tilts, ny, nx)`` by
bilinear interpolation. It is a sparse matrix, so its adjoint is the exact transpose.
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
    """True unless the tilt axis is ``+Y`` and no tilt is shifted along it.

    Shifts perpendicular to the axis (``dx``) are folded into the projector itself.
    """
    if geometry.tilt_axis_angle_deg != 0.0:
        return True
    return geometry.shifts_px is not None and bool(np.any(geometry.shifts_px[:, 0] != 0))


def _cos_sin(angle_deg: float) -> tuple[float, float]:
    turns = angle_deg / 90.0
    k = int(round(turns))
    if abs(turns - k) < 1e-9:  # exact values so quarter turns are permutations
        return [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][k % 4]
    rad = np.deg2rad(angle_deg)
    return float(np.cos(rad)), float(np.sin(rad))


def build_warp_matrix(geometry: TiltGeometry) -> sp.csr_matrix:
    """SciPy CSR ``(n_tilts·ny·nx, n_tilts·n_axis·n_perp)`` bilinear warp matrix."""
    n_t = geometry.n_tilts
    ny, nx = geometry.detector_shape
    nv, nu = geometry.aligned_detector_shape
    cos_p, sin_p = _cos_sin(geometry.tilt_axis_angle_deg)
    shifts = geometry.shifts_px if geometry.shifts_px is not None else np.zeros((n_t, 2))
    cy = (np.arange(ny) - ny // 2)[:, None].astype(np.float64)
    cx = (np.arange(nx) - nx // 2)[None, :].astype(np.float64)
    rows, cols, vals = [], [], []
    raw_index = np.arange(ny * nx).reshape(ny, nx)
    for t in range(n_t):
        dy, dx = shifts[t]
        # raw = Rot(phi) @ aligned + shift  =>  aligned = Rot(-phi) @ (raw - shift)
        ry, rx = cy - dy, cx - dx
        al_x = cos_p * rx + sin_p * ry + nu // 2
        al_y = -sin_p * rx + cos_p * ry + nv // 2
        al_x = np.broadcast_to(al_x, (ny, nx))
        al_y = np.broadcast_to(al_y, (ny, nx))
        # Snap to integers when within rounding error, so exact cases stay exact.
        al_x = np.where(np.abs(al_x - np.round(al_x)) < 1e-9, np.round(al_x), al_x)
        al_y = np.where(np.abs(al_y - np.round(al_y)) < 1e-9, np.round(al_y), al_y)
        j0 = np.floor(al_x).astype(np.int64)
        i0 = np.floor(al_y).astype(np.int64)
        fx = al_x - j0
        fy = al_y - i0
        for di, wy in ((0, 1.0 - fy), (1, fy)):
            for dj, wx in ((0, 1.0 - fx), (1, fx)):
                i, j = i0 + di, j0 + dj
                w = wy * wx
                ok = (i >= 0) & (i < nv) & (j >= 0) & (j < nu) & (w != 0)
                rows.append(t * ny * nx + raw_index[ok])
                cols.append(t * nv * nu + i[ok] * nu + j[ok])
                vals.append(w[ok])
    rows_a = np.concatenate(rows)
    cols_a = np.concatenate(cols)
    vals_a = np.concatenate(vals)
    shape = (n_t * ny * nx, n_t * nv * nu)
    return sp.csr_matrix((vals_a, (rows_a, cols_a)), shape=shape)


class DetectorWarp(LinearOperator):
    """Aligned-frame tilt series → raw detector frame (rotation by the tilt-axis angle + shifts).

    Parameters
    ----------
    geometry
        The tilt geometry; uses ``tilt_axis_angle_deg``, ``shifts_px`` and the detector shape.

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
