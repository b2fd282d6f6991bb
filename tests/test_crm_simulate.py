"""CRM simulators: data obey b_i = P_i(R_i(S h) + (1 − S_i) g_i), are seeded, noise at the SNR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_data
from scipy import ndimage

from cryowedge.crm.operator import rotation_about_y, y_rotation_deg
from cryowedge.crm.particles import read_particle_star
from cryowedge.crm.problem import sphere_support
from cryowedge.crm.simulate import (
    _project_slice,
    central_slice_particle,
    copy_orientations_2d,
    paper_tilt_angles,
    shepp_logan_particle,
    simulate_crm_2d,
    simulate_crm_3d,
    simulate_particle_tomogram,
    simulate_ribosome_2d,
    simulate_shepp_logan_2d,
    write_tomogram_simulation,
)
from cryowedge.geometry.rotations import rotate_volume
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import read_mrc
from cryowedge.io.tilt_files import read_tilt_angles
from cryowedge.operators.subvolume import extract_subvolumes
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.simulate.pdb import load_example_particle


def _project(volume: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """The project's projector at the microscope angles, float64: ``(T, ny, nx)``."""
    nz, ny, nx = volume.shape
    op = TiltProjector(TiltGeometry(angles, detector_shape=(ny, nx)), volume.shape)
    return op(torch.from_numpy(np.asarray(volume, dtype=np.float64))).numpy()


def _smooth_particle(size: int = 48) -> np.ndarray:
    """A blurred Shepp–Logan image with an off-centre blob: smooth (rotations of it interpolate
    well) and without mirror symmetry (so a wrong rotation direction shows)."""
    image = shepp_logan_particle(size, size // 2 + 6).astype(np.float64)
    c = size // 2
    z, x = np.ogrid[:size, :size]
    image += 1.5 * (((z - c - size // 8) ** 2 + (x - c + size // 6) ** 2) <= (size // 16) ** 2)
    return ndimage.gaussian_filter(image, 1.5)


# --------------------------------------------------------------------- the exact 2D projection
@pytest.mark.parametrize("size", [31, 32])
def test_project_slice_equals_projector_inside_90(size, rng):
    image = rng.standard_normal((size, size))
    angles = np.array([-89.0, -50.0, -3.5, 0.0, 17.0, 60.0, 90.0])
    expected = _project(image[:, None, :], angles)[:, 0, :]
    np.testing.assert_allclose(_project_slice(image, angles, size), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("size", [31, 32])
def test_project_slice_beyond_90_is_the_half_turned_object(size, rng):
    # A half turn about the centre pixel c = N // 2 maps index i to 2c − i; keep the indices
    # that would leave the grid (i = 0 for even N) empty so the turned image is exact.
    image = rng.standard_normal((size, size))
    image[0, :] = image[:, 0] = 0.0
    c = size // 2
    i = np.arange(size)
    src = np.clip(2 * c - i, 0, size - 1)
    turned = image[np.ix_(src, src)] * ((2 * c - i) < size)[:, None] * ((2 * c - i) < size)[None, :]
    angles = np.array([-40.0, 0.0, 25.0, 70.0])
    expected = _project(turned[:, None, :], angles)[:, 0, :]
    np.testing.assert_allclose(_project_slice(image, angles + 180.0, size), expected, atol=1e-10)
    np.testing.assert_allclose(_project_slice(image, angles - 180.0, size), expected, atol=1e-10)


# ----------------------------------------------------------------------------- the model
def test_exact_2d_data_are_the_rotated_copies_projected():
    sim = simulate_crm_2d(_smooth_particle(), 3, support_radius_px=17, background="blocks", rng=3)
    d = sim.data
    for i, copy in enumerate(d.copies):
        phi = sim.orientations_deg[i]
        assert y_rotation_deg(copy.rotation_xyz) == pytest.approx(phi)
        rotated = rotate_volume(sim.truth, copy.rotation_xyz, order=3)
        model = _project(rotated + sim.backgrounds[i], copy.tilt_angles_deg)
        wrong = _project(
            rotate_volume(sim.truth, rotation_about_y(-phi), order=3) + sim.backgrounds[i],
            copy.tilt_angles_deg,
        )
        scale = np.linalg.norm(sim.clean[i])
        err = np.linalg.norm(model - sim.clean[i]) / scale
        err_wrong = np.linalg.norm(wrong - sim.clean[i]) / scale
        # spline rotation of the pixel image vs exact rotated projection: ~1 % apart
        assert err < 0.02
        assert err_wrong > 5 * err


def test_linear_mode_is_exactly_the_discrete_model():
    sim2 = simulate_crm_2d(_smooth_particle(), 3, support_radius_px=17, rotation="linear", rng=0)
    sim3 = simulate_crm_3d(
        2, box_size=32, pixel_size_angstrom=4.0, rotation="linear", snr=None, rng=0
    )
    for sim in (sim2, sim3):
        for i, copy in enumerate(sim.data.copies):
            model = _project(sim.copy_volume(i), copy.tilt_angles_deg)
            scale = np.abs(sim.clean[i]).max()
            np.testing.assert_allclose(sim.clean[i], model, atol=1e-5 * scale)
            np.testing.assert_array_equal(sim.data.projections[i], sim.clean[i])


def test_exact_3d_copies_are_rotated_atoms():
    sim = simulate_crm_3d(2, box_size=32, pixel_size_angstrom=4.0, snr=None, rng=5)
    truth = sim.truth
    assert truth.max() == pytest.approx(1.0, abs=1e-6)
    for i, copy in enumerate(sim.data.copies):
        model = _project(sim.copy_volume(i), copy.tilt_angles_deg)  # trilinear rotation
        wrong_copy = rotate_volume(truth, copy.rotation_xyz.T) + sim.backgrounds[i]
        wrong = _project(wrong_copy, copy.tilt_angles_deg)
        err = np.abs(model - sim.clean[i]).max() / np.abs(sim.clean[i]).max()
        err_wrong = np.abs(wrong - sim.clean[i]).max() / np.abs(sim.clean[i]).max()
        assert err < 0.06, err  # re-rendered atoms vs trilinear rotation of the map
        assert err_wrong > 2 * err


def test_truth_support_and_backgrounds():
    sims = [
        simulate_crm_2d(_smooth_particle(), 3, support_radius_px=17, background=kind, rng=1)
        for kind in ("blocks", "noise", "discs")
    ]
    sims.append(simulate_crm_3d(3, box_size=32, pixel_size_angstrom=4.0, snr=None, rng=1))
    for sim in sims:
        support = sim.data.support
        assert np.all(sim.backgrounds[:, support] == 0)
        assert np.all(sim.truth[~support] == 0)
        outside = sim.backgrounds[:, ~support]
        assert np.all(outside.std(axis=1) > 0.03)  # a real stain around every copy
        assert not np.allclose(outside[0], outside[1])  # its own stain per copy
        assert sim.truth[support].max() > 0.5


def test_deterministic_for_a_seed():
    a = simulate_shepp_logan_2d(3, size=64, phantom_size=40, snr=5.0, rng=11)
    b = simulate_shepp_logan_2d(3, size=64, phantom_size=40, snr=5.0, rng=11)
    c = simulate_shepp_logan_2d(3, size=64, phantom_size=40, snr=5.0, rng=12)
    np.testing.assert_array_equal(a.data.projections, b.data.projections)
    np.testing.assert_array_equal(a.orientations_deg, b.orientations_deg)
    assert not np.allclose(a.data.projections, c.data.projections)
    d = simulate_crm_3d(2, box_size=32, pixel_size_angstrom=4.0, rng=4)
    e = simulate_crm_3d(2, box_size=32, pixel_size_angstrom=4.0, rng=4)
    np.testing.assert_array_equal(d.data.projections, e.data.projections)
    for c1, c2 in zip(d.data.copies, e.data.copies, strict=True):
        np.testing.assert_array_equal(c1.rotation_xyz, c2.rotation_xyz)


@pytest.mark.parametrize("snr", [1.0, 5.0, 10.0])
def test_noise_at_the_requested_snr(snr):
    sim = simulate_crm_2d(_smooth_particle(64), 4, support_radius_px=22, snr=snr, rng=2)
    noise = sim.data.projections.astype(np.float64) - sim.clean
    for i in range(4):
        measured = sim.clean[i].var() / noise[i].var()
        # 34 × 64 noise samples per copy: the variance is known to about 3 %
        assert measured == pytest.approx(snr, rel=0.12)
        assert noise[i].std() == pytest.approx(sim.noise_sigma[i], rel=0.06)
        assert sim.noise_sigma[i] ** 2 == pytest.approx(sim.clean[i].var() / snr, rel=1e-4)


def test_paper_schemes_and_orientations():
    angles = paper_tilt_angles(50, 3)
    assert angles.size == 34 and angles[0] == -50 and angles[-1] == 49
    assert paper_tilt_angles(50, 5).size == 21
    phi = copy_orientations_2d(7, rng=0)
    sector = 360.0 / 7
    m = np.floor((phi + 180.0) / sector)
    np.testing.assert_array_equal(np.sort(m), np.arange(7))  # one copy per sector
    sim = simulate_crm_2d(
        _smooth_particle(), 2, support_radius_px=17, orientations_deg=[30, -120], rng=0
    )
    for copy, p in zip(sim.data.copies, [30, -120], strict=True):
        np.testing.assert_allclose(copy.rotation_xyz, rotation_about_y(p), atol=1e-12)
        np.testing.assert_allclose(copy.tilt_angles_deg, angles)


def test_paper_defaults_shapes():
    sl = simulate_shepp_logan_2d(2, rng=0)
    assert sl.data.projections.shape == (2, 34, 1, 320)
    assert sl.data.volume_shape == (320, 1, 320) and sl.data.is_2d
    # the phantom fits its support: nothing of it is cut
    image = shepp_logan_particle(320, 200)
    assert np.abs(image[:, None, :] * ~sl.data.support).max() == 0


def test_central_slice_fills_the_support():
    density = load_example_particle(4.0)
    image = central_slice_particle(density, 80, 25.0)
    idx = np.argwhere(image > 0.05)
    extent = np.linalg.norm(idx - 40, axis=1).max()
    assert 0.85 * 25 < extent <= 25.0
    assert image.max() == pytest.approx(1.0)


def test_ribosome_data_set_from_shared_map():
    path = shared_data("aspire_70S_ribosome_65.mrc")
    sim = simulate_ribosome_2d(3, density=path, rng=0)
    assert sim.data.projections.shape == (3, 34, 1, 200)
    inside = sim.truth[sim.data.support]
    assert (inside > 0.05).mean() > 0.3  # a particle fills the radius-65 support


def test_bad_input():
    image = _smooth_particle()
    with pytest.raises(ValueError, match="rotation"):
        simulate_crm_2d(image, 2, support_radius_px=10, rotation="cubic")
    with pytest.raises(ValueError, match="snr"):
        simulate_crm_2d(image, 2, support_radius_px=10, snr=0)
    with pytest.raises(ValueError, match="n_copies"):
        simulate_crm_2d(image, 0, support_radius_px=10)
    with pytest.raises(ValueError, match="background"):
        simulate_crm_2d(image, 2, support_radius_px=10, background="bubbles")
    with pytest.raises(ValueError, match="orientations_deg"):
        simulate_crm_2d(image, 2, support_radius_px=10, orientations_deg=[1, 2, 3])
    with pytest.raises(ValueError, match="whole"):
        simulate_crm_2d(image, 2, support_radius_px=100)
    with pytest.raises(ValueError, match="support radius"):
        simulate_crm_3d(2, box_size=32, pixel_size_angstrom=4.0, support_radius_px=20)
    with pytest.raises(ValueError, match="tilt_angles_deg"):
        simulate_crm_2d(image, 2, support_radius_px=10, tilt_angles_deg=[-100, 0, 100])


def test_tomogram_simulation_written_and_read_back(tmp_path):
    sim = simulate_particle_tomogram(
        3, tomogram_shape=(32, 64, 64), box_size=28, pixel_size_angstrom=4.0, snr=2.0, rng=0
    )
    assert sim.tilt_series.shape == (41, 64, 64)
    paths = write_tomogram_simulation(sim, tmp_path)
    particles = read_particle_star(paths["particles"])
    np.testing.assert_allclose(particles.coordinates_xyz_px, sim.particles.coordinates_xyz_px)
    np.testing.assert_allclose(particles.rotations_xyz, sim.particles.rotations_xyz, atol=1e-5)
    np.testing.assert_allclose(read_tilt_angles(paths["angles"]), sim.geometry.tilt_angles_deg)
    stack = read_mrc(paths["tilt_series"])
    np.testing.assert_array_equal(stack.data, sim.tilt_series)
    assert stack.voxel_size_angstrom[-1] == pytest.approx(4.0)
    # each particle sits in the tomogram as the reference rotated by its R (on its support,
    # where the background was cleared)
    b = sim.box_size
    boxes = extract_subvolumes(
        torch.from_numpy(sim.tomogram), sim.particles.positions_zyx, (b, b, b)
    ).numpy()
    support = sphere_support((b, b, b), sim.support_radius_px)
    for box, rot in zip(boxes, sim.particles.rotations_xyz, strict=True):
        right = rotate_volume(sim.reference, rot)[support]
        wrong = rotate_volume(sim.reference, rot.T)[support]
        corr_right = np.corrcoef(box[support], right)[0, 1]
        assert corr_right > 0.97  # exact atoms vs the trilinear rotation of the reference
        assert corr_right > np.corrcoef(box[support], wrong)[0, 1] + 0.05


def test_data_agree_with_the_crm_operator():
    """The simulators and :class:`CRMOperator` are written independently; they must agree:
    linear data = the rotated operator at [truth, backgrounds] (2D and 3D), exact 2D data
    minus the background projections = the folded operator's particle part."""
    from cryowedge.crm.operator import CRMOperator

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    image = _smooth_particle()
    linear = simulate_crm_2d(image, 3, support_radius_px=17, rotation="linear", rng=0)
    linear3 = simulate_crm_3d(
        2, box_size=32, pixel_size_angstrom=4.0, snr=None, rotation="linear", rng=0
    )
    for sim in (linear, linear3):
        op = CRMOperator(sim.data.copies, sim.data.support, fold=False)
        x = np.concatenate([sim.truth[None], sim.backgrounds]).astype(np.float64)
        assert rel(op(torch.from_numpy(x)).numpy(), sim.clean) < 1e-6
    exact = simulate_crm_2d(image, 3, support_radius_px=17, rng=0)
    op = CRMOperator(exact.data.copies, exact.data.support)  # folded: no interpolation
    x = np.zeros((4, *exact.truth.shape))
    x[0] = exact.truth
    particle_part = op(torch.from_numpy(x)).numpy()
    backgrounds = np.stack(
        [
            _project(b, c.tilt_angles_deg)
            for b, c in zip(exact.backgrounds, exact.data.copies, strict=True)
        ]
    )
    assert rel(particle_part, exact.clean - backgrounds) < 1e-6


def test_exact_2d_data_lie_in_the_range_of_the_default_operator():
    """Copy-frame stains (the default) and particle-frame stains (the authors') are both held
    exactly by the operator of the data's own background frame: A [truth, g_1..g_N] = clean."""
    from cryowedge.crm.operator import CRMOperator

    image = _smooth_particle()
    for frame in ("copy", "particle"):
        sim = simulate_crm_2d(
            image, 3, support_radius_px=17, background_frame=frame, rng=2, orientations="even"
        )
        assert sim.data.background_frame == frame
        op = CRMOperator.from_data(sim.data)
        assert op.background_frame == frame and op.folded
        x = np.concatenate([sim.truth[None], sim.backgrounds]).astype(np.float64)
        got = op(torch.from_numpy(x)).numpy()
        assert np.abs(got - sim.clean).max() < 1e-5 * np.abs(sim.clean).max(), frame
    # the wrong frame does not hold a box-filling copy-frame stain
    sim = simulate_crm_2d(image, 3, support_radius_px=17, rng=2)
    wrong = CRMOperator.from_data(sim.data, background_frame="particle")
    x = np.concatenate([sim.truth[None], sim.backgrounds]).astype(np.float64)
    got = wrong(torch.from_numpy(x)).numpy()
    assert np.linalg.norm(got - sim.clean) > 0.05 * np.linalg.norm(sim.clean)


def test_even_orientations_and_the_authors_stain():
    phi = copy_orientations_2d(7, 3, spacing="even")
    gaps = np.mod(np.diff(np.sort(phi)), 360.0)
    np.testing.assert_allclose(gaps, 360.0 / 7, atol=1e-9)
    assert np.all((phi >= -180.0) & (phi < 180.0))
    np.testing.assert_array_equal(phi, copy_orientations_2d(7, 3, spacing="even"))
    with pytest.raises(ValueError, match="spacing"):
        copy_orientations_2d(3, 0, spacing="random")

    image = _smooth_particle()
    sim = simulate_crm_2d(image, 4, support_radius_px=17, background="authors", rng=1)
    bg = sim.backgrounds[:, :, 0, :]
    inside = sim.data.support[:, 0, :]
    assert np.all(bg[:, inside] == 0)  # zero on the support
    # the particle image's mean and std outside, smoothed (σ 0.8 px shrinks the std)
    out = bg[
        :, ~inside & (np.abs(np.arange(48) - 24)[:, None] < 20) & (np.abs(np.arange(48) - 24) < 20)
    ]
    assert abs(out.mean() - image.mean()) < 0.15 * image.mean()
    assert 0.2 * image.std() < out.std() < 0.8 * image.std()


def test_image_domain_noise_and_bad_combinations():
    image = _smooth_particle()
    clean = simulate_crm_2d(image, 2, support_radius_px=17, background_frame="particle", rng=4)
    noisy = simulate_crm_2d(
        image,
        2,
        support_radius_px=17,
        background_frame="particle",
        snr=2.0,
        noise_domain="image",
        rng=4,
    )
    np.testing.assert_allclose(noisy.backgrounds, clean.backgrounds)  # same stains
    stained = clean.truth[:, 0, :] + clean.backgrounds[:, :, 0, :]
    expected = np.array([s.std() for s in stained]) / np.sqrt(2.0)
    np.testing.assert_allclose(noisy.noise_sigma, expected, rtol=1e-6)
    diff = noisy.data.projections - clean.data.projections
    assert np.linalg.norm(diff) > 0.01 * np.linalg.norm(clean.data.projections)
    with pytest.raises(ValueError, match="background_frame='particle'"):
        simulate_crm_2d(image, 2, support_radius_px=17, snr=2.0, noise_domain="image")
    with pytest.raises(ValueError, match="rotation='exact'"):
        simulate_crm_2d(
            image, 2, support_radius_px=17, background_frame="particle", rotation="linear"
        )
    with pytest.raises(ValueError, match="orientations"):
        simulate_crm_2d(image, 2, support_radius_px=17, orientations="random")
