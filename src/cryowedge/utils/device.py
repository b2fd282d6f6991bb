"""Resolve ``"auto" | "cpu" | "cuda" | "cuda:N"`` to a :class:`torch.device`; CPU threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["cpu_threads", "resolve_device"]


@contextlib.contextmanager
def cpu_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with ``n_threads`` PyTorch CPU threads (None: leave it), then restore.

    ``n_threads`` must be a positive integer; it sets :func:`torch.set_num_threads` (intra-op
    parallelism of the projector, FFTs and solvers).
    """
    if n_threads is None:
        yield
        return
    if isinstance(n_threads, bool) or int(n_threads) != n_threads or n_threads < 1:
        raise ValueError(f"threads must be a positive whole number, got {n_threads!r}.")
    before = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device named by ``device``.

    ``"auto"`` (or ``None``) picks the first CUDA GPU when one is present and the
    CPU otherwise. Asking for ``"cuda"`` on a machine without a GPU raises a
    ``ValueError`` that says so, instead of failing later inside a kernel.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} was requested but no CUDA GPU is available; "
            "use --device cpu (or auto)."
        )
    return dev
