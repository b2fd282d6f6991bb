"""`cryowedge evaluate` and its workflow: grey-level normalisation (default affine) end to end."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.cli import evaluate as cli_evaluate
from cryowedge.io.mrc import write_mrc
from cryowedge.metrics import compare_volumes, normalization_note
from cryowedge.workflows.evaluate import DEFAULT_NORMALIZE, evaluate_arrays

runner = CliRunner()


@pytest.fixture(scope="module")
def volumes():
    rng = np.random.default_rng(60)
    truth = ndimage.gaussian_filter(rng.normal(size=(16, 20, 20)), 1.5).astype(np.float32)
    noisy = truth + 0.05 * rng.normal(size=truth.shape).astype(np.float32)
    rescaled = (5.0 * noisy - 2.0).astype(np.float32)  # same structure, another calibration
    return truth, noisy, rescaled


def test_evaluate_arrays_default_is_affine(volumes, tmp_path):
    truth, noisy, rescaled = volumes
    assert DEFAULT_NORMALIZE == "affine"
    rows = evaluate_arrays({"a": noisy, "b": rescaled}, truth, pixel_size_angstrom=2.0,
                           output_dir=tmp_path)
    assert rows["b"]["psnr"] == pytest.approx(rows["a"]["psnr"], rel=1e-5)
    assert rows["b"]["ssim"] == pytest.approx(rows["a"]["ssim"], rel=1e-5)
    assert rows["a"] == compare_volumes(noisy, truth, pixel_size_angstrom=2.0, normalize="affine")
    md = (tmp_path / "metrics.md").read_text()
    assert md.splitlines()[0] == normalization_note("affine")
    records = json.loads((tmp_path / "metrics.json").read_text())
    assert records["b"]["normalize"] == "affine"
    assert records["b"]["psnr"] == pytest.approx(rows["b"]["psnr"])
    raw = evaluate_arrays({"b": rescaled}, truth, pixel_size_angstrom=2.0, normalize="none")
    assert raw["b"]["psnr"] < rows["b"]["psnr"] - 10.0


def test_cli_default_matches_workflow_default():
    param = inspect.signature(cli_evaluate.evaluate).parameters["normalize"]
    assert param.default.default == DEFAULT_NORMALIZE


def test_cli_evaluate_normalize_option(volumes, tmp_path):
    truth, noisy, rescaled = volumes
    ref = write_mrc(tmp_path / "truth.mrc", truth, voxel_size_angstrom=2.0)
    vol = write_mrc(tmp_path / "rescaled.mrc", rescaled, voxel_size_angstrom=2.0)
    results = {}
    for choice in (None, "none", "zscore", "Affine"):
        out = tmp_path / f"eval_{choice}"
        args = ["evaluate", str(vol), "--reference", str(ref), "--out", str(out)]
        if choice is not None:
            args += ["--normalize", choice]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        expected = (choice or DEFAULT_NORMALIZE).lower()
        assert (out / "metrics.md").read_text().splitlines()[0] == normalization_note(expected)
        results[choice] = json.loads((out / "metrics.json").read_text())["rescaled"]
        assert results[choice]["normalize"] == expected
    assert results[None] == results["Affine"]
    # the least-squares fit is never worse than matching mean and std
    assert results["none"]["psnr"] < results["zscore"]["psnr"] <= results["Affine"]["psnr"] + 1e-9
    assert results["Affine"]["psnr"] > results["none"]["psnr"] + 10.0

    bad = runner.invoke(app, ["evaluate", str(vol), "--reference", str(ref),
                              "--out", str(tmp_path / "bad"), "--normalize", "gain"])
    assert bad.exit_code == 2
    assert "unknown normalize 'gain'; choose one of: none, zscore, affine." in bad.output
    assert not (tmp_path / "bad").exists()  # refused before any work
