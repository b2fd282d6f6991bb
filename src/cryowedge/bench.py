"""Side-by-side benchmarks (``cryowedge bench``): our projector/FBP/SIRT vs ASTRA's CPU ones.

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
from cryowedge.solvers import sirt

__all__ = [
    "bench_projector",
    "bench_scale",
    "bench_iterative",
    "astra_fbp_slices",
    "astra_sirt_slices",
    "fbp_peak_memory",
]

logger = logging.getLogger(__name__)


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _astra_2d_slices(
    aligned: np.ndarray,
    angles_deg: np.ndarray,
    nz: int,
    slice_indices: np.ndarray | list[int],
    algorithm: str,
    *,
    n_iter: int = 1,
    options: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[np.ndarray, float] | None:
    """Run an ASTRA 2D CPU algorithm (``linear`` projector) on chosen XZ slices, one at a time.

    ``aligned`` is ``(n_tilts, ny, n_perp)``. Returns ``(slices (K, nz, n_perp), seconds)``
    in our orientation (ASTRA's rows flipped to our ``z``; seconds cover the K slices,
    not the one-off projector creation), or None when ``astra`` is not installed.
    """
    try:
        import astra
    except ImportError:
        return None
    n_perp = aligned.shape[2]
    indices = [int(i) for i in slice_indices]
    vol_geom = astra.create_vol_geom(nz, n_perp)
    proj_geom = astra.create_proj_geom("parallel", 1.0, n_perp, np.deg2rad(angles_deg))
    projector = astra.create_projector("linear", proj_geom, vol_geom)
    out = np.empty((len(indices), nz, n_perp), np.float32)
    t0 = time.perf_counter()
    for k, y in enumerate(indices):
        sino_id = astra.data2d.create("-sino", proj_geom, np.ascontiguousarray(aligned[:, y, :]))
        rec_id = astra.data2d.create("-vol", vol_geom, 0)
        cfg = astra.astra_dict(algorithm)
        cfg.update(
            ProjectorId=projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id, **config
        )
        if options:
            cfg["option"] = dict(options)
        alg = astra.algorithm.create(cfg)
        astra.algorithm.run(alg, n_iter)
        # ASTRA's volume rows run opposite to our z (measured: correlation 0.99 after the flip)
        out[k] = astra.data2d.get(rec_id)[::-1]
        astra.algorithm.delete(alg)
        astra.data2d.delete([sino_id, rec_id])
        logger.debug("ASTRA %s slice %d/%d (y=%d) done", algorithm, k + 1, len(indices), y)
    seconds = time.perf_counter() - t0
    astra.projector.delete(projector)
    return out, seconds


def astra_fbp_slices(
    aligned: np.ndarray, angles_deg: np.ndarray, nz: int
) -> tuple[np.ndarray, float] | None:
    """ASTRA 2D CPU FBP (``linear`` projector, Ram-Lak), one XZ slice at a time.

    ``aligned`` is ``(n_tilts, ny, n_perp)``. Returns ``(volume (ny, nz, nx), seconds)`` (in our
    orientation: ASTRA's rows are flipped to our ``z``) or
    None when ``astra`` is not installed.
    """
    return _astra_2d_slices(
        aligned, angles_deg, nz, range(aligned.shape[1]), "FBP", FilterType="Ram-Lak"
    )


#: Prefix of the lines that announce a phase as it starts (``"... building the projector"``);
#: figure lines never start with it.
PHASE_PREFIX = "... "


def _phase(report: Callable[[str], None], what: str) -> None:
    """Announce a phase before it runs, so a long benchmark is never silent."""
    report(PHASE_PREFIX + what)


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

    Calls ``report`` with one line per figure, and with a line starting with
    :data:`PHASE_PREFIX` as each phase starts; the last line is
    ``fbp_speedup_vs_astra: N`` (or ``fbp_speedup_vs_astra: n/a`` without ASTRA).
    """
    dev = torch.device(device)
    angles = np.linspace(-60.0, 60.0, n_tilts)
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=(size, size))
    report(
        f"volume {size}^3, {n_tilts} tilts (+-60 deg), device {dev}, "
        f"torch threads {torch.get_num_threads()}"
    )
    _phase(report, "building the projector (one-off)")
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
    _phase(report, f"timing forward and back-projection ({repeats} repeats each)")
    t_fwd = _median_time(fwd, repeats)
    t_bwd = _median_time(bwd, repeats)
    data = proj.cpu().numpy()

    def ours() -> None:
        fbp(data, geom, volume_shape=(size, size, size), projector=op, padding="zero", device=dev)
        sync()

    _phase(report, f"timing our FBP ({repeats} repeats)")
    t_fbp = _median_time(ours, repeats)
    result = {
        "setup_s": setup,
        "forward_s": t_fwd,
        "backproject_s": t_bwd,
        "forward_gups": updates / t_fwd / 1e9,
        "backproject_gups": updates / t_bwd / 1e9,
        "fbp_s": t_fbp,
    }
    report(f"projector setup (one-off, cached per geometry): {setup:.2f} s")
    report(f"forward_projection: {t_fwd:.3f} s = {result['forward_gups']:.2f} GUPS")
    report(f"back_projection: {t_bwd:.3f} s = {result['backproject_gups']:.2f} GUPS")
    report(f"cryowedge_fbp: {t_fbp:.3f} s")
    if with_astra:
        _phase(report, f"ASTRA 2D CPU FBP on all {size} XZ slices")
    astra_result = astra_fbp_slices(data, angles, size) if with_astra else None
    if astra_result is None:
        report("astra_fbp: not installed (pip install astra-toolbox)")
        report("fbp_speedup_vs_astra: n/a")
        return result
    rec_astra, t_astra = astra_result
    ours_vol = (
        fbp(data, geom, volume_shape=(size, size, size), projector=op, padding="zero").cpu().numpy()
    )
    corr = float(np.corrcoef(ours_vol.transpose(1, 0, 2).ravel(), rec_astra.ravel())[0, 1])
    result.update(
        astra_fbp_s=t_astra, fbp_speedup_vs_astra=t_astra / t_fbp, correlation_with_astra=corr
    )
    report(f"astra_fbp (2D CPU linear, slice by slice): {t_astra:.3f} s")
    report(f"correlation cryowedge vs astra FBP: {corr:.4f}")
    report(f"fbp_speedup_vs_astra: {t_astra / t_fbp:.1f}")
    return result


def astra_sirt_slices(
    aligned: np.ndarray,
    angles_deg: np.ndarray,
    nz: int,
    n_iter: int,
    slice_indices: np.ndarray | list[int],
) -> tuple[np.ndarray, float] | None:
    """ASTRA 2D CPU SIRT (``linear`` projector, relaxation 1) on chosen XZ slices, one at a time.

    Same projector and geometry as :func:`astra_fbp_slices`; ASTRA's SIRT uses the same
    row/column-sum normalisation as :func:`cryowedge.solvers.sirt`, starts from zero and
    applies no constraints.

    Parameters
    ----------
    aligned
        Aligned tilt series ``(n_tilts, ny, n_perp)`` (line integrals in voxel units).
    angles_deg
        Tilt angles ``(n_tilts,)`` in degrees.
    nz
        Volume thickness (voxels); the slice is ``(nz, n_perp)``.
    n_iter
        SIRT iterations per slice.
    slice_indices
        Indices along the tilt axis ``y`` of the slices to reconstruct, ``(K,)``.

    Returns
    -------
    tuple or None
        ``(slices (K, nz, n_perp) in our orientation, seconds)`` (ASTRA's rows flipped to our
        ``z``; seconds cover all K slices, excluding the one-off projector creation), or None
        when ``astra`` is not installed.
    """
    # relaxation explicit: our sirt runs with relaxation 1 too
    return _astra_2d_slices(aligned, angles_deg, nz, slice_indices, "SIRT", n_iter=n_iter,
                            options={"Relaxation": 1.0})


def _smooth_phantom(
    size: int, device: torch.device, n_blobs: int = 16, seed: int = 0
) -> torch.Tensor:
    """Sum of separable Gaussian blobs inside the central sphere, ``(size, size, size)`` float32.

    Smooth on purpose: ours and ASTRA's ``linear`` projector differ at the highest
    frequencies, which a smooth object barely excites, so the correlation checks the solver.
    """
    rng = np.random.default_rng(seed)
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    vol = torch.zeros(size, size, size, dtype=torch.float32, device=device)
    for _ in range(n_blobs):
        direction = rng.normal(size=3)
        centre = direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.3) * size
        sigma = rng.uniform(0.04, 0.1) * size
        amplitude = rng.uniform(0.5, 1.0)
        gz, gy, gx = (torch.exp(-0.5 * ((coords - float(c)) / sigma) ** 2) for c in centre)
        vol.add_(amplitude * gz[:, None, None] * gy[None, :, None] * gx[None, None, :])
    return vol


def bench_iterative(
    size: int = 256,
    n_tilts: int = 61,
    n_iter: int = 100,
    *,
    astra_slices: int = 8,
    device: str = "cpu",
    with_astra: bool = True,
    report: Callable[[str], None] = print,
) -> dict[str, float]:
    """Time ``n_iter`` SIRT iterations on a ``size³`` volume vs ASTRA's 2D CPU SIRT by slices.

    The data are a smooth phantom projected with our :class:`TiltProjector` (``n_tilts``
    tilts over ±60°, no noise). Our SIRT runs on the whole volume (one warm-up iteration
    first; the one-off projector set-up is timed and reported separately). ASTRA's SIRT
    runs on ``astra_slices`` evenly spaced XZ slices and its time is extrapolated linearly
    to all ``size`` slices (slices are independent problems of equal cost).

    Parameters
    ----------
    size
        Volume edge in voxels; the volume is ``(size, size, size)``, the tilt series
        ``(n_tilts, size, size)``.
    n_tilts
        Number of tilts, evenly spaced over [-60°, 60°].
    n_iter
        SIRT iterations (relaxation 1) for both.
    astra_slices
        K, the number of XZ slices ASTRA reconstructs (clipped to ``size``).
    device
        Torch device for our SIRT (ASTRA always runs on the CPU).
    with_astra
        Compare with ASTRA if it is installed.
    report
        Called with one line per figure, and with a line starting with
        :data:`PHASE_PREFIX` as each phase starts (projector, SIRT, ASTRA); the last line
        is ``sirt_speedup_vs_astra: N``
        (or ``sirt_speedup_vs_astra: n/a`` without ASTRA).

    Returns
    -------
    dict
        ``setup_s``, ``sirt_s`` (seconds for ``n_iter`` iterations on the whole volume),
        ``sirt_s_per_slice``; with ASTRA also ``astra_sirt_slices_s`` (K slices),
        ``astra_sirt_s`` (extrapolated to all slices), ``astra_sirt_s_per_slice``,
        ``astra_slices``, ``correlation_with_astra`` (on the K slices) and
        ``sirt_speedup_vs_astra``.
    """
    if size < 1 or n_tilts < 1 or n_iter < 1 or astra_slices < 1:
        raise ValueError(
            "size, n_tilts, n_iter and astra_slices must be >= 1, got "
            f"{size}, {n_tilts}, {n_iter}, {astra_slices}."
        )
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    angles = np.linspace(-60.0, 60.0, n_tilts)
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=(size, size))
    report(
        f"volume {size}^3, {n_tilts} tilts (+-60 deg), {n_iter} SIRT iterations (relaxation 1), "
        f"device {dev}, torch threads {torch.get_num_threads()}"
    )
    _phase(report, "building the projector (one-off)")
    t0 = time.perf_counter()
    op = TiltProjector(geom, (size, size, size))
    setup = time.perf_counter() - t0
    report(f"projector setup (one-off, cached per geometry): {setup:.2f} s")
    _phase(report, "projecting a smooth phantom, SIRT warm-up (1 iteration)")
    phantom = _smooth_phantom(size, dev)
    data = op(phantom)
    # warm-up: moves the sparse matrices to the device and touches every code path once
    sirt(op, data, n_iter=1, relaxation=1.0)
    sync()
    logger.info("SIRT x%d on %d^3 (%d tilts), device %s", n_iter, size, n_tilts, dev)
    recon: list[torch.Tensor] = []

    def ours() -> None:
        recon.append(sirt(op, data, n_iter=n_iter, relaxation=1.0).x)
        sync()

    _phase(report, f"our SIRT, {n_iter} iterations on the whole volume")
    t_ours = _median_time(ours, 1)  # one repeat: n_iter iterations already average the noise
    result: dict[str, float] = {
        "setup_s": setup,
        "sirt_s": t_ours,
        "sirt_s_per_slice": t_ours / size,
    }
    report(f"cryowedge_sirt: {t_ours:.3f} s for all {size} slices = {t_ours / size:.4f} s/slice")
    k = min(int(astra_slices), size)
    # centres of K equal bins along y: evenly spaced and clear of the (empty) edge slices
    slices = np.unique(((np.arange(k) + 0.5) * size / k).astype(np.int64))
    aligned = data.cpu().numpy()
    if with_astra:
        _phase(
            report, f"ASTRA 2D CPU SIRT, {n_iter} iterations on {slices.size} of {size} XZ slices"
        )
    astra_result = astra_sirt_slices(aligned, angles, size, n_iter, slices) if with_astra else None
    if astra_result is None:
        missing = "not installed (pip install astra-toolbox)" if with_astra else "skipped"
        report(f"astra_sirt: {missing}")
        report("sirt_speedup_vs_astra: n/a")
        return result
    rec_astra, t_slices = astra_result
    k = slices.size
    t_astra = t_slices * size / k  # slices are independent problems of equal cost
    ours_slices = recon[0][:, torch.as_tensor(slices, device=dev), :].permute(1, 0, 2).cpu().numpy()
    corr = float(np.corrcoef(ours_slices.ravel(), rec_astra.ravel())[0, 1])
    speedup = t_astra / t_ours
    result.update(
        astra_sirt_slices_s=t_slices,
        astra_sirt_s=t_astra,
        astra_sirt_s_per_slice=t_slices / k,
        astra_slices=float(k),
        correlation_with_astra=corr,
        sirt_speedup_vs_astra=speedup,
    )
    report(
        f"astra_sirt (2D CPU linear, slice by slice): {t_slices:.3f} s for {k} slices "
        f"= {t_slices / k:.4f} s/slice"
    )
    report(f"astra_sirt total: {t_astra:.3f} s (extrapolated from {k} of {size} slices)")
    report(f"correlation cryowedge vs astra SIRT ({k} slices): {corr:.4f}")
    report(f"sirt_speedup_vs_astra: {speedup:.1f}")
    return result


def fbp_peak_memory(size: int = 512, n_tilts: int = 61) -> float:
    """Peak resident memory (GB) of a fresh process that runs a ``size³`` FBP."""
    import subprocess
    import sys

    code = (
        "import resource, numpy as np, torch\n"
        "from cryowedge.geometry.tilt import TiltGeometry\n"
        "from cryowedge.recon.fbp import fbp\n"
        f"g = TiltGeometry(tilt_angles_deg=np.linspace(-60, 60, {n_tilts}), "
        f"detector_shape=({size}, {size}))\n"
        f"data = np.random.default_rng(0).random(({n_tilts}, {size}, {size}), dtype=np.float32)\n"
        f"vol = fbp(data, g, volume_shape=({size}, {size}, {size}))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- bench scale

#: Named problem sizes of ``bench scale``: ``(nz, ny, nx)`` volume, detector ``(ny, nx)``.
SCALE_SIZES: dict[str, tuple[int, int, int]] = {
    "k3": (300, 1023, 1440),  # bin-4 K3 (5760 × 4092 → 1440 × 1023), thickness 300
}
#: The default streamed case: a 2.1 GB volume, more than the 2 GB address space it runs in.
STREAMED_SHAPE = (128, 8192, 512)


def parse_scale_size(spec: str) -> tuple[int, int, int]:
    """``"256"`` → ``(256, 256, 256)``, ``"k3"`` → ``(300, 1023, 1440)``, ``"64x512x128"`` → as
    given."""
    text = str(spec).strip().lower()
    if text in SCALE_SIZES:
        return SCALE_SIZES[text]
    parts = text.split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 1:
        dims = dims * 3
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(
            f"size {spec!r} must be N (a cube), NZxNYxNX or one of {', '.join(SCALE_SIZES)}."
        )
    return dims  # type: ignore[return-value]


def _scale_child(case: dict[str, Any]) -> dict[str, Any]:
    """Run one ``bench scale`` case in this (fresh) process; returns its timings."""
    from cryowedge.io.mrc import open_mrc_lazy
    from cryowedge.workflows.streaming import method_slab_runner, plan_slab_rows, stream_reconstruct

    if case.get("probe"):  # what the interpreter, torch and cryowedge cost before any work
        import cryowedge.workflows.streaming  # noqa: F401

        with open("/proc/self/status") as handle:
            vm = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
        return {"seconds": 0.0, "vm_size_gb": vm / 1e9}
    nz, ny, nx = case["shape"]
    geom = TiltGeometry(
        tilt_angles_deg=np.linspace(-60.0, 60.0, case["n_tilts"]), detector_shape=(ny, nx)
    )
    options = {"n_iter": case["sirt_iter"]} if case["method"] == "sirt" else {}
    if case.get("input"):  # streamed: lazily read stack → MRC output
        series = open_mrc_lazy(case["input"])
        rows = case.get("slab_rows") or plan_slab_rows(
            (nz, ny, nx), geom.n_tilts, nx, case["method"]
        )
        rows = rows or ny
        t0 = time.perf_counter()
        stream_reconstruct(series, geom, (nz, ny, nx), case["output"],
                           method_slab_runner(case["method"], **options), slab_rows=rows)
        return {"seconds": time.perf_counter() - t0, "slab_rows": rows}
    # As `cryowedge reconstruct` does by default: in memory, unless the estimate exceeds the
    # memory budget; then streamed (from the array) into an MRC file.
    data = np.random.default_rng(0).random((geom.n_tilts, ny, nx), dtype=np.float32)
    rows = plan_slab_rows((nz, ny, nx), geom.n_tilts, nx, case["method"])
    runner = method_slab_runner(case["method"], **options)
    t0 = time.perf_counter()
    if rows is None:
        runner(data, geom, (nz, ny, nx))
        return {"seconds": time.perf_counter() - t0}
    stream_reconstruct(data, geom, (nz, ny, nx), case["output"], runner, slab_rows=rows)
    return {"seconds": time.perf_counter() - t0, "slab_rows": rows}


def _run_case(case: dict[str, Any], address_space_bytes: int | None = None) -> dict[str, Any]:
    """Run ``case`` in a fresh interpreter (optionally under ``RLIMIT_AS``); add its peak RSS."""
    import json
    import resource
    import subprocess
    import sys

    def limit() -> None:
        if address_space_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))

    # the child reports its own peak RSS (ru_maxrss, KiB on Linux) when it is done
    code = ("import json, resource, sys; from cryowedge.bench import _scale_child; "
            "r = _scale_child(json.loads(sys.argv[1])); "
            "r['peak_rss_gb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9; "
            "print(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(case)], capture_output=True,
                          text=True, preexec_fn=limit, check=False)
    if proc.returncode != 0:
        tail = (
            proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip()
            else f"exit code {proc.returncode}"
        )
        raise RuntimeError(f"bench scale case {case} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_random_stack(path: Any, n_tilts: int, ny: int, nx: int) -> None:
    """A ``(n_tilts, ny, nx)`` float32 MRC stack of uniform noise, written image by image."""
    from cryowedge.io.mrc import MrcSlabWriter

    with MrcSlabWriter(path, (n_tilts, ny, nx)) as writer:
        for t in range(n_tilts):
            image = np.random.default_rng(t).random((ny, nx), dtype=np.float32)
            writer.write_sections(t, image[None])


def bench_scale(
    sizes: tuple[str, ...] | list[str] = ("256", "512", "k3"),
    *,
    methods: tuple[str, ...] | list[str] = ("fbp", "sirt"),
    n_tilts: int = 61,
    sirt_iter: int = 20,
    streamed_shape: tuple[int, int, int] = STREAMED_SHAPE,
    address_space_gb: float | None = 2.0,
    slab_rows: int | None = None,
    check_rows: int = 48,
    workdir: Any = None,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time and peak RSS of in-memory FBP/SIRT by size, and of a streamed reconstruction.

    Every case runs in a fresh interpreter, so its peak resident size (``ru_maxrss``) is its
    own. Default cases: ``n_tilts`` tilts over ±60° of uniform noise (timing only), volume
    of each of ``sizes`` (see :func:`parse_scale_size`), FBP and SIRT with ``sirt_iter``
    iterations, run as ``cryowedge reconstruct`` does by default: in memory when the memory
    estimate fits the budget (:func:`~cryowedge.workflows.streaming.plan_slab_rows`), else
    streamed in slabs (the note says which). Streamed case: a noise stack of
    ``(n_tilts, ny, nx)`` for ``streamed_shape = (nz, ny, nx)`` written to an MRC file in
    ``workdir`` (default: a temporary directory, removed), reconstructed with streamed FBP into
    an MRC file by a process limited to ``address_space_gb`` of address space (``RLIMIT_AS``,
    as ``ulimit -v``); then the same with a quarter of ``ny`` and the same slab height, to show
    that the peak RSS does not grow with ``y``. The streamed output is compared on
    ``check_rows`` rows (not aligned with the slabs) with an in-memory FBP of those rows.

    Parameters
    ----------
    sizes
        In-memory problem sizes (``"256"``, ``"512"``, ``"k3"``, ``"64x512x128"``); empty for none.
    methods
        ``fbp`` and/or ``sirt``.
    n_tilts, sirt_iter
        Tilts over ±60°; SIRT iterations.
    streamed_shape
        ``(nz, ny, nx)`` of the streamed volume; None-like ``(0, 0, 0)`` skips it.
    address_space_gb
        ``RLIMIT_AS`` of the streamed process (GB); None for no limit.
    slab_rows
        Slab height; default :func:`~cryowedge.workflows.streaming.plan_slab_rows` inside the
        limited process (from the address space it has left).
    check_rows
        Rows of the streamed volume recomputed in memory for the comparison.
    workdir
        Where the streamed input and outputs go.
    report
        Called with each table line, and with a line starting with :data:`PHASE_PREFIX`
        before each case runs; the last is ``streamed_peak_rss_gb: N`` (the full-size
        streamed case) or ``streamed_peak_rss_gb: n/a``.

    Returns
    -------
    dict
        ``rows`` (one dict per case) and, when streamed, ``streamed_max_rel_diff``,
        ``streamed_peak_rss_gb``, ``streamed_volume_gb``.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from cryowedge.io.mrc import open_mrc_lazy
    from cryowedge.workflows.streaming import method_slab_runner

    for method in methods:
        if method not in ("fbp", "sirt"):
            raise ValueError(f"bench scale methods are fbp and sirt, got {method!r}.")
    shapes = [(str(spec), parse_scale_size(spec)) for spec in sizes]
    rows: list[dict[str, Any]] = []
    header = (
        f"{'case':<34} {'method':<8} {'volume (z,y,x)':<18} {'tilts':>5} {'seconds':>9} "
        f"{'peak_rss_gb':>11}  note"
    )
    report(f"bench scale: torch threads {torch.get_num_threads()}, each case in a fresh process")
    _phase(report, "measuring the interpreter's own footprint")
    probe = _run_case({"probe": True}, None)
    report(f"interpreter + torch + cryowedge import: {probe['vm_size_gb']:.2f} GB address space, "
           f"{probe['peak_rss_gb']:.2f} GB RSS")
    report(header)

    def line(
        case: str, method: str, shape: tuple[int, int, int], res: dict[str, Any], note: str = ""
    ) -> None:
        rows.append({"case": case, "method": method, "shape": shape, **res, "note": note})
        report(f"{case:<34} {method:<8} {'x'.join(map(str, shape)):<18} {n_tilts:>5} "
               f"{res['seconds']:>9.2f} {res['peak_rss_gb']:>11.2f}  {note}".rstrip())

    folder = Path(tempfile.mkdtemp(prefix="cryowedge-scale-", dir=workdir))
    try:
        for spec, shape in shapes:
            for method in methods:
                case = {
                    "shape": shape,
                    "n_tilts": n_tilts,
                    "method": method,
                    "sirt_iter": sirt_iter,
                    "output": str(folder / f"default_{spec}_{method}.mrc"),
                }
                label = f"{method}-{sirt_iter}" if method == "sirt" else method
                _phase(report, f"default {spec} {label}")
                res = _run_case(case)
                note = (f"streamed automatically, slabs of {res['slab_rows']} rows"
                        if "slab_rows" in res else "in memory")
                line(f"default {spec}", label, shape, res, note)
        result: dict[str, Any] = {"rows": rows}
        nz, ny, nx = (int(s) for s in streamed_shape)
        if min(nz, ny, nx) < 1:
            report("streamed_peak_rss_gb: n/a")
            return result
        limit = None if address_space_gb is None else int(address_space_gb * 1e9)
        limit_note = "no limit" if limit is None else f"RLIMIT_AS {address_space_gb:g} GB"
        volume_gb = nz * ny * nx * 4 / 1e9
        small_ny = max(1, ny // 4)
        outcomes = {}
        for rows_y in dict.fromkeys((ny, small_ny)):
            src, dst = folder / f"input_{rows_y}.mrc", folder / f"output_{rows_y}.mrc"
            _write_random_stack(src, n_tilts, rows_y, nx)
            case = {"shape": (nz, rows_y, nx), "n_tilts": n_tilts, "method": "fbp", "sirt_iter": 0,
                    "input": str(src), "output": str(dst), "slab_rows": slab_rows}
            if rows_y != ny:  # the slabs planned for the full height, so only y differs
                case["slab_rows"] = min(rows_y, outcomes[ny]["slab_rows"])
            _phase(report, f"streamed y={rows_y} fbp")
            res = _run_case(case, limit)
            outcomes[rows_y] = res
            gb = nz * rows_y * nx * 4 / 1e9
            line(f"streamed y={rows_y} ({limit_note})", "fbp", (nz, rows_y, nx), res,
                 f"volume {gb:.2f} GB, slabs of {res['slab_rows']} rows")
        # the streamed result against an in-memory FBP of some rows (not slab-aligned)
        _phase(report, f"in-memory FBP of {min(check_rows, ny)} rows for the comparison")
        k = min(check_rows, ny)
        y0 = max(0, min(ny - k, ny // 2 - k // 2 + 3))
        series = open_mrc_lazy(folder / f"input_{ny}.mrc")[:, y0 : y0 + k]
        geom = TiltGeometry(
            tilt_angles_deg=np.linspace(-60.0, 60.0, n_tilts), detector_shape=(k, nx)
        )
        ref = method_slab_runner("fbp")(series, geom, (nz, k, nx))
        got = open_mrc_lazy(folder / f"output_{ny}.mrc")[:, y0 : y0 + k]
        rel = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))
        grow = outcomes[ny]["peak_rss_gb"] - outcomes[small_ny]["peak_rss_gb"]
        report(f"streamed volume {volume_gb:.2f} GB vs {limit_note}; rows {y0}:{y0 + k} equal the "
               f"in-memory FBP to max |diff| / max |ref| = {rel:.1e}")
        report(f"peak RSS y={ny} minus y={small_ny} (same slabs): {grow:+.3f} GB")
        result.update(streamed_max_rel_diff=rel, streamed_peak_rss_gb=outcomes[ny]["peak_rss_gb"],
                      streamed_volume_gb=volume_gb, streamed_rss_growth_gb=grow)
        report(f"streamed_peak_rss_gb: {outcomes[ny]['peak_rss_gb']:.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result
