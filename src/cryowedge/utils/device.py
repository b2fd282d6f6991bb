"""Resolve ``"auto" | "cpu" | "cuda" | "cuda:N"`` to a :class:`torch.device`."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


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
