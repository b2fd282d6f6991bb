"""Shared fixtures: seeded RNG, devices, location of the shared real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_DATA = Path(__file__).resolve().parent / "data"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for sums of ~1e5 products: float32 ε·√n with margin, float64 tight."""
    return 1e-5 if dtype == torch.float32 else 1e-12


def adjoint_mismatch(op, rng: np.random.Generator, dtype: torch.dtype = torch.float64) -> float:
    """Relative mismatch of the dot-product test ``|⟨Ax, y⟩ − ⟨x, Aᵀy⟩| / |⟨Ax, y⟩|``."""
    x = torch.as_tensor(rng.standard_normal(op.domain_shape), dtype=dtype)
    y = torch.as_tensor(rng.standard_normal(op.range_shape), dtype=dtype)
    lhs = float(torch.sum(op.forward(x) * y))
    rhs = float(torch.sum(x * op.adjoint(y)))
    return abs(lhs - rhs) / max(abs(lhs), 1e-30)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _torch_seed() -> None:
    torch.manual_seed(0)


def shared_data(name: str) -> Path:
    """Path of a file in ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path
