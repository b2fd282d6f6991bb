"""TiltProjector / DetectorWarp: exact adjoint, autograd, conventions, batching, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEVICES, tolerance

from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.operators.autograd import apply_adjoint, apply_forward, as_autograd
from cryowedge.operators.base import power_norm
from cryowedge.operators.detector import DetectorWarp
from cryowedge.operators.tilt_projector import TiltProjector


def _random_geometry(rng: np.random.Generator, *, axis_deg: float, shifts: bool) -> TiltGeometry:
    lo = rng.uniform(-75, -20)
    hi = rng.uniform(15, 70)  # asymmetric ranges
    n = int(rng.integers(5, 25))
    angles = np.sort(rng.uniform(lo, hi, n))
    ny, nx = (int(v) for v in rng.integers(9, 24, 2))
    return TiltGeometry(
        tilt_angles_deg=angles,
        detector_shape=(ny, nx),
        tilt_axis_angle_deg=axis_deg,
        shifts_px=rng.normal(0, 2, (n, 2)) if shifts else None,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("axis_deg", [0.0, 90.0, -90.0, 180.0, 37.5, -12.0])
@pytest.mark.parametrize("shifts", [False, True])
def test_dot_product_adjoint(dtype, axis_deg, shifts):
    rng = np.random.default_rng(int(abs(axis_deg) * 10) + shifts)
    for _ in range(3):
        geom = _random_geometry(rng, axis_deg=axis_deg, shifts=shifts)
        nz = int(rng.integers(5, 20))
        n_axis, n_perp = geom.aligned_detector_shape
        nx = int(rng.integers(5, 25))
        op = TiltProjector(geom, (nz, n_axis, nx))
        x = torch.randn(op.domain_shape, dtype=dtype)
        y = torch.randn(op.range_shape, dtype=dtype)
        lhs = torch.sum(op(x) * y).item()
        rhs = torch.sum(x * op.T(y)).item()
        scale = torch.linalg.vector_norm(op(x)).item() * torch.linalg.vector_norm(y).item()
        assert abs(lhs - rhs) <= tolerance(dtype) * scale, (lhs, rhs)


def test_detector_warp_quarter_turn_is_exact_rotation():
    geom = TiltGeometry(tilt_angles_deg=[0.0, 10.0], detector_shape=(7, 7), tilt_axis_angle_deg=90)
    warp = DetectorWarp(geom)
    img = torch.arange(49, dtype=torch.float64).reshape(1, 7, 7).repeat(2, 1, 1)
    raw = warp(img)
    # Counter-clockwise by 90° with y up == np.rot90 with rows = y increasing upward,
    # i.e. a clockwise rot90 of the array as stored (row index = y).
    np.testing.assert_array_equal(raw[0].numpy(), np.rot90(img[0].numpy(), k=-1))
    # a permutation: the adjoint is its inverse
    np.testing.assert_array_equal(warp.adjoint(raw).numpy(), img.numpy())


def test_bead_position():
    """A bead above the centre (z > 0) moves to larger x at positive tilt (conventions page)."""
    nz, ny, nx = 33, 9, 41
    vol = torch.zeros(nz, ny, nx)
    dz, dx, y0 = 8, -3, 6
    vol[nz // 2 + dz, y0, nx // 2 + dx] = 1.0
    angles = np.array([-40.0, 0.0, 30.0, 60.0])
    geom = TiltGeometry(tilt_angles_deg=angles, detector_shape=(ny, nx))
    proj = TiltProjector(geom, (nz, ny, nx))(vol)
    for t, theta in enumerate(np.deg2rad(angles)):
        image = proj[t]
        assert torch.allclose(image.sum(), torch.tensor(1.0))  # mass is conserved
        assert image[y0].sum() == pytest.approx(1.0)  # stays on its y row
        cols = torch.arange(nx, dtype=torch.float64)
        centroid = float((image[y0].double() * cols).sum()) - nx // 2
        expected = dx * np.cos(theta) + dz * np.sin(theta)
        assert centroid == pytest.approx(expected, abs=1e-5)


def test_shift_moves_projection():
    nz, ny, nx = 9, 8, 16
    vol = torch.zeros(nz, ny, nx)
    vol[nz // 2, 3, nx // 2] = 1.0
    geom = TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(ny, nx), shifts_px=[[2.0, -3.0]])
    image = TiltProjector(geom, (nz, ny, nx))(vol)[0]
    assert image[3 + 2, nx // 2 - 3] == pytest.approx(1.0)


def test_tilt_axis_angle_rotates_projection():
    """Axis at 90°: the aligned +Y (axis) direction points to raw -X, aligned +X to raw +Y."""
    vol = torch.zeros(11, 12, 10)
    vol[5, 12 // 2 + 4, 10 // 2 + 2] = 1.0  # 4 px along the axis, 2 px perpendicular
    g90 = TiltGeometry(tilt_angles_deg=[20.0], detector_shape=(10, 12), tilt_axis_angle_deg=90)
    p90 = TiltProjector(g90, (11, 12, 10))(vol)[0].double()
    assert p90.sum().item() == pytest.approx(1.0)
    rows = torch.arange(10, dtype=torch.float64)[:, None]
    cols = torch.arange(12, dtype=torch.float64)[None, :]
    centroid_y = float((p90 * rows).sum()) - 10 // 2
    centroid_x = float((p90 * cols).sum()) - 12 // 2
    assert centroid_x == pytest.approx(-4.0, abs=1e-6)
    assert centroid_y == pytest.approx(2 * np.cos(np.deg2rad(20.0)), abs=1e-6)


def test_batched_equals_looped():
    geom = TiltGeometry.from_range(-50, 60, 5, (10, 13), tilt_axis_angle_deg=33)
    op = TiltProjector(geom, (7, *geom.aligned_detector_shape), chunk_columns=3)
    x = torch.randn(2, 3, *op.domain_shape)
    y = torch.randn(2, 3, *op.range_shape)
    fx, ay = op(x), op.T(y)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(fx[i, j], op(x[i, j]), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ay[i, j], op.T(y[i, j]), rtol=1e-5, atol=1e-5)


def test_chunking_does_not_change_result():
    geom = TiltGeometry.from_range(-60, 60, 4, (16, 20))
    x = torch.randn(12, 16, 20)
    ref = TiltProjector(geom, (12, 16, 20), chunk_columns=1000)(x)
    for chunk in (1, 5, 16):
        torch.testing.assert_close(TiltProjector(geom, (12, 16, 20), chunk_columns=chunk)(x), ref)


def test_gradcheck_autograd_wrapper():
    geom = TiltGeometry(
        tilt_angles_deg=[-50.0, -10.0, 25.0, 55.0],
        detector_shape=(4, 6),
        tilt_axis_angle_deg=20.0,
        shifts_px=[[0.3, -0.2], [0, 0], [1.1, 0.4], [-0.5, 0.7]],
    )
    op = TiltProjector(geom, (5, geom.aligned_detector_shape[0], 5))
    x = torch.randn(op.domain_shape, dtype=torch.float64, requires_grad=True)
    y = torch.randn(op.range_shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: apply_forward(op, v), (x,))
    assert torch.autograd.gradcheck(lambda v: apply_adjoint(op, v), (y,))
    module = as_autograd(op)
    loss = (module(x) ** 2).sum()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * op.T(op(x.detach())))


def test_power_norm_matches_dense_svd():
    geom = TiltGeometry.from_range(-60, 60, 15, (3, 8))
    op = TiltProjector(geom, (6, 3, 8))
    dense = torch.stack(
        [op(e.reshape(op.domain_shape)).reshape(-1) for e in torch.eye(6 * 3 * 8, dtype=torch.float64)], 1
    )
    sigma = torch.linalg.svdvals(dense)[0].item()
    assert power_norm(op, n_iter=200, dtype=torch.float64) == pytest.approx(sigma, rel=1e-4)


def test_bad_shapes():
    geom = TiltGeometry.from_range(-60, 60, 30, (8, 10))
    with pytest.raises(ValueError, match="must equal the detector length along the tilt axis"):
        TiltProjector(geom, (4, 9, 10))
    op = TiltProjector(geom, (4, 8, 10))
    with pytest.raises(ValueError, match="must end in shape"):
        op(torch.zeros(4, 8, 11))
    with pytest.raises(ValueError, match="must end in shape"):
        op.T(torch.zeros(4, 8, 11))
    with pytest.raises(TypeError, match="floating-point"):
        op(torch.zeros(4, 8, 10, dtype=torch.int64))


@pytest.mark.parametrize("device", DEVICES)
def test_cpu_equals_device(device):
    if device == "cpu":
        pytest.skip("reference device")
    geom = TiltGeometry.from_range(-60, 60, 3, (24, 30), tilt_axis_angle_deg=12)
    op = TiltProjector(geom, (16, *geom.aligned_detector_shape))
    x = torch.randn(op.domain_shape)
    y = torch.randn(op.range_shape)
    torch.testing.assert_close(op(x.to(device)).cpu(), op(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(op.T(y.to(device)).cpu(), op.T(y), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_request_without_gpu_is_clear():
    from cryowedge.utils.device import resolve_device

    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


# --------------------------------------------------------------------------- matrix build


def _reference_projection_matrix(angles_deg, n_perp, nz, nx, shifts_x=None):
    """The slice matrix built the straightforward way, one tilt at a time (the former code)."""
    import scipy.sparse as sp

    angles = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    shifts = np.zeros(angles.size) if shifts_x is None else np.asarray(shifts_x, float)
    zc = (np.arange(nz) - nz // 2).astype(np.float64)[:, None]
    xc = (np.arange(nx) - nx // 2).astype(np.float64)[None, :]
    voxel = np.arange(nz * nx)
    blocks = []
    for t, theta in enumerate(angles):
        u = (np.cos(theta) * xc + np.sin(theta) * zc).ravel() + (n_perp // 2 + shifts[t])
        i0 = np.floor(u).astype(np.int64)
        frac = u - i0
        rows, cols, vals = [], [], []
        for di, w in ((0, 1.0 - frac), (1, frac)):
            i = i0 + di
            ok = (i >= 0) & (i < n_perp) & (w != 0)
            rows.append(i[ok])
            cols.append(voxel[ok])
            vals.append(w[ok])
        blocks.append(sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_perp, nz * nx)
        ))
    return sp.vstack(blocks, format="csr")


@pytest.mark.parametrize(
    "angles, n_perp, nz, nx, shifted",
    [
        (np.linspace(-60, 60, 41), 37, 13, 29, False),  # odd sizes, detector wider than slice
        (np.array([-90.0, 0.0, 30.0, 90.0]), 16, 16, 16, False),  # exact integer positions
        (np.array([-70.0, -33.3, 5.0, 48.0, 71.0]), 12, 9, 24, True),  # slice wider than detector
    ],
)
def test_vectorised_matrix_equals_per_tilt_loop(angles, n_perp, nz, nx, shifted):
    from cryowedge.operators.tilt_projector import _BUILD_BLOCK_ENTRIES, build_projection_matrix

    shifts = np.random.default_rng(3).normal(0, 3, angles.size) if shifted else None
    ref = _reference_projection_matrix(angles, n_perp, nz, nx, shifts)
    got = build_projection_matrix(angles, n_perp, nz, nx, shifts)
    assert got.shape == ref.shape and got.nnz == ref.nnz
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.data, ref.data)
    assert _BUILD_BLOCK_ENTRIES > angles.size * nx  # the blocked path is covered below


def test_vectorised_matrix_blocks_over_z(monkeypatch):
    import cryowedge.operators.tilt_projector as tp

    angles = np.linspace(-50, 50, 7)
    whole = tp.build_projection_matrix(angles, 20, 11, 18)
    monkeypatch.setattr(tp, "_BUILD_BLOCK_ENTRIES", 7 * 18 * 3)  # three z rows per block
    blocked = tp.build_projection_matrix(angles, 20, 11, 18)
    assert (whole != blocked).nnz == 0
    assert (blocked != _reference_projection_matrix(angles, 20, 11, 18)).nnz == 0


# --------------------------------------------------------------------------- chunking


def test_gpu_chunk_is_bounded_by_rows_and_elements():
    from cryowedge.operators.tilt_projector import _GPU_CHUNK_ELEMENTS, chunk_columns_for

    cuda = torch.device("cuda")  # only its type is used: no GPU needed
    # 64×128×128 volume, 61 tilts: the block is at most ny = 128 columns (was 2**28 / n_rows)
    n_rows = max(64 * 128, 61 * 128)
    assert chunk_columns_for(cuda, n_rows, 128) == 128
    # a huge slice: bounded by the element budget, at least one column
    assert chunk_columns_for(cuda, 4096 * 4096, 4096) * 4096 * 4096 <= max(_GPU_CHUNK_ELEMENTS, 4096 * 4096)
    assert chunk_columns_for(cuda, 10**9, 50) == 1
    assert chunk_columns_for(cuda, 1000, 7, requested=64) == 7  # explicit request capped at ny
    assert chunk_columns_for("cpu", 1000, 5) == 5
    assert chunk_columns_for("cpu", 1000, 500) in (16, 32)


def test_output_buffer_only_on_cpu():
    from cryowedge.operators.tilt_projector import _work_buffers

    buf, out = _work_buffers(torch.device("cpu"), torch.float32, (3, 4), 10, 5)
    assert buf.shape == (3, 4, 5) and out is not None and out.shape == (10, 5)
    # any non-CPU device (the meta device allocates nothing, like a GPU stand-in)
    buf, out = _work_buffers(torch.device("meta"), torch.float32, (3, 4), 10, 5)
    assert buf.shape == (3, 4, 5) and out is None


def test_wide_requested_chunk_still_correct():
    geom = TiltGeometry.from_range(-60, 60, 10, (6, 9))
    x = torch.randn(5, 6, 9, dtype=torch.float64)
    ref = TiltProjector(geom, (5, 6, 9), chunk_columns=1)
    big = TiltProjector(geom, (5, 6, 9), chunk_columns=10**6)  # capped at ny: no huge buffer
    torch.testing.assert_close(big(x), ref(x))
    torch.testing.assert_close(big.T(ref(x)), ref.T(ref(x)))


# --------------------------------------------------------------------------- slab restriction


@pytest.mark.parametrize("shifts", [False, True])
def test_restrict_rows_equals_slice_of_full(shifts):
    rng = np.random.default_rng(5)
    n_t = 9
    geom = TiltGeometry(
        tilt_angles_deg=np.linspace(-55, 65, n_t), detector_shape=(14, 17),
        shifts_px=np.c_[np.zeros(n_t), rng.normal(0, 1.5, n_t)] if shifts else None,
    )
    op = TiltProjector(geom, (10, 14, 15))
    x = torch.randn(op.domain_shape, dtype=torch.float64)
    y = torch.randn(op.range_shape, dtype=torch.float64)
    full_fwd, full_adj = op(x), op.T(y)
    for y0, y1 in ((0, 14), (3, 8), (13, 14)):
        slab = op.restrict_rows(y0, y1)
        assert slab._a is op._a and slab._at is op._at and slab._torch is op._torch  # shared
        assert slab.domain_shape == (10, y1 - y0, 15) and slab.range_shape == (n_t, y1 - y0, 17)
        torch.testing.assert_close(slab(x[:, y0:y1]), full_fwd[:, y0:y1], rtol=0, atol=1e-12)
        torch.testing.assert_close(slab.T(y[:, y0:y1]), full_adj[:, y0:y1], rtol=0, atol=1e-12)


def test_restrict_rows_dot_product():
    from conftest import adjoint_mismatch

    geom = TiltGeometry.from_range(-60, 50, 7, (20, 13))
    slab = TiltProjector(geom, (9, 20, 11)).restrict_rows(4, 11)
    assert adjoint_mismatch(slab, np.random.default_rng(0)) < 1e-12


def test_restrict_rows_refuses_warp_and_bad_rows():
    warped = TiltProjector(TiltGeometry.from_range(-60, 60, 20, (12, 12), tilt_axis_angle_deg=10))
    with pytest.raises(ValueError, match="aligned geometry"):
        warped.restrict_rows(0, 4)
    op = TiltProjector(TiltGeometry.from_range(-60, 60, 20, (12, 10)))
    for y0, y1 in ((0, 0), (-1, 3), (5, 13), (6, 4)):
        with pytest.raises(ValueError, match=r"0 <= y0 < y1 <= ny = 12"):
            op.restrict_rows(y0, y1)
