"""``cryowedge reconstruct``: tilt-series file → tomogram MRC (voxel size kept)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.config.models import IterativeConfig, ReconstructConfig
from cryowedge.config.registry import get_method
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import write_mrc
from cryowedge.io.orientation import orient_origin, orient_volume, reorient_mrc_file
from cryowedge.io.tilt_series import load_tilt_series
from cryowedge.io.views import ViewSubset, binned_geometry, kept_views, read_views
from cryowedge.solvers import Callback
from cryowedge.utils.device import cpu_threads, resolve_device
from cryowedge.workflows._record import ProgressFn, report_progress, write_run_record
from cryowedge.workflows.methods import MethodContext, data_scale

logger = logging.getLogger(__name__)

__all__ = [
    "data_scale",
    "plan_streaming",
    "reconstruct_array",
    "reconstruct_file",
    "reconstruct_streamed",
    "solver_kwargs",
]


def reconstruct_array(
    tilt_series: np.ndarray,
    geometry: TiltGeometry,
    config: ReconstructConfig,
    *,
    progress: ProgressFn | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    callback: Callback | None = None,
    volume_shape: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Reconstruct ``(n_tilts, y, x)`` with ``config`` → ``(z, y, x)`` float32 NumPy volume.

    Runs the runner that the method registry (:mod:`cryowedge.config.registry`) holds for
    ``config.method``: direct methods (fbp, wbp) filter and back-project; iterative methods
    (sirt, sart, art, cgls, tv) run their solver of :mod:`cryowedge.solvers` on the tilt
    projector. ``checkpoint_path``/``resume`` apply to iterative methods (see
    :mod:`cryowedge.workflows.checkpoint`); ``callback`` receives each iteration's report.
    ``volume_shape`` ``(nz, y, nx)`` replaces ``geometry.default_volume_shape(config.thickness)``
    (a region's lab volume, :mod:`cryowedge.workflows.region`; its ``nx`` may be narrower).
    """
    device = resolve_device(config.device)
    if volume_shape is None:
        volume_shape = geometry.default_volume_shape(config.thickness)
    context = MethodContext(volume_shape=tuple(volume_shape), device=device,
                            progress=progress, checkpoint_path=checkpoint_path, resume=resume,
                            callback=callback)
    return get_method(config.method).load_runner()(tilt_series, geometry, config, context)


def solver_kwargs(config: IterativeConfig) -> dict[str, Any]:
    """The keyword arguments of ``cryowedge.solvers.SOLVERS[config.method]`` from a config."""
    return config.solver_kwargs()


def _with_config_threads(func: Any) -> Any:
    """Run ``func(tilt_series_path, output_path, config, ...)`` with ``config.threads``."""

    @functools.wraps(func)
    def wrapper(tilt_series_path: Any, output_path: Any, config: ReconstructConfig,
                *args: Any, **kwargs: Any) -> Any:
        with cpu_threads(config.threads):
            return func(tilt_series_path, output_path, config, *args, **kwargs)

    return wrapper


@_with_config_threads
def reconstruct_file(
    tilt_series_path: str | Path,
    output_path: str | Path,
    config: ReconstructConfig,
    *,
    angles_path: str | Path | None = None,
    pixel_size_angstrom: float | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    resume: bool = False,
    restart: bool = False,
    config_path: str | Path | None = None,
    alignment_path: str | Path | None = None,
    preview: bool = False,
    defocus_path: str | Path | None = None,
    xtilt_path: str | Path | None = None,
) -> Path:
    """Read, validate, reconstruct and write atomically; returns the output path.

    ``alignment_path`` (IMOD ``.xf`` or AreTomo ``.aln``) aligns a raw stack through the
    geometry (per-view rotation and shifts, one interpolation: :mod:`cryowedge.io.alignment`).
    ``config.exclude_views`` (IMOD-style 1-based list, :mod:`cryowedge.io.views`) drops views
    from the stack and the geometry (after the alignment, which describes the whole stack),
    and ``config.bin_factor`` then bins the images by block mean (pixel size × bin, shifts ÷
    bin); both are checked against the stack before any work. A binned input is read view by
    view into memory (the binned stack is 1/bin² of the file), also when the reconstruction
    then streams; an exclusion alone streams through a lazy view subset. The run record of a
    run with exclusions lists the ``excluded_views`` (1-based); the geometry it records is the
    reduced (and binned) one.
    ``config.even_odd`` also writes the half tomograms ``<output stem>_even.mrc`` and
    ``<output stem>_odd.mrc`` (same voxel size), reconstructed with the same method and
    options from alternate views (:func:`cryowedge.io.even_odd.even_odd_indices`): in
    acquisition order when the angles come from a ``.mdoc``, else in stack order, counted
    among the views left after the exclusion. They run after the full tomogram, the same way
    (streamed in slabs of the same size when it streams, from a view subset of its input; in
    memory otherwise) but never with checkpoints; the run record lists them under ``outputs``
    and says how the views were split (``even_odd_split``).
    ``preview`` also writes ``<output stem>_preview.png``: XY, XZ and YZ central slices with
    percentile contrast (:func:`cryowedge.viz.orthoslice_png`).
    ``config.ctf_correction`` (with ``defocus_path``: IMOD ``.defocus``, CTFFIND4 or AreTomo
    ``_CTF.txt``; or ``config.defocus_angstrom``) and ``config.dose_weighting`` correct each
    kept view on the raw detector before binning (:mod:`cryowedge.workflows.ctf_dose`); the
    corrected stack is then held in memory (as binning does) and feeds the thickness
    estimate, the reconstruction (streamed or not) and the half tomograms. The defocus file
    and the exposures are checked against the whole stack before any work; the run record
    says what was applied (``ctf_dose_correction``).
    ``config.roi``, ``config.z_offset`` and ``config.x_axis_tilt_deg`` (plus an IMOD
    ``.xtilt`` file, ``xtilt_path``) reconstruct a region of the full tomogram
    (:mod:`cryowedge.workflows.region`): only the detector rows it needs are read, the ROI is
    checked against the (binned) aligned detector before any work, the MRC origin records
    where the box sits, and an X-axis tilt reconstructs a thicker lab volume resampled once
    onto the tilted box (also when streamed). The run record has it under ``region``.

    All input and output checks happen before the reconstruction starts
    (:func:`cryowedge.workflows.outputs.check_outputs`): the output is not an input (the tilt
    series, ``angles_path``, ``config_path``); an existing output (or its run record
    ``<output stem>.run.yaml``) is refused unless ``overwrite``, and is then kept as
    ``<name>~``; the output directory can be created, is writable and has free space for the
    volume (and the checkpoint). The stack is read lazily: when the reconstruction would not
    fit comfortably in memory, or when ``config.slab_rows`` is set, it is streamed in slabs of
    tilt-axis rows (:func:`reconstruct_streamed`); otherwise it is reconstructed in memory.

    Iterative methods with ``config.checkpoint_every`` save ``<output stem>.ckpt.pt`` next to
    the output (in-memory runs); ``resume=True`` continues from it, ``restart=True`` discards
    it, and with neither an existing checkpoint is refused. The final iterate is saved in the
    checkpoint before the output is written, so a failed write loses nothing (without
    checkpoints the volume goes to a ``.failed-write.npy`` fallback file); the checkpoint is
    removed once the output is written. Ctrl-C during an iterative run raises
    :class:`~cryowedge.workflows.checkpoint.RunInterrupted`, saying what the checkpoint holds.
    The run record of an iterative run has ``iterations_done`` (the whole run's count),
    ``resumed`` and ``resumed_from_iteration``.
    """
    from cryowedge.workflows.checkpoint import (
        Checkpointer,
        IterationTracker,
        RunInterrupted,
        checkpoint_iterations,
        checkpoint_path_for,
        prepare_checkpoint,
    )
    from cryowedge.workflows.outputs import check_outputs, keep_backups, mrc_nbytes, write_or_keep

    output_path = Path(output_path)
    record_path = output_path.with_name(output_path.stem + ".run.yaml")
    # methods with checkpoints: the iterative ones, and models that declare ``checkpointed``
    iterative = isinstance(config, IterativeConfig) or bool(getattr(config, "checkpointed", False))
    if (resume or restart) and not iterative:
        flag = "--resume" if resume else "--restart"
        raise ValueError(
            f"{flag} applies to iterative methods (checkpoints), not {config.method!r}."
        )
    resolve_device(config.device)  # fail early on an unavailable GPU
    report_progress(progress, "reading", 0.0)
    series = load_tilt_series(
        tilt_series_path, angles_path, tilt_axis_angle_deg=config.tilt_axis_angle_deg,
        pixel_size_angstrom=pixel_size_angstrom, lazy=True,
    )
    geometry = series.geometry
    if alignment_path is not None:
        from cryowedge.io.alignment import apply_alignment, load_alignment

        geometry = apply_alignment(geometry, load_alignment(alignment_path, geometry.n_tilts))
    n_views = geometry.n_tilts
    keep = kept_views(config.exclude_views, n_views) if config.exclude_views else None
    from cryowedge.workflows.ctf_dose import CtfDosePlan

    ctf_dose = CtfDosePlan.from_config(config, geometry, stack_path=tilt_series_path,
                                       angles_path=angles_path, defocus_path=defocus_path)
    if keep is not None:
        geometry = geometry[keep]  # per-view shifts and matrices are sliced with the angles
    geometry = binned_geometry(geometry, config.bin_factor)
    from cryowedge.geometry.region import check_roi, plan_region
    from cryowedge.workflows import region as reg

    region = reg.region_of(config, xtilt_path=xtilt_path, n_views=n_views, keep=keep)
    if region is not None and region.roi is not None:  # before any work (thickness estimate)
        check_roi(region.roi, geometry.aligned_detector_shape)
    halves: dict[str, tuple[Path, np.ndarray]] = {}
    split = None
    if config.even_odd:
        from cryowedge.io.even_odd import acquisition_order_of, even_odd_indices

        order = acquisition_order_of(tilt_series_path, angles_path)
        if order is not None and order.size != n_views:
            order = None  # the stack check above has already refused a mismatched mdoc
        if order is not None and keep is not None:
            order = order[keep]
        split = "acquisition order (mdoc)" if order is not None else "stack order"
        for name, idx in zip(("even", "odd"), even_odd_indices(geometry, order), strict=True):
            halves[name] = (output_path.with_name(f"{output_path.stem}_{name}.mrc"), idx)
    from cryowedge.workflows.axis_check import check_defaulted_axis

    axis_check = check_defaulted_axis(  # raw kept views: a defaulted axis has no alignment
        series.data if keep is None else ViewSubset(series.data, keep),
        series.geometry if keep is None else series.geometry[keep],
        defaulted=series.tilt_axis_source == "default" and alignment_path is None,
        enabled=config.check_tilt_axis, progress=progress)
    source = None
    estimated = None
    if config.thickness is None:  # cheap checks first, then a coarse look at the data
        check_outputs(_planned_outputs(output_path, record_path, preview, halves),
                      inputs=[tilt_series_path, angles_path, config_path, alignment_path,
                              defocus_path],
                      overwrite=overwrite)
        source = _select_views(series.data, keep, config.bin_factor, ctf_dose)
        estimated = _estimated_thickness(source, geometry)
        config = config.updated(thickness=estimated.thickness)
    shape = geometry.default_volume_shape(config.thickness)
    plan = plan_region(geometry, region, shape) if region is not None else None
    if plan is not None:
        shape = plan.output_shape
    slab_rows = (plan_streaming(config, geometry) if plan is None
                 else reg.region_slab_rows(config, geometry, plan))
    if slab_rows is not None and (resume or config.checkpoint_every):
        raise ValueError(
            f"checkpoints are not kept when streaming in slabs (slab_rows={slab_rows}); "
            "drop --checkpoint-every/--resume, or run in memory without --slab on a "
            "machine with more memory."
        )
    ckpt = checkpoint_path_for(output_path)
    use_ckpt = slab_rows is None and iterative and bool(config.checkpoint_every or resume)
    reoriented_copy = slab_rows is not None and config.output_orientation != "xy"
    n_bytes = (mrc_nbytes(shape) * (1 + len(halves)) + (mrc_nbytes(shape) if use_ckpt else 0)
               + (mrc_nbytes(shape) if reoriented_copy else 0) + 65536)
    if plan is not None and plan.rotates and slab_rows is not None:
        n_bytes += mrc_nbytes(plan.lab_shape)  # the streamed lab volume, resampled at the end
    preview_path = output_path.with_name(output_path.stem + "_preview.png") if preview else None
    outputs = _planned_outputs(output_path, record_path, preview, halves)
    check_outputs(outputs,
                  inputs=[tilt_series_path, angles_path, config_path, alignment_path,
                          defocus_path, xtilt_path, ckpt if use_ckpt else None],
                  overwrite=overwrite, n_bytes=n_bytes)
    resumed_from = prepare_checkpoint(ckpt, resume=resume, restart=restart) if iterative else 0
    record = {**config.model_dump(mode="json"), "input": str(tilt_series_path),
              "angles": str(angles_path) if angles_path else None,
              "alignment": str(alignment_path) if alignment_path else None,
              "geometry": geometry.to_dict(), "streamed_slab_rows": slab_rows}
    if axis_check is not None:
        record["tilt_axis_check"] = axis_check.to_record()
    if estimated is not None:
        record["thickness_estimated"] = {
            "thickness": estimated.thickness,
            "signal_thickness": round(estimated.signal_thickness, 1),
            "z_offset": round(estimated.z_offset, 1), "binning": estimated.binning}
    if keep is not None:  # the views dropped, 1-based, as the list resolved them
        record["excluded_views"] = [int(v) + 1 for v in np.setdiff1d(np.arange(n_views), keep)]
    written = {"volume": str(output_path)}
    if split is not None:
        record["even_odd_split"] = split
        written.update({name: str(path) for name, (path, _) in halves.items()})
    if ctf_dose is not None:
        record["ctf_dose_correction"] = ctf_dose.record
    if plan is not None:
        record["region"] = {**plan.to_dict(), "xtilt": str(xtilt_path) if xtilt_path else None}
    stream = (reconstruct_streamed if plan is None
              else functools.partial(reg.reconstruct_region_streamed, plan=plan))
    if source is None:
        source = _select_views(series.data, keep, config.bin_factor, ctf_dose)
    if slab_rows is not None:
        if overwrite:
            keep_backups(outputs)
        with _oriented_output(output_path, config.output_orientation) as target:
            stream(source, geometry, target, config, slab_rows=slab_rows,
                   overwrite=True, progress=progress)
            if preview_path is not None:
                _write_preview(output_path, None, preview_path, geometry.pixel_size_angstrom,
                               source_path=target)
        for name, (path, idx) in halves.items():
            report_progress(progress, f"{name} half", 0.95)
            with _oriented_output(path, config.output_orientation) as target:
                stream(ViewSubset(source, idx), geometry[idx], target, config,
                       slab_rows=slab_rows, overwrite=True)
        write_run_record(output_path.parent, "reconstruct", record, written,
                         name=record_path.name)
        report_progress(progress, "done", 1.0)
        return output_path
    data, run_geometry, run_shape = reg.region_input(source, geometry, plan)
    report_progress(progress, config.method, 0.2)
    tracker = IterationTracker(offset=resumed_from)
    try:
        volume = reconstruct_array(data, run_geometry, config, volume_shape=run_shape,
                                   progress=progress,
                                   checkpoint_path=ckpt if use_ckpt else None,
                                   resume=resume, callback=tracker if iterative else None)
    except KeyboardInterrupt:
        if not iterative:
            raise
        raise RunInterrupted(
            tracker.iterations_done, tracker.total or getattr(config, "n_iter", None),
            ckpt if use_ckpt else None,
            checkpoint_iterations(ckpt) if use_ckpt else None,
        ) from None
    kept_in = None
    if iterative:
        record.update(resumed=resume, resumed_from_iteration=resumed_from if resume else None,
                      iterations_done=tracker.iterations_done)
        if use_ckpt:  # the final iterate first, so that a failed write below loses nothing
            scale = data_scale(torch.as_tensor(data), config.normalize)
            try:
                Checkpointer(ckpt, 1, method=config.method, data_shape=data.shape,
                             meta={"data_scale": scale}).save(
                    torch.from_numpy(volume) / scale, tracker.iterations_done)
                kept_in = (
                    f"iteration {tracker.iterations_done} is saved in the checkpoint {ckpt}; "
                    "free space and rerun the same command with --resume to write it "
                    "(no iteration is repeated)"
                )
            except OSError as err:
                logger.warning("could not save the final iterate in %s: %s", ckpt, err)
    volume = reg.finish_region(volume, plan)  # the lab volume is what a checkpoint holds
    report_progress(progress, "writing", 0.9)
    if overwrite:
        keep_backups(outputs)
    px = geometry.pixel_size_angstrom
    orient = config.output_orientation
    origin = orient_origin(reg.region_origin(plan, px), orient)
    write_or_keep(lambda: write_mrc(output_path, orient_volume(volume, orient),
                                    voxel_size_angstrom=px, origin_angstrom=origin,
                                    overwrite=True),
                  volume, output_path, kept_in=kept_in)
    if preview_path is not None:
        _write_preview(output_path, volume, preview_path, px)
    if use_ckpt and ckpt.exists():
        ckpt.unlink()  # the finished output supersedes it
    for name, (path, idx) in halves.items():
        report_progress(progress, f"{name} half", 0.95)
        half = reg.finish_region(reconstruct_array(data[idx], run_geometry[idx], config,
                                                   volume_shape=run_shape), plan)
        write_or_keep(lambda p=path, v=half: write_mrc(p, orient_volume(v, orient),
                                                       voxel_size_angstrom=px,
                                                       origin_angstrom=origin,
                                                       overwrite=True), half, path)
    write_run_record(output_path.parent, "reconstruct", record, written,
                     name=record_path.name)
    report_progress(progress, "done", 1.0)
    return output_path


def _planned_outputs(output_path: Path, record_path: Path, preview: bool,
                     halves: dict[str, tuple[Path, np.ndarray]]) -> list[Path]:
    """Every file a reconstruction writes: the volume, its run record, the preview, halves."""
    outputs = [output_path, record_path]
    if preview:
        outputs.append(output_path.with_name(output_path.stem + "_preview.png"))
    return outputs + [path for path, _ in halves.values()]


def _estimated_thickness(source: Any, geometry: TiltGeometry) -> Any:
    """The thickness rule of files without ``--thickness``: :func:`estimate_thickness`
    (z-extent of a coarse FBP's signal + 20 % margin a side, rounded up to 8 voxels),
    logged so the user sees what was chosen and how to override it."""
    from cryowedge.recon.thickness import estimate_thickness

    estimate = estimate_thickness(source, geometry)
    logger.warning(
        "thickness %d voxels estimated from the data (signal about %.0f voxels thick, centred "
        "%+.0f voxels from the middle); give --thickness to choose it", estimate.thickness,
        estimate.signal_thickness, estimate.z_offset)
    return estimate


def _select_views(data: Any, keep: np.ndarray | None, bin_factor: int,
                  ctf_dose: Any = None) -> Any:
    """The ``(n_kept, y // bin, x // bin)`` input: ``data`` itself when nothing is excluded or
    binned; binned → read now, view by view, into memory (float32, 1/bin² of the size);
    excluded only → a lazy :class:`~cryowedge.io.views.ViewSubset` (streaming reads only the
    kept views' rows; the in-memory path reads it whole). With a
    :class:`~cryowedge.workflows.ctf_dose.CtfDosePlan` every kept view is read, corrected and
    binned into memory."""
    if ctf_dose is not None:
        return ctf_dose.read(data, keep, bin_factor)
    if bin_factor > 1:
        return read_views(data, keep, bin_factor)
    if keep is not None:
        return ViewSubset(data, keep)
    return data


@contextlib.contextmanager
def _oriented_output(path: Path, orientation: str) -> Iterator[Path]:
    """Where a streamed run writes its ``(z, y, x)`` tomogram: ``path`` itself for ``"xy"``;
    otherwise a ``<stem>.xy-tmp.mrc`` beside it, copied into ``orientation`` at ``path``
    chunk by chunk when the block ends (then removed; also on failure)."""
    if orientation == "xy":
        yield path
        return
    tmp = path.with_name(path.stem + ".xy-tmp.mrc")
    try:
        yield tmp
        reorient_mrc_file(tmp, path, orientation)
    finally:
        tmp.unlink(missing_ok=True)


def _write_preview(output_path: Path, volume: np.ndarray | None, preview_path: Path,
                   voxel_size_angstrom: float, source_path: Path | None = None) -> None:
    """The orthoslice PNG of the written tomogram (read back through a memory map of the
    ``(z, y, x)`` file ``source_path``, default ``output_path``, when the volume was
    streamed, so only the three central slices are touched)."""
    import mrcfile

    from cryowedge.viz import orthoslice_png

    if volume is not None:
        orthoslice_png(volume, preview_path, voxel_size_angstrom=voxel_size_angstrom,
                       title=output_path.name)
        return
    with mrcfile.mmap(source_path or output_path, mode="r") as mrc:
        orthoslice_png(mrc.data, preview_path, voxel_size_angstrom=voxel_size_angstrom,
                       title=output_path.name)


def plan_streaming(
    config: ReconstructConfig, geometry: TiltGeometry, memory_budget_bytes: int | None = None
) -> int | None:
    """Rows per streamed slab for ``config`` on ``geometry``, or None to run in memory.

    ``config.slab_rows`` when set (checked against the volume's ``y`` size); otherwise
    :func:`~cryowedge.workflows.streaming.plan_slab_rows` decides from the memory estimate
    (None when the whole reconstruction fits comfortably). A method registered with
    ``slab_mode="none"`` never streams.

    Raises
    ------
    ValueError
        ``config.slab_rows`` larger than the volume's ``y`` size, or a method that cannot
        stream asked to.
    """
    from cryowedge.workflows.streaming import check_slab_rows, plan_slab_rows

    shape = geometry.default_volume_shape(config.thickness)
    spec = get_method(config.method)
    if config.slab_rows is not None:
        if spec.slab_mode == "none":
            raise ValueError(f"method {config.method!r} cannot stream in slabs; drop --slab.")
        return check_slab_rows(config.slab_rows, shape[1])
    if spec.slab_mode == "none":
        return None
    return plan_slab_rows(shape, geometry.n_tilts, geometry.aligned_detector_shape[1],
                          config.method, memory_budget_bytes, halo_rows=_halo_rows(config))


def _halo_rows(config: ReconstructConfig) -> int:
    if get_method(config.method).slab_mode != "halo":
        return 0
    return int(getattr(config, "halo_rows", 0))


def reconstruct_streamed(
    tilt_series: Any,
    geometry: TiltGeometry,
    output_path: str | Path,
    config: ReconstructConfig,
    *,
    slab_rows: int,
    overwrite: bool = True,
    progress: ProgressFn | None = None,
) -> Path:
    """Reconstruct with ``config`` slab by slab of ``slab_rows`` tilt-axis rows into an MRC file.

    ``tilt_series`` is ``(n_tilts, y, x)`` (NumPy, memory map or
    :class:`~cryowedge.io.mrc.LazyMrcArray`). Every slab is divided by the standard deviation
    of the whole series (when ``config.normalize``), so a regularised method sees the same
    λ everywhere; methods registered with ``slab_mode="halo"`` get ``config.halo_rows`` rows
    of overlap on each side. The output keeps the geometry's pixel size and is written
    atomically (:func:`~cryowedge.workflows.streaming.stream_reconstruct`).
    """
    from cryowedge.workflows.streaming import (
        config_slab_runner,
        stream_reconstruct,
        tilt_series_std,
        with_data_scale,
    )

    shape = geometry.default_volume_shape(config.thickness)
    scale = tilt_series_std(tilt_series) if config.normalize else 1.0
    runner = config_slab_runner(config.model_copy(update={"normalize": False}))
    if scale != 1.0:
        runner = with_data_scale(runner, scale)
    return stream_reconstruct(tilt_series, geometry, shape, output_path, runner,
                              slab_rows=slab_rows, halo_rows=_halo_rows(config),
                              voxel_size_angstrom=geometry.pixel_size_angstrom, overwrite=overwrite,
                              progress=progress)
