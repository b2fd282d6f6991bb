"""Tilt-series simulation from a volume and a :class:`TiltGeometry`.

Projects with :class:`~cryowedge.operators.TiltProjector` (the same operator the
reconstructions use; pass ``oversample=2`` to project a finer copy of the volume and bin,
which avoids the "inverse crime"), optionally applies a CTF, and adds Gaussian noise at a
target SNR or Poisson noise at a dose. The even/odd split draws **independent** noise for
the two half-series, as self-supervised methods need (Noise2Noise on tilt subsets).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from cryowedge._validation import check_finite, check_ndim, check_positive
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.tilt_projector import TiltProjector

__all__ = ["SimulatedTiltSeries", "project_volume", "simulate_tilt_series"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatedTiltSeries:
    """Result of :func:`simulate_tilt_series`.

    Attributes
    ----------
    tilt_series
        ``(n_tilts, ny, nx)`` float32 noisy images.
    clean
        ``(n_tilts, ny, nx)`` float32 noise-free images (after the CTF, if any).
    geometry
        The geometry the series was simulated with.
    noise_sigma
        ``(n_tilts,)`` standard deviation of the added Gaussian noise (NaN for Poisson).
    even, odd
        Optional ``(n_tilts, ny, nx)`` half-dose copies of the series with independent
        noise (same clean signal), like an even/odd movie-frame split; ``tilt_series``
        is then their average.
    """

    tilt_series: np.ndarray
    clean: np.ndarray
    geometry: TiltGeometry
    noise_sigma: np.ndarray
    even: np.ndarray | None = None
    odd: np.ndarray | None = None


def _fine_centre_offset(n: int, k: int) -> float:
    """Centred fine coordinate (fine px) of coarse centre pixel ``n // 2``, ``k``× oversampled.

    Coarse index ``i`` sits at fine index ``k·i + (k-1)/2``; the fine grid's own centre is
    ``(k·n) // 2``. Zero for ``k = 1``; ``(k-1)/2`` for even ``n``; ``-1/2`` or 0 for odd ``n``.
    """
    return k * (n // 2) + (k - 1) / 2 - (k * n) // 2


def project_volume(
    volume: Any,
    geometry: TiltGeometry,
    *,
    oversample: int = 1,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Noise-free projections ``(n_tilts, ny, nx)`` of a ``(z, y, x)`` volume.

    ``oversample > 1`` upsamples the volume (linear interpolation) by that factor, projects
    onto a detector ``oversample`` times finer and bins back, so the data are not generated
    by exactly the operator used to reconstruct them. The fine grid rotates about the same
    physical point as the coarse one (centre pixel ``N // 2``), so a point at centred
    ``(z, x)`` still projects to column ``x·cos θ + z·sin θ`` (docs/conventions.md).
    """
    check_ndim(volume, 3, "volume", "(z, y, x)")
    check_finite(volume, "volume")
    vol = torch.as_tensor(np.asarray(volume, dtype=np.float32))
    if device is not None:
        vol = vol.to(device)
    if oversample == 1:
        op = TiltProjector(geometry, tuple(vol.shape))
        return op(vol).cpu().numpy()
    if int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}.")
    k = int(oversample)
    if (geometry.tilt_axis_angle_deg != 0 or geometry.shifts_px is not None
            or geometry.view_matrices is not None):
        raise ValueError(
            "oversample > 1 needs an aligned geometry (tilt_axis_angle_deg=0, no shifts or "
            "per-view matrices); "
            "simulate aligned data, then warp it."
        )
    # align_corners=False puts fine voxel f at coarse index (f - (k-1)/2) / k: the k fine
    # voxels of a coarse voxel are exactly the k that the binning below sums.
    fine = torch.nn.functional.interpolate(
        vol[None, None], scale_factor=k, mode="trilinear", align_corners=False
    )[0, 0]
    ny, nx = geometry.detector_shape
    nz, _, nx_vol = vol.shape
    # The fine projector rotates about fine pixel (k·N)//2, which is not the image of the
    # coarse centre N//2 under that mapping; a per-tilt detector shift puts the rotation
    # back on the coarse centre (pixels of the fine grid).
    off_z, off_x, off_u = (_fine_centre_offset(n, k) for n in (nz, nx_vol, nx))
    theta = geometry.tilt_angles_rad
    shift_u = off_u - off_x * np.cos(theta) - off_z * np.sin(theta)
    shifts = np.stack([np.zeros_like(shift_u), shift_u], axis=1)
    fine_geom = geometry.with_(detector_shape=(ny * k, nx * k), shifts_px=shifts)
    fine_proj = TiltProjector(fine_geom, tuple(fine.shape))(fine)  # (T, k·ny, k·nx)
    # The fine volume holds k³ times the mass; the projector conserves mass, so summing
    # k×k fine pixels and dividing by k³ gives line integrals in coarse-voxel units.
    binned = fine_proj.reshape(geometry.n_tilts, ny, k, nx, k).sum(dim=(2, 4)) / k**3
    return binned.cpu().numpy()


def _defocus_per_view(defocus_angstrom: Any, n_tilts: int) -> np.ndarray:
    """``(n_tilts,)`` float64 defocus (Å) from one value or one per view."""
    values = np.asarray(defocus_angstrom, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(n_tilts, float(values))
    if values.shape != (n_tilts,) or not np.all(np.isfinite(values)):
        raise ValueError(f"defocus_angstrom must be one finite value or {n_tilts} (one per "
                         f"view), got shape {values.shape}.")
    return values


def _project_with_defocus_gradient(
    volume: Any,
    geometry: TiltGeometry,
    defocus_angstrom: np.ndarray,
    *,
    step_angstrom: float,
    oversample: int,
    device: torch.device | str | None,
    voltage_kv: float,
    spherical_aberration_mm: float,
    amplitude_contrast: float,
) -> np.ndarray:
    """``(n_tilts, ny, nx)`` CTF-affected projections with a defocus per voxel.

    For view ``t`` every voxel ``(z, x)`` has the defocus ``defocus_of_point(x, z, θ_t,
    Δf_t, p)``; voxels are grouped into bands ``step_angstrom`` wide, each band is projected
    on its own and convolved with the CTF at the middle of its defocus range, and the bands
    are summed.
    Empty bands (vacuum) are skipped.
    """
    from cryowedge.simulate.ctf import apply_ctf, ctf_2d, defocus_of_point

    check_ndim(volume, 3, "volume", "(z, y, x)")
    check_finite(volume, "volume")
    vol = np.asarray(volume, dtype=np.float32)
    nz, _, nx_vol = vol.shape
    px = geometry.pixel_size_angstrom
    z = (np.arange(nz) - nz // 2)[:, None]
    x = (np.arange(nx_vol) - nx_vol // 2)[None, :]
    occupied = np.any(vol != 0, axis=1)  # (z, x) columns that hold any density
    out = np.zeros(geometry.tilt_series_shape, dtype=np.float32)
    for t in range(geometry.n_tilts):
        theta = float(geometry.tilt_angles_deg[t])
        defocus = defocus_of_point(x, z, theta, float(defocus_angstrom[t]), px)  # (z, x), Å
        low = float(defocus.min())
        band = np.floor((defocus - low) / step_angstrom).astype(np.int64)
        view = geometry[[t]]
        for b in np.unique(band[occupied]):
            mask = band == b
            part = vol * mask[:, None, :]
            image = project_volume(part, view, oversample=oversample, device=device)
            inside = defocus[mask]  # the band's own range: one value gives that value
            ctf = ctf_2d(geometry.detector_shape, pixel_size_angstrom=px,
                         defocus_u_angstrom=0.5 * float(inside.min() + inside.max()),
                         voltage_kv=voltage_kv, spherical_aberration_mm=spherical_aberration_mm,
                         amplitude_contrast=amplitude_contrast)
            out[t] += apply_ctf(image, ctf)[0]
    return out


def _noise(
    clean: np.ndarray,
    *,
    snr: float | None,
    dose_e_per_angstrom2: float | None,
    pixel_size_angstrom: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    from cryowedge.simulate.noise import add_gaussian_noise, add_poisson_noise

    if snr is not None:
        noisy, sigma = add_gaussian_noise(clean, snr=snr, rng=rng, per_image=False)
        sigma_arr = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (clean.shape[0],)).copy()
        return noisy.astype(np.float32), sigma_arr
    if dose_e_per_angstrom2 is not None:
        noisy = add_poisson_noise(
            clean,
            dose_e_per_angstrom2=dose_e_per_angstrom2,
            pixel_size_angstrom=pixel_size_angstrom,
            rng=rng,
        )
        return np.asarray(noisy, dtype=np.float32), np.full(clean.shape[0], np.nan)
    return clean.copy(), np.zeros(clean.shape[0])


def simulate_tilt_series(
    volume: Any,
    geometry: TiltGeometry,
    *,
    snr: float | None = None,
    dose_e_per_angstrom2: float | None = None,
    defocus_angstrom: float | ArrayLike | None = None,
    voltage_kv: float = 300.0,
    spherical_aberration_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    defocus_gradient: bool = False,
    defocus_step_angstrom: float = 100.0,
    oversample: int = 1,
    even_odd: bool = False,
    rng: np.random.Generator | int | None = None,
    device: torch.device | str | None = None,
) -> SimulatedTiltSeries:
    """Simulate a noisy single-axis tilt series of ``volume``.

    Parameters
    ----------
    volume
        ``(z, y, x)`` density; ``y`` must match the detector length along the tilt axis.
    geometry
        Tilt angles (degrees), detector shape, pixel size (Å), tilt-axis angle, shifts.
    snr
        Gaussian noise with variance ``var(clean) / snr`` (over the whole series).
    dose_e_per_angstrom2
        Poisson noise at this dose **per tilt** (e⁻/Å²), instead of ``snr``.
    defocus_angstrom
        Apply a CTF with this defocus (Å, positive = underfocus) at the tilt axis: one value,
        or ``(n_tilts,)`` per view; ``None`` = no CTF.
    voltage_kv, spherical_aberration_mm, amplitude_contrast
        CTF parameters.
    defocus_gradient
        Give every point its own defocus (:func:`~cryowedge.simulate.ctf.defocus_of_point`:
        ``Δf₀ − p·h`` at height ``h`` along the beam, so at ``θ > 0`` the ``+x`` side is the
        more under-focused one, and thick specimens spread in defocus too): each view is the
        sum, over bands of voxels whose defocus lies within ``defocus_step_angstrom``, of the
        band's projection imaged with the middle of the band's defocus range. Without it
        (default) one CTF per view, as if the specimen were flat and untilted.
    defocus_step_angstrom
        Width of those defocus bands (Å); 100 Å shifts the CTF phase by under 0.04 rad at
        the Nyquist frequency of 5 Å pixels at 300 kV.
    oversample
        Project an ``oversample``-times finer volume and bin (avoids the inverse crime).
    even_odd
        Also return half-dose ``even``/``odd`` series with independent noise whose average
        is ``tilt_series`` (as from an even/odd frame split).
    rng
        Seed or generator; the result is deterministic for a fixed seed.
    device
        Projection device.

    Returns
    -------
    SimulatedTiltSeries
    """
    if snr is not None and dose_e_per_angstrom2 is not None:
        raise ValueError(
            "give either snr (Gaussian noise) or dose_e_per_angstrom2 (Poisson), not both."
        )
    if snr is not None:
        check_positive(snr, "snr")
    if dose_e_per_angstrom2 is not None:
        check_positive(dose_e_per_angstrom2, "dose_e_per_angstrom2")
    generator = np.random.default_rng(rng)
    ctf_kw = dict(voltage_kv=voltage_kv, spherical_aberration_mm=spherical_aberration_mm,
                  amplitude_contrast=amplitude_contrast)
    if defocus_gradient:
        if defocus_angstrom is None:
            raise ValueError("defocus_gradient needs defocus_angstrom (the defocus at the tilt "
                             "axis, Å).")
        check_positive(defocus_step_angstrom, "defocus_step_angstrom")
        clean = _project_with_defocus_gradient(
            volume, geometry, _defocus_per_view(defocus_angstrom, geometry.n_tilts),
            step_angstrom=defocus_step_angstrom, oversample=oversample, device=device, **ctf_kw)
    else:
        clean = project_volume(volume, geometry, oversample=oversample, device=device)
    if defocus_angstrom is not None and not defocus_gradient:
        from cryowedge.simulate.ctf import apply_ctf, ctf_2d

        if np.ndim(defocus_angstrom) == 0:
            ctf = ctf_2d(geometry.detector_shape, pixel_size_angstrom=geometry.pixel_size_angstrom,
                         defocus_u_angstrom=defocus_angstrom, **ctf_kw)
        else:
            ctf = np.stack([
                ctf_2d(geometry.detector_shape, pixel_size_angstrom=geometry.pixel_size_angstrom,
                       defocus_u_angstrom=float(d), **ctf_kw)
                for d in _defocus_per_view(defocus_angstrom, geometry.n_tilts)
            ])
        clean = np.asarray(apply_ctf(clean, ctf), dtype=np.float32)
    half = 2.0 if even_odd else 1.0
    kwargs = dict(
        snr=None if snr is None else snr / half,
        dose_e_per_angstrom2=None if dose_e_per_angstrom2 is None else dose_e_per_angstrom2 / half,
        pixel_size_angstrom=geometry.pixel_size_angstrom,
        rng=generator,
    )
    even = odd = None
    if even_odd:
        # Like an even/odd frame split: each half gets half the dose and its own noise;
        # the full series is their average.
        even, sigma_half = _noise(clean, **kwargs)
        odd, _ = _noise(clean, **kwargs)
        noisy = 0.5 * (even + odd)
        sigma = sigma_half / np.sqrt(2.0)
    else:
        noisy, sigma = _noise(clean, **kwargs)
    logger.debug("simulated %d tilts, noise sigma %s", geometry.n_tilts, sigma[:1])
    return SimulatedTiltSeries(
        tilt_series=noisy, clean=clean.astype(np.float32), geometry=geometry,
        noise_sigma=sigma, even=even, odd=odd,
    )
