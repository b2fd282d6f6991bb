"""Common lines resolve the O(4) ambiguity of recovered orientations up to the hand."""

from __future__ import annotations

import numpy as np
import pytest

from cryowedge.spa.angles import angular_errors_deg
from cryowedge.spa.orient import quaternion_to_matrix, random_orthogonal4, uniform_quaternions
from cryowedge.spa.orient.commonlines import (
    common_line_score,
    fourier_lines,
    mirror_rotations,
    resolve_ambiguity,
)
from cryowedge.spa.orient.data import prepare_density, project_density


@pytest.fixture(scope="module")
def projections():
    model = prepare_density("1a5t", box_size=24)
    return project_density(model, uniform_quaternions(80, 4))


def test_score_separates_true_random_and_inverse(projections):
    lines = fourier_lines(projections.images)
    gen = np.random.default_rng(0)
    i = gen.integers(0, 80, 800)
    j = (i + gen.integers(1, 80, 800)) % 80
    r = projections.rotations
    true = common_line_score(lines, r, (i, j))
    assert true > 0.9
    assert common_line_score(lines, quaternion_to_matrix(uniform_quaternions(80, 9)), (i, j)) < 0.5
    assert common_line_score(lines, np.transpose(r, (0, 2, 1)), (i, j)) < 0.5
    # the mirror image is exactly as consistent: the hand is not in the projections
    assert common_line_score(lines, mirror_rotations(r), (i, j)) == pytest.approx(true, abs=1e-9)


def test_resolve_recovers_up_to_a_global_rotation_and_the_hand(projections):
    q = projections.quaternions
    est = q @ np.linalg.inv(random_orthogonal4(2, det=-1)).T  # inversion + left/right factors
    res = resolve_ambiguity(projections.images, est, n_grid=600, n_local=150, n_pairs=800)
    assert res.inverted
    errors = [angular_errors_deg(c, projections.rotations)[0].mean()
              for c in (res.rotations, mirror_rotations(res.rotations))]
    assert min(errors) < 3.0 and max(errors) > 30.0
