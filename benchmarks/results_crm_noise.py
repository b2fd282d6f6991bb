"""CRM paper, Fig. 10: M-AVG (and AVG) against CRM-SART with noisy projections, SNR 1, 5 and 10.

The ribosome data set (the authors' set-up, benchmarks/results_crm_common.py), ±50° at 3°,
Gaussian noise added to every copy's projections (``--noise-domain image``: to every stained
image before projection, as the authors' simulator code does), SART 40 iterations with λ 0.2 for every
method (the paper's Fig. 10 settings), N = 3, 11, 49 copies by default. Also CRM-SIRT
(:func:`cryowedge.crm.solvers.crm_sirt` with its defaults, 120 iterations, λ 1, the authors'
SIRT iteration count; not in the paper's Fig. 10): it updates the particle with the residuals
of all copies at once, so it averages the copies' noise, where CRM-SART's sequential copy
passes with a fixed λ follow the last copies' noise. For a fair comparison M-AVG is then also
built from per-copy SIRT reconstructions with the same defaults ("M-AVG (SIRT)");
``--no-sirt`` skips both. ``--tv`` adds CRM-TV (:func:`cryowedge.crm.solvers.crm_tv`: the
project's TV-ADMM on ``A_CRM`` with TV on the particle only, not in the paper) with the
``cryowedge crm --solver tv`` defaults: data divided by their standard deviation, λ_TV 0.1
(``--tv-lambda``), 50 ADMM iterations of 10 CG steps (``--tv-iter``); costly, so run it at small
N (e.g. ``--copies 3 11``).

SNR: the project's definition ``SNR = var(clean) / σ²`` per copy (a variance ratio); with
``--snr-authors`` the values follow the authors' C++ (``σ = std / 10^(SNR/10)``, i.e. a
variance ratio of ``10^(SNR/5)``), which is much milder: their SNR 1, 5, 10 are variance ratios
1.58, 10 and 100.

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_crm_noise.py`` (about 8 minutes on one core).
The last line is the key figure: CRM − M-AVG PSNR per SNR at the largest N.
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
from cryowedge.crm.solvers import crm_sirt, crm_tv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3), ("pcc", "PCC", 4))


def plot(results: dict, snrs: list[float], ns: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    styles = {
        "M-AVG": "--",
        "CRM": "-",
        "AVG": ":",
        "CRM-SIRT": "-.",
        "M-AVG (SIRT)": (0, (1, 3)),
        "CRM-TV": (0, (5, 1, 1, 1)),
    }
    colours = dict(zip(snrs, ("tab:red", "tab:orange", "tab:green", "tab:blue"), strict=False))
    for c, (m, label, _) in enumerate(METRICS):
        ax = axes[c]
        for snr in snrs:
            for meth in [
                m
                for m in ("M-AVG", "CRM", "M-AVG (SIRT)", "CRM-SIRT", "CRM-TV")
                if m in results[str(snr)][str(ns[0])]
            ]:
                vals = [mean_std([s[m] for s in results[str(snr)][str(n)][meth]]) for n in ns]
                ax.errorbar(
                    ns,
                    [v[0] for v in vals],
                    yerr=[v[1] for v in vals],
                    ls=styles[meth],
                    marker="o",
                    ms=3,
                    capsize=2,
                    color=colours[snr],
                    label=f"{meth} SNR {snr:g}",
                )
        ax.set_xticks(ns)
        ax.set_xlabel("number of copies N")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snrs", type=float, nargs="+", default=[1.0, 5.0, 10.0])
    ap.add_argument(
        "--snr-authors",
        action="store_true",
        help="read --snrs as the authors' C++ does: σ = std / 10^(SNR/10)",
    )
    ap.add_argument(
        "--noise-domain",
        choices=["projection", "image"],
        default="projection",
        help="noise on the projections (paper text) or on the stained images (authors' code)",
    )
    ap.add_argument("--copies", type=int, nargs="+", default=[3, 11, 49])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--no-sirt", action="store_true", help="skip CRM-SIRT")
    ap.add_argument("--tv", action="store_true", help="add CRM-TV (crm_tv, the CLI defaults)")
    ap.add_argument("--tv-lambda", type=float, default=0.1, help="CRM-TV weight on unit-std data")
    ap.add_argument("--tv-iter", type=int, default=50, help="CRM-TV ADMM iterations")
    ap.add_argument("--n-iter", type=int, default=40)
    ap.add_argument("--relaxation", type=float, default=0.2)
    ap.add_argument("--plan-cache-gb", type=float, default=6.0)
    ap.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "crm_noise.png"))
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "crm" / "noise.json"))
    ap.add_argument("--replot", metavar="JSON", help="only redraw the figure from a saved run")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.replot:
        import json

        saved = json.loads(Path(args.replot).read_text())
        cfg = saved["config"]
        plot(
            saved,
            cfg["snrs"],
            cfg["copies"],
            Path(args.figure),
            f"CRM Fig. 10: ribosome, ±50° at 3°, SART {cfg['n_iter']} it, λ {cfg['relaxation']}, "
            f"SNR {'authors σ = std/10^(SNR/10)' if cfg['snr_authors'] else 'variance ratio'} on the {cfg.get('noise_domain', 'projection')}s, "
            f"{cfg['seeds']} seeds",
        )
        print(f"figure: {args.figure}")
        return
    print_config(
        "results_crm_noise",
        {
            "data set": "ribosome 200², support r 65, authors' set-up",
            "SNR": f"{args.snrs} ({'authors: σ = std / 10^(SNR/10)' if args.snr_authors else 'variance ratio per copy, project'})",
            "noise on": args.noise_domain,
            "copies N": args.copies,
            "seeds": args.seeds,
            "tilt": "±50° at 3°",
            "SART": f"{args.n_iter} iterations, λ {args.relaxation}, zeros start, random view order",
            "CRM output": "particle='mean'",
            "SIRT variants": "off"
            if args.no_sirt
            else "CRM-SIRT (crm_sirt defaults) and M-AVG of per-copy SIRT: 120 iterations, λ 1, zeros start",
            "CRM-TV": f"crm_tv, data / std, λ_TV {args.tv_lambda}, {args.tv_iter} ADMM iterations "
            "x 10 CG, zeros start"
            if args.tv
            else "off",
            "metrics": "affine-normalised, inside the support",
        },
    )
    t_start = time.perf_counter()
    results: dict = {"config": vars(args)}
    methods = (
        list(METHODS)
        + ([] if args.no_sirt else ["M-AVG (SIRT)", "CRM-SIRT"])
        + (["CRM-TV"] if args.tv else [])
    )
    seconds: dict[str, list[float]] = {}
    for snr in args.snrs:
        ratio = 10 ** (snr / 5) if args.snr_authors else snr
        results[str(snr)] = {}
        for n in args.copies:
            per: dict[str, list] = {m: [] for m in methods}
            for seed in range(args.seeds):
                prob = make_2d("ribosome", n, seed=seed, snr=ratio, noise_domain=args.noise_domain)
                imgs, _, _ = run_methods(
                    prob.data,
                    n_iter=args.n_iter,
                    relaxation=args.relaxation,
                    plan_cache_bytes=int(args.plan_cache_gb * 2**30),
                )
                if not args.no_sirt:
                    op = CRMOperator.from_data(prob.data)
                    b = torch.from_numpy(
                        np.ascontiguousarray(prob.data.projections, dtype=np.float32)
                    )
                    imgs["CRM-SIRT"] = op.particle(crm_sirt(op, b).x).numpy()
                    copies = reconstruct_copies_sirt(op, b, n_iter=120, relaxation=1.0)
                    imgs["M-AVG (SIRT)"] = masked_fourier_average(op, b, copies=copies).numpy()
                if args.tv:
                    op = CRMOperator.from_data(prob.data)
                    b = torch.from_numpy(
                        np.ascontiguousarray(prob.data.projections, dtype=np.float32)
                    )
                    scale = float(b.std())
                    t0 = time.perf_counter()
                    res = crm_tv(op, b / scale, n_iter=args.tv_iter, lam=args.tv_lambda)
                    seconds.setdefault(f"CRM-TV N={n}", []).append(time.perf_counter() - t0)
                    imgs["CRM-TV"] = op.particle(res.x).numpy() * scale
                for m in methods:
                    per[m].append(score_2d(imgs[m], prob.data.truth, prob.data.support))
            results[str(snr)][str(n)] = per
            print(
                f"SNR {snr:g} N={n}: "
                + " | ".join(f"{m} {fmt([s['psnr'] for s in per[m]])}" for m in methods),
                flush=True,
            )
    print()
    print(f"### ribosome, noisy projections (mean ± std over {args.seeds} seeds)\n")
    print(
        "| SNR | N | "
        + " | ".join(f"{m} PSNR" for m in methods)
        + " | CRM − M-AVG | "
        + " | ".join(f"{m} SSIM" for m in methods)
        + " | "
        + " | ".join(f"{m} PCC" for m in methods)
        + " |"
    )
    print("| ---: | ---: |" + " ---: |" * (3 * len(methods) + 1))
    for snr in args.snrs:
        for n in args.copies:
            r = results[str(snr)][str(n)]
            diff = [c["psnr"] - a["psnr"] for c, a in zip(r["CRM"], r["M-AVG"], strict=True)]
            cells = [fmt([s["psnr"] for s in r[m]]) for m in methods] + [fmt(diff)]
            for m, _, dg in METRICS[1:]:
                cells += [fmt([s[m] for s in r[meth]], dg) for meth in methods]
            print(f"| {snr:g} | {n} | " + " | ".join(cells) + " |")
    print()
    if args.figure:
        plot(
            results,
            args.snrs,
            args.copies,
            Path(args.figure),
            f"CRM Fig. 10: ribosome, ±50° at 3°, SART {args.n_iter} it, λ {args.relaxation}, "
            f"SNR {'authors σ = std/10^(SNR/10)' if args.snr_authors else 'variance ratio'} on the {args.noise_domain}s, "
            f"{args.seeds} seeds",
        )
        print(f"figure: {args.figure}")
    if seconds:
        print(
            "CRM-TV seconds (loaded machine): "
            + ", ".join(f"{k} {mean_std(v)[0]:.0f}" for k, v in seconds.items())
        )
        results["seconds"] = seconds
    save_json(args.out, results)
    print(f"wall time {time.perf_counter() - t_start:.0f} s; json: {args.out}")
    nl = str(args.copies[-1])
    print(
        f"noise_psnr_N{nl} (M-AVG / CRM-SART"
        + ("" if args.no_sirt else " / M-AVG (SIRT) / CRM-SIRT")
        + (" / CRM-TV" if args.tv else "")
        + "): "
        + "; ".join(
            f"SNR {snr:g} "
            + " / ".join(
                f"{mean_std([s['psnr'] for s in results[str(snr)][nl][m]])[0]:.2f}"
                for m in ["M-AVG", "CRM"]
                + ([] if args.no_sirt else ["M-AVG (SIRT)", "CRM-SIRT"])
                + (["CRM-TV"] if args.tv else [])
            )
            for snr in args.snrs
        )
    )


if __name__ == "__main__":
    main()
