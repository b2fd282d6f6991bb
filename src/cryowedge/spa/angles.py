"""Orientation tools for single-particle refinement: Euler-angle derivatives, SO(3) grids, errors.

Conventions (docs/conventions.md, :mod:`cryowedge.geometry.rotations`): a rotation is a RELION
ZYZ matrix ``R(rot, tilt, psi) = Rz(psi) Ry(tilt) Rz(rot)`` acting on ``(x, y, z)`` column
vectors; rows 1–2 are the detector plane ``M⊥`` and row 3 the projection direction (thesis
§1.1 with the θ1/θ3 fix of research/thesis.md §13.1). Public functions take and return
**degrees**; the torch kernels here (``*_rad``) work in radians.

Global ambiguity. The blob model is invariant under rotating the volume by ``Q`` while
right-multiplying every orientation by ``Qᵀ``: if ``v'(x) = v(Qᵀ x)`` then ``R_p Qᵀ`` projects
``v'`` as ``R_p`` projects ``v``. A reconstruction refined from orientations alone is therefore
only defined up to such a global rotation, and orientation errors are measured after the best
alignment ``R_est G ≈ R_true`` (:func:`align_rotations`, orthogonal Procrustes on the stacked
matrices, then an optional robust re-weighting) — research/thesis.md §5.4. In the same way a
global translation ``d`` of the volume changes every shift by ``−M_p d``
(:func:`align_shifts`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from cryowedge.geometry.rotations import (
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    quaternion_to_matrix,
)

__all__ = [
    "euler_matrices_rad",
    "euler_matrix_derivatives_rad",
    "tangent_generators",
    "super_fibonacci_rotations",
    "rotations_near",
    "cell_radius_deg",
    "rotation_vector_exp",
    "perturb_euler",
    "geodesic_distance_deg",
    "align_rotations",
    "angular_errors_deg",
    "euler_differences_deg",
    "align_shifts",
    "shift_errors_px",
]

logger = logging.getLogger(__name__)

# Super-Fibonacci constants (Alexa, "Super-Fibonacci Spirals: Fast, Low-Discrepancy Sampling of
# SO(3)", CVPR 2022): φ = √2 and ψ the real root of ψ⁴ = ψ + 4.
_SF_PHI = math.sqrt(2.0)
_SF_PSI = 1.533751168755204288118041


def _as_rotations(matrix: Any, name: str) -> np.ndarray:
    """``(P, 3, 3)`` float64 proper rotations, or a one-line ``ValueError``."""
    r = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix)
    r = r.astype(np.float64, copy=False)
    if r.ndim == 2 and r.shape == (3, 3):
        r = r[None]
    if r.ndim != 3 or r.shape[1:] != (3, 3) or r.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (P, 3, 3) (RELION ZYZ matrices), got {r.shape}; build them "
            "with cryowedge.geometry.rotations.euler_zyz_to_matrix."
        )
    if not np.isfinite(r).all():
        raise ValueError(f"{name} contains non-finite values.")
    dev = np.abs(np.einsum("pij,pkj->pik", r, r) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(r)
    bad = np.flatnonzero((dev > 1e-5) | (det <= 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] is not a proper rotation (|R Rᵀ − I| = {dev[i]:.3g}, "
            f"det = {det[i]:.3g}); pass orthonormal matrices with det = +1."
        )
    return r


# ------------------------------------------------------------------------ Euler kernels
def _rz(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Rz(a)`` and ``dRz/da`` for angles ``a (B,)`` (radians): two ``(B, 3, 3)``."""
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    m = torch.stack([c, s, z, -s, c, z, z, z, o], dim=-1).reshape(a.shape + (3, 3))
    d = torch.stack([-s, c, z, -c, -s, z, z, z, z], dim=-1).reshape(a.shape + (3, 3))
    return m, d


def _ry(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Ry(a)`` and ``dRy/da`` (RELION's sign: row 0 is ``(c, 0, −s)``)."""
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    m = torch.stack([c, z, -s, z, o, z, s, z, c], dim=-1).reshape(a.shape + (3, 3))
    d = torch.stack([-s, z, -c, z, z, z, c, z, -s], dim=-1).reshape(a.shape + (3, 3))
    return m, d


def euler_matrices_rad(angles_rad: torch.Tensor) -> torch.Tensor:
    """RELION ZYZ matrices ``Rz(psi) Ry(tilt) Rz(rot)`` of ``(..., 3)`` angles (rot, tilt, psi).

    Parameters
    ----------
    angles_rad : torch.Tensor
        ``(..., 3)`` Euler angles in **radians**.

    Returns
    -------
    torch.Tensor
        ``(..., 3, 3)`` matrices acting on (x, y, z) vectors, same dtype and device
        (equal to :func:`~cryowedge.geometry.rotations.euler_zyz_to_matrix` of the degrees).
    """
    rz1, _ = _rz(angles_rad[..., 0])
    ry, _ = _ry(angles_rad[..., 1])
    rz3, _ = _rz(angles_rad[..., 2])
    return rz3 @ ry @ rz1


def euler_matrix_derivatives_rad(angles_rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrices and their entrywise derivatives ``∂R/∂θ_i`` (thesis Thm 3's ``∂M⊥/∂θ_i``).

    Parameters
    ----------
    angles_rad : torch.Tensor
        ``(..., 3)`` Euler angles (rot, tilt, psi) in radians.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``R`` of shape ``(..., 3, 3)`` and ``dR`` of shape ``(..., 3, 3, 3)`` with
        ``dR[..., i, :, :] = ∂R/∂θ_i`` (per radian); ``∂M⊥/∂θ_i`` is ``dR[..., i, :2, :]``.
    """
    rz1, drz1 = _rz(angles_rad[..., 0])
    ry, dry = _ry(angles_rad[..., 1])
    rz3, drz3 = _rz(angles_rad[..., 2])
    r = rz3 @ ry @ rz1
    d = torch.stack([rz3 @ ry @ drz1, rz3 @ dry @ rz1, drz3 @ ry @ rz1], dim=-3)
    return r, d


def tangent_generators(rotations: torch.Tensor) -> torch.Tensor:
    """Derivatives of ``R(ω) = exp([ω]×) R`` at ``ω = 0``: ``[e_i]× R`` (per radian).

    Parameters
    ----------
    rotations : torch.Tensor
        ``(..., 3, 3)`` matrices.

    Returns
    -------
    torch.Tensor
        ``(..., 3, 3, 3)``; entry ``[..., i]`` is ``[e_i]× R``. ``ω`` is a rotation vector in the
        projection frame (``ω_z``: in-plane rotation; ``ω_x, ω_y``: tilts of the direction).
    """
    dtype, device = rotations.dtype, rotations.device
    gens = torch.zeros(3, 3, 3, dtype=dtype, device=device)
    gens[0, 1, 2], gens[0, 2, 1] = -1.0, 1.0
    gens[1, 0, 2], gens[1, 2, 0] = 1.0, -1.0
    gens[2, 0, 1], gens[2, 1, 0] = -1.0, 1.0
    return torch.matmul(gens, rotations.unsqueeze(-3))


def rotation_vector_exp(omega: torch.Tensor) -> torch.Tensor:
    """``exp([ω]×)`` of ``(..., 3)`` rotation vectors (radians): ``(..., 3, 3)`` (Rodrigues)."""
    theta = torch.linalg.vector_norm(omega, dim=-1, keepdim=True)  # (..., 1)
    small = theta < 1e-8
    safe = torch.where(small, torch.ones_like(theta), theta)
    k = omega / safe
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = torch.zeros_like(kx)
    kmat = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=-1)
    kmat = kmat.reshape(omega.shape[:-1] + (3, 3))
    s = torch.sin(theta)[..., None]
    c = (1.0 - torch.cos(theta))[..., None]
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    out = eye + s * kmat + c * (kmat @ kmat)
    # First order for tiny angles: I + [ω]×.
    w = omega
    first = eye + torch.stack(
        [zero, -w[..., 2], w[..., 1], w[..., 2], zero, -w[..., 0], -w[..., 1], w[..., 0], zero],
        dim=-1,
    ).reshape(omega.shape[:-1] + (3, 3))
    return torch.where(small[..., None], first, out)


# ------------------------------------------------------------------------ SO(3) sampling
def super_fibonacci_rotations(n: int) -> np.ndarray:
    """``n`` nearly uniform rotations of SO(3) (super-Fibonacci spiral, deterministic).

    Sample ``i`` is the unit quaternion ``(r sin α, r cos α, R sin β, R cos β)`` with
    ``s = i + ½``, ``r = √(s/n)``, ``R = √(1 − s/n)``, ``α = 2π s/φ``, ``β = 2π s/ψ``,
    ``φ = √2``, ``ψ⁴ = ψ + 4`` (Alexa, CVPR 2022). Its covering radius is close to that of
    the best known grids; see :func:`cell_radius_deg`.

    Parameters
    ----------
    n : int
        Number of rotations (≥ 1).

    Returns
    -------
    numpy.ndarray
        ``(n, 3, 3)`` float64 rotation matrices acting on (x, y, z) vectors.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of rotations), got {n!r}.")
    s = np.arange(int(n), dtype=np.float64) + 0.5
    r = np.sqrt(s / n)
    big_r = np.sqrt(1.0 - s / n)
    alpha = 2.0 * np.pi * s / _SF_PHI
    beta = 2.0 * np.pi * s / _SF_PSI
    q = np.stack(
        [r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], 1
    )
    return quaternion_to_matrix(q)


def cell_radius_deg(n: int) -> float:
    """Radius (degrees) of the geodesic ball whose volume is ``1/n`` of SO(3).

    Under the geodesic metric (distance = rotation angle) SO(3) has volume ``8π²`` and a ball of
    radius ``ρ`` has volume ``8π(ρ − sin ρ) ≈ (4/3)πρ³``; so ``ρ = (6π/n)^{1/3}``. For ``n``
    uniform rotations, most points lie within about ``ρ`` of a sample (≈ 12° for n = 2 000,
    5.6° for n = 20 000).

    Parameters
    ----------
    n : int
        Number of rotations (≥ 1).

    Returns
    -------
    float
        ``ρ`` in degrees.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    return float(np.rad2deg((6.0 * np.pi / n) ** (1.0 / 3.0)))


def rotations_near(
    rotations: ArrayLike, n: int, radius_deg: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """``n`` random rotations within ``radius_deg`` of each given rotation (left perturbations).

    Each candidate is ``exp([ω]×) R`` with ``ω`` uniform in the ball of radius ``radius_deg``
    (direction uniform on the sphere, ``|ω| = radius·u^{1/3}``); the first candidate is ``R``.

    Parameters
    ----------
    rotations : array_like
        ``(P, 3, 3)`` centres.
    n : int
        Candidates per centre (≥ 1).
    radius_deg : float
        Ball radius in degrees (> 0).
    rng : numpy.random.Generator or int or None
        Random source.

    Returns
    -------
    numpy.ndarray
        ``(P, n, 3, 3)`` float64 matrices.
    """
    r = _as_rotations(rotations, "rotations")
    if not np.isfinite(radius_deg) or radius_deg <= 0:
        raise ValueError(f"radius_deg must be > 0 degrees, got {radius_deg!r}.")
    gen = np.random.default_rng(rng)
    p = r.shape[0]
    v = gen.standard_normal((p, n, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    mag = np.deg2rad(radius_deg) * gen.uniform(size=(p, n, 1)) ** (1.0 / 3.0)
    omega = v * mag
    omega[:, 0] = 0.0
    perturb = Rotation.from_rotvec(omega.reshape(-1, 3)).as_matrix().reshape(p, n, 3, 3)
    return perturb @ r[:, None]


def perturb_euler(
    rotations: ArrayLike, max_error_deg: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Init-1 of the thesis (§4.2.3): add ``U(−e, e)`` independently to rot, tilt and psi.

    Parameters
    ----------
    rotations : array_like
        ``(P, 3, 3)`` true orientations.
    max_error_deg : float
        ``e`` in degrees (the thesis's ``e_θ = 0.7 rad`` is 40.1°).
    rng : numpy.random.Generator or int or None
        Random source.

    Returns
    -------
    numpy.ndarray
        ``(P, 3, 3)`` perturbed matrices.
    """
    r = _as_rotations(rotations, "rotations")
    if not np.isfinite(max_error_deg) or max_error_deg < 0:
        raise ValueError(f"max_error_deg must be >= 0 degrees, got {max_error_deg!r}.")
    gen = np.random.default_rng(rng)
    rot, tilt, psi = matrix_to_euler_zyz(r)
    eps = gen.uniform(-max_error_deg, max_error_deg, size=(r.shape[0], 3))
    return euler_zyz_to_matrix(rot + eps[:, 0], tilt + eps[:, 1], psi + eps[:, 2])


# ------------------------------------------------------------------------ errors
def geodesic_distance_deg(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Geodesic angle ``arccos((tr(aᵀ b) − 1)/2)`` between rotations, in degrees.

    Parameters
    ----------
    a, b : array_like
        ``(P, 3, 3)`` rotations (or broadcastable ``(3, 3)``).

    Returns
    -------
    numpy.ndarray
        ``(P,)`` angles in ``[0, 180]`` degrees.
    """
    x = _as_rotations(a, "a")
    y = _as_rotations(b, "b")
    if x.shape[0] != y.shape[0] and 1 not in (x.shape[0], y.shape[0]):
        raise ValueError(
            f"a and b must hold the same number of rotations, got {x.shape[0]} and {y.shape[0]}."
        )
    x, y = np.broadcast_arrays(x, y)
    rel = np.einsum("pji,pjk->pik", x, y)  # aᵀ b
    cos = (np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0
    # sin θ = ‖axis vector‖ of the antisymmetric part: atan2 keeps full precision near 0 and 180°.
    axis = np.stack(
        [rel[:, 2, 1] - rel[:, 1, 2], rel[:, 0, 2] - rel[:, 2, 0], rel[:, 1, 0] - rel[:, 0, 1]], 1
    )
    sin = 0.5 * np.linalg.norm(axis, axis=1)
    return np.rad2deg(np.arctan2(sin, cos))


def align_rotations(
    estimated: ArrayLike, reference: ArrayLike, *, robust: bool = True, n_iter: int = 20
) -> np.ndarray:
    """Best global rotation ``G`` with ``estimated[p] @ G ≈ reference[p]`` for all p.

    Minimises ``Σ_p w_p ‖R_est,p G − R_ref,p‖_F²`` over SO(3): ``G = U diag(1, 1, det) Vᵀ`` with
    ``U S Vᵀ`` the SVD of ``Σ_p w_p R_est,pᵀ R_ref,p`` (orthogonal Procrustes / Kabsch). With
    ``robust`` the weights are then re-estimated ``n_iter`` times as ``1 / max(d_p, 0.5°)``
    (``d_p`` the geodesic residual; an iteratively re-weighted approximation of the geodesic L1
    alignment), and a last plain Procrustes uses only the particles within
    ``max(3 × median d_p, 1°)`` (if they are at least half), so that a minority of lost
    particles does not pull ``G``.

    Parameters
    ----------
    estimated, reference : array_like
        ``(P, 3, 3)`` rotations.
    robust : bool
        Re-weight as above.
    n_iter : int
        Re-weighting passes.

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` rotation ``G``. The reconstruction that goes with ``estimated`` is the true
        volume rotated by ``G`` (``rotate_volume(v_true, G)``), see the module docstring.
    """
    e = _as_rotations(estimated, "estimated")
    r = _as_rotations(reference, "reference")
    if e.shape != r.shape:
        raise ValueError(
            f"estimated and reference must have the same shape (P, 3, 3), got {e.shape} and "
            f"{r.shape}."
        )

    def procrustes(w: np.ndarray) -> np.ndarray:
        a = np.einsum("p,pji,pjk->ik", w, e, r)
        u, _, vt = np.linalg.svd(a)
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
        return u @ d @ vt

    g = procrustes(np.ones(e.shape[0]))
    if not robust:
        return g
    for _ in range(int(n_iter)):
        dist = geodesic_distance_deg(e @ g, r)
        g = procrustes(1.0 / np.maximum(dist, 0.5))
    # Final trimmed pass: plain Procrustes on the particles within max(3 × median, 1°).
    dist = geodesic_distance_deg(e @ g, r)
    inliers = dist <= max(3.0 * float(np.median(dist)), 1.0)
    if inliers.sum() >= max(3, e.shape[0] // 2):
        g = procrustes(inliers.astype(np.float64))
    return g


def angular_errors_deg(
    estimated: ArrayLike, reference: ArrayLike, *, align: bool = True, robust: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-particle geodesic orientation errors after the global alignment (degrees).

    Parameters
    ----------
    estimated, reference : array_like
        ``(P, 3, 3)`` estimated and true rotations.
    align : bool
        Remove the best global rotation first (:func:`align_rotations`); ``False`` compares
        the matrices as they are (right when the volume is fixed to the truth).
    robust : bool
        Robust alignment (see :func:`align_rotations`).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Errors ``(P,)`` in degrees and the alignment ``G`` ``(3, 3)`` (identity without ``align``).
    """
    e = _as_rotations(estimated, "estimated")
    r = _as_rotations(reference, "reference")
    if e.shape != r.shape:
        raise ValueError(
            f"estimated and reference must have the same shape (P, 3, 3), got {e.shape} and "
            f"{r.shape}."
        )
    g = align_rotations(e, r, robust=robust) if align else np.eye(3)
    return geodesic_distance_deg(e @ g, r), g


def euler_differences_deg(estimated: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """Differences ``θ_ref,i − θ_est,i`` of the three Euler angles, wrapped into (−180, 180].

    The thesis's histograms (Figs. 4.8–4.10) show these per angle; pass the *aligned* estimate
    (``estimated @ G``). Near tilt = 0 or 180° rot and psi are not separately defined, so the
    geodesic error (:func:`angular_errors_deg`) is the more meaningful summary.

    Returns
    -------
    numpy.ndarray
        ``(P, 3)`` degrees: (rot, tilt, psi).
    """
    e = np.stack(matrix_to_euler_zyz(_as_rotations(estimated, "estimated")), axis=-1)
    r = np.stack(matrix_to_euler_zyz(_as_rotations(reference, "reference")), axis=-1)
    if e.shape != r.shape:
        raise ValueError(f"estimated and reference differ in shape: {e.shape} vs {r.shape}.")
    d = r - e
    return (d + 180.0) % 360.0 - 180.0


def align_shifts(
    estimated_px: ArrayLike, reference_px: ArrayLike, rotations: ArrayLike
) -> np.ndarray:
    """Global 3D translation ``d`` (x, y, z voxels) best explaining ``t_est − t_ref = −M_p d``.

    A volume translated by ``d`` projects with its centre moved by ``M_p d``, so refined shifts of
    a translated reconstruction are ``t_ref − M_p d`` (in (dy, dx) order). Solved by linear least
    squares over all particles.

    Parameters
    ----------
    estimated_px, reference_px : array_like
        ``(P, 2)`` shifts ``(dy, dx)`` in pixels.
    rotations : array_like
        ``(P, 3, 3)`` rotations the estimated shifts go with (their ``M_p``).

    Returns
    -------
    numpy.ndarray
        ``(3,)`` translation ``(x, y, z)`` in voxels.
    """
    e = np.asarray(estimated_px, dtype=np.float64)
    t = np.asarray(reference_px, dtype=np.float64)
    r = _as_rotations(rotations, "rotations")
    if e.shape != (r.shape[0], 2) or t.shape != e.shape:
        raise ValueError(
            f"shifts must have shape (P, 2) = ({r.shape[0]}, 2) as (dy, dx) pixels, got "
            f"{e.shape} and {t.shape}."
        )
    m = r[:, [1, 0], :]  # (P, 2, 3): rows (dy, dx) ← (M row 1, M row 0)
    d, *_ = np.linalg.lstsq(-m.reshape(-1, 3), (e - t).reshape(-1), rcond=None)
    return d


def shift_errors_px(
    estimated_px: ArrayLike,
    reference_px: ArrayLike,
    rotations: ArrayLike | None = None,
) -> np.ndarray:
    """Per-particle shift errors ``t_ref − t_est`` (pixels), after the global translation.

    Parameters
    ----------
    estimated_px, reference_px : array_like
        ``(P, 2)`` shifts ``(dy, dx)``.
    rotations : array_like, optional
        ``(P, 3, 3)``: when given, the best global translation (:func:`align_shifts`) is removed.

    Returns
    -------
    numpy.ndarray
        ``(P, 2)`` differences ``(dy, dx)`` in pixels.
    """
    e = np.asarray(estimated_px, dtype=np.float64)
    t = np.asarray(reference_px, dtype=np.float64)
    if e.shape != t.shape or e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"shifts must both have shape (P, 2), got {e.shape} and {t.shape}.")
    if rotations is None:
        return t - e
    r = _as_rotations(rotations, "rotations")
    d = align_shifts(e, t, r)
    m = r[:, [1, 0], :]
    return t - (e + m @ d)
