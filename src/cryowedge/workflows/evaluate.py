"""``cryowedge evaluate``: metrics of reconstructions against a reference (+ FSC plot)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cryowedge.geometry.tilt import missing_wedge_mask
from cryowedge.io._atomic import write_text_atomic
from cryowedge.io.mrc import read_mrc
from cryowedge.metrics import compare_volumes, fourier_shell_correlation, metrics_table_markdown
from cryowedge.viz.figures import fsc_plot

__all__ = ["evaluate_arrays", "evaluate_files"]


def evaluate_arrays(
    volumes: dict[str, np.ndarray],
    reference: np.ndarray,
    *,
    pixel_size_angstrom: float,
    tilt_range_deg: tuple[float, float] | None = None,
    output_dir: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per volume; with ``output_dir`` also writes metrics.md/.json and fsc.png."""
    for name, vol in volumes.items():
        if vol.shape != reference.shape:
            raise ValueError(f"{name} has shape {vol.shape} but the reference has {reference.shape}.")
    wedge = missing_wedge_mask(reference.shape, tilt_range_deg) if tilt_range_deg else None
    rows = {
        name: compare_volumes(vol, reference, pixel_size_angstrom=pixel_size_angstrom, wedge_mask=wedge)
        for name, vol in volumes.items()
    }
    if output_dir is not None:
        out = Path(output_dir)
        write_text_atomic(out / "metrics.md", metrics_table_markdown(rows) + "\n")
        write_text_atomic(out / "metrics.json", json.dumps(rows, indent=2))
        curves = {}
        for name, vol in volumes.items():
            res = fourier_shell_correlation(vol, reference)
            curves[name] = (res.frequency_cycles_per_pixel, res.correlation)
        fsc_plot(curves, out / "fsc.png", pixel_size_angstrom=pixel_size_angstrom)
    return rows


def evaluate_files(
    volume_paths: Sequence[str | Path],
    reference_path: str | Path,
    output_dir: str | Path,
    *,
    tilt_range_deg: tuple[float, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Read MRC volumes and a reference, compute metrics, write the table and FSC plot."""
    reference = read_mrc(reference_path)
    px = float(reference.voxel_size_angstrom[-1]) if reference.has_voxel_size else 1.0
    volumes = {Path(p).stem: read_mrc(p).data for p in volume_paths}
    return evaluate_arrays(volumes, reference.data, pixel_size_angstrom=px,
                           tilt_range_deg=tilt_range_deg, output_dir=output_dir)
