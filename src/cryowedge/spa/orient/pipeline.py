"""The chapter-5 pipeline end to end: distances → orientations → aligned → map → FSC.

:func:`recover_from_images` embeds a stack with a trained Siamese network and recovers the
orientations from the predicted distances (:class:`~cryowedge.spa.orient.recover.EmbeddingOracle`,
so every fresh pair costs a vector difference). :func:`evaluate_orientations` aligns them to
reference orientations (the fixed eq. 5.8) and :func:`reconstruct_with_orientations` makes a map
from a stack with any orientations (:func:`cryowedge.spa.reconstruct.reconstruct_spa`); with a
reference map :func:`score_map` gives its FSC.

The recovered orientations are defined only up to O(4) (a left product, a right product and
an inversion, :mod:`cryowedge.spa.orient.recover`); only the right product is a harmless global
rotation of the map. Reconstructing from unaligned recovered orientations therefore gives a
wrong map in general; the pipeline aligns them with the reference orientations first when
there are some (simulations, or a previous refinement), and says so when there are none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from cryowedge.metrics.fourier import fourier_shell_correlation
from cryowedge.spa.orient.quaternions import as_unit_quaternions, matrix_to_quaternion
from cryowedge.spa.orient.recover import (
    Alignment,
    EmbeddingOracle,
    RecoveryResult,
    align_quaternions,
    aligned_rotations,
    recover_orientations,
)
from cryowedge.spa.orient.siamese import TrainingResult, embed_images
from cryowedge.spa.particles import ParticleStack
from cryowedge.spa.reconstruct import SpaReconstruction, reconstruct_spa

__all__ = [
    "MapScore",
    "OrientationEvaluation",
    "recover_from_images",
    "evaluate_orientations",
    "reconstruct_with_orientations",
    "score_map",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def recover_from_images(
    net: TrainingResult,
    images: np.ndarray,
    *,
    progress: Progress | None = None,
    **recover_kwargs: Any,
) -> tuple[RecoveryResult, np.ndarray]:
    """Orientations of ``(P, n, n)`` images from the network's distances.

    Returns the :class:`RecoveryResult` and the ``(P, k)`` embeddings. ``recover_kwargs`` go to
    :func:`~cryowedge.spa.orient.recover.recover_orientations`.
    """
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 3 or imgs.shape[0] < 2:
        raise ValueError(f"images must be a (P, n, n) stack with P >= 2, got shape {imgs.shape}.")
    if progress is not None:
        progress("embed images", 0.0)
    emb = embed_images(net, imgs)
    if progress is not None:
        progress("embed images", 1.0)
    res = recover_orientations(EmbeddingOracle(emb), progress=progress, **recover_kwargs)
    return res, emb


@dataclass(frozen=True)
class OrientationEvaluation:
    """Recovered orientations against reference ones.

    Attributes
    ----------
    alignment : Alignment
        The O(4) alignment and the per-particle errors (degrees).
    rotations : numpy.ndarray
        ``(P, 3, 3)`` aligned recovered rotations (in the reference frame).
    """

    alignment: Alignment
    rotations: np.ndarray

    @property
    def mean_error_deg(self) -> float:
        return self.alignment.mean_error_deg

    @property
    def median_error_deg(self) -> float:
        return self.alignment.median_error_deg


def evaluate_orientations(
    recovered: ArrayLike, reference_rotations: ArrayLike, **align_kwargs: Any
) -> OrientationEvaluation:
    """Align ``(P, 4)`` recovered quaternions to ``(P, 3, 3)`` reference rotations (eq. 5.8)."""
    q = as_unit_quaternions(recovered, "recovered")
    ref = matrix_to_quaternion(reference_rotations)
    if ref.shape != q.shape:
        raise ValueError(f"{q.shape[0]} recovered orientations but {ref.shape[0]} references.")
    al = align_quaternions(q, ref, **align_kwargs)
    return OrientationEvaluation(al, aligned_rotations(q, al))


def reconstruct_with_orientations(
    images: np.ndarray,
    rotations: ArrayLike,
    pixel_size_angstrom: float,
    *,
    lam: float = 0.01,
    method: str = "admm_cg",
    n_iter: int | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> SpaReconstruction:
    """TV-regularised map (``(n, n, n)``) from ``(P, n, n)`` images at ``(P, 3, 3)`` rotations."""
    stack = ParticleStack(images=np.asarray(images, dtype=np.float32),
                          pixel_size_angstrom=float(pixel_size_angstrom),
                          rotations=np.asarray(rotations, dtype=np.float64))
    return reconstruct_spa(stack, lam=lam, method=method, n_iter=n_iter, device=device, **kwargs)


@dataclass(frozen=True)
class MapScore:
    """FSC of a map against a reference.

    Attributes
    ----------
    frequency, correlation : numpy.ndarray
        ``(n_shells,)`` shell centres (cycles/pixel) and FSC.
    resolution_05_angstrom, resolution_0143_angstrom : float
        Where the FSC stays below 0.5 / 0.143 (Å; the "stays-below" rule of
        :mod:`cryowedge.metrics.fourier`).
    pixel_size_angstrom : float
    """

    frequency: np.ndarray
    correlation: np.ndarray
    resolution_05_angstrom: float
    resolution_0143_angstrom: float
    pixel_size_angstrom: float

    @property
    def fraction_of_nyquist_05(self) -> float:
        """Nyquist resolution / FSC-0.5 resolution (1 = at Nyquist)."""
        return 2.0 * self.pixel_size_angstrom / self.resolution_05_angstrom

    def as_dict(self) -> dict[str, float]:
        """Resolutions (Å), FSC-0.5 as a fraction of Nyquist, the FSC of the last shell (at
        Nyquist) and the mean FSC over the shells above half Nyquist."""
        high = self.frequency > 0.25
        return {"fsc05_angstrom": self.resolution_05_angstrom,
                "fsc0143_angstrom": self.resolution_0143_angstrom,
                "fsc05_fraction_of_nyquist": self.fraction_of_nyquist_05,
                "fsc_last_shell": float(self.correlation[-1]),
                "fsc_mean_above_half_nyquist": float(np.mean(self.correlation[high]))}


def score_map(volume: ArrayLike, reference: ArrayLike, pixel_size_angstrom: float) -> MapScore:
    """FSC of ``(n, n, n)`` ``volume`` against ``reference`` and the 0.5 / 0.143 resolutions."""
    fsc = fourier_shell_correlation(np.asarray(volume), np.asarray(reference))
    px = float(pixel_size_angstrom)
    return MapScore(
        np.asarray(fsc.frequency_cycles_per_pixel), np.asarray(fsc.correlation),
        fsc.resolution_angstrom(0.5, px, rule="stays-below"),
        fsc.resolution_angstrom(0.143, px, rule="stays-below"), px,
    )
