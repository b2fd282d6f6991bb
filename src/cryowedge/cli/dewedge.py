"""``cryowedge dewedge``: self-supervised denoising and missing-wedge filling (DeepDeWedge).

Examples::

    cryowedge dewedge run TS.mrc --angles TS.tlt --out ddw/            # all three steps
    cryowedge dewedge prepare TS.mrc --angles TS.mdoc --out ddw/       # halves, full, mask
    cryowedge dewedge prepare --halves even.mrc odd.mrc --angles TS.tlt --out ddw/
    cryowedge dewedge prepare --frames frames/ --angles TS.tlt --out ddw/   # even/odd frames
    cryowedge dewedge fit ddw/ --epochs 200 --chans 32                  # -> ddw/checkpoints/
    cryowedge dewedge fit ddw/ --resume --epochs 300                    # continue, fit longer
    cryowedge dewedge refine ddw/                                       # ddw/<name>_refined.mrc
    cryowedge dewedge run TS.mrc --out n2n/ --mode n2n                  # Noise2Noise baseline

``--config`` takes one YAML file with the sections ``shared``, ``prepare``, ``fit`` and
``refine`` (:class:`~cryowedge.config.dewedge.DewedgeConfig`); options given on the command
line override it, and the resolved configuration is saved as ``<out>/dewedge.yaml`` (and in
every checkpoint and run record). Each option belongs to one section; an option name that two
sections of a command share is prefixed with the section (``--fit-batch-size``,
``--refine-batch-size``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.cli._options import ConfigCommand, ConfigOption, changes_for, config_options
from cryowedge.config.dewedge import DewedgeConfig

dewedge_app = typer.Typer(
    help="Self-supervised denoising and missing-wedge filling from one tilt series "
    "(DeepDeWedge method; Noise2Noise with --mode n2n).",
    no_args_is_help=True,
)

_SECTIONS = {
    name: DewedgeConfig.model_fields[name].annotation
    for name in ("shared", "prepare", "fit", "refine")
}
#: Fields that the commands set from their own arguments, not from generated options.
_EXCLUDE: dict[str, tuple[str, ...]] = {"prepare": (), "shared": (), "fit": (), "refine": ()}


def section_options(*sections: str) -> list[ConfigOption]:
    """The options of some config sections; a name two sections share gets the section prefix.

    Each option's ``fields`` hold ``"section.field"`` (see :func:`nested_changes`).
    """
    per_section = {s: config_options(_SECTIONS[s], exclude=_EXCLUDE[s]) for s in sections}
    counts: dict[str, int] = {}
    for opts in per_section.values():
        for o in opts:
            counts[o.name] = counts.get(o.name, 0) + 1
    result = []
    for section, opts in per_section.items():
        for o in opts:
            flags = o.flags
            if counts[o.name] > 1:
                flags = tuple(_prefixed(flag, section) for flag in o.flags)
            result.append(dataclasses.replace(
                o, name=f"{section}__{o.name}", flags=flags,
                fields=tuple(f"{section}.{f}" for f in o.fields),
                owners=(), help_panel=f"{section} options"))
    return result


def _prefixed(flag: str, section: str) -> str:
    """``--batch-size`` → ``--fit-batch-size``; ``--x/--no-x`` → ``--fit-x/--no-fit-x``."""
    parts = flag.split("/")
    out = [f"--{section}-{parts[0].removeprefix('--')}"]
    out += [f"--no-{section}-{p.removeprefix('--no-')}" for p in parts[1:]]
    return "/".join(out)


def nested_changes(options: list[ConfigOption], given: dict[str, Any]) -> dict[str, Any]:
    """``{"fit.batch_size": 5}`` → ``{"fit": {"batch_size": 5}}`` for the options given."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes_for(options, given).items():
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    return nested


def build_config(config_path: Path | None, options: list[ConfigOption],
                 given: dict[str, Any]) -> DewedgeConfig:
    """The YAML file (or the defaults), then the options given, validated as one model."""
    base = DewedgeConfig.from_yaml(config_path) if config_path else DewedgeConfig()
    data = base.model_dump(mode="json")
    for section, values in nested_changes(options, given).items():
        data[section].update(values)
    return DewedgeConfig.model_validate(data)


def _fit_progress(progress: Any) -> Any:
    """A :func:`~cryowedge.dewedge.fit.fit` callback driving the CLI's progress bar."""

    def report(p: Any) -> None:
        done = (p.epoch - 1) * p.steps_per_epoch + p.step
        fraction = done / max(1, p.epochs * p.steps_per_epoch)
        text = f"fit epoch {p.epoch}/{p.epochs} loss {p.loss:.4g}"
        if p.val_loss is not None:
            text += f" val {p.val_loss:.4g}"
        progress(text, fraction)

    return report


def _interrupted(resume_hint: str) -> None:
    console.print("[bold yellow]interrupted; the checkpoints written so far are kept.[/]",
                  soft_wrap=True)
    console.print(f"resume with: {resume_hint}", soft_wrap=True, markup=False)
    raise typer.Exit(code=130)


def _resume_command() -> str:
    from cryowedge.cli.reconstruct import resume_command

    return resume_command()


_CONFIG_HELP = "YAML with the sections shared, prepare, fit, refine (options override it)"
_OVERWRITE_HELP = "replace earlier outputs (old files kept as <name>~, old checkpoints removed)"


# ----------------------------------------------------------------------------- prepare
def prepare_options() -> list[ConfigOption]:
    return section_options("shared", "prepare")


def _prepare(
    tilt_series: list[Path] | None = typer.Argument(None, help="MRC tilt series (n_tilts, y, x)"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    angles: list[Path] | None = typer.Option(
        None, help=".tlt/.rawtlt/.mdoc per tilt series (a .mdoc gives the acquisition order) "
        "\\[default: next to the stack]"),
    even: list[Path] | None = typer.Option(
        None, help="ready-made half tomogram A (repeat for several pairs, with --odd) instead "
        "of tilt series"),
    odd: list[Path] | None = typer.Option(None, help="ready-made half tomogram B (with --even)"),
    frames: list[Path] | None = typer.Option(
        None, help="dose-fractionated frames instead of a tilt series: one motion-corrected MRC "
        "of frames per tilt, in the order of --angles (repeat, or one directory, or a quoted "
        "glob); even frames -> half A, odd -> half B, all tilts in both"),
    tilt_range: tuple[float, float] | None = typer.Option(
        None, help="tilt range MIN MAX of ready-made halves (instead of --angles)"),
    alignment: list[Path] | None = typer.Option(None, help="IMOD .xf / AreTomo .aln per series"),
    defocus_file: list[Path] | None = typer.Option(
        None, help="defocus per series (IMOD .defocus, CTFFIND4, AreTomo) for --ctf-correction"),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    tilt_axis_angle: float | None = typer.Option(None, help="in-plane tilt-axis angle (degrees)"),
    config: Path | None = typer.Option(None, help=_CONFIG_HELP),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Split the views even/odd, reconstruct both halves and the full series, make the mask."""
    from cryowedge.dewedge.pipeline import prepare_inputs

    with user_errors():
        cfg = build_config(config, prepare_options(), given)
        inputs = _input_arguments(tilt_series, angles=angles, even=even, odd=odd,
                                  frames=frames, tilt_range=tilt_range, alignment=alignment,
                                  defocus=defocus_file, pixel_size=pixel_size,
                                  tilt_axis_angle=tilt_axis_angle)
        with progress_bar("dewedge prepare") as progress:
            data = prepare_inputs(**inputs, output_dir=out, config=cfg, overwrite=overwrite,
                                  progress=progress)
    console.print(f"prepared {len(data)} tomogram(s) in {out} ({data.manifest_path.name})")


def _pairs(even: list[Path] | None, odd: list[Path] | None) -> list[tuple[Path, Path]] | None:
    """``--even A1 --even A2 --odd B1 --odd B2`` → ``[(A1, B1), (A2, B2)]``."""
    if not even and not odd:
        return None
    if len(even or []) != len(odd or []):
        raise ValueError(f"--even and --odd pair up half tomograms: got {len(even or [])} "
                         f"--even and {len(odd or [])} --odd files; give one of each per pair.")
    return list(zip(even, odd, strict=True))


def _halves_angles(angles: list[Path] | None, tilt_range: tuple[float, float] | None) -> Any:
    if tilt_range is not None:
        return tuple(tilt_range)
    if angles:
        return angles[0] if len(angles) == 1 else list(angles)
    return None


def _frames_arg(frames: list[Path]) -> Any:
    """One ``--frames`` value (a directory or a quoted glob) as a string, several as a list."""
    return str(frames[0]) if len(frames) == 1 else list(frames)


def _frames_angles(angles: list[Path] | None) -> Path:
    if not angles or len(angles) != 1:
        raise ValueError("--frames needs one --angles file (.tlt/.rawtlt/.mdoc) with one angle "
                         "per frame stack, in the same order.")
    return angles[0]


def _one_or_list(values: list[Path] | None) -> Any:
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _input_arguments(tilt_series: list[Path] | None, *, angles: list[Path] | None,
                     even: list[Path] | None, odd: list[Path] | None,
                     frames: list[Path] | None, tilt_range: tuple[float, float] | None,
                     alignment: list[Path] | None, defocus: list[Path] | None,
                     pixel_size: float | None,
                     tilt_axis_angle: float | None) -> dict[str, Any]:
    """The input options of ``prepare`` and ``run`` as keyword arguments of
    :func:`cryowedge.dewedge.pipeline.prepare_inputs` / ``run_dewedge``."""
    halves = _pairs(even, odd)
    return {
        "tilt_series": _one_or_list(tilt_series),
        "angles": None if halves else (_frames_angles(angles) if frames
                                       else _one_or_list(angles)),
        "frames": _frames_arg(frames) if frames else None,
        "halves": halves,
        "tilt_angles": _halves_angles(angles, tilt_range) if halves else None,
        "pixel_size_angstrom": pixel_size,
        "tilt_axis_angle_deg": tilt_axis_angle,
        "alignment": _one_or_list(alignment),
        "defocus": _one_or_list(defocus),
    }


# ----------------------------------------------------------------------------- fit
def fit_options() -> list[ConfigOption]:
    return section_options("shared", "fit")


def _fit(
    prepared: Path = typer.Argument(..., help="directory (or prepared.yaml) of dewedge prepare"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="where checkpoints/ and fit_log.csv go \\[default: PREPARED]"),
    resume: bool = typer.Option(False, help="continue from checkpoints/last.pt"),
    config: Path | None = typer.Option(
        None, help=_CONFIG_HELP + " \\[default: the one prepare saved]"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Fit the U-Net on sub-tomogram pairs cut on the fly from the half tomograms."""
    from cryowedge.dewedge.fit import fit, load_checkpoint
    from cryowedge.dewedge.pipeline import save_config
    from cryowedge.dewedge.prepare import load_prepared

    try:
        with user_errors():
            data = load_prepared(prepared)
            out_dir = out if out is not None else data.directory
            if config is not None:
                cfg = build_config(config, fit_options(), given)
            else:  # resuming: the interrupted fit's settings; else prepare's
                last = out_dir / "checkpoints" / "last.pt"
                base = (DewedgeConfig.model_validate(load_checkpoint(last)["config"])
                        if resume and last.is_file() else data.config)
                cfg = _override(base, fit_options(), given)
            save_config(cfg, out_dir)
            with progress_bar("dewedge fit") as progress:
                result = fit(data, config=cfg, output_dir=out_dir, resume=resume,
                             overwrite=overwrite, callback=_fit_progress(progress))
    except KeyboardInterrupt:
        _interrupted(_resume_command())
    best = f", best validation loss {result.best_val_loss:.4g} at epoch {result.best_epoch}" \
        if result.best_val_loss is not None else ""
    console.print(f"fitted {result.epochs_done} epochs{best}; checkpoints in "
                  f"{result.checkpoint_dir}")


def _override(base: DewedgeConfig, options: list[ConfigOption],
              given: dict[str, Any]) -> DewedgeConfig:
    data = base.model_dump(mode="json")
    for section, values in nested_changes(options, given).items():
        data[section].update(values)
    return DewedgeConfig.model_validate(data)


# ----------------------------------------------------------------------------- refine
def refine_options() -> list[ConfigOption]:
    return [o for o in section_options("shared", "refine")
            if o.name in {"shared__device"} or o.name.startswith("refine__")]


def _refine(
    prepared: Path = typer.Argument(..., help="directory (or prepared.yaml) of dewedge prepare"),
    checkpoint: Path | None = typer.Option(
        None, help="fitted network \\[default: PREPARED/checkpoints/best.pt, else last.pt]"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="where <name>_refined.mrc goes \\[default: PREPARED]"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """Apply the fitted network tile by tile (full tomogram, or both halves averaged)."""
    from cryowedge.dewedge.fit import load_checkpoint
    from cryowedge.dewedge.pipeline import pick_checkpoint
    from cryowedge.dewedge.prepare import load_prepared
    from cryowedge.dewedge.refine import refine_checkpoint

    with user_errors():
        data = load_prepared(prepared)
        ckpt = pick_checkpoint(data.directory, checkpoint)
        fitted = DewedgeConfig.model_validate(load_checkpoint(ckpt)["config"])
        cfg = _override(fitted, refine_options(), given)
        with progress_bar("dewedge refine") as progress:
            results = refine_checkpoint(ckpt, data, out, config=cfg, overwrite=overwrite,
                                        progress=progress)
    for r in results:
        console.print(f"wrote {r.output_path}")


# ----------------------------------------------------------------------------- run
def run_options() -> list[ConfigOption]:
    return section_options("shared", "prepare", "fit", "refine")


def _run(
    tilt_series: list[Path] | None = typer.Argument(None, help="MRC tilt series (n_tilts, y, x)"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    angles: list[Path] | None = typer.Option(
        None, help=".tlt/.rawtlt/.mdoc per tilt series \\[default: next to the stack]"),
    even: list[Path] | None = typer.Option(
        None, help="ready-made half tomogram A (repeat for several pairs, with --odd) instead "
        "of tilt series"),
    odd: list[Path] | None = typer.Option(None, help="ready-made half tomogram B (with --even)"),
    frames: list[Path] | None = typer.Option(
        None, help="dose-fractionated frames instead of a tilt series: one motion-corrected MRC "
        "of frames per tilt, in the order of --angles (repeat, or one directory, or a quoted "
        "glob); even frames -> half A, odd -> half B, all tilts in both"),
    tilt_range: tuple[float, float] | None = typer.Option(
        None, help="tilt range MIN MAX of ready-made halves (instead of --angles)"),
    alignment: list[Path] | None = typer.Option(None, help="IMOD .xf / AreTomo .aln per series"),
    defocus_file: list[Path] | None = typer.Option(None, help="defocus file per series"),
    pixel_size: float | None = typer.Option(None, help="override the header pixel size (Å)"),
    tilt_axis_angle: float | None = typer.Option(None, help="in-plane tilt-axis angle (degrees)"),
    config: Path | None = typer.Option(None, help=_CONFIG_HELP),
    resume: bool = typer.Option(False, help="continue an interrupted run (fit from last.pt)"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE_HELP),
    *,
    given: dict[str, Any],
) -> None:
    """One tilt series in, a denoised tomogram with the missing wedge filled out."""
    from cryowedge.dewedge.pipeline import run_dewedge

    try:
        with user_errors():
            from cryowedge.dewedge.pipeline import CONFIG_NAME

            saved = out / CONFIG_NAME
            if config is None and resume and saved.is_file():
                config = saved  # resuming: the interrupted run's settings (options override)
            cfg = build_config(config, run_options(), given)
            inputs = _input_arguments(tilt_series, angles=angles, even=even, odd=odd,
                                      frames=frames, tilt_range=tilt_range,
                                      alignment=alignment, defocus=defocus_file,
                                      pixel_size=pixel_size, tilt_axis_angle=tilt_axis_angle)
            with progress_bar("dewedge run") as progress:
                result = run_dewedge(**inputs, output_dir=out, config=cfg, resume=resume,
                                     overwrite=overwrite, progress=progress,
                                     fit_callback=_fit_progress(progress))
    except KeyboardInterrupt:
        _interrupted(_resume_command())
    for r in result.refined:
        console.print(f"wrote {r.output_path}")


prepare = ConfigCommand(_prepare, prepare_options, name="prepare")
fit_command = ConfigCommand(_fit, fit_options, name="fit")
refine = ConfigCommand(_refine, refine_options, name="refine")
run = ConfigCommand(_run, run_options, name="run")


def register(app: typer.Typer) -> None:
    dewedge_app.command(name="prepare")(prepare)
    dewedge_app.command(name="fit")(fit_command)
    dewedge_app.command(name="refine")(refine)
    dewedge_app.command(name="run")(run)
    app.add_typer(dewedge_app, name="dewedge")
