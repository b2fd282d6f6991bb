"""CLI commands run in-process on tiny data; outputs, run records and error paths."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles

runner = CliRunner()


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    result = runner.invoke(
        app,
        ["simulate", str(out), "--phantom", "shepp-logan", "--shape", "16", "24", "24",
         "--pixel-size", "5.5", "--tilt-range", "-60", "60", "--tilt-step", "5", "--snr", "4", "--seed", "3"],
    )
    assert result.exit_code == 0, result.output
    return out


def test_simulate_outputs(simulated):
    ts = read_mrc(simulated / "tilt_series.mrc")
    assert ts.data.shape == (25, 24, 24)
    assert ts.voxel_size_angstrom == (5.5, 5.5, 5.5)
    assert ts.is_image_stack
    even, odd = read_mrc(simulated / "tilt_series_even.mrc").data, read_mrc(simulated / "tilt_series_odd.mrc").data
    np.testing.assert_allclose(0.5 * (even + odd), ts.data, atol=1e-5)  # halves average to the series
    assert not np.allclose(even, odd)  # independent noise
    record = yaml.safe_load((simulated / "run.yaml").read_text())
    assert record["command"] == "simulate" and record["parameters"]["pixel_size_angstrom"] == 5.5
    assert "cryowedge_version" in record


@pytest.mark.parametrize("method", ["fbp", "wbp"])
def test_reconstruct_and_evaluate(simulated, tmp_path, method):
    out = tmp_path / f"{method}.mrc"
    result = runner.invoke(app, ["reconstruct", str(simulated / "tilt_series.mrc"), str(out),
                                 "--method", method, "--filter", "hann", "--thickness", "16"])
    assert result.exit_code == 0, result.output
    vol = read_mrc(out)
    assert vol.data.shape == (16, 24, 24) and vol.voxel_size_angstrom == (5.5, 5.5, 5.5)
    assert (tmp_path / f"{method}.run.yaml").exists()
    truth = read_mrc(simulated / "ground_truth.mrc").data
    assert np.corrcoef(vol.data.ravel(), truth.ravel())[0, 1] > 0.5
    ev = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", str(out), "--reference", str(simulated / "ground_truth.mrc"),
                                 "--out", str(ev), "--tilt-range", "-60", "60"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((ev / "metrics.json").read_text())[method]
    assert {"psnr", "ssim", "fsc0143_angstrom", "inside_wedge", "outside_wedge"} <= set(metrics)
    assert metrics["outside_wedge"] > metrics["inside_wedge"]  # the wedge is what FBP cannot recover
    assert (ev / "fsc.png").stat().st_size > 1000


def test_reconstruct_yaml_config_and_typo(simulated, tmp_path):
    cfg = tmp_path / "rec.yaml"
    cfg.write_text("method: wbp\nfilter_name: cosine\nthickness: 8\n")
    out = tmp_path / "cfg.mrc"
    result = runner.invoke(app, ["reconstruct", str(simulated / "tilt_series.mrc"), str(out), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert read_mrc(out).data.shape == (8, 24, 24)
    cfg.write_text("methd: wbp\n")
    result = runner.invoke(app, ["reconstruct", str(simulated / "tilt_series.mrc"), str(out), "--config", str(cfg)])
    assert result.exit_code == 2 and "unknown option 'methd' (did you mean 'method'?)" in result.output


def test_old_option_names_get_the_new_name(tmp_path):
    """A STET YAML from before the rename (``lam``) is refused with the new name, before any work."""
    cfg = tmp_path / "stet.yaml"
    cfg.write_text("reconstruct:\n  lam: 1.0\n")
    out = tmp_path / "o.mrc"
    result = runner.invoke(app, ["stet", "reconstruct", str(tmp_path / "absent.mrc"), str(out), "--config", str(cfg)])
    assert result.exit_code == 2
    assert "unknown option 'lam' (renamed to 'tv_lambda')" in " ".join(result.output.split())
    assert not out.exists()


def _stack(tmp_path, n_images=5, n_angles=5, bad_value=None):
    data = np.random.default_rng(0).random((n_images, 8, 8)).astype(np.float32)
    path = tmp_path / "ts.mrc"
    write_mrc(path, data, voxel_size_angstrom=2.0, image_stack=True)
    if bad_value is not None:
        with mrcfile.open(path, "r+") as m:
            m.data[1, 2, 3] = bad_value
    write_tilt_angles(tmp_path / "ts.tlt", np.linspace(-40, 40, n_angles))
    return path


@pytest.mark.parametrize(
    ("kwargs", "extra", "message"),
    [
        ({"n_angles": 4}, [], "lists 4 tilt angles but ts.mrc has 5 images"),
        ({"bad_value": np.nan}, [], "non-finite"),
        ({}, ["--filter", "butterworth"], "unknown filter 'butterworth'"),
        ({}, ["--device", "cuda:7"], "CUDA"),
        ({}, ["--method", "sirt", "--n-iter", "0"], "n_iter must be a positive integer, got 0"),
        ({}, ["--method", "sart", "--relaxation", "2.5"], "relaxation must lie in (0, 2), got 2.5"),
        ({}, ["--method", "tv", "--tv-lambda", "-0.1"], "tv_lambda: Input should be greater than or equal to 0"),
        ({}, ["--method", "cgls", "--positivity"], "cgls cannot enforce positivity"),
        ({}, ["--method", "sirt", "--resume"], "no checkpoint"),
    ],
)
def test_reconstruct_bad_input_writes_nothing(tmp_path, kwargs, extra, message):
    if "--device" in extra:
        import torch

        if torch.cuda.is_available():
            pytest.skip("GPU present")
    stack = _stack(tmp_path, **kwargs)
    out = tmp_path / "out.mrc"
    result = runner.invoke(app, ["reconstruct", str(stack), str(out), *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))  # no temporary left behind


def test_reconstruct_missing_and_corrupt_files(tmp_path):
    result = runner.invoke(app, ["reconstruct", str(tmp_path / "nope.mrc"), str(tmp_path / "o.mrc")])
    assert result.exit_code == 2 and "does not exist" in result.output
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(np.random.default_rng(1).bytes(100))
    write_tilt_angles(tmp_path / "junk.tlt", [0.0])
    result = runner.invoke(app, ["reconstruct", str(junk), str(tmp_path / "o.mrc")])
    assert result.exit_code == 2 and "junk.mrc" in result.output
    assert not (tmp_path / "o.mrc").exists()


def test_reconstruct_2d_stack_is_rejected(tmp_path):
    path = tmp_path / "img.mrc"
    write_mrc(path, np.zeros((8, 8), np.float32))
    write_tilt_angles(tmp_path / "img.tlt", [0.0])
    result = runner.invoke(app, ["reconstruct", str(path), str(tmp_path / "o.mrc")])
    assert result.exit_code == 2 and "got 2D" in " ".join(result.output.split())


def test_bench_projector_small():
    result = runner.invoke(app, ["bench", "projector", "--size", "24", "--n-tilts", "7", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("fbp_speedup_vs_astra:")
    assert "GUPS" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "cryowedge" in result.output


@pytest.mark.parametrize("method", ["sirt", "sart", "art", "cgls", "tv"])
def test_reconstruct_iterative_methods(simulated, tmp_path, method):
    out = tmp_path / f"{method}.mrc"
    result = runner.invoke(app, ["reconstruct", str(simulated / "tilt_series.mrc"), str(out),
                                 "--method", method, "--n-iter", "4", "--thickness", "16"])
    assert result.exit_code == 0, result.output
    vol = read_mrc(out)
    assert vol.data.shape == (16, 24, 24) and vol.voxel_size_angstrom == (5.5, 5.5, 5.5)
    record = yaml.safe_load((tmp_path / f"{method}.run.yaml").read_text())
    assert record["parameters"]["method"] == method and record["parameters"]["n_iter"] == 4
    truth = read_mrc(simulated / "ground_truth.mrc").data
    assert np.corrcoef(vol.data.ravel(), truth.ravel())[0, 1] > 0.5
