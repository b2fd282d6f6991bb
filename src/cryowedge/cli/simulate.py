"""``cryowedge simulate``: make a phantom and its noisy tilt series.

Examples::

    cryowedge simulate out/ --phantom cell --shape 64 128 128 --tilt-range -60 60 --snr 0.5
    cryowedge simulate out/ --dose 50 --defocus -30000
    cryowedge simulate out/ --config sim.yaml

Every field of :class:`~cryowedge.config.SimulateConfig` is an option (generated from the
model); options given override the ``--config`` file. ``--dose`` replaces the default
``--snr`` (Poisson instead of Gaussian noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.cli._options import ConfigCommand, ConfigOption, changes_for, config_options
from cryowedge.config.models import SimulateConfig


def options() -> list[ConfigOption]:
    return config_options(SimulateConfig)


def _simulate(
    output_dir: Path = typer.Argument(
        ..., help="directory for ground_truth.mrc, tilt_series.mrc/.tlt, even/odd"
    ),
    config: Path | None = typer.Option(None, help="YAML file with SimulateConfig fields"),
    overwrite: bool = typer.Option(
        False, help="replace existing files (the old ones are kept as <name>~)"
    ),
    *,
    given: dict[str, Any],
) -> None:
    """Simulate a phantom and its tilt series (MRC + IMOD .tlt, voxel size set)."""
    from cryowedge.workflows.simulate import simulate_to_files

    with user_errors():
        base = SimulateConfig.from_yaml(config) if config else SimulateConfig()
        cfg = base.updated(**changes_for(options(), given))
        with progress_bar("simulate") as progress:
            files = simulate_to_files(cfg, output_dir, progress=progress, overwrite=overwrite,
                                      config_path=config)
    console.print(f"wrote {len(files)} files to {output_dir}")


simulate = ConfigCommand(_simulate, options, name="simulate")


def register(app: typer.Typer) -> None:
    app.command(name="simulate")(simulate)
