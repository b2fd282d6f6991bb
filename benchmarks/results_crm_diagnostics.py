"""Why CRM-SART wins or loses in the CRM reproductions: the diagnostics quoted in docs/results.md.

Five checks (issue 11), each printed as a small table:

1. **Folded background frame.** How far a stain drawn in the copy frame (filling the square box,
   as :func:`cryowedge.crm.simulate.simulate_crm_2d` draws it) is from any particle-frame image
   on the same grid, measured on its projections: the stain rotated back by ``−φ`` (cubic
   splines) and projected at ``θ + φ`` against the stain projected at ``θ``; and the same error
   for the copy-frame background of the operator (``background_frame="copy"``, the default
   since this finding: ``B_i g_i`` against the stain's projections). And what each does to
   CRM-SART over iterations on the project simulator's ribosome data.
2. **Converged, not under-iterated.** CRM-SART and M-AVG run to 320 iterations on the
   ribosome with the authors' geometry but the project's strong stain.
3. **Where CRM's error sits.** Error energy per spatial-frequency band of CRM and M-AVG on the
   authors' ribosome set-up at N = 11.
4. **Another particle.** The same N = 3 / 11 comparison with the slice of EMD-5170 (100³) in
   place of the 65³ ribosome.
5. **Noise.** CRM-SART's particle over the iterations at SNR 1, N = 11 (the last pass follows
   the last copies' noise), against CRM-SIRT.

Run: ``OMP_NUM_THREADS=1 python benchmarks/results_crm_diagnostics.py`` (about 5 minutes on one
core). The last line is the key figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_crm_common as common  # noqa: E402
from results_crm_common import (  # noqa: E402
    METHODS,
    _project_slice,
    fmt,
    make_2d,
    print_config,
    run_methods,
    score_2d,
)

from cryowedge.crm.operator import CRMOperator  # noqa: E402
from cryowedge.crm.solvers import crm_sart, crm_sirt  # noqa: E402
from cryowedge.metrics.normalize import normalize_intensity  # noqa: E402
from cryowedge.operators.tilt_projector import build_projection_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EMD_5170 = ROOT.parent / "shared" / "data" / "emd_5170.map"


def psnr_of(op, x, data) -> float:
    return score_2d(op.particle(x).numpy(), data.truth, data.support)["psnr"]


def frame_check(n_iter: int = 160) -> str:
    prob = make_2d("ribosome", 3, seed=0, convention="project")
    data, stains = prob.data, prob.extras["stains"]
    side = stains.shape[-1]
    copy_op = CRMOperator.from_data(data)  # the default: copy-frame backgrounds
    errs, errs_copy = [], []
    for i, c in enumerate(data.copies):
        g = stains[i].astype(np.float64)
        th, phi = c.tilt_angles_deg, prob.orientations_deg[i]
        ref = (build_projection_matrix(th, side, side, side) @ g.ravel()).reshape(th.size, side)
        back = ndimage.rotate(g, -phi, reshape=False, order=3, mode="constant")
        p = _project_slice(back, th + phi, side)
        errs.append(float(np.linalg.norm(p - ref) / np.linalg.norm(ref)))
        held = copy_op.background_part(i)(torch.from_numpy(g[:, None, :])).numpy()[:, 0, :]
        errs_copy.append(float(np.linalg.norm(held - ref) / np.linalg.norm(ref)))
    b = torch.from_numpy(np.ascontiguousarray(data.projections, dtype=np.float32))
    lines = [
        "relative projection error of one copy's box-filling stain, per copy:",
        "  particle-frame grid (stain rotated back, cubic splines): "
        + ", ".join(f"{e:.3f}" for e in errs),
        "  copy-frame background (B_i g_i, background_frame='copy'): "
        + ", ".join(f"{e:.1e}" for e in errs_copy),
    ]
    marks = [k for k in (5, 10, 20, 40, 80, 160) if k <= n_iter]
    for label, frame in (("particle-frame backgrounds", "particle"), ("copy-frame", "copy")):
        op = CRMOperator.from_data(data, background_frame=frame)
        trace = {}

        def cb(info, op=op, trace=trace):
            if info.iteration in marks:
                trace[info.iteration] = psnr_of(op, info.x, data)

        crm_sart(op, b, n_iter=n_iter, particle="last", callback=cb)
        lines.append(
            f"CRM-SART PSNR over iterations, project simulator ribosome N = 3 seed 0 ({label}): "
            + ", ".join(f"it {k}: {v:.2f}" for k, v in trace.items())
        )
    return "\n".join(lines)


def converged_check(seeds: int) -> list[str]:
    lines = [
        "| seed | CRM it 20 | CRM it 80 | CRM it 320 | M-AVG it 20 | M-AVG it 80 | M-AVG it 320 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for seed in range(seeds):
        prob = make_2d(
            "ribosome", 3, seed=seed, orientation="even", stain="project", frame="particle"
        )
        op = CRMOperator.from_data(prob.data)
        trace = {}

        def cb(info, op=op, prob=prob, trace=trace):
            if info.iteration in (20, 80, 320):
                trace[info.iteration] = psnr_of(op, info.x, prob.data)

        run_methods(prob.data, n_iter=320, baselines=False, crm_particle="last", callback=cb)
        mavg = {}
        for it in (20, 80, 320):
            imgs, _, _ = run_methods(prob.data, n_iter=it)
            mavg[it] = score_2d(imgs["M-AVG"], prob.data.truth, prob.data.support)["psnr"]
        lines.append(
            f"| {seed} | {trace[20]:.2f} | {trace[80]:.2f} | {trace[320]:.2f} | "
            f"{mavg[20]:.2f} | {mavg[80]:.2f} | {mavg[320]:.2f} |"
        )
    return lines


def band_check() -> list[str]:
    prob = make_2d("ribosome", 11, seed=0)
    imgs, _, _ = run_methods(prob.data)
    t = prob.data.truth[:, 0, :].astype(np.float64)
    m = prob.data.support[:, 0, :]
    n = t.shape[0]
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    bands = [(0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.75)]
    lines = [
        "| method | PSNR | "
        + " | ".join(f"{lo}–{hi}" for lo, hi in bands)
        + " | total error energy |",
        "| --- | ---: |" + " ---: |" * (len(bands) + 1),
    ]
    truth_e = np.abs(np.fft.fft2(t)) ** 2
    lines.append(
        "| truth (signal) | – | "
        + " | ".join(
            f"{truth_e[(f >= lo) & (f < hi)].sum() / truth_e.sum():.3f}" for lo, hi in bands
        )
        + " | – |"
    )
    for k in ("M-AVG", "CRM"):
        x = normalize_intensity(imgs[k][:, 0, :], t, "affine", mask=m) * m
        e = np.abs(np.fft.fft2(x - t * m)) ** 2
        lines.append(
            f"| {k} | {score_2d(imgs[k], prob.data.truth, prob.data.support)['psnr']:.2f} | "
            + " | ".join(f"{e[(f >= lo) & (f < hi)].sum() / e.sum():.2f}" for lo, hi in bands)
            + f" | {e.sum():.3g} |"
        )
    return lines


def other_map_check(seeds: int) -> list[str]:
    if not EMD_5170.is_file():
        return [f"skipped: {EMD_5170} not found"]
    saved = common.RIBOSOME_MAP
    common.RIBOSOME_MAP = EMD_5170
    lines = ["| N | " + " | ".join(METHODS) + " |", "| ---: |" + " ---: |" * len(METHODS)]
    try:
        for n in (3, 11):
            acc: dict[str, list[float]] = {k: [] for k in METHODS}
            for seed in range(seeds):
                prob = make_2d("ribosome", n, seed=seed)
                imgs, _, _ = run_methods(prob.data)
                for k in METHODS:
                    acc[k].append(score_2d(imgs[k], prob.data.truth, prob.data.support)["psnr"])
            lines.append(f"| {n} | " + " | ".join(fmt(acc[k]) for k in METHODS) + " |")
    finally:
        common.RIBOSOME_MAP = saved
    return lines


def noise_check() -> list[str]:
    prob = make_2d("ribosome", 11, seed=0, snr=1.0)
    op = CRMOperator.from_data(prob.data)
    b = torch.from_numpy(np.ascontiguousarray(prob.data.projections, dtype=np.float32))
    sart_trace, sirt_trace = {}, {}

    def cb(info):
        if info.iteration in (1, 2, 5, 10, 20, 40):
            sart_trace[info.iteration] = psnr_of(op, info.x, prob.data)

    def cb2(info):
        if info.iteration in (10, 20, 40, 80, 120, 200):
            sirt_trace[info.iteration] = psnr_of(op, info.x, prob.data)

    crm_sart(op, b, n_iter=40, particle="mean", callback=cb)
    crm_sirt(op, b, n_iter=200, callback=cb2)
    return [
        "CRM-SART (λ 0.2, particle='mean'): "
        + ", ".join(f"it {k}: {v:.2f}" for k, v in sart_trace.items()),
        "CRM-SIRT (λ 1): " + ", ".join(f"it {k}: {v:.2f}" for k, v in sirt_trace.items()),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--frame-only", action="store_true", help="only check 1 (about 1 minute)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print_config(
        "results_crm_diagnostics",
        {
            "data": "ribosome 200² (r 65), ±50° at 3°; sets as in benchmarks/results_crm_common.py",
            "SART": "λ 0.2, zeros start, random view order; PSNR affine-normalised inside the support",
            "seeds": args.seeds,
        },
    )
    t0 = time.perf_counter()
    print("\n## 1. Folded background frame (project simulator)\n")
    frame = frame_check()
    print(frame)
    if args.frame_only:
        print(f"\nwall time {time.perf_counter() - t0:.0f} s")
        print("diagnostics: " + frame.splitlines()[2].strip())
        return
    print(
        "\n## 2. Authors' geometry, project's strong stain, N = 3: run to 320 iterations (PSNR dB)\n"
    )
    conv = converged_check(args.seeds)
    print("\n".join(conv))
    print("\n## 3. Error energy by band (cycles/pixel), authors' ribosome set-up, N = 11, seed 0\n")
    bands = band_check()
    print("\n".join(bands))
    print(
        "\n## 4. Slice of EMD-5170 (100³) in place of the 65³ ribosome, authors' set-up (PSNR dB)\n"
    )
    print("\n".join(other_map_check(args.seeds)))
    print("\n## 5. SNR 1, N = 11, seed 0: the particle's PSNR over the iterations\n")
    noise = noise_check()
    print("\n".join(noise))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    crm_hi = float(bands[-1].split("|")[-3])
    mavg_hi = float(bands[-2].split("|")[-3])
    print(
        f"diagnostics: share of error energy above 0.2 cycles/px at N = 11, CRM {crm_hi:.2f} vs M-AVG {mavg_hi:.2f}"
    )


if __name__ == "__main__":
    main()
