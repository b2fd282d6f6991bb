"""`cryowedge bench iterative` at a tiny size: report format, timings, agreement with ASTRA."""

from __future__ import annotations

import re
import sys

import pytest
from typer.testing import CliRunner

from cryowedge.bench import bench_iterative
from cryowedge.cli import app

SMALL = {"size": 24, "n_tilts": 9, "n_iter": 5}


def _run(**kwargs):
    lines: list[str] = []
    result = bench_iterative(**SMALL, report=lines.append, **kwargs)
    return result, lines


def test_bench_iterative_against_astra():
    pytest.importorskip("astra")
    result, lines = _run(astra_slices=2)
    assert re.fullmatch(r"sirt_speedup_vs_astra: \d+\.\d", lines[-1]), lines[-1]
    for key in ("sirt_s", "sirt_s_per_slice", "astra_sirt_slices_s", "astra_sirt_s"):
        assert result[key] > 0, key
    assert result["sirt_speedup_vs_astra"] == pytest.approx(result["astra_sirt_s"] / result["sirt_s"])
    assert result["astra_slices"] == 2
    expected = result["astra_sirt_slices_s"] * SMALL["size"] / 2
    assert result["astra_sirt_s"] == pytest.approx(expected)
    assert any("extrapolated from 2 of 24 slices" in line for line in lines)
    # both solve the same problem (same normalisation, relaxation 1, ASTRA rows flipped to our z)
    assert result["correlation_with_astra"] > 0.9


def test_bench_iterative_without_astra(monkeypatch):
    monkeypatch.setitem(sys.modules, "astra", None)  # import astra now raises ImportError
    result, lines = _run()
    assert lines[-1] == "sirt_speedup_vs_astra: n/a"
    assert result["sirt_s"] > 0 and "astra_sirt_s" not in result


def test_bench_iterative_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_iter"):
        bench_iterative(size=8, n_tilts=3, n_iter=0, report=lambda _: None)


def test_cli_bench_iterative():
    args = ["bench", "iterative", "--size", "16", "--n-tilts", "5", "--n-iter", "3"]
    args += ["--astra-slices", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert re.fullmatch(r"sirt_speedup_vs_astra: (\d+\.\d|n/a)", last), last
    assert "cryowedge_sirt" in result.output


def test_cli_bench_iterative_bad_input():
    args = ["bench", "iterative", "--size", "8", "--n-iter", "0", "--no-astra"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
