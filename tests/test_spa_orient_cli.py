"""``cryowedge spa orient simulate|train|recover`` end to end on a tiny set, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import starfile
import torch
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.geometry.rotations import euler_zyz_to_matrix
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.spa.angles import geodesic_distance_deg

TINY_NET = ["--channels", "8,16", "--embedding-dim", "8", "--hidden", "32", "--epochs", "2",
            "--steps-per-epoch", "4", "--batch-images", "16", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def invoke(*args: object):
    return CliRunner().invoke(app, ["spa", "orient", *map(str, args)])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("orient")
    torch.set_num_threads(1)
    r = invoke("simulate", d / "sim", "--box", 16, "--n-particles", 48, "--seed", 3)
    assert r.exit_code == 0, r.output
    r = invoke("train", d / "net", "--box", 16, "--n-train", 64, "--n-val", 16, *TINY_NET)
    assert r.exit_code == 0, r.output
    return d


def test_simulate_writes_true_angles_and_truth(workdir):
    sim = workdir / "sim"
    star = starfile.read(sim / "particles.star")
    table = star["particles"] if isinstance(star, dict) else star
    assert len(table) == 48
    tilt = table["rlnAngleTilt"].to_numpy()
    assert tilt.max() <= 90.0 + 1e-6  # half of SO(3) by default
    assert np.ptp(table["rlnAngleRot"].to_numpy() % 360.0) > 180.0  # no C_n restriction

    truth = read_mrc(sim / "truth.mrc")
    assert truth.data.shape == (16, 16, 16)
    assert yaml.safe_load((sim / "orient_simulate.yaml").read_text())["n_particles"] == 48


def test_simulate_asymmetric_unit(tmp_path):
    r = invoke("simulate", tmp_path, "--box", 8, "--n-particles", 40, "--cyclic", 4)
    assert r.exit_code == 0, r.output
    star = starfile.read(tmp_path / "particles.star")
    rot = (star["particles"] if isinstance(star, dict) else star)["rlnAngleRot"].to_numpy()
    assert np.all((rot % 360.0 >= 0) & (rot % 360.0 < 90.0 + 1e-6))


def test_train_writes_a_resumable_checkpoint(workdir):
    net = workdir / "net"
    for name in ("distance_net.pt", "training.png", "distances.png", "train_metrics.json"):
        assert (net / name).is_file(), name
    m = json.loads((net / "train_metrics.json").read_text())
    assert len(m["train_loss"]) == 2
    r = invoke("train", net, "--box", 16, "--n-train", 64, "--n-val", 16, *TINY_NET[:-6],
               "--epochs", 3, "--steps-per-epoch", 4, "--batch-images", 16, "--device", "cpu",
               "--resume", "--overwrite")
    assert r.exit_code == 0, r.output
    m2 = json.loads((net / "train_metrics.json").read_text())
    assert len(m2["train_loss"]) == 3
    assert m2["train_loss"][:2] == pytest.approx(m["train_loss"])


def test_recover_writes_aligned_star_map_and_fsc(workdir):
    sim, out = workdir / "sim", workdir / "rec"
    r = invoke("recover", sim / "particles.star", "--model", workdir / "net" / "distance_net.pt",
               "-o", out, "--reference-map", sim / "truth.mrc", "--n-steps", 60,
               "--batch-pairs", 256, "--n-restarts", 1, "--n-iter", 3)
    assert r.exit_code == 0, r.output
    for name in ("recovered.star", "map.mrc", "fsc.png", "errors.png", "recover_metrics.json",
                 "orient_recover.yaml"):
        assert (out / name).is_file(), name
    m = json.loads((out / "recover_metrics.json").read_text())
    assert m["aligned"] and 0 <= m["mean_error_deg"] <= 180 and "fsc05_angstrom" in m
    # the written angles are the aligned ones: their errors against the input's are the metric
    def rot(path):
        s = starfile.read(path)
        t = s["particles"] if isinstance(s, dict) else s
        return euler_zyz_to_matrix(t["rlnAngleRot"].to_numpy(), t["rlnAngleTilt"].to_numpy(),
                                   t["rlnAnglePsi"].to_numpy())

    err = geodesic_distance_deg(rot(out / "recovered.star"), rot(sim / "particles.star"))
    assert err.mean() == pytest.approx(m["mean_error_deg"], abs=0.05)
    assert read_mrc(out / "map.mrc").data.shape == (16, 16, 16)


def test_recover_without_angles_uses_common_lines(workdir, tmp_path):
    from cryowedge.spa.io import read_relion_particles, write_relion_particles

    stack = read_relion_particles(workdir / "sim" / "particles.star", ctf=False)
    write_relion_particles(tmp_path / "noangles.star", stack.replace(rotations=None))
    out = tmp_path / "rec"
    r = invoke("recover", tmp_path / "noangles.star", "--model",
               workdir / "net" / "distance_net.pt", "-o", out, "--n-steps", 40,
               "--batch-pairs", 256, "--n-restarts", 1, "--n-iter", 2,
               "--commonlines-grid", 100)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "recover_metrics.json").read_text())
    assert m["align"] == "commonlines" and not m["aligned"] and "commonlines_score" in m
    assert (out / "map.mrc").is_file() and (out / "recovered.star").is_file()
    r = invoke("recover", tmp_path / "noangles.star", "--model",
               workdir / "net" / "distance_net.pt", "-o", tmp_path / "r2", "--align",
               "reference")
    assert r.exit_code == 2 and "rlnAngleRot" in r.output


def test_recover_bad_input(workdir, tmp_path):
    sim = workdir / "sim"
    model = workdir / "net" / "distance_net.pt"
    r = invoke("recover", sim / "particles.star", "--model", tmp_path / "none.pt", "-o", tmp_path)
    assert r.exit_code == 2 and "does not exist" in r.output
    write_mrc(tmp_path / "small.mrc", np.zeros((8, 8, 8), np.float32))
    r = invoke("recover", sim / "particles.star", "--model", model, "-o", tmp_path / "o",
               "--reference-map", tmp_path / "small.mrc")
    assert r.exit_code == 2 and "particle box" in r.output
    r = invoke("recover", sim / "particles.star", "--model", sim / "truth.mrc", "-o",
               tmp_path / "o2")
    assert r.exit_code == 2
    r = invoke("train", tmp_path / "t", "--channels", "8,x")
    assert r.exit_code == 2 and "channels" in r.output


def test_yaml_config_and_option_precedence(tmp_path):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("box_size: 8\nn_particles: 12\nhalf_so3: false\nseed: 5\n")
    r = invoke("simulate", tmp_path / "out", "--config", cfg, "--n-particles", 6)
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((tmp_path / "out" / "orient_simulate.yaml").read_text())
    assert saved["n_particles"] == 6 and saved["box_size"] == 8 and saved["half_so3"] is False
    assert read_mrc(tmp_path / "out" / "truth.mrc").data.shape == (8, 8, 8)
    cfg.write_text("n_particle: 3\n")
    r = invoke("simulate", tmp_path / "bad", "--config", cfg)
    assert r.exit_code == 2 and "n_particles" in r.output
