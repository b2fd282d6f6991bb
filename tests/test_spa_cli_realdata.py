"""``cryowedge spa reconstruct`` on the 7 real EMPIAR-10076 particles of ../shared/data (skipped
when absent): the STAR file's CTF (defocus, 300 kV, Cs 2.7, pixel size from the detector
pixel and magnification) is read, a STAR file without angles is refused with a clear error,
and with angles added the binned reconstruction runs and keeps the voxel size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch
from conftest import shared_data
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.io.mrc import read_mrc
from cryowedge.workflows.spa import load_particles

#: Pixel size of the EMPIAR-10076 particles: rlnDetectorPixelSize 5 µm × 10⁴ / 38168 (Å).
PIXEL_ANGSTROM = 5.0 * 1e4 / 38168


@pytest.fixture
def real_star(tmp_path: Path) -> Path:
    """A copy of the STAR file (its rlnImageName says 'empiar_10076_7.mrc'; the stack in
    ../shared/data is 'empiar_10076_7_particles.mrc': --stack maps one to the other)."""
    star = shared_data("empiar_10076_7_particles.star")
    copy = tmp_path / "particles.star"
    copy.write_text(star.read_text())
    return copy


@pytest.mark.realdata
def test_real_particles_through_the_cli(real_star: Path, tmp_path: Path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # read with their CTF
        mrc = shared_data("empiar_10076_7_particles.mrc")
        remap = f"empiar_10076_7.mrc={mrc}"
        stack = load_particles(real_star, need_angles=False,
                               stack_paths={"empiar_10076_7.mrc": mrc})
        assert stack.images.shape == (7, 320, 320)
        assert stack.pixel_size_angstrom == pytest.approx(PIXEL_ANGSTROM, rel=1e-6)
        assert stack.ctf is not None
        np.testing.assert_allclose(stack.ctf.defocus_u_angstrom[:2], [15301.1, 15303.0])
        assert float(stack.ctf.voltage_kv[0]) == 300.0
        # the STAR file has no angles: a clear error, nothing written
        out = tmp_path / "out"
        result = CliRunner().invoke(app, ["spa", "reconstruct", str(real_star), "-o", str(out),
                                          "--stack", remap])
        assert result.exit_code == 2, result.output
        assert "rlnAngleRot" in result.output and "Traceback" not in result.output
        assert not (out / "map.mrc").exists()
        # with (arbitrary) angles added the binned reconstruction runs end to end
        data = starfile.read(real_star, always_dict=True)
        table = next(iter(data.values()))
        rng = np.random.default_rng(0)
        table["rlnAngleRot"] = rng.uniform(-180, 180, len(table))
        table["rlnAngleTilt"] = rng.uniform(0, 180, len(table))
        table["rlnAnglePsi"] = rng.uniform(-180, 180, len(table))
        with_angles = tmp_path / "with_angles.star"
        starfile.write(table, with_angles)
        result = CliRunner().invoke(app, [
            "spa", "reconstruct", str(with_angles), "-o", str(out), "--bin", "8",
            "--n-iter", "3", "--inverted-contrast", "--stack", remap])
        assert result.exit_code == 0, result.output
        vol = read_mrc(out / "map.mrc")
        assert vol.data.shape == (40, 40, 40)
        assert vol.voxel_size_angstrom[0] == pytest.approx(8 * PIXEL_ANGSTROM, rel=1e-5)
        assert np.isfinite(vol.data).all() and float(np.abs(vol.data).max()) > 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["ctf"] == "phase_flip" and metrics["particles"] == 7
        assert metrics["half_set_sizes"] in ("3 + 4", "4 + 3")
        assert (out / "fsc.png").is_file() and (out / "half1.mrc").is_file()
    finally:
        torch.set_num_threads(before)
