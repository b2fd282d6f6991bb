"""Crowther/missing-wedge Fourier penalty and TV of the coordinate-network fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryowedge.geometry.wedge import wedge_mask
from cryowedge.inr import CrowtherWedgePenalty, crowther_frequency, total_variation

ANGLES = np.arange(-60.0, 60.0 + 1e-9, 3.0)  # 41 views, Δθ = 3°


def _cosine(nz, ny, nx, iz, ix):
    """``cos 2π(iz z / nz + ix x / nx)`` on a (nz, ny, nx) grid (same for every y), float64."""
    z = torch.arange(nz, dtype=torch.float64)[:, None, None]
    x = torch.arange(nx, dtype=torch.float64)[None, None, :]
    return torch.cos(2 * math.pi * (iz * z / nz + ix * x / nx)).expand(nz, ny, nx).clone()


def test_crowther_frequency_value():
    # k_c = 1 / (D Δθ): D = 32 px, Δθ = 3° → 1 / (32 · π/60) = 0.597 cycles/px
    assert crowther_frequency(ANGLES, 32) == pytest.approx(60 / (32 * math.pi))
    assert crowther_frequency(ANGLES[::-1], 32) == pytest.approx(60 / (32 * math.pi))
    with pytest.raises(ValueError, match="two distinct"):
        crowther_frequency([10.0, 10.0], 32)


def test_penalty_is_zero_for_a_volume_band_limited_to_the_measured_region():
    nz, ny, nx = 16, 5, 20
    pen = CrowtherWedgePenalty(nz, nx, ANGLES, crowther_diameter_px=60, power=1,
                               device="cpu")
    k_c = pen.frequency_cpp
    assert 0.1 < k_c < 0.5
    # random spectrum kept only where measured and below k_c (every y row alike)
    measured = wedge_mask((nz, 1, nx), ANGLES, dtype=torch.bool).numpy()[:, 0, :]
    kz = np.fft.fftfreq(nz)[:, None]
    kx = np.fft.fftfreq(nx)[None, :]
    keep = measured & (np.hypot(kz, kx) <= k_c)
    rng = np.random.default_rng(0)
    spec = (rng.normal(size=(nz, ny, nx)) + 1j * rng.normal(size=(nz, ny, nx))) * keep[:, None, :]
    vol = torch.from_numpy(np.fft.ifft2(spec, axes=(0, 2)).real.copy())
    assert float(vol.abs().max()) > 0.05
    assert float(pen(vol)) < 1e-12 * float(vol.abs().sum())
    # a single frequency inside the wedge: W(k)/sqrt(nz nx) exactly (|V(±k)| = sqrt(nz nx)/2)
    iz, ix = 6, 1  # direction atan2(6/16, 1/20) = 82° > 60°: missing
    inside = _cosine(nz, ny, nx, iz, ix)
    radius = math.hypot(iz / nz, ix / nx)
    expected = (radius / 0.5) / math.sqrt(nz * nx)
    assert float(pen(inside)) == pytest.approx(expected, rel=1e-10)
    # power 2: |V|² = nz nx / 4 at both ±k → W(k)/2
    pen2 = CrowtherWedgePenalty(nz, nx, ANGLES, crowther_diameter_px=60, power=2)
    assert float(pen2(inside)) == pytest.approx((radius / 0.5) / 2, rel=1e-10)


def test_crowther_term_penalises_measured_frequencies_above_k_c_only():
    nz, ny, nx = 16, 3, 32
    iz, ix = 2, 12  # direction 24° (measured), radius 0.395 cycles/px
    above = _cosine(nz, ny, nx, iz, ix)
    radius = math.hypot(iz / nz, ix / nx)
    d_small = 1 / (0.5 * radius * math.radians(3.0))  # k_c = radius / 2: penalised
    d_large = 1 / (2.0 * radius * math.radians(3.0))  # k_c = 2·radius: free
    penalised = float(CrowtherWedgePenalty(nz, nx, ANGLES, crowther_diameter_px=d_small)(above))
    assert penalised == pytest.approx((radius / 0.5) / math.sqrt(nz * nx), rel=1e-10)
    assert float(CrowtherWedgePenalty(nz, nx, ANGLES, crowther_diameter_px=d_large)(above)) < 1e-7
    no_crowther = CrowtherWedgePenalty(nz, nx, ANGLES, crowther_diameter_px=d_small, crowther=False)
    assert no_crowther.frequency_cpp is None
    assert float(no_crowther(above)) < 1e-7


def test_half_grid_weights_equal_the_full_grid_sum():
    nz, ny, nx = 12, 4, 15  # odd nx: no Nyquist column
    for n in (nx, 16):
        pen = CrowtherWedgePenalty(nz, n, ANGLES, crowther_diameter_px=40)
        gen = torch.Generator().manual_seed(1)
        vol = torch.randn(nz, ny, n, dtype=torch.float64, generator=gen)
        full = torch.fft.fftn(vol, dim=(0, 2), norm="ortho").abs()
        kz = torch.fft.fftfreq(nz, dtype=torch.float64)[:, None]
        kx = torch.fft.fftfreq(n, dtype=torch.float64)[None, :]
        radius = torch.sqrt(kz**2 + kx**2)
        missing = wedge_mask((nz, 1, n), ANGLES, missing=True, dtype=torch.bool)[:, 0, :]
        w = torch.where(missing | (radius > pen.frequency_cpp), radius / 0.5, 0.0)
        expected = (w[:, None, :] * full).sum(dim=(0, 2)) / (nz * n)
        torch.testing.assert_close(pen(vol, reduction="none"), expected)


def test_penalty_of_a_slab_is_the_mean_of_its_rows_and_checks_shape():
    pen = CrowtherWedgePenalty(8, 10, ANGLES)
    vol = torch.randn(8, 6, 10, dtype=torch.float64)
    rows = torch.stack([pen(vol[:, i : i + 1]) for i in range(6)])
    torch.testing.assert_close(pen(vol), rows.mean())
    with pytest.raises(ValueError, match=r"\(nz, rows, nx\) = \(8, rows, 10\)"):
        pen(torch.zeros(8, 10))
    with pytest.raises(ValueError, match="power must be 1"):
        CrowtherWedgePenalty(8, 10, ANGLES, power=3)


def test_batched_tv_with_the_next_row_adds_up_to_the_whole():
    vol = torch.randn(5, 9, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    whole = total_variation(vol)
    manual = sum(float(d.abs().sum()) for d in (vol.diff(dim=0), vol.diff(dim=1), vol.diff(dim=2)))
    assert float(whole) == pytest.approx(manual / vol.numel())
    parts = 0.0
    for y0, y1 in ((0, 4), (4, 5), (5, 9)):
        nxt = vol[:, y1 : y1 + 1] if y1 < 9 else None
        parts += (y1 - y0) / 9 * float(total_variation(vol[:, y0:y1], nxt))
    assert parts == pytest.approx(float(whole), rel=1e-12)
