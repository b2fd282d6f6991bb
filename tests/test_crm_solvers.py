"""CRM solvers (CRM-SART, SIRT, Kaczmarz, TV) and the averaging baselines (AVG, M-AVG)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cryowedge.crm import CRMCopy, CRMData, sphere_support
from cryowedge.crm.baselines import (
    BASELINES,
    masked_fourier_average,
    reconstruct_copies,
    simple_average,
)
from cryowedge.crm.operator import CRMOperator, rotation_about_y
from cryowedge.crm.solvers import CRM_SOLVERS, crm_sart, crm_sirt, crm_tv
from cryowedge.geometry.rotations import random_rotations
from cryowedge.operators.elementary import FiniteDifference, MatrixOperator
from cryowedge.operators.rotation import Rotation3D
from cryowedge.solvers import IterationInfo, sart

torch.set_num_threads(1)


def _toy(
    n: int = 32, phis=(0.0, 60.0, 120.0), step: float = 5.0, seed: int = 0, radius: float = 10.0
):
    """Noise-free 2D CRM data: a particle of blobs and a disc, each copy with its own blocks."""
    shape = (n, 1, n)
    support = sphere_support(shape, radius)
    rng = np.random.default_rng(seed)
    z, x = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    h = np.exp(-((z - 3) ** 2 / 18 + (x + 4) ** 2 / 8)) + 0.7 * (((z + 3) ** 2 + (x - 3) ** 2) < 12)
    h = h * support[:, 0, :]
    op = CRMOperator(
        [CRMCopy(np.arange(-50.0, 51.0, step), rotation_about_y(p)) for p in phis], support
    )
    xt = torch.zeros(op.domain_shape, dtype=torch.float64)
    xt[0, :, 0, :] = torch.from_numpy(h)
    for i in range(op.n_copies):
        g = np.zeros((n, n))
        for _ in range(8):
            a, c = rng.integers(0, n - 6, 2)
            g[a : a + 6, c : c + 6] += rng.uniform(0.3, 1.0)
        xt[1 + i, :, 0, :] = torch.from_numpy(g * ~support[:, 0, :])
    return op, op.forward(xt), xt[0]


def _err(op: CRMOperator, particle: torch.Tensor, truth: torch.Tensor) -> float:
    return float((particle - truth).norm() / truth.norm())


# ----------------------------------------------------------------------------- CRM-SART
@pytest.mark.parametrize("order", ["sequential", "random"])
def test_crm_sart_with_one_copy_is_sart(order):
    """With N = 1 and one shared projector (particle-frame background), CRM-SART is SART on
    f = S h + (1 − S) g."""
    op = CRMOperator(
        [CRMCopy(np.arange(-50.0, 51.0, 10.0), rotation_about_y(130.0))],
        sphere_support((16, 1, 16), 5),
        background_frame="particle",
    )
    assert op.shared_projector
    b = torch.rand(op.range_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    crm = crm_sart(op, b, n_iter=4, order=order, seed=3)
    ref = sart(op.copy_projector(0), b[0], n_iter=4, order=order, seed=3, relaxation=0.2)
    torch.testing.assert_close(crm.x[0] + crm.x[1], ref.x, rtol=0, atol=1e-14)
    assert crm.history["residual_norm"] == pytest.approx(ref.history["residual_norm"], rel=1e-12)
    torch.testing.assert_close(op.particle(crm.x), crm.x[0])  # h stays on the support


@pytest.mark.parametrize("case", ["rotated3d", "folded2d-copy-frame", "folded3d-copy-frame"])
@pytest.mark.parametrize("block", ["view", "copy"])
def test_crm_sart_rotated_is_block_sart_on_the_explicit_system(block, case):
    """A 3D copy (trilinear R_i), or a 2D copy with its background in the copy frame (particle
    at θ + φ, background at θ): the per-view update equals SART on the matrix [D_i, B_i]."""
    angles = [-50.0, -30.0, -10.0, 10.0, 30.0, 50.0]
    if case == "rotated3d":
        shape = (8, 7, 9)
        op = CRMOperator([CRMCopy(angles, random_rotations(1, 3)[0])], sphere_support(shape, 3))
        assert not op.folded
    elif case == "folded2d-copy-frame":
        op = CRMOperator([CRMCopy(angles, rotation_about_y(130.0))], sphere_support((12, 1, 12), 4))
        assert op.folded and op.shared_projector and op.background_frame == "copy"
    else:  # a ball that changes along y: D_i = P(θ + φ) S and B_i = P(θ)(1 − S) apart
        op = CRMOperator([CRMCopy(angles, rotation_about_y(130.0))], sphere_support((7, 5, 8), 2.5))
        assert op.folded and not op.shared_projector
    b = torch.rand(op.range_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    crm = crm_sart(op, b, n_iter=3, order="random", seed=2, block=block)
    d, bg = op.copy_matrices(0)
    system = MatrixOperator(sp.hstack([d, bg]))
    ref = sart(
        system,
        b.reshape(-1),
        n_iter=3,
        order="random",
        seed=2,
        relaxation=0.2,
        n_blocks=op.n_tilts if block == "view" else 1,
    )
    np.testing.assert_allclose(crm.x[:2].reshape(-1).numpy(), ref.x.numpy(), atol=1e-13)


def test_crm_sart_particle_mean_is_the_mean_of_the_sweeps():
    op, b, _ = _toy(n=16, phis=(0.0, 90.0), radius=5.0)
    last = crm_sart(op, b, n_iter=1, seed=4)
    mean = crm_sart(op, b, n_iter=1, seed=4, particle="mean")
    after_first = sart(op.copy_projector(0), b[0], n_iter=1, seed=4, relaxation=0.2).x
    expected = 0.5 * (op.particle(after_first[None].expand(op.domain_shape)) + last.x[0])
    torch.testing.assert_close(mean.x[0], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean.x[1:], last.x[1:])


def test_crm_sart_beats_simple_average_on_consistent_data():
    op, b, truth = _toy()
    crm20 = crm_sart(op, b)  # paper defaults: 20 iterations, λ = 0.2
    crm60 = crm_sart(op, b, n_iter=60)
    avg = simple_average(op, b)  # per-copy SART with the same λ and iterations
    e20, e60, e_avg = (
        _err(op, op.particle(crm20.x), truth),
        _err(op, op.particle(crm60.x), truth),
        _err(op, avg, truth),
    )
    assert e20 < 0.75 * e_avg, (e20, e_avg)
    assert e60 < e20  # still converging towards the exact particle
    res = crm60.history["residual_norm"]
    assert res[-1] < 0.2 * res[0]


# ----------------------------------------------------------------------------- other solvers
def test_crm_tv_regularises_the_particle_only():
    op, b, truth = _toy()
    lam = 0.01
    result = crm_tv(op, b, n_iter=30, lam=lam)
    x = result.x
    s = torch.from_numpy(op.support).to(x)
    grad = FiniteDifference(op.volume_shape, (0, 2)).forward(x[0] * s)
    tv = float(torch.sqrt((grad**2).sum(dim=0)).sum())
    objective = (
        0.5 * float(((op.forward(x) - b) ** 2).sum()) + lam * tv
    )  # backgrounds not in the prior
    assert result.history["objective"][-1] == pytest.approx(objective, rel=1e-9)
    sirt_err = _err(op, op.particle(crm_sirt(op, b, n_iter=100).x), truth)
    assert _err(op, op.particle(x), truth) < 0.6 * sirt_err  # a piecewise-smooth particle


def test_registry_problem_input_and_callbacks():
    op, b, _ = _toy(n=12, phis=(0.0, 90.0), step=10.0, radius=4.0)
    data = CRMData(b.numpy(), op.copies, op.support)
    assert set(CRM_SOLVERS) == {"sart", "sirt", "kaczmarz", "tv"}
    assert set(BASELINES) == {"avg", "m-avg"}
    for name, solver in CRM_SOLVERS.items():
        seen: list[IterationInfo] = []
        result = solver(data, n_iter=2, callback=seen.append)  # data default: the projections
        assert tuple(result.x.shape) == op.domain_shape, name
        assert [info.iteration for info in seen] == [1, 2], name
        stopped = solver(data, n_iter=5, callback=lambda info: info.iteration == 2)
        assert stopped.n_iter == 2 and stopped.stopped_early, name
    for baseline in BASELINES.values():
        assert tuple(baseline(data, n_iter=2).shape) == op.volume_shape
    with pytest.raises(ValueError, match="data has shape"):
        crm_sart(op, b[:1])
    with pytest.raises(ValueError, match="data is required"):
        crm_sart(op)
    with pytest.raises(ValueError, match="block"):
        crm_sart(op, b, block="tilt")


# ----------------------------------------------------------------------------- baselines
def test_masked_average_equals_simple_average_with_full_tilt_range():
    """Every copy measures every direction: the Fourier weights are all 1, M-AVG = AVG·N/(N + ε)."""
    full = np.arange(-90.0, 91.0, 15.0)
    gen = torch.Generator().manual_seed(5)
    for shape, rots in (
        ((12, 1, 14), [rotation_about_y(p) for p in (0.0, 70.0, 150.0)]),
        ((8, 9, 10), list(random_rotations(3, 2))),
    ):
        op = CRMOperator([CRMCopy(full, r) for r in rots], sphere_support(shape, 3.5))
        copies = torch.randn(op.n_copies, *shape, generator=gen, dtype=torch.float64)
        avg = simple_average(op, copies=copies)
        eps = 0.01
        mavg = masked_fourier_average(op, copies=copies, eps=eps)
        torch.testing.assert_close(mavg * (3 + eps) / 3, avg, rtol=1e-10, atol=1e-12)
    # with a limited range the weights matter: M-AVG differs from AVG
    op, b, truth = _toy()
    rec = reconstruct_copies(op, b)
    avg, mavg = simple_average(op, copies=rec), masked_fourier_average(op, copies=rec)
    assert _err(op, mavg, truth) < 0.8 * _err(op, avg, truth)


def test_reconstruct_copies_rotated_back_into_the_particle_frame():
    """A 2D problem solved through Rotation3D (fold=False) gives the folded per-copy results
    (a particle-frame reconstruction at θ + φ)."""
    op, b, truth = _toy(phis=(0.0, 50.0, 140.0))
    rotated = CRMOperator(op.copies, op.support, fold=False)
    folded = CRMOperator(op.copies, op.support, background_frame="particle")
    folded_rec = reconstruct_copies(folded, b, n_iter=10)
    rotated_rec = reconstruct_copies(rotated, b, n_iter=10)
    s = torch.from_numpy(op.support).to(folded_rec)
    for i in (1, 2):
        ref = folded_rec[i] * s
        assert (
            float((rotated_rec[i] * s - ref).norm() / ref.norm()) < 0.3
        )  # trilinear interpolation
        # rotating by R_i instead of R_iᵀ lands elsewhere
        copy_frame = sart(rotated.copy_projector(i), b[i], n_iter=10, relaxation=0.2).x
        wrong = Rotation3D(op.volume_shape, op.copies[i].rotation_xyz).forward(copy_frame) * s
        assert float((wrong - ref).norm() / ref.norm()) > 0.5
