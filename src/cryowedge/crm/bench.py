"""The cost of CRM against the averaging pipeline, side by side (``cryowedge bench crm``).

The issue's bar: CRM-SART for ``N = 49`` copies of ``200²`` (the paper's 2D ribosome data
set, :func:`cryowedge.crm.simulate_ribosome_2d`; the Shepp–Logan phantom when the ribosome
map is not in ``../shared/data``) at 20 iterations, λ = 0.2, costs no more than 1.5× the AVG
pipeline's ``N`` independent SART reconstructions with the same λ and iterations.

* **CRM** — :func:`cryowedge.crm.crm_sart` on a fresh
  :class:`~cryowedge.crm.CRMOperator` (its per-copy view matrices are built inside the
  timing, as a user's run builds them).
* **AVG pipeline** — :func:`cryowedge.crm.reconstruct_copies` (one
  :func:`~cryowedge.solvers.sart` per copy on the copy's own projector, built inside the
  timing) followed by the masked mean (:func:`cryowedge.crm.simple_average`).

Both run in one process on the same data, one after the other (AVG first), in float32 on
the chosen device, ``repeats`` times in turn; each keeps its shortest time (the one least
disturbed by other work on a shared machine). The data set is simulated before the clocks
start. The report's last line is ``crm_cost_vs_avg: R`` with ``R = t_CRM / t_AVG`` (wall
time); the line before it gives the same ratio of CPU time (all threads of this process),
which other work on a shared machine disturbs less. The PSNR
of both (inside the support, after the affine calibration) is reported as a check that both
did their work. :func:`crm_cost_table` repeats
the measurement over several ``N`` (docs/crm.md, "How the cost grows with N").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["bench_crm", "crm_cost_table", "QUICK"]

logger = logging.getLogger(__name__)

#: ``--quick``: a check in seconds (3 copies of 64², same iterations).
QUICK = {"n_copies": 3, "size": 64}


def _dataset(n_copies: int, size: int, dataset: str, seed: int) -> tuple[Any, str]:
    """The simulated copies and the name of the data set actually used."""
    from cryowedge.crm.simulate import simulate_ribosome_2d, simulate_shepp_logan_2d

    if dataset == "ribosome":
        try:
            sim = simulate_ribosome_2d(n_copies, size=size, support_radius_px=0.325 * size,
                                       rng=seed)
            return sim.data, "ribosome"
        except FileNotFoundError as exc:
            logger.warning("%s; using the Shepp-Logan phantom instead", exc)
    elif dataset != "shepp-logan":
        raise ValueError(f"dataset must be 'ribosome' or 'shepp-logan', got {dataset!r}.")
    sim = simulate_shepp_logan_2d(n_copies, size=size, phantom_size=max(4, round(size * 200 / 320)),
                                  rng=seed)
    return sim.data, "shepp-logan"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(data: Any, n_iter: int, relaxation: float, device: torch.device,
             seed: int, repeats: int = 1, plan_cache_gb: float | None = None) -> dict[str, Any]:
    """Shortest seconds of the AVG pipeline and of CRM-SART on ``data`` over ``repeats``
    alternating runs, and their PSNR (dB, support, affine calibration)."""
    from cryowedge.crm.baselines import reconstruct_copies, simple_average
    from cryowedge.crm.operator import CRMOperator
    from cryowedge.crm.solvers import crm_sart
    from cryowedge.metrics import psnr
    from cryowedge.metrics.normalize import normalize_intensity

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}.")
    b = torch.from_numpy(np.ascontiguousarray(data.projections, dtype=np.float32)).to(device)
    t_avg = t_crm = c_avg = c_crm = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        op_avg = CRMOperator.from_data(data)
        copies = reconstruct_copies(op_avg, b, n_iter=n_iter, relaxation=relaxation, seed=seed)
        avg = simple_average(op_avg, copies=copies)
        _sync(device)
        t_avg = min(t_avg, time.perf_counter() - t0)
        c_avg = min(c_avg, time.process_time() - c0)

        t0, c0 = time.perf_counter(), time.process_time()
        op = CRMOperator.from_data(data)
        budget = None if plan_cache_gb is None else int(plan_cache_gb * 2**30)
        result = crm_sart(op, b, n_iter=n_iter, relaxation=relaxation, seed=seed,
                          plan_cache_bytes=budget)
        particle = op.particle(result.x)
        _sync(device)
        t_crm = min(t_crm, time.perf_counter() - t0)
        c_crm = min(c_crm, time.process_time() - c0)

    s = data.support[:, 0, :] if data.is_2d else data.support
    truth = data.truth[:, 0, :] if data.is_2d else data.truth

    def score(v: torch.Tensor) -> float:
        arr = v.detach().cpu().numpy()
        arr = arr[:, 0, :] if data.is_2d else arr
        return psnr(normalize_intensity(arr, truth, "affine", mask=s), truth, mask=s)

    return {"n_copies": data.n_copies, "t_crm": t_crm, "t_avg": t_avg,
            "ratio": t_crm / t_avg, "cpu_crm": c_crm, "cpu_avg": c_avg,
            "cpu_ratio": c_crm / c_avg, "psnr_crm": score(particle), "psnr_avg": score(avg)}


def bench_crm(
    n_copies: int = 49,
    size: int = 200,
    n_iter: int = 20,
    relaxation: float = 0.2,
    *,
    dataset: str = "ribosome",
    device: str = "cpu",
    seed: int = 0,
    repeats: int = 1,
    plan_cache_gb: float | None = None,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time CRM-SART and the AVG pipeline on one simulated data set; report the ratio.

    Parameters
    ----------
    n_copies, size
        ``N`` copies of a ``size²`` 2D data set.
    n_iter, relaxation
        Iterations and λ of both (the paper's 20 and 0.2).
    dataset
        ``"ribosome"`` (falls back to ``"shepp-logan"`` when its map is missing) or
        ``"shepp-logan"``.
    device
        ``cpu``, ``cuda``, ``auto``…
    seed
        Simulation and view-order seed.
    repeats
        Alternating runs of both; each keeps its shortest time.
    plan_cache_gb
        CRM-SART's ``plan_cache_bytes`` in GB (default: the solver's, 4 GiB on the host).
    report
        Where the lines go; the last is ``crm_cost_vs_avg: R``.

    Returns
    -------
    dict
        ``t_crm``, ``t_avg`` (s), ``ratio``, ``psnr_crm``, ``psnr_avg`` (dB inside the
        support, raw grey levels), ``dataset``, ``n_tilts``, ``threads``.
    """
    from cryowedge.utils.device import resolve_device

    dev = resolve_device(device)
    data, used = _dataset(n_copies, size, dataset, seed)
    n_tilts = data.projections.shape[1]
    report(f"bench crm: {n_copies} copies of {size}x{size} ({used}), {n_tilts} tilts each, "
           f"{n_iter} iterations at relaxation {relaxation:g}, {dev}, torch threads "
           f"{torch.get_num_threads()}, shortest of {repeats} run(s) each, plan cache "
           f"{'default' if plan_cache_gb is None else f'{plan_cache_gb:g} GB'}")
    row = _measure(data, n_iter, relaxation, dev, seed, repeats, plan_cache_gb)
    report(f"avg_pipeline ({n_copies} x SART + mean): {row['t_avg']:.2f} s wall, "
           f"{row['cpu_avg']:.2f} s CPU (PSNR {row['psnr_avg']:.2f} dB in the support, affine)")
    report(f"crm_sart: {row['t_crm']:.2f} s wall, {row['cpu_crm']:.2f} s CPU "
           f"(PSNR {row['psnr_crm']:.2f} dB in the support, affine)")
    report(f"crm_cpu_time_vs_avg: {row['cpu_ratio']:.2f}")
    report(f"crm_cost_vs_avg: {row['ratio']:.2f}")
    return {**row, "dataset": used, "n_tilts": n_tilts, "threads": torch.get_num_threads()}


def crm_cost_table(
    ns: Sequence[int] = (3, 11, 49, 200),
    size: int = 200,
    n_iter: int = 20,
    relaxation: float = 0.2,
    *,
    dataset: str = "ribosome",
    device: str = "cpu",
    seed: int = 0,
    repeats: int = 1,
    plan_cache_gb: float | None = None,
    report: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`bench_crm`'s measurement for each ``N`` in ``ns``; with ``report``, a Markdown
    table (N, CRM s, AVG s, ratio, CRM s per copy and iteration, PSNR of both).

    Returns
    -------
    list of dict
        One row per ``N`` (keys as :func:`bench_crm`'s result).
    """
    from cryowedge.utils.device import resolve_device

    dev = resolve_device(device)
    rows = []
    if report is not None:
        report("| N | CRM-SART (s) | AVG pipeline (s) | ratio | CPU-time ratio | CRM ms per "
               "copy-iteration | PSNR CRM / AVG (dB) |")
        report("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in ns:
        data, used = _dataset(int(n), size, dataset, seed)
        row = {**_measure(data, n_iter, relaxation, dev, seed, repeats, plan_cache_gb),
               "dataset": used}
        rows.append(row)
        if report is not None:
            per = 1e3 * row["t_crm"] / (int(n) * n_iter)
            report(f"| {n} | {row['t_crm']:.2f} | {row['t_avg']:.2f} | {row['ratio']:.2f} | "
                   f"{row['cpu_ratio']:.2f} | {per:.1f} | {row['psnr_crm']:.2f} / "
                   f"{row['psnr_avg']:.2f} |")
    return rows
