"""SPA reconstruction on the Toeplitz operator: ADMM-CG (thesis Alg. 2), ILF-ADMM (Alg. 6),
λ sweep, multiscale, half maps, CTF modes and bad input (cryowedge.spa.reconstruct)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cryowedge.spa.reconstruct as recon_mod
from cryowedge.io.mrc import read_mrc
from cryowedge.metrics.fourier import fourier_shell_correlation
from cryowedge.operators.elementary import FiniteDifference
from cryowedge.spa.basis import SIMULATION_BLOB
from cryowedge.spa.reconstruct import (
    admm_cg,
    build_problem,
    compare_ilf_admm_cg,
    half_map_reconstruction,
    ilf_admm,
    lambda_sweep,
    neumann_solve,
    reconstruct_multiscale,
    reconstruct_spa,
    spa_objective,
)
from cryowedge.spa.simulate import simulate_spa

torch.set_num_threads(1)


def _cc(a, b) -> float:
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def tiny():
    """8³, 40 particles, SNR 1; reconstructed in the better-conditioned KBWF(2, 10.8, 2) basis so
    that long runs converge in a second (KBWF(4, 19, 2)'s normal matrix has condition ~1e9)."""
    sim = simulate_spa(box_size=8, n_particles=40, snr=1.0, seed=3)
    return sim, build_problem(sim.stack, blob=SIMULATION_BLOB, dtype=torch.float64)


@pytest.fixture(scope="module")
def small():
    """16³, 60 particles at SNR 0.5 with the default basis."""
    sim = simulate_spa(box_size=16, n_particles=60, snr=0.5, seed=2)
    return sim, build_problem(sim.stack, dtype=torch.float64)


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_neumann_solve_is_exact(backend):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((6, 7, 5), generator=gen, dtype=torch.float64)
    grad = FiniteDifference(x.shape)
    rhs = 2.5 * x + 0.7 * grad.adjoint(grad.forward(x))
    sol = neumann_solve(rhs, 2.5, 0.7, backend=backend)
    assert float(torch.linalg.vector_norm(sol - x) / torch.linalg.vector_norm(x)) < 1e-12


def test_objective_from_the_kernel_matches_explicit_projection(small):
    """½‖Hc − b‖² from ``T`` and ``Hᵀb`` equals the explicit one. ``T`` models an unbounded
    detector, so the explicit projector gets one large enough to hold every footprint, with the
    data zero-padded (what ``Hᵀb`` of the cropped data sees)."""
    from cryowedge.spa.projector import SpaProjector

    sim, problem = small
    c = admm_cg(problem, lam=10.0, n_admm=3).x
    pad = 14
    big = 16 + 2 * pad
    proj = SpaProjector(
        16,
        np.array(sim.stack.rotations),
        np.array(sim.stack.shifts_px),
        detector_size=big,
        dtype=torch.float64,
    )
    b = torch.zeros((60, big, big), dtype=torch.float64)
    b[:, pad : pad + 16, pad : pad + 16] = torch.as_tensor(sim.stack.images) / problem.data_scale
    explicit = 0.5 * float(torch.sum((proj.forward(c) - b) ** 2))
    _, res = spa_objective(problem, c, 0.0)
    assert 0.5 * res**2 == pytest.approx(explicit, rel=1e-3)


def test_admm_cg_with_vanishing_lambda_approaches_least_squares(tiny):
    _, problem = tiny
    n = problem.coefficient_shape[0]
    eye = torch.eye(n**3, dtype=torch.float64).reshape(n**3, n, n, n)
    dense = problem.normal.forward(eye).reshape(n**3, n**3).numpy()
    ls = np.linalg.solve(dense, problem.atb.numpy().ravel())
    dist = []
    for lam in (1e-1, 1e-2, 1e-3, 0.0):
        x = admm_cg(problem, lam=lam, n_admm=100, n_cg=10).x.numpy().ravel()
        dist.append(np.linalg.norm(x - ls) / np.linalg.norm(ls))
    assert all(a > b for a, b in zip(dist, dist[1:], strict=False)), dist
    assert dist[-2] < 0.05 and dist[-1] < 0.03, dist


def test_admm_cg_objective_decreases(small):
    _, problem = small
    res = admm_cg(problem, lam=10.0)  # thesis defaults: 30 ADMM × 7 CG
    obj = np.array(res.history["objective"])
    assert res.n_iter == 30 and obj[-1] < obj[0] - 1e-3 * abs(obj[0])
    assert np.all(np.diff(obj) <= 1e-6 * obj[0]), np.diff(obj).max()
    assert res.history["normal_applications"][-1] == 30 * 7
    assert np.all(np.diff(res.history["time_s"]) >= 0)


def test_ilf_and_admm_cg_reach_the_same_minimiser_and_ilf_is_cheaper_per_iteration(tiny):
    _, problem = tiny
    a = admm_cg(problem, lam=0.3, n_admm=200, n_cg=10, positivity=True)
    b = ilf_admm(problem, lam=0.3, n_iter=1000)
    oa, ob = a.history["objective"][-1], b.history["objective"][-1]
    assert abs(oa - ob) < 1e-5 * oa
    va, vb = problem.volume(a.x), problem.volume(b.x)
    assert np.linalg.norm(va - vb) < 1e-2 * np.linalg.norm(va)
    assert float(b.x.min()) >= 0.0 and float(a.x.min()) >= 0.0  # positivity holds exactly
    # cost per iteration in applications of T: 1 for ILF, n_cg for ADMM-CG (thesis §6.1)
    assert np.all(np.diff(b.history["normal_applications"]) == 1)
    per_iteration_cg = np.diff(a.history["normal_applications"])
    assert np.all(per_iteration_cg <= 10) and per_iteration_cg.mean() > 5
    # the power-iteration majorant bounds T: A − T ⪰ 0 on random vectors
    a_val = b.history["majorant"][0]
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        v = torch.randn(problem.coefficient_shape, generator=gen, dtype=torch.float64)
        assert float(torch.sum(v * problem.normal.forward(v))) <= a_val * float(torch.sum(v * v))


def test_compare_ilf_admm_cg_reports_objective_against_time(tiny):
    _, problem = tiny
    out = compare_ilf_admm_cg(problem, lam=0.3, n_iter=20, cg_iters=(1, 3))
    assert set(out) == {"ilf", "admm_cg1", "admm_cg3"}
    for name, h in out.items():
        assert len(h["objective"]) == len(h["time_s"]) == 20
        assert h["objective"][-1] < h["objective"][0], name
    assert out["admm_cg3"]["normal_applications"][-1] == 60
    assert out["ilf"]["normal_applications"][-1] == 20


def test_tv_beats_least_squares_against_the_truth(small):
    sim, problem = small
    ls = reconstruct_spa(problem=problem, lam=0.0)  # same budget: 30 × 7 CG steps
    tv = reconstruct_spa(problem=problem, lam=10.0)
    assert tv.volume.shape == (16, 16, 16)
    cc_ls, cc_tv = _cc(ls.volume, sim.truth), _cc(tv.volume, sim.truth)
    assert cc_tv > cc_ls + 0.05, (cc_ls, cc_tv)
    px = sim.pixel_size_angstrom
    res_ls = fourier_shell_correlation(ls.volume, sim.truth).resolution_angstrom(0.5, px)
    res_tv = fourier_shell_correlation(tv.volume, sim.truth).resolution_angstrom(0.5, px)
    assert res_tv < res_ls


def test_reconstruct_spa_method_defaults(small):
    _, problem = small
    ilf = reconstruct_spa(problem=problem, method="ilf", lam=10.0, n_iter=20)
    assert ilf.result.n_iter == 20 and float(ilf.coefficients.min()) >= 0.0  # positivity on
    cg = reconstruct_spa(problem=problem, lam=10.0, n_iter=5)
    assert cg.result.n_iter == 5 and float(cg.coefficients.min()) < 0.0  # off by default
    assert cg.result.history["normal_applications"][-1] == 5 * 7


def test_lambda_sweep_builds_one_kernel(monkeypatch, small):
    sim, _ = small
    calls = []
    original = recon_mod.toeplitz_kernel

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(recon_mod, "toeplitz_kernel", counting)
    sweep = lambda_sweep(sim.stack, (0.1, 10.0, 1000.0), truth=sim.truth, n_iter=10)
    assert len(calls) == 1
    assert len(sweep.reconstructions) == 3 and sweep.best_index == 1
    assert sweep.best is sweep.reconstructions[1]
    assert sweep.correlation[1] > max(sweep.correlation[0], sweep.correlation[2])


def test_half_map_fsc(tmp_path, small):
    sim, _ = small
    res = half_map_reconstruction(sim.stack, lam=10.0, n_iter=15)
    assert res.fsc.correlation[0] > 0.8
    assert res.resolution_05_angstrom >= res.resolution_0143_angstrom >= 2 * sim.pixel_size_angstrom
    assert math.isfinite(res.resolution_05_angstrom)
    h1, h2 = res.half_maps
    assert h1.problem.n_particles + h2.problem.n_particles == 60
    assert not np.allclose(h1.volume, h2.volume)
    paths = res.write(tmp_path, prefix="test")
    back = read_mrc(paths["half1"])
    np.testing.assert_allclose(back.data, h1.volume)
    assert back.voxel_size_angstrom[0] == pytest.approx(sim.pixel_size_angstrom, rel=1e-6)
    lines = paths["fsc"].read_text().splitlines()
    assert lines[0].startswith("frequency") and len(lines) == 1 + res.fsc.n_shells


def test_multiscale_starts_each_scale_from_the_previous(small):
    sim, _ = small
    recs = reconstruct_multiscale(sim.stack, scales=(2, 1), lam=10.0, n_iter=10)
    assert [r.scale for r in recs] == [2, 1]
    assert recs[0].coefficients.shape == (8, 8, 8) and recs[1].coefficients.shape == (16,) * 3
    assert all(r.volume.shape == (16, 16, 16) for r in recs)
    cold = reconstruct_spa(problem=recs[1].problem, lam=10.0, n_iter=1)
    assert recs[1].result.history["objective"][0] < cold.result.history["objective"][0]
    assert _cc(recs[0].volume, sim.truth) > 0.8


def test_ctf_modes_improve_on_ignoring_the_ctf():
    sim = simulate_spa(
        box_size=12, n_particles=40, snr=None, seed=4, ctf=True, defocus_range_angstrom=(3e3, 6e3)
    )
    cc = {}
    for mode in ("none", "phase_flip", "model"):
        rec = reconstruct_spa(sim.stack, lam=1.0, ctf=mode, n_iter=15)
        cc[mode] = _cc(rec.volume, sim.truth)
    assert cc["model"] > cc["none"] + 0.1 and cc["phase_flip"] > cc["none"] + 0.1, cc
    assert cc["model"] > 0.9, cc


def test_bad_input(small, tiny):
    sim, problem = small
    with pytest.raises(ValueError, match="lam"):
        admm_cg(problem, lam=-1.0)
    with pytest.raises(ValueError, match="lam"):
        ilf_admm(problem, lam=-0.5)
    with pytest.raises(ValueError, match="lam"):
        lambda_sweep(problem, (1.0, -1.0))
    with pytest.raises(ValueError, match="rho"):
        admm_cg(problem, lam=1.0, rho=0.0)
    with pytest.raises(ValueError, match="x0 has shape"):  # particles of another box size
        admm_cg(problem, lam=1.0, x0=np.zeros((8, 8, 8)))
    with pytest.raises(ValueError, match="truth must be"):  # a non-cubic / wrong-size truth
        lambda_sweep(problem, (1.0,), truth=np.zeros((16, 16, 15)))
    with pytest.raises(ValueError, match="no orientations"):
        build_problem(sim.stack.replace(rotations=None))
    with pytest.raises(ValueError, match="needs CTF parameters"):
        build_problem(sim.stack, ctf="model")
    with pytest.raises(ValueError, match="ctf must be one of"):
        build_problem(sim.stack, ctf="flip")
    with pytest.raises(ValueError, match="method"):
        reconstruct_spa(problem=problem, method="fista")
    with pytest.raises(ValueError, match="divide"):
        reconstruct_multiscale(sim.stack, scales=(3, 2))
    with pytest.raises(ValueError, match="majorant"):
        ilf_admm(tiny[1], lam=1.0, majorant="spectral")
