"""Output orientation (xy like trimvol -rx; xz like IMOD tilt) and --threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.orientation import orient_volume, reorient_mrc_file
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.tilt_series import project_volume
from cryowedge.utils.device import cpu_threads


def test_xz_layout_obeys_imods_tilt_equation() -> None:
    """A point of the tomogram, found in the xz file, projects where IMOD's tilt.f90 says:
    column ``u = x cos θ − zz sin θ`` with ``zz`` the centred row of the XZ slice (its sine is
    negated), which is where cryowedge's projector puts it."""
    nz, ny, nx = 9, 4, 33
    volume = np.zeros((nz, ny, nx), np.float32)
    z, x = 3, 20  # indices; centred: z - nz//2 = -1, x - nx//2 = 4
    volume[z, 2, x] = 1.0
    xz = orient_volume(volume, "xz")
    assert xz.shape == (ny, nz, nx)
    section, row, col = np.argwhere(xz == 1.0)[0]
    assert (section, col) == (2, x)
    zz = row - (nz - 1) / 2  # IMOD's centred row of the XZ slice
    theta = 30.0
    geom = TiltGeometry(np.array([theta]), (ny, nx))
    proj = project_volume(volume, geom)[0, 2]
    u_ours = np.sum(np.arange(nx) * proj) / proj.sum() - nx // 2
    t = np.deg2rad(theta)
    u_imod = (col - nx // 2) * np.cos(t) - zz * np.sin(t)
    assert u_ours == pytest.approx(u_imod, abs=1e-4)
    # and clip rotx (output section k = input row ny - 1 - k) maps it back exactly
    back = np.stack([xz[:, nz - 1 - k, :] for k in range(nz)])
    np.testing.assert_array_equal(back, volume)


def test_reorient_file_in_chunks_keeps_voxel_size(tmp_path) -> None:
    volume = np.random.default_rng(0).random((6, 11, 5)).astype(np.float32)
    write_mrc(tmp_path / "a.mrc", volume, voxel_size_angstrom=4.5, origin_angstrom=(1, 2, 3))
    reorient_mrc_file(tmp_path / "a.mrc", tmp_path / "b.mrc", "xz", rows_per_chunk=4)
    out = read_mrc(tmp_path / "b.mrc")
    np.testing.assert_array_equal(out.data, orient_volume(volume, "xz"))
    assert out.voxel_size_angstrom == (4.5, 4.5, 4.5)
    assert out.origin_angstrom == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError, match="orientation 'yz'"):
        orient_volume(volume, "yz")


@pytest.mark.parametrize("extra", [(), ("--slab", "8")])
def test_reconstruct_orientation_xz_in_memory_and_streamed(tmp_path, extra) -> None:
    rng = np.random.default_rng(1)
    geom = TiltGeometry.from_range(-60, 60, 6, (24, 24), pixel_size_angstrom=5.0)
    volume = np.zeros((12, 24, 24), np.float32)
    volume[3:6, 5:15, 8:12] = 1.0
    series = project_volume(volume, geom) + 0.01 * rng.standard_normal(geom.tilt_series_shape)
    write_mrc(tmp_path / "ts.mrc", series.astype(np.float32), voxel_size_angstrom=5.0,
              image_stack=True)
    write_tilt_angles(tmp_path / "ts.tlt", geom.tilt_angles_deg)
    runner = CliRunner()
    common = [str(tmp_path / "ts.mrc"), "--thickness", "12", *extra]
    r1 = runner.invoke(app, ["reconstruct", common[0], str(tmp_path / "xy.mrc"), *common[1:]])
    r2 = runner.invoke(app, ["reconstruct", common[0], str(tmp_path / "xz.mrc"), *common[1:],
                             "--orientation", "xz", "--threads", "1"])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    xy = read_mrc(tmp_path / "xy.mrc").data
    xz = read_mrc(tmp_path / "xz.mrc")
    assert xz.data.shape == (24, 12, 24)
    np.testing.assert_allclose(xz.data, orient_volume(xy, "xz"), atol=1e-6)
    assert xz.voxel_size_angstrom == (5.0, 5.0, 5.0)
    assert not list(tmp_path.glob("*.xy-tmp.mrc"))
    assert "threads: 1" in (tmp_path / "xz.run.yaml").read_text()


def test_cpu_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive"):
        with cpu_threads(0):
            pass
