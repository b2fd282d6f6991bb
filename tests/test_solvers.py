"""Iterative solvers: convergence to known solutions, closed forms, references, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
from conftest import DEVICES, adjoint_mismatch

from cryowedge import TiltGeometry, TiltProjector
from cryowedge.operators.elementary import FiniteDifference, MaskOperator, MatrixOperator, RangeSubset
from cryowedge.solvers import (
    SOLVERS,
    CallbackList,
    HistoryCallback,
    ProgressCallback,
    StoreIterates,
    art,
    cgls,
    regularizer_value,
    sart,
    sirt,
    tv_admm,
)
from cryowedge.solvers.prox import group_soft_threshold, soft_threshold


# --------------------------------------------------------------------------- operators


def test_elementary_operators_are_exact_adjoints(rng):
    mat = rng.random((7, 5))
    assert adjoint_mismatch(MatrixOperator(mat), rng) < 1e-13
    assert adjoint_mismatch(FiniteDifference((4, 5, 6)), rng) < 1e-13
    assert adjoint_mismatch(FiniteDifference((4, 5, 6), axes=(1, 2)), rng) < 1e-13
    mask = rng.random((3, 4, 5)) < 0.3
    assert adjoint_mismatch(MaskOperator(mask), rng) < 1e-13
    geom = TiltGeometry(tilt_angles_deg=np.arange(-60, 61, 20.0), detector_shape=(3, 8))
    assert adjoint_mismatch(RangeSubset(TiltProjector(geom, (6, 3, 8)), [1, 4]), rng) < 1e-12


def test_finite_difference_values_and_norm_bound():
    x = torch.arange(12.0, dtype=torch.float64).reshape(3, 4)
    g = FiniteDifference((3, 4)).forward(x)
    assert torch.equal(g[0, :2], torch.full((2, 4), 4.0, dtype=torch.float64))
    assert torch.equal(g[0, 2], torch.zeros(4, dtype=torch.float64))  # Neumann: last row 0
    assert torch.equal(g[1, :, :3], torch.ones(3, 3, dtype=torch.float64))
    from cryowedge.operators import power_norm

    assert power_norm(FiniteDifference((16, 16)), n_iter=200, dtype=torch.float64) ** 2 <= 8.0


def test_mask_operator_is_a_projection(rng):
    op = MaskOperator(rng.random((4, 6)) < 0.5)
    x = torch.as_tensor(rng.standard_normal((4, 6)))
    assert torch.equal(op(op(x)), op(x))  # S² = S
    assert torch.equal(op.adjoint(x), op(x))  # Sᵀ = S
    with pytest.raises(ValueError, match="only 0 and 1"):
        MaskOperator(np.full((2, 2), 0.5))


# --------------------------------------------------------------------------- prox


def test_soft_threshold_matches_scalar_minimisation(rng):
    v = torch.as_tensor(rng.standard_normal(20))
    t = 0.4
    out = soft_threshold(v, t)
    for vi, oi in zip(v.tolist(), out.tolist()):
        res = scipy.optimize.minimize_scalar(lambda z: t * abs(z) + 0.5 * (z - vi) ** 2)
        assert oi == pytest.approx(res.x, abs=1e-5)


def test_group_soft_threshold_matches_its_definition(rng):
    """prox_{t‖·‖₂,₁}(v) = argmin_u t·Σ‖u_n‖₂ + ½‖u − v‖², checked by brute-force minimisation."""
    v = torch.as_tensor(rng.standard_normal((3, 6)))  # 6 groups of 3-vectors (a gradient field)
    v[:, 0] *= 0.05  # one group below the threshold: must shrink exactly to zero
    t = 0.5
    out = group_soft_threshold(v, t, dim=0)
    assert torch.all(out[:, 0] == 0)
    for n in range(v.shape[1]):
        vn = v[:, n].numpy()
        res = scipy.optimize.minimize(
            lambda u: t * np.linalg.norm(u) + 0.5 * np.sum((u - vn) ** 2),
            x0=vn, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000},
        )
        np.testing.assert_allclose(out[:, n].numpy(), res.x, atol=1e-4)


# --------------------------------------------------------------------------- known solutions


def test_art_converges_to_the_minimum_norm_solution(rng):
    """Consistent underdetermined system: from x0 = 0, Kaczmarz → A⁺b (eq. 1, CRM paper)."""
    a = rng.random((12, 30)) * (rng.random((12, 30)) < 0.5)
    b = a @ rng.random(30)
    op = MatrixOperator(a)
    expected = np.linalg.pinv(a) @ b
    for order in ("sequential", "random"):
        x = art(op, b, n_iter=3000, relaxation=1.0, order=order, dtype=torch.float64).x.numpy()
        np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-8)
        assert np.linalg.norm(x) <= np.linalg.norm(np.linalg.lstsq(a, b, rcond=None)[0]) + 1e-9


def test_sirt_converges_to_the_weighted_least_squares_solution(rng):
    """Overdetermined inconsistent system: SIRT → argmin ‖Ax − b‖²_{W⁻¹}, W = diag(A·1)."""
    a = rng.random((40, 8)) + 0.2
    b = a @ rng.random(8) + 0.1 * rng.standard_normal(40)
    w_half = 1.0 / np.sqrt(a.sum(axis=1))
    expected = np.linalg.lstsq(a * w_half[:, None], b * w_half, rcond=None)[0]
    x = sirt(MatrixOperator(a), b, n_iter=20000, relaxation=1.9, dtype=torch.float64, tol=1e-15).x
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6)
    # ... and for a consistent system, that is the exact solution.
    x_true = rng.random(8)
    x = sirt(MatrixOperator(a), a @ x_true, n_iter=20000, relaxation=1.9, dtype=torch.float64, tol=1e-15).x
    np.testing.assert_allclose(x.numpy(), x_true, rtol=1e-6)


def test_cgls_converges_to_the_least_squares_solution(rng):
    a = rng.standard_normal((50, 20))
    b = rng.standard_normal(50)
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    result = cgls(MatrixOperator(a), b, n_iter=60, dtype=torch.float64)
    np.testing.assert_allclose(result.x.numpy(), expected, rtol=1e-8, atol=1e-10)
    res = result.history["residual_norm"]
    assert all(r1 <= r0 + 1e-12 for r0, r1 in zip(res, res[1:]))  # CGLS residual is monotone


def test_sart_one_step_matches_eq19_closed_form(rng):
    """One SART step with all rows in one block is eq. 19: x + w V⁻¹Aᵀ W⁻¹(b − Ax)."""
    a = rng.random((15, 9)) * (rng.random((15, 9)) < 0.6)
    a[:, 0] += 0.1  # no empty column
    a[:, 1] = 0.0  # ...except this one: V⁻¹ must treat it as 0, not ∞
    b, x0 = rng.random(15), rng.random(9)
    w = 0.2
    v_inv = np.divide(1.0, a.sum(0), out=np.zeros(9), where=a.sum(0) > 0)
    w_inv = np.divide(1.0, a.sum(1), out=np.zeros(15), where=a.sum(1) > 0)
    expected = x0 + w * v_inv * (a.T @ (w_inv * (b - a @ x0)))
    op = MatrixOperator(a)
    x = sart(op, b, x0=x0, n_iter=1, relaxation=w, n_blocks=1, dtype=torch.float64).x
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-12)
    # Block-sequential: one sweep = eq. 19 applied to the row blocks in order.
    x = x0.copy()
    for rows in np.array_split(np.arange(15), 3):
        ab = a[rows]
        vb = np.divide(1.0, ab.sum(0), out=np.zeros(9), where=ab.sum(0) > 0)
        wb = np.divide(1.0, ab.sum(1), out=np.zeros(len(rows)), where=ab.sum(1) > 0)
        x = x + w * vb * (ab.T @ (wb * (b[rows] - ab @ x)))
    got = sart(op, b, x0=x0, n_iter=1, relaxation=w, n_blocks=3, order="sequential", dtype=torch.float64).x
    np.testing.assert_allclose(got.numpy(), x, rtol=1e-12)


def _small_projector(nz=8, ny=3, nx=10, step=15.0):
    geom = TiltGeometry(tilt_angles_deg=np.arange(-60, 61, step), detector_shape=(ny, nx))
    return TiltProjector(geom, (nz, ny, nx))


def _explicit_matrix(op) -> np.ndarray:
    n = int(np.prod(op.domain_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *op.domain_shape)
    return op.forward(eye).reshape(n, -1).T.numpy()


def test_projector_sart_uses_tilt_subsets_equal_to_generic_blocks(rng):
    op = _small_projector()
    b = op(torch.as_tensor(rng.random(op.domain_shape)))
    fast = sart(op, b, n_iter=3, order="sequential")
    generic = sart(MatrixOperator(_explicit_matrix(op)), b.reshape(-1), n_iter=3, order="sequential",
                   n_blocks=op.range_shape[0])
    np.testing.assert_allclose(fast.x.reshape(-1).numpy(), generic.x.numpy(), rtol=1e-9, atol=1e-12)
    # An operator without row_form or subset goes through RangeSubset blocks: same iterates.
    from cryowedge.operators import ComposedOperator, IdentityOperator

    matrix_free = ComposedOperator(IdentityOperator(op.range_shape), op)
    slow = sart(matrix_free, b, n_iter=3, order="sequential", positivity=True)
    fast = sart(op, b, n_iter=3, order="sequential", positivity=True)
    np.testing.assert_allclose(slow.x.numpy(), fast.x.numpy(), rtol=1e-9, atol=1e-12)


def test_projector_art_equals_explicit_row_by_row_kaczmarz(rng):
    """Batching the tilt-axis slices in ART is exactly the sequential row method."""
    op = _small_projector()
    nt, ny, nu = op.range_shape
    b = op(torch.as_tensor(rng.random(op.domain_shape)))
    mat = _explicit_matrix(op)
    # rows (t, y, u) reordered to (t, u, y): the order in which the batched sweep visits them
    perm = np.arange(nt * ny * nu).reshape(nt, ny, nu).transpose(0, 2, 1).ravel()
    ref = art(MatrixOperator(mat[perm]), b.reshape(-1)[perm], n_iter=4, order="sequential", relaxation=0.7)
    fast = art(op, b, n_iter=4, order="sequential", relaxation=0.7)
    np.testing.assert_allclose(fast.x.reshape(-1).numpy(), ref.x.numpy(), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- ADMM


def _condat_vu_reference(a, b, lam, shape, positivity, n_iter=40000):
    """Independent slow solver of ½‖Ax − b‖² + λ‖∇x‖₂,₁ (+ι≥0): Condat–Vũ primal–dual."""
    grad = FiniteDifference(shape)
    d = np.stack([grad.forward(torch.as_tensor(e.reshape(shape))).reshape(-1).numpy()
                  for e in np.eye(int(np.prod(shape)))], axis=1)
    lh = np.linalg.norm(a, 2) ** 2
    sigma = 1.0
    tau = 0.99 / (lh / 2 + sigma * np.linalg.norm(d, 2) ** 2)
    x = np.zeros(a.shape[1])
    y = np.zeros(d.shape[0])
    k = len(shape)
    for _ in range(n_iter):
        x_new = x - tau * (a.T @ (a @ x - b) + d.T @ y)
        if positivity:
            x_new = np.maximum(x_new, 0)
        v = (y + sigma * d @ (2 * x_new - x)).reshape(k, -1)
        v /= np.maximum(1.0, np.linalg.norm(v, axis=0) / lam)  # projection onto ‖y_n‖ ≤ λ
        x, y = x_new, v.ravel()
    obj = 0.5 * np.sum((a @ x - b) ** 2) + lam * np.sum(np.linalg.norm((d @ x).reshape(k, -1), axis=0))
    return x, obj


@pytest.mark.parametrize("positivity", [False, True])
def test_tv_admm_matches_a_slow_reference_and_decreases_its_objective(rng, positivity):
    shape = (6, 7)
    truth = np.zeros(shape)
    truth[1:4, 2:6] = 1.0
    a = rng.random((30, 42)) * (rng.random((30, 42)) < 0.3)
    b = a @ truth.ravel() + 0.05 * rng.standard_normal(30) - 0.1
    lam = 0.3
    ref_x, ref_obj = _condat_vu_reference(a, b, lam, shape, positivity)

    res = tv_admm(MatrixOperator(a, domain_shape=shape), b, n_iter=400, lam=lam, positivity=positivity, cg_iter=30, cg_tol=1e-12,
                  dtype=torch.float64)
    obj = res.history["objective"]
    assert obj[-1] == pytest.approx(ref_obj, rel=1e-4)
    assert obj[-1] < obj[0]
    assert max(obj[100:]) <= obj[100] + 1e-6 * abs(obj[100])  # settled: no later increase
    np.testing.assert_allclose(res.x.reshape(-1).numpy(), ref_x, atol=2e-3)
    if positivity:
        assert float(res.x.min()) >= 0.0


def test_tv_admm_variants_lower_their_own_objective(rng):
    op = _small_projector()
    truth = torch.zeros(op.domain_shape, dtype=torch.float64)
    truth[2:6, :, 3:7] = 1.0
    b = op(truth) + 0.2 * torch.as_tensor(rng.standard_normal(op.range_shape))
    for reg in ("tv", "tv-aniso", "l1"):
        res = tv_admm(op, b, n_iter=30, lam=0.5, regularizer=reg, relaxation=1.6)
        obj = res.history["objective"]
        assert obj[-1] < obj[0]
        x = res.x
        manual = 0.5 * float(torch.sum((op(x) - b) ** 2)) + 0.5 * regularizer_value(x, reg)
        assert obj[-1] == pytest.approx(manual, rel=1e-9)


def test_tv_admm_with_zero_lambda_solves_the_normal_equations(rng):
    a = rng.standard_normal((40, 12))
    b = rng.standard_normal(40)
    x = tv_admm(MatrixOperator(a), b, lam=0.0, n_iter=5, cg_iter=30, cg_tol=1e-14, dtype=torch.float64).x
    np.testing.assert_allclose(a.T @ (a @ x.numpy() - b), 0.0, atol=1e-8)


# --------------------------------------------------------------------------- quality


def test_sirt_and_tv_beat_fbp_on_a_wedge_limited_phantom(rng):
    from cryowedge import fbp
    from cryowedge.metrics import psnr

    nz, ny, nx = 32, 4, 48
    geom = TiltGeometry(tilt_angles_deg=np.arange(-60, 61, 3.0), detector_shape=(ny, nx))
    op = TiltProjector(geom, (nz, ny, nx))
    truth = torch.zeros(nz, ny, nx)
    zz, xx = torch.meshgrid(torch.arange(nz) - nz / 2, torch.arange(nx) - nx / 2, indexing="ij")
    truth[:] = (((zz / 6) ** 2 + (xx / 12) ** 2) < 1).float()[:, None, :]
    truth[:, :, 30:34] += ((zz.abs() < 10).float())[:, None, :4] * 0.5
    b = op(truth) + 0.5 * torch.randn(op.range_shape)
    x_fbp = torch.as_tensor(fbp(b, geom, volume_shape=(nz, ny, nx)))
    x_sirt = sirt(op, b, n_iter=50, positivity=True).x
    x_tv = tv_admm(op, b, n_iter=30, lam=2.0, positivity=True).x
    p_fbp, p_sirt, p_tv = (psnr(truth.numpy(), v.numpy()) for v in (x_fbp, x_sirt, x_tv))
    assert p_sirt > p_fbp + 1.0
    assert p_tv > p_sirt


# --------------------------------------------------------------------------- callbacks, stopping


def test_callbacks_record_store_and_stop(rng):
    a = rng.random((20, 10)) + 0.1
    b = a @ rng.random(10)
    hist, store = HistoryCallback(), StoreIterates(every=2)
    result = sirt(MatrixOperator(a), b, n_iter=7, callback=CallbackList([hist, store]))
    assert hist.history["residual_norm"] == result.history["residual_norm"]
    assert [k for k, _ in store.iterates] == [2, 4, 6, 7]
    torch.testing.assert_close(store.iterates[-1][1], result.x)
    stopped = sirt(MatrixOperator(a), b, n_iter=50, callback=lambda info: info.iteration == 3)
    assert stopped.n_iter == 3 and stopped.stopped_early
    by_tol = cgls(MatrixOperator(a), b, n_iter=500, tol=1e-3)
    assert by_tol.stopped_early and by_tol.history["relative_change"][-1] < 1e-3


def test_progress_callback_renders_a_bar(rng):
    from rich.console import Console
    from rich.progress import Progress
    import io

    buf = io.StringIO()
    with Progress(console=Console(file=buf, force_terminal=False, width=100)) as progress:
        cb = ProgressCallback("SIRT", progress=progress)
        sirt(MatrixOperator(rng.random((8, 4))), rng.random(8), n_iter=5, callback=cb)
        assert progress.tasks[0].completed == 5
    assert "SIRT" in buf.getvalue()


# --------------------------------------------------------------------------- devices


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_reduces_the_residual_on_the_projector(name, device, rng):
    op = _small_projector()
    b = op(torch.as_tensor(rng.random(op.domain_shape), dtype=torch.float32)).to(device)
    kwargs = {"lam": 0.01} if name == "tv" else {}
    res = SOLVERS[name](op, b, n_iter=5, **kwargs)
    assert res.x.device.type == device and res.x.shape == op.domain_shape
    assert res.history["residual_norm"][-1] < 0.5 * float(torch.linalg.vector_norm(b))


@pytest.mark.skipif("cuda" not in DEVICES, reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_cuda_and_cpu_solvers_agree(name, rng):
    """The same iterations on the GPU and the CPU give the same tomogram (float32 sum order aside)."""
    op = _small_projector()
    b = op(torch.as_tensor(rng.random(op.domain_shape), dtype=torch.float32))
    kwargs = {"lam": 0.01} if name == "tv" else {}
    on_cpu = SOLVERS[name](op, b, n_iter=5, **kwargs).x
    on_gpu = SOLVERS[name](op, b.to("cuda"), n_iter=5, **kwargs).x
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-3, atol=1e-4 * float(on_cpu.abs().max()))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_bad_iteration_counts_and_relaxation_are_refused(name):
    op = MatrixOperator(np.ones((3, 2)))
    b = np.ones(3)
    solver = SOLVERS[name]
    for n_iter in (0, -3):
        with pytest.raises(ValueError, match="n_iter"):
            solver(op, b, n_iter=n_iter)
    for w in (0.0, 2.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="relaxation"):
            solver(op, b, relaxation=w)
    with pytest.raises(ValueError, match=r"data has shape \(4,\)"):
        solver(op, np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        solver(op, np.array([1.0, np.nan, 1.0]))


def test_solver_specific_bad_input():
    op = MatrixOperator(np.ones((3, 2)))
    b = np.ones(3)
    with pytest.raises(ValueError, match="lam"):
        tv_admm(op, b, lam=-0.1)
    with pytest.raises(ValueError, match="regularizer"):
        tv_admm(op, b, regularizer="tgv")
    with pytest.raises(ValueError, match="relaxation must be 1.0"):
        cgls(op, b, relaxation=0.5)
    with pytest.raises(ValueError, match="positivity"):
        cgls(op, b, positivity=True)
    with pytest.raises(ValueError, match="order"):
        sart(op, b, order="backwards")
    with pytest.raises(ValueError, match="n_blocks"):
        sart(op, b, n_blocks=9)
    with pytest.raises(TypeError, match="row_form"):
        art(FiniteDifference((3,)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="x0 has shape"):
        sirt(op, b, x0=np.ones(5))
