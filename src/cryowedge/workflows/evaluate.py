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
from cryowedge.metrics.normalize import check_normalize
from cryowedge.viz.figures import fsc_plot

__all__ = ["DEFAULT_NORMALIZE", "EVALUATION_FILES", "evaluate_arrays", "evaluate_files"]

#: What :func:`evaluate_arrays` writes into its ``output_dir``.
EVALUATION_FILES = ("metrics.md", "metrics.json", "fsc.png")

#: Grey-level normalisation used by ``cryowedge evaluate`` unless told otherwise: the
#: least-squares gain and offset of each volume against the reference. Methods differ in
#: calibration (filter gain, positivity, regularisation), and comparing methods is what
#: evaluation is for, so raw grey levels would partly score calibration.
DEFAULT_NORMALIZE = "affine"


def evaluate_arrays(
    volumes: dict[str, np.ndarray],
    reference: np.ndarray,
    *,
    pixel_size_angstrom: float,
    tilt_range_deg: tuple[float, float] | None = None,
    output_dir: str | Path | None = None,
    normalize: str = DEFAULT_NORMALIZE,
) -> dict[str, dict[str, float]]:
    """Metrics per volume; with ``output_dir`` also writes metrics.md/.json and fsc.png.

    Parameters
    ----------
    volumes : dict of str to numpy.ndarray, each shape (z, y, x)
        Reconstructions by name, each the shape of ``reference``.
    reference : numpy.ndarray, shape (z, y, x)
        Ground truth.
    pixel_size_angstrom : float
        Voxel size in Å, for the FSC resolutions.
    tilt_range_deg : (float, float), optional
        Tilt range in degrees; adds the inside/outside missing-wedge correlations.
    output_dir : path, optional
        Directory for ``metrics.md`` (the table, preceded by the normalisation used),
        ``metrics.json`` (each row also records ``"normalize"``) and ``fsc.png``.
    normalize : {"none", "zscore", "affine"}
        Grey-level normalisation of each volume before the metrics
        (:func:`cryowedge.metrics.compare_volumes`); default :data:`DEFAULT_NORMALIZE`.
        The FSC plot is unaffected (FSC ignores a gain; an offset only moves the
        excluded zero frequency).

    Returns
    -------
    dict of str to dict of str to float
        ``{name: compare_volumes(...)}``.
    """
    normalize = check_normalize(normalize)
    for name, vol in volumes.items():
        if vol.shape != reference.shape:
            raise ValueError(
                f"{name} has shape {vol.shape} but the reference has {reference.shape}."
            )
    wedge = missing_wedge_mask(reference.shape, tilt_range_deg) if tilt_range_deg else None
    rows = {
        name: compare_volumes(vol, reference, pixel_size_angstrom=pixel_size_angstrom,
                              wedge_mask=wedge, normalize=normalize)
        for name, vol in volumes.items()
    }
    if output_dir is not None:
        out = Path(output_dir)
        table = metrics_table_markdown(rows, normalize=normalize)
        write_text_atomic(out / "metrics.md", table + "\n")
        records = {name: {**row, "normalize": normalize} for name, row in rows.items()}
        write_text_atomic(out / "metrics.json", json.dumps(records, indent=2))
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
    normalize: str = DEFAULT_NORMALIZE,
    overwrite: bool = False,
) -> dict[str, dict[str, float]]:
    """Read MRC volumes and a reference, compute metrics, write the table and FSC plot.

    See :func:`evaluate_arrays` for ``tilt_range_deg`` and ``normalize``; the pixel
    size is the reference's voxel size (1 Å if its header has none). The outputs
    (:data:`EVALUATION_FILES` in ``output_dir``) are checked first
    (:func:`cryowedge.workflows.outputs.check_outputs`): existing ones only with
    ``overwrite`` (then kept as ``<name>~``), none of them an input.
    """
    from cryowedge.workflows.outputs import check_outputs, keep_backups

    normalize = check_normalize(normalize)
    outputs = [Path(output_dir) / name for name in EVALUATION_FILES]
    check_outputs(outputs, inputs=[*volume_paths, reference_path], overwrite=overwrite,
                  n_bytes=4 * 2**20)
    reference = read_mrc(reference_path)
    px = float(reference.voxel_size_angstrom[-1]) if reference.has_voxel_size else 1.0
    volumes = {Path(p).stem: read_mrc(p).data for p in volume_paths}
    if overwrite:
        keep_backups(outputs)
    return evaluate_arrays(volumes, reference.data, pixel_size_angstrom=px,
                           tilt_range_deg=tilt_range_deg, output_dir=output_dir,
                           normalize=normalize)
