"""``cryowedge stet``: compressed-sensing STEM tomography (random-beam STET, thesis ch. 3).

Examples::

    cryowedge stet simulate stet/ --dose-fraction 0.3 --snr 10
    cryowedge stet reconstruct stet/tilt_series.mrc stet/cs_tv.mrc --tv-lambda 1 --thickness 64
    cryowedge stet reconstruct stet/tilt_series.mrc stet/inpaint.mrc --method inpaint-tv
    cryowedge stet reconstruct data.mrc rec.mrc --mask scan_pattern.mrc --config stet.yaml

The scan mask of ``<name>.mrc`` is ``<name>_mask.mrc`` next to it (1 = scanned); pass
``--mask`` to use another file. ``--config`` takes a YAML file with the fields of the
command's section, or a whole ``StetConfig`` with ``simulate:`` and ``reconstruct:``. The
options are generated from :class:`~cryowedge.config.StetSimulateConfig` and
:class:`~cryowedge.config.StetReconstructConfig`; options given override the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.cli._options import ConfigCommand, ConfigOption, changes_for, config_options
from cryowedge.config.models import StetConfig, StetReconstructConfig, StetSimulateConfig

stet_app = typer.Typer(
    help="Compressed-sensing STEM tomography: random-beam scans (RB-STET) and CS-TV "
    "reconstruction.",
    no_args_is_help=True,
)


def simulate_options() -> list[ConfigOption]:
    return config_options(StetSimulateConfig)


def reconstruct_options() -> list[ConfigOption]:
    return config_options(StetReconstructConfig)


def _simulate(
    output_dir: Path = typer.Argument(
        ...,
        help="directory for ground_truth.mrc, tilt_series.mrc/.tlt, tilt_series_mask.mrc, run.yaml",
    ),
    config: Path | None = typer.Option(
        None, help="YAML with StetSimulateConfig fields (or a StetConfig)"
    ),
    overwrite: bool = typer.Option(
        False, help="replace existing files (the old ones are kept as <name>~)"
    ),
    *,
    given: dict[str, Any],
) -> None:
    """Simulate a random-beam STET series: projections, noise, a random scan mask per tilt."""
    from cryowedge.workflows.stet import stet_simulate_files

    with user_errors():
        base = StetConfig.section_from_yaml(config, "simulate") if config else StetSimulateConfig()
        cfg = base.updated(**changes_for(simulate_options(), given))
        with progress_bar("stet simulate") as progress:
            files = stet_simulate_files(cfg, output_dir, progress=progress,
                                        overwrite=overwrite, config_path=config)
    console.print(f"wrote {len(files)} files to {output_dir} (scan mask: {files['mask'].name})")


def _reconstruct(
    tilt_series: Path = typer.Argument(
        ..., help="MRC tilt series (n_tilts, y, x), 0 where not scanned"
    ),
    output: Path = typer.Argument(..., help="output tomogram MRC (z, y, x)"),
    mask: Path | None = typer.Option(
        None, help="0/1 scan mask MRC \\[default: <name>_mask.mrc next to the data]"
    ),
    angles: Path | None = typer.Option(
        None, help=".tlt/.rawtlt/.mdoc \\[default: next to the stack]"
    ),
    config: Path | None = typer.Option(
        None, help="YAML with StetReconstructConfig fields (or a StetConfig)"
    ),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    overwrite: bool = typer.Option(
        False, help="replace an existing output (the old file is kept as <name>~)"
    ),
    *,
    given: dict[str, Any],
) -> None:
    """Reconstruct a tomogram from randomly undersampled STET data and its scan mask."""
    from cryowedge.workflows.stet import stet_reconstruct_file

    with user_errors():
        base = (
            StetConfig.section_from_yaml(config, "reconstruct")
            if config
            else StetReconstructConfig()
        )
        cfg = base.updated(**changes_for(reconstruct_options(), given))
        with progress_bar(f"stet reconstruct ({cfg.method})") as progress:
            stet_reconstruct_file(
                tilt_series,
                output,
                cfg,
                mask_path=mask,
                angles_path=angles,
                pixel_size_angstrom=pixel_size,
                overwrite=overwrite,
                progress=progress,
                config_path=config,
            )
    console.print(f"wrote {output}")


simulate = ConfigCommand(_simulate, simulate_options, name="simulate")
reconstruct = ConfigCommand(_reconstruct, reconstruct_options, name="reconstruct")
stet_app.command("simulate")(simulate)
stet_app.command("reconstruct")(reconstruct)


def register(app: typer.Typer) -> None:
    app.add_typer(stet_app, name="stet")
