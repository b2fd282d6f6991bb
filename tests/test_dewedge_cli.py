"""``cryowedge dewedge``: options per config section, the one-shot run, steps, resume, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.cli.dewedge import build_config, run_options
from cryowedge.io.mrc import read_mrc, write_mrc

TINY = ["--subtomo-size", "16", "--chans", "4", "--depth", "2", "--epochs", "2",
        "--subtomos-per-epoch", "4", "--fit-batch-size", "2", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    result = CliRunner().invoke(app, ["simulate", str(out), "--phantom", "cell", "--shape", "32",
                                      "64", "64", "--n-particles", "3", "--tilt-range", "-60",
                                      "60", "--tilt-step", "4", "--snr", "1"])
    assert result.exit_code == 0, result.output
    return out


def _invoke(*args: str):
    return CliRunner().invoke(app, ["dewedge", *args])


def test_options_of_shared_names_get_the_section_prefix() -> None:
    opts = run_options()
    flags = {o.flags[0]: o.fields for o in opts}
    assert flags["--fit-batch-size"] == ("fit.batch_size",)
    assert flags["--refine-batch-size"] == ("refine.batch_size",)
    assert flags["--epochs"] == ("fit.epochs",)  # unique names keep their plain flag
    cfg = build_config(None, opts, {"fit__batch_size": 3, "refine__batch_size": 7,
                                    "shared__chans": 8, "prepare__thickness": 24})
    assert (cfg.fit.batch_size, cfg.refine.batch_size) == (3, 7)
    assert (cfg.shared.chans, cfg.prepare.thickness) == (8, 24)


def test_yaml_sections_then_options(tmp_path: Path) -> None:
    path = tmp_path / "ddw.yaml"
    path.write_text("shared:\n  subtomo_size: 32\n  chans: 16\nfit:\n  epochs: 7\n")
    cfg = build_config(path, run_options(), {"fit__epochs": 9})
    assert (cfg.shared.subtomo_size, cfg.shared.chans, cfg.fit.epochs) == (32, 16, 9)
    path.write_text("fit:\n  epoch: 7\n")
    with pytest.raises(ValueError, match="epoch"):
        build_config(path, run_options(), {})


def test_run_end_to_end_keeps_voxel_size_and_saves_the_config(sim: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _invoke("run", str(sim / "tilt_series.mrc"), "--out", str(out), "--thickness", "32",
                     *TINY)
    assert result.exit_code == 0, result.output
    refined = read_mrc(out / "tilt_series_refined.mrc")
    truth = read_mrc(sim / "ground_truth.mrc")
    assert refined.data.shape == truth.data.shape
    assert refined.voxel_size_angstrom == truth.voxel_size_angstrom
    assert np.isfinite(refined.data).all() and refined.data.std() > 0
    saved = yaml.safe_load((out / "dewedge.yaml").read_text())
    assert saved["shared"]["chans"] == 4 and saved["fit"]["batch_size"] == 2
    assert (out / "checkpoints" / "last.pt").is_file()
    # the same run again is refused without --overwrite (nothing is replaced silently)
    again = _invoke("run", str(sim / "tilt_series.mrc"), "--out", str(out), "--thickness", "32",
                    *TINY)
    assert again.exit_code != 0 and "overwrite" in again.output


def test_steps_and_resume_fit_longer(sim: Path, tmp_path: Path) -> None:
    out = tmp_path / "steps"
    r = _invoke("prepare", str(sim / "tilt_series.mrc"), "--out", str(out), "--thickness", "32",
                "--subtomo-size", "16")
    assert r.exit_code == 0, r.output
    r = _invoke("fit", str(out), "--chans", "4", "--depth", "2", "--epochs", "1",
                "--subtomos-per-epoch", "4", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    r = _invoke("fit", str(out), "--resume", "--epochs", "2")  # settings come from last.pt
    assert r.exit_code == 0, r.output
    assert "fitted 2 epochs" in r.output
    log = (out / "fit_log.csv").read_text().strip().splitlines()
    assert len(log) == 1 + 2  # header + two epochs, the first not repeated
    r = _invoke("refine", str(out))
    assert r.exit_code == 0, r.output
    assert (out / "tilt_series_refined.mrc").is_file()


def test_interrupted_fit_names_the_resume_command(sim: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "stop"
    r = _invoke("prepare", str(sim / "tilt_series.mrc"), "--out", str(out), "--thickness", "32",
                "--subtomo-size", "16")
    assert r.exit_code == 0, r.output

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import importlib

    # (the package re-exports the function ``fit``, which hides the module of that name)
    monkeypatch.setattr(importlib.import_module("cryowedge.dewedge.fit"), "fit", interrupted)
    r = _invoke("fit", str(out), "--epochs", "3")
    assert r.exit_code == 130
    assert "resume with:" in r.output and "--resume" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--even", "A.mrc"], "--even and --odd pair up"),
        ([], "either tilt series or"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args, message) -> None:
    r = _invoke("prepare", "--out", str(tmp_path / "x"), *args)
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output


def test_halves_of_different_shape_are_refused_before_work(tmp_path: Path) -> None:
    write_mrc(tmp_path / "a.mrc", np.zeros((16, 32, 32), np.float32), voxel_size_angstrom=5)
    write_mrc(tmp_path / "b.mrc", np.zeros((16, 32, 30), np.float32), voxel_size_angstrom=5)
    r = _invoke("prepare", "--even", str(tmp_path / "a.mrc"), "--odd", str(tmp_path / "b.mrc"),
                "--tilt-range", "-60", "60", "--out", str(tmp_path / "p"))
    assert r.exit_code != 0 and "shape" in r.output
    r = _invoke("prepare", "--even", str(tmp_path / "a.mrc"), "--odd", str(tmp_path / "a.mrc"),
                "--out", str(tmp_path / "p"))
    assert r.exit_code != 0 and "tilt angles" in r.output
