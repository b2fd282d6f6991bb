"""The one rotation convention of cryowedge: RELION/Xmipp ZYZ Euler angles.

All 3x3 matrices in this module act on **column vectors in (x, y, z) order** (the
physical order of the Euler-angle literature), even though arrays are stored as
``(z, y, x)`` (see docs/conventions.md). :func:`xyz_to_zyx_matrix` converts a matrix so
that it acts on ``(z, y, x)`` index vectors instead.

Euler angles ``(rot, tilt, psi)`` are in **degrees**. The matrix is

.. code-block:: text

    R = Rz(psi) @ Ry(tilt) @ Rz(rot),   Rz(a) = [[ c, s, 0], [-s, c, 0], [0, 0, 1]],
                                         Ry(a) = [[ c, 0, -s], [0, 1, 0], [s, 0, c]]

i.e. explicitly (``c_i = cos``, ``s_i = sin`` of rot = 1, tilt = 2, psi = 3)::

    [[ c3 c2 c1 - s3 s1,   c3 c2 s1 + s3 c1,  -c3 s2],
     [-s3 c2 c1 - c3 s1,  -s3 c2 s1 + c3 c1,   s3 s2],
     [ s2 c1,              s2 s1,              c2   ]]

Rows 1-2 span the projection (detector) plane and row 3 is the projection direction
(research/thesis.md section 1.1). In RELION's words, ``R`` maps a map coordinate ``r``
to the projection frame ``R @ r``. :func:`rotate_volume` rotates the *object* by the
matrix: ``out(R @ r) = in(r)``; hence summing ``rotate_volume(v, R)`` along ``z`` gives
the RELION projection of ``v`` for the angles of ``R``.

The conversions are computed with :class:`scipy.spatial.transform.Rotation`. Its rotations
are *active* (``Rz(a)`` of scipy is the transpose of the ``Rz(a)`` above), so RELION's
matrix is the **inverse** of scipy's intrinsic ``"ZYZ"`` rotation of the same angles::

    R_relion(rot, tilt, psi) = Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).inv()

(equivalently ``R_relion.T`` is the active rotation ``Rz(rot) Ry(tilt) Rz(psi)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.spatial.transform import Rotation

from cryowedge._validation import check_finite, check_ndim, check_positive_int

__all__ = [
    "euler_zyz_to_matrix",
    "matrix_to_euler_zyz",
    "random_rotations",
    "quaternion_to_matrix",
    "xyz_to_zyx_matrix",
    "rotate_volume",
]

logger = logging.getLogger(__name__)

# Permutation swapping x and z: P @ (x, y, z) = (z, y, x).  P is symmetric and P @ P = I.
_PERM = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _check_matrix(matrix: ArrayLike, name: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim < 2 or m.shape[-2:] != (3, 3):
        raise ValueError(
            f"{name} must have shape (..., 3, 3), got {m.shape}. "
            "Build one with euler_zyz_to_matrix or random_rotations."
        )
    if not np.isfinite(m).all():  # check_finite imports torch: only call it to report
        check_finite(m, name)
    return m


def euler_zyz_to_matrix(
    rot_deg: ArrayLike, tilt_deg: ArrayLike, psi_deg: ArrayLike
) -> np.ndarray:
    """Rotation matrices from RELION ZYZ Euler angles.

    Parameters
    ----------
    rot_deg, tilt_deg, psi_deg : float or array_like
        The three Euler angles in degrees (RELION ``rlnAngleRot``, ``rlnAngleTilt``,
        ``rlnAnglePsi``). They broadcast against each other; the broadcast shape is the
        batch shape ``...``.

    Returns
    -------
    numpy.ndarray
        ``(..., 3, 3)`` float64 matrices acting on (x, y, z) column vectors. Rows 1-2
        span the projection plane, row 3 is the projection direction (see module
        docstring and docs/conventions.md).
    """
    a1, a2, a3 = np.broadcast_arrays(
        np.asarray(rot_deg, dtype=np.float64),
        np.asarray(tilt_deg, dtype=np.float64),
        np.asarray(psi_deg, dtype=np.float64),
    )
    for value, name in ((a1, "rot_deg"), (a2, "tilt_deg"), (a3, "psi_deg")):
        if not np.isfinite(value).all():  # check_finite imports torch: only call it to report
            check_finite(value, name)
    angles = np.stack([a1, a2, a3], axis=-1).reshape(-1, 3)  # (n, 3) degrees
    # RELION's passive ZYZ matrix is the inverse of scipy's active intrinsic "ZYZ" rotation.
    m = Rotation.from_euler("ZYZ", angles, degrees=True).inv().as_matrix()
    return m.reshape(a1.shape + (3, 3))


def matrix_to_euler_zyz(
    matrix: ArrayLike, *, eps: float = 1e-9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RELION ZYZ Euler angles of rotation matrices (inverse of :func:`euler_zyz_to_matrix`).

    Parameters
    ----------
    matrix : array_like
        ``(..., 3, 3)`` rotation matrices acting on (x, y, z) column vectors.
    eps : float
        Below this ``sin(tilt)`` the angles are degenerate (gimbal lock); then ``rot``
        is set to 0 and the whole in-plane rotation is returned in ``psi``.

    Returns
    -------
    rot_deg, tilt_deg, psi_deg : numpy.ndarray
        Each of shape ``...`` in degrees: ``rot`` and ``psi`` in ``(-180, 180]``,
        ``tilt`` in ``[0, 180]``.
    """
    m = _check_matrix(matrix, "matrix")
    batch = m.shape[:-2]
    flat = m.reshape(-1, 3, 3)
    det = np.linalg.det(flat)
    if np.any(det <= 0):
        i = int(np.argmax(det <= 0))
        raise ValueError(
            f"matrix[{i}] has determinant {det[i]:.3g} <= 0 (a reflection or singular matrix); "
            "pass proper rotation matrices (det = +1)."
        )
    # scipy returns (rot, tilt, psi) of the active rotation R^T = Rz(rot) Ry(tilt) Rz(psi),
    # wrapped into [-180, 180); tilt lies in [0, 180] (180 may come back as -180).
    rot, tilt, psi = (
        Rotation.from_matrix(flat).inv().as_euler("ZYZ", degrees=True, suppress_warnings=True).T
    )
    tilt = np.abs(tilt)
    # Gimbal lock (scipy's own test is |tilt| or |tilt - 180| <= 1e-7 rad; ours is sin(tilt)
    # <= eps): tilt = 0 gives Rz(rot + psi); tilt = 180 gives entries of Rz(psi - rot). The
    # project's convention puts the whole in-plane rotation into psi and sets rot = 0.
    sin_tilt = np.hypot(flat[:, 2, 0], flat[:, 2, 1])
    locked = (sin_tilt <= eps) | (np.deg2rad(np.minimum(tilt, 180.0 - tilt)) <= 1e-7)
    psi_up = np.rad2deg(np.arctan2(flat[:, 0, 1], flat[:, 0, 0]))
    psi_down = np.rad2deg(np.arctan2(flat[:, 0, 1], -flat[:, 0, 0]))
    psi = np.where(locked, np.where(flat[:, 2, 2] > 0, psi_up, psi_down), psi)
    rot = np.where(locked, 0.0, rot)
    # Map -180 to +180 so that the ranges are (-180, 180].
    rot = np.where(rot <= -180.0, rot + 360.0, rot)
    psi = np.where(psi <= -180.0, psi + 360.0, psi)
    return rot.reshape(batch), tilt.reshape(batch), psi.reshape(batch)


def quaternion_to_matrix(quaternions: ArrayLike) -> np.ndarray:
    """Rotation matrices of unit quaternions ``(w, x, y, z)``.

    Parameters
    ----------
    quaternions : array_like
        ``(..., 4)`` quaternions, scalar part first. They are normalised here.

    Returns
    -------
    numpy.ndarray
        ``(..., 3, 3)`` float64 matrices acting on (x, y, z) column vectors (the active
        rotation ``v -> q v q*``).
    """
    q = np.asarray(quaternions, dtype=np.float64)
    if q.ndim < 1 or q.shape[-1] != 4:
        raise ValueError(f"quaternions must have shape (..., 4), got {q.shape}.")
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm == 0) or not np.all(np.isfinite(norm)):
        raise ValueError("quaternions must be finite and non-zero; normalise them first.")
    m = Rotation.from_quat(q.reshape(-1, 4) / norm.reshape(-1, 1), scalar_first=True).as_matrix()
    return m.reshape(q.shape[:-1] + (3, 3))


def random_rotations(
    n: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Rotations drawn uniformly (Haar measure) from SO(3).

    Uses :meth:`scipy.spatial.transform.Rotation.random` (normalised 4D standard-normal
    vectors as unit quaternions, uniform on the 3-sphere, hence uniform rotations).

    Parameters
    ----------
    n : int
        Number of rotations (>= 1).
    rng : numpy.random.Generator or int or None
        Random generator or seed (passed to ``numpy.random.default_rng``).

    Returns
    -------
    numpy.ndarray
        ``(n, 3, 3)`` float64 matrices acting on (x, y, z) column vectors.
    """
    check_positive_int(n, "n")
    gen = np.random.default_rng(rng)
    return Rotation.random(int(n), rng=gen).as_matrix().reshape(int(n), 3, 3)


def xyz_to_zyx_matrix(matrix: ArrayLike) -> np.ndarray:
    """Re-express (x, y, z) matrices so that they act on (z, y, x) column vectors.

    If ``m @ (x, y, z) = (x', y', z')`` then ``xyz_to_zyx_matrix(m) @ (z, y, x) =
    (z', y', x')``. The conversion is its own inverse.

    Parameters
    ----------
    matrix : array_like
        ``(..., 3, 3)`` matrices.

    Returns
    -------
    numpy.ndarray
        ``(..., 3, 3)`` float64 matrices, ``P @ m @ P`` with ``P`` the x<->z swap.
    """
    m = _check_matrix(matrix, "matrix")
    return m[..., ::-1, ::-1].copy()


def _snap_integers(m: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Round entries within ``tol`` of an integer (makes quarter turns exact)."""
    rounded = np.round(m)
    return np.where(np.abs(m - rounded) < tol, rounded, m)


def rotate_volume(
    volume: ArrayLike,
    matrix_xyz: ArrayLike,
    *,
    order: int = 1,
    center: Sequence[float] | None = None,
    cval: float = 0.0,
) -> np.ndarray:
    """Rotate a ``(z, y, x)`` volume about its centre voxel.

    The **object** is rotated: the density found at centred position ``r`` (in
    (x, y, z) voxels) of the input is found at ``matrix_xyz @ r`` in the output,
    ``out(R r) = in(r)``. Values are interpolated with
    ``scipy.ndimage.affine_transform`` (``out(r') = in(R^T r')``); points that come
    from outside the input get ``cval``.

    Parameters
    ----------
    volume : array_like
        ``(z, y, x)`` volume.
    matrix_xyz : array_like
        ``(3, 3)`` rotation matrix acting on (x, y, z) column vectors, e.g. from
        :func:`euler_zyz_to_matrix`. Entries within 1e-12 of an integer are rounded
        so that quarter turns are exact permutations.
    order : int
        Spline interpolation order (0-5); 1 = trilinear.
    center : sequence of 3 floats, optional
        Rotation centre as ``(z, y, x)`` voxel indices. Default ``N // 2`` per axis
        (docs/conventions.md).
    cval : float
        Value for points outside the input.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 volume of the input shape.
    """
    vol = np.asarray(volume)
    check_ndim(vol, 3, "volume", "(z, y, x)")
    m = _check_matrix(matrix_xyz, "matrix_xyz")
    if m.shape != (3, 3):
        raise ValueError(
            f"matrix_xyz must be a single (3, 3) matrix, got {m.shape}; "
            "loop over a batch of rotations."
        )
    if not np.allclose(m @ m.T, np.eye(3), atol=1e-5):
        raise ValueError(
            "matrix_xyz is not orthogonal (R @ R.T != I, max deviation "
            f"{np.abs(m @ m.T - np.eye(3)).max():.3g}); pass a rotation matrix."
        )
    if not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise ValueError(f"order must be an integer in 0..5, got {order!r}.")
    if center is None:
        c = np.array([n // 2 for n in vol.shape], dtype=np.float64)
    else:
        c = np.asarray(center, dtype=np.float64)
        if c.shape != (3,):
            raise ValueError(f"center must be 3 numbers (z, y, x), got shape {c.shape}.")
    # out(o) = in(M (o - c) + c) with M = R^T expressed on (z, y, x) index vectors.
    m_zyx = _snap_integers(xyz_to_zyx_matrix(m).T)
    offset = c - m_zyx @ c
    out = ndimage.affine_transform(
        vol.astype(np.float32, copy=False),
        m_zyx,
        offset=offset,
        order=int(order),
        mode="constant",
        cval=float(cval),
        prefilter=order > 1,
    )
    return out.astype(np.float32, copy=False)
