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

ProgressCallback = Callable[[str, float], None]


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


def report(progress: ProgressCallback | None, step: str, fraction: float) -> None:
    """Call ``progress`` if given."""
    if progress is not None:
        progress(step, fraction)
