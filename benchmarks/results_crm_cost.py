"""How the cost of CRM-SART grows with the number of copies N, against the AVG pipeline.

For N = 3, 11, 49, 200 copies of a modest 2D problem (the ribosome set-up of
benchmarks/results_crm_common.py at 100², support radius 32.5, ±50° at 3°, 34 views) and
optionally of a 3D problem (``--3d``: :func:`cryowedge.crm.simulate.simulate_crm_3d`, 32³,
±50° at 5°), times on one thread:

* CRM-SART, 20 iterations, λ 0.2, including its per-copy plan build (the per-view sparse
  matrices, built once and cached);
* the AVG pipeline: N independent SART reconstructions with the same settings
  (:func:`cryowedge.crm.baselines.reconstruct_copies`) and their average.

The issue's cost bar (``crm_cost_vs_avg`` at N = 49 of 200², ``cryowedge bench crm``) is
measured by the CLI's bench; this script gives the growth with N. Timings on a shared
machine are noisy: the load average is printed before and after.

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_crm_cost.py`` (about 3 minutes on one core).
The last line is the key figure: seconds per copy and the CRM / AVG ratio at every N.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_crm_common import make_2d, print_config, save_json  # noqa: E402

from cryowedge.crm.baselines import reconstruct_copies, simple_average  # noqa: E402
from cryowedge.crm.operator import CRMOperator  # noqa: E402
from cryowedge.crm.simulate import simulate_crm_3d  # noqa: E402
from cryowedge.crm.solvers import crm_sart  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def time_one(data, args: argparse.Namespace) -> dict[str, float]:
    b = torch.from_numpy(np.ascontiguousarray(data.projections, dtype=np.float32))
    op = CRMOperator.from_data(data)
    t0 = time.perf_counter()
    crm_sart(
        op,
        b,
        n_iter=args.n_iter,
        relaxation=args.relaxation,
        plan_cache_bytes=int(args.plan_cache_gb * 2**30),
    )
    t_crm = time.perf_counter() - t0
    op = CRMOperator.from_data(data)
    t0 = time.perf_counter()
    copies = reconstruct_copies(op, b, n_iter=args.n_iter, relaxation=args.relaxation)
    simple_average(op, b, copies=copies)
    t_avg = time.perf_counter() - t0
    return {"crm_s": t_crm, "avg_s": t_avg}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, nargs="+", default=[3, 11, 49, 200])
    ap.add_argument("--size", type=int, default=100, help="2D image side (ribosome set-up scaled)")
    ap.add_argument("--n-iter", type=int, default=20)
    ap.add_argument("--relaxation", type=float, default=0.2)
    ap.add_argument("--3d", dest="three_d", action="store_true", help="also time 3D copies")
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--copies-3d", type=int, nargs="+", default=[3, 11, 49])
    ap.add_argument("--plan-cache-gb", type=float, default=6.0)
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "crm" / "cost.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print_config(
        "results_crm_cost",
        {
            "2D": f"ribosome set-up at {args.size}², ±50° at 3° (34 views), N {args.copies}",
            "3D": f"1A5T copies in {args.box}³, ±50° at 5°, N {args.copies_3d}"
            if args.three_d
            else "off",
            "SART": f"{args.n_iter} iterations, λ {args.relaxation}, float32, one thread",
            "load average before": os.getloadavg(),
        },
    )
    rows = []
    t_start = time.perf_counter()
    for n in args.copies:
        prob = make_2d("ribosome", n, seed=0, size=args.size)
        r = time_one(prob.data, args)
        rows.append({"kind": "2D", "n": n, **r})
        print(
            f"2D {args.size}² N={n}: CRM {r['crm_s']:.1f} s, AVG pipeline {r['avg_s']:.1f} s",
            flush=True,
        )
    if args.three_d:
        for n in args.copies_3d:
            sim = simulate_crm_3d(
                n, box_size=args.box, pixel_size_angstrom=3.0 * 48 / args.box, snr=1.0, rng=0
            )
            r = time_one(sim.data, args)
            rows.append({"kind": f"3D {args.box}³", "n": n, **r})
            print(
                f"3D {args.box}³ N={n}: CRM {r['crm_s']:.1f} s, AVG pipeline {r['avg_s']:.1f} s",
                flush=True,
            )
    print(
        "\n| problem | N | CRM-SART (s) | per copy (s) | AVG pipeline (s) | per copy (s) | CRM / AVG |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        kind = r["kind"] if r["kind"] != "2D" else f"2D {args.size}²"
        print(
            f"| {kind} | {r['n']} | {r['crm_s']:.1f} | {r['crm_s'] / r['n']:.3f} | {r['avg_s']:.1f} | "
            f"{r['avg_s'] / r['n']:.3f} | {r['crm_s'] / r['avg_s']:.2f} |"
        )
    print(f"\nload average after: {os.getloadavg()}")
    save_json(args.out, {"config": vars(args), "rows": rows})
    print(f"wall time {time.perf_counter() - t_start:.0f} s; json: {args.out}")
    print(
        "crm_cost_per_copy: "
        + "; ".join(
            f"{r['kind']} N={r['n']} {r['crm_s'] / r['n']:.3f} s/copy ({r['crm_s'] / r['avg_s']:.2f}x AVG)"
            for r in rows
        )
    )


if __name__ == "__main__":
    main()
