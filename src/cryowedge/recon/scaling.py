"""Data scaling shared by the iterative reconstructions."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["data_scale"]


def data_scale(values: torch.Tensor, normalize: bool = True) -> float:
    """Standard deviation of ``values``, the factor iterative reconstructions divide the data by.

    1 when not normalising or when the values are constant, too few or not finite, so the
    division is always safe. Dividing by it makes regularisation weights (e.g. the TV λ)
    independent of the data's units.
    """
    if not normalize or values.numel() < 2:
        return 1.0
    scale = float(values.double().std())
    return scale if np.isfinite(scale) and scale > 0 else 1.0
