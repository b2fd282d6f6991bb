"""Random-beam STET data: projections, Gaussian noise and a random scan mask per tilt.

Forward model (thesis eq. 3.4): ``b = S (H x + n)``; see :mod:`cryowedge.operators.scan`.
Unmeasured pixels are stored as 0. Defaults are those of
:class:`~cryowedge.config.StetSimulateConfig`.
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

__all__ = ["StetSimulation", "simulate_stet"]

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
    sim = simulate_tilt_series(volume, geometry, snr=snr, oversample=oversample, rng=rng, device=device)
    mask = random_scan_mask(geometry.tilt_series_shape, dose_fraction, seed=rng)
    data = np.where(mask, sim.tilt_series, np.float32(0.0)).astype(np.float32)
    logger.info("STET simulation: %d tilts, %.1f %% of pixels scanned, noise sigma %.4g",
                geometry.n_tilts, 100.0 * mask.mean(), float(sim.noise_sigma[0]))
    return StetSimulation(data=data, mask=mask, full=sim.tilt_series, clean=sim.clean,
                          geometry=geometry, noise_sigma=float(sim.noise_sigma[0]))
