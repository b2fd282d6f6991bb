"""``cryowedge spa simulate|reconstruct|refine`` end to end on a tiny simulated particle set:
the outputs exist and keep the voxel size, the map beats the back-projection against the
truth, refinement reduces the orientation error, YAML + option precedence, the Python API
gives the CLI's map, binning keeps the centre."""

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
from cryowedge.config.spa import SpaReconstructConfig, SpaSimulateConfig, parse_scales
from cryowedge.io.mrc import read_mrc
from cryowedge.metrics.fourier import fourier_shell_correlation
from cryowedge.spa.particles import ParticleStack
from cryowedge.workflows.spa import bin_stack, load_particles, reconstruct_particles

BOX = 16
N_PARTICLES = 240


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args: object):
    return CliRunner().invoke(app, ["spa", *map(str, args)])


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 particles of the bundled 1A5T map, 16 px, CTF, SNR 2, random half sets."""
    out = tmp_path_factory.mktemp("spa_sim")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    result = invoke("simulate", out, "--density", "1a5t", "--box", BOX, "--n-particles",
                    N_PARTICLES, "--snr", 2, "--seed", 1, "--overwrite")
    torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return out


def test_simulate_writes_relion_particles(sim: Path):
    star = starfile.read(sim / "particles.star", always_dict=True)
    particles, optics = star["particles"], star["optics"]
    assert len(particles) == N_PARTICLES
    for column in ("rlnDefocusU", "rlnDefocusV", "rlnAngleRot", "rlnRandomSubset"):
        assert column in particles.columns
    px = float(optics["rlnImagePixelSize"].iloc[0])
    truth = read_mrc(sim / "truth.mrc")
    assert truth.data.shape == (BOX, BOX, BOX)
    assert truth.voxel_size_angstrom[0] == pytest.approx(px, rel=1e-5)
    stack = read_mrc(sim / "particles.mrcs")
    assert stack.data.shape == (N_PARTICLES, BOX, BOX)
    assert stack.voxel_size_angstrom[0] == pytest.approx(px, rel=1e-5)
    saved = yaml.safe_load((sim / "spa.yaml").read_text())
    assert saved["box_size"] == BOX and saved["density"] == "1a5t"
    metrics = json.loads((sim / "metrics.json").read_text())
    assert metrics["particles"] == N_PARTICLES and metrics["half_set_sizes"] == "120 + 120"


def _mean_fsc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(fourier_shell_correlation(a, b).correlation))


def test_reconstruct_end_to_end_beats_backprojection(sim: Path, tmp_path: Path):
    out = tmp_path / "rec"
    result = invoke("reconstruct", sim / "particles.star", "-o", out, "--reference",
                    sim / "truth.mrc", "--n-iter", 8)
    assert result.exit_code == 0, result.output
    assert "half-map FSC" in result.output
    for name in ("map.mrc", "half1.mrc", "half2.mrc", "fsc.png", "fsc.csv", "orthoslices.png",
                 "metrics.md", "metrics.json", "spa.yaml", "run.yaml"):
        assert (out / name).is_file(), name
    truth = read_mrc(sim / "truth.mrc")
    px = truth.voxel_size_angstrom[0]
    maps = {}
    for name in ("map", "half1", "half2"):
        vol = read_mrc(out / f"{name}.mrc")
        assert vol.data.shape == (BOX, BOX, BOX)
        assert vol.voxel_size_angstrom == pytest.approx((px, px, px), rel=1e-5)
        maps[name] = vol.data
    # the map from all particles against the truth: far better than the back-projection Hᵀb
    # (same CTF phase flip), over all shells; and the half maps agree with each other
    from cryowedge.spa.reconstruct import build_problem

    problem = build_problem(load_particles(sim / "particles.star"))
    backprojection = problem.volume(problem.atb)
    ours, baseline = _mean_fsc(maps["map"], truth.data), _mean_fsc(backprojection, truth.data)
    assert ours > baseline + 0.1, (ours, baseline)
    assert ours > 0.75
    assert _mean_fsc(maps["half1"], maps["half2"]) > 0.6
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["particles"] == N_PARTICLES and metrics["ctf"] == "phase_flip"
    # resolutions in Å: between Nyquist (2 px) and the box
    for key in ("half_fsc0143_angstrom", "half_fsc05_angstrom", "reference_fsc05_angstrom"):
        assert 2 * px - 1e-6 <= metrics[key] < BOX * px, (key, metrics[key])
    assert metrics["half_fsc0143_angstrom"] <= metrics["half_fsc05_angstrom"] + 1e-9
    rows = (out / "fsc.csv").read_text().splitlines()
    assert rows[0].split(",") == ["frequency_cycles_per_pixel", "resolution_angstrom",
                                  "fsc_half", "fsc_reference"]
    assert len(rows) > BOX // 2 - 1


def test_reconstruct_yaml_then_options_and_python_api(sim: Path, tmp_path: Path):
    cfg_file = tmp_path / "rec.yaml"
    cfg_file.write_text("tv_lambda: 0.5\nn_iter: 2\nhalf_maps: false\n")
    out = tmp_path / "cli"
    result = invoke("reconstruct", sim / "particles.star", "-o", out, "--config", cfg_file,
                    "--n-iter", 3)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "spa.yaml").read_text())
    assert saved["tv_lambda"] == 0.5 and saved["n_iter"] == 3 and saved["half_maps"] is False
    assert not (out / "half1.mrc").exists()
    # the Python API with the same configuration writes the same map
    cfg = SpaReconstructConfig(tv_lambda=0.5, n_iter=3, half_maps=False)
    api = reconstruct_particles(sim / "particles.star", tmp_path / "api", config=cfg)
    np.testing.assert_allclose(api.maps["map"], read_mrc(out / "map.mrc").data, rtol=0,
                               atol=1e-6 * float(np.abs(api.maps["map"]).max()))
    # an existing output is refused without --overwrite
    again = invoke("reconstruct", sim / "particles.star", "-o", out, "--n-iter", 1)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_reconstruct_bin_halves_the_box_and_doubles_the_voxel(sim: Path, tmp_path: Path):
    out = tmp_path / "bin"
    result = invoke("reconstruct", sim / "particles.star", "-o", out, "--bin", 2,
                    "--n-iter", 2, "--no-half-maps", "--scales", "2,1")
    assert result.exit_code == 0, result.output
    vol = read_mrc(out / "map.mrc")
    px = read_mrc(sim / "truth.mrc").voxel_size_angstrom[0]
    assert vol.data.shape == (BOX // 2,) * 3
    assert vol.voxel_size_angstrom[0] == pytest.approx(2 * px, rel=1e-5)


def test_lambda_sweep_keeps_the_best_lambda(sim: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    result = invoke("reconstruct", sim / "particles.star", "-o", out, "--reference",
                    sim / "truth.mrc", "--lambda-sweep", "0.01,100", "--n-iter", 4,
                    "--no-half-maps")
    assert result.exit_code == 0, result.output
    rows = (out / "lambda_sweep.csv").read_text().splitlines()
    assert rows[0] == "lambda,reference_fsc05_angstrom,reference_pearson" and len(rows) == 3
    table = [tuple(map(float, r.split(","))) for r in rows[1:]]
    best = min(table, key=lambda r: (r[1], -r[2]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["lambda"] == best[0]
    assert metrics["reference_fsc05_angstrom"] == pytest.approx(best[1], abs=1e-3)


@pytest.mark.parametrize(("n", "factor"), [(32, 2), (33, 3), (40, 4)])
def test_bin_stack_keeps_centre_mean_and_scales_geometry(n: int, factor: int):
    y, x = np.mgrid[:n, :n] - n // 2
    image = np.exp(-(y**2 + (x - 1.5) ** 2) / (2 * (1.2 * factor) ** 2)).astype(np.float32)
    stack = ParticleStack(images=image[None], pixel_size_angstrom=1.5,
                          shifts_px=np.array([[0.0, 1.5]]))
    binned = bin_stack(stack, factor)
    m = n // factor
    assert binned.image_size == m
    assert binned.pixel_size_angstrom == pytest.approx(1.5 * n / m)
    np.testing.assert_allclose(binned.shifts_px, [[0.0, 1.5 * m / n]])
    img = binned.images[0].astype(np.float64)
    yy, xx = np.mgrid[:m, :m]
    # the blob centre (n//2, n//2 + 1.5) lands at (m//2, m//2 + 1.5 m/n): centre n//2 → m//2
    assert (img * yy).sum() / img.sum() - m // 2 == pytest.approx(0.0, abs=0.02)
    assert (img * xx).sum() / img.sum() - m // 2 == pytest.approx(1.5 * m / n, abs=0.02)
    assert img.mean() == pytest.approx(float(image.mean()), rel=1e-4)


def test_refine_reduces_orientation_error(tmp_path: Path):
    sim = tmp_path / "sim"
    result = invoke("simulate", sim, "--density", "1a5t", "--box", BOX, "--n-particles", 40,
                    "--snr", 10, "--no-ctf", "--angular-error", 75, "--seed", 2)
    assert result.exit_code == 0, result.output
    out = tmp_path / "ref"
    result = invoke("refine", sim / "particles.star", "-o", out, "--true-star",
                    sim / "particles_true_poses.star", "--refine-iter", 1, "--n-iter", 3)
    assert result.exit_code == 0, result.output
    assert "angle error" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = metrics["mean_angle_error_before_deg"], metrics["mean_angle_error_after_deg"]
    assert before > 10.0  # variance 75 deg² per Euler angle
    assert after < 0.8 * before, (before, after)
    refined = starfile.read(out / "refined.star", always_dict=True)["particles"]
    start = starfile.read(sim / "particles.star", always_dict=True)["particles"]
    assert len(refined) == 40
    assert not np.allclose(refined["rlnAngleRot"], start["rlnAngleRot"])
    px = read_mrc(sim / "truth.mrc").voxel_size_angstrom[0]
    assert read_mrc(out / "map.mrc").voxel_size_angstrom[0] == pytest.approx(px, rel=1e-5)
    assert read_mrc(out / "refined.mrcs").data.shape == (40, BOX, BOX)
    # gold standard (the default with half maps): each half set refined on its own
    assert metrics["refined_separately"] == "half sets"
    assert sorted(refined["rlnRandomSubset"].unique()) == [1, 2]
    history = (out / "refine_history.csv").read_text().splitlines()
    assert history[0].startswith("set,iteration,objective") and len(history) == 3
    assert [h.split(",")[0] for h in history[1:]] == ["half1", "half2"]
    assert (out / "half1.mrc").is_file() and (out / "fsc.png").is_file()


def test_config_defaults_are_the_thesis_ones():
    cfg = SpaReconstructConfig()
    assert (cfg.method, cfg.iterations, cfg.n_cg) == ("admm_cg", 30, 7)
    assert (cfg.blob_radius, cfg.blob_alpha, cfg.blob_order) == (4.0, 19.0, 2.0)
    assert SpaReconstructConfig(method="ilf").iterations == 200
    assert parse_scales("4, 2,1") == (4, 2, 1)
    sim = SpaSimulateConfig(clean=True)
    assert sim.simulate_kwargs()["snr"] is None


def test_docs_options_tables_match_the_config():
    """docs/spa.md's option tables are the rows generated from the config models."""
    from cryowedge.cli.spa import reconstruct_options, refine_options, simulate_options
    from cryowedge.config.spa import SpaRefineConfig

    text = (Path(__file__).resolve().parents[1] / "docs" / "spa.md").read_text()
    own = set(SpaRefineConfig.model_fields) - set(SpaReconstructConfig.model_fields)
    options = [*simulate_options(), *reconstruct_options(),
               *[o for o in refine_options() if o.name in own]]
    missing = []
    for o in options:
        default = "" if o.default_text is None else f"`{o.default_text}`"
        row = f"| `{o.flags[0]}` | {default} | {o.help.replace('|', '/')} |"
        if row not in text:
            missing.append(row)
    assert not missing, "regenerate the tables of docs/spa.md:\n" + "\n".join(missing)
