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
from results_stet import (  # noqa: E402
    SNR,
    SOLVER,
    SimulateConfig,
    TiltGeometry,
    add_filaments,
    make_phantom,
    metrics,
    random_scan_mask,
    reconstruct_stet,
    reconstruct_tds,
    simulate_stet,
    uniform_tilt_subset,
)

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
    cell = make_phantom(SimulateConfig(shape=shape, pixel_size_angstrom=10.0, n_particles=args.particles, seed=0))
    truth = add_filaments(cell, args.filaments, seed=0)
    geom = TiltGeometry.from_range(-70, 70, 1, shape[1:], pixel_size_angstrom=10.0)
    full = simulate_stet(truth, geom, dose_fraction=1.0, snr=args.snr, oversample=2, seed=0).full
    idx = uniform_tilt_subset(geom.n_tilts, args.dose)
    mask = random_scan_mask(geom.tilt_series_shape, args.dose, seed=102)
    data = np.where(mask, full, np.float32(0.0))
    print(f"shape {shape}, dose {args.dose:g}, SNR {args.snr:g}: T-DS {idx.size} tilts, I-DS {geom.n_tilts} tilts")
    best = {"T-DS": -np.inf, "I-DS": -np.inf}
    for lam in args.lambdas:
        t = time.perf_counter()
        a = metrics(reconstruct_tds(full, geom, tilt_indices=idx, tv_lambda=lam, volume_shape=shape, **SOLVER).x, truth)
        b = metrics(reconstruct_stet(data, mask, geom, tv_lambda=lam, volume_shape=shape, **SOLVER).x, truth)
        best["T-DS"], best["I-DS"] = max(best["T-DS"], a["snr_db"]), max(best["I-DS"], b["snr_db"])
        print(f"lambda {lam:g}: SNR T-DS {a['snr_db']:.2f} dB, I-DS {b['snr_db']:.2f} dB "
              f"({time.perf_counter() - t:.0f} s)", flush=True)
    print(f"best_snr_tds_ids: {best['T-DS']:.2f} {best['I-DS']:.2f}")
