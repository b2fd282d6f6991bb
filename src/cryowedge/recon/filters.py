"""Reconstruction filters for FBP / WBP (frequencies in cycles per pixel).

All filters act along the detector axis perpendicular to the tilt axis. The ramp is the
band-limited ramp of Kak & Slaney (its spatial kernel ``h[0] = 1/4``,
``h[odd n] = -1/(π n)²``), so the zero frequency is handled without the DC offset of a
sampled ``|ν|``. Windows and the SIRT-like and radial weightings multiply it.
"""

from __future__ import annotations

import numpy as np

from cryowedge._filter_names import (  # re-exported: the names live in a low module
    FILTER_NAMES,
    WBP_FILTER_NAMES,
    normalise_filter_name,
    normalise_wbp_filter_name,
    preset_radial_cutoff,
)
from cryowedge._validation import check_in_range, check_positive, check_positive_int

__all__ = [
    "FILTER_NAMES",
    "WBP_FILTER_NAMES",
    "normalise_filter_name",
    "normalise_wbp_filter_name",
    "preset_radial_cutoff",
    "padded_length",
    "ramp_response",
    "window",
    "radial_weighting",
    "sirt_like_factor",
    "exact_weighting",
    "EXACT_WEIGHTING_WORK_BYTES",
    "fbp_filter",
]


def padded_length(n: int) -> int:
    """FFT length for filtering ``n`` samples: the next power of two ≥ ``2n`` (avoids
    wrap-around)."""
    return int(2 ** int(np.ceil(np.log2(max(2 * n, 2)))))


def ramp_response(n_padded: int) -> np.ndarray:
    """``(n_padded // 2 + 1,)`` rfft response of the band-limited ramp (≈ ``|ν|``, cycles/px)."""
    n = np.concatenate([np.arange(0, n_padded // 2 + 1), np.arange(-(n_padded // 2) + 1, 0)])
    h = np.zeros(n_padded)
    h[0] = 0.25
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    return np.real(np.fft.rfft(h))


def window(name: str, freq: np.ndarray, cutoff: float = 1.0) -> np.ndarray:
    """Apodisation window on ``freq`` (cycles/px); ``cutoff`` is a fraction of Nyquist (0, 1]."""
    name = normalise_filter_name(name)
    check_in_range(cutoff, "cutoff", 0.0, 1.0, high_inclusive=True)
    r = np.abs(freq) / (0.5 * cutoff)
    if name in ("ram-lak", "sirt", "imod", "none"):
        w = np.ones_like(r)
    elif name == "shepp-logan":
        w = np.sinc(r / 2.0)
    elif name == "cosine":
        w = np.cos(np.pi * r / 2.0)
    elif name == "hamming":
        w = 0.54 + 0.46 * np.cos(np.pi * r)
    else:  # hann
        w = 0.5 + 0.5 * np.cos(np.pi * r)
    return np.where(r <= 1.0, w, 0.0)


def radial_weighting(freq: np.ndarray, cutoff: float, falloff: float) -> np.ndarray:
    """IMOD-style radial low-pass: 1 up to ``cutoff``, then Gaussian with σ = ``falloff``
    (cycles/px)."""
    check_in_range(cutoff, "radial_cutoff", 0.0, 0.5, high_inclusive=True)
    check_positive(falloff, "radial_falloff")
    f = np.abs(freq)
    return np.where(f <= cutoff, 1.0, np.exp(-((f - cutoff) ** 2) / (2.0 * falloff**2)))


def sirt_like_factor(ramp: np.ndarray, iterations: int) -> np.ndarray:
    """Factor turning the ramp into a filter that mimics ``iterations`` SIRT steps.

    With ``AᵀA`` acting as ``1/ramp`` in Fourier space, Landweber from zero gives
    ``x_k = (1 − (1 − α·AᵀA)^k) (AᵀA)⁻¹ Aᵀb``; choosing the step ``α`` so the lowest
    non-zero frequency converges in one step yields the factor ``1 − (1 − α/ramp)^k``
    (1 where ``ramp ≤ α``). High frequencies, where noise dominates, are damped until
    ``k`` grows (cf. Zeng, Med. Phys. 39, 2012).
    """
    check_positive_int(iterations, "sirt_iterations")
    positive = ramp[ramp > 1e-12]
    alpha = float(positive.min()) if positive.size else 1.0
    ratio = np.clip(alpha / np.maximum(ramp, 1e-12), 0.0, 1.0)
    return np.where(ramp <= alpha, 1.0, 1.0 - (1.0 - ratio) ** iterations)


#: Default bound on the work array of :func:`exact_weighting` (bytes).
EXACT_WEIGHTING_WORK_BYTES = 32 * 2**20


def exact_weighting(
    tilt_angles_deg: np.ndarray,
    freq: np.ndarray,
    thickness_px: float,
    *,
    max_work_bytes: int = EXACT_WEIGHTING_WORK_BYTES,
) -> np.ndarray:
    """Exact (Radermacher) weighting ``(n_tilts, n_freq)`` for weighted back-projection.

    Each projection's central slice has thickness ``1/D`` in Fourier space for an object of
    thickness ``D`` (pixels). The weight of tilt ``a`` at frequency ``ν`` is the inverse of
    the local slice density, ``1 / (D · Σ_b Λ(D ν sin|θ_a − θ_b|))`` with ``Λ`` the unit
    triangle. For dense, even sampling it reduces to ``Δθ·|ν|`` (the FBP ramp); at high
    frequencies, where slices no longer overlap, it stops growing, and uneven tilt spacing
    is compensated automatically.

    Parameters
    ----------
    tilt_angles_deg
        ``(n_tilts,)`` tilt angles in degrees.
    freq
        ``(n_freq,)`` frequencies in cycles/px (their sign is ignored).
    thickness_px
        Object thickness ``D`` in pixels (> 0).
    max_work_bytes
        Bound on the float64 work array: the ``(tilts, tilts, frequencies)`` triangle sums
        are evaluated in blocks of tilts and frequencies of at most this many bytes
        (default 32 MiB; a 121-tilt series on a 4k detector would otherwise need ≈ 0.5 GB).
        The result does not depend on it.

    Returns
    -------
    numpy.ndarray
        ``(n_tilts, n_freq)`` float64 weights (1/px).
    """
    check_positive(thickness_px, "thickness_px")
    check_positive_int(max_work_bytes, "max_work_bytes")
    theta = np.deg2rad(np.asarray(tilt_angles_deg, dtype=np.float64)).reshape(-1)
    # D|ν|, (n_freq,)
    scaled = thickness_px * np.abs(np.asarray(freq, dtype=np.float64)).reshape(-1)
    n_tilts, n_freq = theta.size, scaled.size
    dsin = np.abs(np.sin(theta[:, None] - theta[None, :]))  # (a, b)
    # Work block (rows of a, frequencies, all b), b last so each sum runs over a contiguous
    # axis in the same order whatever the block sizes (identical results).
    max_elements = max(1, int(max_work_bytes) // 8)
    rows = max(1, min(n_tilts, max_elements // max(n_tilts, 1)))
    cols = max(1, min(n_freq, max_elements // max(rows * n_tilts, 1)))
    density = np.empty((n_tilts, n_freq), dtype=np.float64)
    work = np.empty((rows, cols, n_tilts), dtype=np.float64)
    for a0 in range(0, n_tilts, rows):
        a1 = min(a0 + rows, n_tilts)
        for f0 in range(0, n_freq, cols):
            f1 = min(f0 + cols, n_freq)
            w = work[: a1 - a0, : f1 - f0]
            np.multiply(scaled[None, f0:f1, None], dsin[a0:a1, None, :], out=w)
            np.subtract(1.0, w, out=w)
            np.maximum(w, 0.0, out=w)  # Λ; the self term b = a gives 1, so density >= 1
            w.sum(axis=-1, out=density[a0:a1, f0:f1])
    density *= thickness_px
    return np.reciprocal(density, out=density)


def fbp_filter(
    n_perp: int,
    filter_name: str = "ram-lak",
    *,
    cutoff: float = 1.0,
    sirt_iterations: int = 10,
    radial_cutoff: float | None = None,
    radial_falloff: float = 0.035,
) -> tuple[int, np.ndarray]:
    """Padded FFT length and ``(n_padded // 2 + 1,)`` rfft filter response for FBP.

    Parameters
    ----------
    n_perp
        Detector length perpendicular to the tilt axis (pixels).
    filter_name
        One of :data:`FILTER_NAMES`; ``"none"`` gives plain (unfiltered) back-projection.
    cutoff
        Window cutoff as a fraction of Nyquist, in (0, 1].
    sirt_iterations
        Iterations mimicked by the ``"sirt"`` filter.
    radial_cutoff, radial_falloff
        Optional IMOD-style radial low-pass (cycles/px); the ``"imod"`` filter implies
        ``radial_cutoff=0.35`` when none is given (with the default fall-off 0.035).
    """
    name = normalise_filter_name(filter_name)
    radial_cutoff = preset_radial_cutoff(name, radial_cutoff)
    n_pad = padded_length(n_perp)
    freq = np.fft.rfftfreq(n_pad)
    if name == "none":
        response = np.ones_like(freq)
    else:
        ramp = ramp_response(n_pad)
        response = ramp * window(name, freq, cutoff)
        if name == "sirt":
            response = response * sirt_like_factor(ramp, sirt_iterations)
    if radial_cutoff is not None:
        response = response * radial_weighting(freq, radial_cutoff, radial_falloff)
    return n_pad, response
