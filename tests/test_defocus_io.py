"""Defocus files (IMOD .defocus v2/v3, CTFFIND4, AreTomo) and per-view exposures."""

from __future__ import annotations

import numpy as np
import pytest

from cryowedge.io.defocus import constant_defocus, find_mdoc, read_defocus_file, view_doses

CTFFIND_HEADER = """\
# Output from CTFFind version 4.1.14, run on 2024-01-01 10:00:00
# Input file: TS_01.mrc ; Number of micrographs: 3
# Pixel size: 2.000 Angstroms ; acceleration voltage: 300.0 keV ; spherical aberration: \
2.70 mm ; amplitude contrast: 0.07
# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; #4 - azimuth \
of astigmatism; #5 - additional phase shift [radians]; #6 - cross correlation; #7 - spacing \
(in Angstroms) up to which CTF rings were fit successfully
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_imod_version2_one_line_per_view(tmp_path):
    path = _write(tmp_path, "ts.defocus", "1 1 -30.00 -30.00 3000.0 2\n"
                  "2 2 0.00 0.00 3100.5 \n3 3 30.00 30.00 2900.0\n")
    table = read_defocus_file(path, 3)
    assert table.source == "imod"
    np.testing.assert_allclose(table.defocus_u_angstrom, [30000.0, 31005.0, 29000.0])
    np.testing.assert_allclose(table.defocus_v_angstrom, table.defocus_u_angstrom)
    np.testing.assert_allclose(table.astigmatism_angle_deg, 0.0)
    np.testing.assert_allclose(table.tilt_angles_deg, [-30.0, 0.0, 30.0])


def test_imod_version3_astigmatism_and_ranges(tmp_path):
    # flags 1 = astigmatism; entries cover ranges; values sit at the middle view (1-based
    # 2 and 5) and views between are interpolated, beyond them held constant (ctfphaseflip).
    text = ("1 0 0.0 0.0 0.0 3\n"
            "1 3 -20.0 0.0 3000.0 2900.0 40.0\n"
            "4 6 10.0 30.0 3600.0 3400.0 50.0\n")
    table = read_defocus_file(_write(tmp_path, "ts.defocus", text), 6)
    np.testing.assert_allclose(table.defocus_u_angstrom,
                               [30000, 30000, 32000, 34000, 36000, 36000])
    np.testing.assert_allclose(table.defocus_v_angstrom,
                               [29000, 29000, 30666.667, 32333.333, 34000, 34000], rtol=1e-6)
    np.testing.assert_allclose(table.astigmatism_angle_deg, [40, 40, 43.333, 46.667, 50, 50],
                               rtol=1e-4)
    np.testing.assert_allclose(table.phase_shift_deg, 0.0)


def test_imod_version3_phase_in_radians_and_inverted_angles(tmp_path):
    # flags 1 + 2 + 4 + 8 + 16: astigmatism angle and phase in radians, angles inverted
    text = ("31 0 0.0 0.0 0.0 3\n"
            f"1 1 10.0 10.0 2000.0 1900.0 {np.pi / 4} {np.pi / 2}\n"
            f"2 2 -10.0 -10.0 2100.0 2000.0 {np.pi / 6} 0.5\n")
    table = read_defocus_file(_write(tmp_path, "ts.defocus", text), 2)
    np.testing.assert_allclose(table.astigmatism_angle_deg, [45.0, 30.0])
    np.testing.assert_allclose(table.phase_shift_deg, [90.0, np.rad2deg(0.5)])
    np.testing.assert_allclose(table.tilt_angles_deg, [-10.0, 10.0])


def test_ctffind4_rows(tmp_path):
    rows = ("1.000000 30100.5 29800.0 -38.5 0.000000 0.0306 5.27\n"
            "2.000000 30500.0 30000.0 12.0 1.570796 0.0300 5.50\n"
            "3.000000 29900.0 29700.0 85.0 0.000000 0.0290 6.00\n")
    table = read_defocus_file(_write(tmp_path, "ts_ctf.txt", CTFFIND_HEADER + rows), 3)
    assert table.source == "ctffind4"
    np.testing.assert_allclose(table.defocus_u_angstrom, [30100.5, 30500.0, 29900.0])
    np.testing.assert_allclose(table.defocus_v_angstrom, [29800.0, 30000.0, 29700.0])
    np.testing.assert_allclose(table.astigmatism_angle_deg, [-38.5, 12.0, 85.0])
    np.testing.assert_allclose(table.phase_shift_deg, [0.0, 90.0, 0.0], atol=1e-4)
    assert table.tilt_angles_deg is None


def test_aretomo_ctf_txt_zero_based_with_dfhand(tmp_path):
    text = ("# Columns: #1 micrograph number; #2 - defocus 1 [A]; #3 - defocus 2; "
            "#4 - azimuth of astigmatism;\n#5 - additional phase shift [radian]; "
            "#6 - cross correlation;\n#7 - spacing (in Angstroms) up to which CTF rings were "
            "fit successfully; #8 - dfHand\n"
            "   1 40000.00 39000.00    10.00    0.0000   0.0300   8.0000   1\n"
            "   0 41000.00 40500.00    20.00    0.0000   0.0300   8.0000   1\n")
    table = read_defocus_file(_write(tmp_path, "TS_CTF.txt", text), 2)
    assert table.source == "aretomo"
    # rows are put in image order: number 0 first
    np.testing.assert_allclose(table.defocus_u_angstrom, [41000.0, 40000.0])
    np.testing.assert_allclose(table.astigmatism_angle_deg, [20.0, 10.0])


def test_constant_defocus():
    table = constant_defocus(30000.0, 4)
    np.testing.assert_allclose(table.defocus_u_angstrom, 30000.0)
    assert table.source == "constant" and table.n_views == 4
    with pytest.raises(ValueError, match="positive"):
        constant_defocus(-1.0, 4)


@pytest.mark.parametrize(
    ("name", "text", "n_views", "match"),
    [
        ("ts.defocus", "1 1 0 0 3000 2\n2 2 0 0 3000\n", 3,
         r"covers 2 of the stack's 3 views; views 3 have no defocus"),
        ("ts.defocus", "1 1 0 0 3000 2\n2 4 0 0 3000\n", 3,
         r"names views up to 4 but the stack has 3 views"),
        ("ts_ctf.txt", CTFFIND_HEADER + "1 30000 30000 0 0 0 5\n2 30000 30000 0 0 0 5\n", 3,
         r"has 2 rows but the stack has 3 views"),
        ("ts.defocus", "1 1 0 0 -3000 2\n", 1, "underfocus"),
        ("ts.defocus", "1 2 3\n", 1, "cannot tell the format"),
        ("ts.defocus", "one two\n", 1, "cannot read"),
    ],
)
def test_mismatched_or_bad_files_name_the_file_and_the_fix(tmp_path, name, text, n_views, match):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=match) as info:
        read_defocus_file(path, n_views)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_defocus_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="defocus file not found"):
        read_defocus_file(tmp_path / "nope.defocus", 3)


MDOC = """PixelSpacing = 2.0
ImageFile = ts.mrc

[ZValue = 0]
TiltAngle = -3.0
ExposureDose = 3.0
DateTime = 01-Jan-24  10:00:10

[ZValue = 1]
TiltAngle = 0.0
ExposureDose = 2.0
DateTime = 01-Jan-24  10:00:00

[ZValue = 2]
TiltAngle = 3.0
ExposureDose = 4.0
DateTime = 01-Jan-24  10:00:20
"""


def test_doses_from_mdoc_follow_the_acquisition_order(tmp_path):
    mdoc = _write(tmp_path, "ts.mdoc", MDOC)
    doses = view_doses(3, mdoc_path=mdoc)
    # acquired: view 1 (2 e/Å²), then view 0 (3), then view 2 (4)
    np.testing.assert_allclose(doses.own_e_per_angstrom2, [3.0, 2.0, 4.0])
    np.testing.assert_allclose(doses.prior_e_per_angstrom2, [2.0, 0.0, 5.0])
    assert doses.source == "mdoc" and doses.order == "mdoc"
    per_tilt = view_doses(3, mdoc_path=mdoc, dose_per_tilt=1.5)
    np.testing.assert_allclose(per_tilt.prior_e_per_angstrom2, [1.5, 0.0, 3.0])
    assert find_mdoc(tmp_path / "ts.mrc") == mdoc


def test_doses_without_mdoc(tmp_path):
    doses = view_doses(3, dose_per_tilt=2.0)
    np.testing.assert_allclose(doses.prior_e_per_angstrom2, [0.0, 2.0, 4.0])
    assert doses.order == "stack order (assumed)"
    with pytest.raises(ValueError, match="--dose-per-tilt"):
        view_doses(3)
    with pytest.raises(ValueError, match="lists 3 images but the stack has 4"):
        view_doses(4, mdoc_path=_write(tmp_path, "ts.mdoc", MDOC))
