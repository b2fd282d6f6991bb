"""CryoGAN results (issue 14, thesis chapter 6): half-map FSC vs epochs from zero initialisation.

Simulates a particle set from a real density (the 70S ribosome of /work/shared/data, downsampled
to the box), trains two half-set CryoGANs from zero volumes, and writes into ``--out``: the
maps (MRC), ``fsc.png``, ``resolution_vs_epoch.{md,csv,png}``, ``summary.json`` and
``cryogan.yaml``. The comparator is the thesis's ≈ 0.34 of Nyquist (7.58 Å at 2.548 Å, 180³,
41 000 particles, 160 min on a P100).

Example (the docs/results.md run; one thread)::

    OMP_NUM_THREADS=1 python benchmarks/results_spa_cryogan.py --box 32 --n-particles 4000 \
        --epochs 16 --preset cpu-small --out /work/bench_out/cryogan32
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cryowedge.config.spa_cryogan import preset_config
from cryowedge.spa.cryogan import train_cryogan
from cryowedge.spa.cryogan.outputs import write_outputs
from cryowedge.spa.simulate import simulate_spa


def add_data_arguments(ap: argparse.ArgumentParser, *, n_particles: int = 4000) -> None:
    """The simulated data set's options, shared by the CryoGAN results scripts (one recipe)."""
    ap.add_argument("--density", default="ribosome")
    ap.add_argument("--box", type=int, default=32)
    ap.add_argument("--n-particles", type=int, default=n_particles)
    ap.add_argument("--snr", type=float, default=0.3, help="energy ratio; <= 0 for no noise")
    ap.add_argument("--no-ctf", action="store_true")


def simulate_data(
    args: argparse.Namespace, *, n_particles: int | None = None, seed: int | None = None
):
    """The data set of :func:`add_data_arguments`' options (``n_particles``/``seed`` override)."""
    return simulate_spa(
        args.density,
        box_size=args.box,
        n_particles=args.n_particles if n_particles is None else n_particles,
        snr=args.snr if args.snr > 0 else None,
        ctf=not args.no_ctf,
        seed=args.seed if seed is None else seed,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(ap)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--gp-lambda", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None, help="both learning rates")
    ap.add_argument("--channels", type=int, default=None)
    ap.add_argument("--fsc-every", type=int, default=1)
    ap.add_argument(
        "--independent-critics",
        action="store_true",
        help="different initial weights for the two half-set discriminators",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any CryoGanConfig field (repeatable), e.g. --set blur_sigma_px=2",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("/work/bench_out/cryogan32"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    changes = {"epochs": args.epochs, "fsc_every": args.fsc_every, "seed": args.seed}
    if args.gp_lambda is not None:
        changes["gp_lambda"] = args.gp_lambda
    if args.lr is not None:
        changes["lr_volume"] = changes["lr_discriminator"] = args.lr
    if args.channels is not None:
        changes["channels"] = args.channels
    if args.independent_critics:
        changes["same_discriminator_init"] = False
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set expects FIELD=VALUE, got {item!r}")
        changes[key] = yaml.safe_load(value)
    cfg = preset_config(args.preset, **changes)
    sim = simulate_data(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cryogan.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    t0 = time.perf_counter()
    res = train_cryogan(sim.stack, cfg, out_dir=args.out, truth=sim.truth, resume=args.resume)
    wall = time.perf_counter() - t0
    write_outputs(res, args.out)
    px = res.pixel_size_angstrom
    last = res.history[-1]
    summary = {
        "density": sim.source,
        "box": args.box,
        "n_particles": args.n_particles,
        "snr": args.snr,
        "ctf": not args.no_ctf,
        "pixel_size_angstrom": px,
        "nyquist_angstrom": 2 * px,
        "preset": args.preset,
        "config": cfg.model_dump(),
        "threads": args.threads,
        "wall_s": wall,
        "seconds_per_epoch": res.seconds_per_epoch,
        "half_map_resolution_angstrom": last.resolution_angstrom,
        "fraction_nyquist": last.fraction_nyquist,
        "truth_resolution_angstrom": last.truth_resolution_angstrom,
        "truth_correlation": last.truth_correlation,
        "thesis_fraction_nyquist": 2.548 / 7.58,
        "device": res.device,
    }
    (args.out / "summary.json").write_text(
        json.dumps(
            summary,
            indent=2,
            default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v),
        ),
        encoding="utf-8",
    )
    np.save(args.out / "truth.npy", sim.truth)
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "half_map_resolution_angstrom",
                    "fraction_nyquist",
                    "truth_correlation",
                    "seconds_per_epoch",
                )
            }
        )
    )


if __name__ == "__main__":
    main()
