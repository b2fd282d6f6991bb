"""Dewedging quality on simulated crowded tomograms: FBP, SIRT, TV-ADMM, Noise2Noise, DDW.

Issue 10's quality bar. A crowded cell (membranes, vesicles and copies of the real PDB entry
1A5T rendered as a Gaussian-atom density, :func:`cryowedge.simulate.pdb.load_example_particle`)
is projected at ±60° and Gaussian noise is added at several projection SNRs (signal variance /
noise variance of the projections). For each SNR the one-shot dewedge pipeline (prepare →
fit → refine: the full tomogram refined, paper step 3; the mean of the refined halves is
reported too) runs in ``dewedge`` mode (the DeepDeWedge loss) and in ``n2n`` mode (Noise2Noise, cryoCARE manner), next to FBP (the full series), SIRT and the
project's TV-ADMM with their default settings (nothing tuned to this data).

Every volume is scored against the ground truth after the least-squares gain and offset
(``normalize="affine"``, as all results tables here):

* ``cc``: correlation coefficient over the whole volume;
* ``cc_out``/``cc_in``: Fourier correlation outside / inside the missing wedge
  (:func:`cryowedge.metrics.missing_wedge_correlations`);
* ``particle_fsc0143_A``: the 0.143-FSC resolution of the particles (boxes around every
  particle of the reconstruction against the same boxes of the truth, FSC averaged over the
  particles, read with the project's "stays below" rule);
* ``halves_fsc0143_A``: the 0.143-FSC resolution between the outputs of the two halves (the
  two half tomograms for FBP; each half through the fitted network for N2N and DDW).

A training curve (``cc`` and ``cc_in`` of the refined full tomogram against the epoch, from the
periodic checkpoints) shows whether more compute would help.

Run (about 40 minutes on 2 CPU cores with the defaults)::

    python benchmarks/results_dewedge.py --out bench_out/dewedge

The last line is the summary ``ddw_minus_tv_cc`` per SNR.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.config.models import ReconstructConfig
from cryowedge.dewedge.fit import fit, load_model
from cryowedge.dewedge.prepare import prepare_tilt_series
from cryowedge.dewedge.refine import refine_array
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.metrics import pearson_correlation
from cryowedge.metrics.fourier import fourier_shell_correlation, missing_wedge_correlations
from cryowedge.metrics.normalize import normalize_intensity
from cryowedge.metrics.report import FSC_RESOLUTION_RULE
from cryowedge.simulate.phantoms import crowded_cell
from cryowedge.simulate.pdb import load_example_particle
from cryowedge.simulate.tilt_series import simulate_tilt_series
from cryowedge.workflows.reconstruct import reconstruct_array


def _options() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/dewedge"))
    p.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    p.add_argument("--pixel-size", type=float, default=8.0, help="Å")
    p.add_argument("--tilt-step", type=float, default=3.0)
    p.add_argument("--snrs", type=float, nargs="+", default=(1.0, 0.2, 0.05))
    p.add_argument("--n-particles", type=int, default=40)
    p.add_argument("--subtomo-size", type=int, default=32)
    p.add_argument("--chans", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--subtomos-per-epoch", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=("fbp", "sirt", "tv", "n2n", "ddw"))
    p.add_argument("--resume-fits", action="store_true",
                   help="continue stored fits up to --epochs (more compute on the same fit)")
    p.add_argument("--reuse-fits", action="store_true",
                   help="score the networks already fitted under --out instead of fitting")
    return p.parse_args()


def _affine(x: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.asarray(normalize_intensity(x, truth, "affine"), dtype=np.float64)


def _particle_fsc(x: np.ndarray, truth: np.ndarray, positions: np.ndarray, box: int,
                  pixel: float) -> float:
    curves = []
    h = box // 2
    for z, y, xx in positions.astype(int):
        sl = (slice(z - h, z - h + box), slice(y - h, y - h + box), slice(xx - h, xx - h + box))
        a, b = x[sl], truth[sl]
        if a.shape != (box, box, box):
            continue
        curves.append(fourier_shell_correlation(a, b))
    if not curves:
        return float("nan")
    mean = dataclasses.replace(curves[0], correlation=np.mean([c.correlation for c in curves],
                                                              axis=0))
    return float(mean.resolution_angstrom(0.143, pixel, rule=FSC_RESOLUTION_RULE))


def _halves_fsc(a: np.ndarray, b: np.ndarray, pixel: float) -> float:
    return float(fourier_shell_correlation(a, b).resolution_angstrom(
        0.143, pixel, rule=FSC_RESOLUTION_RULE))


def _score(x, truth, wedge, positions, box, pixel) -> dict[str, float]:
    xa = _affine(x, truth)
    mw = missing_wedge_correlations(xa, truth, wedge)
    return {"cc": pearson_correlation(xa, truth), "cc_out": mw["outside_wedge"],
            "cc_in": mw["inside_wedge"],
            "particle_fsc0143_A": _particle_fsc(xa, truth, positions, box, pixel)}


def main() -> None:
    args = _options()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = args.shape
    px = args.pixel_size
    particle = load_example_particle(px)
    cell = crowded_cell(args.shape, particle=particle, n_particles=args.n_particles,
                        pixel_size_angstrom=px, rng=args.seed)
    truth = cell.volume.astype(np.float64)
    geom = TiltGeometry.from_range(-60, 60, args.tilt_step, (ny, nx), pixel_size_angstrom=px)
    wedge = geom.missing_wedge_mask(tuple(args.shape))
    box = int(particle.shape[0]) + 4
    box += box % 2
    print(f"config: shape {tuple(args.shape)}, {px} Å, ±60° step {args.tilt_step}° "
          f"({geom.n_tilts} views), {len(cell.particle_positions_zyx)} particles (1A5T, box "
          f"{box}), subtomo {args.subtomo_size}, chans {args.chans}, depth {args.depth}, "
          f"{args.epochs} epochs × {args.subtomos_per_epoch} sub-tomograms, batch "
          f"{args.batch_size}, torch threads {torch.get_num_threads()}", flush=True)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    curves: dict[str, dict[str, list]] = {}
    for snr in args.snrs:
        tag = f"snr{snr:g}"
        work = args.out / tag
        work.mkdir(parents=True, exist_ok=True)
        series = simulate_tilt_series(truth.astype(np.float32), geom, snr=snr,
                                      rng=args.seed + 1).tilt_series
        write_mrc(work / "ts.mrc", series, voxel_size_angstrom=px, image_stack=True)
        write_tilt_angles(work / "ts.tlt", geom.tilt_angles_deg)
        cfg = DewedgeConfig.model_validate({
            "shared": {"subtomo_size": args.subtomo_size, "chans": args.chans,
                       "depth": args.depth, "seed": args.seed},
            "prepare": {"thickness": nz, "split": "index"},
            "fit": {"epochs": args.epochs, "subtomos_per_epoch": args.subtomos_per_epoch,
                    "batch_size": args.batch_size, "checkpoint_every": args.checkpoint_every},
        })
        t0 = time.perf_counter()
        prepared = prepare_tilt_series(work / "ts.mrc", work / "prepared", config=cfg,
                                       overwrite=True)
        tomo = prepared[0]
        half_a = np.asarray(tomo.half_a, dtype=np.float64)
        half_b = np.asarray(tomo.half_b, dtype=np.float64)
        res: dict[str, dict[str, float]] = {}
        seconds: dict[str, float] = {"prepare": time.perf_counter() - t0}
        if "fbp" in args.methods:
            full = np.asarray(tomo.full, dtype=np.float64)
            res["FBP"] = _score(full, truth, wedge, cell.particle_positions_zyx, box, px)
            res["FBP"]["halves_fsc0143_A"] = _halves_fsc(half_a, half_b, px)
        for name, method, extra in (("SIRT", "sirt", {}), ("TV-ADMM", "tv", {})):
            if method not in args.methods:
                continue
            t0 = time.perf_counter()
            rc = ReconstructConfig(method=method, thickness=nz, **extra)
            vol = reconstruct_array(series, geom, rc)
            seconds[name] = time.perf_counter() - t0
            res[name] = _score(vol.astype(np.float64), truth, wedge,
                               cell.particle_positions_zyx, box, px)
            print(f"  {tag} {name}: {res[name]}", flush=True)
        for name, mode in (("Noise2Noise", "n2n"), ("DeepDeWedge (ours)", "dewedge")):
            if {"n2n": "n2n", "dewedge": "ddw"}[mode] not in args.methods:
                continue
            mcfg = cfg.model_copy(update={"shared": cfg.shared.model_copy(update={"mode": mode})})
            out_dir = work / mode
            t0 = time.perf_counter()
            folder = out_dir / "checkpoints"
            if args.resume_fits and (folder / "last.pt").is_file():
                # continue the stored fit up to --epochs (only fit.epochs may differ)
                result = fit(prepared, config=mcfg, output_dir=out_dir, resume=True)
                ckpt = result.best_checkpoint or result.last_checkpoint
            elif args.reuse_fits and (folder / "last.pt").is_file():
                ckpt = folder / "best.pt" if (folder / "best.pt").is_file() else folder / "last.pt"
            else:
                result = fit(prepared, config=mcfg, output_dir=out_dir, overwrite=True)
                ckpt = result.best_checkpoint or result.last_checkpoint
            seconds[name] = time.perf_counter() - t0
            model, meta = load_model(ckpt)
            stats = meta["stats"][0]
            wedge_angles = geom.tilt_angles_deg if mode == "dewedge" else None
            band = mcfg.fit.loss_radius if mcfg.refine.band_limit else None

            def refine(model, volume, stats=stats, wedge_angles=wedge_angles, band=band):
                return refine_array(volume.astype(np.float32), model,
                                    subtomo_size=args.subtomo_size, stats=stats,
                                    wedge_tilt_angles_deg=wedge_angles, device="cpu",
                                    mixed_precision="auto", band_radius=band)

            out_a = np.asarray(refine(model, half_a), dtype=np.float64)
            out_b = np.asarray(refine(model, half_b), dtype=np.float64)
            full_t = np.asarray(tomo.full, dtype=np.float64)
            refined = np.asarray(refine(model, full_t), dtype=np.float64)  # paper's step 3
            write_mrc(work / f"{mode}_refined.mrc", refined.astype(np.float32),
                      voxel_size_angstrom=px)
            res[name] = _score(refined, truth, wedge, cell.particle_positions_zyx, box, px)
            res[name]["halves_fsc0143_A"] = _halves_fsc(out_a, out_b, px)
            halves_mean = _score(0.5 * (out_a + out_b), truth, wedge,
                                 cell.particle_positions_zyx, box, px)
            res[name]["cc_halves_mean"] = halves_mean["cc"]
            res[name]["cc_in_halves_mean"] = halves_mean["cc_in"]
            res[name]["best_epoch"] = meta.get("best_epoch")
            curve = []
            for path in sorted(out_dir.glob("checkpoints/epoch_*.pt"),
                               key=lambda p: int(p.stem.split("_")[1])):
                m, meta = load_model(path)
                vol = np.asarray(refine(m, full_t))
                s = _score(vol.astype(np.float64), truth, wedge, cell.particle_positions_zyx,
                           box, px)
                curve.append((meta["epoch"], round(s["cc"], 4), round(s["cc_in"], 4)))
            curves.setdefault(tag, {})[name] = curve
            print(f"  {tag} {name}: {res[name]} curve (epoch, cc, cc_in) {curve}", flush=True)
        rows[tag] = res
        print(f"{tag} seconds: { {k: round(v, 1) for k, v in seconds.items()} }", flush=True)
        (args.out / "results.json").write_text(json.dumps({"rows": rows, "curves": curves},
                                                          indent=1))
    print()
    print("| SNR | method | CC | CC outside wedge | CC inside wedge | particle FSC 0.143 (Å) "
          "| halves FSC 0.143 (Å) |")
    print("|---|---|---|---|---|---|---|")
    for tag, res in rows.items():
        for name, r in res.items():
            print(f"| {tag[3:]} | {name} | {r['cc']:.3f} | {r['cc_out']:.3f} | {r['cc_in']:.3f} "
                  f"| {r['particle_fsc0143_A']:.1f} | {r.get('halves_fsc0143_A', float('nan')):.1f} |")
    summary = {tag: round(res["DeepDeWedge (ours)"]["cc"] - res["TV-ADMM"]["cc"], 4)
               for tag, res in rows.items() if "DeepDeWedge (ours)" in res and "TV-ADMM" in res}
    print(f"ddw_minus_tv_cc: {summary}")


if __name__ == "__main__":
    main()
