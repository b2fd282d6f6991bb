"""Thesis Fig. 4.2a: FSC-0.5 resolution against the angular-error variance, scales s = 1, 2, 4.

One simulated data set (the bundled 1A5T Gaussian-atom map, KBWF(2, 10.8, 2) generating model,
uniformly random poses, Gaussian noise at SNR 1 = var(signal)/σ²); for each variance the
assigned Euler angles get a uniform error U(−e, e) with e = √(3·variance) on each angle (the
thesis's error model), and every scale is reconstructed by TV-ADMM-CG (30 × 7, the thesis's
Algorithm 2) for λ ∈ {10⁻², …, 10²}; the best FSC = 0.5 resolution against the truth is kept
(the thesis's selection). This is :func:`cryowedge.spa.reconstruct.angular_error_experiment`.

The thesis used 128³ and 20 000 projections and quotes no numbers (only the claim "s = 1 is good
at low error but degrades quickly, s = 2, 3, 4 are much more robust"); research/thesis.md §4.4(b)
proposes 64³ and 5 000–20 000 projections. Defaults here are smaller (``--size 32
--particles 2000``) so the run takes minutes on one loaded core; the size and count are printed.

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_spa_angular.py`` (32³, P = 2000: ~10 min on
one loaded core) or ``--size 64 --particles 2000``. Prints the table; writes
``docs/figures/spa_angular_error.png`` and a JSON of the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.spa.reconstruct import THESIS_LAMBDAS, angular_error_experiment

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32, help="box size n (voxels)")
    ap.add_argument("--particles", type=int, default=2000, help="number of projections P")
    ap.add_argument("--snr", type=float, default=1.0, help="var(signal) / σ² (thesis: 1)")
    ap.add_argument(
        "--variances",
        default="0,5,15.47,30,60,120",
        help="angular-error variances (deg²), comma-separated",
    )
    ap.add_argument("--scales", default="1,2,4", help="scales s, comma-separated")
    ap.add_argument("--classes", type=int, default=0, help="class averages (0: none; thesis 80)")
    ap.add_argument("--density", default="1a5t", help="density source (simulate_spa)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=str(ROOT / "docs" / "figures" / "spa_angular_error.png"), help="PNG"
    )
    ap.add_argument(
        "--json",
        default="",
        help="also write the numbers here (default: next to the PNG with .json)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variances = [float(v) for v in args.variances.split(",") if v.strip()]
    scales = [int(v) for v in args.scales.split(",") if v.strip()]
    print(
        f"# Fig. 4.2a: {args.size}^3, P = {args.particles}, SNR {args.snr}, "
        f"density {args.density}, "
        f"classes {args.classes or 'none'}, λ sweep {list(THESIS_LAMBDAS)}, ADMM-CG 30x7, "
        f"{args.threads} thread(s)",
        flush=True,
    )
    t0 = time.perf_counter()
    res = angular_error_experiment(
        args.density,
        box_size=args.size,
        n_particles=args.particles,
        snr=args.snr,
        variances_deg2=variances,
        scales=scales,
        n_classes=args.classes or None,
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0
    px = res.pixel_size_angstrom
    header = (
        "| variance (deg²) | e = √(3v) (°) | mean geodesic error (°) | "
        + " | ".join(f"s = {s}: FSC-0.5 (Å) [λ]" for s in scales)
        + " |"
    )
    print(header)
    print("|" + "---|" * (3 + len(scales)))
    for i, v in enumerate(variances):
        cells = [
            f"{res.resolution_05_angstrom[i, j]:.2f} [{res.lam[i, j]:g}]"
            for j in range(len(scales))
        ]
        print(
            f"| {v:g} | {math.sqrt(3 * v):.2f} | {res.mean_error_deg[i]:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    print(f"# pixel size {px:.3f} Å, Nyquist {2 * px:.2f} Å; total {seconds:.0f} s", flush=True)
    # Degradation from the error-free row to the largest variance, per scale.
    deg = {
        s: float(res.resolution_05_angstrom[-1, j] - res.resolution_05_angstrom[0, j])
        for j, s in enumerate(scales)
    }
    print(
        "# resolution loss (Å) from variance 0 to the largest: "
        + ", ".join(f"s={s}: {d:+.2f}" for s, d in deg.items())
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for j, s in enumerate(scales):
        axes[0].plot(variances, res.resolution_05_angstrom[:, j], "o-", label=f"s = {s}")
    axes[0].set_xlabel("angular-error variance (deg²)")
    axes[0].set_ylabel("FSC = 0.5 resolution vs truth (Å)")
    axes[0].set_title(f"{args.size}³, P = {args.particles}, SNR {args.snr:g}")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    for j, s in enumerate(scales):
        f = res.fsc[-1][j]
        axes[1].plot(f.frequency_cycles_per_pixel / px, f.correlation, label=f"s = {s}")
        f0 = res.fsc[0][j]
        axes[1].plot(
            f0.frequency_cycles_per_pixel / px, f0.correlation, ":", color=f"C{j}", alpha=0.7
        )
    axes[1].axhline(0.5, color="k", lw=0.5)
    axes[1].set_xlabel("spatial frequency (1/Å)")
    axes[1].set_ylabel("FSC vs truth")
    axes[1].set_title(f"FSC: variance {variances[-1]:g} (solid), 0 (dotted)")
    axes[1].legend()
    axes[1].grid(alpha=0.3)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"# figure: {out}")
    js = Path(args.json) if args.json else out.with_suffix(".json")
    js.write_text(
        json.dumps(
            {
                "size": args.size,
                "particles": args.particles,
                "snr": args.snr,
                "variances_deg2": variances,
                "scales": scales,
                "resolution_05_angstrom": res.resolution_05_angstrom.tolist(),
                "lam": res.lam.tolist(),
                "mean_error_deg": res.mean_error_deg,
                "pixel_size_angstrom": px,
                "seconds": seconds,
            },
            indent=1,
        )
    )
    best = np.argmin(np.array(list(deg.values())))
    print(f"most_robust_scale: {scales[int(best)]}")


if __name__ == "__main__":
    main()
