"""Shared pieces of the CRM results scripts (benchmarks/results_crm_*.py, issue 11).

Han et al. (../shared/seeds/000_…) report 2D experiments on a Shepp–Logan phantom (320²) and a
ribosome slice (200², support radius 65). Two ways of making their data are offered here:

``convention="paper"`` (default of every script): the authors' simulator as their code does it
(../shared/research/anchors_tomo.md §3.1, ``run_simulatorb0.sh`` and ``simulator/main.cpp`` of
``icthrm/CRM``), built by the library's :func:`cryowedge.crm.simulate.simulate_crm_2d` with
``orientations="even"``, ``background_frame="particle"`` and (ribosome) ``background="authors"``
(``cryowedge crm simulate ribosome D --orientations even --background-frame particle
--background authors``):

* the copies' tilt ranges start at ``φ_m = (o + m·360/N) mod 360 − 180``, ``m = 1..N``, one
  random offset ``o`` per data set: the copies are **evenly spaced** over the circle;
* each copy is the whole stained image (particle + its own stain) in the particle frame,
  projected at ``θ_j + φ_m`` (the authors rotate the tilt range; the stain has no frame of its
  own), so the data lie in the range of the folded CRM operator (no model error);
* ribosome stain: white Gaussian noise of the slice's mean and standard deviation outside the
  support, smoothed by a Gaussian of σ = 0.8 px (``cvSmooth``), then masked to the outside of
  the support (the authors smooth after masking, which leaks ~1 px into the support; here the
  leak is cut so that the stain is zero on ``S`` as the model says);
* Shepp–Logan stain: random blocks (:func:`cryowedge.crm.simulate.simulate_shepp_logan_2d`'s
  ``"blocks"``; the authors' block code is not published);
* noise, when asked for, on the projections (the paper's §4.2.3 wording) with the project's
  definition ``SNR = var(clean) / σ²`` per copy (variance ratio; the authors' C++ used
  ``σ = std / 10^(SNR/10)``, a variance ratio of ``10^(SNR/5)``, on the image).

``convention="project"``: :func:`~cryowedge.crm.simulate.simulate_shepp_logan_2d` /
:func:`~cryowedge.crm.simulate.simulate_ribosome_2d` with their defaults: one orientation drawn
uniformly per sector of ``360/N``, the stain drawn in the **copy frame** filling the square
box and projected at the microscope angles ``θ_j`` (only the particle is projected at
``θ_j + φ_m``), the ribosome stain smoothed noise (σ 2 px, mean 0.3, std 0.15 for a particle
of maximum 1). The folded operator keeps backgrounds in the particle frame on the same square
grid, which cannot hold the rotated box's corners, so these data carry model error
(docs/results.md, issue 11).

Scoring (:func:`score_2d`): the project's metrics after affine grey-level normalisation (the
least-squares gain and offset fitted inside the support), PSNR (data range = the truth's range
in the support, 1), SSIM (Gaussian window σ 1.5 px over the whole image, averaged over the
support away from the border) and Pearson correlation, all **inside the support** (the
authors' ring mask of radius ``r`` = the support radius). ``*_paper`` columns repeat the
authors' ``measurement.m``: both images multiplied by the mask, PSNR with peak 1 over the
**whole** image (the zeros outside the mask count as perfect pixels, which adds
``10·log10(n_pixels / n_support)`` dB: 4.8 dB at 200² / r 65, 5.5 dB at 320² / r 96), SSIM
over the whole masked image, NCC = Pearson of the whole masked images; here after the same
affine normalisation.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.crm.baselines import masked_fourier_average, reconstruct_copies, simple_average
from cryowedge.crm.operator import CRMOperator
from cryowedge.crm.problem import CRMData
from cryowedge.crm.simulate import (
    _project_slice,  # noqa: F401  (re-exported for the diagnostics script)
    central_slice_particle,
    copy_orientations_2d,
    paper_tilt_angles,
    shepp_logan_particle,
    simulate_crm_2d,
    simulate_ribosome_2d,
    simulate_shepp_logan_2d,
)
from cryowedge.crm.solvers import crm_sart
from cryowedge.metrics.image import pearson_correlation, psnr, ssim
from cryowedge.metrics.normalize import normalize_intensity

DATASETS = ("shepp-logan", "ribosome")
CONVENTIONS = ("paper", "project")
RIBOSOME_MAP = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "aspire_70S_ribosome_65.mrc"
)
#: Paper geometry per data set: image side, support radius (px).
GEOMETRY = {"shepp-logan": (320, 96.0), "ribosome": (200, 65.0)}
METHODS = ("AVG", "M-AVG", "CRM")


# ----------------------------------------------------------------------------- data
def paper_orientations(n: int, gen: np.random.Generator) -> np.ndarray:
    """``(n,)`` copy angles (degrees), the authors' even spacing (``copy_orientations_2d``)."""
    return copy_orientations_2d(n, gen, spacing="even")


@dataclass
class Problem2D:
    """A 2D CRM data set with its truth; ``data.projections`` ``(N, n_tilts, 1, n)``."""

    data: CRMData
    orientations_deg: np.ndarray
    dataset: str
    convention: str
    snr: float | None
    extras: dict[str, Any] = field(default_factory=dict)


def make_2d(
    dataset: str,
    n_copies: int,
    *,
    seed: int,
    convention: str = "paper",
    range_deg: float = 50.0,
    step_deg: float = 3.0,
    snr: float | None = None,
    size: int | None = None,
    orientation: str | None = None,
    stain: str | None = None,
    frame: str | None = None,
    noise_domain: str = "projection",
) -> Problem2D:
    """The paper's 2D data set ``dataset`` with ``n_copies`` copies (module notes).

    ``convention="project"`` calls the project's simulator unchanged. ``"paper"`` builds the
    authors' set-up; its three ingredients can be swapped one by one (for the ablation of
    docs/results.md): ``orientation`` ``"even"`` (authors) or ``"sector"`` (one uniform angle
    per sector, the project's :func:`copy_orientations_2d`); ``stain`` ``"authors"`` or
    ``"project"`` (ribosome only: smoothed noise σ 2 px, mean 0.3, std 0.15; Shepp–Logan uses
    blocks either way); ``frame`` ``"particle"`` (authors: stained image projected at
    ``θ + φ``) or ``"copy"`` (stain projected at ``θ``, particle at ``θ + φ``, as the
    project's simulator). ``size`` rescales the image side (support radius and phantom
    scale with it); ``None`` is the paper's (320 Shepp–Logan, 200 ribosome).
    ``noise_domain`` (with ``snr``, paper convention only): ``"projection"`` adds white noise to
    each copy's projections (the paper's text, ``σ² = var(clean sub-tilt-series) / snr``);
    ``"image"`` adds it to each stained image before projection (the authors' simulator code,
    ``σ² = var(stained image) / snr``), which keeps the data in the range of the model
    (the noise becomes part of the copy) and is far milder after the line integrals.
    """
    if noise_domain not in ("projection", "image"):
        raise ValueError(f"noise_domain must be 'projection' or 'image', got {noise_domain!r}.")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}.")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}.")
    side0, radius0 = GEOMETRY[dataset]
    side = side0 if size is None else int(size)
    radius = radius0 * side / side0
    angles = paper_tilt_angles(range_deg, step_deg)
    gen = np.random.default_rng(seed)
    if convention == "project":
        if (orientation, stain, frame) != (None, None, None):
            raise ValueError("orientation/stain/frame apply to convention='paper' only.")
        maker = simulate_shepp_logan_2d if dataset == "shepp-logan" else simulate_ribosome_2d
        kwargs: dict[str, Any] = {"size": side, "support_radius_px": radius}
        if dataset == "shepp-logan":
            kwargs["phantom_size"] = int(round(200 * side / side0))
        else:
            kwargs["density"] = RIBOSOME_MAP
        sim = maker(n_copies, tilt_angles_deg=angles, snr=snr, rng=gen, **kwargs)
        return Problem2D(
            sim.data,
            sim.orientations_deg,
            dataset,
            convention,
            snr,
            {"noise_sigma": sim.noise_sigma, "stains": sim.backgrounds[:, :, 0, :]},
        )
    orientation = orientation or "even"
    stain = stain or "authors"
    frame = frame or "particle"
    if dataset == "shepp-logan":
        image = shepp_logan_particle(side, int(round(200 * side / side0)))
        background = "blocks"  # the authors' block code is not published
    else:
        image = central_slice_particle(RIBOSOME_MAP, side, radius)
        background = "authors" if stain == "authors" else "noise"
    # the authors' set-up is simulate_crm_2d's orientations="even", background_frame="particle",
    # background="authors" (ribosome); this reproduces the data these scripts built themselves
    # before those options existed, to float32 rounding
    sim = simulate_crm_2d(
        image,
        n_copies,
        support_radius_px=radius,
        tilt_angles_deg=angles,
        orientations=orientation,
        background=background,
        background_frame=frame,
        snr=snr,
        noise_domain=noise_domain if snr is not None else "projection",
        rng=gen,
    )
    return Problem2D(
        sim.data,
        sim.orientations_deg,
        dataset,
        convention,
        snr,
        {
            "noise_sigma": sim.noise_sigma,
            "orientation": orientation,
            "stain": stain,
            "frame": frame,
            "noise_domain": noise_domain if snr is not None else None,
            "stains": sim.backgrounds[:, :, 0, :],
        },
    )


def union_coverage_deg(orientations_deg: np.ndarray, angles_deg: np.ndarray) -> float:
    """Degrees of the 180° of projection directions measured by at least one copy (1° bins)."""
    eff = np.mod(np.asarray(orientations_deg)[:, None] + np.asarray(angles_deg)[None, :], 180.0)
    covered = np.zeros(180, dtype=bool)
    step = float(np.min(np.diff(np.sort(angles_deg)))) if len(angles_deg) > 1 else 1.0
    for e in eff.ravel():  # each view covers ±step/2 around it
        lo, hi = e - step / 2, e + step / 2
        b = np.arange(np.floor(lo), np.ceil(hi)).astype(int) % 180
        covered[b] = True
    return float(covered.sum())


# ----------------------------------------------------------------------------- methods
def run_methods(
    data: CRMData,
    *,
    n_iter: int = 20,
    relaxation: float = 0.2,
    fold: bool | None = None,
    background_frame: str | None = None,
    crm_particle: str = "mean",
    callback: Any = None,
    baselines: bool = True,
    plan_cache_bytes: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float], Any]:
    """AVG, M-AVG and CRM-SART on the same data with the same SART settings (float32).

    Every method starts from zeros, runs ``n_iter`` SART iterations with relaxation
    ``relaxation`` and random view order (seed 0): AVG and M-AVG reconstruct each copy alone
    (``n_iter`` sweeps over its views), CRM-SART visits every copy in each of its ``n_iter``
    outer iterations (so each background gets ``n_iter`` sweeps, the shared particle
    ``N·n_iter``). ``crm_particle``: ``"mean"`` (the authors' output, the mean of the
    particle over the last iteration's copy visits) or ``"last"``. ``fold`` and
    ``background_frame`` go to :class:`CRMOperator` (``None``: its defaults, the background
    frame the data were made in).

    Returns ``(images, seconds, crm_result)``: ``images[name]`` ``(nz, ny, nx)`` particle-frame
    estimates (masked to the support), ``seconds[name]`` the wall time (AVG and M-AVG share
    the per-copy reconstructions; their time is counted for both), and CRM's SolverResult.
    """
    kw = {} if background_frame is None else {"background_frame": background_frame}
    op = CRMOperator.from_data(data, fold=fold, **kw)
    b = torch.from_numpy(np.ascontiguousarray(data.projections, dtype=np.float32))
    out: dict[str, np.ndarray] = {}
    sec: dict[str, float] = {}
    t0 = time.perf_counter()
    res = crm_sart(
        op,
        b,
        n_iter=n_iter,
        relaxation=relaxation,
        particle=crm_particle,
        callback=callback,
        plan_cache_bytes=plan_cache_bytes,
    )
    sec["CRM"] = time.perf_counter() - t0
    out["CRM"] = op.particle(res.x).numpy()
    if baselines:
        t0 = time.perf_counter()
        copies = reconstruct_copies(op, b, n_iter=n_iter, relaxation=relaxation)
        t_rec = time.perf_counter() - t0
        t0 = time.perf_counter()
        out["AVG"] = simple_average(op, b, copies=copies).numpy()
        sec["AVG"] = t_rec + time.perf_counter() - t0
        t0 = time.perf_counter()
        out["M-AVG"] = masked_fourier_average(op, b, copies=copies).numpy()
        sec["M-AVG"] = t_rec + time.perf_counter() - t0
    return out, sec, res


# ----------------------------------------------------------------------------- scoring
def score_2d(x: np.ndarray, truth: np.ndarray, support: np.ndarray) -> dict[str, float]:
    """Project metrics inside the support, and the authors' whole-image metrics (module notes)."""
    img = np.asarray(x, dtype=np.float64).reshape(truth.shape)[:, 0, :]
    t = np.asarray(truth, dtype=np.float64)[:, 0, :]
    m = np.asarray(support, dtype=bool)[:, 0, :]
    xn = normalize_intensity(img, t, "affine", mask=m)
    full_x, full_t = xn * m, t * m
    return {
        "psnr": psnr(xn, t, mask=m),
        "ssim": ssim(xn, t, mask=m),
        "pcc": pearson_correlation(img, t, mask=m),
        "psnr_paper": psnr(full_x, full_t, data_range=1.0),
        "ssim_paper": ssim(full_x, full_t, data_range=1.0, crop_border=False),
        "ncc_paper": pearson_correlation(full_x, full_t),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def fmt(values: list[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def print_config(name: str, config: dict[str, Any]) -> None:
    print(f"# {name}: configuration")
    for k, v in {**config, **environment()}.items():
        print(f"#   {k}: {v}")


def save_json(path: Path | str, payload: Any) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=1, default=float))


def reconstruct_copies_sirt(
    op: CRMOperator, b: torch.Tensor, *, n_iter: int = 120, relaxation: float = 1.0
) -> torch.Tensor:
    """Each copy reconstructed alone by SIRT, in the particle frame: ``(N, nz, ny, nx)``.

    :func:`cryowedge.crm.baselines.reconstruct_copies` with :func:`~cryowedge.solvers.sirt`
    in place of SART (same frame handling, :meth:`CRMOperator.copy_system`: folded copies
    directly in the particle frame, rotated ones rotated back by ``R_iᵀ`` with
    :class:`~cryowedge.operators.Rotation3D`).
    """
    from cryowedge.operators.rotation import Rotation3D
    from cryowedge.solvers.algebraic import sirt

    out = torch.empty((op.n_copies, *op.volume_shape), dtype=b.dtype)
    for i in range(op.n_copies):
        proj, rot = op.copy_system(i, cache=False)
        rec = sirt(proj, b[i], n_iter=n_iter, relaxation=relaxation).x
        if rot is not None:
            rec = Rotation3D(op.volume_shape, rot.matrices_xyz[0].T).forward(rec)
        out[i] = rec
    return out
