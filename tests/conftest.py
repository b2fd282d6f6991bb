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
