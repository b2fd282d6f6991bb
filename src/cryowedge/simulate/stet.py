"""Random-beam STET data: projections, Gaussian noise and a random scan mask per tilt.

Forward model (thesis eq. 3.4): ``b = S (H x + n)``; see :mod:`cryowedge.operators.scan`.
Unmeasured pixels are stored as 0. Defaults are those of
:class:`~cryowedge.config.StetSimulateConfig`. :func:`stet_phantom` is the crowded cell with
thin filaments of the STET benchmarks (``benchmarks/results_stet.py``, ``stet_check.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cryowedge.config.models import StetSimulateConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.simulate.scan_mask import check_dose_fraction, random_scan_mask

__all__ = ["StetSimulation", "add_filaments", "simulate_stet", "stet_phantom"]

logger = logging.getLogger(__name__)

_SIM = StetSimulateConfig()


@dataclass(frozen=True)
class StetSimulation:
    """Result of :func:`simulate_stet`.

    Attributes
    ----------
    data
        ``(n_tilts, ny, nx)`` float32 noisy measured values, 0 where not scanned.
    mask
        ``(n_tilts, ny, nx)`` bool scan mask, True = scanned.
    full
        ``(n_tilts, ny, nx)`` float32 full-dose noisy series (every pixel scanned with the
        same per-pixel dose and noise realisation); ``data == full * mask``. T-DS keeps
        whole images of it.
    clean
        ``(n_tilts, ny, nx)`` float32 noise-free projections.
    geometry
        The geometry of the series.
    noise_sigma
        Standard deviation of the added Gaussian noise (projection units).
    """

    data: np.ndarray
    mask: np.ndarray
    full: np.ndarray
    clean: np.ndarray
    geometry: TiltGeometry
    noise_sigma: float

    @property
    def dose_fraction(self) -> float:
        """Measured fraction of the pixels (the dose relative to a full scan)."""
        return float(self.mask.mean())


def simulate_stet(
    volume: Any,
    geometry: TiltGeometry,
    *,
    dose_fraction: float = _SIM.dose_fraction,
    snr: float = _SIM.snr,
    oversample: int = _SIM.oversample,
    seed: int | np.random.Generator | None = _SIM.seed,
    device: torch.device | str | None = None,
) -> StetSimulation:
    """Simulate random-beam STET data ``b = S (H x + n)`` of a ``(z, y, x)`` volume.

    Parameters
    ----------
    volume
        ``(nz, ny, nx)`` density; ``ny`` must equal the detector length along the tilt axis.
    geometry
        Tilt angles (degrees), detector shape, pixel size (Å); aligned (tilt axis along Y, no
        shifts) when ``oversample > 1``.
    dose_fraction
        Fraction of the pixels of every tilt that are scanned, in ``(0, 1]``.
    snr
        Per-pixel Gaussian-noise SNR ``var(clean series) / σ²`` (a ratio, not dB). Scanning
        fewer pixels keeps the dose per scanned pixel, so σ does not depend on the fraction.
    oversample
        Project an ``oversample``-times finer copy of the volume and bin (avoids the inverse
        crime of simulating with the reconstruction operator).
    seed
        Seed or generator for the noise, then the mask; with a fixed seed the full noisy
        series is the same for every ``dose_fraction``.
    device
        Projection device.

    Returns
    -------
    StetSimulation
    """
    from cryowedge.simulate.tilt_series import simulate_tilt_series

    dose_fraction = check_dose_fraction(dose_fraction, "dose_fraction")
    rng = np.random.default_rng(seed)
    sim = simulate_tilt_series(
        volume, geometry, snr=snr, oversample=oversample, rng=rng, device=device
    )
    mask = random_scan_mask(geometry.tilt_series_shape, dose_fraction, seed=rng)
    data = np.where(mask, sim.tilt_series, np.float32(0.0)).astype(np.float32)
    logger.info(
        "STET simulation: %d tilts, %.1f %% of pixels scanned, noise sigma %.4g",
        geometry.n_tilts,
        100.0 * mask.mean(),
        float(sim.noise_sigma[0]),
    )
    return StetSimulation(
        data=data,
        mask=mask,
        full=sim.tilt_series,
        clean=sim.clean,
        geometry=geometry,
        noise_sigma=float(sim.noise_sigma[0]),
    )


def add_filaments(
    volume: np.ndarray,
    n_filaments: int,
    *,
    radius_px: float = 1.2,
    density: float = 0.7,
    seed: int = 0,
) -> np.ndarray:
    """Add straight filaments (Gaussian cross-section σ = ``radius_px``) inside the specimen.

    Filaments lie nearly in the section plane (|z-slope| < 0.15), through random points of
    the middle of the slab; they replace the background (``v = f + (1 − f)·v``) and stop at
    the specimen's surface (voxels of the original volume below 0.02 stay empty).

    Parameters
    ----------
    volume
        ``(nz, ny, nx)`` density in [0, 1] (e.g. a crowded cell).
    n_filaments
        Number of filaments.
    radius_px, density
        Gaussian σ of the cross-section (voxels) and the filaments' peak density.
    seed
        Seed of the positions, directions and lengths.

    Returns
    -------
    numpy.ndarray
        ``(nz, ny, nx)`` float32 in [0, 1].
    """
    nz, ny, nx = volume.shape
    rng = np.random.default_rng(seed)
    z = np.arange(nz, dtype=np.float32)[:, None, None]
    y = np.arange(ny, dtype=np.float32)[None, :, None]
    x = np.arange(nx, dtype=np.float32)[None, None, :]
    fil = np.zeros(volume.shape, dtype=np.float32)
    for _ in range(n_filaments):
        c = (
            nz / 2 + rng.uniform(-0.15, 0.15) * nz,
            rng.uniform(0.2, 0.8) * ny,
            rng.uniform(0.2, 0.8) * nx,
        )
        phi, slope = rng.uniform(0, np.pi), rng.uniform(-0.15, 0.15)
        d = np.array(
            [np.sin(slope), np.cos(slope) * np.sin(phi), np.cos(slope) * np.cos(phi)], np.float32
        )
        rz, ry, rx = z - c[0], y - c[1], x - c[2]
        t = rz * d[0] + ry * d[1] + rx * d[2]
        dist2 = (rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2
        half_length = rng.uniform(0.25, 0.45) * min(ny, nx)
        np.maximum(
            fil, density * np.exp(-dist2 / (2 * radius_px**2)) * (np.abs(t) < half_length), out=fil
        )
    fil *= volume > 0.02
    return np.clip(fil + (1 - fil) * volume, 0.0, 1.0).astype(np.float32)


def stet_phantom(
    shape: tuple[int, int, int] = (48, 96, 96),
    *,
    pixel_size_angstrom: float = 10.0,
    n_particles: int = 8,
    n_filaments: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The STET benchmark phantom: a crowded cell and the same cell with thin filaments.

    Parameters
    ----------
    shape
        ``(nz, ny, nx)`` in voxels; the default is the phantom of ``results_stet.py``.
    pixel_size_angstrom
        Voxel size, Å (sets the particle and vesicle sizes in voxels).
    n_particles, n_filaments
        Particles of the cell; filaments added (:func:`add_filaments`).
    seed
        Seed of the cell and of the filaments.

    Returns
    -------
    tuple of numpy.ndarray
        ``(cell, truth)``, both ``shape`` float32; ``truth − cell`` is the filaments' part.
    """
    from cryowedge.config.models import SimulateConfig
    from cryowedge.simulate.from_config import make_phantom

    cell = make_phantom(
        SimulateConfig(
            shape=shape, pixel_size_angstrom=pixel_size_angstrom, n_particles=n_particles, seed=seed
        )
    )
    return cell, add_filaments(cell, n_filaments, seed=seed)
