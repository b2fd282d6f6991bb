"""Torch missing-wedge mask: agreement with TiltGeometry, with the projector's AᵀA, rotations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEVICES

from cryowedge.geometry.rotations import euler_zyz_to_matrix, random_rotations, rotate_volume
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.geometry.wedge import fourier_grid_xyz, wedge_mask
from cryowedge.operators.rotation import Rotation3D
from cryowedge.operators.tilt_projector import TiltProjector


@pytest.mark.parametrize("rfft", [False, True])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("shape", [(16, 9, 20), (15, 8, 15)])
def test_equals_tilt_geometry_mask(shape, rfft, centered):
    geom = TiltGeometry.from_range(-54, 66, 3, (shape[1], shape[2]))
    expected = geom.missing_wedge_mask(shape, centered=centered, rfft=rfft)
    kw = dict(rfft=rfft, centered=centered)
    missing = wedge_mask(shape, geom.tilt_angles_deg, missing=True, dtype=torch.bool, **kw)
    np.testing.assert_array_equal(missing.numpy(), expected)
    measured = wedge_mask(shape, (-54.0, 66.0), **kw)  # a (min, max) pair works too
    assert measured.dtype == torch.float32
    np.testing.assert_array_equal(measured.numpy(), (~expected).astype(np.float32))


def _psf_energy(geom: TiltGeometry, n: int) -> torch.Tensor:
    """|FFT|² of AᵀA applied to a centred delta: the spectral energy of AᵀA."""
    op = TiltProjector(geom, (n, n, n))
    delta = torch.zeros((n, n, n), dtype=torch.float64)
    delta[n // 2, n // 2, n // 2] = 1.0
    return torch.fft.fftn(op.adjoint(op(delta))).abs() ** 2


@pytest.mark.parametrize(
    ("lo", "hi", "mirror_min"),
    # -40…+70 (a strongly asymmetric lamella range): the mirrored wedge differs by 30° per side.
    # -54…+66: only 12° per side differ, so the mirrored excess is smaller (measured 4.7 %).
    [(-40.0, 70.0, 0.15), (-54.0, 66.0, 0.035)],
)
def test_projector_energy_lies_in_measured_region(lo, hi, mirror_min):
    n = 32
    geom = TiltGeometry.from_range(lo, hi, 2, (n, n))
    energy = _psf_energy(geom, n)
    total = energy.sum()
    own = (
        energy[wedge_mask((n, n, n), geom.tilt_angles_deg, missing=True, dtype=torch.bool)].sum()
        / total
    )
    mirrored = wedge_mask((n, n, n), -geom.tilt_angles_deg, missing=True, dtype=torch.bool)
    other = energy[mirrored].sum() / total
    # Measured: own 1.9 % / 1.3 % (leakage of the linear-interpolation projector near the wedge
    # edges), mirrored 20 % / 4.7 %.
    assert own < 0.03
    assert other > mirror_min
    assert other > 3 * own


def test_rotated_mask_follows_rotated_projector():
    """A particle seen as Rotation3D(R)(ref): its PSF in the reference frame obeys W(R k)."""
    n = 32
    geom = TiltGeometry.from_range(-40, 70, 2, (n, n))
    op = TiltProjector(geom, (n, n, n))
    delta = torch.zeros((n, n, n), dtype=torch.float64)
    delta[n // 2, n // 2, n // 2] = 1.0
    kx, ky, kz = fourier_grid_xyz((n, n, n))
    for r in random_rotations(2, rng=5):
        rot = Rotation3D((n, n, n), r)
        energy = torch.fft.fftn(rot.adjoint(op.adjoint(op(rot(delta))))).abs() ** 2
        # The energy of AᵀA is dominated by the tilt axis line (kx = kz = 0 in the tomogram
        # frame). Rotated off the grid, trilinear interpolation smears it onto neighbouring
        # frequencies whose direction about the axis is arbitrary; judge the wedge only
        # at least 2 frequency steps away from the rotated axis, inside the Nyquist sphere.
        t = torch.from_numpy(r)
        kx_t = t[0, 0] * kx + t[0, 1] * ky + t[0, 2] * kz
        kz_t = t[2, 0] * kx + t[2, 1] * ky + t[2, 2] * kz
        region = (torch.sqrt(kx_t**2 + kz_t**2) >= 2.0 / n) & (kx**2 + ky**2 + kz**2 <= 0.45**2)
        region = region.expand(energy.shape)

        def frac(
            mask: torch.Tensor, energy: torch.Tensor = energy, region: torch.Tensor = region
        ) -> float:
            return float(energy[mask & region].sum() / energy[region].sum())

        angles = geom.tilt_angles_deg
        own = frac(wedge_mask((n, n, n), angles, rotation_xyz=r, missing=True, dtype=torch.bool))
        mirrored = frac(
            wedge_mask((n, n, n), -angles, rotation_xyz=r, missing=True, dtype=torch.bool)
        )
        inverse = frac(
            wedge_mask((n, n, n), angles, rotation_xyz=r.T, missing=True, dtype=torch.bool)
        )
        # Measured: own 5.0 / 5.5 %, mirrored 26 / 28 %, the wrong direction Rᵀ 43 / 52 %.
        assert own < 0.1
        assert mirrored > 2.5 * own
        assert inverse > 4 * own


def test_quarter_turn_rotation_is_exact_grid_rotation():
    n = 17  # odd: centred grids map onto themselves under quarter turns
    angles = np.arange(-54.0, 67.0, 3.0)
    base = wedge_mask((n, n, n), angles, centered=True).numpy()
    for euler in [(90.0, 0.0, 0.0), (0.0, 90.0, 0.0), (0.0, 90.0, 90.0), (90.0, 90.0, -90.0)]:
        r = euler_zyz_to_matrix(*euler)
        rotated = wedge_mask((n, n, n), angles, rotation_xyz=r, centered=True).numpy()
        # mask(k) = W(R k) is the unrotated mask rotated (as an object) by Rᵀ.
        np.testing.assert_array_equal(rotated, rotate_volume(base, r.T, order=0))
    # Batched rotations lead the output shape and equal the single ones.
    rs = random_rotations(3, rng=1)
    batch = wedge_mask((8, 9, 10), angles, rotation_xyz=rs, rfft=True)
    assert batch.shape == (3, 8, 9, 6)
    torch.testing.assert_close(
        batch[2], wedge_mask((8, 9, 10), angles, rotation_xyz=rs[2], rfft=True)
    )


def test_tilt_axis_angle():
    n = 15
    angles = np.arange(-40.0, 71.0, 2.0)
    base = wedge_mask((n, n, n), angles, centered=True, dtype=torch.bool).numpy()
    # Axis turned by 180° in the xy plane = mirrored tilt range (docs/conventions.md).
    flipped = wedge_mask(
        (n, n, n), angles, tilt_axis_angle_deg=180.0, centered=True, dtype=torch.bool
    )
    np.testing.assert_array_equal(
        flipped.numpy(), wedge_mask((n, n, n), -angles, centered=True, dtype=torch.bool).numpy()
    )
    # Axis at +90° (along -x): the y-axis mask rotated as an object by the active in-plane
    # rotation Q taking +y to -x (RELION's passive Rz(-90)); on the array, rot90 with k=-1.
    quarter = wedge_mask(
        (n, n, n), angles, tilt_axis_angle_deg=90.0, centered=True, dtype=torch.bool
    ).numpy()
    q = euler_zyz_to_matrix(-90.0, 0.0, 0.0)
    np.testing.assert_allclose(q @ [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(quarter, rotate_volume(base.astype(np.float32), q, order=0) > 0.5)
    np.testing.assert_array_equal(quarter, np.rot90(base, k=-1, axes=(1, 2)))
    c = n // 2
    assert quarter[:, c, :][c].all()  # the kx line (the new axis) is measured
    assert not quarter[:, :, c].all()  # the ky line is no longer the axis
    # In the frame of a rotation, alpha is the in-plane rotation applied after R.
    r = random_rotations(1, rng=2)[0]
    a = wedge_mask((8, 8, 8), angles, tilt_axis_angle_deg=25.0, rotation_xyz=r)
    b = wedge_mask((8, 8, 8), angles, rotation_xyz=euler_zyz_to_matrix(25.0, 0.0, 0.0) @ r)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_soft_edges():
    shape = (24, 10, 24)
    angles = (-50.0, 60.0)
    hard = wedge_mask(shape, angles, centered=True, dtype=torch.float64)
    soft = wedge_mask(shape, angles, centered=True, soft_edge_deg=10.0, dtype=torch.float64)
    wider = wedge_mask(shape, (-60.0, 70.0), centered=True, dtype=torch.float64)
    assert torch.all(soft[hard == 1] == 1)  # full weight inside the range
    assert torch.all(soft[wider == 0] == 0)  # zero beyond the taper
    ramp = (soft > 0) & (soft < 1)
    assert ramp.any() and torch.all(wider[ramp] == 1) and torch.all(hard[ramp] == 0)
    missing = wedge_mask(
        shape, angles, centered=True, soft_edge_deg=10.0, missing=True, dtype=torch.float64
    )
    torch.testing.assert_close(missing, 1 - soft, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_device(device):
    m = wedge_mask((8, 9, 10), (-60, 50), rotation_xyz=random_rotations(2, rng=0), device=device)
    assert m.device.type == device
    ref = wedge_mask((8, 9, 10), (-60, 50), rotation_xyz=random_rotations(2, rng=0))
    torch.testing.assert_close(m.cpu(), ref)


def test_bad_input():
    with pytest.raises(ValueError, match="within \\[-90, 90\\]"):
        wedge_mask((8, 8, 8), [-1.2, 1.1, 100.0])
    with pytest.raises(ValueError, match="empty"):
        wedge_mask((8, 8, 8), [])
    with pytest.raises(ValueError, match="volume_shape"):
        wedge_mask((8, 8), [-60, 60])
    with pytest.raises(ValueError, match="soft_edge_deg"):
        wedge_mask((8, 8, 8), [-60, 60], soft_edge_deg=-1)
    with pytest.raises(ValueError, match="cannot be boolean"):
        wedge_mask((8, 8, 8), [-60, 60], soft_edge_deg=5, dtype=torch.bool)
    with pytest.raises(ValueError, match="tilt_axis_angle_deg"):
        wedge_mask((8, 8, 8), [-60, 60], tilt_axis_angle_deg=float("nan"))
    with pytest.raises(ValueError, match="not orthogonal"):
        wedge_mask((8, 8, 8), [-60, 60], rotation_xyz=2 * np.eye(3))
