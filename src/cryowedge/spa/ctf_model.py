"""Per-particle CTFs of a particle stack, and CTF correction of its images.

The CTF of particle ``p`` is :func:`cryowedge.simulate.ctf.ctf_2d` of its
:class:`~cryowedge.spa.particles.CTFParams` (defocus U/V and angle, voltage, ``C_s``, amplitude
contrast, B-factor envelope ``exp(−B k²/4)``, phase shift), multiplied by its ``scale`` and by
the objective aperture ``Â(k) = 1`` for ``|k| <= cut-off`` (thesis §1.1), on NumPy's unshifted
FFT grid (``fftfreq``; ``rfftfreq`` along ``x`` for the half grid) with ``k`` in cycles/Å =
cycles/pixel ÷ pixel size. For a stack with ``inverted_contrast`` the sign is flipped, so that
``image ≈ apply_ctf(projection, ctf)`` holds for a positive density in both cases.

Corrections (per image, no averaging over particles):

* **phase flip**: multiply the Fourier transform by ``sign(C)``; the effective transfer becomes
  ``|C|`` (non-negative), dense matter becomes bright;
* **Wiener filter**: multiply by ``C / (C² + K)`` with the Wiener constant ``K = 1 / SNR``
  (a flat spectral SNR); the effective transfer is ``C² / (C² + K)``, close to 1 where
  ``C² >> K`` and close to 0 near the CTF's zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike

from cryowedge.simulate.ctf import apply_ctf, ctf_2d, phase_flip
from cryowedge.spa.particles import CTFParams, ParticleStack, _index

__all__ = [
    "aperture_mask",
    "ctf_arrays",
    "stack_ctfs",
    "effective_ctf",
    "wiener_filter",
    "correct_ctf",
    "CTF_CORRECTIONS",
]

logger = logging.getLogger(__name__)

#: Names accepted by :func:`correct_ctf` and :func:`effective_ctf`.
CTF_CORRECTIONS = ("phase_flip", "wiener")


def _frequencies(n: int, pixel_size_angstrom: float, rfft: bool) -> np.ndarray:
    """``(n, n)`` or ``(n, n//2 + 1)`` spatial frequency magnitudes in cycles/Å."""
    ky = np.fft.fftfreq(n)[:, None]
    kx = (np.fft.rfftfreq(n) if rfft else np.fft.fftfreq(n))[None, :]
    return np.hypot(ky, kx) / pixel_size_angstrom


def aperture_mask(
    image_size: int,
    pixel_size_angstrom: float,
    cutoff_per_angstrom: float,
    *,
    rfft: bool = False,
) -> np.ndarray:
    """Objective-aperture mask ``Â(k) = 1`` for ``|k| <= cut-off``, else 0.

    Parameters
    ----------
    image_size : int
        Box size ``n`` (pixels).
    pixel_size_angstrom : float
        Pixel size (Å).
    cutoff_per_angstrom : float
        Cut-off frequency (cycles/Å, > 0); ``1 / cut-off`` is the finest resolution passed (Å).
    rfft : bool
        Half grid ``(n, n // 2 + 1)`` instead of the full ``(n, n)``.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` (or ``(n, n // 2 + 1)``) float32 of 0 and 1 in unshifted FFT order.
    """
    if not (np.isfinite(cutoff_per_angstrom) and cutoff_per_angstrom > 0):
        raise ValueError(f"cutoff_per_angstrom must be > 0 cycles/Å, got {cutoff_per_angstrom!r}.")
    if not (np.isfinite(pixel_size_angstrom) and pixel_size_angstrom > 0):
        raise ValueError(f"pixel_size_angstrom must be > 0 Å, got {pixel_size_angstrom!r}.")
    k = _frequencies(int(image_size), float(pixel_size_angstrom), rfft)
    return (k <= cutoff_per_angstrom).astype(np.float32)


def ctf_arrays(
    params: CTFParams,
    image_size: int,
    pixel_size_angstrom: float,
    *,
    indices: ArrayLike | slice | None = None,
    rfft: bool = False,
    inverted_contrast: bool = False,
) -> np.ndarray:
    """CTFs of particles on the 2D FFT grid of an ``n × n`` image.

    Parameters
    ----------
    params : CTFParams
        Per-particle parameters (``P`` particles).
    image_size : int
        Box size ``n`` (pixels).
    pixel_size_angstrom : float
        Pixel size (Å).
    indices : ints, boolean mask, slice or None
        Which particles (default all ``P``); use it to build the CTFs of a batch.
    rfft : bool
        Half grid ``(n, n // 2 + 1)`` matching ``numpy.fft.rfft2``.
    inverted_contrast : bool
        Multiply by ``−1`` (images with dense matter bright; RELION's CTF sign).

    Returns
    -------
    numpy.ndarray
        ``(k, n, n)`` (or ``(k, n, n // 2 + 1)``) float32 CTFs in unshifted FFT order, one per
        selected particle: ``± scale · ctf_2d(...) · aperture``.
    """
    if not isinstance(params, CTFParams):
        raise TypeError(f"params must be a CTFParams, got {type(params).__name__}.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be an integer number of pixels, got {image_size!r}.")
    if image_size < 2:
        raise ValueError(f"image_size must be >= 2 pixels, got {image_size}.")
    if not (np.isfinite(pixel_size_angstrom) and pixel_size_angstrom > 0):
        raise ValueError(f"pixel_size_angstrom must be > 0 Å, got {pixel_size_angstrom!r}.")
    n = int(image_size)
    idx = np.arange(params.n_particles) if indices is None else _index(indices, params.n_particles)
    width = n // 2 + 1 if rfft else n
    out = np.empty((idx.size, n, width), dtype=np.float32)
    sign = -1.0 if inverted_contrast else 1.0
    mask = None
    if params.aperture_cutoff_per_angstrom is not None:
        mask = aperture_mask(n, pixel_size_angstrom, params.aperture_cutoff_per_angstrom, rfft=rfft)
    for j, i in enumerate(idx):
        c = ctf_2d(
            n, pixel_size_angstrom=float(pixel_size_angstrom), rfft=rfft, **params.ctf_2d_kwargs(i)
        )
        c *= np.float32(sign * params.scale[i])
        if mask is not None:
            c *= mask
        out[j] = c
    return out


def _require_ctf(stack: ParticleStack) -> None:
    if not isinstance(stack, ParticleStack):
        raise TypeError(f"stack must be a ParticleStack, got {type(stack).__name__}.")
    if stack.ctf is None:
        raise ValueError(
            "this particle stack has no CTF parameters; read it with ctf=True from a STAR file "
            "with rlnDefocusU/rlnDefocusV, or set stack.replace(ctf=CTFParams(...))."
        )


def stack_ctfs(
    stack: ParticleStack, indices: ArrayLike | slice | None = None, *, rfft: bool = False
) -> np.ndarray:
    """CTFs that map a positive density's projections to this stack's images.

    :func:`ctf_arrays` with the stack's box, pixel size and ``inverted_contrast``.

    Parameters
    ----------
    stack : ParticleStack
        Particles with CTF parameters.
    indices : ints, boolean mask, slice or None
        Which particles (default all).
    rfft : bool
        Half grid ``(n, n // 2 + 1)``.

    Returns
    -------
    numpy.ndarray
        ``(k, n, n)`` (or ``(k, n, n // 2 + 1)``) float32, unshifted FFT order.
    """
    _require_ctf(stack)
    return ctf_arrays(
        stack.ctf,
        stack.image_size,
        stack.pixel_size_angstrom,
        indices=indices,
        rfft=rfft,
        inverted_contrast=stack.inverted_contrast,
    )


def _wiener_constant(wiener_constant: float | None, snr: float | None) -> float:
    if wiener_constant is not None and snr is not None:
        raise ValueError("give either wiener_constant or snr (K = 1 / snr), not both.")
    if snr is not None:
        if not (np.isfinite(snr) and snr > 0):
            raise ValueError(f"snr must be > 0, got {snr!r}.")
        return 1.0 / float(snr)
    k = 0.1 if wiener_constant is None else wiener_constant
    if not (np.isfinite(k) and k > 0):
        raise ValueError(
            f"wiener_constant must be > 0 (K = 1/SNR; K = 0 divides by the CTF's zeros), got {k!r}."
        )
    return float(k)


def effective_ctf(
    ctfs: ArrayLike,
    method: str = "phase_flip",
    *,
    wiener_constant: float | None = None,
    snr: float | None = None,
) -> np.ndarray:
    """Transfer function left after a correction: ``|C|`` or ``C² / (C² + K)``.

    Parameters
    ----------
    ctfs : array_like
        ``(..., n, n)`` (or half grid) CTFs.
    method : {"phase_flip", "wiener"}
        The correction.
    wiener_constant, snr : float, optional
        ``K`` of the Wiener filter (default 0.1), or the SNR with ``K = 1 / snr``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``ctfs``, float32, non-negative.
    """
    c = np.asarray(ctfs, dtype=np.float64)
    method = _method(method)
    if method == "phase_flip":
        return np.abs(c).astype(np.float32)
    k = _wiener_constant(wiener_constant, snr)
    return (c * c / (c * c + k)).astype(np.float32)


def _method(method: str) -> str:
    m = str(method).lower().replace("-", "_")
    if m not in CTF_CORRECTIONS:
        raise ValueError(
            f"unknown CTF correction {method!r}; choose one of: {', '.join(CTF_CORRECTIONS)}."
        )
    return m


def wiener_filter(
    images: ArrayLike,
    ctfs: ArrayLike,
    *,
    wiener_constant: float | None = None,
    snr: float | None = None,
) -> np.ndarray:
    """Wiener-filter images: multiply their Fourier transforms by ``C / (C² + K)``.

    Parameters
    ----------
    images : array_like
        ``(..., n, n)`` real images.
    ctfs : array_like
        CTFs (full ``(..., n, n)`` or half grid ``(..., n, n // 2 + 1)``, unshifted FFT order),
        broadcast against the images' leading dimensions, e.g. :func:`stack_ctfs`.
    wiener_constant : float, optional
        ``K > 0`` (default 0.1): the inverse of the assumed spectral SNR.
    snr : float, optional
        Alternatively the SNR, ``K = 1 / snr``.

    Returns
    -------
    numpy.ndarray
        ``(..., n, n)`` float32 filtered images (periodic boundary).
    """
    k = _wiener_constant(wiener_constant, snr)
    c = np.asarray(ctfs, dtype=np.float64)
    return apply_ctf(images, c / (c * c + k))


def _batches(idx: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, idx.size, batch_size):
        yield idx[start : start + batch_size]


def correct_ctf(
    stack: ParticleStack,
    method: str = "phase_flip",
    *,
    wiener_constant: float | None = None,
    snr: float | None = None,
    indices: ArrayLike | slice | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """CTF-corrected images of a stack (phase flip or Wiener filter, per image).

    The CTF carries the stack's contrast sign, so after either correction dense matter is
    bright whether or not ``stack.inverted_contrast`` is set.

    Parameters
    ----------
    stack : ParticleStack
        Particles with CTF parameters.
    method : {"phase_flip", "wiener"}
        ``"phase_flip"`` (:func:`cryowedge.simulate.ctf.phase_flip`) or ``"wiener"``
        (:func:`wiener_filter`).
    wiener_constant, snr : float, optional
        Wiener constant ``K`` (default 0.1) or SNR (``K = 1 / snr``); ``"wiener"`` only.
    indices : ints, boolean mask, slice or None
        Which particles (default all).
    batch_size : int
        Images processed at once (bounds the memory of the FFTs).

    Returns
    -------
    numpy.ndarray
        ``(k, n, n)`` float32 corrected images. Their shifts, rotations and CTF parameters
        are the stack's; ``stack.replace(images=...)`` makes a stack of them (do not apply
        the CTF to them again).
    """
    method = _method(method)
    if method == "phase_flip" and (wiener_constant is not None or snr is not None):
        raise ValueError("wiener_constant and snr apply to method='wiener' only.")
    if method == "wiener":
        _wiener_constant(wiener_constant, snr)  # validate before any work
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    _require_ctf(stack)
    idx = np.arange(stack.n_particles) if indices is None else _index(indices, stack.n_particles)
    n = stack.image_size
    out = np.empty((idx.size, n, n), dtype=np.float32)
    done = 0
    for batch in _batches(idx, int(batch_size)):
        c = stack_ctfs(stack, batch, rfft=True)
        images = np.asarray(stack.images[batch], dtype=np.float64)
        if method == "phase_flip":
            out[done : done + batch.size] = phase_flip(images, c)
        else:
            out[done : done + batch.size] = wiener_filter(
                images, c, wiener_constant=wiener_constant, snr=snr
            )
        done += batch.size
    logger.debug("%s-corrected %d particle images", method, idx.size)
    return out
