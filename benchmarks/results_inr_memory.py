"""Memory/time trade-off of the batches of y-slices (the coordinate-network report's Fig. 6;
issue 12, second bar).

The table's fit (:func:`cryowedge.inr.bench.table_config`: width 64, 64 Fourier features at
σ 0.05, AdamW 1e-2) on the table's hollow spheres (32×128×128, the report's Fig. 6 volume,
61 views over ±60°, no noise) for a fixed number of epochs with batches of 128, 64, 32 and
16 y-slices, so the optimiser steps grow as the batch shrinks (the report: 500 … 4000
steps). Every batch size runs in a fresh interpreter that reads the series from a file
(:func:`cryowedge.inr.bench.slice_batch_tradeoff`): its peak resident memory (``ru_maxrss``)
is the fit's plus the interpreter's, whose size before the fit is printed too (on a GPU,
``torch.cuda.max_memory_allocated``).

Run (about 8 min on one quiet core)::

    OMP_NUM_THREADS=1 python benchmarks/results_inr_memory.py

The last line is ``peak_rss_gb_batch16_over_batch128: R``.
"""

from __future__ import annotations

import argparse
import os

from cryowedge.inr.bench import slice_batch_tradeoff

PAPER = {128: (6.3, 53, 500), 64: (3.7, 66, 1000), 32: (2.4, 95, 2000), 16: (1.8, 160, 4000)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=(128, 64, 32, 16))
    p.add_argument("--shape", type=int, nargs=3, default=(32, 128, 128))
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}, epochs {args.epochs}",
          flush=True)
    rows = slice_batch_tradeoff(args.batches, tuple(args.shape), epochs=args.epochs,
                                threads=args.threads, device=args.device, report=print)
    cuda = "cuda_peak_gb" in rows[0]
    print("\n| y-slices per batch | steps | time (s) | s per epoch | peak RSS (GB) | of which "
          f"the fit (GB) |{' CUDA peak (GB) |' if cuda else ''} PSNR (dB) | SSIM | report: "
          "memory (GB) / time (s) / steps |")
    cuda_col = " ---: |" if cuda else ""
    print(f"| ---: | ---: | ---: | ---: | ---: | ---: |{cuda_col} ---: | ---: | --- |")
    for r in rows:
        paper = PAPER.get(r["slice_batch"])
        ptxt = f"{paper[0]} / {paper[1]} / {paper[2]}" if paper else ""
        ctxt = f" {r['cuda_peak_gb']:.2f} |" if cuda else ""
        print(f"| {r['slice_batch']} | {r['steps']} | {r['seconds']:.1f} | "
              f"{r['epoch_seconds_sum'] / args.epochs:.2f} | {r['peak_rss_gb']:.2f} | "
              f"{r['fit_rss_gb']:.2f} |{ctxt} {r['psnr']:.2f} | {r['ssim']:.3f} | {ptxt} |")
    by = {r["slice_batch"]: r for r in rows}
    if 16 in by and 128 in by:
        print(f"\npeak_rss_gb_batch16_over_batch128: "
              f"{by[16]['peak_rss_gb'] / by[128]['peak_rss_gb']:.3f}")


if __name__ == "__main__":
    main()
