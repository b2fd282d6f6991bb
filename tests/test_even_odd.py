"""`reconstruct --even-odd`: half tomograms from alternate views (acquisition, else stack order)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.even_odd import acquisition_order_of, even_odd_indices
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles
from cryowedge.simulate.tilt_series import project_volume

ANGLES = np.arange(-30.0, 30.1, 6.0)  # 11 views, stack sorted by angle
SHAPE = (8, 32, 32)  # (z, y, x) voxels
PIXEL = 5.0  # Å
#: dose-symmetric acquisition from 0°: 0, +6, -6, -12, +12, +18, -18, ... (stack indices)
ACQUIRED = [5, 6, 4, 3, 7, 8, 2, 1, 9, 10, 0]


def _volume() -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) - n // 2 for n in SHAPE), indexing="ij")
    blob = np.exp(-((z - 1) ** 2 + (y + 4) ** 2 + (x - 5) ** 2) / 8.0)
    return (blob + 0.5 * np.exp(-((z + 2) ** 2 + (y - 6) ** 2 + (x + 7) ** 2) / 4.0)).astype(
        np.float32)


def _mdoc(acquired: list[int]) -> str:
    """A SerialEM mdoc, sections in stack order, DateTime in ``acquired`` order."""
    start = datetime(2026, 11, 21, 10, 0, 0)
    rank = {view: r for r, view in enumerate(acquired)}
    sections = [
        f"[ZValue = {i}]\nTiltAngle = {a:.2f}\nPixelSpacing = {PIXEL}\nDateTime = "
        f"{(start + timedelta(seconds=30 * rank[i])).strftime('%d-%b-%y  %H:%M:%S')}\n"
        for i, a in enumerate(ANGLES)
    ]
    return "PixelSpacing = 5\nImageFile = ts.mrc\n\n" + "\n".join(sections)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=SHAPE[1:])
    return project_volume(_volume(), geom)


def _write_stack(folder: Path, data: np.ndarray, angles: np.ndarray, name: str = "ts") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_mrc(folder / f"{name}.mrc", data, voxel_size_angstrom=PIXEL, image_stack=True)
    write_tilt_angles(folder / f"{name}.tlt", angles)
    return folder / f"{name}.mrc"


def _invoke(*args: str):
    return CliRunner().invoke(app, ["reconstruct", *args, "--thickness", str(SHAPE[0]),
                                    "--device", "cpu"])


# ------------------------------------------------------------------ pure function
def test_even_odd_indices_by_stack_index_and_by_acquisition() -> None:
    even, odd = even_odd_indices(5)
    assert even.tolist() == [0, 2, 4] and odd.tolist() == [1, 3]
    geom = TiltGeometry(tilt_angles_deg=ANGLES, detector_shape=(32, 32))
    rank = np.empty(11, dtype=np.int64)
    rank[ACQUIRED] = np.arange(11)
    even, odd = even_odd_indices(geom, rank)
    assert even.tolist() == sorted(ACQUIRED[0::2]) and odd.tolist() == sorted(ACQUIRED[1::2])
    # only the ranks' order matters (e.g. the ranks of the views left after an exclusion)
    np.testing.assert_array_equal(even_odd_indices(11, rank * 3 + 7)[0], even)
    with pytest.raises(ValueError, match="at least 2 views"):
        even_odd_indices(1)
    with pytest.raises(ValueError, match="acquisition order"):
        even_odd_indices(3, np.array([0, 0, 1]))


# ------------------------------------------------------------------ CLI
def test_cli_writes_halves_equal_to_reconstructing_the_half_stacks(tmp_path, data) -> None:
    stack = _write_stack(tmp_path / "in", data, ANGLES)
    out = tmp_path / "out" / "tomo.mrc"
    result = _invoke(str(stack), str(out), "--even-odd")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((out.parent / "tomo.run.yaml").read_text())
    assert record["parameters"]["even_odd"] is True
    assert record["parameters"]["even_odd_split"] == "stack order"
    for name, idx in (("even", np.arange(0, 11, 2)), ("odd", np.arange(1, 11, 2))):
        half_path = out.parent / f"tomo_{name}.mrc"
        assert record["outputs"][name] == str(half_path)
        half = read_mrc(half_path)
        assert half.voxel_size_angstrom == pytest.approx((PIXEL,) * 3)
        direct_stack = _write_stack(tmp_path / name, data[idx], ANGLES[idx])
        direct_out = tmp_path / name / "direct.mrc"
        assert _invoke(str(direct_stack), str(direct_out)).exit_code == 0
        direct = read_mrc(direct_out).data
        assert half.data.shape == direct.shape == SHAPE
        np.testing.assert_allclose(half.data, direct, rtol=0, atol=1e-5 * np.abs(direct).max())
    full = read_mrc(out).data
    assert not np.allclose(full, read_mrc(out.parent / "tomo_even.mrc").data, atol=1e-3)


def test_split_follows_acquisition_order_of_the_mdoc(tmp_path, data) -> None:
    folder = tmp_path / "in"
    stack = _write_stack(folder, data, ANGLES)
    (folder / "ts.tlt").unlink()
    mdoc = folder / "ts.mdoc"
    mdoc.write_text(_mdoc(ACQUIRED))
    rank = acquisition_order_of(stack)
    assert rank is not None and np.argsort(rank).tolist() == ACQUIRED
    even_idx = np.array(sorted(ACQUIRED[0::2]))
    assert even_idx.tolist() != list(range(0, 11, 2))  # the test tells the two rules apart
    out = tmp_path / "tomo.mrc"
    result = _invoke(str(stack), str(out), "--angles", str(mdoc), "--even-odd",
                     "--method", "sirt", "--n-iter", "3")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((tmp_path / "tomo.run.yaml").read_text())
    assert record["parameters"]["even_odd_split"] == "acquisition order (mdoc)"
    direct_stack = _write_stack(tmp_path / "even", data[even_idx], ANGLES[even_idx])
    direct_out = tmp_path / "even" / "direct.mrc"
    assert _invoke(str(direct_stack), str(direct_out), "--method", "sirt",
                   "--n-iter", "3").exit_code == 0
    direct = read_mrc(direct_out).data
    np.testing.assert_allclose(read_mrc(tmp_path / "tomo_even.mrc").data, direct, rtol=0,
                               atol=1e-4 * np.abs(direct).max())


def test_existing_half_output_is_refused_before_any_work(tmp_path, data, monkeypatch) -> None:
    stack = _write_stack(tmp_path / "in", data, ANGLES)
    out = tmp_path / "tomo.mrc"
    (tmp_path / "tomo_odd.mrc").write_bytes(b"keep me")
    import cryowedge.workflows.reconstruct as workflow

    def no_work(*args, **kwargs):  # pragma: no cover - reached only if the check fails
        raise AssertionError("reconstruction started before the output check")

    monkeypatch.setattr(workflow, "reconstruct_array", no_work)
    result = _invoke(str(stack), str(out), "--even-odd")
    assert result.exit_code != 0
    assert "tomo_odd.mrc" in result.output and "--overwrite" in result.output
    assert not out.exists() and not (tmp_path / "tomo_even.mrc").exists()
    assert (tmp_path / "tomo_odd.mrc").read_bytes() == b"keep me"
    # with --overwrite the old half is kept as tomo_odd.mrc~
    monkeypatch.undo()
    assert _invoke(str(stack), str(out), "--even-odd", "--overwrite").exit_code == 0
    assert (tmp_path / "tomo_odd.mrc~").read_bytes() == b"keep me"
    assert read_mrc(tmp_path / "tomo_odd.mrc").data.shape == SHAPE


def test_streamed_run_streams_the_halves_too(tmp_path, data) -> None:
    stack = _write_stack(tmp_path / "in", data, ANGLES)
    streamed, in_memory = tmp_path / "s" / "tomo.mrc", tmp_path / "m" / "tomo.mrc"
    assert _invoke(str(stack), str(streamed), "--even-odd", "--slab", "8").exit_code == 0
    assert _invoke(str(stack), str(in_memory), "--even-odd").exit_code == 0
    for name in ("even", "odd"):
        a = read_mrc(streamed.parent / f"tomo_{name}.mrc")
        b = read_mrc(in_memory.parent / f"tomo_{name}.mrc").data
        assert a.voxel_size_angstrom == pytest.approx((PIXEL,) * 3)
        np.testing.assert_allclose(a.data, b, rtol=0, atol=1e-4 * np.abs(b).max())
