"""Streaming reconstruction by tilt-axis slabs: equal to the in-memory result, atomic output."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.config.registry import parse_method_config
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import open_mrc_lazy, read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp
from cryowedge.solvers import sirt, tv_admm
from cryowedge.workflows import streaming
from cryowedge.workflows.reconstruct import plan_streaming, reconstruct_file
from cryowedge.workflows.streaming import (
    align_tilt_series,
    available_memory_bytes,
    method_slab_runner,
    plan_slab_rows,
    stream_reconstruct,
    tilt_series_std,
    with_data_scale,
)

SHAPE = (12, 23, 18)  # (nz, ny, nx); ny = 23 is prime: no slab size divides it


def _blobs(shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """A few Gaussian blobs that vary along y too (so rows differ), ``(nz, ny, nx)`` float32."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*(np.arange(n) - n // 2 for n in shape), indexing="ij")
    vol = np.zeros(shape)
    for _ in range(6):
        centre = rng.uniform(-0.3, 0.3, 3) * np.array(shape)
        sigma = rng.uniform(1.5, 3.0)
        vol += np.exp(
            -sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True)) / (2 * sigma**2)
        )
    return torch.as_tensor(vol, dtype=torch.float32)


@pytest.fixture(scope="module")
def problem():
    geom = TiltGeometry.from_range(-60, 60, 6, SHAPE[1:], pixel_size_angstrom=4.0)
    op = TiltProjector(geom, SHAPE)
    data = op(_blobs(SHAPE)).numpy()
    data += np.random.default_rng(1).normal(0, 0.05 * data.std(), data.shape).astype(np.float32)
    return geom, data


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("slab_rows", [1, 5, 8, 23])
def test_streamed_fbp_equals_in_memory(tmp_path: Path, problem, slab_rows: int) -> None:
    geom, data = problem
    ref = fbp(data, geom, volume_shape=SHAPE).numpy()
    out = stream_reconstruct(
        data, geom, SHAPE, tmp_path / "fbp.mrc", method_slab_runner("fbp"), slab_rows=slab_rows
    )
    got = read_mrc(out)
    np.testing.assert_allclose(got.data, ref, rtol=0, atol=2e-6 * np.abs(ref).max())
    assert got.voxel_size_angstrom == (4.0, 4.0, 4.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fbp.mrc"]


@pytest.mark.parametrize("slab_rows", [4, 7])
def test_streamed_sirt_equals_in_memory(tmp_path: Path, problem, slab_rows: int) -> None:
    geom, data = problem
    ref = sirt(TiltProjector(geom, SHAPE), data, n_iter=10).x.numpy()
    out = stream_reconstruct(
        data,
        geom,
        SHAPE,
        tmp_path / "sirt.mrc",
        method_slab_runner("sirt", n_iter=10),
        slab_rows=slab_rows,
    )
    np.testing.assert_allclose(read_mrc(out).data, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize(
    "method, options", [("wbp", {}), ("sart", {"n_iter": 2}), ("art", {"n_iter": 1})]
)
def test_streamed_row_methods_equal_in_memory(tmp_path: Path, problem, method, options) -> None:
    geom, data = problem
    ref = method_slab_runner(method, **options)(data, geom, SHAPE)  # the whole volume at once
    out = stream_reconstruct(
        data, geom, SHAPE, tmp_path / "v.mrc", method_slab_runner(method, **options), slab_rows=7
    )
    np.testing.assert_allclose(read_mrc(out).data, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_streamed_from_lazy_file_with_progress(tmp_path: Path, problem) -> None:
    geom, data = problem
    write_mrc(tmp_path / "ts.mrc", data, image_stack=True)
    lazy = open_mrc_lazy(tmp_path / "ts.mrc")
    steps: list[tuple[str, float]] = []
    stream_reconstruct(
        lazy,
        geom,
        SHAPE,
        tmp_path / "v.mrc",
        method_slab_runner("fbp"),
        slab_rows=10,
        progress=lambda step, f: steps.append((step, f)),
    )
    ref = fbp(data, geom, volume_shape=SHAPE).numpy()
    np.testing.assert_allclose(
        read_mrc(tmp_path / "v.mrc").data, ref, atol=2e-6 * np.abs(ref).max()
    )
    assert steps == [("slab 1/3", 1 / 3), ("slab 2/3", 2 / 3), ("slab 3/3", 1.0)]


@pytest.mark.parametrize("axis_deg, shifts", [(90.0, False), (-86.5, False), (0.0, True)])
def test_raw_stack_is_aligned_then_streamed(tmp_path: Path, axis_deg: float, shifts: bool) -> None:
    n_t = 11
    geom = TiltGeometry.from_range(-60, 60, 12, (20, 16), tilt_axis_angle_deg=axis_deg)
    if shifts:
        geom = geom.with_(shifts_px=np.random.default_rng(2).normal(0, 1.5, (n_t, 2)))
    n_axis, n_perp = geom.aligned_detector_shape
    shape = (10, n_axis, n_perp)
    op = TiltProjector(geom, shape)
    raw = op(_blobs(shape, seed=3)).numpy()
    # in memory, FBP resamples the whole stack with to_aligned; streaming does it image by image
    aligned, aligned_geom = align_tilt_series(raw, geom, tmp_path / "al.mrc")
    np.testing.assert_allclose(
        np.asarray(aligned), op.to_aligned(torch.from_numpy(raw)).numpy(), atol=1e-6
    )
    assert aligned_geom.tilt_axis_angle_deg == 0.0 and aligned_geom.detector_shape == (
        n_axis,
        n_perp,
    )
    ref = fbp(raw, geom, volume_shape=shape).numpy()
    stream_reconstruct(
        raw, geom, shape, tmp_path / "out" / "v.mrc", method_slab_runner("fbp"), slab_rows=6
    )
    np.testing.assert_allclose(
        read_mrc(tmp_path / "out" / "v.mrc").data, ref, atol=2e-6 * np.abs(ref).max()
    )
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["v.mrc"]  # aligned temp file removed


def test_tv_with_halo_is_close_to_whole_volume(tmp_path: Path, problem) -> None:
    """TV couples rows: without a halo the slab borders differ; a halo of 8 rows shrinks that.

    Measured (this test's data, slabs of 6 rows, λ = 0.5): relative L2 difference to the
    whole-volume solve 2.0 % without a halo, 0.05 % with 8 rows of halo (10 ADMM iterations,
    5 CG steps; 0.003 % with 20 and 10). What a halo cannot remove comes from ADMM's inner CG,
    whose step lengths are inner products over the whole volume (docs/streaming.md).
    """
    geom, data = problem
    scale = tilt_series_std(data)
    ref = tv_admm(TiltProjector(geom, SHAPE), data / scale, n_iter=10, lam=0.5, cg_iter=5)
    ref = ref.x.numpy() * scale
    runner = with_data_scale(method_slab_runner("tv", n_iter=10, tv_lambda=0.5, cg_iter=5), scale)
    diffs = {}
    for halo in (0, 8):
        out = stream_reconstruct(
            data, geom, SHAPE, tmp_path / f"tv{halo}.mrc", runner, slab_rows=6, halo_rows=halo
        )
        diffs[halo] = _rel(read_mrc(out).data, ref)
    assert diffs[0] > 5e-3, diffs  # the coupling is real
    assert diffs[8] < 0.1 * diffs[0], diffs
    assert diffs[8] < 2e-3, diffs


def test_nothing_left_when_a_slab_fails(tmp_path: Path, problem) -> None:
    geom, data = problem
    out = tmp_path / "v.mrc"
    out.write_bytes(b"previous result")
    calls = []

    def failing(series, g, shape):
        calls.append(shape)
        if len(calls) == 2:
            raise RuntimeError("slab failed")
        return np.zeros(shape, np.float32)

    with pytest.raises(RuntimeError, match="slab failed"):
        stream_reconstruct(data, geom, SHAPE, out, failing, slab_rows=8)
    assert [p.name for p in tmp_path.iterdir()] == [
        "v.mrc"
    ] and out.read_bytes() == b"previous result"
    raw_geom = geom.with_(tilt_axis_angle_deg=90.0, detector_shape=SHAPE[1:][::-1])
    raw = np.ascontiguousarray(data.transpose(0, 2, 1))
    calls.clear()
    with pytest.raises(RuntimeError, match="slab failed"):  # also the aligned temporary goes
        stream_reconstruct(raw, raw_geom, SHAPE, out, failing, slab_rows=8)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mrc"]
    with pytest.raises(ValueError, match=r"run_slab returned shape \(12, 8\)"):
        stream_reconstruct(
            data, geom, SHAPE, out, lambda s, g, shape: np.zeros(shape[:2]), slab_rows=8
        )
    assert [p.name for p in tmp_path.iterdir()] == [
        "v.mrc"
    ] and out.read_bytes() == b"previous result"


def test_bad_input_is_refused_before_work(tmp_path: Path, problem) -> None:
    geom, data = problem
    never = method_slab_runner("fbp")
    for rows in (0, -3, 24, 2.5):
        with pytest.raises(ValueError, match=r"slab rows must be an integer in \[1, 23\]"):
            stream_reconstruct(data, geom, SHAPE, tmp_path / "v.mrc", never, slab_rows=rows)
    with pytest.raises(ValueError, match="halo rows must be an integer >= 0"):
        stream_reconstruct(data, geom, SHAPE, tmp_path / "v.mrc", never, slab_rows=4, halo_rows=-1)
    with pytest.raises(ValueError, match=r"volume_shape must be \(nz, 23, nx\)"):
        stream_reconstruct(data, geom, (12, 20, 18), tmp_path / "v.mrc", never, slab_rows=4)
    with pytest.raises(ValueError, match="does not match the geometry"):
        stream_reconstruct(data[:-1], geom, SHAPE, tmp_path / "v.mrc", never, slab_rows=4)
    bad = data.copy()
    bad[3, 15, 2] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf values in rows 12:18"):
        stream_reconstruct(bad, geom, SHAPE, tmp_path / "v.mrc", never, slab_rows=6)
    assert list(tmp_path.iterdir()) == []


def test_plan_slab_rows() -> None:
    shape = (100, 1000, 200)
    assert plan_slab_rows(shape, 61, 200, "fbp", memory_budget_bytes=10**12) is None
    rows = plan_slab_rows(shape, 61, 200, "sirt", memory_budget_bytes=300 * 2**20)
    assert rows is not None and 1 <= rows < 1000
    fewer = plan_slab_rows(shape, 61, 200, "tv", memory_budget_bytes=300 * 2**20, halo_rows=8)
    assert fewer is not None and fewer < rows
    with pytest.raises(ValueError, match="even for one row"):
        plan_slab_rows(shape, 61, 200, "sirt", memory_budget_bytes=10**6)
    with pytest.raises(ValueError, match="unknown method"):
        plan_slab_rows(shape, 61, 200, "magic", memory_budget_bytes=10**9)


def test_available_memory_respects_the_address_space_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/status") as handle:
        vm = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
    limit = vm + (512 << 20)
    if hard != resource.RLIM_INFINITY and limit > hard:
        pytest.skip("hard address-space limit below the test's")
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        left = available_memory_bytes()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert 0 < left <= 512 << 20


def test_tilt_series_std_matches_numpy() -> None:
    data = np.random.default_rng(4).normal(3.0, 2.0, (5, 37, 11)).astype(np.float32)
    assert tilt_series_std(data, rows_per_read=8) == pytest.approx(
        float(data.astype(np.float64).std(ddof=1)), rel=1e-12
    )
    assert tilt_series_std(np.ones((2, 3, 4))) == 1.0


# --------------------------------------------------------------------------- the reconstruct workflow


def _stack_on_disk(tmp_path: Path, problem) -> Path:
    geom, data = problem
    path = tmp_path / "ts.mrc"
    write_mrc(path, data, voxel_size_angstrom=3.5, image_stack=True)
    write_tilt_angles(tmp_path / "ts.tlt", geom.tilt_angles_deg)
    return path


@pytest.mark.parametrize("method, options", [("fbp", {}), ("sirt", {"n_iter": 5})])
def test_reconstruct_file_streams_when_memory_is_short(tmp_path: Path, problem, monkeypatch,
                                                       method, options) -> None:
    """Without --slab, a volume that does not fit the memory budget is streamed, and the
    result equals the in-memory reconstruction (same voxel size)."""
    path = _stack_on_disk(tmp_path, problem)
    config = parse_method_config({"method": method, "thickness": SHAPE[0], **options})
    ref = reconstruct_file(path, tmp_path / "mem.mrc", config)
    geom = load_tilt_series(path).geometry
    assert plan_streaming(config, geom) is None  # the small problem fits: in memory
    fixed, per_row = streaming.estimate_memory_bytes(SHAPE, geom.n_tilts, SHAPE[2], method)
    budget = fixed + 8.5 * per_row  # room for 8 rows of the 23
    monkeypatch.setattr(streaming, "available_memory_bytes",
                        lambda: budget / streaming.MEMORY_FRACTION)
    rows = plan_streaming(config, geom)
    assert rows == 8
    out = reconstruct_file(path, tmp_path / "streamed.mrc", config)
    streamed, in_memory = read_mrc(out), read_mrc(ref)
    np.testing.assert_allclose(streamed.data, in_memory.data, rtol=0,
                               atol=1e-5 * np.abs(in_memory.data).max())
    assert streamed.voxel_size_angstrom == in_memory.voxel_size_angstrom == (3.5, 3.5, 3.5)
    record = yaml.safe_load((tmp_path / "streamed.run.yaml").read_text())
    assert record["parameters"]["streamed_slab_rows"] == rows


def test_cli_slab_out_of_range_is_refused_before_any_work(tmp_path: Path, problem) -> None:
    path = _stack_on_disk(tmp_path, problem)
    out = tmp_path / "out.mrc"
    for slab, words in (("1000", "1000"), ("0", "slab_rows")):
        result = CliRunner().invoke(app, ["reconstruct", str(path), str(out), "--slab", slab])
        message = " ".join(result.output.split())
        assert result.exit_code == 2 and words in message and "Traceback" not in message, message
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and words in errors[0], result.output  # one line says it all
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ts.mrc", "ts.tlt"]


@pytest.mark.parametrize("extra", [[], ["--slab", "5"]])
def test_cli_output_on_a_full_disk_fails_in_one_line_and_leaves_nothing(
    tmp_path: Path, problem, monkeypatch, extra
) -> None:
    """In memory the final write fails; streamed, reserving the output's blocks fails."""
    import errno
    import os

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = _stack_on_disk(tmp_path, problem)
    monkeypatch.setattr(os, "fsync", no_space)
    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    result = CliRunner().invoke(app, ["reconstruct", str(path), str(tmp_path / "out.mrc"), *extra])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "space left" in message and "Traceback" not in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ts.mrc", "ts.tlt"]  # nothing half-written
