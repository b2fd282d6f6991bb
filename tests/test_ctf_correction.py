"""Strip-based CTF correction of tilted views, dose weighting, and their `reconstruct` wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.tilt import TiltGeometry, rotation_yx
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.recon.ctf_correction import (
    axis_columns,
    critical_exposure,
    ctf_correct,
    dose_filter,
    dose_weight,
)
from cryowedge.simulate.ctf import apply_ctf, ctf_2d, phase_flip
from cryowedge.simulate.tilt_series import project_volume, simulate_tilt_series
from cryowedge.workflows.reconstruct import reconstruct_file

PX = 5.0  # Å
DEFOCUS = 30000.0  # Å (3 µm)


def _highpass_correlation(a: np.ndarray, b: np.ndarray, k_min: float) -> float:
    """Correlation of two ``(ny, nx)`` images above ``k_min`` cycles/pixel."""
    ny, nx = a.shape
    k = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.rfftfreq(nx)[None, :])
    fa, fb = np.fft.rfft2(a), np.fft.rfft2(b)
    fa[k < k_min] = 0
    fb[k < k_min] = 0
    ha, hb = np.fft.irfft2(fa, s=a.shape), np.fft.irfft2(fb, s=b.shape)
    return float(np.corrcoef(ha.ravel(), hb.ravel())[0, 1])


# ------------------------------------------------------------------ untilted = whole-image flip
@pytest.mark.parametrize("shape", [(64, 96), (63, 77)])
def test_untilted_view_equals_whole_image_phase_flip(shape):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, *shape))
    geom = TiltGeometry(tilt_angles_deg=[0.0], detector_shape=shape, pixel_size_angstrom=PX)
    kw = dict(pixel_size_angstrom=PX, defocus_u_angstrom=DEFOCUS, defocus_v_angstrom=27000.0,
              astigmatism_angle_deg=30.0)
    ctf = ctf_2d(shape, **kw)
    flipped = ctf_correct(image, geom, DEFOCUS, 27000.0, 30.0, keep_contrast=False)
    np.testing.assert_allclose(flipped, phase_flip(image, ctf), atol=1e-5)
    # keep_contrast (the default, IMOD's) is the same with the sign of every frequency turned
    np.testing.assert_allclose(ctf_correct(image, geom, DEFOCUS, 27000.0, 30.0), -flipped,
                               atol=1e-5)
    # Wiener-like: C / (C² + ε) on the whole image
    wiener = ctf_correct(image, geom, DEFOCUS, 27000.0, 30.0, mode="wiener",
                         wiener_constant=0.2, keep_contrast=False)
    np.testing.assert_allclose(wiener, apply_ctf(image, ctf / (ctf**2 + 0.2)), atol=1e-5)


# ------------------------------------------------------------------ strips on a tilted view
@pytest.fixture(scope="module")
def tilted_view():
    """A thin random specimen seen at 60° with a per-voxel defocus (3 µm at the axis)."""
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(2, 17, 511)).astype(np.float32)  # odd: rot90 keeps the centre
    geom = TiltGeometry(tilt_angles_deg=[60.0], detector_shape=(17, 511), pixel_size_angstrom=PX)
    sim = simulate_tilt_series(volume, geom, defocus_angstrom=DEFOCUS, defocus_gradient=True,
                               defocus_step_angstrom=50.0)
    return geom, sim.clean, project_volume(volume, geom)


def _first_zero_cycles_per_pixel() -> float:
    line = ctf_2d((1, 4096), pixel_size_angstrom=PX, defocus_u_angstrom=DEFOCUS, rfft=True)[0]
    return float(np.argmax(line > 0)) / 4096


def test_strips_recover_a_tilted_view_better_than_its_central_defocus(tilted_view):
    geom, clean, truth = tilted_view
    k1 = _first_zero_cycles_per_pixel()
    scores = {}
    for name, tol in (("strips", 200.0), ("central", None)):
        corrected = ctf_correct(clean, geom, DEFOCUS, defocus_tolerance_angstrom=tol,
                                keep_contrast=False)
        scores[name] = _highpass_correlation(corrected[0], truth[0], k1)
    # the other hand: the same strips with the defocus gradient reversed
    wrong = ctf_correct(clean, geom.with_(tilt_angles_deg=[-60.0]), DEFOCUS,
                        keep_contrast=False)
    scores["wrong hand"] = _highpass_correlation(wrong[0], truth[0], k1)
    assert scores["strips"] > scores["central"] + 0.02, scores
    assert scores["central"] > scores["wrong hand"] + 0.05, scores
    assert scores["strips"] > 0.85, scores


def test_finer_strips_do_not_leave_seams(tilted_view):
    """Interpolated strips: a finer tolerance changes the result smoothly, with no seam."""
    geom, clean, _ = tilted_view
    coarse = ctf_correct(clean, geom, DEFOCUS, defocus_tolerance_angstrom=400.0)[0]
    fine = ctf_correct(clean, geom, DEFOCUS, defocus_tolerance_angstrom=50.0)[0]
    column_error = np.abs(coarse - fine).mean(axis=0)
    # no column (e.g. a strip boundary) is much worse than the typical column
    assert column_error.max() < 4 * np.median(column_error)
    assert np.corrcoef(coarse.ravel(), fine.ravel())[0, 1] > 0.97


def test_raw_axis_at_90_degrees_equals_the_rotated_aligned_correction(tilted_view):
    """A raw stack with its tilt axis along X (φ = 90°) is corrected like the aligned one."""
    _, clean, _ = tilted_view
    aligned = TiltGeometry(tilt_angles_deg=[60.0], detector_shape=(17, 511),
                           pixel_size_angstrom=PX)
    raw_geom = aligned.with_(tilt_axis_angle_deg=90.0, detector_shape=(511, 17))
    # the quarter turn that the projector applies between the aligned and the raw detector
    volume = np.random.default_rng(2).normal(size=(2, 17, 511)).astype(np.float32)
    on_aligned_det = project_volume(volume, aligned)[0]
    on_raw_det = project_volume(volume, raw_geom)[0]
    k = next(k for k in range(4) if np.rot90(on_aligned_det, k).shape == on_raw_det.shape
             and np.allclose(np.rot90(on_aligned_det, k), on_raw_det, atol=1e-4))
    raw_image = np.rot90(clean[0], k)[None].copy()
    on_raw = ctf_correct(raw_image, raw_geom, DEFOCUS)[0]
    on_aligned = ctf_correct(clean, aligned, DEFOCUS)[0]
    np.testing.assert_allclose(on_raw, np.rot90(on_aligned, k), atol=1e-4)


@pytest.mark.parametrize("phi", [0.0, 30.0, 90.0, -90.0])
def test_axis_columns_grow_across_the_rotated_axis(phi):
    """u is 0 on the raw tilt axis through the (shifted) centre and grows along R(φ)·x̂."""
    geom = TiltGeometry(tilt_angles_deg=[0.0], detector_shape=(40, 50), tilt_axis_angle_deg=phi,
                        shifts_px=[[2.0, -3.0]])
    u = axis_columns(geom, 0)
    gy = u[1:, :] - u[:-1, :]
    gx = u[:, 1:] - u[:, :-1]
    np.testing.assert_allclose([gy.mean(), gx.mean()], rotation_yx(phi) @ [0.0, 1.0], atol=1e-12)
    # the projection of the volume centre (raw centre + shift) is on the axis
    assert abs(u[20 + 2, 25 - 3]) < 1e-12


# ------------------------------------------------------------------ dose weighting
def test_dose_filter_equals_the_grant_grigorieff_formula():
    shape, px = (64, 64), 2.0
    for prior, own in ((0.0, 3.0), (20.0, 3.0), (40.0, 0.0)):
        q = dose_filter(shape, px, prior, own)
        assert q[0, 0] == 1.0
        for iy, ix in ((0, 5), (7, 3), (32, 32), (60, 10)):
            k = np.hypot(np.fft.fftfreq(64)[iy], np.fft.rfftfreq(64)[ix]) / px
            ne = 0.245 * k**-1.665 + 2.81
            expected = (2 * ne / own * (np.exp(-prior / (2 * ne))
                                        - np.exp(-(prior + own) / (2 * ne)))
                        if own else np.exp(-prior / (2 * ne)))
            assert q[iy, ix] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(critical_exposure([0.1, 0.25], voltage_kv=200.0),
                               0.8 * (0.245 * np.array([0.1, 0.25]) ** -1.665 + 2.81))
    # more exposure damps more; the filter falls with frequency
    assert np.all(dose_filter(shape, px, 30.0, 3.0) <= dose_filter(shape, px, 10.0, 3.0))
    line = dose_filter(shape, px, 30.0, 3.0)[0]
    assert np.all(np.diff(line) < 0)


def test_dose_weight_applies_each_views_filter():
    rng = np.random.default_rng(3)
    views = rng.normal(size=(2, 32, 40))
    out = dose_weight(views, 3.0, [0.0, 50.0], [2.0, 2.0])
    for t, prior in enumerate((0.0, 50.0)):
        expected = np.fft.irfft2(np.fft.rfft2(views[t]) * dose_filter((32, 40), 3.0, prior, 2.0),
                                 s=(32, 40))
        np.testing.assert_allclose(out[t], expected, atol=1e-5)
    # the late view loses more high-frequency power
    assert np.std(out[1] - out[1].mean()) < np.std(out[0] - out[0].mean())


# ------------------------------------------------------------------ simulation
def test_defocus_gradient_of_a_flat_untilted_specimen_is_the_plain_ctf():
    volume = np.random.default_rng(4).normal(size=(1, 8, 256)).astype(np.float32)
    geom = TiltGeometry(tilt_angles_deg=[0.0, 50.0], detector_shape=(8, 256),
                        pixel_size_angstrom=PX)
    banded = simulate_tilt_series(volume, geom, defocus_angstrom=[DEFOCUS, 25000.0],
                                  defocus_gradient=True).clean
    plain = simulate_tilt_series(volume, geom, defocus_angstrom=[DEFOCUS, 25000.0]).clean
    np.testing.assert_allclose(banded[0], plain[0], atol=1e-4)  # θ = 0: one defocus
    # θ = 50°: the specimen covers columns 46-210 (±490 Å of defocus); near the axis the
    # plain CTF is right, towards the ends of the specimen it is not
    error = np.abs(banded[1] - plain[1]).mean(axis=0)
    ends = np.r_[error[50:70], error[186:206]].mean()
    assert error[120:136].mean() < 0.5 * ends
    assert ends > 0.05 * plain[1].std()


# ------------------------------------------------------------------ reconstruct wiring
ANGLES = np.arange(-45.0, 45.1, 15.0)  # 7 views


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    """A 7-view stack (32×48 px at 5 Å) of a CTF-affected random specimen, with .tlt and
    an IMOD .defocus (3 µm) and a .mdoc with doses."""
    folder = tmp_path_factory.mktemp("ctf")
    volume = np.zeros((8, 32, 48), dtype=np.float32)
    volume[2:6] = np.random.default_rng(5).normal(size=(4, 32, 48))
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(32, 48), pixel_size_angstrom=PX)
    sim = simulate_tilt_series(volume, geom, defocus_angstrom=DEFOCUS, defocus_gradient=True,
                               defocus_step_angstrom=200.0)
    write_mrc(folder / "ts.mrc", sim.clean, voxel_size_angstrom=PX, image_stack=True)
    write_tilt_angles(folder / "ts.tlt", ANGLES)
    lines = [f"{i + 1} {i + 1} {a:.2f} {a:.2f} 3000.0" + (" 2" if i == 0 else "")
             for i, a in enumerate(ANGLES)]
    (folder / "ts.defocus").write_text("\n".join(lines) + "\n")
    (folder / "short.defocus").write_text("\n".join(lines[:5]) + "\n")
    return folder


def _invoke(*args: str):
    return CliRunner().invoke(app, ["reconstruct", *map(str, args)])


def test_cli_phase_flip_with_a_defocus_file(stack, tmp_path):
    out = tmp_path / "flip.mrc"
    result = _invoke(stack / "ts.mrc", out, "--ctf-correction", "phase-flip", "--defocus-file",
                     stack / "ts.defocus", "--thickness", "8", "--even-odd")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((tmp_path / "flip.run.yaml").read_text())["parameters"]
    applied = record["ctf_dose_correction"]["ctf"]
    assert applied["mode"] == "phase-flip" and applied["source"] == "imod"
    assert applied["defocus_min_angstrom"] == applied["defocus_max_angstrom"] == 30000.0
    assert (tmp_path / "flip_even.mrc").exists() and (tmp_path / "flip_odd.mrc").exists()
    plain = tmp_path / "plain.mrc"
    assert _invoke(stack / "ts.mrc", plain, "--thickness", "8").exit_code == 0
    corrected, uncorrected = read_mrc(out).data, read_mrc(plain).data
    assert np.corrcoef(corrected.ravel(), uncorrected.ravel())[0, 1] < 0.9  # it did something
    # the same through --defocus (a constant) gives the same tomogram
    const = tmp_path / "const.mrc"
    assert _invoke(stack / "ts.mrc", const, "--ctf-correction", "phase-flip", "--defocus",
                   "30000", "--thickness", "8").exit_code == 0
    np.testing.assert_allclose(read_mrc(const).data, corrected, atol=1e-5)


def test_cli_dose_weighting_per_tilt(stack, tmp_path):
    out = tmp_path / "dose.mrc"
    result = _invoke(stack / "ts.mrc", out, "--dose-weighting", "--dose-per-tilt", "3",
                     "--thickness", "8", "--method", "sirt", "--n-iter", "2")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((tmp_path / "dose.run.yaml").read_text())["parameters"]
    dose = record["ctf_dose_correction"]["dose"]
    assert dose["source"] == "dose-per-tilt"
    assert dose["total_exposure_e_per_angstrom2"] == pytest.approx(3.0 * len(ANGLES))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ctf_correction": "phase-flip", "defocus": "short.defocus"},
         r"short\.defocus.*covers 5 of the stack's 7 views"),
        ({"ctf_correction": "phase-flip"}, "needs the defocus of the views"),
        ({"defocus": "ts.defocus"}, "--ctf-correction is none"),
        ({"dose_weighting": True}, "--dose-per-tilt"),
    ],
)
def test_bad_ctf_or_dose_input_fails_before_any_work(stack, tmp_path, monkeypatch, options,
                                                     match):
    import cryowedge.workflows.ctf_dose as ctf_dose
    import cryowedge.workflows.reconstruct as workflow

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input check")

    monkeypatch.setattr(workflow, "reconstruct_array", no_work)
    monkeypatch.setattr(workflow, "_estimated_thickness", no_work, raising=False)
    monkeypatch.setattr(ctf_dose.CtfDosePlan, "read", no_work)
    defocus = options.pop("defocus", None)
    config = ReconstructConfig(thickness=8, **options)
    out = tmp_path / "bad.mrc"
    with pytest.raises(ValueError, match=match) as info:
        reconstruct_file(stack / "ts.mrc", out, config,
                         defocus_path=None if defocus is None else stack / defocus)
    assert "\n" not in str(info.value)
    assert not out.exists() and not (tmp_path / "bad.run.yaml").exists()


def test_config_refuses_options_without_their_switch():
    with pytest.raises(ValueError, match="--ctf-correction is none"):
        ReconstructConfig(defocus_angstrom=30000.0)
    with pytest.raises(ValueError, match="without --dose-weighting"):
        ReconstructConfig(dose_per_tilt=3.0)
