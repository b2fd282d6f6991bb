"""The demo's dewedge panel: it runs, writes its volume, and beats FBP on the demo's data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge.config.models import DemoConfig, DemoDewedgeConfig, SimulateConfig
from cryowedge.io.mrc import read_mrc
from cryowedge.workflows.demo import DEWEDGE_NAME, run_demo


@pytest.fixture
def one_thread():
    """One torch thread: the fit is a few seconds and reproducible, also on a busy machine
    (several threads can wait on each other when other processes hold the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small_demo(seed: int) -> DemoConfig:
    """The demo at a quarter of its volume (32×64×64, ±60° at 3°), FBP rows and the panel
    with half its epochs."""
    presets = DemoConfig().methods
    return DemoConfig(
        simulate=SimulateConfig(shape=(32, 64, 64), n_particles=6, snr=1.0, tilt_step_deg=3.0,
                                seed=seed),
        methods={name: presets[name] for name in ("fbp_ramlak", "fbp_hann")},
        dewedge=DemoDewedgeConfig(epochs=10, subtomos_per_epoch=32, seed=seed),
    )


def test_dewedge_panel_beats_fbp_on_the_demo_data(tmp_path, one_thread):
    # measured (seeds 0-4): Pearson CC with the truth, FBP ram-lak 0.24-0.36, FBP hann
    # 0.48-0.58, dewedge 0.59-0.67 (at least 0.074 above hann); inside the wedge (seed 0)
    # 0.51 -> 0.65
    result = run_demo(tmp_path / "demo", _small_demo(seed=0))
    rows = result["metrics"]
    assert set(rows) == {"fbp_ramlak", "fbp_hann", DEWEDGE_NAME}
    cc = {name: row["pearson"] for name, row in rows.items()}
    assert cc[DEWEDGE_NAME] > cc["fbp_hann"] + 0.03
    assert cc[DEWEDGE_NAME] > cc["fbp_ramlak"] + 0.15
    assert rows[DEWEDGE_NAME]["inside_wedge"] > rows["fbp_hann"]["inside_wedge"]
    volume = read_mrc(tmp_path / "demo" / f"{DEWEDGE_NAME}.mrc")
    assert volume.data.shape == (32, 64, 64)
    assert volume.voxel_size_angstrom == pytest.approx((10.0,) * 3)
    assert np.isfinite(volume.data).all()
    assert (tmp_path / "demo" / "dewedge_fit" / "checkpoints" / "last.pt").is_file()
    assert DEWEDGE_NAME in (tmp_path / "demo" / "metrics.md").read_text()


def test_demo_without_the_panel_and_bad_panel_settings(tmp_path):
    cfg = DemoConfig(dewedge=None)
    assert "dewedge: null" in cfg.to_yaml()
    with pytest.raises(ValueError, match="refine_tile 20 is not divisible by 2\\^depth = 8"):
        DemoDewedgeConfig(depth=3, subtomo_size=16, refine_tile=20)
    presets = DemoConfig().methods
    clash = DemoConfig(methods={DEWEDGE_NAME: presets["fbp_hann"]})
    with pytest.raises(ValueError, match="the dewedge panel's"):
        run_demo(tmp_path / "clash", clash)
    bad = DemoConfig(dewedge=DemoDewedgeConfig(filter_name="nope"))
    with pytest.raises(ValueError, match="nope"):
        run_demo(tmp_path / "bad", bad)
    assert not (tmp_path / "bad" / "ground_truth.mrc").exists()  # refused before simulating
