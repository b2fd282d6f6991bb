"""`reconstruct --exclude` (IMOD EXCLUDELIST) and `--bin` (block-mean binning), through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cryowedge._validation import parse_view_list
from cryowedge.cli import app
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import open_mrc_lazy, read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.io.views import ViewSubset, bin_images, binned_geometry, kept_views, read_views
from cryowedge.simulate.tilt_series import project_volume

ANGLES = np.arange(-60.0, 60.1, 6.0)  # 21 views
SHAPE = (16, 64, 64)  # (z, y, x) voxels
BLOB = (4, -10, 12)  # blob centre relative to the centre voxel, (z, y, x) voxels


def _blob_volume(shape: tuple[int, int, int], centre: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2 for n in shape), indexing="ij")
    r2 = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2
    return np.exp(-r2 / (2 * 2.0**2)).astype(np.float32)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 21-view ±60° stack (64×64 px at 5 Å) of one Gaussian blob, with its .tlt."""
    folder = tmp_path_factory.mktemp("views")
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=SHAPE[1:])
    data = project_volume(_blob_volume(SHAPE, BLOB), geom)
    write_mrc(folder / "ts.mrc", data, voxel_size_angstrom=5.0, image_stack=True)
    write_tilt_angles(folder / "ts.tlt", ANGLES)
    return folder


def _invoke(*args: str):
    return CliRunner().invoke(app, ["reconstruct", *args])


def _peak_position(volume: np.ndarray) -> np.ndarray:
    """Centroid ``(z, y, x)`` of the voxels above half the maximum, relative to the centre voxel."""
    weights = np.where(volume > 0.5 * volume.max(), volume, 0.0)
    grids = np.meshgrid(*(np.arange(n) - n // 2 for n in volume.shape), indexing="ij")
    return np.array([(g * weights).sum() / weights.sum() for g in grids])


# ------------------------------------------------------------------ pure functions
def test_parse_view_list_is_one_based_with_inclusive_ranges() -> None:
    assert parse_view_list("1,2,40-41").tolist() == [0, 1, 39, 40]
    assert parse_view_list(" 5 , 3-4,4 ").tolist() == [2, 3, 4]
    assert kept_views("1-3,5", 6).tolist() == [3, 5]
    for bad in ("", "1,,2", "a", "0", "3-1", "1.5", "-2"):
        with pytest.raises(ValueError, match="exclu|views"):
            parse_view_list(bad)
    with pytest.raises(ValueError, match="view 7 does not exist; the stack has views 1-6"):
        kept_views("2,7", 6)
    with pytest.raises(ValueError, match="excludes all 6 views"):
        kept_views("1-6", 6)


def test_bin_images_is_the_block_mean_and_geometry_scales() -> None:
    images = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    binned = bin_images(images, 2)
    assert binned.shape == (2, 2, 3)
    np.testing.assert_allclose(binned[1, 1, 2], images[1, 2:4, 4:6].mean())
    geom = TiltGeometry(tilt_angles_deg=[-3.0, 3.0], detector_shape=(40, 34),
                        pixel_size_angstrom=2.0, shifts_px=[[2.0, -4.0], [1.0, 3.0]])
    b = binned_geometry(geom, 2)
    assert b.detector_shape == (20, 17) and b.pixel_size_angstrom == 4.0
    np.testing.assert_allclose(b.shifts_px, [[1.0, -2.0], [0.5, 1.5]])
    with pytest.raises(ValueError, match="leaves 13×11 pixels"):
        binned_geometry(geom, 3)
    small = TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(8, 8))
    assert binned_geometry(small, 1) is small  # no binning: small images are fine


def test_view_subset_and_read_views_read_only_the_kept_views(stack: Path) -> None:
    lazy = open_mrc_lazy(stack / "ts.mrc")
    full = read_mrc(stack / "ts.mrc").data
    keep = np.array([0, 3, 4, 20])
    subset = ViewSubset(lazy, keep)
    assert subset.shape == (4, 64, 64)
    np.testing.assert_array_equal(subset[:, 10:20], full[keep, 10:20])
    np.testing.assert_array_equal(subset[1:3], full[[3, 4]])
    np.testing.assert_array_equal(subset[2], full[4])
    np.testing.assert_array_equal(np.asarray(subset), full[keep])
    np.testing.assert_allclose(read_views(lazy, keep, 2), bin_images(full[keep], 2), rtol=1e-6)


# ------------------------------------------------------------------ CLI
@pytest.mark.parametrize("slab", [None, "16"])
def test_exclude_drops_exactly_the_listed_views(stack: Path, tmp_path: Path, slab) -> None:
    out = tmp_path / "ex.mrc"
    extra = ["--slab", slab] if slab else []
    result = _invoke(str(stack / "ts.mrc"), str(out), "--thickness", "16",
                     "--exclude", "1,2,20-21", *extra)
    assert result.exit_code == 0, result.output
    params = yaml.safe_load(out.with_name("ex.run.yaml").read_text())["parameters"]
    assert params["exclude_views"] == "1,2,20-21"
    assert params["excluded_views"] == [1, 2, 20, 21]
    np.testing.assert_allclose(params["geometry"]["tilt_angles_deg"], ANGLES[2:19])
    # the same as reconstructing the reduced stack directly
    direct = tmp_path / "direct"
    direct.mkdir()
    write_mrc(direct / "ts.mrc", read_mrc(stack / "ts.mrc").data[2:19], voxel_size_angstrom=5.0,
              image_stack=True)
    write_tilt_angles(direct / "ts.tlt", ANGLES[2:19])
    result = _invoke(str(direct / "ts.mrc"), str(direct / "d.mrc"), "--thickness", "16", *extra)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_mrc(out).data, read_mrc(direct / "d.mrc").data, atol=1e-5)


def test_bin_two_halves_the_volume_and_keeps_the_blob_in_place(stack: Path, tmp_path: Path) -> None:
    full, binned = tmp_path / "full.mrc", tmp_path / "bin2.mrc"
    for out, extra in ((full, ["--thickness", "16"]), (binned, ["--thickness", "8", "--bin", "2"])):
        result = _invoke(str(stack / "ts.mrc"), str(out), "--filter", "hann", *extra)
        assert result.exit_code == 0, result.output
    v_full, v_bin = read_mrc(full), read_mrc(binned)
    assert v_bin.data.shape == (8, 32, 32)
    assert v_bin.voxel_size_angstrom == pytest.approx((10.0, 10.0, 10.0))
    assert v_full.voxel_size_angstrom == pytest.approx((5.0, 5.0, 5.0))
    peak_full = _peak_position(v_full.data)
    peak_bin = _peak_position(v_bin.data)
    np.testing.assert_allclose(peak_full, BLOB, atol=0.5)
    # same physical place; the binned grid sits (f-1)/2 = 0.5 raw px (0.25 binned) off centre
    np.testing.assert_allclose(peak_bin, np.array(BLOB) / 2, atol=0.5)
    params = yaml.safe_load(binned.with_name("bin2.run.yaml").read_text())["parameters"]
    assert params["bin_factor"] == 2
    assert params["geometry"]["pixel_size_angstrom"] == 10.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--exclude", "3,22"], "view 22 does not exist; the stack has views 1-21"),
        (["--exclude", "1-21"], "excludes all 21 views"),
        (["--exclude", "1;2"], "cannot read '1;2'"),
        (["--exclude", "5-2"], "runs backwards"),
        (["--bin", "5"], "at least 16 are needed"),
        (["--bin", "0"], "bin_factor"),
    ],
)
def test_bad_views_or_bin_give_one_line_and_no_output(stack: Path, tmp_path: Path, args,
                                                       message) -> None:
    out = tmp_path / "bad.mrc"
    result = _invoke(str(stack / "ts.mrc"), str(out), *args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("error:") == 1
    assert not out.exists() and not out.with_name("bad.run.yaml").exists()
