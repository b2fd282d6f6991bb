"""SIRT speed vs ASTRA's 2D CPU SIRT, side by side in one run.

Run:  OMP_NUM_THREADS=2 python benchmarks/bench_iterative.py
(options: --size 256 --n-tilts 61 --n-iter 100 --astra-slices 8 --device cpu --no-astra).
Times 100 SIRT iterations on a 256³ volume with 61 tilts (±60°) and ASTRA's SIRT on a few XZ
slices (extrapolated linearly to all slices, as the printed output says), reports the
correlation of the two reconstructions and, as its last line, ``sirt_speedup_vs_astra: N``.
Same code as ``cryowedge bench iterative``.
"""

from __future__ import annotations

import argparse

from cryowedge.bench import bench_iterative

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n-tilts", type=int, default=61)
    parser.add_argument("--n-iter", type=int, default=100)
    parser.add_argument(
        "--astra-slices", type=int, default=8, help="slices ASTRA reconstructs (extrapolated)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-astra", action="store_true", help="skip the ASTRA comparison")
    args = parser.parse_args()
    bench_iterative(
        args.size,
        args.n_tilts,
        args.n_iter,
        astra_slices=args.astra_slices,
        device=args.device,
        with_astra=not args.no_astra,
    )
