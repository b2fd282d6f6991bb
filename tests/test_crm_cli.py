"""``cryowedge crm``: real-use run on a simulated tomogram, simulate|run|compare, config
precedence, bad input (one line, exit code 2, nothing written), ``bench crm --quick``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.cli.crm import build_config, reconstruct_options, run_options
from cryowedge.io.mrc import read_mrc, write_mrc


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _invoke(*args: str):
    return CliRunner().invoke(app, ["crm", *map(str, args)])


@pytest.fixture(scope="module")
def tomo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32×96×96 tomogram at 6 Å with 5 copies of 1A5T (support radius ≈ 8.8 voxels), clean."""
    out = tmp_path_factory.mktemp("tomo")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    result = _invoke("simulate", "tomogram", out, "--copies", 5, "--size", 32, "--pixel-size", 6,
                     "--tomogram-shape", 32, 96, 96)
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert "real-use input: cryowedge crm" in result.output
    return out


def _real_use(tomo: Path, out: Path, *extra: object):
    meta = yaml.safe_load((tomo / "dataset.yaml").read_text())
    return _invoke(tomo / "crm_sim.mrc", "--angles", tomo / "crm_sim.tlt",
                   "--particles", tomo / "crm_sim_particles.star", "--thickness", 32,
                   "--support-radius", f"{meta['support_radius_px']:.4f}", "-o", out, *extra)


def test_real_use_end_to_end(tomo: Path, tmp_path: Path):
    out = tmp_path / "crm"
    # CRM-SART, as measured below (the default on measured data is CRM-SIRT: next test)
    result = _real_use(tomo, out, "--box", 32, "--reference", tomo / "crm_sim_reference.mrc",
                       "--solver", "sart")
    assert result.exit_code == 0, result.output
    for name in ("particle", "half1", "half2", "avg", "m-avg"):
        vol = read_mrc(out / f"{name}.mrc")
        assert vol.data.shape == (32, 32, 32)
        assert vol.voxel_size_angstrom == pytest.approx((6.0,) * 3)  # voxel size kept
        assert np.isfinite(vol.data).all()
    for name in ("fsc.png", "orthoslices.png", "metrics.md", "crm.yaml", "run.yaml"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "metrics.json").read_text())
    assert set(rows) == {"crm", "avg", "m-avg"}
    # measured: CRM PCC 0.915 against the reference inside the support (AVG 0.912, M-AVG
    # 0.962); a wrong orientation convention gives far less
    assert rows["crm"]["pearson"] > 0.85
    assert rows["crm"]["pearson"] > rows["avg"]["pearson"] - 0.03
    assert rows["crm"]["copies"] == 5
    assert 12.0 <= rows["crm"]["half_fsc0143_angstrom"] < 30.0  # Nyquist is 12 Å
    assert "half_fsc0143_angstrom" in (out / "metrics.md").read_text()
    saved = yaml.safe_load((out / "crm.yaml").read_text())
    assert saved["box_size"] == 32 and saved["thickness"] == 32 and saved["solver"] == "sart"
    assert "| CRM |" in result.output


def test_real_use_default_solver_is_crm_sirt(tomo: Path, tmp_path: Path):
    """Measured tilt series are noisy: solver 'auto' resolves to CRM-SIRT (docs/crm.md)."""
    out = tmp_path / "crm"
    result = _real_use(tomo, out, "--box", 32, "--n-iter", 2, "--no-half-maps",
                       "--baselines", "none")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "crm.yaml").read_text())["solver"] == "sirt"
    rows = json.loads((out / "metrics.json").read_text())
    assert set(rows) == {"crm"}


def test_default_command_and_help():
    result = _invoke("--help")
    assert result.exit_code == 0
    for name in ("reconstruct", "simulate", "run", "compare"):
        assert name in result.output
    result = _invoke("reconstruct", "--help")
    assert "--particles" in result.output and "--n-iter" in result.output
    # 'crm TILTSERIES' goes to 'crm reconstruct': its own error for a missing file
    result = _invoke("nothing.mrc", "--particles", "p.star", "--box", 8, "--thickness", 8,
                     "-o", "x")
    assert result.exit_code == 2
    assert "tilt series nothing.mrc does not exist" in result.output


def test_simulate_run_compare_round_trip(tmp_path: Path):
    ds = tmp_path / "sl"
    noisy = tmp_path / "noisy"
    result = _invoke("simulate", "shepp-logan", noisy, "--copies", 2,
                     "--size", 32, "--snr", 10, "--tilt-range", 40, "--tilt-step", 5)
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((noisy / "dataset.yaml").read_text())
    assert meta["simulation"]["snr"] == 10 and len(meta["noise_sigma"]) == 2
    assert (meta["n_copies"], meta["n_tilts"], meta["volume_shape"]) == (2, 17, [32, 1, 32])
    # clean data: CRM must beat AVG (measured PSNR 20.5 vs 18.6 dB, PCC 0.87 vs 0.79)
    result = _invoke("simulate", "shepp-logan", ds, "--copies", 4, "--size", 64,
                     "--tilt-range", 50, "--tilt-step", 5, "--seed", 1)
    assert result.exit_code == 0, result.output
    result = _invoke("run", ds, tmp_path / "run", "--solver", "sirt", "--n-iter", 30)
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())["crm"]
    assert run["iterations"] == 30 and run["pearson"] > 0.7  # measured 0.78
    assert read_mrc(tmp_path / "run" / "particle.mrc").data.shape == (64, 64)
    assert (tmp_path / "run" / "particle.png").is_file()
    result = _invoke("compare", ds, tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert set(rows) == {"crm", "avg", "m-avg"}
    assert rows["crm"]["psnr"] > rows["avg"]["psnr"]
    assert all(r["normalize"] == "affine" for r in rows.values())
    assert (tmp_path / "cmp" / "orthoslices.png").is_file()
    # an existing output is refused without --overwrite, kept as name~ with it
    result = _invoke("compare", ds, tmp_path / "cmp", "--baselines", "avg")
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = _invoke("compare", ds, tmp_path / "cmp", "--baselines", "avg", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp" / "particle.mrc~").is_file()


def test_simulate_the_authors_set_up(tmp_path: Path):
    """--orientations even --background-frame particle --background authors: the paper's
    ribosome set-up from the command line, kept in dataset.yaml and used by the operator."""
    from cryowedge.crm.operator import CRMOperator
    from cryowedge.workflows.crm import load_dataset

    ds = tmp_path / "rib"
    result = _invoke("simulate", "shepp-logan", ds, "--copies", 3, "--size", 32,
                     "--orientations", "even", "--background-frame", "particle",
                     "--background", "authors", "--snr", 5, "--noise-domain", "image")
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((ds / "dataset.yaml").read_text())
    assert meta["background_frame"] == "particle"
    phi = np.sort(meta["orientations_deg"])
    np.testing.assert_allclose(np.diff(phi), 120.0, atol=1e-9)
    data = load_dataset(ds).data
    assert data.background_frame == "particle"
    assert CRMOperator.from_data(data).background_frame == "particle"
    result = _invoke("simulate", "3d", tmp_path / "d3", "--orientations", "even")
    assert result.exit_code == 2 and "2D data sets" in result.output
    result = _invoke("simulate", "ribosome", tmp_path / "r", "--noise-domain", "image")
    assert result.exit_code == 2 and "background_frame particle" in result.output


def test_config_yaml_then_options(tmp_path: Path):
    path = tmp_path / "crm.yaml"
    path.write_text("solver: sirt\nn_iter: 7\nbaselines: [avg]\nbox_size: 24\n")
    cfg = build_config(path, reconstruct_options(), {"n_iter": 3, "thickness": 40})
    assert (cfg.solver, cfg.n_iter, cfg.baselines, cfg.box_size, cfg.thickness) == \
        ("sirt", 3, "avg", 24, 40)
    cfg = build_config(path, reconstruct_options(), {"solver": "sart"})
    assert (cfg.solver, cfg.n_iter) == ("sart", 7)
    assert build_config(None, run_options(), {}).solver == "auto"
    assert all(o.name != "half_maps" for o in run_options())
    path.write_text("solvr: sirt\n")
    with pytest.raises(ValueError, match="did you mean 'solver'"):
        build_config(path, reconstruct_options(), {})
    # through the command line: the saved crm.yaml holds the YAML value overridden by the option
    sim = tmp_path / "sl"
    assert _invoke("simulate", "shepp-logan", sim, "--copies", 2, "--size", 32).exit_code == 0
    path.write_text("n_iter: 9\nrelaxation: 0.5\n")
    result = _invoke("run", sim, tmp_path / "r", "--config", path, "--n-iter", 4)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "r" / "crm.yaml").read_text())
    assert (saved["n_iter"], saved["relaxation"]) == (4, 0.5)


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_bad_input_is_one_line_before_any_work(tomo: Path, tmp_path: Path):
    out = tmp_path / "bad"
    # a STAR file without a required column
    table = starfile.read(tomo / "crm_sim_particles.star")
    starfile.write({"particles": table.drop(columns=["rlnAngleTilt", "rlnCoordinateZ"])},
                   tmp_path / "no_cols.star")
    line = _one_error_line(_invoke(tomo / "crm_sim.mrc", "--angles", tomo / "crm_sim.tlt",
                                   "--particles", tmp_path / "no_cols.star", "--box", 32,
                                   "--thickness", 32, "-o", out))
    assert "lacks the required column(s) rlnCoordinateZ, rlnAngleTilt" in line
    # particles outside the tomogram (a box wider than the space around them)
    line = _one_error_line(_real_use(tomo, out, "--box", 80))
    assert "its 80-px box leaves the tomogram (32, 96, 96)" in line
    # a support mask of the wrong shape, and an empty one
    write_mrc(tmp_path / "mask.mrc", np.ones((28, 32, 32), np.float32))
    line = _one_error_line(_invoke(tomo / "crm_sim.mrc", "--angles", tomo / "crm_sim.tlt",
                                   "--particles", tomo / "crm_sim_particles.star", "--box", 32,
                                   "--thickness", 32, "--mask", tmp_path / "mask.mrc",
                                   "-o", out))
    assert "has shape (28, 32, 32) but the particle box is (32, 32, 32)" in line
    write_mrc(tmp_path / "empty.mrc", np.zeros((32, 32, 32), np.float32))
    line = _one_error_line(_invoke(tomo / "crm_sim.mrc", "--angles", tomo / "crm_sim.tlt",
                                   "--particles", tomo / "crm_sim_particles.star", "--box", 32,
                                   "--thickness", 32, "--mask", tmp_path / "empty.mrc",
                                   "-o", out))
    assert "support is empty" in line
    # the required box and thickness, named
    line = _one_error_line(_invoke(tomo / "crm_sim.mrc", "--particles",
                                   tomo / "crm_sim_particles.star", "-o", out))
    assert "--box and --thickness are required" in line
    # copies of different image sizes in a data set
    sim = tmp_path / "sl"
    assert _invoke("simulate", "shepp-logan", sim, "--copies", 2, "--size", 32).exit_code == 0
    stack = read_mrc(sim / "projections.mrc").data  # (2, n_tilts, 32)
    write_mrc(sim / "c0.mrc", stack[0])
    write_mrc(sim / "c1.mrc", stack[1][:, :30])
    meta = yaml.safe_load((sim / "dataset.yaml").read_text())
    meta["projections"] = ["c0.mrc", "c1.mrc"]
    (sim / "dataset.yaml").write_text(yaml.safe_dump(meta))
    line = _one_error_line(_invoke("run", sim, out))
    assert "copies have different sub-tilt-series shapes" in line
    assert not (out / "particle.mrc").exists()


def test_bench_crm_quick_prints_the_ratio_last():
    result = CliRunner().invoke(app, ["bench", "crm", "--quick", "--dataset", "shepp-logan",
                                      "--n-iter", "5"])
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    name, value = last.split(": ")
    assert name == "crm_cost_vs_avg" and float(value) > 0
    assert "3 copies of 64x64 (shepp-logan)" in result.stdout
