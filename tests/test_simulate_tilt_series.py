"""Tilt-series simulation: noise levels, even/odd independence, oversampling, CTF, errors."""

from __future__ import annotations

import numpy as np
import pytest

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.simulate.tilt_series import project_volume, simulate_tilt_series


@pytest.fixture
def blob():
    z, y, x = np.mgrid[:16, :20, :24]
    return np.exp(-((z - 8) ** 2 + (y - 10) ** 2 + (x - 11) ** 2) / 12.0).astype(np.float32)


def test_gaussian_snr_and_determinism(blob):
    geom = TiltGeometry.from_range(-60, 60, 3, (20, 24))
    a = simulate_tilt_series(blob, geom, snr=0.5, rng=7)
    b = simulate_tilt_series(blob, geom, snr=0.5, rng=7)
    np.testing.assert_array_equal(a.tilt_series, b.tilt_series)
    noise = a.tilt_series - a.clean
    assert np.var(a.clean) / np.var(noise) == pytest.approx(0.5, rel=0.05)


def test_even_odd_halves_are_independent_half_dose(blob):
    geom = TiltGeometry.from_range(-60, 60, 3, (20, 24))
    sim = simulate_tilt_series(blob, geom, snr=1.0, even_odd=True, rng=1)
    n_even, n_odd = sim.even - sim.clean, sim.odd - sim.clean
    assert abs(np.corrcoef(n_even.ravel(), n_odd.ravel())[0, 1]) < 0.02
    # each half has twice the noise variance of the full series (half the dose)
    assert np.var(n_even) / np.var(sim.tilt_series - sim.clean) == pytest.approx(2.0, rel=0.06)
    np.testing.assert_allclose(0.5 * (sim.even + sim.odd), sim.tilt_series, atol=1e-6)


def test_oversampled_projection_is_close_but_not_identical(blob):
    geom = TiltGeometry.from_range(-60, 60, 10, (20, 24))
    exact = TiltProjector(geom, blob.shape)(__import__("torch").from_numpy(blob)).numpy()
    fine = project_volume(blob, geom, oversample=2)
    assert np.corrcoef(exact.ravel(), fine.ravel())[0, 1] > 0.99
    assert fine.sum() == pytest.approx(exact.sum(), rel=0.02)  # same line-integral units
    assert not np.allclose(exact, fine)


def test_poisson_and_ctf_paths(blob):
    geom = TiltGeometry.from_range(-30, 30, 10, (20, 24), pixel_size_angstrom=4.0)
    sim = simulate_tilt_series(blob, geom, dose_e_per_angstrom2=50.0, rng=0)
    assert np.isfinite(sim.tilt_series).all() and np.isnan(sim.noise_sigma).all()
    ctf = simulate_tilt_series(blob, geom, defocus_angstrom=20000.0, rng=0)
    assert not np.allclose(ctf.clean, project_volume(blob, geom))


def test_bad_simulation_input(blob):
    geom = TiltGeometry.from_range(-30, 30, 10, (20, 24))
    with pytest.raises(ValueError, match="snr must be > 0"):
        simulate_tilt_series(blob, geom, snr=-1)
    with pytest.raises(ValueError, match="either snr"):
        simulate_tilt_series(blob, geom, snr=1, dose_e_per_angstrom2=3)
    with pytest.raises(ValueError, match="got 2D"):
        simulate_tilt_series(blob[0], geom)


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("shape", [(16, 6, 20), (15, 5, 21)])  # even and odd sizes
def test_oversampled_point_projects_to_analytic_position(k, shape):
    """A point's projected centroid sits at ``u = x·cosθ + z·sinθ`` for every oversampling.

    The fine grid must rotate about the same physical centre as the coarse one (pixel
    ``N // 2``); an off-centre fine centre moves the centroid by a tilt-dependent amount.
    """
    nz, ny, nx = shape
    dz, dy, dx = 3, 1, -4  # centred voxel position
    vol = np.zeros(shape, np.float32)
    vol[nz // 2 + dz, ny // 2 + dy, nx // 2 + dx] = 1.0
    angles = np.arange(-70.0, 70.1, 10.0)
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=(ny, nx))
    proj = project_volume(vol, geom, oversample=k).astype(np.float64)
    cols = np.arange(nx) - nx // 2
    rows = np.arange(ny) - ny // 2
    for t, theta in enumerate(np.deg2rad(angles)):
        image = proj[t]
        assert image.sum() == pytest.approx(1.0, rel=1e-4)  # mass conserved
        u = (image.sum(axis=0) * cols).sum() / image.sum()
        v = (image.sum(axis=1) * rows).sum() / image.sum()
        assert u == pytest.approx(dx * np.cos(theta) + dz * np.sin(theta), abs=0.05), angles[t]
        assert v == pytest.approx(dy, abs=0.05)


def test_oversampled_projection_refuses_per_view_matrices():
    import numpy as np
    import pytest

    from cryowedge.geometry.tilt import TiltGeometry
    from cryowedge.simulate.tilt_series import project_volume

    rot = np.array([[[0.0, -1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    geom = TiltGeometry(tilt_angles_deg=[-30.0, 30.0], detector_shape=(8, 8), view_matrices=rot)
    with pytest.raises(ValueError, match="per-view matrices"):
        project_volume(np.zeros((4, 8, 8), np.float32), geom, oversample=2)
