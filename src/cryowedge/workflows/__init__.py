"""File-level workflows: what the CLI commands do, callable from Python with the same options.

Each workflow reads and writes files, reports progress through an optional
``progress(step: str, fraction: float)`` callback, and writes ``run.yaml`` (resolved
options, package version, command line, time) into its output directory.
"""

from cryowedge.workflows.demo import run_demo
from cryowedge.workflows.evaluate import evaluate_files
from cryowedge.workflows.reconstruct import reconstruct_file
from cryowedge.workflows.simulate import simulate_to_files
from cryowedge.workflows.stet import stet_reconstruct_file, stet_simulate_files

__all__ = [
    "evaluate_files",
    "reconstruct_file",
    "run_demo",
    "simulate_to_files",
    "stet_reconstruct_file",
    "stet_simulate_files",
]
