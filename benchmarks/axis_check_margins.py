"""Margins and cost of the tilt-axis check (``cryowedge.workflows.axis_check``), as text.

Run:  OMP_NUM_THREADS=2 python benchmarks/axis_check_margins.py [--4k] [--quick] [--ablation]

Every series is checked twice with :func:`~cryowedge.workflows.axis_check.check_tilt_axis`:
with its true axis angle assumed (a warning there is a false alarm) and with the angle a
quarter turn away assumed (a warning there should name the true axis, or the angle 180° from
it, which predicts the views the same way). Printed per check: the scores, the paired t of
the best other candidate over the assumed one, its win fraction, the verdict and the time.

* Simulated: Shepp–Logan (64×96×96), hollow spheres (32×96×96), crowded-cell slabs (slab
  0.6 of 48, 0.5 of 40 and 0.9 of 72 voxels, 96² wide); noise-free and Gaussian SNR 0.3;
  tilts ±60° at 3° and 2°, ±45° at 3°, −50…+66° at 2°; true axis 0° and 90°. Also a cell
  with a 3 µm CTF (SNR 0.5), a dense ±60° series at 1° (121 views, so the check reads a
  subset), and a raw stack whose axis is at 85.3° (not a quarter turn).
* Real: the aligned NIST needle (``../shared/data/etspy_HAADF_needle_aligned.mrc``, axis
  −90°), full size (256², 77 views), when present.
* ``--4k``: cost on a 4096² × 41-view float32 stack (2.7 GB, written to a temporary
  directory and read lazily; the page cache is warm from the write).
* ``--ablation``: the defaults against a full-thickness volume and against no band-pass
  (σ 0 and 1000 px: the whole spectrum but the mean), on the series where they matter.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.simulate import phantoms
from cryowedge.simulate.tilt_series import simulate_tilt_series
from cryowedge.workflows.axis_check import _same_line, check_tilt_axis

ROOT = Path(__file__).resolve().parents[1]
NEEDLE = ROOT.parent / "shared" / "data" / "etspy_HAADF_needle_aligned.mrc"
SCHEMES = [(-60, 60, 3), (-45, 45, 3), (-60, 60, 2), (-50, 66, 2)]


def volumes() -> dict[str, np.ndarray]:
    return {
        "shepp": phantoms.shepp_logan_3d((64, 96, 96)),
        "spheres": phantoms.hollow_spheres((32, 96, 96), rng=1),
        "cell": phantoms.crowded_cell((48, 96, 96), n_particles=12, n_vesicles=2, rng=2).volume,
        "thincell": phantoms.crowded_cell(
            (40, 96, 96), n_particles=8, n_vesicles=1, slab_fraction=0.5, rng=3
        ).volume,
        "thickcell": phantoms.crowded_cell(
            (72, 96, 96), n_particles=20, n_vesicles=2, slab_fraction=0.9, rng=4
        ).volume,
    }


def simulate(volume, angles, axis, snr, seed, defocus=None):
    """A simulated raw stack whose tilt axis lies at ``axis`` degrees."""
    _, ny, nx = volume.shape
    quarter = round(axis / 90.0) % 2
    geom = TiltGeometry(
        angles,
        (ny, nx) if quarter == 0 else (nx, ny),
        pixel_size_angstrom=10.0,
        tilt_axis_angle_deg=axis,
    )
    n_axis, n_perp = geom.aligned_detector_shape  # a few pixels larger off quarter turns
    pad = [
        (0, 0),
        ((n_axis - ny) // 2, n_axis - ny - (n_axis - ny) // 2),
        ((n_perp - nx) // 2, n_perp - nx - (n_perp - nx) // 2),
    ]
    volume = np.pad(volume, pad)
    series = simulate_tilt_series(volume, geom, snr=snr, defocus_angstrom=defocus, rng=seed)
    return series.tilt_series, geom


def cases(quick: bool):
    vols = volumes()
    noise = (None, 0.3)
    for i, ((name, vol), snr, (lo, hi, step), axis) in enumerate(
        itertools.product(vols.items(), noise, SCHEMES, (0.0, 90.0))
    ):
        if quick and i % 4:
            continue
        data, geom = simulate(vol, np.arange(lo, hi + 0.1, step), axis, snr, seed=i)
        yield f"{name} snr{snr} {lo}:{hi}:{step}", data, geom
    cell = vols["cell"]
    for axis in (0.0, 90.0):
        data, geom = simulate(cell, np.arange(-60, 60.1, 3), axis, 0.5, seed=7, defocus=30000.0)
        yield "cell ctf3um snr0.5 -60:60:3", data, geom
        data, geom = simulate(cell, np.arange(-60, 60.1, 1), axis, 0.3, seed=8)
        yield "cell snr0.3 -60:60:1 (121 views)", data, geom
    data, geom = simulate(vols["spheres"], np.arange(-60, 60.1, 3), 85.3, 0.3, seed=9)
    yield "spheres snr0.3 -60:60:3 raw 85.3", data, geom
    if NEEDLE.exists():
        series = load_tilt_series(NEEDLE, NEEDLE.with_suffix(".tlt"), lazy=True)
        yield (
            "needle (real, 256², 77 views)",
            series.data,
            series.geometry.with_(tilt_axis_angle_deg=-90.0),
        )


def line(label: str, true_axis: float, check) -> str:
    scores = " ".join(
        f"{a:g}:{s:.3f}" for a, s in zip(check.candidates_deg, check.scores, strict=True)
    )
    verdict = f"WARN→{check.alternative_deg:g}" if check.disagrees else "ok"
    return (
        f"{label:38s} true {true_axis:6.1f} assumed {check.assumed_deg:6.1f} | {scores:34s}"
        f" | alt {check.alternative_deg:6.1f} t {check.t_statistic:+7.1f} "
        f"win {check.win_fraction:.2f} dz {check.effect:+.3f} | {verdict:9s} "
        f"{check.seconds:.2f}s"
    )


def margins(quick: bool) -> None:
    right_t, wrong_t, false_alarms, missed, wrong_hint, times = [], [], [], [], [], []
    for label, data, geom in cases(quick):
        true_axis = geom.tilt_axis_angle_deg
        right = check_tilt_axis(data, geom)
        print(line(label, true_axis, right), flush=True)
        right_t.append(right.t_statistic)
        times.append(right.seconds)
        if right.disagrees:
            false_alarms.append(label)
        # the wrong assumption: the quarter turn nearest to true + 90 (a whole quarter turn
        # for the 85.3° raw stack: 0°, which the default would assume)
        wrong_axis = float(np.round((true_axis + 90.0) / 90.0) * 90.0 % 360.0)
        wrong_axis = 0.0 if abs(true_axis - 85.3) < 1e-6 else wrong_axis
        wrong = check_tilt_axis(data, geom.with_(tilt_axis_angle_deg=wrong_axis))
        print(line(label, true_axis, wrong), flush=True)
        wrong_t.append(wrong.t_statistic)
        times.append(wrong.seconds)
        if not wrong.disagrees:
            missed.append(f"{label} (t {wrong.t_statistic:.1f}, win {wrong.win_fraction:.2f})")
        elif not _same_line(round(true_axis / 90.0) * 90.0, wrong.alternative_deg):
            wrong_hint.append(label)
    print()
    print(
        f"checks with the true axis assumed: {len(right_t)}; false alarms: "
        f"{len(false_alarms)} {false_alarms}; largest t of another angle: {max(right_t):+.1f}"
    )
    print(
        f"checks with the axis a quarter turn off: {len(wrong_t)}; warned: "
        f"{len(wrong_t) - len(missed)}; smallest t: {min(wrong_t):+.1f}; wrong hints: "
        f"{wrong_hint}"
    )
    print("not warned (inconclusive, no hint):", *missed, sep="\n  ")
    print(f"time per check: median {np.median(times):.2f} s, max {max(times):.2f} s")


def cost_4k() -> None:
    """Time the check on a 4096² × 41-view float32 stack read lazily."""
    import mrcfile

    data, geom = simulate(volumes()["cell"], np.arange(-60, 60.1, 3), 90.0, 0.3, seed=11)
    factor = 4096 // data.shape[-1] + 1  # 96 → 43× → 4128, cropped to 4096
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ts4k.mrc"
        with mrcfile.new_mmap(path, shape=(data.shape[0], 4096, 4096), mrc_mode=2) as mrc:
            for t, view in enumerate(data):
                mrc.data[t] = np.kron(view, np.ones((factor, factor), np.float32))[:4096, :4096]
        path.with_suffix(".tlt").write_text("\n".join(f"{a:g}" for a in geom.tilt_angles_deg))
        series = load_tilt_series(path, lazy=True)  # axis defaulted to 0: wrong
        t0 = time.perf_counter()
        check = check_tilt_axis(series.data, series.geometry)
        total = time.perf_counter() - t0
        print(
            f"4k: {series.data.shape} float32, {check.summary()}, disagrees {check.disagrees}, "
            f"bin {check.binning}, {check.n_train}+{check.n_held_out} views, {total:.2f} s"
        )


def ablation() -> None:
    """Why the volume is half as thick as wide and the correlation band-passed."""
    vols = volumes()
    series = {
        "shepp noise-free -60:60:3": simulate(
            vols["shepp"], np.arange(-60, 60.1, 3), 0.0, None, seed=1
        ),
        "cell snr0.3 -45:45:3": simulate(vols["cell"], np.arange(-45, 45.1, 3), 0.0, 0.3, seed=2),
    }
    if NEEDLE.exists():
        needle = load_tilt_series(NEEDLE, NEEDLE.with_suffix(".tlt"), lazy=True)
        series["needle"] = (needle.data, needle.geometry.with_(tilt_axis_angle_deg=-90.0))
    variants = {
        "defaults": {},
        "full thickness": {"thickness_fraction": 1.0},
        "no band-pass": {"band_sigmas_px": (0.0, 1000.0)},
    }
    for label, (data, geom) in series.items():
        for name, options in variants.items():
            check = check_tilt_axis(data, geom, **options)  # the true axis assumed
            print(
                f"{label:28s} {name:15s} true {check.score_of(check.assumed_deg):.3f} "
                f"best other {check.score_of(check.alternative_deg):.3f} "
                f"t {check.t_statistic:+6.1f} (negative: the true axis predicts better)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--4k", dest="four_k", action="store_true", help="also time a 4k stack")
    parser.add_argument("--quick", action="store_true", help="a quarter of the simulated cases")
    parser.add_argument("--ablation", action="store_true", help="only the ablation")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.ablation:
        ablation()
        return
    margins(args.quick)
    if args.four_k:
        cost_4k()


if __name__ == "__main__":
    main()
