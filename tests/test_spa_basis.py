"""Kaiser–Bessel basis: closed forms vs quadrature, scaling identities, tables, re-expansion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate, special

from cryowedge.spa.basis import (
    RECONSTRUCTION_BLOB,
    SIMULATION_BLOB,
    KaiserBesselBlob,
    check_scale,
    coarse_size,
    coefficient_positions,
    expand,
    refine_coefficients,
)

torch.set_num_threads(1)

BLOBS = [RECONSTRUCTION_BLOB, SIMULATION_BLOB, KaiserBesselBlob(2.0, 10.83, 2.0)]


@pytest.mark.parametrize("blob", BLOBS, ids=str)
def test_projected_blob_matches_line_integral(blob):
    """Prop. 1 (4.40): closed form vs numerical ∫ ϕ(√(r² + t²)) dt."""
    for r in np.array([0.0, 0.3, 0.8, 1.4, 1.9, 2.7, 3.6]) * blob.radius / 4.0:
        half = np.sqrt(blob.radius**2 - r**2)
        ref, _ = integrate.quad(
            lambda t, r=r: float(blob.value(np.hypot(r, t))),
            -half,
            half,
            epsabs=1e-15,
            epsrel=1e-13,
        )
        assert blob.projected(r) == pytest.approx(ref, rel=1e-10, abs=1e-14)
    assert blob.projected(blob.radius) == 0.0 and blob.projected(blob.radius + 0.1) == 0.0


@pytest.mark.parametrize("blob", BLOBS, ids=str)
@pytest.mark.parametrize("scale", [1, 2])
def test_projected_derivative_matches_finite_differences(blob, scale):
    """(4.41) radial derivative and the 2D gradient vs central differences."""
    r = np.linspace(0.05, 0.97, 13) * blob.radius * scale
    h = 1e-5
    fd = (blob.projected(r + h, scale) - blob.projected(r - h, scale)) / (2 * h)
    an = blob.projected_derivative(r, scale)
    np.testing.assert_allclose(an, fd, rtol=1e-7, atol=1e-9 * np.abs(an).max())
    y = np.array([[0.7, -1.1], [-0.2, 0.4], [0.0, 0.0]]) * scale
    grad = blob.projected_gradient(y, scale)
    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        fdi = (
            blob.projected(np.linalg.norm(y + e, axis=1), scale)
            - blob.projected(np.linalg.norm(y - e, axis=1), scale)
        ) / (2 * h)
        np.testing.assert_allclose(grad[:, i], fdi, rtol=1e-7, atol=1e-10)
    assert np.all(grad[2] == 0.0)


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("blob", BLOBS[:2], ids=str)
def test_fourier_transform_is_hankel_transform_of_projection(blob):
    """Central slice: ϕ̂(q) = 2π ∫ P{ϕ}(r) J₀(2πqr) r dr; ϕ̂(0) = ∫ϕ."""
    vol, _ = integrate.quad(
        lambda r: 4 * np.pi * r * r * float(blob.value(r)),
        0,
        blob.radius,
        epsabs=1e-15,
        epsrel=1e-13,
    )
    assert blob.integral() == pytest.approx(vol, rel=1e-11)
    for q in [0.05, 0.2, 0.45, 0.8]:
        ref, _ = integrate.quad(
            lambda r, q=q: 2 * np.pi * r * float(blob.projected(r)) * special.j0(2 * np.pi * q * r),
            0,
            blob.radius,
            epsabs=1e-15,
            epsrel=1e-12,
            limit=200,
        )
        assert blob.fourier(q) == pytest.approx(ref, rel=1e-9, abs=1e-12 * vol)


@pytest.mark.parametrize("blob", BLOBS[:2], ids=str)
def test_autocorrelation_matches_direct_integrals(blob):
    """G(0) = ∫ ψ²; G(ρ) = ∫ ψ(y) ψ(y − ρ e_x) dy (2D quadrature); support 2a."""
    g0, _ = integrate.quad(
        lambda r: 2 * np.pi * r * float(blob.projected(r)) ** 2,
        0,
        blob.radius,
        epsabs=1e-15,
        epsrel=1e-13,
    )
    assert blob.projected_autocorrelation(0.0) == pytest.approx(g0, rel=1e-11)
    rho = 0.6 * blob.radius
    a = blob.radius
    ref, _ = integrate.dblquad(
        lambda y, x: float(blob.projected(np.hypot(x, y)) * blob.projected(np.hypot(x - rho, y))),
        rho - a,
        a,
        lambda x: -np.sqrt(max(a * a - x * x, 0.0)),
        lambda x: np.sqrt(max(a * a - x * x, 0.0)),
        epsabs=1e-12,
        epsrel=1e-10,
    )
    assert blob.projected_autocorrelation(rho) == pytest.approx(ref, rel=1e-8)
    assert blob.projected_autocorrelation(2 * blob.radius + 0.01) == 0.0


def test_scaled_blob_identities():
    """ϕ_s = ϕ(·/s): P{ϕ_s}(r) = s P{ϕ}(r/s), ϕ̂_s(q) = s³ ϕ̂(sq), G_s(ρ) = s⁴ G(ρ/s)."""
    blob = RECONSTRUCTION_BLOB
    r = np.linspace(0.0, 9.0, 7)
    for s in (2, 3):
        np.testing.assert_allclose(blob.value(r, s), blob.value(r / s))
        np.testing.assert_allclose(blob.projected(r, s), s * blob.projected(r / s))
        np.testing.assert_allclose(blob.fourier(r / 10, s), s**3 * blob.fourier(s * r / 10))
        np.testing.assert_allclose(
            blob.projected_autocorrelation(r, s),
            s**4 * blob.projected_autocorrelation(r / s),
            rtol=1e-12,
        )
        # the 2D integral of the projection is the 3D integral of the blob
        area, _ = integrate.quad(
            lambda x, s=s: 2 * np.pi * x * float(blob.projected(x, s)),
            0,
            s * blob.radius,
            epsabs=1e-13,
            epsrel=1e-12,
        )
        assert area == pytest.approx(blob.integral(s), rel=1e-10)


@pytest.mark.parametrize("scale", [1, 3])
def test_tables_match_closed_forms(scale):
    blob = RECONSTRUCTION_BLOB
    r = np.linspace(0.0, 1.05 * scale * blob.radius, 997)
    tab = blob.projected_table(scale)
    got = tab(torch.as_tensor(r**2)).numpy()
    ref = blob.projected(r, scale)
    assert np.abs(got - ref).max() < 1e-8 * ref.max()
    rho = np.linspace(0.0, 2.05 * scale * blob.radius, 997)
    gt = blob.autocorrelation_table(scale)(torch.as_tensor(rho**2)).numpy()
    gr = blob.projected_autocorrelation(rho, scale)
    assert np.abs(gt - gr).max() < 1e-9 * gr.max()


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_expand_equals_direct_sum(rng, scale):
    """f̃_s(x) = Σ c[k] ϕ_s(x − s k) on the fine grid (coefficient k at s·(k − n_s//2))."""
    blob = SIMULATION_BLOB
    n_s = 4
    c = rng.standard_normal((n_s,) * 3)
    n = scale * n_s + 1
    got = expand(c, blob, scale, n).numpy()
    pos = coefficient_positions(n_s, scale)
    fine = np.arange(n) - n // 2
    ref = np.zeros((n,) * 3)
    kz, ky, kx = np.meshgrid(pos, pos, pos, indexing="ij")
    for iz in range(n):
        for iy in range(n):
            for ix in range(n):
                r = np.sqrt((fine[iz] - kz) ** 2 + (fine[iy] - ky) ** 2 + (fine[ix] - kx) ** 2)
                ref[iz, iy, ix] = np.sum(c * blob.value(r, scale))
    np.testing.assert_allclose(got, ref, atol=1e-12 * np.abs(ref).max())


def test_refine_coefficients_interpolates_the_coarse_expansion(rng):
    """Coefficients re-expanded from s = 2 to s = 1 reproduce f̃_2 at every fine voxel."""
    blob = RECONSTRUCTION_BLOB
    n_s = 6
    c = torch.as_tensor(rng.standard_normal((n_s,) * 3))
    fine = refine_coefficients(c, blob, scale=2, new_scale=1)
    assert fine.shape == (12, 12, 12)
    f_coarse = expand(c, blob, 2, 12)
    f_fine = expand(fine, blob, 1, 12)
    # exact where every contributing coefficient lies inside the crop (> a = 4 voxels inside)
    inner = (slice(3, 9),) * 3
    err = float((f_fine[inner] - f_coarse[inner]).abs().max() / f_coarse.abs().max())
    assert err < 1e-10
    # a smooth, compact object is reproduced on the whole grid
    g = np.arange(8) - 4
    zz, yy, xx = np.meshgrid(g, g, g, indexing="ij")
    smooth = torch.as_tensor(np.exp(-(xx**2 + yy**2 + zz**2) / 3.0))
    f_c = expand(smooth, blob, 2, 16)
    f_f = expand(refine_coefficients(smooth, blob, 2, 1), blob, 1, 16)
    assert float((f_f - f_c).abs().max() / f_c.abs().max()) < 1e-2
    same = refine_coefficients(c, blob, scale=2, new_scale=2)
    assert torch.equal(same, c)


def test_sizes_and_positions():
    assert coarse_size(64, 1) == 64 and coarse_size(64, 3) == 22 and coarse_size(65, 2) == 33
    np.testing.assert_array_equal(coefficient_positions(4, 2), [-4.0, -2.0, 0.0, 2.0])


def test_bad_input():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            check_scale(bad)
    assert check_scale(2.0) == 2
    with pytest.raises(ValueError, match="cubic"):
        expand(np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="radius"):
        KaiserBesselBlob(radius=-1.0)
    with pytest.raises(ValueError, match="order"):
        KaiserBesselBlob(order=-2.0)
    with pytest.raises(ValueError, match="divide"):
        refine_coefficients(np.zeros((4, 4, 4)), scale=3, new_scale=2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        RECONSTRUCTION_BLOB.projected_gradient(np.zeros((3, 3)))
