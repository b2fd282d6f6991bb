"""The check of a defaulted tilt axis: held-out views tell a quarter-turn error, not the hand.

Simulated raw stacks with a known axis are checked with the right angle assumed (no
warning) and a quarter turn off (warning naming the true line); the CLI shows the warning
and records the check; the real needle series (axis along X) warns at the default 0°.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml
from conftest import TEST_DATA, shared_data
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.simulate import phantoms
from cryowedge.simulate.tilt_series import simulate_tilt_series
from cryowedge.workflows.axis_check import (
    AxisCheck,
    axis_candidates,
    check_defaulted_axis,
    check_tilt_axis,
)

runner = CliRunner()
ANGLES = np.arange(-60.0, 60.1, 4.0)  # 31 views


def _same_line(a: float, b: float) -> bool:
    d = (a - b) % 180.0
    return min(d, 180.0 - d) < 1e-6


def _raw_stack(volume: np.ndarray, axis_deg: float, snr: float | None, seed: int = 0):
    """A raw stack of ``volume`` ``(z, y, x)`` whose tilt axis lies at ``axis_deg``."""
    _, ny, nx = volume.shape
    det = (ny, nx) if round(axis_deg / 90.0) % 2 == 0 else (nx, ny)
    geom = TiltGeometry(ANGLES, det, pixel_size_angstrom=10.0, tilt_axis_angle_deg=axis_deg)
    return simulate_tilt_series(volume, geom, snr=snr, rng=seed).tilt_series, geom


@pytest.fixture(scope="module")
def specimens() -> dict[str, np.ndarray]:
    return {
        "spheres": phantoms.hollow_spheres((24, 64, 64), rng=1),
        "shepp-logan": phantoms.shepp_logan_3d((40, 64, 64)),
    }


def test_axis_candidates_are_the_quarter_turns():
    assert axis_candidates(0.0) == (0.0, 90.0, -90.0)
    assert axis_candidates(90.0) == (90.0, 180.0, 0.0)
    assert axis_candidates(-90.0) == (-90.0, 0.0, 180.0)
    assert axis_candidates(85.3) == pytest.approx((85.3, 175.3, -4.7))


@pytest.mark.parametrize("true_axis", [0.0, 90.0])
@pytest.mark.parametrize(("name", "snr"), [("spheres", 1.0), ("shepp-logan", None)])
def test_right_axis_passes_and_a_quarter_turn_off_warns(specimens, name, snr, true_axis):
    data, geom = _raw_stack(specimens[name], true_axis, snr)
    right = check_tilt_axis(data, geom)
    assert right.conclusive and not right.disagrees
    assert right.best_deg == true_axis  # the assumed (true) angle scores highest
    assert right.t_statistic < 0  # no other angle predicts the held-out views better

    wrong = check_tilt_axis(data, geom.with_(tilt_axis_angle_deg=true_axis + 90.0))
    assert wrong.disagrees, wrong
    assert _same_line(wrong.alternative_deg, true_axis)
    assert wrong.score_of(wrong.alternative_deg) > wrong.score_of(wrong.assumed_deg) + 0.05
    assert wrong.win_fraction >= 0.8 and wrong.t_statistic >= 5


def test_an_off_quarter_raw_axis_points_to_the_nearest_quarter_turn(specimens):
    """A SerialEM-like 85.3° axis defaulted to 0°: the hint is the ±90° line."""
    vol = specimens["spheres"]
    geom = TiltGeometry(ANGLES, (64, 64), pixel_size_angstrom=10.0, tilt_axis_angle_deg=85.3)
    n_axis, n_perp = geom.aligned_detector_shape
    pad = [
        (0, 0),
        ((n_axis - 64) // 2, (n_axis - 64 + 1) // 2),
        ((n_perp - 64) // 2, (n_perp - 64 + 1) // 2),
    ]
    data = simulate_tilt_series(np.pad(vol, pad), geom, snr=1.0, rng=2).tilt_series
    check = check_tilt_axis(data, geom.with_(tilt_axis_angle_deg=0.0))
    assert check.disagrees and _same_line(check.alternative_deg, 90.0)


class _CountingStack:
    """``(n, ny, nx)`` array that records what is read (as a lazy MRC would)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.keys = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]


def test_reads_only_a_subset_of_views_and_the_central_square(specimens):
    data, geom = _raw_stack(specimens["spheres"], 90.0, None)
    wide = np.pad(data, ((0, 0), (0, 0), (8, 8)))  # (31, 64, 80): a non-square detector
    geom = geom.with_(detector_shape=wide.shape[1:], tilt_axis_angle_deg=0.0)
    stack = _CountingStack(wide)
    check = check_tilt_axis(stack, geom, max_views=16)
    views = [key[0] for key in stack.keys]
    assert len(views) == 16 == check.n_train + check.n_held_out
    assert views == sorted(views) and len(set(views)) == 16  # angle order, each once
    assert {(k[1].start, k[1].stop, k[2].start, k[2].stop) for k in stack.keys} == {(0, 64, 8, 72)}
    assert check.disagrees and _same_line(check.alternative_deg, 90.0)


def test_too_small_series_is_inconclusive_not_an_error():
    geom = TiltGeometry(np.arange(-15.0, 16.0, 5.0), (64, 64))  # 7 views
    check = check_tilt_axis(np.random.default_rng(0).random((7, 64, 64)), geom)
    assert not check.conclusive and not check.disagrees and "7 views" in check.note
    assert np.isnan(check.scores).all()
    small = TiltGeometry(ANGLES, (24, 40))
    check = check_tilt_axis(np.zeros((ANGLES.size, 24, 40)), small)
    assert not check.conclusive and "24 px" in check.note


def test_bad_input_is_refused():
    geom = TiltGeometry(ANGLES, (64, 64))
    with pytest.raises(ValueError, match="to match the geometry"):
        check_tilt_axis(np.zeros((ANGLES.size, 64, 60)), geom)
    with pytest.raises(ValueError, match="target_size"):
        check_tilt_axis(np.zeros((ANGLES.size, 64, 64)), geom, target_size=8)
    with pytest.raises(ValueError, match="nothing to compare"):
        check_tilt_axis(np.zeros((ANGLES.size, 64, 64)), geom, candidates_deg=(0.0, 180.0))


def test_check_defaulted_axis_only_for_a_defaulted_axis(specimens, caplog):
    data, geom = _raw_stack(specimens["spheres"], 90.0, 1.0)
    assumed0 = geom.with_(tilt_axis_angle_deg=0.0)
    assert check_defaulted_axis(data, assumed0, defaulted=False) is None
    assert check_defaulted_axis(data, assumed0, defaulted=True, enabled=False) is None
    with caplog.at_level(logging.WARNING, logger="cryowedge"):
        check = check_defaulted_axis(data, assumed0, defaulted=True)
    assert isinstance(check, AxisCheck) and check.disagrees
    message = caplog.records[-1].getMessage()
    assert "tilt axis 0° was assumed" in message
    assert f"rerun with --tilt-axis-angle {check.alternative_deg:g}" in message
    record = check.to_record()
    assert record["disagrees"] is True and record["candidates_deg"] == [0.0, 90.0, -90.0]
    yaml.safe_dump(record)  # plain types only


def test_tilt_axis_source(tmp_path):
    write_mrc(tmp_path / "ts.mrc", np.zeros((7, 16, 16), np.float32), voxel_size_angstrom=2.0)
    write_tilt_angles(tmp_path / "ts.tlt", np.arange(-9.0, 10.0, 3.0))
    assert load_tilt_series(tmp_path / "ts.mrc").tilt_axis_source == "default"
    given = load_tilt_series(tmp_path / "ts.mrc", tilt_axis_angle_deg=0.0)
    assert given.tilt_axis_source == "argument"
    mdoc = load_tilt_series(tmp_path / "ts.mrc", TEST_DATA / "synthetic_tilt.mdoc")
    assert mdoc.tilt_axis_source == "mdoc" and mdoc.geometry.tilt_axis_angle_deg == 85.3


@pytest.fixture(scope="module")
def axis90_stack(tmp_path_factory, specimens):
    out = tmp_path_factory.mktemp("axis90")
    data, geom = _raw_stack(specimens["spheres"], 90.0, 1.0)
    write_mrc(out / "ts.mrc", data, voxel_size_angstrom=10.0)
    write_tilt_angles(out / "ts.tlt", geom.tilt_angles_deg)
    return out


def test_cli_warns_about_a_defaulted_axis_and_records_the_check(axis90_stack, tmp_path):
    args = ["reconstruct", str(axis90_stack / "ts.mrc"), "--thickness", "24"]
    result = runner.invoke(app, [*args, str(tmp_path / "a.mrc")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "tilt axis 0° was assumed" in text and "rerun with --tilt-axis-angle" in text
    recorded = yaml.safe_load((tmp_path / "a.run.yaml").read_text())["parameters"]
    check = recorded["tilt_axis_check"]
    assert check["disagrees"] and _same_line(check["best_deg"], 90.0)

    given = runner.invoke(app, [*args, str(tmp_path / "b.mrc"), "--tilt-axis-angle", "90"])
    assert given.exit_code == 0, given.output
    assert "was assumed" not in given.output
    assert (
        "tilt_axis_check" not in yaml.safe_load((tmp_path / "b.run.yaml").read_text())["parameters"]
    )

    off = runner.invoke(app, [*args, str(tmp_path / "c.mrc"), "--no-check-tilt-axis"])
    assert off.exit_code == 0, off.output
    assert "was assumed" not in off.output


@pytest.mark.realdata
def test_real_needle_with_the_default_axis_warns():
    """The aligned needle has its axis along X; at the default 0° the check names ±90°."""
    path = shared_data("etspy_HAADF_needle_aligned.mrc")
    series = load_tilt_series(path, path.with_suffix(".tlt"), lazy=True)
    assert series.tilt_axis_source == "default" and series.geometry.tilt_axis_angle_deg == 0.0
    check = check_tilt_axis(series.data, series.geometry)
    assert check.disagrees and check.alternative_deg in (90.0, -90.0)
    assert check.alternative_deg == -90.0  # the centring of this series (docs/conventions.md)
    assert check.win_fraction == 1.0 and check.t_statistic > 10  # measured 18.9
    right = check_tilt_axis(series.data, series.geometry.with_(tilt_axis_angle_deg=-90.0))
    assert not right.disagrees and right.t_statistic < 0
