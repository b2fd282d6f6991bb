"""Noise models for simulated projections: additive Gaussian at a target SNR and
shot (Poisson) noise at a given electron dose.

Images are ``(..., ny, nx)`` arrays (a tilt series is ``(n_tilts, ny, nx)``); dose is in
e⁻/Å² and pixel sizes in Å (docs/conventions.md). Both functions are deterministic for
a given ``rng`` (``numpy.random.Generator``, integer seed or ``None``).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike

from cryowedge._validation import check_finite, check_positive

__all__ = ["add_gaussian_noise", "add_poisson_noise"]

logger = logging.getLogger(__name__)


def _as_images(images: ArrayLike) -> np.ndarray:
    img = np.asarray(images, dtype=np.float64)
    if img.ndim < 2:
        raise ValueError(
            f"images must be a (..., ny, nx) array, got shape {img.shape}. "
            "See docs/conventions.md for axis order."
        )
    if not np.isfinite(img).all():  # check_finite imports torch: only call it to report
        check_finite(img, "images")
    return img


def add_gaussian_noise(
    images: ArrayLike,
    *,
    snr: float,
    rng: np.random.Generator | int | None = None,
    per_image: bool = True,
) -> tuple[np.ndarray, float | np.ndarray]:
    """Add white Gaussian noise at a given signal-to-noise ratio.

    ``SNR = var(signal) / σ²`` (a ratio of energies of the mean-free signal, **not** in
    dB; for dB use ``10 ** (snr_db / 10)``). With ``per_image=True`` the signal
    variance is taken over the last two axes of each image, so every image gets its own
    ``σ``; otherwise one global variance over the whole array sets a single ``σ``.

    Parameters
    ----------
    images : array_like
        ``(..., ny, nx)`` clean images.
    snr : float
        Target SNR (> 0).
    rng : numpy.random.Generator or int or None
        Random generator or seed.
    per_image : bool
        Per-image (True) or global (False) signal variance.

    Returns
    -------
    noisy : numpy.ndarray
        ``(..., ny, nx)`` float32 noisy images.
    sigma : float or numpy.ndarray
        Noise standard deviation(s): an array of the batch shape ``...`` if
        ``per_image`` (a 0-d batch gives a float), else a float.

    Raises
    ------
    ValueError
        If ``snr <= 0`` or an image has zero variance (SNR undefined).
    """
    if not np.isfinite(snr) or snr <= 0:
        raise ValueError(
            f"snr must be > 0 (a variance ratio, not dB), got {snr!r}. "
            "Convert decibels with snr = 10 ** (snr_db / 10)."
        )
    img = _as_images(images)
    gen = np.random.default_rng(rng)
    if per_image:
        var = img.var(axis=(-2, -1))
    else:
        var = np.asarray(img.var())
    if np.any(var <= 0):
        raise ValueError(
            "the signal has zero variance (a constant image), so the SNR is undefined; "
            "use add_poisson_noise or add noise with a fixed sigma instead."
        )
    sigma = np.sqrt(var / snr)
    noise = gen.standard_normal(img.shape)
    noisy = img + noise * (sigma[..., None, None] if per_image else sigma)
    sigma_out: float | np.ndarray = float(sigma) if sigma.ndim == 0 else sigma
    return noisy.astype(np.float32), sigma_out


def add_poisson_noise(
    images: ArrayLike,
    *,
    dose_e_per_angstrom2: float,
    pixel_size_angstrom: float,
    rng: np.random.Generator | int | None = None,
    contrast: float | None = None,
    return_counts: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Simulate electron shot noise on projections (Beer-Lambert model).

    Each projection value ``p`` (a line integral, docs/conventions.md) attenuates a flat
    beam of ``N0 = dose · pixel_size²`` expected electrons per pixel::

        counts ~ Poisson(N0 · exp(-contrast · (p - p_min)))

    where ``p_min = min(0, min(p))`` over the whole array: projections are shifted only
    if some are negative, so that no pixel receives more than the flat-beam dose. The
    counts are converted back with the inverse of the model,
    ``-log(counts / N0) / contrast + p_min``, so the result has the units of the input
    (noise-free limit: the input itself). Zero counts are replaced by 0.5 before the
    logarithm (a continuity correction that keeps the output finite). The log
    transform is slightly biased at low counts: ``E[noisy] - p ≈ 1 / (2 N0 exp(-c p)) / c``
    (about ``1 / (2 N0)`` projection units per unit contrast on a flat image).

    Parameters
    ----------
    images : array_like
        ``(..., ny, nx)`` projections (line integrals, larger = denser).
    dose_e_per_angstrom2 : float
        Electron dose **per image** in e⁻/Å² (> 0). For a tilt series with total dose
        ``D`` spread evenly over ``n`` tilts, pass ``D / n``.
    pixel_size_angstrom : float
        Detector pixel size (Å).
    rng : numpy.random.Generator or int or None
        Random generator or seed.
    contrast : float, optional
        Attenuation per projection unit (> 0). Default ``1 / max(p - p_min)`` over the
        array: the densest pixel transmits ``exp(-1) ≈ 37 %`` of the beam.
    return_counts : bool
        Also return the raw integer electron counts.

    Returns
    -------
    noisy : numpy.ndarray
        ``(..., ny, nx)`` float32 noisy projections in the units of ``images``.
    counts : numpy.ndarray
        ``(..., ny, nx)`` int64 electron counts (only if ``return_counts``).

    Raises
    ------
    ValueError
        If the dose, pixel size or contrast is not > 0.
    """
    if not np.isfinite(dose_e_per_angstrom2) or dose_e_per_angstrom2 <= 0:
        raise ValueError(
            f"dose_e_per_angstrom2 must be > 0, got {dose_e_per_angstrom2!r}; a zero dose "
            "records no electrons (typical cryo-ET: 1-5 e-/Å² per tilt)."
        )
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")
    img = _as_images(images)
    p_min = min(0.0, float(img.min()))
    shifted = img - p_min
    if contrast is None:
        peak = float(shifted.max())
        contrast = 1.0 / peak if peak > 0 else 1.0
    check_positive(contrast, "contrast")
    n0 = dose_e_per_angstrom2 * pixel_size_angstrom**2
    gen = np.random.default_rng(rng)
    counts = gen.poisson(n0 * np.exp(-contrast * shifted))
    safe = np.maximum(counts, 0.5)
    noisy = (-np.log(safe / n0) / contrast + p_min).astype(np.float32)
    if return_counts:
        return noisy, counts.astype(np.int64)
    return noisy
