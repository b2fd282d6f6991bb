"""``cryowedge spa orient``: learned orientation recovery (thesis chapter 5, issue 14).

Examples::

    cryowedge spa orient simulate sim/ --density ribosome --box 32 --n-particles 1000
    cryowedge spa orient train net/ --density ribosome --box 32 --epochs 20
    cryowedge spa orient train net/ --epochs 40 --resume          # continue a run
    cryowedge spa orient recover sim/particles.star --model net/distance_net.pt \\
        --reference-map sim/truth.mrc -o rec/

``train`` fits the Siamese distance network on noise-free projections of a density (or on a
STAR stack with known angles, ``--particles``); ``recover`` predicts the distances of a
particle stack's pairs, recovers all orientations (Adam over fresh random pairs), aligns them
to the STAR's own angles when it has some (the O(4) alignment of the fixed eq. 5.8) or else
chooses the left rotation and inversion from the images by common lines (the map is then
defined up to a global rotation and its hand), writes ``recovered.star``, reconstructs
``map.mrc`` and, with ``--reference-map``, ``fsc.png``.
Every field of the config models (:mod:`cryowedge.config.spa_orient`) is an option; options
given here override a ``--config`` YAML file; the resolved configuration is saved next to the
outputs (docs/spa_learned.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.cli._options import ConfigCommand, ConfigOption, config_from, config_options
from cryowedge.config.spa_orient import OrientRecoverConfig, OrientSimulateConfig, OrientTrainConfig

__all__ = ["register", "orient_app"]

orient_app = typer.Typer(
    help="Learned orientation recovery (thesis ch. 5): train a Siamese network that predicts "
    "the angle between the orientations of two projections, recover all orientations of a "
    "stack from its predicted distances, reconstruct with them (docs/spa_learned.md).",
    no_args_is_help=True,
)

_OVERWRITE = "replace earlier outputs in the directory"


def simulate_options() -> list[ConfigOption]:
    return config_options(OrientSimulateConfig)


def train_options() -> list[ConfigOption]:
    return config_options(OrientTrainConfig)


def recover_options() -> list[ConfigOption]:
    return config_options(OrientRecoverConfig)


def _save(cfg: Any, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(cfg.to_yaml())


def _simulate(
    out: Path = typer.Argument(..., help="output directory"),
    config: Path | None = typer.Option(None, help="YAML with OrientSimulateConfig fields"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE),
    *,
    given: dict[str, Any],
) -> None:
    """Projections of a density at uniformly random orientations (STAR + MRCS) and its map."""
    from cryowedge.spa.orient.workflow import simulate_to_dir

    with user_errors():
        cfg = config_from(OrientSimulateConfig, config, simulate_options(), given)
        with progress_bar("orient simulate") as progress:
            files = simulate_to_dir(out, cfg, overwrite=overwrite, progress=progress)
        _save(cfg, out, "orient_simulate.yaml")
    console.print(f"wrote {files['star']} ({cfg.n_particles} particles, {cfg.box_size}² px, "
                  f"{'half of' if cfg.half_so3 else 'all of'} SO(3)) and {files['truth']}",
                  markup=False, soft_wrap=True)


def _train(
    out: Path = typer.Argument(..., help="output directory (distance_net.pt, figures)"),
    particles: Path | None = typer.Option(
        None, help="train on this STAR stack with known angles instead of projecting --density"),
    config: Path | None = typer.Option(None, help="YAML with OrientTrainConfig fields"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE),
    *,
    given: dict[str, Any],
) -> None:
    """Train the Siamese distance network (MSE to the true quaternion distance)."""
    from cryowedge.spa.orient.workflow import train_to_dir

    with user_errors():
        cfg = config_from(OrientTrainConfig, config, train_options(), given)
        _ = cfg.siamese_config()  # validate before projecting
        with progress_bar("orient train") as progress:
            result = train_to_dir(out, cfg, particles=particles, overwrite=overwrite,
                                  progress=progress)
        _save(cfg, out, "orient_train.yaml")
    m = result["metrics"]
    console.print(f"validation MSE {m['val_loss'][-1]:.4f} rad² (var(d_q) {m['var_dq']:.3f}); "
                  f"predicted vs true r = {m['val_pairs_pearson']:.3f} (Euclidean "
                  f"{m['euclidean_pearson']:.3f}); wrote {result['files']['checkpoint']}",
                  markup=False, soft_wrap=True)


def _recover(
    particles: Path = typer.Argument(..., help="RELION STAR particle stack (angles optional: "
                                     "when present they are the reference for the alignment)"),
    model: Path = typer.Option(..., "--model", "-m", help="distance_net.pt from 'orient train'"),
    out: Path = typer.Option(..., "--out", "-o", help="output directory"),
    reference_map: Path | None = typer.Option(None, help="MRC map to score the map by FSC"),
    config: Path | None = typer.Option(None, help="YAML with OrientRecoverConfig fields"),
    overwrite: bool = typer.Option(False, help=_OVERWRITE),
    *,
    given: dict[str, Any],
) -> None:
    """Recover the orientations of a stack from predicted distances; STAR, map and FSC."""
    from cryowedge.spa.orient.workflow import recover_to_dir

    with user_errors():
        cfg = config_from(OrientRecoverConfig, config, recover_options(), given)
        for what, p in (("particles", particles), ("model", model),
                        ("reference map", reference_map)):
            if p is not None and not Path(p).is_file():
                raise FileNotFoundError(f"{what} file {p} does not exist.")
        with progress_bar("orient recover") as progress:
            result = recover_to_dir(particles, model, out, cfg, reference_map=reference_map,
                                    overwrite=overwrite, progress=progress)
        _save(cfg, out, "orient_recover.yaml")
    m = result["metrics"]
    line = f"recovered {m['n_particles']} orientations, final loss {m['final_loss']:.4f} rad²"
    if "commonlines_score" in m:
        line += f"; common-line score {m['commonlines_score']:.3f}" \
                f"{' (inverse branch)' if m['commonlines_inverted'] else ''}"
    if m.get("aligned"):
        line += f"; mean aligned error {m['mean_error_deg']:.1f}° (median " \
                f"{m['median_error_deg']:.1f}°)"
    if "fsc05_angstrom" in m:
        line += f"; map FSC 0.5 {m['fsc05_angstrom']:.1f} Å"
    files = ", ".join(sorted(p.name for p in result["files"].values()))
    console.print(f"{line}; wrote {files} to {out}/", markup=False, soft_wrap=True)


simulate = ConfigCommand(_simulate, simulate_options, name="simulate")
train = ConfigCommand(_train, train_options, name="train")
recover = ConfigCommand(_recover, recover_options, name="recover")


def register(spa_app: typer.Typer) -> None:
    """Add ``orient`` (simulate, train, recover) to the ``cryowedge spa`` group."""
    orient_app.command(name="simulate")(simulate)
    orient_app.command(name="train")(train)
    orient_app.command(name="recover")(recover)
    spa_app.add_typer(orient_app, name="orient")
