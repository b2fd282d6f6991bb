"""``cryowedge reconstruct``: tilt series → tomogram.

Examples::

    cryowedge reconstruct tilt_series.mrc tomo.mrc --method fbp --filter hann
    cryowedge reconstruct needle.mrc needle_rec.mrc --angles needle.tlt --tilt-axis-angle 90
    cryowedge reconstruct tilt_series.mrc tomo_sirt.mrc --method sirt --n-iter 50 --positivity
    cryowedge reconstruct tilt_series.mrc tomo_tv.mrc --method tv --tv-lambda 5 --checkpoint-every 5

The options come from the method registry (:mod:`cryowedge.config.registry`): the
``--method`` choices are the registered methods, and every field of a method's config model
is an option, accepted only with that method (``--help`` groups them by method).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.cli._options import ConfigCommand, ConfigOption, changes_for, config_options
from cryowedge.config.models import ReconstructConfig
from cryowedge.config.registry import methods


def options() -> list[ConfigOption]:
    """The options of every registered method (``--method`` lists them with their summaries)."""
    specs = methods()
    opts = config_options({spec.name: spec.config for spec in specs})
    summaries = "; ".join(
        f"{spec.name}: {spec.summary}" if spec.summary else spec.name for spec in specs
    )
    default = ReconstructConfig.model_fields["method"].default
    return [
        dataclasses.replace(o, help=f"reconstruction method ({summaries})", default_text=default)
        if o.name == "method"
        else o
        for o in opts
    ]


def _reconstruct(
    tilt_series: Path = typer.Argument(..., help="MRC tilt series (n_tilts, y, x)"),
    output: Path = typer.Argument(..., help="output tomogram MRC (z, y, x)"),
    angles: Path | None = typer.Option(
        None, help=".tlt/.rawtlt/.mdoc \\[default: next to the stack]"
    ),
    config: Path | None = typer.Option(
        None, help="YAML file with the options of one method (method: ...)"
    ),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    resume: bool = typer.Option(
        False, help="continue an interrupted iterative run from its checkpoint"
    ),
    restart: bool = typer.Option(
        False, help="discard an earlier run's checkpoint (<output>.ckpt.pt) and start over"
    ),
    overwrite: bool = typer.Option(
        False, help="replace an existing output (the old file is kept as <name>~)"
    ),
    alignment: Path | None = typer.Option(
        None, help="alignment of the raw stack: IMOD .xf or AreTomo .aln (per-view rotation "
        "and shifts, applied in the projector: no extra interpolation)"
    ),
    preview: bool = typer.Option(
        False, help="also write <output>_preview.png (XY, XZ, YZ central slices)"
    ),
    defocus_file: Path | None = typer.Option(
        None, help="per-view defocus for --ctf-correction: IMOD .defocus (ctfplotter), "
        "CTFFIND4 output or AreTomo _CTF.txt (format read from the content; views checked "
        "against the stack before any work)"
    ),
    xtilt: Path | None = typer.Option(
        None, help="IMOD .xtilt file (tiltalign, one X-axis tilt per view): adds minus their "
        "mean to --x-axis-tilt, as IMOD's tilt XTILTFILE does (views checked before any work)"
    ),
    *,
    given: dict[str, Any],
) -> None:
    """Reconstruct a tomogram from a single-axis tilt series (methods: see --method)."""
    from cryowedge.workflows.checkpoint import RunInterrupted
    from cryowedge.workflows.reconstruct import reconstruct_file

    try:
        with user_errors():
            cfg = build_config(config, given)
            if not tilt_series.exists():
                raise FileNotFoundError(f"tilt series {tilt_series} does not exist.")
            with progress_bar(f"reconstruct ({cfg.method})") as progress:
                reconstruct_file(
                    tilt_series,
                    output,
                    cfg,
                    angles_path=angles,
                    pixel_size_angstrom=pixel_size,
                    overwrite=overwrite,
                    progress=progress,
                    resume=resume,
                    restart=restart,
                    config_path=config,
                    alignment_path=alignment,
                    preview=preview,
                    defocus_path=defocus_file,
                    xtilt_path=xtilt,
                )
    except RunInterrupted as stop:
        console.print(f"[bold yellow]{stop.message}[/]", soft_wrap=True)
        if stop.resumable:
            console.print(f"resume with: {resume_command()}", soft_wrap=True, markup=False)
        raise typer.Exit(code=130) from None
    except KeyboardInterrupt:
        console.print(f"[bold yellow]interrupted; {output} was not written.[/]", soft_wrap=True)
        raise typer.Exit(code=130) from None
    console.print(f"wrote {output}")


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that resumes this run: ``argv`` (default ``sys.argv``) with ``--resume``.

    ``--restart`` is dropped; the program is named ``cryowedge``.
    """
    import shlex
    import sys

    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--restart"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["cryowedge", *args])


def build_config(config: Path | None, given: dict[str, Any]) -> ReconstructConfig:
    """The resolved config: the YAML file (or the defaults), then the options given.

    Options that belong to another method than the chosen one are an error.
    """
    base = ReconstructConfig.from_yaml(config) if config else None
    method = given.get("method") or (
        base.method if base is not None else ReconstructConfig().method
    )
    changes = changes_for(options(), given, owner=method)
    return base.updated(**changes) if base is not None else ReconstructConfig(**changes)


reconstruct = ConfigCommand(_reconstruct, options, name="reconstruct")


def register(app: typer.Typer) -> None:
    app.command(name="reconstruct")(reconstruct)
