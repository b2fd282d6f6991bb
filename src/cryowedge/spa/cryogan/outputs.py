"""Files of a CryoGAN run: half maps, full map, FSC plot, resolution-vs-epoch table and plot.

Written into one output directory:

* ``half_map_1.mrc``, ``half_map_2.mrc`` (the second aligned on the first), ``full_map.mrc`` —
  ``(n, n, n)`` float32 voxel maps with the voxel size in the header;
* ``fsc.png`` — the final half-map FSC (0.143 and 0.5 marked);
* ``resolution_vs_epoch.png``, ``resolution_vs_epoch.md`` and ``.csv`` — the table of
  :class:`~cryowedge.spa.cryogan.train.EpochRecord` rows;
* ``cryogan.yaml`` — the resolved configuration (written by the caller).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from cryowedge.io.mrc import write_mrc
from cryowedge.spa.cryogan.train import CryoGanResult, EpochRecord, _fraction

__all__ = ["epoch_table_markdown", "resolution_plot", "write_outputs"]


def _fmt(v: float, digits: int = 3) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def epoch_table_markdown(history: list[EpochRecord], pixel_size_angstrom: float) -> str:
    """Markdown table: epoch, s, W, σ, half-map resolution (Å, fraction of Nyquist), truth."""
    lines = [
        f"Nyquist {2 * pixel_size_angstrom:.3g} Å. Half-map FSC = 0.143 after aligning half map 2 "
        "on half map 1; truth: FSC = 0.5 of the aligned full map against the ground truth.",
        "",
        "| epoch | s | W estimate | noise σ | half-map res. (Å) | fraction of Nyquist | "
        "half-map align cc | res. vs truth (Å) | cc vs truth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in history:
        lines.append(
            f"| {r.epoch} | {r.seconds:.0f} | {_fmt(r.wasserstein)} | {_fmt(r.noise_scale)} | "
            f"{_fmt(r.resolution_angstrom)} | {_fmt(r.fraction_nyquist)} | "
            f"{_fmt(r.align_correlation)} | {_fmt(r.truth_resolution_angstrom)} | "
            f"{_fmt(r.truth_correlation)} |"
        )
    return "\n".join(lines) + "\n"


def resolution_plot(
    history: list[EpochRecord], path: str | Path, pixel_size_angstrom: float | None = None
) -> Path:
    """PNG against epochs: the half-map resolution (fraction of Nyquist), and with a truth its
    correlation and its FSC = 0.5 resolution (fraction of Nyquist; needs the pixel size, Å)."""
    from cryowedge.viz.figures import _plt, save_png

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ep = np.array([r.epoch for r in history])
    frac = np.array([r.fraction_nyquist for r in history])
    ok = np.isfinite(frac)
    ax.plot(ep[ok], frac[ok], "o-", label="half-map FSC 0.143 (fraction of Nyquist)")
    tc = np.array([r.truth_correlation for r in history])
    if np.isfinite(tc).any():
        ax.plot(ep[np.isfinite(tc)], tc[np.isfinite(tc)], "s--", label="cc with truth (aligned)")
        if pixel_size_angstrom is not None:
            tf = np.array(
                [_fraction(r.truth_resolution_angstrom, pixel_size_angstrom) for r in history]
            )
            okt = np.isfinite(tf)
            ax.plot(ep[okt], tf[okt], "^-.", label="FSC 0.5 vs truth (fraction of Nyquist)")
    ax.axhline(0.336, color="grey", lw=0.8, ls=":", label="thesis 0.34 Nyquist (180³, GPU)")
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def write_outputs(result: CryoGanResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the maps, plots and tables of ``result`` into ``out_dir``; returns their paths."""
    from cryowedge.viz.figures import fsc_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    px = result.pixel_size_angstrom
    paths = {
        "half_map_1": write_mrc(
            out / "half_map_1.mrc", result.half_maps[0], voxel_size_angstrom=px
        ),
        "half_map_2": write_mrc(
            out / "half_map_2.mrc", result.half_maps[1], voxel_size_angstrom=px
        ),
        "full_map": write_mrc(out / "full_map.mrc", result.full_map, voxel_size_angstrom=px),
    }
    if result.fsc.size:
        paths["fsc"] = fsc_plot(
            {"half maps (aligned)": (result.fsc_frequency, result.fsc)},
            out / "fsc.png",
            pixel_size_angstrom=px,
            ylabel="FSC of the two half maps",
        )
    table = out / "resolution_vs_epoch.md"
    table.write_text(epoch_table_markdown(result.history, px), encoding="utf-8")
    paths["table"] = table
    with open(out / "resolution_vs_epoch.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=[f.name for f in fields(EpochRecord)])
        w.writeheader()
        for r in result.history:
            w.writerow(asdict(r))
    paths["csv"] = out / "resolution_vs_epoch.csv"
    if result.history:
        paths["plot"] = resolution_plot(result.history, out / "resolution_vs_epoch.png", px)
    return paths
