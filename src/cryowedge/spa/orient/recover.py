"""Orientations from pairwise distances, and their evaluation (thesis eqs. 5.7–5.8).

Recovery (eq. 5.7). Given an estimate ``d̂_ij`` of the geodesic distance between the
orientations of projections ``i`` and ``j`` (from a trained Siamese network, or the exact
distance plus noise in the thesis's Figs. 5.6–5.7), find unit quaternions minimising
``Σ_(i,j) (d̂_ij − d_q(q_i, q_j))²``. The unknowns are unconstrained ``(P, 4)`` vectors normalised
inside the loss; Adam minimises the loss over a **fresh random batch of pairs at every step**
(research/thesis.md §13.14: the thesis's fixed 5,000 pairs for 5,000 unknown quaternions are
under-determined), with a cosine-decayed learning rate.

Distances come from a :class:`DistanceOracle`: anything callable as ``oracle(i, j)`` on two
``(B,)`` int64 index tensors returning ``(B,)`` distances in radians. Two are provided:
:class:`MatrixOracle` (a full ``(P, P)`` matrix, e.g. exact distances with a fixed symmetric
noise, :func:`noisy_distance_matrix`) and :class:`EmbeddingOracle` (``‖e_i − e_j‖`` of the
Siamese network's feature vectors, so that any pair costs one subtraction).

Evaluation (eq. 5.8, fixed). Pairwise distances are unchanged by ``q ↦ a ⊗ q ⊗ b`` and by
``q ↦ a ⊗ q* ⊗ b`` (left and right products, inversion); as 4×4 maps on ℝ⁴ these are exactly
O(4). Recovered orientations are therefore compared with the truth after the best ``T ∈ O(4)``
minimising ``Σ_i min_± ‖q_i ∓ T q̂_i‖²`` (:func:`align_quaternions`; alternating per-sample
signs and orthogonal Procrustes, from several starts). The thesis's printed objective
``Σ_ij |d_q(q_i, q_j) − d_q(T q̂_i, T q̂_j)|²`` (:func:`printed_alignment_objective`) is the same
for every orthogonal ``T`` (research/thesis.md §13.13) and cannot align anything; it is kept
only to show that.

The benign part of the ambiguity is a right product (a global rotation of the volume,
:func:`cryowedge.spa.angles.align_rotations`); a left product or an inversion changes which
images the orientations predict, so a map made from recovered orientations needs them aligned
first (:func:`aligned_rotations`, using a reference; without one the left factor would have to be
found from the images).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike

from cryowedge.config.spa_orient import RECOVERY_DEFAULTS as _R
from cryowedge.spa.orient.quaternions import (
    as_unit_quaternions,
    canonical_quaternions,
    pairwise_quaternion_distances,
    quaternion_distance,
    quaternion_distance_torch,
    quaternion_to_matrix,
    random_orthogonal4,
    uniform_quaternions,
)

__all__ = [
    "DistanceOracle",
    "MatrixOracle",
    "EmbeddingOracle",
    "noisy_distance_matrix",
    "RecoveryResult",
    "recover_orientations",
    "Alignment",
    "align_quaternions",
    "apply_alignment",
    "aligned_errors_deg",
    "aligned_rotations",
    "printed_alignment_objective",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


class DistanceOracle(Protocol):
    """``oracle(i, j) -> d̂_ij``: ``(B,)`` int64 index tensors to ``(B,)`` radians."""

    n: int

    def __call__(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor: ...


class MatrixOracle:
    """Distances looked up in a ``(P, P)`` matrix (radians, symmetric)."""

    def __init__(self, matrix: ArrayLike, dtype: torch.dtype = torch.float32) -> None:
        m = np.asarray(matrix, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
            raise ValueError(f"the distance matrix must be (P, P) with P >= 2, got {m.shape}.")
        if not np.all(np.isfinite(m)):
            raise ValueError("the distance matrix has NaN or Inf entries.")
        self.n = m.shape[0]
        self.matrix = torch.as_tensor(m, dtype=dtype)

    def __call__(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return self.matrix[i, j]


class EmbeddingOracle:
    """``d̂_ij = ‖e_i − e_j‖₂`` of ``(P, k)`` feature vectors (the Siamese distance)."""

    def __init__(self, embeddings: ArrayLike | torch.Tensor, dtype: torch.dtype = torch.float32):
        e = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor)
                            else embeddings.detach().cpu(), dtype=dtype)
        if e.ndim != 2 or e.shape[0] < 2:
            raise ValueError(f"embeddings must be (P, k) with P >= 2, got {tuple(e.shape)}.")
        self.n = e.shape[0]
        self.embeddings = e

    def __call__(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return (self.embeddings[i] - self.embeddings[j]).norm(dim=-1)


def noisy_distance_matrix(
    quaternions: ArrayLike, noise_std: float = 0.0, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Exact ``(P, P)`` distances plus a fixed symmetric Gaussian noise of ``noise_std`` rad.

    The noisy values are clipped to ``[0, π]`` (a distance); the diagonal stays 0. This is the
    thesis's Fig. 5.7 set-up (additive Gaussian noise on the distances).
    """
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be >= 0 radians, got {noise_std!r}.")
    d = pairwise_quaternion_distances(quaternions)
    if noise_std > 0:
        gen = np.random.default_rng(rng)
        e = gen.standard_normal(d.shape) * noise_std
        e = np.triu(e, 1)
        d = np.clip(d + e + e.T, 0.0, math.pi)
        np.fill_diagonal(d, 0.0)
    return d


@dataclass
class RecoveryResult:
    """Recovered orientations and the optimisation record.

    Attributes
    ----------
    quaternions : numpy.ndarray
        ``(P, 4)`` recovered unit quaternions (``w ≥ 0``), defined up to O(4) (module docstring).
    loss_history : numpy.ndarray
        ``(n_steps,)`` mean squared distance error (rad²) of each step's batch of pairs.
    final_loss : float
        Mean squared error (rad²) over a large fresh sample of pairs after the last step.
    seconds : float
        Wall time.
    """

    quaternions: np.ndarray
    loss_history: np.ndarray
    final_loss: float
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def rotations(self) -> np.ndarray:
        """``(P, 3, 3)`` matrices of :attr:`quaternions`."""
        return quaternion_to_matrix(self.quaternions)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _sample_pairs(n: int, b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` uniformly random pairs ``i ≠ j`` of ``range(n)``."""
    i = torch.randint(0, n, (b,), generator=gen)
    j = (i + torch.randint(1, n, (b,), generator=gen)) % n
    return i, j


def recover_orientations(
    oracle: DistanceOracle,
    *,
    n_steps: int = _R["n_steps"],
    batch_pairs: int = _R["batch_pairs"],
    lr: float = _R["lr"],
    lr_final: float = _R["lr_final"],
    init: ArrayLike | None = None,
    seed: int | None = 0,
    n_restarts: int = _R["n_restarts"],
    eval_pairs: int = _R["eval_pairs"],
    progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> RecoveryResult:
    """Minimise ``Σ (d̂_ij − d_q(q_i, q_j))²`` over ``P`` quaternions (eq. 5.7, module docstring).

    Defaults: :data:`cryowedge.config.spa_orient.RECOVERY_DEFAULTS`.

    Parameters
    ----------
    oracle : DistanceOracle
        Estimated distances (radians) of any pair; ``oracle.n = P``.
    n_steps : int
        Adam steps; each draws ``batch_pairs`` fresh random pairs.
    batch_pairs : int
        Pairs per step.
    lr, lr_final : float
        Adam learning rate, decayed by a cosine from ``lr`` to ``lr_final`` (the thesis used a
        constant 0.1 for 30K steps; the decay reaches a lower loss in fewer steps). Measured
        from exact distances (P = 120 and 500, 1,000 steps, 6 starts each): lr 0.1 recovered
        every start (aligned error < 0.01°), lr 0.05 lost 2 of 6 at P = 120 and lr 0.02 most
        of them (local minima at 30–65° mean error). Small sets are harder: at P = 100 and
        600–1,000 steps about half of the starts stuck for any of lr 0.1/0.2 and 1,024/4,096
        pairs; at P = 200, lr 0.2 and 600 steps, 8 of 8 (exact and σ = 0.3 rad) converged.
        In a check at P = 80 (15 starts, exact distances) every stuck start ended above 1e-6
        rad² and every converged one near 1e-14, hence ``n_restarts``.
    init : array_like, optional
        ``(P, 4)`` starting quaternions; default Haar-uniform from ``seed``.
    seed : int, optional
        Seeds the start and the pair sampling.
    n_restarts : int
        Independent starts (seeds ``seed, seed + 1, …``); the one with the lowest final loss is
        returned. The loss needs no truth (the thesis: the recovery error is a monotone function
        of the final loss), so this guards against local minima in real use.
    eval_pairs : int
        Fresh pairs for :attr:`RecoveryResult.final_loss`.
    progress : callable, optional
        ``progress(step_name, fraction)``.
    device : torch device, optional
        Where to optimise (default CPU).

    Returns
    -------
    RecoveryResult
    """
    n_restarts = _positive_int(n_restarts, "n_restarts")
    if n_restarts > 1:
        if init is not None:
            raise ValueError("n_restarts > 1 needs random starts; pass init=None.")
        runs = []
        for k in range(n_restarts):
            sub = None if progress is None else (
                lambda name, f, k=k: progress(name, (k + f) / n_restarts))
            runs.append(recover_orientations(
                oracle, n_steps=n_steps, batch_pairs=batch_pairs, lr=lr, lr_final=lr_final,
                seed=(0 if seed is None else int(seed)) + k, eval_pairs=eval_pairs,
                progress=sub, device=device))
        best = min(runs, key=lambda r: r.final_loss)
        best.config["n_restarts"] = n_restarts
        best.config["restart_losses"] = [r.final_loss for r in runs]
        best.seconds = sum(r.seconds for r in runs)
        return best
    import time

    n = _positive_int(getattr(oracle, "n", 0), "oracle.n (number of projections)")
    if n < 2:
        raise ValueError("need at least 2 projections to recover orientations.")
    n_steps = _positive_int(n_steps, "n_steps")
    batch_pairs = _positive_int(batch_pairs, "batch_pairs")
    for name, v in (("lr", lr), ("lr_final", lr_final)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be > 0, got {v!r}.")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    t0 = time.perf_counter()
    q0 = uniform_quaternions(n, seed) if init is None else as_unit_quaternions(init, "init")
    if q0.shape != (n, 4):
        raise ValueError(f"init must have shape ({n}, 4), got {q0.shape}.")
    x = torch.tensor(q0, dtype=torch.float32, device=dev, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr)
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    history = np.empty(n_steps)
    every = max(1, n_steps // 100)
    for step in range(n_steps):
        frac = step / max(1, n_steps - 1)
        for g in opt.param_groups:
            g["lr"] = lr_final + 0.5 * (lr - lr_final) * (1.0 + math.cos(math.pi * frac))
        i, j = _sample_pairs(n, batch_pairs, gen)
        target = oracle(i, j).to(device=dev, dtype=torch.float32)
        i, j = i.to(dev), j.to(dev)
        d = quaternion_distance_torch(x[i], x[j])
        loss = torch.mean((target - d) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # keep the parameters near the sphere (the loss is scale-free)
            x /= x.norm(dim=1, keepdim=True)
        history[step] = float(loss.detach())
        if progress is not None and (step % every == 0 or step == n_steps - 1):
            progress("recover orientations", (step + 1) / n_steps)
    q = x.detach().cpu().double().numpy()
    with torch.no_grad():
        i, j = _sample_pairs(n, eval_pairs, gen)
        target = oracle(i, j).double()
        qt = torch.as_tensor(q)
        final = float(torch.mean((target - quaternion_distance_torch(qt[i], qt[j], 0.0)) ** 2))
    seconds = time.perf_counter() - t0
    logger.info("recovered %d orientations in %d steps: final loss %.3g rad² (%.1f s)",
                n, n_steps, final, seconds)
    return RecoveryResult(
        quaternions=canonical_quaternions(q),
        loss_history=history,
        final_loss=final,
        seconds=seconds,
        config={"n_steps": n_steps, "batch_pairs": batch_pairs, "lr": lr, "lr_final": lr_final,
                "seed": seed},
    )


# ----------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class Alignment:
    """The O(4) map ``T`` taking recovered quaternions to the reference frame.

    Attributes
    ----------
    matrix : numpy.ndarray
        ``(4, 4)`` orthogonal ``T`` (``det = −1``: the recovered set is the inverse rotations').
    errors_deg : numpy.ndarray
        ``(P,)`` geodesic errors ``d_q(q_i, T q̂_i)`` in degrees.
    """

    matrix: np.ndarray
    errors_deg: np.ndarray

    @property
    def mean_error_deg(self) -> float:
        """Mean absolute angular error (degrees)."""
        return float(np.mean(self.errors_deg))

    @property
    def median_error_deg(self) -> float:
        return float(np.median(self.errors_deg))


def apply_alignment(quaternions: ArrayLike, matrix: ArrayLike) -> np.ndarray:
    """``T q̂`` for every row of ``(P, 4)`` quaternions, canonical (``w ≥ 0``)."""
    q = as_unit_quaternions(quaternions)
    t = np.asarray(matrix, dtype=np.float64)
    if t.shape != (4, 4) or not np.allclose(t @ t.T, np.eye(4), atol=1e-6):
        raise ValueError("the alignment must be a 4x4 orthogonal matrix (T Tᵀ = I).")
    return canonical_quaternions(q @ t.T)


def aligned_errors_deg(estimated: ArrayLike, reference: ArrayLike, matrix: ArrayLike) -> np.ndarray:
    """``(P,)`` errors ``d_q(q_i, T q̂_i)`` in degrees for a given alignment ``T``."""
    return np.rad2deg(quaternion_distance(reference, apply_alignment(estimated, matrix)))


def _procrustes_o4(a: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(a)
    return u @ vt


def align_quaternions(
    estimated: ArrayLike,
    reference: ArrayLike,
    *,
    n_starts: int = 16,
    n_iter: int = 100,
    seed: int | None = 0,
) -> Alignment:
    """Best ``T ∈ O(4)`` with ``T q̂_i ≈ ±q_i`` (the fixed eq. 5.8, module docstring).

    Minimises ``Σ_i min_± ‖q_i ∓ T q̂_i‖²`` by alternating the per-sample signs and an
    orthogonal Procrustes fit ``T = U Vᵀ`` (``U S Vᵀ`` the SVD of ``Σ_i s_i q_i q̂_iᵀ``); each
    alternation lowers the objective. The identity and ``n_starts − 1`` Haar-random O(4)
    matrices start it; the result with the smallest mean geodesic error wins.

    Parameters
    ----------
    estimated, reference : array_like
        ``(P, 4)`` recovered and true quaternions.
    n_starts, n_iter : int
        Starts and alternations per start.
    seed : int, optional
        Seeds the random starts.

    Returns
    -------
    Alignment
    """
    e = as_unit_quaternions(estimated, "estimated")
    r = as_unit_quaternions(reference, "reference")
    if e.shape != r.shape or e.ndim != 2:
        raise ValueError(
            f"estimated and reference must both be (P, 4), got {e.shape} and {r.shape}."
        )
    _positive_int(n_starts, "n_starts")
    gen = np.random.default_rng(seed)
    best: Alignment | None = None
    for k in range(int(n_starts)):
        t = np.eye(4) if k == 0 else random_orthogonal4(gen)
        s_old = None
        for _ in range(int(n_iter)):
            s = np.where(np.sum(r * (e @ t.T), axis=1) < 0, -1.0, 1.0)
            if s_old is not None and np.array_equal(s, s_old):
                break
            t = _procrustes_o4((r * s[:, None]).T @ e)
            s_old = s
        cand = Alignment(t, aligned_errors_deg(e, r, t))
        if best is None or cand.mean_error_deg < best.mean_error_deg:
            best = cand
    assert best is not None
    return best


def aligned_rotations(estimated: ArrayLike, alignment: Alignment | ArrayLike) -> np.ndarray:
    """``(P, 3, 3)`` matrices of the aligned quaternions ``T q̂_i`` (to reconstruct with)."""
    t = alignment.matrix if isinstance(alignment, Alignment) else alignment
    return quaternion_to_matrix(apply_alignment(estimated, t))


def printed_alignment_objective(
    estimated: ArrayLike, reference: ArrayLike, matrix: ArrayLike
) -> float:
    """The thesis's printed eq. 5.8, ``mean_ij |d_q(q_i,q_j) − d_q(T q̂_i, T q̂_j)|²`` (rad²).

    Kept to document research/thesis.md §13.13: it does not depend on the orthogonal ``T``.
    """
    r = as_unit_quaternions(reference, "reference")
    t_e = apply_alignment(estimated, matrix)
    return float(np.mean((pairwise_quaternion_distances(r) - pairwise_quaternion_distances(t_e))
                         ** 2))
