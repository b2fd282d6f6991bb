"""Rigid alignment of two maps over rotations and a reflection (for half-map FSC and truth).

A CryoGAN reconstruction is determined only up to a rotation–reflection of the map (thesis
Theorem 4: ``p(y|x1) = p(y|x2) ⇔ x1 = G x2``): two independent GANs (the half sets) converge to
differently oriented copies of the structure. Before a half-map FSC (or a comparison with the
truth) the moving map is aligned on the reference: a global search over ``n_rotations``
super-Fibonacci rotations (and their mirror images) on maps binned to at most 16³ and blurred,
followed by local refinement rounds at full size (random rotations within a shrinking radius
around the best, :func:`cryowedge.spa.angles.rotations_near`). The score is the Pearson
correlation inside the inscribed sphere. Rotations are about the centre voxel ``n // 2``
(trilinear, :class:`~cryowedge.operators.Rotation3D`); the mirror is ``x → −x`` about it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cryowedge.operators.rotation import Rotation3D
from cryowedge.spa.angles import cell_radius_deg, rotations_near, super_fibonacci_rotations

__all__ = ["AlignResult", "align_maps", "mirror_x"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignResult:
    """Result of :func:`align_maps`.

    Attributes
    ----------
    aligned : numpy.ndarray
        ``(n, n, n)`` float32 moving map after the transform (``R · mirror?(moving)``).
    rotation : numpy.ndarray
        ``(3, 3)`` rotation on (x, y, z) applied after the optional mirror.
    mirrored : bool
        Whether the moving map was mirrored (``x → −x``) first.
    correlation : float
        Pearson correlation with the reference inside the sphere after alignment.
    """

    aligned: np.ndarray
    rotation: np.ndarray
    mirrored: bool
    correlation: float


def mirror_x(volume: np.ndarray) -> np.ndarray:
    """``(n, n, n)`` map mirrored ``x → −x`` about the centre voxel ``n // 2`` (zero fill)."""
    v = np.asarray(volume)
    n = v.shape[-1]
    out = np.zeros_like(v)
    c = n // 2
    src = 2 * c - np.arange(n)  # out[..., i] = v[..., 2c − i]
    ok = (src >= 0) & (src < n)
    out[..., ok] = v[..., src[ok]]
    return out


def _scores(
    moving: torch.Tensor,
    reference: torch.Tensor,
    mats: np.ndarray,
    mask: torch.Tensor,
    chunk: int = 128,
) -> np.ndarray:
    """Pearson correlation inside ``mask`` of ``R_i · moving`` with ``reference``, per ``i``."""
    ref = reference[mask]
    ref = (ref - ref.mean()) / (ref.std() + 1e-12)
    out = np.empty(mats.shape[0])
    for i0 in range(0, mats.shape[0], chunk):
        rot = Rotation3D(tuple(moving.shape), mats[i0 : i0 + chunk], broadcast=True)
        r = rot.forward(moving)[:, mask]  # (b, m)
        r = r - r.mean(dim=1, keepdim=True)
        r = r / (r.std(dim=1, keepdim=True) + 1e-12)
        out[i0 : i0 + chunk] = (r @ ref / ref.numel()).double().numpy()
    return out


def _sphere(n: int) -> torch.Tensor:
    ax = torch.arange(n) - n // 2
    d2 = ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2
    return d2 <= (n // 2) ** 2


def align_maps(
    moving: np.ndarray,
    reference: np.ndarray,
    *,
    n_rotations: int = 3000,
    mirror: bool = True,
    refine_rounds: int = 4,
    refine_candidates: int = 60,
    seed: int = 0,
) -> AlignResult:
    """Align ``moving`` on ``reference`` (both ``(n, n, n)``) over SO(3) and a mirror.

    Parameters
    ----------
    moving, reference : numpy.ndarray
        ``(n, n, n)`` maps, ``(z, y, x)``.
    n_rotations : int
        Rotations of the global search (spacing about ``cell_radius_deg(n_rotations)``:
        ≈ 12° for 2 000).
    mirror : bool
        Also search the mirror image of ``moving``.
    refine_rounds, refine_candidates : int
        Local refinement rounds at full size and random candidates per round.
    seed : int
        Seed of the refinement candidates.

    Returns
    -------
    AlignResult
    """
    mov = np.asarray(moving, dtype=np.float32)
    ref = np.asarray(reference, dtype=np.float32)
    if mov.ndim != 3 or mov.shape != ref.shape or len(set(mov.shape)) != 1:
        raise ValueError(
            f"moving and reference must be cubes of one shape, got {mov.shape} and {ref.shape}."
        )
    n = mov.shape[0]
    rng = np.random.default_rng(seed)
    grid = super_fibonacci_rotations(int(n_rotations))
    f = max(1, n // 16)
    candidates = []
    for flip in (False, True) if mirror else (False,):
        m = mirror_x(mov) if flip else mov
        mt, rt = torch.as_tensor(m), torch.as_tensor(ref)
        # Global search on blurred, binned maps.
        ms = torch.as_tensor(ndimage.gaussian_filter(m, 1.0))
        rs = torch.as_tensor(ndimage.gaussian_filter(ref, 1.0))
        if f > 1:
            ms = F.avg_pool3d(ms[None, None], f)[0, 0]
            rs = F.avg_pool3d(rs[None, None], f)[0, 0]
        s = _scores(ms, rs, grid, _sphere(ms.shape[0]))
        best = grid[int(np.argmax(s))]
        mask = _sphere(n)
        radius = cell_radius_deg(int(n_rotations))
        score = float(_scores(mt, rt, best[None], mask)[0])
        for _ in range(refine_rounds):
            cand = rotations_near(best[None], refine_candidates, radius, rng)[0]
            sc = _scores(mt, rt, cand, mask)
            i = int(np.argmax(sc))
            if sc[i] >= score:
                best, score = cand[i], float(sc[i])
            radius *= 0.5
        candidates.append((score, flip, best))
    score, flip, best = max(candidates, key=lambda t: t[0])
    m = mirror_x(mov) if flip else mov
    aligned = Rotation3D((n, n, n), best).forward(torch.as_tensor(m)).numpy()
    logger.debug("aligned maps: correlation %.3f (mirror %s)", score, flip)
    return AlignResult(aligned.astype(np.float32), best, bool(flip), score)
