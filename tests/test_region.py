"""Regions of a reconstruction: ROI in x/y, z offset, X-axis tilt (IMOD SLICE/WIDTH/SHIFT,
XAXISTILT, XTILTFILE), in memory, streamed and through ``cryowedge reconstruct``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.region import (
    ReconstructionRegion,
    plan_region,
    x_axis_tilt_from_xtilt,
)
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.operators.rotation import Rotation3D
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.workflows.reconstruct import reconstruct_array
from cryowedge.workflows.region import (
    RowWindow,
    reconstruct_region,
    reconstruct_region_streamed,
    rotate_to_output,
)

#: FBP of a region and the crop of the full FBP run the same float32 arithmetic per voxel up
#: to the order of one addition (x·cos θ + shift): they agree to float32 rounding.
EXACT = 1e-5
FBP = {"method": "fbp", "device": "cpu"}


def _random_box(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    nz, ny, nx = shape
    vol[nz // 4 : 3 * nz // 4, 4 : ny - 4, 6 : nx - 6] = rng.random(
        (3 * nz // 4 - nz // 4, ny - 8, nx - 12)
    )
    return vol


@pytest.fixture(scope="module")
def aligned() -> tuple[np.ndarray, TiltGeometry]:
    """A ±60° (3°) series of a random box, 40 rows × 48 columns, tilt axis along Y."""
    geom = TiltGeometry.from_range(-60, 60, 3, (40, 48))
    vol = _random_box((24, 40, 48))
    return TiltProjector(geom, vol.shape)(torch.from_numpy(vol)).numpy(), geom


# ------------------------------------------------------------------ ROI and z offset
@pytest.mark.parametrize("roi", [(10, 7, 20, 16), (0, 0, 48, 40), (47, 39, 1, 1), (5, 0, 17, 40)])
def test_roi_equals_crop_of_full_fbp(aligned, roi) -> None:
    data, geom = aligned
    cfg = ReconstructConfig(thickness=24, **FBP)
    full = reconstruct_array(data, geom, cfg)
    x0, y0, nx, ny = roi
    out = reconstruct_region(data, geom, cfg, ReconstructionRegion(roi=roi))
    assert out.shape == (24, ny, nx)
    np.testing.assert_allclose(out, full[:, y0 : y0 + ny, x0 : x0 + nx], atol=EXACT)


def test_roi_of_a_raw_geometry_equals_crop() -> None:
    """Tilt axis along X (−90°) and integer per-view shifts: the region is cut from the series
    resampled into the aligned frame, exactly as the full FBP resamples it."""
    rng = np.random.default_rng(1)
    geom = TiltGeometry.from_range(-60, 60, 4, (48, 40), tilt_axis_angle_deg=-90.0)
    geom = geom.with_(shifts_px=rng.integers(-2, 3, (geom.n_tilts, 2)).astype(float))
    vol = _random_box((20, 40, 48), seed=2)
    data = TiltProjector(geom, vol.shape)(torch.from_numpy(vol)).numpy()
    cfg = ReconstructConfig(thickness=20, **FBP)
    full = reconstruct_array(data, geom, cfg)
    for roi in [(10, 0, 20, 40), (9, 7, 21, 16)]:
        x0, y0, nx, ny = roi
        out = reconstruct_region(data, geom, cfg, ReconstructionRegion(roi=roi))
        np.testing.assert_allclose(out, full[:, y0 : y0 + ny, x0 : x0 + nx], atol=EXACT)


@pytest.mark.parametrize("dz", [5, -3])
def test_z_offset_equals_crop_of_thicker_volume(aligned, dz) -> None:
    data, geom = aligned
    thick = reconstruct_array(data, geom, ReconstructConfig(thickness=40, **FBP))
    out = reconstruct_region(
        data, geom, ReconstructConfig(thickness=24, **FBP), ReconstructionRegion(z_offset=dz)
    )
    start = 40 // 2 - 24 // 2 + dz  # centred z of section k is k − 12 + dz
    np.testing.assert_allclose(out, thick[start : start + 24], atol=EXACT)


def test_z_offset_is_height_above_the_tilt_axis() -> None:
    """A bead 6 voxels above the axis (+z, towards the source) is in the centre section of a
    reconstruction with --z-offset 6 (IMOD SHIFT z has the same sign), and half a section
    above it with --z-offset 5.5 (a fractional offset is a sub-voxel shift, not rounded)."""
    geom = TiltGeometry.from_range(-60, 60, 3, (32, 32))
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2 for n in (32, 32, 32)), indexing="ij")
    bead = np.exp(-((z - 6) ** 2 + y**2 + (x + 3) ** 2) / (2 * 1.5**2)).astype(np.float32)
    data = TiltProjector(geom, bead.shape)(torch.from_numpy(bead)).numpy()
    cfg = ReconstructConfig(thickness=12, **FBP)
    out = reconstruct_region(data, geom, cfg, ReconstructionRegion(z_offset=6))
    assert np.unravel_index(np.argmax(out), out.shape) == (12 // 2, 16, 16 - 3)
    column = reconstruct_region(data, geom, cfg, ReconstructionRegion(z_offset=5.5))[:, 16, 13]
    top = column[4:9] - column[4:9].min()  # the peak and two sections each side
    centroid = float((top * np.arange(4, 9)).sum() / top.sum())
    assert centroid == pytest.approx(12 // 2 + 0.5, abs=0.15)


# ------------------------------------------------------------------ X-axis tilt
def _tilted_bead_layer(alpha_deg: float, n: int = 64, nz_lab: int = 48, seed: int = 3):
    """Beads on the output plane z = 0, placed in the lab frame that --x-axis-tilt alpha
    undoes: output (y, 0) is lab (y cos α, −y sin α)."""
    rng = np.random.default_rng(seed)
    ys, xs = rng.uniform(-24, 24, 16), rng.uniform(-24, 24, 16)
    a = np.deg2rad(alpha_deg)
    z, y, x = np.meshgrid(*(np.arange(m) - m // 2 for m in (nz_lab, n, n)), indexing="ij")
    lab = np.zeros(z.shape, np.float32)
    for yb, xb in zip(ys, xs, strict=True):
        r2 = (z + yb * np.sin(a)) ** 2 + (y - yb * np.cos(a)) ** 2 + (x - xb) ** 2
        lab += np.exp(-r2 / 2.0).astype(np.float32)
    return lab, ys, xs


def test_x_axis_tilt_flattens_a_tilted_bead_layer() -> None:
    """Every bead of a layer tilted by 10° about x peaks in the centre section with
    --x-axis-tilt 10; without it (or with −10) they spread over z."""
    alpha, n, nz = 10.0, 64, 24
    lab, ys, xs = _tilted_bead_layer(alpha, n)
    geom = TiltGeometry.from_range(-60, 60, 3, (n, n))
    data = TiltProjector(geom, lab.shape)(torch.from_numpy(lab)).numpy()
    cfg = ReconstructConfig(thickness=nz, filter_name="hann", **FBP)
    columns = [
        (int(round(yb)) + n // 2, int(round(xb)) + n // 2) for yb, xb in zip(ys, xs, strict=True)
    ]

    def bead_heights(a: float) -> np.ndarray:
        out = reconstruct_region(data, geom, cfg, ReconstructionRegion(x_axis_tilt_deg=a))
        assert out.shape == (nz, n, n)
        return np.array([int(np.argmax(out[:, j, i])) - nz // 2 for j, i in columns])

    assert np.abs(bead_heights(alpha)).max() == 0
    assert np.abs(bead_heights(0.0)).max() >= 3
    assert np.abs(bead_heights(-alpha)).max() > np.abs(bead_heights(0.0)).max()


def test_x_axis_tilt_resampling_is_rotation3d_about_x() -> None:
    """The (y, z) bilinear resampling equals Rotation3D's trilinear rotation about x by +α
    (x-taps of weight 0), about the tilt axis at the full tomogram's centre row."""
    alpha, n = 8.0, 32
    geom = TiltGeometry.from_range(-60, 60, 6, (n, n))
    for region in (
        ReconstructionRegion(x_axis_tilt_deg=alpha),
        ReconstructionRegion(roi=(4, 6, 20, 18), x_axis_tilt_deg=-alpha),
    ):
        plan = plan_region(geom, region, (12, n, n))
        lab = torch.from_numpy(np.random.default_rng(4).random(plan.lab_shape).astype(np.float32))
        out = rotate_to_output(lab, plan)
        a = np.deg2rad(region.x_axis_tilt_deg)
        rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        nz_lab, _, nx = plan.lab_shape
        cz = nz_lab // 2 - plan.lab_centre_zx[0]  # lab index of the tilt axis (z = 0)
        cy = n // 2 - plan.lab_rows[0]  # lab index of the full tomogram's centre row
        ref = Rotation3D(plan.lab_shape, rot_x, center=(cz, cy, nx // 2))(lab)
        x0, y0 = (0, 0) if region.roi is None else region.roi[:2]
        k0, j0 = int(cz) - 12 // 2, y0 - plan.lab_rows[0]
        ny = plan.output_shape[1]
        # the output box lies inside the lab grid here, so the same-shape rotation holds it
        assert 0 <= j0 and j0 + ny <= plan.lab_shape[1] and 0 <= k0
        np.testing.assert_allclose(out.numpy(), ref[k0 : k0 + 12, j0 : j0 + ny].numpy(), atol=1e-5)


def test_xtilt_file_acts_as_minus_its_mean(caplog) -> None:
    """IMOD tilt uses alpha = xtilt − XAXISTILT and rotates by −alpha: a .xtilt value a acts
    as XAXISTILT −a; differing values are averaged with a warning."""
    assert x_axis_tilt_from_xtilt(np.full(5, -2.0)) == pytest.approx(2.0)
    assert x_axis_tilt_from_xtilt(np.full(5, 1.0), 3.0) == pytest.approx(2.0)
    with caplog.at_level(logging.WARNING):
        assert x_axis_tilt_from_xtilt(np.array([1.0, 1.2])) == pytest.approx(-1.1)
    assert "differ" in caplog.text


# ------------------------------------------------------------------ streaming
def test_streamed_region_equals_in_memory(aligned, tmp_path) -> None:
    data, geom = aligned
    cfg = ReconstructConfig(thickness=24, **FBP)
    for region in (
        ReconstructionRegion(roi=(10, 7, 20, 16), z_offset=3),
        ReconstructionRegion(roi=(10, 7, 20, 16), x_axis_tilt_deg=4.0),
    ):
        plan = plan_region(geom, region, (24, 40, 48))
        path = tmp_path / "region.mrc"
        reconstruct_region_streamed(data, geom, path, cfg, plan=plan, slab_rows=5)
        streamed = read_mrc(path)
        np.testing.assert_allclose(
            streamed.data, reconstruct_region(data, geom, cfg, region), atol=EXACT
        )
        x0, y0 = region.roi[:2]
        assert streamed.origin_angstrom == pytest.approx((-region.z_offset, -y0, -x0))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["region.mrc"]  # temporaries gone


def test_row_window_reads_only_its_rows() -> None:
    base = np.arange(3 * 10 * 4, dtype=np.float32).reshape(3, 10, 4)
    win = RowWindow(base, 2, 7)
    assert win.shape == (3, 5, 4)
    np.testing.assert_array_equal(np.asarray(win), base[:, 2:7])
    np.testing.assert_array_equal(win[1, 1:3], base[1, 3:5])
    np.testing.assert_array_equal(win[:, -1], base[:, 6])
    with pytest.raises(ValueError, match="rows"):
        RowWindow(base, 5, 11)


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, aligned) -> Path:
    data, geom = aligned
    folder = tmp_path_factory.mktemp("region")
    write_mrc(folder / "ts.mrc", data, voxel_size_angstrom=5.0, image_stack=True)
    write_tilt_angles(folder / "ts.tlt", geom.tilt_angles_deg)
    np.savetxt(folder / "ts.xtilt", np.full(geom.n_tilts, -2.0), fmt="%.2f")
    return folder


def _invoke(folder: Path, *args: str):
    return CliRunner().invoke(
        app, ["reconstruct", str(folder / "ts.mrc"), *args, "--thickness", "24", "--device", "cpu"]
    )


def test_cli_xtilt_file_and_roi(stack, aligned) -> None:
    """--xtilt with values −2 equals --x-axis-tilt 2; the ROI's origin and the region are
    recorded."""
    data, geom = aligned
    out = stack / "xtilt.mrc"
    xtilt = str(stack / "ts.xtilt")
    result = _invoke(stack, str(out), *"--roi 10 7 20 16 --z-offset 2 --xtilt".split(), xtilt)
    assert result.exit_code == 0, result.output
    written = read_mrc(out)
    expected = reconstruct_region(
        data,
        geom,
        ReconstructConfig(thickness=24, **FBP),
        ReconstructionRegion(roi=(10, 7, 20, 16), z_offset=2, x_axis_tilt_deg=2.0),
    )
    np.testing.assert_allclose(written.data, expected, atol=EXACT)
    assert written.origin_angstrom == pytest.approx((-10.0, -35.0, -50.0))  # −(2, 7, 10)·5 Å
    record = yaml.safe_load((stack / "xtilt.run.yaml").read_text())["parameters"]
    assert record["region"]["x_axis_tilt_deg"] == pytest.approx(2.0)
    assert record["region"]["roi"] == [10, 7, 20, 16]
    assert record["region"]["xtilt"].endswith("ts.xtilt")


def test_cli_roi_after_bin_is_in_binned_voxels(stack) -> None:
    ok = _invoke(stack, str(stack / "bin.mrc"), "--bin", "2", "--roi", "4", "2", "20", "18")
    assert ok.exit_code == 0, ok.output
    assert read_mrc(stack / "bin.mrc").data.shape == (24, 18, 20)
    bad = _invoke(stack, str(stack / "bin_bad.mrc"), "--bin", "2", "--roi", "10", "0", "20", "4")
    assert bad.exit_code == 2
    assert "24 × 20 (x × y)" in bad.output and "X0 + NX must be <= 24" in bad.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--roi", "40", "7", "20", "16"], "outside the 48 × 40 (x × y) tomogram"),
        (["--roi", "0", "30", "10", "11"], "Y0 + NY <= 40"),
        (["--roi", "-1", "0", "10", "10"], "start must be >= 0"),
        (["--roi", "0", "0", "0", "10"], "sizes >= 1"),
        (["--x-axis-tilt", "45"], "beyond ±30 degrees"),
        (["--z-offset", "400"], "moves the 24-section volume off the data"),
    ],
)
def test_cli_bad_region_is_one_line_before_any_work(stack, args, message) -> None:
    out = stack / "bad.mrc"
    result = _invoke(stack, str(out), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_xtilt_with_another_view_count_is_refused(stack) -> None:
    (stack / "short.xtilt").write_text("0\n0\n")
    result = _invoke(stack, str(stack / "short.mrc"), "--xtilt", str(stack / "short.xtilt"))
    assert result.exit_code == 2
    assert "2 X-tilt values but the tilt series has 41 views" in result.output


def test_z_offset_message_names_the_offsets_that_work(aligned) -> None:
    data, geom = aligned
    with pytest.raises(ValueError, match=r"use a z offset between -\d+ and \d+ voxels"):
        plan_region(geom, ReconstructionRegion(z_offset=-100), (24, 40, 48))
    plan_region(geom, ReconstructionRegion(z_offset=20), (24, 40, 48))  # thick enough: accepted
