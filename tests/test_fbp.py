"""FBP / WBP: agreement with scikit-image's iradon, filters, round trips, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge.geometry.tilt import TiltGeometry, angular_weights_rad
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.filters import (
    FILTER_NAMES,
    WBP_FILTER_NAMES,
    exact_weighting,
    fbp_filter,
    ramp_response,
    sirt_like_factor,
)
from cryowedge.recon.fbp import fbp, wbp

skimage = pytest.importorskip("skimage")
from skimage.data import shepp_logan_phantom  # noqa: E402
from skimage.transform import iradon, radon, resize  # noqa: E402

N = 256


@pytest.fixture(scope="module")
def shepp_logan_case():
    img = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True).astype(np.float32)
    theta = np.arange(-90, 91, 1.0)
    sino = radon(img, theta=theta, circle=True)  # (detector, n_angles)
    # skimage's angle θ is our -θ (rows of the image = our z): reverse the stack order.
    stack = np.ascontiguousarray(sino.T[::-1][:, None, :])  # (n_tilts, 1, N)
    geom = TiltGeometry(tilt_angles_deg=theta, detector_shape=(1, N))
    yy, xx = np.mgrid[:N, :N]
    circle = ((yy - N // 2) ** 2 + (xx - N // 2) ** 2) < (N // 2 - 2) ** 2
    return img, theta, sino, stack, geom, circle


def _psnr(x, ref):
    return 10 * np.log10((ref.max() - ref.min()) ** 2 / np.mean((x - ref) ** 2))


def test_fbp_matches_skimage_iradon(shepp_logan_case):
    img, theta, sino, stack, geom, circle = shepp_logan_case
    ours = fbp(stack, geom, volume_shape=(N, 1, N), padding="zero")[:, 0, :].numpy()
    ref = iradon(sino, theta=theta, circle=True, filter_name="ramp")
    diff = ours[circle] - ref[circle]
    rel_rms = np.sqrt(np.mean(diff**2)) / np.sqrt(np.mean(ref[circle] ** 2))
    # Budget: both are linear-interpolation FBPs with the same band-limited ramp; they
    # differ in the forward-model footprint at the detector edges (measured 1.9 %).
    assert rel_rms < 0.03
    assert np.corrcoef(ours[circle], ref[circle])[0, 1] > 0.999
    # and it is as close to the phantom as iradon (measured 29.6 vs 29.5 dB)
    assert _psnr(ours[circle], img[circle]) > _psnr(ref[circle], img[circle]) - 0.5


@pytest.mark.parametrize("name", [f for f in FILTER_NAMES if f != "none"])
def test_every_filter_reconstructs(shepp_logan_case, name):
    img, _, _, stack, geom, circle = shepp_logan_case
    rec = fbp(stack, geom, volume_shape=(N, 1, N), padding="zero", filter_name=name, sirt_iterations=200)
    rec = rec[:, 0, :].numpy()
    assert np.corrcoef(rec[circle], img[circle])[0, 1] > 0.93


def test_windows_trade_sharpness_for_noise(shepp_logan_case):
    img, _, _, stack, geom, circle = shepp_logan_case
    noisy = stack + np.random.default_rng(0).normal(0, 2.0, stack.shape).astype(np.float32)
    score = {
        name: _psnr(fbp(noisy, geom, volume_shape=(N, 1, N), filter_name=name)[:, 0, :].numpy()[circle], img[circle])
        for name in ("ram-lak", "hann")
    }
    assert score["hann"] > score["ram-lak"] + 1.0


def test_sirt_like_filter_tends_to_ramp():
    ramp = ramp_response(512)
    gaps = [np.abs(ramp * sirt_like_factor(ramp, k) - ramp).max() for k in (1, 10, 100, 1000, 10000)]
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 0.05 * ramp.max()


def test_fbp_filter_ramp_is_abs_frequency():
    n_pad, h = fbp_filter(128, "ram-lak")
    freq = np.fft.rfftfreq(n_pad)
    # the band-limited ramp is |ν| away from DC (within its small low-frequency lift)
    np.testing.assert_allclose(h[8:], freq[8:], rtol=0.02)
    assert 0 < h[0] < 0.01


def test_round_trip_full_range_3d():
    """Our own projector + FBP over ±90° recovers a smooth blob volume."""
    z, y, x = np.mgrid[:32, :6, :32]
    vol = np.exp(-((z - 14) ** 2 + (x - 18) ** 2) / 30.0) + 0.5 * np.exp(-((z - 20) ** 2 + (x - 9) ** 2) / 10.0)
    vol = (vol * (1 + 0.1 * y)).astype(np.float32)
    geom = TiltGeometry.from_range(-90, 90, 1, (6, 32))
    data = TiltProjector(geom, vol.shape)(torch.from_numpy(vol))
    rec = fbp(data, geom, volume_shape=vol.shape, padding="zero").numpy()
    assert np.corrcoef(rec.ravel(), vol.ravel())[0, 1] > 0.995
    assert rec.sum() == pytest.approx(vol.sum(), rel=0.05)


def test_wbp_close_to_fbp_for_dense_uniform_tilts(shepp_logan_case):
    img, _, _, stack, geom, circle = shepp_logan_case
    f = fbp(stack, geom, volume_shape=(N, 1, N), padding="zero")[:, 0, :].numpy()
    w = wbp(stack, geom, volume_shape=(N, 1, N), padding="zero")[:, 0, :].numpy()
    assert np.corrcoef(f[circle], w[circle])[0, 1] > 0.99


def test_wbp_compensates_uneven_sampling():
    """Dense tilts on one side must not over-weight that side: WBP beats plain BP."""
    z, x = np.mgrid[:48, :48]
    vol = ((z - 24) ** 2 + (x - 20) ** 2 < 60).astype(np.float32)[:, None, :]
    angles = np.concatenate([np.arange(-90, 0, 6.0), np.arange(0, 90, 1.0)])
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=(1, 48))
    data = TiltProjector(geom, vol.shape)(torch.from_numpy(vol))
    w = wbp(data, geom, volume_shape=vol.shape, padding="zero").numpy()
    b = fbp(data, geom, volume_shape=vol.shape, filter_name="none").numpy()
    assert np.corrcoef(w.ravel(), vol.ravel())[0, 1] > np.corrcoef(b.ravel(), vol.ravel())[0, 1] + 0.1


def test_bad_input_errors():
    geom = TiltGeometry.from_range(-60, 60, 20, (8, 8))
    good = np.zeros((7, 8, 8), np.float32)
    with pytest.raises(ValueError, match="has 6 images but the geometry has 7 tilt angles"):
        fbp(good[:6], geom)
    with pytest.raises(ValueError, match=r"must be a 3D or 4D array .*got 2D"):
        fbp(good[0], geom)
    bad = good.copy()
    bad[2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value.*\(2, 3, 4\)"):
        fbp(bad, geom)
    with pytest.raises(ValueError, match="unknown filter 'butterworth'"):
        fbp(good, geom, filter_name="butterworth")
    with pytest.raises(ValueError, match="images are"):
        fbp(np.zeros((7, 8, 9), np.float32), geom)
    with pytest.raises(ValueError, match="cutoff must lie in"):
        fbp(good, geom, cutoff=1.5)


# --------------------------------------------------------------------------- WBP filter names


def _small_wbp_case():
    z, x = np.mgrid[:24, :32]
    vol = (((z - 12) ** 2 + (x - 14) ** 2) < 30).astype(np.float64)[:, None, :]
    geom = TiltGeometry.from_range(-60, 60, 3, (1, 32))
    data = TiltProjector(geom, vol.shape)(torch.from_numpy(vol))
    return vol, geom, data


def test_wbp_filter_none_is_plain_back_projection():
    """``"none"`` means no filter for WBP as for FBP (it used to apply the exact weighting)."""
    vol, geom, data = _small_wbp_case()
    plain = wbp(data, geom, volume_shape=vol.shape, filter_name="none")
    torch.testing.assert_close(plain, fbp(data, geom, volume_shape=vol.shape, filter_name="none"))
    # the unfiltered back-projection is the Δθ-weighted adjoint, exactly
    weights = torch.as_tensor(angular_weights_rad(geom.tilt_angles_deg))[:, None, None]
    bp = TiltProjector(geom, vol.shape).adjoint(data * weights)
    torch.testing.assert_close(plain, bp)
    weighted = wbp(data, geom, volume_shape=vol.shape, filter_name="ram-lak")
    assert float((plain - weighted).abs().max()) > 0.1 * float(weighted.abs().max())


@pytest.mark.parametrize("name", ["hann", "cosine", "shepp-logan", "hamming"])
def test_wbp_windows_are_applied(name):
    vol, geom, data = _small_wbp_case()
    flat = wbp(data, geom, volume_shape=vol.shape, filter_name="ram-lak")
    windowed = wbp(data, geom, volume_shape=vol.shape, filter_name=name)
    assert not torch.allclose(flat, windowed)


@pytest.mark.parametrize("name", ["sirt", "SIRT"])
def test_wbp_refuses_sirt_filter(name):
    vol, geom, data = _small_wbp_case()
    with pytest.raises(ValueError, match=r"filter '(sirt|SIRT)' is not available for WBP.*ram-lak"):
        wbp(data, geom, volume_shape=vol.shape, filter_name=name)
    assert "sirt" not in WBP_FILTER_NAMES and set(WBP_FILTER_NAMES) < set(FILTER_NAMES)


# --------------------------------------------------------------------------- exact weighting


def _exact_weighting_unchunked(angles_deg, freq, thickness):
    """The direct ``(n_tilts, n_tilts, n_freq)`` evaluation, for reference."""
    theta = np.deg2rad(angles_deg)
    dsin = np.abs(np.sin(theta[:, None] - theta[None, :]))
    s = thickness * np.abs(freq)[None, None, :] * dsin[:, :, None]
    return 1.0 / (thickness * np.clip(1.0 - s, 0.0, None).sum(axis=1))


@pytest.mark.parametrize("max_work_bytes", [8, 8 * 7 * 3, 8 * 41 * 5, 2**20, 2**30])
def test_exact_weighting_chunked_equals_unchunked(max_work_bytes):
    angles = np.concatenate([np.arange(-60, 0, 4.0), np.arange(0, 61, 2.0)])  # uneven, 46 tilts
    freq = np.fft.rfftfreq(256)
    ref = _exact_weighting_unchunked(angles, freq, 80.0)
    got = exact_weighting(angles, freq, 80.0, max_work_bytes=max_work_bytes)
    assert got.shape == (angles.size, freq.size)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)


def test_exact_weighting_work_memory_is_bounded():
    import tracemalloc

    angles = np.linspace(-60, 60, 61)
    freq = np.fft.rfftfreq(2048)  # 1025 frequencies: the direct way needs 61²·1025·8 B ≈ 30 MB
    exact_weighting(angles, freq, 100.0, max_work_bytes=2**16)  # warm up imports/caches
    tracemalloc.start()
    try:
        exact_weighting(angles, freq, 100.0, max_work_bytes=2**16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out_bytes = angles.size * freq.size * 8  # ≈ 0.5 MB: the result and its density
    assert peak < 2 * out_bytes + 2**20  # measured 0.7 MB; the direct way peaks at ≈ 31 MB


def test_imod_preset_is_ramp_with_imod_radial_filter():
    n_pad, ramp = fbp_filter(128, "ram-lak")
    _, preset = fbp_filter(128, "imod")
    freq = np.fft.rfftfreq(n_pad)
    below = freq <= 0.35
    np.testing.assert_allclose(preset[below], ramp[below])
    # Gaussian fall-off of σ 0.035 beyond 0.35 cycles/px: one σ out, e^-1/2 of the ramp
    i = int(np.argmin(np.abs(freq - (0.35 + 0.035))))
    expected = np.exp(-((freq[i] - 0.35) ** 2) / (2 * 0.035**2))
    np.testing.assert_allclose(preset[i] / ramp[i], expected, rtol=1e-9)
    # an explicit cut-off wins over the preset's
    _, explicit = fbp_filter(128, "imod", radial_cutoff=0.25)
    _, same = fbp_filter(128, "ram-lak", radial_cutoff=0.25)
    np.testing.assert_allclose(explicit, same)
    # WBP applies the preset too
    vol, geom, data = _small_wbp_case()
    plain = wbp(data, geom, volume_shape=vol.shape, filter_name="ram-lak")
    imod = wbp(data, geom, volume_shape=vol.shape, filter_name="imod")
    assert not torch.allclose(plain, imod)
