"""``cryowedge stet``: compressed-sensing STEM tomography (random-beam STET, thesis ch. 3).

Examples::

    cryowedge stet simulate stet/ --dose-fraction 0.3 --snr 10
    cryowedge stet reconstruct stet/tilt_series.mrc stet/cs_tv.mrc --tv-lambda 1 --thickness 64
    cryowedge stet reconstruct stet/tilt_series.mrc stet/inpaint.mrc --method inpaint-tv
    cryowedge stet reconstruct data.mrc rec.mrc --mask scan_pattern.mrc --config stet.yaml

The scan mask of ``<name>.mrc`` is ``<name>_mask.mrc`` next to it (1 = scanned); pass
``--mask`` to use another file. ``--config`` takes a YAML file with the fields of the
command's section, or a whole ``StetConfig`` with ``simulate:`` and ``reconstruct:``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.config.models import StetReconstructConfig, StetSimulateConfig

_S = StetSimulateConfig()
_R = StetReconstructConfig()

stet_app = typer.Typer(
    help="Compressed-sensing STEM tomography: random-beam scans (RB-STET) and CS-TV reconstruction.",
    no_args_is_help=True,
)


@stet_app.command("simulate")
def simulate(
    output_dir: Path = typer.Argument(
        ..., help="directory for ground_truth.mrc, tilt_series.mrc/.tlt, tilt_series_mask.mrc, run.yaml"),
    config: Path | None = typer.Option(None, help="YAML with StetSimulateConfig fields (or a StetConfig)"),
    phantom: str | None = typer.Option(None, help=f"cell | shepp-logan | spheres \\[default: {_S.phantom}]"),
    shape: tuple[int, int, int] | None = typer.Option(None, help=f"volume z y x \\[default: {_S.shape}]"),
    pixel_size: float | None = typer.Option(None, help=f"Å per voxel \\[default: {_S.pixel_size_angstrom}]"),
    tilt_range: tuple[float, float] | None = typer.Option(
        None, help=f"min max tilt, degrees \\[default: {_S.tilt_min_deg} {_S.tilt_max_deg}]"),
    tilt_step: float | None = typer.Option(None, help=f"tilt step, degrees \\[default: {_S.tilt_step_deg}]"),
    dose_fraction: float | None = typer.Option(
        None, help=f"fraction of the pixels scanned per tilt, (0, 1] \\[default: {_S.dose_fraction}]"),
    snr: float | None = typer.Option(None, help=f"per-pixel Gaussian noise SNR (variance ratio) \\[default: {_S.snr}]"),
    n_particles: int | None = typer.Option(None, help=f"particles in the cell phantom \\[default: {_S.n_particles}]"),
    seed: int | None = typer.Option(None, help=f"seed of phantom, noise and scan mask \\[default: {_S.seed}]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Simulate a random-beam STET series: projections, noise, a random scan mask per tilt."""
    from cryowedge.config.models import StetConfig
    from cryowedge.utils.device import resolve_device
    from cryowedge.workflows.stet import stet_simulate_files

    with user_errors():
        base = StetConfig.section_from_yaml(config, "simulate") if config else StetSimulateConfig()
        changes = dict(phantom=phantom, shape=shape, pixel_size_angstrom=pixel_size, tilt_step_deg=tilt_step,
                       dose_fraction=dose_fraction, snr=snr, n_particles=n_particles, seed=seed)
        if tilt_range:
            changes.update(tilt_min_deg=tilt_range[0], tilt_max_deg=tilt_range[1])
        cfg = base.updated(**changes)
        dev = resolve_device(device)
        with progress_bar("stet simulate") as progress:
            files = stet_simulate_files(cfg, output_dir, progress=progress, device=str(dev))
    console.print(f"wrote {len(files)} files to {output_dir} (scan mask: {files['mask'].name})")


@stet_app.command("reconstruct")
def reconstruct(
    tilt_series: Path = typer.Argument(..., help="MRC tilt series (n_tilts, y, x), 0 where not scanned"),
    output: Path = typer.Argument(..., help="output tomogram MRC (z, y, x)"),
    mask: Path | None = typer.Option(None, help="0/1 scan mask MRC \\[default: <name>_mask.mrc next to the data]"),
    angles: Path | None = typer.Option(None, help=".tlt/.rawtlt/.mdoc \\[default: next to the stack]"),
    config: Path | None = typer.Option(None, help="YAML with StetReconstructConfig fields (or a StetConfig)"),
    method: str | None = typer.Option(
        None, help=f"tv (CS-TV on the undersampled data) | inpaint-tv (2-D inpainting, then TV) \\[default: {_R.method}]"),
    tv_lambda: float | None = typer.Option(
        None, help=f"TV weight λ on the data normalised to unit std (as in reconstruct) \\[default: {_R.tv_lambda}]"),
    regularizer: str | None = typer.Option(None, help=f"tv-aniso | tv | l1 \\[default: {_R.regularizer}]"),
    positivity: bool | None = typer.Option(
        None, "--positivity/--no-positivity", help=f"constrain the tomogram to be >= 0 \\[default: {_R.positivity}]"),
    n_iter: int | None = typer.Option(None, help=f"outer ADMM iterations \\[default: {_R.n_iter}]"),
    cg_iter: int | None = typer.Option(None, help=f"inner CG iterations per ADMM step \\[default: {_R.cg_iter}]"),
    inpaint_mu: float | None = typer.Option(None, help=f"2-D TV weight μ of inpaint-tv \\[default: {_R.inpaint_mu}]"),
    inpaint_iter: int | None = typer.Option(None, help=f"inpainting iterations of inpaint-tv \\[default: {_R.inpaint_iter}]"),
    thickness: int | None = typer.Option(None, help="output z size in voxels \\[default: x size]"),
    tilt_axis_angle: float | None = typer.Option(None, help="in-plane tilt-axis angle, degrees \\[default: 0]"),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    device: str | None = typer.Option(None, help=f"auto | cpu | cuda \\[default: {_R.device}]"),
    overwrite: bool = typer.Option(True, help="replace an existing output"),
) -> None:
    """Reconstruct a tomogram from randomly undersampled STET data and its scan mask."""
    from cryowedge.config.models import StetConfig
    from cryowedge.workflows.stet import stet_reconstruct_file

    with user_errors():
        base = StetConfig.section_from_yaml(config, "reconstruct") if config else StetReconstructConfig()
        cfg = base.updated(method=method, tv_lambda=tv_lambda, regularizer=regularizer, positivity=positivity,
                           n_iter=n_iter, cg_iter=cg_iter, inpaint_mu=inpaint_mu, inpaint_iter=inpaint_iter,
                           thickness=thickness, tilt_axis_angle_deg=tilt_axis_angle, device=device)
        with progress_bar(f"stet reconstruct ({cfg.method})") as progress:
            stet_reconstruct_file(tilt_series, output, cfg, mask_path=mask, angles_path=angles,
                                  pixel_size_angstrom=pixel_size, overwrite=overwrite, progress=progress)
    console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(stet_app, name="stet")
