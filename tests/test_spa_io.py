"""ParticleStack and RELION STAR + MRCS input/output (cryowedge.spa.particles, cryowedge.spa.io)."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from conftest import shared_data

from cryowedge.geometry.rotations import euler_zyz_to_matrix
from cryowedge.spa.ctf_model import correct_ctf
from cryowedge.spa.io import read_relion_particles, write_relion_particles
from cryowedge.spa.particles import CTFParams, ParticleStack, shift_images


def _blob(n: int, centre_yx: tuple[float, float], sigma: float = 1.5) -> np.ndarray:
    y, x = np.mgrid[:n, :n].astype(np.float64)
    return np.exp(-((y - centre_yx[0]) ** 2 + (x - centre_yx[1]) ** 2) / (2 * sigma**2))


def _centroid(image: np.ndarray) -> np.ndarray:
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    w = np.clip(image, 0, None)
    return np.array([(w * y).sum(), (w * x).sum()]) / w.sum()


def _random_stack(rng: np.random.Generator, p: int = 6, n: int = 16) -> ParticleStack:
    angles = np.stack(
        [rng.uniform(-170, 170, p), rng.uniform(10, 170, p), rng.uniform(-170, 170, p)], axis=1
    )
    ctf = CTFParams(
        defocus_u_angstrom=rng.uniform(8000, 20000, p),
        defocus_v_angstrom=rng.uniform(8000, 20000, p),
        astigmatism_angle_deg=rng.uniform(-90, 90, p),
        voltage_kv=300.0,
        spherical_aberration_mm=2.7,
        amplitude_contrast=0.1,
        b_factor_angstrom2=rng.uniform(0, 50, p),
        phase_shift_deg=rng.uniform(0, 20, p),
        scale=rng.uniform(0.8, 1.2, p),
    )
    return ParticleStack.from_angles(
        rng.standard_normal((p, n, n)).astype(np.float32),
        angles,
        1.234,
        shifts_px=rng.uniform(-3, 3, (p, 2)),
        ctf=ctf,
        half_sets=np.arange(p) % 2 + 1,
        class_ids=rng.integers(1, 4, p),
        metadata=pd.DataFrame({"rlnMicrographName": [f"mic{i % 2}.mrc" for i in range(p)]}),
    )


# --------------------------------------------------------------------------- round trips


def test_round_trip_star_mrcs(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = _random_stack(rng)
    star, mrcs = write_relion_particles(tmp_path / "out" / "particles.star", stack)
    assert mrcs == tmp_path / "out" / "particles.mrcs"
    back = read_relion_particles(star)

    np.testing.assert_array_equal(back.images, stack.images)
    assert back.pixel_size_angstrom == pytest.approx(1.234, abs=1e-6)
    # angles -> rotations -> angles (6 decimals in the file)
    np.testing.assert_allclose(back.angles_deg, stack.angles_deg, atol=2e-6)
    np.testing.assert_allclose(back.rotations, stack.rotations, atol=1e-7)
    np.testing.assert_allclose(back.shifts_px, stack.shifts_px, atol=1e-5)
    for name in (
        "defocus_u_angstrom",
        "defocus_v_angstrom",
        "astigmatism_angle_deg",
        "voltage_kv",
        "spherical_aberration_mm",
        "amplitude_contrast",
        "b_factor_angstrom2",
        "phase_shift_deg",
        "scale",
    ):
        np.testing.assert_allclose(getattr(back.ctf, name), getattr(stack.ctf, name), atol=1e-6)
    np.testing.assert_array_equal(back.half_sets, stack.half_sets)
    np.testing.assert_array_equal(back.class_ids, stack.class_ids)
    np.testing.assert_array_equal(back.optics_groups, np.ones(6))
    assert (
        back.metadata["rlnMicrographName"].tolist() == stack.metadata["rlnMicrographName"].tolist()
    )

    # the files are what RELION 3.1 expects
    blocks = starfile.read(star, always_dict=True)
    assert set(blocks) == {"optics", "particles"}
    assert blocks["optics"]["rlnImagePixelSize"].iloc[0] == pytest.approx(1.234)
    assert blocks["optics"]["rlnImageSize"].iloc[0] == 16
    assert blocks["particles"]["rlnImageName"].iloc[2] == "000003@particles.mrcs"
    with mrcfile.open(mrcs) as m:
        assert m.is_image_stack()
        assert float(m.voxel_size.x) == pytest.approx(1.234, abs=1e-6)

    # half sets and subsets survive a second trip
    h2 = back.half(2)
    np.testing.assert_array_equal(h2.images, stack.images[1::2])
    star2, _ = write_relion_particles(tmp_path / "half2.star", h2)
    again = read_relion_particles(star2)
    np.testing.assert_array_equal(again.half_sets, np.full(3, 2))
    np.testing.assert_allclose(again.ctf.defocus_u_angstrom, stack.ctf.defocus_u_angstrom[1::2])


def test_round_trip_optics_groups_and_no_ctf(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = _random_stack(rng, p=4)
    ctf = CTFParams(
        defocus_u_angstrom=stack.ctf.defocus_u_angstrom,
        voltage_kv=[300, 200, 300, 200],
        spherical_aberration_mm=[2.7, 2.0, 2.7, 2.0],
    )
    star, _ = write_relion_particles(tmp_path / "p.star", stack.replace(ctf=ctf))
    optics = starfile.read(star, always_dict=True)["optics"]
    assert len(optics) == 2
    back = read_relion_particles(star)
    np.testing.assert_allclose(back.ctf.voltage_kv, [300, 200, 300, 200])
    np.testing.assert_allclose(back.ctf.spherical_aberration_mm, [2.7, 2.0, 2.7, 2.0])
    assert len(np.unique(back.optics_groups)) == 2

    # a stack without CTF and angles is written and read back without them
    bare = ParticleStack(stack.images, 2.0)
    star, _ = write_relion_particles(tmp_path / "bare.star", bare)
    back = read_relion_particles(star, ctf=False)
    assert back.ctf is None and back.rotations is None
    assert back.pixel_size_angstrom == pytest.approx(2.0)
    with pytest.raises(ValueError, match="rlnDefocusU.*ctf=False"):
        read_relion_particles(star)


def test_pre31_star_order_and_pixel_size(tmp_path: Path, rng: np.random.Generator) -> None:
    """RELION 3.0 table: optics in the particle rows, pixel size from magnification."""
    images = rng.standard_normal((3, 12, 12)).astype(np.float32)
    (tmp_path / "stacks").mkdir()
    with mrcfile.new(tmp_path / "stacks" / "a.mrcs") as m:
        m.set_data(images)
    rows = pd.DataFrame(
        {
            "rlnImageName": ["3@stacks/a.mrcs", "1@stacks/a.mrcs", "2@stacks/a.mrcs"],
            "rlnDefocusU": [10000.0, 11000.0, 12000.0],
            "rlnDefocusV": [9000.0, 10000.0, 11000.0],
            "rlnDefocusAngle": [10.0, 20.0, 30.0],
            "rlnVoltage": [300.0] * 3,
            "rlnSphericalAberration": [2.7] * 3,
            "rlnAmplitudeContrast": [0.07] * 3,
            "rlnMagnification": [10000.0] * 3,
            "rlnDetectorPixelSize": [14.0] * 3,
            "rlnOriginX": [1.5, 0.0, -2.0],
            "rlnOriginY": [0.0, 2.5, 0.0],
            "rlnAngleRot": [10.0, 20.0, 30.0],
            "rlnAngleTilt": [40.0, 50.0, 60.0],
            "rlnAnglePsi": [70.0, 80.0, 90.0],
        }
    )
    starfile.write(rows, tmp_path / "old.star")
    s = read_relion_particles(tmp_path / "old.star")
    np.testing.assert_array_equal(s.images, images[[2, 0, 1]])
    assert s.pixel_size_angstrom == pytest.approx(14.0)  # 14 µm × 10⁴ / 10000
    np.testing.assert_allclose(s.shifts_px, [[0.0, -1.5], [-2.5, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(
        s.rotations, euler_zyz_to_matrix([10, 20, 30], [40, 50, 60], [70, 80, 90])
    )
    np.testing.assert_allclose(s.ctf.astigmatism_angle_deg, [10, 20, 30])


def test_memory_map_keeps_file_data(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = _random_stack(rng, p=3)
    star, _ = write_relion_particles(tmp_path / "p.star", stack)
    mapped = read_relion_particles(star, mmap=True)
    assert isinstance(mapped.images, np.memmap)
    assert not mapped.images.flags.writeable
    np.testing.assert_array_equal(mapped.images, stack.images)
    part = mapped.subset(slice(1, 3))
    np.testing.assert_array_equal(part.images, stack.images[1:3])
    assert not isinstance(read_relion_particles(star, mmap=False).images, np.memmap)


# --------------------------------------------------------------------------- shift sign


def test_shift_sign_with_synthetic_blob(tmp_path: Path) -> None:
    """RELION's origin translates the particle *to* the centre; shifts_px say where it is."""
    n, px = 32, 2.0
    dy, dx = 3.0, -5.0
    image = _blob(n, (n // 2 + dy, n // 2 + dx)).astype(np.float32)
    with mrcfile.new(tmp_path / "blob.mrcs") as m:
        m.set_data(image[None])
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnImagePixelSize": [px],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
        }
    )
    # RELION writes the translation that centres the particle: origin = centre - position.
    particles = pd.DataFrame(
        {
            "rlnImageName": ["1@blob.mrcs"],
            "rlnOpticsGroup": [1],
            "rlnOriginXAngst": [-dx * px],
            "rlnOriginYAngst": [-dy * px],
        }
    )
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "blob.star")
    s = read_relion_particles(tmp_path / "blob.star", ctf=False)
    np.testing.assert_allclose(s.shifts_px, [[dy, dx]])
    np.testing.assert_allclose(_centroid(s.images[0]), [n // 2 + dy, n // 2 + dx], atol=1e-6)
    np.testing.assert_allclose(_centroid(s.centered_images()[0]), [n // 2, n // 2], atol=1e-4)
    # the same, with RELION's reading of the origin (translate the image by +origin)
    origin_yx = np.array([-dy, -dx])
    np.testing.assert_allclose(
        _centroid(shift_images(s.images[0], origin_yx)), [n // 2, n // 2], atol=1e-4
    )


def test_shift_images_moves_content_by_subpixel_shift() -> None:
    n = 32
    image = _blob(n, (n // 2, n // 2), sigma=2.0)
    moved = shift_images(image[None], [[2.25, -1.5]])[0]
    np.testing.assert_allclose(_centroid(moved), [n // 2 + 2.25, n // 2 - 1.5], atol=1e-3)
    np.testing.assert_allclose(moved, _blob(n, (n // 2 + 2.25, n // 2 - 1.5), 2.0), atol=1e-4)
    # integer shifts are exact rolls
    np.testing.assert_allclose(
        shift_images(image, [3, -2]), np.roll(image, (3, -2), axis=(0, 1)), atol=1e-6
    )


# --------------------------------------------------------------------------- bad input


def _write_stack(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))


def _star(path: Path, names: list[str], **columns) -> Path:
    table = {"rlnImageName": names, **columns}
    starfile.write(pd.DataFrame(table), path)
    return path


def test_bad_inputs_are_clear_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    _write_stack(tmp_path / "a.mrcs", rng.standard_normal((2, 8, 8)))
    _write_stack(tmp_path / "b.mrcs", rng.standard_normal((2, 10, 10)))
    _write_stack(tmp_path / "rect.mrcs", rng.standard_normal((2, 8, 10)))
    ctf_cols = {
        "rlnDefocusU": [1e4, 1e4],
        "rlnDefocusV": [1e4, 1e4],
        "rlnVoltage": [300.0, 300.0],
        "rlnSphericalAberration": [2.7, 2.7],
        "rlnAmplitudeContrast": [0.1, 0.1],
        "rlnImagePixelSize": [1.0, 1.0],
    }
    # no defocus with CTF requested: the columns and the way out are named
    star = _star(tmp_path / "noctf.star", ["1@a.mrcs", "2@a.mrcs"], rlnImagePixelSize=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"rlnDefocusU, rlnDefocusV.*ctf=False"):
        read_relion_particles(star)
    assert read_relion_particles(star, ctf=False).ctf is None
    # particles of different sizes
    star = _star(tmp_path / "mixed.star", ["1@a.mrcs", "1@b.mrcs"], **ctf_cols)
    with pytest.raises(ValueError, match="different sizes"):
        read_relion_particles(star)
    # missing stack file, named
    star = _star(tmp_path / "missing.star", ["1@a.mrcs", "1@gone.mrcs"], **ctf_cols)
    with pytest.raises(ValueError, match=r"gone\.mrcs.*does not exist"):
        read_relion_particles(star)
    # ... and found with stack_paths
    s = read_relion_particles(star, stack_paths={"gone.mrcs": tmp_path / "a.mrcs"})
    np.testing.assert_array_equal(s.images[0], s.images[1])
    # index beyond the stack
    star = _star(tmp_path / "beyond.star", ["1@a.mrcs", "3@a.mrcs"], **ctf_cols)
    with pytest.raises(ValueError, match="image 3 of .*holds only 2"):
        read_relion_particles(star)
    # a non-square box
    star = _star(tmp_path / "rect.star", ["1@rect.mrcs", "2@rect.mrcs"], **ctf_cols)
    with pytest.raises(ValueError, match="square"):
        read_relion_particles(star)
    # only some angle columns
    star = _star(
        tmp_path / "ang.star", ["1@a.mrcs", "2@a.mrcs"], rlnAngleRot=[1.0, 2.0], **ctf_cols
    )
    with pytest.raises(ValueError, match="rlnAngleTilt, rlnAnglePsi"):
        read_relion_particles(star)
    # no pixel size anywhere (mrcfile writes voxel size 0 by default)
    star = _star(tmp_path / "nopx.star", ["1@a.mrcs", "2@a.mrcs"])
    with pytest.raises(ValueError, match="pixel_size_angstrom="):
        read_relion_particles(star, ctf=False)
    assert (
        read_relion_particles(star, ctf=False, pixel_size_angstrom=3.0).pixel_size_angstrom == 3.0
    )
    # half-set labels other than 1/2
    star = _star(
        tmp_path / "half.star", ["1@a.mrcs", "2@a.mrcs"], rlnRandomSubset=[1, 3], **ctf_cols
    )
    with pytest.raises(ValueError, match="half_sets of particle 1 is 3"):
        read_relion_particles(star)
    with pytest.raises(FileNotFoundError):
        read_relion_particles(tmp_path / "nothing.star")
    # writing refuses an existing file with overwrite=False, before writing the stack
    stack = ParticleStack(rng.standard_normal((2, 8, 8)), 1.0)
    write_relion_particles(tmp_path / "w.star", stack)
    with pytest.raises(FileExistsError):
        write_relion_particles(tmp_path / "w.star", stack, overwrite=False)


def test_particle_stack_validation(rng: np.random.Generator) -> None:
    images = rng.standard_normal((3, 8, 8))
    stack = ParticleStack(images, 1.5)
    assert stack.images.dtype == np.float32 and stack.shifts_px.shape == (3, 2)
    with pytest.raises(ValueError, match="square"):
        ParticleStack(rng.standard_normal((3, 8, 9)), 1.0)
    with pytest.raises(ValueError, match="pixel_size_angstrom must be > 0"):
        ParticleStack(images, 0.0)
    with pytest.raises(ValueError, match="not a rotation"):
        ParticleStack(images, 1.0, rotations=np.tile(2 * np.eye(3), (3, 1, 1)))
    with pytest.raises(ValueError, match="rotations must be"):
        ParticleStack(images, 1.0, rotations=np.eye(3))
    with pytest.raises(ValueError, match="finite"):
        ParticleStack.from_angles(images, [[0, 0, 0], [0, np.nan, 0], [0, 0, 0]], 1.0)
    with pytest.raises(ValueError, match="ctf holds 2 particles"):
        ParticleStack(images, 1.0, ctf=CTFParams.constant(2, defocus_u_angstrom=1e4))
    with pytest.raises(ValueError, match="no half-set labels"):
        stack.half(1)
    with pytest.raises(ValueError, match="b_factor_angstrom2 of particle 0"):
        CTFParams.constant(2, defocus_u_angstrom=1e4, b_factor_angstrom2=-5.0)
    halves = stack.with_random_halves(0)
    assert len(halves.half(1)) + len(halves.half(2)) == 3
    sub = _random_stack(rng).subset([4, 1])
    assert sub.metadata["rlnMicrographName"].tolist() == ["mic0.mrc", "mic1.mrc"]


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_empiar_10076_particles_read_with_ctf() -> None:
    """7 real 50S-ribosome particles (cryoDRGN test data): RELION 3.0 table, one stack."""
    star = shared_data("empiar_10076_7_particles.star")
    mrc = shared_data("empiar_10076_7_particles.mrc")
    # The STAR file names the stack 'empiar_10076_7.mrc'; the shared copy was renamed.
    with pytest.raises(ValueError, match=r"empiar_10076_7\.mrc.*does not exist"):
        read_relion_particles(star)
    s = read_relion_particles(star, stack_paths={"empiar_10076_7.mrc": mrc})
    assert s.images.shape == (7, 320, 320)
    assert s.pixel_size_angstrom == pytest.approx(1.31, abs=0.01)  # 5 µm / 38168
    assert s.rotations is None and np.all(s.shifts_px == 0)
    assert np.all((s.ctf.defocus_u_angstrom > 1.4e4) & (s.ctf.defocus_u_angstrom < 1.6e4))
    assert np.all(s.ctf.defocus_u_angstrom > s.ctf.defocus_v_angstrom)
    np.testing.assert_allclose(s.ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(s.ctf.spherical_aberration_mm, 2.7)
    np.testing.assert_allclose(s.ctf.amplitude_contrast, 0.07)
    assert abs(float(s.images.mean())) < 0.05 and 0.8 < float(s.images.std()) < 1.2

    # Raw images show the particle dark (the CTF convention of ctf_2d, inverted_contrast=False);
    # after phase flipping, the low-passed particle centre is brighter than the background.
    flipped = correct_ctf(s, "phase_flip")
    n = 320
    yy, xx = np.mgrid[:n, :n] - n // 2
    r = np.hypot(yy, xx)
    inner, outer = r < 80, r > 120
    from scipy.ndimage import gaussian_filter

    for raw, pf in zip(s.images, flipped, strict=True):
        lp_raw, lp_pf = gaussian_filter(raw, 4), gaussian_filter(pf, 4)
        assert lp_raw[inner].mean() < lp_raw[outer].mean()
        assert lp_pf[inner].mean() > lp_pf[outer].mean()
