"""Signal-to-noise ratios of a reconstruction against its ground truth, in dB.

``SNR = 10·log10(‖x‖² / ‖x − x̂‖²)`` (the STET thesis's score, ch. 3): over the whole volume
(:func:`snr_db`), over a set of voxels (:func:`masked_snr_db`) or over the part of the
spectrum above a frequency (:func:`high_pass_snr_db`). ``x̂`` is first mapped onto the
truth's grey levels (``normalize``, see :func:`~cryowedge.metrics.normalize_intensity`;
``"affine"`` = least-squares gain and offset, the choice of every results table).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryowedge.metrics.normalize import normalize_intensity

__all__ = ["high_pass_snr_db", "masked_snr_db", "snr_db"]


def _ratio_db(signal: float, error: float) -> float:
    return float(10 * np.log10(signal / error)) if error > 0 else float("inf")


def snr_db(x: Any, truth: np.ndarray, normalize: str = "affine") -> float:
    """``10·log10(‖truth‖² / ‖truth − x‖²)`` in dB over the whole volume.

    Parameters
    ----------
    x, truth
        Reconstruction and ground truth, same shape (e.g. ``(z, y, x)``); ``x`` may be a
        tensor.
    normalize
        ``"none"``, ``"zscore"`` or ``"affine"``: how ``x`` is mapped onto ``truth`` first.
    """
    v = normalize_intensity(x, truth, normalize)
    t = np.asarray(truth, dtype=np.float64)
    return _ratio_db(float(np.sum(t**2)), float(np.sum((t - v) ** 2)))


def masked_snr_db(x: Any, truth: np.ndarray, where: np.ndarray, normalize: str = "affine") -> float:
    """SNR (dB) over the voxels where ``where`` is True (e.g. thin filaments).

    The normalisation (if any) is fitted over the whole volume, then the score is taken
    over ``where`` only.
    """
    v = normalize_intensity(x, truth, normalize)
    t = np.asarray(truth, dtype=np.float64)
    where = np.asarray(where, dtype=bool)
    if where.shape != t.shape or not where.any():
        raise ValueError(
            f"where must be a non-empty bool mask of shape {t.shape}, got {where.shape}."
        )
    return _ratio_db(float(np.sum(t[where] ** 2)), float(np.sum((t[where] - v[where]) ** 2)))


def high_pass_snr_db(
    x: Any, truth: np.ndarray, cutoff: float = 0.15, normalize: str = "affine"
) -> float:
    """SNR (dB) of the spectrum above ``cutoff`` cycles/px (where angular undersampling aliases).

    Sums ``|F truth|²`` and ``|F truth − F x|²`` over the frequencies of radius > ``cutoff``
    (cycles/pixel, Nyquist = 0.5).
    """
    v = normalize_intensity(x, truth, normalize)
    t = np.asarray(truth, dtype=np.float64)
    ft, fv = np.fft.fftn(t), np.fft.fftn(v)
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n) ** 2 for n in t.shape], indexing="ij")))
    hp = k > cutoff
    if not hp.any():
        raise ValueError(f"cutoff {cutoff} cycles/px leaves no frequency (Nyquist is 0.5).")
    return _ratio_db(
        float(np.sum(np.abs(ft[hp]) ** 2)), float(np.sum(np.abs(ft[hp] - fv[hp]) ** 2))
    )
