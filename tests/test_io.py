"""Tests for cryowedge.io: MRC, FEI stacks, TIFF, tilt files, mdoc, atomic writes."""

from __future__ import annotations

import io as _stdio
import logging
import os
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

import cryowedge.io as cio
from cryowedge.io import (
    MdocInfo,
    MrcVolume,
    atomic_write,
    read_fei_tilt_series,
    read_mdoc,
    read_mrc,
    read_tiff_volume,
    read_tilt_angles,
    write_mrc,
    write_text_atomic,
    write_tiff_volume,
    write_tilt_angles,
)

DATA = Path(__file__).resolve().parent / "data"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"real data {path} not available (../shared/data absent)")
    return path


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mrc_validates(path: Path) -> bool:
    return bool(mrcfile.validate(str(path), print_file=_stdio.StringIO()))


def test_public_api_exported() -> None:
    for name in cio.__all__:
        assert hasattr(cio, name), name
    assert {"read_mrc", "write_mrc", "read_mdoc", "read_tiff_volume"} <= set(cio.__all__)


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_uses_hidden_sibling_with_suffix(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "vol.mrc"  # parents do not exist yet
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".vol.")
        assert tmp.name.endswith(".tmp.mrc")
        assert not tmp.exists()
        tmp.write_bytes(b"new")
        inode = tmp.stat().st_ino
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino == inode  # renamed into place, not copied
    assert listing(target.parent) == ["vol.mrc"]


def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "angles.tlt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert listing(tmp_path) == ["angles.tlt"]


def test_atomic_write_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("keep")
    with pytest.raises(FileExistsError, match=r"a\.txt.*overwrite=True"):
        with atomic_write(target, overwrite=False) as tmp:
            tmp.write_text("lost")  # pragma: no cover - never reached
    assert target.read_text() == "keep"
    assert listing(tmp_path) == ["a.txt"]


def test_atomic_write_requires_the_temp_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="did not create"):
        with atomic_write(tmp_path / "x.bin"):
            pass
    assert listing(tmp_path) == []


def test_write_text_atomic(tmp_path: Path) -> None:
    target = tmp_path / "notes" / "a.txt"
    assert write_text_atomic(target, "Å\nb\n") == target
    assert target.read_text(encoding="utf-8") == "Å\nb\n"
    write_text_atomic(target, "c")
    assert target.read_text() == "c"
    with pytest.raises(FileExistsError):
        write_text_atomic(target, "d", overwrite=False)
    with pytest.raises(TypeError, match="str"):
        write_text_atomic(target, b"bytes")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- MRC


def test_mrc_round_trip_volume_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    voxel = (10.52, 2.38, 0.8345)  # anisotropic on purpose: catches (x, y, z) mix-ups
    origin = (-12.5, 3.36, 100.25)
    path = write_mrc(tmp_path / "vol.mrc", data, voxel_size_angstrom=voxel, origin_angstrom=origin)
    assert mrc_validates(path)
    with mrcfile.open(path) as mrc:  # the header really is in mrcfile's (x, y, z) order
        assert mrc.header.ispg == 1
        assert mrc.voxel_size.x == pytest.approx(0.8345)
        assert mrc.voxel_size.z == pytest.approx(10.52)
        assert float(mrc.header.origin.x) == pytest.approx(100.25)
    vol = read_mrc(path)
    assert isinstance(vol, MrcVolume)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.data.dtype == np.float32
    assert vol.voxel_size_angstrom == voxel
    assert vol.origin_angstrom == origin
    assert vol.is_image_stack is False
    assert vol.has_voxel_size
    assert vol.shape == (5, 6, 7)
    vol.data[0, 0, 0] = 1.0  # returned data is a writeable copy


@settings(max_examples=25, deadline=None, database=None)
@given(
    voxel=st.tuples(*[st.integers(1, 10**6).map(lambda n: n / 1000)] * 3),
    origin=st.tuples(*[st.integers(-(10**6), 10**6).map(lambda n: n / 100)] * 3),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 300)),
)
def test_mrc_header_round_trip_property(tmp_path_factory, voxel, origin, shape) -> None:
    path = tmp_path_factory.mktemp("prop") / "v.mrc"
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    write_mrc(path, data, voxel_size_angstrom=voxel, origin_angstrom=origin)
    vol = read_mrc(path)
    assert vol.voxel_size_angstrom == voxel
    assert vol.origin_angstrom == origin
    np.testing.assert_array_equal(vol.data.reshape(shape), data)


def test_mrc_round_trip_image_stack(tmp_path: Path) -> None:
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    path = write_mrc(tmp_path / "ts.st", data, voxel_size_angstrom=33.6, image_stack=True)
    assert mrc_validates(path)
    with mrcfile.open(path) as mrc:
        assert mrc.header.ispg == 0
    vol = read_mrc(path)
    assert vol.is_image_stack
    assert vol.voxel_size_angstrom == (33.6, 33.6, 33.6)
    np.testing.assert_array_equal(vol.data, data)


def test_mrc_2d_round_trip_stays_2d(tmp_path: Path) -> None:
    data = np.eye(4, 6, dtype=np.float32)
    vol = read_mrc(write_mrc(tmp_path / "img.mrc", data, voxel_size_angstrom=1.31))
    assert vol.data.shape == (4, 6)
    assert vol.voxel_size_angstrom[1:] == (1.31, 1.31)
    assert not vol.is_image_stack
    np.testing.assert_array_equal(vol.data, data)


def test_mrc_dtype_conversions(tmp_path: Path) -> None:
    f64 = np.linspace(-1, 1, 24).reshape(2, 3, 4)
    path = write_mrc(tmp_path / "f64.mrc", f64)
    with mrcfile.open(path) as mrc:
        assert mrc.data.dtype == np.float32
    np.testing.assert_array_equal(read_mrc(path).data, f64.astype(np.float32))

    i16 = np.arange(-12, 12, dtype=np.int16).reshape(2, 3, 4)
    vol = read_mrc(write_mrc(tmp_path / "i16.mrc", i16), dtype=None)
    assert vol.data.dtype == np.int16
    np.testing.assert_array_equal(vol.data, i16)

    mask = np.zeros((2, 3, 4), dtype=bool)
    mask[1, 2, 3] = True
    vol = read_mrc(write_mrc(tmp_path / "mask.mrc", mask), dtype=None)
    assert vol.data.dtype == np.int8
    np.testing.assert_array_equal(vol.data.astype(bool), mask)

    u8 = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    np.testing.assert_array_equal(read_mrc(write_mrc(tmp_path / "u8.mrc", u8), dtype=None).data, u8)

    labels = np.array([[[0, 70000]]], dtype=np.int64)  # fits float32 exactly, not int16
    vol = read_mrc(write_mrc(tmp_path / "lab.mrc", labels), dtype=None)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, labels)

    with pytest.raises(ValueError, match=r"integer values in \[0, 33554433\]"):
        write_mrc(tmp_path / "big.mrc", np.array([[0, 2**25 + 1]], dtype=np.int64))
    with pytest.raises(ValueError, match="float32 range"):
        write_mrc(tmp_path / "huge.mrc", np.full((2, 2), 1e300))
    with pytest.raises(ValueError, match="complex"):
        write_mrc(tmp_path / "c.mrc", np.ones((2, 2), dtype=np.complex64))


def test_write_mrc_accepts_torch_tensor(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4).requires_grad_(True)
    vol = read_mrc(write_mrc(tmp_path / "t.mrc", tensor))
    np.testing.assert_array_equal(vol.data, np.arange(24, dtype=np.float32).reshape(2, 3, 4))


def test_mrc_zero_voxel_size_is_reported_not_invented(tmp_path: Path) -> None:
    path = write_mrc(tmp_path / "nov.mrc", np.zeros((2, 2, 2), np.float32), voxel_size_angstrom=0)
    vol = read_mrc(path)
    assert vol.voxel_size_angstrom == (0.0, 0.0, 0.0)
    assert vol.has_voxel_size is False


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [
        ((5,), r"2D or 3D.*got 1D.*shape=\(5,\)"),
        ((2, 2, 2, 2), r"2D or 3D.*got 4D.*shape=\(2, 2, 2, 2\)"),
    ],
)
def test_write_mrc_rejects_bad_ndim(tmp_path: Path, shape, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        write_mrc(tmp_path / "bad.mrc", np.zeros(shape, np.float32))
    assert listing(tmp_path) == []


def test_write_mrc_rejects_bad_input(tmp_path: Path) -> None:
    data = np.zeros((2, 3, 4), np.float32)
    data[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite.*\(1, 2, 0\)"):
        write_mrc(tmp_path / "nan.mrc", data)
    with pytest.raises(ValueError, match=r"voxel_size_angstrom \(y\) must be >= 0, got -1\.0"):
        write_mrc(tmp_path / "v.mrc", np.zeros((2, 2)), voxel_size_angstrom=(1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="sequence of 3 numbers"):
        write_mrc(tmp_path / "v.mrc", np.zeros((2, 2)), voxel_size_angstrom=(1.0, 2.0))
    with pytest.raises(ValueError, match="sequence of 3 numbers.*'big'"):
        write_mrc(tmp_path / "v.mrc", np.zeros((2, 2)), voxel_size_angstrom="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="origin_angstrom must be finite"):
        write_mrc(tmp_path / "v.mrc", np.zeros((2, 2)), origin_angstrom=(0.0, np.inf, 0.0))
    with pytest.raises(ValueError, match=r"image_stack=True needs a 3D.*data\[None\]"):
        write_mrc(tmp_path / "s.mrc", np.zeros((2, 2)), image_stack=True)
    with pytest.raises(ValueError, match="empty"):
        write_mrc(tmp_path / "e.mrc", np.zeros((0, 2, 2)))
    assert listing(tmp_path) == []


def test_write_mrc_overwrite_false(tmp_path: Path) -> None:
    path = write_mrc(tmp_path / "v.mrc", np.zeros((2, 2), np.float32))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"v\.mrc.*overwrite=True"):
        write_mrc(path, np.ones((2, 2), np.float32), overwrite=False)
    assert path.read_bytes() == before


def test_write_mrc_is_atomic_when_writer_fails(tmp_path: Path, monkeypatch) -> None:
    path = write_mrc(tmp_path / "vol.mrc", np.ones((2, 3, 4), np.float32), voxel_size_angstrom=5.0)
    before = path.read_bytes()

    def explode(self):  # called after mrcfile.new created the temp file and wrote data
        raise OSError("simulated crash half way")

    monkeypatch.setattr(mrcfile.mrcobject.MrcObject, "set_volume", explode)
    with pytest.raises(OSError, match="half way"):
        write_mrc(path, np.zeros((2, 3, 4), np.float32), voxel_size_angstrom=7.0)
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["vol.mrc"]
    assert read_mrc(path).voxel_size_angstrom == (5.0, 5.0, 5.0)


def test_read_mrc_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"MRC file not found.*nope\.mrc"):
        read_mrc(tmp_path / "nope.mrc")


@pytest.mark.parametrize("permissive", [False, True])
def test_read_mrc_random_bytes(tmp_path: Path, permissive: bool) -> None:
    path = tmp_path / "garbage.mrc"
    path.write_bytes(np.random.default_rng(1).bytes(100))
    pattern = r"garbage\.mrc.*mrcfile says: .*header"
    if not permissive:
        pattern += r".*permissive=True"
    with pytest.raises(ValueError, match=pattern):
        read_mrc(path, permissive=permissive)


def test_read_mrc_truncated(tmp_path: Path, caplog) -> None:
    path = write_mrc(tmp_path / "cut.mrc", np.ones((4, 16, 16), np.float32))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        ValueError, match=r"cut\.mrc.*mrcfile says: Expected 4096 bytes.*permissive=True"
    ):
        read_mrc(path)
    with caplog.at_level(logging.WARNING, logger="cryowedge.io.mrc"):
        with pytest.raises(ValueError, match=r"data block of .*cut\.mrc.*truncated"):
            read_mrc(path, permissive=True)
    assert "Expected 4096 bytes" in caplog.text


def test_read_mrc_complex_needs_dtype_none(tmp_path: Path) -> None:
    path = tmp_path / "c.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((2, 2), np.complex64))
    with pytest.raises(ValueError, match="dtype=None"):
        read_mrc(path)
    assert read_mrc(path, dtype=None).data.dtype == np.complex64


# ----------------------------------------------------------------------------- FEI stacks


def make_legacy_fei(path: Path, data: np.ndarray, angles: list[float]) -> None:
    """A tiny old-FEI-style stack: int16, 1024 x 128-byte records, no MAP id, no stamp."""
    ext = np.zeros((1024, 32), dtype="<f4")
    ext[: len(angles), 0] = angles
    ext[: len(angles), 11] = 3.36e-9  # pixel size in metres, as FEI writes it
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data.astype(np.int16))
        mrc.set_image_stack()
        mrc.set_extended_header(np.frombuffer(ext.tobytes(), dtype="V1"))
    raw = bytearray(path.read_bytes())
    raw[104:108] = b"\x00" * 4  # exttyp blank
    raw[128:132] = np.array([0, 32], dtype="<i2").tobytes()  # nint = 0, nreal = 32
    raw[208:216] = b"\x00" * 8  # no 'MAP ' id, no machine stamp
    path.write_bytes(bytes(raw))


def test_read_fei_legacy_synthetic(tmp_path: Path, caplog, capsys) -> None:
    rng = np.random.default_rng(2)
    stored = rng.integers(-32768, 32767, size=(3, 4, 5)).astype(np.int16)
    angles = [-60.0, 12.34, 60.5]
    path = tmp_path / "fei.mrc"
    make_legacy_fei(path, stored, angles)

    counts, got = read_fei_tilt_series(path)
    assert counts.dtype == np.float32 and counts.shape == (3, 4, 5)
    np.testing.assert_array_equal(counts, stored.astype(np.float32) + 32768)
    assert counts.min() >= 0
    assert got is not None
    np.testing.assert_array_equal(got, angles)  # float32 header, shortest decimal back

    raw, _ = read_fei_tilt_series(path, unsigned_offset=False)
    np.testing.assert_array_equal(raw, stored.astype(np.float32))

    with pytest.raises(ValueError, match=r"fei\.mrc.*Map ID.*permissive=True"):
        read_mrc(path)
    with caplog.at_level(logging.WARNING, logger="cryowedge.io.mrc"):
        vol = read_mrc(path, permissive=True, dtype=None)
    assert "Map ID string not found" in caplog.text
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(vol.data, stored)


def test_load_tilt_series_recognises_an_old_fei_stack(tmp_path: Path, caplog) -> None:
    """The strict reader refuses old FEI stacks; load_tilt_series falls back to the FEI reader."""
    from cryowedge.io.tilt_series import load_tilt_series

    rng = np.random.default_rng(3)
    stored = rng.integers(-32768, 32767, size=(3, 4, 5)).astype(np.int16)
    angles = [-60.0, 0.5, 60.0]
    path = tmp_path / "fei.mrc"
    make_legacy_fei(path, stored, angles)
    with caplog.at_level(logging.WARNING, logger="cryowedge.io.tilt_series"):
        series = load_tilt_series(path)  # no angle file: the extended header's angles
    assert "old FEI/Tecnai stack" in caplog.text
    np.testing.assert_array_equal(series.data, stored.astype(np.float32) + 32768)
    np.testing.assert_allclose(series.geometry.tilt_angles_deg, angles)
    assert series.geometry.pixel_size_angstrom == 1.0  # the FEI header's 1.0 is not trusted
    # an angle file next to the stack wins, and a disagreement is reported
    write_tilt_angles(tmp_path / "fei.tlt", [-61.0, 0.5, 60.0])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cryowedge.io.tilt_series"):
        series = load_tilt_series(path, pixel_size_angstrom=33.6)
    np.testing.assert_allclose(series.geometry.tilt_angles_deg, [-61.0, 0.5, 60.0])
    assert "disagree by up to 1.00°" in caplog.text
    assert series.geometry.pixel_size_angstrom == 33.6
    # a file that is neither MRC nor FEI keeps the strict reader's error
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(bytes(2048))
    write_tilt_angles(tmp_path / "junk.tlt", [0.0])
    with pytest.raises(ValueError, match="junk.mrc"):
        load_tilt_series(junk)


def test_read_fei_plain_mrc_has_no_angles_and_no_offset(tmp_path: Path) -> None:
    data = np.arange(-30, 30, dtype=np.int16).reshape(3, 4, 5)
    path = write_mrc(tmp_path / "plain.mrc", data, image_stack=True)
    counts, angles = read_fei_tilt_series(path)
    assert angles is None
    np.testing.assert_array_equal(counts, data.astype(np.float32))
    f32 = write_mrc(tmp_path / "f.mrc", data.astype(np.float32), image_stack=True)
    with pytest.raises(ValueError, match="unsigned_offset=True applies to int16"):
        read_fei_tilt_series(f32, unsigned_offset=True)


def test_read_fei_zero_filled_header_is_not_fei(tmp_path: Path) -> None:
    path = tmp_path / "zeros.mrc"
    make_legacy_fei(path, np.zeros((3, 2, 2)), [0.0, 0.0, 0.0])
    counts, angles = read_fei_tilt_series(path)
    assert angles is None
    assert counts.max() == 0.0  # no offset without a real FEI header


def test_read_fei1_typed_header(tmp_path: Path) -> None:
    from mrcfile.dtypes import get_ext_header_dtype

    dtype = get_ext_header_dtype(b"FEI1")
    ext = np.zeros(3, dtype=dtype)
    ext["Metadata size"] = dtype.itemsize
    ext["Alpha tilt"] = [-30.0, 0.0, 30.0]
    path = tmp_path / "fei1.mrc"
    data = np.arange(12, dtype=np.int16).reshape(3, 2, 2)
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.set_image_stack()
        mrc.set_extended_header(ext)
        mrc.header.exttyp = b"FEI1"
    counts, angles = read_fei_tilt_series(path)
    np.testing.assert_array_equal(angles, [-30.0, 0.0, 30.0])
    np.testing.assert_array_equal(counts, data)  # typed headers: no offset


def test_read_fei_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="none.mrc"):
        read_fei_tilt_series(tmp_path / "none.mrc")


@pytest.mark.realdata
def test_read_fei_real_needle_series() -> None:
    path = shared_file("etspy_HAADF_needle_tiltseries.mrc")
    counts, angles = read_fei_tilt_series(path)
    assert counts.shape == (77, 256, 256) and counts.dtype == np.float32
    assert counts.min() >= 0
    assert counts.max() <= 65535
    expected = read_tilt_angles(path.with_suffix(".rawtlt"))
    assert angles is not None
    np.testing.assert_allclose(angles, expected, atol=1e-3, rtol=0)
    # The offset makes neighbouring pixels continuous; the wrong (bit-cast) reading does not.
    stored = counts - 32768
    bitcast = np.where(stored < 0, stored + 65536, stored)
    assert np.abs(np.diff(counts, axis=2)).mean() < 0.7 * np.abs(np.diff(bitcast, axis=2)).mean()


# ----------------------------------------------------------------------------- tilt files


def test_tilt_angles_round_trip_and_format(tmp_path: Path) -> None:
    angles = np.array([-60.0, -1.5, 0.0, 2.25, 60.0])
    path = write_tilt_angles(tmp_path / "a.tlt", angles)
    assert path.read_text().splitlines() == [" -60.00", "  -1.50", "   0.00", "   2.25", "  60.00"]
    got = read_tilt_angles(path)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, angles)

    fine = np.array([-58.123456, 0.5, 61.0001])
    path = write_tilt_angles(tmp_path / "b.rawtlt", fine)
    assert path.read_text().splitlines()[0] == " -58.123456"
    np.testing.assert_array_equal(read_tilt_angles(path), fine)


def test_read_tilt_angles_ignores_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.tlt"
    path.write_text("\n  -3.0 \n\n3\r\n  \n")
    np.testing.assert_array_equal(read_tilt_angles(path), [-3.0, 3.0])


def test_read_tilt_angles_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tlt"
    bad.write_text("-3.0\n0.0\n3.0 deg\n")
    with pytest.raises(ValueError, match=r"bad\.tlt.*line 3.*'3\.0 deg'"):
        read_tilt_angles(bad)
    two = tmp_path / "two.tlt"
    two.write_text("1.0 2.0\n")
    with pytest.raises(ValueError, match=r"line 1.*'1\.0 2\.0'"):
        read_tilt_angles(two)
    nan = tmp_path / "nan.tlt"
    nan.write_text("1\nnan\n")
    with pytest.raises(ValueError, match=r"line 2.*'nan'"):
        read_tilt_angles(nan)
    empty = tmp_path / "empty.tlt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match=r"empty\.tlt.*no tilt angles"):
        read_tilt_angles(empty)
    with pytest.raises(FileNotFoundError, match=r"missing\.tlt"):
        read_tilt_angles(tmp_path / "missing.tlt")


def test_write_tilt_angles_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        write_tilt_angles(tmp_path / "n.tlt", [0.0, np.nan])
    with pytest.raises(ValueError, match="1D"):
        write_tilt_angles(tmp_path / "n.tlt", [[0.0, 1.0]])
    with pytest.raises(ValueError, match="empty"):
        write_tilt_angles(tmp_path / "n.tlt", [])
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------- mdoc


def test_read_mdoc_synthetic_dose_symmetric() -> None:
    info = read_mdoc(DATA / "synthetic_tilt.mdoc")
    assert isinstance(info, MdocInfo)
    assert info.n_tilts == 7
    np.testing.assert_array_equal(
        info.tilt_angles_deg, [-9.00021, -5.99946, -2.99982, 0.00034, 3.00012, 5.99968, 9.00051]
    )
    # acquired 0, +3, -3, -6, +6, +9, -9 (dose-symmetric); stack sorted by angle
    np.testing.assert_array_equal(info.acquisition_order, [6, 3, 2, 0, 1, 4, 5])
    assert info.acquisition_order.dtype.kind == "i"
    assert info.tilt_axis_angle_deg == 85.3
    assert info.pixel_size_angstrom == 1.35
    assert info.image_file == "TS_01.mrc"
    assert info.exposure_dose_e_per_angstrom2 is not None
    np.testing.assert_array_equal(
        info.exposure_dose_e_per_angstrom2, [3.118, 3.071, 3.042, 3.012, 3.035, 3.066, 3.104]
    )
    with pytest.raises(ValueError):
        info.tilt_angles_deg[0] = 1.0  # read-only


MDOC_SHUFFLED = """ImageFile = ts.st

[T = SerialEM: scope]

[ZValue = 2]
TiltAngle = 30
PixelSpacing = 2.7
ExposureDose = 0

[ZValue = 0]
TiltAngle = -30
PixelSpacing = 2.7
ExposureDose = 0

[ZValue = 1]
TiltAngle = 0.5
PixelSpacing = 2.7
ExposureDose = 0
"""


def test_read_mdoc_fallbacks(tmp_path: Path) -> None:
    path = tmp_path / "s.mdoc"
    path.write_text(MDOC_SHUFFLED)
    info = read_mdoc(path)
    np.testing.assert_array_equal(info.tilt_angles_deg, [-30.0, 0.5, 30.0])  # ZValue order
    # no DateTime: file order (Z2, Z0, Z1) is taken as acquisition order
    np.testing.assert_array_equal(info.acquisition_order, [1, 2, 0])
    assert info.pixel_size_angstrom == 2.7  # from sections, no global PixelSpacing
    assert info.exposure_dose_e_per_angstrom2 is None  # all zero: not calibrated
    assert info.tilt_axis_angle_deg is None
    assert info.image_file == "ts.st"


def test_read_mdoc_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"gone\.mdoc"):
        read_mdoc(tmp_path / "gone.mdoc")
    frames = tmp_path / "frames.mdoc"
    frames.write_text("PixelSpacing = 1\n\n[FrameSet = 0]\nExposureTime = 1\n")
    with pytest.raises(ValueError, match=r"frames\.mdoc.*ZValue"):
        read_mdoc(frames)
    dup = tmp_path / "dup.mdoc"
    dup.write_text("[ZValue = 0]\nTiltAngle = 1\n\n[ZValue = 0]\nTiltAngle = 2\n")
    with pytest.raises(ValueError, match=r"repeats ZValue\(s\) \[0\]"):
        read_mdoc(dup)
    notilt = tmp_path / "notilt.mdoc"
    notilt.write_text("[ZValue = 0]\nTiltAngle = 1\n\n[ZValue = 1]\nStageZ = 2\n")
    with pytest.raises(ValueError, match=r"ZValue \[1\] have no TiltAngle"):
        read_mdoc(notilt)


# ----------------------------------------------------------------------------- TIFF


@pytest.mark.realdata
def test_read_tiff_real_cylindra() -> None:
    vol = read_tiff_volume(shared_file("cylindra_13pf_MT_tomogram.tif"))
    assert vol.data.shape == (36, 206, 94)
    assert vol.data.dtype == np.uint8
    assert vol.voxel_size_angstrom == (10.52, 10.52, 10.52)
    assert vol.has_voxel_size
    assert not vol.is_image_stack


def test_tiff_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(4, 5, 6)).astype(np.float32)
    voxel = (8.4, 10.52, 2.38)
    path = write_tiff_volume(tmp_path / "v.tif", data, voxel_size_angstrom=voxel)
    with tifffile.TiffFile(path) as tif:  # ImageJ can read it
        assert tif.is_imagej
        assert tif.imagej_metadata["unit"] == "nm"
    vol = read_tiff_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size_angstrom == voxel
    assert vol.has_voxel_size

    u8 = (np.arange(2 * 3 * 4) % 256).astype(np.uint8).reshape(2, 3, 4)
    vol = read_tiff_volume(write_tiff_volume(tmp_path / "u8.tif", u8, voxel_size_angstrom=1.31))
    assert vol.data.dtype == np.uint8
    np.testing.assert_array_equal(vol.data, u8)
    assert vol.voxel_size_angstrom == (1.31, 1.31, 1.31)

    img = read_tiff_volume(
        write_tiff_volume(tmp_path / "img.tif", u8[0].astype(bool), voxel_size_angstrom=3.0)
    )
    assert img.data.shape == (3, 4) and img.data.dtype == np.uint8
    np.testing.assert_array_equal(img.data, u8[0].astype(bool))


def test_tiff_without_resolution_has_no_voxel_size(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), np.uint16), photometric="minisblack")
    vol = read_tiff_volume(path)
    assert vol.data.shape == (3, 4, 5)
    assert vol.voxel_size_angstrom == (1.0, 1.0, 1.0)
    assert vol.has_voxel_size is False


def test_tiff_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no\.tif"):
        read_tiff_volume(tmp_path / "no.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(np.random.default_rng(4).bytes(100))
    with pytest.raises(ValueError, match=r"junk\.tif.*tifffile says"):
        read_tiff_volume(junk)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((4, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match=r"rgb\.tif.*single-channel"):
        read_tiff_volume(rgb)
    with pytest.raises(ValueError, match=r"got 4D"):
        write_tiff_volume(tmp_path / "x.tif", np.zeros((2, 2, 2, 2)), voxel_size_angstrom=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        write_tiff_volume(tmp_path / "x.tif", np.full((2, 2), np.inf), voxel_size_angstrom=1.0)
    with pytest.raises(ValueError, match=r"must be > 0, got 0\.0"):
        write_tiff_volume(tmp_path / "x.tif", np.zeros((2, 2)), voxel_size_angstrom=0.0)
    assert not (tmp_path / "x.tif").exists()


def test_write_tiff_is_atomic_when_writer_fails(tmp_path: Path, monkeypatch) -> None:
    path = write_tiff_volume(
        tmp_path / "v.tif", np.ones((2, 3, 4), np.float32), voxel_size_angstrom=5.0
    )
    before = path.read_bytes()
    real_imwrite = tifffile.imwrite

    def crash(file, data, **kwargs):
        real_imwrite(file, data[:1], **kwargs)  # a partial file exists...
        raise OSError("simulated crash half way")  # ...when the writer dies

    monkeypatch.setattr(cio.tiff.tifffile, "imwrite", crash)
    with pytest.raises(OSError, match="half way"):
        write_tiff_volume(path, np.zeros((2, 3, 4), np.float32), voxel_size_angstrom=7.0)
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["v.tif"]


# ----------------------------------------------------------------------------- vendored crop


def test_vendored_needle_crop() -> None:
    vol = read_mrc(DATA / "needle_aligned_crop.mrc")
    assert vol.data.shape == (77, 128, 32)
    assert vol.data.dtype == np.float32
    assert vol.voxel_size_angstrom == (67.2, 67.2, 67.2)
    assert vol.is_image_stack
    assert np.all(np.isfinite(vol.data)) and vol.data.std() > 0
    angles = read_tilt_angles(DATA / "needle_aligned_crop.tlt")
    assert angles.shape == (77,)
    np.testing.assert_allclose(angles, np.arange(-76, 77, 2), atol=1e-6)
    assert mrc_validates(DATA / "needle_aligned_crop.mrc")


@pytest.mark.realdata
def test_vendored_crop_matches_shared_source() -> None:
    source = read_mrc(shared_file("etspy_HAADF_needle_aligned.mrc"))
    assert source.voxel_size_angstrom == (33.6, 33.6, 33.6)
    binned = source.data.astype(np.float64).reshape(77, 128, 2, 128, 2).mean(axis=(2, 4))
    crop = read_mrc(DATA / "needle_aligned_crop.mrc").data
    np.testing.assert_allclose(crop, binned[:, :, 48:80], rtol=1e-6)


def test_no_stray_files_in_test_data() -> None:
    hidden = [name for name in os.listdir(DATA) if name.startswith(".") and ".tmp" in name]
    assert hidden == []


# --------------------------------------------------------------------------- lazy reading, slab writing


def test_lazy_mrc_reads_what_is_indexed(tmp_path: Path) -> None:
    from cryowedge.io.mrc import open_mrc_lazy

    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 7, 9)).astype(np.float32)
    write_mrc(tmp_path / "s.mrc", data, voxel_size_angstrom=(3.0, 2.0, 1.5), image_stack=True)
    lazy = open_mrc_lazy(tmp_path / "s.mrc")
    assert lazy.shape == (5, 7, 9) and lazy.is_image_stack and lazy.voxel_size_angstrom == (3.0, 2.0, 1.5)
    keys = [(slice(None), slice(2, 5)), 3, (slice(1, 4), slice(None, None, 2), slice(3, 7)),
            (Ellipsis, 2), (slice(None), -1), (slice(None), slice(None, None, -2)), (slice(None), slice(4, 4))]
    for key in keys:
        np.testing.assert_array_equal(lazy[key], data[key])
    np.testing.assert_array_equal(np.asarray(lazy), data)
    for dtype in (np.int8, np.int16, np.uint16):  # stored dtypes come back as stored
        ints = (data * 20).astype(dtype)
        write_mrc(tmp_path / "i.mrc", ints)
        got = open_mrc_lazy(tmp_path / "i.mrc")[:, 1:4]
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, ints[:, 1:4])
    with mrcfile.new(tmp_path / "be.mrc") as mrc:  # big-endian file, native-order result
        mrc.set_data(data.astype(">f4"))
    np.testing.assert_array_equal(open_mrc_lazy(tmp_path / "be.mrc")[:, 2:6], data[:, 2:6])
    with pytest.raises(TypeError, match="integers and slices"):
        lazy[[0, 1]]
    with pytest.raises(IndexError, match="out of bounds for axis 1"):
        lazy[:, 7]


def test_lazy_mrc_refuses_truncated_and_compressed(tmp_path: Path) -> None:
    from cryowedge.io.mrc import open_mrc_lazy

    write_mrc(tmp_path / "t.mrc", np.ones((4, 6, 6), np.float32))
    raw = (tmp_path / "t.mrc").read_bytes()
    (tmp_path / "cut.mrc").write_bytes(raw[:-50])
    with pytest.raises(ValueError, match="truncated|cannot read"):
        open_mrc_lazy(tmp_path / "cut.mrc")
    write_mrc(tmp_path / "c.mrc.gz", np.ones((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="compressed"):
        open_mrc_lazy(tmp_path / "c.mrc.gz")


def test_load_tilt_series_lazy_matches_eager(tmp_path: Path) -> None:
    from cryowedge.io.mrc import LazyMrcArray
    from cryowedge.io.tilt_series import load_tilt_series

    rng = np.random.default_rng(1)
    stack = rng.standard_normal((4, 6, 8)).astype(np.float32)
    write_mrc(tmp_path / "ts.mrc", stack, voxel_size_angstrom=5.0, image_stack=True)
    write_tilt_angles(tmp_path / "ts.tlt", [-30.0, -10.0, 10.0, 30.0])
    eager = load_tilt_series(tmp_path / "ts.mrc")
    lazy = load_tilt_series(tmp_path / "ts.mrc", lazy=True)
    assert isinstance(lazy.data, LazyMrcArray) and lazy.geometry == eager.geometry
    np.testing.assert_array_equal(lazy.data[:, 2:5], eager.data[:, 2:5])
    with mrcfile.open(tmp_path / "ts.mrc", mode="r+") as mrc:
        mrc.data[2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"image 2\).*non-finite"):
        load_tilt_series(tmp_path / "ts.mrc", lazy=True)


def test_slab_writer_round_trip_and_header(tmp_path: Path) -> None:
    from cryowedge.io.mrc import MrcSlabWriter

    vol = np.random.default_rng(2).standard_normal((4, 10, 6)).astype(np.float32)
    out = tmp_path / "sub" / "v.mrc"
    with MrcSlabWriter(out, vol.shape, voxel_size_angstrom=2.5, origin_angstrom=(1.0, 2.0, 3.0)) as writer:
        assert writer.tmp_path is not None and writer.tmp_path.exists() and not out.exists()
        for y0 in (9, 0, 3, 6):  # any order, last slab partial
            writer.write_rows(y0, vol[:, y0 : y0 + 3])
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.mrc"]
    back = read_mrc(out)
    np.testing.assert_array_equal(back.data, vol)
    assert back.voxel_size_angstrom == (2.5, 2.5, 2.5) and back.origin_angstrom == (1.0, 2.0, 3.0)
    write_mrc(tmp_path / "ref.mrc", vol, voxel_size_angstrom=2.5, origin_angstrom=(1.0, 2.0, 3.0))
    with mrcfile.open(out) as mrc, mrcfile.open(tmp_path / "ref.mrc") as ref:
        for name in mrc.header.dtype.names:  # the same header as write_mrc, statistics included
            if name in ("dmin", "dmax", "dmean", "rms"):
                assert float(mrc.header[name]) == pytest.approx(float(ref.header[name]), rel=1e-5)
            else:
                assert mrc.header[name].tobytes() == ref.header[name].tobytes(), name
    assert mrcfile.validate(str(out), print_file=_stdio.StringIO())


def test_write_mrc_is_deterministic(tmp_path: Path, monkeypatch) -> None:
    """The same data written at two different times give the same bytes (resumed batch runs
    are compared byte for byte); the label names cryowedge, not a timestamp."""
    import datetime as _dt

    import mrcfile.mrcobject

    class _DayLater(_dt.datetime):  # mrcfile stamps its default label with datetime.now()
        @classmethod
        def now(cls, tz=None):
            return _dt.datetime(2031, 1, 2, 3, 4, 5)

    vol = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    write_mrc(tmp_path / "a.mrc", vol, voxel_size_angstrom=1.5)
    monkeypatch.setattr(mrcfile.mrcobject, "datetime", _DayLater)
    write_mrc(tmp_path / "b.mrc", vol, voxel_size_angstrom=1.5)
    assert (tmp_path / "a.mrc").read_bytes() == (tmp_path / "b.mrc").read_bytes()
    with mrcfile.open(tmp_path / "a.mrc") as mrc:
        assert mrc.header.label[0].startswith(b"Created by cryowedge")
        assert int(mrc.header.nlabl) == 1


def test_slab_writer_leaves_nothing_on_failure(tmp_path: Path, monkeypatch) -> None:
    from cryowedge.io.mrc import MrcSlabWriter

    out = tmp_path / "v.mrc"
    write_mrc(out, np.zeros((2, 2, 2), np.float32))
    before = out.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):  # an exception while slabs are written
        with MrcSlabWriter(out, (2, 4, 3)) as writer:
            writer.write_rows(0, np.ones((2, 2, 3)))
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="never written"):  # rows missing at the end
        with MrcSlabWriter(out, (2, 4, 3)) as writer:
            writer.write_rows(0, np.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="does not fit the volume"):
        with MrcSlabWriter(out, (2, 4, 3)) as writer:
            writer.write_rows(3, np.ones((2, 2, 3)))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)  # a write that fails (full disk)
    with pytest.raises(OSError, match="no space left on the device while writing"):
        with MrcSlabWriter(out, (2, 4, 3)) as writer:
            writer.write_rows(0, np.ones((2, 4, 3)))
    assert [p.name for p in tmp_path.iterdir()] == ["v.mrc"] and out.read_bytes() == before


def test_slab_writer_checks_space_and_permissions_first(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from cryowedge.io.mrc import MrcSlabWriter

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(ValueError, match=r"not enough free disk space .* needs 4.94e-05 GB"):
        MrcSlabWriter(tmp_path / "v.mrc", (10, 11, 11 * 10)).__enter__()
    monkeypatch.setattr(shutil, "disk_usage", real)

    def no_room(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room, raising=False)  # fails at reservation
    with pytest.raises(OSError, match="no space left"):
        with MrcSlabWriter(tmp_path / "v.mrc", (2, 2, 2)):
            pass
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(ValueError, match="is not writable"):
        with MrcSlabWriter(tmp_path / "v.mrc", (2, 2, 2)):
            pass
