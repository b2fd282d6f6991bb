"""Reference for the CryoGAN results: the model-based reconstruction with the TRUE poses.

Regenerates the data set of ``results_spa_cryogan.py`` (same density, box, particles, SNR,
CTF, seed) and reconstructs the two half sets with the known orientations (TV-ADMM-CG,
:func:`cryowedge.spa.half_map_reconstruction`, default λ), i.e. what a perfect orientation
estimate would give on these images. Prints the half-map FSC = 0.143 resolution (fraction of
Nyquist) and the full map's FSC = 0.5 resolution and correlation against the truth.

    OMP_NUM_THREADS=1 python benchmarks/results_spa_cryogan_oracle.py --box 32 --n-particles 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cryowedge.metrics.fourier import fourier_shell_correlation
from cryowedge.metrics.report import FSC_RESOLUTION_RULE
from cryowedge.spa import half_map_reconstruction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_spa_cryogan import add_data_arguments, simulate_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(ap, n_particles=2000)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sim = simulate_data(args)
    px = sim.pixel_size_angstrom
    hm = half_map_reconstruction(sim.with_true_poses(), lam=args.lam, seed=args.seed)
    res = hm.fsc.resolution_angstrom(0.143, px, rule=FSC_RESOLUTION_RULE)
    avg = hm.average
    ft = fourier_shell_correlation(sim.truth, avg)
    out = {
        "box": args.box,
        "n_particles": args.n_particles,
        "snr": args.snr,
        "lam": args.lam,
        "pixel_size_angstrom": px,
        "half_map_resolution_angstrom": res,
        "fraction_nyquist": 2 * px / res,
        "truth_resolution_05_angstrom": ft.resolution_angstrom(0.5, px, rule=FSC_RESOLUTION_RULE),
        "truth_correlation": float(np.corrcoef(avg.ravel(), sim.truth.ravel())[0, 1]),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
