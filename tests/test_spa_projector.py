"""SPA blob projector: exact adjoint, closed-form blob, RELION convention, solvers, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowedge.geometry.rotations import euler_zyz_to_matrix, random_rotations, rotate_volume
from cryowedge.simulate.ctf import ctf_2d
from cryowedge.solvers import cgls, tv_admm
from cryowedge.spa.basis import RECONSTRUCTION_BLOB, SIMULATION_BLOB, expand
from cryowedge.spa.projector import SpaProjector

torch.set_num_threads(1)


def _ctfs(n_proj: int, n_det: int) -> np.ndarray:
    return np.stack(
        [
            ctf_2d(
                n_det,
                pixel_size_angstrom=2.5,
                defocus_u_angstrom=9000.0 + 700.0 * i,
                defocus_v_angstrom=8000.0 + 400.0 * i,
                astigmatism_angle_deg=25.0 * i,
                b_factor_angstrom2=40.0,
            )
            for i in range(n_proj)
        ]
    )


def _dot(op: SpaProjector, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(op.domain_shape, generator=gen, dtype=torch.float64)
    y = torch.randn(op.range_shape, generator=gen, dtype=torch.float64)
    lhs = float(torch.sum(op.forward(x) * y))
    rhs = float(torch.sum(x * op.adjoint(y)))
    return abs(lhs - rhs) / abs(lhs)


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("with_ctf", [False, True])
def test_adjoint_is_exact(rng, scale, with_ctf):
    """⟨Hc, b⟩ = ⟨c, Hᵀb⟩ (float64) with shifts, footprints cut by the detector, small chunks."""
    n_proj, n = 7, 7
    n_det = 12 if scale == 1 else 20
    op = SpaProjector(
        n,
        random_rotations(n_proj, rng),
        rng.normal(scale=2.0, size=(n_proj, 2)),
        scale=scale,
        detector_size=n_det,
        ctf=_ctfs(n_proj, n_det) if with_ctf else None,
        dtype=torch.float64,
        chunk_elements=3000,
    )
    assert _dot(op) < 1e-12
    x = torch.randn(op.domain_shape, dtype=torch.float64)
    torch.testing.assert_close(op.normal(x), op.adjoint(op.forward(x)), rtol=1e-12, atol=1e-12)


def test_batches_callable_ctf_and_subsets(rng):
    n_proj, n, n_det = 5, 6, 10
    rot = random_rotations(n_proj, rng)
    shifts = rng.normal(size=(n_proj, 2))
    ctf = _ctfs(n_proj, n_det)
    op = SpaProjector(n, rot, shifts, ctf=ctf, detector_size=n_det, dtype=torch.float64)
    lazy = SpaProjector(
        n, rot, shifts, ctf=lambda idx: ctf[idx], detector_size=n_det, dtype=torch.float64
    )
    half = SpaProjector(
        n, rot, shifts, ctf=ctf[..., : n_det // 2 + 1], detector_size=n_det, dtype=torch.float64
    )
    x = torch.randn((2,) + op.domain_shape, dtype=torch.float64)
    y = op.forward(x)
    assert y.shape == (2,) + op.range_shape
    torch.testing.assert_close(y[1], op.forward(x[1]))
    torch.testing.assert_close(lazy.forward(x), y, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(half.forward(x), y, rtol=1e-13, atol=1e-13)  # ctf_2d is even
    sub = op.subset([3, 1])
    torch.testing.assert_close(sub.forward(x[0]), y[0, [3, 1]], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(
        lazy.subset([3, 1]).forward(x[0]), y[0, [3, 1]], rtol=1e-13, atol=1e-13
    )
    b = torch.randn(op.range_shape, dtype=torch.float64)
    torch.testing.assert_close(lazy.adjoint(b), op.adjoint(b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [1, 2])
def test_single_blob_projects_to_closed_form(scale):
    """A unit coefficient at the centre gives P{ϕ_s}(|j − centre − t|) at any orientation."""
    n, n_proj = 5, 4
    shifts = np.array([[0.0, 0.0], [0.3, -1.2], [-2.5, 0.75], [1.0, 1.0]])
    op = SpaProjector(
        n,
        random_rotations(n_proj, 3),
        shifts,
        blob=SIMULATION_BLOB,
        scale=scale,
        detector_size=16,
        dtype=torch.float64,
    )
    c = torch.zeros(op.domain_shape, dtype=torch.float64)
    c[n // 2, n // 2, n // 2] = 1.0
    img = op.forward(c).numpy()
    j = np.arange(16) - 8
    for p in range(n_proj):
        r = np.hypot(j[:, None] - shifts[p, 0], j[None, :] - shifts[p, 1])
        ref = SIMULATION_BLOB.projected(r, scale)
        assert np.abs(img[p] - ref).max() < 1e-8 * ref.max()


def test_blob_lands_at_projected_position():
    """A coefficient at map position r (x, y, z) lands at (row, col) = centre + (M r)_(y, x)."""
    n = 9
    rot = euler_zyz_to_matrix(35.0, 60.0, -20.0)[None]
    op = SpaProjector(n, rot, dtype=torch.float64, detector_size=24)
    c = torch.zeros(op.domain_shape, dtype=torch.float64)
    c[4 + 3, 4 - 2, 4 + 1] = 1.0  # (z, y, x) = (3, -2, 1) relative to the centre
    img = op.forward(c)[0].numpy()
    u = rot[0, :2] @ np.array([1.0, -2.0, 3.0])  # (x, y) on the detector
    rows, cols = np.mgrid[:24, :24]
    centroid = np.array([np.sum(rows * img), np.sum(cols * img)]) / img.sum()
    np.testing.assert_allclose(centroid, [12 + u[1], 12 + u[0]], atol=1e-6)


def _test_volume(n: int) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*(np.arange(n) - n // 2,) * 3, indexing="ij")
    return np.exp(-((xx - 2) ** 2 + (yy + 1) ** 2 + (zz - 1) ** 2) / 6.0) + 0.6 * np.exp(
        -((xx + 3) ** 2 + (yy - 2) ** 2 + (zz + 2) ** 2) / 3.0
    )


@pytest.mark.parametrize("angles", [(0, 0, 0), (90, 0, 0), (0, 90, 0), (0, 90, 90), (180, 90, -90)])
def test_quarter_turns_equal_rotate_volume_then_sum_z(angles):
    """Summing rotate_volume(f̃, R) along z is the projection for R (quarter turns: exact)."""
    n, big = 14, 32
    coef = _test_volume(n)
    rot = euler_zyz_to_matrix(*angles)
    vol = expand(coef, RECONSTRUCTION_BLOB, 1, big).numpy()  # the continuous model on a large grid
    ref = rotate_volume(vol, rot, order=1).sum(axis=0)
    got = (
        SpaProjector(n, rot[None], detector_size=big, dtype=torch.float64).forward(coef)[0].numpy()
    )
    assert np.abs(got - ref).max() < 1e-6 * np.abs(ref).max()


def test_generic_rotation_matches_rotate_volume():
    n, big = 14, 32
    coef = _test_volume(n)
    rot = euler_zyz_to_matrix(30.0, 50.0, 70.0)
    vol = expand(coef, RECONSTRUCTION_BLOB, 1, big).numpy()
    ref = rotate_volume(vol, rot, order=3).sum(axis=0)
    got = (
        SpaProjector(n, rot[None], detector_size=big, dtype=torch.float64).forward(coef)[0].numpy()
    )
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9999


def test_solvers_run_on_the_projector(rng):
    """cgls and tv_admm take the projector unchanged and reduce the residual."""
    n = 6
    op = SpaProjector(
        n, random_rotations(12, rng), detector_size=10, blob=SIMULATION_BLOB, dtype=torch.float64
    )
    truth = torch.as_tensor(_test_volume(n))
    b = op.forward(truth)
    res = cgls(op, b, n_iter=15)
    r0 = float(torch.linalg.vector_norm(b))
    assert res.history["residual_norm"][-1] < 0.05 * r0
    res_tv = tv_admm(op, b, lam=1e-3, n_iter=5, cg_iter=5, positivity=True)
    assert res_tv.history["residual_norm"][-1] < 0.2 * r0
    assert float(res_tv.x.min()) >= 0.0


def test_float32_matches_float64(rng):
    rot = random_rotations(4, rng)
    x = rng.standard_normal((6, 6, 6))
    y64 = SpaProjector(6, rot, dtype=torch.float64).forward(x)
    y32 = SpaProjector(6, rot, dtype=torch.float32).forward(x)
    assert y32.dtype == torch.float32
    assert float((y32.double() - y64).abs().max()) < 1e-5 * float(y64.abs().max())


def test_bad_input(rng):
    rot = random_rotations(3, rng)
    with pytest.raises(ValueError, match="cube"):
        SpaProjector((4, 4, 5), rot)
    with pytest.raises(ValueError, match=r"\(P, 3, 3\)"):
        SpaProjector(4, np.zeros((3, 2, 3)))
    with pytest.raises(ValueError, match="proper rotation"):
        SpaProjector(4, rot * 1.1)
    reflect = rot.copy()
    reflect[0, 2] *= -1
    with pytest.raises(ValueError, match=r"rotations\[0\]"):
        SpaProjector(4, reflect)
    with pytest.raises(ValueError, match="shifts_px"):
        SpaProjector(4, rot, np.zeros((3, 3)))
    for bad in (0, 1.5, -2):
        with pytest.raises(ValueError, match="positive integer"):
            SpaProjector(4, rot, scale=bad)
    with pytest.raises(ValueError, match="ctf"):
        SpaProjector(4, rot, ctf=np.ones((3, 5, 5)))
    with pytest.raises(ValueError, match="ctf"):
        SpaProjector(4, rot, ctf=np.ones((2, 4, 4)))
    with pytest.raises(ValueError, match="complex"):
        SpaProjector(4, rot, ctf=np.ones((3, 4, 4), dtype=complex))
    op = SpaProjector(4, rot, dtype=torch.float64)
    with pytest.raises(ValueError, match="must end in shape"):
        op.forward(torch.zeros(4, 4, 5))
    with pytest.raises(ValueError, match="must end in shape"):
        op.adjoint(torch.zeros(2, 4, 4))
    bad_callable = SpaProjector(4, rot, ctf=lambda idx: np.ones((1, 4, 4)), dtype=torch.float64)
    with pytest.raises(ValueError, match="one per index"):
        bad_callable.forward(torch.zeros(4, 4, 4))
