"""STET diagnostics of the T-DS vs I-DS comparison of results_stet.py (issue 3), one script.

Run one check at a time (``--help`` of each lists its options)::

    OMP_NUM_THREADS=2 python benchmarks/stet_check.py seeds                 # ~10 min
    OMP_NUM_THREADS=2 python benchmarks/stet_check.py needle                # ~4 min
    OMP_NUM_THREADS=2 python benchmarks/stet_check.py size --width 192      # ~90 s
    OMP_NUM_THREADS=2 python benchmarks/stet_check.py thin                  # ~1 min
    OMP_NUM_THREADS=2 python benchmarks/stet_check.py figure                # ~2 min

* ``seeds``: spread over noise, mask and phantom realisations; per dose the paired
  difference I-DS − T-DS (mean ± sd over seeds, seeds where I-DS wins).
* ``needle``: a real-data ground truth, as in the thesis: the TV reconstruction of the real
  NIST STEM-HAADF needle series in ../shared/data (binned ``--bin``×, clipped at 0, max 1);
  skips cleanly without the data.
* ``size``: 10 % dose on a wider field (``--width``, ``--depth``; ``--snr 1e6`` = no noise).
* ``thin``: SNR over the filament voxels and SNR of the spectrum above 0.15 cycles/px, at
  20 % and 10 % with λ 1.
* ``figure``: thesis Fig. 3.6 at small scale: orthoslices (stet_tds_vs_ids.png) and profile
  lines (stet_profiles.png) in ``--out`` (default docs/figures).

Everything but the checked quantity is results_stet.py's protocol: the phantom of
:func:`cryowedge.simulate.stet.stet_phantom` (crowded cell + filaments, 48×96×96 at 10 Å),
tilts −70:1:70 projected 2× finer and binned, Gaussian noise SNR 10
(:class:`~cryowedge.config.StetSimulateConfig` defaults), anisotropic TV + positivity by ADMM
30 × 6 CG on data normalised to unit std; T-DS keeps round(f·141) evenly spaced tilts, I-DS a
random fraction f of the pixels of every tilt. SNR (dB) is scored after an affine grey-level
fit to the truth (``--normalize``; :mod:`cryowedge.metrics.snr`). The last line of every
check is one machine-readable summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.models import StetSimulateConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.metrics.snr import high_pass_snr_db, masked_snr_db, snr_db
from cryowedge.recon.stet import reconstruct_stet, reconstruct_tds
from cryowedge.simulate import random_scan_mask, uniform_tilt_subset
from cryowedge.simulate.stet import simulate_stet, stet_phantom

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
#: results_stet.py's dose list: the figure reuses its I-DS mask seeds (100 + index).
TABLE_DOSES = (0.5, 0.2, 0.1, 0.03)
SIM = StetSimulateConfig()  # tilts −70:1:70, SNR 10, oversample 2


def full_series(
    truth: np.ndarray, *, snr: float = SIM.snr, seed: int = 0, pixel_size_angstrom: float = 10.0
) -> tuple[TiltGeometry, np.ndarray]:
    """The tilt geometry and the full-dose noisy series ``(141, ny, nx)`` of ``truth``."""
    geom = TiltGeometry.from_range(
        SIM.tilt_min_deg,
        SIM.tilt_max_deg,
        SIM.tilt_step_deg,
        truth.shape[1:],
        pixel_size_angstrom=pixel_size_angstrom,
    )
    sim = simulate_stet(
        truth, geom, dose_fraction=1.0, snr=snr, oversample=SIM.oversample, seed=seed
    )
    return geom, sim.full


def tds_and_ids(
    full: np.ndarray,
    geom: TiltGeometry,
    fraction: float,
    args: argparse.Namespace,
    *,
    mask_seed: int,
    tv_lambda: float,
    volume_shape: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray, int]:
    """At equal dose ``fraction``: T-DS + TV and I-DS + CS-TV tomograms, and T-DS's tilt count."""
    idx = uniform_tilt_subset(geom.n_tilts, fraction)
    mask = random_scan_mask(geom.tilt_series_shape, fraction, seed=mask_seed)
    data = np.where(mask, full, np.float32(0.0))
    common = dict(
        volume_shape=volume_shape,
        tv_lambda=tv_lambda,
        n_iter=args.admm_iter,
        cg_iter=args.cg_iter,
        regularizer="tv-aniso",
        positivity=True,
    )
    tds = reconstruct_tds(full, geom, tilt_indices=idx, **common).x.numpy()
    ids = reconstruct_stet(data, mask, geom, **common).x.numpy()
    return tds, ids, int(idx.size)


def _phantom(args: argparse.Namespace, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    shape = (args.depth, args.width, args.width)
    return stet_phantom(shape, n_particles=args.particles, n_filaments=args.filaments, seed=seed)


def seeds(args: argparse.Namespace) -> None:
    diffs: dict[float, list[float]] = {f: [] for f in args.doses}
    for seed in args.seeds:
        _, truth = _phantom(args, seed)
        geom, full = full_series(truth, snr=args.snr, seed=seed)
        for i, f in enumerate(args.doses):
            tds = ids = -np.inf
            for lam in args.lambdas:
                a, b, _ = tds_and_ids(
                    full,
                    geom,
                    f,
                    args,
                    mask_seed=1000 * seed + i,
                    tv_lambda=lam,
                    volume_shape=truth.shape,
                )
                tds = max(tds, snr_db(a, truth, args.normalize))
                ids = max(ids, snr_db(b, truth, args.normalize))
            diffs[f].append(ids - tds)
            print(
                f"seed {seed} dose {f:g}: SNR T-DS {tds:.2f} dB, I-DS {ids:.2f} dB, "
                f"I-DS − T-DS {ids - tds:+.2f} dB",
                flush=True,
            )
    print("\n| dose | I-DS − T-DS, mean ± sd (dB) | seeds where I-DS wins |")
    print("| ---: | ---: | ---: |")
    for f, d in diffs.items():
        a = np.asarray(d)
        print(
            f"| {100 * f:g} % | {a.mean():+.2f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.2f} "
            f"| {int((a > 0).sum())} / {a.size} |"
        )
    print(
        "mean_ids_minus_tds_db: " + " ".join(f"{f:g}:{np.mean(d):+.2f}" for f, d in diffs.items())
    )


def needle_truth(bin_factor: int, thickness: int, tv_lambda: float) -> tuple[np.ndarray, float]:
    """TV reconstruction (positivity) of the real needle series, ``(thickness, 256/b, 256/b)``,
    scaled to max 1, and its voxel size (Å)."""
    from cryowedge.config.models import TvConfig
    from cryowedge.io.tilt_series import load_tilt_series
    from cryowedge.workflows.reconstruct import reconstruct_array

    series = load_tilt_series(
        SHARED / "etspy_HAADF_needle_aligned.mrc",
        SHARED / "etspy_HAADF_needle_aligned.tlt",
        tilt_axis_angle_deg=-90.0,
    )
    data = series.data.astype(np.float32)
    n, ny, nx = data.shape
    data = data.reshape(n, ny // bin_factor, bin_factor, nx // bin_factor, bin_factor).mean(
        axis=(2, 4)
    )
    pixel = bin_factor * series.geometry.pixel_size_angstrom
    geom = series.geometry.with_(detector_shape=data.shape[1:], pixel_size_angstrom=pixel)
    cfg = TvConfig(positivity=True, tv_lambda=tv_lambda, thickness=thickness, device="cpu")
    vol = np.clip(reconstruct_array(data, geom, cfg), 0.0, None)
    return (vol / vol.max()).astype(np.float32), pixel


def needle(args: argparse.Namespace) -> None:
    if not (SHARED / "etspy_HAADF_needle_aligned.mrc").exists():
        print(f"skipped: {SHARED} has no needle series")
        return
    truth, pixel = needle_truth(args.bin, args.thickness, args.truth_lambda)
    geom, full = full_series(truth, snr=args.snr, pixel_size_angstrom=pixel, seed=0)
    print(f"truth {truth.shape} at {pixel:g} Å (real needle, TV of 77 views)", flush=True)
    best: dict[float, tuple[float, float]] = {}
    for i, f in enumerate(args.doses):
        for lam in args.lambdas:
            t = time.perf_counter()
            a, b, n_tds = tds_and_ids(
                full, geom, f, args, mask_seed=100 + i, tv_lambda=lam, volume_shape=truth.shape
            )
            a, b = snr_db(a, truth, args.normalize), snr_db(b, truth, args.normalize)
            prev = best.get(f, (-np.inf, -np.inf))
            best[f] = (max(prev[0], a), max(prev[1], b))
            print(
                f"dose {f:g} ({n_tds} tilts for T-DS), λ {lam:g}: SNR T-DS {a:.2f} dB, "
                f"I-DS {b:.2f} dB ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
    print("best_snr_tds_ids: " + " ".join(f"{f:g}:{a:.2f}/{b:.2f}" for f, (a, b) in best.items()))


def size(args: argparse.Namespace) -> None:
    _, truth = _phantom(args)
    geom, full = full_series(truth, snr=args.snr, seed=0)
    best = {"T-DS": -np.inf, "I-DS": -np.inf}
    for lam in args.lambdas:
        t = time.perf_counter()
        a, b, n_tds = tds_and_ids(
            full, geom, args.dose, args, mask_seed=102, tv_lambda=lam, volume_shape=truth.shape
        )
        if lam == args.lambdas[0]:
            print(
                f"shape {truth.shape}, dose {args.dose:g}, SNR {args.snr:g}: T-DS {n_tds} tilts, "
                f"I-DS {geom.n_tilts} tilts"
            )
        sa, sb = snr_db(a, truth, args.normalize), snr_db(b, truth, args.normalize)
        best["T-DS"], best["I-DS"] = max(best["T-DS"], sa), max(best["I-DS"], sb)
        print(
            f"lambda {lam:g}: SNR T-DS {sa:.2f} dB, I-DS {sb:.2f} dB "
            f"({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
    print(f"best_snr_tds_ids: {best['T-DS']:.2f} {best['I-DS']:.2f}")


def thin(args: argparse.Namespace) -> None:
    cell, truth = _phantom(args)
    filaments = (truth - cell) > 0.1
    geom, full = full_series(truth, snr=args.snr)
    scores = []
    for f, seed in ((0.2, 101), (0.1, 102)):
        a, b, _ = tds_and_ids(
            full, geom, f, args, mask_seed=seed, tv_lambda=args.tv_lambda, volume_shape=truth.shape
        )
        row = (
            masked_snr_db(a, truth, filaments, args.normalize),
            masked_snr_db(b, truth, filaments, args.normalize),
            high_pass_snr_db(a, truth, 0.15, args.normalize),
            high_pass_snr_db(b, truth, 0.15, args.normalize),
        )
        scores.append((f, row))
        print(
            f"dose {f:g}: filament-voxel SNR T-DS {row[0]:.2f} I-DS {row[1]:.2f} dB | "
            "high-pass SNR "
            f"T-DS {row[2]:.2f} I-DS {row[3]:.2f} dB",
            flush=True,
        )
    print(
        "thin_hp_snr_tds_ids: "
        + " ".join(f"{f:g}:{r[0]:.2f}/{r[1]:.2f},{r[2]:.2f}/{r[3]:.2f}" for f, r in scores)
    )


def figure(args: argparse.Namespace) -> None:
    from cryowedge.viz.figures import _plt, orthoslice_panel, save_png

    doses = {0.5: 1.0, 0.1: 1.0, 0.03: 0.3}  # dose -> λ (best of results_stet.py's table)
    cell, truth = _phantom(args)
    geom, full = full_series(truth, snr=args.snr)
    volumes: dict[str, np.ndarray] = {"ground truth": truth}
    scores: dict[str, float] = {}
    for f, lam in doses.items():
        tds, ids, n_tds = tds_and_ids(
            full,
            geom,
            f,
            args,
            mask_seed=100 + TABLE_DOSES.index(f),
            tv_lambda=lam,
            volume_shape=truth.shape,
        )
        for name, volume in (
            (f"T-DS {100 * f:g} % ({n_tds} tilts)", tds),
            (f"I-DS {100 * f:g} %", ids),
        ):
            volumes[name] = volume
            scores[name] = snr_db(volume, truth, args.normalize)
    px = 10.0
    orthoslice_panel(volumes, args.out / "stet_tds_vs_ids.png", pixel_size_angstrom=px)

    # profile line: the row of the central XY slice that crosses the most filament voxels
    z = truth.shape[0] // 2
    row = int(np.argmax(((truth - cell)[z] > 0.1).sum(axis=1)))
    plt = _plt()
    fig, axes = plt.subplots(1, len(doses), figsize=(4.2 * len(doses), 3.0), sharey=True)
    x_nm = np.arange(truth.shape[2]) * px / 10
    for ax, f in zip(axes, doses, strict=True):
        ax.plot(x_nm, truth[z, row], color="black", lw=1.5, label="ground truth")
        for name, colour in (
            (next(n for n in volumes if n.startswith(f"T-DS {100 * f:g} %")), "tab:orange"),
            (f"I-DS {100 * f:g} %", "tab:blue"),
        ):
            ax.plot(x_nm, volumes[name][z, row], color=colour, lw=1.0, label=name)
        ax.set_title(f"dose {100 * f:g} %", fontsize=10)
        ax.set_xlabel("x (nm)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"density, XY slice z={z}, row y={row}")
    save_png(fig, args.out / "stet_profiles.png")
    print("snr_db: " + "; ".join(f"{k} {v:.2f}" for k, v in scores.items()))


def _common_options() -> argparse.ArgumentParser:
    """Options every check shares, in a fresh parser per check: argparse shares a parent's
    actions between its children, so one check's ``set_defaults`` would change them all."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--width", type=int, default=96, help="phantom y and x size (voxels)")
    common.add_argument("--depth", type=int, default=48, help="phantom z size (voxels)")
    common.add_argument("--particles", type=int, default=8, help="particles of the cell")
    common.add_argument("--filaments", type=int, default=10, help="filaments added to the cell")
    common.add_argument(
        "--snr", type=float, default=SIM.snr, help="per-pixel noise SNR (1e6: noise-free)"
    )
    common.add_argument(
        "--admm-iter", type=int, default=30, help="ADMM iterations of every TV solve"
    )
    common.add_argument("--cg-iter", type=int, default=6, help="CG steps per ADMM iteration")
    common.add_argument(
        "--normalize",
        default="affine",
        choices=("none", "zscore", "affine"),
        help="grey-level fit of each reconstruction before scoring",
    )
    common.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    return common


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)

    p = sub.add_parser("seeds", parents=[_common_options()], help="spread over noise/mask/phantom seeds")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--doses", type=float, nargs="+", default=[0.5, 0.2, 0.1])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    p.set_defaults(run=seeds)

    p = sub.add_parser("needle", parents=[_common_options()], help="real-needle ground truth")
    p.add_argument("--bin", type=int, default=2)
    p.add_argument("--thickness", type=int, default=96)
    p.add_argument("--doses", type=float, nargs="+", default=[0.5, 0.1])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    p.add_argument("--truth-lambda", type=float, default=1.0, help="TV weight of the truth")
    p.set_defaults(run=needle)

    p = sub.add_parser("size", parents=[_common_options()], help="10 %% dose on a wider field")
    p.add_argument("--dose", type=float, default=0.1)
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    p.set_defaults(run=size, width=192, particles=24, filaments=30)

    p = sub.add_parser("thin", parents=[_common_options()], help="filament-voxel and high-pass SNR")
    p.add_argument("--tv-lambda", type=float, default=1.0)
    p.set_defaults(run=thin)

    p = sub.add_parser("figure", parents=[_common_options()], help="orthoslices and profile lines (PNG)")
    p.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "figures", help="directory of the PNGs"
    )
    p.set_defaults(run=figure)

    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
