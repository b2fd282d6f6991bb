"""Tests for cryowedge.simulate.phantoms and cryowedge.simulate.pdb."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from scipy import ndimage
from scipy.special import erf

from cryowedge.geometry.rotations import rotate_volume
from cryowedge.simulate.pdb import (
    atom_weights,
    gaussian_atom_map,
    load_example_particle,
    read_pdb_atoms,
)
from cryowedge.simulate.phantoms import (
    LABEL_MEMBRANE,
    LABEL_PARTICLE,
    LABEL_VESICLE,
    CellPhantom,
    crowded_cell,
    gaussian_blob_particle,
    hollow_spheres,
    shepp_logan_2d,
    shepp_logan_3d,
)

BUNDLED_PDB = (
    Path(__file__).resolve().parents[1] / "src" / "cryowedge" / "simulate" / "data" / "1A5T.pdb.gz"
)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# --- Shepp-Logan ----------------------------------------------------------------------


def test_shepp_logan_2d_matches_skimage():
    skdata = pytest.importorskip("skimage.data")
    ref = np.flipud(skdata.shepp_logan_phantom())  # 400 x 400; skimage rows grow downwards
    img = shepp_logan_2d(400)
    assert img.shape == (400, 400) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    # skimage centres the phantom at (n - 1) / 2 = 199.5, we at n // 2 = 200
    # (docs/conventions.md): the two agree exactly except on ellipse boundaries, and
    # correlate > 0.99 once both are blurred (sigma 2 px) to hide that half pixel.
    interior = (ndimage.maximum_filter(ref, 3) == ndimage.minimum_filter(ref, 3)) & (
        ndimage.maximum_filter(img, 3) == ndimage.minimum_filter(img, 3)
    )
    assert interior.mean() > 0.93
    np.testing.assert_allclose(img[interior], ref[interior], atol=2e-3)
    assert _corr(img, ref) > 0.94
    blur = 2.0
    assert _corr(ndimage.gaussian_filter(img, blur), ndimage.gaussian_filter(ref, blur)) > 0.99
    # The intensities are Toft's modified set.
    np.testing.assert_allclose(
        sorted(np.unique(np.round(img, 3))), [0.0, 0.1, 0.2, 0.3, 0.4, 1.0], atol=1e-6
    )


def test_shepp_logan_2d_orientation_and_oversample():
    img = shepp_logan_2d(128)
    c = 64
    # Ellipse 5 (y0 = +0.35, value 0.3) lies at larger row indices than the centre.
    assert img[c + int(0.35 * 64), c] == pytest.approx(0.3, abs=1e-6)
    smooth = shepp_logan_2d(128, oversample=4)
    assert 0.0 <= smooth.min() and smooth.max() <= 1.0
    assert _corr(img, smooth) > 0.97
    assert len(np.unique(smooth)) > len(np.unique(img))


def test_shepp_logan_3d():
    vol = shepp_logan_3d((64, 96, 80))
    assert vol.shape == (64, 96, 80) and vol.dtype == np.float32
    assert vol.min() >= 0.0 and vol.max() <= 1.0
    cube = shepp_logan_3d(96)
    assert _corr(cube[48], shepp_logan_2d(96)) > 0.95
    assert cube[0].max() == 0.0 and cube[:, :, 0].max() == 0.0


# --- hollow spheres --------------------------------------------------------------------


def test_hollow_spheres_properties():
    vol = hollow_spheres(96, n_spheres=8, radius_range_px=(5, 10), shell_thickness_px=2, rng=3)
    assert vol.shape == (96, 96, 96) and vol.dtype == np.float32
    assert vol.min() >= 0.0 and vol.max() == pytest.approx(1.0)
    # Anti-aliased: intermediate values exist.
    assert np.any((vol > 0.05) & (vol < 0.95))
    # Non-overlapping: every sphere is its own connected component.
    labels, n = ndimage.label(vol > 0)
    assert n == 8
    # Hollow: the centre of each component's bounding box is empty.
    for sl in ndimage.find_objects(labels):
        centre = tuple((s.start + s.stop - 1) // 2 for s in sl)
        assert vol[centre] == 0.0
        # Fully inside the box.
        assert all(s.start > 0 and s.stop < 96 for s in sl)
    again = hollow_spheres(96, n_spheres=8, radius_range_px=(5, 10), rng=3)
    np.testing.assert_array_equal(vol, again)


def test_hollow_spheres_slab_and_errors():
    slab = hollow_spheres((32, 128, 128), rng=0)  # the report's 8x binned slab
    assert slab.shape == (32, 128, 128) and slab.max() > 0.9
    with pytest.raises(ValueError, match="could place only"):
        hollow_spheres(40, n_spheres=200, radius_range_px=(8, 9), rng=0)
    with pytest.raises(ValueError, match="do not fit"):
        hollow_spheres(20, radius_range_px=(5, 12))


# --- particle and crowded cell ---------------------------------------------------------


def test_gaussian_blob_particle_is_asymmetric():
    p = gaussian_blob_particle(16)
    assert p.shape == (16, 16, 16) and p.max() == pytest.approx(1.0)
    # No mirror symmetry: a reflection is not a rotation of it, and it differs from flips.
    for axis in range(3):
        assert _corr(p, np.flip(p, axis=axis)) < 0.95


def test_crowded_cell_structure():
    cell = crowded_cell((64, 96, 96), n_particles=8, n_vesicles=2, membrane=2, rng=11)
    assert isinstance(cell, CellPhantom)
    v, lab = cell.volume, cell.labels
    assert v.shape == (64, 96, 96) and v.dtype == np.float32
    assert lab.shape == v.shape and np.issubdtype(lab.dtype, np.integer)
    assert v.min() >= 0.0 and v.max() <= 1.0
    assert set(np.unique(lab)) == {0, LABEL_MEMBRANE, LABEL_VESICLE, LABEL_PARTICLE}
    # Vacuum above and below the slab (60 % of nz centred at nz // 2).
    assert v[:8].max() < 1e-3 and v[-8:].max() < 1e-3
    assert v[32].mean() > 0.05
    pos, rots = cell.particle_positions_zyx, cell.particle_rotations
    assert pos.shape == (8, 3) and rots.shape == (8, 3, 3)
    eye = np.broadcast_to(np.eye(3), rots.shape)
    np.testing.assert_allclose(rots @ np.swapaxes(rots, 1, 2), eye, atol=1e-10)
    slab_lo, slab_hi = 32 - 0.3 * 64, 32 + 0.3 * 64
    assert np.all(pos[:, 0] > slab_lo) and np.all(pos[:, 0] < slab_hi)
    # Non-overlapping bounding spheres.
    k = cell.particle.shape[0] // 2
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(8) * 1e9
    assert dist.min() > 2 * (k - 2)
    # Every particle centre is labelled as particle (the blob is dense at its centre).
    assert np.all(lab[tuple(pos.astype(int).T)] == LABEL_PARTICLE)
    assert cell.vesicle_centers_zyx.shape == (2, 3) and cell.vesicle_radii_px.shape == (2,)


def test_crowded_cell_ground_truth_orientation():
    cell = crowded_cell(
        64, n_particles=4, n_vesicles=0, membrane=False, rng=5, texture_amplitude=0.0,
        blur_sigma_px=0.0,
    )
    t = cell.particle
    k = t.shape[0] // 2
    for c, m in zip(cell.particle_positions_zyx.astype(int), cell.particle_rotations):
        crop = cell.volume[tuple(slice(a - k, a + k + 1) for a in c)]
        expected = rotate_volume(t, m)
        assert _corr(crop, expected) > 0.95
        # ... and clearly better than the unrotated template (orientation is visible).
        assert _corr(crop, expected) > _corr(crop, t) + 0.02


def test_crowded_cell_deterministic_and_custom_particle():
    a = crowded_cell(64, n_particles=3, n_vesicles=1, rng=2)
    b = crowded_cell(64, n_particles=3, n_vesicles=1, rng=2)
    np.testing.assert_array_equal(a.volume, b.volume)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.particle_rotations, b.particle_rotations)
    c = crowded_cell(64, n_particles=3, n_vesicles=1, rng=3)
    assert not np.array_equal(a.volume, c.volume)
    particle = load_example_particle(pixel_size_angstrom=8.0)
    cell = crowded_cell(64, particle=particle, n_particles=5, n_vesicles=1,
                        pixel_size_angstrom=8.0, rng=0)
    assert cell.particle_positions_zyx.shape == (5, 3)
    assert (cell.labels == LABEL_PARTICLE).sum() > 5 * 20
    empty = crowded_cell(32, n_particles=0, n_vesicles=0, membrane=False, rng=0)
    assert empty.particle_positions_zyx.shape == (0, 3)
    assert empty.particle_rotations.shape == (0, 3, 3)


def test_crowded_cell_errors():
    with pytest.raises(ValueError, match="could place only"):
        crowded_cell(32, n_particles=500, rng=0)
    with pytest.raises(ValueError, match="membrane"):
        crowded_cell(32, membrane=3)
    with pytest.raises(ValueError, match="n_particles must be an integer >= 0, got -1"):
        crowded_cell(32, n_particles=-1)
    with pytest.raises(ValueError, match="slab_fraction"):
        crowded_cell(32, slab_fraction=1.5)


def test_crowded_cell_128_is_fast():
    crowded_cell(32, n_particles=1, n_vesicles=0, rng=0)  # warm-up (imports)
    t0 = time.perf_counter()
    cell = crowded_cell(128, rng=0)
    elapsed = time.perf_counter() - t0
    assert cell.volume.shape == (128, 128, 128)
    assert len(cell.particle_positions_zyx) == 40
    assert elapsed < 5.0, f"crowded_cell(128) took {elapsed:.2f} s"


# --- PDB -> density --------------------------------------------------------------------

_TINY_PDB = """\
HEADER    TEST
ATOM      1  N   ALA A   1      11.104   6.134  -6.504  1.00  0.00
ATOM      2  CA  ALA A   1      11.639   6.071  -5.147  1.00  0.00
ATOM      3 HD21 ASN A   2      12.000   6.000  -4.000  1.00  0.00
HETATM    4 ZN    ZN A 501      16.200  57.412  45.833  1.00 23.97
ATOM      5  CB BALA A   1       9.000   9.000   9.000  0.50  0.00           C
HETATM    6  O   HOH A 601      25.869  29.922  45.395  1.00 10.00           O
ATOM      7  SG  CYS A   3      13.000   7.000  -3.000  1.00  0.00           S
ENDMDL
ATOM      8  N   ALA A   1      99.000  99.000  99.000  1.00  0.00           N
"""


def test_read_pdb_atoms_parsing(tmp_path):
    path = tmp_path / "tiny.pdb"
    path.write_text(_TINY_PDB)
    coords, elements = read_pdb_atoms(path)
    assert list(elements) == ["N", "C", "H", "ZN", "S"]
    np.testing.assert_allclose(coords[0], [11.104, 6.134, -6.504])
    _, el_w = read_pdb_atoms(path, include_water=True, include_hydrogens=False)
    assert list(el_w) == ["N", "C", "ZN", "O", "S"]
    _, el_nohet = read_pdb_atoms(path, include_hetatm=False)
    assert "ZN" not in el_nohet
    gz = tmp_path / "tiny.pdb.gz"
    gz.write_bytes(gzip.compress(_TINY_PDB.encode()))
    np.testing.assert_array_equal(read_pdb_atoms(gz)[0], coords)
    (tmp_path / "empty.pdb").write_text("HEADER\nEND\n")
    with pytest.raises(ValueError, match="no ATOM/HETATM"):
        read_pdb_atoms(tmp_path / "empty.pdb")


def test_read_pdb_atoms_refuses_bad_files(tmp_path):
    bad = tmp_path / "typo.pdb"
    bad.write_text(_TINY_PDB.replace("  6.134", "  6.1x4", 1))
    with pytest.raises(ValueError, match=r"typo.pdb, line 2: cannot read x, y, z.*6\.1x4"):
        read_pdb_atoms(bad)
    broken = tmp_path / "broken.cif"
    broken.write_text("data_x\nloop_\n_atom_site.id\n'unterminated\n")
    with pytest.raises(ValueError, match=r"cannot read .*broken.cif as mmCIF"):
        read_pdb_atoms(broken)
    tiny = tmp_path / "tiny.pdb"
    tiny.write_text(_TINY_PDB)
    nan_cif = tmp_path / "nan.cif"
    _write_mmcif_with_gemmi(tiny, nan_cif)
    text = nan_cif.read_text()
    assert text.count(" 11.104 ") == 1
    nan_cif.write_text(text.replace(" 11.104 ", " abc "))
    with pytest.raises(ValueError, match="atom 0 .*not a number"):
        read_pdb_atoms(nan_cif)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="no ATOM/HETATM"):
        read_pdb_atoms(tmp_path / "notes.txt")


def _write_mmcif_with_gemmi(source: Path, target: Path) -> None:
    """mmCIF of ``source`` written by gemmi (an independent writer, not our reader)."""
    import gemmi

    structure = gemmi.read_structure(str(source))
    structure.setup_entities()
    document = structure.make_mmcif_document()
    text = document.as_string()
    if target.suffix == ".gz":
        target.write_bytes(gzip.compress(text.encode()))
    else:
        target.write_text(text)


@pytest.mark.parametrize("name", ["1a5t.cif", "1a5t.mmcif", "1a5t.cif.gz"])
def test_mmcif_round_trip_gives_the_same_atoms(tmp_path, name):
    cif = tmp_path / name
    _write_mmcif_with_gemmi(BUNDLED_PDB, cif)
    assert cif.read_bytes()[:2] == b"\x1f\x8b" if name.endswith(".gz") else (
        cif.read_text().startswith("data_")
    )
    for options in ({}, {"include_water": True}, {"include_hetatm": False},
                    {"include_hydrogens": False}):
        c_pdb, e_pdb = read_pdb_atoms(BUNDLED_PDB, **options)
        c_cif, e_cif = read_pdb_atoms(cif, **options)
        np.testing.assert_array_equal(e_cif, e_pdb)
        np.testing.assert_allclose(c_cif, c_pdb, atol=5e-4)  # 3 decimals in both formats


def test_tiny_pdb_through_mmcif(tmp_path):
    # altloc B, HETATM, water, blank element columns and the ENDMDL cut survive the round trip
    pdb = tmp_path / "tiny.pdb"
    pdb.write_text(_TINY_PDB)
    cif = tmp_path / "tiny.cif"
    _write_mmcif_with_gemmi(pdb, cif)
    for options in ({}, {"include_water": True, "include_hydrogens": False},
                    {"include_hetatm": False}):
        c_pdb, e_pdb = read_pdb_atoms(pdb, **options)
        c_cif, e_cif = read_pdb_atoms(cif, **options)
        assert sorted(e_cif) == sorted(e_pdb)
        order = np.lexsort(c_pdb.T), np.lexsort(c_cif.T)
        np.testing.assert_allclose(c_cif[order[1]], c_pdb[order[0]], atol=5e-4)


@pytest.mark.realdata
def test_shared_1a5t_matches_bundled_copy():
    path = shared_data("1A5T.pdb")
    coords, elements = read_pdb_atoms(path)
    bundled = read_pdb_atoms(BUNDLED_PDB)
    np.testing.assert_array_equal(coords, bundled[0])
    np.testing.assert_array_equal(elements, bundled[1])
    assert coords.shape == (3063, 3) and elements[0] == "N"


def test_read_bundled_1a5t():
    coords, elements = read_pdb_atoms(BUNDLED_PDB)
    assert coords.shape == (3063, 3)
    assert set(elements) == {"C", "H", "N", "O", "S", "ZN"}
    coords_w, _ = read_pdb_atoms(BUNDLED_PDB, include_water=True)
    assert len(coords_w) == 3669
    weights = atom_weights(["h", "C", "N", "O", "P", "S", "Zn"])
    np.testing.assert_array_equal(weights, [1, 6, 7, 8, 15, 16, 30])
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        atom_weights(["C", "Xx"])


def test_gaussian_atom_map_centre_mass_shape():
    coords, elements = read_pdb_atoms(BUNDLED_PDB)
    w = atom_weights(elements)
    for px in (10.0, 3.0):
        t0 = time.perf_counter()
        m = gaussian_atom_map(coords, elements, pixel_size_angstrom=px)
        assert time.perf_counter() - t0 < 2.0
        assert m.dtype == np.float32 and m.ndim == 3 and len(set(m.shape)) == 1
        assert m.sum() == pytest.approx(w.sum(), rel=1e-4)
        com = np.array(ndimage.center_of_mass(m.astype(np.float64)))
        np.testing.assert_allclose(com, [n // 2 for n in m.shape], atol=0.5)
    fixed = gaussian_atom_map(coords, elements, pixel_size_angstrom=4.0, box_size=(40, 48, 44))
    assert fixed.shape == (40, 48, 44)
    # Mass scales with the weights.
    doubled = gaussian_atom_map(
        coords, weights=2 * w, pixel_size_angstrom=4.0, box_size=(40, 48, 44)
    )
    np.testing.assert_allclose(doubled, 2 * fixed, rtol=1e-5, atol=1e-4)


def test_gaussian_atom_map_matches_direct_evaluation():
    coords, elements = read_pdb_atoms(BUNDLED_PDB)
    sub, el = coords[:40], elements[:40]
    px, res, bf = 1.5, 6.0, 20.0
    m = gaussian_atom_map(sub, el, pixel_size_angstrom=px, resolution_angstrom=res, b_factor=bf,
                          center=False, box_size=(int(sub[:, 2].max() / px) + 8,
                                                  int(sub[:, 1].max() / px) + 8,
                                                  int(sub[:, 0].max() / px) + 8))
    sigma = np.sqrt(bf / (8 * np.pi**2) + (res / (np.pi * np.sqrt(2))) ** 2)
    w = atom_weights(el)
    grid = np.indices(m.shape).astype(np.float64) * px  # (z, y, x) in Å, voxel 0 at 0 Å
    point = np.zeros(m.shape)  # the Gaussians sampled at voxel centres
    integrated = np.zeros(m.shape)  # ... and integrated over each voxel (what the map holds)
    for (x, y, z), wi in zip(sub, w):
        r2 = (grid[0] - z) ** 2 + (grid[1] - y) ** 2 + (grid[2] - x) ** 2
        point += wi * np.exp(-r2 / (2 * sigma**2)) / (2 * np.pi * sigma**2) ** 1.5 * px**3
        box = 1.0
        for g, c in zip(grid, (z, y, x)):
            box = box * 0.5 * (
                erf((g + px / 2 - c) / (np.sqrt(2) * sigma))
                - erf((g - px / 2 - c) / (np.sqrt(2) * sigma))
            )
        integrated += wi * box
    assert _corr(m, point) > 0.999
    np.testing.assert_allclose(m.sum(), point.sum(), rtol=0.02)
    np.testing.assert_allclose(m, integrated, rtol=1e-4, atol=1e-4 * integrated.max())


def test_center_false_uses_mrc_origin():
    m = gaussian_atom_map([[20.0, 10.0, 30.0]], ["C"], pixel_size_angstrom=2.0, center=False,
                          box_size=24)
    com = ndimage.center_of_mass(m.astype(np.float64))
    np.testing.assert_allclose(com, [15.0, 5.0, 10.0], atol=0.05)


def test_load_example_particle():
    t0 = time.perf_counter()
    m = load_example_particle()
    assert time.perf_counter() - t0 < 2.0
    assert m.ndim == 3 and m.dtype == np.float32 and m.max() > 0
    m4 = load_example_particle(4.0, box_size=40)
    assert m4.shape == (40, 40, 40)
    # Total mass is independent of the voxel size.
    assert m.sum() == pytest.approx(m4.sum(), rel=1e-3)
