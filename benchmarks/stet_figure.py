"""Figure of thesis Fig. 3.6 at small scale: T-DS vs I-DS orthoslices and a profile line.

Run:  OMP_NUM_THREADS=2 python benchmarks/stet_figure.py            (~2 min on 2 cores)

Same phantom, data and solver as results_stet.py; λ per dose is the best of that table
(1 at 50 % and 10 %, 0.3 at 3 %). Writes docs/figures/stet_tds_vs_ids.png (central XY and
XZ slices) and docs/figures/stet_profiles.png (one line of the central XY slice, as the
thesis's profile lines). Last line: the SNR (dB) of every reconstruction.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_stet import (  # noqa: E402
    DOSES as TABLE_DOSES,
    PIXEL_SIZE_ANGSTROM,
    SEED,
    SHAPE,
    SNR,
    SOLVER,
    SimulateConfig,
    TiltGeometry,
    add_filaments,
    make_phantom,
    random_scan_mask,
    reconstruct_stet,
    reconstruct_tds,
    simulate_stet,
    uniform_tilt_subset,
)
from stet_seed_check import snr_db  # noqa: E402

from cryowedge.io._atomic import atomic_write  # noqa: E402
from cryowedge.viz.figures import _plt, orthoslice_panel  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
DOSES = {0.5: 1.0, 0.1: 1.0, 0.03: 0.3}  # dose -> λ (best of results_stet.py's table)

if __name__ == "__main__":
    cell = make_phantom(SimulateConfig(shape=SHAPE, pixel_size_angstrom=PIXEL_SIZE_ANGSTROM,
                                       n_particles=8, seed=SEED))
    truth = add_filaments(cell, 10, seed=SEED)
    geom = TiltGeometry.from_range(-70, 70, 1, SHAPE[1:], pixel_size_angstrom=PIXEL_SIZE_ANGSTROM)
    full = simulate_stet(truth, geom, dose_fraction=1.0, snr=SNR, oversample=2, seed=SEED).full
    volumes: dict[str, np.ndarray] = {"ground truth": truth}
    scores: dict[str, float] = {}
    for f, lam in DOSES.items():
        idx = uniform_tilt_subset(geom.n_tilts, f)
        mask = random_scan_mask(geom.tilt_series_shape, f, seed=100 + TABLE_DOSES.index(f))  # as the table
        data = np.where(mask, full, np.float32(0.0))
        common = dict(volume_shape=SHAPE, tv_lambda=lam, **SOLVER)
        for name, result in ((f"T-DS {100 * f:g} % ({idx.size} tilts)",
                              reconstruct_tds(full, geom, tilt_indices=idx, **common)),
                             (f"I-DS {100 * f:g} %", reconstruct_stet(data, mask, geom, **common))):
            volumes[name] = result.x.numpy()
            scores[name] = snr_db(result.x, truth)
    orthoslice_panel(volumes, FIGURES / "stet_tds_vs_ids.png", pixel_size_angstrom=PIXEL_SIZE_ANGSTROM)

    # profile line: the row of the central XY slice that crosses the most filament voxels
    z = SHAPE[0] // 2
    row = int(np.argmax(((truth - cell)[z] > 0.1).sum(axis=1)))
    plt = _plt()
    fig, axes = plt.subplots(1, len(DOSES), figsize=(4.2 * len(DOSES), 3.0), sharey=True)
    x_nm = np.arange(SHAPE[2]) * PIXEL_SIZE_ANGSTROM / 10
    for ax, f in zip(axes, DOSES, strict=True):
        ax.plot(x_nm, truth[z, row], color="black", lw=1.5, label="ground truth")
        for name, colour in ((next(n for n in volumes if n.startswith(f"T-DS {100 * f:g} %")), "tab:orange"),
                             (f"I-DS {100 * f:g} %", "tab:blue")):
            ax.plot(x_nm, volumes[name][z, row], color=colour, lw=1.0, label=name)
        ax.set_title(f"dose {100 * f:g} %", fontsize=10)
        ax.set_xlabel("x (nm)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"density, XY slice z={z}, row y={row}")
    fig.tight_layout()
    with atomic_write(FIGURES / "stet_profiles.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print("snr_db: " + "; ".join(f"{k} {v:.2f}" for k, v in scores.items()))
