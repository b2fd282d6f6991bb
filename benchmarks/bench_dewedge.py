"""Dewedge fitting speed vs a reference-like pipeline, side by side in one run.

Run:  python benchmarks/bench_dewedge.py
(options: --shape 64 192 192 --subtomo-size 64 --chans 32 --depth 3 --batch-size 5
--subtomos 20 --threads 2 --epochs 2 --mixed-precision auto --device cpu --no-baseline).
The defaults are the issue's fixed configuration (a 64×192×192 pair of half tomograms,
64³ sub-tomograms from 92³ crops, U-Net chans 32 depth 3, batch 5, 20 sub-tomograms per
epoch, 2 CPU threads), printed in full. Reports per-epoch fitting seconds, seconds per
sub-tomogram and the fraction of the epoch spent waiting for data, for our pipeline and for
a reference-like one (stored .pt sub-tomograms, three scipy cubic rotations per pair,
float32, one thread); the last line is ``epoch_seconds: N`` (ours). Same code as
``cryowedge.dewedge.bench.bench_dewedge``.
"""

from __future__ import annotations

import argparse

from cryowedge.dewedge.bench import bench_dewedge

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[64, 192, 192], metavar=("Z", "Y", "X")
    )
    parser.add_argument("--subtomo-size", type=int, default=64)
    parser.add_argument("--chans", type=int, default=32)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--subtomos", type=int, default=20, help="sub-tomograms per epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after 1 warm-up)")
    parser.add_argument(
        "--mixed-precision", default="auto", choices=["auto", "off", "bf16", "fp16"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the reference-like pipeline"
    )
    args = parser.parse_args()
    bench_dewedge(
        tuple(args.shape),
        args.subtomo_size,
        args.chans,
        args.depth,
        args.batch_size,
        args.subtomos,
        args.threads,
        epochs=args.epochs,
        mixed_precision=args.mixed_precision,
        device=args.device,
        baseline=not args.no_baseline,
    )
