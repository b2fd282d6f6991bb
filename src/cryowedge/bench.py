"""Side-by-side benchmarks (``cryowedge bench``): our projector/FBP vs ASTRA's CPU FBP.

Figures are ratios measured in one run (the machines are shared and noisy). GUPS is
10⁹ voxel-angle updates per second: ``nz·ny·nx·n_tilts / seconds``. ASTRA is optional and
only its 2D CPU algorithms are called (its 3D calls need a GPU and abort the interpreter
without one).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp

__all__ = ["bench_projector", "astra_fbp_slices", "fbp_peak_memory"]

logger = logging.getLogger(__name__)


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def astra_fbp_slices(aligned: np.ndarray, angles_deg: np.ndarray, nz: int) -> tuple[np.ndarray, float] | None:
    """ASTRA 2D CPU FBP (``linear`` projector, Ram-Lak), one XZ slice at a time.

    ``aligned`` is ``(n_tilts, ny, n_perp)``. Returns ``(volume (ny, nz, nx), seconds)`` (in our
    orientation: ASTRA's rows are flipped to our ``z``) or
    None when ``astra`` is not installed.
    """
    try:
        import astra
    except ImportError:
        return None
    n_t, ny, n_perp = aligned.shape
    vol_geom = astra.create_vol_geom(nz, n_perp)
    proj_geom = astra.create_proj_geom("parallel", 1.0, n_perp, np.deg2rad(angles_deg))
    projector = astra.create_projector("linear", proj_geom, vol_geom)
    out = np.empty((ny, nz, n_perp), np.float32)
    t0 = time.perf_counter()
    for y in range(ny):
        sino_id = astra.data2d.create("-sino", proj_geom, np.ascontiguousarray(aligned[:, y, :]))
        rec_id = astra.data2d.create("-vol", vol_geom, 0)
        cfg = astra.astra_dict("FBP")
        cfg.update(ProjectorId=projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id,
                   FilterType="Ram-Lak")
        alg = astra.algorithm.create(cfg)
        astra.algorithm.run(alg)
        # ASTRA's volume rows run opposite to our z (measured: correlation 0.99 after the flip)
        out[y] = astra.data2d.get(rec_id)[::-1]
        astra.algorithm.delete(alg)
        astra.data2d.delete([sino_id, rec_id])
    seconds = time.perf_counter() - t0
    astra.projector.delete(projector)
    return out, seconds


def bench_projector(
    size: int = 256,
    n_tilts: int = 61,
    *,
    repeats: int = 3,
    device: str = "cpu",
    with_astra: bool = True,
    report: Callable[[str], None] = print,
) -> dict[str, float]:
    """Time forward/back-projection and FBP of a ``size³`` volume with ``n_tilts`` tilts (±60°).

    Calls ``report`` with one line per figure; the last line is
    ``fbp_speedup_vs_astra: N`` (or ``fbp_speedup_vs_astra: n/a`` without ASTRA).
    """
    dev = torch.device(device)
    angles = np.linspace(-60.0, 60.0, n_tilts)
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=(size, size))
    t0 = time.perf_counter()
    op = TiltProjector(geom, (size, size, size))
    vol = torch.rand(size, size, size, device=dev)
    setup = time.perf_counter() - t0
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    proj = op(vol)
    op.T(proj)  # warm-up: moves the matrices to the device
    sync()

    def fwd() -> None:
        op(vol)
        sync()

    def bwd() -> None:
        op.T(proj)
        sync()

    updates = float(size) ** 3 * n_tilts
    t_fwd = _median_time(fwd, repeats)
    t_bwd = _median_time(bwd, repeats)
    data = proj.cpu().numpy()

    def ours() -> None:
        fbp(data, geom, volume_shape=(size, size, size), projector=op, padding="zero", device=dev)
        sync()

    t_fbp = _median_time(ours, repeats)
    result = {
        "setup_s": setup,
        "forward_s": t_fwd,
        "backproject_s": t_bwd,
        "forward_gups": updates / t_fwd / 1e9,
        "backproject_gups": updates / t_bwd / 1e9,
        "fbp_s": t_fbp,
    }
    report(f"volume {size}^3, {n_tilts} tilts (+-60 deg), device {dev}, torch threads {torch.get_num_threads()}")
    report(f"projector setup (one-off, cached per geometry): {setup:.2f} s")
    report(f"forward_projection: {t_fwd:.3f} s = {result['forward_gups']:.2f} GUPS")
    report(f"back_projection: {t_bwd:.3f} s = {result['backproject_gups']:.2f} GUPS")
    report(f"cryowedge_fbp: {t_fbp:.3f} s")
    astra_result = astra_fbp_slices(data, angles, size) if with_astra else None
    if astra_result is None:
        report("astra_fbp: not installed (pip install astra-toolbox)")
        report("fbp_speedup_vs_astra: n/a")
        return result
    rec_astra, t_astra = astra_result
    ours_vol = fbp(data, geom, volume_shape=(size, size, size), projector=op, padding="zero").cpu().numpy()
    corr = float(np.corrcoef(ours_vol.transpose(1, 0, 2).ravel(), rec_astra.ravel())[0, 1])
    result.update(astra_fbp_s=t_astra, fbp_speedup_vs_astra=t_astra / t_fbp, correlation_with_astra=corr)
    report(f"astra_fbp (2D CPU linear, slice by slice): {t_astra:.3f} s")
    report(f"correlation cryowedge vs astra FBP: {corr:.4f}")
    report(f"fbp_speedup_vs_astra: {t_astra / t_fbp:.1f}")
    return result


def fbp_peak_memory(size: int = 512, n_tilts: int = 61) -> float:
    """Peak resident memory (GB) of a fresh process that runs a ``size³`` FBP."""
    import subprocess
    import sys

    code = (
        "import resource, numpy as np, torch\n"
        "from cryowedge.geometry.tilt import TiltGeometry\n"
        "from cryowedge.recon.fbp import fbp\n"
        f"g = TiltGeometry(tilt_angles_deg=np.linspace(-60, 60, {n_tilts}), detector_shape=({size}, {size}))\n"
        f"data = np.random.default_rng(0).random(({n_tilts}, {size}, {size}), dtype=np.float32)\n"
        f"vol = fbp(data, g, volume_shape=({size}, {size}, {size}))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])
