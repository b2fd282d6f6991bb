"""``cryowedge spa``: single-particle reconstruction (model-based, KBWF basis, Toeplitz ADMM).

Examples::

    cryowedge spa simulate sim/ --box 32 --n-particles 500 --snr 1
    cryowedge spa reconstruct sim/particles.star -o rec/ --reference sim/truth.mrc
    cryowedge spa reconstruct P.star -o rec/ --lambda 10 --scales 4,2,1 --ctf wiener
    cryowedge spa refine sim/particles.star -o ref/ --true-star sim/particles_true_poses.star

Every field of :class:`~cryowedge.config.spa.SpaSimulateConfig` (``simulate``),
:class:`~cryowedge.config.spa.SpaReconstructConfig` (``reconstruct``) or
:class:`~cryowedge.config.spa.SpaRefineConfig` (``refine``) is an option generated from the
model; options given on the command line override a ``--config`` YAML file, and the resolved
configuration is saved as ``<out>/spa.yaml``. Bad input (a STAR file without defocus columns
when a CTF correction is asked for, particles of different sizes, a reference that is not a
cube of the particle box, λ < 0, missing files) is one line and exit code 2, before any
solving. Other modules add their sub-commands (``spa orient``, ``spa cryogan``) with one line
each in :func:`register`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from cryowedge.cli._common import (
    console,
    interrupted_exit,
    print_written,
    progress_bar,
    user_errors,
)
from cryowedge.cli._options import ConfigCommand, ConfigOption, config_from, config_options
from cryowedge.config.spa import SpaReconstructConfig, SpaRefineConfig, SpaSimulateConfig

spa_app = typer.Typer(
    help="Single-particle reconstruction: simulate a particle set, reconstruct a map with "
    "half maps and FSC, refine the angles jointly with the map (docs/spa.md).",
    no_args_is_help=True,
)

_OVERWRITE_HELP = "replace earlier outputs (the old files are kept as <name>~)"
_STAR_HELP = ("RELION particle STAR file (3.0 or 3.1+) with rlnAngleRot/Tilt/Psi; the MRCS "
              "stack(s) it names are read relative to its folder (or --image-root)")


def simulate_options() -> list[ConfigOption]:
    return config_options(SpaSimulateConfig)


def reconstruct_options() -> list[ConfigOption]:
    return config_options(SpaReconstructConfig)


def refine_options() -> list[ConfigOption]:
    """Refinement fields under their own help panel, the inherited ones under the final map's."""
    own = set(SpaRefineConfig.model_fields) - set(SpaReconstructConfig.model_fields)
    return [
        dataclasses.replace(o, help_panel="Refinement" if o.name in own else "Final map")
        for o in config_options(SpaRefineConfig)
    ]


def _stack_paths(items: list[str] | None) -> dict[str, str] | None:
    """``["NAME=FILE", ...]`` → ``{NAME: FILE}``."""
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name.strip() or not file.strip():
            raise ValueError(
                f"--stack expects NAME=FILE (the stack name used in rlnImageName, then the "
                f"file to read), got {item!r}."
            )
        out[name.strip()] = file.strip()
    return out


def _report(result: Any, out: Path) -> None:
    m = result.metrics
    parts = []
    if "half_fsc0143_angstrom" in m:
        parts.append(f"half-map FSC: {m['half_fsc0143_angstrom']:.2f} Å at 0.143, "
                     f"{m['half_fsc05_angstrom']:.2f} Å at 0.5")
    if "reference_fsc05_angstrom" in m:
        parts.append(f"vs reference: {m['reference_fsc05_angstrom']:.2f} Å at 0.5, "
                     f"Pearson {m['reference_pearson']:.3f}")
    if "mean_angle_error_after_deg" in m:
        parts.append(f"angle error {m['mean_angle_error_before_deg']:.2f}° → "
                     f"{m['mean_angle_error_after_deg']:.2f}° (mean)")
    for line in parts:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    print_written(result, out)


# ----------------------------------------------------------------------------- simulate
def _simulate(
    output_dir: Path = typer.Argument(..., help="output directory (particles.star, .mrcs, "
                                      "truth.mrc)"),
    config: Path | None = typer.Option(None, help="YAML file with SpaSimulateConfig fields"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Simulate particle images of a density (CTF, noise, angular error) as RELION STAR + MRCS."""
    from cryowedge.workflows.spa import simulate_particles

    try:
        with user_errors():
            cfg = config_from(SpaSimulateConfig, config, simulate_options(), given)
            with progress_bar("spa simulate") as progress:
                result = simulate_particles(output_dir, cfg, overwrite=overwrite,
                                            progress=progress, config_path=config)
    except KeyboardInterrupt:
        raise interrupted_exit(output_dir) from None
    m = result.metrics
    console.print(f"{m['particles']} particles of {m['box_px']} px at "
                  f"{m['pixel_size_angstrom']:.3g} Å from {m['density']}, SNR {m['snr']}, "
                  f"CTF {'on' if m['ctf'] else 'off'}", markup=False, soft_wrap=True)
    _report(result, output_dir)


# ----------------------------------------------------------------------------- reconstruct
def _reconstruct(
    star: Path = typer.Argument(..., help=_STAR_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    reference: Path | None = typer.Option(
        None, help="known map (MRC, a cube of the particle box) to score the map against"),
    pixel_size: float | None = typer.Option(None, help="override the pixel size (Å)"),
    image_root: Path | None = typer.Option(
        None, help="folder the stack paths of the STAR file are relative to \\[default: its "
        "folder]"),
    stack: list[str] | None = typer.Option(
        None, help="NAME=FILE: read the stack that rlnImageName calls NAME from FILE "
        "(repeatable)"),
    config: Path | None = typer.Option(None, help="YAML file with SpaReconstructConfig fields"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Map, half maps and FSC (0.143 / 0.5, Å) from a STAR file + particle stack."""
    from cryowedge.workflows.spa import reconstruct_particles

    try:
        with user_errors():
            cfg = config_from(SpaReconstructConfig, config, reconstruct_options(), given)
            with progress_bar(f"spa reconstruct ({cfg.method})") as progress:
                result = reconstruct_particles(
                    star, out, config=cfg, reference=reference, pixel_size_angstrom=pixel_size,
                    image_root=image_root, stack_paths=_stack_paths(stack),
                    overwrite=overwrite, progress=progress,
                    config_path=config)
    except KeyboardInterrupt:
        raise interrupted_exit(out) from None
    _report(result, out)


# ----------------------------------------------------------------------------- refine
def _refine(
    star: Path = typer.Argument(..., help=_STAR_HELP + "; its angles and shifts are the start"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    reference: Path | None = typer.Option(
        None, help="known map (MRC, a cube of the particle box) to score the map against"),
    true_star: Path | None = typer.Option(
        None, help="STAR file with the true poses of the same particles (simulations): "
        "orientation errors before and after"),
    pixel_size: float | None = typer.Option(None, help="override the pixel size (Å)"),
    image_root: Path | None = typer.Option(
        None, help="folder the stack paths of the STAR file are relative to \\[default: its "
        "folder]"),
    stack: list[str] | None = typer.Option(
        None, help="NAME=FILE: read the stack that rlnImageName calls NAME from FILE "
        "(repeatable)"),
    config: Path | None = typer.Option(None, help="YAML file with SpaRefineConfig fields"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Joint angular refinement from the STAR file's poses → refined STAR, map, half maps, FSC."""
    from cryowedge.workflows.spa import refine_particles

    try:
        with user_errors():
            cfg = config_from(SpaRefineConfig, config, refine_options(), given)
            with progress_bar("spa refine") as progress:
                result = refine_particles(
                    star, out, config=cfg, reference=reference, true_star=true_star,
                    pixel_size_angstrom=pixel_size, image_root=image_root,
                    stack_paths=_stack_paths(stack), overwrite=overwrite,
                    progress=progress, config_path=config)
    except KeyboardInterrupt:
        raise interrupted_exit(out) from None
    _report(result, out)


simulate = ConfigCommand(_simulate, simulate_options, name="simulate")
reconstruct = ConfigCommand(_reconstruct, reconstruct_options, name="reconstruct")
refine = ConfigCommand(_refine, refine_options, name="refine")


def register(app: typer.Typer) -> None:
    """Add the ``spa`` group (and the sub-commands of other modules) to ``app``."""
    spa_app.command(name="simulate")(simulate)
    spa_app.command(name="reconstruct")(reconstruct)
    spa_app.command(name="refine")(refine)
    # other modules' sub-commands: one line each, e.g. ``spa_orient.register(spa_app)``
    __import__("cryowedge.cli.spa_cryogan", fromlist=["register"]).register(spa_app)
    __import__("cryowedge.cli.spa_orient", fromlist=["register"]).register(spa_app)
    app.add_typer(spa_app, name="spa")
