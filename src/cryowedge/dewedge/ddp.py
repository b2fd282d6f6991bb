"""Data-parallel fitting with ``torch.distributed`` (DistributedDataParallel), for ``torchrun``.

How a distributed fit works (:func:`cryowedge.dewedge.fit.fit` detects an initialised process
group and does the rest):

* every rank builds the same data set and the same per-epoch sample plan (a pure function of
  ``(seed, epoch)``); step ``t`` covers the global samples ``t·G … (t+1)·G − 1`` with
  ``G = batch_size × world_size`` (so ``fit.batch_size`` is **per rank** and the global batch
  grows with the number of processes), and rank ``r`` takes the ``r``-th contiguous share;
  ``subtomos_per_epoch`` is rounded up to a multiple of ``world_size`` so that every rank has
  samples at every step;
* ``DistributedDataParallel`` averages the gradients; each rank's loss is its sum over its
  samples times ``world_size / n_step``, so a step equals one step on the whole global batch;
* the validation samples are shared among the ranks and their losses summed
  (``all_reduce``); the wedge update is shared out slab by slab and each filled slab is
  broadcast from the rank that made it (:func:`broadcast_array`), so all ranks hold the same
  filled half A in memory;
* rank 0 alone writes checkpoints and calls the progress callback.

Backends: ``nccl`` on CUDA (one GPU per process, ``LOCAL_RANK``), ``gloo`` on the CPU.

Launch (the module is its own entry point)::

    torchrun --nproc-per-node 2 -m cryowedge.dewedge.ddp PREPARED_DIR OUTPUT_DIR \\
        [--config dewedge.yaml] [--resume] [--overwrite]

where ``PREPARED_DIR`` is the output of ``dewedge prepare`` (its ``prepared.yaml``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "broadcast_array",
    "init_process_group",
    "is_distributed",
    "main",
    "rank_and_world",
    "run_fit",
    "shutdown",
]

logger = logging.getLogger(__name__)

#: Elements per broadcast message (bounded temporary memory on the GPU).
_CHUNK = 1 << 24


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_process_group(
    backend: str = "auto",
    *,
    init_method: str | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    timeout_s: float = 1800.0,
) -> tuple[int, int, torch.device]:
    """Join the process group (``torchrun`` sets the environment) and pick this rank's device.

    Parameters
    ----------
    backend
        ``"auto"`` (``nccl`` when CUDA is available, else ``gloo``), ``"nccl"`` or ``"gloo"``.
    init_method, rank, world_size
        Default: the ``env://`` variables of ``torchrun`` (``RANK``, ``WORLD_SIZE``,
        ``MASTER_ADDR``, ``MASTER_PORT``); tests pass a ``file://`` method and the numbers.
    timeout_s
        Collective timeout (a wedge update on a large tomogram keeps the other ranks waiting).

    Returns
    -------
    rank, world_size, device
        ``cuda:LOCAL_RANK`` with ``nccl`` (also made the current device), else the CPU.
    """
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be auto, nccl or gloo, got {backend!r}.")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend nccl needs CUDA GPUs; use gloo on the CPU.")
    if not is_distributed():
        kwargs: dict[str, Any] = {
            "backend": backend,
            "timeout": _dt.timedelta(seconds=float(timeout_s)),
        }
        if init_method is not None:
            kwargs["init_method"] = init_method
        if rank is not None:
            kwargs["rank"] = int(rank)
        if world_size is not None:
            kwargs["world_size"] = int(world_size)
        dist.init_process_group(**kwargs)
    r, w = rank_and_world()
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", r % max(1, torch.cuda.device_count())))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    logger.info("process group: rank %d of %d, backend %s, device %s", r, w, backend, device)
    return r, w, device


def shutdown() -> None:
    """Leave the process group (no-op outside one)."""
    if is_distributed():
        dist.destroy_process_group()


def broadcast_array(array: np.ndarray, src: int) -> None:
    """Overwrite ``array`` (C-contiguous NumPy, any shape) on every rank with rank ``src``'s.

    Sent in chunks; through the GPU with ``nccl``, directly with ``gloo``.
    """
    if not is_distributed():
        return
    if not array.flags.c_contiguous:
        raise ValueError("broadcast_array needs a C-contiguous array.")
    flat = torch.from_numpy(array.reshape(-1))
    on_gpu = dist.get_backend() == "nccl"
    for i in range(0, flat.numel(), _CHUNK):
        part = flat[i : i + _CHUNK]
        if on_gpu:
            buf = part.to(torch.device("cuda", torch.cuda.current_device()))
            dist.broadcast(buf, src)
            part.copy_(buf.cpu())
        else:
            dist.broadcast(part, src)


def run_fit(
    prepared: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    config: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    backend: str = "auto",
) -> Any:
    """Join the process group, fit on a prepared data set, leave the group.

    ``config``: a :class:`~cryowedge.config.dewedge.DewedgeConfig`, a YAML path, or None (the
    prepared data's config). Returns the :class:`~cryowedge.dewedge.fit.FitResult` (every rank
    has the same model).
    """
    from cryowedge.config.dewedge import DewedgeConfig
    from cryowedge.dewedge.fit import fit
    from cryowedge.dewedge.prepare import load_prepared

    data = load_prepared(prepared)
    if isinstance(config, (str, os.PathLike)):
        import yaml

        raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        config = DewedgeConfig.model_validate(raw)
    cfg = config if config is not None else data.config
    _, _, device = init_process_group(backend)
    if device.type == "cuda":
        cfg = cfg.model_copy(
            update={"shared": cfg.shared.model_copy(update={"device": str(device)})}
        )
    try:
        return fit(data, config=cfg, output_dir=output_dir, resume=resume, overwrite=overwrite)
    finally:
        shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``torchrun -m cryowedge.dewedge.ddp`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m cryowedge.dewedge.ddp",
        description="Distributed dewedge fit (launch with torchrun --nproc-per-node N -m "
        "cryowedge.dewedge.ddp ...).",
    )
    parser.add_argument("prepared", help="directory (or prepared.yaml) of dewedge prepare")
    parser.add_argument("output_dir", help="where checkpoints/ and fit_log.csv go")
    parser.add_argument("--config", help="dewedge YAML config (default: the prepared one)")
    parser.add_argument("--resume", action="store_true", help="continue from last.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace old checkpoints")
    parser.add_argument("--backend", default="auto", choices=["auto", "nccl", "gloo"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run_fit(
        args.prepared,
        args.output_dir,
        config=args.config,
        resume=args.resume,
        overwrite=args.overwrite,
        backend=args.backend,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover - torchrun entry
    raise SystemExit(main())
