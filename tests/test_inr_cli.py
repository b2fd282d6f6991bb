"""``cryowedge reconstruct --method inr``: YAML + overrides, progress with the loss, checkpoints."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

import cryowedge as cw
from cryowedge.cli import app
from cryowedge.cli._progress import ProgressReporter
from cryowedge.config.inr import InrConfig
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.workflows.inr import progress_callback

runner = CliRunner()
TINY_YAML = "method: inr\nwidth: 16\nn_frequencies: 8\nn_layers: 3\nepochs: 3\nslice_batch: 4\n"


@pytest.fixture()
def stack(tmp_path):
    data = np.random.default_rng(0).random((9, 12, 12)).astype(np.float32)
    path = tmp_path / "ts.mrc"
    write_mrc(path, data, voxel_size_angstrom=2.0, image_stack=True)
    write_tilt_angles(tmp_path / "ts.tlt", np.linspace(-60, 60, 9))
    (tmp_path / "inr.yaml").write_text(TINY_YAML)
    return path


def _reconstruct(stack, out, *args):
    return runner.invoke(app, ["reconstruct", str(stack), str(out), "--config",
                               str(stack.parent / "inr.yaml"), "--thickness", "6",
                               "--device", "cpu", "--tilt-axis-angle", "0", *args])


def test_yaml_config_then_overrides(stack, tmp_path):
    out = tmp_path / "inr.mrc"
    result = _reconstruct(stack, out, "--epochs", "2", "--lam-c", "0.2", "--activation", "sine",
                          "--encoding", "none")
    assert result.exit_code == 0, result.output
    vol = read_mrc(out)
    assert vol.data.shape == (6, 12, 12) and np.isfinite(vol.data).all()
    assert float(vol.data.std()) > 0
    record = yaml.safe_load((tmp_path / "inr.run.yaml").read_text())["parameters"]
    assert record["method"] == "inr" and record["epochs"] == 2 and record["lam_c"] == 0.2
    assert record["width"] == 16 and record["activation"] == "sine"
    expected = InrConfig(width=16, n_frequencies=8, n_layers=3, epochs=2, slice_batch=4,
                         lam_c=0.2, activation="sine", encoding="none", thickness=6,
                         device="cpu", tilt_axis_angle_deg=0.0).model_dump(mode="json")
    assert {k: record[k] for k in expected} == expected


def test_options_and_bad_values_are_refused(stack, tmp_path):
    out = tmp_path / "bad.mrc"
    result = _reconstruct(stack, out, "--lam-c", "-1")
    assert result.exit_code != 0 and "lam_c" in result.output and not out.exists()
    result = _reconstruct(stack, out, "--slice-batch", "13")
    assert result.exit_code != 0 and "slice_batch 13 is larger than the volume's 12" in " ".join(
        result.output.split())
    result = _reconstruct(stack, out, "--slab", "4")
    assert result.exit_code != 0 and "cannot stream" in result.output
    result = runner.invoke(app, ["reconstruct", str(stack), str(out), "--method", "sirt",
                                 "--lam-c", "0.1"])
    assert result.exit_code != 0 and "--lam-c applies to --method inr, not sirt" in result.output


def test_interrupted_cli_run_resumes_to_the_uninterrupted_result(stack, tmp_path, monkeypatch):
    import cryowedge.inr.fit as fit_module

    whole = tmp_path / "whole.mrc"
    assert _reconstruct(stack, whole, "--checkpoint-every", "2").exit_code == 0
    assert not (tmp_path / "whole.ckpt.pt").exists()  # removed after the output was written
    calls = {"n": 0}
    original = fit_module.batch_objective

    def interrupt_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    out = tmp_path / "part.mrc"
    monkeypatch.setattr(fit_module, "batch_objective", interrupt_at_step_5)
    result = _reconstruct(stack, out, "--checkpoint-every", "2")
    assert result.exit_code == 130, result.output
    text = " ".join(result.output.split())
    assert "interrupted after iteration 4 of 9" in text and "resume with:" in text
    assert not out.exists() and (tmp_path / "part.ckpt.pt").exists()
    monkeypatch.setattr(fit_module, "batch_objective", original)
    result = _reconstruct(stack, out, "--checkpoint-every", "2", "--resume")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_mrc(out).data, read_mrc(whole).data)
    record = yaml.safe_load((tmp_path / "part.run.yaml").read_text())
    assert record["parameters"]["resumed_from_iteration"] == 4
    assert record["parameters"]["iterations_done"] == 9


def test_resume_from_the_final_volume_checkpoint_returns_it(tmp_path):
    from cryowedge.recon.scaling import data_scale
    from cryowedge.workflows.checkpoint import Checkpointer
    from cryowedge.workflows.reconstruct import reconstruct_array

    ts = np.random.default_rng(1).random((5, 8, 8)).astype(np.float32)
    geom = cw.TiltGeometry.from_range(-40, 40, 20, detector_shape=(8, 8))
    cfg = InrConfig(width=8, n_frequencies=4, n_layers=2, epochs=1, slice_batch=4,
                    thickness=4, device="cpu")
    vol = np.random.default_rng(2).random((4, 8, 8)).astype(np.float32)
    scale = data_scale(torch.as_tensor(ts), True)
    ckpt = tmp_path / "final.ckpt.pt"
    Checkpointer(ckpt, 1, method="inr", data_shape=ts.shape).save(torch.from_numpy(vol) / scale, 2)
    got = reconstruct_array(ts, geom, cfg, checkpoint_path=ckpt, resume=True)
    np.testing.assert_allclose(got, vol, rtol=1e-6)


def test_progress_shows_the_loss_and_keeps_the_eta():
    clock = SimpleNamespace(t=100.0)
    reporter = ProgressReporter("reconstruct (inr)", console=Console(file=io.StringIO()),
                                clock=lambda: clock.t, live=False)
    callback = progress_callback(reporter)
    for k in range(1, 5):
        clock.t += 2.0
        callback(SimpleNamespace(iteration=k, n_iter=20, objective=1.0 / k,
                                 extras={"step": float(k + 10)}))
    assert reporter.step == "inr 14/30, loss 0.25"
    # 3 steps of 2 s since the first report, 16 left: 32 s
    assert reporter.eta_seconds() == pytest.approx(32.0)
    assert "ETA 0:32" in reporter.status_line()
    assert reporter.fraction == pytest.approx(0.2 + 0.7 * 14 / 30)
