"""Unit quaternions for orientation recovery (thesis ch. 5, research/thesis.md §7.1).

Convention. A quaternion is ``(w, x, y, z)`` (scalar first, the order of
:func:`cryowedge.geometry.rotations.quaternion_to_matrix`). The rotation of ``q`` is the matrix
``R(q) = quaternion_to_matrix(q)`` (thesis eq. 5.3 with the typo fixes of research/thesis.md
§13.12), used *as the RELION matrix* of a projection: rows 1–2 span the detector plane, row 3
is the projection direction (docs/conventions.md). ``R(q₁ ⊗ q₂) = R(q₁) R(q₂)`` and
``R(−q) = R(q)``.

Distance. ``d_q(q_i, q_j) = 2 arccos |⟨q_i, q_j⟩|`` (radians, in ``[0, π]``) is the angle of the
relative rotation ``R_i R_jᵀ``. ``arccos`` loses half the digits near 0 and has an infinite
derivative there, so it is computed as ``4 atan2(‖q_i − s q_j‖, ‖q_i + s q_j‖)`` with
``s = sign⟨q_i, q_j⟩`` (the same value; full precision near 0 and π, and a finite gradient when
the norms are smoothed, see :func:`quaternion_distance_torch`).

Sampling. :func:`uniform_quaternions` draws Haar-uniform rotations (normalised 4D Gaussians,
canonicalised to ``w ≥ 0``). The hemisphere ``w ≥ 0`` is *all* of SO(3) (``q`` and ``−q`` are the
same rotation), so "half of SO(3)" (thesis §5.4: orientations covering half of the sphere of
projection directions, for a symmetric object or to remove the ``d ↔ −d`` mirror pairs) is the
set of rotations whose projection direction (row 3 of ``R``) has ``z ≥ 0``, i.e. RELION tilt
``≤ 90°``. It has half the Haar measure; ``half=True`` maps the other half onto it by the
measure-preserving left product with a half turn about x, so the result is uniform on it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from cryowedge.geometry.rotations import quaternion_to_matrix

__all__ = [
    "as_unit_quaternions",
    "canonical_quaternions",
    "quaternion_multiply",
    "quaternion_conjugate",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "quaternion_distance",
    "quaternion_distance_torch",
    "pairwise_quaternion_distances",
    "uniform_quaternions",
    "random_orthogonal4",
]


def as_unit_quaternions(q: ArrayLike, name: str = "quaternions") -> np.ndarray:
    """``(..., 4)`` float64 unit quaternions (normalised); ValueError for zero/non-finite rows."""
    a = np.asarray(q, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4) (w, x, y, z), got {a.shape}.")
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm == 0):
        raise ValueError(f"{name} must be finite and non-zero (w, x, y, z) rows.")
    return a / norm


def canonical_quaternions(q: ArrayLike) -> np.ndarray:
    """The representative with ``w ≥ 0`` of each ``±q`` (``(..., 4)`` unit quaternions)."""
    a = as_unit_quaternions(q)
    return np.where(a[..., :1] < 0, -a, a)


def quaternion_multiply(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` of ``(..., 4)`` quaternions (broadcast), ``R(a⊗b) = R(a)R(b)``."""
    p = np.asarray(a, dtype=np.float64)
    r = np.asarray(b, dtype=np.float64)
    w1, x1, y1, z1 = np.moveaxis(p, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(r, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def quaternion_conjugate(q: ArrayLike) -> np.ndarray:
    """``q* = (w, −x, −y, −z)``: the inverse rotation of a unit quaternion."""
    a = np.array(q, dtype=np.float64)
    a[..., 1:] *= -1.0
    return a


def matrix_to_quaternion(matrices: ArrayLike) -> np.ndarray:
    """Unit quaternions ``(..., 4)`` (``w ≥ 0``) of ``(..., 3, 3)`` rotations on (x, y, z)."""
    m = np.asarray(matrices, dtype=np.float64)
    if m.ndim < 2 or m.shape[-2:] != (3, 3):
        raise ValueError(f"matrices must have shape (..., 3, 3), got {m.shape}.")
    q = Rotation.from_matrix(m.reshape(-1, 3, 3)).as_quat(scalar_first=True)
    return canonical_quaternions(q.reshape(m.shape[:-2] + (4,)))


def quaternion_distance(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Geodesic distance ``d_q = 2 arccos|⟨a, b⟩|`` (radians, ``[0, π]``) of ``(..., 4)`` rows.

    Computed as ``4 atan2(‖a − s b‖, ‖a + s b‖)``, ``s = sign⟨a, b⟩`` (module docstring): exact
    to rounding also near 0 and π. Inputs are normalised; they broadcast.
    """
    x = as_unit_quaternions(a, "a")
    y = as_unit_quaternions(b, "b")
    x, y = np.broadcast_arrays(x, y)
    s = np.where(np.sum(x * y, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    return 4.0 * np.arctan2(
        np.linalg.norm(x - s * y, axis=-1), np.linalg.norm(x + s * y, axis=-1)
    )


def quaternion_distance_torch(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Differentiable ``d_q`` of ``(..., 4)`` tensors (normalised here), radians.

    The norms are smoothed as ``sqrt(‖·‖² + eps²)`` so that the gradient stays finite at
    ``a = ±b`` (where ``arccos`` would give an infinite one): the value there is ``≈ 4 eps``
    instead of 0.
    """
    x = a / a.norm(dim=-1, keepdim=True)
    y = b / b.norm(dim=-1, keepdim=True)
    s = torch.where((x * y).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(x.dtype)
    minus = ((x - s * y) ** 2).sum(-1)
    plus = ((x + s * y) ** 2).sum(-1)
    e2 = eps * eps
    return 4.0 * torch.atan2(torch.sqrt(minus + e2), torch.sqrt(plus + e2))


def pairwise_quaternion_distances(q: ArrayLike) -> np.ndarray:
    """``(P, P)`` matrix of ``d_q`` (radians) between all rows of ``(P, 4)`` quaternions."""
    a = as_unit_quaternions(q)
    if a.ndim != 2:
        raise ValueError(f"quaternions must be a (P, 4) array, got shape {a.shape}.")
    dot = np.clip(np.abs(a @ a.T), 0.0, 1.0)
    d = 2.0 * np.arccos(dot)
    # refine the small distances (arccos is inaccurate near 1) with the atan2 form
    small = d < 1e-2
    if np.any(small):
        i, j = np.nonzero(small)
        d[i, j] = quaternion_distance(a[i], a[j])
    np.fill_diagonal(d, 0.0)
    return d


#: Half turn about x: left-multiplying by it negates rows 2–3 of R, i.e. tilt -> 180° − tilt.
_HALF_TURN_X = np.array([0.0, 1.0, 0.0, 0.0])


def uniform_quaternions(
    n: int, rng: np.random.Generator | int | None = None, *, half: bool = False,
    cyclic: int = 1,
) -> np.ndarray:
    """``(n, 4)`` Haar-uniform unit quaternions, ``w ≥ 0`` (see the module docstring).

    Parameters
    ----------
    n : int
        Number of samples (>= 1).
    rng : numpy.random.Generator or int or None
        Random generator or seed.
    half : bool
        Uniform on the half of SO(3) whose projection direction has ``z ≥ 0`` (RELION tilt
        ``≤ 90°``) instead of all of SO(3).
    cyclic : int
        For a particle with ``C_cyclic`` symmetry about the map's z axis: restrict the RELION
        ``rot`` angle to ``[0°, 360°/cyclic)``, an asymmetric unit (the fix the thesis proposes
        for symmetric particles, §7.3). ``R(rot) Rz(360°/cyclic)`` images the symmetric map
        like ``R(rot)``, and Haar measure is uniform in ``rot``, so folding ``rot`` keeps the
        samples uniform on the unit. 1 = no restriction.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of orientations), got {n!r}.")
    if isinstance(cyclic, bool) or not isinstance(cyclic, (int, np.integer)) or cyclic < 1:
        raise ValueError(f"cyclic must be a positive integer (C_n order), got {cyclic!r}.")
    gen = np.random.default_rng(rng)
    q = gen.standard_normal((int(n), 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    if half:
        r33 = quaternion_to_matrix(q)[:, 2, 2]
        flip = r33 < 0
        q[flip] = quaternion_multiply(_HALF_TURN_X, q[flip])
    if cyclic > 1:
        from cryowedge.geometry.rotations import euler_zyz_to_matrix, matrix_to_euler_zyz

        rot, tilt, psi = matrix_to_euler_zyz(quaternion_to_matrix(q))
        rot = np.mod(rot, 360.0 / cyclic)
        q = Rotation.from_matrix(euler_zyz_to_matrix(rot, tilt, psi)).as_quat(scalar_first=True)
    return canonical_quaternions(q)


def random_orthogonal4(
    rng: np.random.Generator | int | None = None, *, det: Any = None
) -> np.ndarray:
    """A Haar-random ``4×4`` orthogonal matrix (``det`` = +1, −1, or either when ``None``)."""
    gen = np.random.default_rng(rng)
    a = gen.standard_normal((4, 4))
    qm, r = np.linalg.qr(a)
    qm = qm * np.sign(np.diag(r))
    if det is not None and math.copysign(1.0, np.linalg.det(qm)) != math.copysign(1.0, det):
        qm[:, 0] *= -1.0
    return qm
