"""``cryowedge reconstruct``: tilt series → tomogram.

Examples::

    cryowedge reconstruct tilt_series.mrc tomo.mrc --method fbp --filter hann
    cryowedge reconstruct needle.mrc needle_rec.mrc --angles needle.tlt --tilt-axis-angle 90
    cryowedge reconstruct tilt_series.mrc tomo_sirt.mrc --method sirt --n-iter 50 --positivity
    cryowedge reconstruct tilt_series.mrc tomo_tv.mrc --method tv --tv-lambda 5 --checkpoint-every 5
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.config.models import DEFAULT_ITERATIONS, DEFAULT_RELAXATION, ReconstructConfig

_D = ReconstructConfig()


def reconstruct(
    tilt_series: Path = typer.Argument(..., help="MRC tilt series (n_tilts, y, x)"),
    output: Path = typer.Argument(..., help="output tomogram MRC (z, y, x)"),
    angles: Path | None = typer.Option(None, help=".tlt/.rawtlt/.mdoc \\[default: next to the stack]"),
    config: Path | None = typer.Option(None, help="YAML file with ReconstructConfig fields"),
    method: str | None = typer.Option(None, help=f"fbp | wbp | sirt | sart | art | cgls | tv \\[default: {_D.method}]"),
    filter_name: str | None = typer.Option(None, "--filter", help=f"ram-lak|shepp-logan|cosine|hamming|hann|sirt|none \\[default: {_D.filter_name}]"),
    cutoff: float | None = typer.Option(None, help=f"window cutoff, fraction of Nyquist \\[default: {_D.cutoff}]"),
    sirt_iterations: int | None = typer.Option(None, help=f"iterations mimicked by --filter sirt \\[default: {_D.sirt_iterations}]"),
    radial_cutoff: float | None = typer.Option(None, help="IMOD-style radial low-pass cutoff, cycles/px"),
    radial_falloff: float | None = typer.Option(None, help=f"radial Gaussian fall-off, cycles/px \\[default: {_D.radial_falloff}]"),
    padding: str | None = typer.Option(None, help=f"edge | zero \\[default: {_D.padding}]"),
    thickness: int | None = typer.Option(None, help="output z size in voxels \\[default: x size]"),
    tilt_axis_angle: float | None = typer.Option(None, help="in-plane tilt-axis angle, degrees \\[default: from mdoc, else 0]"),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    device: str | None = typer.Option(None, help=f"auto | cpu | cuda \\[default: {_D.device}]"),
    n_iter: int | None = typer.Option(None, help=f"iterations, iterative methods \\[default: {DEFAULT_ITERATIONS}]"),
    relaxation: float | None = typer.Option(None, help=f"relaxation in (0, 2) \\[default: {DEFAULT_RELAXATION}]"),
    positivity: bool | None = typer.Option(None, "--positivity/--no-positivity", help=f"constrain the tomogram to >= 0 \\[default: {_D.positivity}]"),
    tv_lambda: float | None = typer.Option(None, help=f"tv: TV weight λ on the data normalised to unit std \\[default: {_D.tv_lambda}]"),
    regularizer: str | None = typer.Option(None, help=f"tv: tv | tv-aniso | l1 \\[default: {_D.regularizer}]"),
    rho: float | None = typer.Option(None, help="tv: initial ADMM penalty \\[default: 10 x lambda]"),
    cg_iter: int | None = typer.Option(None, help=f"tv: inner CG iterations \\[default: {_D.cg_iter}]"),
    tol: float | None = typer.Option(None, help="stop when the relative change of the tomogram falls below this"),
    order: str | None = typer.Option(None, help=f"art/sart: random | sequential \\[default: {_D.order}]"),
    checkpoint_every: int | None = typer.Option(None, help="iterative: save a checkpoint every N iterations"),
    resume: bool = typer.Option(False, help="continue an interrupted iterative run from its checkpoint"),
    overwrite: bool = typer.Option(True, help="replace an existing output"),
) -> None:
    """Reconstruct a tomogram (FBP, WBP, SIRT, SART, ART, CGLS or TV-ADMM) from a single-axis tilt series."""
    from cryowedge.workflows.reconstruct import reconstruct_file

    with user_errors():
        base = ReconstructConfig.from_yaml(config) if config else ReconstructConfig()
        cfg = base.updated(method=method, filter_name=filter_name, cutoff=cutoff, sirt_iterations=sirt_iterations,
                           radial_cutoff=radial_cutoff, radial_falloff=radial_falloff, padding=padding,
                           thickness=thickness, tilt_axis_angle_deg=tilt_axis_angle, device=device,
                           n_iter=n_iter, relaxation=relaxation, positivity=positivity, tv_lambda=tv_lambda,
                           regularizer=regularizer, rho=rho, cg_iter=cg_iter, tol=tol, order=order,
                           checkpoint_every=checkpoint_every)
        if not tilt_series.exists():
            raise FileNotFoundError(f"tilt series {tilt_series} does not exist.")
        with progress_bar(f"reconstruct ({cfg.method})") as progress:
            reconstruct_file(tilt_series, output, cfg, angles_path=angles, pixel_size_angstrom=pixel_size,
                             overwrite=overwrite, progress=progress, resume=resume)
    console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.command(help=reconstruct.__doc__)(reconstruct)
