"""CRM paper, Table 1: AVG vs M-AVG vs CRM-SART with N = 3 copies, ±50° at 3°, SART 20 it, λ 0.2.

Both 2D data sets (Shepp–Logan 320², ribosome slice 200² with support radius 65), noise-free
as in the paper's §4.1, several seeds (each seed draws the copies' orientations and stains).
Three parts:

1. **Table 1** on the authors' set-up (``convention="paper"``, benchmarks/results_crm_common.py):
   PSNR, SSIM and PCC inside the support after affine normalisation, mean ± std over seeds,
   the authors' whole-image PSNR, and the paired CRM − M-AVG difference. CRM is reported with
   the authors' output (``particle="mean"``) and with Algorithm 1's last iterate.
2. The same on the project's simulator (``convention="project"``) with the default operator
   (folded particle, backgrounds in the copy frame, where the simulator draws them), with
   the particle-frame backgrounds that were the default before (``background_frame=
   "particle"``, which cannot hold the rotated box's corners) and with ``fold=False``.
3. **Ablation** (ribosome): the three ways the project's simulator differs from the authors'
   (orientation spacing, stain strength, stain frame) switched one at a time.

Optionally (``--identifiability``) the rank of one copy's background block ``B_i``: when it
is (nearly) full row rank, the background alone can explain (nearly) all of the copy's data,
so the data do not pin the particle and CRM's answer comes from SART's implicit minimum-norm
prior (docs/results.md, issue 11).

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_crm_table1.py`` (about 4 minutes on one
core). The last line is the key figure.
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
    run_methods,
    save_json,
    score_2d,
    union_coverage_deg,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER = {  # Table 1 of the paper, PSNR (dB) AVG / M-AVG / CRM
    "shepp-logan": (19.72, 19.72, 23.41),
    "ribosome": (29.06, 29.62, 30.02),
}
#: Part 2's operators: (label, fold, background_frame).
PROJECT_OPERATORS = [
    ("default operator (copy-frame backgrounds)", None, None),
    ("particle-frame backgrounds (the old default)", None, "particle"),
    ("fold=False", False, None),
]
ABLATION = [
    ("project simulator, default operator", {"convention": "project"}, None),
    ("project simulator, fold=False", {"convention": "project"}, False),
    (
        "stain frame -> particle (authors)",
        {"orientation": "sector", "stain": "project", "frame": "particle"},
        None,
    ),
    (
        "  + even spacing (authors)",
        {"orientation": "even", "stain": "project", "frame": "particle"},
        None,
    ),
    (
        "stain -> authors' weak noise, sector spacing",
        {"orientation": "sector", "stain": "authors", "frame": "particle"},
        None,
    ),
    (
        "authors' stain + even spacing, copy frame",
        {"orientation": "even", "stain": "authors", "frame": "copy"},
        None,
    ),
    ("  same, fold=False", {"orientation": "even", "stain": "authors", "frame": "copy"}, False),
    ("authors' set-up (paper convention)", {}, None),
]


def evaluate(
    dataset: str,
    seeds: list[int],
    args: argparse.Namespace,
    *,
    fold=None,
    background_frame=None,
    with_last=True,
    **kw,
):
    """Scores per method over seeds: ``{method: [score dict per seed]}`` and coverage."""
    scores: dict[str, list[dict[str, float]]] = {}
    coverage = []
    seconds: dict[str, list[float]] = {}
    for seed in seeds:
        prob = make_2d(dataset, args.n_copies, seed=seed, **kw)
        coverage.append(
            union_coverage_deg(prob.orientations_deg, prob.data.copies[0].tilt_angles_deg)
        )
        imgs, sec, _ = run_methods(
            prob.data,
            n_iter=args.n_iter,
            relaxation=args.relaxation,
            fold=fold,
            background_frame=background_frame,
        )
        if with_last:
            last, _, _ = run_methods(
                prob.data,
                n_iter=args.n_iter,
                relaxation=args.relaxation,
                fold=fold,
                background_frame=background_frame,
                crm_particle="last",
                baselines=False,
            )
            imgs["CRM (last)"] = last["CRM"]
        for k, v in imgs.items():
            scores.setdefault(k, []).append(score_2d(v, prob.data.truth, prob.data.support))
        for k, v in sec.items():
            seconds.setdefault(k, []).append(v)
    return scores, coverage, seconds


def table(scores: dict[str, list[dict[str, float]]], order: list[str]) -> list[str]:
    lines = [
        "| method | PSNR (dB) | SSIM | PCC | PSNR, authors' whole-image (dB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for k in order:
        if k not in scores:
            continue
        v = scores[k]
        lines.append(
            f"| {k} | {fmt([s['psnr'] for s in v])} | {fmt([s['ssim'] for s in v], 3)} | "
            f"{fmt([s['pcc'] for s in v], 3)} | {fmt([s['psnr_paper'] for s in v])} |"
        )
    return lines


def paired(scores, a: str, b: str, key: str = "psnr") -> tuple[list[float], int]:
    d = [x[key] - y[key] for x, y in zip(scores[a], scores[b], strict=True)]
    return d, int(sum(v > 0 for v in d))


def identifiability(dataset: str) -> str:
    """Rank of copy 0's background block B (rows = rays) and of the whole copy matrix."""
    import scipy.linalg as la

    from cryowedge.crm.operator import CRMOperator

    prob = make_2d(dataset, 3, seed=0)
    op = CRMOperator.from_data(prob.data)
    m = op.slice_matrix(0, cache=False).tocsc()
    s = prob.data.support[:, 0, :].ravel()
    bmat = m[:, np.flatnonzero(~s)]
    ev = la.eigvalsh((bmat @ bmat.T).toarray())
    rank = int((ev > 1e-8 * ev[-1]).sum())
    return (
        f"{dataset}: copy 0 has {m.shape[0]} rays; its background block B_0 "
        f"({bmat.shape[1]} pixels outside the support) has rank {rank} "
        f"({100 * rank / m.shape[0]:.1f} % of the rays); the particle has {int(s.sum())} pixels."
    )


def figure(path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryowedge.metrics.normalize import normalize_intensity

    fig, axes = plt.subplots(2, 5, figsize=(13, 6.4))
    for r, ds in enumerate(DATASETS):
        prob = make_2d(ds, args.n_copies, seed=0)
        imgs, _, _ = run_methods(prob.data, n_iter=args.n_iter, relaxation=args.relaxation)
        truth = prob.data.truth[:, 0, :]
        m = prob.data.support[:, 0, :]
        stained = truth + prob.extras["stains"][0]  # copy 0: particle + its own stain
        panels = [("copy 0 (stained)", stained), ("truth", truth)]
        for k in METHODS:
            x = normalize_intensity(imgs[k][:, 0, :], truth, "affine", mask=m) * m
            sc = score_2d(imgs[k], prob.data.truth, prob.data.support)
            panels.append((f"{k}  {sc['psnr']:.2f} dB", x))
        for c, (title, img) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{ds}: {title}" if c == 0 else title, fontsize=9)
            ax.set_axis_off()
    fig.suptitle(
        f"CRM Table 1 set-up: N = {args.n_copies}, ±50° at 3°, SART {args.n_iter} it, "
        f"λ {args.relaxation}, seed 0 (affine-normalised, inside the support)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds for the paper-convention table")
    ap.add_argument("--project-seeds", type=int, default=5, help="seeds for parts 2 and 3")
    ap.add_argument("--n-copies", type=int, default=3)
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--relaxation", type=float, default=0.2)
    ap.add_argument("--no-paper", action="store_true", help="skip part 1")
    ap.add_argument("--no-project", action="store_true", help="skip part 2")
    ap.add_argument("--no-ablation", action="store_true", help="skip part 3")
    ap.add_argument("--identifiability", action="store_true", help="rank of B_i (about 1 min)")
    ap.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "crm_table1.png"))
    ap.add_argument("--figure-only", action="store_true", help="only redraw the figure")
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "crm" / "table1.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.figure_only:
        figure(Path(args.figure), args)
        print(f"figure: {args.figure}")
        return
    print_config(
        "results_crm_table1",
        {
            "data sets": "shepp-logan 320² (phantom 200 px, support r 96, blocks); ribosome 200² (r 65, noise)",
            "copies N": args.n_copies,
            "tilt": "±50° at 3° (34 views per copy, −50…49)",
            "noise": "none (paper §4.1)",
            "SART": f"{args.n_iter} iterations, λ {args.relaxation}, random view order, zeros start (all methods)",
            "CRM output": "particle='mean' (authors' C++), also 'last'",
            "M-AVG": "hard wedge masks, eps 1e-2",
            "metrics": "affine-normalised; PSNR/SSIM/PCC inside the support; authors' whole-image PSNR",
            "seeds": f"{args.seeds} (paper convention), {args.project_seeds} (project convention, ablation)",
        },
    )
    t_start = time.perf_counter()
    result: dict = {"config": {k: v for k, v in vars(args).items()}}
    seeds = list(range(args.seeds))
    order = ["AVG", "M-AVG", "CRM", "CRM (last)"]
    key = {}
    if not args.no_paper:
        print("\n## Part 1: the authors' set-up (convention 'paper')\n")
    for ds in () if args.no_paper else DATASETS:
        sc, cov, sec = evaluate(ds, seeds, args)
        d, wins = paired(sc, "CRM", "M-AVG")
        d_avg, wins_avg = paired(sc, "M-AVG", "AVG")
        print(f"### {ds} (union coverage {min(cov):.0f}–{max(cov):.0f}° of 180°)\n")
        print("\n".join(table(sc, order)))
        print(
            f"\nCRM − M-AVG PSNR: {fmt(d)} dB (CRM higher in {wins}/{len(d)} seeds); "
            f"CRM − M-AVG PCC: {fmt(paired(sc, 'CRM', 'M-AVG', 'pcc')[0], 4)}; "
            f"M-AVG − AVG PSNR: {fmt(d_avg)} dB ({wins_avg}/{len(d_avg)}). "
            f"Paper (AVG / M-AVG / CRM): {PAPER[ds][0]} / {PAPER[ds][1]} / {PAPER[ds][2]} dB. "
            f"Mean seconds per seed: "
            + ", ".join(f"{k} {mean_std(v)[0]:.1f}" for k, v in sec.items())
            + "\n"
        )
        result[f"paper/{ds}"] = {"scores": sc, "coverage": cov, "seconds": sec}
        key[ds] = {k: mean_std([s["psnr"] for s in sc[k]])[0] for k in METHODS}
    if not args.no_project:
        print("\n## Part 2: the project's simulator (convention 'project')\n")
        pseeds = list(range(args.project_seeds))
        for ds in DATASETS:
            for label, fold, frame in PROJECT_OPERATORS:
                sc, cov, sec = evaluate(
                    ds,
                    pseeds,
                    args,
                    fold=fold,
                    background_frame=frame,
                    with_last=False,
                    convention="project",
                )
                d, wins = paired(sc, "CRM", "M-AVG")
                print(f"### {ds}, {label} (union coverage {min(cov):.0f}–{max(cov):.0f}°)\n")
                print("\n".join(table(sc, order)))
                print(
                    f"\nCRM − M-AVG PSNR: {fmt(d)} dB (CRM higher in {wins}/{len(d)} seeds); "
                    "mean seconds per seed (loaded machine): "
                    + ", ".join(f"{k} {mean_std(v)[0]:.1f}" for k, v in sec.items())
                    + "\n"
                )
                result[f"project/{ds}/{label}"] = {"scores": sc, "coverage": cov, "seconds": sec}
    if not args.no_ablation:
        print("\n## Part 3: ablation on the ribosome (PSNR dB, mean ± std over seeds)\n")
        print("| data | AVG | M-AVG | CRM | CRM − M-AVG (wins) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, kw, fold in ABLATION:
            sc, cov, _ = evaluate(
                "ribosome", list(range(args.project_seeds)), args, fold=fold, with_last=False, **kw
            )
            d, wins = paired(sc, "CRM", "M-AVG")
            row = " | ".join(fmt([s["psnr"] for s in sc[k]]) for k in METHODS)
            print(f"| {label} | {row} | {fmt(d)} ({wins}/{len(d)}) |")
            result[f"ablation/{label}"] = {"scores": sc, "coverage": cov}
    if args.identifiability:
        print("\n## Identifiability\n")
        for ds in DATASETS:
            line = identifiability(ds)
            print(line)
            result[f"identifiability/{ds}"] = line
    if args.figure:
        figure(Path(args.figure), args)
        print(f"\nfigure: {args.figure}")
    save_json(args.out, result)
    print(f"wall time {time.perf_counter() - t_start:.0f} s; json: {args.out}")
    if key:
        print(
            "table1_psnr_paper_convention: "
            + "; ".join(
                f"{ds} AVG {key[ds]['AVG']:.2f} M-AVG {key[ds]['M-AVG']:.2f} "
                f"CRM {key[ds]['CRM']:.2f}"
                for ds in DATASETS
            )
        )
    else:
        crm = {
            k: mean_std([s["psnr"] for s in v["scores"]["CRM"]])[0]
            for k, v in result.items()
            if k.startswith("project/")
        }
        print("table1_project_crm_psnr: " + "; ".join(f"{k} {v:.2f}" for k, v in crm.items()))


if __name__ == "__main__":
    main()
