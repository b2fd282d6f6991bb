"""Tests for cryowedge.simulate.ctf and cryowedge.simulate.noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cryowedge.simulate.ctf import apply_ctf, ctf_2d, electron_wavelength_angstrom, phase_flip
from cryowedge.simulate.noise import add_gaussian_noise, add_poisson_noise

# --- CTF -------------------------------------------------------------------------------


def test_wavelength():
    assert electron_wavelength_angstrom(300) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength_angstrom(200) == pytest.approx(0.025079, abs=2e-6)
    assert electron_wavelength_angstrom(100) == pytest.approx(0.037014, abs=2e-6)
    with pytest.raises(ValueError, match="voltage_kv must be > 0"):
        electron_wavelength_angstrom(0)


def test_ctf_at_origin_is_minus_amplitude_contrast():
    for a in (0.0, 0.07, 0.1):
        c = ctf_2d(
            (64, 64), pixel_size_angstrom=2.0, defocus_u_angstrom=20000, amplitude_contrast=a
        )
        assert c[0, 0] == pytest.approx(-a, abs=1e-7)
        # Low frequencies in underfocus: negative contrast (dense object imaged dark).
        assert c[0, 1] < 0
    c = ctf_2d(64, pixel_size_angstrom=2.0, defocus_u_angstrom=20000, phase_shift_deg=90,
               amplitude_contrast=0.0)
    assert c[0, 0] == pytest.approx(-1.0)


@pytest.mark.parametrize("amplitude_contrast", [0.0, 0.1])
def test_zero_crossings_match_gamma(amplitude_contrast):
    px, dz, cs_mm, kv = 1.5, 15000.0, 2.7, 300.0
    n = 8192
    c = ctf_2d((1, n), pixel_size_angstrom=px, defocus_u_angstrom=dz,
               spherical_aberration_mm=cs_mm, voltage_kv=kv,
               amplitude_contrast=amplitude_contrast)[0].astype(np.float64)
    k = np.fft.fftfreq(n)[: n // 2] / px
    c = c[: n // 2]
    sign_change = np.nonzero(np.sign(c[:-1]) != np.sign(c[1:]))[0]
    sign_change = sign_change[sign_change > 0]  # with A = 0, C(0) = 0 is not a crossing
    # Linear interpolation of the crossings.
    k0 = k[sign_change] - c[sign_change] * (k[sign_change + 1] - k[sign_change]) / (
        c[sign_change + 1] - c[sign_change]
    )
    lam = electron_wavelength_angstrom(kv)
    cs = cs_mm * 1e7
    # -sqrt(1-A^2) sin g - A cos g = -sin(g + w), w = arcsin(A): zeros at g = m pi - w.
    w = np.arcsin(amplitude_contrast)
    m = np.arange(1, len(k0) + 1)
    g = m * np.pi - w
    disc = (lam * dz) ** 2 - 2 * cs * lam**3 * g / np.pi
    ok = disc > 0
    k2 = (lam * dz - np.sqrt(disc[ok])) / (cs * lam**3)
    expected = np.sqrt(k2)
    n_check = min(20, ok.sum())
    assert n_check >= 10
    np.testing.assert_allclose(k0[:n_check], expected[:n_check], rtol=2e-4)


def test_radial_symmetry_without_astigmatism():
    c = ctf_2d((65, 65), pixel_size_angstrom=2.0, defocus_u_angstrom=12000, b_factor_angstrom2=50)
    np.testing.assert_array_equal(c, c.T)
    # A function of |k| only: every value at a given k^2 is the same.
    f = np.fft.fftfreq(65)
    k2 = np.round((f[:, None] ** 2 + f[None, :] ** 2) * 65**2).astype(int)
    for value in (1, 2, 25, 50, 100, 169, 250):
        sel = c[k2 == value]
        assert len(sel) >= 2 and np.ptp(sel) < 1e-6
    # Equal to the isotropic formula with explicit defocus_v.
    c2 = ctf_2d((65, 65), pixel_size_angstrom=2.0, defocus_u_angstrom=12000,
                defocus_v_angstrom=12000, astigmatism_angle_deg=37, b_factor_angstrom2=50)
    np.testing.assert_allclose(c, c2, atol=1e-6)


def test_astigmatism_rotates_with_angle():
    kw = dict(pixel_size_angstrom=2.0, defocus_u_angstrom=20000, defocus_v_angstrom=12000)
    c0 = ctf_2d((65, 65), astigmatism_angle_deg=0, **kw)
    c90 = ctf_2d((65, 65), astigmatism_angle_deg=90, **kw)
    np.testing.assert_allclose(c90, c0.T, atol=1e-6)
    c45 = ctf_2d((65, 65), astigmatism_angle_deg=45, **kw).astype(np.float64)
    iso_u = ctf_2d((65, 65), pixel_size_angstrom=2.0, defocus_u_angstrom=20000)
    iso_v = ctf_2d((65, 65), pixel_size_angstrom=2.0, defocus_u_angstrom=12000)
    i = np.arange(1, 32)
    # On the +45 deg diagonal the defocus is defocus_u, on the -45 deg one defocus_v.
    np.testing.assert_allclose(c45[i, i], iso_u[i, i], atol=1e-6)
    np.testing.assert_allclose(c45[-i, i], iso_v[-i, i], atol=1e-6)
    assert not np.allclose(c45, c0, atol=1e-3)
    # Changing the angle by 180 degrees changes nothing.
    c225 = ctf_2d((65, 65), astigmatism_angle_deg=225, **kw)
    np.testing.assert_allclose(c225, c45, atol=1e-5)


def test_rfft_grid_and_envelope():
    kw = dict(pixel_size_angstrom=3.0, defocus_u_angstrom=25000, defocus_v_angstrom=21000,
              astigmatism_angle_deg=20)
    full = ctf_2d((48, 63), **kw)
    half = ctf_2d((48, 63), rfft=True, **kw)
    assert half.shape == (48, 32) and half.dtype == np.float32
    np.testing.assert_allclose(half, full[:, :32], atol=1e-7)
    damped = ctf_2d((48, 63), b_factor_angstrom2=200, **kw)
    ky = np.fft.fftfreq(48)[:, None] / 3.0
    kx = np.fft.fftfreq(63)[None, :] / 3.0
    np.testing.assert_allclose(damped, full * np.exp(-200 * (kx**2 + ky**2) / 4), atol=1e-6)


def test_ctf_errors():
    with pytest.raises(ValueError, match="amplitude_contrast must lie in"):
        ctf_2d(32, pixel_size_angstrom=1.0, defocus_u_angstrom=1e4, amplitude_contrast=1.5)
    with pytest.raises(ValueError, match="pixel_size_angstrom must be > 0, got 0"):
        ctf_2d(32, pixel_size_angstrom=0, defocus_u_angstrom=1e4)
    with pytest.raises(ValueError, match="does not match images"):
        apply_ctf(np.zeros((32, 32)), np.zeros((32, 20)))


def test_apply_ctf_and_phase_flip():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((3, 40, 50)).astype(np.float32)
    kw = dict(pixel_size_angstrom=2.0, defocus_u_angstrom=15000, defocus_v_angstrom=13000,
              astigmatism_angle_deg=30)
    full = ctf_2d((40, 50), **kw)
    half = ctf_2d((40, 50), rfft=True, **kw)
    a = apply_ctf(images, full)
    b = apply_ctf(images, half)
    assert a.shape == images.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-4)
    # Same as a direct FFT product, for even and odd sizes (the Nyquist samples of an
    # astigmatic CTF are symmetrised, so C(k) = C(-k) holds on the grid).
    np.testing.assert_array_equal(full, np.roll(full[::-1, ::-1], 1, axis=(0, 1)))
    direct = np.fft.ifft2(np.fft.fft2(images) * full).real
    np.testing.assert_allclose(a, direct, atol=1e-5)
    odd = images[:, :39, :49]
    c_odd = ctf_2d((39, 49), **kw)
    direct = np.fft.ifft2(np.fft.fft2(odd) * c_odd).real
    np.testing.assert_allclose(apply_ctf(odd, c_odd), direct, atol=1e-5)
    # A centred delta gives the (negative-centred) point-spread function.
    delta = np.zeros((40, 50))
    delta[20, 25] = 1.0
    psf = apply_ctf(delta, full)
    assert psf.sum() == pytest.approx(full[0, 0], abs=1e-5)
    # One CTF per image broadcasts.
    per_tilt = np.stack([ctf_2d((40, 50), pixel_size_angstrom=2.0, defocus_u_angstrom=d)
                         for d in (10000, 20000, 30000)])
    out = apply_ctf(images, per_tilt)
    np.testing.assert_allclose(out[2], apply_ctf(images[2], per_tilt[2]), atol=1e-5)
    # Phase flipping leaves |CTF|: positive contrast at every frequency.
    flipped = phase_flip(a, full)
    np.testing.assert_allclose(flipped, apply_ctf(images, np.abs(full)), atol=1e-4)
    blob = ndimage.gaussian_filter(delta, 3.0)
    assert phase_flip(apply_ctf(blob, full), full)[20, 25] > 0 > apply_ctf(blob, full)[20, 25]


# --- noise -----------------------------------------------------------------------------


def _smooth_signal(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 3.0).astype(np.float32)


@pytest.mark.parametrize("snr", [0.1, 1.0, 5.0])
def test_gaussian_noise_hits_target_snr(snr):
    signal = _smooth_signal((512, 512))
    noisy, sigma = add_gaussian_noise(signal, snr=snr, rng=1)
    assert noisy.dtype == np.float32 and noisy.shape == signal.shape
    assert isinstance(sigma, float)
    noise = noisy.astype(np.float64) - signal
    assert np.var(signal) / np.var(noise) == pytest.approx(snr, rel=0.02)
    assert np.std(noise) == pytest.approx(sigma, rel=0.01)


def test_gaussian_noise_per_image_vs_global():
    signal = _smooth_signal((4, 256, 256)) * np.array([1, 2, 4, 8], np.float32)[:, None, None]
    noisy, sigma = add_gaussian_noise(signal, snr=2.0, rng=3, per_image=True)
    assert sigma.shape == (4,)
    np.testing.assert_allclose(sigma[1:] / sigma[:-1], 2.0, rtol=0.01)
    noise = noisy - signal
    np.testing.assert_allclose(signal.var(axis=(1, 2)) / noise.var(axis=(1, 2)), 2.0, rtol=0.03)
    noisy_g, sigma_g = add_gaussian_noise(signal, snr=2.0, rng=3, per_image=False)
    assert isinstance(sigma_g, float)
    assert signal.var() / (noisy_g - signal).var() == pytest.approx(2.0, rel=0.02)


def test_gaussian_noise_errors_and_determinism():
    signal = _smooth_signal((32, 32))
    with pytest.raises(ValueError, match="snr must be > 0.*got -1"):
        add_gaussian_noise(signal, snr=-1, rng=0)
    with pytest.raises(ValueError, match="got 0"):
        add_gaussian_noise(signal, snr=0, rng=0)
    with pytest.raises(ValueError, match="zero variance"):
        add_gaussian_noise(np.ones((8, 8)), snr=1.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., ny, nx\)"):
        add_gaussian_noise(np.ones(8), snr=1.0)
    a, _ = add_gaussian_noise(signal, snr=1.0, rng=42)
    b, _ = add_gaussian_noise(signal, snr=1.0, rng=np.random.default_rng(42))
    c, _ = add_gaussian_noise(signal, snr=1.0, rng=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_poisson_mean_counts_equal_dose_times_area():
    flat = np.zeros((4, 256, 256), np.float32)
    dose, px = 2.5, 3.0
    noisy, counts = add_poisson_noise(flat, dose_e_per_angstrom2=dose, pixel_size_angstrom=px,
                                      rng=0, return_counts=True)
    assert counts.dtype == np.int64 and counts.shape == flat.shape
    assert counts.mean() == pytest.approx(dose * px * px, rel=0.005)
    assert counts.var() == pytest.approx(dose * px * px, rel=0.03)  # Poisson
    # -log of Poisson counts is biased by about 1 / (2 N0) (N0 = 22.5 here).
    assert noisy.dtype == np.float32 and noisy.mean() == pytest.approx(1 / (2 * 22.5), abs=0.01)


def test_poisson_attenuation_and_units():
    rng = np.random.default_rng(0)
    proj = np.abs(_smooth_signal((256, 256))) * 10  # line integrals >= 0
    contrast = 0.05
    noisy, counts = add_poisson_noise(proj, dose_e_per_angstrom2=1e8, pixel_size_angstrom=1.0,
                                      contrast=contrast, rng=rng, return_counts=True)
    expected = 1e8 * np.exp(-contrast * proj)
    np.testing.assert_allclose(counts.mean(), expected.mean(), rtol=1e-3)
    # Back in projection units: the high-dose result is the input.
    np.testing.assert_allclose(noisy, proj, atol=0.05)
    # Negative projections are shifted internally and shifted back.
    centred = proj - proj.mean()
    out = add_poisson_noise(centred, dose_e_per_angstrom2=1e8, pixel_size_angstrom=1.0, rng=1)
    np.testing.assert_allclose(out, centred, atol=0.05)
    # Lower dose: noisier.
    lo = add_poisson_noise(proj, dose_e_per_angstrom2=1.0, pixel_size_angstrom=1.0, rng=2)
    hi = add_poisson_noise(proj, dose_e_per_angstrom2=100.0, pixel_size_angstrom=1.0, rng=2)
    assert np.isfinite(lo).all()
    assert np.std(lo - proj) > 3 * np.std(hi - proj)


def test_poisson_errors_and_determinism():
    img = np.zeros((16, 16))
    with pytest.raises(ValueError, match="dose_e_per_angstrom2 must be > 0, got 0"):
        add_poisson_noise(img, dose_e_per_angstrom2=0, pixel_size_angstrom=1.0)
    with pytest.raises(ValueError, match="got -2"):
        add_poisson_noise(img, dose_e_per_angstrom2=-2.0, pixel_size_angstrom=1.0)
    with pytest.raises(ValueError, match="pixel_size_angstrom must be > 0"):
        add_poisson_noise(img, dose_e_per_angstrom2=1.0, pixel_size_angstrom=0.0)
    with pytest.raises(ValueError, match="contrast must be > 0"):
        add_poisson_noise(img, dose_e_per_angstrom2=1.0, pixel_size_angstrom=1.0, contrast=-1.0)
    a = add_poisson_noise(img + 1, dose_e_per_angstrom2=3.0, pixel_size_angstrom=2.0, rng=9)
    b = add_poisson_noise(img + 1, dose_e_per_angstrom2=3.0, pixel_size_angstrom=2.0, rng=9)
    np.testing.assert_array_equal(a, b)
