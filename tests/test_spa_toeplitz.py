"""Toeplitz HᵀH (Theorem 1) and fast Hᵀb (Theorem 2) against the explicit operators.

Tolerances follow research/thesis.md §4.4 / §15 (the KBWF only approximately satisfies the radial
Nyquist criterion). Measured here (float64, white-noise coefficients, P = 20 random orientations,
n = 8–10, detector large enough that no footprint is cut):
KBWF(4, 19, 2): s = 1 2.8e-4, s = 2 4e-9 (look-up-table floor); KBWF(2, 10.8, 2): s = 1 4.3e-2,
s = 2 5e-6, s = 3 6e-7; with CTF, KBWF(4, 19, 2) s = 1: 2.2e-4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryowedge.geometry.rotations import random_rotations
from cryowedge.simulate.ctf import ctf_2d
from cryowedge.spa.basis import RECONSTRUCTION_BLOB, SIMULATION_BLOB
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.toeplitz import (
    ToeplitzNormalOperator,
    conjugate_gradient,
    fast_adjoint,
    time_operators,
    toeplitz_kernel,
)

torch.set_num_threads(1)


def _detector(n: int, scale: int, blob) -> int:
    """Large enough for every footprint of an n³ grid at any orientation."""
    return int(math.ceil(scale * (math.sqrt(3.0) * n + 2.0 * blob.radius))) + 2


def _projector(n, n_proj, *, scale=1, blob=RECONSTRUCTION_BLOB, ctf=None, seed=3, n_det=None):
    rng = np.random.default_rng(seed)
    n_det = _detector(n, scale, blob) if n_det is None else n_det
    return SpaProjector(
        n,
        random_rotations(n_proj, rng),
        rng.normal(scale=1.5, size=(n_proj, 2)),
        blob=blob,
        scale=scale,
        detector_size=n_det,
        ctf=ctf,
        dtype=torch.float64,
    )


def _rel_error(proj: SpaProjector, toe: ToeplitzNormalOperator, seed: int = 1) -> float:
    x = torch.randn(
        proj.domain_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    ref = proj.normal(x)
    return float(torch.linalg.vector_norm(toe.forward(x) - ref) / torch.linalg.vector_norm(ref))


def _ctfs(n_proj: int, n_det: int) -> np.ndarray:
    return np.stack(
        [
            ctf_2d(
                n_det,
                pixel_size_angstrom=3.0,
                defocus_u_angstrom=10000.0 + 900.0 * i,
                defocus_v_angstrom=9000.0 + 600.0 * i,
                astigmatism_angle_deg=20.0 * i,
                b_factor_angstrom2=50.0,
            )
            for i in range(n_proj)
        ]
    )


@pytest.mark.parametrize(("scale", "n", "tol"), [(1, 10, 1e-3), (2, 8, 1e-4), (3, 6, 1e-4)])
def test_toeplitz_matches_explicit_normal_operator(scale, n, tol):
    """Thesis.md §4.4 bars for KBWF(4, 19, 2): < 1e-3 at s = 1, < 1e-4 at s ≥ 2."""
    proj = _projector(n, 20, scale=scale)
    err = _rel_error(proj, ToeplitzNormalOperator.from_projector(proj))
    assert err < tol


def test_toeplitz_error_falls_with_scale():
    """KBWF(2, 10.8, 2): the RNC error drops by orders of magnitude from s = 1 to 2 to 3."""
    errors = []
    for scale in (1, 2, 3):
        proj = _projector(6, 20, scale=scale, blob=SIMULATION_BLOB)
        errors.append(_rel_error(proj, ToeplitzNormalOperator.from_projector(proj)))
    assert errors[0] > 10 * errors[1] > 0 and errors[1] > 3 * errors[2] > 0
    assert errors[0] < 0.1 and errors[1] < 1e-4


def test_toeplitz_with_ctf_matches_explicit():
    n, n_proj, n_det = 8, 12, 28
    proj = _projector(n, n_proj, ctf=_ctfs(n_proj, n_det), n_det=n_det)
    assert _rel_error(proj, ToeplitzNormalOperator.from_projector(proj)) < 1e-3
    # a CTF of ones gives the periodic version of the CTF-free kernel
    flat = _projector(n, n_proj, ctf=np.ones((n_det, n_det)), n_det=n_det)
    k_ctf = toeplitz_kernel(flat)
    k_plain = toeplitz_kernel(_projector(n, n_proj, n_det=n_det))
    assert float((k_ctf - k_plain).abs().max() / k_plain.abs().max()) < 1e-3


def test_kernel_symmetry_positivity_and_additivity():
    proj = _projector(7, 16)
    kernel = toeplitz_kernel(proj)
    assert kernel.shape == (13, 13, 13)
    assert torch.equal(kernel, torch.flip(kernel, dims=(0, 1, 2)))  # r[−d] = r[d]
    k1 = toeplitz_kernel(proj.subset(np.arange(0, 9)))
    k2 = toeplitz_kernel(proj.subset(np.arange(9, 16)))
    torch.testing.assert_close(k1 + k2, kernel, rtol=1e-12, atol=1e-12 * float(kernel.abs().max()))
    whole = ToeplitzNormalOperator(kernel)
    summed = ToeplitzNormalOperator(k1) + ToeplitzNormalOperator(k2)
    x = torch.randn(whole.domain_shape, dtype=torch.float64)
    torch.testing.assert_close(summed.forward(x), whole.forward(x), rtol=1e-11, atol=1e-11)
    # self-adjoint and positive semi-definite
    y = torch.randn(whole.domain_shape, dtype=torch.float64)
    lhs, rhs = float(torch.sum(whole.forward(x) * y)), float(torch.sum(x * whole.adjoint(y)))
    assert abs(lhs - rhs) < 1e-12 * abs(lhs)
    assert float(torch.sum(whole.forward(x) * x)) > 0.0
    # batch dimensions pass through
    torch.testing.assert_close(whole.forward(torch.stack([x, y]))[1], whole.forward(y))


def test_ctf_kernel_symmetry_and_additivity():
    n, n_proj, n_det = 6, 6, 20
    proj = _projector(n, n_proj, ctf=_ctfs(n_proj, n_det), n_det=n_det)
    kernel = toeplitz_kernel(proj)
    flipped = torch.flip(kernel, dims=(0, 1, 2))
    assert float((kernel - flipped).abs().max()) < 1e-12 * float(kernel.abs().max())
    parts = toeplitz_kernel(proj.subset([0, 1, 2])) + toeplitz_kernel(proj.subset([3, 4, 5]))
    torch.testing.assert_close(parts, kernel, rtol=1e-12, atol=1e-12 * float(kernel.abs().max()))


@pytest.mark.parametrize("with_ctf", [False, True])
def test_fast_adjoint_matches_explicit(with_ctf):
    """Theorem 2: measured 4e-5 (oversample 4) and 3e-6 (oversample 8)."""
    n, n_proj, n_det = 9, 10, 30
    proj = _projector(n, n_proj, ctf=_ctfs(n_proj, n_det) if with_ctf else None, n_det=n_det)
    b = torch.randn(
        proj.range_shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    ref = proj.adjoint(b)
    for oversample, tol in ((4, 2e-4), (8, 1e-5)):
        got = fast_adjoint(proj, b, oversample=oversample)
        assert float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref)) < tol


def test_fast_adjoint_with_scale_and_cut_footprints():
    """s = 2 and a detector that cuts footprints (positions outside the fine grid read zero)."""
    proj = _projector(6, 8, scale=2, blob=SIMULATION_BLOB, n_det=14)
    b = torch.randn(
        proj.range_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    ref = proj.adjoint(b)
    got = fast_adjoint(proj, b, oversample=8)
    assert float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref)) < 1e-4


def test_cg_on_toeplitz_matches_dense_solve():
    """CG on (r ∗ · + μI) x = rhs agrees with a dense solve of the same matrix."""
    proj = _projector(5, 6)
    toe = ToeplitzNormalOperator.from_projector(proj)
    n = toe.n
    eye = torch.eye(n**3, dtype=torch.float64).reshape(n**3, n, n, n)
    dense = toe.forward(eye).reshape(n**3, n**3).T
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-10 * float(dense.abs().max()))
    mu = 1e-2 * float(dense.diagonal().mean())
    rhs = proj.adjoint(
        torch.randn(
            proj.range_shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64
        )
    )
    x, history = conjugate_gradient(toe, rhs, shift=mu, n_iter=400, tol=1e-12)
    ref = torch.linalg.solve(
        dense + mu * torch.eye(n**3, dtype=torch.float64), rhs.reshape(-1)
    ).reshape(rhs.shape)
    assert float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref)) < 1e-8
    assert history[-1] < 1e-11 * history[0]


def test_time_operators_small():
    times = time_operators(5, 3, dtype=torch.float64)
    for key in (
        "forward",
        "adjoint",
        "normal_explicit",
        "kernel",
        "normal_fast",
        "adjoint_fast",
        "speedup",
    ):
        assert times[key] > 0.0
    only = time_operators(4, 2, operations=("normal_fast",))
    assert set(only) == {"kernel", "normal_fast"}
    with pytest.raises(ValueError, match="unknown operations"):
        time_operators(4, 2, operations=("fft",))


def test_float32_paths_agree_with_float64():
    rng = np.random.default_rng(4)
    rot, shifts = random_rotations(6, rng), rng.normal(size=(6, 2))
    ops = {
        dt: SpaProjector(6, rot, shifts, detector_size=22, dtype=dt)
        for dt in (torch.float32, torch.float64)
    }
    x = rng.standard_normal((6, 6, 6))
    b = rng.standard_normal(ops[torch.float64].range_shape)
    for fn in (
        lambda op: ToeplitzNormalOperator.from_projector(op).forward(x),
        lambda op: fast_adjoint(op, b),
    ):
        y32, y64 = fn(ops[torch.float32]), fn(ops[torch.float64])
        assert y32.dtype == torch.float32
        assert float((y32.double() - y64).abs().max()) < 1e-5 * float(y64.abs().max())


def test_bad_input():
    proj = _projector(4, 3)
    with pytest.raises(ValueError, match="odd size"):
        ToeplitzNormalOperator(torch.zeros(6, 6, 6))
    with pytest.raises(ValueError, match="cube"):
        ToeplitzNormalOperator(torch.zeros(7, 7, 5))
    with pytest.raises(ValueError, match="SpaProjector"):
        toeplitz_kernel("not a projector")
    with pytest.raises(ValueError, match="oversample"):
        fast_adjoint(proj, torch.zeros(proj.range_shape), oversample=0)
    with pytest.raises(ValueError, match="data must have shape"):
        fast_adjoint(proj, torch.zeros(3, 5, 5))
    with pytest.raises(ValueError, match="must end in shape"):
        ToeplitzNormalOperator.from_projector(proj).forward(torch.zeros(4, 4, 3))
    with pytest.raises(ValueError, match="shift"):
        conjugate_gradient(
            ToeplitzNormalOperator.from_projector(proj), torch.zeros(4, 4, 4), shift=-1.0
        )
    with pytest.raises(ValueError, match="same size"):
        _ = ToeplitzNormalOperator(torch.zeros(7, 7, 7)) + ToeplitzNormalOperator(
            torch.zeros(5, 5, 5)
        )
