"""The coordinate network on real data: the NIST needle at ±60° against its own ±76°
reconstruction (issue 12, "Real data" bar; the protocol of results_dewedge_real.py).

The aligned STEM-HAADF needle series (``../shared/data/etspy_HAADF_needle_aligned.mrc`` +
``.tlt``: 77 views, −76° … +76° at 2°, 33.6 Å/px; tilt axis along the image X axis, hence
``--tilt-axis-angle -90``; positive contrast, no CTF, high SNR) is binned 2× (128² images,
67.2 Å/px) and reconstructed with thickness 96, all through
:func:`cryowedge.workflows.reconstruct.reconstruct_file` (what ``cryowedge reconstruct``
runs). The references are the project's TV-ADMM and SIRT reconstructions of the FULL ±76°
series (defaults). From the 61 views within ±60° (``exclude_views``): FBP (ram-lak), TV-ADMM
and the table's networks (:func:`cryowedge.inr.bench.table_config`: width 64, σ 0.05
cycles/voxel, batches of 16 y-slices, 120 epochs, lr 1e-2), without and with ``lam_c`` 0.3
— nothing tuned to the needle.

Every ±60° volume is affine-normalised against the reference, then scored: ``cc`` over the
volume; ``cc_out``/``cc_in`` Fourier correlation outside / inside the ±60° missing wedge;
``cc_band`` in the 60–76° part of the wedge that the reference measured (beyond ±76° the
reference is itself an extrapolation). The share of each volume's spectral power inside the
±60° wedge is printed too (the references' share is the target). A PNG of the central XZ
slices (the needle's cross-section) goes to ``--figures``.

Run (about 15 min on one quiet core; each network fit ≈ 6–7 min)::

    OMP_NUM_THREADS=1 python benchmarks/results_inr_real.py --out bench_out/inr_real

``--bin 4`` is a 2-minute version (64² images, thickness 48). The last line is
``mlp_minus_fbp_cc_in_vs_tv76: N``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.tilt import missing_wedge_mask
from cryowedge.inr.bench import config_line, table_config, wedge_power_fraction
from cryowedge.io.mrc import read_mrc
from cryowedge.io.tilt_files import read_tilt_angles
from cryowedge.metrics.fourier import fourier_region_correlation, missing_wedge_correlations
from cryowedge.metrics.normalize import normalize_intensity
from cryowedge.workflows.reconstruct import reconstruct_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NEEDLE = DATA / "etspy_HAADF_needle_aligned.mrc"
NEEDLE_ANGLES = DATA / "etspy_HAADF_needle_aligned.tlt"
NEEDLE_AXIS_DEG = -90.0  # the tilt axis is the image X axis (tests/test_realdata.py)
RANGE = 60.0


def _options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "inr_real")
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    p.add_argument("--bin", type=int, default=2)
    p.add_argument("--thickness", type=int, default=None,
                   help="binned voxels (default 192 / bin: 96 at bin 2)")
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--lam-c", type=float, default=0.3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="re-score the volumes in --out")
    args = p.parse_args()
    if args.thickness is None:
        args.thickness = 192 // args.bin
    return args


def _cc(x: np.ndarray, ref: np.ndarray) -> float:
    a, b = x - x.mean(), ref - ref.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _score(x: np.ndarray, ref: np.ndarray, wedge60: np.ndarray,
           band: np.ndarray) -> dict[str, float]:
    xa = np.asarray(normalize_intensity(x, ref, "affine"), dtype=np.float64)
    mw = missing_wedge_correlations(xa, ref, wedge60)
    return {"cc": _cc(xa, ref), "cc_out": mw["outside_wedge"], "cc_in": mw["inside_wedge"],
            "cc_band": fourier_region_correlation(xa, ref, band)}


def _figure(volumes: dict[str, np.ndarray], path: Path, voxel: float) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from cryowedge.viz.figures import percentile_limits, save_png

    names = list(volumes)
    nz, ny, nx = volumes[names[0]].shape
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.6 * nz / nx + 0.6),
                             squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        image = volumes[name][:, ny // 2 - 1 : ny // 2 + 2, :].mean(axis=1)
        lo, hi = percentile_limits(image, 0.5)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("z")
    fig.suptitle(f"real needle, central XZ slices ({voxel:g} Å/voxel; each its own 0.5–99.5 % "
                 "window)", fontsize=8)
    return save_png(fig, path)


def main() -> None:
    args = _options()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    angles = read_tilt_angles(NEEDLE_ANGLES)
    outside = np.flatnonzero(np.abs(angles) > RANGE + 1e-6)
    exclude = ",".join(str(i + 1) for i in outside)  # 1-based, IMOD style
    kept = int((np.abs(angles) <= RANGE + 1e-6).sum())
    common = {"thickness": args.thickness, "bin_factor": args.bin,
              "tilt_axis_angle_deg": NEEDLE_AXIS_DEG}
    net = {"epochs": args.epochs, "width": args.width,
           "n_frequencies": 64 if args.width >= 64 else args.width}
    runs = {
        "TV ±76° (reference)": ReconstructConfig(method="tv", **common),
        "SIRT ±76° (reference)": ReconstructConfig(method="sirt", **common),
        "FBP ±60°": ReconstructConfig(method="fbp", exclude_views=exclude, **common),
        "TV ±60°": ReconstructConfig(method="tv", exclude_views=exclude, **common),
        "MLP ±60°": table_config(**net, exclude_views=exclude, **common),
        "MLP + lam_c ±60°": table_config(**net, lam_c=args.lam_c, exclude_views=exclude,
                                         **common),
    }
    print(f"needle: {angles.size} views {angles.min():g}…{angles.max():g}°; ±{RANGE:g}° keeps "
          f"{kept} (excluded views {exclude}); bin {args.bin}, thickness {args.thickness}, tilt "
          f"axis {NEEDLE_AXIS_DEG:g}°; torch threads {torch.get_num_threads()}")
    print("  references and FBP/TV: project defaults")
    for name in ("MLP ±60°", "MLP + lam_c ±60°"):
        print(f"  {name}: {config_line(runs[name])}")  # type: ignore[arg-type]
    print(flush=True)
    seconds: dict[str, float] = {}
    for name, cfg in runs.items():
        path = args.out / f"{name.split(' ±')[0].replace(' + ', '_').replace(' ', '_').lower()}_" \
                          f"{'full' if '76' in name else 'pm60'}.mrc"
        if not (args.reuse and path.exists()):
            t0 = time.perf_counter()
            reconstruct_file(NEEDLE, path, cfg, angles_path=NEEDLE_ANGLES, overwrite=True)
            seconds[name] = time.perf_counter() - t0
            print(f"  {name}: {seconds[name]:.1f} s", flush=True)
        runs[name] = path  # type: ignore[assignment]
    vols = {name: np.asarray(read_mrc(p).data, dtype=np.float64) for name, p in runs.items()}
    voxel = float(read_mrc(runs["FBP ±60°"]).voxel_size_angstrom[0])  # type: ignore[arg-type]
    shape = vols["FBP ±60°"].shape
    wedge60 = missing_wedge_mask(shape, (-RANGE, RANGE))
    band = wedge60 & ~missing_wedge_mask(shape, (float(angles.min()), float(angles.max())))
    tested = ("FBP ±60°", "TV ±60°", "MLP ±60°", "MLP + lam_c ±60°")
    rows = {}
    for name in tested:
        rows[name] = {f"tv_{k}": v for k, v in
                      _score(vols[name], vols["TV ±76° (reference)"], wedge60, band).items()}
        rows[name].update({f"sirt_{k}": v for k, v in
                           _score(vols[name], vols["SIRT ±76° (reference)"], wedge60,
                                  band).items()})
    figure = _figure({k: vols[k] for k in ("TV ±76° (reference)", *tested)},
                     args.figures / "inr_needle_xz.png", voxel)
    print(f"\nfigure: {figure}\n")
    print(f"Real needle at ±{RANGE:g}° vs its full ±76° reconstructions (binned {args.bin}×, "
          f"{voxel:g} Å voxels, volume {shape}); affine-normalised against each reference.\n")
    print("| method | CC vs TV±76 | outside wedge | inside wedge | 60–76° band | CC vs SIRT±76 | "
          "inside wedge (vs SIRT) | wedge power | time (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for ref in ("TV ±76° (reference)", "SIRT ±76° (reference)"):
        print(f"| {ref} | | | | | | | {wedge_power_fraction(vols[ref], (-RANGE, RANGE)):.3f} | "
              f"{seconds.get(ref, float('nan')):.0f} |")
    for name, r in rows.items():
        print(f"| {name} | {r['tv_cc']:.3f} | {r['tv_cc_out']:.3f} | {r['tv_cc_in']:.3f} | "
              f"{r['tv_cc_band']:.3f} | {r['sirt_cc']:.3f} | {r['sirt_cc_in']:.3f} | "
              f"{wedge_power_fraction(vols[name], (-RANGE, RANGE)):.3f} | "
              f"{seconds.get(name, float('nan')):.0f} |")
    print(f"\nmlp_minus_fbp_cc_in_vs_tv76: "
          f"{rows['MLP ±60°']['tv_cc_in'] - rows['FBP ±60°']['tv_cc_in']:.3f}")


if __name__ == "__main__":
    main()
