"""Coordinate networks: SIREN initialisation, Fourier features, coordinates, bad options."""

from __future__ import annotations

import math

import pytest
import torch

from cryowedge.inr import NetworkSpec, build_network, coordinate_grid
from cryowedge.inr.networks import FourierFeatures


def _hidden_inputs(net, coords):
    """The input of every linear layer and the output of every activation."""
    inputs, acts = [], []
    x = net.encoder(coords)
    for layer in net.layers:
        if isinstance(layer, torch.nn.Linear):
            inputs.append(x)
        x = layer(x)
        if not isinstance(layer, torch.nn.Linear):
            acts.append(x)
    return inputs, acts


def test_siren_initialisation_statistics():
    """Sitzmann et al.: first layer U(-1/n, 1/n), hidden U(±√(6/n)/ω0); the weighted input
    ω0·Wx of every hidden layer has std ≈ 1 and every activation is arcsine distributed on
    [-1, 1] (std 1/√2, P(|a| > 0.9) = 1 − 2/π·asin 0.9 ≈ 0.287), whatever the depth."""
    torch.manual_seed(0)
    net = build_network(activation="sine", encoding="none", width=256, n_layers=5, seed=3)
    net.requires_grad_(False)
    linears = [m for m in net.layers if isinstance(m, torch.nn.Linear)]
    assert float(linears[0].weight.abs().max()) <= 1 / 3
    assert float(linears[0].weight.abs().max()) > 0.3  # the full range is used
    bound = math.sqrt(6 / 256) / 30
    for lin in linears[1:]:
        w = lin.weight
        assert float(w.abs().max()) <= bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.03)
    coords = torch.rand(20000, 3) * 2 - 1
    with torch.no_grad():
        inputs, acts = _hidden_inputs(net, coords)
        for lin, x in zip(linears[1:-1], inputs[1:-1], strict=True):
            weighted = 30.0 * (x @ lin.weight.T)
            assert float(weighted.std()) == pytest.approx(1.0, abs=0.1)
        for a in acts[1:]:
            assert float(a.std()) == pytest.approx(1 / math.sqrt(2), abs=0.04)
            tail = float((a.abs() > 0.9).float().mean())
            assert tail == pytest.approx(1 - 2 / math.pi * math.asin(0.9), abs=0.03)


def test_gaussian_fourier_features_are_in_cycles_per_voxel():
    enc = FourierFeatures("gaussian", 0.1, 4000, half_extent=32.0,
                          generator=torch.Generator().manual_seed(0))
    per_voxel = enc.frequencies / 32.0
    assert float(per_voxel.std()) == pytest.approx(0.1, rel=0.03)
    r = torch.tensor([[3.0, -2.0, 5.0]])  # voxels from the centre, (x, y, z)
    feats = enc(r / 32.0)
    phase = 2 * math.pi * (r @ per_voxel.T)
    torch.testing.assert_close(feats, torch.cat([phase.cos(), phase.sin()], -1),
                               rtol=1e-4, atol=1e-4)


def test_positional_features_span_one_cycle_to_the_scale():
    enc = FourierFeatures("positional", 0.4, 30, half_extent=16.0)
    f = enc.frequencies / 16.0  # cycles per voxel
    assert f.shape == (30, 3)
    assert torch.count_nonzero(f, dim=1).eq(1).all()  # one axis per frequency
    for axis in range(3):
        col = f[:, axis][f[:, axis] > 0]
        assert float(col.min()) == pytest.approx(1 / 32)
        assert float(col.max()) == pytest.approx(0.4)


def test_same_seed_same_network_and_output_shape():
    a = build_network(width=16, n_frequencies=8, seed=1)
    b = build_network(width=16, n_frequencies=8, seed=1)
    c = build_network(width=16, n_frequencies=8, seed=2)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.encoder.frequencies, c.encoder.frequencies)
    assert a(torch.zeros(4, 5, 3)).shape == (4, 5)
    assert build_network(**a.config()).spec == a.spec


def test_coordinate_grid_is_centred_isotropic_and_xyz():
    grid = coordinate_grid((4, 6, 8), rows=(2, 5))
    assert grid.shape == (4, 3, 8, 3)
    h = 8 / 2
    assert torch.equal(grid[2, 1, 4], torch.tensor([0.0, 0.0, 0.0]))  # voxel (z=2, y=3, x=4)
    assert float(grid[3, 0, 7, 0]) == pytest.approx(3 / h)  # x
    assert float(grid[3, 0, 7, 1]) == pytest.approx(-1 / h)  # y = 2 - 3
    assert float(grid[3, 0, 7, 2]) == pytest.approx(1 / h)  # z


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"activation": "tanh"}, "unknown activation 'tanh'"),
        ({"encoding": "hash"}, "unknown encoding 'hash'"),
        ({"n_layers": 1}, "n_layers must be an integer >= 2"),
        ({"encoding_scale": 0.0}, "encoding_scale must be > 0"),
        ({"depth": 3}, "unknown network option"),
    ],
)
def test_bad_network_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        build_network(**options)


def test_spec_round_trip():
    spec = NetworkSpec(activation="sine", encoding="none", width=8)
    assert NetworkSpec(**spec.to_dict()) == spec


def test_fourier_features_stay_in_float32_under_autocast():
    """Phases of hundreds of radians would be off by radians in half precision."""
    enc = FourierFeatures("gaussian", 0.05, 64, half_extent=512.0,
                          generator=torch.Generator().manual_seed(0))
    coords = torch.rand(200, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = enc(coords)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, enc(coords))
