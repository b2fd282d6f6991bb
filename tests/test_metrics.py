"""Tests for cryowedge.metrics (image metrics, FSC/FRC, wedge correlations, report)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryowedge.metrics import (
    FSCResult,
    compare_volumes,
    fourier_region_correlation,
    fourier_ring_correlation,
    fourier_shell_correlation,
    metrics_table_markdown,
    missing_wedge_correlations,
    mse,
    normalization_gain_offset,
    normalization_note,
    normalize_intensity,
    normalized_cross_correlation,
    pearson_correlation,
    psnr,
    resolution_at_threshold,
    rmse,
    ssim,
    threshold_crossings,
)

from skimage import metrics as skimage_metrics  # a runtime dependency since ssim uses it


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def smooth_random(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), sigma)


def radius_grid(shape):
    """|f| in cycles/px on the full (unshifted) FFT grid."""
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    return np.sqrt(sum(g * g for g in grids))


def fourier_filter(vol, transfer):
    return np.fft.ifftn(np.fft.fftn(vol) * transfer).real


def wedge_mask(shape, theta_min_deg, theta_max_deg):
    """Missing wedge per docs/conventions.md (True = missing), unshifted FFT order."""
    kz, _, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    ang = np.degrees(np.arctan2(kz, kx))
    ang = np.where(ang > 90.0, ang - 180.0, ang)
    ang = np.where(ang <= -90.0, ang + 180.0, ang)
    return ((kx**2 + kz**2) > 0) & ((ang < theta_min_deg) | (ang > theta_max_deg))


def fsc_bruteforce(a, b, width, n_shells):
    """Independent full-FFT FSC with the documented shell rule, for cross-checking."""
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    r = radius_grid(a.shape)
    corr, counts = [], []
    for k in range(1, n_shells + 1):
        # boundary points (r / width = k + 1/2 up to rounding) belong to the outer shell
        u = r / width + 1e-9
        sel = (u >= k - 0.5) & (u < k + 0.5)
        if k == 1:
            sel |= (r > 0) & (r < 0.5 * width)
        num = np.sum(fa[sel] * np.conj(fb[sel])).real
        den = np.sqrt(np.sum(np.abs(fa[sel]) ** 2) * np.sum(np.abs(fb[sel]) ** 2))
        corr.append(num / den)
        counts.append(int(sel.sum()))
    return np.array(corr), np.array(counts)


# ----------------------------------------------------------------------------------------
# MSE / RMSE / PSNR
# ----------------------------------------------------------------------------------------


def test_psnr_closed_form_and_mse():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.0, 1.0, size=(16, 16, 16))
    ref.flat[0], ref.flat[1] = 0.0, 2.0  # data range exactly 2
    x = ref + 0.1  # MSE exactly 0.01 (up to rounding)
    assert mse(x, ref) == pytest.approx(0.01, rel=1e-10)
    assert rmse(x, ref) == pytest.approx(0.1, rel=1e-10)
    assert psnr(x, ref) == pytest.approx(10 * math.log10(4.0 / 0.01), rel=1e-10)
    assert psnr(x, ref, data_range=1.0) == pytest.approx(20.0, rel=1e-10)
    assert psnr(ref, ref) == math.inf


def test_psnr_random_error_matches_formula():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(20, 30))
    x = ref + rng.normal(scale=0.3, size=ref.shape)
    err = np.mean((x - ref) ** 2)
    expected = 10 * np.log10((ref.max() - ref.min()) ** 2 / err)
    assert psnr(x, ref) == pytest.approx(expected, rel=1e-12)


def test_mask_restricts_error_statistics():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(8, 12, 12))
    x = ref.copy()
    x[:, :, :6] += rng.normal(scale=1.0, size=(8, 12, 6))  # errors only in the left half
    clean = np.zeros(ref.shape, dtype=bool)
    clean[:, :, 6:] = True
    assert mse(x, ref, mask=clean) == 0.0
    assert psnr(x, ref, mask=clean) == math.inf
    noisy = ~clean
    assert mse(x, ref, mask=noisy) == pytest.approx(2 * mse(x, ref), rel=1e-12)
    assert psnr(x, ref, mask=noisy) < psnr(x, ref)
    assert pearson_correlation(x, ref, mask=clean) == pytest.approx(1.0, abs=1e-12)
    assert pearson_correlation(x, ref, mask=noisy) < pearson_correlation(x, ref)
    assert normalized_cross_correlation(x, ref, mask=clean) == pytest.approx(1.0, abs=1e-12)
    # data range defaults to the range inside the mask
    expected = 10 * np.log10(np.ptp(ref[noisy]) ** 2 / mse(x, ref, mask=noisy))
    assert psnr(x, ref, mask=noisy) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------
# SSIM
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(48, 40), (22, 26, 30)])
def test_ssim_matches_skimage(shape):
    ref = smooth_random(shape, seed=4)
    x = 0.8 * ref + 0.1 + 0.05 * np.random.default_rng(5).normal(size=shape)
    dr = float(ref.max() - ref.min())
    expected = skimage_metrics.structural_similarity(
        x, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=dr
    )
    assert ssim(x, ref) == pytest.approx(expected, abs=1e-6)
    assert ssim(x, ref, data_range=3.0) == pytest.approx(
        skimage_metrics.structural_similarity(
            x, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=3.0
        ),
        abs=1e-6,
    )


def test_ssim_uncropped_is_mean_of_full_map():
    shape = (30, 34)
    ref = smooth_random(shape, seed=6)
    x = ref + 0.2 * np.random.default_rng(7).normal(size=shape)
    dr = float(np.ptp(ref))
    _, smap = skimage_metrics.structural_similarity(
        x, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=dr, full=True,
    )
    assert ssim(x, ref, crop_border=False) == pytest.approx(smap.mean(), abs=1e-6)
    # with a mask: mean of the map over mask ∩ interior
    mask = np.zeros(shape, dtype=bool)
    mask[3:20, 8:30] = True
    interior = np.zeros(shape, dtype=bool)
    interior[5:-5, 5:-5] = True
    assert ssim(x, ref, mask=mask, data_range=dr) == pytest.approx(
        smap[mask & interior].mean(), abs=1e-6
    )
    assert ssim(x, ref, mask=mask, data_range=dr, crop_border=False) == pytest.approx(
        smap[mask].mean(), abs=1e-6
    )


def _ssim_map_direct(x, ref, data_range, sigma=1.5):
    """Wang et al. SSIM map written out with SciPy (reflected borders), independent of skimage."""
    def blur(img):
        return ndimage.gaussian_filter(img, sigma=sigma, truncate=3.5, mode="reflect")

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, mr = blur(x), blur(ref)
    vx, vr, cxr = blur(x * x) - mx * mx, blur(ref * ref) - mr * mr, blur(x * ref) - mx * mr
    return (2 * mx * mr + c1) * (2 * cxr + c2) / ((mx * mx + mr * mr + c1) * (vx + vr + c2))


@pytest.mark.parametrize("shape", [(16, 8), (3, 20, 9), (24, 30)])
def test_ssim_uncropped_matches_direct_formula_on_short_axes(shape):
    # crop_border=False must average the reflected-border map even when an axis is shorter
    # than the 11-tap window (scikit-image alone refuses such images).
    ref = smooth_random(shape, seed=40, sigma=1.0)
    x = 0.6 * ref + 0.3 * np.random.default_rng(41).normal(size=shape)
    dr = float(np.ptp(ref))
    smap = _ssim_map_direct(x, ref, dr)
    assert ssim(x, ref, crop_border=False) == pytest.approx(smap.mean(), abs=1e-10)
    assert ssim(x, ref, crop_border=False, sigma=0.8, data_range=2.0) == pytest.approx(
        _ssim_map_direct(x, ref, 2.0, sigma=0.8).mean(), abs=1e-10
    )


def test_ssim_identity_and_degradation():
    ref = smooth_random((20, 24, 24), seed=8)
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(9)
    s1 = ssim(ref + 0.05 * rng.normal(size=ref.shape), ref)
    s2 = ssim(ref + 0.5 * rng.normal(size=ref.shape), ref)
    assert 1.0 > s1 > s2


def test_ssim_mask_over_clean_region_is_higher():
    ref = smooth_random((40, 40), seed=10)
    x = ref.copy()
    x[:, :20] += 0.5 * np.random.default_rng(11).normal(size=(40, 20))
    clean = np.zeros(ref.shape, dtype=bool)
    clean[:, 28:] = True  # far enough from the noise that the window never sees it
    assert ssim(x, ref, mask=clean, data_range=np.ptp(ref)) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, ref, mask=~clean, data_range=np.ptp(ref)) < ssim(x, ref)


# ----------------------------------------------------------------------------------------
# Pearson / NCC
# ----------------------------------------------------------------------------------------


def test_pearson_affine_invariance_and_negation():
    rng = np.random.default_rng(12)
    ref = rng.normal(size=(10, 11, 12))
    x = ref + 0.7 * rng.normal(size=ref.shape)
    p = pearson_correlation(x, ref)
    assert 0.3 < p < 0.95
    assert pearson_correlation(3.5 * x - 20.0, ref) == pytest.approx(p, abs=1e-12)
    assert pearson_correlation(x, 0.1 * ref + 4.0) == pytest.approx(p, abs=1e-12)
    assert pearson_correlation(-x, ref) == pytest.approx(-p, abs=1e-12)
    assert pearson_correlation(-ref, ref) == pytest.approx(-1.0, abs=1e-12)
    assert p == pytest.approx(np.corrcoef(x.ravel(), ref.ravel())[0, 1], abs=1e-12)


def test_ncc_is_uncentred():
    rng = np.random.default_rng(13)
    ref = rng.normal(size=(9, 9))
    x = ref + 0.5 * rng.normal(size=ref.shape)
    expected = np.sum(x * ref) / np.sqrt(np.sum(x * x) * np.sum(ref * ref))
    assert normalized_cross_correlation(x, ref) == pytest.approx(expected, abs=1e-12)
    assert normalized_cross_correlation(4.0 * x, ref) == pytest.approx(expected, abs=1e-12)
    # an offset changes NCC but not Pearson
    assert normalized_cross_correlation(x + 5.0, ref) != pytest.approx(expected, abs=1e-3)
    assert pearson_correlation(x + 5.0, ref) == pytest.approx(pearson_correlation(x, ref))


def test_correlations_of_constant_input_are_nan():
    ref = np.random.default_rng(14).normal(size=(5, 5))
    assert math.isnan(pearson_correlation(np.full((5, 5), 0.1), ref))
    assert math.isnan(normalized_cross_correlation(np.zeros((5, 5)), ref))


def test_torch_inputs_match_numpy():
    rng = np.random.default_rng(15)
    ref = smooth_random((16, 16, 16), seed=15)
    x = ref + 0.1 * rng.normal(size=ref.shape)
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    rt = torch.tensor(ref, dtype=torch.float32)
    x32, r32 = x.astype(np.float32), ref.astype(np.float32)
    assert psnr(xt, rt) == pytest.approx(psnr(x32, r32), rel=1e-12)
    assert ssim(xt, rt) == pytest.approx(ssim(x32, r32), rel=1e-12)
    assert pearson_correlation(xt, rt) == pytest.approx(pearson_correlation(x32, r32))
    res = fourier_shell_correlation(xt, rt)
    np.testing.assert_allclose(res.correlation, fourier_shell_correlation(x32, r32).correlation)
    mask = torch.zeros(ref.shape, dtype=torch.bool)
    mask[4:12] = True
    assert mse(xt, rt, mask=mask) == pytest.approx(mse(x32, r32, mask=mask.numpy()))


# ----------------------------------------------------------------------------------------
# FSC / FRC
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32, 32), (20, 28, 24), (21, 16, 27), (40, 50)])
def test_fsc_matches_bruteforce_full_fft(shape):
    rng = np.random.default_rng(16)
    a = smooth_random(shape, seed=17, sigma=1.0)
    b = a + 0.5 * rng.normal(size=shape)
    res = fourier_shell_correlation(a, b)
    n_min = min(shape)
    corr, counts = fsc_bruteforce(a, b, 1.0 / n_min, n_min // 2)
    np.testing.assert_allclose(res.correlation, corr, atol=1e-10)
    np.testing.assert_array_equal(res.n_coefficients, counts)
    np.testing.assert_allclose(
        res.frequency_cycles_per_pixel, np.arange(1, n_min // 2 + 1) / n_min
    )
    # explicit, coarser shells
    res4 = fourier_shell_correlation(a, b, n_shells=4)
    corr4, counts4 = fsc_bruteforce(a, b, 0.125, 4)
    np.testing.assert_allclose(res4.correlation, corr4, atol=1e-10)
    np.testing.assert_array_equal(res4.n_coefficients, counts4)
    np.testing.assert_allclose(res4.frequency_cycles_per_pixel, [0.125, 0.25, 0.375, 0.5])


@pytest.mark.parametrize("shape", [(32, 32, 32), (24, 40, 36), (64, 48)])
def test_fsc_of_identical_maps_is_one(shape):
    a = np.random.default_rng(18).normal(size=shape)
    res = fourier_shell_correlation(a, a)
    assert res.n_shells == min(shape) // 2
    assert res.frequency_cycles_per_pixel[-1] == pytest.approx(0.5)
    np.testing.assert_allclose(res.correlation, 1.0, atol=1e-12)
    assert np.all(res.n_coefficients > 0)
    assert res.resolution_angstrom(0.143, 2.0) == pytest.approx(4.0)  # Nyquist


def test_fsc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(19)
    a = rng.normal(size=(48, 48, 48))
    b = rng.normal(size=(48, 48, 48))
    res = fourier_shell_correlation(a, b)
    assert abs(res.correlation.mean()) < 0.02
    big = res.n_coefficients > 1000
    # per-shell spread ~ 1/sqrt(n_coefficients / 2) (Hermitian pairs are not independent)
    assert np.all(np.abs(res.correlation[big]) < 5 / np.sqrt(res.n_coefficients[big] / 2))
    # and FRC in 2D
    frc = fourier_ring_correlation(rng.normal(size=(128, 128)), rng.normal(size=(128, 128)))
    assert abs(frc.correlation.mean()) < 0.03


def test_fsc_sharp_lowpass_copy_resolution_at_cutoff():
    rng = np.random.default_rng(20)
    a = rng.normal(size=(48, 48, 48))
    cutoff = 0.25
    b = fourier_filter(a, radius_grid(a.shape) <= cutoff) + 0.01 * rng.normal(size=a.shape)
    res = fourier_shell_correlation(a, b)
    width = 1 / 48
    for threshold in (0.5, 0.143):
        f = 1.0 / res.resolution_angstrom(threshold, 1.0)
        assert abs(f - cutoff) <= width
    assert np.all(res.correlation[res.frequency_cycles_per_pixel < cutoff - width] > 0.99)


def test_fsc_gaussian_lowpass_plus_noise_follows_prediction():
    """b = G * a + n with white a, n: FSC(f) = H(f) / sqrt(H(f)^2 + sigma_n^2)."""
    rng = np.random.default_rng(21)
    shape = (64, 64, 64)
    a = rng.normal(size=shape)
    sigma_f, sigma_n = 0.15, 0.1
    transfer = np.exp(-(radius_grid(shape) ** 2) / (2 * sigma_f**2))
    b = fourier_filter(a, transfer) + sigma_n * rng.normal(size=shape)
    res = fourier_shell_correlation(a, b)
    f = res.frequency_cycles_per_pixel
    h = np.exp(-(f**2) / (2 * sigma_f**2))
    predicted = h / np.sqrt(h**2 + sigma_n**2)
    assert np.max(np.abs(res.correlation[2:] - predicted[2:])) < 0.08
    for threshold in (0.5, 0.143):
        h_t = sigma_n * threshold / math.sqrt(1 - threshold**2)
        f_expected = sigma_f * math.sqrt(2 * math.log(1 / h_t))
        f_measured = 1.0 / res.resolution_angstrom(threshold, 1.0)
        assert f_measured == pytest.approx(f_expected, abs=1 / 64)
    # pixel size scales the resolution linearly
    assert res.resolution_angstrom(0.5, 3.0) == pytest.approx(3 * res.resolution_angstrom(0.5, 1))


def test_fsc_of_signal_plus_noise_halves_follows_ssnr():
    """Two halves s + n1, s + n2: FSC = SSNR / (1 + SSNR) with SSNR(f) = H(f)^2 / sigma_n^2."""
    rng = np.random.default_rng(22)
    shape = (64, 64, 64)
    sigma_f, sigma_n = 0.12, 0.3
    transfer = np.exp(-(radius_grid(shape) ** 2) / (2 * sigma_f**2))
    s = fourier_filter(rng.normal(size=shape), transfer)
    h1 = s + sigma_n * rng.normal(size=shape)
    h2 = s + sigma_n * rng.normal(size=shape)
    res = fourier_shell_correlation(h1, h2)
    f = res.frequency_cycles_per_pixel
    ssnr = np.exp(-(f**2) / sigma_f**2) / sigma_n**2
    predicted = ssnr / (1 + ssnr)
    sel = res.n_coefficients >= 500
    assert np.max(np.abs(res.correlation[sel] - predicted[sel])) < 0.08
    assert np.mean(np.abs(res.correlation[sel] - predicted[sel])) < 0.02


def test_fsc_mask_isolates_clean_region():
    rng = np.random.default_rng(23)
    ref = smooth_random((32, 32, 32), seed=24, sigma=1.0)
    x = ref.copy()
    x[:, :, :16] += rng.normal(size=(32, 32, 16))
    clean = np.zeros(ref.shape, dtype=bool)
    clean[:, :, 16:] = True
    unmasked = fourier_shell_correlation(x, ref).correlation
    masked = fourier_shell_correlation(x, ref, mask=clean).correlation
    np.testing.assert_allclose(masked, 1.0, atol=1e-12)
    assert unmasked.mean() < 0.9
    # a soft (real-valued) mask is accepted too
    soft = ndimage.gaussian_filter(clean.astype(float), 1.0) * clean
    assert fourier_shell_correlation(x, ref, mask=soft).correlation.min() > 0.999


def test_resolution_at_threshold_rules():
    f = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    c = np.array([0.9, 0.7, 0.3, 0.1, 0.0])
    # crosses 0.5 halfway between 0.2 and 0.3
    assert resolution_at_threshold(f, c, 0.5, 2.0) == pytest.approx(2.0 / 0.25)
    # 0.143 between 0.3 (0.3) and 0.4 (0.1): f = 0.3 + 0.157/0.2 * 0.1
    assert resolution_at_threshold(f, c, 0.143, 1.0) == pytest.approx(1 / 0.3785)
    assert resolution_at_threshold(f, np.full(5, 0.99), 0.143, 1.5) == pytest.approx(3.0)
    assert resolution_at_threshold(f, c, 0.95, 1.0) == math.inf
    # non-monotone curve: the first crossing counts
    c2 = np.array([0.9, 0.4, 0.8, 0.1, 0.0])
    assert resolution_at_threshold(f, c2, 0.5, 1.0) == pytest.approx(1 / 0.18)
    # non-finite shells are skipped
    c3 = np.array([0.9, np.nan, 0.7, 0.3, 0.0])
    assert resolution_at_threshold(f, c3, 0.5, 1.0) == pytest.approx(1 / 0.35)
    res = FSCResult(f, c, np.ones(5, dtype=int))
    assert res.resolution_angstrom(0.5, 2.0) == resolution_at_threshold(f, c, 0.5, 2.0)
    with pytest.raises(ValueError):
        res.correlation[0] = 0.0  # read-only


# ----------------------------------------------------------------------------------------
# Fourier-region / missing-wedge correlations
# ----------------------------------------------------------------------------------------


def test_wedge_zeroed_volume_gives_inside_zero_outside_one():
    shape = (32, 24, 28)
    ref = smooth_random(shape, seed=25, sigma=1.0)
    wedge = wedge_mask(shape, -60.0, 60.0)
    assert 0.2 < wedge.mean() < 0.5
    x = fourier_filter(ref, ~wedge)
    out = missing_wedge_correlations(x, ref, wedge)
    assert set(out) == {"inside_wedge", "outside_wedge"}
    assert abs(out["inside_wedge"]) < 1e-6
    assert out["outside_wedge"] == pytest.approx(1.0, abs=1e-12)
    # the centred version of the mask gives the same answer
    out_c = missing_wedge_correlations(x, ref, np.fft.fftshift(wedge), centered=True)
    assert out_c == pytest.approx(out)
    # a reconstruction that fills the wedge partially scores in between
    y = x + 0.5 * fourier_filter(ref, wedge)
    inside = missing_wedge_correlations(y, ref, wedge)["inside_wedge"]
    assert inside == pytest.approx(1.0, abs=1e-12)  # same direction, scale-free
    z = x + fourier_filter(ref + 2.0 * np.random.default_rng(26).normal(size=shape), wedge)
    assert 0.05 < missing_wedge_correlations(z, ref, wedge)["inside_wedge"] < 0.9


def test_wedge_correlations_ignore_dc():
    shape = (16, 16, 16)
    ref = smooth_random(shape, seed=27, sigma=1.0)
    wedge = wedge_mask(shape, -45.0, 45.0)
    base = missing_wedge_correlations(ref + 0.2, ref, wedge)
    assert base["outside_wedge"] == pytest.approx(1.0, abs=1e-12)
    assert base["inside_wedge"] == pytest.approx(1.0, abs=1e-12)
    with_dc = wedge.copy()
    with_dc[0, 0, 0] = True  # a mask that (wrongly) marks DC as missing changes nothing
    assert missing_wedge_correlations(ref + 0.2, ref, with_dc) == pytest.approx(base)


def test_fourier_region_correlation_matches_definition():
    rng = np.random.default_rng(28)
    shape = (12, 14, 10)
    a = rng.normal(size=shape)
    b = a + rng.normal(size=shape)
    region = rng.random(shape) < 0.3
    fa, fb = np.fft.fftn(a)[region], np.fft.fftn(b)[region]
    expected = np.real(np.sum(fa * np.conj(fb))) / np.sqrt(
        np.sum(np.abs(fa) ** 2) * np.sum(np.abs(fb) ** 2)
    )
    assert fourier_region_correlation(a, b, region) == pytest.approx(expected, abs=1e-12)
    assert fourier_region_correlation(a, -a, region) == pytest.approx(-1.0, abs=1e-12)
    assert fourier_region_correlation(
        a, b, np.fft.fftshift(region), centered=True
    ) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def test_compare_volumes_keys_and_consistency():
    rng = np.random.default_rng(29)
    shape = (24, 24, 24)
    ref = smooth_random(shape, seed=30, sigma=1.0)
    x = ref + 0.05 * rng.normal(size=shape)
    wedge = wedge_mask(shape, -60, 60)
    out = compare_volumes(x, ref, pixel_size_angstrom=2.5, wedge_mask=wedge)
    assert list(out) == [
        "psnr", "ssim", "pearson", "ncc", "rmse",
        "fsc05_angstrom", "fsc0143_angstrom", "inside_wedge", "outside_wedge",
    ]
    assert out["psnr"] == pytest.approx(psnr(x, ref))
    assert out["ssim"] == pytest.approx(ssim(x, ref))
    assert out["rmse"] == pytest.approx(rmse(x, ref))
    fsc = fourier_shell_correlation(x, ref)
    # the tables read the crossing after which the curve stays below (issue 9)
    assert out["fsc0143_angstrom"] == pytest.approx(
        fsc.resolution_angstrom(0.143, 2.5, rule="stays-below"))
    assert out["fsc0143_angstrom"] <= out["fsc05_angstrom"]
    assert out["fsc0143_angstrom"] >= 5.0  # never better than Nyquist
    assert all(isinstance(v, float) for v in out.values())
    assert "inside_wedge" not in compare_volumes(x, ref)
    mask = np.zeros(shape, dtype=bool)
    mask[6:18, 6:18, 6:18] = True
    assert compare_volumes(x, ref, mask=mask)["rmse"] == pytest.approx(rmse(x, ref, mask=mask))


def test_affine_normalisation_makes_gain_and_offset_score_like_the_original():
    ref = smooth_random((24, 24, 24), seed=50, sigma=1.5)
    x = ref + 0.1 * np.random.default_rng(51).normal(size=ref.shape)
    scaled = -0.7 + 3.5 * x  # a reconstruction on another grey scale
    # Against itself: the rescaled copy is mapped back exactly (PSNR of x vs x is inf).
    self_aff = compare_volumes(scaled, x, normalize="affine")
    assert self_aff["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert self_aff["psnr"] > 200.0 and self_aff["rmse"] < 1e-9
    assert self_aff["pearson"] == pytest.approx(1.0, abs=1e-12)
    # Against a reference: a x + b scores exactly like x, raw scores do not.
    base = compare_volumes(x, ref, normalize="affine")
    other = compare_volumes(scaled, ref, normalize="affine")
    for key in ("psnr", "ssim", "rmse", "ncc", "pearson", "fsc05_angstrom"):
        assert other[key] == pytest.approx(base[key], rel=1e-9), key
    raw = compare_volumes(scaled, ref)
    assert raw["psnr"] < base["psnr"] - 20.0 and raw["ssim"] < base["ssim"]
    # The fit is the least-squares one: no other gain/offset has a smaller error.
    gain, offset = normalization_gain_offset(scaled, ref, "affine")
    best = np.mean((gain * scaled + offset - ref) ** 2)
    for dg, do in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)]:
        assert np.mean(((gain + dg) * scaled + offset + do - ref) ** 2) > best
    np.testing.assert_allclose(
        normalize_intensity(scaled, ref, "affine"), gain * scaled + offset, rtol=1e-12
    )


def test_zscore_normalisation_removes_positive_gain_and_offset():
    ref = smooth_random((24, 24, 24), seed=52, sigma=1.5)
    x = ref + 0.2 * np.random.default_rng(53).normal(size=ref.shape)
    z = normalize_intensity(x, ref, "zscore")
    assert z.mean() == pytest.approx(ref.mean(), abs=1e-12)
    assert z.std() == pytest.approx(ref.std(), rel=1e-12)
    base = compare_volumes(x, ref, normalize="zscore")
    for gain, offset in [(4.0, 2.0), (0.01, -3.0)]:
        other = compare_volumes(gain * x + offset, ref, normalize="zscore")
        for key in ("psnr", "ssim", "rmse", "ncc", "pearson"):
            assert other[key] == pytest.approx(base[key], rel=1e-9), (gain, key)
    self_z = compare_volumes(3.0 * ref + 1.0, ref, normalize="zscore")
    assert self_z["ssim"] == pytest.approx(1.0, abs=1e-9) and self_z["psnr"] > 200.0
    # A negative gain is not undone by zscore (its gain is a ratio of std devs, > 0).
    np.testing.assert_allclose(
        normalize_intensity(-x, ref, "zscore") + z, 2.0 * ref.mean(), atol=1e-12
    )


def test_normalisation_none_is_the_raw_metric_set_and_pearson_is_invariant():
    ref = smooth_random((20, 22, 24), seed=54, sigma=1.0)
    x = 2.0 * ref + 0.5 + 0.1 * np.random.default_rng(55).normal(size=ref.shape)
    raw = compare_volumes(x, ref)
    assert raw == compare_volumes(x, ref, normalize="none")
    assert raw == compare_volumes(x, ref, normalize="NONE")
    assert raw["psnr"] == pytest.approx(psnr(x, ref)) and raw["ssim"] == pytest.approx(ssim(x, ref))
    assert raw["rmse"] == pytest.approx(rmse(x, ref))
    assert normalization_gain_offset(x, ref, "none") == (1.0, 0.0)
    for method in ("zscore", "affine"):
        assert compare_volumes(x, ref, normalize=method)["pearson"] == pytest.approx(
            raw["pearson"], rel=1e-12
        )


def test_affine_fit_uses_the_mask_and_negative_gain_keeps_pearson_sign(caplog):
    ref = smooth_random((24, 24, 24), seed=56, sigma=1.5)
    x = 2.0 * ref + 1.0
    x[:, :, :8] = 100.0  # garbage outside the evaluation region
    mask = np.zeros(ref.shape, dtype=bool)
    mask[:, :, 10:] = True
    gain, offset = normalization_gain_offset(x, ref, "affine", mask=mask)
    assert gain == pytest.approx(0.5, rel=1e-12) and offset == pytest.approx(-0.5, abs=1e-12)
    masked = compare_volumes(x, ref, mask=mask, normalize="affine")
    assert masked["rmse"] < 1e-12
    # fitted over everything, the garbage spoils the calibration
    assert compare_volumes(x, ref, normalize="affine")["rmse"] > 0.5 * ref.std()
    with caplog.at_level("WARNING", logger="cryowedge.metrics.normalize"):
        inverted = compare_volumes(-ref, ref, normalize="affine")
    assert "negative" in caplog.text
    assert inverted["pearson"] == pytest.approx(-1.0, abs=1e-12)
    assert inverted["ssim"] == pytest.approx(1.0, abs=1e-9)  # the fit flips it back
    const = normalize_intensity(np.full(ref.shape, 3.0), ref, "affine")
    np.testing.assert_allclose(const, ref.mean())


def test_bad_normalize_value_is_refused():
    ref = smooth_random((12, 12, 12), seed=57)
    for bad in ("affine2", "", "z-score"):
        with pytest.raises(ValueError, match=r"normalize.*none, zscore, affine"):
            compare_volumes(ref, ref, normalize=bad)
    with pytest.raises(ValueError, match="normalize.*None"):
        normalize_intensity(ref, ref, None)
    with pytest.raises(ValueError, match="normalize 'gain'"):
        metrics_table_markdown({"a": {"psnr": 1.0}}, normalize="gain")


def test_metrics_table_says_which_normalisation():
    rows = {"FBP": {"psnr": 20.0}}
    lines = metrics_table_markdown(rows, normalize="affine").splitlines()
    assert lines[0] == normalization_note("affine")
    assert "affine" in lines[0] and "least-squares gain and offset" in lines[0]
    assert lines[1] == "" and lines[2] == "| method | psnr |"
    assert "raw grey levels" in metrics_table_markdown(rows, normalize="none").splitlines()[0]
    assert "zscore" in metrics_table_markdown(rows, normalize="zscore").splitlines()[0]


def test_threshold_crossings_and_the_stays_below_rule():
    f = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5])
    # dips below 0.5, recovers, dips again, recovers, then falls for good
    c = np.array([1.0, 0.8, 0.4, 0.6, 0.45, 0.7, 0.3, 0.2, 0.1, 0.05])
    down = threshold_crossings(f, c, 0.5)
    # linear interpolation: 0.1 + 0.3/0.4·0.05, 0.2 + 0.1/0.15·0.05, 0.3 + 0.2/0.4·0.05
    np.testing.assert_allclose(down, [0.1375, 0.2 + 0.05 / 1.5, 0.325])
    np.testing.assert_allclose(threshold_crossings(f, c, 0.5, direction="up"),
                               [0.15 + 0.1 / 0.2 * 0.05, 0.25 + 0.05 / 0.25 * 0.05])
    assert threshold_crossings(f, c, 0.5, direction="both").size == 5
    assert threshold_crossings(f, c, 0.01).size == 0
    # the first rule reads the first dip, the stays-below rule the last downward crossing
    assert resolution_at_threshold(f, c, 0.5, 2.0) == pytest.approx(2.0 / 0.1375)
    assert resolution_at_threshold(f, c, 0.5, 2.0, rule="stays-below") == pytest.approx(2.0 / 0.325)
    assert resolution_at_threshold(f, c, 0.5, 2.0, rule="stays-below") == pytest.approx(
        2.0 / down[-1])
    # 0.143: one crossing only, both rules agree
    assert resolution_at_threshold(f, c, 0.143, 1.0, rule="stays-below") == pytest.approx(
        resolution_at_threshold(f, c, 0.143, 1.0))
    # a curve ending above the threshold: Nyquist; below everywhere: inf (both rules)
    ends_high = np.array([0.9, 0.3, 0.6, 0.7, 0.8, 0.8, 0.9, 0.9, 0.9, 0.9])
    assert resolution_at_threshold(f, ends_high, 0.5, 1.5, rule="stays-below") == pytest.approx(3.0)
    first = 0.05 + 0.4 / 0.6 * 0.05
    assert resolution_at_threshold(f, ends_high, 0.5, 1.0) == pytest.approx(1 / first)
    assert resolution_at_threshold(f, np.full(10, 0.1), 0.5, 1.0, rule="stays-below") == math.inf
    # starts below, recovers, falls: the stays-below rule finds the later crossing
    late = np.array([0.3, 0.6, 0.9, 0.8, 0.2, 0.1, 0.1, 0.0, 0.0, 0.0])
    assert resolution_at_threshold(f, late, 0.5, 1.0) == math.inf
    assert resolution_at_threshold(f, late, 0.5, 1.0, rule="stays-below") == pytest.approx(
        1 / (0.2 + 0.3 / 0.6 * 0.05))
    res = FSCResult(f, c, np.ones(10, dtype=int))
    np.testing.assert_array_equal(res.crossings(0.5), down)
    assert res.resolution_angstrom(0.5, 1.0, rule="stays-below") == pytest.approx(1 / 0.325)
    with pytest.raises(ValueError, match="rule"):
        resolution_at_threshold(f, c, 0.5, 1.0, rule="last")
    with pytest.raises(ValueError, match="direction"):
        threshold_crossings(f, c, 0.5, direction="sideways")


def test_metrics_table_says_which_fsc_rule():
    from cryowedge.metrics.report import FSC_RESOLUTION_RULE, fsc_rule_note

    rows = {"WBP": {"psnr": 20.0, "fsc05_angstrom": 40.0, "fsc0143_angstrom": 25.0}}
    lines = metrics_table_markdown(rows, normalize="affine").splitlines()
    assert lines[0] == normalization_note("affine")
    assert lines[1] == fsc_rule_note(FSC_RESOLUTION_RULE)
    assert "stays below the threshold" in lines[1] and "'stays-below'" in lines[1]
    assert lines[2] == "" and lines[3].startswith("| method | psnr | fsc05_angstrom")
    assert metrics_table_markdown(rows, fsc_rule="first-below").splitlines()[0] == fsc_rule_note(
        "first-below")
    # no FSC column, no FSC note
    assert len(metrics_table_markdown(rows, columns=["psnr"], normalize="none").splitlines()) == 5
    with pytest.raises(ValueError, match="rule"):
        metrics_table_markdown(rows, fsc_rule="best")


def test_metrics_table_markdown():
    rows = {
        "WBP": {"psnr": 21.23456, "ssim": 0.5, "fsc0143_angstrom": math.inf},
        "SIRT|x": {"psnr": 25.0, "ssim": 0.712345678, "extra": 123456.0},
    }
    table = metrics_table_markdown(rows)
    lines = table.strip().splitlines()
    assert lines[0] == "| method | psnr | ssim | fsc0143_angstrom | extra |"
    assert lines[1].startswith("| --- |")
    assert lines[2] == "| WBP | 21.23 | 0.5 | inf |  |"
    assert lines[3] == "| SIRT\\|x | 25 | 0.7123 |  | 1.235e+05 |"
    assert len(lines) == 4
    short = metrics_table_markdown(rows, columns=["ssim"], significant_digits=3)
    assert short.splitlines()[3] == "| SIRT\\|x | 0.712 |"


# ----------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    a, b = np.zeros((4, 5, 6)), np.zeros((4, 5, 7))
    for fn in (mse, rmse, psnr, ssim, pearson_correlation, normalized_cross_correlation,
               fourier_shell_correlation, compare_volumes):
        with pytest.raises(ValueError, match=r"\(4, 5, 6\).*\(4, 5, 7\)"):
            fn(a, b)
    with pytest.raises(ValueError, match=r"\(4, 5, 6\).*\(4, 5, 7\)"):
        fourier_region_correlation(a, b, np.ones((4, 5, 6), dtype=bool))


def test_bad_masks_raise():
    ref = smooth_random((12, 12, 12), seed=31)
    x = ref + 0.1
    with pytest.raises(ValueError, match="empty"):
        psnr(x, ref, mask=np.zeros(ref.shape, dtype=bool))
    with pytest.raises(ValueError, match=r"\(12, 12\).*\(12, 12, 12\)"):
        mse(x, ref, mask=np.ones((12, 12), dtype=bool))
    with pytest.raises(TypeError, match="boolean.*float64"):
        pearson_correlation(x, ref, mask=np.ones(ref.shape))
    with pytest.raises(ValueError, match="all zero"):
        fourier_shell_correlation(x, ref, mask=np.zeros(ref.shape))
    corner = np.zeros(ref.shape, dtype=bool)
    corner[:2, :2, :2] = True
    with pytest.raises(ValueError, match="border"):
        ssim(x, ref, mask=corner, data_range=1.0)


def test_bad_values_raise():
    ref = smooth_random((16, 16), seed=32)
    x = ref + 0.1
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, ref, data_range=0.0)
    with pytest.raises(ValueError, match="data_range.*-1"):
        ssim(x, ref, data_range=-1)
    with pytest.raises(ValueError, match="constant"):
        psnr(x, np.ones_like(ref))
    with pytest.raises(ValueError, match="sigma"):
        ssim(x, ref, sigma=0.0)
    with pytest.raises(ValueError, match=r"at least 11.*\(16, 8\)"):
        ssim(x[:, :8], ref[:, :8])
    assert np.isfinite(ssim(x[:, :8], ref[:, :8], crop_border=False))
    with pytest.raises(ValueError, match="2D or 3D.*1D"):
        ssim(x[0], ref[0])
    with pytest.raises(ValueError, match="2D or 3D.*4D"):
        fourier_shell_correlation(np.zeros((4, 4, 4, 4)), np.zeros((4, 4, 4, 4)))
    with pytest.raises(ValueError, match="non-finite.*\\(2, 3\\)"):
        x_nan = x.copy()
        x_nan[2, 3] = np.nan
        mse(x_nan, ref)
    with pytest.raises(TypeError, match="complex"):
        mse(x + 0j, ref)
    with pytest.raises(ValueError, match="shape=\\(\\)"):
        mse(np.float64(1.0), np.float64(2.0))
    with pytest.raises(ValueError, match="n_shells.*8.*got 9"):
        fourier_shell_correlation(x, ref, n_shells=9)
    with pytest.raises(ValueError, match="n_shells.*got 0"):
        fourier_shell_correlation(x, ref, n_shells=0)
    with pytest.raises(ValueError, match="at least 2"):
        fourier_shell_correlation(np.zeros((1, 8)), np.zeros((1, 8)))


def test_bad_resolution_inputs_raise():
    f = np.array([0.1, 0.2, 0.3])
    c = np.array([0.9, 0.5, 0.1])
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        resolution_at_threshold(f, c[:2], 0.5, 1.0)
    with pytest.raises(ValueError, match="increasing"):
        resolution_at_threshold(f[::-1], c, 0.5, 1.0)
    with pytest.raises(ValueError, match="pixel_size_angstrom.*0"):
        resolution_at_threshold(f, c, 0.5, 0.0)
    with pytest.raises(ValueError, match="threshold.*1.5"):
        resolution_at_threshold(f, c, 1.5, 1.0)
    with pytest.raises(ValueError, match="no finite"):
        resolution_at_threshold(f, np.full(3, np.nan), 0.5, 1.0)
    with pytest.raises(ValueError, match="pixel_size_angstrom"):
        compare_volumes(np.ones((12, 12)), np.eye(12), pixel_size_angstrom=-1.0)


def test_bad_regions_raise():
    shape = (8, 8, 8)
    a = np.random.default_rng(33).normal(size=shape)
    with pytest.raises(ValueError, match="region is empty"):
        fourier_region_correlation(a, a, np.zeros(shape, dtype=bool))
    with pytest.raises(ValueError, match=r"\(8, 8, 5\).*\(8, 8, 8\)"):
        fourier_region_correlation(a, a, np.ones((8, 8, 5), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        missing_wedge_correlations(a, a, np.ones(shape, dtype=np.uint8))
    with pytest.raises(ValueError, match="no missing"):
        missing_wedge_correlations(a, a, np.zeros(shape, dtype=bool))
    with pytest.raises(ValueError, match="every Fourier point"):
        missing_wedge_correlations(a, a, np.ones(shape, dtype=bool))
    with pytest.raises(ValueError, match="3D.*2D"):
        missing_wedge_correlations(a[0], a[0], np.ones((8, 8), dtype=bool))
    with pytest.raises(ValueError, match="non-empty mapping"):
        metrics_table_markdown({})
    with pytest.raises(TypeError, match="rows\\['a'\\]"):
        metrics_table_markdown({"a": 1.0})
