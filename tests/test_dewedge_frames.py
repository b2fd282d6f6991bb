"""dewedge prepare from dose-fractionated frames: even frames → half A, odd frames → half B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.dewedge.prepare import frame_paths, prepare_frames, split_frame_sums
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.tilt_series import project_volume

PIXEL = 7.5  # Å
SHAPE = (16, 32, 32)  # (z, y, x)
ANGLES = np.arange(-60.0, 60.1, 6.0)  # 21 tilts
N_FRAMES = 4


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    vol = np.zeros(SHAPE, np.float32)
    for _ in range(10):
        c = rng.uniform((5, 4, 8), (SHAPE[0] - 5, SHAPE[1] - 4, SHAPE[2] - 8))
        vol += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 4.0)
    return vol


def _write_frames(folder: Path, *, noise: float, n_frames: int = N_FRAMES) -> list[Path]:
    """One MRC ``(n_frames, y, x)`` per tilt: the projection split evenly over the frames, plus
    independent Gaussian noise in every frame; and ``ts.tlt``."""
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=SHAPE[1:])
    views = project_volume(_blobs(), geom)
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, view in enumerate(views):
        frames = view[None] / n_frames + rng.normal(0, noise, (n_frames, *view.shape))
        paths.append(write_mrc(folder / f"tilt_{i + 1}.mrc", frames.astype(np.float32),
                               voxel_size_angstrom=PIXEL, image_stack=True))
    write_tilt_angles(folder / "ts.tlt", ANGLES)
    return paths


def _config() -> DewedgeConfig:
    return DewedgeConfig.model_validate({
        "shared": {"subtomo_size": 8, "depth": 2},
        "prepare": {"thickness": SHAPE[0], "min_mask_fraction": 0.0}})


def _prepare(frames, out: Path, angles: Path):
    return prepare_frames(frames, out, angles=angles, tilt_axis_angle_deg=0.0,
                          config=_config())[0]


def _volumes(tomo) -> dict[str, np.ndarray]:
    return {k: np.asarray(read_mrc(p).data, dtype=np.float64) for k, p in
            (("a", tomo.half_a_path), ("b", tomo.half_b_path), ("full", tomo.full_path))}


def _corr(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    return float((u * v).sum() / np.sqrt((u * u).sum() * (v * v).sum()))


@pytest.fixture(scope="module")
def frame_runs(tmp_path_factory):
    """The same projections with and without frame noise, each through prepare_frames."""
    root = tmp_path_factory.mktemp("frames")
    noisy = _write_frames(root / "noisy", noise=0.5)
    _write_frames(root / "clean", noise=0.0)  # read back as a directory (natural name order)
    return {"noisy": _prepare(noisy, root / "out_noisy", root / "noisy" / "ts.tlt"),
            "clean": _prepare(root / "clean", root / "out_clean", root / "clean" / "ts.tlt"),
            "root": root}


def test_frame_halves_have_independent_noise(frame_runs):
    noisy, clean = _volumes(frame_runs["noisy"]), _volumes(frame_runs["clean"])
    noise = {k: noisy[k] - clean[k] for k in noisy}
    # independent frames → independent half noise; the full series holds both halves' noise,
    # so its noise correlates with each half's by 1/√2 (equal variances)
    assert abs(_corr(noise["a"], noise["b"])) < 0.05
    assert _corr(noise["a"], noise["full"]) == pytest.approx(1 / np.sqrt(2), abs=0.05)
    assert _corr(noise["b"], noise["full"]) == pytest.approx(1 / np.sqrt(2), abs=0.05)
    # the signal is in both halves: the noise-free halves are the same volume
    assert _corr(clean["a"], clean["b"]) > 0.999


def test_mean_of_the_frame_halves_is_the_full_reconstruction_up_to_scale(frame_runs):
    v = _volumes(frame_runs["noisy"])
    mean = 0.5 * (v["a"] + v["b"])
    scale = float((mean * v["full"]).sum() / (v["full"] ** 2).sum())
    assert scale == pytest.approx(0.5, rel=1e-4)  # an even frame count: A + B = full exactly
    residual = np.linalg.norm(mean - scale * v["full"]) / np.linalg.norm(mean)
    assert residual < 1e-5


def test_frame_preparation_records_the_split_and_keeps_every_tilt(frame_runs):
    tomo = frame_runs["noisy"]
    assert tomo.split == "frames (even/odd)"
    np.testing.assert_allclose(tomo.half_tilt_angles_deg[0], ANGLES)
    np.testing.assert_allclose(tomo.half_tilt_angles_deg[1], ANGLES)
    assert tomo.voxel_size_angstrom == pytest.approx((PIXEL,) * 3)
    assert tomo.shape == SHAPE
    out = tomo.half_a_path.parent
    for name in ("frames_even.mrc", "frames_odd.mrc", "frames_sum.mrc", "prepared.yaml"):
        assert (out / name).is_file(), name
    stack = read_mrc(out / "frames_even.mrc").data
    assert stack.shape == (ANGLES.size, *SHAPE[1:])
    manifest = yaml.safe_load((out / "prepared.yaml").read_text())
    assert manifest["tomograms"][0]["split"] == "frames (even/odd)"


def test_split_frame_sums_even_and_odd_counts():
    frames = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    a, b, full = split_frame_sums(frames)
    np.testing.assert_array_equal(a, frames[0] + frames[2])
    np.testing.assert_array_equal(b, frames[1] + frames[3])
    np.testing.assert_array_equal(full, frames.sum(0))
    ones = np.ones((3, 2, 2), np.float32)  # 3 frames: both halves rescaled to 1.5 frames
    a, b, full = split_frame_sums(ones)
    np.testing.assert_allclose(a, 1.5)
    np.testing.assert_allclose(b, 1.5)
    np.testing.assert_allclose(full, 3.0)
    with pytest.raises(ValueError, match="at least 2 frames"):
        split_frame_sums(ones[:1])


def test_frame_paths_directory_and_glob_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        write_mrc(tmp_path / f"TS_{i}.mrc", np.zeros((2, 4, 4), np.float32), image_stack=True)
    (tmp_path / "notes.txt").write_text("x")
    expected = [tmp_path / f"TS_{i}.mrc" for i in (1, 2, 10)]
    assert frame_paths(tmp_path) == expected
    assert frame_paths(str(tmp_path / "TS_*.mrc")) == expected
    assert frame_paths([expected[2], expected[0]]) == [expected[2], expected[0]]  # as given
    with pytest.raises(ValueError, match="no file matches"):
        frame_paths(str(tmp_path / "none_*.mrc"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no"):
        frame_paths(empty)


def test_bad_frame_stacks_are_refused_before_any_work(tmp_path):
    paths = _write_frames(tmp_path / "f", noise=0.1, n_frames=2)
    angles = tmp_path / "f" / "ts.tlt"
    one = write_mrc(tmp_path / "one.mrc", np.zeros((1, 32, 32), np.float32), image_stack=True)
    with pytest.raises(ValueError, match="one.mrc holds 1 frame.*at least 2 frames"):
        prepare_frames([*paths[:-1], one], tmp_path / "o1", angles=angles, config=_config())
    other = write_mrc(tmp_path / "other.mrc", np.zeros((2, 32, 30), np.float32),
                      image_stack=True)
    with pytest.raises(ValueError, match="other.mrc has images of 32×30"):
        prepare_frames([*paths[:-1], other], tmp_path / "o2", angles=angles, config=_config())
    with pytest.raises(ValueError, match="21 tilt angles but 20 frame stacks"):
        prepare_frames(paths[:-1], tmp_path / "o3", angles=angles, config=_config())
    few = _config().model_copy(deep=True)
    few.prepare.exclude_views = "1-18"
    with pytest.raises(ValueError, match="3 tilts left"):
        prepare_frames(paths, tmp_path / "o4", angles=angles, config=few)
    for folder in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / folder).exists()


def test_cli_prepare_frames_from_a_directory(tmp_path):
    from typer.testing import CliRunner

    from cryowedge.cli import app
    from cryowedge.dewedge.prepare import load_prepared

    _write_frames(tmp_path / "frames", noise=0.2, n_frames=2)
    out = tmp_path / "ddw"
    args = ["dewedge", "prepare", "--frames", str(tmp_path / "frames"), "--angles",
            str(tmp_path / "frames" / "ts.tlt"), "--out", str(out), "--thickness", "16",
            "--subtomo-size", "8", "--depth", "2", "--min-mask-fraction", "0",
            "--tilt-axis-angle", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = load_prepared(out)
    assert data[0].split == "frames (even/odd)" and data[0].shape == SHAPE
    assert (out / "dewedge.yaml").is_file()
    result = CliRunner().invoke(app, [*args[:2], str(out / "frames_sum.mrc"), *args[2:]])
    assert result.exit_code != 0 and "or --frames" in result.output
