"""Fourier-space metrics: Fourier shell/ring correlation and missing-wedge correlations.

Spatial frequencies are in cycles per pixel (Nyquist = 0.5) and a resolution in Å is
``pixel_size_angstrom / frequency`` (docs/conventions.md). Fourier masks/regions are
in NumPy's unshifted FFT order unless ``centered=True`` is passed, in which case the
zero frequency sits at index ``N // 2`` of every axis (as after ``np.fft.fftshift``).

Inputs may be NumPy arrays or torch tensors; computation is in float64 NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._arrays import to_numpy
from .._validation import (
    check_finite,
    check_in_range,
    check_ndim,
    check_positive,
    check_positive_int,
)
from .image import _as_bool_mask, _as_float_array, _prepare_pair

__all__ = [
    "FSCResult",
    "fourier_shell_correlation",
    "fourier_ring_correlation",
    "resolution_at_threshold",
    "threshold_crossings",
    "RESOLUTION_RULES",
    "fourier_region_correlation",
    "missing_wedge_correlations",
]

#: A region/shell whose spectral power is at most this fraction of the input's total
#: spectral power is treated as carrying no signal (its correlation is reported as 0).
#: Power at this level (amplitude ~1e-10 of the signal) is indistinguishable from
#: float64 FFT rounding noise, whose correlation would otherwise be an arbitrary number.
NEGLIGIBLE_POWER_FRACTION = 1e-20

#: Relative tolerance (in shell widths) for assigning a coefficient on a shell boundary.
_BOUNDARY_TOLERANCE = 1e-9


def _safe_correlation(
    cross: np.ndarray | float,
    power_a: np.ndarray | float,
    power_b: np.ndarray | float,
    total_a: float,
    total_b: float,
) -> np.ndarray:
    """``cross / sqrt(power_a power_b)``, 0 where either power is negligible, clipped to [-1, 1]."""
    cross = np.asarray(cross, dtype=np.float64)
    power_a = np.asarray(power_a, dtype=np.float64)
    power_b = np.asarray(power_b, dtype=np.float64)
    live = (power_a > NEGLIGIBLE_POWER_FRACTION * total_a) & (
        power_b > NEGLIGIBLE_POWER_FRACTION * total_b
    )
    out = np.zeros(np.broadcast(cross, power_a, power_b).shape, dtype=np.float64)
    if np.any(live):
        denom = np.sqrt(power_a) * np.sqrt(power_b)  # two roots: no overflow of the product
        np.divide(cross, denom, out=out, where=live)
    return np.clip(out, -1.0, 1.0)


# ----------------------------------------------------------------------------------------
# Resolution from a correlation curve.
# ----------------------------------------------------------------------------------------


#: Rules for reading a resolution off a correlation curve that may cross a threshold more
#: than once, with the sentence a report prints to say which one was used.
RESOLUTION_RULES: dict[str, str] = {
    "first-below": "the first shell where the curve drops below the threshold",
    "stays-below": (
        "the first crossing after which the curve stays below the threshold "
        "(a dip that recovers does not count)"
    ),
}


def _check_curve(
    frequency: Any, correlation: Any, threshold: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Validated float64 ``(frequency, correlation)`` with non-finite shells dropped."""
    freq = np.asarray(to_numpy(frequency), dtype=np.float64)
    corr = np.asarray(to_numpy(correlation), dtype=np.float64)
    if freq.ndim != 1 or corr.ndim != 1 or freq.shape != corr.shape or freq.size == 0:
        raise ValueError(
            "frequency and correlation must be non-empty 1D arrays of equal length, got "
            f"frequency.shape={freq.shape} and correlation.shape={corr.shape}."
        )
    check_finite(freq, "frequency")
    if np.any(freq <= 0) or np.any(np.diff(freq) <= 0):
        raise ValueError(
            "frequency must be strictly increasing and > 0 (cycles per pixel), got "
            f"{np.array2string(freq, threshold=8, precision=4)}."
        )
    threshold = float(threshold)
    check_in_range(threshold, "threshold", -1.0, 1.0, low_inclusive=True, high_inclusive=True)
    finite = np.isfinite(corr)
    if not finite.any():
        raise ValueError("correlation has no finite value; cannot locate a threshold crossing.")
    return freq[finite], corr[finite], threshold


def _interpolate_crossing(freq: np.ndarray, corr: np.ndarray, i: int, threshold: float) -> float:
    """Frequency where the straight line from shell ``i - 1`` to shell ``i`` meets ``threshold``."""
    f0, f1 = freq[i - 1], freq[i]
    c0, c1 = corr[i - 1], corr[i]
    return float(f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1))


def threshold_crossings(
    frequency: Any,
    correlation: Any,
    threshold: float,
    *,
    direction: str = "down",
) -> np.ndarray:
    """Every frequency at which a correlation curve crosses ``threshold``.

    A downward crossing lies between shells ``i - 1`` (``>= threshold``) and ``i``
    (``< threshold``), an upward one between ``i - 1`` (``< threshold``) and ``i``
    (``>= threshold``); its frequency is interpolated linearly between the two shells.
    Non-finite correlation values (empty shells) are skipped.

    Parameters
    ----------
    frequency : array_like, shape (n_shells,)
        Shell centres in cycles per pixel, strictly increasing and > 0.
    correlation : array_like, shape (n_shells,)
        Correlation per shell.
    threshold : float
        Threshold in ``[-1, 1]``, e.g. 0.5 or 0.143.
    direction : {"down", "up", "both"}
        Which crossings to return.

    Returns
    -------
    numpy.ndarray, shape (n_crossings,)
        Crossing frequencies in cycles per pixel, ascending (empty if none).
    """
    if direction not in ("down", "up", "both"):
        raise ValueError(f"direction must be 'down', 'up' or 'both', got {direction!r}.")
    freq, corr, threshold = _check_curve(frequency, correlation, threshold)
    below = corr < threshold
    down = np.flatnonzero(~below[:-1] & below[1:]) + 1
    up = np.flatnonzero(below[:-1] & ~below[1:]) + 1
    chosen = {"down": down, "up": up, "both": np.union1d(down, up)}[direction]
    return np.array([_interpolate_crossing(freq, corr, int(i), threshold) for i in chosen],
                    dtype=np.float64)


def resolution_at_threshold(
    frequency: Any,
    correlation: Any,
    threshold: float,
    pixel_size_angstrom: float,
    *,
    rule: str = "first-below",
) -> float:
    """Resolution (Å) where a correlation curve drops below ``threshold``.

    With ``rule="first-below"`` (default) the curve is scanned from low to high frequency
    and the first shell ``i`` with ``correlation[i] < threshold`` counts. With
    ``rule="stays-below"`` the crossing counts after which every later shell is below the
    threshold: a curve that dips below, recovers and falls again is read at its last
    downward crossing (the usual reading of noisy FSC curves; see
    :func:`threshold_crossings` for all of them). The crossing frequency is interpolated
    linearly between shells ``i - 1`` and ``i``, and the resolution is
    ``pixel_size_angstrom / f_cross``. Non-finite correlation values (empty shells)
    are skipped.

    Parameters
    ----------
    frequency : array_like, shape (n_shells,)
        Shell centres in cycles per pixel, strictly increasing and > 0.
    correlation : array_like, shape (n_shells,)
        Correlation per shell.
    threshold : float
        Threshold in ``[-1, 1]``; commonly 0.5 or 0.143 (gold-standard half maps).
    pixel_size_angstrom : float
        Pixel size in Å (> 0).
    rule : {"first-below", "stays-below"}
        Which crossing counts (:data:`RESOLUTION_RULES`).

    Returns
    -------
    float
        Resolution in Å. ``2 * pixel_size_angstrom`` (Nyquist) if the curve never drops
        below the threshold (for ``"stays-below"``: if its last shell is not below);
        ``inf`` if it is already below at the first shell (for ``"stays-below"``: at
        every shell).
    """
    if rule not in RESOLUTION_RULES:
        raise ValueError(f"rule must be one of {sorted(RESOLUTION_RULES)}, got {rule!r}.")
    freq, corr, threshold = _check_curve(frequency, correlation, threshold)
    pixel_size_angstrom = float(pixel_size_angstrom)
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")

    if rule == "first-below":
        below = np.flatnonzero(corr < threshold)
        if below.size == 0:
            return 2.0 * pixel_size_angstrom
        i = int(below[0])
    else:
        at_or_above = np.flatnonzero(corr >= threshold)
        if at_or_above.size == 0:
            return math.inf
        i = int(at_or_above[-1]) + 1
        if i == corr.size:
            return 2.0 * pixel_size_angstrom
    if i == 0:
        return math.inf
    return pixel_size_angstrom / _interpolate_crossing(freq, corr, i, threshold)


# ----------------------------------------------------------------------------------------
# FSC / FRC
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FSCResult:
    """Fourier shell (3D) or ring (2D) correlation curve.

    Attributes
    ----------
    frequency_cycles_per_pixel : numpy.ndarray, shape (n_shells,)
        Shell centres in cycles per pixel, ``k * width`` for ``k = 1 .. n_shells``.
    correlation : numpy.ndarray, shape (n_shells,)
        Correlation per shell, in ``[-1, 1]`` (0 where a shell carries no signal in
        either input).
    n_coefficients : numpy.ndarray of int, shape (n_shells,)
        Number of (full-FFT) Fourier coefficients in each shell.
    """

    frequency_cycles_per_pixel: np.ndarray
    correlation: np.ndarray
    n_coefficients: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("frequency_cycles_per_pixel", "correlation", "n_coefficients"):
            arr = np.array(getattr(self, name), copy=True)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        n = self.frequency_cycles_per_pixel.shape
        if self.correlation.shape != n or self.n_coefficients.shape != n:
            raise ValueError(
                "FSCResult arrays must share one 1D shape, got "
                f"frequency_cycles_per_pixel.shape={n}, correlation.shape="
                f"{self.correlation.shape}, n_coefficients.shape={self.n_coefficients.shape}."
            )

    @property
    def n_shells(self) -> int:
        """Number of shells."""
        return int(self.frequency_cycles_per_pixel.size)

    def resolution_angstrom(
        self, threshold: float, pixel_size_angstrom: float, *, rule: str = "first-below"
    ) -> float:
        """Resolution in Å at the crossing below ``threshold`` chosen by ``rule``.

        See :func:`resolution_at_threshold` (``rule`` ``"first-below"`` or
        ``"stays-below"``; linear interpolation between shells; ``2 * pixel_size_angstrom``
        if never below, ``inf`` if below from the first shell).
        """
        return resolution_at_threshold(
            self.frequency_cycles_per_pixel, self.correlation, threshold, pixel_size_angstrom,
            rule=rule,
        )

    def crossings(self, threshold: float, *, direction: str = "down") -> np.ndarray:
        """Every frequency (cycles/px) where the curve crosses ``threshold``.

        See :func:`threshold_crossings`; ``direction`` is ``"down"``, ``"up"`` or ``"both"``.
        """
        return threshold_crossings(
            self.frequency_cycles_per_pixel, self.correlation, threshold, direction=direction
        )


def _frequency_radius_rfft(shape: tuple[int, ...]) -> np.ndarray:
    """|f| in cycles/px on the ``rfftn`` grid of a real array of ``shape``."""
    axes = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    r2 = np.zeros(tuple(len(a) for a in axes), dtype=np.float64)
    for i, f in enumerate(axes):
        view = [1] * len(axes)
        view[i] = f.size
        r2 = r2 + (f * f).reshape(view)
    return np.sqrt(r2)


def _hermitian_weights(n_last: int) -> np.ndarray:
    """Multiplicity of each ``rfftn`` column in the full FFT (1 for DC and even Nyquist, else 2)."""
    w = np.full(n_last // 2 + 1, 2.0)
    w[0] = 1.0
    if n_last % 2 == 0:
        w[-1] = 1.0
    return w


def fourier_shell_correlation(
    a: Any,
    b: Any,
    *,
    n_shells: int | None = None,
    mask: Any = None,
) -> FSCResult:
    """Fourier shell correlation (3D) or Fourier ring correlation (2D) of two maps.

    For every shell ``S_k``,
    ``FSC_k = Re(sum_{S_k} A conj(B)) / sqrt(sum_{S_k} |A|^2 * sum_{S_k} |B|^2)``.
    The radius of a Fourier coefficient is the length of its frequency vector in cycles
    per pixel with each axis normalised by its own length (``np.fft.fftfreq(n)``), so
    non-cubic boxes are handled. With shell width ``w`` the k-th shell (``k = 1 ..
    n_shells``, centre ``k * w``) holds the coefficients with
    ``(k - 1/2) w <= |f| < (k + 1/2) w`` (a coefficient on a boundary, up to a relative
    rounding tolerance of 1e-9, goes to the outer shell); the DC term is excluded, the few non-zero
    frequencies below ``w / 2`` (non-cubic boxes only) are added to the first shell, and
    corner frequencies beyond the last shell are ignored. A shell in which either map
    has negligible power (≤ 1e-20 of its total power, i.e. FFT rounding noise) gets
    correlation 0.

    Parameters
    ----------
    a, b : array_like or torch.Tensor, shape (y, x) or (z, y, x)
        Real maps of identical shape (e.g. two half-map reconstructions, or a
        reconstruction and the ground truth).
    n_shells : int, optional
        Number of shells up to Nyquist; the shell width is ``0.5 / n_shells``. Default:
        ``min(shape) // 2`` shells of width ``1 / min(shape)`` (the finest sampling of the
        shortest axis). At most ``min(shape) // 2``.
    mask : array, same shape, optional
        Real-space mask multiplied into both maps before the FFT: boolean, or real
        weights (a soft mask). It must not be all zero.

    Returns
    -------
    FSCResult
        Shell centres (cycles/px), correlations and coefficient counts.

    Notes
    -----
    Computed with ``rfftn``; each coefficient is weighted by its multiplicity in the full
    FFT, so sums and ``n_coefficients`` equal those over the full spectrum.
    """
    a_np, b_np = _prepare_pair(a, b, "a", "b")
    check_ndim(a_np, (2, 3), "a", "(y, x) or (z, y, x)")
    shape = a_np.shape
    n_min = min(shape)
    max_shells = n_min // 2
    if max_shells < 1:
        raise ValueError(
            f"fourier_shell_correlation needs every axis to be at least 2 long, got shape={shape}."
        )
    if n_shells is None:
        n_shells = max_shells
        width = 1.0 / n_min
    else:
        check_positive_int(n_shells, "n_shells")
        n_shells = int(n_shells)
        if n_shells > max_shells:
            raise ValueError(
                f"n_shells must be at most min(shape) // 2 = {max_shells} for shape={shape} "
                f"(narrower shells would be empty along the shortest axis), got {n_shells}."
            )
        width = 0.5 / n_shells

    if mask is not None:
        m = _as_weight_mask(mask, shape)
        a_np = a_np * m
        b_np = b_np * m

    spec_a = np.fft.rfftn(a_np)
    spec_b = np.fft.rfftn(b_np)
    weights = _hermitian_weights(shape[-1])  # broadcasts along the last (rfft) axis

    radius = _frequency_radius_rfft(shape)
    # The tiny offset puts coefficients lying on a shell boundary (common in non-cubic
    # boxes) reliably into the outer shell instead of leaving it to rounding.
    shell = np.floor(radius / width + (0.5 + _BOUNDARY_TOLERANCE)).astype(np.int64)
    shell[shell == 0] = 1
    shell.flat[0] = 0  # DC: excluded
    valid = (shell >= 1) & (shell <= n_shells)

    power_a_all = spec_a.real**2 + spec_a.imag**2
    power_b_all = spec_b.real**2 + spec_b.imag**2
    total_a = float(np.sum(power_a_all * weights))
    total_b = float(np.sum(power_b_all * weights))
    cross_all = spec_a.real * spec_b.real + spec_a.imag * spec_b.imag

    wv = np.broadcast_to(weights, shell.shape)[valid]
    idx = shell[valid]
    length = n_shells + 1
    cross = np.bincount(idx, weights=(cross_all[valid] * wv), minlength=length)[1:]
    power_a = np.bincount(idx, weights=(power_a_all[valid] * wv), minlength=length)[1:]
    power_b = np.bincount(idx, weights=(power_b_all[valid] * wv), minlength=length)[1:]
    counts = np.bincount(idx, weights=wv, minlength=length)[1:]

    corr = _safe_correlation(cross, power_a, power_b, total_a, total_b)
    freq = width * np.arange(1, n_shells + 1, dtype=np.float64)
    return FSCResult(
        frequency_cycles_per_pixel=freq,
        correlation=corr,
        n_coefficients=np.rint(counts).astype(np.int64),
    )


#: Alias: for 2D inputs the shells are rings.
fourier_ring_correlation = fourier_shell_correlation


def _as_weight_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = to_numpy(mask)
    if arr.dtype == np.bool_:
        return _as_bool_mask(arr, shape).astype(np.float64)
    m = _as_float_array(arr, "mask")
    if m.shape != tuple(shape):
        raise ValueError(
            f"mask must have the same shape as the data, got mask.shape={m.shape} "
            f"and data shape={tuple(shape)}."
        )
    if not np.any(m):
        raise ValueError(f"mask is all zero (shape={m.shape}); it must select at least one voxel.")
    return m


# ----------------------------------------------------------------------------------------
# Region / missing-wedge correlations
# ----------------------------------------------------------------------------------------


def _as_region(region: Any, shape: tuple[int, ...], name: str, centered: bool) -> np.ndarray:
    arr = to_numpy(region)
    if arr.dtype != np.bool_:
        raise TypeError(
            f"{name} must be a boolean Fourier-space array (True = include), got "
            f"dtype={arr.dtype} (shape={arr.shape})."
        )
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must have the full FFT shape of the data, got {name}.shape={arr.shape} "
            f"and data shape={tuple(shape)} (a half-spectrum rfft mask is not accepted)."
        )
    return np.fft.ifftshift(arr) if centered else arr


def _region_corr(
    spec_x: np.ndarray, spec_r: np.ndarray, region: np.ndarray, total_x: float, total_r: float
) -> float:
    xs = spec_x[region]
    rs = spec_r[region]
    cross = float(np.sum(xs.real * rs.real + xs.imag * rs.imag))
    px = float(np.sum(xs.real**2 + xs.imag**2))
    pr = float(np.sum(rs.real**2 + rs.imag**2))
    return float(_safe_correlation(cross, px, pr, total_x, total_r))


def _spectra(x_np: np.ndarray, r_np: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    spec_x = np.fft.fftn(x_np)
    spec_r = np.fft.fftn(r_np)
    total_x = float(np.sum(spec_x.real**2 + spec_x.imag**2))
    total_r = float(np.sum(spec_r.real**2 + spec_r.imag**2))
    return spec_x, spec_r, total_x, total_r


def fourier_region_correlation(
    x: Any, reference: Any, region: Any, *, centered: bool = False
) -> float:
    """Normalised complex correlation of two maps over a region of Fourier space.

    ``Re(sum_R X conj(Rf)) / sqrt(sum_R |X|^2 * sum_R |Rf|^2)`` where ``X`` and ``Rf``
    are the (full, complex) FFTs of ``x`` and ``reference`` and the sums run over the
    coefficients where ``region`` is ``True``. This is the "correlation inside/outside
    the missing wedge" of DeepDeWedge when ``region`` is (the complement of) the wedge.

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (...), e.g. (z, y, x)
        Real maps of identical shape.
    region : bool array, same shape
        Fourier coefficients to include, in NumPy's unshifted FFT order (or centred,
        see ``centered``). Must contain at least one ``True``.
    centered : bool
        ``True`` if ``region`` has the zero frequency at index ``N // 2`` of each axis.

    Returns
    -------
    float
        Correlation in ``[-1, 1]``. 0 when either map has negligible power in the region
        (≤ 1e-20 of its total power: nothing there to correlate).
    """
    x_np, r_np = _prepare_pair(x, reference)
    reg = _as_region(region, x_np.shape, "region", centered)
    if not reg.any():
        raise ValueError(f"region is empty (all False, shape={reg.shape}).")
    spec_x, spec_r, total_x, total_r = _spectra(x_np, r_np)
    return _region_corr(spec_x, spec_r, reg, total_x, total_r)


def missing_wedge_correlations(
    x: Any, reference: Any, wedge_mask: Any, *, centered: bool = False
) -> dict[str, float]:
    """Fourier correlation of ``x`` with ``reference`` inside and outside the missing wedge.

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (z, y, x)
        Real volumes of identical shape (reconstruction, ground truth).
    wedge_mask : bool array, shape (z, y, x)
        ``True`` at the *unmeasured* Fourier points (the missing wedge, see
        docs/conventions.md), in unshifted FFT order unless ``centered=True`` — e.g. the
        output of ``cryowedge.geometry.missing_wedge_mask``.
    centered : bool
        ``True`` if ``wedge_mask`` has the zero frequency at index ``N // 2``.

    Returns
    -------
    dict
        ``{"inside_wedge": float, "outside_wedge": float}``: the
        :func:`fourier_region_correlation` over the wedge and over its complement, both
        without the DC term. ``inside_wedge`` near 1 means the method restored the
        missing information; 0 means nothing was recovered.
    """
    x_np, r_np = _prepare_pair(x, reference)
    check_ndim(x_np, 3, "x", "(z, y, x)")
    wedge = _as_region(wedge_mask, x_np.shape, "wedge_mask", centered)
    inside = wedge.copy()
    inside.flat[0] = False
    outside = ~wedge
    outside.flat[0] = False
    if not inside.any():
        raise ValueError(
            f"wedge_mask marks no missing Fourier point besides DC (shape={wedge.shape}); "
            "nothing to measure inside the wedge. Is True = missing?"
        )
    if not outside.any():
        raise ValueError(
            f"wedge_mask marks every Fourier point as missing (shape={wedge.shape}); "
            "nothing to measure outside the wedge. Is True = missing?"
        )
    spec_x, spec_r, total_x, total_r = _spectra(x_np, r_np)
    return {
        "inside_wedge": _region_corr(spec_x, spec_r, inside, total_x, total_r),
        "outside_wedge": _region_corr(spec_x, spec_r, outside, total_x, total_r),
    }
