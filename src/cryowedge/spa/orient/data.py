"""Projections of a density at known quaternions: the Siamese network's training sets.

The density is prepared exactly as :func:`cryowedge.spa.simulate.simulate_spa` prepares it
(band-limited, resampled, masked; KBWF(2, 10.8, 2) coefficients on the ``n³`` grid, the
truth maximum scaled to 1) and projected by :class:`~cryowedge.spa.projector.SpaProjector`
at the rotations ``R(q)`` of the given quaternions (:mod:`cryowedge.spa.orient.quaternions`).
Noise-free by default, no CTF (the thesis's ch. 5 set-up: 5,000 noiseless projections over half
of SO(3)); ``snr`` adds white Gaussian noise of ``σ² = var(all clean images) / snr``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from cryowedge.spa.orient.quaternions import as_unit_quaternions, quaternion_to_matrix
from cryowedge.spa.particles import ParticleStack
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.simulate import DensitySource, simulate_spa

__all__ = ["ProjectionSet", "DensityModel", "prepare_density", "project_density"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DensityModel:
    """A density ready to project.

    Attributes
    ----------
    coefficients : numpy.ndarray
        ``(n, n, n)`` float64 KBWF(2, 10.8, 2) coefficients.
    truth : numpy.ndarray
        ``(n, n, n)`` float32 map the images are projections of (maximum 1).
    pixel_size_angstrom : float
        Voxel and pixel size (Å).
    blob : Any
        The basis function of the coefficients.
    source : str
        Density name or path.
    """

    coefficients: np.ndarray
    truth: np.ndarray
    pixel_size_angstrom: float
    blob: Any
    source: str

    @property
    def box_size(self) -> int:
        return int(self.truth.shape[0])


@dataclass
class ProjectionSet:
    """Projections and their true orientations.

    Attributes
    ----------
    images : numpy.ndarray
        ``(P, n, n)`` float32 images ``(y, x)``.
    quaternions : numpy.ndarray
        ``(P, 4)`` true unit quaternions ``(w, x, y, z)``.
    pixel_size_angstrom : float
        Pixel size (Å).
    truth : numpy.ndarray or None
        ``(n, n, n)`` map they were made from.
    noise_sigma : float
        Noise standard deviation (0: noise-free).
    """

    images: np.ndarray
    quaternions: np.ndarray
    pixel_size_angstrom: float
    truth: np.ndarray | None = None
    noise_sigma: float = 0.0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def rotations(self) -> np.ndarray:
        """``(P, 3, 3)`` RELION matrices ``R(q)``."""
        return quaternion_to_matrix(self.quaternions)

    def subset(self, index: ArrayLike | slice) -> ProjectionSet:
        return ProjectionSet(self.images[index], self.quaternions[index],
                             self.pixel_size_angstrom, self.truth, self.noise_sigma)

    def to_stack(self, rotations: ArrayLike | None = None) -> ParticleStack:
        """A :class:`ParticleStack` with the true rotations (or the given ``(P, 3, 3)``)."""
        rot = self.rotations if rotations is None else np.asarray(rotations, dtype=np.float64)
        return ParticleStack(images=self.images, pixel_size_angstrom=self.pixel_size_angstrom,
                             rotations=rot)


def prepare_density(
    density: str | os.PathLike[str] | ArrayLike | DensitySource = "1a5t",
    *,
    box_size: int = 32,
    source_pixel_size_angstrom: float | None = None,
    pixel_size_angstrom: float | None = None,
    fill: float = 0.7,
) -> DensityModel:
    """Coefficients and truth of a density on a ``box_size³`` grid (via :func:`simulate_spa`)."""
    sim = simulate_spa(
        density, box_size=box_size, n_particles=1, snr=None, seed=0, oversample=1, fill=fill,
        source_pixel_size_angstrom=source_pixel_size_angstrom,
        pixel_size_angstrom=pixel_size_angstrom,
    )
    return DensityModel(np.asarray(sim.coefficients), sim.truth, sim.pixel_size_angstrom,
                        sim.blob, sim.source)


def project_density(
    model: DensityModel,
    quaternions: ArrayLike,
    *,
    snr: float | None = None,
    seed: int | None = 0,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
    progress: Callable[[str, float], None] | None = None,
) -> ProjectionSet:
    """Project ``model`` at the rotations of ``(P, 4)`` quaternions (module docstring).

    Returns
    -------
    ProjectionSet
        ``(P, n, n)`` float32 images with the quaternions.
    """
    q = as_unit_quaternions(quaternions)
    if q.ndim != 2:
        raise ValueError(f"quaternions must be (P, 4), got shape {q.shape}.")
    if snr is not None and not snr > 0:
        raise ValueError(f"snr must be > 0 (a variance ratio) or None for no noise, got {snr!r}.")
    rot = quaternion_to_matrix(q)
    n = model.box_size
    out = np.empty((q.shape[0], n, n), dtype=np.float32)
    c = torch.as_tensor(model.coefficients, dtype=dtype)
    for p0 in range(0, q.shape[0], batch_size):
        p1 = min(p0 + batch_size, q.shape[0])
        proj = SpaProjector(n, rot[p0:p1], blob=model.blob, dtype=dtype)
        out[p0:p1] = proj.forward(c).to(torch.float32).numpy()
        if progress is not None:
            progress("project", p1 / q.shape[0])
    sigma = 0.0
    if snr is not None:
        sigma = float(np.sqrt(out.var() / snr))
        out += (np.random.default_rng(seed).standard_normal(out.shape) * sigma).astype(np.float32)
    logger.info("projected %s at %d orientations (%d² px, σ = %.3g)", model.source, len(q), n,
                sigma)
    return ProjectionSet(out, q, model.pixel_size_angstrom, model.truth, sigma)
