"""Resolve the O(4) ambiguity of recovered orientations from the images (common lines).

Orientations recovered from pairwise distances hold up to ``q ↦ a ⊗ q ⊗ b`` or
``q ↦ a ⊗ q* ⊗ b`` (:mod:`cryowedge.spa.orient.recover`). The right factor ``b`` is a global
rotation of the map and harmless. The left factor ``A = R(a)`` and the inversion change which
images the orientations predict, so they can be read off the images. By the projection-slice
theorem the 2D Fourier transforms of images ``i`` and ``j`` agree along their common line: with
``n_i`` the projection direction (row 3 of ``R_i``) and ``d = n_i × n_j``,
``F_i(r R_i d) = F_j(r R_j d)`` for every ``r`` (the in-plane vectors ``R_i d``, ``R_j d``; their
z components vanish). :func:`common_line_score` averages the whitened correlation of those two
lines over random pairs; :func:`resolve_ambiguity` maximises it over the left factor (a
super-Fibonacci grid of SO(3), then three finer local searches) for the recovered set and for its
inverse.

One ambiguity remains and is not removable from projections: the mirror image. With
``J = diag(1, 1, −1)``, the orientations ``J R_i J = Rz(π) R_i Rz(π)`` (a left and a right
factor) project the mirrored map to the same images. The resolved set is therefore the truth
up to a global rotation **and possibly the hand**; :func:`mirror_rotations` gives the other hand.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from cryowedge.spa.angles import rotations_near, super_fibonacci_rotations
from cryowedge.spa.orient.quaternions import (
    as_unit_quaternions,
    quaternion_conjugate,
    quaternion_to_matrix,
)

__all__ = [
    "fourier_lines",
    "common_line_score",
    "AmbiguityResolution",
    "resolve_ambiguity",
    "mirror_rotations",
]

logger = logging.getLogger(__name__)

_J = np.diag([1.0, 1.0, -1.0])


def mirror_rotations(rotations: ArrayLike) -> np.ndarray:
    """``J R J`` (``J = diag(1, 1, −1)``): the orientations of the mirrored map, ``(P, 3, 3)``."""
    r = np.asarray(rotations, dtype=np.float64)
    return _J @ r @ _J


def fourier_lines(
    images: ArrayLike, *, n_theta: int = 360, r_max: float | None = None
) -> np.ndarray:
    """Whitened central lines of the images' 2D Fourier transforms.

    Parameters
    ----------
    images : array_like
        ``(P, n, n)`` images ``(y, x)`` centred at ``n // 2``.
    n_theta : int
        Directions ``θ_k = 2π k / n_theta`` (angle from the detector x axis towards y).
    r_max : float, optional
        Largest radius (frequency index, ``n`` = 1 cycle/pixel); default ``0.4 n``.

    Returns
    -------
    numpy.ndarray
        ``(P, n_theta, n_r)`` complex128 values at radii ``1 … r_max``, each radius divided by
        its mean magnitude over all images and directions.
    """
    img = np.asarray(images, dtype=np.float64)
    if img.ndim != 3 or img.shape[1] != img.shape[2]:
        raise ValueError(f"images must be a (P, n, n) stack, got shape {img.shape}.")
    n = img.shape[1]
    c = n // 2
    f = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(1, 2))), axes=(1, 2))
    rm = 0.4 * n if r_max is None else float(r_max)
    radii = np.arange(1, int(rm) + 1, dtype=np.float64)
    theta = 2.0 * np.pi * np.arange(n_theta) / n_theta
    rows = c + radii[None, :] * np.sin(theta)[:, None]  # ky along axis 0
    cols = c + radii[None, :] * np.cos(theta)[:, None]  # kx along axis 1
    coords = np.stack([rows.ravel(), cols.ravel()])
    out = np.empty((img.shape[0], n_theta, radii.size), dtype=np.complex128)
    for p in range(img.shape[0]):
        re = ndimage.map_coordinates(f[p].real, coords, order=1, mode="nearest")
        im = ndimage.map_coordinates(f[p].imag, coords, order=1, mode="nearest")
        out[p] = (re + 1j * im).reshape(n_theta, radii.size)
    scale = np.mean(np.abs(out), axis=(0, 1))
    return out / np.maximum(scale, 1e-30)


def _line_index(rot_a: np.ndarray, d: np.ndarray, n_theta: int) -> np.ndarray:
    c = np.einsum("pij,pj->pi", rot_a, d)
    ang = np.arctan2(c[:, 1], c[:, 0])
    return np.round(ang / (2.0 * np.pi) * n_theta).astype(np.int64) % n_theta


def common_line_score(
    lines: np.ndarray, rotations: ArrayLike, pairs: tuple[np.ndarray, np.ndarray]
) -> float:
    """Mean correlation ``Re⟨F_i, F_j⟩ / (‖F_i‖ ‖F_j‖)`` of the common lines of ``pairs``.

    ``lines`` from :func:`fourier_lines`; ``rotations`` ``(P, 3, 3)``; pairs whose projection
    directions are within ~6° of each other (or opposite) are skipped (no defined common line).
    1 means perfectly consistent orientations (noise-free, up to interpolation).
    """
    r = np.asarray(rotations, dtype=np.float64)
    i, j = pairs
    d = np.cross(r[i, 2], r[j, 2])
    norm = np.linalg.norm(d, axis=1)
    keep = norm > 0.1
    i, j, d = i[keep], j[keep], d[keep] / norm[keep, None]
    n_theta = lines.shape[1]
    li = lines[i, _line_index(r[i], d, n_theta)]
    lj = lines[j, _line_index(r[j], d, n_theta)]
    num = np.real(np.sum(li * np.conj(lj), axis=1))
    den = np.linalg.norm(li, axis=1) * np.linalg.norm(lj, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-30)))


@dataclass(frozen=True)
class AmbiguityResolution:
    """Recovered orientations with the left factor and the inversion chosen from the images.

    Attributes
    ----------
    rotations : numpy.ndarray
        ``(P, 3, 3)`` ``A R(q̂_i)`` or ``A R(q̂_i)ᵀ`` (the truth up to a global rotation and
        possibly the hand).
    left : numpy.ndarray
        ``(3, 3)`` chosen ``A``.
    inverted : bool
        Whether the inverse rotations were used.
    score : float
        Common-line score of the choice; ``scores_by_inversion`` the best of each branch.
    """

    rotations: np.ndarray
    left: np.ndarray
    inverted: bool
    score: float
    scores_by_inversion: tuple[float, float]


def resolve_ambiguity(
    images: ArrayLike,
    quaternions: ArrayLike,
    *,
    n_grid: int = 3000,
    n_pairs: int = 1500,
    n_local: int = 300,
    n_theta: int = 360,
    seed: int | None = 0,
) -> AmbiguityResolution:
    """Choose ``A`` and the inversion maximising :func:`common_line_score` (module docstring).

    Parameters
    ----------
    images : array_like
        ``(P, n, n)`` images.
    quaternions : array_like
        ``(P, 4)`` recovered quaternions.
    n_grid : int
        Super-Fibonacci candidates for ``A`` (covering radius ≈ (6π/n)^⅓: 13° for 3,000).
    n_pairs : int
        Random pairs scored per candidate.
    n_local : int
        Candidates of each of the three local searches (radius = the grid's covering radius,
        then a third, then a ninth of it).
    n_theta : int
        Line directions (angular step 360°/n_theta).
    seed : int, optional
        Pairs and local candidates.

    Returns
    -------
    AmbiguityResolution
    """
    q = as_unit_quaternions(quaternions)
    img = np.asarray(images)
    if img.ndim != 3 or img.shape[0] != q.shape[0]:
        raise ValueError(f"{q.shape[0]} quaternions for images of shape {img.shape}.")
    lines = fourier_lines(img, n_theta=n_theta)
    gen = np.random.default_rng(seed)
    p = q.shape[0]
    i = gen.integers(0, p, n_pairs)
    j = (i + gen.integers(1, p, n_pairs)) % p
    grid = super_fibonacci_rotations(int(n_grid))
    radius = math.degrees((6.0 * math.pi / n_grid) ** (1.0 / 3.0))
    best_by: list[tuple[float, np.ndarray]] = []
    for inverted in (False, True):
        base = quaternion_to_matrix(quaternion_conjugate(q) if inverted else q)
        scores = np.array([common_line_score(lines, a @ base, (i, j)) for a in grid])
        a_best, s_best = grid[int(np.argmax(scores))], float(scores.max())
        for rad in (radius, radius / 3.0, radius / 9.0):
            cand = rotations_near(a_best[None], n_local, rad, gen)[0]
            sc = np.array([common_line_score(lines, a @ base, (i, j)) for a in cand])
            if sc.max() > s_best:
                a_best, s_best = cand[int(np.argmax(sc))], float(sc.max())
        best_by.append((s_best, a_best))
        logger.info("common lines, %s: best score %.3f", "inverse" if inverted else "direct",
                    s_best)
    inverted = best_by[1][0] > best_by[0][0]
    score, left = best_by[int(inverted)]
    base = quaternion_to_matrix(quaternion_conjugate(q) if inverted else q)
    return AmbiguityResolution(left @ base, left, bool(inverted), score,
                               (best_by[0][0], best_by[1][0]))
