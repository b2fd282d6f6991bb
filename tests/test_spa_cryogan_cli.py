"""``cryowedge spa cryogan``: a tiny simulated run writes every output; bad input is one line."""

from __future__ import annotations

import mrcfile
import pytest
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.config.spa_cryogan import CryoGanConfig

_TINY = [
    "--simulate",
    "--sim-density",
    "1a5t",  # bundled: the test must not need ../shared/data
    "--sim-box",
    "16",
    "--sim-particles",
    "32",
    "--preset",
    "cpu-small",
    "--batch-size",
    "4",
    "--n-discr",
    "2",
    "--channels",
    "4",
    "--align-rotations",
    "40",
]


def _invoke(*args):
    return CliRunner().invoke(app, ["spa", "cryogan", *map(str, args)])


def test_cli_tiny_simulated_run(tmp_path):
    out = tmp_path / "gan"
    r = _invoke(*_TINY, "--epochs", "1", "-o", out)
    assert r.exit_code == 0, r.output
    for name in (
        "half_map_1.mrc",
        "half_map_2.mrc",
        "full_map.mrc",
        "fsc.png",
        "truth.mrc",
        "resolution_vs_epoch.md",
        "resolution_vs_epoch.csv",
        "resolution_vs_epoch.png",
        "cryogan.yaml",
        "data.yaml",
        "cryogan.ckpt.pt",
    ):
        assert (out / name).exists(), name
    with mrcfile.open(out / "full_map.mrc") as m:
        assert m.data.shape == (16, 16, 16)
        assert float(m.voxel_size.x) > 1.0
    cfg = CryoGanConfig.from_yaml(out / "cryogan.yaml")
    assert (cfg.channels, cfg.gp_lambda, cfg.batch_size) == (4, 1.0, 4)  # preset + options
    assert "half-map FSC 0.143" in r.output
    # --resume with more epochs continues from the checkpoint.
    r2 = _invoke(*_TINY, "--epochs", "2", "-o", out, "--resume")
    assert r2.exit_code == 0, r2.output
    assert (out / "resolution_vs_epoch.csv").read_text().count("\n") == 3  # header + 2 epochs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x"], "STAR file or --simulate"),
        (["p.star", "--simulate", "-o", "x"], "STAR file or --simulate"),
        (["--simulate", "--preset", "gpu-huge", "-o", "x"], "--preset must be one of"),
        (["--simulate", "--symmetry", "T", "-o", "x"], "Cn or Dn"),
        (["missing.star", "-o", "x"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    args = [str(tmp_path / a) if a in ("x", "missing.star") else a for a in args]
    r = _invoke(*args)
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
    assert "Traceback" not in r.output
