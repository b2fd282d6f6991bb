"""Dose-reduction sampling patterns for STEM tomography (thesis ch. 3, RB-STET).

Two ways to spend a fraction ``f`` of the full electron dose on a tilt series
``(n_tilts, ny, nx)`` (docs/conventions.md), with the same dose per scanned pixel:

* **I-DS** (image downsampling, random-beam STET): every tilt is recorded, but the beam
  visits only a uniformly random fraction ``f`` of the pixels of each image, with an
  independent pattern per tilt (:func:`random_scan_mask`). The scan mask is the diagonal
  sampling operator ``S`` of ``b = S H x``.
* **T-DS** (tilt downsampling): only every ``1/f``-th tilt is recorded, with all pixels
  (:func:`uniform_tilt_subset`).

Counts are rounded half up, so ``f = 0.5`` of 141 tilts keeps 71 (every second tilt).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["random_scan_mask", "uniform_tilt_subset", "check_dose_fraction"]

logger = logging.getLogger(__name__)


def check_dose_fraction(fraction: float, name: str = "fraction") -> float:
    """Return ``fraction`` as a float if it lies in ``(0, 1]``; raise a ``ValueError`` otherwise."""
    if isinstance(fraction, bool):
        raise ValueError(f"{name} must be a number in (0, 1], got {fraction!r}.")
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {fraction!r}.") from None
    if not np.isfinite(value) or not 0.0 < value <= 1.0:
        hint = " (a percentage? pass 0.3 for 30 %)" if 1.0 < value <= 100.0 else ""
        raise ValueError(
            f"{name} must lie in (0, 1], got {fraction!r}{hint}; it is the fraction of the "
            "full dose (of the pixels or tilts) that is measured."
        )
    return value


def _round_half_up(value: float) -> int:
    # Python's round() rounds half to even (round(70.5) == 70); dose counts round half up.
    return int(np.floor(value + 0.5))


def random_scan_mask(
    shape: Sequence[int],
    fraction: float,
    *,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Independent uniformly random scan pattern per tilt (I-DS / random-beam STET).

    Parameters
    ----------
    shape
        ``(n_tilts, ny, nx)`` of the tilt series (pixels).
    fraction
        Fraction of the pixels of each image that the beam scans, in ``(0, 1]``.
    seed
        Integer seed or ``numpy.random.Generator``; a fixed seed gives the same mask.

    Returns
    -------
    numpy.ndarray
        ``(n_tilts, ny, nx)`` bool, ``True`` = measured. Every tilt has exactly
        ``round(fraction · ny · nx)`` measured pixels (rounded half up), drawn without
        replacement and independently of the other tilts.

    Raises
    ------
    ValueError
        If ``shape`` is not three positive sizes, ``fraction`` is outside ``(0, 1]``, or
        ``fraction`` is so small that no pixel of an image would be measured.
    """
    dims = tuple(np.atleast_1d(np.asarray(shape)).tolist())
    if len(dims) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
        raise ValueError(
            f"shape must be (n_tilts, ny, nx) with three positive integer sizes, got {shape!r}."
        )
    n_tilts, ny, nx = (int(d) for d in dims)
    fraction = check_dose_fraction(fraction)
    n_pixels = ny * nx
    n_measured = _round_half_up(fraction * n_pixels)
    if n_measured < 1:
        raise ValueError(
            f"fraction={fraction!r} of a {ny}×{nx} image measures round({fraction * n_pixels:.3g}) "
            f"= 0 pixels; use fraction >= {0.5 / n_pixels:.3g} or a larger image."
        )
    rng = np.random.default_rng(seed)
    mask = np.zeros((n_tilts, n_pixels), dtype=bool)
    if n_measured == n_pixels:
        mask[:] = True
    else:
        # The k smallest of i.i.d. uniform keys are a uniform k-subset, for every row at once.
        keys = rng.random((n_tilts, n_pixels))
        chosen = np.argpartition(keys, n_measured - 1, axis=1)[:, :n_measured]
        np.put_along_axis(mask, chosen, True, axis=1)
    logger.debug("random scan mask %s: %d of %d pixels per tilt", dims, n_measured, n_pixels)
    return mask.reshape(n_tilts, ny, nx)


def uniform_tilt_subset(n_tilts: int, fraction: float) -> np.ndarray:
    """Indices of ``≈ fraction · n_tilts`` evenly spaced tilts (T-DS), ends included.

    Parameters
    ----------
    n_tilts
        Number of tilts of the full series (stack order = ascending angle for a uniform
        scheme such as −70:1:70).
    fraction
        Fraction of the tilts to keep, in ``(0, 1]``.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` int64 sorted unique indices with ``m = max(1, round(fraction · n_tilts))``
        (rounded half up). For ``m ≥ 2`` the first and last tilt are kept and the rest are
        spaced ``(n_tilts − 1)/(m − 1)`` apart (rounded to the nearest tilt), so the full
        angular range is still covered; ``m = 1`` keeps the middle tilt.

    Raises
    ------
    ValueError
        If ``n_tilts`` is not a positive integer or ``fraction`` is outside ``(0, 1]``.
    """
    if isinstance(n_tilts, bool) or not isinstance(n_tilts, (int, np.integer)) or n_tilts < 1:
        raise ValueError(f"n_tilts must be a positive integer, got {n_tilts!r}.")
    fraction = check_dose_fraction(fraction)
    m = min(int(n_tilts), max(1, _round_half_up(fraction * n_tilts)))
    if m == 1:
        return np.array([int(n_tilts) // 2], dtype=np.int64)
    idx = np.floor(np.linspace(0.0, n_tilts - 1.0, m) + 0.5).astype(np.int64)
    return idx
