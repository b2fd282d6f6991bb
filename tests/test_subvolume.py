"""Sub-volume extraction/insertion and centre crop/pad: exact crops, zeros outside, adjoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DEVICES, adjoint_mismatch

from cryowedge.geometry.rotations import euler_zyz_to_matrix, random_rotations
from cryowedge.operators.rotation import Rotation3D
from cryowedge.operators.subvolume import (
    CenterCrop,
    SubvolumeExtract,
    extract_subvolumes,
    insert_subvolumes,
)


def test_dot_product_adjoint(rng):
    shape = (12, 13, 14)
    pos = rng.uniform(-3, 16, size=(7, 3))  # fractional, some boxes partly outside
    op = SubvolumeExtract(shape, pos, (5, 4, 6))
    assert op.range_shape == (7, 5, 4, 6)
    assert adjoint_mismatch(op, rng) < 1e-12
    rot = SubvolumeExtract(shape, pos, (5, 4, 6), rotations_xyz=random_rotations(7, rng=2))
    assert adjoint_mismatch(rot, rng) < 1e-12


def test_integer_positions_give_exact_crops(rng):
    vol = rng.standard_normal((2, 15, 16, 17)).astype(np.float32)  # a batch of 2 volumes
    pos = np.array([[7, 8, 8], [3, 4, 5], [10, 11, 12]])
    box = (5, 4, 6)
    out = extract_subvolumes(torch.from_numpy(vol), pos, box).numpy()
    assert out.shape == (2, 3, *box)
    for n, (z, y, x) in enumerate(pos):
        z0, y0, x0 = z - box[0] // 2, y - box[1] // 2, x - box[2] // 2
        np.testing.assert_array_equal(out[:, n], vol[:, z0 : z0 + 5, y0 : y0 + 4, x0 : x0 + 6])


def test_box_half_outside_reads_zeros(rng):
    vol = rng.standard_normal((10, 10, 10))
    box = extract_subvolumes(torch.from_numpy(vol), [[0, 5, 9]], (4, 4, 4))[0].numpy()
    # Box z covers indices -2..1 and x covers 7..10: rows z < 0 and column x = 10 are zero.
    np.testing.assert_array_equal(box[:2], 0.0)
    np.testing.assert_array_equal(box[:, :, 3], 0.0)
    np.testing.assert_array_equal(box[2:, :, :3], vol[0:2, 3:7, 7:10])
    # Entirely outside: all zeros, no error.
    far = extract_subvolumes(torch.from_numpy(vol), [[-20.0, 5.0, 5.0]], (4, 4, 4))
    assert torch.count_nonzero(far) == 0


def test_fractional_position_interpolates_linearly():
    # A linear ramp is reproduced exactly by trilinear interpolation.
    z, y, x = np.indices((10, 11, 12)).astype(np.float64)
    ramp = torch.from_numpy(2.0 * z - 0.5 * y + 3.0 * x)
    pos = np.array([[4.3, 5.6, 6.25]])
    box = extract_subvolumes(ramp, pos, (3, 3, 3))[0].numpy()
    bz, by, bx = np.indices((3, 3, 3)) - 1
    expected = 2.0 * (4.3 + bz) - 0.5 * (5.6 + by) + 3.0 * (6.25 + bx)
    np.testing.assert_allclose(box, expected, atol=1e-12)


def test_insert_reproduces_regions_of_non_overlapping_boxes(rng):
    vol = torch.from_numpy(rng.standard_normal((16, 16, 16)))
    pos = np.array([[4, 4, 4], [11, 4, 11], [4, 12, 10]])
    box = (6, 6, 6)
    boxes = extract_subvolumes(vol, pos, box)
    back = insert_subvolumes(boxes, pos, vol.shape)
    covered = insert_subvolumes(torch.ones_like(boxes), pos, vol.shape)
    assert covered.max() == 1.0  # the boxes do not overlap
    torch.testing.assert_close(back, vol * covered, rtol=0, atol=0)
    assert covered.sum() == 3 * 6**3


def test_rotated_extraction_equals_crop_then_rotate(rng):
    vol = torch.from_numpy(rng.standard_normal((14, 15, 16)))
    pos = np.array([[6, 7, 8], [7, 7, 7]])
    box = (7, 7, 7)
    # Quarter turns: both paths are exact permutations.
    mats = np.stack([euler_zyz_to_matrix(90.0, 0.0, 0.0), euler_zyz_to_matrix(0.0, 90.0, 0.0)])
    rotated = extract_subvolumes(vol, pos, box, rotations_xyz=mats)
    crops = extract_subvolumes(vol, pos, box)
    torch.testing.assert_close(rotated, Rotation3D(box, mats)(crops), rtol=0, atol=0)
    # General rotations inside the box (sources away from the box edge): one interpolation
    # of the volume equals interpolating the crop when the source stays inside the crop.
    r = random_rotations(1, rng=3)[0]
    big = extract_subvolumes(vol, pos[:1], box, rotations_xyz=r)[0]
    via_crop = Rotation3D(box, r)(crops[0])
    torch.testing.assert_close(big[2:5, 2:5, 2:5], via_crop[2:5, 2:5, 2:5], rtol=0, atol=1e-12)


def test_batch_gradcheck_and_devices(rng):
    op = SubvolumeExtract((5, 6, 5), rng.uniform(0, 5, (2, 3)), (3, 2, 3))
    x = torch.randn((2, *op.domain_shape), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op.forward, (x,))
    out = op(x)
    torch.testing.assert_close(out[1], op(x[1]), rtol=0, atol=0)
    for device in DEVICES:
        y = op(x.detach().to(device=device, dtype=torch.float32))
        torch.testing.assert_close(y.cpu().double(), out.detach(), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("domain", "range_"), [((8, 9, 10), (5, 6, 7)), ((5, 6, 7), (8, 9, 10)), ((6, 7), (9, 4))]
)
def test_center_crop_pad(domain, range_, rng):
    op = CenterCrop(domain, range_)
    assert adjoint_mismatch(op, rng) < 1e-14
    x = torch.from_numpy(rng.standard_normal(domain))
    y = op(x)
    assert y.shape == range_
    # The centre pixel N // 2 maps to M // 2.
    centre_in = tuple(n // 2 for n in domain)
    centre_out = tuple(m // 2 for m in range_)
    assert y[centre_out] == x[centre_in]
    # Crop then pad back keeps the kept region and zeros the rest (projection).
    torch.testing.assert_close(op.adjoint(op(op.adjoint(y))), op.adjoint(y), rtol=0, atol=0)


def test_bad_input():
    with pytest.raises(ValueError, match=r"positions_zyx must have shape \(N, 3\)"):
        SubvolumeExtract((8, 8, 8), np.zeros((3, 2)), (4, 4, 4))
    with pytest.raises(ValueError, match="not finite"):
        SubvolumeExtract((8, 8, 8), [[1.0, np.nan, 2.0]], (4, 4, 4))
    with pytest.raises(ValueError, match="box_shape"):
        SubvolumeExtract((8, 8, 8), [[1, 2, 3]], (4, 4))
    with pytest.raises(ValueError, match=r"rotations_xyz must be \(3, 3\) or \(N, 3, 3\)"):
        SubvolumeExtract(
            (8, 8, 8), [[1, 2, 3]], (4, 4, 4), rotations_xyz=random_rotations(2, rng=0)
        )
    with pytest.raises(ValueError, match="same number of positive axes"):
        CenterCrop((4, 4, 4), (4, 4))
