"""Tests for cryowedge._arrays.to_numpy, the one tensor/array conversion used by io and metrics."""

from __future__ import annotations

import numpy as np
import torch

from cryowedge import _arrays
from cryowedge.io import mrc, tiff
from cryowedge.metrics import fourier, image


def test_to_numpy_tensors_and_arrays():
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    assert _arrays.to_numpy(arr) is arr  # no copy for an ndarray
    np.testing.assert_array_equal(_arrays.to_numpy([[1, 2], [3, 4]]), [[1, 2], [3, 4]])
    t = torch.arange(6, dtype=torch.float64).reshape(2, 3).requires_grad_(True)
    out = _arrays.to_numpy(t * 2)
    assert out.dtype == np.float64 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, 2 * np.arange(6).reshape(2, 3))
    half = _arrays.to_numpy(torch.tensor([1.5, -2.0], dtype=torch.bfloat16))
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, [1.5, -2.0])


def test_one_shared_helper():
    # io and metrics must not grow private copies again.
    for module in (mrc, tiff, image, fourier):
        assert not hasattr(module, "_to_numpy"), module.__name__


def test_write_mrc_accepts_bfloat16_tensor(tmp_path):
    vol = torch.linspace(-1, 1, 4 * 5 * 6, dtype=torch.bfloat16).reshape(4, 5, 6)
    path = mrc.write_mrc(tmp_path / "v.mrc", vol)
    back = mrc.read_mrc(path).data
    np.testing.assert_array_equal(back, vol.float().numpy())
