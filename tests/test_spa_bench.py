"""``cryowedge bench spa`` (thesis Table 4.1, peers, normal-equation solve) at tiny sizes.

No timing asserts: the tests check the structure, that the explicit times extrapolate linearly,
that the peers' projections match ours once their rotation convention (Rᵀ) is used, that the
autograd adjoint of a peer passes the dot-product test, and that every solver solved something.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.geometry.rotations import random_rotations
from cryowedge.spa.bench import (
    PEERS,
    _corr,
    _import_peer,
    _peer_adjoint,
    _test_particle,
    bench_spa_peers,
    bench_spa_solve,
    bench_spa_table,
    peer_forward,
)
from cryowedge.spa.projector import SpaProjector

INSTALLED = [name for name in PEERS if importlib.util.find_spec(name) is not None]


# A compiled extension built for another torch raises OSError on import: not "working".
WORKING = [name for name in INSTALLED if _import_peer(name)[0] is not None]


def test_table_structure_and_extrapolation() -> None:
    lines: list[str] = []
    out = bench_spa_table(12, (2, 4), explicit_max_p=2, fast_adjoint_op=False, report=lines.append)
    rows = {r["P"]: r for r in out["rows"]}
    assert not rows[2]["extrapolated"] and rows[4]["extrapolated"]
    for op in ("forward", "adjoint", "normal_explicit"):
        assert rows[4][op] == pytest.approx(2.0 * rows[2][op])
    for r in out["rows"]:
        assert r["kernel"] > 0 and r["normal_fast"] > 0 and r["speedup"] > 0
    assert out["speedup_p"] == 4 and out["speedup"] > 0  # closest to 500
    assert out["flatness"] >= 1.0
    assert lines[0].startswith("| P |") and len(lines) == 2 + 2 + 1
    assert "~" in lines[3] and "~" not in lines[2]


def test_table_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="projections"):
        bench_spa_table(8, (), report=None)
    with pytest.raises(ValueError, match="size"):
        bench_spa_table(0, (2,), report=None)


@pytest.mark.parametrize("name", WORKING)
def test_peer_convention_and_correlation(name: str) -> None:
    n = 16
    rot = random_rotations(6, np.random.default_rng(1))
    c, vol = _test_particle(n, 0)
    ours = SpaProjector(n, rot).forward(c)
    right = _corr(peer_forward(name, n, rot)(vol), ours)
    wrong = _corr(peer_forward(name, n, rot, transpose=False)(vol), ours)
    assert right > 0.995
    assert wrong < right - 0.005


@pytest.mark.parametrize("name", WORKING)
def test_peer_adjoint(name: str) -> None:
    """Dot-product test of the adjoint used for the peers' CG (autograd or ASPIRE's own)."""
    n = 12
    rot = random_rotations(4, np.random.default_rng(2))
    fwd = peer_forward(name, n, rot)
    adj = _peer_adjoint(name, n, rot, fwd)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((n, n, n), generator=gen)
    y = torch.randn((4, n, n), generator=gen)
    with torch.no_grad():
        lhs = float((fwd(x).double() * y.double()).sum())
    rhs = float((x.double() * adj(y).double()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-4)


def test_peers_report_all_or_skip() -> None:
    lines: list[str] = []
    out = bench_spa_peers(
        12, 3, ours={"forward": 1.0, "adjoint": 1.0}, n_check=4, report=lines.append
    )
    for name in PEERS:
        assert name in out
        if name in WORKING:
            assert out[name]["corr"] > 0.95 and out[name]["forward"] > 0  # 12³: coarse
        else:
            assert "error" in out[name]
    assert len(lines) == 3 + len(PEERS)


def test_solve_every_solver_recovers_the_particle() -> None:
    lines: list[str] = []
    out = bench_spa_solve(
        12,
        30,
        n_iter=5,
        explicit_seconds={"adjoint": 1.0, "normal_explicit": 2.0},
        report=lines.append,
    )
    assert out["ours"]["corr"] > 0.8 and out["ours"]["seconds"] > 0
    for name in WORKING:
        assert out[name]["corr"] > 0.8
    assert any("estimated" in line for line in lines)


def test_cli_quick_without_peers() -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "spa", "--no-peers", "--no-fast-adjoint", "--projections", "2,3", "--size", "10"],
    )
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("toeplitz_speedup: ") and float(last.split(":")[1]) > 0


def test_cli_bad_projections() -> None:
    result = CliRunner().invoke(app, ["bench", "spa", "--projections", "5,x", "--no-peers"])
    assert result.exit_code == 2
    assert "--projections" in result.output


def test_importing_a_peer_leaves_logging_alone(caplog: pytest.LogCaptureFixture) -> None:
    """ASPIRE's import-time fileConfig would disable the cryowedge loggers (caplog sees nothing)."""
    import logging

    for name in WORKING:
        _import_peer(name)
    log = logging.getLogger("cryowedge.spa.bench")
    assert not log.disabled
    with caplog.at_level(logging.INFO, logger="cryowedge"):
        log.info("still heard")
    assert "still heard" in caplog.text
