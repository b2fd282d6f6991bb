"""Run records: every run writes its resolved parameters and the package version."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from cryowedge._version import __version__
from cryowedge.io._atomic import write_text_atomic

#: ``progress(step, fraction)``: what a workflow reports (the CLI draws a bar or logs lines).
#: ``fraction`` is the whole command's, 0…1. Step names the CLI understands: ``"<name> k/n"``
#: for counted work (iterations, slabs; :func:`iteration_progress` makes them), whose mean
#: time per count gives the ETA from the first count on; ``reading``, ``writing``,
#: ``saving`` and ``done`` for file input/output, shown without an ETA. Not to be confused
#: with :class:`cryowedge.solvers.ProgressCallback`, a solver callback.
ProgressFn = Callable[[str, float], None]


def write_run_record(directory: str | Path, command: str, parameters: dict[str, Any],
                     outputs: dict[str, Any] | None = None, name: str = "run.yaml") -> Path:
    """Write ``run.yaml`` with the command, resolved parameters, outputs and versions."""
    import torch

    record = {
        "command": command,
        "cryowedge_version": __version__,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "parameters": parameters,
        "outputs": outputs or {},
    }
    path = Path(directory) / name
    write_text_atomic(path, yaml.safe_dump(record, sort_keys=False))
    return path


def report_progress(progress: ProgressFn | None, step: str, fraction: float) -> None:
    """Call ``progress`` if given."""
    if progress is not None:
        progress(step, fraction)


def iteration_progress(
    progress: ProgressFn | None,
    step: str,
    start: float,
    span: float,
    *,
    done: int = 0,
    total: int | None = None,
) -> Callable[[Any], None]:
    """A solver callback that maps iteration ``k`` onto ``progress`` fractions ``start…start+span``.

    It reports the step ``"<step> k/n"`` after every iteration (``k`` counts the whole run).
    ``done`` iterations were completed before this run (a resumed checkpoint) and ``total``
    is the whole run's count (default: the solver's ``n_iter`` plus ``done``).
    """

    def callback(info: Any) -> None:
        n = total if total is not None else done + info.n_iter
        k = done + info.iteration
        report_progress(progress, f"{step} {k}/{n}", start + span * k / n)

    return callback
