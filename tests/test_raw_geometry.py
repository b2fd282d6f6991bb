"""Raw (un-rotated) detector geometry: off-quarter tilt axes keep every raw pixel.

A SerialEM ``.mdoc`` typically gives a tilt-axis angle near ±90° (85.3° in
tests/data/synthetic_tilt.mdoc). The aligned detector must then take its tilt-axis length
from raw ``x`` and be large enough to hold the rotated raw detector, and a raw stack must
reconstruct to the same tomogram as the same data pre-rotated into an aligned stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_DATA
from scipy import ndimage

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_files import read_mdoc
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.operators.detector import DetectorWarp, build_warp_matrix
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp
from cryowedge.simulate.tilt_series import project_volume
from cryowedge.solvers.algebraic import sirt

MDOC_AXIS_DEG = 85.3  # tests/data/synthetic_tilt.mdoc


def _lost_raw_pixels(geom: TiltGeometry) -> int:
    """Raw pixels whose bilinear weights do not all land on the aligned detector."""
    warp = DetectorWarp(geom)
    ones = torch.ones(warp.domain_shape, dtype=torch.float64)
    covered = warp(ones)  # 1 where all four neighbours are inside, less where some are not
    return int((covered < 1.0 - 1e-9).sum())


def test_mdoc_axis_swaps_and_keeps_every_raw_pixel():
    axis = read_mdoc(TEST_DATA / "synthetic_tilt.mdoc").tilt_axis_angle_deg
    assert axis == MDOC_AXIS_DEG
    ny, nx = 48, 80
    geom = TiltGeometry.from_range(-60, 60, 20, (ny, nx), tilt_axis_angle_deg=axis)
    assert geom.quarter_turns is None and geom.nearest_quarter_turns == 1
    n_axis, n_perp = geom.aligned_detector_shape
    # The axis lies nearest raw X: the volume's y size comes from nx (the long side), and
    # both aligned sizes grow a little to hold the rotated detector.
    assert nx <= n_axis <= nx + 8 and ny <= n_perp <= ny + 10
    assert geom.default_volume_shape() == (n_perp, n_axis, n_perp)
    assert _lost_raw_pixels(geom) == 0  # before the fix: about half of the raw pixels


@pytest.mark.parametrize("axis", [85.3, -85.3, 94.0, 175.0, -3.0, 0.5, 30.0, 45.0, 60.0, -135.0])
@pytest.mark.parametrize("shape", [(20, 33), (31, 16), (17, 17)])
def test_no_raw_pixel_lost_at_any_axis(axis, shape):
    geom = TiltGeometry(tilt_angles_deg=[0.0, 30.0], detector_shape=shape, tilt_axis_angle_deg=axis)
    assert _lost_raw_pixels(geom) == 0
    # and the aligned detector is the smallest that does so: one pixel less loses some
    nv, nu = geom.aligned_detector_shape
    cos_p, sin_p = geom.tilt_axis_cos_sin
    ry, rx = np.mgrid[: shape[0], : shape[1]]
    ry, rx = ry - shape[0] // 2, rx - shape[1] // 2
    al_y = -sin_p * rx + cos_p * ry
    al_x = cos_p * rx + sin_p * ry
    for n, coords in ((nv, al_y), (nu, al_x)):
        assert coords.min() >= -(n // 2) - 1e-9 and coords.max() <= n - 1 - n // 2 + 1e-9
        m = n - 1
        assert coords.min() < -(m // 2) - 1e-9 or coords.max() > m - 1 - m // 2 + 1e-9


@pytest.mark.parametrize(
    ("axis", "swapped"), [(0, False), (90, True), (-90, True), (180, False), (270, True)]
)
def test_quarter_turns_stay_exact_permutations(axis, swapped):
    ny, nx = 9, 14
    geom = TiltGeometry(
        tilt_angles_deg=[0.0, 20.0], detector_shape=(ny, nx), tilt_axis_angle_deg=axis
    )
    assert geom.aligned_detector_shape == ((nx, ny) if swapped else (ny, nx))
    m = build_warp_matrix(geom)
    assert set(np.unique(m.data).tolist()) <= {1.0}  # every weight is exactly 1
    assert (np.diff(m.indptr) <= 1).all()  # at most one source per raw pixel


def _reference_warp_matrix(geom: TiltGeometry) -> np.ndarray:
    """Dense bilinear warp, one raw pixel at a time (the documented definition)."""
    ny, nx = geom.detector_shape
    nv, nu = geom.aligned_detector_shape
    c, s = geom.tilt_axis_cos_sin
    shifts = np.zeros((geom.n_tilts, 2)) if geom.shifts_px is None else geom.shifts_px
    out = np.zeros((geom.n_tilts * ny * nx, geom.n_tilts * nv * nu))
    for t in range(geom.n_tilts):
        for i in range(ny):
            for j in range(nx):
                ry, rx = i - ny // 2 - shifts[t, 0], j - nx // 2 - shifts[t, 1]
                ay, ax = -s * rx + c * ry + nv // 2, c * rx + s * ry + nu // 2
                i0, j0 = int(np.floor(ay)), int(np.floor(ax))
                for ii, wy in ((i0, 1 - (ay - i0)), (i0 + 1, ay - i0)):
                    for jj, wx in ((j0, 1 - (ax - j0)), (j0 + 1, ax - j0)):
                        if 0 <= ii < nv and 0 <= jj < nu:
                            out[(t * ny + i) * nx + j, (t * nv + ii) * nu + jj] += wy * wx
    return out


@pytest.mark.parametrize("shifts", [None, [[0.3, -1.2], [0.0, 0.0], [2.5, 0.7]]])
@pytest.mark.parametrize("axis", [MDOC_AXIS_DEG, -20.0])
def test_vectorised_warp_matches_pixelwise_definition(axis, shifts):
    geom = TiltGeometry(
        tilt_angles_deg=[-30.0, 0.0, 40.0],
        detector_shape=(7, 10),
        tilt_axis_angle_deg=axis,
        shifts_px=shifts,
    )
    m = build_warp_matrix(geom)
    m.check_format(full_check=True)
    np.testing.assert_allclose(m.toarray(), _reference_warp_matrix(geom), atol=1e-12)


# ----------------------------------------------------------------------------- end to end


RAW_SHAPE = (40, 56)  # rectangular raw camera (ny != nx); the axis lies along raw x
REFERENCE_DETECTOR = (72, 64)  # aligned reference stack, larger than the rotated raw camera
THICKNESS = 24
#: Centred (z, y, x) half-sizes of the compared box: holds every blob, lies inside the raw
#: camera's field at every tilt, and is longer along y than the raw camera's ny.
BOX = (6, 22, 14)


def _phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth, compact blobs (σ 1.8–2.5 px), spread along the tilt axis to |y| = 19."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(
        np.arange(nz) - nz // 2, np.arange(ny) - ny // 2, np.arange(nx) - nx // 2, indexing="ij"
    )
    blobs = [  # (z, y, x, sigma, amplitude)
        (0, 0, 0, 2.5, 1.0),
        (3, -19, 6, 2.0, 0.8),
        (-3, 18, -7, 1.8, 1.2),
        (2, 8, 5, 2.2, -0.5),
        (-2, -9, -4, 2.0, 0.6),
    ]
    vol = np.zeros(shape)
    for bz, by, bx, sigma, amp in blobs:
        vol += amp * np.exp(-((z - bz) ** 2 + (y - by) ** 2 + (x - bx) ** 2) / (2 * sigma**2))
    return vol.astype(np.float32)


def _rotate_to_raw(aligned: np.ndarray, axis_deg: float, raw_shape: tuple[int, int]) -> np.ndarray:
    """Raw images from aligned ones, by cubic-spline resampling (scipy, not DetectorWarp).

    Raw pixel (r, c), centred (ry, rx), samples the aligned image at ``R(-φ)·(ry, rx)``,
    i.e. the aligned image rotated counter-clockwise by φ (docs/conventions.md).
    """
    ny, nx = raw_shape
    nv, nu = aligned.shape[1:]
    c, s = np.cos(np.deg2rad(axis_deg)), np.sin(np.deg2rad(axis_deg))
    matrix = np.array([[c, -s], [s, c]])  # (row, col) of aligned from (row, col) of raw
    offset = np.array([nv // 2, nu // 2]) - matrix @ np.array([ny // 2, nx // 2])
    return np.stack(
        [
            ndimage.affine_transform(
                img.astype(np.float64), matrix, offset, (ny, nx), order=3, cval=0.0
            )
            for img in aligned
        ]
    ).astype(np.float32)


def _write_mdoc(path: Path, angles: np.ndarray) -> None:
    """An mdoc with the header (tilt-axis title) of tests/data/synthetic_tilt.mdoc."""
    text = (TEST_DATA / "synthetic_tilt.mdoc").read_text()
    header = text[: text.index("[ZValue")]
    sections = "".join(
        f"[ZValue = {i}]\nTiltAngle = {a:.2f}\nPixelSpacing = 1.35\n\n"
        for i, a in enumerate(angles)
    )
    path.write_text(header + sections)


def _box(volume: torch.Tensor) -> np.ndarray:
    """The centred BOX of a ``(z, y, x)`` volume (centre voxel N // 2)."""
    shape = tuple(volume.shape)
    assert all(n // 2 >= h and n - 1 - n // 2 >= h for n, h in zip(shape, BOX)), (
        f"volume {shape} does not hold the compared box ±{BOX}"
    )
    return volume[tuple(slice(n // 2 - h, n // 2 + h + 1) for n, h in zip(shape, BOX))].numpy()


def _box_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(_box(a).ravel(), _box(b).ravel())[0, 1])


@pytest.fixture(scope="module")
def raw_and_aligned(tmp_path_factory):
    """A raw stack at 85.3° read back through an mdoc, and the aligned stack it came from."""
    angles = np.arange(-60.0, 60.1, 3.0)
    aligned_geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=REFERENCE_DETECTOR)
    aligned = project_volume(_phantom((THICKNESS, *REFERENCE_DETECTOR)), aligned_geom, oversample=2)
    raw = _rotate_to_raw(aligned, MDOC_AXIS_DEG, RAW_SHAPE)
    folder = tmp_path_factory.mktemp("raw")
    write_mrc(folder / "TS_01.mrc", raw, voxel_size_angstrom=1.35, image_stack=True)
    _write_mdoc(folder / "TS_01.mdoc", angles)
    series = load_tilt_series(folder / "TS_01.mrc", folder / "TS_01.mdoc")
    return series, aligned, aligned_geom


def test_raw_series_from_mdoc_has_the_right_geometry(raw_and_aligned):
    series, _, _ = raw_and_aligned
    g = series.geometry
    assert g.tilt_axis_angle_deg == MDOC_AXIS_DEG
    assert g.detector_shape == RAW_SHAPE
    nz, ny, nx = g.default_volume_shape(THICKNESS)
    assert RAW_SHAPE[1] <= ny <= RAW_SHAPE[1] + 6  # y (tilt axis) comes from raw x ...
    assert RAW_SHAPE[0] <= nx <= RAW_SHAPE[0] + 8  # ... and x from raw y
    assert _lost_raw_pixels(g) == 0


def test_raw_fbp_matches_aligned_fbp(raw_and_aligned):
    series, aligned, aligned_geom = raw_and_aligned
    raw_shape = series.geometry.default_volume_shape(THICKNESS)
    from_raw = fbp(series.data, series.geometry, volume_shape=raw_shape)
    from_aligned = fbp(aligned, aligned_geom, volume_shape=(THICKNESS, *REFERENCE_DETECTOR))
    assert _box_correlation(from_raw, from_aligned) >= 0.99


def test_raw_sirt_matches_aligned_sirt(raw_and_aligned):
    series, aligned, aligned_geom = raw_and_aligned
    raw_op = TiltProjector(series.geometry, series.geometry.default_volume_shape(THICKNESS))
    aligned_op = TiltProjector(aligned_geom, (THICKNESS, *REFERENCE_DETECTOR))
    from_raw = sirt(raw_op, series.data, n_iter=10).x
    from_aligned = sirt(aligned_op, aligned, n_iter=10).x
    assert _box_correlation(from_raw, from_aligned) >= 0.99


# ----------------------------------------------------------------------------- bad input


def test_volume_larger_than_detector_is_refused():
    geom = TiltGeometry.from_range(-60, 60, 30, (40, 56), tilt_axis_angle_deg=MDOC_AXIS_DEG)
    n_axis, n_perp = geom.aligned_detector_shape
    match = rf"volume y size {n_axis + 10} must equal .*\({n_axis} px"
    with pytest.raises(ValueError, match=match) as err:
        TiltProjector(geom, volume_shape=(16, n_axis + 10, n_perp))
    assert "\n" not in str(err.value)
    for bad in (0, -5, 2.5):
        match = rf"thickness must be a positive whole number.*got {bad}"
        with pytest.raises(ValueError, match=match) as err:
            geom.default_volume_shape(bad)
        assert "\n" not in str(err.value)
    assert geom.default_volume_shape(12) == (12, n_axis, n_perp)


@pytest.mark.parametrize("axis", [float("nan"), float("inf"), "north"])
def test_non_finite_tilt_axis_is_refused(axis):
    match = r"tilt_axis_angle_deg must be a finite angle in degrees"
    with pytest.raises(ValueError, match=match) as err:
        TiltGeometry(tilt_angles_deg=[0.0, 10.0], detector_shape=(8, 8), tilt_axis_angle_deg=axis)
    assert "\n" not in str(err.value)
