"""`cryowedge bench scale` at tiny sizes: table format, last line, streamed == in-memory."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from cryowedge.bench import parse_scale_size
from cryowedge.cli import app


def test_bench_scale_tiny_run(tmp_path):
    args = [
        "bench",
        "scale",
        "--sizes",
        "24",
        "--methods",
        "fbp",
        "--n-tilts",
        "9",
        "--streamed-shape",
        "8x64x24",
        "--slab-rows",
        "16",
        "--check-rows",
        "10",
        "--workdir",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert re.fullmatch(r"streamed_peak_rss_gb: \d+\.\d\d", lines[-1]), lines[-1]
    table = [line for line in lines if line.startswith(("default", "streamed y="))]
    assert [line.split()[:2] for line in table[:1]] == [["default", "24"]]
    assert table[0].endswith("in memory")  # a 24³ problem fits: not streamed
    assert [line.split()[:3] for line in table[1:]] == [
        ["streamed", "y=64", "(RLIMIT_AS"],
        ["streamed", "y=16", "(RLIMIT_AS"],
    ]
    for line in table:  # seconds and peak RSS are positive numbers
        seconds, rss = (float(v) for v in re.search(r" 9 +(\d+\.\d+) +(\d+\.\d+)", line).groups())
        assert seconds >= 0 and 0.05 < rss < 20
    assert "slabs of 16 rows" in table[1] and "slabs of 16 rows" in table[2]
    diff = float(re.search(r"max \|diff\| / max \|ref\| = (\S+)", result.output).group(1))
    assert diff < 1e-5  # the streamed rows are the in-memory FBP's
    full_rss = re.search(r" 9 +\d+\.\d+ +(\d+\.\d+)", table[1]).group(1)
    assert lines[-1].split()[-1] == full_rss  # the last line is the full-height streamed case
    assert list(tmp_path.iterdir()) == []  # streamed files removed


def test_scale_sizes_and_bad_options():
    assert parse_scale_size("256") == (256, 256, 256)
    assert parse_scale_size("K3") == (300, 1023, 1440)
    assert parse_scale_size("16x64x24") == (16, 64, 24)
    for bad in ("0", "12x3", "big"):
        with pytest.raises(ValueError, match="must be N"):
            parse_scale_size(bad)
    result = CliRunner().invoke(app, ["bench", "scale", "--sizes", "1x2", "--streamed-shape", ""])
    assert result.exit_code == 2 and "must be N" in result.output
    result = CliRunner().invoke(app, ["bench", "scale", "--methods", "tv", "--sizes", ""])
    assert result.exit_code == 2 and "methods are fbp and sirt" in result.output
