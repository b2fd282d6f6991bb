"""Orientation recovery (issue 14 part 1, thesis ch. 5): quaternion distance, sampling,
recovery from distances, O(4) evaluation, the Siamese distance network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cryowedge.geometry.rotations import euler_zyz_to_matrix
from cryowedge.spa.angles import geodesic_distance_deg
from cryowedge.spa.orient import (
    MatrixOracle,
    align_quaternions,
    aligned_errors_deg,
    matrix_to_quaternion,
    noisy_distance_matrix,
    pairwise_quaternion_distances,
    printed_alignment_objective,
    quaternion_conjugate,
    quaternion_distance,
    quaternion_distance_torch,
    quaternion_multiply,
    quaternion_to_matrix,
    random_orthogonal4,
    recover_orientations,
    uniform_quaternions,
)


# ----------------------------------------------------------------------------- the distance
def test_distance_is_a_metric_and_sign_invariant():
    q = uniform_quaternions(60, 0)
    d = pairwise_quaternion_distances(q)
    assert np.allclose(d, d.T, atol=1e-12)
    assert np.all(np.diag(d) == 0) and np.all(d >= 0) and d.max() <= math.pi + 1e-12
    # identity of indiscernibles and q -> -q
    assert np.allclose(quaternion_distance(q, q), 0, atol=1e-12)
    assert np.allclose(quaternion_distance(q, -q), 0, atol=1e-12)
    assert np.allclose(quaternion_distance(-q[:30], q[30:]), d[np.arange(30), np.arange(30, 60)])
    # triangle inequality on every triple
    tri = d[:, :, None] + d[None, :, :] - d[:, None, :]  # d_ij + d_jk - d_ik
    assert tri.min() > -1e-9


def test_distance_is_the_relative_rotation_angle_and_bi_invariant():
    q = uniform_quaternions(40, 1)
    p = uniform_quaternions(40, 2)
    r_q, r_p = quaternion_to_matrix(q), quaternion_to_matrix(p)
    angle = np.deg2rad(geodesic_distance_deg(r_q, r_p))  # arccos((tr(R_qᵀ R_p) − 1)/2)
    assert np.allclose(quaternion_distance(q, p), angle, atol=1e-9)
    a, b = uniform_quaternions(2, 3)
    left = quaternion_distance(quaternion_multiply(a, q), quaternion_multiply(a, p))
    right = quaternion_distance(quaternion_multiply(q, b), quaternion_multiply(p, b))
    inv = quaternion_distance(quaternion_conjugate(q), quaternion_conjugate(p))
    for other in (left, right, inv):
        assert np.allclose(other, angle, atol=1e-9)
    # R(a ⊗ b) = R(a) R(b) and the matrix round trip
    assert np.allclose(quaternion_to_matrix(quaternion_multiply(q, p)), r_q @ r_p, atol=1e-12)
    assert np.allclose(quaternion_distance(matrix_to_quaternion(r_q), q), 0, atol=1e-7)


def test_distance_precise_near_zero_and_gradient_finite():
    q = np.array([1.0, 0.0, 0.0, 0.0])
    tiny = 1e-9
    p = np.array([math.cos(tiny / 2), math.sin(tiny / 2), 0.0, 0.0])  # rotation by 1e-9 rad
    assert quaternion_distance(q, p) == pytest.approx(tiny, rel=1e-6)
    x = torch.tensor([[0.3, 0.1, -0.5, 0.2]], dtype=torch.float64, requires_grad=True)
    d = quaternion_distance_torch(x, x.detach().clone())
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- sampling
def _angle_cdf(w):
    """CDF of the rotation angle of a Haar-uniform rotation: (ω − sin ω)/π."""
    return (w - np.sin(w)) / np.pi


def test_uniform_sampling_passes_and_euler_sampling_fails():
    q = uniform_quaternions(4000, 7)
    assert np.all(q[:, 0] >= 0)
    angle = quaternion_distance(q, np.array([1.0, 0, 0, 0]))
    assert stats.kstest(angle, _angle_cdf).pvalue > 1e-3
    # the projection direction (row 3 of R) is uniform on the sphere: z uniform in [−1, 1]
    z = quaternion_to_matrix(q)[:, 2, 2]
    assert stats.kstest(z, stats.uniform(-1, 2).cdf).pvalue > 1e-3
    # negative control: uniform Euler angles are not uniform on SO(3), and the test sees it
    gen = np.random.default_rng(7)
    eul = euler_zyz_to_matrix(gen.uniform(0, 360, 4000), gen.uniform(0, 180, 4000),
                              gen.uniform(0, 360, 4000))
    bad = quaternion_distance(matrix_to_quaternion(eul), np.array([1.0, 0, 0, 0]))
    assert stats.kstest(bad, _angle_cdf).pvalue < 1e-6


def test_half_sampling_is_uniform_on_the_upper_half():
    q = uniform_quaternions(4000, 8, half=True)
    r = quaternion_to_matrix(q)
    z = r[:, 2, 2]
    assert z.min() >= 0
    assert stats.kstest(z, stats.uniform(0, 1).cdf).pvalue > 1e-3
    # the in-plane angle (psi) stays uniform: atan2 of row 3's x, y components of Rᵀ
    psi = np.arctan2(r[:, 1, 2], -r[:, 0, 2])
    assert stats.kstest(psi, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3


def test_cyclic_asymmetric_unit_sampling():
    from cryowedge.geometry.rotations import matrix_to_euler_zyz

    q = uniform_quaternions(3000, 9, half=True, cyclic=3)
    rot, tilt, _ = matrix_to_euler_zyz(quaternion_to_matrix(q))
    assert rot.min() >= 0 and rot.max() < 120.0 and tilt.max() <= 90.0 + 1e-9
    assert stats.kstest(rot, stats.uniform(0, 120).cdf).pvalue > 1e-3
    assert stats.kstest(np.cos(np.deg2rad(tilt)), stats.uniform(0, 1).cdf).pvalue > 1e-3
    with pytest.raises(ValueError, match="cyclic"):
        uniform_quaternions(3, cyclic=0)


# ----------------------------------------------------------------------------- evaluation
def test_alignment_depends_on_the_alignment():
    q = uniform_quaternions(300, 4)
    t_true = random_orthogonal4(5, det=-1)  # an inversion plus left/right products
    est = q @ np.linalg.inv(t_true).T  # T_true maps est back to q
    best = align_quaternions(est, q)
    assert best.mean_error_deg < 1e-6
    assert np.allclose(np.abs(best.matrix), np.abs(t_true), atol=1e-6)
    wrong = aligned_errors_deg(est, q, np.eye(4))
    other = aligned_errors_deg(est, q, random_orthogonal4(9))
    assert wrong.mean() > 30 and other.mean() > 30
    # the thesis's printed eq. 5.8 cannot tell these alignments apart (research §13.13)
    objs = [printed_alignment_objective(est, q, t) for t in (best.matrix, np.eye(4))]
    assert objs[0] == pytest.approx(objs[1], abs=1e-12)


# ----------------------------------------------------------------------------- recovery
def test_recovery_from_exact_distances_reaches_zero_error():
    # small sets have local minima (docs/results.md): 2 starts, the lower final loss kept
    q = uniform_quaternions(200, 11)
    res = recover_orientations(MatrixOracle(noisy_distance_matrix(q)), n_steps=600,
                               batch_pairs=1024, lr=0.2, seed=1, n_restarts=2)
    assert res.loss_history[0] > 0.1
    assert res.final_loss < 1e-6
    al = align_quaternions(res.quaternions, q)
    assert al.mean_error_deg < 0.1
    # without the alignment the same orientations are far off
    assert aligned_errors_deg(res.quaternions, q, np.eye(4)).mean() > 20


def test_recovery_error_grows_with_distance_noise():
    # research §7.3, Fig. 5.7: error roughly linear in σ (measured 8.3°/rad, docs/results.md)
    q = uniform_quaternions(200, 12)
    d = noisy_distance_matrix(q, 0.3, rng=3)
    res = recover_orientations(MatrixOracle(d), n_steps=600, batch_pairs=1024, lr=0.2, seed=1,
                               n_restarts=2)
    err = align_quaternions(res.quaternions, q).mean_error_deg
    assert 2.0 < err < 8.0
    assert 0.5 * 0.3**2 < res.final_loss < 2 * 0.3**2  # the loss reflects the noise


def test_recovery_bad_input():
    with pytest.raises(ValueError, match="n_steps"):
        recover_orientations(MatrixOracle(np.zeros((3, 3))), n_steps=0)
    with pytest.raises(ValueError, match="distance matrix"):
        MatrixOracle(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="noise_std"):
        noisy_distance_matrix(uniform_quaternions(3, 0), -1.0)
    with pytest.raises(ValueError, match=r"\(P, 4\)"):
        align_quaternions(np.ones((3, 4)), np.ones((4, 4)))
