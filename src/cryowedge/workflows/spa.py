"""Single-particle workflows: files in, files out (``cryowedge spa ...``); the Python API
mirrors the CLI.

======================================  ====================================================
``cryowedge spa simulate OUT``          :func:`simulate_particles`: particle images of a real
                                        density (CTF, noise at a target SNR, optional angular
                                        error) as RELION STAR + MRCS, and the truth map
``cryowedge spa reconstruct P.star``    :func:`reconstruct_particles`: STAR + stack → map,
                                        half maps, FSC curve (PNG + CSV), resolution at
                                        0.143 / 0.5 (Å)
``cryowedge spa refine P.star``         :func:`refine_particles`: joint angular refinement
                                        from the STAR file's angles → refined STAR, map, half
                                        maps, FSC
======================================  ====================================================

In memory: :func:`load_particles` (a STAR file as a
:class:`~cryowedge.spa.particles.ParticleStack`, the CTF read when the configuration needs it),
:func:`reconstruct_stack` (one map from a stack with a
:class:`~cryowedge.config.spa.SpaReconstructConfig`, coarse-to-fine when several scales are
given), :func:`half_map_fsc`.

Every output is checked before any work (:func:`cryowedge.workflows.outputs.check_outputs`);
maps are written atomically as MRC with the particles' pixel size as voxel size; the resolved
configuration is saved as ``spa.yaml`` and the run record as ``run.yaml``. Bad input (a STAR
file without defocus columns when a CTF correction is asked for, particles of different
sizes, no angles, a reference map that is not a cube of the particle box, λ < 0, missing
files) is a one-line ``ValueError``/``FileNotFoundError`` before any reconstruction.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.config.spa import SpaReconstructConfig, SpaRefineConfig, SpaSimulateConfig
from cryowedge.io._atomic import write_text_atomic
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.workflows._record import ProgressFn, report_progress, write_run_record
from cryowedge.workflows.outputs import check_outputs, keep_backups, mrc_nbytes

__all__ = [
    "CONFIG_NAME",
    "SpaOutputs",
    "half_map_fsc",
    "load_particles",
    "read_reference",
    "reconstruct_particles",
    "reconstruct_stack",
    "refine_particles",
    "bin_stack",
    "save_config",
    "simulate_particles",
    "soft_sphere_mask",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: The resolved configuration written beside the outputs.
CONFIG_NAME = "spa.yaml"
#: Map files of ``spa reconstruct`` / ``spa refine`` (``<name>.mrc``).
MAP_NAME = "map"
#: Modes that need the STAR file's CTF columns.
_CTF_NEEDED = ("model", "phase_flip", "wiener")


# ============================================================================ results
@dataclass
class SpaOutputs:
    """What an SPA command wrote and measured.

    Attributes
    ----------
    files
        Output name → path.
    metrics
        Scalar results (resolutions in Å, correlations, counts, seconds).
    maps
        ``{"map": (n, n, n), "half1": ..., "half2": ...}`` float32 volumes (``simulate``:
        ``{"truth": ...}``).
    fsc
        FSC curves (:class:`~cryowedge.metrics.FSCResult`): ``"half"`` (half maps) and
        ``"reference"`` (map vs the reference) when made.
    stack
        The particle stack (simulated, read, or refined).
    seconds
        Wall time of the command.
    """

    files: dict[str, Path]
    metrics: dict[str, Any]
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    fsc: dict[str, Any] = field(default_factory=dict)
    stack: Any = None
    seconds: float = 0.0


# ============================================================================ small pieces
def save_config(config: Any, output_dir: PathLike, name: str = CONFIG_NAME) -> Path:
    """Write the resolved ``config`` as YAML into ``output_dir`` (atomically)."""
    path = Path(output_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, config.to_yaml())
    return path


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else str(f)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _write_metrics(out: Path, metrics: Mapping[str, Any], title: str) -> tuple[Path, Path]:
    lines = [f"# {title}", "", "| quantity | value |", "| --- | --- |"]
    for key, value in metrics.items():
        shown = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
        lines.append(f"| {key} | {shown} |")
    md = write_text_atomic(out / "metrics.md", "\n".join(lines) + "\n")
    js = write_text_atomic(
        out / "metrics.json",
        json.dumps({k: _json_value(v) for k, v in metrics.items()}, indent=2) + "\n",
    )
    return md, js


def _device(name: str) -> Any:
    from cryowedge.utils.device import resolve_device

    return resolve_device(name)


def _check_input(path: PathLike | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {str(p)!r}; check the path.")
    return p


def soft_sphere_mask(n: int, radius_px: float, edge_px: float = 3.0) -> np.ndarray:
    """``(n, n, n)`` float32 sphere of ``radius_px`` around voxel ``n // 2``, raised-cosine edge.

    1 inside ``radius_px``, 0 beyond ``radius_px + edge_px`` (pixels).
    """
    c = np.arange(n) - n // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    t = np.clip((r - radius_px) / max(edge_px, 1e-6), 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)


def _resolutions(fsc: Any, px: float, prefix: str) -> dict[str, float]:
    from cryowedge.metrics.report import FSC_RESOLUTION_RULE

    return {
        f"{prefix}fsc0143_angstrom": fsc.resolution_angstrom(0.143, px, rule=FSC_RESOLUTION_RULE),
        f"{prefix}fsc05_angstrom": fsc.resolution_angstrom(0.5, px, rule=FSC_RESOLUTION_RULE),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else 0.0


# ============================================================================ input
def _star_columns(path: Path) -> set[str]:
    """Column names of the particle and optics tables of a STAR file (cheap: no images)."""
    import pandas as pd
    import starfile

    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:  # noqa: BLE001 - starfile raises assorted errors
        raise ValueError(f"cannot read {str(path)!r} as a STAR file: {exc}") from None
    cols: set[str] = set()
    for table in data.values():
        if isinstance(table, pd.DataFrame):
            cols.update(map(str, table.columns))
    return cols


def load_particles(
    star: PathLike,
    config: SpaReconstructConfig | None = None,
    *,
    pixel_size_angstrom: float | None = None,
    image_root: PathLike | None = None,
    stack_paths: Mapping[str, PathLike] | None = None,
    need_angles: bool = True,
) -> Any:
    """Read a RELION particle STAR file and its stack(s) for ``config``.

    The CTF columns are read when ``config.ctf`` needs them (``model``, ``phase_flip``,
    ``wiener``: their absence is an error naming the missing columns and ``--ctf none``) or,
    with ``auto``, when the file has them.

    Returns
    -------
    ParticleStack
        ``(P, n, n)`` images, pixel size (Å), rotations, shifts ``(P, 2)`` px, CTF or None.

    Raises
    ------
    FileNotFoundError, ValueError
        Before any image is read: see :func:`cryowedge.spa.io.read_relion_particles`; also
        without angle columns when ``need_angles``.
    """
    from cryowedge.spa.io import DEFOCUS_COLUMNS, OPTICS_CTF_COLUMNS, read_relion_particles

    cfg = config or SpaReconstructConfig()
    path = _check_input(star, "STAR file")
    assert path is not None
    columns = _star_columns(path)
    required = (*DEFOCUS_COLUMNS[:2], *OPTICS_CTF_COLUMNS)
    missing = [c for c in required if c not in columns]
    if cfg.ctf in _CTF_NEEDED and missing:
        raise ValueError(
            f"--ctf {cfg.ctf} needs the CTF columns {', '.join(missing)}, which "
            f"{str(path)!r} lacks; add them (CTF estimation) or pass --ctf none "
            "(ctf='none') to reconstruct without CTF correction."
        )
    if need_angles and not {"rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"} <= columns:
        raise ValueError(
            f"{str(path)!r} has no rlnAngleRot/rlnAngleTilt/rlnAnglePsi columns; reconstruction "
            "needs an orientation per particle (run an angular assignment first)."
        )
    read_ctf = cfg.ctf in _CTF_NEEDED or (cfg.ctf == "auto" and not missing)
    stack = read_relion_particles(
        path,
        ctf=read_ctf,
        pixel_size_angstrom=pixel_size_angstrom,
        image_root=image_root,
        stack_paths=stack_paths,
        inverted_contrast=cfg.inverted_contrast,
    )
    if cfg.ctf == "auto" and missing:
        logger.info("%s has no CTF columns (%s): no CTF correction", path, ", ".join(missing))
    return stack


def read_reference(path: PathLike | None, box_size: int) -> tuple[np.ndarray, float] | None:
    """A reference map ``(n, n, n)`` to score against, and its voxel size (Å, 0 if unknown).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The map is not a cube of the particle box ``box_size``.
    """
    p = _check_input(path, "reference map")
    if p is None:
        return None
    mrc = read_mrc(p)
    vol = np.asarray(mrc.data, dtype=np.float32)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(
            f"reference {str(p)!r} has shape {vol.shape} (z, y, x); it must be a cube "
            f"({box_size}, {box_size}, {box_size}) like the particle box: pad or crop it."
        )
    if vol.shape[0] != box_size:
        raise ValueError(
            f"reference {str(p)!r} is {vol.shape[0]}³ but the particles are {box_size} pixels; "
            f"resample it to {box_size}³ on the particles' pixel size."
        )
    px = float(mrc.voxel_size_angstrom[0]) if mrc.has_voxel_size else 0.0
    return vol, px


#: Smallest box (pixels) that ``bin`` may leave.
MIN_BINNED_BOX = 8


def bin_stack(stack: Any, factor: int) -> Any:
    """The stack with its images Fourier-cropped to ``m = n // factor`` pixels.

    The centre pixel ``n // 2`` maps to ``m // 2`` exactly (cropping the spectrum of the
    image centred at index 0); values are scaled by ``m² / n²`` so that a pixel keeps its
    mean. Pixel size ``× n / m`` (Å), shifts ``× m / n`` (pixels); angles and CTF parameters
    (physical units) are unchanged.

    Raises
    ------
    ValueError
        ``factor`` not a whole number >= 1, or a binned box below :data:`MIN_BINNED_BOX`.
    """
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"bin must be a whole number >= 1, got {factor!r}.")
    factor = int(factor)
    if factor == 1:
        return stack
    n = stack.image_size
    m = n // factor
    if m < MIN_BINNED_BOX:
        raise ValueError(
            f"bin {factor} leaves {m}-pixel images of the {n}-pixel particles; at least "
            f"{MIN_BINNED_BOX} are needed (use bin {max(1, n // MIN_BINNED_BOX)} or less)."
        )
    keep = np.fft.fftfreq(m) * m  # integer frequencies of the small grid, FFT order
    idx = np.where(keep >= 0, keep, keep + n).astype(np.int64)  # their places in the n grid
    out = np.empty((stack.n_particles, m, m), dtype=np.float32)
    batch = 256
    for p0 in range(0, stack.n_particles, batch):
        imgs = np.asarray(stack.images[p0:p0 + batch], dtype=np.float64)
        spec = np.fft.fft2(np.fft.ifftshift(imgs, axes=(-2, -1)))
        small = spec[:, idx][:, :, idx]
        out[p0:p0 + batch] = (np.fft.fftshift(np.fft.ifft2(small).real, axes=(-2, -1))
                              * (m * m) / (n * n)).astype(np.float32)
    return stack.replace(
        images=out,
        pixel_size_angstrom=stack.pixel_size_angstrom * n / m,
        shifts_px=np.asarray(stack.shifts_px) * m / n,
    )


# ============================================================================ reconstruction
def reconstruct_stack(
    stack: Any,
    config: SpaReconstructConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    step: str = "admm",
    start: float = 0.0,
    span: float = 1.0,
) -> Any:
    """One map from a particle stack (coarse to fine over ``config.scales``).

    Returns
    -------
    SpaReconstruction
        The last (finest) scale's reconstruction; its ``volume`` is ``(n, n, n)`` float32.
    """
    from cryowedge.spa.reconstruct import reconstruct_multiscale

    cfg = config or SpaReconstructConfig()
    kwargs = cfg.solver_kwargs()
    scales = cfg.scale_list
    total = len(scales) * kwargs["n_iter"]
    count = [0]

    def callback(info: Any) -> None:
        count[0] += 1
        k = count[0]
        report_progress(progress, f"{step} {k}/{total}", start + span * k / total)

    report_progress(progress, f"{step}: kernel and Hᵀb", start)
    recs = reconstruct_multiscale(
        stack, scales=scales, callback=callback, device=_device(cfg.device), **kwargs
    )
    return recs[-1]


def half_map_fsc(half1: np.ndarray, half2: np.ndarray, mask: np.ndarray | None = None) -> Any:
    """FSC of two half maps ``(n, n, n)`` (optionally both multiplied by ``mask``)."""
    from cryowedge.metrics.fourier import fourier_shell_correlation

    return fourier_shell_correlation(half1, half2, mask=mask)


def _map_outputs(out: Path, cfg: SpaReconstructConfig) -> list[Path]:
    names = [f"{MAP_NAME}.mrc", "orthoslices.png", "metrics.md", "metrics.json", CONFIG_NAME,
             "run.yaml"]
    if cfg.half_maps:
        names += ["half1.mrc", "half2.mrc", "fsc.png", "fsc.csv"]
    if cfg.lambda_sweep:
        names.append("lambda_sweep.csv")
    return [out / n for n in names]


def _write_fsc_csv(path: Path, curves: Mapping[str, Any], px: float) -> Path:
    first = next(iter(curves.values()))
    freq = np.asarray(first.frequency_cycles_per_pixel, dtype=np.float64)
    header = ["frequency_cycles_per_pixel", "resolution_angstrom",
              *[f"fsc_{name}" for name in curves]]
    rows = [",".join(header)]
    for i, f in enumerate(freq):
        values = [f"{f:.6f}", f"{px / f:.4f}" if f > 0 else "inf"]
        values += [f"{float(np.asarray(c.correlation)[i]):.6f}" for c in curves.values()]
        rows.append(",".join(values))
    write_text_atomic(path, "\n".join(rows) + "\n")
    return path


def _sweep_lambda(
    stack: Any,
    cfg: SpaReconstructConfig,
    truth: np.ndarray,
    out: Path,
    *,
    progress: ProgressFn | None,
    start: float,
    span: float,
) -> tuple[np.ndarray, SpaReconstructConfig, str, Path]:
    """Thesis §4.2: reconstruct for each λ of ``cfg.lambda_sweep`` with one kernel and ``Hᵀb``;
    the best FSC-0.5 against ``truth`` wins. Returns its map, the config with that λ, a
    one-line summary and ``lambda_sweep.csv``."""
    from cryowedge.spa.reconstruct import lambda_sweep

    kwargs = cfg.solver_kwargs()
    lams = cfg.lambda_list
    total = len(lams) * kwargs["n_iter"]
    count = [0]

    def callback(info: Any) -> None:
        count[0] += 1
        report_progress(progress, f"λ sweep {count[0]}/{total}", start + span * count[0] / total)

    problem_kwargs = {"blob": kwargs.pop("blob"), "ctf": kwargs.pop("ctf"),
                      "dtype": kwargs.pop("dtype"), "device": _device(cfg.device)}
    kwargs.pop("lam")
    method = kwargs.pop("method")
    sweep = lambda_sweep(stack, lams, truth=truth, method=method, scale=cfg.scale_list[-1],
                         problem_kwargs=problem_kwargs, callback=callback, **kwargs)
    assert sweep.fsc is not None and sweep.correlation is not None
    # the resolutions as every table here reads them (FSC_RESOLUTION_RULE), best first
    px = stack.pixel_size_angstrom
    res = [_resolutions(f, px, "")["fsc05_angstrom"] for f in sweep.fsc]
    i_best = min(range(len(lams)), key=lambda i: (res[i], -sweep.correlation[i]))
    best = lams[i_best]
    rows = ["lambda,reference_fsc05_angstrom,reference_pearson"]
    rows += [f"{lam:g},{r:.4f},{cc:.6f}" for lam, r, cc in
             zip(lams, res, sweep.correlation, strict=True)]
    csv = write_text_atomic(out / "lambda_sweep.csv", "\n".join(rows) + "\n")
    note = ", ".join(f"{lam:g}: {r:.2f} Å" for lam, r in zip(lams, res, strict=True))
    logger.info("λ sweep (FSC-0.5 vs reference): %s; best λ = %g", note, best)
    return sweep.reconstructions[i_best].volume, cfg.updated(tv_lambda=best), note, csv


def _reconstruct_and_write(
    stack: Any,
    out: Path,
    cfg: SpaReconstructConfig,
    *,
    reference: tuple[np.ndarray, float] | None,
    reference_name: str,
    progress: ProgressFn | None,
    start: float,
    span: float,
) -> tuple[dict[str, Path], dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """Full map (+ half maps, FSC), figures and metrics of one stack; returns files, metrics,
    maps, FSC curves."""
    from cryowedge.metrics.fourier import fourier_shell_correlation
    from cryowedge.viz.figures import fsc_plot, orthoslice_panel

    px = stack.pixel_size_angstrom
    n = stack.image_size
    t0 = time.perf_counter()
    parts = (0.5, 0.25, 0.25) if cfg.half_maps else (1.0, 0.0, 0.0)
    files: dict[str, Path] = {}
    sweep_note = None
    if cfg.lambda_list:
        if reference is None:
            raise ValueError("lambda_sweep needs a reference map (--reference) to choose λ.")
        volume, cfg, sweep_note, files["lambda_sweep"] = _sweep_lambda(
            stack, cfg, reference[0], out, progress=progress, start=start,
            span=span * parts[0])
    else:
        volume = reconstruct_stack(stack, cfg, progress=progress, step="admm" if cfg.method ==
                                   "admm_cg" else "ilf", start=start,
                                   span=span * parts[0]).volume
    maps: dict[str, np.ndarray] = {MAP_NAME: volume}
    metrics: dict[str, Any] = {
        "particles": stack.n_particles,
        "box_px": n,
        "pixel_size_angstrom": px,
        "bin": cfg.bin,
        "method": cfg.method,
        "lambda": cfg.tv_lambda,
        "iterations": cfg.iterations,
        "scales": cfg.scales,
        "ctf": _ctf_used(stack, cfg.ctf),
    }
    if sweep_note is not None:
        metrics["lambda_sweep"] = sweep_note
    curves: dict[str, Any] = {}
    if cfg.half_maps:
        halves = stack if stack.half_sets is not None else stack.with_random_halves(
            cfg.half_split_seed)
        sizes = [int(np.sum(halves.half_sets == k)) for k in (1, 2)]
        if min(sizes) == 0:
            raise ValueError(
                f"half set {1 if sizes[0] == 0 else 2} is empty (rlnRandomSubset); give both "
                "half sets particles or remove the column for a random split."
            )
        at = start + span * parts[0]
        for k in (1, 2):
            rec = reconstruct_stack(halves.half(k), cfg, progress=progress, step=f"half {k}",
                                    start=at, span=span * parts[k])
            at += span * parts[k]
            maps[f"half{k}"] = rec.volume
        mask = (soft_sphere_mask(n, cfg.fsc_mask_radius_px)
                if cfg.fsc_mask_radius_px is not None else None)
        curves["half"] = half_map_fsc(maps["half1"], maps["half2"], mask)
        metrics["half_set_sizes"] = f"{sizes[0]} + {sizes[1]}"
        metrics.update(_resolutions(curves["half"], px, "half_"))
    if reference is not None:
        ref, ref_px = reference
        if ref_px > 0 and abs(ref_px - px) > 0.01 * px:
            logger.warning("reference voxel size %.4g Å differs from the particles' %.4g Å",
                           ref_px, px)
        curves["reference"] = fourier_shell_correlation(maps[MAP_NAME], ref)
        metrics.update(_resolutions(curves["reference"], px, "reference_"))
        metrics["reference_pearson"] = _pearson(maps[MAP_NAME], ref)
    metrics["seconds"] = round(time.perf_counter() - t0, 2)

    report_progress(progress, "writing maps and figures", start + span)
    for name, vol in maps.items():
        files[name] = write_mrc(out / f"{name}.mrc", vol, voxel_size_angstrom=px)
    if curves:
        labels = {"half": "half maps" + (" (masked)" if cfg.fsc_mask_radius_px else ""),
                  "reference": f"map vs {reference_name}"}
        files["fsc_png"] = fsc_plot(
            {labels[k]: (c.frequency_cycles_per_pixel, c.correlation) for k, c in curves.items()},
            out / "fsc.png", pixel_size_angstrom=px, ylabel="FSC")
        files["fsc_csv"] = _write_fsc_csv(out / "fsc.csv", curves, px)
    panel = {"map": maps[MAP_NAME]}
    if reference is not None:
        panel = {"reference": reference[0], **panel}
    files["orthoslices"] = orthoslice_panel(panel, out / "orthoslices.png",
                                            pixel_size_angstrom=px)
    return files, metrics, maps, curves


def _check_sweep(cfg: SpaReconstructConfig, reference: PathLike | None) -> None:
    if cfg.lambda_sweep and reference is None:
        raise ValueError(
            f"--lambda-sweep {cfg.lambda_sweep} picks λ by the FSC against a known map: give "
            "--reference MAP, or choose one --lambda (without a reference the half maps "
            "cannot choose it fairly: a stronger λ smooths both halves alike)."
        )


def _ctf_used(stack: Any, mode: str) -> str:
    if mode == "auto":
        return "phase_flip" if stack.ctf is not None else "none"
    return mode


def _prepare(outputs: list[Path], inputs: list[Any], overwrite: bool, n: int | None) -> None:
    n_bytes = len(outputs) * mrc_nbytes((n or 64,) * 3) + 2 * 2**20
    check_outputs(outputs, inputs=[p for p in inputs if p is not None], overwrite=overwrite,
                  n_bytes=n_bytes)
    if overwrite:
        keep_backups(outputs)


def reconstruct_particles(
    star: PathLike,
    output_dir: PathLike,
    *,
    config: SpaReconstructConfig | None = None,
    reference: PathLike | None = None,
    pixel_size_angstrom: float | None = None,
    image_root: PathLike | None = None,
    stack_paths: Mapping[str, PathLike] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    config_path: PathLike | None = None,
) -> SpaOutputs:
    """Map, half maps and FSC from a RELION particle STAR file (``cryowedge spa reconstruct``).

    Writes into ``output_dir``: ``map.mrc`` (all particles), ``half1.mrc`` / ``half2.mrc``
    (half sets reconstructed independently), ``fsc.png`` and ``fsc.csv`` (half-map FSC, and
    map vs ``reference`` when given), ``orthoslices.png``, ``metrics.md`` / ``metrics.json``
    (resolution at FSC 0.143 and 0.5 in Å; with a reference also its FSC resolutions and
    Pearson correlation), ``spa.yaml`` and ``run.yaml``. MRCs carry the particles' pixel size.

    Parameters
    ----------
    star
        RELION particle STAR file (3.0 or 3.1+) with angles; images in the MRCS stack(s) it
        names (relative to ``image_root``, default its folder; ``stack_paths`` maps a name
        in ``rlnImageName`` to the actual file).
    output_dir
        Output directory.
    config
        :class:`~cryowedge.config.spa.SpaReconstructConfig` (default: the thesis's defaults).
    reference
        A known map (MRC, ``(n, n, n)`` on the particle box) to score the map against.
    pixel_size_angstrom
        Override the pixel size (Å).
    overwrite
        Replace earlier outputs (kept as ``<name>~``).
    progress
        ``progress(step, fraction)`` callback.
    config_path
        The YAML file the configuration came from (checked not to be overwritten).

    Returns
    -------
    SpaOutputs
    """
    t_start = time.perf_counter()
    cfg = config or SpaReconstructConfig()
    out = Path(output_dir)
    outputs = _map_outputs(out, cfg)
    _check_input(reference, "reference map")
    _check_sweep(cfg, reference)
    _device(cfg.device)  # a GPU asked for but absent: say so before any work
    _prepare(outputs, [star, reference, config_path], overwrite, None)
    report_progress(progress, "reading particles", 0.0)
    stack = bin_stack(load_particles(star, cfg, pixel_size_angstrom=pixel_size_angstrom,
                                     image_root=image_root, stack_paths=stack_paths), cfg.bin)
    ref = read_reference(reference, stack.image_size)
    logger.info("spa reconstruct: %d particles of %d px, %.4g Å", stack.n_particles,
                stack.image_size, stack.pixel_size_angstrom)
    files, metrics, maps, curves = _reconstruct_and_write(
        stack, out, cfg, reference=ref,
        reference_name=Path(reference).name if reference else "",
        progress=progress, start=0.02, span=0.93)
    md, js = _write_metrics(out, metrics, f"spa reconstruct {Path(star).name}")
    files.update(metrics_md=md, metrics_json=js, config=save_config(cfg, out))
    files["run"] = write_run_record(
        out, "spa reconstruct",
        {**cfg.model_dump(mode="json"), "star": str(star),
         "reference": None if reference is None else str(reference)},
        {k: str(v) for k, v in files.items()})
    report_progress(progress, "done", 1.0)
    return SpaOutputs(files=files, metrics=metrics, maps=maps, fsc=curves, stack=stack,
                      seconds=time.perf_counter() - t_start)


# ============================================================================ simulation
def simulate_particles(
    output_dir: PathLike,
    config: SpaSimulateConfig | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    config_path: PathLike | None = None,
) -> SpaOutputs:
    """A simulated particle set on disk (``cryowedge spa simulate``).

    Writes into ``output_dir``: ``particles.star`` + ``particles.mrcs`` (the images with the
    assigned poses, i.e. with the angular error; CTF columns when simulated; random half sets
    as ``rlnRandomSubset``), ``particles_true_poses.star`` (the same images, true poses),
    ``truth.mrc`` (the imaged density averaged over each voxel, maximum 1, voxel size set),
    with ``n_classes`` also ``class_averages.star`` + ``.mrcs``, plus ``metrics.md`` /
    ``metrics.json``, ``spa.yaml`` and ``run.yaml``.

    Returns
    -------
    SpaOutputs
        ``maps["truth"]``, ``stack`` the simulated particles.
    """
    from cryowedge.spa.simulate import simulate_spa, write_spa_simulation

    t_start = time.perf_counter()
    cfg = config or SpaSimulateConfig()
    out = Path(output_dir)
    names = ["particles.star", "particles.mrcs", "particles_true_poses.star", "truth.mrc",
             "metrics.md", "metrics.json", CONFIG_NAME, "run.yaml"]
    if cfg.n_classes is not None:
        names += ["class_averages.star", "class_averages.mrcs"]
    outputs = [out / n for n in names]
    density_file = None
    if cfg.density.lower() not in ("1a5t", "ribosome", "emd_5170"):
        density_file = _check_input(cfg.density, "density map")
    n = cfg.box_size
    n_bytes = (cfg.n_particles + 2 * n) * n * n * 4 + 2**20
    check_outputs(outputs, inputs=[p for p in (density_file, config_path) if p is not None],
                  overwrite=overwrite, n_bytes=n_bytes)
    if overwrite:
        keep_backups(outputs)
    report_progress(progress, "simulating particles", 0.05)
    sim = simulate_spa(cfg.density, **cfg.simulate_kwargs())
    report_progress(progress, "writing particles", 0.8)
    paths = write_spa_simulation(sim, out, overwrite=True)
    files: dict[str, Path] = dict(paths)
    sigma = float(np.max(sim.noise_sigma)) if sim.noise_sigma.size else 0.0
    metrics: dict[str, Any] = {
        "particles": sim.stack.n_particles,
        "box_px": sim.stack.image_size,
        "pixel_size_angstrom": sim.pixel_size_angstrom,
        "density": sim.source or cfg.density,
        "snr": "none" if cfg.clean or cfg.snr is None else cfg.snr,
        "noise_sigma": sigma,
        "ctf": cfg.ctf,
        "mean_angular_error_deg": float(np.mean(sim.angular_error_deg)),
        "half_set_sizes": " + ".join(
            str(int(np.sum(sim.stack.half_sets == k))) for k in (1, 2))
        if sim.stack.half_sets is not None else "none",
    }
    if sim.class_averages is not None:
        metrics["class_averages"] = sim.class_averages.n_particles
    md, js = _write_metrics(out, metrics, "spa simulate")
    files.update(metrics_md=md, metrics_json=js, config=save_config(cfg, out))
    files["run"] = write_run_record(out, "spa simulate", cfg.model_dump(mode="json"),
                                    {k: str(v) for k, v in files.items()})
    report_progress(progress, "done", 1.0)
    return SpaOutputs(files=files, metrics=metrics, maps={"truth": sim.truth}, stack=sim.stack,
                      seconds=time.perf_counter() - t_start)


# ============================================================================ refinement
def _refinement_data(stack: Any, mode: str) -> tuple[np.ndarray, Any]:
    """Images and the projector's CTF for the refinement under CTF ``mode``."""
    from cryowedge.spa.ctf_model import correct_ctf, stack_ctfs

    used = _ctf_used(stack, mode)
    if used in ("phase_flip", "wiener"):
        return correct_ctf(stack, used), None
    if used == "model":
        return np.asarray(stack.images, dtype=np.float32), (lambda idx: stack_ctfs(stack, idx))
    return np.asarray(stack.images, dtype=np.float32), None


def refine_particles(
    star: PathLike,
    output_dir: PathLike,
    *,
    config: SpaRefineConfig | None = None,
    reference: PathLike | None = None,
    true_star: PathLike | None = None,
    pixel_size_angstrom: float | None = None,
    image_root: PathLike | None = None,
    stack_paths: Mapping[str, PathLike] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    config_path: PathLike | None = None,
) -> SpaOutputs:
    """Joint angular refinement from the STAR file's poses (``cryowedge spa refine``).

    Runs :func:`cryowedge.spa.refine.joint_refinement` (thesis Algorithm 3) from the STAR
    angles and shifts — on each half set separately (``refine_halves`` with ``half_maps``, the
    gold standard), else on all particles — writes the refined poses as ``refined.star`` +
    ``refined.mrcs`` (a RELION 3.1 STAR file and a copy of the images), then reconstructs the
    map, half maps and FSC with the refined poses as :func:`reconstruct_particles` does
    (same files), plus ``refine_history.csv`` (objective and mean pose change per iteration).
    With ``true_star`` (e.g. ``particles_true_poses.star`` of ``spa simulate``) the
    orientation errors before and after are measured (after the best global rotation).

    With ``refine_halves`` off the half maps come from particles refined together, so their
    FSC can be optimistic.

    Returns
    -------
    SpaOutputs
    """
    import torch

    from cryowedge.spa.angles import angular_errors_deg, geodesic_distance_deg
    from cryowedge.spa.io import read_relion_particles, write_relion_particles
    from cryowedge.spa.refine import joint_refinement

    t_start = time.perf_counter()
    cfg = config or SpaRefineConfig()
    out = Path(output_dir)
    outputs = _map_outputs(out, cfg) + [out / "refined.star", out / "refined.mrcs",
                                        out / "refine_history.csv"]
    _check_input(reference, "reference map")
    _check_input(true_star, "true-pose STAR file")
    _check_sweep(cfg, reference)
    _device(cfg.device)  # a GPU asked for but absent: say so before any work
    _prepare(outputs, [star, reference, true_star, config_path], overwrite, None)
    report_progress(progress, "reading particles", 0.0)
    original = load_particles(star, cfg, pixel_size_angstrom=pixel_size_angstrom,
                              image_root=image_root, stack_paths=stack_paths)
    stack = bin_stack(original, cfg.bin)
    ref = read_reference(reference, stack.image_size)
    true_rot = None
    if true_star is not None:
        truth_stack = read_relion_particles(true_star, ctf=False, image_root=image_root,
                                            stack_paths=stack_paths,
                                            pixel_size_angstrom=stack.pixel_size_angstrom)
        if truth_stack.rotations is None or truth_stack.n_particles != stack.n_particles:
            raise ValueError(
                f"{str(true_star)!r} must hold angles for the same {stack.n_particles} "
                f"particles, in the same order (it has {truth_stack.n_particles})."
            )
        true_rot = truth_stack.rotations
    if cfg.half_maps and cfg.refine_halves:
        # gold standard: each half set refined on its own (from its own map)
        if stack.half_sets is None:
            stack = stack.with_random_halves(cfg.half_split_seed)
        groups = [np.flatnonzero(stack.half_sets == k) for k in (1, 2)]
        if min(len(g) for g in groups) == 0:
            raise ValueError(
                "a half set is empty (rlnRandomSubset); give both half sets particles, remove "
                "the column for a random split, or pass --no-refine-halves."
            )
    else:
        groups = [np.arange(stack.n_particles)]
    images, ctf = _refinement_data(stack, cfg.ctf)
    dtype = torch.float64 if cfg.double else torch.float32
    n_iter = cfg.refine_iter
    span = 0.6
    rotations = np.array(stack.rotations)
    shifts = np.array(stack.shifts_px)
    runs = []
    t0 = time.perf_counter()
    for g, idx in enumerate(groups):
        label = f"refine half {g + 1}" if len(groups) == 2 else "refine"
        at, width = 0.02 + span * g / len(groups), span / len(groups)

        def callback(info: Any, label: str = label, at: float = at, width: float = width) -> None:
            report_progress(progress, f"{label} {info.iteration}/{info.n_iter}",
                            at + width * info.iteration / info.n_iter)

        sub_ctf = ctf if ctf is None or len(groups) == 1 else (
            lambda k, idx=idx: ctf(idx[np.asarray(k)]))
        run = joint_refinement(
            images[idx],
            rotations[idx],
            shifts[idx],
            blob=cfg.blob(),
            scale=cfg.scale_list[-1],
            ctf=sub_ctf,
            n_iter=n_iter,
            reconstruct=cfg.reconstruction_step(),
            options=cfg.latent_options(),
            method=cfg.gradient,
            mask=None if cfg.support_mask == "none" else "sphere",
            callback=callback,
            dtype=dtype,
            device=_device(cfg.device),
        )
        rotations[idx], shifts[idx] = run.rotations, run.shifts_px
        runs.append(run)
    refine_seconds = time.perf_counter() - t0
    refined = stack.replace(rotations=rotations, shifts_px=shifts)
    change = geodesic_distance_deg(stack.rotations, rotations)
    files, metrics, maps, curves = _reconstruct_and_write(
        refined, out, cfg, reference=ref,
        reference_name=Path(reference).name if reference else "",
        progress=progress, start=0.02 + span, span=0.95 - 0.02 - span)
    metrics = {
        **metrics,
        "refine_iterations": max(r.n_iter for r in runs),
        "refined_separately": "half sets" if len(groups) == 2 else "all together",
        "refine_seconds": round(refine_seconds, 2),
        "mean_angle_change_deg": float(np.mean(change)),
        "median_angle_change_deg": float(np.median(change)),
        "mean_shift_change_px": float(np.mean(np.linalg.norm(
            shifts - np.asarray(stack.shifts_px), axis=1))),
    }
    if true_rot is not None:
        before, _ = angular_errors_deg(stack.rotations, true_rot)
        after, _ = angular_errors_deg(rotations, true_rot)
        metrics.update(
            mean_angle_error_before_deg=float(np.mean(before)),
            mean_angle_error_after_deg=float(np.mean(after)),
            median_angle_error_before_deg=float(np.median(before)),
            median_angle_error_after_deg=float(np.median(after)),
        )
    # the refined poses on the original images (shifts back in original pixels)
    written = original.replace(
        rotations=rotations,
        shifts_px=shifts * original.image_size / stack.image_size,
        half_sets=stack.half_sets,
    )
    star_path, mrcs_path = write_relion_particles(out / "refined.star", written, overwrite=True)
    files.update(refined_star=star_path, refined_stack=mrcs_path)
    keys = list(runs[0].history)
    rows = [",".join(["set", "iteration", *keys])]
    for g, run in enumerate(runs):
        name = f"half{g + 1}" if len(runs) == 2 else "all"
        for i in range(run.n_iter):
            rows.append(",".join([name, str(i + 1),
                                  *[f"{run.history[k][i]:.6g}" for k in keys]]))
    files["history"] = write_text_atomic(out / "refine_history.csv", "\n".join(rows) + "\n")
    md, js = _write_metrics(out, metrics, f"spa refine {Path(star).name}")
    files.update(metrics_md=md, metrics_json=js, config=save_config(cfg, out))
    files["run"] = write_run_record(
        out, "spa refine",
        {**cfg.model_dump(mode="json"), "star": str(star),
         "reference": None if reference is None else str(reference),
         "true_star": None if true_star is None else str(true_star)},
        {k: str(v) for k, v in files.items()})
    report_progress(progress, "done", 1.0)
    return SpaOutputs(files=files, metrics=metrics, maps=maps, fsc=curves, stack=refined,
                      seconds=time.perf_counter() - t_start)
