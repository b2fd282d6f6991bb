"""``cryowedge spa cryogan`` end to end: read or simulate particles, train, write the outputs.

:func:`run_cryogan` reads a RELION particle STAR file (images + CTF; poses are ignored) or
simulates a data set (:class:`~cryowedge.config.spa_cryogan.CryoGanDataConfig`), trains two
half-set CryoGANs (:func:`~cryowedge.spa.cryogan.train.train_cryogan`), and writes into the
output directory the half maps and the full map (MRC with the voxel size), the FSC plot, the
resolution-vs-epoch table and plot (:mod:`~cryowedge.spa.cryogan.outputs`), the resolved
``cryogan.yaml`` (and ``data.yaml`` for a simulated set, with ``truth.mrc``) and the
checkpoint ``cryogan.ckpt.pt`` (``resume=True`` continues from it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.config.spa_cryogan import CryoGanConfig, CryoGanDataConfig
from cryowedge.spa.cryogan.outputs import write_outputs
from cryowedge.spa.cryogan.train import CryoGanResult, ProgressFn, train_cryogan

__all__ = ["CryoGanRun", "run_cryogan", "simulate_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class CryoGanRun:
    """What :func:`run_cryogan` did: the training result and the files written."""

    result: CryoGanResult
    files: dict[str, Path]


def simulate_dataset(data: CryoGanDataConfig) -> Any:
    """The :class:`~cryowedge.spa.simulate.SpaSimulation` a data config describes."""
    from cryowedge.spa.simulate import simulate_spa

    return simulate_spa(
        data.density,
        box_size=data.box_size,
        n_particles=data.n_particles,
        pixel_size_angstrom=data.pixel_size_angstrom,
        snr=data.snr,
        ctf=data.ctf,
        defocus_range_angstrom=(data.defocus_min_angstrom, data.defocus_max_angstrom),
        b_factor_angstrom2=data.b_factor_angstrom2,
        max_shift_px=data.max_shift_px,
        seed=data.seed,
    )


def run_cryogan(
    out_dir: str | Path,
    config: CryoGanConfig,
    *,
    particles: str | Path | None = None,
    data: CryoGanDataConfig | None = None,
    patches: str | Path | None = None,
    truth: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    inverted_contrast: bool = False,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> CryoGanRun:
    """Train CryoGAN on a STAR particle set (``particles``) or a simulated one (``data``).

    Parameters
    ----------
    out_dir : path
        Output directory (created).
    config : CryoGanConfig
        Training options.
    particles : path, optional
        RELION particle STAR file with CTF columns (exclusive with ``data``).
    data : CryoGanDataConfig, optional
        Simulate this data set instead (its truth is used for the truth columns).
    patches : path, optional
        MRCS stack ``(K, n, n)`` of background patches (``config.noise == "patches"``).
    truth : path, optional
        Reference map (MRC, ``(n, n, n)``) to score the maps against (STAR input).
    pixel_size_angstrom : float, optional
        Override the STAR/MRC pixel size (Å).
    inverted_contrast : bool
        The STAR images have dense matter bright (RELION's usual extraction).
    resume : bool
        Continue from ``out_dir/cryogan.ckpt.pt``.
    progress : callable, optional
        ``progress(step, fraction)``.
    """
    from cryowedge.io.mrc import read_mrc, write_mrc

    if (particles is None) == (data is None):
        raise ValueError("give either a particle STAR file or --simulate (not both, not neither).")
    out = Path(out_dir)
    truth_map = None
    if particles is not None:
        from cryowedge.spa.io import read_relion_particles

        path = Path(particles)
        if not path.exists():
            raise FileNotFoundError(f"particle STAR file {path} does not exist.")
        if progress:
            progress("reading particles", 0.0)
        stack = read_relion_particles(
            path,
            ctf=True,
            pixel_size_angstrom=pixel_size_angstrom,
            inverted_contrast=inverted_contrast,
        )
        if truth is not None:
            truth_map = read_mrc(truth).data
    else:
        if progress:
            progress("reading (simulating particles)", 0.0)
        sim = simulate_dataset(data)
        stack, truth_map = sim.stack, sim.truth
    patch_arr = None
    if patches is not None:
        patch_arr = read_mrc(patches).data
        if patch_arr.ndim == 2:
            patch_arr = patch_arr[None]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cryogan.yaml").write_text(config.to_yaml(), encoding="utf-8")
    if data is not None:
        (out / "data.yaml").write_text(data.to_yaml(), encoding="utf-8")
        write_mrc(out / "truth.mrc", truth_map, voxel_size_angstrom=stack.pixel_size_angstrom)
    result = train_cryogan(
        stack,
        config,
        out_dir=out,
        truth=None if truth_map is None else np.asarray(truth_map, np.float32),
        patches=patch_arr,
        resume=resume,
        progress=progress,
    )
    if progress:
        progress("writing maps", 1.0)
    files = write_outputs(result, out)
    files["config"] = out / "cryogan.yaml"
    return CryoGanRun(result, files)
