"""The coordinate-network report's table (seeds/002, Figs. 7–8), scaled down, plus our
iterative methods (issue 12, first bar).

**Set-up.** Hollow spheres, 32×128×128 (z, y, x; the report's 1024×1024×256 binned 8×),
12 shells, 61 views over ±60° at 2°, projected 2× oversampled, no noise (the report adds
noise only in its ablation; ``--snr`` adds Gaussian noise). FBP (ram-lak), SIRT (20
iterations) and TV-ADMM (λ 5, 30 × 10) with the project's defaults, and the coordinate
networks of :func:`cryowedge.inr.bench.table_config` (width 64, five layers, 64 Gaussian
Fourier features, batches of 16 y-slices, 120 epochs, AdamW 1e-2; docs/inr.md):

* ``mlp`` — the project's default encoding, σ 0.05 cycles/voxel;
* ``mlp_reg`` — the same with the Crowther/wedge penalty, ``lam_c`` 0.3 (fixed in advance:
  the value docs/inr.md chose on a smaller, noisy phantom; ``--lam-sweep`` shows others);
* ``mlp_hf``/``mlp_hf_reg`` — a paper-like higher-frequency encoding, σ 0.2 cycles/voxel
  (2.5 σ at Nyquist: the network can fit detail up to the grid's resolution, as the
  report's MLP did), without and with the penalty;
* ``siren`` — the original code's network (sine activations, ω0 30, no encoding), lr 1e-3
  (docs/inr.md), the same width and epochs.

**Scores** (every volume affine-calibrated against the truth first,
:func:`cryowedge.inr.bench.score_volume`): PSNR (the truth's range), 3-D SSIM, FSC against
the truth at 0.5 and 0.143 ("stays below" rule, in voxels), and the share of the spectral
power inside the missing wedge, all frequencies and above 0.25 cycles/voxel (the report's
"vertical streaks" live there; the truth's share is the target).

Run (about 12 min on one quiet core; each fit ≈ 2 min)::

    OMP_NUM_THREADS=1 python benchmarks/results_inr_table.py --out bench_out/inr_table

``--reuse`` re-scores the volumes stored in ``--out`` without fitting again; ``--rows``
picks rows; ``--smoke`` is a check in about a minute (figures to ``--out``). The last line
is ``mlp_reg_minus_fbp_psnr_db: N``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.registry import get_method
from cryowedge.inr import fit_inr
from cryowedge.inr.bench import config_line, score_volume, spheres_case, table_config
from cryowedge.metrics import fourier_shell_correlation
from cryowedge.metrics.normalize import normalize_intensity
from cryowedge.workflows.reconstruct import reconstruct_array

ROOT = Path(__file__).resolve().parents[1]
ITERATIVE = ("fbp", "sirt", "tv")
NETWORKS = ("mlp", "mlp_reg", "mlp_hf", "mlp_hf_reg", "siren")
OPTIONAL = ("siren_reg",)
PAPER = {"fbp": (24.53, 0.318), "mlp": (23.95, 0.667), "mlp_reg": (29.22, 0.843)}


def _options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "inr_table")
    p.add_argument("--figures", type=Path, default=None,
                   help="where the PNGs go [default: docs/figures, or --out with --smoke]")
    p.add_argument("--rows", nargs="+", default=(*ITERATIVE, *NETWORKS),
                   choices=(*ITERATIVE, *NETWORKS, *OPTIONAL))
    p.add_argument("--shape", type=int, nargs=3, default=(32, 128, 128))
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--lam-c", type=float, default=0.3, help="lam_c of the *_reg rows")
    p.add_argument("--scale", type=float, default=0.05, help="σ of mlp/mlp_reg (cycles/voxel)")
    p.add_argument("--high-scale", type=float, default=0.2,
                   help="σ of mlp_hf/mlp_hf_reg (cycles/voxel)")
    p.add_argument("--lam-sweep", type=float, nargs="*", default=(),
                   help="extra lam_c values for mlp and mlp_hf (a second table)")
    p.add_argument("--snr", type=float, default=None, help="Gaussian noise at this projection SNR")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (the fits use seed 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--reuse", action="store_true", help="re-score the volumes in --out")
    p.add_argument("--smoke", action="store_true", help="16×64×64, 6 epochs, width 16")
    args = p.parse_args()
    if args.smoke:
        args.shape, args.epochs, args.width = (16, 64, 64), 6, 16
    if args.figures is None:
        args.figures = args.out if args.smoke else ROOT / "docs" / "figures"
    return args


def _network_configs(args: argparse.Namespace) -> dict[str, object]:
    base = {"epochs": args.epochs, "width": args.width,
            "n_frequencies": 64 if args.width >= 64 else args.width}
    lam = args.lam_c
    cfgs = {
        "mlp": table_config(**base, encoding_scale=args.scale),
        "mlp_reg": table_config(**base, encoding_scale=args.scale, lam_c=lam),
        "mlp_hf": table_config(**base, encoding_scale=args.high_scale),
        "mlp_hf_reg": table_config(**base, encoding_scale=args.high_scale, lam_c=lam),
        "siren": table_config(**base, activation="sine", encoding="none", lr=1e-3),
        "siren_reg": table_config(**base, activation="sine", encoding="none", lr=1e-3,
                                  lam_c=lam),
    }
    for value in args.lam_sweep:
        cfgs[f"mlp λ{value:g}"] = table_config(**base, encoding_scale=args.scale, lam_c=value)
        cfgs[f"mlp_hf λ{value:g}"] = table_config(**base, encoding_scale=args.high_scale,
                                                  lam_c=value)
    return cfgs


def _spectrum_xz(volume: np.ndarray) -> np.ndarray:
    """log10 of the XZ-slice power spectra averaged over y, zero frequency centred."""
    v = volume - volume.mean()
    power = (np.abs(np.fft.fft2(v, axes=(0, 2))) ** 2).mean(axis=1)
    return np.log10(np.fft.fftshift(power) + 1e-12)


def _figures(volumes: dict[str, np.ndarray], truth: np.ndarray, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from cryowedge.viz.figures import save_png

    y = int(np.argmax(truth.sum(axis=(0, 2))))  # the XZ slice with the most shell
    panel = {"truth": truth, **{k: np.asarray(normalize_intensity(v, truth, "affine"))
                                 for k, v in volumes.items()}}
    names = list(panel)
    nz, _, nx = truth.shape
    fig, axes = plt.subplots(len(names), 2, figsize=(6.4, 0.4 + 1.05 * len(names)),
                             squeeze=False, gridspec_kw={"width_ratios": [4.0, 1.0]})
    ref_spec = _spectrum_xz(truth)
    lo_s, hi_s = np.percentile(ref_spec, 5), ref_spec.max()
    for row, name in enumerate(names):
        ax = axes[row, 0]
        ax.imshow(panel[name][:, y, :], cmap="gray", vmin=0, vmax=1, origin="lower",
                  interpolation="nearest")
        ax.set_ylabel(name, fontsize=8)
        ax = axes[row, 1]
        ax.imshow(_spectrum_xz(panel[name]), cmap="magma", vmin=lo_s, vmax=hi_s,
                  origin="lower", interpolation="nearest", aspect="equal",
                  extent=(-0.5, 0.5, -0.5, 0.5))
        for a in axes[row]:
            a.set_xticks([])
            a.set_yticks([])
    axes[0, 0].set_title(f"XZ slice y = {y} (grey 0…1 after affine calibration)", fontsize=8)
    axes[0, 1].set_title("log power (kx →, kz ↑)", fontsize=8)
    fig.suptitle("hollow spheres ±60°, no noise; the missing wedge is the top and bottom of "
                 "each spectrum", fontsize=8)
    paths = [save_png(fig, out / "inr_table_xz.png")]
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for name, v in volumes.items():
        fsc = fourier_shell_correlation(normalize_intensity(v, truth, "affine"), truth)
        ax.plot(fsc.frequency_cycles_per_pixel, fsc.correlation, label=name, lw=1.2)
    ax.axhline(0.5, color="0.5", lw=0.7, ls="--")
    ax.axhline(0.143, color="0.5", lw=0.7, ls=":")
    ax.set_xlabel("frequency (cycles/voxel)")
    ax.set_ylabel("FSC against the truth")
    ax.legend(fontsize=7, ncol=2)
    ax.set_ylim(-0.1, 1.02)
    paths.append(save_png(fig, out / "inr_table_fsc.png"))
    return paths


def main() -> None:
    args = _options()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    case = spheres_case(tuple(args.shape), seed=args.seed, snr=args.snr,
                        n_spheres=12 if args.shape[0] >= 32 else 6)
    cfgs = _network_configs(args)
    rows = [r for r in args.rows] + [k for k in cfgs if "λ" in k]
    print(f"case: {case.description}")
    print(f"torch threads {torch.get_num_threads()}; scores after affine calibration against "
          "the truth; FSC crossings by the 'stays below' rule, in voxels")
    for name in rows:
        if name in ITERATIVE:
            d = get_method(name).config(thickness=case.shape[0]).model_dump()
            keys = [k for k in ("filter_name", "n_iter", "tv_lambda", "cg_iter", "positivity")
                    if k in d]
            print(f"  {name}: project defaults ({', '.join(f'{k} {d[k]}' for k in keys)})")
        else:
            print(f"  {name}: {config_line(cfgs[name])}")
    print(flush=True)
    volumes: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    record = args.out / "seconds.json"
    known = json.loads(record.read_text()) if args.reuse and record.exists() else {}
    for name in rows:
        path = args.out / f"{name.replace(' ', '_')}.npy"
        if args.reuse and path.exists():
            volumes[name], seconds[name] = np.load(path), float(known.get(name, float("nan")))
            continue
        t0 = time.perf_counter()
        if name in ITERATIVE:
            cfg = get_method(name).config(thickness=case.shape[0], device="cpu")
            volumes[name] = reconstruct_array(case.tilt_series, case.geometry, cfg)
        else:
            volumes[name] = fit_inr(case.tilt_series, case.geometry, cfgs[name],
                                    volume_shape=case.shape).volume
        seconds[name] = time.perf_counter() - t0
        np.save(path, volumes[name])
        known[name] = seconds[name]
        record.write_text(json.dumps(known, indent=1))
        s = score_volume(volumes[name], case.truth, case.tilt_range_deg)
        print(f"  {name}: {seconds[name]:.1f} s, PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}, "
              f"wedge power {s['wedge_power']:.3f}", flush=True)
    scores = {name: score_volume(v, case.truth, case.tilt_range_deg)
              for name, v in volumes.items()}
    truth_score = {"wedge_power": score_volume(case.truth, case.truth,
                                               case.tilt_range_deg)["wedge_power"],
                   "wedge_power_hf": score_volume(case.truth, case.truth,
                                                  case.tilt_range_deg)["wedge_power_hf"]}
    figures = _figures({k: volumes[k] for k in volumes if "λ" not in k}, case.truth,
                       args.figures)
    print(f"\nfigures: {', '.join(str(f) for f in figures)}\n")
    print("| method | PSNR (dB) | SSIM | Pearson | FSC 0.5 (vox) | FSC 0.143 (vox) | wedge "
          "power | wedge power > 0.25 | time (s) | paper PSNR / SSIM |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    print(f"| truth | | 1 | 1 | | | {truth_score['wedge_power']:.3f} | "
          f"{truth_score['wedge_power_hf']:.4f} | | |")
    for name in rows:
        s = scores[name]
        paper = PAPER.get(name)
        paper_txt = f"{paper[0]:.2f} / {paper[1]:.3f}" if paper else ""
        print(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['pearson']:.3f} | "
              f"{s['fsc05_px']:.2f} | {s['fsc0143_px']:.2f} | {s['wedge_power']:.3f} | "
              f"{s['wedge_power_hf']:.4f} | {seconds[name]:.0f} | {paper_txt} |")
    if "fbp" in scores and "mlp_reg" in scores:
        gain = scores["mlp_reg"]["psnr"] - scores["fbp"]["psnr"]
        print(f"\nmlp_reg − fbp: {gain:+.2f} dB, SSIM {scores['mlp_reg']['ssim']:.3f} "
              f"(bar: ≥ +3 dB and ≥ 0.8)")
        if "mlp_hf_reg" in scores:
            hf = scores["mlp_hf_reg"]["psnr"] - scores["fbp"]["psnr"]
            print(f"mlp_hf_reg − fbp: {hf:+.2f} dB, SSIM {scores['mlp_hf_reg']['ssim']:.3f}")
        print(f"mlp_reg_minus_fbp_psnr_db: {gain:.2f}")


if __name__ == "__main__":
    main()
