"""dewedge prepare: robust standardisation, sample mask, valid centres, half tomograms."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.config.models import ReconstructConfig
from cryowedge.dewedge.mask import check_mask, make_sample_mask, valid_centres
from cryowedge.dewedge.prepare import (
    load_prepared,
    prepare_halves,
    prepare_tilt_series,
    split_views,
    tilt_angles_from,
)
from cryowedge.dewedge.standardize import robust_stats
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.tilt_series import project_volume
from cryowedge.workflows.reconstruct import reconstruct_array

PIXEL = 7.5  # Å
SHAPE = (16, 32, 32)  # (z, y, x)


def _blobs(shape=SHAPE, n=10, seed=0) -> np.ndarray:
    """Gaussian blobs in the middle of the slab (z), none near the x borders."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(s) for s in shape), indexing="ij")
    vol = np.zeros(shape, np.float32)
    for _ in range(n):
        c = (rng.uniform(5, shape[0] - 5), rng.uniform(4, shape[1] - 4),
             rng.uniform(8, shape[2] - 8))
        vol += np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / 4.0)
    return vol.astype(np.float32)


def _config(**prepare) -> DewedgeConfig:
    return DewedgeConfig.model_validate({"shared": {"subtomo_size": 16, "depth": 2},
                                         "prepare": {"thickness": SHAPE[0], **prepare}})


def _tilt_series(folder: Path, angles: np.ndarray, *, noise=0.3, name="ts") -> Path:
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=SHAPE[1:])
    rng = np.random.default_rng(1)
    data = project_volume(_blobs(), geom)
    data = data + rng.normal(0, noise, data.shape).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    write_mrc(folder / f"{name}.mrc", data, voxel_size_angstrom=PIXEL, image_stack=True)
    write_tilt_angles(folder / f"{name}.tlt", angles)
    return folder / f"{name}.mrc"


# ------------------------------------------------------------------ standardisation
def test_robust_stats_scale_invariant_and_gaussian_scale() -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(2.0, 3.0, (24, 40, 40)).astype(np.float32)
    vol[10:14, 18:22, 18:22] = 500.0  # a gold bead: the robust scale ignores it
    stats = robust_stats(vol)
    assert stats.centre == pytest.approx(2.0, abs=0.1)
    assert stats.scale == pytest.approx(3.0, rel=0.05)  # IQR / 1.349 is the Gaussian std
    reference = stats.apply(vol)
    # AreTomo3-like tiny values and an offset: the same standardised volume
    for factor, offset in ((1e-6, 0.0), (1e-6, 3e-6), (1e4, -7.0)):
        scaled = (vol.astype(np.float64) * factor + offset).astype(np.float32)
        s = robust_stats(scaled)
        np.testing.assert_allclose(s.apply(scaled), reference, rtol=0, atol=2e-4)
        np.testing.assert_allclose(s.invert(s.apply(scaled)), scaled, rtol=1e-5,
                                   atol=1e-5 * abs(factor))
    with pytest.raises(ValueError, match="constant"):
        robust_stats(np.full((8, 8, 8), 1e-6, np.float32))


def test_robust_stats_inside_mask_only() -> None:
    rng = np.random.default_rng(1)
    vol = rng.normal(0.0, 1.0, (20, 32, 32)).astype(np.float32)
    mask = np.zeros(vol.shape, np.uint8)
    mask[:, :, 16:] = 1
    vol[:, :, 16:] = vol[:, :, 16:] * 4 + 10
    stats = robust_stats(vol, masks=mask)
    assert stats.centre == pytest.approx(10.0, abs=0.3)
    assert stats.scale == pytest.approx(4.0, rel=0.1)


# ------------------------------------------------------------------ mask
def test_sample_mask_finds_the_sample_and_is_binary() -> None:
    rng = np.random.default_rng(2)
    vol = rng.normal(0, 1, (24, 48, 48)).astype(np.float32)
    vol[8:16, 12:36, 12:36] += 4 * rng.normal(0, 1, (8, 24, 24)).astype(np.float32) + 3
    # the sample is 8 % of the volume: keep the top 20 % by each criterion
    mask = make_sample_mask(vol, smooth_voxels=2.0, std_percentile=80, density_percentile=80)
    assert mask.dtype == np.uint8 and mask.shape == vol.shape
    assert set(np.unique(mask).tolist()) <= {0, 1}
    check_mask(mask, vol.shape)
    inside = mask[9:15, 14:34, 14:34].mean()
    outside = np.concatenate([mask[:4].ravel(), mask[20:].ravel()]).mean()
    assert inside > 0.9 and outside < 0.05
    cropped = make_sample_mask(vol, smooth_voxels=2.0, std_percentile=0,
                               density_percentile=0, z_crop=0.25)
    assert cropped[:6].max() == 0 and cropped[18:].max() == 0 and cropped[6:18].min() == 1


def test_check_mask_refuses_non_binary_wrong_shape_and_empty_masks() -> None:
    good = np.zeros((6, 8, 8), np.float32)
    good[2:4] = 1.0
    check_mask(good, (6, 8, 8))
    bad = good.copy()
    bad[3, 3, 3] = 0.5
    with pytest.raises(ValueError, match="other than 0 and 1.*0.5"):
        check_mask(bad, name="m.mrc")
    with pytest.raises(ValueError, match="other than 0 and 1"):
        check_mask((good * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="shape"):
        check_mask(good, (6, 8, 9))
    with pytest.raises(ValueError, match="empty"):
        check_mask(np.zeros((6, 8, 8), np.uint8))


def test_valid_centres_honours_the_fraction() -> None:
    rng = np.random.default_rng(3)
    mask = (rng.random((12, 18, 15)) < 0.2).astype(np.uint8)
    mask[3:9, 4:14, 2:10] = 1
    for size, fraction in ((6, 0.4), ((4, 6, 5), 0.7), (5, 0.0)):
        s = (size,) * 3 if isinstance(size, int) else size
        expected = [
            (z + s[0] // 2, y + s[1] // 2, x + s[2] // 2)
            for z in range(mask.shape[0] - s[0] + 1)
            for y in range(mask.shape[1] - s[1] + 1)
            for x in range(mask.shape[2] - s[2] + 1)
            if mask[z : z + s[0], y : y + s[1], x : x + s[2]].mean() >= fraction
        ]
        centres = valid_centres(mask, size, fraction)
        assert centres.dtype == np.int64 and centres.shape[1] == 3
        np.testing.assert_array_equal(centres, np.array(expected))
    coarse = valid_centres(mask, 6, 0.4, stride=2)
    assert len(coarse) and {tuple(c) for c in coarse} <= {tuple(c) for c in expected_6(mask)}
    assert np.all((coarse - 3) % 2 == 0)
    with pytest.raises(ValueError, match="exceeds"):
        valid_centres(mask, 13, 0.3)


def expected_6(mask: np.ndarray) -> np.ndarray:
    return valid_centres(mask, 6, 0.4)


# ------------------------------------------------------------------ bad input
def test_halves_of_different_shape_or_voxel_size_are_refused(tmp_path: Path) -> None:
    vol = _blobs()
    write_mrc(tmp_path / "a.mrc", vol, voxel_size_angstrom=PIXEL)
    write_mrc(tmp_path / "b_shape.mrc", vol[:, :, :-2], voxel_size_angstrom=PIXEL)
    write_mrc(tmp_path / "b_voxel.mrc", vol, voxel_size_angstrom=2 * PIXEL)
    cfg = _config()
    with pytest.raises(ValueError, match="different shapes"):
        prepare_halves((tmp_path / "a.mrc", tmp_path / "b_shape.mrc"), tmp_path / "o1",
                       tilt_angles=(-60, 60), config=cfg)
    with pytest.raises(ValueError, match="different voxel sizes"):
        prepare_halves((tmp_path / "a.mrc", tmp_path / "b_voxel.mrc"), tmp_path / "o2",
                       tilt_angles=(-60, 60), config=cfg)
    with pytest.raises(ValueError, match="zero width"):
        prepare_halves((tmp_path / "a.mrc", tmp_path / "a.mrc"), tmp_path / "o3",
                       tilt_angles=(30, 30), config=cfg)
    bad_mask = np.full(SHAPE, 0.5, np.float32)
    write_mrc(tmp_path / "mask.mrc", bad_mask, voxel_size_angstrom=PIXEL)
    with pytest.raises(ValueError, match="other than 0 and 1"):
        prepare_halves((tmp_path / "a.mrc", tmp_path / "a.mrc"), tmp_path / "o4",
                       tilt_angles=(-60, 60), masks=tmp_path / "mask.mrc", config=cfg)
    with pytest.raises(ValueError, match="do not fit"):
        prepare_halves((tmp_path / "a.mrc", tmp_path / "a.mrc"), tmp_path / "o5",
                       tilt_angles=(-60, 60), config=DewedgeConfig.model_validate(
                           {"shared": {"subtomo_size": 32, "depth": 2}}))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))  # nothing written


def test_fewer_than_four_tilts_per_half_is_refused_before_work(tmp_path: Path) -> None:
    stack = _tilt_series(tmp_path, np.arange(-45.0, 46.0, 15.0))  # 7 views: halves of 4 and 3
    with pytest.raises(ValueError, match="halves of 4 and 3 views.*at least 4"):
        prepare_tilt_series(stack, tmp_path / "out", config=_config())
    stack9 = _tilt_series(tmp_path, np.arange(-60.0, 61.0, 15.0), name="ts9")  # 9 views
    with pytest.raises(ValueError, match="at least 4"):
        prepare_tilt_series(stack9, tmp_path / "out", config=_config(exclude_views="1,9"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="at least 4"):
        split_views(7)


# ------------------------------------------------------------------ tilt series → halves
def test_prepare_tilt_series_writes_halves_mask_and_manifest(tmp_path: Path) -> None:
    angles = np.arange(-60.0, 61.0, 12.0)  # 11 views
    stack = _tilt_series(tmp_path, angles)
    out = tmp_path / "prep"
    data = prepare_tilt_series(stack, out, config=_config())
    for name in ("half_even.mrc", "half_odd.mrc", "full.mrc", "mask.mrc", "prepared.yaml"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*"))  # no temporary files left behind
    series = read_mrc(stack).data
    even_views, odd_views = np.arange(0, 11, 2), np.arange(1, 11, 2)
    for name, views in (("half_even.mrc", even_views), ("half_odd.mrc", odd_views)):
        half = read_mrc(out / name)
        assert half.voxel_size_angstrom == (PIXEL,) * 3
        assert half.origin_angstrom == (0.0, 0.0, 0.0)
        geom = TiltGeometry(tilt_angles_deg=angles[views], detector_shape=SHAPE[1:],
                            pixel_size_angstrom=PIXEL)
        direct = reconstruct_array(series[views], geom, ReconstructConfig(thickness=SHAPE[0],
                                                                          device="cpu"))
        np.testing.assert_allclose(half.data, direct, rtol=1e-5, atol=1e-5 * np.abs(direct).max())
    mask = read_mrc(out / "mask.mrc", dtype=None)
    assert mask.data.dtype == np.int8 and mask.voxel_size_angstrom == (PIXEL,) * 3
    tomo = load_prepared(out)[0]
    assert tomo.shape == SHAPE and tomo.voxel_size_angstrom == (PIXEL,) * 3
    np.testing.assert_array_equal(tomo.tilt_angles_deg, angles)
    np.testing.assert_array_equal(tomo.half_tilt_angles_deg[0], angles[even_views])
    np.testing.assert_array_equal(tomo.half_tilt_angles_deg[1], angles[odd_views])
    assert tomo.split == "stack order" and tomo.n_valid_centres > 0
    assert tomo.stats == data[0].stats and tomo.stats.method == "robust"
    (a, b, m), = load_prepared(out / "prepared.yaml").pairs()
    assert isinstance(a, np.memmap) and a.shape == b.shape == m.shape == SHAPE
    assert set(np.unique(m).tolist()) == {0, 1}
    # refused a second time without overwrite, before any work
    with pytest.raises(FileExistsError, match="already exists"):
        prepare_tilt_series(stack, out, config=_config())


def test_prepare_splits_in_acquisition_order_from_mdoc(tmp_path: Path) -> None:
    angles = np.arange(-40.0, 41.0, 10.0)  # 9 views, dose-symmetric acquisition from 0°
    acquired = [4, 5, 3, 2, 6, 7, 1, 0, 8]
    stack = _tilt_series(tmp_path, angles)
    start = datetime(2026, 1, 1, 10, 0, 0)
    rank = {v: r for r, v in enumerate(acquired)}
    sections = "\n".join(
        f"[ZValue = {i}]\nTiltAngle = {a:.2f}\nDateTime = "
        f"{(start + timedelta(seconds=30 * rank[i])).strftime('%d-%b-%y  %H:%M:%S')}\n"
        for i, a in enumerate(angles))
    (tmp_path / "ts.mrc.mdoc").write_text(f"PixelSpacing = {PIXEL}\n\n{sections}")
    data = prepare_tilt_series(stack, tmp_path / "out", angles=tmp_path / "ts.mrc.mdoc",
                               config=_config(write_full=False))
    tomo = data[0]
    assert tomo.split == "acquisition order (mdoc)" and tomo.full_path is None
    np.testing.assert_array_equal(tomo.half_tilt_angles_deg[0], angles[sorted(acquired[0::2])])
    np.testing.assert_array_equal(tomo.half_tilt_angles_deg[1], angles[sorted(acquired[1::2])])
    with pytest.raises(ValueError, match="needs the acquisition order"):
        prepare_tilt_series(stack, tmp_path / "out2", angles=tmp_path / "ts.tlt",
                            config=_config(split="acquisition"))


def test_prepare_passes_ctf_correction_to_the_reconstruction(tmp_path: Path) -> None:
    from cryowedge.workflows.reconstruct import reconstruct_file

    angles = np.arange(-60.0, 61.0, 15.0)  # 9 views
    stack = _tilt_series(tmp_path, angles)
    with pytest.raises(ValueError, match="needs the defocus"):
        prepare_tilt_series(stack, tmp_path / "out", config=_config(ctf_correction="phase-flip"))
    cfg = _config(ctf_correction="phase-flip", defocus_angstrom=20000.0, write_full=False)
    prepare_tilt_series(stack, tmp_path / "out", config=cfg)
    direct = reconstruct_file(stack, tmp_path / "direct.mrc", ReconstructConfig(
        thickness=SHAPE[0], exclude_views="2,4,6,8", ctf_correction="phase-flip",
        defocus_angstrom=20000.0, device="cpu"))
    plain = reconstruct_file(stack, tmp_path / "plain.mrc", ReconstructConfig(
        thickness=SHAPE[0], exclude_views="2,4,6,8", device="cpu"))
    half = read_mrc(tmp_path / "out" / "half_even.mrc").data
    np.testing.assert_allclose(half, read_mrc(direct).data, rtol=0, atol=1e-6)
    assert np.abs(half - read_mrc(plain).data).max() > 1e-3


# ------------------------------------------------------------------ ready-made halves
def test_prepare_halves_several_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    pairs = []
    for k in range(2):
        vol = _blobs(seed=k) * 1e-6  # AreTomo3-like scale
        for half in ("even", "odd"):
            noisy = vol + rng.normal(0, 2e-7, vol.shape).astype(np.float32)
            write_mrc(tmp_path / f"t{k}_{half}.mrc", noisy, voxel_size_angstrom=PIXEL,
                      origin_angstrom=(1.0, 2.0, 3.0))
        pairs.append((tmp_path / f"t{k}_even.mrc", tmp_path / f"t{k}_odd.mrc"))
    write_tilt_angles(tmp_path / "t1.tlt", np.arange(-54.0, 67.0, 3.0))
    data = prepare_halves(pairs, tmp_path / "out", tilt_angles=[(-60, 60), tmp_path / "t1.tlt"],
                          config=_config())
    assert [t.name for t in data] == ["t0_even", "t1_even"]
    assert (tmp_path / "out" / "t0_even_mask.mrc").is_file()
    again = load_prepared(tmp_path / "out")
    np.testing.assert_array_equal(again[0].tilt_angles_deg, [-60, 60])
    assert again[1].tilt_angles_deg.min() == -54 and again[1].tilt_angles_deg.max() == 66
    assert again[0].origin_angstrom == (1.0, 2.0, 3.0)
    assert 1e-8 < again[0].stats.scale < 1e-6  # the data's own scale, standardised later
    assert again[0].half_a_path == pairs[0][0].resolve()
    np.testing.assert_array_equal(tilt_angles_from([-50, 10, 30]), [-50, 10, 30])
