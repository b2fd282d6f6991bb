"""CryoGAN diagnostic (thesis §8.4 "sanity GAN"): the critic's Wasserstein estimate at the truth.

Freezes the simulator's volume at (a) the true blob coefficients with the true noise σ and
(b) zero, trains only the critic on one half set for ``--epochs`` epochs (``n_discr`` critic
steps per iteration, as in training), and after every epoch evaluates the critic's estimate
``mean D(real) − mean D(simulated)`` twice: on the half set's own images (the ones the critic
trains on) and on **held-out** images (a second simulation of the same density with another
seed). At the truth the two distributions are equal, so a held-out estimate near 0 with a
training estimate far above it means the critic tells the data set's own noise realisations
apart from fresh ones (it memorises the finite data set), which the volume cannot fix.

    OMP_NUM_THREADS=1 python benchmarks/results_spa_cryogan_sanity.py --box 32 \
        --n-particles 2000 --epochs 12

The last line is ``sanity_w_train_minus_heldout_at_truth: X`` (last epoch).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from cryowedge.config.spa_cryogan import preset_config
from cryowedge.spa.cryogan import CryoGan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_spa_cryogan import add_data_arguments, simulate_data  # noqa: E402


@torch.no_grad()
def _estimate(gan: CryoGan, images: np.ndarray, n_eval: int, seed: int) -> float:
    """``mean D(real) − mean D(sim)`` over ``n_eval`` images of ``images`` and fresh simulations."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(images.shape[0], generator=g)[:n_eval]
    real = gan._prepare(torch.as_tensor(images[idx.numpy()]))
    d_real, d_sim = [], []
    b = gan.config.batch_size * 8
    for k in range(0, real.shape[0], b):
        d_real.append(gan.discriminator(real[k : k + b]))
        sim = gan._prepare(gan.simulator(min(b, real.shape[0] - k), g))
        d_sim.append(gan.discriminator(sim))
    return float(torch.cat(d_real).mean() - torch.cat(d_sim).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(ap, n_particles=2000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--n-eval", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = simulate_data(args)
    held = simulate_data(args, n_particles=args.n_eval, seed=args.seed + 1000)
    st = data.stack.with_random_halves(args.seed) if data.stack.half_sets is None else data.stack
    idx = np.flatnonzero(st.half_sets == 1)
    cfg = preset_config(args.preset, epochs=args.epochs, seed=args.seed)
    rows = []
    for name in ("truth", "zero"):
        gan = CryoGan(
            st.images[idx],
            st.pixel_size_angstrom,
            cfg,
            ctf=st.ctf.subset(idx),
            inverted_contrast=st.inverted_contrast,
            seed=args.seed * 1000 + 17,
            discriminator_seed=args.seed,
        )
        with torch.no_grad():
            if name == "truth":
                coef = torch.as_tensor(data.coefficients, dtype=gan.simulator.volume.dtype)
                gan.simulator.volume.copy_(coef)
                gan.simulator.log_noise_scale.fill_(math.log(float(np.mean(data.noise_sigma))))
        for epoch in range(1, args.epochs + 1):
            gan._perm = torch.randperm(gan.n_images, generator=gan.generator)
            gan._cursor = 0
            for _ in range(gan.iterations_per_epoch):
                for _ in range(cfg.n_discr):
                    gan.discriminator_step()
                gan.iteration += 1
            gan.sched_d.step()
            gan.epoch += 1
            w_train = _estimate(gan, st.images[idx], args.n_eval, 7 + epoch)
            w_held = _estimate(gan, held.stack.images, args.n_eval, 7 + epoch)
            rows.append({"volume": name, "epoch": epoch, "w_train": w_train, "w_heldout": w_held})
            print(json.dumps(rows[-1]), flush=True)
    last = [r for r in rows if r["volume"] == "truth"][-1]
    print(f"sanity_w_train_minus_heldout_at_truth: {last['w_train'] - last['w_heldout']:.3g}")


if __name__ == "__main__":
    main()
