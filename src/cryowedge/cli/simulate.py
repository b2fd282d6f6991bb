"""``cryowedge simulate``: make a phantom and its noisy tilt series.

Examples::

    cryowedge simulate out/ --phantom cell --shape 64 128 128 --tilt-range -60 60 --snr 0.5
    cryowedge simulate out/ --config sim.yaml
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.config.models import SimulateConfig

_D = SimulateConfig()


def simulate(
    output_dir: Path = typer.Argument(..., help="directory for ground_truth.mrc, tilt_series.mrc/.tlt, even/odd"),
    config: Path | None = typer.Option(None, help="YAML file with SimulateConfig fields"),
    phantom: str | None = typer.Option(None, help=f"cell | shepp-logan | spheres \\[default: {_D.phantom}]"),
    shape: tuple[int, int, int] | None = typer.Option(None, help=f"volume z y x \\[default: {_D.shape}]"),
    pixel_size: float | None = typer.Option(None, help=f"Å per voxel \\[default: {_D.pixel_size_angstrom}]"),
    tilt_range: tuple[float, float] | None = typer.Option(
        None, help=f"min max tilt, degrees \\[default: {_D.tilt_min_deg} {_D.tilt_max_deg}]"),
    tilt_step: float | None = typer.Option(None, help=f"tilt step, degrees \\[default: {_D.tilt_step_deg}]"),
    snr: float | None = typer.Option(None, help=f"Gaussian noise SNR \\[default: {_D.snr}]"),
    dose: float | None = typer.Option(None, help="Poisson noise at this dose per tilt (e/Å²), replaces --snr"),
    defocus: float | None = typer.Option(None, help="apply a CTF with this defocus (Å)"),
    seed: int | None = typer.Option(None, help=f"random seed \\[default: {_D.seed}]"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Simulate a phantom and its tilt series (MRC + IMOD .tlt, voxel size set)."""
    from cryowedge.utils.device import resolve_device
    from cryowedge.workflows.simulate import simulate_to_files

    with user_errors():
        base = SimulateConfig.from_yaml(config) if config else SimulateConfig()
        changes = dict(phantom=phantom, shape=shape, pixel_size_angstrom=pixel_size, tilt_step_deg=tilt_step,
                       defocus_angstrom=defocus, seed=seed)
        if tilt_range:
            changes.update(tilt_min_deg=tilt_range[0], tilt_max_deg=tilt_range[1])
        if dose is not None:
            changes.update(dose_e_per_angstrom2=dose)
            base = SimulateConfig(**{**base.model_dump(), "snr": None})  # dose replaces snr
        if snr is not None:
            changes.update(snr=snr)
        cfg = base.updated(**changes)
        dev = resolve_device(device)
        with progress_bar("simulate") as progress:
            files = simulate_to_files(cfg, output_dir, progress=progress, device=str(dev))
    console.print(f"wrote {len(files)} files to {output_dir}")


def register(app: typer.Typer) -> None:
    app.command(help=simulate.__doc__)(simulate)
