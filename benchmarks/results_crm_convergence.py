"""CRM paper, Fig. 11: RMS reprojection error over 80 iterations, CRM-SART against separate SART.

N = 49 copies, ±50° at 3°, noise-free, λ 0.2, the authors' set-up
(benchmarks/results_crm_common.py); the ribosome at 200², Shepp–Logan at 200² by default
(``--full``: 320²). After every iteration the RMS reprojection error of eq. 25,
``ε = sqrt(1/(M·N_p) Σ (v − v')²)`` over every pixel of every copy's projections, is computed
from the current iterate (not the residuals met during the sweep): for CRM-SART from
``A_CRM x``, for the separate reconstructions from each copy's own SART iterate. PSNR of the
CRM particle (``particle="last"``) and of AVG / M-AVG built from the separate iterates are
recorded at a few iterations (the CRM particle's at every iteration).

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_crm_convergence.py`` (about 4 minutes on one
core). The last line is the key figure: the iteration from which the CRM particle's PSNR stays
within 0.5 dB of its final value, and the RMS errors of both methods at iterations 20 and 80.
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
    make_2d,
    print_config,
    save_json,
    score_2d,
)

from cryowedge.crm.baselines import masked_fourier_average, simple_average  # noqa: E402
from cryowedge.crm.operator import CRMOperator  # noqa: E402
from cryowedge.crm.solvers import crm_sart  # noqa: E402
from cryowedge.solvers.algebraic import sart  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def settle_iteration(values: list[float], tol_db: float = 0.5) -> int:
    """First iteration from which the PSNR stays within ``tol_db`` of its last value."""
    v = np.asarray(values)
    bad = np.flatnonzero(np.abs(v - v[-1]) > tol_db)
    return int(bad[-1] + 2) if bad.size else 1


def rms_step(rms: list[float], k: int) -> float:
    """Relative decrease of the RMS error in iteration ``k`` (1-based), in percent."""
    return 100.0 * (rms[k - 2] - rms[k - 1]) / rms[k - 2]


def run(dataset: str, args: argparse.Namespace, size: int | None) -> dict:
    prob = make_2d(dataset, args.n_copies, seed=args.seed, size=size)
    data = prob.data
    op = CRMOperator.from_data(data)
    b = torch.from_numpy(np.ascontiguousarray(data.projections, dtype=np.float32))
    n_pix = b.numel()
    checkpoints = set(args.checkpoints)
    out: dict = {
        "crm_rms": [],
        "sart_rms": [],
        "crm_psnr_all": [],
        "crm_psnr": {},
        "avg_psnr": {},
        "mavg_psnr": {},
    }

    def crm_cb(info):
        r = op.forward(info.x) - b
        out["crm_rms"].append(float(torch.sqrt(torch.sum(r * r) / n_pix)))
        out["crm_psnr_all"].append(
            score_2d(op.particle(info.x).numpy(), data.truth, data.support)["psnr"]
        )
        if info.iteration in checkpoints:
            out["crm_psnr"][info.iteration] = out["crm_psnr_all"][-1]

    t0 = time.perf_counter()
    crm_sart(
        op,
        b,
        n_iter=args.n_iter,
        relaxation=args.relaxation,
        particle="last",
        callback=crm_cb,
        plan_cache_bytes=int(args.plan_cache_gb * 2**30),
    )
    out["crm_seconds"] = time.perf_counter() - t0

    sq = np.zeros(args.n_iter)
    snaps = {k: torch.empty((op.n_copies, *op.volume_shape)) for k in checkpoints}
    t0 = time.perf_counter()
    for i in range(op.n_copies):
        proj, _ = op.copy_system(i, cache=False)  # folded 2D: particle frame, no rotation

        def cb(info, proj=proj, i=i):
            r = proj.forward(info.x) - b[i]
            sq[info.iteration - 1] += float(torch.sum(r * r))
            if info.iteration in checkpoints:
                snaps[info.iteration][i] = info.x

        sart(proj, b[i], n_iter=args.n_iter, relaxation=args.relaxation, callback=cb)
    out["sart_seconds"] = time.perf_counter() - t0
    out["sart_rms"] = [float(np.sqrt(v / n_pix)) for v in sq]
    for k in sorted(checkpoints):
        out["avg_psnr"][k] = score_2d(
            simple_average(op, b, copies=snaps[k]).numpy(), data.truth, data.support
        )["psnr"]
        out["mavg_psnr"][k] = score_2d(
            masked_fourier_average(op, b, copies=snaps[k]).numpy(), data.truth, data.support
        )["psnr"]
    out["crm_settle"] = settle_iteration(out["crm_psnr_all"])
    return out


def plot(results: dict, datasets: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.6), squeeze=False)
    for c, ds in enumerate(datasets):
        ax = axes[0, c]
        r = results[ds]
        it = np.arange(1, len(r["crm_rms"]) + 1)
        ax.plot(it, r["sart_rms"], label="separate SART (49 copies)", color="tab:blue")
        ax.plot(it, r["crm_rms"], label="CRM-SART", color="tab:green")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("RMS reprojection error (eq. 25)")
        ax.set_title(ds, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-copies", type=int, default=49)
    ap.add_argument("--n-iter", type=int, default=80)
    ap.add_argument("--relaxation", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[5, 10, 20, 40, 80])
    ap.add_argument("--full", action="store_true", help="Shepp–Logan at the paper's 320²")
    ap.add_argument("--plan-cache-gb", type=float, default=6.0)
    ap.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "crm_convergence.png"))
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "crm" / "convergence.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sizes = {"shepp-logan": None if args.full else 200, "ribosome": None}
    print_config(
        "results_crm_convergence",
        {
            "copies N": args.n_copies,
            "iterations": args.n_iter,
            "relaxation": args.relaxation,
            "seed": args.seed,
            "data sets": args.datasets,
            "sizes": {k: (v or "paper") for k, v in sizes.items()},
            "tilt": "±50° at 3°",
            "noise": "none",
            "RMS": "eq. 25 from the iterate after each iteration",
        },
    )
    t_start = time.perf_counter()
    results: dict = {"config": vars(args)}
    for ds in args.datasets:
        results[ds] = run(ds, args, sizes[ds])
        r = results[ds]
        print(f"\n### {ds}, N = {args.n_copies}\n")
        print("| iteration | RMS separate SART | RMS CRM-SART | PSNR AVG | PSNR M-AVG | PSNR CRM |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for k in args.checkpoints:
            if k <= args.n_iter:
                print(
                    f"| {k} | {r['sart_rms'][k - 1]:.4g} | {r['crm_rms'][k - 1]:.4g} | "
                    f"{r['avg_psnr'][k]:.2f} | {r['mavg_psnr'][k]:.2f} | {r['crm_psnr'][k]:.2f} |"
                )
        steps = ", ".join(
            f"it {k}: CRM {rms_step(r['crm_rms'], k):.2f} %, SART {rms_step(r['sart_rms'], k):.2f} %"
            for k in (10, 20, 40, args.n_iter)
            if 2 <= k <= args.n_iter
        )
        print(
            f"\nRMS decrease per iteration ({steps}). CRM particle PSNR within 0.5 dB of its "
            f"iteration-{args.n_iter} value from iteration {r['crm_settle']} on. Time CRM "
            f"{r['crm_seconds']:.0f} s, separate {r['sart_seconds']:.0f} s (incl. the per-iteration "
            "reprojection and scoring)",
            flush=True,
        )
    if args.figure:
        plot(
            results,
            args.datasets,
            Path(args.figure),
            f"CRM Fig. 11: N = {args.n_copies}, ±50° at 3°, λ {args.relaxation}, noise-free",
        )
        print(f"figure: {args.figure}")
    save_json(args.out, results)
    print(f"wall time {time.perf_counter() - t_start:.0f} s; json: {args.out}")
    print(
        "convergence: "
        + "; ".join(
            f"{ds} CRM PSNR within 0.5 dB of final from iteration {results[ds]['crm_settle']}; RMS at 20/"
            f"{args.n_iter} CRM {results[ds]['crm_rms'][min(19, args.n_iter - 1)]:.3g}/{results[ds]['crm_rms'][-1]:.3g}, "
            f"separate SART {results[ds]['sart_rms'][min(19, args.n_iter - 1)]:.3g}/{results[ds]['sart_rms'][-1]:.3g}"
            for ds in args.datasets
        )
    )


if __name__ == "__main__":
    main()
