"""Spread of the STET comparison over noise and mask realisations (issue 3).

Run:  OMP_NUM_THREADS=2 python benchmarks/stet_seed_check.py            (~10 min on 2 cores)

The phantom, noise level (SNR 10), tilts (−70:1:70) and solver are those of results_stet.py.
For every seed the noise realisation, the I-DS scan masks and the phantom's particles and
filaments change; for every dose T-DS + TV and I-DS + CS-TV each get the best λ of LAMBDAS.
Prints per-seed SNRs and, per dose, the paired difference I-DS − T-DS (mean ± standard
deviation over seeds, and how many seeds I-DS wins). Last line: the mean differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_stet import SHAPE, full_series, snr_db, stet_phantom, tds_and_ids  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--doses", type=float, nargs="+", default=[0.5, 0.2, 0.1])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    args = parser.parse_args()
    diffs: dict[float, list[float]] = {f: [] for f in args.doses}
    for seed in args.seeds:
        _, truth = stet_phantom(seed=seed)
        geom, full = full_series(truth, seed=seed)
        for i, f in enumerate(args.doses):
            tds = ids = -np.inf
            for lam in args.lambdas:
                a, b, _ = tds_and_ids(full, geom, f, mask_seed=1000 * seed + i, tv_lambda=lam,
                                      volume_shape=SHAPE)
                tds, ids = max(tds, snr_db(a, truth)), max(ids, snr_db(b, truth))
            diffs[f].append(ids - tds)
            print(f"seed {seed} dose {f:g}: SNR T-DS {tds:.2f} dB, I-DS {ids:.2f} dB, "
                  f"I-DS − T-DS {ids - tds:+.2f} dB", flush=True)
    print("\n| dose | I-DS − T-DS, mean ± sd (dB) | seeds where I-DS wins |")
    print("| ---: | ---: | ---: |")
    for f, d in diffs.items():
        a = np.asarray(d)
        print(f"| {100 * f:g} % | {a.mean():+.2f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.2f} "
              f"| {int((a > 0).sum())} / {a.size} |")
    print("mean_ids_minus_tds_db: " + " ".join(f"{f:g}:{np.mean(d):+.2f}" for f, d in diffs.items()))
