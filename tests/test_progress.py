"""CLI progress: an ETA from the first iteration, none while writing, log lines off a terminal;
bench phases; the CLI console does not wrap tables when it is not a terminal."""

from __future__ import annotations

import io
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cryowedge.cli import app
from cryowedge.cli._common import console as cli_console
from cryowedge.cli._common import progress_bar
from cryowedge.cli._progress import ProgressReporter, format_duration
from cryowedge.workflows._record import iteration_progress, report_progress


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _seconds(text: str) -> int:
    """``"4:50"`` or ``"1:02:03"`` back to seconds."""
    assert re.fullmatch(r"\d+(:\d\d){1,2}", text), text
    total = 0
    for part in text.split(":"):
        total = 60 * total + int(part)
    return total


def _run_like_reconstruct(
    progress,
    clock: FakeClock,
    *,
    n_iter: int = 30,
    done: int = 0,
    seconds_per_iter: float = 10.0,
    stop_after: int | None = None,
) -> None:
    """The calls ``reconstruct`` makes: reading, the method, its iterations, writing, done."""
    report_progress(progress, "reading", 0.0)
    clock.advance(2.0)
    report_progress(progress, "tv", 0.2)
    callback = iteration_progress(progress, "tv", 0.2, 0.7, done=done, total=n_iter)
    last = n_iter if stop_after is None else done + stop_after
    for k in range(done + 1, last + 1):
        clock.advance(seconds_per_iter)
        callback(SimpleNamespace(iteration=k - done, n_iter=n_iter - done))
    if stop_after is None:
        report_progress(progress, "writing", 0.9)
        clock.advance(5.0)
        report_progress(progress, "done", 1.0)


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(93.4) == "1:33"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(-5) == "0:00"


def test_eta_from_the_first_iteration_and_none_while_writing():
    clock = FakeClock()
    reporter = ProgressReporter(
        "reconstruct (tv)", console=Console(file=io.StringIO()), clock=clock, live=False
    )
    report_progress(reporter, "reading", 0.0)
    assert reporter.eta_text() == ""  # reading: no ETA
    clock.advance(2.0)
    report_progress(reporter, "tv", 0.2)
    assert reporter.eta_text() == "…"  # nothing measured yet
    callback = iteration_progress(reporter, "tv", 0.2, 0.7, total=30)
    clock.advance(10.0)
    callback(SimpleNamespace(iteration=1, n_iter=30))
    # one iteration took 10 s; 29 are left: 290 s (rich's column showed -:--:-- here)
    assert _seconds(reporter.eta_text()) == 290
    clock.advance(4.0)  # counts down between updates
    assert _seconds(reporter.eta_text()) == 286
    for k in range(2, 13):
        clock.advance(10.0)
        callback(SimpleNamespace(iteration=k, n_iter=30))
    assert _seconds(reporter.eta_text()) == 186  # mean 124 s / 12 iterations, 18 left
    report_progress(reporter, "writing", 0.9)
    clock.advance(30.0)
    assert reporter.eta_text() == "" and reporter.eta_seconds() is None
    assert "ETA" not in reporter.status_line()
    assert reporter.status_line().startswith("reconstruct (tv): writing, 90 %, elapsed")


def test_eta_after_resume_counts_only_this_run():
    clock = FakeClock()
    reporter = ProgressReporter(
        "reconstruct (tv)", console=Console(file=io.StringIO()), clock=clock, live=False
    )
    _run_like_reconstruct(reporter, clock, n_iter=126, done=100, stop_after=1)
    assert reporter.step == "tv 101/126"
    assert _seconds(reporter.eta_text()) == 25 * 10


def test_eta_of_uncounted_steps_uses_the_fraction_done():
    clock = FakeClock()
    reporter = ProgressReporter(
        "demo", console=Console(file=io.StringIO()), clock=clock, live=False
    )
    reporter("simulating cell + tilt series", 0.0)
    clock.advance(20.0)
    reporter("reconstructing (fbp)", 0.2)
    assert _seconds(reporter.eta_text()) == 80  # 20 s for a fifth: 80 s for the rest


def test_live_bar_shows_the_eta_and_no_eta_while_writing():
    clock = FakeClock()
    out = io.StringIO()
    target = Console(file=out, force_terminal=True, width=120)
    with progress_bar("reconstruct (tv)", target=target, clock=clock) as progress:
        assert progress.live
        _run_like_reconstruct(progress, clock, n_iter=30, stop_after=1)
        column = progress._bar.columns[-1]
        task = progress._bar.tasks[0]
        assert column.render(task).plain == "ETA 4:50"
        report_progress(progress, "writing", 0.9)
        clock.advance(100.0)
        assert column.render(task).plain == ""
    assert "41952796940" not in out.getvalue()


def test_not_a_terminal_logs_lines_rate_limited():
    clock = FakeClock()
    out = io.StringIO()
    target = Console(file=out, force_terminal=False, width=80)
    with progress_bar("reconstruct (tv)", target=target, clock=clock, log_every=30.0) as progress:
        assert not progress.live
        _run_like_reconstruct(progress, clock, n_iter=30, seconds_per_iter=10.0)
    lines = out.getvalue().splitlines()
    # phases at once (reading, tv, the first iteration, writing, done) and every 30 s in between
    assert lines[0].startswith("reconstruct (tv): reading, 0 %, elapsed 0:00")
    iteration_lines = [line for line in lines if re.match(r"reconstruct \(tv\): tv \d+/30", line)]
    assert len(iteration_lines) == 10  # 300 s of iterations, one line per 30 s
    assert iteration_lines[0] == "reconstruct (tv): tv 1/30, 22 %, elapsed 0:12, ETA 4:50"
    assert iteration_lines[1].startswith("reconstruct (tv): tv 4/30, 29 %, elapsed 0:42, ETA 4:")
    assert re.fullmatch(r"reconstruct \(tv\): writing, 90 %, elapsed 5:02", lines[-2])
    assert lines[-1] == "reconstruct (tv): done, 100 %, elapsed 5:07"
    assert all("\x1b" not in line for line in lines)  # no escape codes in a log file


def test_log_every_must_not_be_negative():
    with pytest.raises(ValueError, match="log_every"):
        ProgressReporter("x", console=Console(file=io.StringIO()), log_every=-1)


# ----------------------------------------------------------------------------- bench phases


def test_bench_iterative_reports_phases_before_the_figures(monkeypatch):
    from cryowedge.bench import PHASE_PREFIX, bench_iterative

    monkeypatch.setitem(sys.modules, "astra", None)  # no ASTRA: the run is quicker
    lines: list[str] = []
    bench_iterative(size=12, n_tilts=5, n_iter=2, report=lines.append)
    phases = [i for i, line in enumerate(lines) if line.startswith(PHASE_PREFIX)]
    assert lines[-1] == "sirt_speedup_vs_astra: n/a"
    assert lines[0].startswith("volume 12^3")  # what runs, before anything runs
    texts = [lines[i] for i in phases]
    assert any("projector" in t for t in texts) and any("SIRT" in t for t in texts), texts
    setup = next(i for i, line in enumerate(lines) if line.startswith("projector setup"))
    assert min(phases) < setup  # the phase is announced before its figure


def test_bench_projector_reports_phases_first(monkeypatch):
    from cryowedge.bench import PHASE_PREFIX, bench_projector

    monkeypatch.setitem(sys.modules, "astra", None)
    lines: list[str] = []
    bench_projector(12, 5, repeats=1, report=lines.append)
    assert lines[-1] == "fbp_speedup_vs_astra: n/a"
    assert lines[0].startswith("volume 12^3") and lines[1].startswith(PHASE_PREFIX)
    fbp_phase = next(
        i for i, line in enumerate(lines) if line.startswith(PHASE_PREFIX) and "FBP" in line
    )
    assert fbp_phase < next(i for i, line in enumerate(lines) if line.startswith("cryowedge_fbp"))


# ----------------------------------------------------------------------------- wide tables


def test_cli_console_does_not_wrap_off_a_terminal(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # an explicit COLUMNS is obeyed
    monkeypatch.setattr(cli_console, "_width", None)  # (the console read it when made)
    row = "| " + " | ".join(f"method_{i:02d} {i:.4f}" for i in range(9)) + " |"
    assert len(row) > 150
    out = io.StringIO()
    monkeypatch.setattr(cli_console, "_file", out)
    cli_console.print(row)
    assert out.getvalue() == row + "\n"


def test_evaluate_table_rows_stay_on_one_line(tmp_path, monkeypatch):
    from cryowedge.io.mrc import write_mrc

    monkeypatch.delenv("COLUMNS", raising=False)  # an explicit COLUMNS is obeyed
    monkeypatch.setattr(cli_console, "_width", None)  # (the console read it when made)
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 16, 16)).astype(np.float32)
    write_mrc(tmp_path / "reference.mrc", ref)
    name = "a_reconstruction_with_a_long_descriptive_name_" * 2 + "x"
    write_mrc(
        tmp_path / f"{name}.mrc", ref + 0.5 * rng.standard_normal(ref.shape).astype(np.float32)
    )
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / f"{name}.mrc"),
            "--reference",
            str(tmp_path / "reference.mrc"),
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if name in line]
    assert rows and all(line.startswith("|") and line.rstrip().endswith("|") for line in rows), rows
    assert max(len(line) for line in rows) > 100  # the row is long, and was not wrapped at 80


# ----------------------------------------------------------------------------- errors speak CLI


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_truncated_stack_error_names_what_a_cli_user_can_do(tmp_path):
    from cryowedge.io.mrc import write_mrc
    from cryowedge.io.tilt_files import write_tilt_angles

    path = write_mrc(tmp_path / "cut.mrc", np.ones((4, 16, 16), np.float32), image_stack=True)
    path.write_bytes(path.read_bytes()[:-100])
    write_tilt_angles(tmp_path / "cut.tlt", [-30.0, -10.0, 10.0, 30.0])
    result = CliRunner().invoke(app, ["reconstruct", str(path), str(tmp_path / "out.mrc")])
    out = _flat(result.output)
    assert result.exit_code == 2 and "Traceback" not in out, out
    assert "truncated" in out and "copy or write it again" in out, out
    # the volume reader (evaluate) says the same, and not to try permissive=True
    ref = write_mrc(tmp_path / "ref.mrc", np.ones((4, 16, 16), np.float32))
    result = CliRunner().invoke(
        app, ["evaluate", str(ref), "--reference", str(path), "--out", str(tmp_path / "ev")]
    )
    out = _flat(result.output)
    assert result.exit_code == 2 and "copy or write it again" in out, out
    assert "permissive=True does not help" in out


def test_non_standard_header_error_names_a_command(tmp_path):
    from cryowedge.io.mrc import write_mrc

    ref = write_mrc(tmp_path / "ref.mrc", np.ones((4, 16, 16), np.float32))
    raw = bytearray(ref.read_bytes())
    raw[208:212] = b"XXXX"  # no 'MAP ' id
    odd = tmp_path / "odd.mrc"
    odd.write_bytes(bytes(raw))
    result = CliRunner().invoke(
        app, ["evaluate", str(ref), "--reference", str(odd), "--out", str(tmp_path / "ev")]
    )
    out = _flat(result.output)
    assert result.exit_code == 2, out
    assert f"mrcfile-validate {odd}" in out and "newstack" in out, out
    # the Python route comes second, for library users
    assert out.index("mrcfile-validate") < out.index("From Python: read_mrc(path, permissive=True)")


def test_error_messages_are_not_read_as_markup(capsys):
    import typer

    from cryowedge.cli._common import fail

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_console, "_file", out)
        exit_ = fail("cannot read '/data/[run1]/a.mrc' [/x]")
    assert isinstance(exit_, typer.Exit)
    assert "'/data/[run1]/a.mrc' [/x]" in out.getvalue()


def test_solver_progress_callback_has_an_eta_after_one_iteration():
    from rich.progress import Progress

    from cryowedge.solvers import ProgressCallback
    from cryowedge.solvers.callbacks import _eta_column

    clock = FakeClock()
    progress = Progress(
        _eta_column(), console=Console(file=io.StringIO()), get_time=clock, auto_refresh=False
    )
    cb = ProgressCallback("SIRT", progress=progress)
    info = SimpleNamespace(iteration=0, n_iter=30, residual_norm=1.0, objective=float("nan"))
    cb(info)  # the task starts now
    column, task = progress.columns[0], progress.tasks[0]
    assert column.render(task).plain == "ETA …"
    clock.advance(10.0)
    cb(SimpleNamespace(**{**vars(info), "iteration": 1}))
    assert column.render(task).plain == "ETA 4:50"  # 10 s per iteration, 29 left
