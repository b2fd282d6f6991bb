"""The coordinate network under Poisson noise (the report's Fig. 11; issue 12, ablations).

The table's hollow spheres (32×128×128, 61 views over ±60°, projected 2× oversampled) with
electron shot noise: every detector pixel of the unattenuated beam expects ``N0`` electrons
(``--counts``, default 1000, 100 and 30; :func:`cryowedge.simulate.add_poisson_noise`
with 1 Å pixels, so ``N0`` is also the dose per tilt in e⁻/Å²; the densest ray transmits
``e⁻¹``; the noisy counts are log-transformed back to line integrals). The projection SNR
``var(clean) / var(noise)`` of each level is printed. Reconstructions with nothing tuned to
the noise: FBP (ram-lak) and TV-ADMM with the project's defaults, and the table's networks
``mlp`` (σ 0.05) and ``mlp_reg`` (σ 0.05, ``lam_c`` 0.3), 120 epochs
(:func:`cryowedge.inr.bench.table_config`). Scores as in results_inr_table.py (affine
calibration, PSNR with the truth's range, 3-D SSIM).

Run (about 13 min on one quiet core)::

    OMP_NUM_THREADS=1 python benchmarks/results_inr_noise.py --out bench_out/inr_noise

The last line is ``mlp_reg_minus_fbp_psnr_db_at_lowest_dose: N``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.registry import get_method
from cryowedge.inr import fit_inr
from cryowedge.inr.bench import config_line, score_volume, spheres_case, table_config
from cryowedge.workflows.reconstruct import reconstruct_array

ROOT = Path(__file__).resolve().parents[1]


def _options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "inr_noise")
    p.add_argument("--figures", type=Path, default=None)
    p.add_argument("--counts", type=float, nargs="+", default=(1000.0, 100.0, 30.0),
                   help="electrons per unattenuated detector pixel")
    p.add_argument("--methods", nargs="+", default=("fbp", "tv", "mlp", "mlp_reg"),
                   choices=("fbp", "sirt", "tv", "mlp", "mlp_reg"))
    p.add_argument("--shape", type=int, nargs=3, default=(32, 128, 128))
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--lam-c", type=float, default=0.3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="re-score the volumes in --out")
    p.add_argument("--smoke", action="store_true", help="16×64×64, 4 epochs, width 16")
    args = p.parse_args()
    if args.smoke:
        args.shape, args.epochs, args.width = (16, 64, 64), 4, 16
    if args.figures is None:
        args.figures = args.out if args.smoke else ROOT / "docs" / "figures"
    return args


def _figure(cases: dict[float, object], scores: dict[float, dict[str, dict[str, float]]],
            path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from cryowedge.viz.figures import percentile_limits, save_png

    levels = list(cases)
    fig = plt.figure(figsize=(2.0 * len(levels) + 5.0, 2.8))
    grid = fig.add_gridspec(2, len(levels) + 2)
    for i, level in enumerate(levels):
        ax = fig.add_subplot(grid[:, i])
        series = cases[level].tilt_series  # type: ignore[attr-defined]
        image = series[series.shape[0] // 2]
        lo, hi = percentile_limits(image, 1.0)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"N0 {level:g} (SNR {cases[level].projection_snr():.2g})",  # type: ignore[attr-defined]
                     fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    methods = list(next(iter(scores.values())))
    for j, (key, label) in enumerate((("psnr", "PSNR (dB)"), ("ssim", "SSIM"))):
        ax = fig.add_subplot(grid[:, len(levels) + j])
        for m in methods:
            ax.plot(levels, [scores[level][m][key] for level in levels], "o-", ms=3, lw=1,
                    label=m)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("electrons per pixel (less →)", fontsize=7)
        ax.set_ylabel(label, fontsize=8)
        if j == 0:
            ax.legend(fontsize=7)
    fig.suptitle("hollow spheres ±60° under Poisson noise: 0° projections and scores",
                 fontsize=9)
    return save_png(fig, path)


def main() -> None:
    args = _options()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    n_spheres = 12 if args.shape[0] >= 32 else 6
    base = {"epochs": args.epochs, "width": args.width,
            "n_frequencies": 64 if args.width >= 64 else args.width}
    nets = {"mlp": table_config(**base), "mlp_reg": table_config(**base, lam_c=args.lam_c)}
    cases = {c: spheres_case(tuple(args.shape), counts_per_pixel=c, n_spheres=n_spheres)
             for c in args.counts}
    print(f"case: {next(iter(cases.values())).description.split('; Poisson')[0]}; Poisson "
          f"noise at N0 = {', '.join(f'{c:g}' for c in args.counts)} electrons per "
          f"unattenuated pixel; torch threads {torch.get_num_threads()}")
    for c, case in cases.items():
        print(f"  N0 {c:g}: projection SNR {case.projection_snr():.3g}")
    for m in args.methods:
        print(f"  {m}: " + (config_line(nets[m]) if m in nets else "project defaults"))
    print(flush=True)
    scores: dict[float, dict[str, dict[str, float]]] = {}
    seconds: dict[tuple[float, str], float] = {}
    for c, case in cases.items():
        scores[c] = {}
        for m in args.methods:
            path = args.out / f"n0_{c:g}_{m}.npy"
            t0 = time.perf_counter()
            if args.reuse and path.exists():
                volume = np.load(path)
            elif m in nets:
                volume = fit_inr(case.tilt_series, case.geometry, nets[m],
                                 volume_shape=case.shape).volume
            else:
                volume = reconstruct_array(case.tilt_series, case.geometry,
                                           get_method(m).config(thickness=case.shape[0],
                                                                device="cpu"))
            seconds[(c, m)] = time.perf_counter() - t0
            np.save(path, volume)
            scores[c][m] = score_volume(volume, case.truth, case.tilt_range_deg)
            print(f"  N0 {c:g} {m}: {seconds[(c, m)]:.1f} s, PSNR {scores[c][m]['psnr']:.2f} dB, "
                  f"SSIM {scores[c][m]['ssim']:.3f}", flush=True)
    figure = _figure(cases, scores, args.figures / "inr_noise.png")
    print(f"\nfigure: {figure}\n")
    print("| N0 (e⁻/pixel) | projection SNR | " + " | ".join(
        f"{m} PSNR / SSIM" for m in args.methods) + " |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in args.methods) + " |")
    for c, case in cases.items():
        print(f"| {c:g} | {case.projection_snr():.3g} | " + " | ".join(
            f"{scores[c][m]['psnr']:.2f} / {scores[c][m]['ssim']:.3f}" for m in args.methods)
            + " |")
    low = min(cases)
    if "mlp_reg" in scores[low] and "fbp" in scores[low]:
        print(f"\nmlp_reg_minus_fbp_psnr_db_at_lowest_dose: "
              f"{scores[low]['mlp_reg']['psnr'] - scores[low]['fbp']['psnr']:.2f}")


if __name__ == "__main__":
    main()
