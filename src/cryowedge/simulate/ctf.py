"""Contrast transfer function (CTF) of a transmission electron microscope.

Formula (research/thesis.md section 1.1, with its typos fixed), for spatial frequency
``k`` in cycles/Å at azimuth ``α`` (measured from the ``+x`` axis towards ``+y``)::

    z(α)  = z_u cos²(α - α0) + z_v sin²(α - α0)              defocus, Å (> 0: underfocus)
    γ(k)  = π λ z(α) k² - (π/2) C_s λ³ k⁴ + φ               phase aberration, rad
    C(k)  = -√(1 - A²) sin γ - A cos γ                        phase + amplitude contrast
    E(k)  = exp(-B k² / 4)                                    B-factor envelope
    CTF   = E · C

with the relativistic electron wavelength ``λ`` (:func:`electron_wavelength_angstrom`),
``C_s`` the spherical aberration, ``A`` the amplitude-contrast fraction and ``φ`` an extra
phase shift (phase plate). **Sign convention:** ``C(0) = -A < 0`` and, at low frequency
in underfocus, ``C < 0``: a positive (dense) object is imaged *dark*, as proteins look in
raw cryo-EM micrographs. Multiply by ``-1`` for "white protein" images.

Frequencies follow docs/conventions.md: the arrays are on NumPy's unshifted FFT grid
(``numpy.fft.fftfreq``; ``rfftfreq`` along ``x`` for the half grid), in cycles per pixel
divided by ``pixel_size_angstrom``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from cryowedge._validation import check_in_range, check_positive, check_positive_int

__all__ = [
    "electron_wavelength_angstrom",
    "ctf_2d",
    "apply_ctf",
    "phase_flip",
    "defocus_at",
    "defocus_of_point",
]

logger = logging.getLogger(__name__)

# CODATA 2018 exact / recommended values (SI).
_PLANCK = 6.62607015e-34  # J s
_ELECTRON_MASS = 9.1093837015e-31  # kg
_ELEMENTARY_CHARGE = 1.602176634e-19  # C
_SPEED_OF_LIGHT = 299792458.0  # m / s


def electron_wavelength_angstrom(voltage_kv: float) -> float:
    """Relativistic de Broglie wavelength of electrons accelerated through ``voltage_kv``.

    ``λ = h / sqrt(2 m e V (1 + e V / (2 m c²)))``; 0.02508 Å at 200 kV, 0.01969 Å at 300 kV.

    Parameters
    ----------
    voltage_kv : float
        Acceleration voltage in kV (> 0).

    Returns
    -------
    float
        Wavelength in Å.
    """
    check_positive(voltage_kv, "voltage_kv")
    v = voltage_kv * 1e3
    energy = _ELEMENTARY_CHARGE * v
    momentum = np.sqrt(
        2.0 * _ELECTRON_MASS * energy * (1.0 + energy / (2.0 * _ELECTRON_MASS * _SPEED_OF_LIGHT**2))
    )
    return float(_PLANCK / momentum * 1e10)


def _shape2(shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape), int(shape))
    shape = tuple(shape)
    if len(shape) != 2:
        raise ValueError(f"shape must be an int or 2 integers (ny, nx), got {shape!r}.")
    for n in shape:
        check_positive_int(n, "shape")
    return int(shape[0]), int(shape[1])


def ctf_2d(
    shape: int | Sequence[int],
    *,
    pixel_size_angstrom: float,
    defocus_u_angstrom: float,
    defocus_v_angstrom: float | None = None,
    astigmatism_angle_deg: float = 0.0,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    b_factor_angstrom2: float = 0.0,
    phase_shift_deg: float = 0.0,
    rfft: bool = False,
) -> np.ndarray:
    """Real CTF sampled on the 2D FFT grid of a ``(ny, nx)`` image.

    See the module docstring for the formula and the sign convention (``C(0) = -A``).

    Parameters
    ----------
    shape : int or (ny, nx)
        Image shape (pixels).
    pixel_size_angstrom : float
        Pixel size (Å).
    defocus_u_angstrom : float
        Defocus along the azimuth ``astigmatism_angle_deg`` (Å, positive = underfocus).
    defocus_v_angstrom : float, optional
        Defocus perpendicular to it (Å); default ``defocus_u_angstrom`` (no astigmatism).
    astigmatism_angle_deg : float
        Azimuth ``α0`` of the ``u`` direction, degrees counter-clockwise from ``+x``
        towards ``+y``.
    voltage_kv : float
        Acceleration voltage (kV).
    spherical_aberration_mm : float
        ``C_s`` (mm, >= 0).
    amplitude_contrast : float
        Amplitude-contrast fraction ``A`` in ``[0, 1]``.
    b_factor_angstrom2 : float
        Envelope B-factor (Å², >= 0): ``exp(-B k² / 4)``.
    phase_shift_deg : float
        Additional phase shift ``φ`` (degrees; e.g. 90 for an ideal phase plate).
    rfft : bool
        Return the half grid ``(ny, nx // 2 + 1)`` matching ``numpy.fft.rfft2``.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` (or ``(ny, nx // 2 + 1)``) float32 CTF in unshifted FFT order.
        At the Nyquist frequency of an even-sized axis (where +0.5 and -0.5
        cycles/pixel are one sample) the value is the average over both signs.
    """
    ny, nx = _shape2(shape)
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")
    if defocus_v_angstrom is None:
        defocus_v_angstrom = defocus_u_angstrom
    for value, name in (
        (defocus_u_angstrom, "defocus_u_angstrom"),
        (defocus_v_angstrom, "defocus_v_angstrom"),
        (astigmatism_angle_deg, "astigmatism_angle_deg"),
        (phase_shift_deg, "phase_shift_deg"),
    ):
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}.")
    check_positive(spherical_aberration_mm, "spherical_aberration_mm", allow_zero=True)
    check_in_range(
        amplitude_contrast, "amplitude_contrast", 0.0, 1.0, low_inclusive=True, high_inclusive=True
    )
    check_positive(b_factor_angstrom2, "b_factor_angstrom2", allow_zero=True)
    lam = electron_wavelength_angstrom(voltage_kv)

    ky = np.fft.fftfreq(ny)[:, None] / pixel_size_angstrom
    kx = (np.fft.rfftfreq(nx) if rfft else np.fft.fftfreq(nx))[None, :] / pixel_size_angstrom
    cs = spherical_aberration_mm * 1e7  # mm -> Å
    a0 = np.deg2rad(astigmatism_angle_deg)
    phase = np.deg2rad(phase_shift_deg)
    a = amplitude_contrast

    def evaluate(ky: np.ndarray, kx: np.ndarray) -> np.ndarray:
        k2 = kx**2 + ky**2
        azimuth = np.arctan2(ky, kx)
        defocus = defocus_u_angstrom * np.cos(azimuth - a0) ** 2 + defocus_v_angstrom * np.sin(
            azimuth - a0
        ) ** 2
        gamma = np.pi * lam * defocus * k2 - 0.5 * np.pi * cs * lam**3 * k2**2 + phase
        out = -np.sqrt(1.0 - a * a) * np.sin(gamma) - a * np.cos(gamma)
        if b_factor_angstrom2 > 0:
            out = out * np.exp(-b_factor_angstrom2 * k2 / 4.0)
        return out

    ctf = evaluate(ky, kx)
    # On an even axis the Nyquist sample stands for both +0.5 and -0.5 cycles/pixel;
    # average the two (they differ for an astigmatic CTF) so that the filter is the same
    # on the full and the half grid and maps real images to real images.
    if ny % 2 == 0 or nx % 2 == 0:
        ky_alt = ky.copy()
        kx_alt = kx.copy()
        if ny % 2 == 0:
            ky_alt[ny // 2] *= -1
        if nx % 2 == 0:
            kx_alt[0, -1 if rfft else nx // 2] *= -1
        ctf = 0.25 * (ctf + evaluate(ky_alt, kx) + evaluate(ky, kx_alt) + evaluate(ky_alt, kx_alt))
    return ctf.astype(np.float32)


def _fourier_multiply(images: np.ndarray, factor: np.ndarray, name: str) -> np.ndarray:
    ny, nx = images.shape[-2:]
    f = np.asarray(factor)
    if f.ndim < 2:
        raise ValueError(f"{name} must be at least 2D (..., ny, nx), got shape {f.shape}.")
    if f.shape[-2] != ny or f.shape[-1] not in (nx, nx // 2 + 1):
        raise ValueError(
            f"{name} shape {f.shape} does not match images {images.shape}: expected "
            f"(..., {ny}, {nx}) (full grid) or (..., {ny}, {nx // 2 + 1}) (rfft=True)."
        )
    # A full grid is reduced to its half grid (its other half is redundant for an even CTF).
    f = f[..., : nx // 2 + 1]
    out = np.fft.irfft2(np.fft.rfft2(images) * f, s=(ny, nx))
    return out.astype(np.float32)


def apply_ctf(images: ArrayLike, ctf: ArrayLike) -> np.ndarray:
    """Convolve images with the CTF (multiply their Fourier transforms).

    Parameters
    ----------
    images : array_like
        ``(..., ny, nx)`` real images (e.g. a tilt series ``(n_tilts, ny, nx)``).
    ctf : array_like
        CTF from :func:`ctf_2d`: full grid ``(..., ny, nx)`` or half grid
        ``(..., ny, nx // 2 + 1)``, in unshifted FFT order; leading dimensions
        broadcast against the images (one CTF per tilt is ``(n_tilts, ny, nx)``).

    Returns
    -------
    numpy.ndarray
        ``(..., ny, nx)`` float32 filtered images (periodic boundary conditions).

    Notes
    -----
    The product is taken on the ``rfft2`` half grid (a full-grid CTF is sliced to
    ``[..., : nx // 2 + 1]``). For a CTF from :func:`ctf_2d` (even, ``C(k) = C(-k)``
    on the grid) this equals ``ifft2(fft2(images) * ctf).real``.
    """
    img = np.asarray(images, dtype=np.float64)
    if img.ndim < 2:
        raise ValueError(f"images must be (..., ny, nx), got shape {img.shape}.")
    return _fourier_multiply(img, ctf, "ctf")


def phase_flip(images: ArrayLike, ctf: ArrayLike) -> np.ndarray:
    """Correct the CTF phases by multiplying the Fourier transform with ``sign(CTF)``.

    ``phase_flip(apply_ctf(x, c), c)`` equals ``x`` filtered with ``|c|``: contrast is
    positive at every frequency (so dense objects become bright, undoing the negative
    sign convention of :func:`ctf_2d`). Frequencies where the CTF is exactly 0 are
    left unchanged (sign +1).

    Parameters
    ----------
    images : array_like
        ``(..., ny, nx)`` real images.
    ctf : array_like
        Full or half-grid CTF as for :func:`apply_ctf`.

    Returns
    -------
    numpy.ndarray
        ``(..., ny, nx)`` float32 phase-flipped images.
    """
    img = np.asarray(images, dtype=np.float64)
    if img.ndim < 2:
        raise ValueError(f"images must be (..., ny, nx), got shape {img.shape}.")
    c = np.asarray(ctf)
    return _fourier_multiply(img, np.where(c < 0, -1.0, 1.0), "ctf")


def _check_tilt_defocus(tilt_angle_deg: float, defocus_angstrom: float, pixel_size_angstrom: float):
    check_in_range(tilt_angle_deg, "tilt_angle_deg", -90.0, 90.0)
    if not np.isfinite(defocus_angstrom):
        raise ValueError(f"defocus_angstrom must be finite, got {defocus_angstrom!r}.")
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")


def defocus_of_point(
    x_px: ArrayLike,
    z_px: ArrayLike,
    tilt_angle_deg: float,
    defocus_angstrom: float,
    pixel_size_angstrom: float,
) -> np.ndarray:
    """Defocus of volume points ``(z, x)`` in the tilt image at ``tilt_angle_deg``.

    ``Δf = Δf₀ − p · h`` with the point's height ``h = −x sin θ + z cos θ`` (pixels) along
    the beam, measured towards the electron source from the plane through the tilt axis
    that is in focus at ``Δf₀``. Underfocus means the objective lens is focused on a plane
    *above* the specimen (towards the source), so a point higher up is *less* underfocused.
    At ``θ = 0`` the volume's ``+z`` points towards the source; ``h`` is the direction
    orthogonal to the projector's detector coordinate ``u = x cos θ + z sin θ``
    (docs/conventions.md, "Handedness and IMOD"). At ``θ > 0`` the points on the specimen
    plane (``z = 0``) at ``+x``, which the projector puts at ``+u``, are the more
    under-focused ones, as IMOD, Dynamo and novaCTF expect.

    Parameters
    ----------
    x_px, z_px : array_like
        Centred volume coordinates (pixels, relative to index ``N // 2``); broadcast together.
    tilt_angle_deg : float
        Tilt angle ``θ`` (degrees, in (−90, 90)).
    defocus_angstrom : float
        Defocus ``Δf₀`` at the tilt axis on the specimen mid-plane (Å, positive = underfocus).
    pixel_size_angstrom : float
        Voxel / detector pixel size ``p`` (Å).

    Returns
    -------
    numpy.ndarray
        Defocus (Å, positive = underfocus), float64, of the broadcast shape of the inputs.
    """
    _check_tilt_defocus(tilt_angle_deg, defocus_angstrom, pixel_size_angstrom)
    theta = np.deg2rad(tilt_angle_deg)
    x = np.asarray(x_px, dtype=np.float64)
    z = np.asarray(z_px, dtype=np.float64)
    height = -x * np.sin(theta) + z * np.cos(theta)
    return defocus_angstrom - pixel_size_angstrom * height


def defocus_at(
    u_px: ArrayLike,
    tilt_angle_deg: float,
    defocus_angstrom: float,
    pixel_size_angstrom: float,
) -> np.ndarray:
    """Defocus of a tilted specimen plane at detector column ``u`` of an aligned image.

    The specimen mid-plane (volume ``z = 0``) tilted by ``θ`` about the tilt axis (image
    ``Y``) is seen at column ``u`` (centred pixels) with defocus
    ``Δf(u) = Δf₀ + p · u · tan θ``: at positive tilts the right side (``+u``, ``+x``) of the
    aligned image is the more under-focused one (the convention of IMOD, Dynamo and
    novaCTF). Equals :func:`defocus_of_point` at ``x = u / cos θ``, ``z = 0``.

    Parameters
    ----------
    u_px : array_like
        Detector columns perpendicular to the tilt axis, centred (pixels, relative to
        ``nx // 2`` of the aligned image), any shape.
    tilt_angle_deg : float
        Tilt angle ``θ`` (degrees, in (−90, 90)).
    defocus_angstrom : float
        Defocus ``Δf₀`` on the tilt axis (Å, positive = underfocus).
    pixel_size_angstrom : float
        Detector pixel size ``p`` (Å).

    Returns
    -------
    numpy.ndarray
        Defocus (Å, positive = underfocus), float64, same shape as ``u_px``.
    """
    _check_tilt_defocus(tilt_angle_deg, defocus_angstrom, pixel_size_angstrom)
    u = np.asarray(u_px, dtype=np.float64)
    return defocus_angstrom + pixel_size_angstrom * u * np.tan(np.deg2rad(tilt_angle_deg))
