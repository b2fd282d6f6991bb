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
from results_stet import DOSES as TABLE_DOSES  # noqa: E402
from results_stet import PIXEL_SIZE_ANGSTROM, SHAPE, full_series, snr_db, stet_phantom, tds_and_ids  # noqa: E402

from cryowedge.viz.figures import _plt, orthoslice_panel, save_png  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
DOSES = {0.5: 1.0, 0.1: 1.0, 0.03: 0.3}  # dose -> λ (best of results_stet.py's table)

if __name__ == "__main__":
    cell, truth = stet_phantom()
    geom, full = full_series(truth)
    volumes: dict[str, np.ndarray] = {"ground truth": truth}
    scores: dict[str, float] = {}
    for f, lam in DOSES.items():
        tds, ids, n_tds = tds_and_ids(full, geom, f, mask_seed=100 + TABLE_DOSES.index(f),  # as the table
                                      tv_lambda=lam, volume_shape=SHAPE)
        for name, volume in ((f"T-DS {100 * f:g} % ({n_tds} tilts)", tds), (f"I-DS {100 * f:g} %", ids)):
            volumes[name] = volume
            scores[name] = snr_db(volume, truth)
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
    save_png(fig, FIGURES / "stet_profiles.png")
    print("snr_db: " + "; ".join(f"{k} {v:.2f}" for k, v in scores.items()))
