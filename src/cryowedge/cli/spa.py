"""``cryowedge spa``: single-particle reconstruction (model-based, KBWF basis, Toeplitz ADMM).

Examples::

    cryowedge spa simulate sim/ --box 32 --n-particles 500 --snr 1
    cryowedge spa reconstruct sim/particles.star -o rec/
    cryowedge spa refine sim/particles.star -o ref/

Skeleton: the commands are filled in by :mod:`cryowedge.workflows.spa` (docs/spa.md).
Other modules add their sub-commands (``spa orient``, ``spa cryogan``) with one line each in
:func:`register`.
"""

from __future__ import annotations

import typer

spa_app = typer.Typer(
    help="Single-particle reconstruction: simulate a particle set, reconstruct a map with "
    "half maps and FSC, refine the angles jointly with the map (docs/spa.md).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``spa`` group (and the sub-commands of other modules) to ``app``."""
    # other modules' sub-commands: one line each, e.g. ``spa_orient.register(spa_app)``
    app.add_typer(spa_app, name="spa")
