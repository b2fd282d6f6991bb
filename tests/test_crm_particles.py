"""Real-use CRM input: STAR particle lists and per-particle sub-tilt-series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from cryowedge.crm.particles import (
    ParticleList,
    extract_subtilt_series,
    particle_projection_centres,
    read_particle_star,
    write_particle_star,
)
from cryowedge.geometry.rotations import euler_zyz_to_matrix, random_rotations, rotate_volume
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.subvolume import extract_subvolumes, insert_subvolumes
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp
from cryowedge.simulate.phantoms import gaussian_blob_particle


def _blobs(shape, centres_xyz, sigma=1.2):
    """``(z, y, x)`` volume of Gaussian blobs at ``(x, y, z)`` voxel centres."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    out = np.zeros(shape)
    for cx, cy, cz in centres_xyz:
        out += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
    return out


def _project(volume, geometry):
    return TiltProjector(geometry, volume.shape)(torch.from_numpy(volume)).numpy()


def _centroids(patches):
    """``(..., 2)`` intensity centroids ``(row, col)`` of ``(..., b, b)`` patches."""
    b = patches.shape[-1]
    jj, ii = np.meshgrid(np.arange(b), np.arange(b), indexing="ij")
    total = patches.sum(axis=(-1, -2))
    return np.stack(
        [(patches * jj).sum(axis=(-1, -2)) / total, (patches * ii).sum(axis=(-1, -2)) / total],
        axis=-1,
    )


# ----------------------------------------------------------------------------- STAR files
def test_star_round_trip(tmp_path, rng):
    particles = ParticleList(
        rng.uniform(0, 100, (5, 3)),
        np.column_stack(
            [rng.uniform(-180, 180, 5), rng.uniform(0, 180, 5), rng.uniform(-180, 180, 5)]
        ),
        ("TS_01",) * 3 + ("TS_02",) * 2,
    )
    path = write_particle_star(tmp_path / "p.star", particles)
    back = read_particle_star(path)
    np.testing.assert_allclose(back.coordinates_xyz_px, particles.coordinates_xyz_px, atol=1e-6)
    np.testing.assert_allclose(back.angles_deg, particles.angles_deg, atol=1e-6)
    assert back.tomo_names == particles.tomo_names
    np.testing.assert_allclose(back.rotations_xyz, particles.rotations_xyz, atol=1e-7)
    second, idx = back.select("TS_02")
    assert second.n == 2 and idx.tolist() == [3, 4]
    # rotations survive the Euler-angle round trip
    rots = random_rotations(4, rng)
    from_rot = ParticleList.from_rotations(np.zeros((4, 3)), rots)
    np.testing.assert_allclose(from_rot.rotations_xyz, rots, atol=1e-12)


def test_star_relion31_blocks_origins_and_one_based(tmp_path):
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [2.0]})
    table = pd.DataFrame(
        {
            "rlnMicrographName": ["a", "a"],
            "rlnCoordinateX": [11.0, 21.0],
            "rlnCoordinateY": [31.0, 41.0],
            "rlnCoordinateZ": [5.0, 6.0],
            "rlnAngleRot": [10.0, 0.0],
            "rlnAngleTilt": [20.0, 0.0],
            "rlnAnglePsi": [30.0, 0.0],
            "rlnOriginXAngst": [4.0, 0.0],
            "rlnOriginYAngst": [0.0, -2.0],
            "rlnOriginZAngst": [0.0, 0.0],
        }
    )
    path = tmp_path / "relion.star"
    starfile.write({"optics": optics, "particles": table}, path)
    with pytest.raises(ValueError, match="pixel_size_angstrom"):
        read_particle_star(path)
    p = read_particle_star(path, pixel_size_angstrom=2.0, coordinate_origin_px=1)
    # centre = coordinate − 1 − origin / pixel size
    np.testing.assert_allclose(p.coordinates_xyz_px, [[8.0, 30.0, 4.0], [20.0, 41.0, 5.0]])
    assert p.tomo_names == ("a", "a")
    np.testing.assert_allclose(p.rotations_xyz[0], euler_zyz_to_matrix(10, 20, 30))


def test_star_errors(tmp_path):
    path = tmp_path / "bad.star"
    starfile.write(
        pd.DataFrame({"rlnCoordinateX": [1.0], "rlnCoordinateY": [2.0], "rlnAngleRot": [0.0]}), path
    )
    with pytest.raises(ValueError, match="rlnCoordinateZ, rlnAngleTilt, rlnAnglePsi"):
        read_particle_star(path)
    sub = pd.DataFrame(
        {c: [1.0] for c in ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")}
        | {c: [0.0] for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")}
        | {"rlnTomoSubtomogramTilt": [90.0]}
    )
    starfile.write(sub, path, overwrite=True)
    with pytest.raises(ValueError, match="rlnTomoSubtomogramTilt"):
        read_particle_star(path)
    text = pd.DataFrame(
        {c: ["x1"] for c in ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")}
        | {c: [0.0] for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")}
    )
    starfile.write(text, path, overwrite=True)
    with pytest.raises(ValueError, match="rlnCoordinateX of particle 0"):
        read_particle_star(path)
    with pytest.raises(FileNotFoundError):
        read_particle_star(tmp_path / "missing.star")


# ----------------------------------------------------------------------------- projected centres
GEOMETRIES = {
    "aligned": dict(detector_shape=(40, 48)),
    "axis -90, sub-pixel shifts": dict(detector_shape=(48, 40), tilt_axis_angle_deg=-90.0),
    "axis 85, sub-pixel shifts": dict(detector_shape=(50, 40), tilt_axis_angle_deg=85.0),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_patch_is_centred_on_the_projected_particle(name):
    geometry = TiltGeometry.from_range(-60, 60, 4, **GEOMETRIES[name])
    if name != "aligned":
        shifts = np.random.default_rng(0).uniform(-1.5, 1.5, (geometry.n_tilts, 2))
        geometry = geometry.with_(shifts_px=shifts)
    n_axis, _ = geometry.aligned_detector_shape
    shape = (24, n_axis, 48)
    centres = np.array([[30.3, 12.6, 14.2], [17.0, 27.0, 8.0]])  # (x, y, z), fractional
    series = _project(_blobs(shape, centres), geometry)
    data = extract_subtilt_series(
        series, geometry, ParticleList(centres, np.zeros((2, 3))), tomogram_shape=shape, box_size=12
    )
    assert data.projections.shape == (2, geometry.n_tilts, 12, 12)
    offset = np.abs(_centroids(data.projections) - 6.0).max()
    # exact for quarter-turn axes (bilinear sampling of a smooth blob keeps its centroid);
    # the 85° axis is resampled twice (the projector's warp, then the patch)
    assert offset < (0.02 if name == "axis 85, sub-pixel shifts" else 1e-3), offset
    # the predicted raw-image centres are where the blobs' projections are
    raw = particle_projection_centres(centres, geometry, shape)  # (2, T, 2)
    for t in (0, geometry.n_tilts // 2):
        for k in range(2):
            y0, x0 = np.round(raw[k, t]).astype(int)
            win = series[t, y0 - 5 : y0 + 6, x0 - 5 : x0 + 6]
            found = _centroids(win) + np.array([y0 - 5, x0 - 5])
            assert np.abs(found - raw[k, t]).max() < 0.02


def test_patches_are_the_projection_of_the_particle_box():
    rng = np.random.default_rng(3)
    shape = (24, 40, 48)
    geometry = TiltGeometry.from_range(-60, 60, 3, detector_shape=shape[1:])
    centre = np.array([[25.0, 19.0, 13.0]])  # (x, y, z)
    box = 16
    tomogram = np.zeros(shape)
    content = rng.uniform(0, 1, (10, 10, 10))
    tomogram[8:18, 14:24, 20:30] = content  # inside the particle's 16³ box
    data = extract_subtilt_series(
        _project(tomogram, geometry),
        geometry,
        ParticleList(centre, np.zeros((1, 3))),
        tomogram_shape=shape,
        box_size=box,
    )
    sub = extract_subvolumes(torch.from_numpy(tomogram), centre[:, ::-1].copy(), (box,) * 3)[0]
    expected = _project(
        sub.numpy(), TiltGeometry(geometry.tilt_angles_deg, detector_shape=(box, box))
    )
    got = data.projections[0]
    zero = int(np.argmin(np.abs(geometry.tilt_angles_deg)))
    np.testing.assert_allclose(got[zero], expected[zero], atol=1e-5)  # integer centre at 0°
    # other tilts: the full projection resampled at a sub-pixel centre vs the box projected
    rel = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert rel < 0.08, rel


# ----------------------------------------------------------------------------- end to end
def test_end_to_end_star_to_particle_frame(tmp_path):
    """Particles inserted at known places/orientations, projected, listed in a STAR file,
    extracted and reconstructed: un-rotating each copy by Rᵀ gives the reference back.

    A full tilt range keeps the copies' FBPs close to the truth, so the orientation is what
    the correlations measure (with a ±60° wedge right/wrong differ by only ~0.05)."""
    rng = np.random.default_rng(7)
    particle = gaussian_blob_particle(20).astype(np.float64)  # chiral
    box = 24
    reference = np.zeros((box,) * 3)
    reference[2:22, 2:22, 2:22] = particle
    shape = (40, 64, 64)
    centres_zyx = np.array([[20.0, 18.0, 20.0], [18.0, 44.0, 42.0], [22.0, 20.0, 44.0]])
    rots = random_rotations(3, rng)
    rotated = np.stack([rotate_volume(reference, r) for r in rots])
    tomogram = insert_subvolumes(torch.from_numpy(rotated), centres_zyx, shape).numpy()
    geometry = TiltGeometry.from_range(-90, 88, 2, detector_shape=shape[1:])
    series = _project(tomogram, geometry)
    star = write_particle_star(
        tmp_path / "particles.star",
        ParticleList.from_rotations(centres_zyx[:, ::-1], rots, ["tomo"] * 3),
    )
    data = extract_subtilt_series(
        series,
        geometry,
        read_particle_star(star),
        tomogram_shape=shape,
        box_size=box,
        tomo_name="tomo",
    )
    assert data.names == ["tomo:0", "tomo:1", "tomo:2"]
    assert data.support.shape == (box, box, box)
    copy_geometry = TiltGeometry(geometry.tilt_angles_deg, detector_shape=(box, box))
    support = data.support
    for i, copy in enumerate(data.copies):
        np.testing.assert_allclose(copy.rotation_xyz, rots[i], atol=1e-5)
        rec = fbp(data.projections[i], copy_geometry, volume_shape=(box,) * 3, filter_name="hann")
        rec = rec.numpy()
        back = rotate_volume(rec, copy.rotation_xyz.T)[support]
        wrong = rotate_volume(rec, copy.rotation_xyz)[support]
        corr = np.corrcoef(back, reference[support])[0, 1]
        corr_wrong = np.corrcoef(wrong, reference[support])[0, 1]
        assert corr > 0.97, corr  # measured 0.989-0.990
        assert corr > corr_wrong + 0.05, (corr, corr_wrong)  # wrong direction: 0.89-0.90


# ----------------------------------------------------------------------------- bad input
def test_extraction_errors():
    shape = (32, 40, 48)
    geometry = TiltGeometry.from_range(-60, 60, 4, detector_shape=shape[1:])
    series = np.zeros(geometry.tilt_series_shape, dtype=np.float32)
    good = ParticleList([[24.0, 20.0, 16.0]], np.zeros((1, 3)))

    def run(particles=good, **kw):
        args = dict(tomogram_shape=shape, box_size=16)
        args.update(kw)
        return extract_subtilt_series(series, geometry, particles, **args)

    assert run().projections.shape == (1, geometry.n_tilts, 16, 16)
    for bad_box in (0, 1, 12.5, True):
        with pytest.raises(ValueError, match="box_size"):
            run(box_size=bad_box)
    with pytest.raises(ValueError, match="at most 40"):
        run(box_size=41)
    with pytest.raises(ValueError, match="nz, 40, nx"):
        run(tomogram_shape=(32, 41, 48))
    with pytest.raises(ValueError, match="geometry expects"):
        extract_subtilt_series(series[1:], geometry, good, tomogram_shape=shape, box_size=16)
    # a box across the tomogram's x edge: named with its index and coordinates
    edge = ParticleList([[24.0, 20.0, 16.0], [3.0, 20.0, 16.0]], np.zeros((2, 3)))
    with pytest.raises(
        ValueError, match=r"particle 1 at \(x, y, z\) = \(3.0, 20.0, 16.0\).*tomogram"
    ):
        run(edge)
    # inside the tomogram, but high up and near the side: leaves the detector at high tilt
    high = ParticleList([[40.0, 20.0, 30.0]], np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"particle 0 .*detector on tilt \d+ \(\+"):
        run(high)
    kept = run(
        ParticleList([[24.0, 20.0, 16.0], [40.0, 20.0, 30.0]], np.zeros((2, 3))), drop_outside=True
    )
    assert kept.n_copies == 1 and kept.names == ["tomogram:0"]
    two = ParticleList(np.tile(good.coordinates_xyz_px, (2, 1)), np.zeros((2, 3)), ("a", "b"))
    with pytest.raises(ValueError, match="tomo_name"):
        run(two)
    assert run(two, tomo_name="b").names == ["b:1"]
    with pytest.raises(ValueError, match="no particle of tomogram"):
        run(two, tomo_name="c")
    with pytest.raises(ValueError, match="interpolation_order"):
        run(interpolation_order=2)
    assert run(interpolation_order=3).projections.shape == (1, geometry.n_tilts, 16, 16)
    with pytest.raises(ValueError, match="coordinates_xyz_px"):
        ParticleList(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not a finite number"):
        ParticleList([[np.nan, 0, 0]], np.zeros((1, 3)))
