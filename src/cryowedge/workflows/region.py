"""Reconstruct a region: a box of the full tomogram, a z offset, an X-axis tilt.

The plan (:func:`cryowedge.geometry.region.plan_region`) says which lab-frame volume to
reconstruct and from which detector rows; this module applies it to data:

1. **Input** (:func:`region_input`, or :class:`RowWindow` when streaming): only the detector
   rows the lab volume needs are read. A raw geometry (tilt axis not ``+Y``, per-view
   matrices, shifts along the axis) is first resampled into the aligned frame (the bilinear
   resampling of :meth:`~cryowedge.operators.TiltProjector.to_aligned`, which FBP does anyway
   and streaming always does), so the region's sub-pixel shifts act in the projector and
   add no resampling of the data. Iterative methods then solve the aligned-frame system,
   as they do when streaming.
2. **Reconstruction** of the lab volume with the run's method: the ROI's ``x`` offset and the
   z offset are per-view shifts of the projector (:meth:`RegionPlan.lab_geometry`), its
   ``x`` width is the volume's.
3. **Output** (:func:`finish_region`): the lab volume itself, or, with an X-axis tilt, its
   bilinear resampling in the ``(y, z)`` plane onto the tilted output box (one extra
   interpolation; ``x`` is not resampled).

:func:`reconstruct_region` does all three in memory; :func:`reconstruct_region_streamed` does
them slab by slab into an MRC file (with an X-axis tilt the lab volume goes to a temporary
file first and is resampled slab by slab). The output's MRC origin records where it sits in
the full tomogram (:meth:`RegionPlan.origin_angstrom`). Arrays: tilt series
``(n_tilts, y, x)``, volumes ``(z, y, x)`` float32; conventions in docs/conventions.md.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.region import (
    ReconstructionRegion,
    RegionPlan,
    is_aligned,
    plan_region,
    x_axis_tilt_from_xtilt,
)
from cryowedge.geometry.tilt import TiltGeometry

__all__ = [
    "RowWindow",
    "finish_region",
    "reconstruct_region",
    "reconstruct_region_streamed",
    "region_input",
    "region_of",
    "region_origin",
    "region_slab_rows",
    "rotate_to_output",
]

logger = logging.getLogger(__name__)


def region_of(
    config: Any,
    *,
    xtilt_path: str | Path | None = None,
    n_views: int | None = None,
    keep: np.ndarray | None = None,
) -> ReconstructionRegion | None:
    """The region of a reconstruction config (``roi``, ``z_offset``, ``x_axis_tilt_deg``) and
    an IMOD ``.xtilt`` file, or None when there is none (the full tomogram, lab frame).

    The ``.xtilt`` file must have ``n_views`` values (the whole stack, before ``keep`` drops
    excluded views); the X-axis tilt is ``x_axis_tilt_deg − mean(values of the kept views)``
    (:func:`~cryowedge.geometry.region.x_axis_tilt_from_xtilt`). ValueError, one line, for a
    file that does not match the stack or a tilt beyond the accepted range.
    """
    alpha = float(getattr(config, "x_axis_tilt_deg", 0.0) or 0.0)
    if xtilt_path is not None:
        from cryowedge.io.alignment import read_imod_xtilt

        values = read_imod_xtilt(xtilt_path, n_views)
        alpha = x_axis_tilt_from_xtilt(values if keep is None else values[keep], alpha)
    region = ReconstructionRegion(
        roi=getattr(config, "roi", None),
        z_offset=float(getattr(config, "z_offset", 0.0) or 0.0),
        x_axis_tilt_deg=round(alpha, 9),
    )
    return None if region.is_full else region


def region_origin(
    plan: RegionPlan | None, voxel_size_angstrom: float
) -> tuple[float, float, float]:
    """MRC origin ``(z, y, x)`` in Å of a region's output (0 without a region)."""
    return (0.0, 0.0, 0.0) if plan is None else plan.origin_angstrom(voxel_size_angstrom)


class RowWindow:
    """Read-only ``(n_tilts, y1 − y0, x)`` window of rows ``y0:y1`` of a stack, read on indexing.

    ``base`` is anything indexable as ``base[t_key, y_slice, x_key]`` (a NumPy array, memory
    map, :class:`~cryowedge.io.mrc.LazyMrcArray`, :class:`~cryowedge.io.views.ViewSubset`).
    Row keys must be slices with step 1 (what streaming reads) or ints.
    """

    ndim = 3

    def __init__(self, base: Any, y0: int, y1: int) -> None:
        ny = int(base.shape[1])
        if not 0 <= y0 < y1 <= ny:
            raise ValueError(f"rows {y0}:{y1} must satisfy 0 <= y0 < y1 <= {ny}.")
        self.base, self.y0, self.y1 = base, int(y0), int(y1)
        self.shape = (int(base.shape[0]), self.y1 - self.y0, int(base.shape[2]))
        self.dtype = np.dtype(base.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if key == (Ellipsis,):
            key = ()
        first = key[0] if key else slice(None)
        rows = key[1] if len(key) > 1 else slice(None)
        rest = key[2:]
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[1])
            if step != 1:
                raise ValueError("RowWindow reads rows with step 1 only.")
            rows = slice(self.y0 + start, self.y0 + max(start, stop))
        else:
            index = range(self.shape[1])[int(rows)]
            rows = self.y0 + index
        return np.asarray(self.base[(first, rows, *rest)])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)


def _aligned(geometry: TiltGeometry) -> TiltGeometry:
    """The geometry of a series resampled into ``geometry``'s aligned frame."""
    return geometry.with_(
        detector_shape=geometry.aligned_detector_shape,
        tilt_axis_angle_deg=0.0,
        shifts_px=None,
        view_matrices=None,
    )


def region_input(
    source: Any, geometry: TiltGeometry, plan: RegionPlan | None
) -> tuple[np.ndarray, TiltGeometry, tuple[int, int, int] | None]:
    """The in-memory input of a region: ``(data, geometry, volume_shape)``.

    ``data`` is float32 ``(n_tilts, rows, n_perp)``, the rows ``plan.lab_rows`` of the aligned
    frame: read directly when ``geometry`` is aligned (only those rows are read), else
    resampled into the aligned frame first (:meth:`TiltProjector.to_aligned`, what FBP and
    streaming do), so that the region's shifts act in the projector and the detector
    resampling is the full tomogram's. ``geometry`` reconstructs the lab volume, of shape
    ``volume_shape``. Without a plan: ``(source as float32, geometry, None)``.
    """
    if plan is None:
        return np.asarray(source, dtype=np.float32), geometry, None
    ya, yb = plan.lab_rows
    if is_aligned(geometry):
        data = np.asarray(RowWindow(source, ya, yb), dtype=np.float32)
        return data, plan.lab_geometry(geometry), plan.lab_shape
    from cryowedge.operators.tilt_projector import TiltProjector

    n_axis = geometry.aligned_detector_shape[0]
    logger.info(
        "resampling the series into the aligned frame for the region (rows %d:%d of %d)",
        ya,
        yb,
        n_axis,
    )
    data = torch.from_numpy(np.asarray(source, dtype=np.float32))
    aligned = TiltProjector(geometry, (1, n_axis, 1)).to_aligned(data)[:, ya:yb]
    return (
        np.ascontiguousarray(aligned.numpy()),
        plan.lab_geometry(_aligned(geometry)),
        plan.lab_shape,
    )


def rotate_to_output(
    lab: torch.Tensor | np.ndarray,
    plan: RegionPlan,
    j0: int = 0,
    j1: int | None = None,
    lab_row0: int = 0,
) -> torch.Tensor:
    """Output rows ``j0:j1`` ``(nz, j1 − j0, nx)`` sampled bilinearly from the lab volume.

    ``lab`` is ``(nz_lab, rows, nx)``: the lab volume's rows ``lab_row0 : lab_row0 + rows``
    (all of them by default). Samples outside it are zero. The interpolation is in the
    ``(z, y)`` plane only (``torch.nn.functional.grid_sample``, bilinear, corners aligned,
    with ``x`` as channels), i.e. the trilinear rotation about ``x`` of
    :class:`~cryowedge.operators.rotation.Rotation3D` without its zero-weight ``x`` taps.
    """
    vol = torch.as_tensor(lab)
    if not vol.dtype.is_floating_point:
        vol = vol.to(torch.float32)
    kz, jy = plan.sample_positions(j0, j1)
    jy = jy - lab_row0
    n_z, n_y = vol.shape[0], vol.shape[1]
    # normalised grid (align_corners=True): -1 is index 0, +1 is index n - 1
    gx = 2.0 * jy / max(n_y - 1, 1) - 1.0
    gy = 2.0 * kz / max(n_z - 1, 1) - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1)).to(vol.dtype).to(vol.device)[None]
    image = vol.permute(2, 0, 1).unsqueeze(0)  # (1, nx, nz_lab, rows): x as channels
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].permute(1, 2, 0).contiguous()  # (nz, j1 - j0, nx)


def finish_region(volume: np.ndarray, plan: RegionPlan | None) -> np.ndarray:
    """The output volume from the reconstructed lab volume (float32 NumPy).

    Without an X-axis tilt the lab volume is the output; with one it is resampled onto the
    tilted output box (:func:`rotate_to_output`).
    """
    if plan is None or not plan.rotates:
        return volume
    out = rotate_to_output(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)), plan)
    return out.numpy()


def reconstruct_region(
    tilt_series: Any,
    geometry: TiltGeometry,
    config: ReconstructConfig,
    region: ReconstructionRegion,
    **kwargs: Any,
) -> np.ndarray:
    """Reconstruct ``region`` of ``(n_tilts, y, x)`` data in memory → ``(z, ny, nx)`` float32.

    The full tomogram is ``geometry.default_volume_shape(config.thickness)``; ``kwargs`` go to
    :func:`~cryowedge.workflows.reconstruct.reconstruct_array` (progress, checkpoints...).
    """
    from cryowedge.workflows.reconstruct import reconstruct_array

    plan = plan_region(geometry, region, geometry.default_volume_shape(config.thickness))
    data, lab_geometry, lab_shape = region_input(tilt_series, geometry, plan)
    volume = reconstruct_array(data, lab_geometry, config, volume_shape=lab_shape, **kwargs)
    return finish_region(volume, plan)


# --------------------------------------------------------------------------- streaming


def region_slab_rows(
    config: ReconstructConfig,
    geometry: TiltGeometry,
    plan: RegionPlan,
    memory_budget_bytes: int | None = None,
) -> int | None:
    """:func:`~cryowedge.workflows.reconstruct.plan_streaming` for the lab volume of ``plan``:
    rows per streamed slab, or None to run in memory. An explicit ``config.slab_rows`` is
    capped at the lab volume's rows."""
    from cryowedge.workflows.reconstruct import plan_streaming

    nz_lab, ny_lab, _ = plan.lab_shape
    changes: dict[str, Any] = {"thickness": nz_lab}
    if config.slab_rows is not None:
        changes["slab_rows"] = min(int(config.slab_rows), ny_lab)
    n_perp = geometry.aligned_detector_shape[1]
    lab_aligned = _aligned(geometry).with_(detector_shape=(ny_lab, n_perp))
    return plan_streaming(config.model_copy(update=changes), lab_aligned, memory_budget_bytes)


def _halo_rows(config: ReconstructConfig) -> int:
    from cryowedge.config.registry import get_method

    halo = getattr(config, "halo_rows", 0)
    return int(halo) if get_method(config.method).slab_mode == "halo" else 0


def _slab_runner(config: ReconstructConfig) -> Callable[..., np.ndarray]:
    """A ``run_slab`` that reconstructs each slab with ``config`` into the slab's own
    ``(nz, rows, nx)`` (``nx`` may be narrower than the detector: a ROI)."""
    from cryowedge.workflows.reconstruct import reconstruct_array

    def run(
        series_slab: np.ndarray, geometry: TiltGeometry, shape: tuple[int, int, int]
    ) -> np.ndarray:
        return reconstruct_array(
            np.asarray(series_slab, dtype=np.float32),
            geometry,
            config,
            volume_shape=tuple(int(s) for s in shape),
        )

    return run


def _temporary(output_path: Path, what: str) -> Path:
    return output_path.parent / f".{output_path.stem}.{what}.{secrets.token_hex(4)}.mrc"


def reconstruct_region_streamed(
    tilt_series: Any,
    geometry: TiltGeometry,
    output_path: str | Path,
    config: ReconstructConfig,
    *,
    plan: RegionPlan,
    slab_rows: int,
    overwrite: bool = True,
    progress: Callable[[str, float], None] | None = None,
) -> Path:
    """Reconstruct ``plan`` slab by slab of ``slab_rows`` rows into the MRC file ``output_path``.

    Like :func:`~cryowedge.workflows.reconstruct.reconstruct_streamed` (one data scale for all
    slabs, TV halos), reading only the lab volume's rows. A raw geometry is resampled into
    the aligned frame first (a temporary file next to the output, as streaming always does).
    With an X-axis tilt the lab volume is streamed into a temporary file, then resampled onto
    the output box in slabs of ``slab_rows`` output rows. The output has the geometry's
    voxel size and the region's origin; temporary files are removed.
    """
    from cryowedge.io.mrc import MrcSlabWriter, open_mrc_lazy
    from cryowedge.workflows.streaming import (
        align_tilt_series,
        stream_reconstruct,
        tilt_series_std,
        with_data_scale,
    )

    output_path = Path(output_path)
    px = geometry.pixel_size_angstrom
    temporaries: list[Path] = []
    try:
        source, geom = tilt_series, geometry
        if not is_aligned(geometry):
            temporaries.append(_temporary(output_path, "aligned"))
            source, geom = align_tilt_series(tilt_series, geometry, temporaries[-1])
        window = RowWindow(source, *plan.lab_rows)
        lab_geometry = plan.lab_geometry(geom)
        scale = tilt_series_std(window) if config.normalize else 1.0
        runner = _slab_runner(config.model_copy(update={"normalize": False}))
        if scale != 1.0:
            runner = with_data_scale(runner, scale)
        rows = min(int(slab_rows), plan.lab_shape[1])
        target = output_path
        if plan.rotates:
            temporaries.append(_temporary(output_path, "lab"))
            target = temporaries[-1]
        stream_reconstruct(
            window,
            lab_geometry,
            plan.lab_shape,
            target,
            runner,
            slab_rows=rows,
            halo_rows=_halo_rows(config),
            voxel_size_angstrom=px,
            origin_angstrom=(0.0, 0.0, 0.0) if plan.rotates else plan.origin_angstrom(px),
            overwrite=overwrite or plan.rotates,
            progress=progress,
        )
        if plan.rotates:
            lab = open_mrc_lazy(target)
            ny = plan.output_shape[1]
            step = max(1, min(int(slab_rows), ny))
            with MrcSlabWriter(
                output_path,
                plan.output_shape,
                voxel_size_angstrom=px,
                origin_angstrom=plan.origin_angstrom(px),
                overwrite=overwrite,
            ) as writer:
                for j0 in range(0, ny, step):
                    j1 = min(ny, j0 + step)
                    la, lb = plan.lab_rows_for(j0, j1)
                    block = torch.from_numpy(np.ascontiguousarray(lab[:, la:lb], dtype=np.float32))
                    writer.write_rows(j0, rotate_to_output(block, plan, j0, j1, lab_row0=la))
                    if progress is not None:
                        progress(f"x-axis tilt {j1}/{ny} rows", j1 / ny)
    finally:
        for path in temporaries:
            path.unlink(missing_ok=True)
    return output_path
