"""File-level steps of ``cryowedge spa orient`` (simulate, train, recover), called by the CLI.

Each step reads its inputs, checks them before any long work, runs the library and writes its
outputs into one directory:

* :func:`simulate_to_dir` — ``particles.star`` + ``particles.mrcs`` (true angles), ``truth.mrc``.
* :func:`train_to_dir` — ``distance_net.pt`` (checkpoint, resumable), ``training.png`` (loss
  curves), ``distances.png`` (predicted vs true distance on validation pairs, Euclidean
  baseline beside), ``train_metrics.json``.
* :func:`recover_to_dir` — ``recovered.star`` (the stack with the recovered angles; aligned to
  the STAR's own angles when it has some), ``errors.png`` + metrics (with a reference),
  ``map.mrc`` and ``fsc.png`` (against ``--reference-map``), ``recover_metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.spa.orient.commonlines import resolve_ambiguity
from cryowedge.spa.orient.data import ProjectionSet, prepare_density, project_density
from cryowedge.spa.orient.pipeline import (
    evaluate_orientations,
    reconstruct_with_orientations,
    recover_from_images,
    score_map,
)
from cryowedge.spa.orient.quaternions import (
    matrix_to_quaternion,
    quaternion_distance,
    quaternion_to_matrix,
    uniform_quaternions,
)
from cryowedge.spa.orient.siamese import embed_images, load_distance_network, train_distance_network

__all__ = ["simulate_to_dir", "train_to_dir", "recover_to_dir"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def _out_dir(out: str | os.PathLike[str], names: list[str], overwrite: bool) -> Path:
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{d} exists and is not a directory; pass an output directory.")
    if not overwrite:
        clash = [n for n in names if (d / n).exists()]
        if clash:
            raise FileExistsError(f"{d} already holds {', '.join(clash)}; pass --overwrite or "
                                  "another directory.")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=1, default=float))
    return path


def simulate_to_dir(out: str | os.PathLike[str], cfg: Any, *, overwrite: bool = False,
                    progress: Progress | None = None) -> dict[str, Path]:
    """Projections of ``cfg.density`` at random orientations as STAR + MRCS, and the truth."""
    from cryowedge.io.mrc import write_mrc
    from cryowedge.spa.io import write_relion_particles

    d = _out_dir(out, ["particles.star", "particles.mrcs", "truth.mrc"], overwrite)
    model = prepare_density(cfg.density, box_size=cfg.box_size,
                            source_pixel_size_angstrom=cfg.source_pixel_size_angstrom)
    q = uniform_quaternions(cfg.n_particles, cfg.seed, half=cfg.half_so3, cyclic=cfg.cyclic)
    ps = project_density(model, q, snr=cfg.snr, seed=cfg.seed, progress=progress)
    star, mrcs = write_relion_particles(d / "particles.star", ps.to_stack(), overwrite=True)
    truth = write_mrc(d / "truth.mrc", model.truth, voxel_size_angstrom=model.pixel_size_angstrom)
    return {"star": star, "stack": mrcs, "truth": truth}


def _training_sets(cfg: Any, progress: Progress | None,
                   particles: str | os.PathLike[str] | None) -> tuple[ProjectionSet, ProjectionSet]:
    if particles is not None:
        from cryowedge.spa.io import read_relion_particles

        stack = read_relion_particles(particles, ctf=False)
        if stack.rotations is None:
            raise ValueError(f"{particles} has no rlnAngleRot/Tilt/Psi; training needs the true "
                             "angles (simulate a set with 'spa orient simulate').")
        n = stack.n_particles
        if n < 4:
            raise ValueError(f"{particles} holds {n} particles; training needs at least 4.")
        gen = np.random.default_rng(cfg.seed)
        order = gen.permutation(n)
        n_val = max(2, min(cfg.n_val, n // 5))
        allset = ProjectionSet(np.asarray(stack.images, dtype=np.float32),
                               matrix_to_quaternion(stack.rotations), stack.pixel_size_angstrom)
        return allset.subset(order[n_val:]), allset.subset(order[:n_val])
    model = prepare_density(cfg.density, box_size=cfg.box_size,
                            source_pixel_size_angstrom=cfg.source_pixel_size_angstrom)
    sub = None if progress is None else (lambda s, f: progress("project training set", f))
    q_train = uniform_quaternions(cfg.n_train, cfg.seed, half=cfg.half_so3, cyclic=cfg.cyclic)
    q_val = uniform_quaternions(cfg.n_val, cfg.seed + 1, half=cfg.half_so3, cyclic=cfg.cyclic)
    train = project_density(model, q_train, snr=cfg.snr, seed=cfg.seed, progress=sub)
    val = project_density(model, q_val, snr=cfg.snr, seed=cfg.seed + 1)
    return train, val


def train_to_dir(out: str | os.PathLike[str], cfg: Any, *, particles: Any = None,
                 overwrite: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Train the distance network on a density's projections (or a STAR with angles)."""
    names = ["training.png", "distances.png", "train_metrics.json"]
    if not cfg.resume:
        names.append("distance_net.pt")
    d = _out_dir(out, names, overwrite)
    net_cfg = cfg.siamese_config()
    train, val = _training_sets(cfg, progress, particles)
    if net_cfg.batch_images > len(train):
        raise ValueError(f"batch_images ({net_cfg.batch_images}) exceeds the training set "
                         f"({len(train)} images); lower --batch-images or add projections.")
    ckpt = d / "distance_net.pt"
    if ckpt.exists() and not cfg.resume:
        ckpt.unlink()
    res = train_distance_network(train, val, net_cfg, checkpoint=ckpt,
                                 checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
                                 progress=progress)
    gen = np.random.default_rng(cfg.seed + 2)
    k = min(1000, len(val) * (len(val) - 1) // 2)
    i = gen.integers(0, len(val), k)
    j = (i + gen.integers(1, len(val), k)) % len(val)
    emb = embed_images(res, val.images)
    pred = np.linalg.norm(emb[i] - emb[j], axis=1)
    true = quaternion_distance(val.quaternions[i], val.quaternions[j])
    eucl = np.linalg.norm((val.images[i] - val.images[j]).reshape(k, -1), axis=1)
    metrics = {
        "epochs": int(net_cfg.epochs), "train_loss": res.train_loss.tolist(),
        "val_loss": res.val_loss.tolist(), "val_pairs_mse": float(np.mean((pred - true) ** 2)),
        "val_pairs_pearson": float(np.corrcoef(pred, true)[0, 1]),
        "euclidean_pearson": float(np.corrcoef(eucl, true)[0, 1]),
        "var_dq": float(np.var(true)), "seconds": res.seconds,
        "n_train": len(train), "n_val": len(val),
    }
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ep = np.arange(1, len(res.train_loss) + 1)
    ax.plot(ep, res.train_loss, label="train")
    ax.plot(ep, res.val_loss, label="validation")
    ax.axhline(metrics["var_dq"], color="0.5", ls=":", label="var(d_q)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (rad²)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(d / "training.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].scatter(true, eucl, s=2, alpha=0.5)
    ax[0].set_xlabel("true d_q (rad)")
    ax[0].set_ylabel("‖b_i − b_j‖")
    ax[0].set_title(f"Euclidean, r = {metrics['euclidean_pearson']:.2f}", fontsize=9)
    ax[1].scatter(true, pred, s=2, alpha=0.5)
    ax[1].plot([0, np.pi], [0, np.pi], "k--", lw=0.8)
    ax[1].set_xlabel("true d_q (rad)")
    ax[1].set_ylabel("predicted (rad)")
    ax[1].set_title(f"Siamese, r = {metrics['val_pairs_pearson']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(d / "distances.png", dpi=120)
    plt.close(fig)
    _write_json(d / "train_metrics.json", metrics)
    return {"files": {"checkpoint": ckpt, "training": d / "training.png",
                      "distances": d / "distances.png", "metrics": d / "train_metrics.json"},
            "metrics": metrics}


def recover_to_dir(
    particles: str | os.PathLike[str], model_path: str | os.PathLike[str],
    out: str | os.PathLike[str], cfg: Any, *, reference_map: Any = None,
    overwrite: bool = False, progress: Progress | None = None,
) -> dict[str, Any]:
    """Recover the orientations of a STAR stack, align (with its angles), reconstruct, score."""
    from cryowedge.io.mrc import read_mrc, write_mrc
    from cryowedge.spa.io import read_relion_particles, write_relion_particles

    d = _out_dir(out, ["recovered.star", "recovered.mrcs", "map.mrc", "fsc.png",
                       "recover_metrics.json"], overwrite)
    net = load_distance_network(model_path)
    stack = read_relion_particles(particles, ctf=False)
    n = stack.image_size
    ref_vol = None
    if reference_map is not None:
        ref_vol = np.asarray(read_mrc(reference_map).data, dtype=np.float32)
        if ref_vol.shape != (n, n, n):
            raise ValueError(f"the reference map {reference_map} is {ref_vol.shape}, the "
                             f"particles {n}×{n}; pass a map of the particle box ({n}³).")
    if stack.n_particles < 3:
        raise ValueError(f"{particles} holds {stack.n_particles} particles; need at least 3.")
    mode = cfg.align
    if mode == "reference" and stack.rotations is None:
        raise ValueError(f"--align reference needs rlnAngleRot/Tilt/Psi in {particles}.")
    if mode == "auto":
        mode = "reference" if stack.rotations is not None else "commonlines"
    use_ref = mode == "reference"
    rec, _ = recover_from_images(
        net, np.asarray(stack.images), n_steps=cfg.n_steps, batch_pairs=cfg.batch_pairs,
        lr=cfg.lr, lr_final=cfg.lr_final, n_restarts=cfg.n_restarts, seed=cfg.seed,
        progress=progress,
    )
    metrics: dict[str, Any] = {"n_particles": stack.n_particles, "final_loss": rec.final_loss,
                               "restart_losses": rec.config.get("restart_losses"),
                               "aligned": use_ref, "align": mode,
                               "seconds_recovery": rec.seconds}
    if use_ref:
        ev = evaluate_orientations(rec.quaternions, stack.rotations)
        rotations = ev.rotations
        metrics.update(mean_error_deg=ev.mean_error_deg, median_error_deg=ev.median_error_deg)
        plt = _plt()
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.hist(ev.alignment.errors_deg, bins=40)
        ax.set_xlabel("angular error after O(4) alignment (°)")
        ax.set_ylabel("particles")
        fig.tight_layout()
        fig.savefig(d / "errors.png", dpi=120)
        plt.close(fig)
    elif mode == "commonlines":
        if progress is not None:
            progress("common lines", 0.0)
        res = resolve_ambiguity(np.asarray(stack.images), rec.quaternions,
                                n_grid=cfg.commonlines_grid, seed=cfg.seed)
        rotations = res.rotations
        metrics.update(commonlines_score=res.score, commonlines_inverted=res.inverted,
                       commonlines_branch_scores=list(res.scores_by_inversion))
        logger.warning("orientations resolved by common lines: the map is defined up to a "
                       "global rotation and its hand (mirror), which projections cannot fix")
    else:
        rotations = quaternion_to_matrix(rec.quaternions)
        logger.warning("--align none: the recovered orientations are written as they are; "
                       "they hold only up to a left/right rotation and an inversion, so no map "
                       "is made from them")
    out_stack = stack.replace(rotations=rotations)
    star, _ = write_relion_particles(d / "recovered.star", out_stack, overwrite=True)
    files: dict[str, Path] = {"star": star}
    if cfg.reconstruct and mode != "none":
        if progress is not None:
            progress("reconstruct", 0.0)
        r = reconstruct_with_orientations(np.asarray(stack.images), rotations,
                                          stack.pixel_size_angstrom, lam=cfg.lam,
                                          n_iter=cfg.n_iter)
        files["map"] = write_mrc(d / "map.mrc", r.volume,
                                 voxel_size_angstrom=stack.pixel_size_angstrom)
        if progress is not None:
            progress("reconstruct", 1.0)
        if ref_vol is not None and not use_ref:
            logger.warning("the FSC against --reference-map assumes the map is in its frame; "
                           "a common-line map is rotated and possibly mirrored")
        if ref_vol is not None:
            from cryowedge.viz.figures import fsc_plot

            sc = score_map(r.volume, ref_vol, stack.pixel_size_angstrom)
            metrics.update(sc.as_dict())
            files["fsc"] = fsc_plot({"recovered orientations": (sc.frequency, sc.correlation)},
                                    d / "fsc.png", pixel_size_angstrom=stack.pixel_size_angstrom)
    files["metrics"] = _write_json(d / "recover_metrics.json", metrics)
    if (d / "errors.png").exists() and use_ref:
        files["errors"] = d / "errors.png"
    return {"files": files, "metrics": metrics}
