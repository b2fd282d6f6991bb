"""Specimen thickness estimated from the z-extent of a coarse reconstruction's structure."""

from __future__ import annotations

import numpy as np
import pytest

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.recon.thickness import estimate_thickness
from cryowedge.simulate.phantoms import crowded_cell
from cryowedge.simulate.tilt_series import simulate_tilt_series


def _series(shape, slab_fraction, seed, roll_z=0):
    cell = crowded_cell(shape, slab_fraction=slab_fraction, n_particles=4, n_vesicles=1,
                        pixel_size_angstrom=10.0, rng=seed)
    volume = np.roll(cell.volume, roll_z, axis=0)
    geom = TiltGeometry.from_range(-60, 60, 3, shape[1:], pixel_size_angstrom=10.0)
    return simulate_tilt_series(volume, geom, snr=0.5, rng=seed).tilt_series, geom


@pytest.mark.parametrize("slab_fraction", [0.4, 0.7])
def test_estimate_brackets_the_slab_of_a_simulated_cell(slab_fraction):
    shape = (64, 64, 64)
    series, geom = _series(shape, slab_fraction, seed=1)
    est = estimate_thickness(series, geom)
    true = slab_fraction * shape[0]
    assert est.binning == 1
    assert abs(est.signal_thickness - true) <= 0.25 * true  # the structure's extent
    assert true <= est.thickness <= min(1.5 * true + 8, 64)  # holds the slab, not the box
    assert est.thickness % 8 == 0
    assert abs(est.z_offset) <= 3
    assert est.profile.shape == (64,)


def test_binned_estimate_and_an_off_centre_slab():
    shape = (64, 128, 128)
    series, geom = _series(shape, 0.3, seed=2, roll_z=10)  # slab centre at +10 voxels
    est = estimate_thickness(series, geom, target_width=64, multiple=16)
    assert est.binning == 2 and est.profile.shape == (64,)
    assert est.z_offset == pytest.approx(10, abs=4)
    # a volume centred on z = 0 must reach the slab's far surface at 10 + 9.6 voxels
    assert 2 * (10 + 0.3 * 64 / 2) <= est.thickness <= 64 + 16
    assert est.thickness % 16 == 0


def test_pure_noise_falls_back_to_width_or_stays_in_bounds():
    geom = TiltGeometry.from_range(-60, 60, 3, (32, 48))
    noise = np.random.default_rng(3).normal(size=geom.tilt_series_shape).astype(np.float32)
    est = estimate_thickness(noise, geom, minimum=16)
    assert 16 <= est.thickness <= 48


def test_bad_input_is_one_clear_line():
    geom = TiltGeometry.from_range(-60, 60, 3, (32, 32))
    series = np.zeros(geom.tilt_series_shape, dtype=np.float32)
    with pytest.raises(ValueError, match="match the geometry"):
        estimate_thickness(series[:-1], geom)
    with pytest.raises(ValueError, match="target_width"):
        estimate_thickness(series, geom, target_width=8)
    with pytest.raises(ValueError, match="fraction"):
        estimate_thickness(series, geom, fraction=1.5)
    with pytest.raises(ValueError, match="multiple"):
        estimate_thickness(series, geom, multiple=0)
    bad = series.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        estimate_thickness(bad, geom)


def test_reconstruct_file_without_thickness_uses_the_estimate(tmp_path):
    """The file workflow's default: the estimate (not the detector width), recorded."""
    import yaml

    from cryowedge.config.models import ReconstructConfig
    from cryowedge.io.mrc import read_mrc, write_mrc
    from cryowedge.io.tilt_files import write_tilt_angles
    from cryowedge.workflows.reconstruct import reconstruct_file

    series, geom = _series((64, 64, 64), 0.4, seed=3)
    write_mrc(tmp_path / "ts.mrc", series, voxel_size_angstrom=10.0)
    write_tilt_angles(tmp_path / "ts.tlt", geom.tilt_angles_deg)
    cfg = ReconstructConfig(method="fbp")
    out = reconstruct_file(tmp_path / "ts.mrc", tmp_path / "rec.mrc", cfg)
    volume = read_mrc(out).data
    expected = estimate_thickness(series, geom).thickness
    assert volume.shape == (expected, 64, 64) and expected < 64
    record = yaml.safe_load((tmp_path / "rec.run.yaml").read_text())
    assert record["parameters"]["thickness"] == expected
    assert record["parameters"]["thickness_estimated"]["thickness"] == expected
    # an explicit thickness is used as given and nothing is estimated
    out = reconstruct_file(tmp_path / "ts.mrc", tmp_path / "rec64.mrc", cfg.updated(thickness=64))
    assert read_mrc(out).data.shape == (64, 64, 64)
    assert "thickness_estimated" not in (tmp_path / "rec64.run.yaml").read_text()
