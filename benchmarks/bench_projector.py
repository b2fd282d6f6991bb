"""Projector / FBP speed vs ASTRA's 2D CPU FBP, side by side in one run.

Run:  OMP_NUM_THREADS=2 python benchmarks/bench_projector.py [--size 256] [--memory]
Prints GUPS for forward and back-projection, the FBP time of both, and as its last line
``fbp_speedup_vs_astra: N``. Same code as ``cryowedge bench projector``.
"""

from __future__ import annotations

import argparse

from cryowedge.bench import bench_projector, fbp_peak_memory

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n-tilts", type=int, default=61)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory", action="store_true", help="peak memory of a 512^3 FBP")
    args = parser.parse_args()
    if args.memory:
        print(f"fbp_512_peak_memory_gb: {fbp_peak_memory(512, args.n_tilts):.2f}")
    bench_projector(args.size, args.n_tilts, repeats=args.repeats, device=args.device)
