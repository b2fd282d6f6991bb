"""``cryowedge batch`` scaling and overhead on this machine (issue 15).

Run (full size, a quiet machine with 2 cores)::

    python benchmarks/bench_batch.py

Simulates ``--n-series`` tilt series (default 16; a 64×128×128 cell phantom, 41 tilts at
±60°, each with its own noise), then for each method (FBP, and TV with ``--tv-iter`` ADMM
iterations of 5 CG steps) times

* a plain sequential loop of ``cryowedge reconstruct`` subprocesses (``OMP_NUM_THREADS`` =
  all ``--cores``),
* ``cryowedge batch`` (the Python API, as the CLI runs it) with 1 worker × ``cores``
  threads and with ``cores`` workers × 1 thread, each on a fresh local cluster.

For each batch run it prints the wall time (all of it: finding the items, the memory
check, starting and stopping the cluster, the report), the cluster's start-up, the time from
the first task submitted to the last result, and the **overhead per item**: ``(that time ×
workers − Σ item time) / items``, the time a worker spends on anything but its item
(scheduling, transfers, results; an item's own time includes reading, the reconstruction and
writing). The last line is
``batch_overhead_per_item_s: N`` (the largest over the runs; the bar is < 0.5 s).
``--quick`` runs 4 series of 32×64×64 with 21 tilts (a check that the script works).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def simulate(folder: Path, n: int, shape: tuple[int, int, int], n_tilts: int) -> list[Path]:
    """``n`` tilt series of one simulated cell, each with its own Gaussian noise (SNR 0.5)."""
    from cryowedge.config.models import SimulateConfig
    from cryowedge.io.mrc import write_mrc
    from cryowedge.io.tilt_files import write_tilt_angles
    from cryowedge.simulate.from_config import simulate_from_config

    step = 120.0 / (n_tilts - 1)
    cfg = SimulateConfig(shape=shape, tilt_step_deg=step, snr=None, even_odd=False,
                         oversample=1, device="cpu", seed=0,
                         n_particles=12 if min(shape) >= 64 else 4)
    _, sim = simulate_from_config(cfg)
    clean = np.asarray(sim.tilt_series, dtype=np.float32)
    sigma = float(clean.std()) / np.sqrt(0.5)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        noisy = clean + rng.normal(scale=sigma, size=clean.shape).astype(np.float32)
        path = folder / f"TS_{i:02d}.mrc"
        write_mrc(path, noisy, voxel_size_angstrom=10.0, image_stack=True)
        write_tilt_angles(folder / f"TS_{i:02d}.tlt", sim.geometry.tilt_angles_deg)
        paths.append(path)
    return paths


def sequential(paths: list[Path], out: Path, method: str, options: list[str], cores: int) -> float:
    """Wall time of a plain loop of ``cryowedge reconstruct`` subprocesses."""
    exe = shutil.which("cryowedge") or str(Path(sys.executable).parent / "cryowedge")
    env = {**os.environ, "OMP_NUM_THREADS": str(cores)}
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for path in paths:
        subprocess.run([exe, "reconstruct", str(path), str(out / path.name), "--method", method,
                        *options], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def batch(folder: Path, out: Path, method: str, config: dict, workers: int,
          threads: int) -> dict:
    from cryowedge.batch import run_batch

    t0 = time.perf_counter()
    report = run_batch(method, folder, out, config=config, workers=workers,
                       threads_per_worker=threads, memory_limit="4GB")
    wall = time.perf_counter() - t0
    if not report.ok:
        raise RuntimeError(report.to_markdown())
    start = float(report.cluster.get("start_seconds", 0.0))
    work = sum(r.seconds for r in report.items)
    return {"wall": wall, "start": start, "run": report.run_seconds, "work": work,
            "overhead": report.overhead_per_item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-series", type=int, default=16)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    parser.add_argument("--n-tilts", type=int, default=41)
    parser.add_argument("--tv-iter", type=int, default=10)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["fbp", "tv"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.n_series, args.shape, args.n_tilts = 4, (32, 64, 64), 21
    nz = args.shape[0]
    configs = {"fbp": {"thickness": nz, "filter_name": "hann"},
               "tv": {"thickness": nz, "n_iter": args.tv_iter, "cg_iter": 5}}
    cli_options = {"fbp": ["--thickness", str(nz), "--filter", "hann"],
                   "tv": ["--thickness", str(nz), "--n-iter", str(args.tv_iter),
                          "--cg-iter", "5"]}
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(tmp)
        data = root / "in"
        data.mkdir()
        t0 = time.perf_counter()
        paths = simulate(data, args.n_series, tuple(args.shape), args.n_tilts)
        print(f"simulated {len(paths)} tilt series ({args.n_tilts} tilts, volume "
              f"{tuple(args.shape)}) in {time.perf_counter() - t0:.1f} s", flush=True)
        for method in args.methods:
            seq = sequential(paths, root / f"seq_{method}", method, cli_options[method],
                             args.cores)
            print(f"{method}: sequential cryowedge reconstruct loop: {seq:.1f} s "
                  f"({seq / len(paths):.2f} s per series)", flush=True)
            for workers, threads in ((1, args.cores), (args.cores, 1)):
                r = batch(data, root / f"batch_{method}_{workers}x{threads}", method,
                          configs[method], workers, threads)
                worst = max(worst, r["overhead"])
                print(f"{method}: batch {workers} worker(s) x {threads} thread(s): "
                      f"{r['wall']:.1f} s wall ({r['start']:.1f} s cluster start-up, "
                      f"{r['run']:.1f} s running the items; speed-up vs the loop "
                      f"{seq / r['wall']:.2f}x), items {r['work']:.1f} s in all, overhead "
                      f"{r['overhead']:.3f} s per item", flush=True)
    print(f"batch_overhead_per_item_s: {worst:.3f}")


if __name__ == "__main__":
    main()
