"""Per-particle CTFs and CTF correction of particle stacks (cryowedge.spa.ctf_model)."""

from __future__ import annotations

import numpy as np
import pytest

from cryowedge.simulate.ctf import apply_ctf, ctf_2d
from cryowedge.spa.ctf_model import (
    aperture_mask,
    correct_ctf,
    ctf_arrays,
    effective_ctf,
    stack_ctfs,
    wiener_filter,
)
from cryowedge.spa.particles import CTFParams, ParticleStack

PX = 1.5  # Å/pixel


def _params() -> CTFParams:
    return CTFParams(
        defocus_u_angstrom=[12000.0, 20000.0, 15000.0],
        defocus_v_angstrom=[10000.0, 19000.0, 15000.0],
        astigmatism_angle_deg=[30.0, -60.0, 0.0],
        voltage_kv=[300.0, 200.0, 300.0],
        spherical_aberration_mm=[2.7, 2.0, 0.01],
        amplitude_contrast=[0.07, 0.1, 0.2],
        b_factor_angstrom2=[0.0, 80.0, 20.0],
        phase_shift_deg=[0.0, 0.0, 90.0],
        scale=[1.0, 0.5, 1.2],
    )


def _object(n: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth positive 'particle': a few Gaussian blobs around the centre."""
    y, x = np.mgrid[:n, :n].astype(np.float64) - n // 2
    out = np.zeros((n, n))
    for _ in range(5):
        cy, cx = rng.uniform(-n / 6, n / 6, 2)
        out += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * rng.uniform(1.5, 3.0) ** 2))
    return out


def test_ctf_arrays_equal_simulate_ctf_2d() -> None:
    params = _params()
    n = 24
    out = ctf_arrays(params, n, PX)
    half = ctf_arrays(params, n, PX, rfft=True, indices=[2, 0])
    inverted = ctf_arrays(params, n, PX, inverted_contrast=True, indices=slice(1, 2))
    assert out.shape == (3, n, n) and out.dtype == np.float32
    assert half.shape == (2, n, n // 2 + 1)
    for i in range(3):
        ref = ctf_2d(n, pixel_size_angstrom=PX, **params.ctf_2d_kwargs(i)) * params.scale[i]
        np.testing.assert_allclose(out[i], ref, rtol=1e-6, atol=1e-7)
    ref_half = ctf_2d(n, pixel_size_angstrom=PX, rfft=True, **params.ctf_2d_kwargs(2))
    np.testing.assert_allclose(half[0], ref_half * 1.2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(inverted[0], -out[1], rtol=1e-6)
    # C(0) = -A · scale in the project's (dark-particle) convention
    np.testing.assert_allclose(out[:, 0, 0], [-0.07, -0.05, -np.sqrt(1 - 0.04) * 1.2], rtol=1e-5)


def test_astigmatism_angle_rotates_the_pattern() -> None:
    n = 33  # odd: no Nyquist sample, the centred grid maps onto itself under 90° turns
    base = dict(defocus_u_angstrom=[14000.0], defocus_v_angstrom=[9000.0])
    c0 = np.fft.fftshift(ctf_arrays(CTFParams(**base, astigmatism_angle_deg=0.0), n, PX)[0])
    c90 = np.fft.fftshift(ctf_arrays(CTFParams(**base, astigmatism_angle_deg=90.0), n, PX)[0])
    np.testing.assert_allclose(c90, np.rot90(c0), atol=1e-6)
    assert np.abs(c90 - c0).max() > 0.5  # the pattern is really astigmatic

    # At 45° the u direction is the diagonal kx = ky (x towards y = row index): there the CTF
    # is the isotropic one of defocus U, and on the other diagonal that of defocus V.
    c45 = ctf_arrays(CTFParams(**base, astigmatism_angle_deg=45.0), n, PX)[0]
    iso_u = ctf_arrays(CTFParams(defocus_u_angstrom=[14000.0]), n, PX)[0]
    iso_v = ctf_arrays(CTFParams(defocus_u_angstrom=[9000.0]), n, PX)[0]
    k = np.arange(1, n // 2)
    np.testing.assert_allclose(c45[k, k], iso_u[k, k], atol=1e-6)
    np.testing.assert_allclose(c45[-k, k], iso_v[-k, k], atol=1e-6)
    assert np.abs(iso_u[k, k] - iso_v[k, k]).max() > 0.5


def test_aperture_cuts_high_frequencies() -> None:
    n = 32
    cutoff = 0.2  # cycles/Å (5 Å); Nyquist is 1/3 cycles/Å at 1.5 Å/px
    params = CTFParams(defocus_u_angstrom=[15000.0], aperture_cutoff_per_angstrom=cutoff)
    with_ap = ctf_arrays(params, n, PX)[0]
    without = ctf_arrays(CTFParams(defocus_u_angstrom=[15000.0]), n, PX)[0]
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")) / PX
    assert np.all(with_ap[k > cutoff] == 0)
    np.testing.assert_array_equal(with_ap[k <= cutoff], without[k <= cutoff])
    mask = aperture_mask(n, PX, cutoff, rfft=True)
    np.testing.assert_array_equal(mask, (k[:, : n // 2 + 1] <= cutoff).astype(np.float32))
    with pytest.raises(ValueError, match="aperture_cutoff_per_angstrom"):
        CTFParams(defocus_u_angstrom=[1e4], aperture_cutoff_per_angstrom=-1.0)


@pytest.mark.parametrize("inverted", [False, True])
def test_phase_flip_gives_non_negative_transfer(rng: np.random.Generator, inverted: bool) -> None:
    n = 48
    params = _params()
    truth = np.stack([_object(n, rng) for _ in range(3)])
    c = ctf_arrays(params, n, PX, inverted_contrast=inverted)
    stack = ParticleStack(apply_ctf(truth, c), PX, ctf=params, inverted_contrast=inverted)
    np.testing.assert_array_equal(stack_ctfs(stack), c)
    flipped = correct_ctf(stack, "phase_flip", batch_size=2)
    # phase flipping a CTF-corrupted image = filtering the object with |C| >= 0
    np.testing.assert_allclose(flipped, apply_ctf(truth, np.abs(c)), atol=1e-5)
    np.testing.assert_allclose(effective_ctf(c), np.abs(c))
    # so the flipped particle correlates positively with the (positive) object
    for f, t in zip(flipped, truth, strict=True):
        assert np.corrcoef(f.ravel(), t.ravel())[0, 1] > 0.6  # measured 0.88-0.93
    # flipping twice restores the input (sign(C)² = 1 at every sampled frequency)
    twice = correct_ctf(stack.replace(images=flipped), "phase_flip")
    np.testing.assert_allclose(twice, stack.images, atol=1e-5)


def test_wiener_restores_better_than_phase_flip(rng: np.random.Generator) -> None:
    n = 64
    params = _params()
    truth = np.stack([_object(n, rng) for _ in range(3)])
    c = ctf_arrays(params, n, PX)
    stack = ParticleStack(apply_ctf(truth, c), PX, ctf=params)
    flipped = correct_ctf(stack, "phase_flip")
    wiener = correct_ctf(stack, "wiener", wiener_constant=1e-3)
    for i in range(3):
        err_w = np.linalg.norm(wiener[i] - truth[i]) / np.linalg.norm(truth[i])
        err_pf = np.linalg.norm(flipped[i] - truth[i]) / np.linalg.norm(truth[i])
        assert err_w < 0.5 * err_pf, (i, err_w, err_pf)
        assert err_w < 0.25, (i, err_w)  # measured 0.05-0.14
    # the filter is C / (C² + K), and snr = 1/K is the same filter
    np.testing.assert_allclose(wiener_filter(stack.images, c, snr=1e3), wiener, atol=1e-5)
    np.testing.assert_allclose(
        effective_ctf(c, "wiener", wiener_constant=0.1), c * c / (c * c + 0.1), rtol=1e-5
    )


def test_ctf_model_bad_inputs() -> None:
    params = _params()
    stack = ParticleStack(np.zeros((3, 8, 8)), PX, ctf=params)
    with pytest.raises(ValueError, match="no CTF parameters"):
        correct_ctf(ParticleStack(np.zeros((3, 8, 8)), PX))
    with pytest.raises(ValueError, match="either wiener_constant or snr"):
        correct_ctf(stack, "wiener", wiener_constant=0.1, snr=10)
    with pytest.raises(ValueError, match="wiener_constant must be > 0"):
        correct_ctf(stack, "wiener", wiener_constant=0.0)
    with pytest.raises(ValueError, match="method='wiener' only"):
        correct_ctf(stack, "phase_flip", snr=3.0)
    with pytest.raises(ValueError, match="unknown CTF correction"):
        correct_ctf(stack, "deconvolve")
    with pytest.raises(ValueError, match="pixel_size_angstrom"):
        ctf_arrays(params, 8, 0.0)
    with pytest.raises(IndexError):
        ctf_arrays(params, 8, PX, indices=[5])
