"""The ``cryowedge`` command line: thin wrappers over :mod:`cryowedge.workflows`.

One module per command; heavy imports happen inside the commands so ``--help`` is fast.
"""

from __future__ import annotations

import typer

from cryowedge._version import __version__
from cryowedge.cli import batch as _batch_cli
from cryowedge.cli import bench, crm, demo, dewedge, evaluate, reconstruct, simulate, spa, stet
from cryowedge.cli._common import setup_logging

app = typer.Typer(
    name="cryowedge",
    help="Missing-wedge-aware reconstruction for cryo-electron tomography.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cryowedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="more log output (-vv for debug)"
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version"
    ),
) -> None:
    setup_logging(verbose)


for module in (simulate, reconstruct, evaluate, dewedge, crm, spa, bench, demo, stet,
               _batch_cli):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
