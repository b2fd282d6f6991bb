"""Handedness and z direction against IMOD, and the defocus gradient (docs/conventions.md).

IMOD's ``tilt`` back-projects a point of an output slice (column ``x``, row ``zz`` of an
XZ slice, both centred) from column ``x cos θ − zz sin θ`` of the aligned view (its sine is
negated, flib/tilt/tilt.f90); ``clip rotx`` / ``trimvol -rx`` then turns the XZ slices into
XY slices with section ``Z = −zz`` and ``Y`` = the aligned image's ``Y`` (clip/clip_proc.c).
So an IMOD tomogram of an aligned stack obeys ``u = X cos θ + Z sin θ``. The tests below
render tilt series *from that equation* (not from cryowedge's projector), so that a flip of
the tilt sign or of ``z`` in cryowedge makes them fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp
from cryowedge.simulate.ctf import defocus_at, defocus_of_point

SHAPE = (41, 40, 41)  # (nz, ny, nx); odd nz, nx keep the centre on a voxel
ANGLES = np.arange(-60.0, 60.1, 2.0)
SIGMA = 1.0  # bead radius (Gaussian sigma, px)


def _imod_column(x: np.ndarray, zz_xz_slice: np.ndarray, theta_deg: float) -> np.ndarray:
    """IMOD ``tilt``: column (centred) of a point at column ``x``, row ``zz`` of its XZ slice."""
    theta = np.deg2rad(theta_deg)
    return x * np.cos(theta) - zz_xz_slice * np.sin(theta)


def _imod_rotx_z(zz_xz_slice: np.ndarray) -> np.ndarray:
    """``clip rotx``: section index of the rotated volume, centred, from the XZ-slice row."""
    return -zz_xz_slice


def _right_handed_helix(n_beads: int = 12) -> np.ndarray:
    """Bead centres ``(n, 3)`` as centred ``(x, y, z)`` on a right-handed helix along ``+y``.

    ``r(t) = R cos t·e_z + R sin t·e_x + c t·e_y`` with ``(e_z, e_x, e_y)`` right-handed, so the
    torsion ``(r' × r'')·r'''`` is positive (a right-handed screw advancing along ``+y``).
    """
    t = np.arange(n_beads) * (2 * np.pi / 8)  # 8 beads per turn
    radius, rise = 10.0, 2.0 / (2 * np.pi / 8)  # 2 px along y per bead
    y = rise * t
    return np.stack([radius * np.sin(t), y - y.mean(), radius * np.cos(t)], axis=1)


def _handedness(points_xyz: np.ndarray) -> np.ndarray:
    """Signs of ``(d_i × d_{i+1})·d_{i+2}`` along a chain of points ordered by ``y``.

    ``d_i`` are the steps between consecutive points in the right-handed ``(x, y, z)`` frame
    (IMOD's X, Y, Z: image x right, y up, section z towards the viewer). +1: right-handed.
    """
    ordered = points_xyz[np.argsort(points_xyz[:, 1])]
    d = np.diff(ordered, axis=0)
    return np.sign(np.einsum("ij,ij->i", np.cross(d[:-2], d[1:-1]), d[2:]))


def _render_series_imod(
    beads_xyz: np.ndarray, angles_deg: np.ndarray, ny: int, nx: int
) -> np.ndarray:
    """Aligned tilt series ``(n_tilts, ny, nx)`` of Gaussian beads placed by IMOD's equations.

    A bead at ``(X, Y, Z)`` of IMOD's rotated tomogram lies at XZ-slice row ``zz = −Z``
    before ``rotx``; ``tilt`` projects it to column ``X cos θ − zz sin θ`` of line ``Y``.
    Each bead has unit line integral per unit area (its 2D Gaussian integrates to the same
    mass at every tilt).
    """
    rows = np.arange(ny)[:, None] - ny // 2
    cols = np.arange(nx)[None, :] - nx // 2
    series = np.zeros((angles_deg.size, ny, nx))
    norm = 1.0 / (2 * np.pi * SIGMA**2)
    for t, theta in enumerate(angles_deg):
        for x, y, z in beads_xyz:
            zz = -z  # inverse of _imod_rotx_z
            u = _imod_column(np.array(x), np.array(zz), theta)
            series[t] += norm * np.exp(-((cols - u) ** 2 + (rows - y) ** 2) / (2 * SIGMA**2))
    return series.astype(np.float32)


def _bead_volume(beads_xyz: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """``(nz, ny, nx)`` volume of 3D Gaussian beads of unit mass at centred ``(x, y, z)``."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(
        np.arange(nz) - nz // 2, np.arange(ny) - ny // 2, np.arange(nx) - nx // 2, indexing="ij"
    )
    vol = np.zeros(shape)
    norm = 1.0 / (2 * np.pi * SIGMA**2) ** 1.5
    for bx, by, bz in beads_xyz:
        vol += norm * np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * SIGMA**2))
    return torch.from_numpy(vol)


def _find_beads(volume: np.ndarray, n_expected: int) -> np.ndarray:
    """Centred ``(x, y, z)`` centroids of the ``n_expected`` brightest blobs in ``(z, y, x)``."""
    smooth = ndimage.gaussian_filter(volume, 1.0)
    labels, n = ndimage.label(smooth > 0.35 * smooth.max())
    assert n >= n_expected, f"found {n} blobs, expected {n_expected}"
    index = np.arange(1, n + 1)
    mass = ndimage.sum(np.clip(smooth, 0, None), labels, index)
    keep = index[np.argsort(mass)[::-1][:n_expected]]
    zyx = np.array(ndimage.center_of_mass(np.clip(smooth, 0, None), labels, keep))
    centre = np.array(volume.shape) // 2
    return (zyx - centre)[:, ::-1]  # -> (x, y, z)


def _match(found_xyz: np.ndarray, true_xyz: np.ndarray) -> np.ndarray:
    """Distance from each true bead to the nearest found one (px)."""
    d = np.linalg.norm(true_xyz[:, None, :] - found_xyz[None, :, :], axis=-1)
    return d.min(axis=1)


def test_helix_is_right_handed():
    beads = _right_handed_helix()
    assert np.all(_handedness(beads) > 0)  # the phantom itself
    mirror = beads * np.array([1.0, 1.0, -1.0])  # z-mirror: left-handed
    assert np.all(_handedness(mirror) < 0)


def test_cryowedge_projector_matches_imod_equations():
    """cryowedge's projection of the helix equals the series IMOD's equations predict."""
    nz, ny, nx = SHAPE
    beads = _right_handed_helix()
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(ny, nx))
    ours = TiltProjector(geom, SHAPE)(_bead_volume(beads, SHAPE)).numpy()
    imod = _render_series_imod(beads, ANGLES, ny, nx)
    mirrored = _render_series_imod(beads * np.array([1.0, 1.0, -1.0]), ANGLES, ny, nx)
    # Per tilt: the mirror coincides at 0° only, so compare the tilted views.
    tilted = np.abs(ANGLES) >= 20
    cc = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ours[tilted], imod[tilted])]
    cc_mirror = [
        np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ours[tilted], mirrored[tilted])
    ]
    assert min(cc) > 0.98  # measured 0.996 (linear interpolation vs exact Gaussians)
    assert max(cc_mirror) < 0.8  # measured 0.46


def test_fbp_of_imod_series_is_right_handed_with_imod_axes():
    """An IMOD-geometry series of a right-handed helix reconstructs right-handed, same z.

    Read the ``(z, y, x)`` result with IMOD's axes (X = x, Y = y, Z = section z): the beads
    come back where IMOD's tomogram has them (same z direction) and in a right-handed chain.
    Flipping cryowedge's tilt sign or its z axis mirrors the result and fails both checks.
    """
    nz, ny, nx = SHAPE
    beads = _right_handed_helix()
    series = _render_series_imod(beads, ANGLES, ny, nx)
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(ny, nx))
    rec = fbp(series, geom, volume_shape=SHAPE, filter_name="shepp-logan").numpy()
    found = _find_beads(rec, len(beads))
    assert np.all(_handedness(found) > 0)
    assert _match(found, beads).max() < 1.0  # same positions, z direction included


@pytest.mark.parametrize("theta", [-60.0, -30.0, 30.0, 60.0])
def test_defocus_gradient_matches_projector(theta):
    """At θ > 0 the +x side of the aligned image is the more under-focused one.

    Ties the CTF model's height (the direction towards the electron source, along which the
    defocus falls) to the projector's rays: points displaced along it land on the same
    detector column, and specimen-plane points at ``+x`` land at ``+u``.
    """
    nz, ny, nx = 21, 3, 41
    geom = TiltGeometry(tilt_angles_deg=[theta], detector_shape=(ny, nx))
    proj = TiltProjector(geom, (nz, ny, nx))
    cols = np.arange(nx) - nx // 2

    def column(x: int, z: int) -> float:
        vol = torch.zeros(nz, ny, nx, dtype=torch.float64)
        vol[nz // 2 + z, 1, nx // 2 + x] = 1.0
        return float((proj(vol)[0, 1].numpy() * cols).sum())

    # The projector's detector coordinate is affine in (x, z): its gradient from 3 voxels.
    u0 = column(0, 0)
    grad_u = np.array([column(4, 0) - u0, column(0, 4) - u0]) / 4
    # The CTF model's "towards the source" direction: where the defocus falls fastest.
    df0, px, eps = 20000.0, 2.5, 1e-3
    grad_df = np.array(
        [
            defocus_of_point(eps, 0, theta, df0, px) - defocus_of_point(-eps, 0, theta, df0, px),
            defocus_of_point(0, eps, theta, df0, px) - defocus_of_point(0, -eps, theta, df0, px),
        ]
    ) / (2 * eps)
    to_source = -grad_df / np.linalg.norm(grad_df)
    assert grad_u @ to_source == pytest.approx(0.0, abs=1e-6)  # it is the ray direction
    assert np.linalg.norm(grad_u) == pytest.approx(1.0, abs=1e-6)

    # Two beads on the specimen plane (z = 0) at x = ∓12: their columns and defoci.
    u_left, u_right = column(-12, 0), column(12, 0)
    assert u_right > u_left  # +x lands on the right side of the image
    df_left, df_right = defocus_at(np.array([u_left, u_right]), theta, df0, px)
    if theta > 0:
        assert df_right > df_left  # right side more under-focused (IMOD, Dynamo, novaCTF)
    else:
        assert df_right < df_left
    # defocus_at (image side) agrees with defocus_of_point (volume side) on the plane.
    assert df_right == pytest.approx(float(defocus_of_point(12, 0, theta, df0, px)), abs=1e-3)


def test_higher_points_are_less_underfocused():
    """Underfocus = lens focused above the specimen; +z (towards the source) at 0° lowers it."""
    df = defocus_of_point(0.0, np.array([-10.0, 0.0, 10.0]), 0.0, 15000.0, 2.0)
    np.testing.assert_allclose(df, [15020.0, 15000.0, 14980.0])


@pytest.mark.parametrize("bad", [90.0, -90.0, float("nan")])
def test_defocus_refuses_bad_tilt(bad):
    with pytest.raises(ValueError, match="tilt_angle_deg"):
        defocus_at(0.0, bad, 10000.0, 1.0)
