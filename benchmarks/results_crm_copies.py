"""CRM paper, Fig. 7: PSNR, SSIM and PCC of AVG, M-AVG and CRM-SART as the number of copies grows.

±50° at 3° per copy, noise-free, SART 20 iterations with λ 0.2 for every method (Table 1's
settings; the paper does not restate them for Fig. 7), N = 3 … 49, several seeds. Data:
the authors' set-up (benchmarks/results_crm_common.py, ``convention="paper"``); the ribosome
slice at the paper's 200², the Shepp–Logan phantom at 200² by default (support radius and
phantom scaled by 200/320; ``--full`` runs the paper's 320², which needs about 5.4 GB for the
N = 49 CRM plans). ``--conventions paper project`` adds the project's simulator. ``--sirt``
adds CRM-SIRT (:func:`~cryowedge.crm.solvers.crm_sirt` defaults, 120 iterations, λ 1) and
M-AVG of per-copy SIRT reconstructions with the same settings.

Writes a table (stdout, JSON) and a PNG like the paper's Fig. 7 (PSNR / SSIM / PCC against N
for both data sets). The last line is the key figure: PSNR at the smallest and largest N.

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_crm_copies.py`` (about 6 minutes on one core).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_crm_common import (  # noqa: E402
    DATASETS,
    METHODS,
    fmt,
    make_2d,
    mean_std,
    print_config,
    reconstruct_copies_sirt,
    run_methods,
    save_json,
    score_2d,
)

from cryowedge.crm.baselines import masked_fourier_average  # noqa: E402
from cryowedge.crm.operator import CRMOperator  # noqa: E402
from cryowedge.crm.solvers import crm_sirt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3), ("pcc", "PCC", 4))


def plot(results: dict, ns: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in results if k.count("/") == 1]
    fig, axes = plt.subplots(len(keys), 3, figsize=(12, 3.3 * len(keys)), squeeze=False)
    colours = {
        "AVG": "tab:blue",
        "M-AVG": "tab:orange",
        "CRM": "tab:green",
        "M-AVG (SIRT)": "tab:brown",
        "CRM-SIRT": "tab:purple",
    }
    for r, key in enumerate(keys):
        for c, (m, label, _) in enumerate(METRICS):
            ax = axes[r, c]
            for meth in [k for k in colours if k in results[key][str(ns[0])]]:
                mean = [mean_std([s[m] for s in results[key][str(n)][meth]])[0] for n in ns]
                std = [mean_std([s[m] for s in results[key][str(n)][meth]])[1] for n in ns]
                ax.errorbar(
                    ns, mean, yerr=std, marker="o", ms=3, capsize=2, label=meth, color=colours[meth]
                )
            ax.set_xlabel("number of copies N")
            ax.set_ylabel(label)
            ax.set_title(f"{key}: {label}", fontsize=9)
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
    ap.add_argument("--copies", type=int, nargs="+", default=[3, 5, 7, 11, 21, 35, 49])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--conventions", nargs="+", default=["paper"], choices=["paper", "project"])
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--relaxation", type=float, default=0.2)
    ap.add_argument("--full", action="store_true", help="Shepp–Logan at the paper's 320²")
    ap.add_argument("--plan-cache-gb", type=float, default=6.0)
    ap.add_argument("--sirt", action="store_true", help="add CRM-SIRT and M-AVG of per-copy SIRT")
    ap.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "crm_copies.png"))
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "crm" / "copies.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sizes = {"shepp-logan": None if args.full else 200, "ribosome": None}
    print_config(
        "results_crm_copies",
        {
            "copies N": args.copies,
            "seeds": args.seeds,
            "data sets": args.datasets,
            "conventions": args.conventions,
            "sizes": {k: (v or "paper") for k, v in sizes.items()},
            "tilt": "±50° at 3° (34 views per copy)",
            "noise": "none",
            "SART": f"{args.n_iter} iterations, λ {args.relaxation}, zeros start, random view order",
            "CRM output": "particle='mean'",
            "metrics": "affine-normalised, inside the support",
        },
    )
    t_start = time.perf_counter()
    results: dict = {"config": vars(args)}
    methods = list(METHODS) + (["M-AVG (SIRT)", "CRM-SIRT"] if args.sirt else [])
    for conv in args.conventions:
        for ds in args.datasets:
            key = f"{conv}/{ds}"
            results[key] = {}
            for n in args.copies:
                per: dict[str, list] = {m: [] for m in methods}
                secs: dict[str, list] = {m: [] for m in methods}
                for seed in range(args.seeds):
                    prob = make_2d(ds, n, seed=seed, convention=conv, size=sizes[ds])
                    imgs, sec, _ = run_methods(
                        prob.data,
                        n_iter=args.n_iter,
                        relaxation=args.relaxation,
                        plan_cache_bytes=int(args.plan_cache_gb * 2**30),
                    )
                    if args.sirt:
                        op = CRMOperator.from_data(prob.data)
                        b = torch.from_numpy(
                            np.ascontiguousarray(prob.data.projections, dtype=np.float32)
                        )
                        t0 = time.perf_counter()
                        imgs["CRM-SIRT"] = op.particle(crm_sirt(op, b).x).numpy()
                        sec["CRM-SIRT"] = time.perf_counter() - t0
                        t0 = time.perf_counter()
                        copies = reconstruct_copies_sirt(op, b, n_iter=120, relaxation=1.0)
                        imgs["M-AVG (SIRT)"] = masked_fourier_average(op, b, copies=copies).numpy()
                        sec["M-AVG (SIRT)"] = time.perf_counter() - t0
                    for m in methods:
                        per[m].append(score_2d(imgs[m], prob.data.truth, prob.data.support))
                        secs[m].append(sec[m])
                results[key][str(n)] = per
                results[key][f"seconds/{n}"] = secs
                print(
                    f"{key} N={n}: "
                    + " | ".join(f"{m} {fmt([s['psnr'] for s in per[m]])}" for m in methods)
                    + f"  (CRM {mean_std(secs['CRM'])[0]:.1f} s, AVG pipeline {mean_std(secs['AVG'])[0]:.1f} s)",
                    flush=True,
                )
    print()
    for conv in args.conventions:
        for ds in args.datasets:
            key = f"{conv}/{ds}"
            print(f"### {key} (mean ± std over {args.seeds} seeds)\n")
            print(
                "| N | "
                + " | ".join(f"{m} PSNR" for m in methods)
                + " | "
                + " | ".join(f"{m} SSIM" for m in methods)
                + " | "
                + " | ".join(f"{m} PCC" for m in methods)
                + " |"
            )
            print("| ---: |" + " ---: |" * (3 * len(methods)))
            for n in args.copies:
                cells = []
                for m, _, dg in METRICS:
                    cells += [
                        fmt([s[m] for s in results[key][str(n)][meth]], dg) for meth in methods
                    ]
                print(f"| {n} | " + " | ".join(cells) + " |")
            print()
    if args.figure:
        plot(
            results,
            args.copies,
            Path(args.figure),
            f"CRM Fig. 7: ±50° at 3°, SART {args.n_iter} it, λ {args.relaxation}, {args.seeds} seeds, noise-free",
        )
        print(f"figure: {args.figure}")
    save_json(args.out, results)
    print(f"wall time {time.perf_counter() - t_start:.0f} s; json: {args.out}")
    n0, n1 = str(args.copies[0]), str(args.copies[-1])
    conv = args.conventions[0]
    parts = []
    for ds in args.datasets:
        r = results[f"{conv}/{ds}"]
        parts.append(
            f"{ds} "
            + " ".join(
                f"{m} {mean_std([s['psnr'] for s in r[n0][m]])[0]:.2f}->{mean_std([s['psnr'] for s in r[n1][m]])[0]:.2f}"
                for m in METHODS
            )
        )
    print(f"copies_psnr_N{n0}_to_N{n1}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
