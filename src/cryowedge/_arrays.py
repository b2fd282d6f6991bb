"""Array conversions shared by the I/O and metrics layers (private).

One place for turning "a NumPy array or a torch tensor" into a NumPy array, so every
module that accepts both converts them the same way.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["to_numpy"]


def to_numpy(value: Any) -> np.ndarray:
    """Return ``value`` as a NumPy array, any shape and dtype kept.

    Torch tensors (any device, with or without ``requires_grad``) are detached and
    copied to the CPU; ``bfloat16``, which NumPy has no dtype for, becomes float32.
    Anything else goes through :func:`numpy.asarray` (no copy for an ndarray).
    torch is not imported for non-tensor input: a tensor can only exist when it is.

    Parameters
    ----------
    value : array_like or torch.Tensor, shape (...)
        Data of any shape.

    Returns
    -------
    numpy.ndarray
        Same shape; same dtype except bfloat16 → float32.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)
