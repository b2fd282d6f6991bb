"""TiltGeometry: validation, subsets, missing-wedge mask, angular weights."""

from __future__ import annotations

import numpy as np
import pytest

from cryowedge.geometry.tilt import TiltGeometry, angular_weights_rad, missing_wedge_mask


def test_from_range_and_subsets():
    g = TiltGeometry.from_range(-60, 60, 3, (32, 40), pixel_size_angstrom=2.5)
    assert g.n_tilts == 41
    assert g.tilt_range_deg == (-60.0, 60.0)
    even, odd = g.even(), g.odd()
    assert even.n_tilts + odd.n_tilts == g.n_tilts
    np.testing.assert_array_equal(even.tilt_angles_deg, g.tilt_angles_deg[::2])
    sub = g.angle_range(-30, 45)
    assert sub.tilt_range_deg == (-30.0, 45.0)
    assert sub.pixel_size_angstrom == 2.5
    assert g[np.array([0, 5])].n_tilts == 2
    assert g[3].n_tilts == 1


def test_repr_round_trips():
    g = TiltGeometry(
        tilt_angles_deg=[-10.0, 0.0, 12.5],
        detector_shape=(8, 9),
        pixel_size_angstrom=3.1,
        tilt_axis_angle_deg=85.0,
        shifts_px=[[0, 1], [0.5, 0], [0, -2]],
    )
    assert eval(repr(g), {"TiltGeometry": TiltGeometry, "np": np}) == g  # noqa: S307


def test_immutable():
    g = TiltGeometry.from_range(-10, 10, 10, (4, 4))
    with pytest.raises(Exception):
        g.pixel_size_angstrom = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        g.tilt_angles_deg[0] = 5.0


@pytest.mark.parametrize(
    ("angles", "match"),
    [
        ([0.0, 10.0, 10.0], "duplicate tilt angle"),
        ([0.0, 95.0], r"tilt_angles_deg\[1\] = 95.0 lies outside"),
        ([0.0, float("nan")], "not finite"),
        ([], "non-empty"),
    ],
)
def test_bad_angles(angles, match):
    with pytest.raises(ValueError, match=match):
        TiltGeometry(tilt_angles_deg=angles, detector_shape=(4, 4))


def test_bad_fields():
    with pytest.raises(ValueError, match="pixel_size_angstrom"):
        TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(4, 4), pixel_size_angstrom=0)
    with pytest.raises(ValueError, match="shifts_px must have shape"):
        TiltGeometry(tilt_angles_deg=[0.0, 1.0], detector_shape=(4, 4), shifts_px=[[0, 0]])
    with pytest.raises(ValueError, match="detector_shape"):
        TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(4,))
    with pytest.raises(ValueError, match="no tilt lies"):
        TiltGeometry.from_range(-10, 10, 5, (4, 4)).angle_range(20, 30)


def test_quarter_turn_swaps_aligned_shape():
    g = TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(10, 20), tilt_axis_angle_deg=90)
    assert g.quarter_turns == 1
    assert g.aligned_detector_shape == (20, 10)
    assert g.default_volume_shape(7) == (7, 20, 10)
    assert TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(10, 20), tilt_axis_angle_deg=30).quarter_turns is None


def _wedge_reference(shape, lo, hi):
    """Brute-force per-point evaluation of the documented wedge definition."""
    nz, ny, nx = shape
    out = np.zeros(shape, bool)
    for iz, kz in enumerate(np.fft.fftfreq(nz)):
        for ix, kx in enumerate(np.fft.fftfreq(nx)):
            if kz == 0 and kx == 0:
                continue
            a = np.degrees(np.arctan2(kz, kx))
            while a <= -90:
                a += 180
            while a > 90:
                a -= 180
            out[iz, :, ix] = a < lo or a > hi
    return out


@pytest.mark.parametrize("rng_deg", [(-60, 60), (-45, 60), (-70, 30)])
def test_missing_wedge_matches_definition(rng_deg):
    shape = (12, 5, 14)
    got = missing_wedge_mask(shape, rng_deg)
    np.testing.assert_array_equal(got, _wedge_reference(shape, *rng_deg))


def test_missing_wedge_fraction_and_variants():
    g = TiltGeometry.from_range(-60, 60, 2, (64, 64))
    m = g.missing_wedge_mask((64, 64, 64))
    # inside the Nyquist disc the wedge covers 60 of 180 degrees
    k = np.fft.fftfreq(64)
    disc = (k[:, None] ** 2 + k[None, :] ** 2) <= 0.25
    assert abs(m[:, 0, :][disc].mean() - 60 / 180) < 0.02
    # the tilt axis (ky) is always measured, so are points along kx
    assert not m[0, :, :].any()
    centered = g.missing_wedge_mask((64, 64, 64), centered=True)
    np.testing.assert_array_equal(np.fft.fftshift(m), centered)
    half = g.missing_wedge_mask((64, 64, 64), rfft=True)
    np.testing.assert_array_equal(half, m[..., : 64 // 2 + 1])
    # a ±90° series has no wedge
    assert not TiltGeometry.from_range(-90, 90, 1, (8, 8)).missing_wedge_mask((8, 8, 8)).any()


def test_angular_weights():
    w = angular_weights_rad(np.arange(-60, 61, 2.0))
    np.testing.assert_allclose(w, np.deg2rad(2.0))
    full = angular_weights_rad(np.arange(-90, 91, 1.0))
    assert np.isclose(full.sum(), np.pi)
    uneven = angular_weights_rad(np.array([10.0, 0.0, 4.0]))
    np.testing.assert_allclose(uneven, np.deg2rad([6.0, 4.0, 5.0]))


def test_equal_geometries_hash_equal():
    """__eq__ is tolerant (1e-6 on angles); equal objects must still hash equal."""
    # sums 0.000149995 and 0.000150005: a hash of the angle sum rounded to 4 decimals differs
    a = TiltGeometry(tilt_angles_deg=[-10.0, 0.00015 - 5e-9, 10.0], detector_shape=(8, 9))
    b = TiltGeometry(tilt_angles_deg=[-10.0, 0.00015 + 5e-9, 10.0], detector_shape=(8, 9))
    assert a == b and hash(a) == hash(b)
    rng = np.random.default_rng(3)
    for _ in range(50):
        angles = np.sort(rng.uniform(-60, 60, 11))
        kwargs = dict(detector_shape=(16, 20), pixel_size_angstrom=1.35, tilt_axis_angle_deg=85.3,
                      shifts_px=rng.normal(0, 1, (11, 2)))
        g = TiltGeometry(tilt_angles_deg=angles, **kwargs)
        h = TiltGeometry(tilt_angles_deg=angles + rng.uniform(-1e-8, 1e-8, 11), **kwargs)
        assert g == h and hash(g) == hash(h)
        assert {g: 1}[h] == 1
    # unequal geometries may share a hash, but equality still tells them apart
    c = TiltGeometry(tilt_angles_deg=[-10.0, 1.0, 10.0], detector_shape=(8, 9))
    assert c != a and len({a, b, c}) == 2


def test_nearest_quarter_turn():
    for axis, k in [(85.3, 1), (-85.3, 3), (94.0, 1), (176.0, 2), (-3.0, 0), (44.0, 0), (46.0, 1)]:
        g = TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(10, 20), tilt_axis_angle_deg=axis)
        assert g.nearest_quarter_turns == k
        assert g.quarter_turns is None
    # near ±90° the tilt-axis length comes from raw x, as at exactly 90°
    g = TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(10, 20), tilt_axis_angle_deg=85.3)
    assert g.aligned_detector_shape[0] >= 20


def test_equal_geometries_share_their_aligned_frame():
    """Equality never joins a quarter-turn axis with an off-quarter one (different frames)."""
    base = dict(tilt_angles_deg=[-30.0, 0.0, 30.0], detector_shape=(20, 30))
    exact = TiltGeometry(tilt_axis_angle_deg=90.0, **base)
    noisy = TiltGeometry(tilt_axis_angle_deg=90.0 + 1e-9, **base)  # rounding noise: snapped
    off = TiltGeometry(tilt_axis_angle_deg=90.0005, **base)  # a real, tiny rotation
    assert noisy == exact and noisy.quarter_turns == exact.quarter_turns == 1
    assert noisy.aligned_detector_shape == exact.aligned_detector_shape == (30, 20)
    assert off.quarter_turns is None and off.aligned_detector_shape != (30, 20)
    assert off != exact  # was equal (np.isclose) although the aligned frames differ
    assert TiltGeometry(tilt_axis_angle_deg=-1e-12, **base).tilt_axis_angle_deg == 0.0
