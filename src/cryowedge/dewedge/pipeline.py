"""The one-shot dewedge pipeline: prepare → fit → refine (``cryowedge dewedge run``).

Everything goes under one output directory (nothing to ``/tmp``)::

    <out>/dewedge.yaml           the resolved configuration of the run
    <out>/prepared.yaml, ...     prepare's files (half tomograms, full tomogram, mask)
    <out>/checkpoints/           fit's checkpoints (epoch_N.pt, best.pt, last.pt), fit_log.csv
    <out>/<name>_refined.mrc     the refined tomogram(s) (voxel size and origin kept)

``resume=True`` continues an interrupted run: a finished prepare step (its ``prepared.yaml``)
is reused, the fit resumes from ``checkpoints/last.pt``, and refinement runs again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.workflows._record import ProgressFn

__all__ = [
    "CONFIG_NAME",
    "DewedgeRun",
    "pick_checkpoint",
    "prepare_inputs",
    "run_dewedge",
    "save_config",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Name of the resolved configuration written into the output directory.
CONFIG_NAME = "dewedge.yaml"


@dataclass(frozen=True)
class DewedgeRun:
    """What :func:`run_dewedge` made: the prepared data, the fit, the refined files."""

    prepared: Any
    fit: Any
    checkpoint: Path
    refined: list[Any]


def save_config(config: DewedgeConfig, output_dir: PathLike, name: str = CONFIG_NAME) -> Path:
    """Write the resolved ``config`` as YAML into ``output_dir`` (atomically)."""
    from cryowedge.io._atomic import write_text_atomic

    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, config.to_yaml())
    return path


def pick_checkpoint(output_dir: PathLike, checkpoint: PathLike | None = None) -> Path:
    """The network to refine with: ``checkpoint`` if given, else ``checkpoints/best.pt`` (the
    lowest validation loss), else ``checkpoints/last.pt``; a clear error when none exists."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist.")
        return path
    folder = Path(output_dir) / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"no fitted network in {str(folder)!r} (best.pt or last.pt); run "
        "'cryowedge dewedge fit' first, or pass --checkpoint."
    )


def run_dewedge(
    tilt_series: PathLike | Sequence[PathLike] | None,
    output_dir: PathLike,
    *,
    config: DewedgeConfig | None = None,
    angles: PathLike | Sequence[PathLike | None] | None = None,
    halves: Sequence[tuple[PathLike, PathLike]] | None = None,
    tilt_angles: Any = None,
    pixel_size_angstrom: float | None = None,
    tilt_axis_angle_deg: float | None = None,
    alignment: PathLike | Sequence[PathLike | None] | None = None,
    defocus: PathLike | Sequence[PathLike | None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    fit_callback: Callable[[Any], Any] | None = None,
    frames: PathLike | Sequence[PathLike] | None = None,
) -> DewedgeRun:
    """Prepare, fit and refine in one call (paper steps 1–3); mirrors ``dewedge run``.

    Parameters
    ----------
    tilt_series
        One MRC tilt series ``(n_tilts, y, x)`` or several (fitted together); or None with
        ``halves``.
    output_dir
        The run's directory (module docstring).
    config
        :class:`~cryowedge.config.dewedge.DewedgeConfig` (default: the defaults).
    angles, pixel_size_angstrom, tilt_axis_angle_deg, alignment, defocus
        As :func:`cryowedge.dewedge.prepare.prepare_tilt_series`.
    halves, tilt_angles
        Ready-made half tomograms ``[(even, odd), ...]`` and their tilt angles (file, angles
        or ``(min, max)``), instead of tilt series
        (:func:`cryowedge.dewedge.prepare.prepare_halves`).
    resume
        Continue an interrupted run (reuse the prepared data, resume the fit).
    overwrite
        Replace the outputs of an earlier run (kept as ``<name>~`` where files are replaced).
    progress
        ``progress(step, fraction)`` of the prepare and refine steps.
    fit_callback
        ``callback(FitProgress)`` of the fit (see :func:`cryowedge.dewedge.fit.fit`).
    frames
        Dose-fractionated frames instead of a tilt series (one MRC of frames per tilt, a
        directory or a glob; ``angles`` is then the one angle file):
        :func:`cryowedge.dewedge.prepare.prepare_frames`.
    """
    from cryowedge.dewedge.fit import fit
    from cryowedge.dewedge.prepare import MANIFEST_NAME, load_prepared
    from cryowedge.dewedge.refine import refine_checkpoint

    cfg = config if config is not None else DewedgeConfig()
    out = Path(output_dir)
    manifest = out / MANIFEST_NAME
    if resume and manifest.is_file():
        _check_one_input(tilt_series, halves, frames, tilt_angles)
        prepared = load_prepared(manifest)
        logger.info("resuming: reusing the prepared data in %s", manifest)
        save_config(cfg, out)
    else:
        prepared = prepare_inputs(
            tilt_series, out, config=cfg, angles=angles, halves=halves,
            tilt_angles=tilt_angles, frames=frames, pixel_size_angstrom=pixel_size_angstrom,
            tilt_axis_angle_deg=tilt_axis_angle_deg, alignment=alignment, defocus=defocus,
            overwrite=overwrite or resume, progress=progress)
    fitted = fit(prepared, config=cfg, output_dir=out, resume=resume and
                 (out / "checkpoints" / "last.pt").is_file(),
                 overwrite=overwrite, callback=fit_callback)
    checkpoint = pick_checkpoint(out)
    refined = refine_checkpoint(checkpoint, prepared, out, config=cfg,
                                overwrite=overwrite or resume, progress=progress)
    return DewedgeRun(prepared=prepared, fit=fitted, checkpoint=checkpoint, refined=refined)


def _check_one_input(tilt_series: Any, halves: Any, frames: Any, tilt_angles: Any) -> None:
    """Exactly one kind of input, and ready-made halves with their angles."""
    if (tilt_series is not None) + (halves is not None) + (frames is not None) != 1:
        raise ValueError("give either tilt series or --even/--odd half tomograms or --frames "
                         "frame stacks (one of the three).")
    if halves is not None and tilt_angles is None:
        raise ValueError("ready-made halves need their tilt angles (--angles FILE or "
                         "--tilt-range MIN MAX).")


def prepare_inputs(
    tilt_series: PathLike | Sequence[PathLike] | None,
    output_dir: PathLike,
    *,
    config: DewedgeConfig,
    angles: PathLike | Sequence[PathLike | None] | None = None,
    halves: Sequence[tuple[PathLike, PathLike]] | None = None,
    tilt_angles: Any = None,
    frames: PathLike | Sequence[PathLike] | None = None,
    pixel_size_angstrom: float | None = None,
    tilt_axis_angle_deg: float | None = None,
    alignment: PathLike | Sequence[PathLike | None] | None = None,
    defocus: PathLike | Sequence[PathLike | None] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> Any:
    """The prepare step from whichever input is given (mirrors ``dewedge prepare``).

    Exactly one of ``tilt_series`` (:func:`~cryowedge.dewedge.prepare.prepare_tilt_series`),
    ``halves`` with ``tilt_angles`` (:func:`~cryowedge.dewedge.prepare.prepare_halves`) or
    ``frames`` with ``angles`` (:func:`~cryowedge.dewedge.prepare.prepare_frames`); the other
    arguments as in :func:`run_dewedge`. The resolved ``config`` is saved as
    ``<output_dir>/dewedge.yaml``. Returns the
    :class:`~cryowedge.dewedge.prepare.PreparedData`.
    """
    from cryowedge.dewedge.prepare import prepare_frames, prepare_halves, prepare_tilt_series

    _check_one_input(tilt_series, halves, frames, tilt_angles)
    out = Path(output_dir)
    if frames is not None:
        prepared = prepare_frames(
            frames, out, angles=angles, pixel_size_angstrom=pixel_size_angstrom,  # type: ignore[arg-type]
            tilt_axis_angle_deg=tilt_axis_angle_deg, alignment=alignment,  # type: ignore[arg-type]
            defocus=defocus, config=config, overwrite=overwrite,  # type: ignore[arg-type]
            progress=progress)
    elif halves is not None:
        prepared = prepare_halves(list(halves), out, tilt_angles=tilt_angles,
                                  tilt_axis_angle_deg=tilt_axis_angle_deg or 0.0, config=config,
                                  overwrite=overwrite, progress=progress)
    else:
        prepared = prepare_tilt_series(
            tilt_series, out, angles=angles, pixel_size_angstrom=pixel_size_angstrom,  # type: ignore[arg-type]
            tilt_axis_angle_deg=tilt_axis_angle_deg, alignment=alignment, defocus=defocus,
            config=config, overwrite=overwrite, progress=progress)
    save_config(config, out)
    return prepared
