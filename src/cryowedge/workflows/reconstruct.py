"""``cryowedge reconstruct``: tilt-series file → tomogram MRC (voxel size kept)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.utils.device import resolve_device
from cryowedge.workflows._record import ProgressCallback, report, write_run_record

logger = logging.getLogger(__name__)

__all__ = ["reconstruct_array", "reconstruct_file"]


def reconstruct_array(tilt_series: np.ndarray, geometry: TiltGeometry, config: ReconstructConfig) -> np.ndarray:
    """Reconstruct ``(n_tilts, y, x)`` with ``config`` → ``(z, y, x)`` float32 NumPy volume."""
    from cryowedge.recon.fbp import fbp, wbp

    device = resolve_device(config.device)
    shape = geometry.default_volume_shape(config.thickness)
    common = dict(
        volume_shape=shape, filter_name=config.filter_name, cutoff=config.cutoff,
        radial_cutoff=config.radial_cutoff, radial_falloff=config.radial_falloff,
        padding=config.padding, device=device,
    )
    if config.method == "fbp":
        vol = fbp(tilt_series, geometry, sirt_iterations=config.sirt_iterations, **common)
    else:
        vol = wbp(tilt_series, geometry, **common)
    return vol.cpu().numpy().astype(np.float32)


def reconstruct_file(
    tilt_series_path: str | Path,
    output_path: str | Path,
    config: ReconstructConfig,
    *,
    angles_path: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    overwrite: bool = True,
    progress: ProgressCallback | None = None,
) -> Path:
    """Read, validate, reconstruct and write atomically; returns the output path.

    All input checks (file exists, angles match images, finite values, writable output)
    happen before the reconstruction starts.
    """
    output_path = Path(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass --overwrite to replace it.")
    resolve_device(config.device)  # fail early on an unavailable GPU
    report(progress, "reading", 0.0)
    series = load_tilt_series(
        tilt_series_path, angles_path, tilt_axis_angle_deg=config.tilt_axis_angle_deg,
        pixel_size_angstrom=pixel_size_angstrom,
    )
    report(progress, config.method, 0.2)
    volume = reconstruct_array(series.data, series.geometry, config)
    report(progress, "writing", 0.9)
    write_mrc(output_path, volume, voxel_size_angstrom=series.geometry.pixel_size_angstrom, overwrite=overwrite)
    write_run_record(
        output_path.parent, "reconstruct",
        {**config.model_dump(mode="json"), "input": str(tilt_series_path),
         "angles": str(angles_path) if angles_path else None, "geometry": series.geometry.to_dict()},
        {"volume": str(output_path)}, name=output_path.stem + ".run.yaml",
    )
    report(progress, "done", 1.0)
    return output_path
