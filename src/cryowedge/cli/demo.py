"""``cryowedge demo``: a crowded cell, a ±60° noisy tilt series, FBP/WBP, metrics and figures.

Example::

    cryowedge demo            # writes ./cryowedge_demo/
    cryowedge demo --config demo.yaml --out my_demo

The reconstructions are the ``demo`` presets of the registered methods
(:mod:`cryowedge.config.registry`), or the ``methods:`` of ``--config``; then a small dewedge
panel (a tiny self-supervised U-Net fitted on the even/odd halves, about 15 s; ``dewedge:``
of ``--config`` sets it, ``dewedge: null`` skips it), and a CRM panel (CRM vs AVG on a tiny 2D
problem, seconds; ``crm: null`` skips it), and an INR panel (a small coordinate network
fitted to the central rows, seconds; ``inr: null`` skips it).
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, progress_bar, user_errors


def demo(
    out: Path = typer.Option(Path("cryowedge_demo"), help="output directory"),
    config: Path | None = typer.Option(
        None,
        help="YAML with DemoConfig fields: simulate: {...}, methods: {name: {method: ..., ...}} "
        "\\[default: the registered methods' demo presets]",
    ),
    overwrite: bool = typer.Option(
        False, help="replace the files of an earlier demo (the old ones are kept as <name>~)"
    ),
) -> None:
    """Simulate, reconstruct and evaluate a small tomogram (under 3 minutes on 2 CPU cores)."""
    from cryowedge.config.models import DemoConfig
    from cryowedge.metrics import metrics_table_markdown
    from cryowedge.workflows.demo import run_demo
    from cryowedge.workflows.evaluate import DEFAULT_NORMALIZE

    with user_errors():
        cfg = DemoConfig.from_yaml(config) if config else DemoConfig()
        with progress_bar("demo") as progress:
            result = run_demo(out, cfg, progress=progress, overwrite=overwrite,
                              config_path=config)
    console.print(metrics_table_markdown(result["metrics"], normalize=DEFAULT_NORMALIZE))
    if result.get("crm_metrics"):
        console.print("CRM panel (crm_demo.png, 2D, inside the support):")
        console.print(metrics_table_markdown(result["crm_metrics"]))
    if result.get("inr_metrics"):
        console.print("INR panel (inr_demo.png, the central rows):")
        console.print(metrics_table_markdown(result["inr_metrics"], normalize="affine"))
    console.print(f"wrote {len(result['files'])} files to {out}/ in {result['seconds']:.1f} s "
                  "(orthoslices.png, fsc.png, metrics.md, *.mrc)")


def register(app: typer.Typer) -> None:
    app.command(help=demo.__doc__)(demo)
