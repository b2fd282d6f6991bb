"""``cryowedge reconstruct``: tilt series → tomogram.

Examples::

    cryowedge reconstruct tilt_series.mrc tomo.mrc --method fbp --filter hann
    cryowedge reconstruct needle.mrc needle_rec.mrc --angles needle.tlt --tilt-axis-angle 90
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.config.models import ReconstructConfig

_D = ReconstructConfig()


def reconstruct(
    tilt_series: Path = typer.Argument(..., help="MRC tilt series (n_tilts, y, x)"),
    output: Path = typer.Argument(..., help="output tomogram MRC (z, y, x)"),
    angles: Path | None = typer.Option(None, help=".tlt/.rawtlt/.mdoc [default: next to the stack]"),
    config: Path | None = typer.Option(None, help="YAML file with ReconstructConfig fields"),
    method: str | None = typer.Option(None, help=f"fbp | wbp [default: {_D.method}]"),
    filter_name: str | None = typer.Option(None, "--filter", help=f"ram-lak|shepp-logan|cosine|hamming|hann|sirt|none [default: {_D.filter_name}]"),
    cutoff: float | None = typer.Option(None, help=f"window cutoff, fraction of Nyquist [default: {_D.cutoff}]"),
    sirt_iterations: int | None = typer.Option(None, help=f"iterations mimicked by --filter sirt [default: {_D.sirt_iterations}]"),
    radial_cutoff: float | None = typer.Option(None, help="IMOD-style radial low-pass cutoff, cycles/px"),
    radial_falloff: float | None = typer.Option(None, help=f"radial Gaussian fall-off, cycles/px [default: {_D.radial_falloff}]"),
    padding: str | None = typer.Option(None, help=f"edge | zero [default: {_D.padding}]"),
    thickness: int | None = typer.Option(None, help="output z size in voxels [default: x size]"),
    tilt_axis_angle: float | None = typer.Option(None, help="in-plane tilt-axis angle, degrees [default: from mdoc, else 0]"),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    device: str | None = typer.Option(None, help=f"auto | cpu | cuda [default: {_D.device}]"),
    overwrite: bool = typer.Option(True, help="replace an existing output"),
) -> None:
    """Reconstruct a tomogram (FBP / WBP) from an aligned or raw single-axis tilt series."""
    from cryowedge.workflows.reconstruct import reconstruct_file

    with user_errors():
        base = ReconstructConfig.from_yaml(config) if config else ReconstructConfig()
        cfg = base.updated(method=method, filter_name=filter_name, cutoff=cutoff, sirt_iterations=sirt_iterations,
                           radial_cutoff=radial_cutoff, radial_falloff=radial_falloff, padding=padding,
                           thickness=thickness, tilt_axis_angle_deg=tilt_axis_angle, device=device)
        if not tilt_series.exists():
            raise FileNotFoundError(f"tilt series {tilt_series} does not exist.")
        with progress_bar(f"reconstruct ({cfg.method})") as progress:
            reconstruct_file(tilt_series, output, cfg, angles_path=angles, pixel_size_angstrom=pixel_size,
                             overwrite=overwrite, progress=progress)
    console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command(help=reconstruct.__doc__)(reconstruct)
