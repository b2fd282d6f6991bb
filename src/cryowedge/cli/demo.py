"""``cryowedge demo``: a crowded cell, a ±60° noisy tilt series, FBP/WBP, metrics and figures.

Example::

    cryowedge demo            # writes ./cryowedge_demo/
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, progress_bar, user_errors


def demo(
    out: Path = typer.Option(Path("cryowedge_demo"), help="output directory"),
) -> None:
    """Simulate, reconstruct and evaluate a small tomogram (under 3 minutes on 2 CPU cores)."""
    from cryowedge.metrics import metrics_table_markdown
    from cryowedge.workflows.demo import run_demo
    from cryowedge.workflows.evaluate import DEFAULT_NORMALIZE

    with user_errors():
        with progress_bar("demo") as progress:
            result = run_demo(out, progress=progress)
    console.print(metrics_table_markdown(result["metrics"], normalize=DEFAULT_NORMALIZE))
    console.print(f"wrote {len(result['files'])} files to {out}/ in {result['seconds']:.1f} s "
                  "(orthoslices.png, fsc.png, metrics.md, *.mrc)")


def register(app: typer.Typer) -> None:
    app.command(help=demo.__doc__)(demo)
