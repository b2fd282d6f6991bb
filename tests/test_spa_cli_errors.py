"""Bad input to ``cryowedge spa``: one ``error:`` line naming the value and the fix, exit code
2, no traceback, and nothing written (the checks run before any reconstruction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from pydantic import ValidationError
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.config.spa import SpaReconstructConfig, SpaRefineConfig, SpaSimulateConfig
from cryowedge.io.mrc import write_mrc
from cryowedge.spa.io import write_relion_particles
from cryowedge.spa.particles import CTFParams, ParticleStack
from cryowedge.workflows.spa import load_particles, read_reference, reconstruct_particles

BOX = 12


def invoke(*args: object):
    return CliRunner().invoke(app, ["spa", *map(str, args)])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _stack(n: int = BOX, p: int = 6, *, ctf: bool = True, angles: bool = True,
           seed: int = 0) -> ParticleStack:
    rng = np.random.default_rng(seed)
    return ParticleStack.from_angles(
        rng.standard_normal((p, n, n)).astype(np.float32),
        rng.uniform(0, 180, (p, 3)) if angles else None,
        pixel_size_angstrom=2.0,
        ctf=CTFParams.constant(p, defocus_u_angstrom=15000.0) if ctf else None,
    ) if angles else ParticleStack(
        images=rng.standard_normal((p, n, n)).astype(np.float32), pixel_size_angstrom=2.0,
        ctf=CTFParams.constant(p, defocus_u_angstrom=15000.0) if ctf else None)


@pytest.fixture
def star(tmp_path: Path) -> Path:
    """A small valid STAR file with angles and CTF columns."""
    path, _ = write_relion_particles(tmp_path / "in" / "p.star", _stack())
    return path


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


# ----------------------------------------------------------------------------- λ < 0
def test_negative_lambda_is_refused(star: Path, tmp_path: Path):
    out = tmp_path / "out"
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--lambda", "-1"))
    assert "tv_lambda" in line and "-1" in line and ">= 0" in line
    assert_nothing_written(out)
    with pytest.raises(ValidationError, match="must be a finite number >= 0"):
        SpaReconstructConfig(tv_lambda=-0.5)
    with pytest.raises(ValidationError, match="refine_lambda"):
        SpaRefineConfig(refine_lambda=-1.0)
    # also from a YAML file
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tv_lambda: -3\n")
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--config", cfg))
    assert "tv_lambda" in line and "-3" in line


# ----------------------------------------------------------------------------- CTF columns
@pytest.mark.parametrize("mode", ["phase_flip", "wiener", "model"])
def test_star_without_defocus_when_ctf_requested(tmp_path: Path, mode: str):
    star, _ = write_relion_particles(tmp_path / "in" / "p.star", _stack(ctf=False))
    out = tmp_path / "out"
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--ctf", mode))
    assert "rlnDefocusU" in line and f"--ctf {mode}" in line and "--ctf none" in line
    assert_nothing_written(out)
    with pytest.raises(ValueError, match="rlnDefocusU"):
        load_particles(star, SpaReconstructConfig(ctf=mode))
    # 'auto' reads it without CTF, 'none' too
    assert load_particles(star, SpaReconstructConfig(ctf="auto")).ctf is None
    line = one_error_line(invoke("refine", star, "-o", out, "--ctf", mode))
    assert "rlnDefocusU" in line


# ----------------------------------------------------------------------------- sizes, cubes
def test_particles_of_different_sizes(tmp_path: Path):
    a, _ = write_relion_particles(tmp_path / "a.star", _stack(BOX, 3))
    b, _ = write_relion_particles(tmp_path / "b.star", _stack(BOX + 4, 3, seed=1))
    tables = [starfile.read(p, always_dict=True) for p in (a, b)]
    both = pd.concat([t["particles"] for t in tables], ignore_index=True)
    optics = tables[0]["optics"].drop(columns=["rlnImageSize"])
    mixed = tmp_path / "mixed.star"
    starfile.write({"optics": optics, "particles": both}, mixed)
    out = tmp_path / "out"
    line = one_error_line(invoke("reconstruct", mixed, "-o", out))
    assert "different sizes" in line and f"{BOX}×{BOX}" in line and f"{BOX + 4}×{BOX + 4}" in line
    assert "re-extract" in line
    assert_nothing_written(out)


def test_reference_must_be_a_cube_of_the_box(star: Path, tmp_path: Path):
    flat = write_mrc(tmp_path / "flat.mrc", np.zeros((BOX, BOX, BOX + 2), np.float32))
    out = tmp_path / "out"
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--reference", flat))
    assert "cube" in line and str((BOX, BOX, BOX + 2)) in line
    big = write_mrc(tmp_path / "big.mrc", np.zeros((BOX + 2,) * 3, np.float32))
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--reference", big))
    assert f"{BOX + 2}³" in line and f"{BOX} pixels" in line and "resample" in line
    assert_nothing_written(out)
    with pytest.raises(ValueError, match="cube"):
        read_reference(flat, BOX)


def test_simulate_from_a_non_cubic_density(tmp_path: Path):
    density = write_mrc(tmp_path / "d.mrc", np.ones((8, 10, 10), np.float32),
                        voxel_size_angstrom=2.0)
    out = tmp_path / "out"
    line = one_error_line(invoke("simulate", out, "--density", density, "--box", 8))
    assert "cubic" in line and "(8, 10, 10)" in line
    assert_nothing_written(out)


# ----------------------------------------------------------------------------- missing files
def test_missing_files(star: Path, tmp_path: Path):
    out = tmp_path / "out"
    line = one_error_line(invoke("reconstruct", tmp_path / "nothing.star", "-o", out))
    assert "STAR file not found" in line and "nothing.star" in line
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--reference",
                                 tmp_path / "ref.mrc"))
    assert "reference map not found" in line and "ref.mrc" in line
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--config",
                                 tmp_path / "c.yaml"))
    assert "config file not found" in line
    line = one_error_line(invoke("refine", star, "-o", out, "--true-star", tmp_path / "t.star"))
    assert "true-pose STAR file not found" in line
    line = one_error_line(invoke("simulate", out, "--density", tmp_path / "map.mrc"))
    assert "density map not found" in line
    # the stack the STAR file names is gone (renamed): an error, and --stack NAME=FILE reads it
    moved = star.with_name("renamed.mrcs")
    star.with_suffix(".mrcs").rename(moved)
    line = one_error_line(invoke("reconstruct", star, "-o", out))
    assert "p.mrcs" in line and "does not exist" in line and "image_root" in line
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--stack", "p.mrcs"))
    assert "--stack expects NAME=FILE" in line and "'p.mrcs'" in line
    stack = load_particles(star, stack_paths={"p.mrcs": moved})
    assert stack.n_particles == 6
    assert_nothing_written(out)
    with pytest.raises(FileNotFoundError):
        reconstruct_particles(tmp_path / "nothing.star", out)


# ----------------------------------------------------------------------------- other values
def test_star_without_angles(tmp_path: Path):
    star, _ = write_relion_particles(tmp_path / "p.star", _stack(angles=False))
    line = one_error_line(invoke("reconstruct", star, "-o", tmp_path / "out"))
    assert "rlnAngleRot" in line and "angular assignment" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--scales", "3,2"), ("scales", "'3,2'", "divide")),
        (("--scales", "x"), ("scales", "whole numbers")),
        (("--bin", 4), ("bin 4", "3-pixel", "bin 1")),
        (("--n-cg", 0), ("n_cg", "0")),
        (("--lambda-sweep", "1,-2"), ("lambda_sweep", "-2", ">= 0")),
        (("--lambda-sweep", "1,a"), ("lambda_sweep", "numbers")),
        (("--lambda-sweep", "1,10", "--scales", "2,1", "--reference", "x.mrc"),
         ("one scale", "--scales 2")),
        (("--lambda-sweep", "1,10"), ("--reference MAP",)),
    ],
)
def test_bad_reconstruct_values(star: Path, tmp_path: Path, args, words):
    out = tmp_path / "out"
    line = one_error_line(invoke("reconstruct", star, "-o", out, *args))
    for word in words:
        assert word in line, line
    assert not (out / "map.mrc").exists()


def test_unknown_method_is_a_usage_error(star: Path, tmp_path: Path):
    result = invoke("reconstruct", star, "-o", tmp_path / "out", "--method", "sirt")
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "'sirt' is not one of 'admm_cg', 'ilf'" in text


def test_bad_simulate_values(tmp_path: Path):
    line = one_error_line(invoke("simulate", tmp_path / "s", "--defocus-range", 20000, 10000))
    assert "MIN 20000 Å" in line and "--defocus-range MIN MAX" in line
    line = one_error_line(invoke("simulate", tmp_path / "s", "--n-classes", 4))
    assert "--no-ctf" in line
    with pytest.raises(ValidationError, match="snr"):
        SpaSimulateConfig(snr=-1)


def test_missing_gpu_is_reported_before_any_work(star: Path, tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "out"
    line = one_error_line(invoke("reconstruct", star, "-o", out, "--device", "cuda"))
    assert "cuda" in line and "--device cpu" in line
    assert not out.exists()
