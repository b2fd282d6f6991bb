"""CryoGAN cost per iteration and per epoch at 32³ and 64³ (CPU, one thread by default).

One iteration = ``n_discr`` critic steps + one volume step (5 simulated batches of 8, one
backward through the projector). Prints seconds per iteration for each box and blob and the
implied seconds per epoch for ``--particles`` particles per half set (two half-set GANs).

    OMP_NUM_THREADS=1 python benchmarks/results_spa_cryogan_timing.py --boxes 32 64
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from cryowedge.config.spa_cryogan import preset_config
from cryowedge.spa.cryogan import CryoGan
from cryowedge.spa.particles import CTFParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boxes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--blobs", nargs="+", default=["simulation", "reconstruction"])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--particles", type=int, default=20_000, help="per half set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for n in args.boxes:
        rng = np.random.default_rng(0)
        images = rng.standard_normal((64, n, n)).astype(np.float32)
        ctf = CTFParams(rng.uniform(1e4, 2.5e4, 64))
        for blob in args.blobs:
            cfg = preset_config("cpu-small", blob=blob, half_sets=False, device=args.device)
            gan = CryoGan(images, 2.0, cfg, ctf=ctf, seed=0)
            gan.train_iteration()  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.iterations):
                gan.train_iteration()
            if gan.device.type == "cuda":
                torch.cuda.synchronize()
            s = (time.perf_counter() - t0) / args.iterations
            per_epoch = 2 * s * np.ceil(args.particles / (cfg.batch_size * cfg.n_discr))
            rows.append(
                {
                    "box": n,
                    "blob": blob,
                    "s_per_iteration": round(s, 3),
                    "s_per_epoch_2x_particles": round(float(per_epoch), 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
