"""Tests for cryowedge.geometry.rotations (the single rotation convention)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryowedge.geometry.rotations import (
    euler_zyz_to_matrix,
    matrix_to_euler_zyz,
    quaternion_to_matrix,
    random_rotations,
    rotate_volume,
    xyz_to_zyx_matrix,
)


def _rz(a_deg: float) -> np.ndarray:
    a = np.deg2rad(a_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def _ry(a_deg: float) -> np.ndarray:
    a = np.deg2rad(a_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


def test_matches_relion_composition_and_thesis_rows():
    rot, tilt, psi = 31.0, 47.0, -112.0
    m = euler_zyz_to_matrix(rot, tilt, psi)
    np.testing.assert_allclose(m, _rz(psi) @ _ry(tilt) @ _rz(rot), atol=1e-12)
    # Row 3 is the projection direction (cos rot sin tilt, sin rot sin tilt, cos tilt).
    r1, r2 = np.deg2rad(rot), np.deg2rad(tilt)
    direction = [np.cos(r1) * np.sin(r2), np.sin(r1) * np.sin(r2), np.cos(r2)]
    np.testing.assert_allclose(m[2], direction, atol=1e-12)
    # Rows 1-2 (M_perp) are orthonormal and annihilate the direction.
    mp = m[:2]
    np.testing.assert_allclose(mp @ mp.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(mp @ m[2], 0.0, atol=1e-12)


def test_batched_orthogonal_and_proper():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-360, 360, size=(3, 5, 3))
    m = euler_zyz_to_matrix(angles[..., 0], angles[..., 1], angles[..., 2])
    assert m.shape == (3, 5, 3, 3)
    eye = np.broadcast_to(np.eye(3), m.shape)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), eye, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    rot=st.floats(-179.9, 180.0),
    tilt=st.floats(0.0, 180.0),
    psi=st.floats(-179.9, 180.0),
)
def test_round_trip_matrix(rot, tilt, psi):
    m = euler_zyz_to_matrix(rot, tilt, psi)
    back = matrix_to_euler_zyz(m)
    np.testing.assert_allclose(euler_zyz_to_matrix(*back), m, atol=1e-7)


def test_round_trip_angles_regular():
    rng = np.random.default_rng(1)
    rot = rng.uniform(-179, 179, 500)
    tilt = rng.uniform(1, 179, 500)
    psi = rng.uniform(-179, 179, 500)
    r2, t2, p2 = matrix_to_euler_zyz(euler_zyz_to_matrix(rot, tilt, psi))
    np.testing.assert_allclose(r2, rot, atol=1e-8)
    np.testing.assert_allclose(t2, tilt, atol=1e-8)
    np.testing.assert_allclose(p2, psi, atol=1e-8)


def test_gimbal_lock():
    for tilt in (0.0, 180.0):
        m = euler_zyz_to_matrix(40.0, tilt, 25.0)
        rot, t, psi = matrix_to_euler_zyz(m)
        assert rot == 0.0
        assert t == pytest.approx(tilt)
        np.testing.assert_allclose(euler_zyz_to_matrix(rot, t, psi), m, atol=1e-12)


def test_random_rotations_uniformity_and_determinism():
    r = random_rotations(20000, rng=123)
    assert r.shape == (20000, 3, 3)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-10)
    # Haar measure: E[R] = 0 and E[R_ij^2] = 1/3.
    assert np.abs(r.mean(axis=0)).max() < 0.02
    np.testing.assert_allclose((r**2).mean(axis=0), 1 / 3, atol=0.01)
    # Rotation angle distribution: E[trace] = 0 ; P(angle < 90 deg) = (pi/2 - 1)/pi.
    angle = np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1))
    frac = np.mean(angle < np.pi / 2)
    assert frac == pytest.approx((np.pi / 2 - 1) / np.pi, abs=0.01)
    np.testing.assert_array_equal(random_rotations(5, 7), random_rotations(5, 7))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        random_rotations(0)


def test_quaternion_identity():
    np.testing.assert_allclose(quaternion_to_matrix([1, 0, 0, 0]), np.eye(3))
    # 90 deg about z: x -> y.
    q = [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]
    np.testing.assert_allclose(quaternion_to_matrix(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_xyz_to_zyx():
    m = random_rotations(1, 3)[0]
    v = np.array([1.0, 2.0, 3.0])  # (x, y, z)
    out = m @ v
    np.testing.assert_allclose(xyz_to_zyx_matrix(m) @ v[::-1], out[::-1], atol=1e-12)
    np.testing.assert_allclose(xyz_to_zyx_matrix(xyz_to_zyx_matrix(m)), m)


def test_single_voxel_moves_to_rotated_position():
    n = 33
    c = n // 2
    vol = np.zeros((n, n, n), np.float32)
    r_xyz = np.array([6.0, -3.0, 4.0])
    vol[c + 4, c - 3, c + 6] = 1.0
    rots = random_rotations(4, rng=5)
    for m in rots:
        out = rotate_volume(vol, m, order=1)
        target_xyz = m @ r_xyz
        target_zyx = target_xyz[::-1] + c
        peak = np.array(np.unravel_index(np.argmax(out), out.shape))
        assert np.abs(peak - target_zyx).max() <= 1.0
        grid = np.indices(out.shape).reshape(3, -1)
        com = (grid * out.reshape(-1)).sum(axis=1) / out.sum()
        np.testing.assert_allclose(com, target_zyx, atol=0.35)


def test_quarter_turn_equals_rot90_exactly():
    rng = np.random.default_rng(0)
    vol = rng.standard_normal((7, 9, 9)).astype(np.float32)  # odd: N//2 is the middle
    # rot = 90 about z. Object rotation out(R r) = in(r) with R = Rz(90)-passive:
    m = euler_zyz_to_matrix(90.0, 0.0, 0.0)
    out = rotate_volume(vol, m, order=1)
    # R maps (x, y) -> (y, -x): in[y, x] appears at out[-x, y].
    expected = np.rot90(vol, k=1, axes=(1, 2))
    np.testing.assert_array_equal(out, expected)
    # ... and with cubic splines too (prefiltered interpolation at integer nodes).
    out3 = rotate_volume(vol, m, order=3)
    np.testing.assert_allclose(out3, expected, atol=1e-4)
    # A quarter turn about y (tilt 90) on a cube.
    cube = rng.standard_normal((9, 9, 9)).astype(np.float32)
    m_y = euler_zyz_to_matrix(0.0, 90.0, 0.0)
    out_y = rotate_volume(cube, m_y, order=0)
    # Ry(90) maps (x, z) -> (-z, x): in[z, x] appears at out[z'=x, x'=-z].
    np.testing.assert_array_equal(out_y, np.rot90(cube, k=1, axes=(2, 0)))


def test_rotate_volume_identity_and_errors():
    vol = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
    np.testing.assert_array_equal(rotate_volume(vol, np.eye(3)), vol)
    with pytest.raises(ValueError, match="not orthogonal"):
        rotate_volume(vol, 2 * np.eye(3))
    with pytest.raises(ValueError, match="3D"):
        rotate_volume(vol[0], np.eye(3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        rotate_volume(vol, np.eye(2))


def test_relion_matrix_is_inverse_of_scipy_active_zyz():
    # The documented mapping to scipy: R_relion = Rotation.from_euler("ZYZ", ...).inv().
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(4)
    angles = rng.uniform(-180, 180, size=(50, 3))
    m = euler_zyz_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    active = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix()
    np.testing.assert_allclose(m, np.swapaxes(active, -1, -2), atol=1e-12)
    # ... and the explicit formula of the module docstring, entry by entry.
    rot, tilt, psi = np.deg2rad(angles.T)
    c1, s1, c2, s2 = np.cos(rot), np.sin(rot), np.cos(tilt), np.sin(tilt)
    c3, s3 = np.cos(psi), np.sin(psi)
    np.testing.assert_allclose(m[:, 0, 1], c3 * c2 * s1 + s3 * c1, atol=1e-12)
    np.testing.assert_allclose(m[:, 1, 2], s3 * s2, atol=1e-12)
    np.testing.assert_allclose(m[:, 2, 0], s2 * c1, atol=1e-12)


def test_quaternion_agrees_with_euler_and_batches():
    # 90 deg about z as a quaternion is the active rotation x -> y; RELION's rot = -90
    # (passive Rz) is the same matrix.
    q = np.array([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    np.testing.assert_allclose(quaternion_to_matrix(q), euler_zyz_to_matrix(-90, 0, 0), atol=1e-12)
    qs = np.random.default_rng(2).standard_normal((2, 3, 4))
    m = quaternion_to_matrix(qs)
    assert m.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(m[1, 2], quaternion_to_matrix(qs[1, 2]), atol=1e-15)
    # q and -q are the same rotation.
    np.testing.assert_allclose(quaternion_to_matrix(-qs), m, atol=1e-12)
    with pytest.raises(ValueError, match="non-zero"):
        quaternion_to_matrix([0, 0, 0, 0])


def test_near_gimbal_lock_and_bad_matrices():
    for tilt in (1e-6, 180.0 - 1e-6):  # within scipy's 1e-7 rad lock threshold
        m = euler_zyz_to_matrix(40.0, tilt, 25.0)
        rot, t, psi = matrix_to_euler_zyz(m)
        assert rot == 0.0
        np.testing.assert_allclose(euler_zyz_to_matrix(rot, t, psi), m, atol=1e-7)
    with pytest.raises(ValueError, match="determinant"):
        matrix_to_euler_zyz(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        matrix_to_euler_zyz(np.eye(4))
