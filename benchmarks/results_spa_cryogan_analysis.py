"""Read a CryoGAN results directory and put its half-map FSC next to controls.

Needs the outputs of ``results_spa_cryogan.py`` (``half_map_1.mrc``, ``half_map_2.mrc`` —
already aligned —, ``full_map.mrc``, ``truth.npy``). Reports, each as the FSC = 0.143 (and
0.5) crossing in Å and as a fraction of Nyquist:

* the aligned half maps (what the run reports);
* a control: half map 2 turned by random rotations instead of the best one (a shared shape —
  a filled support ball, the same radial profile — correlates even without any alignment);
* the half maps each aligned on the truth (not on each other), then FSC'd: the alignment
  that maximises their mutual correlation over thousands of rotations also fits their noise;
* the full map against the truth (after alignment), and its correlation;
* the correlation of the support ball with the truth (what "a positive blob" scores).

Writes ``analysis.json`` and ``fsc_controls.png`` into the directory.

    python benchmarks/results_spa_cryogan_analysis.py /work/bench_out/cryogan32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cryowedge.geometry.rotations import random_rotations
from cryowedge.io.mrc import read_mrc
from cryowedge.metrics.fourier import fourier_shell_correlation, resolution_at_threshold
from cryowedge.metrics.report import FSC_RESOLUTION_RULE
from cryowedge.operators.rotation import Rotation3D
from cryowedge.spa import SIMULATION_BLOB, expand
from cryowedge.spa.cryogan import align_maps
from cryowedge.spa.refine import sphere_mask
from cryowedge.viz.figures import fsc_plot


def _res(fsc, t, px):
    r = fsc.resolution_angstrom(t, px, rule=FSC_RESOLUTION_RULE)
    return {"angstrom": r, "fraction_nyquist": 2 * px / r if np.isfinite(r) else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--n-random", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = args.directory
    m1 = np.asarray(read_mrc(d / "half_map_1.mrc").data, np.float32)
    m2 = np.asarray(read_mrc(d / "half_map_2.mrc").data, np.float32)
    full = np.asarray(read_mrc(d / "full_map.mrc").data, np.float32)
    truth = np.load(d / "truth.npy")
    summary = json.loads((d / "summary.json").read_text())
    px = summary["pixel_size_angstrom"]
    n = m1.shape[0]
    out = {"pixel_size_angstrom": px}
    f_al = fourier_shell_correlation(m1, m2)
    out["half_maps_aligned"] = {t: _res(f_al, t, px) for t in (0.143, 0.5)}
    rots = random_rotations(args.n_random, 7)
    ctrl = []
    for r in rots:
        turned = Rotation3D((n,) * 3, r).forward(torch.as_tensor(m2)).numpy()
        ctrl.append(fourier_shell_correlation(m1, turned))
    c = np.mean([f.correlation for f in ctrl], axis=0)
    freq = f_al.frequency_cycles_per_pixel
    r_ctrl = resolution_at_threshold(freq, c, 0.143, px, rule=FSC_RESOLUTION_RULE)
    out["half_maps_random_rotation_mean"] = {
        "angstrom": r_ctrl,
        "fraction_nyquist": 2 * px / r_ctrl if np.isfinite(r_ctrl) else 0.0,
    }
    # Each half map aligned on the truth separately: their FSC then owes nothing to an
    # alignment that maximised their mutual correlation.
    a1 = align_maps(m1, truth, n_rotations=3000)
    a2 = align_maps(m2, truth, n_rotations=3000)
    f_tt = fourier_shell_correlation(a1.aligned, a2.aligned)
    out["half_maps_each_aligned_on_truth"] = {t: _res(f_tt, t, px) for t in (0.143, 0.5)}
    out["half_maps_vs_truth_correlation"] = [a1.correlation, a2.correlation]
    al = align_maps(full, truth, n_rotations=3000)
    f_t = fourier_shell_correlation(truth, al.aligned)
    out["full_vs_truth"] = {t: _res(f_t, t, px) for t in (0.5, 0.143)}
    out["full_vs_truth_correlation"] = al.correlation
    out["full_vs_truth_mirrored"] = al.mirrored
    ball = expand(
        torch.as_tensor(sphere_mask(n, 0.95 * (n // 2)).astype(np.float64)), SIMULATION_BLOB
    ).numpy()
    out["support_ball_vs_truth_correlation"] = float(np.corrcoef(ball.ravel(), truth.ravel())[0, 1])
    (d / "analysis.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    fsc_plot(
        {
            "half maps, aligned": (freq, f_al.correlation),
            "half maps, random rotations (control)": (freq, c),
         "half maps, each aligned on the truth": (freq, f_tt.correlation),
            "full map vs truth (aligned)": (freq, f_t.correlation),
        },
        d / "fsc_controls.png",
        pixel_size_angstrom=px,
        ylabel="FSC",
    )
    _slices(truth, al.aligned, d / "slices.png")
    print(json.dumps(out, indent=1))


def _slices(truth: np.ndarray, rec: np.ndarray, path: Path) -> None:
    """Central z/y/x slices of the truth (top) and the aligned CryoGAN full map (bottom)."""
    from cryowedge.viz.figures import _plt, save_png

    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(6.6, 4.6))
    c = truth.shape[0] // 2
    for row, (vol, name) in enumerate(((truth, "truth"), (rec, "CryoGAN (aligned)"))):
        for col, sl in enumerate((vol[c], vol[:, c], vol[:, :, c])):
            ax = axes[row, col]
            ax.imshow(sl, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
    for col, t in enumerate(("z = n/2", "y = n/2", "x = n/2")):
        axes[0, col].set_title(t, fontsize=9)
    save_png(fig, path)


if __name__ == "__main__":
    main()
