"""Speed of the SPA operators and of peers, side by side (``cryowedge bench spa``, Table 4.1).

Three parts, one process, float32 on the CPU with ``threads`` torch threads:

1. **Table 4.1** (:func:`bench_spa_table`): for each number of projections ``P`` the wall times of
   ``Hc``, ``Hᵀb``, the explicit ``HᵀHc`` (one forward and one adjoint), the Toeplitz kernel build
   and the fast ``HᵀHc`` (:class:`~cryowedge.spa.toeplitz.ToeplitzNormalOperator`), plus the fast
   ``Hᵀb`` (Theorem 2), at scale 1 with KBWF(4, 19, 2) and random poses
   (:func:`~cryowedge.spa.toeplitz.time_operators`). The explicit operators loop over the
   projections one by one (their cost is exactly linear in ``P``), so above ``explicit_max_p``
   they are not run but extrapolated from the largest measured ``P`` (marked ``~``). The
   fast operator's flatness in ``P`` is the ratio of its slowest to its fastest time over the
   ``P`` list. The speed-up is explicit / fast ``HᵀHc`` at ``P = 500`` (or the ``P`` closest to
   it), the thesis's 318× at 128³.
2. **Peers** (:func:`bench_spa_peers`): ``torch-fourier-slice`` and ``torch-projectors``
   (Fourier-slice projectors) and ASPIRE (NUFFT projector; optional, ``pip install
   cryowedge[bench-spa]``; each skipped with its import error when missing). All take matrices
   that map the *detector* frame to the map frame, i.e. the transpose ``Rᵀ`` of this project's
   RELION matrices (verified here on an asymmetric Gaussian-blob particle: the correlation of
   their projections with ours is reported for ``R`` and ``Rᵀ``). Their volume is the voxel
   sampling of our blob model (:func:`~cryowedge.spa.basis.expand` of the coefficients);
   ``torch-projectors`` is fed a 2×-padded volume (oversampling 2). Timed: forward projection,
   the exact adjoint of that forward (autograd; ASPIRE's ``backproject`` is exact), and their
   own back-projection (``backproject_2d_to_3d``: gridding with weight normalisation;
   ``backproject_2d_to_3d_forw``: Fourier insertion; ASPIRE: its adjoint), at ``peer_p``
   projections.
3. **Normal-equation solve** (:func:`bench_spa_solve`): the same data (projections of the
   particle in the generating basis KBWF(2, 10.8, 2), plus noise at SNR 10) solved by
   ``n_iter`` CG iterations on ``HᵀH c = Hᵀb`` — ours with the kernel build, the fast ``Hᵀb``
   and CG on the Toeplitz operator; each peer with its ``Hᵀb`` and CG on its forward + adjoint —
   all timed end to end; the correlation of each solution with the particle's voxel map is
   reported as a check that each solved something.

Timings on a shared machine vary; the ratios are measured side by side in one run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.spa.basis import RECONSTRUCTION_BLOB, SIMULATION_BLOB, expand
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.toeplitz import (
    ToeplitzNormalOperator,
    conjugate_gradient,
    fast_adjoint,
    time_operators,
)

__all__ = [
    "QUICK",
    "PEERS",
    "bench_spa",
    "bench_spa_table",
    "bench_spa_peers",
    "bench_spa_solve",
    "peer_forward",
]

logger = logging.getLogger(__name__)

#: ``--quick``: a check in seconds (16³, P = 5 and 10, peers at P = 10, 3 CG iterations).
QUICK: dict[str, Any] = {"size": 16, "projections": (5, 10), "peer_p": 10, "solve_iters": 3}

#: Peer packages (import name → pip name).
PEERS = {
    "torch_fourier_slice": "torch-fourier-slice",
    "torch_projectors": "torch-projectors",
    "aspire": "aspire",
}

#: How each peer's adjoint is formed (the torch peers by autograd; ASPIRE's ``backproject`` is
#: its exact adjoint, dot-product test in tests/test_spa_bench.py).
_ADJOINT_KIND = {
    "torch_fourier_slice": "autograd",
    "torch_projectors": "autograd",
    "aspire": "own, exact",
}

_OPS = ("forward", "adjoint", "normal_explicit", "kernel", "normal_fast", "adjoint_fast")
_EXPLICIT = ("forward", "adjoint", "normal_explicit")


def _check_positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two arrays (float64)."""
    a = a.detach().to(torch.float64).reshape(-1)
    b = b.detach().to(torch.float64).reshape(-1)
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else 0.0


def _best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ---------------------------------------------------------------------------- Table 4.1
def bench_spa_table(
    size: int = 64,
    projections: Sequence[int] = (50, 500, 5000),
    *,
    repeats: int = 1,
    explicit_max_p: int = 500,
    fast_adjoint_op: bool = True,
    seed: int = 0,
    report: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Thesis Table 4.1 at ``size³`` for each ``P``; see the module docstring.

    Parameters
    ----------
    size : int
        Volume (and coefficient grid) edge ``n`` in voxels; detector ``n × n``.
    projections : sequence of int
        Numbers of projections ``P``.
    repeats : int
        Timed repeats of each operation (the shortest is kept).
    explicit_max_p : int
        Largest ``P`` at which ``Hc``, ``Hᵀb`` and the explicit ``HᵀHc`` are run; above it their
        times are extrapolated linearly from the largest measured ``P``.
    fast_adjoint_op : bool
        Also time the fast ``Hᵀb`` (Theorem 2).
    seed : int
        Seed of the poses and data.
    report : callable or None
        Receives the Markdown table line by line.

    Returns
    -------
    dict
        ``rows``: one dict per ``P`` (seconds per operation, ``extrapolated``: the explicit
        operations not run), ``speedup``, ``speedup_p``, ``flatness`` (slowest / fastest fast
        ``HᵀHc`` over ``P``).
    """
    size = _check_positive(size, "size")
    ps = [_check_positive(p, "projections") for p in projections]
    if not ps:
        raise ValueError("projections must hold at least one P, e.g. 50,500,5000.")
    repeats = _check_positive(repeats, "repeats")
    explicit_max_p = _check_positive(explicit_max_p, "explicit_max_p")
    if report is not None:
        report(
            f"| P | Hc (s) | Hᵀb (s) | explicit HᵀHc (s) | kernel build (s) | fast HᵀHc (s) | "
            f"{'fast Hᵀb (s) | ' if fast_adjoint_op else ''}explicit / fast HᵀHc |"
        )
        report("|" + " ---: |" * (8 if fast_adjoint_op else 7))
    rows: list[dict[str, Any]] = []
    per_projection: dict[str, float] = {}
    for p in sorted(ps):
        run_explicit = p <= explicit_max_p
        ops = [op for op in _OPS if (run_explicit or op not in _EXPLICIT)]
        if not fast_adjoint_op:
            ops.remove("adjoint_fast")
        t = time_operators(size, p, repeats=repeats, seed=seed, operations=ops)
        row: dict[str, Any] = {"P": p, "extrapolated": not run_explicit}
        row.update({k: v for k, v in t.items() if k != "speedup"})
        if run_explicit:
            per_projection = {op: t[op] / p for op in _EXPLICIT}
        elif per_projection:
            row.update({op: per_projection[op] * p for op in _EXPLICIT})
        if "normal_explicit" in row and row["normal_fast"] > 0:
            row["speedup"] = row["normal_explicit"] / row["normal_fast"]
        rows.append(row)
        if report is not None:
            mark = "~" if row["extrapolated"] else ""

            def cell(op: str, row: dict[str, Any] = row, mark: str = mark) -> str:
                if op not in row:
                    return "—"
                m = mark if op in _EXPLICIT else ""
                return f"{m}{row[op]:.4g}"

            cells = ["forward", "adjoint", "normal_explicit", "kernel", "normal_fast"]
            if fast_adjoint_op:
                cells.append("adjoint_fast")
            sp = f"{mark}{row['speedup']:.0f}×" if "speedup" in row else "—"
            report(f"| {p} | " + " | ".join(cell(c) for c in cells) + f" | {sp} |")
    fast = [r["normal_fast"] for r in rows]
    flatness = max(fast) / min(fast) if min(fast) > 0 else float("nan")
    with_speedup = [r for r in rows if "speedup" in r]
    target = min(with_speedup, key=lambda r: (abs(r["P"] - 500), r["extrapolated"]), default=None)
    out = {
        "size": size,
        "rows": rows,
        "flatness": flatness,
        "speedup": target["speedup"] if target else float("nan"),
        "speedup_p": target["P"] if target else None,
        "speedup_extrapolated": bool(target["extrapolated"]) if target else None,
    }
    if report is not None:
        report(
            f"fast HᵀHc over P = {min(ps)}…{max(ps)}: slowest / fastest = {flatness:.2f} "
            f"(explicit grows ×{max(ps) / min(ps):.0f})"
        )
    return out


# ---------------------------------------------------------------------------- peers
def _import_quietly(name: str) -> Any:
    """Import a peer without letting it reconfigure this process's logging.

    ASPIRE's ``__init__`` calls ``logging.config.fileConfig``: it disables every logger that
    exists (``cryowedge.*`` included, which breaks ``caplog`` in the test suite), sets the root
    to DEBUG with a stdout handler, and opens a log file under ``./logs``. Here its
    configuration directory (``ASPIREDIR``, read by ``confuse``) points to a temporary one that
    sends the log file to a temporary folder and keeps ``sys.excepthook``, and the root
    logger's level and handlers and every logger's ``disabled`` flag are restored after the
    import.
    """
    import logging
    import os
    import sys
    import tempfile

    if name in sys.modules:
        return sys.modules[name]
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    disabled = {
        key: lg.disabled
        for key, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    env_before = os.environ.get("ASPIREDIR")
    if name == "aspire" and env_before is None:
        tmp = Path(tempfile.mkdtemp(prefix="cryowedge-aspire-"))
        (tmp / "config.yaml").write_text(
            f"logging:\n    log_dir: {(tmp / 'logs').as_posix()}\n    log_exceptions: 0\n"
        )
        os.environ["ASPIREDIR"] = str(tmp)
    try:
        return __import__(name)
    finally:
        if env_before is None:
            os.environ.pop("ASPIREDIR", None)
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)
        for key, lg in logging.Logger.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.disabled = disabled.get(key, False)


def _import_peer(name: str) -> tuple[Any, str | None]:
    try:
        module = _import_quietly(name)
    except Exception as exc:  # ImportError, or OSError from a compiled extension
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return module, None


def peer_forward(
    name: str, n: int, rotations: np.ndarray, *, transpose: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Real-space projector ``(n, n, n) volume → (P, n, n) images`` of a peer package.

    Parameters
    ----------
    name : {"torch_fourier_slice", "torch_projectors"}
        The peer (must be importable).
    n : int
        Volume edge (voxels; even for ``torch_projectors``).
    rotations : numpy.ndarray
        ``(P, 3, 3)`` RELION ZYZ matrices of this project (map → projection frame).
    transpose : bool
        Pass ``Rᵀ`` (the peers' convention, detector → map frame); ``False`` passes ``R`` as is
        (for the convention check).

    Returns
    -------
    callable
        A linear function of a float32 ``(n, n, n)`` tensor (differentiable: its autograd
        transpose is the exact adjoint).
    """
    import torch.nn.functional as F  # noqa: N812

    rot = np.asarray(rotations, dtype=np.float64)
    mats = torch.as_tensor(rot.transpose(0, 2, 1) if transpose else rot, dtype=torch.float32)
    if name == "aspire":
        _import_quietly("aspire")
        from aspire.volume import Volume

        m = mats.numpy()

        def forward_aspire(vol: torch.Tensor) -> torch.Tensor:
            v = Volume(vol.detach().cpu().numpy().astype(np.float32))
            return torch.tensor(np.array(v.project(m).asnumpy()))  # a writable copy

        return forward_aspire
    if name == "torch_fourier_slice":
        import torch_fourier_slice as tfs

        return lambda vol: tfs.project_3d_to_2d(vol, mats)
    if name == "torch_projectors":
        import torch_projectors as tp

        if n % 2:
            raise ValueError(f"torch_projectors needs an even size, got {n}.")
        pad = n // 2
        big = 2 * n

        def forward(vol: torch.Tensor) -> torch.Tensor:
            v = F.pad(vol, [pad] * 6)
            spec = torch.fft.rfftn(torch.fft.ifftshift(v), dim=(-3, -2, -1))
            out = tp.project_3d_to_2d_forw(
                spec[None], mats[None], output_shape=(n, n), oversampling=big / n
            )
            return torch.fft.fftshift(torch.fft.irfft2(out[0], s=(n, n)), dim=(-2, -1))

        return forward
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}.")


def _peer_backprojection(name: str, n: int, rotations: np.ndarray) -> Callable[[torch.Tensor], Any]:
    """The peer's own back-projection of ``(P, n, n)`` images (for the torch peers not the exact
    adjoint; ASPIRE's is)."""
    import torch.nn.functional as F  # noqa: N812

    mats = torch.as_tensor(np.asarray(rotations).transpose(0, 2, 1), dtype=torch.float32)
    if name == "aspire":
        _import_quietly("aspire")
        from aspire.image import Image

        m = mats.numpy()
        return lambda img: torch.tensor(  # a writable copy
            np.array(
                Image(img.detach().cpu().numpy().astype(np.float32)).backproject(m).asnumpy()[0]
            )
        )
    if name == "torch_fourier_slice":
        import torch_fourier_slice as tfs

        return lambda img: tfs.backproject_2d_to_3d(img, mats)
    import torch_projectors as tp

    def back(img: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft2(torch.fft.ifftshift(img, dim=(-2, -1)))
        data, _ = tp.backproject_2d_to_3d_forw(spec[None], mats[None], oversampling=1.0)
        return torch.fft.fftshift(torch.fft.irfftn(data[0], s=(n, n, n)))

    del F
    return back


def _peer_adjoint(
    name: str, n: int, rotations: np.ndarray, fwd: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Exact adjoint of a peer's forward: ASPIRE's ``backproject``, autograd for the others."""
    if name == "aspire":
        return _peer_backprojection(name, n, rotations)
    return _adjoint_of(fwd, n)


def _adjoint_of(fwd: Callable[[torch.Tensor], torch.Tensor], n: int) -> Callable:
    """Exact adjoint of a linear ``fwd`` by autograd (one recorded graph, reused)."""
    x = torch.zeros((n, n, n), dtype=torch.float32, requires_grad=True)
    y = fwd(x)

    def adjoint(b: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(y, x, b, retain_graph=True)
        return g

    return adjoint


def _test_particle(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric pseudo-particle: (coefficients, voxel map), each ``(n, n, n)`` float32."""
    from cryowedge.spa.refine_experiment import pseudo_particle

    c = torch.as_tensor(pseudo_particle(max(n, 8), rng=seed + 1)[:n, :n, :n])
    vol = expand(c, RECONSTRUCTION_BLOB)
    return c.float(), vol.float()


def bench_spa_peers(
    size: int = 64,
    n_proj: int = 500,
    *,
    repeats: int = 1,
    ours: dict[str, float] | None = None,
    n_check: int = 20,
    seed: int = 0,
    report: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Forward/adjoint time of the peers against ours at ``size³`` and ``n_proj``; correlation.

    Parameters
    ----------
    size, n_proj : int
        Volume edge and number of projections (the same for all).
    repeats : int
        Timed repeats (shortest kept).
    ours : dict, optional
        Our ``forward`` and ``adjoint`` seconds at this size and ``P`` (e.g. a Table 4.1 row;
        ``extrapolated: True`` marks them ``~``); measured here when missing.
    n_check : int
        Poses of the convention / correlation check.
    seed : int
        Seed of the poses.
    report : callable or None
        Receives the lines.

    Returns
    -------
    dict
        ``{peer: {"forward", "adjoint", "backprojection", "corr", "corr_untransposed"} or
        {"error": message}}`` plus ``"ours"``.
    """
    from cryowedge.geometry.rotations import random_rotations

    size = _check_positive(size, "size")
    n_proj = _check_positive(n_proj, "n_proj")
    rng = np.random.default_rng(seed + 7)
    rot = random_rotations(n_proj, rng)
    rot_check = random_rotations(_check_positive(n_check, "n_check"), rng)
    c, vol = _test_particle(size, seed)
    ref = SpaProjector(size, rot_check).forward(c)
    out: dict[str, Any] = {}
    if ours is None or "forward" not in ours or "adjoint" not in ours:
        proj = SpaProjector(size, rot)
        b = torch.randn(proj.range_shape, generator=torch.Generator().manual_seed(seed))
        ours = {
            "forward": _best(lambda: proj.forward(c), repeats),
            "adjoint": _best(lambda: proj.adjoint(b), repeats),
        }
    out["ours"] = dict(ours)
    if report is not None:
        report(
            f"| projector ({size}³, P = {n_proj}) | forward (s) | adjoint (s) | "
            "own back-projection (s) | corr. with ours (Rᵀ) | corr. (R, wrong convention) |"
        )
        report("| --- | ---: | ---: | ---: | ---: | ---: |")
        mark = "~" if ours.get("extrapolated") else ""
        report(
            f"| cryowedge blob H (KBWF 4, 19, 2) | {mark}{ours['forward']:.4g} | "
            f"{mark}{ours['adjoint']:.4g} | (adjoint) | 1 | — |"
        )
    for name, pip_name in PEERS.items():
        module, err = _import_peer(name)
        if module is None:
            out[name] = {"error": err}
            if report is not None:
                report(f"| {pip_name} | not available: {err} | | | | |")
            continue
        try:
            corr_t = _corr(peer_forward(name, size, rot_check)(vol), ref)
            corr_r = _corr(peer_forward(name, size, rot_check, transpose=False)(vol), ref)
            fwd = peer_forward(name, size, rot)
            with torch.no_grad():
                imgs = fwd(vol)  # also the warm-up call
                t_fwd = _best(lambda f=fwd: f(vol), repeats)
            adj = _peer_adjoint(name, size, rot, fwd)
            adj(imgs)  # warm-up (first autograd call)
            t_adj = _best(lambda a=adj, i=imgs: a(i), repeats)
            back = _peer_backprojection(name, size, rot)
            with torch.no_grad():
                back(imgs)  # warm-up
                t_back = _best(lambda bp=back, i=imgs: bp(i), repeats)
        except Exception as exc:  # a peer that imports but fails here is reported, not fatal
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            out[name] = {"error": msg}
            if report is not None:
                report(f"| {pip_name} | failed: {msg} | | | | |")
            continue
        out[name] = {
            "forward": t_fwd,
            "adjoint": t_adj,
            "backprojection": t_back,
            "corr": corr_t,
            "corr_untransposed": corr_r,
        }
        if report is not None:
            report(
                f"| {pip_name} | {t_fwd:.4g} | {t_adj:.4g} ({_ADJOINT_KIND[name]}) | "
                f"{t_back:.4g} | {corr_t:.5f} | {corr_r:.3f} |"
            )
    return out


# ---------------------------------------------------------------------------- solve
def bench_spa_solve(
    size: int = 64,
    n_proj: int = 500,
    *,
    n_iter: int = 20,
    snr: float = 10.0,
    explicit_seconds: dict[str, float] | None = None,
    seed: int = 0,
    report: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """``n_iter`` CG iterations on the normal equations: our Toeplitz path vs each peer.

    Parameters
    ----------
    size, n_proj : int
        Volume edge and number of projections.
    n_iter : int
        CG iterations (no early stop) for every solver.
    snr : float
        ``var(signal) / σ²`` of the Gaussian noise added to our projections of the particle.
    explicit_seconds : dict, optional
        Our explicit ``adjoint`` and ``normal_explicit`` seconds at this ``P`` (a Table 4.1 row):
        adds the estimated time of CG on the explicit ``H`` (not run).
    seed : int
        Seed of the poses and noise.
    report : callable or None
        Receives the lines.

    Returns
    -------
    dict
        ``{"ours": {...}, "<peer>": {...} or {"error": ...}}``, each with ``seconds``,
        ``setup_s`` (kernel + ``Hᵀb``, or ``Hᵀb``), ``per_iteration_s`` and ``corr`` (solution vs
        the particle's voxel map).
    """
    from cryowedge.geometry.rotations import random_rotations

    size = _check_positive(size, "size")
    n_proj = _check_positive(n_proj, "n_proj")
    n_iter = _check_positive(n_iter, "n_iter")
    rng = np.random.default_rng(seed + 11)
    rot = random_rotations(n_proj, rng)
    c_true, _ = _test_particle(size, seed)
    # Data from the generating basis KBWF(2, 10.8, 2) (no inverse crime; 4× cheaper footprints).
    vol_true = expand(c_true.to(torch.float64), SIMULATION_BLOB).float()
    clean = SpaProjector(size, rot, blob=SIMULATION_BLOB).forward(c_true)
    proj = SpaProjector(size, rot)
    sigma = float(clean.std()) / math.sqrt(snr)
    gen = torch.Generator().manual_seed(seed + 3)
    b = clean + sigma * torch.randn(clean.shape, generator=gen)
    out: dict[str, Any] = {}
    if report is not None:
        report(
            f"| normal-equation solve ({size}³, P = {n_proj}, {n_iter} CG iterations) | setup (s) "
            "| per iteration (s) | total (s) | corr. with particle |"
        )
        report("| --- | ---: | ---: | ---: | ---: |")
    t0 = time.perf_counter()
    normal = ToeplitzNormalOperator.from_projector(proj)
    atb = fast_adjoint(proj, b)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    x, _ = conjugate_gradient(normal, atb, n_iter=n_iter, tol=0.0)
    loop = time.perf_counter() - t1
    corr = _corr(expand(x.to(torch.float64), RECONSTRUCTION_BLOB), vol_true)
    out["ours"] = {
        "setup_s": setup,
        "per_iteration_s": loop / n_iter,
        "seconds": setup + loop,
        "corr": corr,
    }
    if report is not None:
        report(
            f"| cryowedge Toeplitz CG (kernel + fast Hᵀb) | {setup:.3g} | {loop / n_iter:.3g} | "
            f"{setup + loop:.3g} | {corr:.4f} |"
        )
        if explicit_seconds and {"adjoint", "normal_explicit"} <= explicit_seconds.keys():
            est_setup = explicit_seconds["adjoint"]
            est_iter = explicit_seconds["normal_explicit"]
            report(
                f"| cryowedge explicit H CG (estimated from the table, not run) | "
                f"~{est_setup:.3g} | ~{est_iter:.3g} | ~{est_setup + n_iter * est_iter:.3g} | — |"
            )
    for name, pip_name in PEERS.items():
        module, err = _import_peer(name)
        if module is None:
            out[name] = {"error": err}
            if report is not None:
                report(f"| {pip_name} CG | not available: {err} | | | |")
            continue
        try:
            fwd = peer_forward(name, size, rot)
            t0 = time.perf_counter()
            adj = _peer_adjoint(name, size, rot, fwd)
            rhs = adj(b)
            setup = time.perf_counter() - t0

            def normal_peer(v: torch.Tensor, f: Callable = fwd, a: Callable = adj) -> torch.Tensor:
                with torch.no_grad():
                    y = f(v)
                return a(y)

            t1 = time.perf_counter()
            xp, _ = conjugate_gradient(normal_peer, rhs, n_iter=n_iter, tol=0.0)
            loop = time.perf_counter() - t1
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            out[name] = {"error": msg}
            if report is not None:
                report(f"| {pip_name} CG | failed: {msg} | | | |")
            continue
        corr = _corr(xp, vol_true)
        out[name] = {
            "setup_s": setup,
            "per_iteration_s": loop / n_iter,
            "seconds": setup + loop,
            "corr": corr,
        }
        if report is not None:
            report(
                f"| {pip_name} CG (forward + {_ADJOINT_KIND[name]} adjoint) | {setup:.3g} | "
                f"{loop / n_iter:.3g} | {setup + loop:.3g} | {corr:.4f} |"
            )
    return out


# ---------------------------------------------------------------------------- all
def bench_spa(
    size: int = 64,
    projections: Sequence[int] = (50, 500, 5000),
    *,
    repeats: int = 1,
    threads: int = 1,
    explicit_max_p: int = 500,
    fast_adjoint_op: bool = True,
    peers: bool = True,
    peer_p: int = 500,
    solve_iters: int = 20,
    seed: int = 0,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Table 4.1, the peers and the normal-equation solve; last line ``toeplitz_speedup: N``.

    Parameters are those of :func:`bench_spa_table`, :func:`bench_spa_peers` (``peer_p``
    projections) and :func:`bench_spa_solve` (``solve_iters``); ``threads`` sets torch's CPU
    threads for the run (restored after); ``peers=False`` skips parts 2 and 3.

    Returns
    -------
    dict
        ``{"table": …, "peers": …, "solve": …}`` (the last two absent with ``peers=False``).
    """
    threads = _check_positive(threads, "threads")
    peer_p = _check_positive(peer_p, "peer_p")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        report(
            f"bench spa: {size}³, scale 1, KBWF(4, 19, 2), float32, CPU, {threads} thread(s), "
            f"best of {repeats}; explicit operators run up to P = {explicit_max_p} (~: "
            "extrapolated, linear in P)"
        )
        table = bench_spa_table(
            size,
            projections,
            repeats=repeats,
            explicit_max_p=explicit_max_p,
            fast_adjoint_op=fast_adjoint_op,
            seed=seed,
            report=report,
        )
        result: dict[str, Any] = {"table": table}
        if peers:
            row = next((r for r in table["rows"] if r["P"] == peer_p), None)
            ours = None
            if row is not None and "forward" in row:
                ours = {
                    "forward": row["forward"],
                    "adjoint": row["adjoint"],
                    "extrapolated": row["extrapolated"],
                }
            report("")
            result["peers"] = bench_spa_peers(
                size, peer_p, repeats=repeats, ours=ours, seed=seed, report=report
            )
            report("")
            result["solve"] = bench_spa_solve(
                size,
                peer_p,
                n_iter=solve_iters,
                explicit_seconds=row,
                seed=seed,
                report=report,
            )
        mark = " (explicit extrapolated)" if table["speedup_extrapolated"] else ""
        report(
            f"speed-up explicit / fast HᵀHc at P = {table['speedup_p']}{mark}; thesis Table 4.1: "
            "318× at 128³, P = 500"
        )
        report(f"toeplitz_speedup: {table['speedup']:.0f}")
        return result
    finally:
        torch.set_num_threads(previous)
