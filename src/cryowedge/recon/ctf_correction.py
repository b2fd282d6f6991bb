"""CTF correction of tilted views (strip-based phase flipping) and exposure (dose) weighting.

Both act on the views of a tilt series ``(n_tilts, y, x)`` before reconstruction (``cryowedge
reconstruct --ctf-correction``, ``--dose-weighting``) and return float32 NumPy arrays of the same
shape. Pure functions: no file is read here (:mod:`cryowedge.io.defocus` reads the defocus and
exposure of each view).

**Strips.** In a tilted view the defocus changes across the tilt axis: the specimen mid-plane
seen at aligned detector column ``u`` (centred pixels) has defocus ``Δf₀ + p·u·tan θ``
(:func:`cryowedge.simulate.ctf.defocus_at`; at ``θ > 0`` the ``+u`` side is the more
under-focused one, the hand of IMOD, Dynamo and novaCTF, docs/conventions.md). Like IMOD's
``ctfphaseflip``, each view is corrected in strips parallel to the tilt axis, each with its own
defocus. Here the strips are found per pixel, so any tilt-axis angle, per-view shift and
per-view matrix of the :class:`~cryowedge.geometry.tilt.TiltGeometry` works on the raw image:
every raw pixel is mapped to its aligned column ``u`` (``raw = M_t·a + shift_t``), which gives
its defocus offset. The offsets are cut into levels at most ``defocus_tolerance_angstrom``
apart (the strip centres); each level is corrected by FFT of the smallest box that holds its
pixels plus a margin wider than the CTF's delocalisation, and every pixel takes the linear
interpolation of the two levels around its own defocus (IMOD's ``InterpolationWidth``
blending), so strips leave no seams. A view whose whole defocus range is within the tolerance
(an untilted view) is corrected in one piece at its nominal defocus.

**Contrast.** ``ctf_2d`` has ``C(0) = −A < 0`` (dense matter imaged dark).
:func:`cryowedge.simulate.ctf.phase_flip` multiplies by ``sign(C)``, which makes dense matter
bright. With ``keep_contrast=True`` (the default, and what ``reconstruct`` does) the result is
multiplied by ``−1`` more, so the lowest frequencies keep the input's contrast, as IMOD's
``ctfphaseflip`` does (it flips where ``C ≥ 0``). The Wiener-like mode multiplies by
``C / (C² + ε)`` (times ``−1`` with ``keep_contrast``): the phases as phase flipping, the
amplitudes divided by ``|C|`` where ``|C| ≫ √ε``, damped near the zeros.

**Exposure.** Grant & Grigorieff (2015, eLife 4:e06980) measured the critical exposure
``N_e(k) = (0.245 k^−1.665 + 2.81)`` e⁻/Å² at 300 kV (``k`` in 1/Å), scaled by 0.8 at 200 kV
(as in cisTEM; linear in the voltage here). A view taken after a prior exposure ``N₀`` with its
own exposure ``D`` is weighted by the damage averaged over its exposure,
``q(k) = (2 N_e / D)·(exp(−N₀ / 2N_e) − exp(−(N₀ + D) / 2N_e))``, which tends to
``exp(−N₀ / 2N_e)`` for ``D → 0``; ``q(0) = 1``.

Units: defocus in Å (positive = underfocus), angles in degrees, voltage in kV, ``C_s`` in mm,
exposure in e⁻/Å², pixel size in Å, frequencies in cycles/pixel unless named otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from cryowedge._validation import check_ndim, check_positive
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.simulate.ctf import ctf_2d, defocus_at, electron_wavelength_angstrom

__all__ = [
    "CTF_CORRECTION_MODES",
    "axis_columns",
    "critical_exposure",
    "ctf_correct",
    "ctf_correct_view",
    "delocalisation_px",
    "dose_filter",
    "dose_weight",
]

logger = logging.getLogger(__name__)

#: Modes of :func:`ctf_correct` (``"none"`` is the workflow's "do nothing").
CTF_CORRECTION_MODES = ("phase-flip", "wiener")


def axis_columns(geometry: TiltGeometry, view: int) -> np.ndarray:
    """Aligned detector column ``u`` (centred pixels, across the tilt axis) of every raw pixel.

    Inverts ``raw = M_t·a + shift_t`` (``M_t = R(φ)·V_t``, docs/conventions.md) for the
    pixel centres of raw view ``view``; ``u = a_x``.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float64, ``ny, nx = geometry.detector_shape`` (raw pixels).
    """
    ny, nx = geometry.detector_shape
    m_inv = np.linalg.inv(geometry.aligned_to_raw_matrices()[view])
    dy, dx = (0.0, 0.0) if geometry.shifts_px is None else geometry.shifts_px[view]
    ry = np.arange(ny, dtype=np.float64) - ny // 2 - dy
    rx = np.arange(nx, dtype=np.float64) - nx // 2 - dx
    return m_inv[1, 0] * ry[:, None] + m_inv[1, 1] * rx[None, :]


def delocalisation_px(
    defocus_angstrom: float,
    pixel_size_angstrom: float,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
) -> float:
    """How far (pixels) the CTF moves information at the Nyquist frequency.

    ``(λ Δf k + C_s λ³ k³) / p`` with ``k = 1 / (2p)``: the gradient of the phase aberration
    over ``2π``. Strip boxes are padded by twice this (at least 32 px).
    """
    lam = electron_wavelength_angstrom(voltage_kv)
    k = 0.5 / pixel_size_angstrom
    cs = spherical_aberration_mm * 1e7
    return float((lam * abs(defocus_angstrom) * k + cs * lam**3 * k**3) / pixel_size_angstrom)


def _filter_factory(
    mode: str,
    *,
    pixel_size_angstrom: float,
    defocus_u_angstrom: float,
    defocus_v_angstrom: float,
    astigmatism_angle_deg: float,
    phase_shift_deg: float,
    voltage_kv: float,
    spherical_aberration_mm: float,
    amplitude_contrast: float,
    wiener_constant: float,
    keep_contrast: bool,
) -> Callable[[tuple[int, int], float], np.ndarray]:
    """``f(shape, offset_angstrom)`` → half-grid correction filter at defocus + offset."""
    sign = -1.0 if keep_contrast else 1.0

    def make(shape: tuple[int, int], offset: float) -> np.ndarray:
        c = ctf_2d(
            shape,
            pixel_size_angstrom=pixel_size_angstrom,
            defocus_u_angstrom=defocus_u_angstrom + offset,
            defocus_v_angstrom=defocus_v_angstrom + offset,
            astigmatism_angle_deg=astigmatism_angle_deg,
            voltage_kv=voltage_kv,
            spherical_aberration_mm=spherical_aberration_mm,
            amplitude_contrast=amplitude_contrast,
            phase_shift_deg=phase_shift_deg,
            rfft=True,
        ).astype(np.float64)
        if mode == "phase-flip":
            return sign * np.where(c < 0, -1.0, 1.0)
        return sign * c / (c * c + wiener_constant)

    return make


def _filtered(image: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return np.fft.irfft2(np.fft.rfft2(image) * factor, s=image.shape)


def _band_bounds(q_first: np.ndarray, q_last: np.ndarray, lo: float, hi: float) -> tuple[int, int]:
    """Index range ``[a, b)`` of lines whose ``q`` range (affine: its ends) meets ``(lo, hi)``."""
    q_min = np.minimum(q_first, q_last)
    q_max = np.maximum(q_first, q_last)
    hit = np.flatnonzero((q_max > lo) & (q_min < hi))
    if hit.size == 0:
        return 0, 0
    return int(hit[0]), int(hit[-1]) + 1


def ctf_correct_view(
    image: ArrayLike,
    offset_angstrom: ArrayLike,
    make_filter: Callable[[tuple[int, int], float], np.ndarray],
    *,
    defocus_tolerance_angstrom: float | None,
    margin_px: int,
) -> np.ndarray:
    """Correct one ``(ny, nx)`` image whose defocus differs per pixel by an affine offset.

    Parameters
    ----------
    image
        ``(ny, nx)`` raw view.
    offset_angstrom
        ``(ny, nx)`` defocus of each pixel minus the view's nominal defocus (Å); affine in the
        pixel indices (a tilted plane), as :func:`axis_columns` times ``p·tan θ`` gives.
    make_filter
        ``make_filter((h, w), offset)`` → the ``(h, w // 2 + 1)`` half-grid filter of a
        ``(h, w)`` box at nominal defocus + ``offset``.
    defocus_tolerance_angstrom
        Largest defocus step between strip centres (Å); None: the whole view at its nominal
        defocus.
    margin_px
        Padding of each strip's FFT box (pixels).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float64 corrected image.
    """
    img = np.asarray(image, dtype=np.float64)
    offset = np.asarray(offset_angstrom, dtype=np.float64)
    lo, hi = float(offset.min()), float(offset.max())
    if defocus_tolerance_angstrom is None or hi - lo <= defocus_tolerance_angstrom:
        return _filtered(img, make_filter(img.shape, 0.0))
    n_steps = math.ceil((hi - lo) / defocus_tolerance_angstrom)
    step = (hi - lo) / n_steps
    q = (offset - lo) / step  # level coordinate in [0, n_steps]
    ny, nx = img.shape
    out = np.zeros_like(img)
    for j in range(n_steps + 1):
        # Pixels with |q - j| < 1 take part of level j (hat weights sum to 1 everywhere).
        r0, r1 = _band_bounds(q[:, 0], q[:, -1], j - 1.0, j + 1.0)
        c0, c1 = _band_bounds(q[0, :], q[-1, :], j - 1.0, j + 1.0)
        if r1 <= r0 or c1 <= c0:
            continue
        b0, b1 = max(0, r0 - margin_px), min(ny, r1 + margin_px)
        a0, a1 = max(0, c0 - margin_px), min(nx, c1 + margin_px)
        box = img[b0:b1, a0:a1]
        corrected = _filtered(box, make_filter(box.shape, lo + j * step))
        weight = np.clip(1.0 - np.abs(q[r0:r1, c0:c1] - j), 0.0, None)
        out[r0:r1, c0:c1] += weight * corrected[r0 - b0: r1 - b0, c0 - a0: c1 - a0]
    return out


def _per_view(value: ArrayLike | None, n: int, name: str, default: float) -> np.ndarray:
    if value is None:
        return np.full(n, default)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be one value or one per view ({n}), got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values.")
    return arr


def ctf_correct(
    views: ArrayLike,
    geometry: TiltGeometry,
    defocus_u_angstrom: ArrayLike,
    defocus_v_angstrom: ArrayLike | None = None,
    astigmatism_angle_deg: ArrayLike | None = None,
    phase_shift_deg: ArrayLike | None = None,
    *,
    mode: str = "phase-flip",
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    defocus_tolerance_angstrom: float | None = 200.0,
    wiener_constant: float = 0.1,
    keep_contrast: bool = True,
    margin_px: int | None = None,
) -> np.ndarray:
    """CTF-correct every view of a tilt series in strips parallel to the tilt axis.

    See the module docstring for the strips, the defocus hand and the contrast sign.

    Parameters
    ----------
    views
        ``(n_tilts, ny, nx)`` raw views (NumPy array or CPU tensor), as the geometry
        describes them (raw detector; tilt-axis angle, shifts and per-view matrices are used
        to find each pixel's distance from the tilt axis).
    geometry
        The views' geometry (``n_tilts`` views, detector ``(ny, nx)``, pixel size in Å).
    defocus_u_angstrom
        Defocus of each view on the tilt axis (Å, > 0 = underfocus): one value or ``(n_tilts,)``.
    defocus_v_angstrom
        Defocus across the astigmatism azimuth (Å); default ``defocus_u_angstrom``.
    astigmatism_angle_deg
        Azimuth of ``defocus_u`` (degrees from raw ``+x`` towards ``+y``); default 0.
    phase_shift_deg
        Extra phase shift (degrees, phase plate); default 0.
    mode
        ``"phase-flip"`` (multiply by ``±sign C``) or ``"wiener"`` (``±C / (C² + ε)``).
    voltage_kv, spherical_aberration_mm, amplitude_contrast
        Microscope (kV, mm, fraction in [0, 1]).
    defocus_tolerance_angstrom
        Largest defocus step between strip centres (Å); pixels between two strip centres
        interpolate linearly. None: each view in one piece at its tilt-axis defocus (no
        strips).
    wiener_constant
        ``ε > 0`` of the Wiener-like mode (an inverse SNR); ignored for phase flipping.
    keep_contrast
        Keep the input's contrast at the lowest frequencies, like IMOD (default); False
        equals :func:`cryowedge.simulate.ctf.phase_flip` on an untilted view (dense bright).
    margin_px
        Padding of each strip's FFT box (pixels); default twice the delocalisation at
        Nyquist (:func:`delocalisation_px`) at the largest defocus, at least 32.

    Returns
    -------
    numpy.ndarray
        ``(n_tilts, ny, nx)`` float32 corrected views.

    Raises
    ------
    ValueError
        Views that do not match the geometry, a mode that does not exist, a non-positive
        defocus, tolerance or Wiener constant.
    """
    if mode not in CTF_CORRECTION_MODES:
        raise ValueError(f"CTF correction mode must be one of {CTF_CORRECTION_MODES}, got "
                         f"{mode!r}.")
    data = np.asarray(views, dtype=np.float64)
    check_ndim(data, 3, "views", "(n_tilts, y, x)")
    n = geometry.n_tilts
    if data.shape != (n, *geometry.detector_shape):
        raise ValueError(f"views have shape {data.shape} but the geometry describes "
                         f"{(n, *geometry.detector_shape)} (n_tilts, y, x).")
    du = _per_view(defocus_u_angstrom, n, "defocus_u_angstrom", 0.0)
    dv = _per_view(defocus_v_angstrom, n, "defocus_v_angstrom", 0.0) if (
        defocus_v_angstrom is not None) else du
    if np.any(du <= 0) or np.any(dv <= 0):
        raise ValueError(f"defocus must be > 0 Å (underfocus) for every view, got "
                         f"{float(min(du.min(), dv.min())):.1f} Å.")
    angle = _per_view(astigmatism_angle_deg, n, "astigmatism_angle_deg", 0.0)
    phase = _per_view(phase_shift_deg, n, "phase_shift_deg", 0.0)
    if defocus_tolerance_angstrom is not None:
        check_positive(defocus_tolerance_angstrom, "defocus_tolerance_angstrom")
    check_positive(wiener_constant, "wiener_constant")
    px = geometry.pixel_size_angstrom
    tilts = geometry.tilt_angles_deg
    if margin_px is None:
        worst = float(np.max(np.maximum(du, dv))) + px * max(geometry.detector_shape) * float(
            np.max(np.abs(np.tan(np.deg2rad(np.clip(tilts, -89.0, 89.0))))))
        margin_px = max(32, math.ceil(2 * delocalisation_px(worst, px, voltage_kv,
                                                            spherical_aberration_mm)))
    out = np.empty(data.shape, dtype=np.float32)
    for t in range(n):
        make = _filter_factory(
            mode, pixel_size_angstrom=px, defocus_u_angstrom=float(du[t]),
            defocus_v_angstrom=float(dv[t]), astigmatism_angle_deg=float(angle[t]),
            phase_shift_deg=float(phase[t]), voltage_kv=voltage_kv,
            spherical_aberration_mm=spherical_aberration_mm,
            amplitude_contrast=amplitude_contrast, wiener_constant=wiener_constant,
            keep_contrast=keep_contrast,
        )
        offset = defocus_at(axis_columns(geometry, t), float(tilts[t]), 0.0, px)
        out[t] = ctf_correct_view(data[t], offset, make,
                                  defocus_tolerance_angstrom=defocus_tolerance_angstrom,
                                  margin_px=int(margin_px))
    logger.debug("CTF-corrected %d views (%s, tolerance %s Å, margin %d px)", n, mode,
                 defocus_tolerance_angstrom, margin_px)
    return out


# --------------------------------------------------------------------------- exposure


def _voltage_scale(voltage_kv: float) -> float:
    """Critical-exposure scale: 1 at 300 kV, 0.8 at 200 kV, linear in between and beyond."""
    check_positive(voltage_kv, "voltage_kv")
    if not 200.0 <= voltage_kv <= 300.0:
        logger.warning("critical exposure measured at 300 kV (and scaled to 200 kV); %.0f kV is "
                       "extrapolated linearly", voltage_kv)
    return max(0.1, 1.0 - 0.2 * (300.0 - voltage_kv) / 100.0)


def critical_exposure(frequency_per_angstrom: ArrayLike, voltage_kv: float = 300.0) -> np.ndarray:
    """Grant & Grigorieff (2015) critical exposure ``N_e(k)`` (e⁻/Å²) at spatial frequency ``k``.

    ``N_e = (0.245 k^−1.665 + 2.81) · s(V)`` with ``k`` in 1/Å and ``s = 1`` at 300 kV, 0.8 at
    200 kV. ``k = 0`` gives ``inf`` (no damage at zero frequency).

    Parameters
    ----------
    frequency_per_angstrom
        Spatial frequencies (1/Å, >= 0), any shape.
    voltage_kv
        Acceleration voltage (kV).

    Returns
    -------
    numpy.ndarray
        Critical exposure (e⁻/Å², float64), same shape.
    """
    k = np.abs(np.asarray(frequency_per_angstrom, dtype=np.float64))
    with np.errstate(divide="ignore"):
        ne = 0.245 * np.power(k, -1.665) + 2.81
    return ne * _voltage_scale(voltage_kv)


def dose_filter(
    shape: tuple[int, int],
    pixel_size_angstrom: float,
    prior_dose: float,
    own_dose: float = 0.0,
    voltage_kv: float = 300.0,
) -> np.ndarray:
    """Exposure filter ``q(k)`` of one view on the ``rfft2`` half grid of a ``(ny, nx)`` image.

    ``q = (2N_e/D)(exp(−N₀/2N_e) − exp(−(N₀+D)/2N_e))`` for own exposure ``D > 0``, and
    ``exp(−N₀/2N_e)`` for ``D = 0`` (module docstring); ``q = 1`` at zero frequency.

    Parameters
    ----------
    shape
        ``(ny, nx)`` image shape (pixels).
    pixel_size_angstrom
        Pixel size (Å).
    prior_dose
        Exposure before the view, ``N₀`` (e⁻/Å², >= 0).
    own_dose
        Exposure of the view itself, ``D`` (e⁻/Å², >= 0).
    voltage_kv
        Acceleration voltage (kV).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx // 2 + 1)`` float64 weights in (0, 1], unshifted FFT order.
    """
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")
    check_positive(prior_dose, "prior_dose", allow_zero=True)
    check_positive(own_dose, "own_dose", allow_zero=True)
    ny, nx = (int(s) for s in shape)
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    k = np.sqrt(ky**2 + kx**2) / pixel_size_angstrom
    ne = critical_exposure(k, voltage_kv)
    with np.errstate(divide="ignore", invalid="ignore"):
        if own_dose > 0:
            q = (2 * ne / own_dose) * (np.exp(-prior_dose / (2 * ne))
                                       - np.exp(-(prior_dose + own_dose) / (2 * ne)))
        else:
            q = np.exp(-prior_dose / (2 * ne))
    q[k == 0] = 1.0
    return q


def dose_weight(
    views: ArrayLike,
    pixel_size_angstrom: float,
    prior_dose: ArrayLike,
    own_dose: ArrayLike | None = None,
    voltage_kv: float = 300.0,
) -> np.ndarray:
    """Weight each view by its exposure filter (:func:`dose_filter`).

    Parameters
    ----------
    views
        ``(n_tilts, ny, nx)`` views.
    pixel_size_angstrom
        Pixel size of the views (Å).
    prior_dose
        ``(n_tilts,)`` exposure received before each view (e⁻/Å²).
    own_dose
        ``(n_tilts,)`` exposure of each view (e⁻/Å²); default 0 (filter at ``N₀``).
    voltage_kv
        Acceleration voltage (kV).

    Returns
    -------
    numpy.ndarray
        ``(n_tilts, ny, nx)`` float32 weighted views.
    """
    data = np.asarray(views, dtype=np.float64)
    check_ndim(data, 3, "views", "(n_tilts, y, x)")
    n = data.shape[0]
    prior = _per_view(prior_dose, n, "prior_dose", 0.0)
    own = _per_view(own_dose, n, "own_dose", 0.0)
    out = np.empty(data.shape, dtype=np.float32)
    for t in range(n):
        q = dose_filter(data.shape[1:], pixel_size_angstrom, float(prior[t]), float(own[t]),
                        voltage_kv)
        out[t] = _filtered(data[t], q)
    return out
