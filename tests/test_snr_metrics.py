"""SNR-type metrics (metrics/snr.py) and the STET benchmark phantom (simulate/stet.py)."""

from __future__ import annotations

import numpy as np
import pytest

from cryowedge.metrics.snr import high_pass_snr_db, masked_snr_db, snr_db
from cryowedge.simulate.stet import add_filaments, stet_phantom


def _truth_and_error(db: float, shape=(8, 10, 12)):
    """A truth and an error scaled so that ‖truth‖² / ‖error‖² is exactly ``10^(db/10)``."""
    rng = np.random.default_rng(0)
    truth = rng.random(shape)
    error = rng.standard_normal(shape)
    error *= np.sqrt(np.sum(truth**2) / np.sum(error**2) / 10 ** (db / 10))
    return truth, error


def test_snr_matches_the_defined_ratio():
    truth, error = _truth_and_error(12.5)
    assert snr_db(truth + error, truth, normalize="none") == pytest.approx(12.5)
    where = truth > 0.5
    expected = 10 * np.log10(np.sum(truth[where] ** 2) / np.sum(error[where] ** 2))
    assert masked_snr_db(truth + error, truth, where, normalize="none") == pytest.approx(expected)


def test_affine_normalisation_forgives_gain_and_offset_only():
    truth, error = _truth_and_error(8.0)
    assert (
        snr_db(3.0 * truth - 2.0, truth) > 200
    )  # a gain and an offset are not errors (rounding only)
    assert snr_db(3.0 * truth - 2.0, truth, normalize="none") < 0
    assert snr_db(truth + error, truth) >= snr_db(truth + error, truth, normalize="none") - 1e-9


def test_high_pass_snr_ignores_low_frequency_errors():
    truth, error = _truth_and_error(6.0, shape=(16, 16, 16))
    offset = truth + 0.5  # a DC error only
    assert high_pass_snr_db(offset, truth, normalize="none") > 200  # rounding only
    assert snr_db(offset, truth, normalize="none") < 10
    spectrum = np.fft.fftn(error)
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(16) ** 2] * 3, indexing="ij")))
    high = np.real(np.fft.ifftn(np.where(k > 0.15, spectrum, 0)))
    ft = np.fft.fftn(truth)
    high_ft = np.fft.fftn(high)[k > 0.15]
    expected = 10 * np.log10(np.sum(np.abs(ft[k > 0.15]) ** 2) / np.sum(np.abs(high_ft) ** 2))
    assert high_pass_snr_db(truth + high, truth, normalize="none") == pytest.approx(expected)
    with pytest.raises(ValueError, match="leaves no frequency"):
        high_pass_snr_db(truth, truth, cutoff=0.9)


def test_stet_phantom_adds_thin_filaments_inside_the_specimen():
    cell, truth = stet_phantom((32, 48, 48), n_particles=2, n_filaments=4, seed=3)
    assert cell.shape == truth.shape == (32, 48, 48) and truth.dtype == np.float32
    filaments = truth - cell
    assert filaments.min() >= -1e-6 and filaments.max() > 0.3  # added, never removed
    assert np.all(filaments[cell <= 0.02] == 0)  # nothing outside the specimen
    again = stet_phantom((32, 48, 48), n_particles=2, n_filaments=4, seed=3)[1]
    np.testing.assert_array_equal(truth, again)
    assert np.array_equal(add_filaments(cell, 0), np.clip(cell, 0, 1))


def test_stet_check_script_runs_a_tiny_case(capsys):
    """benchmarks/stet_check.py (the folded STET diagnostics) on a tiny phantom, 2 ADMM steps."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stet_check.py"
    spec = importlib.util.spec_from_file_location("stet_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(
        [
            "size",
            "--width",
            "48",
            "--depth",
            "32",
            "--particles",
            "2",
            "--filaments",
            "3",
            "--admm-iter",
            "2",
            "--cg-iter",
            "2",
            "--lambdas",
            "1",
        ]
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    tds, ids = (float(v) for v in last.removeprefix("best_snr_tds_ids: ").split())
    assert 0 < ids < 30 and 0 < tds < 30  # finite scores of real reconstructions


def test_stet_check_defaults_are_per_check(monkeypatch):
    """`size` defaults to a 192-px field; every other check keeps the table's 96-px phantom.

    argparse shares a parent parser's actions between its sub-parsers, so `size`'s
    set_defaults once silently turned every check into a 192-px run.
    """
    import argparse
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "stet_check.py"
    spec = importlib.util.spec_from_file_location("stet_check_defaults", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen = {}
    parse = argparse.ArgumentParser.parse_args

    def parse_only(self, argv=None, namespace=None):
        args = parse(self, argv, namespace)
        seen[argv[0]] = (args.width, args.particles, args.filaments)
        args.run = lambda args: None
        return args

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    for check in ("seeds", "needle", "size", "thin", "figure"):
        module.main([check])
    assert seen.pop("size") == (192, 24, 30)
    assert set(seen.values()) == {(96, 8, 10)}, seen
