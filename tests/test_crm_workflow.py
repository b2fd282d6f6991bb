"""CRM workflows (cryowedge.workflows.crm): config defaults, data sets on disk, halves, scores.

Tiny sizes (64² images, a handful of copies): a few seconds each on one thread.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import yaml

from cryowedge.config.crm import (
    SOLVER_DEFAULTS,
    CrmConfig,
    CrmSimulateConfig,
    DemoCrmConfig,
)
from cryowedge.config.models import DemoConfig
from cryowedge.crm import (
    CRM_SOLVERS,
    CRMOperator,
    crm_sart,
    simulate_crm_3d,
    simulate_shepp_logan_2d,
)
from cryowedge.crm.particles import extract_subtilt_series, read_particle_star
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import read_tilt_angles
from cryowedge.workflows.crm import (
    compare_dataset,
    crm_demo_panel,
    half_map_fsc,
    load_dataset,
    simulate_dataset,
    solve_crm,
    split_halves,
    write_dataset,
)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small_2d(n: int = 4, size: int = 64, seed: int = 0):
    return simulate_shepp_logan_2d(n, size=size, phantom_size=40, rng=seed)


def test_solver_defaults_are_the_solvers_own():
    """SOLVER_DEFAULTS (the config's table) cannot drift from the solvers' signatures."""
    assert set(SOLVER_DEFAULTS) == set(CRM_SOLVERS)
    for name, (n_iter, relaxation) in SOLVER_DEFAULTS.items():
        params = inspect.signature(CRM_SOLVERS[name]).parameters
        assert (params["n_iter"].default, params["relaxation"].default) == (n_iter, relaxation)
    # the default 'auto' is CRM-SART (the paper's 20 at 0.2) on noise-free data, CRM-SIRT on
    # noisy data (docs/crm.md, "Which solver"); unresolved it has no settings
    assert CrmConfig().resolve_solver(noisy=False).solver_settings() == (20, 0.2)
    assert CrmConfig().resolve_solver(noisy=True).solver == "sirt"
    assert CrmConfig(solver="sart").resolve_solver(noisy=True).solver == "sart"
    with pytest.raises(ValueError, match="auto"):
        CrmConfig().solver_settings()
    assert CrmConfig(solver="sirt").solver_settings() == (120, 1.0)
    assert CrmConfig(solver="tv", n_iter=7, tv_lambda=0.5).solver_kwargs()["lam"] == 0.5


def test_config_checks():
    assert CrmConfig(baselines=["M-AVG", "avg"]).baseline_names == ("m-avg", "avg")
    assert CrmConfig(baselines="none").baseline_names == ()
    with pytest.raises(ValueError, match="unknown baseline 'mean'"):
        CrmConfig(baselines="avg,mean")
    with pytest.raises(ValueError, match="give one support"):
        CrmConfig(support_radius_px=5, support_mask="m.mrc")
    with pytest.raises(ValueError, match="interpolation_order must be 1"):
        CrmConfig(interpolation_order=2)
    with pytest.raises(ValueError, match="did you mean 'n_iter'"):
        CrmConfig(n_iters=3)
    assert CrmConfig(support_radius_angstrom=30).support_radius_voxels(6.0) == 5.0
    resolved = CrmSimulateConfig(kind="3d").resolved()
    assert (resolved["copies"], resolved["tilt_step_deg"], resolved["snr"]) == (20, 5.0, 1.0)
    assert CrmSimulateConfig(kind="3d", clean=True).resolved()["snr"] is None
    with pytest.raises(ValueError, match="does not apply to shepp-logan"):
        CrmSimulateConfig(kind="shepp-logan", background="cell")
    # the demo config carries the CRM panel, and null removes it
    assert DemoConfig().crm == DemoCrmConfig()
    assert DemoConfig(**yaml.safe_load(DemoConfig(crm=None).to_yaml())).crm is None


def test_split_halves():
    a, b = split_halves(7, CrmConfig(seed=3))
    assert len(a) == 4 and len(b) == 3
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(7))
    again = split_halves(7, CrmConfig(seed=3))
    assert np.array_equal(a, again[0])  # seeded
    a, b = split_halves(5, CrmConfig(half_split="alternate"))
    assert a.tolist() == [0, 2, 4] and b.tolist() == [1, 3]
    with pytest.raises(ValueError, match="at least 2 copies.*--no-half-maps"):
        split_halves(1)


def test_half_map_fsc_of_equal_maps_is_one():
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((16, 16, 16)).astype(np.float32)
    support = np.ones((16, 16, 16), bool)
    assert np.allclose(half_map_fsc(vol, vol, support).correlation, 1.0)
    other = rng.standard_normal((16, 16, 16)).astype(np.float32)
    assert np.abs(half_map_fsc(vol, other, support).correlation).max() < 0.6


def test_dataset_round_trip_2d_and_3d(tmp_path):
    sim = _small_2d(3)
    path = write_dataset(sim.data, tmp_path / "d2", kind="shepp-logan")
    back = load_dataset(path).data
    assert back.projections.shape == sim.data.projections.shape == (3, 34, 1, 64)
    np.testing.assert_array_equal(back.projections, sim.data.projections.astype(np.float32))
    np.testing.assert_array_equal(back.support, sim.data.support)
    np.testing.assert_allclose(back.truth, sim.data.truth, rtol=1e-6)
    for c0, c1 in zip(sim.data.copies, back.copies, strict=True):
        np.testing.assert_array_equal(c0.tilt_angles_deg, c1.tilt_angles_deg)
        np.testing.assert_array_equal(c0.rotation_xyz, c1.rotation_xyz)  # exact floats in YAML
    assert back.names == sim.data.names
    assert read_mrc(tmp_path / "d2" / "truth.mrc").data.shape == (64, 64)  # 2D: an image

    sim3 = simulate_crm_3d(2, box_size=16, pixel_size_angstrom=8.0,
                           tilt_angles_deg=np.arange(-30, 31, 15.0),
                           background="none", snr=None, rng=1)
    back3 = load_dataset(write_dataset(sim3.data, tmp_path / "d3", kind="3d")).data
    np.testing.assert_array_equal(back3.projections, sim3.data.projections.astype(np.float32))
    for c0, c1 in zip(sim3.data.copies, back3.copies, strict=True):
        np.testing.assert_array_equal(c0.rotation_xyz, c1.rotation_xyz)


def test_solve_crm_is_scale_free_and_follows_the_config(one_thread):
    data = _small_2d(3).data
    a = solve_crm(data, CrmConfig(n_iter=5, device="cpu"))
    b = solve_crm(data, CrmConfig(n_iter=5, device="cpu", normalize=False))
    assert a.result.n_iter == 5 and a.scale != 1.0 and b.scale == 1.0
    peak = np.abs(b.particle).max()
    np.testing.assert_allclose(a.particle, b.particle, rtol=1e-3, atol=1e-4 * peak)
    assert not np.any(a.particle[~data.support])  # S·h: zero off the support
    seen = []
    solve_crm(data, CrmConfig(n_iter=3, device="cpu"), progress=lambda s, f: seen.append((s, f)))
    assert [s for s, _ in seen] == ["crm 1/3", "crm 2/3", "crm 3/3"]
    assert seen[-1][1] == pytest.approx(1.0)


def test_compare_dataset_crm_beats_avg_on_the_paper_2d_setting(tmp_path, one_thread):
    # 5 copies of a 64² Shepp-Logan phantom, clean (measured, seeds 0-3, copy-frame backgrounds:
    # CRM PSNR 24.0-25.1 dB vs AVG 21.0-21.7, PCC 0.94-0.96 vs 0.89-0.90): CRM must beat AVG
    # the data set records that it is noise-free, so solver 'auto' is CRM-SART
    ds = write_dataset(_small_2d(5).data, tmp_path / "sl", kind="shepp-logan", extra={"snr": None})
    out = compare_dataset(ds, tmp_path / "cmp", CrmConfig(device="cpu"))
    assert yaml.safe_load((tmp_path / "cmp" / "crm.yaml").read_text())["solver"] == "sart"
    rows = out.metrics
    assert set(rows) == {"crm", "avg", "m-avg"}
    assert rows["crm"]["psnr"] > rows["avg"]["psnr"] + 1.0
    assert rows["crm"]["pearson"] > rows["avg"]["pearson"]
    for name in ("particle.mrc", "avg.mrc", "m-avg.mrc", "orthoslices.png", "fsc.png",
                 "metrics.md", "metrics.json", "crm.yaml", "run.yaml"):
        assert (tmp_path / "cmp" / name).is_file(), name
    assert "affine normalisation" in (tmp_path / "cmp" / "metrics.md").read_text()


def test_dataset_bad_input(tmp_path):
    """Copies of different image sizes, a mask of the wrong shape, an empty support."""
    sim = _small_2d(2)
    path = write_dataset(sim.data, tmp_path / "d", kind="custom")
    meta = yaml.safe_load(path.read_text())
    write_mrc(tmp_path / "d" / "c0.mrc", sim.data.projections[0, :, 0, :])
    write_mrc(tmp_path / "d" / "c1.mrc", sim.data.projections[1, :, 0, :-2])
    meta["projections"] = ["c0.mrc", "c1.mrc"]
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match=r"different sub-tilt-series shapes: copy 0 is "
                                         r"\(34, 1, 64\), copy 1 is \(34, 1, 62\)"):
        load_dataset(tmp_path / "d")
    good = write_dataset(sim.data, tmp_path / "g")
    write_mrc(tmp_path / "mask.mrc", np.ones((60, 64), np.float32))
    with pytest.raises(ValueError, match=r"support mask mask.mrc has shape \(60, 1, 64\) but the "
                                         r"particle box is \(64, 1, 64\)"):
        load_dataset(good, CrmConfig(support_mask=str(tmp_path / "mask.mrc")))
    write_mrc(tmp_path / "zero.mrc", np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="support is empty"):
        load_dataset(good, CrmConfig(support_mask=str(tmp_path / "zero.mrc")))
    with pytest.raises(ValueError, match="not a CRM data set"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "dataset.yaml").write_text("a: 1\n")
        load_dataset(tmp_path / "x")


def test_simulated_tomogram_keeps_every_patch_on_the_detector(tmp_path):
    # the simulator places boxes inside the tomogram; the data set's placement also keeps
    # every tilted patch on the detector, so the real-use path needs no --drop-outside
    cfg = CrmSimulateConfig(kind="tomogram", copies=5, size=32, pixel_size_angstrom=6.0,
                            tomogram_shape=(32, 96, 96), seed=2)
    ds = simulate_dataset(tmp_path / "t", cfg)
    assert ds.data.n_copies == 5 and ds.data.truth is not None
    assert ds.data.truth.shape == (32, 32, 32) == ds.data.volume_shape
    files = {k: tmp_path / "t" / v for k, v in ds.meta["files"].items()}
    series = read_mrc(files["tilt_series"]).data
    geometry = TiltGeometry(read_tilt_angles(files["angles"]), detector_shape=series.shape[1:],
                            pixel_size_angstrom=6.0)
    data = extract_subtilt_series(series, geometry, read_particle_star(files["particles"]),
                                  tomogram_shape=(32, 96, 96), box_size=32)
    assert data.n_copies == 5
    # the reference is centred on voxel box // 2: its centre of mass is within a voxel of it
    ref = ds.data.truth
    com = np.array([np.sum(ref * g) for g in np.indices(ref.shape)]) / ref.sum()
    assert np.abs(com - 16).max() < 1.5
    assert "--box 32 --thickness 32" in ds.meta["command"]


def test_demo_panel(tmp_path, one_thread):
    result = crm_demo_panel(tmp_path, DemoCrmConfig(copies=4, size=48))
    rows = result["metrics"]
    assert rows["CRM"]["psnr"] > rows["AVG"]["psnr"] > rows["one copy (SART)"]["psnr"]
    assert (tmp_path / "crm_demo.png").is_file()
    assert "| CRM |" in (tmp_path / "crm_demo.md").read_text()


def test_crm_sirt_on_the_cpu_logs_no_cache_warning(caplog, one_thread):
    """Regression: the operator's uncached slice builds share the host cache with the chunk
    matrices on the CPU and were counted as evictions ("rebuilt at every application")."""
    data = _small_2d(3).data
    with caplog.at_level("WARNING", logger="cryowedge.crm.operator"):
        solve_crm(data, CrmConfig(solver="sirt", n_iter=3, device="cpu"))
    assert not [r for r in caplog.records if "cache_bytes" in r.getMessage()]


def test_crm_sart_keeps_the_first_plans_when_the_budget_is_short(monkeypatch, one_thread):
    """Copies are visited in turn, so a plan cache that cannot hold them all keeps the first
    ones (LRU would evict every plan just before its reuse and rebuild all of them)."""
    from cryowedge.crm import solvers

    data = _small_2d(4).data
    op = CRMOperator.from_data(data)
    b = torch.from_numpy(data.projections.astype(np.float32))
    size = solvers._Plans(op, torch.float32, torch.device("cpu"), 0.2, "view", None)._build(0)[1]
    builds: list[int] = []
    original = solvers._Plans._build

    def counting(self, i):
        builds.append(i)
        return original(self, i)

    monkeypatch.setattr(solvers._Plans, "_build", counting)
    short = crm_sart(op, b, n_iter=3, plan_cache_bytes=int(2.5 * size))
    assert builds == [0, 1, 2, 3, 2, 3, 2, 3]  # copies 0 and 1 kept, 2 and 3 rebuilt
    builds.clear()
    full = crm_sart(op, b, n_iter=3)
    assert builds == [0, 1, 2, 3]
    torch.testing.assert_close(short.x, full.x)  # the same iterates either way
    kwargs = CrmConfig(solver="sart", plan_cache_gb=2).solver_kwargs()
    assert kwargs["plan_cache_bytes"] == 2 * 2**30
