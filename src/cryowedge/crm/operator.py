"""The CRM system matrix ``A_CRM`` (eq. 8 of the CRM paper) as a linear operator.

For copies ``i = 1..N`` (docs/conventions.md for axes, angles and centres)::

    b_i = P_i ( R_i (S · h) + (1 − S_i) · g_i )  =  D_i h + B_i g_i

:class:`CRMOperator` maps the stacked unknowns ``x = [h, g_1, …, g_N]`` of shape
``(N + 1, nz, ny, nx)`` to the stacked sub-tilt-series ``(N, n_tilts, ny, nx)``; its adjoint is
the exact transpose, so every solver of :mod:`cryowedge.solvers` runs on it unchanged.
``D_i`` (:meth:`CRMOperator.particle_part`) and ``B_i`` (:meth:`CRMOperator.background_part`)
are operators of their own, and :meth:`CRMOperator.matrix` / :func:`averaging_matrix` give the
explicit sparse matrices of eq. 8 and eq. 7 (Theorem 1).

Two ways to apply a copy's orientation ``R_i``, two frames for its background ``g_i``
------------------------------------------------------------------------------------
* **Folded particle** (default whenever every ``R_i`` is a rotation about the tilt axis ``y``,
  which includes the identity and every 2D problem): projecting an object rotated about ``y``
  by ``φ`` at tilt ``θ`` is exactly projecting the unrotated object at ``θ + φ``
  (:func:`y_rotation_deg` gives ``φ``). So ``P_i R_i`` is the projector of the *effective*
  angles ``θ_ij + φ_i``, with no interpolation. Angles beyond ±90° are wrapped by ∓180°,
  which reverses the detector ``x`` about the centre pixel ``nx // 2`` (``u → −u``). For
  odd ``nx`` that reversal is a permutation of the columns; for even ``nx`` it is not
  (column 0 mirrors onto column ``nx``, off the detector), so those copies are projected onto
  a detector one column wider (``nx + 1``, odd, same centre pixel), reversed exactly there,
  and cropped back to ``nx``: the result equals the linear-interpolation projector at the
  unwrapped angle (tested).
* **Rotated particle** (any other rotation, or ``fold=False``): ``R_i`` is the foundation's
  trilinear :class:`~cryowedge.operators.Rotation3D` (applied in batches of copies). The
  explicit matrices (:meth:`CRMOperator.matrix`, :meth:`CRMOperator.particle_matrix`, the 3D
  ``row_form()``, CRM-SART's per-view blocks) use the sparse matrix of the same trilinear
  plan, equal to :class:`Rotation3D` to rounding (tested).
* **Backgrounds in the copy frame** (``background_frame="copy"``, the default): ``g_i`` lives
  on the copy's own box and is projected at the copy's microscope angles ``θ_ij`` by the plain
  tilt projector, and ``S_i`` is the support carried into the copy frame (``S`` itself for a
  centred ball, otherwise the rotated mask thresholded at ½). A real sub-tilt-series, and
  :func:`~cryowedge.crm.simulate.simulate_crm_2d`'s default stain, fill the copy's square
  box; this frame holds such a background exactly. With a folded particle the copy's rows are
  ``[P(θ + φ) S, P(θ)(1 − S_i)]``: two plain projectors, still no interpolation.
* **Backgrounds in the particle frame** (``background_frame="particle"``, folded only): ``g_i``
  is stored rotated back by ``R_iᵀ`` on the particle-frame grid, ``S_i = S``, and particle and
  background share the one projector at ``θ + φ`` (the authors' simulator draws its stains
  this way). A copy-frame stain that fills the box does *not* fit this grid (the rotated
  box's corners fall off it; docs/results.md, issue 11), so this frame is for data made in it
  (:attr:`CRMData.background_frame`).

Projection
----------
Each copy's projector is the project's :class:`~cryowedge.operators.TiltProjector` slice matrix
(``row_form().matrix``; linear interpolation on the detector), with the rows of reversed
views permuted as above. The copies of one *chunk* are applied as one block-diagonal sparse
product (``y`` is the batch dimension, as in the tilt projector), so a GPU sees few large
products instead of ``N`` small ones, and memory stays bounded for hundreds of copies:
the per-chunk torch matrices are cached up to ``cache_bytes`` (least recently used first
out), and rebuilt when evicted.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import ArrayLike

from cryowedge.crm.problem import BACKGROUND_FRAMES, CRMCopy, CRMData
from cryowedge.geometry.rotations import xyz_to_zyx_matrix
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators._interp import trilinear_plan
from cryowedge.operators._sparse import csr_matmul, to_torch_csr
from cryowedge.operators.base import LinearOperator, LinearOperatorLike
from cryowedge.operators.elementary import MaskOperator, RowForm
from cryowedge.operators.rotation import Rotation3D
from cryowedge.operators.tilt_projector import TiltProjector

__all__ = [
    "CRMOperator",
    "CopyProjector",
    "SlotSelect",
    "as_crm_operator",
    "averaging_matrix",
    "crm_matrix",
    "fold_angles",
    "rotation_about_y",
    "solution_space_dim",
    "y_rotation_deg",
]

logger = logging.getLogger(__name__)

#: Cache budget (bytes) of the per-chunk sparse matrices and per-copy slice matrices, per
#: device type, when ``cache_bytes`` is not given: host memory, and half the GPU's memory.
_HOST_CACHE_BYTES = 4 << 30
_GPU_CACHE_FRACTION = 0.5
#: Copies per chunk are limited so that a chunk's dense working block stays below this many
#: elements and its sparse matrix below ``_CHUNK_NNZ`` stored entries.
_CHUNK_ELEMENTS = 1 << 24
_CHUNK_NNZ = 1 << 25
#: The explicit matrix (``matrix()``, the 3D ``row_form()``) is refused above this many
#: estimated stored entries (~2.4 GB as SciPy float64 CSR).
_MAX_MATRIX_NNZ = 2 * 10**8
_Y_ROTATION_TOL = 1e-9


# ----------------------------------------------------------------------------- geometry
def rotation_about_y(phi_deg: float) -> np.ndarray:
    """The ``(3, 3)`` rotation about ``y`` whose :func:`y_rotation_deg` is ``phi_deg``.

    ``R = [[cos φ, 0, sin φ], [0, 1, 0], [−sin φ, 0, cos φ]]``: an object rotated by ``R``
    (``out(R r) = in(r)``, :class:`~cryowedge.operators.Rotation3D`) and projected at tilt
    ``θ`` gives the projection of the unrotated object at ``θ + φ`` (degrees). It equals
    RELION's ``euler_zyz_to_matrix(0, −φ, 0)``.
    """
    a = np.deg2rad(float(phi_deg))
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def y_rotation_deg(rotation_xyz: ArrayLike | None) -> float | None:
    """The angle ``φ`` (degrees, in ``(−180, 180]``) of a rotation about ``y``; ``None`` otherwise.

    Projection along ``e_θ = (cos θ, 0, sin θ)`` of the object rotated by ``R`` is
    projection of the object along ``Rᵀ e_θ``; for a rotation about ``y``,
    ``Rᵀ e_θ = e_{θ+φ}`` with ``φ = atan2(R[0, 2], R[0, 0])``. ``None`` (identity) gives 0.
    """
    if rotation_xyz is None:
        return 0.0
    r = np.asarray(rotation_xyz, dtype=np.float64)
    off = (r[0, 1], r[1, 0], r[1, 2], r[2, 1], r[1, 1] - 1.0)
    if max(abs(v) for v in off) > _Y_ROTATION_TOL:
        return None
    phi = float(np.rad2deg(np.arctan2(r[0, 2], r[0, 0])))
    return 180.0 if phi <= -180.0 else phi


def fold_angles(effective_angles_deg: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Wrap projection angles (degrees, any value) into ``[−90, 90]``.

    Returns
    -------
    angles, reversed
        ``(n,)`` angles in ``[−90, 90]`` and a ``(n,)`` bool array: ``True`` where the angle
        was moved by ±180°, i.e. the projection is that of the wrapped angle with the
        detector ``x`` reversed about the centre pixel (``u → −u``).
    """
    a = np.asarray(effective_angles_deg, dtype=np.float64).reshape(-1)
    a = np.mod(a + 180.0, 360.0) - 180.0  # [−180, 180)
    rev = np.abs(a) > 90.0
    return np.where(a > 90.0, a - 180.0, np.where(a < -90.0, a + 180.0, a)), rev


def _slice_matrix(effective_angles_deg: np.ndarray, nz: int, nx: int) -> sp.csr_matrix:
    """``(n_tilts·nx, nz·nx)`` float64 CSR projection of one XZ slice at the effective angles.

    Row ``t·nx + u`` (detector column ``u`` of view ``t``), column ``z·nx + x``. Built from the
    project's :class:`TiltProjector` of the wrapped angles (repeated wrapped angles share one
    view of it), with the rows of reversed views mirrored about ``nx // 2``; for an even
    ``nx`` with reversed views the projector has ``nx + 1`` detector columns (module notes).
    """
    wrapped, rev = fold_angles(effective_angles_deg)
    width = nx + 1 if (rev.any() and nx % 2 == 0) else nx
    keys = np.round(wrapped, 6)  # TiltGeometry's duplicate rule
    uniq, first, view_of = np.unique(keys, return_index=True, return_inverse=True)
    geometry = TiltGeometry(wrapped[first], detector_shape=(1, width))
    full = TiltProjector(geometry, volume_shape=(nz, 1, nx)).row_form().matrix
    u = np.arange(nx)
    cols = np.where(rev[:, None], (width - 1) - u[None, :], u[None, :])  # (n_t, nx)
    rows = (view_of.reshape(-1)[:, None] * width + cols).reshape(-1)
    if width == nx and np.array_equal(rows, np.arange(rows.size)):
        return full  # plain angles: the projector's own (cached, shared) matrix, not to be modified
    return full[rows].tocsr()


def _expand_over_y(
    slice_matrix: sp.csr_matrix, n_views: int, nz: int, ny: int, nx: int
) -> sp.csr_matrix:
    """The 3D projector matrix ``(n_t·ny·nx, nz·ny·nx)`` (C order) from its slice matrix."""
    coo = slice_matrix.tocoo()
    t, u = np.divmod(coo.row.astype(np.int64), nx)
    z, x = np.divmod(coo.col.astype(np.int64), nx)
    y = np.arange(ny, dtype=np.int64)[:, None]
    rows = (t * ny * nx + u)[None, :] + y * nx
    cols = (z * ny * nx + x)[None, :] + y * nx
    vals = np.broadcast_to(coo.data, rows.shape)
    shape = (n_views * ny * nx, nz * ny * nx)
    return sp.csr_matrix((vals.ravel(), (rows.ravel(), cols.ravel())), shape=shape)


def _rotation_matrix(shape: tuple[int, int, int], rotation_xyz: np.ndarray) -> sp.csr_matrix:
    """``(V, V)`` float64 CSR of :class:`Rotation3D` for one matrix (same plan and weights)."""
    nz, ny, nx = shape
    n_vox = nz * ny * nx
    sample = xyz_to_zyx_matrix(rotation_xyz).T  # out(r') = in(Rᵀ r') on (z, y, x) vectors
    centre = np.array([nz // 2, ny // 2, nx // 2], dtype=np.float64)
    o = np.stack(np.unravel_index(np.arange(n_vox), shape), axis=1).astype(np.float64)
    p = (o - centre) @ sample.T + centre
    idx, w = trilinear_plan(torch.from_numpy(p), shape, torch.float64)
    rows = np.repeat(np.arange(n_vox), 8)
    m = sp.csr_matrix((w.numpy().ravel(), (rows, idx.numpy().ravel())), shape=(n_vox, n_vox))
    m.eliminate_zeros()
    return m


def _is_centred_ball(mask: np.ndarray) -> bool:
    """Whether ``mask`` is exactly a centred ball (``sphere_support``) of some radius."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in mask.shape], indexing="ij")
    r2 = sum(g.astype(np.float64) ** 2 for g, n in zip(grids, mask.shape, strict=True) if n > 1)
    if not mask.any():
        return False
    return bool(np.array_equal(mask, r2 <= r2[mask].max()))


def _project(a: torch.Tensor, f: torch.Tensor, n_views: int) -> torch.Tensor:
    """``(B, nz, ny, nx)`` → ``(B, n_views, ny, nx)`` by ``a`` ``(B·n_t·nx, B·nz·nx)``."""
    b, nz, ny, nx = f.shape
    cols = f.permute(0, 1, 3, 2).reshape(b * nz * nx, ny).contiguous()
    out = csr_matmul(a, cols)
    return out.reshape(b, n_views, nx, ny).permute(0, 1, 3, 2)


def _backproject(at: torch.Tensor, r: torch.Tensor, nz: int) -> torch.Tensor:
    """Transpose of :func:`_project`: ``(B, n_t, ny, nx)`` → ``(B, nz, ny, nx)``."""
    b, n_t, ny, nx = r.shape
    cols = r.permute(0, 1, 3, 2).reshape(b * n_t * nx, ny).contiguous()
    out = csr_matmul(at, cols)
    return out.reshape(b, nz, nx, ny).permute(0, 1, 3, 2)


class _ByteCache:
    """Least-recently-used cache bounded by the bytes of what it holds.

    ``evict=False`` keeps what it holds and does not store a new item that does not fit
    (counted as an eviction): under a cyclic access pattern (copies visited in turn) LRU
    evicts every item just before its reuse, while keeping the first ones saves them.
    """

    def __init__(self, max_bytes: int, *, evict: bool = True) -> None:
        self.max_bytes = int(max_bytes)
        self.evict = bool(evict)
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self.evictions = 0

    def get(self, key: Any, build: Callable[[], tuple[Any, int]]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        value, size = build()
        if size <= self.max_bytes and (self.evict or self.nbytes + size <= self.max_bytes):
            self._items[key] = (value, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, old) = self._items.popitem(last=False)
                self.nbytes -= old
                self.evictions += 1
        else:
            self.evictions += 1
        return value

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _csr_bytes(m: sp.csr_matrix) -> int:
    return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)


# ----------------------------------------------------------------------------- operators
class CopyProjector(LinearOperator):
    """Single-axis projection of a ``(nz, ny, nx)`` volume at any angles, exactly folded.

    ``forward``: ``(..., nz, ny, nx)`` → ``(..., n_tilts, ny, nx)``; ``adjoint`` is its exact
    transpose. Angles (degrees) may lie outside ``[−90, 90]``: they are wrapped as described in
    the module notes, so ``CopyProjector(θ + φ)`` is the projection of the object rotated about
    ``y`` by :func:`rotation_about_y` ``(φ)`` at tilts ``θ``, without interpolation. With angles
    in ``[−90, 90]`` it equals :class:`~cryowedge.operators.TiltProjector` (same matrix).
    It offers ``row_form()``, so :func:`~cryowedge.solvers.sart` and ``art`` run on it
    with their sparse row paths.

    Parameters
    ----------
    effective_angles_deg
        ``(n_tilts,)`` projection angles in degrees, in stack order.
    volume_shape
        ``(nz, ny, nx)``; the detector is ``(ny, nx)`` with its centre at ``nx // 2``.
    matrix
        Optional precomputed slice matrix (from :func:`_slice_matrix`).
    """

    def __init__(
        self,
        effective_angles_deg: ArrayLike,
        volume_shape: Sequence[int],
        *,
        matrix: sp.csr_matrix | None = None,
    ) -> None:
        nz, ny, nx = (int(s) for s in volume_shape)
        angles = np.asarray(effective_angles_deg, dtype=np.float64).reshape(-1)
        if angles.size == 0 or not np.isfinite(angles).all():
            raise ValueError(
                f"effective_angles_deg must be non-empty and finite, got {effective_angles_deg!r}."
            )
        self.effective_angles_deg = angles
        self.volume_shape = (nz, ny, nx)
        self.n_tilts = int(angles.size)
        self.domain_shape = (nz, ny, nx)
        self.range_shape = (self.n_tilts, ny, nx)
        self.matrix = _slice_matrix(angles, nz, nx) if matrix is None else matrix
        self._torch: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _get(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (t.dtype, t.device)
        if key not in self._torch:
            self._torch[key] = (
                to_torch_csr(self.matrix, dtype=t.dtype, device=t.device),
                to_torch_csr(self.matrix.T.tocsr(), dtype=t.dtype, device=t.device),
            )
        return self._torch[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_domain(x, "volume")
        lead = x.shape[:-3]
        a, _ = self._get(x)
        nz, ny, nx = self.volume_shape
        flat = x.reshape(-1, nz, ny, nx)
        # the lead batch joins the y batch: (nz, nx, L, ny)
        cols = flat.permute(1, 3, 0, 2).reshape(nz * nx, -1).contiguous()
        out = csr_matmul(a, cols).reshape(self.n_tilts, nx, flat.shape[0], ny).permute(2, 0, 3, 1)
        return out.reshape(*lead, *self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_range(y, "y")
        lead = y.shape[:-3]
        _, at = self._get(y)
        nz, ny, nx = self.volume_shape
        flat = y.reshape(-1, self.n_tilts, ny, nx)
        cols = flat.permute(1, 3, 0, 2).reshape(self.n_tilts * nx, -1).contiguous()
        out = csr_matmul(at, cols).reshape(nz, nx, flat.shape[0], ny).permute(2, 0, 3, 1)
        return out.reshape(*lead, *self.domain_shape)

    def row_form(self) -> RowForm:
        """Rows ``(tilt, u)`` of the slice matrix; batch columns are the ``ny`` slices."""
        nz, ny, nx = self.volume_shape
        n_t = self.n_tilts
        return RowForm(
            self.matrix,
            lambda x: x.permute(0, 2, 1).reshape(nz * nx, ny),
            lambda c: c.reshape(nz, nx, ny).permute(0, 2, 1).contiguous(),
            lambda b: b.permute(0, 2, 1).reshape(n_t * nx, ny),
        )

    def __repr__(self) -> str:
        return f"CopyProjector(volume_shape={self.volume_shape}, n_tilts={self.n_tilts})"


class SlotSelect(LinearOperator):
    """Slot ``index`` of a stacked ``(n_slots, *shape)`` array (adjoint: the others zero)."""

    def __init__(self, n_slots: int, shape: Sequence[int], index: int = 0) -> None:
        self.n_slots, self.index = int(n_slots), int(index)
        if not 0 <= self.index < self.n_slots:
            raise ValueError(f"slot index {index} outside [0, {n_slots}).")
        self.range_shape = tuple(int(s) for s in shape)
        self.domain_shape = (self.n_slots, *self.range_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_domain(x, "x")
        return x.select(x.ndim - len(self.domain_shape), self.index)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_range(y, "y")
        lead = y.shape[: y.ndim - len(self.range_shape)]
        out = y.new_zeros((*lead, *self.domain_shape))
        out.select(len(lead), self.index).copy_(y)
        return out


class CRMOperator(LinearOperator):
    """``A_CRM`` of eq. 8: particle ``h`` and backgrounds ``g_i`` → all copies' sub-tilt-series.

    Parameters
    ----------
    copies
        ``N`` :class:`~cryowedge.crm.problem.CRMCopy` (tilt angles in degrees, orientation),
        all with the same number of tilts.
    support
        ``(nz, ny, nx)`` 0/1 mask of the particle in the particle frame (a 2D ``(nz, nx)`` mask
        is read as ``(nz, 1, nx)``); it fixes the volume shape; the detector is ``(ny, nx)``.
    fold
        ``None`` (default): fold the orientations into the particle's projection angles when
        every copy is a rotation about ``y`` (module notes), else rotate. ``True`` demands
        folding (error if a copy is not a rotation about ``y``); ``False`` always uses
        :class:`Rotation3D`.
    background_frame
        ``"copy"`` (default; ``None`` means it): each background on its copy's own box,
        projected at the copy's microscope angles. ``"particle"``: on the particle-frame grid,
        through the particle's folded projector (needs folding; module notes).
    chunk_copies
        Copies per block product (default: as many as keep a chunk's dense block under
        2²⁴ elements and its sparse matrix under 2²⁵ entries).
    cache_bytes
        Budget of the cached sparse matrices per device type (default 4 GiB on the host, half
        of the GPU's memory on a GPU).

    Notes
    -----
    Domain ``(N + 1, nz, ny, nx)``: slot 0 is the particle ``h`` (particle frame; only ``S·h``
    enters), slots ``1..N`` the backgrounds (in ``background_frame``; only ``(1 − S_i)·g_i``
    enters). Range ``(N, n_tilts, ny, nx)``. Extra leading
    dimensions are batch dimensions. Any float dtype and device; the sparse matrices are
    built on first use per dtype/device. ``forward``/``adjoint`` are exact transposes.
    """

    def __init__(
        self,
        copies: Sequence[CRMCopy],
        support: ArrayLike,
        *,
        fold: bool | None = None,
        background_frame: str | None = None,
        chunk_copies: int | None = None,
        cache_bytes: int | None = None,
    ) -> None:
        frame = "copy" if background_frame is None else background_frame
        if frame not in BACKGROUND_FRAMES:
            raise ValueError(
                f"background_frame must be one of {BACKGROUND_FRAMES}, got {background_frame!r}."
            )
        copies = list(copies)
        if not copies:
            raise ValueError("CRM needs at least one copy; got an empty list of copies.")
        for i, c in enumerate(copies):
            if not isinstance(c, CRMCopy):
                raise TypeError(f"copies[{i}] must be a CRMCopy, got {type(c).__name__}.")
        n_tilts = {c.n_tilts for c in copies}
        if len(n_tilts) != 1:
            counts = [c.n_tilts for c in copies]
            raise ValueError(
                f"all copies must have the same number of tilts (one (N, n_tilts, ny, nx) "
                f"stack), got {sorted(n_tilts)} (per copy: {counts[:10]}"
                f"{' ...' if len(counts) > 10 else ''})."
            )
        mask = np.asarray(support)
        if mask.ndim == 2:
            mask = mask[:, None, :]
        if mask.ndim != 3 or min(mask.shape) < 1:
            raise ValueError(f"support must be a (nz, ny, nx) mask, got shape {np.shape(support)}.")
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            raise ValueError(
                f"support must hold only 0/1 values, got {values[:5]}; threshold it first."
            )
        mask = mask.astype(bool)
        if not mask.any():
            raise ValueError(
                "support is empty: no voxel belongs to the particle; give a larger radius or mask."
            )
        self.copies = copies
        self.n_copies = len(copies)
        self.n_tilts = n_tilts.pop()
        self.support = mask
        self.volume_shape: tuple[int, int, int] = tuple(int(s) for s in mask.shape)  # type: ignore[assignment]
        nz, ny, nx = self.volume_shape
        self.domain_shape = (self.n_copies + 1, nz, ny, nx)
        self.range_shape = (self.n_copies, self.n_tilts, ny, nx)

        phis = [y_rotation_deg(c.rotation_xyz) for c in copies]
        all_y = all(p is not None for p in phis)
        if ny == 1 and not all_y:
            bad = [i for i, p in enumerate(phis) if p is None]
            raise ValueError(
                f"a 2D problem (ny = 1) needs every copy's rotation to be about y; "
                f"copies {bad[:5]} are not."
            )
        if fold is True and not all_y:
            bad = [i for i, p in enumerate(phis) if p is None]
            raise ValueError(
                f"fold=True needs rotations about y; copies {bad[:5]} are general rotations."
            )
        self.folded = all_y if fold is None else bool(fold)
        if frame == "particle" and not self.folded:
            raise ValueError(
                "background_frame='particle' needs the folded operator (every copy a rotation "
                "about y, fold not False); use background_frame='copy' for general rotations."
            )
        self.background_frame = frame
        #: Per copy, the ``(n_tilts,)`` angles (degrees) at which ``S·h`` is projected:
        #: ``θ + φ`` when folded, the microscope's ``θ`` when rotated (``R_i`` comes first).
        self.particle_angles_deg = [
            c.tilt_angles_deg + p if self.folded else c.tilt_angles_deg.copy()
            for c, p in zip(copies, phis, strict=True)
        ]
        if frame == "particle":
            #: Per copy, the angles of its projector :meth:`slice_matrix` / :meth:`copy_projector`
            #: (the background's): ``θ + φ`` for particle-frame backgrounds, else ``θ``.
            self.effective_angles_deg = self.particle_angles_deg
            self.copy_supports: list[np.ndarray] = [mask] * self.n_copies
        else:
            self.effective_angles_deg = [c.tilt_angles_deg.copy() for c in copies]
            ball = _is_centred_ball(mask)
            self.copy_supports = [
                mask if (c.is_identity or ball) else self._carry(mask, c.rotation_xyz)
                for c in copies
            ]
        #: Whether every copy's rows are one slice matrix ``C_i`` (:meth:`combined_slice_matrix`)
        #: applied to ``S h + (1 − S) g_i`` on one grid: folded, ``S_i = S``, and either the same
        #: angles for both (particle-frame backgrounds, identity copies) or a support constant
        #: along ``y`` (then ``C_i = P(θ + φ) S + P(θ)(1 − S)``, column by column).
        constant_y = bool(np.all(mask == mask[:, :1, :]))
        self.shared_projector = self.folded and all(
            s is mask and (constant_y or np.array_equal(pa, ea))
            for s, pa, ea in zip(
                self.copy_supports, self.particle_angles_deg, self.effective_angles_deg, strict=True
            )
        )

        v_slice = nz * nx
        nnz_copy = 2 * self.n_tilts * v_slice
        if chunk_copies is None:
            chunk = min(
                self.n_copies,
                _CHUNK_ELEMENTS // max(1, nz * ny * nx),
                _CHUNK_NNZ // max(1, nnz_copy),
            )
        else:
            chunk = int(chunk_copies)
            if chunk < 1:
                raise ValueError(f"chunk_copies must be >= 1, got {chunk_copies!r}.")
        chunk = max(1, min(chunk, self.n_copies))
        self.chunks = [
            np.arange(s, min(self.n_copies, s + chunk)) for s in range(0, self.n_copies, chunk)
        ]
        self.cache_bytes = cache_bytes
        self._caches: dict[str, _ByteCache] = {}
        self._rotations: dict[int, tuple[np.ndarray, Rotation3D | None]] = {}
        self._tensors: dict[Any, torch.Tensor] = {}
        self._warned_cache = False
        logger.debug(
            "CRMOperator: %d copies, volume %s, %s, %s-frame backgrounds, %d chunk(s) of <= %d",
            self.n_copies,
            self.volume_shape,
            "folded" if self.folded else "rotated",
            self.background_frame,
            len(self.chunks),
            chunk,
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_data(cls, data: CRMData, **kwargs: Any) -> CRMOperator:
        """The operator of a :class:`~cryowedge.crm.problem.CRMData` (copies, support, and its
        ``background_frame`` unless given)."""
        if not isinstance(data, CRMData):
            raise TypeError(f"data must be a CRMData, got {type(data).__name__}.")
        kwargs.setdefault("background_frame", data.background_frame)
        return cls(data.copies, data.support, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _carry(self, mask: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        rot = Rotation3D(mask.shape, rotation)
        return (rot(torch.from_numpy(mask.astype(np.float64))) > 0.5).numpy()

    def _cache(self, device: torch.device | str) -> _ByteCache:
        kind = torch.device(device).type
        if kind not in self._caches:
            if self.cache_bytes is not None:
                budget = int(self.cache_bytes)
            elif kind == "cuda" and torch.cuda.is_available():
                budget = int(
                    _GPU_CACHE_FRACTION
                    * torch.cuda.get_device_properties(torch.device(device)).total_memory
                )
            else:
                budget = _HOST_CACHE_BYTES
            self._caches[kind] = _ByteCache(budget)
        return self._caches[kind]

    def slice_matrix(self, i: int, *, cache: bool = True) -> sp.csr_matrix:
        """Copy ``i``'s ``(n_tilts·nx, nz·nx)`` float64 slice projection matrix.

        Row ``t·nx + u`` (view ``t``, detector column ``u``), column ``z·nx + x``; the same for
        every ``y``. Kept in the host cache unless ``cache=False`` (then only read from it).
        """
        nz, _, nx = self.volume_shape
        host = self._cache("cpu")

        def build() -> tuple[sp.csr_matrix, int]:
            m = _slice_matrix(self.effective_angles_deg[i], nz, nx)
            return m, (_csr_bytes(m) if cache else host.max_bytes + 1)

        return host.get(("slice", int(i)), build)

    def particle_slice_matrix(self, i: int, *, cache: bool = True) -> sp.csr_matrix:
        """Copy ``i``'s ``(n_tilts·nx, nz·nx)`` slice matrix of the particle, ``P(θ + φ)``.

        Folded operators only (rotated ones apply ``R_i`` first; :meth:`particle_matrix`).
        The same as :meth:`slice_matrix` when the background shares the particle's projector.
        """
        if not self.folded:
            raise ValueError("particle_slice_matrix needs a folded operator; use particle_matrix.")
        if np.array_equal(self.particle_angles_deg[i], self.effective_angles_deg[i]):
            return self.slice_matrix(i, cache=cache)
        nz, _, nx = self.volume_shape
        host = self._cache("cpu")

        def build() -> tuple[sp.csr_matrix, int]:
            m = _slice_matrix(self.particle_angles_deg[i], nz, nx)
            return m, (_csr_bytes(m) if cache else host.max_bytes + 1)

        return host.get(("particle-slice", int(i)), build)

    def combined_slice_matrix(self, i: int, *, cache: bool = True) -> sp.csr_matrix:
        """Copy ``i``'s rows on ``S h + (1 − S) g_i`` as one ``(n_tilts·nx, nz·nx)`` slice matrix.

        ``C_i = P(θ + φ)·diag(S) + P(θ)·diag(1 − S)``: the particle's columns from its folded
        projector, the background's from the copy's own; with particle-frame backgrounds (or an
        identity copy) both are the same and ``C_i`` is :meth:`slice_matrix`. Needs
        :attr:`shared_projector`. A SART sweep with ``C_i`` is a SART sweep on ``[D_i, B_i]``
        (the two act on disjoint columns).
        """
        if not self.shared_projector:
            raise ValueError("combined_slice_matrix needs shared_projector (module notes).")
        if np.array_equal(self.particle_angles_deg[i], self.effective_angles_deg[i]):
            return self.slice_matrix(i, cache=cache)
        host = self._cache("cpu")

        def build() -> tuple[sp.csr_matrix, int]:
            s = self.support[:, 0, :].ravel().astype(np.float64)
            m = (
                self.particle_slice_matrix(i, cache=False) @ sp.diags(s)
                + self.slice_matrix(i, cache=False) @ sp.diags(1.0 - s)
            ).tocsr()
            m.eliminate_zeros()
            return m, (_csr_bytes(m) if cache else host.max_bytes + 1)

        return host.get(("combined-slice", int(i)), build)

    def _chunk_matrices(
        self, c: int, dtype: torch.dtype, device: torch.device, *, kind: str = "slice"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block-diagonal torch CSR of chunk ``c``'s slice matrices and its transpose: ``kind``
        ``"slice"`` (:meth:`slice_matrix`), ``"particle"`` (:meth:`particle_slice_matrix`) or
        ``"combined"`` (:meth:`combined_slice_matrix`)."""
        get = {
            "slice": self.slice_matrix,
            "particle": self.particle_slice_matrix,
            "combined": self.combined_slice_matrix,
        }[kind]

        def build() -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
            nonlocal before
            slices = [get(int(i), cache=False) for i in self.chunks[c]]
            before = cache.evictions  # uncached slice builds (same host cache) are no eviction
            block = sp.block_diag(slices, format="csr")
            a = to_torch_csr(block, dtype=dtype, device=device)
            at = to_torch_csr(block.T.tocsr(), dtype=dtype, device=device)
            size = 2 * block.nnz * (torch.empty((), dtype=dtype).element_size() + 4)
            return (a, at), size

        cache = self._cache(device)
        before = cache.evictions
        out = cache.get(("chunk", c, kind, dtype, str(device)), build)
        if cache.evictions > before and not self._warned_cache:
            self._warned_cache = True
            logger.warning(
                "CRMOperator: the copies' sparse matrices exceed cache_bytes=%d on %s and are "
                "rebuilt at every application; raise cache_bytes or use crm_sart",
                cache.max_bytes,
                torch.device(device).type,
            )
        return out

    def _chunk_rotation(self, c: int) -> tuple[np.ndarray, Rotation3D | None]:
        """Positions (within the chunk) of the non-identity copies and their batched rotation."""
        if c not in self._rotations:
            idx = self.chunks[c]
            moving = np.array(
                [k for k, i in enumerate(idx) if not self.copies[i].is_identity], dtype=np.int64
            )
            rot = None
            if not self.folded and moving.size:
                mats = np.stack([self.copies[int(idx[k])].rotation_xyz for k in moving])
                rot = Rotation3D(self.volume_shape, mats, broadcast=True)
            self._rotations[c] = (moving, rot)
        return self._rotations[c]

    def _masks(self, idx: np.ndarray, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Support ``S`` ``(nz, ny, nx)`` and backgrounds' ``1 − S_i`` ``(B, nz, ny, nx)``."""
        key = ("support", ref.dtype, str(ref.device))
        s = self._tensors.get(key)
        if s is None:
            s = self._tensors[key] = torch.from_numpy(self.support).to(
                device=ref.device, dtype=ref.dtype
            )
        if all(self.copy_supports[int(i)] is self.support for i in idx):
            return s, (1.0 - s).expand(len(idx), *self.volume_shape)
        bg = np.stack([~self.copy_supports[int(i)] for i in idx])
        return s, torch.from_numpy(bg).to(device=ref.device, dtype=ref.dtype)

    def _rotate_particle(self, c: int, sh: torch.Tensor) -> torch.Tensor:
        """``R_i (S h)`` for the copies of chunk ``c``: ``(nz, ny, nx)`` → ``(B, nz, ny, nx)``."""
        n = len(self.chunks[c])
        out = sh.expand(n, *self.volume_shape).clone()
        moving, rot = self._chunk_rotation(c)
        if rot is not None:
            out[torch.as_tensor(moving, device=sh.device)] = rot.forward(sh)
        return out

    def _rotate_particle_adjoint(self, c: int, v: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`_rotate_particle`: ``(B, nz, ny, nx)`` → ``(nz, ny, nx)`` (summed)."""
        moving, rot = self._chunk_rotation(c)
        if rot is None:
            return v.sum(dim=0)
        keep = np.setdiff1d(np.arange(v.shape[0]), moving)
        out = rot.adjoint(v[torch.as_tensor(moving, device=v.device)])
        if keep.size:
            out = out + v[torch.as_tensor(keep, device=v.device)].sum(dim=0)
        return out

    # ------------------------------------------------------------------ application
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., N + 1, nz, ny, nx)`` → ``(..., N, n_tilts, ny, nx)``: ``D_i h + B_i g_i``."""
        self._check_domain(x, "x")
        lead = x.shape[: x.ndim - 4]
        flat = x.reshape(-1, *self.domain_shape)
        out = flat.new_empty((flat.shape[0], *self.range_shape))
        for batch in range(flat.shape[0]):
            xb = flat[batch]
            for c, idx in enumerate(self.chunks):
                kind = "combined" if self.shared_projector else "slice"
                a, _ = self._chunk_matrices(c, x.dtype, x.device, kind=kind)
                s, bg = self._masks(idx, x)
                sh = xb[0] * s
                g = xb[1 + int(idx[0]) : 2 + int(idx[-1])]
                rows = slice(int(idx[0]), int(idx[-1]) + 1)
                if self.folded and not self.shared_projector:  # [P(θ+φ) S, P(θ)(1 − S_i)]
                    ap, _ = self._chunk_matrices(c, x.dtype, x.device, kind="particle")
                    part = sh.expand(len(idx), *self.volume_shape)
                    out[batch, rows] = _project(a, bg * g, self.n_tilts) + _project(
                        ap, part, self.n_tilts
                    )
                    continue
                part = (
                    sh.expand(len(idx), *self.volume_shape)
                    if self.folded
                    else self._rotate_particle(c, sh)
                )
                out[batch, rows] = _project(a, part + bg * g, self.n_tilts)
        return out.reshape(*lead, *self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Exact transpose: ``(..., N, n_tilts, ny, nx)`` → ``(..., N + 1, nz, ny, nx)``."""
        self._check_range(y, "y")
        lead = y.shape[: y.ndim - 4]
        flat = y.reshape(-1, *self.range_shape)
        out = flat.new_zeros((flat.shape[0], *self.domain_shape))
        nz = self.volume_shape[0]
        for batch in range(flat.shape[0]):
            for c, idx in enumerate(self.chunks):
                kind = "combined" if self.shared_projector else "slice"
                _, at = self._chunk_matrices(c, y.dtype, y.device, kind=kind)
                s, bg = self._masks(idx, y)
                yc = flat[batch, int(idx[0]) : int(idx[-1]) + 1]
                v = _backproject(at, yc, nz)
                if self.shared_projector:
                    particle = v.sum(dim=0)
                elif self.folded:
                    _, atp = self._chunk_matrices(c, y.dtype, y.device, kind="particle")
                    particle = _backproject(atp, yc, nz).sum(dim=0)
                else:
                    particle = self._rotate_particle_adjoint(c, v)
                out[batch, 0].add_(particle * s)
                out[batch, 1 + int(idx[0]) : 2 + int(idx[-1])] = v * bg
        return out.reshape(*lead, *self.domain_shape)

    # ------------------------------------------------------------------ parts and views
    def particle(self, x: torch.Tensor) -> torch.Tensor:
        """The particle ``S·h`` ``(nz, ny, nx)`` of a domain array ``(N + 1, nz, ny, nx)``."""
        self._check_domain(x, "x")
        return x[..., 0, :, :, :] * torch.from_numpy(self.support).to(
            device=x.device, dtype=x.dtype
        )

    def copy_projector(self, i: int, *, cache: bool = True) -> CopyProjector:
        """``P_i``: copy ``i``'s projector on volumes in its background's frame.

        Particle-frame backgrounds: the particle frame (``P_i R_i`` exactly, effective angles
        ``θ + φ``); copy-frame backgrounds: the copy frame (the copy's own tilt angles; a
        copy reconstructed with it is brought to the particle frame by
        :meth:`copy_rotation`'s inverse). ``cache=False`` leaves its matrix out of the
        operator's cache (for a one-off use such as a per-copy reconstruction).
        """
        i = self._check_copy(i)
        return CopyProjector(
            self.effective_angles_deg[i],
            self.volume_shape,
            matrix=self.slice_matrix(i, cache=cache),
        )

    def copy_system(self, i: int, *, cache: bool = True) -> tuple[CopyProjector, Rotation3D | None]:
        """How copy ``i`` is reconstructed alone (the averaging baselines).

        Returns ``(projector, rotation)``: the projector of the whole copy
        ``S h_i + (1 − S_i) g_i`` and the rotation that carries its reconstruction into the
        particle frame (apply its transpose; ``None``: already there). With
        :attr:`shared_projector` it is :meth:`combined_slice_matrix` (particle columns at
        ``θ + φ``, background columns at ``θ``; no interpolation, the copy's stain held in its
        own frame); otherwise :meth:`copy_projector` and :meth:`copy_rotation`.
        """
        i = self._check_copy(i)
        if self.shared_projector:
            m = self.combined_slice_matrix(i, cache=cache)
            return CopyProjector(self.effective_angles_deg[i], self.volume_shape, matrix=m), None
        return self.copy_projector(i, cache=cache), self.copy_rotation(i)

    def copy_rotation(self, i: int) -> Rotation3D | None:
        """``R_i`` as a :class:`Rotation3D`: from the particle frame to the frame of
        :meth:`copy_projector` (``None`` for particle-frame backgrounds or the identity)."""
        i = self._check_copy(i)
        if self.background_frame == "particle" or self.copies[i].is_identity:
            return None
        return Rotation3D(self.volume_shape, self.copies[i].rotation_xyz)

    def particle_part(self, i: int) -> LinearOperator:
        """``D_i = P_i R_i S``: ``(nz, ny, nx)`` particle → ``(n_tilts, ny, nx)``."""
        i = self._check_copy(i)
        op: LinearOperator
        if self.folded:  # P(θ + φ), no interpolation
            op = CopyProjector(
                self.particle_angles_deg[i],
                self.volume_shape,
                matrix=self.particle_slice_matrix(i),
            )
        else:
            op = self.copy_projector(i)
            rot = self.copy_rotation(i)
            if rot is not None:
                op = op @ rot
        return op @ MaskOperator(self.support)

    def background_part(self, i: int) -> LinearOperator:
        """``B_i = P_i (1 − S_i)``: ``(nz, ny, nx)`` background → ``(n_tilts, ny, nx)``."""
        i = self._check_copy(i)
        return self.copy_projector(i) @ MaskOperator(~self.copy_supports[i])

    def _check_copy(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.n_copies:
            raise IndexError(f"copy index {i} outside [0, {self.n_copies}).")
        return i

    # ------------------------------------------------------------------ explicit matrices
    def _estimated_nnz(self) -> int:
        nz, ny, nx = self.volume_shape
        per_copy = 2 * self.n_tilts * nz * ny * nx
        return self.n_copies * per_copy * (1 if self.folded else 8)

    def particle_matrix(
        self, i: int, *, support_columns: bool = False, cache: bool = True
    ) -> sp.csr_matrix:
        """``D_i = P_i R_i S`` as float64 SciPy CSR with rows ``(tilt, y, x)`` in C order.

        Columns: all ``nz·ny·nx`` voxels (zero off the support), or with ``support_columns``
        only the support voxels, in C order. ``R_i`` is the sparse matrix of the same trilinear
        plan as :class:`Rotation3D` (equal to it to rounding).
        """
        i = self._check_copy(i)
        nz, ny, nx = self.volume_shape
        m = (
            self.particle_slice_matrix(i, cache=cache)
            if self.folded
            else self.slice_matrix(i, cache=cache)
        )
        p = _expand_over_y(m, self.n_tilts, nz, ny, nx)
        sup = np.flatnonzero(self.support.ravel())
        if not (self.folded or self.copies[i].is_identity):
            right = _rotation_matrix(self.volume_shape, self.copies[i].rotation_xyz)[:, sup]
        else:
            right = sp.identity(nz * ny * nx, format="csr")[:, sup]
        if not support_columns:
            right = right @ sp.csr_matrix(
                (np.ones(sup.size), (np.arange(sup.size), sup)), shape=(sup.size, nz * ny * nx)
            )
        d = (p @ right).tocsr()
        d.eliminate_zeros()
        return d

    def copy_matrices(self, i: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """``(D_i, B_i)`` as float64 SciPy CSR, ``(n_tilts·ny·nx, nz·ny·nx)`` each (C order)."""
        i = self._check_copy(i)
        nz, ny, nx = self.volume_shape
        p = _expand_over_y(self.slice_matrix(i), self.n_tilts, nz, ny, nx)
        d = self.particle_matrix(i)
        b = p @ sp.diags((~self.copy_supports[i]).ravel().astype(np.float64))
        d, b = d.tocsr(), b.tocsr()
        d.eliminate_zeros()
        b.eliminate_zeros()
        return d, b

    def matrix(self) -> sp.csr_matrix:
        """``A_CRM`` (eq. 8) as float64 SciPy CSR ``(N·n_tilts·ny·nx, (N + 1)·nz·ny·nx)``.

        Rows and columns follow the C order of ``range_shape`` / ``domain_shape``, so
        ``matrix() @ x.ravel() == forward(x).ravel()``. Columns of ``h`` outside ``S`` and of
        ``g_i`` inside ``S_i`` are zero. Raises ``ValueError`` when the matrix would hold more
        than 2·10⁸ entries (use the matrix-free solvers then).
        """
        if self._estimated_nnz() > _MAX_MATRIX_NNZ:
            raise ValueError(
                f"the explicit CRM matrix would hold ~{self._estimated_nnz():.2g} entries (limit "
                f"{_MAX_MATRIX_NNZ:.0e}); use the matrix-free crm_sart / crm_sirt instead."
            )
        n_vox = int(np.prod(self.volume_shape))
        blocks = []
        for i in range(self.n_copies):
            d, b = self.copy_matrices(i)
            row = [d] + [None] * self.n_copies
            row[1 + i] = b
            for k in range(1, self.n_copies + 1):
                if row[k] is None:
                    row[k] = sp.csr_matrix((d.shape[0], n_vox))
            blocks.append(row)
        return sp.bmat(blocks, format="csr")

    def _slice_crm_matrix(self) -> sp.csr_matrix:
        """Slice CRM matrix ``(N·n_t·nx, (N + 1)·nz·nx)`` (folded, supports constant in ``y``)."""
        nz, _, nx = self.volume_shape
        s = self.support[:, 0, :].ravel().astype(np.float64)
        blocks = []
        for i in range(self.n_copies):
            m = self.slice_matrix(i)
            row: list[Any] = [
                sp.csr_matrix((m.shape[0], nz * nx)) for _ in range(self.n_copies + 1)
            ]
            row[0] = self.particle_slice_matrix(i) @ sp.diags(s)
            bg = 1.0 - self.copy_supports[i][:, 0, :].ravel().astype(np.float64)
            row[1 + i] = m @ sp.diags(bg)
            blocks.append(row)
        out = sp.bmat(blocks, format="csr")
        out.eliminate_zeros()
        return out

    def row_form(self) -> RowForm:
        """Rows of ``A_CRM`` for row-action methods (:func:`~cryowedge.solvers.art` = Algorithm 1).

        Rows come in the order of eq. 8: copy, tilt, detector pixel. When the problem is
        folded and the support does not change along ``y`` (every 2D problem), the matrix is
        the slice matrix of eq. 8 and the ``ny`` slices are the batch columns (each row's
        update touches only the non-zeros of ``[D_i, B_i]``). Otherwise (3D support, or general
        rotations, composed with the sparse trilinear rotation matrix) it is the full
        :meth:`matrix` with one batch column.
        """
        nz, ny, nx = self.volume_shape
        constant_y = all(
            bool(np.all(m == m[:, :1, :])) for m in [self.support, *self.copy_supports]
        )
        n = self.n_copies
        if self.folded and constant_y:
            mat = self._slice_crm_matrix()
            n_t = self.n_tilts
            return RowForm(
                mat,
                lambda x: x.permute(0, 1, 3, 2).reshape((n + 1) * nz * nx, ny),
                lambda c: c.reshape(n + 1, nz, nx, ny).permute(0, 1, 3, 2).contiguous(),
                lambda b: b.permute(0, 1, 3, 2).reshape(n * n_t * nx, ny),
            )
        domain = self.domain_shape
        return RowForm(
            self.matrix(),
            lambda x: x.reshape(-1, 1),
            lambda c: c.reshape(domain).contiguous(),
            lambda b: b.reshape(-1, 1),
        )

    def __repr__(self) -> str:
        return (
            f"CRMOperator(n_copies={self.n_copies}, n_tilts={self.n_tilts}, "
            f"volume_shape={self.volume_shape}, {'folded' if self.folded else 'rotated'}, "
            f"background_frame={self.background_frame!r})"
        )


# ----------------------------------------------------------------------------- Theorem 1
def crm_matrix(op: CRMOperator, *, reduced: bool = True) -> sp.csr_matrix:
    """``A_CRM`` (eq. 8); ``reduced`` keeps only the unknowns of the paper.

    With ``reduced`` the columns are ``h`` on the support (``n_h``) then, per copy, ``g_i`` off
    ``S_i`` (``n_gi``), as in eq. 8 where ``h`` and ``g_i`` hold only their own pixels.
    """
    m = op.matrix()
    if not reduced:
        return m
    n_vox = int(np.prod(op.volume_shape))
    keep = [np.flatnonzero(op.support.ravel())]
    keep += [
        (1 + i) * n_vox + np.flatnonzero(~op.copy_supports[i].ravel()) for i in range(op.n_copies)
    ]
    return m[:, np.concatenate(keep)].tocsr()


def averaging_matrix(op: CRMOperator) -> sp.csr_matrix:
    """``A_avg`` of eq. 7 with the paper's unknowns ``[h, h_1, g_1, …, h_N, g_N]``.

    Rows: ``D_i h_i + B_i g_i = b_i`` per copy, then ``N·h − Σ h_i = 0`` (the average). ``h``
    and ``h_i`` hold the support voxels, ``g_i`` the voxels off ``S_i``. Float64 SciPy CSR.
    """
    sup = np.flatnonzero(op.support.ravel())
    n_h = sup.size
    n = op.n_copies
    rows: list[list[Any]] = []
    eye = sp.identity(n_h, format="csr")
    last: list[Any] = [n * eye]
    for i in range(n):
        d, b = op.copy_matrices(i)
        d = d[:, sup]
        b = b[:, np.flatnonzero(~op.copy_supports[i].ravel())]
        row: list[Any] = [sp.csr_matrix((d.shape[0], n_h))]
        for k in range(n):
            if k == i:
                row += [d, b]
            else:
                nb = int((~op.copy_supports[k]).sum())
                row += [sp.csr_matrix((d.shape[0], n_h)), sp.csr_matrix((d.shape[0], nb))]
        rows.append(row)
        last += [-eye, sp.csr_matrix((n_h, b.shape[1]))]
    rows.append(last)
    return sp.bmat(rows, format="csr")


def solution_space_dim(matrix: Any) -> int:
    """``n − rank(A)``: dimension of the solution space of ``A x = b`` (dense rank, small ``A``)."""
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    return int(dense.shape[1] - np.linalg.matrix_rank(dense))


def as_crm_operator(problem: CRMOperator | CRMData | LinearOperatorLike) -> CRMOperator:
    """A :class:`CRMOperator` from itself or from a :class:`~cryowedge.crm.problem.CRMData`."""
    if isinstance(problem, CRMOperator):
        return problem
    if isinstance(problem, CRMData):
        return CRMOperator.from_data(problem)
    raise TypeError(f"expected a CRMOperator or CRMData, got {type(problem).__name__}.")
