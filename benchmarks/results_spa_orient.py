"""Thesis ch. 5 (orientation recovery, research/thesis.md §7, §14 R8–R9): the results of issue 14.

Three parts (``--part``, default all):

* ``exact`` (Fig. 5.6): orientations recovered from the exact pairwise distances of ``P``
  Haar-uniform orientations (``recover_orientations``, Adam over fresh random pairs per step,
  research §13.14), then the O(4) alignment of the fixed eq. 5.8 (§13.13): mean absolute
  angular error, final loss, and the error without alignment for contrast.
* ``noise`` (Fig. 5.7): the same with a fixed symmetric Gaussian noise of ``σ`` rad on every
  distance: aligned error and final loss against ``σ`` (the thesis: roughly linear), and error
  against loss (the thesis: monotone).
* ``siamese`` (Figs. 5.3, 5.5): the 70S ribosome of ../shared/data (asymmetric, a real density)
  at 32³, noise-free projections over half of SO(3) (tilt ≤ 90°, as the thesis); the Siamese
  network (spa.orient.siamese defaults) trained on 3,000, validated on 500, tested on 1,000
  other projections. Predicted vs true distance on 1,000 test pairs beside the Euclidean
  baseline ‖b_i − b_j‖; then the 1,000 test orientations recovered from the network's
  distances, aligned, their mean absolute angular error, and the map reconstructed with them
  (TV-ADMM-CG, λ 0.01) scored by FSC against the truth, beside the map made with the true
  orientations. Also "blind": the left factor and the inversion chosen from the images by
  common lines (spa.orient.commonlines), the truth used only for the global rotation and the
  hand (which no set of projections determines), and the map made with those orientations.

* ``symmetric`` (Fig. 5.5's failure mode): the ribosome made C2-symmetric (averaged with its
  180° turn about z); the same network trained over half of SO(3), and over its asymmetric unit
  (``uniform_quaternions(..., cyclic=2)``: RELION rot in [0°, 180°), the thesis's proposed fix).

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_spa_orient.py`` (about 15 minutes on one
loaded core; projection sets and the network are cached in ``--out``, default
``bench_out/spa_orient``, and a finished network is reused). Figures go to docs/figures/
(``spa_orient_*.png``), numbers to ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.spa.angles import angular_errors_deg
from cryowedge.spa.orient import (
    MatrixOracle,
    align_quaternions,
    aligned_errors_deg,
    noisy_distance_matrix,
    quaternion_distance,
    quaternion_to_matrix,
    recover_orientations,
    uniform_quaternions,
)
from cryowedge.spa.orient.commonlines import mirror_rotations, resolve_ambiguity
from cryowedge.spa.orient.data import ProjectionSet, prepare_density, project_density
from cryowedge.spa.orient.pipeline import (
    evaluate_orientations,
    reconstruct_with_orientations,
    recover_from_images,
    score_map,
)
from cryowedge.spa.orient.siamese import SiameseConfig, train_distance_network

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def part_exact(args: argparse.Namespace) -> dict:
    out = {}
    for p in args.exact_sizes:
        q = uniform_quaternions(p, 100 + p)
        res = recover_orientations(MatrixOracle(noisy_distance_matrix(q)), n_steps=args.steps,
                                   batch_pairs=args.pairs, seed=0, n_restarts=args.restarts)
        al = align_quaternions(res.quaternions, q)
        raw = aligned_errors_deg(res.quaternions, q, np.eye(4)).mean()
        out[p] = {"final_loss": res.final_loss, "mean_error_deg": al.mean_error_deg,
                  "max_error_deg": float(al.errors_deg.max()), "unaligned_error_deg": float(raw),
                  "det_T": float(np.linalg.det(al.matrix)), "seconds": res.seconds,
                  "loss_history": res.loss_history[:: max(1, args.steps // 200)].tolist()}
        print(f"exact P={p}: loss {res.final_loss:.2e} rad², aligned error "
              f"{al.mean_error_deg:.2e}° (max {al.errors_deg.max():.2e}°), unaligned {raw:.1f}°, "
              f"{res.seconds:.1f} s", flush=True)
        if p == args.exact_sizes[-1]:
            plt = _plt()
            fig, ax = plt.subplots(1, 2, figsize=(8.5, 3.3))
            ax[0].semilogy(res.loss_history)
            ax[0].set_xlabel("Adam step")
            ax[0].set_ylabel("batch loss (rad²)")
            ax[0].set_title(f"recovery from exact distances, P = {p}", fontsize=9)
            t = quaternion_to_matrix(q)[:, 2]
            r = evaluate_orientations(res.quaternions, quaternion_to_matrix(q)).rotations[:, 2]
            ax[1].scatter(np.degrees(np.arctan2(t[:, 1], t[:, 0])), np.degrees(np.arccos(t[:, 2])),
                          s=14, facecolors="none", edgecolors="k", lw=0.5, label="true")
            ax[1].scatter(np.degrees(np.arctan2(r[:, 1], r[:, 0])), np.degrees(np.arccos(r[:, 2])),
                          s=3, c="C1", label="recovered, aligned")
            ax[1].set_xlabel("projection direction azimuth (°)")
            ax[1].set_ylabel("tilt (°)")
            ax[1].legend(fontsize=7, loc="lower right")
            fig.tight_layout()
            fig.savefig(FIG / "spa_orient_exact.png", dpi=130)
            plt.close(fig)
    return out


def part_noise(args: argparse.Namespace) -> dict:
    rows = []
    q = uniform_quaternions(args.noise_p, 7)
    for sigma in args.sigmas:
        for seed in range(args.noise_seeds):
            d = noisy_distance_matrix(q, sigma, rng=seed)
            res = recover_orientations(MatrixOracle(d), n_steps=args.steps,
                                       batch_pairs=args.pairs, seed=seed, n_restarts=args.restarts)
            al = align_quaternions(res.quaternions, q)
            rows.append({"sigma": sigma, "seed": seed, "mean_error_deg": al.mean_error_deg,
                         "median_error_deg": al.median_error_deg, "final_loss": res.final_loss})
            print(f"noise σ={sigma:.2f} rad seed {seed}: aligned error {al.mean_error_deg:.2f}° "
                  f"(median {al.median_error_deg:.2f}°), final loss {res.final_loss:.4f}",
                  flush=True)
    s = np.array([r["sigma"] for r in rows])
    e = np.array([r["mean_error_deg"] for r in rows])
    slope, intercept = np.polyfit(s, e, 1)
    pred = slope * s + intercept
    r2 = 1 - np.sum((e - pred) ** 2) / np.sum((e - e.mean()) ** 2)
    print(f"linear fit: error ≈ {slope:.1f}°/rad × σ + {intercept:.2f}°, R² = {r2:.3f}", flush=True)
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(8.5, 3.3))
    ax[0].plot(s, e, "o", ms=4)
    xs = np.linspace(0, s.max(), 50)
    ax[0].plot(xs, slope * xs + intercept, "--", lw=1, label=f"fit, R² = {r2:.3f}")
    ax[0].set_xlabel("distance noise σ (rad)")
    ax[0].set_ylabel("mean aligned error (°)")
    ax[0].legend(fontsize=8)
    ax[1].plot([r["final_loss"] for r in rows], e, "o", ms=4)
    ax[1].set_xlabel("final loss (rad²)")
    ax[1].set_ylabel("mean aligned error (°)")
    fig.suptitle(f"recovery from noisy distances, P = {args.noise_p}", fontsize=9)
    fig.tight_layout()
    fig.savefig(FIG / "spa_orient_noise.png", dpi=130)
    plt.close(fig)
    return {"rows": rows, "fit_slope_deg_per_rad": slope, "fit_intercept_deg": intercept,
            "fit_r2": r2}


def _set(model, n, seed, half, cache: Path) -> ProjectionSet:
    if cache.is_file():
        d = np.load(cache)
        return ProjectionSet(d["images"], d["quaternions"], model.pixel_size_angstrom, model.truth)
    s = project_density(model, uniform_quaternions(n, seed, half=half))
    np.savez(cache, images=s.images, quaternions=s.quaternions)
    return s


def part_siamese(args: argparse.Namespace) -> dict:
    out_dir = Path(args.out)
    half = not args.full
    tag = f"{args.density}{args.box}_{'half' if half else 'full'}"
    model = prepare_density(args.density, box_size=args.box)
    t0 = time.perf_counter()
    train = _set(model, args.n_train, 0, half, out_dir / f"{tag}_train{args.n_train}.npz")
    val = _set(model, args.n_val, 1, half, out_dir / f"{tag}_val{args.n_val}.npz")
    test = _set(model, args.n_test, 2, half, out_dir / f"{tag}_test{args.n_test}.npz")
    t_proj = time.perf_counter() - t0
    cfg = SiameseConfig(epochs=args.epochs, device="cpu")
    net = train_distance_network(train, val, cfg, checkpoint=out_dir / f"{tag}_net.pt",
                                 resume=True)
    print(f"siamese {tag}: train loss {net.train_loss[-1]:.4f}, val loss {net.val_loss[-1]:.4f} "
          f"rad² after {cfg.epochs} epochs × {cfg.steps_per_epoch} steps "
          f"({net.seconds:.0f} s this run; projections {t_proj:.0f} s)", flush=True)

    # Fig. 5.5 / 5.3: 1,000 test pairs
    gen = np.random.default_rng(5)
    i = gen.integers(0, len(test), 1000)
    j = (i + gen.integers(1, len(test), 1000)) % len(test)
    true_d = quaternion_distance(test.quaternions[i], test.quaternions[j])
    from cryowedge.spa.orient.siamese import embed_images

    emb = embed_images(net, test.images)
    pred_d = np.linalg.norm(emb[i] - emb[j], axis=1)
    eucl = np.linalg.norm((test.images[i] - test.images[j]).reshape(1000, -1), axis=1)
    mse = float(np.mean((pred_d - true_d) ** 2))
    corr = float(np.corrcoef(pred_d, true_d)[0, 1])
    corr_e = float(np.corrcoef(eucl, true_d)[0, 1])
    var_d = float(np.var(true_d))
    print(f"test pairs: MSE {mse:.4f} rad² (RMSE {np.sqrt(mse):.3f} rad = "
          f"{np.degrees(np.sqrt(mse)):.1f}°; var(d_q) {var_d:.3f}), Pearson r {corr:.3f}; "
          f"Euclidean baseline r {corr_e:.3f}", flush=True)

    rec, _ = recover_from_images(net, test.images, n_steps=args.steps, batch_pairs=args.pairs,
                                 seed=0, n_restarts=args.restarts)
    ev = evaluate_orientations(rec.quaternions, test.rotations)
    print(f"recovered {len(test)} test orientations: final loss {rec.final_loss:.4f} rad², "
          f"mean aligned error {ev.mean_error_deg:.1f}° (median {ev.median_error_deg:.1f}°)",
          flush=True)

    # blind: the left factor and the inversion from the images (common lines); the truth only
    # picks the global rotation G and the hand, which projections cannot determine
    t1 = time.perf_counter()
    blind = resolve_ambiguity(test.images, rec.quaternions, seed=0)
    cand = {"as resolved": blind.rotations, "mirrored": mirror_rotations(blind.rotations)}
    errs = {k: angular_errors_deg(v, test.rotations) for k, v in cand.items()}
    hand = min(errs, key=lambda k: errs[k][0].mean())
    blind_err, g = errs[hand]
    blind_rot = cand[hand] @ g
    t_blind = time.perf_counter() - t1
    print(f"common lines: inverted {blind.inverted}, score {blind.score:.3f} (branches "
          f"{blind.scores_by_inversion[0]:.3f} / {blind.scores_by_inversion[1]:.3f}), hand "
          f"{hand}; error after a global rotation only {blind_err.mean():.1f}° (median "
          f"{np.median(blind_err):.1f}°), {t_blind:.0f} s", flush=True)

    px = model.pixel_size_angstrom
    maps = {}
    for name, rot in (("true orientations", test.rotations),
                      ("recovered (Siamese), aligned", ev.rotations),
                      ("recovered, common-line resolved", blind_rot)):
        r = reconstruct_with_orientations(test.images, rot, px, lam=args.lam)
        sc = score_map(r.volume, model.truth, px)
        maps[name] = sc
        print(f"map with {name}: FSC 0.5 {sc.resolution_05_angstrom:.1f} Å "
              f"({sc.fraction_of_nyquist_05:.2f} of Nyquist {2 * px:.1f} Å), FSC 0.143 "
              f"{sc.resolution_0143_angstrom:.1f} Å", flush=True)

    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.5))
    ax[0].plot(np.arange(1, cfg.epochs + 1), net.train_loss, label="train")
    ax[0].plot(np.arange(1, cfg.epochs + 1), net.val_loss, label="validation")
    ax[0].axhline(var_d, color="0.5", ls=":", lw=1, label="var(d_q) (constant guess)")
    ax[0].set_yscale("log")
    ax[0].set_xlabel(f"epoch ({cfg.steps_per_epoch} steps of {cfg.batch_images} images)")
    ax[0].set_ylabel("MSE (rad²)")
    ax[0].legend(fontsize=7)
    ax[1].scatter(true_d, eucl, s=2, alpha=0.5)
    ax[1].set_xlabel("true d_q (rad)")
    ax[1].set_ylabel("‖b_i − b_j‖ (image units)")
    ax[1].set_title(f"Euclidean baseline, r = {corr_e:.2f}", fontsize=9)
    ax[2].scatter(true_d, pred_d, s=2, alpha=0.5)
    ax[2].plot([0, np.pi], [0, np.pi], "k--", lw=0.8)
    ax[2].set_xlabel("true d_q (rad)")
    ax[2].set_ylabel("Siamese d̂ (rad)")
    ax[2].set_title(f"Siamese, test pairs, r = {corr:.2f}, RMSE {np.sqrt(mse):.2f} rad",
                    fontsize=9)
    fig.suptitle(f"{args.density} {args.box}³, {'half of' if half else 'all of'} SO(3), "
                 "noise-free", fontsize=9)
    fig.tight_layout()
    fig.savefig(FIG / f"spa_orient_siamese_{'half' if half else 'full'}.png", dpi=130)
    plt.close(fig)
    fig, ax = plt.subplots(1, 2, figsize=(8.5, 3.3))
    ax[0].hist(ev.alignment.errors_deg, bins=40)
    ax[0].set_xlabel("aligned angular error (°)")
    ax[0].set_ylabel("particles")
    ax[0].set_title(f"recovered from Siamese distances: mean {ev.mean_error_deg:.1f}°",
                    fontsize=9)
    for name, sc in maps.items():
        ax[1].plot(sc.frequency / px, sc.correlation, label=name)
    ax[1].axhline(0.5, color="0.6", ls="--", lw=0.8)
    ax[1].set_xlabel("spatial frequency (1/Å)")
    ax[1].set_ylabel("FSC vs truth")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIG / f"spa_orient_recovered_{'half' if half else 'full'}.png", dpi=130)
    plt.close(fig)
    return {
        "tag": tag, "pixel_size_angstrom": px, "train_loss": net.train_loss.tolist(),
        "val_loss": net.val_loss.tolist(), "test_mse": mse, "test_pearson": corr,
        "euclid_pearson": corr_e, "var_dq": var_d, "recovery_final_loss": rec.final_loss,
        "recovery_restart_losses": rec.config.get("restart_losses"),
        "mean_error_deg": ev.mean_error_deg, "median_error_deg": ev.median_error_deg,
        "blind_inverted": blind.inverted, "blind_score": blind.score,
        "blind_branch_scores": list(blind.scores_by_inversion), "blind_hand": hand,
        "blind_mean_error_deg": float(blind_err.mean()),
        "blind_median_error_deg": float(np.median(blind_err)), "blind_seconds": t_blind,
        "maps": {k: v.as_dict() for k, v in maps.items()},
        "train_seconds_this_run": net.seconds, "projection_seconds": t_proj,
    }


def part_symmetric(args: argparse.Namespace) -> dict:
    """Fig. 5.5's failure mode: a C2-symmetric phantom (the ribosome averaged with its 180°
    turn about z), half of SO(3) with and without the asymmetric unit rot ∈ [0°, 180°)."""
    from cryowedge.spa.orient.siamese import embed_images
    from cryowedge.spa.simulate import RIBOSOME_ASSUMED_PIXEL_SIZE_ANGSTROM, load_density_source

    out_dir = Path(args.out)
    vol = load_density_source("ribosome").volume
    sym = 0.5 * (vol + np.rot90(vol, 2, axes=(1, 2)))  # C2 about the map's z axis (65³, exact)
    model = prepare_density(sym, box_size=args.box,
                            source_pixel_size_angstrom=RIBOSOME_ASSUMED_PIXEL_SIZE_ANGSTROM)
    out = {}
    curves = {}
    for label, cyclic in (("half of SO(3)", 1), ("asymmetric unit (rot < 180°)", 2)):
        tag = f"c2ribosome{args.box}_c{cyclic}"
        sets = []
        for n, seed, name in ((args.n_train, 0, "train"), (args.n_val, 1, "val"),
                              (args.n_test, 2, "test")):
            cache = out_dir / f"{tag}_{name}{n}.npz"
            if cache.is_file():
                d = np.load(cache)
                sets.append(ProjectionSet(d["images"], d["quaternions"],
                                          model.pixel_size_angstrom, model.truth))
            else:
                ps = project_density(model, uniform_quaternions(n, seed, half=True, cyclic=cyclic))
                np.savez(cache, images=ps.images, quaternions=ps.quaternions)
                sets.append(ps)
        train, val, test = sets
        net = train_distance_network(train, val, SiameseConfig(epochs=args.epochs, device="cpu"),
                                     checkpoint=out_dir / f"{tag}_net.pt", resume=True)
        gen = np.random.default_rng(5)
        i = gen.integers(0, len(test), 1000)
        j = (i + gen.integers(1, len(test), 1000)) % len(test)
        true_d = quaternion_distance(test.quaternions[i], test.quaternions[j])
        emb = embed_images(net, test.images)
        pred_d = np.linalg.norm(emb[i] - emb[j], axis=1)
        mse = float(np.mean((pred_d - true_d) ** 2))
        corr = float(np.corrcoef(pred_d, true_d)[0, 1])
        out[label] = {"train_loss": net.train_loss.tolist(), "val_loss": net.val_loss.tolist(),
                      "test_mse": mse, "test_pearson": corr, "var_dq": float(np.var(true_d)),
                      "train_seconds_this_run": net.seconds}
        curves[label] = (true_d, pred_d, corr, mse)
        print(f"C2 phantom, {label}: val loss {net.val_loss[-1]:.4f} rad², test MSE {mse:.4f}, "
              f"r {corr:.3f} (var d_q {np.var(true_d):.3f}; {net.seconds:.0f} s)", flush=True)
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(8.5, 3.4))
    for a, (label, (t, p, c, m)) in zip(ax, curves.items(), strict=True):
        a.scatter(t, p, s=2, alpha=0.5)
        a.plot([0, np.pi], [0, np.pi], "k--", lw=0.8)
        a.set_xlabel("true d_q (rad)")
        a.set_ylabel("Siamese d̂ (rad)")
        a.set_title(f"{label}: r = {c:.2f}, MSE {m:.3f}", fontsize=9)
    fig.suptitle("C2-symmetric ribosome phantom, 32³, noise-free", fontsize=9)
    fig.tight_layout()
    fig.savefig(FIG / "spa_orient_symmetric.png", dpi=130)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "exact", "noise", "siamese", "symmetric"),
                    default="all")
    ap.add_argument("--out", default=str(ROOT / "bench_out" / "spa_orient"))
    ap.add_argument("--steps", type=int, default=2000, help="recovery Adam steps")
    ap.add_argument("--pairs", type=int, default=4096, help="pairs per recovery step")
    ap.add_argument("--restarts", type=int, default=3, help="recovery starts (lowest loss kept)")
    ap.add_argument("--exact-sizes", type=int, nargs="+", default=[200, 1000])
    ap.add_argument("--noise-p", type=int, default=500)
    ap.add_argument("--noise-seeds", type=int, default=2)
    ap.add_argument("--sigmas", type=float, nargs="+",
                    default=[0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--density", default="ribosome")
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--full", action="store_true", help="all of SO(3) instead of half")
    ap.add_argument("--lam", type=float, default=0.01)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    FIG.mkdir(parents=True, exist_ok=True)
    results_path = Path(args.out) / "results.json"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"args {vars(args)}", flush=True)
    parts = ("exact", "noise", "siamese", "symmetric") if args.part == "all" else (args.part,)
    for part in parts:
        t = time.perf_counter()
        res = {"exact": part_exact, "noise": part_noise, "siamese": part_siamese,
               "symmetric": part_symmetric}[part](args)
        key = part if part != "siamese" else f"siamese_{'full' if args.full else 'half'}"
        # re-read: another part may have run meanwhile in another process
        results = json.loads(results_path.read_text()) if results_path.is_file() else {}
        results[key] = res
        results[key + "_seconds"] = time.perf_counter() - t
        results_path.write_text(json.dumps(results, indent=1, default=float))
        print(f"[{part}] {time.perf_counter() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
