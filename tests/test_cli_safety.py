"""The CLI never loses data: inputs, existing outputs, unwritable or full disks, Ctrl-C, resume.

Each test replays a user's steps through the command line (issue 9, section 1).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles

runner = CliRunner()

SIRT = ["--method", "sirt", "--device", "cpu"]


def _stack(tmp_path: Path, name: str = "ts.mrc") -> Path:
    rng = np.random.default_rng(0)
    data = rng.random((5, 8, 8)).astype(np.float32)
    path = tmp_path / name
    write_mrc(path, data, voxel_size_angstrom=2.0, image_stack=True)
    write_tilt_angles(path.with_suffix(".tlt"), np.linspace(-40, 40, 5))
    return path


def _run(*args: str | Path):
    result = runner.invoke(app, [str(a) for a in args])
    return result, " ".join(result.output.split())


def _spy_reconstruction(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the reconstruction must not start")

    monkeypatch.setattr("cryowedge.workflows.reconstruct.reconstruct_array", spy)
    return calls


# --------------------------------------------------------------------------- input = output


@pytest.mark.parametrize("link", [False, True])
def test_reconstruct_onto_its_input_is_refused_and_the_input_kept(tmp_path, link):
    stack = _stack(tmp_path)
    before = stack.read_bytes()
    out = stack
    if link:  # another name for the same file
        out = tmp_path / "other.mrc"
        out.symlink_to(stack)
    result, text = _run("reconstruct", stack, out, "--overwrite")
    assert result.exit_code == 2, result.output
    assert "is the input" in text
    assert stack.read_bytes() == before


def test_stet_reconstruct_onto_its_mask_is_refused(tmp_path):
    stack = _stack(tmp_path)
    mask = tmp_path / "ts_mask.mrc"
    write_mrc(mask, np.ones((5, 8, 8), dtype=bool), image_stack=True)
    before = mask.read_bytes()
    result, text = _run("stet", "reconstruct", stack, mask, "--overwrite")
    assert result.exit_code == 2, result.output
    assert "is the input" in text
    assert mask.read_bytes() == before


# --------------------------------------------------------------------------- existing outputs


def test_existing_output_needs_overwrite_and_is_kept_as_backup(tmp_path):
    stack = _stack(tmp_path)
    out = tmp_path / "tomo.mrc"
    assert _run("reconstruct", stack, out)[0].exit_code == 0
    first = out.read_bytes()
    result, text = _run("reconstruct", stack, out, "--filter", "hann")
    assert result.exit_code == 2, result.output
    assert "already exists" in text and "--overwrite" in text
    assert out.read_bytes() == first
    result, _ = _run("reconstruct", stack, out, "--filter", "hann", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tomo.mrc~").read_bytes() == first  # IMOD-style backup
    assert out.read_bytes() != first


@pytest.mark.parametrize(
    "command",
    [
        ["simulate", "{out}", "--phantom", "shepp-logan", "--shape", "8", "8", "8",
         "--tilt-step", "30", "--device", "cpu"],
        ["stet", "simulate", "{out}", "--phantom", "shepp-logan", "--shape", "8", "8", "8",
         "--tilt-step", "30", "--device", "cpu"],
    ],
)
def test_simulate_refuses_to_replace_without_overwrite(tmp_path, command):
    out = tmp_path / "sim"
    args = [a.format(out=out) for a in command]
    assert _run(*args)[0].exit_code == 0
    truth = (out / "ground_truth.mrc").read_bytes()
    result, text = _run(*args, "--seed", "7")
    assert result.exit_code == 2, result.output
    assert "--overwrite" in text
    assert (out / "ground_truth.mrc").read_bytes() == truth
    result, _ = _run(*args, "--seed", "7", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "ground_truth.mrc~").read_bytes() == truth


def test_evaluate_refuses_to_replace_without_overwrite(tmp_path):
    vol = np.random.default_rng(1).random((12, 12, 12)).astype(np.float32)
    write_mrc(tmp_path / "ref.mrc", vol)
    write_mrc(tmp_path / "rec.mrc", vol + 0.1)
    args = ["evaluate", tmp_path / "rec.mrc", "--reference", tmp_path / "ref.mrc",
            "--out", tmp_path / "eval"]
    assert _run(*args)[0].exit_code == 0
    result, text = _run(*args)
    assert result.exit_code == 2 and "--overwrite" in text
    assert _run(*args, "--overwrite")[0].exit_code == 0
    assert (tmp_path / "eval" / "metrics.md~").exists()


def test_evaluate_into_a_volume_is_refused(tmp_path):
    vol = np.random.default_rng(1).random((12, 12, 12)).astype(np.float32)
    write_mrc(tmp_path / "ref.mrc", vol)
    before = (tmp_path / "ref.mrc").read_bytes()
    result, text = _run("evaluate", tmp_path / "ref.mrc", "--reference", tmp_path / "ref.mrc",
                        "--out", tmp_path / "ref.mrc", "--overwrite")
    assert result.exit_code == 2, result.output
    assert (tmp_path / "ref.mrc").read_bytes() == before


# --------------------------------------------------------------------------- checks before work


def test_output_under_a_file_is_refused_before_the_reconstruction(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    calls = _spy_reconstruction(monkeypatch)
    result, text = _run("reconstruct", stack, tmp_path / "ts.tlt" / "sub" / "tomo.mrc")
    assert result.exit_code == 2, result.output
    assert "not a directory" in text
    assert calls == []


def test_read_only_output_directory_is_refused_before_the_reconstruction(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    if os.geteuid() == 0:  # root ignores permissions: a directory root cannot write into
        locked = Path("/sys")
        try:
            fd, probe = tempfile.mkstemp(dir=locked)
        except OSError:
            pass
        else:  # pragma: no cover - an unusual system
            os.close(fd)
            os.unlink(probe)
            pytest.skip("no directory here that root cannot write into")
        out = locked / "cryowedge_test" / "tomo.mrc"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "tomo.mrc"
    calls = _spy_reconstruction(monkeypatch)
    try:
        result, text = _run("reconstruct", stack, out)
    finally:
        if locked.is_relative_to(tmp_path):
            locked.chmod(0o700)
    assert result.exit_code == 2, result.output
    assert "not writable" in text
    assert calls == []


def test_too_little_free_space_is_refused_before_the_reconstruction(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    calls = _spy_reconstruction(monkeypatch)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    result, text = _run("reconstruct", stack, tmp_path / "tomo.mrc", *SIRT)
    assert result.exit_code == 2, result.output
    assert "not enough free disk space" in text
    assert calls == []
    assert not (tmp_path / "tomo.mrc").exists()


def test_simulate_checks_free_space_for_the_stacks_first(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 5000, 5000))

    def spy(*args, **kwargs):
        raise AssertionError("the simulation must not start")

    monkeypatch.setattr("cryowedge.workflows.simulate.simulate_from_config", spy)
    result, text = _run("simulate", tmp_path / "sim", "--shape", "8", "16", "16")
    assert result.exit_code == 2, result.output
    assert "not enough free disk space" in text


# --------------------------------------------------------------------------- failed final write


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_final_write_keeps_the_volume_in_a_named_fallback(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    result, _ = _run("reconstruct", stack, tmp_path / "ref.mrc", *SIRT, "--n-iter", "3")
    assert result.exit_code == 0
    reference = read_mrc(tmp_path / "ref.mrc").data
    spare = tmp_path / "spare"
    spare.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    monkeypatch.setattr("cryowedge.workflows.reconstruct.write_mrc", _enospc)
    result, text = _run("reconstruct", stack, tmp_path / "tomo.mrc", *SIRT, "--n-iter", "3")
    assert result.exit_code == 2, result.output
    kept = list(spare.glob("tomo.mrc.*.failed-write.npy"))
    assert len(kept) == 1
    assert "No space left on device" in text and kept[0].name in text
    np.testing.assert_array_equal(np.load(kept[0]), reference)
    assert not (tmp_path / "tomo.mrc").exists()


def test_failed_final_write_keeps_the_result_in_the_checkpoint_and_resume_writes_it(
    tmp_path, monkeypatch
):
    stack = _stack(tmp_path)
    args = [*SIRT, "--n-iter", "5", "--checkpoint-every", "2"]
    assert _run("reconstruct", stack, tmp_path / "ref.mrc", *args)[0].exit_code == 0
    reference = read_mrc(tmp_path / "ref.mrc").data
    out = tmp_path / "tomo.mrc"
    with monkeypatch.context() as m:
        m.setattr("cryowedge.workflows.reconstruct.write_mrc", _enospc)
        result, text = _run("reconstruct", stack, out, *args)
    assert result.exit_code == 2, result.output
    assert "iteration 5 is saved in the checkpoint" in text and "tomo.ckpt.pt" in text
    assert "--resume" in text
    result, _ = _run("reconstruct", stack, out, *args, "--resume")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_mrc(out).data, reference, rtol=1e-6,
                               atol=1e-6 * np.abs(reference).max())
    record = yaml.safe_load((tmp_path / "tomo.run.yaml").read_text())["parameters"]
    assert record["iterations_done"] == 5 and record["resumed_from_iteration"] == 5
    assert not (tmp_path / "tomo.ckpt.pt").exists()


# --------------------------------------------------------------------------- Ctrl-C and resume


def _interrupt_at(monkeypatch, iteration: int) -> None:
    from cryowedge.workflows import checkpoint

    original = checkpoint.IterationTracker.__call__

    def call(self, info):
        original(self, info)
        if self.offset + info.iteration == iteration:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.IterationTracker, "__call__", call)


def test_ctrl_c_says_what_was_saved_and_how_to_resume_and_the_resume_is_recorded(
    tmp_path, monkeypatch
):
    stack = _stack(tmp_path)
    args = [*SIRT, "--n-iter", "6", "--checkpoint-every", "2"]
    assert _run("reconstruct", stack, tmp_path / "ref.mrc", *args)[0].exit_code == 0
    reference = read_mrc(tmp_path / "ref.mrc").data
    out = tmp_path / "tomo.mrc"
    argv = ["reconstruct", str(stack), str(out), *args]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/cryowedge", *argv])
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)
        result, text = _run(*argv)
    assert result.exit_code == 130, result.output
    assert "interrupted after iteration 5 of 6" in text
    assert "iteration 4 of 6 is saved in" in text and "tomo.ckpt.pt" in text
    assert "cryowedge reconstruct" in text and text.rstrip().endswith("--resume")
    resume = text.split("resume with: ")[1].split()
    assert resume[0] == "cryowedge"
    result, _ = _run(*resume[1:])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(read_mrc(out).data, reference, rtol=1e-5,
                               atol=1e-5 * np.abs(reference).max())
    record = yaml.safe_load((tmp_path / "tomo.run.yaml").read_text())["parameters"]
    assert record["resumed"] is True
    assert record["resumed_from_iteration"] == 4
    assert record["iterations_done"] == 6


def test_ctrl_c_without_checkpoints_says_nothing_was_saved(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    _interrupt_at(monkeypatch, 2)
    result, text = _run("reconstruct", stack, tmp_path / "tomo.mrc", *SIRT, "--n-iter", "4")
    assert result.exit_code == 130, result.output
    assert "nothing was saved" in text and "--checkpoint-every" in text
    assert "--resume" not in text


def test_resume_with_fewer_iterations_records_the_count_reached(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    out = tmp_path / "tomo.mrc"
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)
        args = [*SIRT, "--n-iter", "8", "--checkpoint-every", "2"]
        assert _run("reconstruct", stack, out, *args)[0].exit_code == 130
    result, _ = _run("reconstruct", stack, out, *SIRT, "--n-iter", "1", "--resume")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((tmp_path / "tomo.run.yaml").read_text())["parameters"]
    assert record["n_iter"] == 1  # what was asked
    assert record["iterations_done"] == 4  # what the tomogram is: the checkpoint's 4
    assert record["resumed"] is True and record["resumed_from_iteration"] == 4


def test_a_new_run_does_not_replace_an_existing_checkpoint(tmp_path, monkeypatch):
    stack = _stack(tmp_path)
    out = tmp_path / "tomo.mrc"
    ckpt = tmp_path / "tomo.ckpt.pt"
    args = [*SIRT, "--n-iter", "6", "--checkpoint-every", "2"]
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)
        assert _run("reconstruct", stack, out, *args)[0].exit_code == 130
    saved = ckpt.read_bytes()
    for extra in ([], ["--checkpoint-every", "3"]):
        result, text = _run("reconstruct", stack, out, *SIRT, "--n-iter", "6", *extra)
        assert result.exit_code == 2, result.output
        assert "--resume" in text and "--restart" in text and "iteration 4" in text
        assert ckpt.read_bytes() == saved
    result, text = _run("reconstruct", stack, out, *args, "--resume", "--restart")
    assert result.exit_code == 2 and "exclude each other" in text
    result, _ = _run("reconstruct", stack, out, *args, "--restart")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((tmp_path / "tomo.run.yaml").read_text())["parameters"]
    assert record["resumed"] is False and record["iterations_done"] == 6
    assert not ckpt.exists()


def test_demo_refuses_to_replace_an_earlier_demo_before_simulating(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "fsc.png").write_bytes(b"earlier")

    def spy(*args, **kwargs):
        raise AssertionError("the simulation must not start")

    monkeypatch.setattr("cryowedge.workflows.demo.simulate_from_config", spy)
    result, text = _run("demo", "--out", out)
    assert result.exit_code == 2, result.output
    assert "fsc.png" in text and "--overwrite" in text
    assert (out / "fsc.png").read_bytes() == b"earlier"
