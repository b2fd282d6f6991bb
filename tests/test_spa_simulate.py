"""SPA simulator: exact projections, independent projection check, SNR, CTF, angular error,
class averages, seeding, STAR/MRC output and bad input (cryowedge.spa.simulate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryowedge.geometry.rotations import euler_zyz_to_matrix, rotate_volume
from cryowedge.io.mrc import read_mrc
from cryowedge.simulate.ctf import apply_ctf
from cryowedge.spa.basis import SIMULATION_BLOB
from cryowedge.spa.ctf_model import ctf_arrays
from cryowedge.spa.io import read_relion_particles
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.simulate import (
    fibonacci_templates,
    geodesic_distance_deg,
    load_density_source,
    simulate_spa,
    write_spa_simulation,
)

torch.set_num_threads(1)


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


def test_projections_equal_blob_projector_of_the_simulation_coefficients():
    sim = simulate_spa(
        box_size=12, n_particles=15, snr=None, keep_clean=True, seed=4, max_shift_px=1.5
    )
    assert sim.truth.shape == (12, 12, 12) and sim.truth.max() == pytest.approx(1.0)
    proj = SpaProjector(
        12,
        sim.true_rotations,
        np.array(sim.stack.shifts_px),
        blob=SIMULATION_BLOB,
        dtype=torch.float64,
    )
    ref = proj.forward(torch.as_tensor(sim.coefficients)).numpy()
    np.testing.assert_allclose(sim.clean_images, ref, atol=1e-6 * np.abs(ref).max())
    # no noise: the stack holds the clean images, with the true poses (no angular error)
    np.testing.assert_array_equal(sim.stack.images, sim.clean_images)
    np.testing.assert_allclose(sim.stack.rotations, sim.true_rotations)


@pytest.mark.parametrize("oversample", [1, 2])
def test_projections_agree_with_rotating_and_summing_the_truth(oversample):
    """An independent projector (rotate the truth volume, sum along z) sees the same images:
    pins the rotation convention and, for oversample 2, the fine-grid/binning offsets."""
    sim = simulate_spa(
        box_size=16, n_particles=6, snr=None, keep_clean=True, seed=1, oversample=oversample
    )
    for p in range(6):
        ref = rotate_volume(sim.truth, sim.true_rotations[p], order=3).sum(axis=0)
        assert _cc(ref, sim.clean_images[p]) > 0.999
        assert sim.clean_images[p].sum() == pytest.approx(ref.sum(), rel=0.02)


def test_seeded_and_independent_streams():
    a = simulate_spa(box_size=8, n_particles=10, seed=7)
    b = simulate_spa(box_size=8, n_particles=10, seed=7)
    c = simulate_spa(box_size=8, n_particles=10, seed=8)
    np.testing.assert_array_equal(a.stack.images, b.stack.images)
    assert not np.allclose(a.stack.images, c.stack.images)
    # changing the angular error leaves poses, images and noise unchanged
    d = simulate_spa(box_size=8, n_particles=10, seed=7, angular_error_variance_deg2=10.0)
    np.testing.assert_array_equal(a.stack.images, d.stack.images)
    np.testing.assert_array_equal(a.true_rotations, d.true_rotations)
    assert not np.allclose(a.stack.rotations, d.stack.rotations)


@pytest.mark.parametrize("per_image", [False, True])
def test_snr_as_requested(per_image):
    sim = simulate_spa(
        box_size=16, n_particles=40, snr=0.5, snr_per_image=per_image, keep_clean=True, seed=2
    )
    noise = sim.stack.images.astype(np.float64) - sim.clean_images
    if per_image:
        ratio = sim.clean_images.reshape(40, -1).var(axis=1) / noise.reshape(40, -1).var(axis=1)
        assert np.median(ratio) == pytest.approx(0.5, rel=0.05)
        assert np.ptp(sim.noise_sigma) > 0
    else:
        assert sim.clean_images.var() / noise.var() == pytest.approx(0.5, rel=0.03)
        assert np.ptp(sim.noise_sigma) == 0
    np.testing.assert_allclose(noise.std(axis=(1, 2)), sim.noise_sigma, rtol=0.15)


def test_ctf_applied_per_particle():
    plain = simulate_spa(box_size=16, n_particles=8, snr=None, keep_clean=True, seed=5)
    sim = simulate_spa(
        box_size=16,
        n_particles=8,
        snr=None,
        keep_clean=True,
        seed=5,
        ctf=True,
        defocus_range_angstrom=(8000.0, 20000.0),
        astigmatism_angstrom=500.0,
    )
    ctf = sim.stack.ctf
    assert ctf is not None and not sim.stack.inverted_contrast
    assert np.all((ctf.defocus_u_angstrom >= 8000) & (ctf.defocus_u_angstrom <= 20000))
    assert np.unique(ctf.defocus_u_angstrom).size == 8
    assert np.all(ctf.defocus_u_angstrom - ctf.defocus_v_angstrom <= 500.0)
    c = ctf_arrays(ctf, 16, sim.pixel_size_angstrom, rfft=True)
    for p in range(8):
        expected = apply_ctf(plain.clean_images[p], c[p])
        np.testing.assert_allclose(sim.clean_images[p], expected, atol=1e-5)
    # particle p's image is not filtered with another particle's CTF
    assert not np.allclose(sim.clean_images[0], apply_ctf(plain.clean_images[0], c[1]), atol=1e-3)


@pytest.mark.parametrize("distribution", ["uniform", "gaussian"])
def test_angular_error_has_the_requested_spread(distribution):
    var = 15.47  # thesis Fig. 4.2b
    sim = simulate_spa(
        box_size=8,
        n_particles=600,
        seed=3,
        angular_error_variance_deg2=var,
        angular_error_distribution=distribution,
    )
    pert = sim.angle_perturbation_deg
    assert pert.var() == pytest.approx(var, rel=0.1)
    assert abs(pert.mean()) < 0.3
    if distribution == "uniform":
        assert np.abs(pert).max() <= math.sqrt(3 * var) + 1e-12
    expected = euler_zyz_to_matrix(*(sim.true_angles_deg + pert).T)
    np.testing.assert_allclose(sim.stack.rotations, expected, atol=1e-9)
    np.testing.assert_allclose(
        sim.angular_error_deg, geodesic_distance_deg(sim.stack.rotations, sim.true_rotations)
    )
    assert 2.0 < np.median(sim.angular_error_deg) < 15.0


def test_class_averages():
    sim = simulate_spa(box_size=12, n_particles=60, snr=None, seed=6, n_classes=8, keep_clean=True)
    avg = sim.class_averages
    assert avg is not None and 1 <= avg.n_particles <= 8
    templates = fibonacci_templates(8)
    for j in range(avg.n_particles):
        assert np.min(geodesic_distance_deg(templates, avg.rotations[j])) < 1e-4
    np.testing.assert_array_equal(np.unique(sim.class_of_particle), np.arange(avg.n_particles))
    assert np.all(sim.class_error_deg > 0) and np.all(sim.class_error_deg < 120)
    # each particle joined the template nearest to its assigned projection direction
    dirs = sim.stack.rotations[:, 2, :]
    chosen = avg.rotations[sim.class_of_particle][:, 2, :]
    best = (dirs @ templates[:, 2, :].T).max(axis=1)
    np.testing.assert_allclose(np.sum(dirs * chosen, axis=1), best, atol=1e-9)
    # an average resembles the template's projection of the truth more than a random view's
    j = int(np.argmax(np.bincount(sim.class_of_particle)))
    ref = rotate_volume(sim.truth, avg.rotations[j], order=3).sum(axis=0)
    other = rotate_volume(sim.truth, sim.true_rotations[0], order=3).sum(axis=0)
    assert _cc(avg.images[j], ref) > max(0.8, _cc(other, ref))


def test_class_average_noise_is_the_mean_of_member_noises():
    clean = simulate_spa(box_size=12, n_particles=200, snr=None, seed=9, n_classes=4)
    noisy = simulate_spa(box_size=12, n_particles=200, snr=0.5, seed=9, n_classes=4)
    diff = noisy.class_averages.images - clean.class_averages.images
    counts = np.bincount(noisy.class_of_particle)
    expected = noisy.noise_sigma[0] / np.sqrt(counts)
    np.testing.assert_allclose(diff.std(axis=(1, 2)), expected, rtol=0.2)


def test_write_round_trip(tmp_path):
    sim = simulate_spa(
        box_size=10,
        n_particles=6,
        seed=1,
        ctf=True,
        angular_error_variance_deg2=4.0,
        max_shift_px=1.0,
    )
    paths = write_spa_simulation(sim, tmp_path)
    back = read_relion_particles(paths["star"])
    np.testing.assert_allclose(back.images, sim.stack.images)
    np.testing.assert_allclose(back.rotations, sim.stack.rotations, atol=1e-6)
    np.testing.assert_allclose(back.shifts_px, sim.stack.shifts_px, atol=1e-5)
    np.testing.assert_allclose(
        back.ctf.defocus_u_angstrom, sim.stack.ctf.defocus_u_angstrom, atol=1e-5
    )
    true = read_relion_particles(paths["star_true"])
    np.testing.assert_allclose(true.rotations, sim.true_rotations, atol=1e-6)
    truth = read_mrc(paths["truth"])
    np.testing.assert_allclose(truth.data, sim.truth)
    assert truth.voxel_size_angstrom[0] == pytest.approx(sim.pixel_size_angstrom, rel=1e-6)


def test_real_density_sources_when_available():
    try:
        src = load_density_source("emd_5170")
    except FileNotFoundError:
        pytest.skip("../shared/data is not available")
    assert src.volume.shape == (100, 100, 100) and src.pixel_size_angstrom == pytest.approx(2.38)
    sim = simulate_spa(src, box_size=12, n_particles=4, snr=None, seed=0)
    assert sim.truth.shape == (12, 12, 12) and np.isfinite(sim.stack.images).all()


def test_bad_input():
    with pytest.raises(ValueError, match="cubic"):
        simulate_spa(np.ones((8, 8, 9)), source_pixel_size_angstrom=1.0, box_size=8)
    with pytest.raises(ValueError, match="source_pixel_size_angstrom"):
        simulate_spa(np.ones((8, 8, 8)), box_size=8)
    with pytest.raises(ValueError, match="snr"):
        simulate_spa(box_size=8, n_particles=2, snr=-1.0)
    with pytest.raises(ValueError, match="angular_error_variance"):
        simulate_spa(box_size=8, n_particles=2, angular_error_variance_deg2=-1.0)
    with pytest.raises(ValueError, match="class averaging with a CTF"):
        simulate_spa(box_size=8, n_particles=2, ctf=True, n_classes=3)
    with pytest.raises(ValueError, match="n_particles"):
        simulate_spa(box_size=8, n_particles=0)
    with pytest.raises(ValueError, match="defocus_range"):
        simulate_spa(box_size=8, n_particles=2, ctf=True, defocus_range_angstrom=(2e4, 1e4))
