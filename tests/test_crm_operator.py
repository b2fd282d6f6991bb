"""A_CRM (eq. 8): adjointness, exact folding, explicit matrices, Theorem 1, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryowedge.crm import CRMCopy, CRMData, sphere_support
from cryowedge.crm.operator import (
    CopyProjector,
    CRMOperator,
    averaging_matrix,
    crm_matrix,
    fold_angles,
    rotation_about_y,
    solution_space_dim,
    y_rotation_deg,
)
from cryowedge.crm.solvers import crm_kaczmarz
from cryowedge.geometry.rotations import euler_zyz_to_matrix, random_rotations
from cryowedge.geometry.wedge import wedge_mask
from cryowedge.operators.tilt_projector import build_projection_matrix

torch.set_num_threads(1)

ANGLES_10 = np.arange(-50.0, 51.0, 10.0)
ANGLES_25 = np.arange(-50.0, 51.0, 25.0)


def _dot_test(op, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(op.domain_shape, generator=gen, dtype=torch.float64)
    y = torch.randn(op.range_shape, generator=gen, dtype=torch.float64)
    lhs = float(torch.sum(op.forward(x) * y))
    rhs = float(torch.sum(x * op.adjoint(y)))
    return abs(lhs - rhs) / abs(lhs)


def _op_2d(n: int, phis, angles=ANGLES_10, radius: float = 4.0, **kw) -> CRMOperator:
    copies = [CRMCopy(angles, rotation_about_y(p)) for p in phis]
    return CRMOperator(copies, sphere_support((n, 1, n), radius), **kw)


def _op_3d(shape=(9, 6, 11), n_copies: int = 3, angles=ANGLES_25, seed: int = 1, **kw):
    rots = list(random_rotations(n_copies - 1, seed)) + [None]  # one identity copy
    copies = [CRMCopy(angles, r) for r in rots]
    return CRMOperator(copies, sphere_support(shape, 3.0), **kw)


def _blob(n: int) -> np.ndarray:
    z, x = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    return np.exp(-((z - 2) ** 2 / 14 + (x + 3) ** 2 / 7)) + 0.6 * np.exp(
        -((z + 3) ** 2 / 5 + (x - 2) ** 2 / 10)
    )


# ----------------------------------------------------------------------------- adjointness
@pytest.mark.parametrize("frame", ["copy", "particle"])
def test_adjoint_folded_2d(frame):
    op = _op_2d(13, [0.0, 35.0, 80.0], background_frame=frame)
    assert op.folded and op.background_frame == frame
    assert op.shared_projector  # a disc support: one combined slice matrix per copy
    if frame == "copy":  # its particle columns at θ + φ, its background columns at θ
        assert not np.array_equal(op.particle_angles_deg[1], op.effective_angles_deg[1])
    assert _dot_test(op) < 1e-12


def test_adjoint_2d_with_wrapped_angles_even_size():
    # φ = 130° puts most views beyond +90°: wrapped by −180° with the detector reversed
    for frame in ("copy", "particle"):
        op = _op_2d(12, [0.0, 130.0, -150.0], chunk_copies=2, background_frame=frame)
        assert fold_angles(op.particle_angles_deg[1])[1].any()
        assert len(op.chunks) == 2
        assert _dot_test(op) < 1e-12


def test_adjoint_3d_rotated_in_chunks():
    op = _op_3d(chunk_copies=2)
    assert not op.folded and op.background_frame == "copy"
    assert _dot_test(op) < 1e-12
    # leading batch dimensions pass through
    x = torch.randn(2, *op.domain_shape, dtype=torch.float64)
    out = op.forward(x)
    assert out.shape == (2, *op.range_shape)
    torch.testing.assert_close(out[1], op.forward(x[1]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nx", [10, 11])
def test_wrapped_projection_equals_unwrapped_matrix(nx):
    """The reversal used for angles beyond ±90° is exact, also for even widths."""
    angles = np.array([-170.0, -100.0, -90.0, -30.0, 0.0, 45.0, 90.0, 95.0, 135.0, 180.0])
    folded = CopyProjector(angles, (7, 1, nx)).matrix
    direct = build_projection_matrix(angles, nx, 7, nx)  # the projector's formula at the raw angles
    assert abs(folded - direct).max() < 1e-12


# ----------------------------------------------------------------------------- folding
def test_y_rotation_angle_round_trip_and_relion_form():
    for phi in (-179.0, -45.0, 0.0, 30.0, 120.0, 180.0):
        assert y_rotation_deg(rotation_about_y(phi)) == pytest.approx(phi)
        np.testing.assert_allclose(
            rotation_about_y(phi), euler_zyz_to_matrix(0.0, -phi, 0.0), atol=1e-12
        )
    assert y_rotation_deg(euler_zyz_to_matrix(10.0, 20.0, 0.0)) is None


def test_folded_path_equals_rotation3d_path_within_interpolation_error():
    n = 32
    phis = [0.0, 37.0, 100.0, 160.0]
    shape = (n, 1, n)
    support = sphere_support(shape, 10)
    folded = CRMOperator(
        [CRMCopy(np.arange(-50.0, 51.0, 10.0), rotation_about_y(p)) for p in phis], support
    )
    rotated = CRMOperator(folded.copies, support, fold=False)
    mirrored = CRMOperator(
        [CRMCopy(np.arange(-50.0, 51.0, 10.0), rotation_about_y(-p)) for p in phis], support
    )
    x = torch.zeros(folded.domain_shape, dtype=torch.float64)
    x[0, :, 0, :] = torch.from_numpy(_blob(n))
    a, b, m = folded(x), rotated(x), mirrored(x)
    assert torch.equal(a[0], b[0])  # identity copy: same matrix
    for i in range(1, 4):
        rel = float((a[i] - b[i]).norm() / b[i].norm())
        assert rel < 0.04, (i, rel)  # trilinear rotation vs exact: a few per cent
        assert float((m[i] - b[i]).norm() / b[i].norm()) > 0.3  # the opposite sense does not match


def test_fold_sign_matches_wedge_mask():
    """The particle-frame wedge of copy i (wedge_mask with R_i) is its effective angles' range."""
    shape = (16, 1, 16)
    angles = np.arange(-40.0, 41.0, 5.0)
    for phi in (-30.0, 25.0, 45.0):
        rotated = wedge_mask(shape, angles, rotation_xyz=rotation_about_y(phi))
        shifted = wedge_mask(shape, angles + phi)
        assert torch.equal(rotated, shifted)
    assert not torch.equal(
        wedge_mask(shape, angles, rotation_xyz=rotation_about_y(30.0)),
        wedge_mask(shape, angles - 30.0),
    )


# ----------------------------------------------------------------------------- explicit matrices
@pytest.mark.parametrize("case", ["folded2d", "folded2d-particle", "folded3d", "rotated3d"])
def test_matrix_row_form_and_parts_agree_with_forward(case):
    if case.startswith("folded2d"):
        frame = "particle" if case.endswith("particle") else "copy"
        op = _op_2d(9, [0.0, 50.0, 140.0], background_frame=frame)
    elif case == "folded3d":  # rotations about the tilt axis, a ball support that changes along y
        op = CRMOperator(
            [CRMCopy([-40.0, 0.0, 40.0], rotation_about_y(p)) for p in (0.0, 100.0)],
            sphere_support((5, 4, 6), 2.0),
        )
        assert op.folded and _dot_test(op) < 1e-12
    else:
        op = _op_3d((5, 4, 6), angles=[-40.0, 0.0, 40.0])
    n_dom = int(np.prod(op.domain_shape))
    eye = torch.eye(n_dom, dtype=torch.float64).reshape(n_dom, *op.domain_shape)
    dense = op.forward(eye).reshape(n_dom, -1).T.numpy()  # the operator applied to identity columns
    np.testing.assert_allclose(op.matrix().toarray(), dense, atol=1e-12)
    rows = op.row_form()
    x = torch.randn(op.domain_shape, dtype=torch.float64)
    from_rows = torch.from_numpy(rows.matrix @ rows.to_columns(x).numpy())
    torch.testing.assert_close(from_rows, rows.data_to_rows(op.forward(x)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rows.from_columns(rows.to_columns(x)), x)
    if case.startswith("folded2d"):  # the 2D row form is the slice matrix (batch = the y slices)
        assert rows.matrix.shape[1] == (op.n_copies + 1) * 81
    for i in range(op.n_copies):
        xi = torch.zeros_like(x)
        xi[0], xi[1 + i] = x[0], x[1 + i]
        both = op.particle_part(i)(x[0]) + op.background_part(i)(x[1 + i])
        torch.testing.assert_close(both, op.forward(xi)[i], rtol=1e-12, atol=1e-12)
        assert _dot_test(op.particle_part(i)) < 1e-12 and _dot_test(op.background_part(i)) < 1e-12


def test_copy_frame_background_holds_a_box_filling_stain_exactly():
    """A stain filling the copy's square box, projected at the microscope angles θ (as a real
    sub-tilt-series and simulate_crm_2d draw it), is B_i g_i with the copy-frame background;
    its rotated-back copy on the particle-frame grid loses the corners (issue 11 finding)."""
    n, phi = 17, 40.0
    angles = np.arange(-50.0, 51.0, 10.0)
    support = sphere_support((n, 1, n), 4.0)
    stain = np.random.default_rng(0).uniform(0.2, 1.0, (n, n)) * ~support[:, 0, :]
    measured = (build_projection_matrix(angles, n, n, n) @ stain.ravel()).reshape(-1, 1, n)
    op = CRMOperator([CRMCopy(angles, rotation_about_y(phi))], support)
    assert op.background_frame == "copy" and op.folded
    got = op.background_part(0)(torch.from_numpy(stain[:, None, :]))
    np.testing.assert_allclose(got.numpy(), measured, atol=1e-12)
    # the particle-frame grid holds only the stain rotated back (cubic splines), with error
    back = ndimage.rotate(stain, -phi, reshape=False, order=3, mode="constant")
    pf = CRMOperator([CRMCopy(angles, rotation_about_y(phi))], support, background_frame="particle")
    rel = float(
        (pf.background_part(0)(torch.from_numpy(back[:, None, :])) - got).norm() / got.norm()
    )
    assert rel > 0.05, rel


def _plain_kaczmarz(a: np.ndarray, b: np.ndarray, sweeps: int, lam: float) -> np.ndarray:
    """Textbook Kaczmarz (eq. 16), cyclic over the rows of a dense matrix."""
    x = np.zeros(a.shape[1])
    norms = np.einsum("ij,ij->i", a, a)
    for _ in range(sweeps):
        for j in range(a.shape[0]):
            if norms[j] > 0:
                x += lam * (b[j] - a[j] @ x) / norms[j] * a[j]
    return x


def _stacked_eq8(op: CRMOperator) -> np.ndarray:
    """Eq. 8 assembled block by block from D_i and B_i applied to identity columns."""
    n_vox = int(np.prod(op.volume_shape))
    eye = torch.eye(n_vox, dtype=torch.float64).reshape(n_vox, *op.volume_shape)
    n_rows = op.n_tilts * op.volume_shape[1] * op.volume_shape[2]
    a = np.zeros((op.n_copies * n_rows, (op.n_copies + 1) * n_vox))
    for i in range(op.n_copies):
        rows = slice(i * n_rows, (i + 1) * n_rows)
        a[rows, :n_vox] = op.particle_part(i)(eye).reshape(n_vox, -1).T.numpy()
        a[rows, (1 + i) * n_vox : (2 + i) * n_vox] = (
            op.background_part(i)(eye).reshape(n_vox, -1).T.numpy()
        )
    return a


@pytest.mark.parametrize("case", ["folded2d", "folded2d-particle", "rotated3d"])
def test_sparse_kaczmarz_equals_plain_kaczmarz_on_stacked_matrix(case):
    op = (
        _op_2d(
            8,
            [0.0, 70.0, 125.0],
            angles=[-45.0, -15.0, 15.0, 45.0],
            radius=3.0,
            background_frame="particle" if case.endswith("particle") else "copy",
        )
        if case.startswith("folded2d")
        else _op_3d((4, 3, 5), n_copies=2, angles=[-30.0, 30.0])
    )
    gen = torch.Generator().manual_seed(3)
    b = op.forward(torch.rand(op.domain_shape, generator=gen, dtype=torch.float64))
    a = _stacked_eq8(op)
    expected = _plain_kaczmarz(a, b.numpy().ravel(), sweeps=3, lam=0.7)
    result = crm_kaczmarz(op, b, n_iter=3, relaxation=0.7)  # sequential rows in eq. 8 order
    np.testing.assert_allclose(result.x.numpy().ravel(), expected, atol=1e-10)
    assert result.n_iter == 3


# ----------------------------------------------------------------------------- Theorem 1
@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_theorem1_crm_solution_space_no_larger_than_averaging(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([6, 7]))
    n_copies = int(rng.integers(2, 4))
    n_views = int(rng.integers(2, 5))
    start = rng.uniform(-60.0, 0.0)
    angles = np.sort(start + rng.uniform(0.0, 60.0, n_views))
    phis = rng.uniform(-180.0, 180.0, n_copies)
    op = _op_2d(n, phis, angles=angles, radius=2.2)
    a_crm = _stacked_eq8(op)
    n_vox = n * n
    keep = np.concatenate(
        [np.flatnonzero(op.support.ravel())]
        + [(1 + i) * n_vox + np.flatnonzero(~op.copy_supports[i].ravel()) for i in range(n_copies)]
    )
    a_crm = a_crm[:, keep]  # the paper's unknowns: h on the support, g_i off it
    np.testing.assert_allclose(crm_matrix(op).toarray(), a_crm, atol=1e-12)
    a_avg = averaging_matrix(op)
    dim_crm, dim_avg = solution_space_dim(a_crm), solution_space_dim(a_avg)
    assert dim_crm <= dim_avg
    # eq. 14: the gap is at least Σ_{i≥2} (n_h − rank D_i), positive with limited angles
    n_h = int(op.support.sum())
    sup = op.support.ravel()
    gap = sum(
        n_h - np.linalg.matrix_rank(op.copy_matrices(i)[0].toarray()[:, sup])
        for i in range(1, n_copies)
    )
    assert gap > 0
    assert dim_avg - dim_crm >= gap


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_with_clear_errors():
    angles = np.arange(-50.0, 51.0, 10.0)
    support = sphere_support((12, 1, 12), 4)
    with pytest.raises(ValueError, match="same number of tilts"):
        CRMOperator([CRMCopy(angles), CRMCopy(angles[:-1])], support)
    with pytest.raises(ValueError, match="support is empty"):
        CRMOperator([CRMCopy(angles)], np.zeros((12, 1, 12), bool))
    with pytest.raises(ValueError, match="support must be a"):
        CRMOperator([CRMCopy(angles)], np.ones((2, 3, 4, 5), bool))
    with pytest.raises(ValueError, match="0/1"):
        CRMOperator([CRMCopy(angles)], support * 2.5)
    with pytest.raises(ValueError, match="rotation to be about y"):
        CRMOperator([CRMCopy(angles, euler_zyz_to_matrix(10.0, 30.0, 0.0))], support)
    with pytest.raises(ValueError, match="fold=True"):
        CRMOperator(
            [CRMCopy(angles, euler_zyz_to_matrix(10.0, 30.0, 0.0))],
            sphere_support((6, 6, 6), 2),
            fold=True,
        )
    # through the data container: different image sizes, a support of the wrong shape
    good = np.zeros((len(angles), 1, 12))
    with pytest.raises(ValueError, match="different sub-tilt-series shapes"):
        CRMData([good, np.zeros((len(angles), 1, 14))], [CRMCopy(angles)] * 2, support)
    with pytest.raises(ValueError, match="does not fit the images"):
        CRMData(np.stack([good, good]), [CRMCopy(angles)] * 2, sphere_support((12, 1, 10), 3))
    with pytest.raises(ValueError, match="support is empty"):
        CRMData(np.stack([good, good]), [CRMCopy(angles)] * 2, np.zeros((12, 1, 12), bool))
    op = CRMOperator([CRMCopy(angles)] * 2, support)
    with pytest.raises(ValueError, match="must end in shape"):
        op.forward(torch.zeros(2, 12, 1, 12))  # N + 1 = 3 slots expected


def test_matrices_beyond_the_cache_budget_are_rebuilt(caplog):
    big = _op_2d(12, [0.0, 130.0, -150.0])
    small = _op_2d(12, [0.0, 130.0, -150.0], chunk_copies=1, cache_bytes=1)
    x = torch.randn(big.domain_shape, dtype=torch.float64)
    with caplog.at_level("WARNING", logger="cryowedge.crm.operator"):
        torch.testing.assert_close(small.forward(x), big.forward(x), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            small.adjoint(big.forward(x)), big.adjoint(big.forward(x)), rtol=1e-12, atol=1e-12
        )
    assert "exceed cache_bytes" in caplog.text
