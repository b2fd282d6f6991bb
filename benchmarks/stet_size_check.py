"""Size check of the STET comparison at 10 % dose on wider fields than results_stet.py.

Run:  OMP_NUM_THREADS=2 python benchmarks/stet_size_check.py --width 192            (~90 s)
      OMP_NUM_THREADS=2 python benchmarks/stet_size_check.py --width 384 --depth 40 \
          --particles 60 --filaments 100 --lambdas 0.1 0.3 1                        (~8 min)
Same phantom recipe, noise (SNR 10 unless ``--snr``) and solver as results_stet.py; prints
the SNR (dB) of T-DS + TV and I-DS + TV for each λ. ``--width 96 --particles 8 --filaments 10``
is the phantom of results_stet.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_stet import SNR, full_series, snr_db, stet_phantom, tds_and_ids  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--depth", type=int, default=48)
    parser.add_argument("--particles", type=int, default=24)
    parser.add_argument("--filaments", type=int, default=30)
    parser.add_argument("--dose", type=float, default=0.1)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    parser.add_argument("--snr", type=float, default=SNR, help="per-pixel SNR (1e6: noise-free)")
    args = parser.parse_args()
    shape = (args.depth, args.width, args.width)
    _, truth = stet_phantom(shape, n_particles=args.particles, n_filaments=args.filaments, seed=0)
    geom, full = full_series(truth, snr=args.snr, seed=0)
    best = {"T-DS": -np.inf, "I-DS": -np.inf}
    for lam in args.lambdas:
        t = time.perf_counter()
        a, b, n_tds = tds_and_ids(full, geom, args.dose, mask_seed=102, tv_lambda=lam, volume_shape=shape)
        if lam == args.lambdas[0]:
            print(f"shape {shape}, dose {args.dose:g}, SNR {args.snr:g}: T-DS {n_tds} tilts, "
                  f"I-DS {geom.n_tilts} tilts")
        sa, sb = snr_db(a, truth), snr_db(b, truth)
        best["T-DS"], best["I-DS"] = max(best["T-DS"], sa), max(best["I-DS"], sb)
        print(f"lambda {lam:g}: SNR T-DS {sa:.2f} dB, I-DS {sb:.2f} dB ({time.perf_counter() - t:.0f} s)",
              flush=True)
    print(f"best_snr_tds_ids: {best['T-DS']:.2f} {best['I-DS']:.2f}")
