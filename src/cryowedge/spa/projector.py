"""The single-particle blob projector ``H``: arbitrary orientations, in-plane shifts, optional CTF.

Model (research/thesis.md §2.4, §4.1; thesis eqs. 4.6–4.8)::

    b_p[j] = Σ_k c[k] (P{ϕ_s} ∗ h_p)(j − s M_p k − t_p)

* ``c`` is an ``(n, n, n)`` coefficient array in ``(z, y, x)`` order. Coefficient index ``i`` (per
  axis) sits at the centred fine-voxel coordinate ``s·(i − n // 2)``; the centre coefficient
  ``n // 2`` is the rotation centre (docs/conventions.md).
* ``R_p`` is a ``(3, 3)`` RELION ZYZ matrix acting on ``(x, y, z)`` column vectors
  (:func:`cryowedge.geometry.rotations.euler_zyz_to_matrix`): it maps a map coordinate ``r`` to the
  projection frame ``R_p r``; its first two rows are ``M_p`` (the detector plane ``M⊥``, thesis
  §13.1 fix) and its third row the projection direction. So summing
  :func:`~cryowedge.geometry.rotations.rotate_volume` ``(v, R_p)`` along ``z`` is the projection for
  ``R_p``, and a coefficient at ``r`` lands on detector column ``x = (M_p r)_0`` and row
  ``y = (M_p r)_1``.
* ``t_p = shifts_px[p] = (dy, dx)`` in pixels: the projection of the volume centre lands at
  detector pixel ``(n_det // 2 + dy, n_det // 2 + dx)`` (the same convention as tilt-series shifts).
* ``P{ϕ_s}`` is the closed-form projected Kaiser–Bessel blob (:mod:`cryowedge.spa.basis`), read
  from a look-up table in ``r²`` (linear interpolation, 2¹⁶ samples by default: error ~1e-9 of
  the peak) and splatted onto every pixel within ``s·a`` of the projected position.
* ``h_p`` is an optional per-projection CTF applied in Fourier space with periodic boundaries,
  ``b_p ← F⁻¹(C_p · F b_p)``. A real CTF array on the full grid is symmetrised
  ``(C(ω) + C(−ω))/2`` (this is exactly the real part of ``F⁻¹ C F``) and applied on the
  ``rfft2`` half grid; the adjoint applies the same filter, so ``Hᵀ`` stays the exact transpose.

The adjoint gathers the same footprints, so ``⟨Hc, b⟩ = ⟨c, Hᵀb⟩`` to rounding. Work is chunked
over projections and coefficients so that at most ``chunk_elements`` footprint samples are held
at once; everything is vectorised torch (``index_add_`` / gathers), CPU or GPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from cryowedge._arrays import to_numpy
from cryowedge.operators.base import LinearOperator
from cryowedge.spa.basis import RECONSTRUCTION_BLOB, KaiserBesselBlob, RadialTable, check_scale

__all__ = ["SpaProjector", "CtfLike", "check_rotations", "check_cubic_shape"]

logger = logging.getLogger(__name__)

CtfLike = np.ndarray | torch.Tensor | Callable[[np.ndarray], Any]
"""A CTF: ``(P, n_det, n_det)`` / ``(n_det, n_det)`` array (full grid, unshifted FFT order, as from
:func:`cryowedge.simulate.ctf.ctf_2d`), the same on the half grid ``(…, n_det // 2 + 1)``, or a
callable ``ctf(indices) -> (len(indices), n_det, n_det)`` (or half grid) computed on demand."""


def check_cubic_shape(shape: int | Sequence[int], name: str = "shape") -> int:
    """Return ``n`` for a cube ``(n, n, n)`` (or an int ``n``); raise ``ValueError`` otherwise."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        n = int(shape)
    else:
        dims = tuple(int(v) for v in shape)
        if len(dims) != 3 or len(set(dims)) != 1:
            raise ValueError(
                f"{name} must be a cube (n, n, n) in (z, y, x) order, got {dims}; pad or crop the "
                "volume to a cube."
            )
        n = dims[0]
    if n < 1:
        raise ValueError(f"{name} must have a positive size, got {shape!r}.")
    return n


def check_rotations(rotations: Any, name: str = "rotations", atol: float = 1e-6) -> np.ndarray:
    """Validate ``(P, 3, 3)`` proper rotation matrices; return them as float64 NumPy.

    Raises ``ValueError`` for a wrong shape, non-finite entries, non-orthogonal matrices or
    reflections (det < 0), naming the first bad matrix.
    """
    r = np.asarray(to_numpy(rotations), dtype=np.float64)
    if r.ndim == 2 and r.shape == (3, 3):
        r = r[None]
    if r.ndim != 3 or r.shape[1:] != (3, 3) or r.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (P, 3, 3) (one RELION ZYZ matrix per projection), got "
            f"{r.shape}; build them with cryowedge.geometry.rotations.euler_zyz_to_matrix."
        )
    if not np.isfinite(r).all():
        raise ValueError(f"{name} contains non-finite values.")
    dev = np.abs(np.einsum("pij,pkj->pik", r, r) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(r)
    bad = np.flatnonzero((dev > atol) | (det < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] is not a proper rotation (|R Rᵀ − I| = {dev[i]:.3g}, "
            f"det = {det[i]:.3g}); "
            "pass orthonormal matrices with det = +1."
        )
    return r


def _prepare_shifts(shifts_px: Any, n_proj: int) -> np.ndarray:
    if shifts_px is None:
        return np.zeros((n_proj, 2))
    t = np.asarray(to_numpy(shifts_px), dtype=np.float64)
    if t.shape != (n_proj, 2):
        raise ValueError(
            f"shifts_px must have shape (P, 2) = ({n_proj}, 2) as (dy, dx) pixels per projection, "
            f"got {t.shape}."
        )
    if not np.isfinite(t).all():
        raise ValueError("shifts_px contains non-finite values.")
    return t


def _symmetric_half_ctf(ctf: np.ndarray | torch.Tensor, n_det: int, what: str) -> torch.Tensor:
    """``(k, n, n)`` or ``(k, n, n//2+1)`` real CTF → symmetrised half grid ``(k, n, n//2+1)``."""
    c = ctf if isinstance(ctf, torch.Tensor) else torch.as_tensor(np.asarray(ctf))
    if torch.is_complex(c):
        raise ValueError(
            f"{what} must be real (a CTF, as from simulate.ctf.ctf_2d), got a complex array."
        )
    half = n_det // 2 + 1
    if c.ndim != 3 or c.shape[1] != n_det or c.shape[2] not in (n_det, half):
        raise ValueError(
            f"{what} must have shape (P, {n_det}, {n_det}) (full grid) or (P, {n_det}, {half}) "
            f"(half grid), unshifted FFT order; got {tuple(c.shape)}."
        )
    c = c.to(torch.float64)
    neg_y = (-torch.arange(n_det)) % n_det
    if c.shape[2] == n_det:
        neg_x = (-torch.arange(n_det)) % n_det
        c = 0.5 * (c + c[:, neg_y][:, :, neg_x])
        return c[:, :, :half].contiguous()
    # Half grid: only the columns kx = 0 (and Nyquist for even n) contain both ±ky.
    c = c.clone()
    cols = [0] + ([half - 1] if n_det % 2 == 0 else [])
    for col in cols:
        c[:, :, col] = 0.5 * (c[:, :, col] + c[:, neg_y, col])
    return c


class SpaProjector(LinearOperator):
    """Blob projector ``H`` for single-particle geometry (a :class:`LinearOperator`).

    Parameters
    ----------
    shape : int or (n, n, n)
        Coefficient grid (must be a cube), in (z, y, x) order.
    rotations : array_like
        ``(P, 3, 3)`` RELION ZYZ rotation matrices acting on (x, y, z) vectors (see module doc).
    shifts_px : array_like, optional
        ``(P, 2)`` in-plane shifts ``(dy, dx)`` in pixels (where the volume centre lands relative to
        the detector centre ``n_det // 2``). Default 0.
    blob : KaiserBesselBlob
        Basis function (default KBWF(a = 4, α = 19, m = 2)).
    scale : int
        Coefficient grid step ``s`` in pixels (multiscale basis ``ϕ_s = ϕ(·/s)``).
    detector_size : int, optional
        Detector ``(n_det, n_det)`` pixels; default ``s·n``.
    ctf : array, tensor or callable, optional
        Per-projection CTF (see :data:`CtfLike`); ``None`` for none.
    table_samples : int
        Samples of the projected-blob look-up table (uniform in ``r²``).
    chunk_elements : int
        Upper bound on footprint samples held at once (memory ≈ 40 bytes × this).
    dtype, device
        Working precision and device (float64 for exact tests).

    Notes
    -----
    ``forward`` maps ``(..., n, n, n) → (..., P, n_det, n_det)``; ``adjoint`` the reverse. Cost
    ``O(P · n³ · ⌈2 s a⌉²)`` per application (thesis §2.4).
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        rotations: Any,
        shifts_px: Any = None,
        *,
        blob: KaiserBesselBlob = RECONSTRUCTION_BLOB,
        scale: int = 1,
        detector_size: int | None = None,
        ctf: CtfLike | None = None,
        table_samples: int = 1 << 16,
        chunk_elements: int = 1 << 22,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.n = check_cubic_shape(shape)
        self.scale = check_scale(scale)
        rot = check_rotations(rotations)
        self.n_proj = rot.shape[0]
        self.shifts_np = _prepare_shifts(shifts_px, self.n_proj)
        self.rotations_np = rot
        if not isinstance(blob, KaiserBesselBlob):
            raise ValueError(f"blob must be a KaiserBesselBlob, got {type(blob).__name__}.")
        self.blob = blob
        n_det = self.scale * self.n if detector_size is None else detector_size
        if isinstance(n_det, bool) or not isinstance(n_det, (int, np.integer)) or n_det < 1:
            raise ValueError(
                f"detector_size must be a positive integer (pixels), got {detector_size!r}."
            )
        self.n_det = int(n_det)
        if (
            isinstance(chunk_elements, bool)
            or not isinstance(chunk_elements, (int, np.integer))
            or chunk_elements < 1
        ):
            raise ValueError(f"chunk_elements must be a positive integer, got {chunk_elements!r}.")
        self.chunk_elements = int(chunk_elements)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.domain_shape = (self.n,) * 3
        self.range_shape = (self.n_proj, self.n_det, self.n_det)

        self.table_samples = int(table_samples)
        self.table: RadialTable = blob.projected_table(
            self.scale, n_samples=self.table_samples, dtype=dtype, device=self.device
        )
        self.radius_px = self.scale * blob.radius  # footprint radius s·a (pixels)
        width = int(math.ceil(2.0 * self.radius_px))  # W = ⌈2 s a⌉ pixels per axis
        self._offsets = torch.arange(width, device=self.device, dtype=dtype)
        self.footprint_width = width

        # Geometry: M (P, 2, 3) on (x, y, z) and each projection's detector-index offset.
        self.rotations = torch.as_tensor(rot, dtype=dtype, device=self.device)
        self.shifts_px = torch.as_tensor(self.shifts_np, dtype=dtype, device=self.device)
        centre = float(self.n_det // 2)
        # (P, 2) detector (col, row) of the projected centre: n_det // 2 + (dx, dy)
        self._origin = torch.stack(
            [centre + self.shifts_px[:, 1], centre + self.shifts_px[:, 0]], dim=1
        )
        coords = self.scale * (torch.arange(self.n, device=self.device, dtype=dtype) - self.n // 2)
        zz, yy, xx = torch.meshgrid(coords, coords, coords, indexing="ij")
        self._positions = torch.stack(
            [xx.reshape(-1), yy.reshape(-1), zz.reshape(-1)], dim=0
        )  # (3, N) xyz

        # Work detector: the detector plus a margin holding every footprint (cropped after
        # splatting, zero-padded before gathering), so footprints need no bound checks.
        r_max = math.sqrt(3.0) * self.scale * (self.n // 2)  # farthest coefficient from the centre
        reach = r_max + self.radius_px + 2.0 + float(np.abs(self.shifts_np).max(initial=0.0))
        self._margin = max(0, int(math.ceil(reach - (self.n_det - 1 - self.n_det // 2))))
        self._work_size = self.n_det + 2 * self._margin
        self._work_origin = self._origin + float(self._margin)
        off = torch.arange(width, device=self.device, dtype=torch.int32)
        self._block = off[:, None] * self._work_size + off[None, :]  # (W, W) offsets rows × cols
        pc_max = self._chunks()[0]  # chunk-local flat indices stay below 2³¹ (see _chunks)
        self._work_base = (torch.arange(pc_max, device=self.device) * self._work_size**2).to(
            torch.int32
        )
        self._ctf_source = ctf
        self._ctf_half: torch.Tensor | None = None  # (P or 1, n_det, n_det//2+1), symmetrised
        self._ctf_callable: Callable[[np.ndarray], Any] | None = None
        if ctf is not None:
            if callable(ctf) and not isinstance(ctf, (np.ndarray, torch.Tensor)):
                self._ctf_callable = ctf
            else:
                arr = ctf if isinstance(ctf, torch.Tensor) else torch.as_tensor(np.asarray(ctf))
                if arr.ndim == 2:
                    arr = arr[None]
                if arr.shape[0] not in (1, self.n_proj):
                    raise ValueError(
                        f"ctf must have one image per projection ({self.n_proj}) or one shared "
                        "image, "
                        f"got shape {tuple(arr.shape)}."
                    )
                self._ctf_half = _symmetric_half_ctf(arr, self.n_det, "ctf").to(
                    dtype=dtype, device=self.device
                )

    # ------------------------------------------------------------------ helpers
    @property
    def has_ctf(self) -> bool:
        """Whether a CTF is applied."""
        return self._ctf_half is not None or self._ctf_callable is not None

    def ctf_half(self, p0: int, p1: int) -> torch.Tensor | None:
        """Symmetrised half-grid CTF ``(p1 − p0, L, L // 2 + 1)`` of projections p0:p1, or None."""
        if self._ctf_half is not None:
            if self._ctf_half.shape[0] == 1:
                return self._ctf_half.expand(p1 - p0, -1, -1)
            return self._ctf_half[p0:p1]
        if self._ctf_callable is not None:
            idx = np.arange(p0, p1)
            arr = self._ctf_callable(idx)
            c = arr if isinstance(arr, torch.Tensor) else torch.as_tensor(np.asarray(arr))
            if c.ndim == 2:
                c = c[None].expand(p1 - p0, -1, -1)
            if c.shape[0] != p1 - p0:
                raise ValueError(
                    f"the ctf callable returned {c.shape[0]} images for {p1 - p0} projections "
                    f"(indices {p0}..{p1 - 1}); it must return one per index."
                )
            return _symmetric_half_ctf(c, self.n_det, "ctf(indices)").to(
                dtype=self.dtype, device=self.device
            )
        return None

    def apply_ctf(self, images: torch.Tensor, p0: int, p1: int) -> torch.Tensor:
        """Filter ``(p1 − p0, L, L)`` images with their CTFs (self-adjoint; identity without)."""
        c = self.ctf_half(p0, p1)
        if c is None:
            return images
        f = torch.fft.rfft2(images)
        return torch.fft.irfft2(f * c, s=images.shape[-2:])

    def subset(self, indices: Sequence[int] | np.ndarray | slice) -> SpaProjector:
        """The projector of a subset of the projections (same basis, detector, CTF, dtype)."""
        idx = (
            np.arange(self.n_proj)[indices]
            if isinstance(indices, slice)
            else np.asarray(indices, dtype=np.int64)
        )
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError("indices must select at least one projection (1D list of indices).")
        ctf: CtfLike | None
        if self._ctf_half is not None:
            ctf = (
                self._ctf_half
                if self._ctf_half.shape[0] == 1
                else self._ctf_half[torch.as_tensor(idx, device=self.device)]
            )
        elif self._ctf_callable is not None:
            parent = self._ctf_callable
            ctf = lambda sub, _p=parent, _i=idx: _p(_i[np.asarray(sub)])  # noqa: E731
        else:
            ctf = None
        return SpaProjector(
            self.n,
            self.rotations_np[idx],
            self.shifts_np[idx],
            blob=self.blob,
            scale=self.scale,
            detector_size=self.n_det,
            ctf=ctf,
            table_samples=self.table_samples,
            chunk_elements=self.chunk_elements,
            dtype=self.dtype,
            device=self.device,
        )

    def _chunks(self) -> tuple[int, int]:
        """(projections, coefficients) per chunk so that pc · kc · W² ≤ chunk_elements."""
        per_pair = self.footprint_width**2
        n_coef = self.n**3
        if n_coef * per_pair <= self.chunk_elements:
            pc = min(self.n_proj, self.chunk_elements // (n_coef * per_pair))
            pc = min(pc, (2**31 - 1) // self._work_size**2)  # int32 flat indices
            return max(1, pc), n_coef
        return 1, max(1, self.chunk_elements // per_pair)

    def _footprints(self, p0: int, p1: int, k0: int, k1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat indices into the padded work detector and weights, each ``(pc, kc, W, W)``.

        The footprint of a blob projected at ``u`` is the ``W × W`` block of pixels starting at
        ``floor(u − s a) + 1`` (per axis), ``W = ⌈2 s a⌉``: it holds every pixel with
        ``|j − u| < s a``. Indices refer to the work detector of ``n_det + 2·margin`` pixels,
        which holds every footprint, so no index needs a bound check.
        """
        m = self.rotations[p0:p1, :2, :]  # (pc, 2, 3)
        u = torch.matmul(m, self._positions[:, k0:k1]) + self._work_origin[p0:p1, :, None]
        j0 = torch.floor(u - self.radius_px) + 1.0  # (pc, 2, kc) first pixel (col, row)
        d = (j0 - u)[..., None] + self._offsets  # (pc, 2, kc, W) pixel offsets from the centre
        ds = d * d * self.table.inv_step  # squared distances in table steps, per axis
        w = self.table.lookup_steps(ds[:, 1, :, :, None] + ds[:, 0, :, None, :])  # rows × cols
        nw = self._work_size
        jl = j0.to(torch.int32)  # int32 indices: the work detector chunk is far below 2³¹ pixels
        start = jl[:, 1] * nw + jl[:, 0] + self._work_base[: p1 - p0, None]
        return start[..., None, None] + self._block, w

    def _splat(self, c_flat: torch.Tensor, p0: int, p1: int, kc: int) -> torch.Tensor:
        """Bare (no CTF) projections of projections ``p0:p1``: ``(p1 − p0, n_det, n_det)``."""
        nw, mg, n = self._work_size, self._margin, self.n_det
        out = torch.zeros((p1 - p0) * nw * nw, dtype=self.dtype, device=self.device)
        for k0 in range(0, c_flat.numel(), kc):
            k1 = min(k0 + kc, c_flat.numel())
            idx, w = self._footprints(p0, p1, k0, k1)
            w.mul_(c_flat[k0:k1][None, :, None, None])
            out.index_add_(0, idx.reshape(-1), w.reshape(-1))
        return out.reshape(p1 - p0, nw, nw)[:, mg : mg + n, mg : mg + n]

    def _gather(self, images: torch.Tensor, p0: int, p1: int, kc: int, out: torch.Tensor) -> None:
        """Add the bare back-projection of ``images`` (projections ``p0:p1``) into ``out (N,)``."""
        nw, mg, n = self._work_size, self._margin, self.n_det
        if mg:
            work = torch.zeros((p1 - p0, nw, nw), dtype=self.dtype, device=self.device)
            work[:, mg : mg + n, mg : mg + n] = images
        else:
            work = images.contiguous()
        flat = work.reshape(-1)
        for k0 in range(0, out.numel(), kc):
            k1 = min(k0 + kc, out.numel())
            idx, w = self._footprints(p0, p1, k0, k1)
            vals = flat.index_select(0, idx.reshape(-1)).reshape(w.shape)
            out[k0:k1] += (vals * w).sum(dim=(0, 2, 3))

    # ------------------------------------------------------------------ LinearOperator
    def _as_tensor(self, x: Any) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        return t.to(dtype=self.dtype, device=self.device)

    def forward(self, x: Any) -> torch.Tensor:
        """Project coefficients: ``(..., n, n, n) → (..., P, n_det, n_det)``."""
        x = self._as_tensor(x)
        self._check_domain(x, "coefficients")
        batch = x.shape[:-3]
        xs = x.reshape(-1, self.n**3)
        pc, kc = self._chunks()
        out = torch.empty((xs.shape[0],) + self.range_shape, dtype=self.dtype, device=self.device)
        for b in range(xs.shape[0]):
            for p0 in range(0, self.n_proj, pc):
                p1 = min(p0 + pc, self.n_proj)
                out[b, p0:p1] = self.apply_ctf(self._splat(xs[b], p0, p1, kc), p0, p1)
        return out.reshape(batch + self.range_shape)

    def adjoint(self, y: Any) -> torch.Tensor:
        """Back-project (exact transpose): ``(..., P, n_det, n_det) → (..., n, n, n)``."""
        y = self._as_tensor(y)
        self._check_range(y, "projections")
        batch = y.shape[:-3]
        ys = y.reshape((-1,) + self.range_shape)
        pc, kc = self._chunks()
        out = torch.zeros((ys.shape[0], self.n**3), dtype=self.dtype, device=self.device)
        for b in range(ys.shape[0]):
            for p0 in range(0, self.n_proj, pc):
                p1 = min(p0 + pc, self.n_proj)
                self._gather(self.apply_ctf(ys[b, p0:p1], p0, p1), p0, p1, kc, out[b])
        return out.reshape(batch + self.domain_shape)

    def normal(self, x: Any) -> torch.Tensor:
        """Explicit ``HᵀH x`` (one forward and one adjoint, projection chunk by chunk)."""
        x = self._as_tensor(x)
        self._check_domain(x, "coefficients")
        batch = x.shape[:-3]
        xs = x.reshape(-1, self.n**3)
        pc, kc = self._chunks()
        out = torch.zeros_like(xs)
        for b in range(xs.shape[0]):
            for p0 in range(0, self.n_proj, pc):
                p1 = min(p0 + pc, self.n_proj)
                img = self._splat(xs[b], p0, p1, kc)
                if self.has_ctf:
                    img = self.apply_ctf(self.apply_ctf(img, p0, p1), p0, p1)
                self._gather(img, p0, p1, kc, out[b])
        return out.reshape(batch + self.domain_shape)

    def __repr__(self) -> str:
        return (
            f"SpaProjector(n={self.n}, P={self.n_proj}, n_det={self.n_det}, scale={self.scale}, "
            f"blob={self.blob}, ctf={'yes' if self.has_ctf else 'no'}, dtype={self.dtype}, "
            f"device={self.device})"
        )
