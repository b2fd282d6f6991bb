"""Benchmarks of the coordinate-network fit (``cryowedge bench inr``; issue 12).

* :func:`spheres_case` — the hollow-spheres set-up of the report's table (seeds/002, Figs.
  7–8), scaled down: :func:`cryowedge.simulate.phantoms.hollow_spheres` of ``(32, 128, 128)``
  voxels, 61 views over ±60° at 2°, projected 2× oversampled (the data are not made by the
  operator that reconstructs them), optionally with Gaussian noise (``snr``) or Poisson shot
  noise (``counts_per_pixel`` electrons per unattenuated pixel).
* :func:`table_config` — the network the results tables use on two CPU cores (width 64,
  64 Fourier features at σ = 0.05 cycles/voxel, batches of 16 y-slices, 120 epochs,
  ``lr`` 1e-2; docs/inr.md explains each choice).
* :func:`score_volume` — PSNR, SSIM and FSC against the truth after the affine grey-level
  calibration (:func:`cryowedge.metrics.normalize_intensity`), and the share of the spectral
  power inside the missing wedge (:func:`wedge_power_fraction`), the report's "vertical
  streaks".
* :func:`bench_inr` — seconds per epoch and to convergence of :func:`~cryowedge.inr.fit_inr`
  (the last printed line is ``inr_epoch_seconds: N``).
* :func:`slice_batch_tradeoff` — the report's Fig. 6: batch of y-slices versus peak memory,
  time and optimiser steps, every batch size in a fresh interpreter (peak resident memory
  ``ru_maxrss`` on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU).

Units: voxels and cycles per voxel (docs/conventions.md). The library logs and never prints;
``report`` callables receive the lines to show (the CLI passes ``typer.echo``).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.config.inr import InrConfig
from cryowedge.geometry.tilt import TiltGeometry, missing_wedge_mask

__all__ = [
    "QUICK",
    "TABLE_SHAPE",
    "SpheresCase",
    "bench_inr",
    "config_line",
    "score_volume",
    "slice_batch_tradeoff",
    "spheres_case",
    "table_config",
    "wedge_power_fraction",
]

logger = logging.getLogger(__name__)

#: ``(z, y, x)`` of the table's phantom: the report's 1024×1024×256 spheres binned 8×.
TABLE_SHAPE = (32, 128, 128)
#: ``cryowedge bench inr --quick``: a check in seconds.
QUICK = {"shape": (16, 32, 32), "n_spheres": 3, "epochs": 4, "width": 16,
         "n_frequencies": 16, "slice_batch": 8}
#: The frequency above which wedge power counts as "high-frequency" (cycles/voxel).
HIGH_FREQUENCY_CPP = 0.25


@dataclass
class SpheresCase:
    """A simulated hollow-spheres experiment.

    Attributes
    ----------
    truth : numpy.ndarray
        ``(nz, ny, nx)`` float32 phantom, values in ``[0, 1]``.
    tilt_series : numpy.ndarray
        ``(n_tilts, ny, nx)`` float32 measured series (line integrals in voxels).
    clean : numpy.ndarray
        The same without noise.
    geometry : TiltGeometry
        Aligned geometry (tilt axis ``y``).
    description : str
        One line for the printed configuration.
    """

    truth: np.ndarray
    tilt_series: np.ndarray
    clean: np.ndarray
    geometry: TiltGeometry
    description: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.truth.shape)  # type: ignore[return-value]

    @property
    def tilt_range_deg(self) -> tuple[float, float]:
        return self.geometry.tilt_range_deg

    def projection_snr(self) -> float:
        """``var(clean) / var(noise)`` of the series (``inf`` without noise)."""
        noise = self.tilt_series.astype(np.float64) - self.clean
        var = float(noise.var())
        return math.inf if var == 0 else float(self.clean.var()) / var


def spheres_case(
    shape: Sequence[int] = TABLE_SHAPE,
    *,
    tilt_range_deg: float = 60.0,
    tilt_step_deg: float = 2.0,
    oversample: int = 2,
    seed: int = 0,
    n_spheres: int = 12,
    snr: float | None = None,
    counts_per_pixel: float | None = None,
    noise_seed: int | None = None,
) -> SpheresCase:
    """The report's hollow spheres, scaled down (module docstring).

    Parameters
    ----------
    shape : (nz, ny, nx)
        Voxels (default :data:`TABLE_SHAPE`).
    tilt_range_deg, tilt_step_deg : float
        Views at ``−range : step : +range`` degrees.
    oversample : int
        Projection from a volume this many times finer, binned back.
    seed : int
        Seed of the phantom.
    n_spheres : int
        Shells, with the phantom's default radii (12 fit the table's box).
    snr : float, optional
        Gaussian noise at this projection SNR (``var(signal) / var(noise)``).
    counts_per_pixel : float, optional
        Poisson shot noise: expected electrons per detector pixel of the unattenuated beam
        (:func:`cryowedge.simulate.add_poisson_noise` with 1 Å pixels; the densest ray
        transmits ``e⁻¹``). Exclusive with ``snr``.
    noise_seed : int, optional
        Seed of the noise (default ``seed + 1``).
    """
    from cryowedge.simulate.noise import add_gaussian_noise, add_poisson_noise
    from cryowedge.simulate.phantoms import hollow_spheres
    from cryowedge.simulate.tilt_series import project_volume

    if snr is not None and counts_per_pixel is not None:
        raise ValueError("give snr (Gaussian) or counts_per_pixel (Poisson), not both.")
    box = tuple(int(s) for s in shape)
    if len(box) != 3:
        raise ValueError(f"shape must be (nz, ny, nx), got {shape!r}.")
    truth = hollow_spheres(box, n_spheres=n_spheres, rng=seed)
    geometry = TiltGeometry.from_range(-tilt_range_deg, tilt_range_deg, tilt_step_deg,
                                       detector_shape=box[1:])
    clean = project_volume(truth, geometry, oversample=oversample)
    rng = seed + 1 if noise_seed is None else noise_seed
    noise = "no noise"
    series = clean
    if snr is not None:
        series, _ = add_gaussian_noise(clean, snr=snr, rng=rng)
        noise = f"Gaussian noise at projection SNR {snr:g}"
    elif counts_per_pixel is not None:
        series = add_poisson_noise(clean, dose_e_per_angstrom2=float(counts_per_pixel),
                                   pixel_size_angstrom=1.0, rng=rng)
        noise = f"Poisson noise, {counts_per_pixel:g} e⁻ per unattenuated pixel"
    description = (
        f"hollow spheres {box[0]}×{box[1]}×{box[2]} (z, y, x), {n_spheres} shells, seed {seed}; "
        f"{geometry.n_tilts} views {-tilt_range_deg:g}…{tilt_range_deg:g}° at "
        f"{tilt_step_deg:g}°, projected {oversample}× oversampled; {noise}"
    )
    return SpheresCase(truth, np.asarray(series, dtype=np.float32),
                       np.asarray(clean, dtype=np.float32), geometry, description)


def table_config(**changes: Any) -> InrConfig:
    """The results tables' network on a CPU (docs/inr.md): width 64, 64 Gaussian Fourier
    features at σ 0.05 cycles/voxel, batches of 16 y-slices, 120 epochs, AdamW 1e-2 decayed
    exponentially to 1e-3, L2 loss, float32 on the CPU; ``changes`` replace fields."""
    base: dict[str, Any] = {"width": 64, "n_frequencies": 64, "encoding_scale": 0.05,
                            "slice_batch": 16, "epochs": 120, "lr": 1e-2, "device": "cpu"}
    return InrConfig(**{**base, **changes})


def config_line(config: InrConfig, *, batch: str | None = None) -> str:
    """The fit's settings in one line (printed by the results scripts); ``batch`` replaces
    the slice batch's value (e.g. ``"B"`` when it varies)."""
    c = config
    net = ("SIREN" if c.activation == "sine" else f"MLP ({c.activation})")
    enc = ("no encoding" if c.encoding == "none" else
           f"{c.encoding} encoding, {c.n_frequencies} frequencies at σ {c.encoding_scale:g} "
           "cycles/voxel")
    extra = ""
    if c.lam_c > 0:
        extra += (f", lam_c {c.lam_c:g} ({c.penalty_norm} spectrum"
                  f"{', Crowther term' if c.crowther else ', wedge only'})")
    if c.tv_weight > 0:
        extra += f", TV {c.tv_weight:g}"
    if c.chunk_rows:
        start = f"warm-started, {c.warm_epochs} epochs" if c.warm_start else "cold"
        extra += f", chunks of {c.chunk_rows} rows ({start})"
    omega = f", ω0 {c.omega0:g}" if c.activation == "sine" else ""
    return (f"{net} {c.n_layers} layers × {c.width}{omega}, {enc}; loss {c.loss}, batches of "
            f"{batch or c.slice_batch} y-slices, {c.epochs} epochs, AdamW lr {c.lr:g} "
            f"({c.lr_schedule} to ×{c.lr_final:g}), seeds {c.n_seeds}, seed {c.seed}{extra}")


# --------------------------------------------------------------------------- scoring


def wedge_power_fraction(
    volume: Any,
    tilt_range_deg: tuple[float, float],
    *,
    min_frequency_cpp: float = 0.0,
) -> float:
    """Share of a volume's spectral power inside the missing wedge.

    ``Σ_{k ∈ W, |k| > f} |V(k)|² / Σ_{k ≠ 0} |V(k)|²`` over the 3-D spectrum of the
    mean-subtracted ``(z, y, x)`` volume, ``W`` the missing wedge of ``tilt_range_deg``
    (:func:`cryowedge.geometry.tilt.missing_wedge_mask`, tilt axis ``y``) and ``f =
    min_frequency_cpp`` (cycles/voxel, radius with each axis normalised by its length). A
    volume reconstructed by plain back-projection has almost none (FBP leaves the wedge
    empty); the vertical streaks of the report's plain MLP put too much there, compared with
    the truth's share.

    Returns
    -------
    float
        In ``[0, 1]``; 0 for a constant volume.
    """
    v = np.asarray(volume, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got shape {v.shape}.")
    power = np.abs(np.fft.rfftn(v - v.mean())) ** 2
    power[..., 1 : (v.shape[2] + 1) // 2] *= 2.0  # columns that stand for two (Hermitian)
    total = float(power.sum())
    if total <= 0:
        return 0.0
    region = missing_wedge_mask(v.shape, tilt_range_deg, rfft=True)
    if min_frequency_cpp > 0:
        kz = np.fft.fftfreq(v.shape[0])[:, None, None]
        ky = np.fft.fftfreq(v.shape[1])[None, :, None]
        kx = np.fft.rfftfreq(v.shape[2])[None, None, :]
        region = region & (np.sqrt(kz**2 + ky**2 + kx**2) > min_frequency_cpp)
    return float(power[region].sum() / total)


def score_volume(volume: Any, truth: np.ndarray,
                 tilt_range_deg: tuple[float, float]) -> dict[str, float]:
    """Scores of a reconstruction against the truth (affine grey-level calibration first).

    Returns
    -------
    dict
        ``psnr`` (dB, the truth's range), ``ssim`` (3-D, Gaussian window σ 1.5), ``pearson``,
        ``fsc05_px``/``fsc0143_px`` (resolution in voxels where the FSC against the truth
        falls below 0.5 / 0.143 and stays below), ``wedge_power`` and ``wedge_power_hf``
        (:func:`wedge_power_fraction`, all frequencies / above 0.25 cycles/voxel).
    """
    from cryowedge.metrics import fourier_shell_correlation, pearson_correlation, psnr, ssim
    from cryowedge.metrics.normalize import normalize_intensity

    x = np.asarray(normalize_intensity(volume, truth, "affine"), dtype=np.float64)
    fsc = fourier_shell_correlation(x, truth)
    return {
        "psnr": psnr(x, truth),
        "ssim": ssim(x, truth),
        "pearson": pearson_correlation(volume, truth),
        "fsc05_px": fsc.resolution_angstrom(0.5, 1.0, rule="stays-below"),
        "fsc0143_px": fsc.resolution_angstrom(0.143, 1.0, rule="stays-below"),
        "wedge_power": wedge_power_fraction(x, tilt_range_deg),
        "wedge_power_hf": wedge_power_fraction(x, tilt_range_deg,
                                               min_frequency_cpp=HIGH_FREQUENCY_CPP),
    }


# --------------------------------------------------------------------------- speed


class _EpochVolumes:
    """Callback of :func:`~cryowedge.inr.fit_inr` that assembles each epoch's slabs into a
    volume (every batch of an epoch is visited once, so the slabs cover the rows; each is
    the network's output at its own step) and scores it every ``every`` epochs."""

    def __init__(self, shape: tuple[int, int, int], truth: np.ndarray, every: int,
                 report: Callable[[str], Any] | None) -> None:
        self.volume = np.zeros(shape, dtype=np.float32)
        self.truth, self.every, self.report = truth, max(1, int(every)), report
        self.curve: list[tuple[int, float]] = []  # (epoch, PSNR)
        self.epoch = 0
        self.filled = 0

    def __call__(self, info: Any) -> None:
        from cryowedge.metrics import psnr
        from cryowedge.metrics.normalize import normalize_intensity

        y0, y1 = int(info.extras["y0"]), int(info.extras["y1"])
        epoch = int(info.extras["epoch"])
        if epoch != self.epoch:
            self.epoch, self.filled = epoch, 0
        self.volume[:, y0:y1] = info.x.detach().cpu().numpy()
        self.filled += y1 - y0
        if self.filled == self.volume.shape[1] and epoch % self.every == 0:
            value = psnr(normalize_intensity(self.volume, self.truth, "affine"), self.truth)
            self.curve.append((epoch, value))
            if self.report is not None:
                self.report(f"  epoch {epoch}: loss {info.objective:.4g}, PSNR {value:.2f} dB")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _warm_up() -> None:
    """Pay the one-off imports before any clock starts: the first optimiser of a process
    imports ``torch._dynamo`` (seconds; not part of a fit's cost)."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def bench_inr(
    shape: Sequence[int] = TABLE_SHAPE,
    *,
    epochs: int = 120,
    n_spheres: int = 12,
    width: int = 64,
    n_frequencies: int = 64,
    slice_batch: int = 16,
    lam_c: float = 0.0,
    threads: int | None = None,
    device: str = "cpu",
    score_every: int = 5,
    tolerance_db: float = 0.5,
    baselines: bool = True,
    report: Callable[[str], Any] = logger.info,
) -> dict[str, float]:
    """Seconds per epoch and to convergence of the table's fit (``cryowedge bench inr``).

    The fit is :func:`table_config` with the given changes on :func:`spheres_case` (no
    noise). Each epoch's volume (its slabs, as the steps produced them) is scored every
    ``score_every`` epochs; *convergence* is the first scored epoch within ``tolerance_db``
    of the final volume's PSNR, and its time is the sum of the epochs' wall times up to it.
    With ``baselines``, FBP and TV-ADMM (project defaults) are timed and scored for scale.
    The configuration is reported first; the last line is ``inr_epoch_seconds: N`` (the
    median epoch).

    Returns
    -------
    dict
        ``epoch_seconds`` (median), ``first_epoch_seconds``, ``steps_per_epoch``,
        ``step_seconds``, ``total_seconds`` (the whole ``fit_inr`` call),
        ``convergence_epoch``, ``convergence_seconds``, ``final_psnr``.
    """
    from cryowedge.inr import fit_inr
    from cryowedge.utils.device import resolve_device

    box = tuple(int(s) for s in shape)
    if not 1 <= slice_batch <= box[1]:
        raise ValueError(f"slice_batch {slice_batch} does not fit the volume's {box[1]} "
                         f"y-slices; use 1 … {box[1]}.")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    case = spheres_case(box, n_spheres=n_spheres)
    cfg = table_config(epochs=epochs, width=width, n_frequencies=n_frequencies,
                       slice_batch=slice_batch, lam_c=lam_c, device=str(dev))
    report(f"case: {case.description}")
    report(f"fit: {config_line(cfg)}")
    report(f"device {dev}, torch threads {torch.get_num_threads()}, OMP_NUM_THREADS "
           f"{_env('OMP_NUM_THREADS')}, mixed precision {cfg.mixed_precision}")
    if baselines:
        from cryowedge.config.registry import get_method
        from cryowedge.workflows.reconstruct import reconstruct_array

        for name in ("fbp", "tv"):
            rcfg = get_method(name).config(thickness=case.shape[0], device=str(dev))
            t0 = time.perf_counter()
            vol = reconstruct_array(case.tilt_series, case.geometry, rcfg)
            seconds = time.perf_counter() - t0
            s = score_volume(vol, case.truth, case.tilt_range_deg)
            report(f"{name} (project defaults): {seconds:.2f} s, PSNR {s['psnr']:.2f} dB")
    tracker = _EpochVolumes(case.shape, case.truth, score_every, report)
    _warm_up()
    _sync(dev)
    result = fit_inr(case.tilt_series, case.geometry, cfg, volume_shape=case.shape,
                     device=dev, callback=tracker)
    _sync(dev)
    from cryowedge.metrics import psnr
    from cryowedge.metrics.normalize import normalize_intensity

    final = psnr(normalize_intensity(result.volume, case.truth, "affine"), case.truth)
    epoch_seconds = [float(h["seconds"]) for h in result.history]
    steps_per_epoch = math.ceil(case.shape[1] / cfg.slice_batch)
    converged = next((e for e, v in tracker.curve if v >= final - tolerance_db), epochs)
    out = {
        "epoch_seconds": statistics.median(epoch_seconds),
        "first_epoch_seconds": epoch_seconds[0],
        "steps_per_epoch": float(steps_per_epoch),
        "step_seconds": statistics.median(epoch_seconds) / steps_per_epoch,
        "total_seconds": result.seconds,
        "convergence_epoch": float(converged),
        "convergence_seconds": float(sum(epoch_seconds[:converged])),
        "final_psnr": final,
    }
    report(f"epochs {epochs} × {steps_per_epoch} steps in {result.seconds:.1f} s (fit_inr "
           f"call); median epoch {out['epoch_seconds']:.3f} s (first "
           f"{out['first_epoch_seconds']:.3f} s), {out['step_seconds'] * 1e3:.1f} ms per step")
    report(f"final PSNR {final:.2f} dB; within {tolerance_db:g} dB of it at epoch "
           f"{converged} (scored every {score_every}): {out['convergence_seconds']:.1f} s")
    report(f"inr_epoch_seconds: {out['epoch_seconds']:.3f}")
    return out


def _env(name: str) -> str:
    import os

    return os.environ.get(name, "unset")


# --------------------------------------------------------------------------- memory / time


def _tradeoff_child(case: dict[str, Any]) -> dict[str, Any]:
    """One batch size of :func:`slice_batch_tradeoff`, in its own interpreter."""
    import resource

    from cryowedge.inr import fit_inr
    from cryowedge.metrics import psnr, ssim
    from cryowedge.metrics.normalize import normalize_intensity

    torch.set_num_threads(int(case["threads"]))
    data = np.load(case["data"])
    truth, series = data["truth"], data["series"]
    geometry = TiltGeometry.from_range(-case["range"], case["range"], case["step"],
                                       detector_shape=truth.shape[1:])
    dev = torch.device(case["device"])
    cfg = table_config(**case["config"])
    _warm_up()
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0 = time.perf_counter()
    result = fit_inr(series, geometry, cfg, volume_shape=truth.shape, device=dev)
    _sync(dev)
    seconds = time.perf_counter() - t0
    x = normalize_intensity(result.volume, truth, "affine")
    out = {
        "seconds": seconds,
        "epoch_seconds_sum": float(sum(h["seconds"] for h in result.history)),
        "steps": result.steps_done,
        "psnr": psnr(x, truth),
        "ssim": ssim(x, truth),
        "baseline_rss_gb": baseline_kib * 1024 / 1e9,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }
    if dev.type == "cuda":
        out["cuda_peak_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
    return out


def slice_batch_tradeoff(
    batches: Sequence[int] = (128, 64, 32, 16),
    shape: Sequence[int] = TABLE_SHAPE,
    *,
    epochs: int = 30,
    n_spheres: int = 12,
    threads: int = 1,
    device: str = "cpu",
    workdir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    report: Callable[[str], Any] = logger.info,
) -> list[dict[str, Any]]:
    """The report's Fig. 6: batch of y-slices versus peak memory, time and steps.

    Every batch size fits :func:`table_config` (with ``config`` changes) for ``epochs``
    epochs on :func:`spheres_case` ``(shape)`` in a **fresh interpreter** that reads the
    series from a file, so the peak resident memory (``ru_maxrss``) is the fit's own plus
    the interpreter (reported before the fit: ``baseline_rss_gb``). On CUDA the device's
    ``max_memory_allocated`` is reported too. Epochs are fixed, so the steps grow as the
    batch shrinks (the report's 500 … 4000 steps).

    Returns
    -------
    list of dict
        Per batch: ``slice_batch``, ``steps``, ``seconds``, ``psnr``, ``ssim``,
        ``baseline_rss_gb``, ``peak_rss_gb``, ``fit_rss_gb`` (peak − baseline) and, on CUDA,
        ``cuda_peak_gb``.
    """
    import subprocess
    import sys
    import tempfile

    box = tuple(int(s) for s in shape)
    bad = [b for b in batches if not 1 <= int(b) <= box[1]]
    if bad:
        raise ValueError(f"slice batches {bad} do not fit the volume's {box[1]} y-slices; use "
                         f"1 … {box[1]}.")
    case = spheres_case(box, n_spheres=n_spheres)
    report(f"case: {case.description}")
    report(f"fit: {config_line(table_config(**{**(config or {}), 'epochs': epochs}), batch='B')}")
    report(f"each batch size in a fresh interpreter; device {device}, torch threads {threads}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "case.npz"
        np.savez(path, truth=case.truth, series=case.tilt_series)
        for batch in batches:
            child = {"data": str(path), "range": 60.0, "step": 2.0, "threads": threads,
                     "device": device,
                     "config": {**(config or {}), "epochs": epochs, "slice_batch": int(batch)}}
            code = ("import json, sys; from cryowedge.inr.bench import _tradeoff_child; "
                    "print(json.dumps(_tradeoff_child(json.loads(sys.argv[1]))))")
            proc = subprocess.run([sys.executable, "-c", code, json.dumps(child)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                raise RuntimeError(f"slice batch {batch} failed: {tail}")
            row = {"slice_batch": int(batch), **json.loads(proc.stdout.strip().splitlines()[-1])}
            row["fit_rss_gb"] = row["peak_rss_gb"] - row["baseline_rss_gb"]
            rows.append(row)
            cuda = f", CUDA peak {row['cuda_peak_gb']:.2f} GB" if "cuda_peak_gb" in row else ""
            report(f"  batch {batch}: {row['steps']} steps, {row['seconds']:.1f} s, peak RSS "
                   f"{row['peak_rss_gb']:.2f} GB (fit {row['fit_rss_gb']:.2f} GB){cuda}, PSNR "
                   f"{row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}")
    return rows
