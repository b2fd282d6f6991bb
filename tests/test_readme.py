"""The README's shell commands run as written (issue 9: the README must never drift again).

Every line of the ```bash blocks in README.md's "Use" section runs, in order, in one
temporary directory, exactly as written (through ``bash -c``). Only lines that end with the
marker ``(slow: not run by tests)`` (in a trailing comment) are left out, and only
``cryowedge bench`` lines may carry it: the benchmarks time the machine for minutes and are
checked by tests/test_bench_*.py instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SLOW_MARKER = "(slow: not run by tests)"  # at the end of a line's trailing comment


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def readme_use_commands() -> tuple[list[str], list[str]]:
    """``(commands to run, lines marked slow)`` from the ```bash blocks of the Use section."""
    section = _section(README.read_text(encoding="utf-8"), "Use")
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)
    assert blocks, "README.md's Use section has no ```bash block"
    run, slow = [], []
    for block in blocks:
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            marked = "#" in line and line.rstrip().endswith(SLOW_MARKER)
            (slow if marked else run).append(line)
    return run, slow


def test_only_benchmark_lines_are_marked_slow():
    run, slow = readme_use_commands()
    assert all(line.startswith("cryowedge bench ") for line in slow), slow
    names = " ".join(run)
    for command in ("cryowedge simulate", "cryowedge reconstruct", "cryowedge evaluate",
                    "cryowedge stet simulate", "cryowedge stet reconstruct"):
        assert command in names, f"the README's Use section no longer shows {command!r}"


def test_readme_use_commands_run_as_written(tmp_path):
    run, _ = readme_use_commands()
    env = dict(os.environ)
    # the console script installed next to this interpreter (pip install -e .)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("COLUMNS", "120")
    failures = []
    for line in run:
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            failures.append(f"rc {proc.returncode}: {line}\n    " + "\n    ".join(tail))
    if failures:
        pytest.fail("README commands that fail as written:\n" + "\n".join(failures))
    # the sequence produced what the README says it does
    for name in ("sim/fbp.mrc", "sim/sirt.mrc", "sim/tv.mrc", "sim/eval/metrics.md",
                 "sim/eval/fsc.png", "stet/cs_tv.mrc"):
        assert (tmp_path / name).is_file(), name
