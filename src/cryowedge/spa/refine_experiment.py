"""The joint-refinement experiment of thesis Figs. 4.6–4.11 (proof of concept, Init-1), small size.

Set-up (research/thesis.md §5.2–§5.4, reproduction R5):

* Ground truth: a random asymmetric "pseudo-particle" of Gaussian blobs, represented by
  coefficients of the data-generation basis KBWF(a = 2, α = 10.8, m = 2) on an ``n³`` grid
  (:data:`~cryowedge.spa.basis.SIMULATION_BLOB`); the reference map is its expansion on the
  voxel grid. Reconstructions use KBWF(4, 19, 2) (no inverse crime).
* ``P`` uniformly random orientations (Haar), shifts uniform in ``[−m_t, m_t]`` pixels per axis,
  Gaussian noise at ``SNR_data`` (dB), defined per pixel as the mean over particles of
  ``‖b̃_p‖² / (L² σ²)`` (thesis §4.2.3 with the per-pixel reading of research/thesis.md §13.10).
* Init-1: ``θ_init = θ_true + U(−e_θ, e_θ)`` on each Euler angle (``e_θ = 0.7 rad = 40.1°``), zero
  initial shifts. Initial volume: the reconstruction at the initial orientations ("unrefined")
  or the truth low-passed at ``f_c`` cycles/pixel ("lowpass"; thesis §13.11 reads ``f_c`` as such a
  cut-off, an ab-initio stand-in).
* Compared: unrefined (initial orientations), oracle (true orientations and shifts) and joint
  refinement, each reconstructed with the same reconstruction callable, by FSC against the
  reference map (the refined map rotated back by the global alignment first), plus histograms of
  the geodesic and per-Euler-angle errors before and after.

Measured at small size (CPU, float32, default options and reconstruction, seed 0; the full-size
run is a results script's job):

* 32³, P = 300, SNR 3.58 dB, m_t = 0, 15 iterations (~200 s on one loaded core): FSC-0.5 at
  0.281 cycles/px refined, 0.280 oracle, 0.166 unrefined; geodesic error 36.8° → 3.8° mean
  (2.7° median, 88 % below 5°). The projection-matching baseline (4 000-orientation grid plus
  two local rounds, 3 iterations, ~10 min) reached 0.281 and 3.8° mean (3.5° median, 79 % below
  5°).
* 24³, P = 200, SNR −0.57 dB, m_t = 3 px: refined 0.213, oracle 0.241, unrefined 0.114;
  37.5° → 21.2° mean (16.6° median); shift error 2.39 → 0.36 px. Without shifts at this SNR the
  error still stalls near 15° (noise-limited at this size: few pixels per particle).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from cryowedge.geometry.rotations import random_rotations, rotate_volume
from cryowedge.metrics.fourier import fourier_shell_correlation, threshold_crossings
from cryowedge.spa.angles import (
    angular_errors_deg,
    euler_differences_deg,
    geodesic_distance_deg,
    perturb_euler,
    shift_errors_px,
)
from cryowedge.spa.basis import RECONSTRUCTION_BLOB, SIMULATION_BLOB, expand
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.refine import (
    LatentUpdateOptions,
    ReconstructFn,
    RefinementInfo,
    RidgeReconstruction,
    joint_refinement,
    projection_matching_refinement,
    support_sphere,
)

__all__ = ["pseudo_particle", "RefinementExperimentResult", "joint_refinement_experiment"]

logger = logging.getLogger(__name__)


def pseudo_particle(
    n: int,
    *,
    n_blobs: int = 60,
    radius_fraction: float = 0.25,
    sigma_px: tuple[float, float] = (0.7, 1.6),
    rng: np.random.Generator | int | None = 0,
) -> np.ndarray:
    """A random, asymmetric ``(n, n, n)`` density of Gaussian blobs inside a ball.

    Blob centres are uniform in the ball of radius ``radius_fraction · n`` around the centre
    voxel ``n // 2``; widths uniform in ``sigma_px`` (voxels); weights uniform in ``[0.5, 1]``.
    Chiral and without symmetry for almost every seed, so orientations are identifiable.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float64 values with maximum 1.
    """
    if n < 8:
        raise ValueError(f"n must be >= 8 voxels, got {n}.")
    gen = np.random.default_rng(rng)
    r = radius_fraction * n
    dirs = gen.standard_normal((n_blobs, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    centres = dirs * r * gen.uniform(size=(n_blobs, 1)) ** (1.0 / 3.0)
    sig = gen.uniform(*sigma_px, size=n_blobs)
    w = gen.uniform(0.5, 1.0, size=n_blobs)
    ax = np.arange(n, dtype=np.float64) - n // 2
    out = np.zeros((n, n, n))
    for (cx, cy, cz), s, wi in zip(centres, sig, w, strict=True):
        gx = np.exp(-((ax - cx) ** 2) / (2 * s * s))
        gy = np.exp(-((ax - cy) ** 2) / (2 * s * s))
        gz = np.exp(-((ax - cz) ** 2) / (2 * s * s))
        out += wi * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return out / out.max()


def _lowpass(volume: np.ndarray, cutoff: float) -> np.ndarray:
    """Gaussian low-pass with amplitude ½ at ``cutoff`` cycles/voxel."""
    f = [np.fft.fftfreq(s) for s in volume.shape]
    f2 = f[0][:, None, None] ** 2 + f[1][None, :, None] ** 2 + f[2][None, None, :] ** 2
    g = np.exp(-np.log(2.0) * f2 / cutoff**2)
    return np.fft.ifftn(np.fft.fftn(volume) * g).real


@dataclass
class RefinementExperimentResult:
    """Figures of :func:`joint_refinement_experiment` (everything NumPy).

    Attributes
    ----------
    frequency : numpy.ndarray
        ``(S,)`` FSC shell centres, cycles/pixel.
    fsc : dict of str to numpy.ndarray
        ``"unrefined"``, ``"refined"``, ``"oracle"``: ``(S,)`` FSC against the reference map.
    resolution_05 : dict of str to float
        Frequency (cycles/pixel) where each FSC first drops below 0.5 (0.5 = Nyquist if never).
    angle_error_deg : dict of str to numpy.ndarray
        ``"initial"``, ``"refined"``: ``(P,)`` geodesic errors after global alignment.
    euler_error_deg : dict of str to numpy.ndarray
        ``"initial"``, ``"refined"``: ``(P, 3)`` (rot, tilt, psi) differences, aligned.
    shift_error_px : dict of str to numpy.ndarray
        ``"initial"``, ``"refined"``: ``(P, 2)`` after removing the global translation.
    histogram_edges_deg : numpy.ndarray
        ``(B + 1,)`` bin edges of the histograms (−15° … 15° as in the thesis's figures).
    histograms : dict of str to numpy.ndarray
        ``"<initial|refined>_<rot|tilt|psi>"``: ``(B,)`` counts of the Euler differences;
        ``"<initial|refined>_geodesic"``: counts of the geodesic errors in 30 bins over 0–45°.
    history : dict of str to list of float
        Per outer iteration: ``objective``, ``mean_angle_change_deg``, ``mean_angle_error_deg``,
        ``median_angle_error_deg``, ``fsc05`` (cycles/px, refined map vs reference), ``seconds``;
        ``oracle_fsc05`` and ``unrefined_fsc05`` after the same number of reconstruction calls
        (Fig. 4.11).
    global_rotation : numpy.ndarray
        ``(3, 3)`` alignment ``G`` (refined orientations ``R G ≈ R_true``).
    settings : dict
        The experiment's parameters.
    seconds : float
        Total wall time.
    """

    frequency: np.ndarray
    fsc: dict[str, np.ndarray]
    resolution_05: dict[str, float]
    angle_error_deg: dict[str, np.ndarray]
    euler_error_deg: dict[str, np.ndarray]
    shift_error_px: dict[str, np.ndarray]
    histogram_edges_deg: np.ndarray
    histograms: dict[str, np.ndarray]
    history: dict[str, list[float]]
    global_rotation: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _fsc05(freq: np.ndarray, corr: np.ndarray) -> float:
    below = np.flatnonzero(corr < 0.5)
    if below.size == 0:
        return float(freq[-1])
    cross = threshold_crossings(freq, corr, 0.5, direction="down")
    return float(cross[0]) if cross.size else float(freq[below[0]])


def joint_refinement_experiment(
    *,
    n: int = 32,
    n_particles: int = 500,
    angle_error_deg: float = float(np.rad2deg(0.7)),
    snr_db: float = 3.5781,
    max_shift_px: float = 0.0,
    n_iter: int = 20,
    initial_volume: Literal["unrefined", "lowpass"] = "unrefined",
    lowpass_cutoff: float = 0.08,
    reconstruct: ReconstructFn | None = None,
    options: LatentUpdateOptions | None = None,
    method: Literal["auto", "kernel", "direct"] = "auto",
    seed: int = 0,
    phantom: np.ndarray | None = None,
    projection_matching_iterations: int = 0,
    projection_matching_orientations: int = 5000,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    callback: Callable[[RefinementInfo, dict[str, float]], Any] | None = None,
) -> RefinementExperimentResult:
    """Run the Init-1 joint-refinement experiment (thesis Figs. 4.6–4.11) at a small size.

    Parameters
    ----------
    n : int
        Box size (voxels = detector pixels = coefficients per axis).
    n_particles : int
        ``P`` (thesis: 500).
    angle_error_deg : float
        ``e_θ`` in degrees (thesis: 0.7 rad).
    snr_db : float
        ``SNR_data`` in dB, per pixel (thesis: 3.5781 for PTCH1, −0.5733 for HJC).
    max_shift_px : float
        ``m_t``: true shifts uniform in ``[−m_t, m_t]`` per axis (thesis: 0 or 3); shifts are
        refined only when ``m_t > 0``.
    n_iter : int
        Outer iterations of the joint refinement.
    initial_volume : {"unrefined", "lowpass"}
        Starting volume (module docstring).
    lowpass_cutoff : float
        ``f_c`` for ``"lowpass"`` (cycles/pixel, amplitude ½).
    reconstruct : callable, optional
        Reconstruction step for every map; default ``RidgeReconstruction(ridge=0.05, n_iter=10)``.
        The unrefined and oracle maps are ``n_iter + 1`` warm-started calls of it at fixed
        orientations, as many as the joint run makes (their FSC-0.5 after each call is the
        thesis's Fig. 4.11 curve).
    options : LatentUpdateOptions, optional
        Latent-update settings (default ones; ``refine_shifts = m_t > 0``).
    method : {"auto", "kernel", "direct"}
        Gradient evaluation.
    seed : int
        Seed of the phantom, orientations, shifts, noise and perturbation.
    phantom : numpy.ndarray, optional
        ``(n, n, n)`` ground-truth coefficients (SIMULATION_BLOB basis) instead of
        :func:`pseudo_particle`.
    projection_matching_iterations : int
        If > 0, also run the projection-matching baseline
        (:func:`~cryowedge.spa.refine.projection_matching_refinement`, same start and
        reconstruction) for this many outer iterations; its map, errors and histograms are added
        under ``"projection_matching"``.
    projection_matching_orientations : int
        Size of the baseline's SO(3) grid.
    dtype, device
        Working precision and device.
    callback : callable, optional
        ``callback(info, extras)`` after each outer iteration (``extras`` holds the current mean
        angle error and FSC-0.5 frequency); returning ``True`` stops.

    Returns
    -------
    RefinementExperimentResult
    """
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    truth_c = (
        pseudo_particle(n, rng=rng) if phantom is None else np.asarray(phantom, dtype=np.float64)
    )
    if truth_c.shape != (n, n, n):
        raise ValueError(f"phantom must have shape ({n}, {n}, {n}), got {truth_c.shape}.")
    truth_map = expand(torch.as_tensor(truth_c), SIMULATION_BLOB).numpy()
    rot_true = random_rotations(n_particles, rng)
    shifts_true = (
        rng.uniform(-max_shift_px, max_shift_px, size=(n_particles, 2))
        if max_shift_px > 0
        else np.zeros((n_particles, 2))
    )
    clean = SpaProjector(
        n, rot_true, shifts_true, blob=SIMULATION_BLOB, dtype=torch.float64
    ).forward(torch.as_tensor(truth_c))
    signal = float((clean**2).mean())
    sigma = (signal / 10.0 ** (snr_db / 10.0)) ** 0.5
    noise = torch.as_tensor(rng.standard_normal(clean.shape))
    data = (clean + sigma * noise).to(dtype)
    rot_init = perturb_euler(rot_true, angle_error_deg, rng)
    shifts_init = np.zeros((n_particles, 2))
    mask = support_sphere(SpaProjector(n, rot_true[:1]))
    recon = reconstruct or RidgeReconstruction(ridge=0.05, n_iter=10)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    data = data.to(dev)

    def to_map(c: torch.Tensor) -> np.ndarray:
        return expand(c.detach().to(torch.float64).cpu(), RECONSTRUCTION_BLOB).numpy()

    def fsc_of(vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = fourier_shell_correlation(vol, truth_map)
        return res.frequency_cycles_per_pixel, res.correlation

    def aligned_map(c: torch.Tensor, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, g = angular_errors_deg(rot, rot_true)
        vol = to_map(c)
        # The refined map is the truth rotated by G (angles module docstring): rotate it back.
        if geodesic_distance_deg(g[None], np.eye(3)[None])[0] > 1e-3:
            vol = rotate_volume(vol, g.T, order=3).astype(np.float64)
        return vol, g

    def reconstruction_sequence(
        rot: np.ndarray, shifts: np.ndarray
    ) -> tuple[torch.Tensor, list[float]]:
        """``n_iter + 1`` warm-started calls (as many as the joint run); FSC-0.5 after each."""
        proj = SpaProjector(n, rot, shifts, dtype=dtype, device=dev)
        c, curve = None, []
        for _ in range(n_iter + 1):
            c = recon(proj, data, c)
            curve.append(_fsc05(*fsc_of(to_map(c))))
        return c, curve

    if initial_volume not in ("unrefined", "lowpass"):
        raise ValueError(
            f"initial_volume must be 'unrefined' or 'lowpass', got {initial_volume!r}."
        )
    c_unrefined, curve_unrefined = reconstruction_sequence(rot_init, shifts_init)
    c_oracle, curve_oracle = reconstruction_sequence(rot_true, shifts_true)
    c_start = (
        recon(SpaProjector(n, rot_init, shifts_init, dtype=dtype, device=dev), data, None)
        if initial_volume == "unrefined"
        else torch.as_tensor(_lowpass(truth_c, lowpass_cutoff) * mask, dtype=dtype, device=dev)
    )

    def cb(info: RefinementInfo) -> Any:
        err, _ = angular_errors_deg(info.rotations, rot_true)
        vol, _ = aligned_map(info.coefficients, info.rotations)
        f, corr = fsc_of(vol)
        extras = {
            "mean_angle_error_deg": float(err.mean()),
            "median_angle_error_deg": float(np.median(err)),
            "fsc05": _fsc05(f, corr),
        }
        info.extras.update(extras)
        logger.info(
            "iteration %d: mean error %.2f°, FSC-0.5 at %.3f cycles/px",
            info.iteration,
            extras["mean_angle_error_deg"],
            extras["fsc05"],
        )
        return callback(info, extras) if callback is not None else None

    opts = options or LatentUpdateOptions(refine_shifts=max_shift_px > 0)
    result = joint_refinement(
        data,
        rot_init,
        shifts_init,
        coefficients=c_start,
        n_iter=n_iter,
        reconstruct=recon,
        options=opts,
        method=method,
        mask=mask,
        callback=cb,
        dtype=dtype,
        device=dev,
    )
    history = dict(result.history)
    history["oracle_fsc05"] = curve_oracle[1:]
    history["unrefined_fsc05"] = curve_unrefined[1:]
    refined_map, g = aligned_map(result.coefficients, result.rotations)
    freq, fsc_un = fsc_of(to_map(c_unrefined))
    _, fsc_ref = fsc_of(refined_map)
    _, fsc_or = fsc_of(to_map(c_oracle))
    fsc = {"unrefined": fsc_un, "refined": fsc_ref, "oracle": fsc_or}
    err0, g0 = angular_errors_deg(rot_init, rot_true)
    err1, _ = angular_errors_deg(result.rotations, rot_true)
    errors = {"initial": err0, "refined": err1}
    eulers = {
        "initial": euler_differences_deg(rot_init @ g0, rot_true),
        "refined": euler_differences_deg(result.rotations @ g, rot_true),
    }
    if projection_matching_iterations:
        pm = projection_matching_refinement(
            data,
            rot_init,
            shifts_init,
            coefficients=c_start,
            n_iter=projection_matching_iterations,
            reconstruct=recon,
            n_orientations=projection_matching_orientations,
            mask=mask,
            dtype=dtype,
            device=dev,
        )
        pm_map, g_pm = aligned_map(pm.coefficients, pm.rotations)
        fsc["projection_matching"] = fsc_of(pm_map)[1]
        errors["projection_matching"], _ = angular_errors_deg(pm.rotations, rot_true)
        eulers["projection_matching"] = euler_differences_deg(pm.rotations @ g_pm, rot_true)
        history["projection_matching_objective"] = pm.history["objective"]
    edges = np.linspace(-15.0, 15.0, 31)
    hist = {}
    for name, e in eulers.items():
        for i, ang in enumerate(("rot", "tilt", "psi")):
            hist[f"{name}_{ang}"] = np.histogram(e[:, i], bins=edges)[0]
        hist[f"{name}_geodesic"] = np.histogram(errors[name], bins=np.linspace(0.0, 45.0, 31))[0]
    return RefinementExperimentResult(
        frequency=freq,
        fsc=fsc,
        resolution_05={name: _fsc05(freq, curve) for name, curve in fsc.items()},
        angle_error_deg=errors,
        euler_error_deg=eulers,
        shift_error_px={
            "initial": shift_errors_px(shifts_init, shifts_true, rot_init),
            "refined": shift_errors_px(result.shifts_px, shifts_true, result.rotations),
        },
        histogram_edges_deg=edges,
        histograms=hist,
        history=history,
        global_rotation=g,
        settings={
            "n": n,
            "n_particles": n_particles,
            "angle_error_deg": angle_error_deg,
            "snr_db": snr_db,
            "max_shift_px": max_shift_px,
            "n_iter": n_iter,
            "initial_volume": initial_volume,
            "lowpass_cutoff": lowpass_cutoff,
            "method": method,
            "seed": seed,
            "noise_sigma": sigma,
        },
        seconds=time.perf_counter() - t_start,
    )
