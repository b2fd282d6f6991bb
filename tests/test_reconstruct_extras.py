"""`reconstruct --alignment` (IMOD .xf) and `--preview` through the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.alignment import write_imod_xf
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.tilt_series import project_volume


def _bead_volume(shape: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2 for n in shape), indexing="ij")
    vol = np.exp(-((z - 3) ** 2 + (y + 5) ** 2 + (x - 6) ** 2) / (2 * 1.5**2))
    return vol.astype(np.float32)


@pytest.fixture()
def stacks(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """An aligned stack, and the same stack shifted per view by integer pixels (raw)."""
    shape = (16, 32, 32)
    angles = np.arange(-60.0, 60.1, 6.0)
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=shape[1:])
    aligned = project_volume(_bead_volume(shape), geom)
    shifts = np.stack([np.arange(angles.size) % 3 - 1, np.arange(angles.size) % 5 - 2], axis=1)
    raw = np.stack([np.roll(img, (int(dy), int(dx)), axis=(0, 1))
                    for img, (dy, dx) in zip(aligned, shifts, strict=True)])
    for name, data in (("aligned", aligned), ("raw", raw)):
        write_mrc(tmp_path / f"{name}.mrc", data, voxel_size_angstrom=5.0, image_stack=True)
        write_tilt_angles(tmp_path / f"{name}.tlt", angles)
    # IMOD's xf maps raw → aligned: aligned = raw + D, so D = −(dy, dx) in (x, y) order
    xf = np.zeros((angles.size, 2, 3))
    xf[:, 0, 0] = xf[:, 1, 1] = 1.0
    xf[:, 0, 2], xf[:, 1, 2] = -shifts[:, 1], -shifts[:, 0]
    write_imod_xf(tmp_path / "raw.xf", xf)
    return tmp_path, shifts


def _run(*args: str) -> None:
    result = CliRunner().invoke(app, ["reconstruct", *args])
    assert result.exit_code == 0, result.output


def test_alignment_file_aligns_the_raw_stack(stacks) -> None:
    folder, _ = stacks
    _run(str(folder / "aligned.mrc"), str(folder / "a.mrc"), "--thickness", "16")
    _run(str(folder / "raw.mrc"), str(folder / "r.mrc"), "--thickness", "16",
         "--alignment", str(folder / "raw.xf"))
    _run(str(folder / "raw.mrc"), str(folder / "u.mrc"), "--thickness", "16")
    truth = read_mrc(folder / "a.mrc").data
    corr = {name: float(np.corrcoef(read_mrc(folder / f"{name}.mrc").data.ravel(),
                                    truth.ravel())[0, 1]) for name in ("r", "u")}
    assert corr["r"] > 0.99 and corr["u"] < 0.9, corr  # the .xf is what makes them agree
    record = yaml.safe_load((folder / "r.run.yaml").read_text())
    assert record["parameters"]["alignment"].endswith("raw.xf")


def test_alignment_with_the_wrong_view_count_is_refused(stacks) -> None:
    folder, _ = stacks
    lines = (folder / "raw.xf").read_text().splitlines()
    (folder / "short.xf").write_text("\n".join(lines[:-1]) + "\n")
    result = CliRunner().invoke(app, ["reconstruct", str(folder / "raw.mrc"),
                                      str(folder / "r.mrc"), "--alignment", str(folder / "short.xf")])
    assert result.exit_code == 2 and "views" in result.output, result.output
    assert not (folder / "r.mrc").exists()


@pytest.mark.parametrize("extra", [[], ["--slab", "8"]])
def test_preview_png_beside_the_tomogram(stacks, extra) -> None:
    folder, _ = stacks
    _run(str(folder / "aligned.mrc"), str(folder / "t.mrc"), "--thickness", "16", "--preview",
         *extra)
    image = matplotlib.image.imread(folder / "t_preview.png")
    assert image.ndim == 3 and min(image.shape[:2]) > 100  # a real picture
    assert image[..., :3].std() > 0.05  # not blank
