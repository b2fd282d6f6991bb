"""The demo's INR panel, ``cryowedge bench inr`` and the scores of the INR results scripts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.config.inr import DemoInrConfig
from cryowedge.config.models import DemoConfig, SimulateConfig
from cryowedge.inr.bench import slice_batch_tradeoff, wedge_power_fraction
from cryowedge.workflows.demo import run_demo
from cryowedge.workflows.inr import INR_DEMO_FILES


@pytest.fixture
def one_thread():
    """One torch thread: the fit is a few seconds and reproducible on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small_demo(inr: DemoInrConfig | None) -> DemoConfig:
    """The demo at a quarter of its volume (32×64×64, ±60° at 3°), one FBP row, no other
    panel."""
    return DemoConfig(
        simulate=SimulateConfig(shape=(32, 64, 64), n_particles=6, snr=1.0, tilt_step_deg=3.0,
                                seed=0),
        methods={"fbp_ramlak": DemoConfig().methods["fbp_ramlak"]},
        dewedge=None, crm=None, inr=inr,
    )


def test_inr_panel_beats_fbp_ramlak_on_the_central_rows(tmp_path, one_thread):
    # measured (seeds 0-4, 8 rows, 40 epochs): Pearson CC with the truth's rows, FBP ram-lak
    # 0.23-0.38, INR 0.43-0.61 (at least 0.09 above); seed 0: 0.329 -> 0.559, inside the
    # wedge 0.303 -> 0.501
    panel = DemoInrConfig(rows=8, epochs=40, filter_name="ram-lak")
    result = run_demo(tmp_path / "demo", _small_demo(panel))
    rows = result["inr_metrics"]
    assert set(rows) == {"fbp (ram-lak)", "inr"}
    assert rows["inr"]["pearson"] > rows["fbp (ram-lak)"]["pearson"] + 0.1
    assert rows["inr"]["inside_wedge"] > rows["fbp (ram-lak)"]["inside_wedge"]
    for name in INR_DEMO_FILES:
        assert (tmp_path / "demo" / name).is_file()
    note = (tmp_path / "demo" / INR_DEMO_FILES[1]).read_text()
    assert "central 8 y-slices (rows 28:36)" in note and "| inr |" in note
    assert set(result["metrics"]) == {"fbp_ramlak"}  # the main table is untouched


def test_demo_inr_panel_options_and_bad_input(tmp_path, monkeypatch):
    assert DemoConfig().inr == DemoInrConfig()
    again = DemoConfig(**yaml.safe_load(DemoConfig(inr=None).to_yaml()))
    assert again.inr is None
    with pytest.raises(ValueError, match="inr.slice_batch 8 is larger than inr.rows 4"):
        DemoInrConfig(rows=4, slice_batch=8)
    assert DemoInrConfig(lam_c=0.5).inr_config(32).lam_c == 0.5

    def spy(*args, **kwargs):
        raise AssertionError("the simulation must not start")

    monkeypatch.setattr("cryowedge.workflows.demo.simulate_from_config", spy)
    with pytest.raises(ValueError, match="inr.rows 100 is larger than the demo's 64 y-slices"):
        run_demo(tmp_path / "big", _small_demo(DemoInrConfig(rows=100)))


def test_bench_inr_quick_prints_the_configuration_first_and_the_epoch_time_last():
    result = CliRunner().invoke(app, ["bench", "inr", "--quick", "--threads", "1",
                                      "--no-baselines"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("case: hollow spheres 16×32×32")
    assert lines[1].startswith("fit: MLP (relu) 5 layers × 16")
    name, value = lines[-1].split(": ")
    assert name == "inr_epoch_seconds" and float(value) > 0
    assert any("epoch 4:" in line and "PSNR" in line for line in lines)


def test_wedge_power_fraction_of_plane_waves():
    nz, ny, nx = 32, 8, 64
    z = np.arange(nz)[:, None, None]
    x = np.arange(nx)[None, None, :]
    along_z = np.cos(2 * np.pi * 4 * z / nz) * np.ones((1, ny, nx))  # k ∥ z: in the wedge
    along_x = np.cos(2 * np.pi * 8 * x / nx) * np.ones((nz, ny, 1))  # k ∥ x: measured
    tilts = (-60.0, 60.0)
    assert wedge_power_fraction(along_z, tilts) == pytest.approx(1.0)
    assert wedge_power_fraction(along_x, tilts) == pytest.approx(0.0, abs=1e-12)
    assert wedge_power_fraction(2.0 * along_z + along_x, tilts) == pytest.approx(0.8)
    # |k| = 0.125 cycles/voxel: nothing above 0.25
    above = wedge_power_fraction(along_z, tilts, min_frequency_cpp=0.25)
    assert above == pytest.approx(0.0, abs=1e-12)
    # a full ±90° range has no wedge
    assert wedge_power_fraction(along_z, (-90.0, 90.0)) == pytest.approx(0.0, abs=1e-12)
    assert wedge_power_fraction(np.ones((nz, ny, nx)), tilts) == 0.0


def test_slice_batch_tradeoff_refuses_a_batch_larger_than_the_volume():
    with pytest.raises(ValueError, match=r"slice batches \[64\] do not fit the volume's 32"):
        slice_batch_tradeoff((16, 64), (16, 32, 32))
