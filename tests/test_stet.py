"""Compressed-sensing STET (thesis ch. 3): scan masks, the S·H operator, CS-TV, files and CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import adjoint_mismatch
from typer.testing import CliRunner

from cryowedge import TiltGeometry, TiltProjector
from cryowedge.cli import app
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.scan_mask import mask_path_for
from cryowedge.operators.elementary import MaskOperator
from cryowedge.operators.scan import stet_operator
from cryowedge.recon.stet import inpaint_projections, reconstruct_stet, reconstruct_tds
from cryowedge.simulate import random_scan_mask, shepp_logan_3d, uniform_tilt_subset
from cryowedge.simulate.stet import simulate_stet

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run these tiny problems on one thread: with two OpenMP threads on a busy 2-core machine
    their many small kernels spend most of the time waiting for each other (measured 25 s vs 4 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _snr_db(x, truth) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(10 * np.log10(np.sum(truth**2) / np.sum((truth - x) ** 2)))


# --------------------------------------------------------------------------- masks and subsets


def test_random_scan_mask_has_the_exact_count_per_tilt_and_differs_between_tilts():
    mask = random_scan_mask((6, 12, 10), 0.3, seed=4)
    assert mask.dtype == bool and mask.shape == (6, 12, 10)
    np.testing.assert_array_equal(mask.sum(axis=(1, 2)), 36)  # round(0.3 · 120)
    flat = mask.reshape(6, -1)
    assert all(not np.array_equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))
    np.testing.assert_array_equal(mask, random_scan_mask((6, 12, 10), 0.3, seed=4))  # seeded
    assert not np.array_equal(mask, random_scan_mask((6, 12, 10), 0.3, seed=5))
    assert random_scan_mask((2, 3, 3), 0.5, seed=0).sum(axis=(1, 2)).tolist() == [5, 5]  # 4.5 → 5
    assert random_scan_mask((2, 4, 4), 1.0).all()


def test_uniform_tilt_subset_count_and_spacing():
    half = uniform_tilt_subset(141, 0.5)
    assert half.size == 71 and half[0] == 0 and half[-1] == 140
    assert set(np.diff(half)) == {2}  # every second tilt of −70:1:70
    tenth = uniform_tilt_subset(141, 0.1)
    assert tenth.size == 14 and tenth[0] == 0 and tenth[-1] == 140
    assert set(np.diff(tenth)) <= {10, 11}  # as even as whole tilts allow
    assert uniform_tilt_subset(141, 0.03).tolist() == [0, 47, 93, 140]
    np.testing.assert_array_equal(uniform_tilt_subset(141, 1.0), np.arange(141))
    assert uniform_tilt_subset(141, 0.001).tolist() == [70]  # one tilt: the middle (0°)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: random_scan_mask((3, 4, 5), 0.0), "fraction must lie in (0, 1], got 0.0"),
        (lambda: random_scan_mask((3, 4, 5), 1.5), "got 1.5"),
        (lambda: random_scan_mask((3, 4, 5), 30), "pass 0.3 for 30 %"),
        (lambda: random_scan_mask((3, 4, 5), float("nan")), "got nan"),
        (lambda: random_scan_mask((3, 4, 5), 0.01), "measures round"),
        (lambda: random_scan_mask((4, 5), 0.5), "(n_tilts, ny, nx)"),
        (lambda: uniform_tilt_subset(10, -0.1), "fraction must lie in (0, 1], got -0.1"),
        (lambda: uniform_tilt_subset(0, 0.5), "n_tilts must be a positive integer, got 0"),
    ],
)
def test_bad_fractions_and_shapes_give_clear_errors(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)


# --------------------------------------------------------------------------- operators


def test_scan_mask_operator_is_an_orthogonal_projection(rng):
    mask = random_scan_mask((4, 5, 6), 0.4, seed=1)
    s = MaskOperator(mask)
    x = torch.as_tensor(rng.standard_normal(mask.shape))
    y = torch.as_tensor(rng.standard_normal(mask.shape))
    torch.testing.assert_close(s.forward(s.forward(x)), s.forward(x), rtol=0, atol=0)  # S² = S
    torch.testing.assert_close(s.adjoint(x), s.forward(x), rtol=0, atol=0)  # Sᵀ = S
    assert float(torch.sum(s.forward(x) * y)) == pytest.approx(float(torch.sum(x * s.forward(y))), rel=1e-13)


def test_stet_operator_is_s_times_h_with_exact_adjoint(rng):
    geom = TiltGeometry(tilt_angles_deg=np.arange(-70, 71, 10.0), detector_shape=(5, 12))
    mask = random_scan_mask(geom.tilt_series_shape, 0.3, seed=2)
    op = stet_operator(geom, (8, 5, 12), mask)
    assert op.domain_shape == (8, 5, 12) and op.range_shape == geom.tilt_series_shape
    assert adjoint_mismatch(op, rng) < 1e-12
    x = torch.as_tensor(rng.standard_normal((8, 5, 12)))
    expected = TiltProjector(geom, (8, 5, 12))(x) * torch.as_tensor(mask)
    torch.testing.assert_close(op(x), expected)


def test_mask_shape_mismatch_names_both_shapes():
    geom = TiltGeometry(tilt_angles_deg=np.arange(-60, 61, 30.0), detector_shape=(4, 6))
    bad = np.ones((5, 4, 7), dtype=bool)
    with pytest.raises(ValueError, match=r"\(5, 4, 7\).*\(5, 4, 6\)"):
        stet_operator(geom, (6, 4, 6), bad)
    data = np.zeros(geom.tilt_series_shape, np.float32)
    with pytest.raises(ValueError, match=r"\(5, 4, 7\).*\(5, 4, 6\)"):
        reconstruct_stet(data, bad, geom, n_iter=1)
    with pytest.raises(ValueError, match="only 0"):
        stet_operator(geom, (6, 4, 6), np.full(geom.tilt_series_shape, 2))


# --------------------------------------------------------------------------- reconstruction


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_zero_lambda_solution_satisfies_the_normal_equations(rng, fraction):
    geom = TiltGeometry(tilt_angles_deg=np.arange(-60, 61, 20.0), detector_shape=(3, 10))
    shape = (6, 3, 10)
    mask = random_scan_mask(geom.tilt_series_shape, fraction, seed=3)
    h = TiltProjector(geom, shape)
    b = torch.as_tensor(rng.standard_normal(geom.tilt_series_shape)) * torch.as_tensor(mask)
    x = reconstruct_stet(b, mask, geom, volume_shape=shape, tv_lambda=0.0, positivity=False, normalize=False,
                         n_iter=4, cg_iter=200, cg_tol=1e-15, dtype=torch.float64).x
    s = torch.as_tensor(mask, dtype=torch.float64)
    gradient = h.adjoint(s * (s * h(x) - b))  # (SH)ᵀ(SHx − b) = 0
    assert float(gradient.norm()) <= 1e-8 * float(h.adjoint(s * b).norm())


def test_stet_tv_lambda_is_the_solver_lambda_on_unit_std_measured_pixels(rng):
    """``tv_lambda`` means what it means in ``reconstruct``: λ on data / std(scanned pixels)."""
    from cryowedge.solvers import tv_admm

    geom = TiltGeometry.from_range(-60, 60, 20, (3, 10))
    shape = (6, 3, 10)
    mask = random_scan_mask(geom.tilt_series_shape, 0.5, seed=1)
    b = np.where(mask, 50.0 + 10.0 * rng.standard_normal(geom.tilt_series_shape), 0.0).astype(np.float32)
    ours = reconstruct_stet(b, mask, geom, volume_shape=shape, tv_lambda=0.7, n_iter=5, cg_iter=6).x
    scale = float(torch.as_tensor(b[mask]).double().std())
    direct = tv_admm(stet_operator(geom, shape, mask), torch.as_tensor(b) / scale, lam=0.7, n_iter=5, cg_iter=6,
                     regularizer="tv-aniso", positivity=True).x * scale
    np.testing.assert_allclose(ours.numpy(), direct.numpy(), rtol=1e-4, atol=1e-5 * float(direct.abs().max()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stet_reconstruction_on_cuda_matches_cpu():
    shape = (8, 12, 12)
    geom = TiltGeometry.from_range(-70, 70, 5, shape[1:])
    sim = simulate_stet(shepp_logan_3d(shape), geom, dose_fraction=0.3, snr=10.0, oversample=1, seed=0)
    on_cpu = reconstruct_stet(sim.data, sim.mask, geom, volume_shape=shape, n_iter=5).x
    on_gpu = reconstruct_stet(sim.data, sim.mask, geom, volume_shape=shape, n_iter=5, device="cuda").x
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-4 * float(on_cpu.abs().max()))


def test_tiny_ids_reconstruction_beats_zero_filled_fbp():
    from cryowedge import fbp

    shape = (16, 24, 24)
    truth = shepp_logan_3d(shape)
    geom = TiltGeometry.from_range(-70, 70, 2, shape[1:])
    sim = simulate_stet(truth, geom, dose_fraction=0.25, snr=10.0, oversample=2, seed=0)
    assert sim.dose_fraction == pytest.approx(0.25, abs=0.002)
    np.testing.assert_array_equal(sim.data[~sim.mask], 0.0)
    np.testing.assert_array_equal(sim.data[sim.mask], sim.full[sim.mask])
    ids = reconstruct_stet(sim.data, sim.mask, geom, volume_shape=shape, tv_lambda=0.3, n_iter=15).x
    # zero-filled FBP, rescaled by 1/f so that its mean is right; the better of two filters
    snr_fbp = max(_snr_db(fbp(sim.data / sim.dose_fraction, geom, volume_shape=shape, filter_name=name), truth)
                  for name in ("ram-lak", "hann"))
    snr_ids = _snr_db(ids, truth)
    assert snr_ids > snr_fbp + 2.0, (snr_ids, snr_fbp)
    assert float(ids.min()) >= 0.0  # positivity
    tds = reconstruct_tds(sim.full, geom, fraction=0.25, volume_shape=shape, tv_lambda=0.3, n_iter=15).x
    assert _snr_db(tds, truth) > snr_fbp  # T-DS runs and is sensible too


def test_inpainting_fills_gaps_better_than_zeros():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:20, :20]
    images = np.stack([((yy - 10) ** 2 + (xx - 8 - k) ** 2 < 36).astype(np.float32) for k in range(3)])
    mask = random_scan_mask(images.shape, 0.4, seed=1)
    noisy = images + 0.05 * rng.standard_normal(images.shape).astype(np.float32)
    filled = inpaint_projections(noisy * mask, mask, mu=0.05, n_iter=20).numpy()
    assert filled.shape == images.shape
    err_filled = np.linalg.norm(filled - images)
    assert err_filled < 0.3 * np.linalg.norm(noisy * mask - images)


# --------------------------------------------------------------------------- files and CLI


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("stet")
    result = runner.invoke(
        app,
        ["stet", "simulate", str(out), "--phantom", "shepp-logan", "--shape", "8", "16", "16",
         "--pixel-size", "7.5", "--tilt-range", "-60", "60", "--tilt-step", "10",
         "--dose-fraction", "0.4", "--snr", "20", "--seed", "1"],
    )
    assert result.exit_code == 0, result.output
    return out


def test_stet_simulate_writes_data_mask_next_to_it_and_record(simulated):
    ts = read_mrc(simulated / "tilt_series.mrc")
    assert ts.data.shape == (13, 16, 16) and ts.is_image_stack
    assert ts.voxel_size_angstrom == (7.5, 7.5, 7.5)
    mask_file = simulated / "tilt_series_mask.mrc"
    assert mask_path_for(simulated / "tilt_series.mrc") == mask_file
    raw = read_mrc(mask_file, dtype=None)
    assert raw.data.dtype.itemsize == 1 and set(np.unique(raw.data)) <= {0, 1}  # 8-bit 0/1
    mask = raw.data.astype(bool)
    np.testing.assert_array_equal(mask.sum(axis=(1, 2)), round(0.4 * 256))
    np.testing.assert_array_equal(ts.data[~mask], 0.0)  # unmeasured pixels stored as 0
    assert (simulated / "tilt_series.tlt").exists() and (simulated / "ground_truth.mrc").exists()
    record = yaml.safe_load((simulated / "run.yaml").read_text())
    assert record["command"] == "stet simulate"
    assert record["parameters"]["dose_fraction"] == 0.4
    assert record["parameters"]["measured_fraction"] == pytest.approx(102 / 256)


@pytest.mark.parametrize("method", ["tv", "inpaint-tv"])
def test_stet_reconstruct_round_trip_finds_the_mask_and_keeps_the_voxel_size(simulated, tmp_path, method):
    out = tmp_path / f"{method}.mrc"
    result = runner.invoke(app, ["stet", "reconstruct", str(simulated / "tilt_series.mrc"), str(out),
                                 "--method", method, "--tv-lambda", "0.3", "--n-iter", "8", "--inpaint-iter", "5",
                                 "--thickness", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    vol = read_mrc(out)
    assert vol.data.shape == (8, 16, 16) and vol.voxel_size_angstrom == (7.5, 7.5, 7.5)
    assert vol.data.min() >= 0.0
    truth = read_mrc(simulated / "ground_truth.mrc").data
    cc = np.corrcoef(vol.data.ravel(), truth.ravel())[0, 1]
    assert cc > 0.5, cc
    record = yaml.safe_load((tmp_path / f"{method}.run.yaml").read_text())
    assert record["command"] == "stet reconstruct" and record["parameters"]["mask"].endswith("tilt_series_mask.mrc")


def test_stet_reconstruct_missing_mask_fails_before_writing(simulated, tmp_path):
    for name in ("tilt_series.mrc", "tilt_series.tlt"):
        (tmp_path / name).write_bytes((simulated / name).read_bytes())
    out = tmp_path / "rec.mrc"
    result = runner.invoke(app, ["stet", "reconstruct", str(tmp_path / "tilt_series.mrc"), str(out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "tilt_series_mask.mrc not found" in text and "--mask" in text
    assert not out.exists() and not list(tmp_path.glob("*.run.yaml"))


def test_stet_reconstruct_mask_shape_mismatch_fails_before_writing(simulated, tmp_path):
    wrong = tmp_path / "wrong_mask.mrc"
    write_mrc(wrong, np.ones((13, 16, 15), dtype=bool), image_stack=True)
    out = tmp_path / "rec.mrc"
    result = runner.invoke(app, ["stet", "reconstruct", str(simulated / "tilt_series.mrc"), str(out),
                                 "--mask", str(wrong)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "(13, 16, 15)" in text and "(13, 16, 16)" in text
    assert not out.exists()


def test_stet_config_yaml_whole_or_section_and_typos(simulated, tmp_path):
    out = tmp_path / "rec.mrc"
    for text in ("reconstruct:\n  n_iter: 2\n  thickness: 4\n", "n_iter: 2\nthickness: 4\n"):
        cfg = tmp_path / "stet.yaml"
        cfg.write_text(text)
        result = runner.invoke(app, ["stet", "reconstruct", str(simulated / "tilt_series.mrc"), str(out),
                                     "--config", str(cfg), "--overwrite"])
        assert result.exit_code == 0, result.output
        assert read_mrc(out).data.shape == (4, 16, 16)
    cfg.write_text("lamda: 0.1\n")
    result = runner.invoke(app, ["stet", "reconstruct", str(simulated / "tilt_series.mrc"), str(out),
                                 "--config", str(cfg)])
    assert result.exit_code == 2 and "lamda" in result.output
    result = runner.invoke(app, ["stet", "simulate", str(tmp_path / "s"), "--dose-fraction", "1.5"])
    assert result.exit_code == 2 and "dose_fraction" in result.output


def test_old_import_path_still_works():
    """The STET pieces moved to their layers; workflows.stet re-exports them for older code."""
    from cryowedge.workflows import stet as old

    assert old.stet_operator is stet_operator and old.simulate_stet is simulate_stet
    assert old.reconstruct_stet is reconstruct_stet and old.mask_path_for is mask_path_for


def test_read_scan_mask_refuses_non_binary_and_wrong_shape(tmp_path):
    from cryowedge.io.scan_mask import read_scan_mask

    path = tmp_path / "ts_mask.mrc"
    mask = np.zeros((3, 4, 5), np.uint8)
    mask[:, ::2] = 1
    write_mrc(path, mask, image_stack=True)
    np.testing.assert_array_equal(read_scan_mask(path, (3, 4, 5)), mask.astype(bool))
    with pytest.raises(ValueError, match=r"\(3, 4, 5\).*\(3, 4, 6\)"):
        read_scan_mask(path, (3, 4, 6))
    mask[0, 0, 0] = 2
    write_mrc(path, mask, image_stack=True)
    with pytest.raises(ValueError, match=r"only 0 and 1 .* got values \[0, 1, 2\]"):
        read_scan_mask(path)
