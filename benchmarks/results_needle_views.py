"""`reconstruct --exclude --bin --preview` on the real aligned needle (issue 9 bar), as Markdown.

Run:  OMP_NUM_THREADS=2 python benchmarks/results_needle_views.py [--out DIR] [--thickness 96]

The NIST STEM-HAADF needle (``../shared/data/etspy_HAADF_needle_aligned.mrc`` + ``.tlt``:
77 views, ±76° at 2°, tilt axis along X, hence ``--tilt-axis-angle -90``) goes through the
``cryowedge reconstruct`` CLI (a subprocess, exactly as a user types it) with ``--bin 2``
and ``--preview``, once with the full ±76° range and once with ``--exclude`` of the views
beyond ±50° (views 1-13 and 65-77), for FBP (defaults) and TV (defaults). The z-elongation
of the needle is measured on its cross-section (the volume summed along y, the needle's
direction after alignment: ``(z, x)``): z-FWHM through the column of most mass, x-FWHM
through the row of the z-peak, their ratio, and the ±50° z-FWHM over the same method's
full-range z-FWHM (the measure of ``results_iterative.py``, whose ``fwhm`` is reused).
The preview PNGs of the ±50° runs are copied to docs/figures/needle_{fbp,tv}_preview.png.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from cryowedge.io.mrc import read_mrc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_iterative import fwhm  # noqa: E402  (the same FWHM as the iterative table)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
STACK = DATA / "etspy_HAADF_needle_aligned.mrc"
ANGLES = DATA / "etspy_HAADF_needle_aligned.tlt"
EXCLUDE = "1-13,65-77"  # the views beyond ±50° (of -76..76 at 2°)


def cross_section_fwhm(volume: np.ndarray) -> tuple[float, float]:
    """``(z-FWHM, x-FWHM)`` in voxels of the needle's ``(z, x)`` cross-section (sum over y)."""
    prof = volume.sum(axis=1)  # (z, x)
    x0 = int(np.argmax(prof.sum(axis=0)))
    z0 = int(np.argmax(prof[:, x0]))
    return fwhm(prof[:, x0]), fwhm(prof[z0, :])


def command(out: Path, method: str, thickness: int, exclude: str | None) -> list[str]:
    """The ``cryowedge reconstruct`` command line of one run."""
    exe = shutil.which("cryowedge")
    head = [exe] if exe else [sys.executable, "-c", "from cryowedge.cli import app; app()"]
    args = [*head, "reconstruct", str(STACK), str(out), "--angles", str(ANGLES),
            "--tilt-axis-angle", "-90", "--bin", "2", "--thickness", str(thickness),
            "--method", method, "--preview", "--overwrite"]
    return args + (["--exclude", exclude] if exclude else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "needle_views")
    parser.add_argument("--thickness", type=int, default=96, help="binned voxels")
    parser.add_argument("--no-copy", action="store_true", help="keep docs/figures unchanged")
    args = parser.parse_args()
    if not STACK.exists():
        print(f"(skipped: {STACK} not found)")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows, previews = [], {}
    for method in ("fbp", "tv"):
        widths = {}
        for label, exclude in (("full ±76°", None), ("±50° (--exclude)", EXCLUDE)):
            tag = "full" if exclude is None else "pm50"
            out = args.out / f"needle_{method}_{tag}.mrc"
            cmd = command(out, method, args.thickness, exclude)
            print("$", shlex.join(cmd), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            mrc = read_mrc(out)
            fz, fx = cross_section_fwhm(mrc.data)
            widths[tag] = fz
            rows.append((method, label, mrc.data.shape, mrc.voxel_size_angstrom[0], fz, fx))
            if exclude is not None:
                previews[method] = out.with_name(out.stem + "_preview.png")
        rows[-1] = (*rows[-1], widths["pm50"] / widths["full"])
        rows[-2] = (*rows[-2], 1.0)
    print()
    print(f"## Needle: `--exclude {EXCLUDE} --bin 2 --preview` (binned 2×, "
          f"thickness {args.thickness})\n")
    print("| method | tilt range | volume (z, y, x) | voxel (Å) | needle z-FWHM (vox) | "
          "x-FWHM (vox) | z/x elongation | z-FWHM / own full-range |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for method, label, shape, voxel, fz, fx, ratio in rows:
        print(f"| {method} | {label} | {shape} | {voxel:.1f} | {fz:.1f} | {fx:.1f} | "
              f"{fz / fx:.2f} | {ratio:.2f} |")
    print()
    for method, png in previews.items():
        print(f"preview ({method}, ±50°): {png}")
        if not args.no_copy:
            target = ROOT / "docs" / "figures" / f"needle_{method}_preview.png"
            shutil.copyfile(png, target)
            print(f"  copied to {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
