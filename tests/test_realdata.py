"""Real data: the aligned STEM-HAADF needle series (NIST, tilt axis along X), vendored crop.

Full series ±76° at 2°; we check measured properties of the reconstruction, not only that
it runs (figures measured at commit time are in docs/results.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TEST_DATA, shared_data

from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp


def _reprojection_residual(data: np.ndarray, geometry, volume: torch.Tensor) -> float:
    op = TiltProjector(geometry, tuple(volume.shape))
    reproj = op(volume)
    b = torch.from_numpy(data)
    scale = (reproj * b).sum() / (reproj * reproj).sum()  # FBP is not scale-exact at ±76°
    return float(torch.linalg.norm(scale * reproj - b) / torch.linalg.norm(b))


@pytest.fixture(scope="module")
def needle():
    return load_tilt_series(
        TEST_DATA / "needle_aligned_crop.mrc", TEST_DATA / "needle_aligned_crop.tlt", tilt_axis_angle_deg=-90
    )


def test_crop_geometry(needle):
    g = needle.geometry
    assert g.n_tilts == 77 and g.tilt_range_deg == (-76.0, 76.0)
    assert g.pixel_size_angstrom == pytest.approx(67.2)
    assert g.aligned_detector_shape == (32, 128)  # axis along raw X


def _held_out_correlation(series, axis_deg: float) -> float:
    """Reconstruct from the even tilts, predict the odd tilts, mean image correlation."""
    g = series.geometry.with_(tilt_axis_angle_deg=axis_deg)
    shape = (128, *g.aligned_detector_shape)
    train = np.arange(g.n_tilts) % 2 == 0
    rec = fbp(series.data[train], g[train], volume_shape=shape)
    predicted = TiltProjector(g[~train], shape)(rec).numpy()
    measured = series.data[~train]
    return float(np.mean([np.corrcoef(p.ravel(), m.ravel())[0, 1] for p, m in zip(predicted, measured)]))


def test_held_out_tilts_pin_the_tilt_axis_and_centring(needle):
    """Only the axis along raw X, with this series' centring, predicts unseen views well.

    Measured: -90° → 0.995, +90° → 0.975, 0° (axis along Y) → 0.979. ±90° differ by a
    180° image rotation, which a volume inverted through the centre explains up to the
    one-pixel centring of an even width: +90° with a one-pixel shift scores as well as -90°
    (docs/conventions.md, "Handedness and IMOD"). So this pins the axis and the centring, not
    the hand; tests/test_handedness.py pins the hand.
    """
    right = _held_out_correlation(needle, -90.0)
    assert right > 0.99
    assert right > _held_out_correlation(needle, 90.0) + 0.01
    assert right > _held_out_correlation(needle, 0.0) + 0.01


def test_full_range_reconstruction_reprojects(needle):
    g = needle.geometry
    rec = fbp(needle.data, g, volume_shape=(128, *g.aligned_detector_shape))
    assert _reprojection_residual(needle.data, g, rec) < 0.25  # measured 0.22


def test_limited_range_correlates_with_full(needle):
    g = needle.geometry
    shape = (128, *g.aligned_detector_shape)
    full = fbp(needle.data, g, volume_shape=shape).numpy()
    idx = g.angle_range_indices(-60, 60)
    limited = fbp(needle.data[idx], g[idx], volume_shape=shape).numpy()
    cc = np.corrcoef(full.ravel(), limited.ravel())[0, 1]
    assert cc > 0.90  # measured 0.931: the ±60° subset misses only the 16° wedges


@pytest.mark.realdata
def test_full_size_shared_series():
    path = shared_data("etspy_HAADF_needle_aligned.mrc")
    series = load_tilt_series(path, path.with_suffix(".tlt"), tilt_axis_angle_deg=-90)
    g = series.geometry[::2]  # every other tilt keeps the test quick
    rec = fbp(series.data[::2], g, volume_shape=(96, *g.aligned_detector_shape))
    assert _reprojection_residual(series.data[::2], g, rec) < 0.30
