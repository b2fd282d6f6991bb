"""``cryowedge crm``: subtomogram averaging by the constrained reconstruction model (CRM).

Examples::

    cryowedge crm TS.mrc --angles TS.tlt --particles P.star --box 48 --thickness 300 -o crm/
    cryowedge crm TS.mrc --particles P.star --box 48 --thickness 300 --config crm.yaml -o crm/
    cryowedge crm simulate tomogram sim/ --copies 8           # a tomogram + STAR list
    cryowedge crm simulate shepp-logan sl/ --copies 11 --snr 5 --tilt-range 50 --tilt-step 3
    cryowedge crm run sl/ sl_crm/ --solver sirt --n-iter 100  # CRM on a data set
    cryowedge crm compare sl/ sl_cmp/                         # CRM vs AVG vs M-AVG

``cryowedge crm TILTSERIES ...`` is ``cryowedge crm reconstruct TILTSERIES ...``. Every field
of :class:`~cryowedge.config.crm.CrmConfig` (or :class:`~cryowedge.config.crm.CrmSimulateConfig`
for ``simulate``) is an option generated from the model; options given on the command line
override a ``--config`` YAML file, and the resolved configuration is saved as
``<out>/crm.yaml``. Bad input (a STAR file without the required columns, particles outside
the tomogram, a support mask of the wrong shape, an empty support, copies of different
sizes) is one line and exit code 2, before any solving.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer
from typer.core import TyperGroup

from cryowedge.cli._common import (
    console,
    interrupted_exit,
    print_written,
    progress_bar,
    user_errors,
)
from cryowedge.cli._options import (
    ConfigCommand,
    ConfigOption,
    changes_for,
    config_from,
    config_options,
)
from cryowedge.config.crm import CrmConfig, CrmSimulateConfig

#: The sub-command that ``cryowedge crm TILTSERIES ...`` runs.
DEFAULT_COMMAND = "reconstruct"


class _DefaultCommandGroup(TyperGroup):
    """A group whose first argument, when it names no sub-command, goes to ``reconstruct``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return DEFAULT_COMMAND, self.commands[DEFAULT_COMMAND], args
        return super().resolve_command(ctx, args)


crm_app = typer.Typer(
    cls=_DefaultCommandGroup,
    help="Subtomogram averaging by the constrained reconstruction model (CRM): all copies of a "
    "particle solved at once, each with its own background, so their wedges fill each other "
    "in. 'cryowedge crm TILTSERIES --particles P.star --box N --thickness NZ -o OUT' is "
    "'crm reconstruct'; 'crm simulate|run|compare' reproduce the paper's experiments "
    "(docs/crm.md).",
    no_args_is_help=True,
)

_CONFIG_HELP = "YAML file with CrmConfig fields (options given here override it)"
_OVERWRITE_HELP = "replace earlier outputs (the old files are kept as <name>~)"
#: Fields that only the real-use command (a tilt series + STAR list) uses.
_EXTRACTION = ("box_size", "box_depth", "thickness", "tilt_axis_angle_deg",
               "coordinate_origin_px", "tomo_name", "interpolation_order", "drop_outside")
_HALVES = ("half_maps", "half_split")


def reconstruct_options() -> list[ConfigOption]:
    return config_options(CrmConfig)


def run_options() -> list[ConfigOption]:
    # extraction options stay: they apply to a 'tomogram' data set
    return config_options(CrmConfig, exclude=(*_HALVES, "baselines", "m_avg_eps"))


def compare_options() -> list[ConfigOption]:
    return config_options(CrmConfig, exclude=_HALVES)


def simulate_options() -> list[ConfigOption]:
    return config_options(CrmSimulateConfig, exclude=("kind",))


def build_config(config_path: Path | None, options: list[ConfigOption],
                 given: dict[str, Any]) -> CrmConfig:
    """The YAML file (or the defaults), then the options given, validated as one model."""
    return config_from(CrmConfig, config_path, options, given)  # type: ignore[no-any-return]


def _report(result: Any, out: Path) -> None:
    from cryowedge.metrics import metrics_table_markdown

    labels = {"crm": "CRM", "avg": "AVG", "m-avg": "M-AVG"}
    console.print(metrics_table_markdown({labels.get(k, k): v for k, v in result.metrics.items()}),
                  markup=False, highlight=False, soft_wrap=True)
    print_written(result, out)


# ----------------------------------------------------------------------------- reconstruct
def _reconstruct(
    tilt_series: Path = typer.Argument(..., help="MRC tilt series (n_tilts, y, x)"),
    particles: Path = typer.Option(
        ..., "--particles", "-p", help="RELION-style STAR particle list: rlnCoordinateX/Y/Z "
        "(tomogram voxels), rlnAngleRot/Tilt/Psi (degrees), optional rlnTomoName and "
        "rlnOrigin{X,Y,Z}Angst"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    angles: Path | None = typer.Option(
        None, help=".tlt/.rawtlt/.mdoc \\[default: next to the stack]"),
    reference: Path | None = typer.Option(
        None, help="known particle map (MRC, on the particle box) to score the maps against"),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    config: Path | None = typer.Option(None, help=_CONFIG_HELP),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Particle map, half maps + FSC and AVG/M-AVG from a tilt series and a STAR particle list."""
    from cryowedge.workflows.crm import reconstruct_particles

    try:
        with user_errors():
            cfg = build_config(config, reconstruct_options(), given)
            with progress_bar(f"crm ({cfg.solver})") as progress:
                result = reconstruct_particles(
                    tilt_series, out, particles=particles, angles=angles, config=cfg,
                    reference=reference, pixel_size_angstrom=pixel_size, overwrite=overwrite,
                    progress=progress, config_path=config)
    except KeyboardInterrupt:
        raise interrupted_exit(out) from None
    _report(result, out)


# ----------------------------------------------------------------------------- simulate
def _simulate(
    kind: Literal["shepp-logan", "ribosome", "3d", "tomogram"] = typer.Argument(
        ..., help="shepp-logan / ribosome: the paper's 2D data sets; 3d: copies of a protein in "
        "crowded-cell boxes; tomogram: a particle tomogram with its STAR list"),
    output_dir: Path = typer.Argument(..., help="directory of the data set (dataset.yaml)"),
    config: Path | None = typer.Option(None, help="YAML with CrmSimulateConfig fields"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Simulate a CRM data set (sub-tilt-series, orientations, truth, support; or a tomogram)."""
    from cryowedge.workflows.crm import simulate_dataset

    with user_errors():
        base = CrmSimulateConfig.from_yaml(config) if config else CrmSimulateConfig()
        cfg = base.updated(kind=kind, **changes_for(simulate_options(), given))
        with progress_bar(f"crm simulate {kind}") as progress:
            ds = simulate_dataset(output_dir, cfg, overwrite=overwrite, progress=progress,
                                  config_path=config)
    data = ds.data
    console.print(f"wrote {ds.path}: {data.n_copies} copies, {data.projections.shape[1]} "
                  f"tilts, box {'x'.join(map(str, data.volume_shape))} (z, y, x), "
                  f"{data.pixel_size_angstrom:g} Å", markup=False, soft_wrap=True)
    if ds.kind == "tomogram":
        console.print(f"real-use input: {ds.meta['command']}", markup=False, soft_wrap=True)


# ----------------------------------------------------------------------------- run / compare
def _run(
    dataset: Path = typer.Argument(..., help="data set directory (or its dataset.yaml)"),
    output_dir: Path = typer.Argument(..., help="output directory"),
    config: Path | None = typer.Option(None, help=_CONFIG_HELP),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """CRM on a data set: particle.mrc, scored against the truth when there is one."""
    from cryowedge.workflows.crm import run_dataset

    try:
        with user_errors():
            cfg = build_config(config, run_options(), given)
            with progress_bar(f"crm run ({cfg.solver})") as progress:
                result = run_dataset(dataset, output_dir, cfg, overwrite=overwrite,
                                     progress=progress, config_path=config)
    except KeyboardInterrupt:
        raise interrupted_exit(output_dir) from None
    _report(result, output_dir)


def _compare(
    dataset: Path = typer.Argument(..., help="data set directory (or its dataset.yaml)"),
    output_dir: Path = typer.Argument(..., help="output directory"),
    config: Path | None = typer.Option(None, help=_CONFIG_HELP),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """CRM vs AVG vs M-AVG on a data set with a truth: scores inside the support, figures."""
    from cryowedge.workflows.crm import compare_dataset

    try:
        with user_errors():
            cfg = build_config(config, compare_options(), given)
            with progress_bar(f"crm compare ({cfg.solver})") as progress:
                result = compare_dataset(dataset, output_dir, cfg, overwrite=overwrite,
                                         progress=progress, config_path=config)
    except KeyboardInterrupt:
        raise interrupted_exit(output_dir) from None
    _report(result, output_dir)


reconstruct = ConfigCommand(_reconstruct, reconstruct_options, name="reconstruct")
simulate = ConfigCommand(_simulate, simulate_options, name="simulate")
run = ConfigCommand(_run, run_options, name="run")
compare = ConfigCommand(_compare, compare_options, name="compare")


def register(app: typer.Typer) -> None:
    crm_app.command(name="reconstruct")(reconstruct)
    crm_app.command(name="simulate")(simulate)
    crm_app.command(name="run")(run)
    crm_app.command(name="compare")(compare)
    app.add_typer(crm_app, name="crm")
