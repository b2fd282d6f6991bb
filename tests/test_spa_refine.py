"""SPA joint angular refinement (thesis §4.2): gradients, GD, alternation, baseline, metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge.geometry.rotations import (
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    random_rotations,
    rotate_volume,
)
from cryowedge.simulate.ctf import ctf_2d
from cryowedge.spa.angles import (
    align_rotations,
    align_shifts,
    angular_errors_deg,
    cell_radius_deg,
    euler_differences_deg,
    euler_matrices_rad,
    euler_matrix_derivatives_rad,
    geodesic_distance_deg,
    perturb_euler,
    rotation_vector_exp,
    shift_errors_px,
    super_fibonacci_rotations,
    tangent_generators,
)
from cryowedge.spa.basis import RECONSTRUCTION_BLOB, SIMULATION_BLOB, expand
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.refine import (
    LatentUpdateOptions,
    ParticleObjective,
    RidgeReconstruction,
    TVReconstruction,
    joint_refinement,
    particle_gradients,
    projection_matching,
    sphere_mask,
    update_latent,
)
from cryowedge.spa.refine_experiment import joint_refinement_experiment, pseudo_particle

torch.set_num_threads(1)


def _smooth_volume(n: int, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(pseudo_particle(n, n_blobs=25, rng=seed))


def _problem(n: int, n_proj: int, *, seed: int = 0, noise: float = 0.0, blob=RECONSTRUCTION_BLOB):
    """True rotations, shifts, coefficients and data from ``blob`` (float64)."""
    rng = np.random.default_rng(seed)
    rot = random_rotations(n_proj, rng)
    c = _smooth_volume(n, seed)
    b = SpaProjector(n, rot, blob=blob, dtype=torch.float64).forward(c)
    if noise:
        b = b + noise * b.std() * torch.as_tensor(rng.standard_normal(b.shape))
    return rot, c, b, rng


# ------------------------------------------------------------------------ rotations
def test_euler_matrices_and_derivatives_match_relion_and_autograd():
    deg = np.array([[30.0, 50.0, -70.0], [0.0, 0.0, 10.0], [100.0, 179.0, 3.0]])
    rad = torch.as_tensor(np.deg2rad(deg))
    ref = euler_zyz_to_matrix(deg[:, 0], deg[:, 1], deg[:, 2])
    np.testing.assert_allclose(euler_matrices_rad(rad).numpy(), ref, atol=1e-14)
    jac = torch.autograd.functional.jacobian(euler_matrices_rad, rad)  # (3, 3, 3, 3, 3)
    _, d = euler_matrix_derivatives_rad(rad)
    for p in range(3):
        for i in range(3):
            torch.testing.assert_close(d[p, i], jac[p, :, :, p, i], rtol=0, atol=1e-14)
    # The rotation-vector generators are the derivative of exp([ω]×) R at ω = 0.
    r = torch.as_tensor(ref)
    h = 1e-6
    for i in range(3):
        w = torch.zeros(3, 3, dtype=torch.float64)
        w[:, i] = h
        fd = (rotation_vector_exp(w) @ r - rotation_vector_exp(-w) @ r) / (2 * h)
        torch.testing.assert_close(tangent_generators(r)[:, i], fd, rtol=0, atol=1e-9)


def test_super_fibonacci_grid_covers_so3():
    grid = super_fibonacci_rotations(1000)
    assert grid.shape == (1000, 3, 3)
    np.testing.assert_allclose(np.linalg.det(grid), 1.0, atol=1e-12)
    probes = random_rotations(60, 5)
    nearest = np.array(
        [geodesic_distance_deg(grid, np.broadcast_to(p, grid.shape)).min() for p in probes]
    )
    # Uniform: random rotations are on average within the cell radius of a grid point.
    assert nearest.mean() < cell_radius_deg(1000)
    assert nearest.max() < 2.0 * cell_radius_deg(1000)


# ------------------------------------------------------------------------ metric
def test_global_alignment_removes_only_the_global_rotation(rng):
    truth = random_rotations(50, rng)
    q = random_rotations(1, rng)[0]
    # The reconstruction is defined up to R -> R Q: aligned error 0, raw error large.
    errors, g = angular_errors_deg(truth @ q, truth)
    assert errors.max() < 1e-9
    np.testing.assert_allclose(g, q.T, atol=1e-12)
    raw, _ = angular_errors_deg(truth @ q, truth, align=False)
    assert raw.mean() > 20.0
    # Left multiplication changes every projection (not a global ambiguity): not removed.
    left, _ = angular_errors_deg(q @ truth, truth)
    assert left.mean() > 20.0
    # Robust alignment ignores a minority of lost particles.
    est = truth @ q
    est[:10] = random_rotations(10, rng)
    errors, g = angular_errors_deg(est, truth)
    np.testing.assert_allclose(g, q.T, atol=1e-6)
    assert np.median(errors) < 1e-6
    diffs = euler_differences_deg(truth @ q @ g, truth)
    assert np.abs(diffs).max() < 1e-6


def test_alignment_matches_rotated_volume():
    """Orientations R Gᵀ see ``rotate_volume(v, G)`` as R sees v: the convention the experiment
    uses to rotate a refined map back before the FSC."""
    n = 16
    rot = random_rotations(6, 3)
    g = euler_zyz_to_matrix(20.0, 35.0, -15.0)
    v = pseudo_particle(n, n_blobs=15, sigma_px=(1.5, 2.0), rng=1)
    a = SpaProjector(n, rot, dtype=torch.float64).forward(torch.as_tensor(v))
    vg = rotate_volume(v, g, order=3).astype(np.float64)
    b = SpaProjector(n, rot @ g.T, dtype=torch.float64).forward(torch.as_tensor(vg))
    corr = np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1]
    assert corr > 0.99
    np.testing.assert_allclose(align_rotations(rot @ g.T, rot), g, atol=1e-12)


def test_shift_alignment_removes_a_global_translation(rng):
    rot = random_rotations(30, rng)
    true = rng.normal(size=(30, 2))
    d = np.array([0.7, -1.2, 0.4])  # (x, y, z) voxels
    est = true - rot[:, [1, 0], :] @ d
    np.testing.assert_allclose(align_shifts(est, true, rot), d, atol=1e-12)
    assert np.abs(shift_errors_px(est, true, rot)).max() < 1e-12
    assert np.abs(shift_errors_px(est, true)).max() > 0.5


# ------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("method", ["direct", "kernel"])
def test_gradients_match_finite_differences(method):
    """Theorem 3 gradients (analytic projected-blob derivative, ∂M⊥/∂θ) vs central differences."""
    n, n_proj = 10, 4
    rot, c, _, rng = _problem(n, n_proj)
    shifts = rng.normal(scale=0.8, size=(n_proj, 2))
    b = SpaProjector(n, perturb_euler(rot, 8.0, rng), shifts + 0.3, dtype=torch.float64).forward(c)
    b = b + 0.02 * torch.as_tensor(rng.standard_normal(b.shape))
    proj = SpaProjector(n, rot, shifts, dtype=torch.float64)
    obj = ParticleObjective(proj, c, b, method=method)
    g = obj.gradients()
    euler = np.stack(matrix_to_euler_zyz(rot), axis=-1)
    h = 1e-4  # degrees / pixels
    fd_e = np.empty((n_proj, 3))
    for i in range(3):
        up, down = euler.copy(), euler.copy()
        up[:, i] += h
        down[:, i] -= h
        fd_e[:, i] = (
            obj.values(euler_zyz_to_matrix(*up.T), shifts)
            - obj.values(euler_zyz_to_matrix(*down.T), shifts)
        ) / (2 * h)
    fd_t = np.empty((n_proj, 2))
    for i in range(2):
        up, down = shifts.copy(), shifts.copy()
        up[:, i] += h
        down[:, i] -= h
        fd_t[:, i] = (obj.values(rot, up) - obj.values(rot, down)) / (2 * h)
    # direct: exact derivative of the model up to the linear look-up tables (2¹⁸ samples in r²);
    # kernel: the gradient tables are interpolated separately from the value table (~1e-4).
    tol = 1e-4 if method == "direct" else 2e-3
    np.testing.assert_allclose(g.grad_euler_deg, fd_e, rtol=0, atol=tol * np.abs(fd_e).max())
    np.testing.assert_allclose(g.grad_shifts_px, fd_t, rtol=0, atol=tol * np.abs(fd_t).max())


def test_direct_objective_with_ctf_matches_projector_and_finite_differences(rng):
    n, n_proj, L = 8, 3, 12
    rot = random_rotations(n_proj, rng)
    shifts = rng.normal(size=(n_proj, 2))
    ctf = np.stack(
        [
            ctf_2d(
                L,
                pixel_size_angstrom=3.0,
                defocus_u_angstrom=8000.0 + 900 * i,
                defocus_v_angstrom=7000.0,
                astigmatism_angle_deg=30.0 * i,
            )
            for i in range(n_proj)
        ]
    )
    c = _smooth_volume(n)
    b = torch.as_tensor(rng.standard_normal((n_proj, L, L)))
    proj = SpaProjector(n, rot, shifts, detector_size=L, ctf=ctf, dtype=torch.float64)
    obj = ParticleObjective(proj, c, b)  # auto → direct with a CTF
    assert obj.method == "direct"
    expected = 0.5 * ((proj.forward(c) - b) ** 2).sum(dim=(1, 2)).numpy()
    np.testing.assert_allclose(obj.values(), expected, rtol=1e-6)
    g = obj.gradients()
    h = 1e-4
    for i in range(2):
        up, down = shifts.copy(), shifts.copy()
        up[:, i] += h
        down[:, i] -= h
        fd = (obj.values(rot, up) - obj.values(rot, down)) / (2 * h)
        np.testing.assert_allclose(g.grad_shifts_px[:, i], fd, atol=1e-4 * np.abs(fd).max())
    with pytest.raises(ValueError, match="kernel"):
        ParticleObjective(proj, c, b, method="kernel")


def test_kernel_form_agrees_with_direct_and_vanishes_at_truth():
    """Kernel (Toeplitz/Theorem 3) and direct evaluations agree within the RNC tolerance; with
    noiseless data and the true volume the gradient vanishes at the truth."""
    n, n_proj, L = 12, 6, 24  # detector large enough that no footprint leaves it
    rng = np.random.default_rng(0)
    rot = random_rotations(n_proj, rng)
    c = _smooth_volume(n)
    b = SpaProjector(n, rot, detector_size=L, dtype=torch.float64).forward(c)
    moved = perturb_euler(rot, 4.0, rng)
    shifts = rng.normal(scale=0.5, size=(n_proj, 2))
    proj = SpaProjector(n, moved, shifts, detector_size=L, dtype=torch.float64)
    gd = particle_gradients(proj, c, b, method="direct")
    gk = particle_gradients(proj, c, b, method="kernel")
    scale = 0.5 * float((b**2).sum(dim=(1, 2)).max())
    np.testing.assert_allclose(gk.objective, gd.objective, atol=1e-3 * scale)
    np.testing.assert_allclose(
        gk.grad_euler_deg, gd.grad_euler_deg, atol=0.03 * np.abs(gd.grad_euler_deg).max()
    )
    np.testing.assert_allclose(
        gk.grad_shifts_px, gd.grad_shifts_px, atol=0.03 * np.abs(gd.grad_shifts_px).max()
    )
    at_truth = particle_gradients(
        SpaProjector(n, rot, detector_size=L, dtype=torch.float64), c, b, method="direct"
    )
    assert np.abs(at_truth.objective).max() < 1e-12 * scale
    assert np.abs(at_truth.grad_euler_deg).max() < 1e-6 * np.abs(gd.grad_euler_deg).max()
    assert np.abs(at_truth.grad_shifts_px).max() < 1e-6 * np.abs(gd.grad_shifts_px).max()


# ------------------------------------------------------------------------ latent update
@pytest.mark.parametrize("parametrization", ["euler", "rotation"])
def test_one_update_reduces_error_and_never_increases_objective(parametrization):
    n, n_proj = 12, 10
    rot, c, b, rng = _problem(n, n_proj, noise=0.02)
    start = perturb_euler(rot, 4.0, rng)
    obj = ParticleObjective(SpaProjector(n, start, dtype=torch.float64), c, b)
    before = obj.values(start, np.zeros((n_proj, 2)))
    new_rot, new_shifts, stats = update_latent(
        obj, start, np.zeros((n_proj, 2)), LatentUpdateOptions(parametrization=parametrization)
    )
    after = obj.values(new_rot, new_shifts)
    assert np.all(after <= before * (1 + 1e-9))  # backtracking: J_p never increases
    assert stats["objective"] < 0.5 * stats["objective_before"]
    err0, _ = angular_errors_deg(start, rot, align=False)
    err1, _ = angular_errors_deg(new_rot, rot, align=False)
    assert err1.mean() < 0.4 * err0.mean()
    assert stats["mean_angle_change_deg"] > 0


def test_update_recovers_shifts():
    """Shifts (thesis Alg. 5 lines 10-15) move towards the true ones at the true volume."""
    n, n_proj, L = 10, 8, 18
    rng = np.random.default_rng(2)
    rot = random_rotations(n_proj, rng)
    true_shifts = rng.uniform(-1.5, 1.5, size=(n_proj, 2))
    c = _smooth_volume(n)
    b = SpaProjector(n, rot, true_shifts, detector_size=L, dtype=torch.float64).forward(c)
    obj = ParticleObjective(SpaProjector(n, rot, detector_size=L, dtype=torch.float64), c, b)
    start = rot @ euler_zyz_to_matrix(1.0, 1.0, 1.0)
    new_rot, shifts, _ = update_latent(
        obj, start, np.zeros((n_proj, 2)), LatentUpdateOptions(n_steps=5, shift_step_px=1.0)
    )
    before = np.linalg.norm(true_shifts, axis=1)
    after = np.linalg.norm(shifts - true_shifts, axis=1)
    assert after.mean() < 0.2 * before.mean()


def test_joint_refinement_beats_reconstruction_at_perturbed_angles():
    """From 15° errors, the alternation (reconstruct, then descend on the angles) lowers the
    angular error and gives a map closer to the truth than the map at the perturbed angles."""
    n, n_proj, L = 12, 40, 20  # a detector with room for every footprint: the kernel form
    rng = np.random.default_rng(7)
    truth_c = pseudo_particle(n, n_blobs=30, rng=rng)
    truth = expand(torch.as_tensor(truth_c), SIMULATION_BLOB).numpy()
    rot = random_rotations(n_proj, rng)
    b = SpaProjector(n, rot, blob=SIMULATION_BLOB, detector_size=L, dtype=torch.float64).forward(
        torch.as_tensor(truth_c)
    )
    b = (b + 0.05 * b.std() * torch.as_tensor(rng.standard_normal(b.shape))).float()
    start = perturb_euler(rot, 15.0, rng)
    recon = RidgeReconstruction(ridge=0.05, n_iter=15)
    seen = []
    result = joint_refinement(
        b,
        start,
        shape=n,
        n_iter=5,
        reconstruct=recon,
        options=LatentUpdateOptions(refine_shifts=False),
        callback=seen.append,
    )
    err0, _ = angular_errors_deg(start, rot)
    err1, _ = angular_errors_deg(result.rotations, rot)
    assert err1.mean() < 0.5 * err0.mean()
    assert len(seen) == 5 and len(result.history["objective"]) == 5
    assert result.history["objective"][-1] < result.history["objective"][0]

    def corr(c: torch.Tensor) -> float:
        v = expand(c.to(torch.float64), RECONSTRUCTION_BLOB).numpy()
        return float(np.corrcoef(v.ravel(), truth.ravel())[0, 1])

    at_start = SpaProjector(n, start, detector_size=L)
    unrefined = recon(at_start, b, recon(at_start, b, None))
    # Both maps share the low frequencies; the refined one misses much less of the rest.
    assert 1.0 - corr(result.coefficients) < 0.5 * (1.0 - corr(unrefined))


def test_reconstruction_step_is_pluggable_and_callback_stops():
    n, n_proj = 8, 6
    rot, c, b, _ = _problem(n, n_proj)
    calls = []

    def fixed_volume(projector, data, x0):
        calls.append((projector.n_proj, tuple(data.shape), x0 is None))
        return c.to(projector.dtype)

    result = joint_refinement(
        b,
        rot,
        n_iter=5,
        reconstruct=fixed_volume,
        dtype=torch.float64,
        callback=lambda info: True,
    )
    assert result.n_iter == 1  # the callback stopped after the first outer iteration
    assert calls == [(6, (6, 8, 8), True), (6, (6, 8, 8), False)]  # first, then final
    assert result.rotations.shape == (6, 3, 3) and result.shifts_px.shape == (6, 2)


def test_tv_admm_step_plugs_in():
    """The other reconstruction (TV-ADMM-CG, thesis Algorithm 4) drives the same alternation."""
    n, n_proj = 8, 30
    rot, c, b, rng = _problem(n, n_proj, noise=0.02)
    start = perturb_euler(rot, 6.0, rng)
    result = joint_refinement(
        b,
        start,
        n_iter=2,
        reconstruct=TVReconstruction(lam=0.01, n_admm=2),
        options=LatentUpdateOptions(refine_shifts=False),
        dtype=torch.float64,
    )
    err0, _ = angular_errors_deg(start, rot)
    err1, _ = angular_errors_deg(result.rotations, rot)
    assert err1.mean() < err0.mean()
    ridge = RidgeReconstruction(n_iter=30)(SpaProjector(n, rot, dtype=torch.float64), b)
    tv = TVReconstruction(lam=0.01, n_admm=10)(SpaProjector(n, rot, dtype=torch.float64), b)
    assert np.corrcoef(ridge.numpy().ravel(), tv.numpy().ravel())[0, 1] > 0.95


# ------------------------------------------------------------------------ projection matching
def test_projection_matching_recovers_orientations():
    n, n_proj = 10, 12
    rot, c, b, _ = _problem(n, n_proj, noise=0.05)
    match = projection_matching(
        b, c, n_orientations=600, local_rounds=2, local_candidates=16, dtype=torch.float64
    )
    err, _ = angular_errors_deg(match.rotations, rot, align=False)
    random_err, _ = angular_errors_deg(random_rotations(n_proj, 1), rot, align=False)
    assert np.median(err) < 6.0  # grid cell radius 19°, refined locally
    assert np.median(err) < 0.1 * np.median(random_err)
    assert match.objective.shape == (n_proj,)


# ------------------------------------------------------------------------ experiment
def test_experiment_runs_at_tiny_size():
    res = joint_refinement_experiment(n=12, n_particles=16, n_iter=1, angle_error_deg=10.0)
    assert set(res.fsc) == {"unrefined", "refined", "oracle"}
    assert res.fsc["oracle"].shape == res.frequency.shape
    assert res.angle_error_deg["refined"].shape == (16,)
    assert res.histograms["refined_tilt"].sum() <= 16
    assert len(res.history["fsc05"]) == 1


# ------------------------------------------------------------------------ bad input
def test_bad_input_is_rejected():
    n, n_proj = 8, 4
    rot, c, b, _ = _problem(n, n_proj)
    with pytest.raises(ValueError, match=r"\(P, 3, 3\)"):
        joint_refinement(b, rot[:, :2, :], n_iter=1)
    with pytest.raises(ValueError, match="4 particles"):
        joint_refinement(b, rot[:3], n_iter=1)
    with pytest.raises(ValueError, match="angle_step_deg"):
        LatentUpdateOptions(angle_step_deg=-1.0)
    with pytest.raises(ValueError, match="shrink"):
        LatentUpdateOptions(shrink=1.5)
    with pytest.raises(ValueError, match="shifts_px"):
        joint_refinement(b, rot, np.zeros((3, 2)), n_iter=1)
    proj = SpaProjector(n, rot, dtype=torch.float64)
    with pytest.raises(ValueError, match="data must have shape"):
        ParticleObjective(proj, c, b[:3])
    with pytest.raises(ValueError, match="mask"):
        ParticleObjective(proj, c, b, mask=np.ones((4, 4, 4), bool))
    with pytest.raises(ValueError, match="method"):
        ParticleObjective(proj, c, b, method="autograd")
    with pytest.raises(ValueError, match="proper rotation"):
        angular_errors_deg(-rot, rot)
    with pytest.raises(ValueError, match="ridge"):
        RidgeReconstruction(ridge=-1.0)
    assert sphere_mask(8).sum() > 0
