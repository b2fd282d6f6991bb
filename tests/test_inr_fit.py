"""Coordinate-network fit: gradients through the projector, batching, fitting, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cryowedge as cw
from cryowedge.config.inr import InrConfig
from cryowedge.geometry.wedge import wedge_mask
from cryowedge.inr import (
    Objective,
    build_network,
    fit_inr,
    inr_objective,
    plan_chunks,
    predict_volume,
    prepare_problem,
)
from cryowedge.inr.regularizers import CrowtherWedgePenalty
from cryowedge.simulate.phantoms import hollow_spheres
from cryowedge.simulate.tilt_series import project_volume

SHAPE = (8, 12, 16)  # (nz, ny, nx)
TINY = dict(width=16, n_frequencies=8, n_layers=3, device="cpu")


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(0)
    vol = rng.random(SHAPE).astype(np.float32)
    geom = cw.TiltGeometry.from_range(-60, 60, 10, detector_shape=SHAPE[1:])
    return project_volume(vol, geom).astype(np.float32), geom


@pytest.fixture(scope="module")
def spheres():
    shape = (12, 16, 24)
    vol = hollow_spheres(shape, n_spheres=2, radius_range_px=(2.5, 3.5), rng=1).astype(np.float32)
    geom = cw.TiltGeometry.from_range(-60, 60, 4, detector_shape=shape[1:])
    return vol, project_volume(vol, geom, oversample=2).astype(np.float32), geom


def _flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_gradient_through_the_projector_matches_finite_differences(series, loss):
    ts, geom = series
    problem = prepare_problem(ts, geom, SHAPE)
    model = build_network(width=8, n_frequencies=6, n_layers=3, seed=0).double()
    penalty = CrowtherWedgePenalty(SHAPE[0], SHAPE[2], geom.tilt_angles_deg)
    objective = Objective(loss, lam_c=0.3, penalty=penalty, tv_weight=0.2)
    model.zero_grad()
    inr_objective(model, problem, objective, slice_batch=5, backward=True)
    grad = _flat_grad(model)
    params = list(model.parameters())
    direction = [torch.randn_like(p, generator=torch.Generator().manual_seed(i))
                 for i, p in enumerate(params)]
    eps = 1e-6

    def value(sign):
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
        out = inr_objective(model, problem, objective)["loss"]
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
        return out

    fd = (value(1.0) - value(-1.0)) / (2 * eps)
    analytic = float(grad @ torch.cat([d.flatten() for d in direction]))
    assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_batched_objective_equals_the_whole_volume(series):
    ts, geom = series
    problem = prepare_problem(ts, geom, SHAPE)
    model = build_network(width=16, n_frequencies=8, n_layers=3, seed=4)
    penalty = CrowtherWedgePenalty(SHAPE[0], SHAPE[2], geom.tilt_angles_deg)
    objective = Objective("l2", lam_c=0.5, penalty=penalty, tv_weight=0.1)
    results = {}
    for batch in (SHAPE[1], 5, 1):
        model.zero_grad()
        terms = inr_objective(model, problem, objective, slice_batch=batch, backward=True)
        results[batch] = (terms, _flat_grad(model).clone())
    whole_terms, whole_grad = results[SHAPE[1]]
    assert whole_terms["crowther"] > 0 and whole_terms["tv"] > 0
    for batch in (5, 1):
        terms, grad = results[batch]
        for key in ("loss", "data", "crowther", "tv"):
            assert terms[key] == pytest.approx(whole_terms[key], rel=1e-5)
        torch.testing.assert_close(grad, whole_grad, rtol=1e-4, atol=1e-7)


def _wedge_energy(vol, angles):
    nz, _, nx = vol.shape
    missing = wedge_mask((nz, 1, nx), angles, missing=True).numpy()[:, 0, :]
    power = np.abs(np.fft.fft2(vol - vol.mean(), axes=(0, 2))) ** 2
    return float((power * missing[:, None, :]).sum() / power.sum())


def test_fit_reduces_the_loss_and_the_penalty_reduces_wedge_energy(spheres):
    vol, ts, geom = spheres
    base = dict(width=32, n_frequencies=32, n_layers=3, encoding_scale=0.1, epochs=60,
                slice_batch=8, lr=1e-2, device="cpu")
    problem = prepare_problem(ts, geom, vol.shape)
    initial = build_network(**InrConfig(**base).network_options(),
                            half_extent=max(vol.shape) / 2)
    start = inr_objective(initial, problem, Objective("l2"))["data"]
    start_corr = np.corrcoef(predict_volume(initial, vol.shape).numpy().ravel(), vol.ravel())[0, 1]
    plain = fit_inr(ts, geom, InrConfig(**base), volume_shape=vol.shape)
    reg = fit_inr(ts, geom, InrConfig(**base, lam_c=1.0), volume_shape=vol.shape)
    assert plain.steps_done == plain.total_steps == 120 and len(plain.history) == 60
    assert plain.history[-1]["data"] < 0.06 * start  # measured 0.036
    corr = np.corrcoef(plain.volume.ravel(), vol.ravel())[0, 1]
    assert corr > 0.7 and corr > start_corr + 0.4  # measured 0.79 (the initial network: ~0)
    assert reg.history[-1]["crowther"] < plain_crowther(plain, problem, geom)
    assert _wedge_energy(reg.volume, geom.tilt_angles_deg) < 0.8 * _wedge_energy(
        plain.volume, geom.tilt_angles_deg)


def plain_crowther(result, problem, geom):
    penalty = CrowtherWedgePenalty(problem.volume_shape[0], problem.volume_shape[2],
                                   geom.tilt_angles_deg)
    net_units = predict_volume(result.model, problem.volume_shape)
    return float(penalty(net_units))


def test_chunk_plan_goes_from_the_middle_outwards():
    cfg = InrConfig(chunk_rows=4, slice_batch=3, epochs=5, warm_epochs=2)
    chunks = plan_chunks(cfg, 18)  # 5 chunks of 3-4 rows
    assert [c.index for c in chunks] == [2, 3, 4, 1, 0]
    assert [c.parent for c in chunks] == [None, 2, 3, 2, 1]
    assert [c.epochs for c in chunks] == [5, 2, 2, 2, 2]
    assert chunks[0].rows == (7, 10) and chunks[0].batches == ((7, 8), (8, 10)) or (
        sum(b1 - b0 for b0, b1 in chunks[0].batches) == chunks[0].rows[1] - chunks[0].rows[0])
    covered = sorted(r for c in chunks for r in range(*c.rows))
    assert covered == list(range(18))
    cold = plan_chunks(cfg.updated(warm_start=False), 18)
    assert all(c.parent is None and c.epochs == 5 for c in cold)


class _StopAt:
    def __init__(self, step):
        self.step = step

    def __call__(self, info):
        return info.extras["step"] >= self.step


class _InterruptAt(_StopAt):
    def __call__(self, info):
        if info.extras["step"] >= self.step:
            raise KeyboardInterrupt


def test_resume_reproduces_the_uninterrupted_run(series, tmp_path):
    ts, geom = series
    cfg = InrConfig(**TINY, epochs=3, warm_epochs=2, chunk_rows=6, slice_batch=2, n_seeds=2,
                    lam_c=0.1, tv_weight=0.05, checkpoint_every=3, seed=7)
    # 2 chunks of 6 rows, 3 batches each: 9 + 6 = 15 steps per seed, 30 in all
    full = fit_inr(ts, geom, cfg, volume_shape=SHAPE, checkpoint_path=tmp_path / "a.pt")
    assert full.total_steps == 30 and not full.stopped_early
    # stopped mid-epoch (step 4), then at a chunk boundary (step 9), then by Ctrl-C at step 23
    # (the last periodic checkpoint, step 21, the end of an epoch, is what resumes)
    ckpt = tmp_path / "b.pt"
    first = fit_inr(ts, geom, cfg, volume_shape=SHAPE, checkpoint_path=ckpt, callback=_StopAt(4))
    assert first.stopped_early and first.steps_done == 4 and first.volume.shape == SHAPE
    second = fit_inr(ts, geom, cfg, volume_shape=SHAPE, checkpoint_path=ckpt, resume=True,
                     callback=_StopAt(9))
    assert second.resumed_from == 4 and second.steps_done == 9
    with pytest.raises(KeyboardInterrupt):
        fit_inr(ts, geom, cfg, volume_shape=SHAPE, checkpoint_path=ckpt, resume=True,
                callback=_InterruptAt(23))
    last = fit_inr(ts, geom, cfg, volume_shape=SHAPE, checkpoint_path=ckpt, resume=True)
    assert last.resumed_from == 21 and last.steps_done == 30
    for (k, a), b in zip(full.model.state_dict().items(), last.model.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    np.testing.assert_array_equal(last.volume, full.volume)
    assert [h["loss"] for h in last.history] == [h["loss"] for h in full.history]


def test_resume_refuses_another_network_other_options_or_data(series, tmp_path):
    ts, geom = series
    cfg = InrConfig(**TINY, epochs=2, slice_batch=6, checkpoint_every=1)
    ckpt = tmp_path / "c.pt"
    fit_inr(ts, geom, cfg, volume_shape=SHAPE, checkpoint_path=ckpt, callback=_StopAt(2))
    with pytest.raises(ValueError, match=r"network of another shape \(width: checkpoint 16 vs"):
        fit_inr(ts, geom, cfg.updated(width=32), volume_shape=SHAPE, checkpoint_path=ckpt,
                resume=True)
    with pytest.raises(ValueError, match=r"other fit options \(lam_c: 0.0 -> 0.5\)"):
        fit_inr(ts, geom, cfg.updated(lam_c=0.5), volume_shape=SHAPE, checkpoint_path=ckpt,
                resume=True)
    with pytest.raises(ValueError, match="other data"):
        fit_inr(ts * 1.5 + 1, geom, cfg, volume_shape=SHAPE, checkpoint_path=ckpt, resume=True)
    resumed = fit_inr(ts, geom, cfg.updated(checkpoint_every=3), volume_shape=SHAPE,
                      checkpoint_path=ckpt, resume=True)
    assert resumed.steps_done == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"slice_batch": 13}, r"slice_batch 13 is larger than the volume's 12 y-slices"),
        ({"chunk_rows": 20, "slice_batch": 4}, r"chunk_rows 20 is larger than the volume's 12"),
    ],
)
def test_bad_sizes_are_refused_before_any_work(series, monkeypatch, changes, message):
    ts, geom = series
    import cryowedge.inr.fit as fit_module

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the check")

    monkeypatch.setattr(fit_module, "prepare_problem", no_work)
    with pytest.raises(ValueError, match=message):
        fit_inr(ts, geom, InrConfig(**TINY, **changes), volume_shape=SHAPE)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lam_c": -0.1}, "lam_c"),
        ({"activation": "tanh"}, "activation"),
        ({"encoding": "hash"}, "encoding"),
        ({"slice_batch": 8, "chunk_rows": 4}, "slice_batch 8 is larger than chunk_rows 4"),
    ],
)
def test_bad_options_are_refused_by_the_config(options, message):
    with pytest.raises(ValueError, match=message):
        InrConfig(**options)


def test_objective_refuses_negative_weights():
    with pytest.raises(ValueError, match="lam_c must be a finite number >= 0"):
        Objective("l2", lam_c=-1.0)
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        Objective("l3")


def test_mixed_precision_keeps_the_projector_in_float32(series):
    ts, geom = series
    problem = prepare_problem(ts, geom, SHAPE)
    model = build_network(width=16, n_frequencies=8, n_layers=3, seed=1)
    objective = Objective("l2")
    full = inr_objective(model, problem, objective, backward=True)
    grad = _flat_grad(model).clone()
    model.zero_grad()
    half = inr_objective(model, problem, objective, backward=True, autocast=torch.bfloat16)
    assert half["loss"] == pytest.approx(full["loss"], rel=0.05)
    assert float(torch.nn.functional.cosine_similarity(_flat_grad(model), grad, dim=0)) > 0.95
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        fit_inr(ts, geom, InrConfig(**TINY, slice_batch=6, mixed_precision="fp16"),
                volume_shape=SHAPE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_float16_autocast_on_cuda_fits_like_float32(series):
    ts, geom = series
    cfg = InrConfig(**{**TINY, "device": "cuda"}, epochs=40, slice_batch=6, lr=1e-2)
    half = fit_inr(ts, geom, cfg, volume_shape=SHAPE)  # auto: float16 + GradScaler
    full = fit_inr(ts, geom, cfg.updated(mixed_precision="off"), volume_shape=SHAPE)
    assert np.isfinite(half.volume).all()
    assert half.history[-1]["data"] == pytest.approx(full.history[-1]["data"], rel=0.3)
    assert np.corrcoef(half.volume.ravel(), full.volume.ravel())[0, 1] > 0.9
