"""Phase flipping against no CTF correction on a CTF-simulated tilt series (issue 9 bar).

Run:  OMP_NUM_THREADS=2 python benchmarks/results_ctf_phase_flip.py [--setup default|fine]
      [--out DIR] [--sirt N] [--reuse]
(the default simulation takes about 4 minutes on 2 cores, ``fine`` under one; ``--reuse`` keeps
an earlier one)

A crowded-cell phantom is imaged at ±60° in 2° steps (61 views) at 300 kV, Cs 2.7 mm,
amplitude contrast 0.07, 3 µm underfocus at the tilt axis, with the defocus of every voxel
(``simulate_tilt_series(..., defocus_gradient=True)``, 100 Å bands: a tilted specimen is
more under-focused on its ``+x`` side, a thick one also spreads along the beam), plus
Gaussian noise at SNR 2 (variance of the clean series over the noise variance). Set-ups:

* ``default``: 48×64×384 voxels at 5 Å (1920 Å along x), projected from a 2× oversampled copy;
* ``fine``: 40×48×1024 voxels at 2 Å (2048 Å along x, Nyquist 4 Å), no membrane (cytoplasm
  and particles across the whole width), not oversampled; the band beyond ``2k₁`` reaches the
  frequencies at which the defocus gradient turns the CTF's phase by radians.

The series and a 3 µm IMOD ``.defocus`` file go through ``reconstruct_file`` (the workflow the
``reconstruct`` CLI runs) with FBP (ramp filter), without and with CTF correction:

* ``none``: no correction;
* ``phase-flip, one defocus``: each view flipped as a whole at its tilt-axis defocus
  (``--defocus-tolerance`` larger than any view's defocus range);
* ``phase-flip, strips``: strips parallel to the tilt axis, 200 Å apart in defocus (default);
* ``wiener``: strips, ``CTF/(CTF²+0.1)``;

and, with ``--sirt N``, SIRT (N iterations) without and with strip phase flipping.

Score: the FSC of each tomogram against the ground truth. The truth is the phantom on the
reconstruction grid (the band limit of the data; no CTF) with the sign the images give it:
the CTF's ``C(0) = −A`` images dense matter dark and the correction keeps that contrast (as
IMOD's ctfphaseflip), so the reference is ``−phantom``. Reported per run: the mean FSC over
the shells between the first CTF zero ``k₁`` and ``2k₁`` (beyond the first zero, where an
uncorrected CTF alternates in sign); the same over the outer half of the volume in ``x``
(``|x| ≥ nx/4``, masked: the parts that tilted views see furthest from their axis defocus);
the mean FSC from ``2k₁`` to Nyquist; the mean FSC below ``k₁``; and the 0.5 and 0.143
crossings after which the curve stays below (Å). The curves go to
``docs/figures/ctf_phase_flip_fsc[_SETUP].png``. The last line printed is the bar's figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.metrics.fourier import fourier_shell_correlation, resolution_at_threshold
from cryowedge.simulate.ctf import ctf_2d
from cryowedge.simulate.phantoms import crowded_cell
from cryowedge.simulate.tilt_series import simulate_tilt_series
from cryowedge.workflows.reconstruct import reconstruct_file

ROOT = Path(__file__).resolve().parents[1]
DEFOCUS = 30000.0  # Å, 3 µm underfocus
SNR = 2.0
ANGLES = np.arange(-60.0, 60.1, 2.0)

#: (z, y, x) voxels, pixel size (Å), projection oversampling, phantom options
SETUPS = {
    "default": ((48, 64, 384), 5.0, 2, dict(n_particles=8, n_vesicles=2)),
    "fine": ((40, 48, 1024), 2.0, 1, dict(n_particles=12, n_vesicles=0, membrane=False)),
}


def first_ctf_zero(px: float) -> float:
    """Frequency (cycles/pixel) of the first zero of the 3 µm CTF (from its 1D profile)."""
    n = 8192
    line = ctf_2d((1, n), pixel_size_angstrom=px, defocus_u_angstrom=DEFOCUS, rfft=True)[0]
    i = int(np.argmax(line > 0))  # C(0) = -A < 0: the first sign change
    return float(np.interp(0.0, [line[i - 1], line[i]], [(i - 1) / n, i / n]))


def make_phantom(setup: str) -> np.ndarray:
    """The ``(z, y, x)`` crowded-cell phantom of a set-up (deterministic)."""
    shape, px, _, options = SETUPS[setup]
    return crowded_cell(shape, pixel_size_angstrom=px, rng=0, **options).volume


def simulate(folder: Path, setup: str) -> np.ndarray:
    """Write ts.mrc, ts.tlt and ts.defocus into ``folder``; return the phantom ``(z, y, x)``."""
    shape, px, oversample, _ = SETUPS[setup]
    phantom = make_phantom(setup)
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=shape[1:], pixel_size_angstrom=px)
    sim = simulate_tilt_series(phantom, geom, snr=SNR, defocus_angstrom=DEFOCUS,
                               defocus_gradient=True, defocus_step_angstrom=100.0,
                               oversample=oversample, rng=0)
    write_mrc(folder / "ts.mrc", sim.tilt_series, voxel_size_angstrom=px, image_stack=True,
              overwrite=True)
    write_tilt_angles(folder / "ts.tlt", ANGLES)
    lines = [f"{i + 1} {i + 1} {a:.2f} {a:.2f} {DEFOCUS / 10:.1f}" + (" 2" if i == 0 else "")
             for i, a in enumerate(ANGLES)]
    (folder / "ts.defocus").write_text("\n".join(lines) + "\n")
    return phantom


def runs(sirt_iterations: int) -> list[tuple[str, dict]]:
    """(label, config options) of every reconstruction."""
    flip = {"ctf_correction": "phase-flip"}
    out = [
        ("FBP, none", {}),
        ("FBP, phase-flip, one defocus per view", {**flip, "defocus_tolerance_angstrom": 1e6}),
        ("FBP, phase-flip, strips (200 Å)", flip),
        ("FBP, wiener (ε 0.1), strips", {"ctf_correction": "wiener"}),
    ]
    if sirt_iterations:
        it = {"method": "sirt", "n_iter": sirt_iterations}
        out += [(f"SIRT {sirt_iterations} it, none", it),
                (f"SIRT {sirt_iterations} it, phase-flip, strips", {**it, **flip})]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--setup", choices=sorted(SETUPS), default="default")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder (default out/ctf_phase_flip[_SETUP])")
    parser.add_argument("--sirt", type=int, default=20, help="SIRT iterations (0: no SIRT)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="FSC plot (default docs/figures/ctf_phase_flip_fsc[_SETUP].png)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the series simulated in the work folder by an earlier run")
    args = parser.parse_args()
    suffix = "" if args.setup == "default" else f"_{args.setup}"
    out_dir = args.out or ROOT / "out" / f"ctf_phase_flip{suffix}"
    figure = args.figure or ROOT / "docs" / "figures" / f"ctf_phase_flip_fsc{suffix}.png"
    shape, px, _, _ = SETUPS[args.setup]
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.reuse and (out_dir / "ts.mrc").exists():
        phantom = make_phantom(args.setup)
    else:
        phantom = simulate(out_dir, args.setup)
        print(f"simulated {len(ANGLES)} views in {time.perf_counter() - start:.0f} s",
              flush=True)
    reference = -phantom
    outer = np.zeros(shape, dtype=bool)
    outer[..., np.abs(np.arange(shape[2]) - shape[2] // 2) >= shape[2] // 4] = True
    k1 = first_ctf_zero(px)
    print(f"set-up {args.setup}: {shape} voxels at {px} Å; first CTF zero at {k1:.3f} "
          f"cycles/px ({px / k1:.1f} Å); 2k1 = {2 * k1:.3f} cycles/px ({px / (2 * k1):.1f} Å)")
    curves = {}
    rows = []
    for label, options in runs(args.sirt):
        out = out_dir / f"rec_{len(curves)}.mrc"
        t0 = time.perf_counter()
        config = ReconstructConfig(thickness=shape[0], device="cpu", **options)
        defocus = out_dir / "ts.defocus" if config.ctf_correction != "none" else None
        reconstruct_file(out_dir / "ts.mrc", out, config, angles_path=out_dir / "ts.tlt",
                         defocus_path=defocus, overwrite=True)
        volume = read_mrc(out).data
        fsc = fourier_shell_correlation(volume, reference)
        f, c = fsc.frequency_cycles_per_pixel, fsc.correlation
        beyond = (f >= k1) & (f <= 2 * k1)
        high = f > 2 * k1
        c_outer = fourier_shell_correlation(volume, reference, mask=outer).correlation
        rows.append((label, float(c[beyond].mean()), float(c_outer[beyond].mean()),
                     float(c[high].mean()) if high.any() else float("nan"),
                     float(c[f < k1].mean()),
                     resolution_at_threshold(f, c, 0.5, px, rule="stays-below"),
                     resolution_at_threshold(f, c, 0.143, px, rule="stays-below"),
                     time.perf_counter() - t0))
        curves[label] = (f, c)
        print(f"  {label}: {rows[-1][-1]:.0f} s", flush=True)
    print()
    print("| reconstruction | mean FSC, k₁…2k₁ | same, outer half in x | mean FSC, 2k₁…Nyquist "
          "| mean FSC below k₁ | FSC 0.5 (Å) | FSC 0.143 (Å) | time (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, beyond_mean, outer_mean, high_mean, below_mean, r05, r0143, seconds in rows:
        print(f"| {label} | {beyond_mean:.3f} | {outer_mean:.3f} | {high_mean:.3f} | "
              f"{below_mean:.3f} | {r05:.1f} | {r0143:.1f} | {seconds:.0f} |")
    plot(curves, k1, figure, shape, px)
    print(f"\nfigure: {figure}")
    base, flip = rows[0][1], rows[2][1]
    print(f"mean FSC between the first CTF zero and twice its frequency (FBP, 3 µm, "
          f"{args.setup}): none {base:.3f}, phase-flip strips {flip:.3f}")


def plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], k1: float, path: Path,
         shape: tuple[int, int, int], px: float) -> None:
    """FSC curves with the first CTF zero and 2k₁ marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, (f, c) in curves.items():
        ax.plot(f, c, label=label, lw=1.4 if "strips" in label else 1.0)
    ax.axvline(k1, color="grey", ls="--", lw=0.8)
    ax.axvline(2 * k1, color="grey", ls=":", lw=0.8)
    ax.axhline(0, color="black", lw=0.5)
    ax.text(k1, 0.92, " k₁", color="grey")
    ax.text(2 * k1, 0.92, " 2k₁", color="grey")
    ax.set_xlabel(f"spatial frequency (cycles/pixel, {px:g} Å pixels)")
    ax.set_ylabel("FSC against the ground truth")
    ax.set_title(f"3 µm defocus, ±60°, SNR 2, {shape[2] * px:.0f} Å wide: CTF correction",
                 fontsize=10)
    ax.set_ylim(-1.0, 1.0)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
