"""``cryowedge spa cryogan``: CryoGAN reconstruction from zero (thesis chapter 6, issue 14).

Examples::

    cryowedge spa cryogan particles.star -o gan/ --preset cpu-small --epochs 8
    cryowedge spa cryogan --simulate --sim-box 32 --sim-particles 4000 -o gan/ --preset cpu-small
    cryowedge spa cryogan --simulate -o gan/ --epochs 16 --resume      # continue a run

Every field of :class:`~cryowedge.config.spa_cryogan.CryoGanConfig` is an option generated
from the model; options given here override ``--preset`` and a ``--config`` YAML file, and
the resolved configuration is saved as ``<out>/cryogan.yaml``. Outputs: ``half_map_1.mrc``,
``half_map_2.mrc``, ``full_map.mrc``, ``fsc.png``, ``resolution_vs_epoch.{md,csv,png}``,
``cryogan.ckpt.pt`` (docs/spa_learned.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.cli._options import ConfigCommand, ConfigOption, changes_for, config_options
from cryowedge.config.spa_cryogan import PRESETS, CryoGanConfig, CryoGanDataConfig

__all__ = ["register", "cryogan"]

_DATA = CryoGanDataConfig.model_fields


def cryogan_options() -> list[ConfigOption]:
    return config_options(CryoGanConfig)


def _cryogan(
    particles: Path | None = typer.Argument(
        None, help="RELION particle STAR file with CTF columns (poses are not used)"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    simulate: bool = typer.Option(
        False,
        "--simulate",
        help="simulate a particle set from a real density instead of reading one (--sim-* options)",
    ),
    sim_density: str = typer.Option(_DATA["density"].default, help=_DATA["density"].description),
    sim_box: int = typer.Option(_DATA["box_size"].default, help=_DATA["box_size"].description),
    sim_particles: int = typer.Option(
        _DATA["n_particles"].default, help=_DATA["n_particles"].description
    ),
    sim_snr: float = typer.Option(
        _DATA["snr"].default, help="var(signal)/σ² (energy ratio; 0 for no noise)"
    ),
    sim_ctf: bool = typer.Option(_DATA["ctf"].default, help=_DATA["ctf"].description),
    sim_max_shift: float = typer.Option(
        _DATA["max_shift_px"].default, help=_DATA["max_shift_px"].description
    ),
    preset: str = typer.Option(
        "thesis",
        help=f"option set: {', '.join(PRESETS)} (cpu-small: a narrow critic for 32³–64³ on a CPU)",
    ),
    config: Path | None = typer.Option(
        None, help="YAML file with CryoGanConfig fields (options given here override it)"
    ),
    patches: Path | None = typer.Option(
        None, help="MRCS stack (K, n, n) of background patches for --noise patches"
    ),
    truth: Path | None = typer.Option(None, help="reference map (MRC) to score the maps against"),
    pixel_size: float | None = typer.Option(None, help="override the pixel size (Å)"),
    inverted_contrast: bool = typer.Option(False, help="STAR images have dense matter bright"),
    resume: bool = typer.Option(False, help="continue from <out>/cryogan.ckpt.pt"),
    *,
    given: dict[str, Any],
) -> None:
    """CryoGAN: learn a map from zero by matching simulated and real particle images."""
    from cryowedge.spa.cryogan.workflow import run_cryogan

    with user_errors():
        if preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}.")
        if simulate == (particles is not None):
            raise ValueError("give a particle STAR file or --simulate (exactly one).")
        base = dict(PRESETS[preset])
        if config is not None:
            base.update(CryoGanConfig.from_yaml(config).model_dump(exclude_unset=True))
        cfg = CryoGanConfig(**{**base, **changes_for(cryogan_options(), given)})
        data = None
        if simulate:
            data = CryoGanDataConfig(
                density=sim_density,
                box_size=sim_box,
                n_particles=sim_particles,
                snr=sim_snr if sim_snr > 0 else None,
                ctf=sim_ctf,
                max_shift_px=sim_max_shift,
                seed=cfg.seed,
            )
        try:
            with progress_bar("spa cryogan") as progress:
                run = run_cryogan(
                    out,
                    cfg,
                    particles=particles,
                    data=data,
                    patches=patches,
                    truth=truth,
                    pixel_size_angstrom=pixel_size,
                    inverted_contrast=inverted_contrast,
                    resume=resume,
                    progress=progress,
                )
        except KeyboardInterrupt:
            console.print(
                f"[bold yellow]interrupted; resume with --resume -o {out}[/]", soft_wrap=True
            )
            raise typer.Exit(code=130) from None
    res = run.result
    last = res.history[-1]
    console.print(
        f"half-map FSC 0.143: {last.resolution_angstrom:.3g} Å = {last.fraction_nyquist:.3g} of "
        f"Nyquist ({2 * res.pixel_size_angstrom:.3g} Å); {res.seconds_per_epoch:.1f} s/epoch on "
        f"{res.device}",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"wrote {', '.join(sorted(p.name for p in run.files.values()))} to {out}/",
        markup=False,
        soft_wrap=True,
    )


cryogan = ConfigCommand(_cryogan, cryogan_options, name="cryogan")


def register(spa_app: typer.Typer) -> None:
    """Add ``cryogan`` to the ``cryowedge spa`` group."""
    spa_app.command(name="cryogan")(cryogan)
