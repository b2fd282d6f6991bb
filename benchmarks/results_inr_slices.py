"""Slice-to-slice variation of the coordinate-network reconstruction (the report's Fig. 10
and its "wavy" through-plane artefacts; issue 12, ablations).

The table's hollow spheres (32×128×128, 61 views over ±60°, no noise) reconstructed by FBP,
TV-ADMM (project defaults) and the table's regularised network
(:func:`cryowedge.inr.bench.table_config`, σ 0.05, ``lam_c`` 0.3, 120 epochs) three ways:

* ``one network`` — one network for all 128 y-slices (the project's default);
* ``chunks, warm`` — ``chunk_rows`` 16: eight networks, the middle chunk from a random start
  for 120 epochs, every other chunk warm-started from its neighbour's final weights for 24
  epochs (the original code's scheme and its 5:1 ratio, 2001:401 epochs);
* ``chunks, cold`` — the same chunks, each from its own random start for 120 epochs.

Inside a chunk the batches are 4 y-slices (``--chunk-batch``), so a chunk's epoch is 4
optimiser steps: the middle and the cold chunks get 480 steps each, a warm chunk 96, the one
network 960 (8 batches of 16 per epoch). One chunk epoch costs 1/8 of a whole-volume epoch,
so the cold chunks together cost as much as the one network and the warm ones
(120 + 7·24) / 8 = 36 whole-volume epochs.

Per y-slice (the XZ plane of the missing wedge): PSNR (data range 1, the truth's) and 2-D
SSIM of the volume after one affine calibration of the whole volume. The spread is summarised
over the slices that cut a shell (the truth's slice maximum > 0.5): mean, standard deviation,
min–max; and over all neighbouring pairs, the mean jump ``|PSNR(y+1) − PSNR(y)|`` inside
chunks and across chunk boundaries (the content changes from slice to slice too, so compare
a method's jumps with FBP's at the same places). Through-plane consistency is also measured
directly: the RMS of the error of the y-difference, ``(x[y+1] − x[y]) − (t[y+1] − t[y])``,
again inside chunks and across their boundaries (a network that changes at a boundary leaves
a step there that the truth lacks).

Run (about 6 min on one quiet core)::

    OMP_NUM_THREADS=1 python benchmarks/results_inr_slices.py --out bench_out/inr_slices

The last line is ``warm_minus_cold_boundary_jump_db: N``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.registry import get_method
from cryowedge.inr import fit_inr
from cryowedge.inr.bench import config_line, spheres_case, table_config
from cryowedge.metrics import psnr, ssim
from cryowedge.metrics.normalize import normalize_intensity
from cryowedge.workflows.reconstruct import reconstruct_array

ROOT = Path(__file__).resolve().parents[1]


def _options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "inr_slices")
    p.add_argument("--figures", type=Path, default=None)
    p.add_argument("--shape", type=int, nargs=3, default=(32, 128, 128))
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--warm-epochs", type=int, default=24)
    p.add_argument("--chunk-rows", type=int, default=16)
    p.add_argument("--chunk-batch", type=int, default=4,
                   help="y-slices per step inside a chunk (4: 4 steps per chunk epoch)")
    p.add_argument("--lam-c", type=float, default=0.3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="re-score the volumes in --out")
    p.add_argument("--smoke", action="store_true", help="16×64×64, 4 epochs, width 16")
    args = p.parse_args()
    if args.smoke:
        args.shape, args.epochs, args.warm_epochs, args.width = (16, 64, 64), 4, 2, 16
    if args.figures is None:
        args.figures = args.out if args.smoke else ROOT / "docs" / "figures"
    return args


def per_slice(volume: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ny,)`` PSNR (dB, data range 1) and 2-D SSIM of each XZ slice after one affine
    calibration of the whole volume."""
    x = np.asarray(normalize_intensity(volume, truth, "affine"), dtype=np.float64)
    ny = truth.shape[1]
    p = np.array([psnr(x[:, y], truth[:, y], data_range=1.0) for y in range(ny)])
    s = np.array([ssim(x[:, y], truth[:, y], data_range=1.0) for y in range(ny)])
    return p, s


def through_plane(volume: np.ndarray, truth: np.ndarray,
                  boundary: np.ndarray) -> tuple[float, float]:
    """RMS of the y-difference error inside chunks and across chunk boundaries.

    ``boundary`` is ``(ny − 1,)`` bool: True where rows ``y`` and ``y + 1`` lie in different
    chunks."""
    x = np.asarray(normalize_intensity(volume, truth, "affine"), dtype=np.float64)
    err = np.diff(x, axis=1) - np.diff(truth.astype(np.float64), axis=1)
    rms = np.sqrt((err**2).mean(axis=(0, 2)))
    inside = float(np.sqrt((rms[~boundary] ** 2).mean()))
    across = float(np.sqrt((rms[boundary] ** 2).mean())) if boundary.any() else float("nan")
    return inside, across


def _figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], edges: list[int],
            path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from cryowedge.viz.figures import save_png

    fig, axes = plt.subplots(2, 1, figsize=(7.0, 4.6), sharex=True)
    for name, (p, s) in curves.items():
        axes[0].plot(p, lw=1.0, label=name)
        axes[1].plot(s, lw=1.0, label=name)
    for ax in axes:
        for e in edges:
            ax.axvline(e - 0.5, color="0.8", lw=0.6, zorder=0)
    axes[0].set_ylabel("PSNR (dB)")
    axes[1].set_ylabel("SSIM (2-D)")
    axes[1].set_xlabel("y-slice (tilt axis); grey lines: chunk boundaries")
    axes[0].legend(fontsize=7, ncol=3)
    fig.suptitle("per-slice quality of XZ slices, hollow spheres ±60°, no noise", fontsize=9)
    return save_png(fig, path)


def main() -> None:
    args = _options()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    case = spheres_case(tuple(args.shape), n_spheres=12 if args.shape[0] >= 32 else 6)
    ny = case.shape[1]
    base = {"epochs": args.epochs, "width": args.width,
            "n_frequencies": 64 if args.width >= 64 else args.width, "lam_c": args.lam_c}
    chunked = {**base, "slice_batch": min(args.chunk_batch, args.chunk_rows),
               "chunk_rows": args.chunk_rows}
    cfgs = {
        "one network": table_config(**base),
        "chunks, warm": table_config(**chunked, warm_start=True, warm_epochs=args.warm_epochs),
        "chunks, cold": table_config(**chunked, warm_start=False),
    }
    print(f"case: {case.description}; torch threads {torch.get_num_threads()}")
    print("  fbp, tv: project defaults")
    for name, cfg in cfgs.items():
        print(f"  {name}: {config_line(cfg)}")
    print(flush=True)
    volumes: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name in ("fbp", "tv", *cfgs):
        path = args.out / f"{name.replace(', ', '_').replace(' ', '_')}.npy"
        if args.reuse and path.exists():
            volumes[name], seconds[name] = np.load(path), float("nan")
            continue
        t0 = time.perf_counter()
        if name in ("fbp", "tv"):
            volumes[name] = reconstruct_array(case.tilt_series, case.geometry,
                                              get_method(name).config(thickness=case.shape[0],
                                                                      device="cpu"))
        else:
            volumes[name] = fit_inr(case.tilt_series, case.geometry, cfgs[name],
                                    volume_shape=case.shape).volume
        seconds[name] = time.perf_counter() - t0
        np.save(path, volumes[name])
        print(f"  {name}: {seconds[name]:.1f} s", flush=True)
    n_chunks = max(1, -(-ny // args.chunk_rows))
    edges = [(ny * i) // n_chunks for i in range(1, n_chunks)]
    boundary = np.zeros(ny - 1, dtype=bool)
    boundary[[e - 1 for e in edges]] = True
    occupied = case.truth.max(axis=(0, 2)) > 0.5
    curves = {name: per_slice(v, case.truth) for name, v in volumes.items()}
    figure = _figure(curves, edges, args.figures / "inr_slices.png")
    print(f"\nfigure: {figure}")
    print(f"{int(occupied.sum())} of {ny} slices cut a shell; chunk boundaries after rows "
          f"{[e - 1 for e in edges]} (also marked for the methods without chunks)\n")
    print("| method | PSNR mean ± sd (dB) | PSNR min–max | mean jump inside chunks (dB) | "
          "mean jump at boundaries (dB) | SSIM mean ± sd | y-difference error RMS inside / "
          "at boundaries | time (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    jumps = {}
    for name, (p, s) in curves.items():
        po, so = p[occupied], s[occupied]
        jump = np.abs(np.diff(p))
        j_in = float(jump[~boundary].mean())
        j_at = float(jump[boundary].mean()) if boundary.any() else float("nan")
        jumps[name] = j_at
        tp_in, tp_at = through_plane(volumes[name], case.truth, boundary)
        print(f"| {name} | {po.mean():.2f} ± {po.std():.2f} | {po.min():.2f}–{po.max():.2f} | "
              f"{j_in:.3f} | {j_at:.3f} | {so.mean():.3f} ± {so.std():.3f} | "
              f"{tp_in:.4f} / {tp_at:.4f} | {seconds[name]:.0f} |")
    print(f"\nwarm_minus_cold_boundary_jump_db: "
          f"{jumps['chunks, warm'] - jumps['chunks, cold']:.3f}")


if __name__ == "__main__":
    main()
