"""CRM paper, Fig. 9: AVG, M-AVG and CRM-SART as the tilt range of every copy grows (N = 11).

N = 11 copies, tilt range ±30° … ±70° at 3° per copy, noise-free, SART 20 iterations with
λ 0.2 for every method (Table 1's settings), several seeds; the authors' set-up
(benchmarks/results_crm_common.py); the ribosome at the paper's 200², Shepp–Logan at 200² by
default (``--full``: 320²). Default ranges ±30, 40, 50, 60, 70; ``--ranges`` takes the paper's
9 steps of 5°.

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_crm_tilt_range.py`` (about 4 minutes on one
core). The last line is the key figure: PSNR at the narrowest and widest range.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_crm_common import (  # noqa: E402
    DATASETS,
    METHODS,
    fmt,
    make_2d,
    mean_std,
    print_config,
    run_methods,
    save_json,
    score_2d,
)

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3), ("pcc", "PCC", 4))


def plot(results: dict, ranges: list[float], datasets: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(datasets), 3, figsize=(12, 3.3 * len(datasets)), squeeze=False)
    colours = {"AVG": "tab:blue", "M-AVG": "tab:orange", "CRM": "tab:green"}
    for r, ds in enumerate(datasets):
        for c, (m, label, _) in enumerate(METRICS):
            ax = axes[r, c]
            for meth in METHODS:
                vals = [mean_std([s[m] for s in results[ds][str(a)][meth]]) for a in ranges]
                ax.errorbar(
                    ranges,
                    [v[0] for v in vals],
                    yerr=[v[1] for v in vals],
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=meth,
                    color=colours[meth],
                )
            ax.set_xlabel("tilt range ± (degrees)")
            ax.set_ylabel(label)
            ax.set_title(f"{ds}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
            if r == 0 and c == 0:
                ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranges", type=float, nargs="+", default=[30, 40, 50, 60, 70])
    ap.add_argument("--step", type=float, default=3.0)
    ap.add_argument("--n-copies", type=int, default=11)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--relaxation", type=float, default=0.2)
    ap.add_argument("--full", action="store_true", help="Shepp–Logan at the paper's 320²")
    ap.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "crm_tilt_range.png"))
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "crm" / "tilt_range.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sizes = {"shepp-logan": None if args.full else 200, "ribosome": None}
    print_config(
        "results_crm_tilt_range",
        {
            "tilt ranges ±": args.ranges,
            "tilt step": args.step,
            "copies N": args.n_copies,
            "seeds": args.seeds,
            "data sets": args.datasets,
            "sizes": {k: (v or "paper") for k, v in sizes.items()},
            "convention": "paper (authors' set-up)",
            "noise": "none",
            "SART": f"{args.n_iter} iterations, λ {args.relaxation}, zeros start, random view order",
            "CRM output": "particle='mean'",
            "metrics": "affine-normalised, inside the support",
        },
    )
    t_start = time.perf_counter()
    results: dict = {"config": vars(args)}
    for ds in args.datasets:
        results[ds] = {}
        for rng in args.ranges:
            per: dict[str, list] = {m: [] for m in METHODS}
            for seed in range(args.seeds):
                prob = make_2d(
                    ds, args.n_copies, seed=seed, range_deg=rng, step_deg=args.step, size=sizes[ds]
                )
                imgs, _, _ = run_methods(prob.data, n_iter=args.n_iter, relaxation=args.relaxation)
                for m in METHODS:
                    per[m].append(score_2d(imgs[m], prob.data.truth, prob.data.support))
            results[ds][str(rng)] = per
            print(
                f"{ds} ±{rng:g}°: "
                + " | ".join(f"{m} {fmt([s['psnr'] for s in per[m]])}" for m in METHODS),
                flush=True,
            )
    print()
    for ds in args.datasets:
        print(f"### {ds}, N = {args.n_copies} (mean ± std over {args.seeds} seeds)\n")
        print(
            "| range | "
            + " | ".join(f"{m} PSNR" for m in METHODS)
            + " | "
            + " | ".join(f"{m} SSIM" for m in METHODS)
            + " | "
            + " | ".join(f"{m} PCC" for m in METHODS)
            + " |"
        )
        print("| ---: |" + " ---: |" * 9)
        for rng in args.ranges:
            cells = []
            for m, _, dg in METRICS:
                cells += [fmt([s[m] for s in results[ds][str(rng)][meth]], dg) for meth in METHODS]
            print(f"| ±{rng:g}° | " + " | ".join(cells) + " |")
        print()
    if args.figure:
        plot(
            results,
            args.ranges,
            args.datasets,
            Path(args.figure),
            f"CRM Fig. 9: N = {args.n_copies}, {args.step:g}° steps, SART {args.n_iter} it, λ {args.relaxation}, "
            f"{args.seeds} seeds, noise-free",
        )
        print(f"figure: {args.figure}")
    save_json(args.out, results)
    print(f"wall time {time.perf_counter() - t_start:.0f} s; json: {args.out}")
    a0, a1 = str(args.ranges[0]), str(args.ranges[-1])
    print(
        f"tilt_range_psnr_pm{args.ranges[0]:g}_to_pm{args.ranges[-1]:g}: "
        + "; ".join(
            f"{ds} "
            + " ".join(
                f"{m} {mean_std([s['psnr'] for s in results[ds][a0][m]])[0]:.2f}->"
                f"{mean_std([s['psnr'] for s in results[ds][a1][m]])[0]:.2f}"
                for m in METHODS
            )
            for ds in args.datasets
        )
    )


if __name__ == "__main__":
    main()
