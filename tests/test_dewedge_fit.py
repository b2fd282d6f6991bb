"""The dewedge fitting core: loss = its definition, rotations, rotated wedges, data slabs,
wedge update, resume = uninterrupted run, checkpoint errors, bad input, and "it learns"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.dewedge.data import (
    SubtomoPairs,
    TomogramPair,
    _WedgeFiller,
    crop_size_for,
    rotate_center_crop,
)
from cryowedge.dewedge.fit import fit, load_checkpoint, load_model
from cryowedge.dewedge.loss import masked_fourier_loss, masked_fourier_terms, n2n_loss
from cryowedge.dewedge.unet import UNet3D
from cryowedge.geometry.wedge import wedge_mask
from cryowedge.operators.subvolume import SubvolumeExtract


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # oversubscribed CI cores: 1 thread is faster
    yield
    torch.set_num_threads(old)


def _symmetric_mask(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Random 0/1 full-grid mask with m(k) = m(−k) (index −k mod N)."""
    m = (rng.random(shape) < 0.5).astype(np.float64)
    flipped = np.roll(m[::-1, ::-1, ::-1], shift=(1, 1, 1), axis=(0, 1, 2))
    return m * flipped


def _rfft_half(full: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(full[..., : full.shape[-1] // 2 + 1].copy())


def _blobs(shape, n, rng, radius=(1.5, 3.0)):
    z, y, x = np.indices(shape)
    out = np.zeros(shape, np.float64)
    for _ in range(n):
        c = rng.uniform(0, np.array(shape))
        r = rng.uniform(*radius)
        out += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * r * r))
    return out


def _wedge_filter(v: np.ndarray, angles) -> np.ndarray:
    w = wedge_mask(v.shape, angles, dtype=torch.float64).numpy()
    return np.fft.ifftn(np.fft.fftn(v) * w).real


def _tiny_config(shared: dict | None = None, **fit_options) -> DewedgeConfig:
    fit_section = {
        "epochs": 4,
        "subtomos_per_epoch": 4,
        "batch_size": 2,
        "val_fraction": 0.0,
        "checkpoint_every": 2,
        "update_wedge_every": 2,
        "mixed_precision": "off",
    }
    fit_section.update(fit_options)
    return DewedgeConfig.model_validate(
        {
            "shared": {"subtomo_size": 16, "chans": 2, "depth": 2, "device": "cpu"}
            | (shared or {}),
            "fit": fit_section,
        }
    )


@pytest.fixture(scope="module")
def pair():
    """Blobs + independent noise in each half, ±60° wedge applied (z, y, x) = (20, 40, 24)."""
    rng = np.random.default_rng(1)
    shape = (20, 40, 24)
    gt = _blobs(shape, 30, rng)
    a = _wedge_filter(gt + rng.normal(0, 0.3, shape), [-60, 60]).astype(np.float32)
    b = _wedge_filter(gt + rng.normal(0, 0.3, shape), [-60, 60]).astype(np.float32)
    return a, b


# --------------------------------------------------------------------------- loss


@pytest.mark.parametrize("shape", [(8, 6, 10), (7, 8, 9)])
def test_masked_loss_equals_definition_on_hand_made_masks(shape):
    rng = np.random.default_rng(0)
    out = rng.normal(size=(2, 1, *shape))
    tgt = rng.normal(size=(2, 1, *shape))
    rot = np.stack([_symmetric_mask(rng, shape) for _ in range(2)])[:, None]
    meas = _symmetric_mask(rng, shape)[None, None]
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in shape), indexing="ij")
    sphere = (np.sqrt(kx**2 + ky**2 + kz**2) <= 0.4).astype(np.float64)
    spec = np.fft.fftn(tgt - out, axes=(-3, -2, -1))

    def term(mask):  # mean over voxels of |ifft(mask · fft(residual))|², per sample
        filtered = np.fft.ifftn(mask * sphere * spec, axes=(-3, -2, -1))
        return (np.abs(filtered) ** 2).reshape(2, -1).mean(axis=1)

    t1, t2 = term(rot * meas), term(rot * (1 - meas))
    # the masks are point-symmetric, so the masked residuals are real: same as Re(ifft)²
    assert np.abs(np.fft.ifftn(rot * meas * sphere * spec, axes=(-3, -2, -1)).imag).max() < 1e-9
    got1, got2 = masked_fourier_terms(
        torch.from_numpy(out),
        torch.from_numpy(tgt),
        _rfft_half(rot),
        _rfft_half(meas),
        loss_radius=0.4,
    )
    np.testing.assert_allclose(got1.numpy(), t1, rtol=1e-5)
    np.testing.assert_allclose(got2.numpy(), t2, rtol=1e-5)
    loss = masked_fourier_loss(
        torch.from_numpy(out),
        torch.from_numpy(tgt),
        _rfft_half(rot),
        _rfft_half(meas),
        wedge_weight=2.0,
        loss_radius=0.4,
    )
    assert float(loss) == pytest.approx(float(np.mean(t1 + 2.0 * t2)), rel=1e-5)


def test_n2n_loss_is_mse_and_low_passed_mse():
    rng = np.random.default_rng(3)
    out, tgt = rng.normal(size=(2, 3, 1, 8, 9, 10))
    o, t = torch.from_numpy(out), torch.from_numpy(tgt)
    assert float(n2n_loss(o, t)) == pytest.approx(float(np.mean((tgt - out) ** 2)), rel=1e-6)
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in (8, 9, 10)), indexing="ij")
    sphere = np.sqrt(kx**2 + ky**2 + kz**2) <= 0.31  # no grid point at 0.31
    low = np.fft.ifftn(np.fft.fftn(tgt - out, axes=(-3, -2, -1)) * sphere, axes=(-3, -2, -1))
    expected = np.mean(np.abs(low) ** 2)
    assert float(n2n_loss(o, t, loss_radius=0.31)) == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- rotation


def test_rotate_center_crop_equals_subvolume_extract():
    """The grid_sample fast path is the building block's rotated extraction."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(4)
    vol = torch.from_numpy(rng.normal(size=(3, 2, 18, 18, 18)))
    mats = Rotation.random(3, random_state=5).as_matrix()
    got = rotate_center_crop(vol.float(), mats, 12)
    for i in range(3):
        ref = SubvolumeExtract((18, 18, 18), [[9, 9, 9]], (12, 12, 12), rotations_xyz=mats[i])(
            vol[i]
        )[:, 0]
        assert float((got[i].double() - ref).abs().max()) < 1e-4


def test_rotation_then_inverse_returns_input():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(6)
    vol = _blobs((32, 32, 32), 25, rng, radius=(2.5, 4.0))
    t = torch.from_numpy(vol).float()[None]
    mats = Rotation.random(1, random_state=7).as_matrix()
    back = rotate_center_crop(rotate_center_crop(t, mats, 32), np.swapaxes(mats, 1, 2), 32)[0]
    # Inside the inscribed sphere nothing left the box; the error is trilinear blurring only.
    z, y, x = np.indices((32, 32, 32)) - 16
    inside = torch.from_numpy(np.sqrt(z**2 + y**2 + x**2) < 13)
    err = (back - t[0])[inside]
    rel = float(err.norm() / t[0][inside].norm())
    assert rel < 0.05, rel
    # a rotation that is not undone changes the volume a lot (the check can fail)
    other = rotate_center_crop(t, mats, 32)[0]
    assert float((other - t[0])[inside].norm() / t[0][inside].norm()) > 0.3


def test_wedge_of_rotated_volume_is_rotated_mask():
    """A volume whose spectrum fills the measured wedge, rotated by R, has its power where
    wedge_mask(rotation_xyz=Rᵀ) says (not where the canonical or the R-mask says)."""
    from cryowedge.geometry.rotations import euler_zyz_to_matrix

    n = 32
    rng = np.random.default_rng(8)
    spec = np.fft.fftn(rng.normal(size=(n, n, n)))
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n),) * 3, indexing="ij")
    band = np.sqrt(kx**2 + ky**2 + kz**2) < 0.3
    measured = wedge_mask((n, n, n), [-40, 55], dtype=torch.float64).numpy()
    vol = np.fft.ifftn(spec * measured * band).real
    r = np.sqrt(np.sum((np.indices((n, n, n)) - n // 2) ** 2, axis=0))
    vol *= np.exp(-((r / 7.0) ** 2))  # stays inside the box under any rotation
    R = euler_zyz_to_matrix(30.0, 70.0, -20.0)
    rotated = rotate_center_crop(torch.from_numpy(vol).float()[None], R[None], n)[0].double()
    power = np.abs(np.fft.fftn(rotated.numpy())) ** 2

    def fraction(mask: torch.Tensor) -> float:
        return float((power * mask.numpy()).sum() / power.sum())

    right = fraction(wedge_mask((n, n, n), [-40, 55], rotation_xyz=R.T, dtype=torch.float64))
    wrong = fraction(wedge_mask((n, n, n), [-40, 55], rotation_xyz=R, dtype=torch.float64))
    canonical = fraction(wedge_mask((n, n, n), [-40, 55], dtype=torch.float64))
    assert right > 0.9, right
    assert right > wrong + 0.2 and right > canonical + 0.2, (right, wrong, canonical)


def test_batch_target_power_lies_in_rotated_wedge_and_input_lacks_canonical_wedge():
    rng = np.random.default_rng(9)
    shape = (40, 40, 40)
    angles = [-50, 62]
    a = _wedge_filter(rng.normal(size=shape), angles).astype(np.float32)
    b = _wedge_filter(rng.normal(size=shape), angles).astype(np.float32)
    data = SubtomoPairs([TomogramPair(a, b, angles)], subtomo_size=16, val_fraction=0.0, seed=0)
    plan = data.epoch_plan(0, 4)
    batch = data.make_batch(plan, range(4))
    assert batch.input.shape == (4, 1, 16, 16, 16)
    tgt_power = torch.fft.rfftn(batch.target, dim=(-3, -2, -1)).abs() ** 2
    inp_power = torch.fft.rfftn(batch.input, dim=(-3, -2, -1)).abs() ** 2
    in_rot = (tgt_power * batch.rot_measured).sum() / tgt_power.sum()
    in_canonical = (tgt_power * batch.measured).sum() / tgt_power.sum()
    assert float(in_rot) > 0.8 and float(in_rot) > float(in_canonical) + 0.1
    assert float((inp_power * (1 - batch.measured)).sum()) < 1e-6 * float(inp_power.sum())


# --------------------------------------------------------------------------- data


def test_validation_slab_is_spatially_separate():
    """Half A is 0 in the fitting rows and 1 in the validation rows: no crop mixes them."""
    shape = (16, 64, 20)
    split = 64 - 16
    a = np.zeros(shape, np.float32)
    a[:, split:] = 1.0
    b = a.copy()
    data = SubtomoPairs(
        [TomogramPair(a, b, [-60, 60])],
        subtomo_size=16,
        val_fraction=0.2,
        n_val=6,
        seed=1,
        mode="n2n",
    )
    assert [(r.y0, r.y1, r.kind) for r in data.regions] == [(0, split, "fit"), (split, 64, "val")]
    fit_batch = data.make_batch(data.epoch_plan(0, 6), range(6))
    val_batch = data.make_batch(data.val_plan, range(6))
    assert float(fit_batch.input.abs().max()) == 0.0
    assert float(val_batch.input.min()) == 1.0
    # the dewedge crops (√2 larger, reflected at the slab edges) do not leak either
    dw = SubtomoPairs(
        [TomogramPair(a, b, [-60, 60])], subtomo_size=16, val_fraction=0.2, n_val=6, seed=1
    )
    assert dw.crop == crop_size_for(16) == 24
    crops = dw.make_batch(dw.epoch_plan(0, 6), range(6))
    assert float(crops.target.abs().max()) == 0.0


def test_mask_coverage_of_sampled_cubes():
    shape = (16, 40, 40)
    mask = np.zeros(shape, np.uint8)
    mask[:, :, :18] = 1
    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    data = SubtomoPairs(
        [TomogramPair(a, a, [-60, 60], mask=mask)],
        subtomo_size=16,
        val_fraction=0.0,
        min_mask_fraction=0.75,
        seed=2,
        mode="n2n",
    )
    plan = data.epoch_plan(3, 20)
    for c in plan.centres:
        x0 = c[2] - 8
        cover = np.clip(18 - x0, 0, 16) / 16
        assert cover >= 0.75
    assert plan.centres[:, 2].max() <= 8 + 18 - 12


def test_epoch_plan_is_a_function_of_seed_and_epoch(pair):
    a, b = pair
    d1 = SubtomoPairs([TomogramPair(a, b, [-60, 60])], subtomo_size=16, val_fraction=0.0, seed=5)
    d2 = SubtomoPairs([TomogramPair(a, b, [-60, 60])], subtomo_size=16, val_fraction=0.0, seed=5)
    p1, p2, p3 = d1.epoch_plan(4, 5), d2.epoch_plan(4, 5), d1.epoch_plan(5, 5)
    np.testing.assert_array_equal(p1.centres, p2.centres)
    np.testing.assert_array_equal(p1.rotations, p2.rotations)
    assert not np.array_equal(p1.rotations, p3.rotations)


def test_wedge_filler_keeps_measured_region_and_inserts_prediction():
    rng = np.random.default_rng(10)
    measured = wedge_mask((16, 16, 16), [-45, 60], rfft=True)
    x = torch.fft.irfftn(
        torch.fft.rfftn(
            torch.from_numpy(rng.normal(size=(2, 1, 16, 16, 16))).float(), dim=(-3, -2, -1)
        )
        * measured,
        s=(16,) * 3,
        dim=(-3, -2, -1),
    )
    prediction = torch.from_numpy(rng.normal(size=(2, 1, 16, 16, 16))).float()
    filled = _WedgeFiller(lambda t: prediction, (1 - measured)[None, None])(x)
    f = torch.fft.rfftn(filled, dim=(-3, -2, -1))
    fx = torch.fft.rfftn(x, dim=(-3, -2, -1))
    fp = torch.fft.rfftn(prediction, dim=(-3, -2, -1))
    assert float(((f - fx) * measured).abs().max()) < 1e-3
    assert float(((f - fp) * (1 - measured)).abs().max()) < 1e-3


def test_update_wedge_fills_half_a_in_memory(pair):
    a, b = pair
    data = SubtomoPairs([TomogramPair(a, b, [-60, 60])], subtomo_size=16, val_fraction=0.0, seed=0)
    torch.manual_seed(0)
    net = UNet3D(chans=2, depth=2)
    data.update_wedge(net, batch_size=4)
    filled = data.filled[0]
    assert filled.shape == a.shape and np.isfinite(filled).all()
    assert not np.allclose(filled, a)
    spec_diff = np.fft.rfftn(filled - a)
    inside = wedge_mask(a.shape, [-60, 60], rfft=True).numpy() > 0
    # what changed is mostly in the missing wedge
    assert (np.abs(spec_diff[~inside]) ** 2).sum() > (np.abs(spec_diff[inside]) ** 2).sum()
    plan = data.epoch_plan(0, 2)
    batch = data.make_batch(plan, [0, 1])
    assert batch.input.shape == (2, 1, 16, 16, 16)


# --------------------------------------------------------------------------- fit


def test_resume_reproduces_uninterrupted_fit(pair, tmp_path):
    a, b = pair
    cfg = _tiny_config(val_fraction=0.3, val_every=1)
    full = fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path / "full")

    class Stop(Exception):
        pass

    def interrupt(progress):
        if progress.epoch == 3 and progress.phase == "step":
            raise Stop

    with pytest.raises(Stop):
        fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path / "cut", callback=interrupt)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 2
    with pytest.raises(FileExistsError, match="resume=True"):
        fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path / "cut")
    resumed = fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 2 and resumed.epochs_done == 4
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    for key in sa:
        assert float((sa[key] - sb[key]).abs().max()) <= 1e-6, key
    assert [h["loss"] for h in full.history] == pytest.approx(
        [h["loss"] for h in resumed.history], rel=1e-6
    )
    assert full.history[1]["wedge_update"] and not full.history[0]["wedge_update"]
    # the fitted model loads for refinement, with what refinement needs
    model, meta = load_model(full.last_checkpoint)
    assert meta["epoch"] == 4 and meta["subtomo_size"] == 16 and meta["mode"] == "dewedge"
    assert meta["tilt_ranges_deg"] == [(-60.0, 60.0)]
    x = torch.zeros(1, 1, 16, 16, 16)
    assert torch.equal(model(x), full.model(x))
    assert (tmp_path / "full" / "checkpoints" / "epoch_2.pt").exists()
    assert (tmp_path / "full" / "checkpoints" / "best.pt").exists()
    assert (tmp_path / "full" / "fit_log.csv").read_text().count("\n") == 5


def test_corrupt_and_mismatched_checkpoints_give_one_clear_error(pair, tmp_path):
    a, b = pair
    cfg = _tiny_config(epochs=1, checkpoint_every=1)
    result = fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path / "run")
    good = result.last_checkpoint
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_model(truncated)
    other = _tiny_config(epochs=1).model_copy(deep=True)
    other.shared.chans = 3
    with pytest.raises(ValueError, match="different network"):
        load_model(good, config=other)
    with pytest.raises(ValueError, match="chans"):
        fit([(a, b)], [-60, 60], other, output_dir=tmp_path / "run", resume=True)
    # overwrite: a fit that fails its checks leaves the old checkpoints alone
    with pytest.raises(ValueError, match="all of Fourier space"):
        fit([(a, b)], [5, 5], cfg, output_dir=tmp_path / "run", overwrite=True)
    assert good.exists()
    payload = torch.load(good, weights_only=True)
    payload["model_config"]["chans"] = 5
    tampered = tmp_path / "tampered.pt"
    torch.save(payload, tampered)
    with pytest.raises(ValueError, match="consistent network"):
        load_model(tampered)


def test_bad_input_is_refused_before_fitting(pair, tmp_path):
    a, b = pair
    with pytest.raises(ValueError, match="divisible by 2\\^depth"):
        DewedgeConfig.model_validate({"shared": {"subtomo_size": 20, "depth": 3}})
    with pytest.raises(ValueError, match="divisible by 2\\^depth"):
        UNet3D(chans=2, depth=2)(torch.zeros(1, 1, 16, 16, 18))
    big = DewedgeConfig.model_validate({"shared": {"subtomo_size": 32, "chans": 2, "depth": 2}})
    with pytest.raises(ValueError, match="do not fit the tomogram"):
        fit([(a, b)], [-60, 60], big, output_dir=tmp_path / "big")
    with pytest.raises(ValueError, match="all of Fourier space"):
        fit([(a, b)], [30, 30], _tiny_config(), output_dir=tmp_path / "flat")
    with pytest.raises(ValueError, match="all of Fourier space"):
        SubtomoPairs([TomogramPair(a, b, [5.0, 5.0])], subtomo_size=16, val_fraction=0.0)
    with pytest.raises(ValueError, match="different shapes"):
        fit([(a, b[:, :32])], [-60, 60], _tiny_config(), output_dir=tmp_path / "shape")
    with pytest.raises(ValueError, match="0 and 1|values"):
        fit(
            [(a, b, np.full(a.shape, 0.5, np.float32))],
            [-60, 60],
            _tiny_config(),
            output_dir=tmp_path / "mask",
        )
    with pytest.raises(ValueError, match="validation slab"):
        fit(
            [(a[:, :24], b[:, :24])],
            [-60, 60],
            _tiny_config(val_fraction=0.1),
            output_dir=tmp_path / "val",
        )
    assert not (tmp_path / "big").exists() and not (tmp_path / "val").exists()


def test_it_learns(pair, tmp_path):
    """A few dozen steps lower the validation loss on blobs + noise with a ±60° wedge."""
    a, b = pair
    cfg = DewedgeConfig.model_validate(
        {
            "shared": {"subtomo_size": 16, "chans": 4, "depth": 2, "seed": 3},
            "fit": {
                "epochs": 8,
                "subtomos_per_epoch": 8,
                "batch_size": 2,
                "lr": 3e-3,
                "val_fraction": 0.4,
                "val_subtomos": 8,
                "update_wedge_every": None,
                "checkpoint_every": 100,
                "mixed_precision": "off",
            },
        }
    )
    result = fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path)
    val = [h["val_loss"] for h in result.history]
    assert val[-1] < 0.8 * result.initial_val_loss, (result.initial_val_loss, val)
    assert result.best_val_loss == min(val)


@pytest.mark.parametrize(("mode", "precision"), [("n2n", "bf16"), ("dewedge", "bf16")])
def test_n2n_mode_and_bfloat16_autocast(pair, tmp_path, mode, precision):
    """Both modes fit under bfloat16 autocast: finite losses, float32 output, and the
    mixed-precision step follows the float32 one closely from the same start."""
    a, b = pair
    losses = {}
    for p in (precision, "off"):
        cfg = _tiny_config(
            {"mode": mode},
            epochs=1,
            checkpoint_every=1,
            mixed_precision=p,
            val_fraction=0.3,
            val_every=1,
            update_wedge_every=None,
        )
        result = fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path / p)
        losses[p] = result.history[0]["loss"]
        assert np.isfinite(result.history[0]["val_loss"])
        assert result.model(torch.zeros(1, 1, 16, 16, 16)).dtype == torch.float32
    assert losses[precision] == pytest.approx(losses["off"], rel=0.05)


def test_lazy_mrc_halves_give_the_same_batches_as_arrays(pair, tmp_path):
    from cryowedge.io.mrc import open_mrc_lazy, write_mrc

    a, b = pair
    write_mrc(tmp_path / "a.mrc", a)
    write_mrc(tmp_path / "b.mrc", b)
    lazy = TomogramPair(
        open_mrc_lazy(tmp_path / "a.mrc"), open_mrc_lazy(tmp_path / "b.mrc"), [-60, 60]
    )
    batches = []
    for p in (lazy, TomogramPair(a, b, [-60, 60])):
        data = SubtomoPairs([p], subtomo_size=16, val_fraction=0.0, seed=3)
        batches.append(data.make_batch(data.epoch_plan(1, 3), range(3)))
    assert torch.equal(batches[0].input, batches[1].input)
    assert torch.equal(batches[0].target, batches[1].target)


def test_several_pairs_each_with_its_own_wedge(pair):
    a, b = pair
    other = TomogramPair(a[:, :32].copy(), b[:, :32].copy(), [-40, 65], name="second")
    data = SubtomoPairs(
        [TomogramPair(a, b, [-60, 60]), other], subtomo_size=16, val_fraction=0.0, seed=0
    )
    plan = data.epoch_plan(0, 12)
    pairs_drawn = {data.regions[r].pair for r in plan.region}
    assert pairs_drawn == {0, 1}
    batch = data.make_batch(plan, range(12))
    for j, r in enumerate(plan.region):
        p = data.regions[r].pair
        expected = wedge_mask((16, 16, 16), [[-60, 60], [-40, 65]][p], rfft=True)
        assert torch.equal(batch.measured[j, 0], expected)


def test_prefetch_thread_gives_the_same_fit(pair, tmp_path):
    a, b = pair
    runs = [
        fit(
            [(a, b)], [-60, 60], _tiny_config(epochs=2, num_workers=w), output_dir=tmp_path / str(w)
        )
        for w in (0, 1)
    ]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    for key, value in runs[0].model.state_dict().items():
        assert torch.equal(value, runs[1].model.state_dict()[key]), key


@torch.no_grad()
def test_unet_shapes_residual_identity_channels_last_and_autocast():
    torch.manual_seed(0)
    net = UNet3D(chans=4, depth=2)
    x = torch.randn(2, 1, 16, 8, 12)
    assert net(x).shape == x.shape
    # with the last layer zeroed the residual network is the identity (any loc/scale)
    torch.nn.init.zeros_(net.final.weight)
    torch.nn.init.zeros_(net.final.bias)
    net.set_normalization(3.0, 0.5)
    torch.testing.assert_close(net(x), x, rtol=0, atol=1e-6)
    torch.manual_seed(1)
    net = UNet3D(chans=4, depth=2)
    y = net(x)
    cl = net.to(memory_format=torch.channels_last_3d)(
        x.contiguous(memory_format=torch.channels_last_3d)
    )
    torch.testing.assert_close(cl, y, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = net(x)
    assert z.dtype == torch.float32
    assert float((z - y).abs().max()) < 0.05 * float(y.abs().max())
    with pytest.raises(ValueError, match="scale > 0"):
        net.set_normalization(0.0, 0.0)
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        net(torch.zeros(1, 2, 8, 8, 8))


def test_fit_threads_option_is_restored_afterwards(pair, tmp_path):
    """``fit.threads`` applies during the fit only; the caller's torch setting comes back,
    also when the fit fails."""
    a, b = pair
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    seen = []
    cfg = _tiny_config(epochs=1, checkpoint_every=1, update_wedge_every=None, threads=target)
    fit([(a, b)], [-60, 60], cfg, output_dir=tmp_path / "ok",
        callback=lambda info: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {target}
    assert torch.get_num_threads() == before
    bad = _tiny_config(threads=target)
    with pytest.raises(ValueError):
        fit([(a[:4], b[:4])], [-60, 60], bad, output_dir=tmp_path / "bad")  # 4 slices < 16³ cube
    assert torch.get_num_threads() == before
