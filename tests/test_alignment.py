"""IMOD .xf / AreTomo .aln alignment files and per-view in-plane geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryowedge.geometry.tilt import TiltGeometry, rotation_yx
from cryowedge.io.alignment import (
    alignment_from_geometry,
    apply_alignment,
    load_alignment,
    read_aretomo_aln,
    read_imod_xf,
    read_imod_xtilt,
    write_aretomo_aln,
    write_imod_xf,
)
from cryowedge.operators.detector import DetectorWarp
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp
from cryowedge.simulate.phantoms import shepp_logan_3d
from cryowedge.simulate.tilt_series import project_volume

ANGLES = [-30.0, 0.0, 30.0]


def _xf(a: np.ndarray, d: np.ndarray, n: int = 3) -> np.ndarray:
    """``(n, 2, 3)`` copies of one IMOD transform (``a`` (2, 2) on (x, y), ``d`` (dx, dy))."""
    return np.tile(
        np.concatenate([np.asarray(a, float), np.asarray(d, float)[:, None]], 1), (n, 1, 1)
    )


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


# --------------------------------------------------------------------------- hand-made files


@pytest.mark.parametrize("shape", [(15, 21), (16, 20)])
def test_identity_xf_gives_plain_geometry(tmp_path, shape):
    g = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=shape)
    path = write_imod_xf(tmp_path / "id.xf", _xf(np.eye(2), [0, 0]))
    np.testing.assert_array_equal(read_imod_xf(path), _xf(np.eye(2), [0, 0]))
    got = apply_alignment(g, load_alignment(path, 3))
    assert got == g and got.view_matrices is None and got.shifts_px is None


def test_shift_xf_moves_a_bead_by_minus_d(tmp_path):
    # aligned = raw + D, so a bead at the aligned centre appears at raw centre − D.
    shape = (16, 20)
    g = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=shape)
    dx, dy = 3.0, -2.0
    got = apply_alignment(
        g, load_alignment(write_imod_xf(tmp_path / "s.xf", _xf(np.eye(2), [dx, dy])), 3)
    )
    vol = torch.zeros((8, *g.aligned_detector_shape), dtype=torch.float64)
    vol[4, shape[0] // 2, shape[1] // 2] = 1.0  # bead at the volume centre
    img = TiltProjector(got, tuple(vol.shape))(vol)[1].numpy()  # 0° view
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    assert (iy, ix) == (shape[0] // 2 - dy, shape[1] // 2 - dx)
    assert img.max() == pytest.approx(1.0)


def test_rotation_xf_equals_quarter_turn_geometry(tmp_path):
    a = np.array([[0.0, 1.0], [-1.0, 0.0]])  # aligned = R(−90°)·raw: raw = R(+90°)·aligned
    path = write_imod_xf(tmp_path / "r.xf", _xf(a, [0, 0]))
    odd = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(15, 21))
    assert apply_alignment(odd, load_alignment(path, 3)) == odd.with_(tilt_axis_angle_deg=90.0)
    # Even sizes: IMOD turns about (N−1)/2, cryowedge about N//2, which moves the
    # quarter turn by one pixel in x (docs/conventions.md, "Alignment files").
    even = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(16, 20))
    expected = even.with_(tilt_axis_angle_deg=90.0, shifts_px=np.tile([0.0, -1.0], (3, 1)))
    assert apply_alignment(even, load_alignment(path, 3)) == expected


def test_aln_rot_is_the_tilt_axis_angle(tmp_path):
    # AreTomo corrects with raw = R(ROT)·aligned + (TX, TY): ROT is cryowedge's axis angle.
    g = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(15, 21))
    path = write_aretomo_aln(tmp_path / "r.aln", [-90.0] * 3, np.zeros((3, 2)), ANGLES)
    got = apply_alignment(g, load_alignment(path, 3))
    assert got == g.with_(tilt_axis_angle_deg=-90.0)
    # Shifts: TX moves the image right, TY up (odd sizes: same centre in both programs).
    path = write_aretomo_aln(tmp_path / "s.aln", [0.0] * 3, np.tile([2.0, -1.5], (3, 1)), ANGLES)
    got = apply_alignment(g, load_alignment(path, 3))
    np.testing.assert_allclose(got.shifts_px, np.tile([-1.5, 2.0], (3, 1)))


def test_aln_and_equivalent_xf_give_the_same_geometry(tmp_path):
    rng = np.random.default_rng(0)
    rot = rng.uniform(84.0, 86.0, 3)
    shifts = rng.uniform(-3, 3, (3, 2))
    aln = read_aretomo_aln(
        write_aretomo_aln(tmp_path / "a.aln", rot, shifts, ANGLES, raw_size=(20, 16, 3))
    )
    assert aln.raw_size == (20, 16, 3) and aln.section.tolist() == [1, 2, 3]
    np.testing.assert_allclose(aln.tilt_angles_deg, ANGLES)
    g = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(16, 20))
    from_aln = apply_alignment(g, load_alignment(tmp_path / "a.aln", 3))
    rad = np.deg2rad(aln.rot_deg)
    a = np.stack(
        [np.stack([np.cos(rad), np.sin(rad)], -1), np.stack([-np.sin(rad), np.cos(rad)], -1)], -2
    )
    d = -np.einsum("nij,nj->ni", a, aln.shifts_xy)
    xf = write_imod_xf(tmp_path / "a.xf", np.concatenate([a, d[:, :, None]], 2))
    from_xf = apply_alignment(g, load_alignment(xf, 3))
    np.testing.assert_allclose(
        from_xf.aligned_to_raw_matrices(), from_aln.aligned_to_raw_matrices(), atol=1e-6
    )
    np.testing.assert_allclose(from_xf.shifts_px, from_aln.shifts_px, atol=1e-3)
    # The per-view rotation is R(rot_t): the common axis is their mean, V_t the remainder.
    np.testing.assert_allclose(
        from_aln.aligned_to_raw_matrices(), rotation_yx(aln.rot_deg), atol=1e-9
    )
    assert from_aln.tilt_axis_angle_deg == pytest.approx(
        np.rad2deg(np.angle(np.exp(1j * rad).mean()))
    )


def test_geometry_xf_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    g = TiltGeometry(
        tilt_angles_deg=ANGLES,
        detector_shape=(16, 21),
        tilt_axis_angle_deg=-84.5,
        shifts_px=rng.normal(0, 2, (3, 2)),
        view_matrices=rotation_yx([0.5, -0.3, 0.0]) * np.array([1.01, 0.99, 1.0])[:, None, None],
    )
    path = write_imod_xf(tmp_path / "g.xf", alignment_from_geometry(g).xf)
    back = apply_alignment(
        g.with_(tilt_axis_angle_deg=0.0, shifts_px=None, view_matrices=None),
        load_alignment(path, 3),
    )
    np.testing.assert_allclose(
        back.aligned_to_raw_matrices(), g.aligned_to_raw_matrices(), atol=2e-7
    )
    np.testing.assert_allclose(back.shifts_px, g.shifts_px, atol=2e-4)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["xf", "aln"])
def test_wrong_view_count_is_refused_in_one_line(tmp_path, kind):
    if kind == "xf":
        path = write_imod_xf(tmp_path / "a.xf", _xf(np.eye(2), [0, 0], n=41))
    else:
        path = write_aretomo_aln(tmp_path / "a.aln", [0.0] * 41, np.zeros((41, 2)), np.arange(41.0))
    with pytest.raises(ValueError, match=r"has 41 views but the tilt series has 40") as err:
        load_alignment(path, 40)
    assert "\n" not in str(err.value)
    g = TiltGeometry.from_range(-60, 60, 3, (16, 16))[:40]
    with pytest.raises(ValueError, match="41 views but the tilt series has 40"):
        apply_alignment(g, load_alignment(path))


def test_bad_alignment_files_are_refused(tmp_path):
    (tmp_path / "bad.xf").write_text("1 0 0 1 0\n")
    with pytest.raises(ValueError, match="line 1.*six numbers"):
        load_alignment(tmp_path / "bad.xf", 1)
    (tmp_path / "sing.xf").write_text("0 0 0 0 1 1\n")
    with pytest.raises(ValueError, match="singular"):
        read_imod_xf(tmp_path / "sing.xf")
    (tmp_path / "a.txt").write_text("1 0 0 1 0 0\n")
    with pytest.raises(ValueError, match=r"suffix '\.txt'.*\.xf.*\.aln"):
        load_alignment(tmp_path / "a.txt", 1)
    (tmp_path / "mag.aln").write_text(
        "# SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT\n1 -90 1.02 0 0 1 1 1 0 0\n"
    )
    with pytest.raises(ValueError, match="GMAG = 1.02"):
        read_aretomo_aln(tmp_path / "mag.aln")
    (tmp_path / "dark.aln").write_text(
        "# RawSize = 20 16 3\n# DarkFrame =     0    0   -60.00\n"
        "1 -90 1 0 0 1 1 1 0 0\n2 -90 1 0 0 1 1 1 0 3\n"
        "# Local Alignment\n   0   0   10.0   10.0   1.0   1.0  1.0\n"
    )
    with pytest.raises(ValueError, match="2 views but the tilt series has 3.*dark frame"):
        load_alignment(tmp_path / "dark.aln", 3)
    (tmp_path / "a.xtilt").write_text("0.5\n0.5\n")
    np.testing.assert_array_equal(read_imod_xtilt(tmp_path / "a.xtilt", 2), [0.5, 0.5])
    with pytest.raises(ValueError, match="2 X-tilt values but the tilt series has 3"):
        read_imod_xtilt(tmp_path / "a.xtilt", 3)


# --------------------------------------------------------------------------- geometry and warp


def _per_view_geometry() -> TiltGeometry:
    rng = np.random.default_rng(5)
    return TiltGeometry(
        tilt_angles_deg=[-40.0, -20.0, 0.0, 20.0, 40.0],
        detector_shape=(12, 17),
        tilt_axis_angle_deg=85.0,
        shifts_px=rng.normal(0, 1.5, (5, 2)),
        view_matrices=rotation_yx(rng.uniform(-1.5, 1.5, 5))
        * rng.uniform(0.97, 1.03, 5)[:, None, None],
    )


def test_view_matrices_subsets_equality_and_records():
    g = _per_view_geometry()
    np.testing.assert_array_equal(g.even().view_matrices, g.view_matrices[::2])
    np.testing.assert_array_equal(g[[4, 1]].view_matrices, g.view_matrices[[4, 1]])
    assert eval(repr(g), {"TiltGeometry": TiltGeometry, "np": np}) == g  # noqa: S307
    assert TiltGeometry(**g.to_dict()) == g and hash(TiltGeometry(**g.to_dict())) == hash(g)
    assert (
        g != g.with_(view_matrices=None)
        and g.with_(view_matrices=np.tile(np.eye(2), (5, 1, 1))).view_matrices is None
    )
    # The aligned detector ignores shifts and holds every raw pixel of every view.
    assert g.with_(shifts_px=None).aligned_detector_shape == g.aligned_detector_shape
    nv, nu = g.aligned_detector_shape
    ny, nx = g.detector_shape
    yy, xx = np.meshgrid(np.arange(ny) - ny // 2, np.arange(nx) - nx // 2, indexing="ij")
    al = np.linalg.inv(g.aligned_to_raw_matrices()) @ np.stack([yy.ravel(), xx.ravel()])
    assert (al[:, 0] >= -(nv // 2) - 1e-9).all() and (al[:, 0] <= nv - 1 - nv // 2 + 1e-9).all()
    assert (al[:, 1] >= -(nu // 2) - 1e-9).all() and (al[:, 1] <= nu - 1 - nu // 2 + 1e-9).all()
    with pytest.raises(ValueError, match=r"view_matrices must have shape \(n_tilts, 2, 2\)"):
        g.with_(view_matrices=np.eye(2))
    with pytest.raises(ValueError, match="singular"):
        g.with_(view_matrices=np.zeros((5, 2, 2)))


def test_warp_with_view_matrices_is_adjoint_and_maps_points():
    g = _per_view_geometry()
    warp = DetectorWarp(g)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=warp.domain_shape))
    y = torch.as_tensor(rng.normal(size=warp.range_shape))
    assert float((warp(x) * y).sum()) == pytest.approx(
        float((x * warp.adjoint(y)).sum()), rel=1e-12
    )
    # A linear ramp in the aligned frame is reproduced exactly by bilinear interpolation.
    nv, nu = g.aligned_detector_shape
    ay, ax = np.meshgrid(np.arange(nv) - nv // 2, np.arange(nu) - nu // 2, indexing="ij")
    ramp = torch.as_tensor(np.broadcast_to(2.0 * ay + 0.5 * ax, warp.domain_shape).copy())
    ny, nx = g.detector_shape
    ry, rx = np.meshgrid(np.arange(ny) - ny // 2, np.arange(nx) - nx // 2, indexing="ij")
    raw = np.stack([ry, rx])[None].reshape(1, 2, -1) - g.shifts_px[:, :, None]
    al = np.linalg.inv(g.aligned_to_raw_matrices()) @ raw  # (n, 2, ny·nx)
    expected = (2.0 * al[:, 0] + 0.5 * al[:, 1]).reshape(g.n_tilts, ny, nx)
    # Shifts may push edge pixels off the aligned grid (it ignores shifts): check the inside.
    inside = (
        (al[:, 0] > -(nv // 2))
        & (al[:, 0] < nv - 2 - nv // 2)
        & (al[:, 1] > -(nu // 2))
        & (al[:, 1] < nu - 2 - nu // 2)
    ).reshape(g.n_tilts, ny, nx)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(warp(ramp).numpy()[inside], expected[inside], atol=1e-9)


# --------------------------------------------------------------------------- round trip (bar)


def _misaligned_series(n: int = 48, nz: int = 24):
    """Aligned projections of a phantom, and a raw stack made from them with known IMOD xfs.

    The raw stack is resampled with scipy (cubic), independently of cryowedge's warp:
    ``aligned = R(−φ_t)·(raw − T_t)`` about IMOD's centre ``(N − 1)/2``.
    """
    vol = np.zeros((nz, n, n), np.float32)
    m = 3 * n // 4
    o = (n - m) // 2
    vol[:, o : o + m, o : o + m] = shepp_logan_3d((nz, m, m))
    geom = TiltGeometry.from_range(-60, 60, 4, (n, n))
    aligned = project_volume(vol, geom, oversample=2)
    rng = np.random.default_rng(1)
    phi = rng.uniform(84.0, 86.0, geom.n_tilts)
    shifts = rng.uniform(-3.0, 3.0, (geom.n_tilts, 2))
    c = (n - 1) / 2
    raw = np.empty_like(aligned)
    xf = np.empty((geom.n_tilts, 2, 3))
    for t in range(geom.n_tilts):
        r = np.deg2rad(phi[t])
        a = np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]])
        d = -a @ shifts[t]
        xf[t] = np.concatenate([a, d[:, None]], 1)
        a_yx = a[::-1, ::-1]
        offset = d[::-1] + c - a_yx @ np.array([c, c])
        raw[t] = ndimage.affine_transform(aligned[t], a_yx, offset=offset, order=3, mode="constant")
    return geom, aligned, raw, xf, phi, shifts, m


@pytest.mark.parametrize("kind", ["xf", "aln"])
def test_round_trip_reconstructs_the_aligned_truth(tmp_path, kind):
    geom, aligned, raw, xf, phi, shifts, m = _misaligned_series()
    nz = 24
    if kind == "xf":
        path = write_imod_xf(tmp_path / "ts.xf", xf)
    else:
        path = write_aretomo_aln(tmp_path / "ts.aln", phi, shifts, geom.tilt_angles_deg)
    g = apply_alignment(geom, load_alignment(path, geom.n_tilts))
    assert g.view_matrices is not None and 84.0 < g.tilt_axis_angle_deg < 86.0
    rec = fbp(raw, g, volume_shape=(nz, *g.aligned_detector_shape)).numpy()
    ref = fbp(aligned, geom, volume_shape=(nz, *geom.aligned_detector_shape)).numpy()
    naive_g = geom.with_(tilt_axis_angle_deg=85.0)
    naive = fbp(raw, naive_g, volume_shape=(nz, *naive_g.aligned_detector_shape)).numpy()

    def field(v):  # the common field: the phantom's box about the centre
        ny, nx = v.shape[1:]
        return v[
            :, ny // 2 - m // 2 : ny // 2 - m // 2 + m, nx // 2 - m // 2 : nx // 2 - m // 2 + m
        ]

    assert _corr(field(rec), field(ref)) >= 0.95
    assert _corr(field(naive), field(ref)) < 0.9  # the per-view alignment matters
