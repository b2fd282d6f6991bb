"""Streaming reconstruction: slabs of tilt-axis rows, from a lazily read stack to an MRC file.

Along the tilt axis ``y`` every row of the volume is reconstructed from the same row of the
aligned tilt series only, so FBP, WBP, SIRT, SART and ART restricted to a slab of rows give
exactly the rows of the whole-volume result, and a volume of any ``y`` size needs the memory
of one slab. CGLS and TV are exceptions. CGLS's step lengths are inner products over the
whole volume: a slab's iterates are those of its own, smaller, least-squares problem (the
same limit, different early iterates). TV couples neighbouring rows through the gradient,
so TV slabs overlap by a halo of rows of which only the centre is kept; what remains after
a halo comes from the inner CG of ADMM, global like CGLS's (measured in docs/streaming.md).
An iterative method's data normalisation must use one scale for all slabs
(:func:`tilt_series_std`, :func:`with_data_scale`), else slabs are solved with different
effective weights.

Pieces:

- :func:`stream_reconstruct`: the slab loop (read slab → ``run_slab`` → write its centre rows);
- :func:`align_tilt_series`: a raw stack whose tilt axis is not ``+Y`` (or with ``y``-shifts)
  resampled image by image into a temporary aligned-frame MRC, the same resampling as
  :meth:`~cryowedge.operators.TiltProjector.to_aligned`;
- :func:`plan_slab_rows`: ``None`` when the whole problem fits comfortably in memory, else
  a slab height that does;
- :func:`method_slab_runner`: a ``run_slab`` for a method name and its options.

Arrays: tilt series ``(n_tilts, y, x)``, volumes ``(z, y, x)``, float32; see
docs/conventions.md.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cryowedge._arrays import to_numpy
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.mrc import LazyMrcArray, MrcSlabWriter, open_mrc_lazy
from cryowedge.operators.detector import needs_detector_warp
from cryowedge.operators.tilt_projector import TiltProjector

__all__ = [
    "SlabRunner",
    "align_tilt_series",
    "available_memory_bytes",
    "check_slab_rows",
    "estimate_memory_bytes",
    "method_slab_runner",
    "plan_slab_rows",
    "stream_reconstruct",
    "tilt_series_std",
    "with_data_scale",
]

logger = logging.getLogger(__name__)

#: Rows of overlap on each side of a TV slab by default (the gradient couples neighbours).
DEFAULT_TV_HALO_ROWS = 8
#: Fraction of the available memory a streamed (or whole) reconstruction may plan to use.
MEMORY_FRACTION = 0.5


class SlabRunner(Protocol):
    """``run_slab(series_slab, geometry_slab, volume_shape_slab) -> volume_slab``.

    ``series_slab`` is ``(n_tilts, rows, n_perp)`` float32 in the aligned frame,
    ``geometry_slab`` its :class:`TiltGeometry` (detector ``(rows, n_perp)``, tilt axis
    ``+Y``), and the result a ``(nz, rows, nx)`` array or tensor: any in-memory
    reconstruction, e.g.
    ``lambda s, g, shape: reconstruct_array(s, g, config)`` of
    :mod:`cryowedge.workflows.reconstruct`.
    """

    def __call__(
        self,
        series_slab: np.ndarray,
        geometry_slab: TiltGeometry,
        volume_shape: tuple[int, int, int],
    ) -> Any: ...


# --------------------------------------------------------------------------- checks


def check_slab_rows(slab_rows: Any, ny: int) -> int:
    """``slab_rows`` as an int in ``[1, ny]``, else a one-line ValueError naming the range."""
    try:
        rows = int(slab_rows)
        ok = rows == slab_rows
    except (TypeError, ValueError):
        ok = False
    if not ok or not 1 <= rows <= ny:
        raise ValueError(
            f"slab rows must be an integer in [1, {ny}] (the volume's y size, along the tilt "
            f"axis), got {slab_rows!r}."
        )
    return rows


def _check_halo(halo_rows: Any) -> int:
    if not isinstance(halo_rows, (int, np.integer)) or halo_rows < 0:
        raise ValueError(f"halo rows must be an integer >= 0, got {halo_rows!r}.")
    return int(halo_rows)


# --------------------------------------------------------------------------- memory planning


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        return None
    return None  # pragma: no cover


def _cgroup_available() -> int | None:
    """``memory.max − memory.current`` of this process's cgroup (v2), if limited."""
    try:
        with open("/proc/self/cgroup") as handle:
            rel = handle.read().strip().split("\n")[0].split(":", 2)[2]
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text())
    except (OSError, ValueError, IndexError):
        return None


def _address_space_left() -> int | None:
    """``RLIMIT_AS`` soft limit minus this process's current virtual size, if limited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as handle:
            vm = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
    except (OSError, StopIteration):  # pragma: no cover - not Linux
        vm = 0
    return soft - vm


def available_memory_bytes() -> int:
    """Memory this process may still use, bytes: the least of MemAvailable, the cgroup's
    ``memory.max`` headroom and the ``RLIMIT_AS`` (``ulimit -v``) headroom that are set."""
    candidates = [
        v
        for v in (_meminfo_available(), _cgroup_available(), _address_space_left())
        if v is not None
    ]
    return max(0, min(candidates)) if candidates else 8 << 30


def estimate_memory_bytes(
    volume_shape: tuple[int, int, int], n_tilts: int, n_perp: int, method: str
) -> tuple[int, int]:
    """``(fixed, per_row)`` bytes of reconstructing ``volume_shape`` with ``method``.

    ``fixed`` is the projector's sparse slice matrices (SciPy float64 ``A`` and ``Aᵀ`` plus
    their float32 torch copies, two weights per voxel and tilt), independent of ``y``;
    ``per_row`` is the volume- and series-sized work arrays of one tilt-axis row
    (``nz·nx`` and ``n_tilts·n_perp`` float32 each). An upper estimate, not a measurement.
    """
    from cryowedge.config.registry import get_method

    n_vol, n_ser = get_method(method).work_arrays  # unknown method: one line naming the choices
    nz, _, nx = (int(s) for s in volume_shape)
    nnz = 2 * n_tilts * nz * nx
    fixed = nnz * (2 * (8 + 4) + 2 * (4 + 4))
    if method == "sart":  # per-tilt column sums are cached up to 1 GiB
        fixed += min(1 << 30, n_tilts * nz * int(volume_shape[1]) * nx * 4)
    per_row = 4 * (n_vol * nz * nx + n_ser * n_tilts * n_perp)
    return fixed, per_row


def plan_slab_rows(
    volume_shape: tuple[int, int, int],
    n_tilts: int,
    n_perp: int,
    method: str,
    memory_budget_bytes: int | None = None,
    *,
    halo_rows: int = 0,
) -> int | None:
    """Rows per slab so that a reconstruction fits the memory budget, or None if it all fits.

    Parameters
    ----------
    volume_shape
        ``(nz, ny, nx)`` of the volume.
    n_tilts, n_perp
        Tilts and aligned detector width (perpendicular to the tilt axis, px).
    method
        ``fbp``, ``wbp``, ``sirt``, ``sart``, ``art``, ``cgls`` or ``tv``.
    memory_budget_bytes
        Bytes the reconstruction may use; default :data:`MEMORY_FRACTION` of
        :func:`available_memory_bytes`.
    halo_rows
        Rows added on each side of a slab (TV); the returned count is the kept centre.

    Returns
    -------
    int or None
        None when the whole volume fits the budget (see :func:`estimate_memory_bytes`),
        else the largest slab height in ``[1, ny]`` that fits.

    Raises
    ------
    ValueError
        If even one row does not fit (the projector's matrices alone exceed the budget).
    """
    ny = int(volume_shape[1])
    budget = (
        MEMORY_FRACTION * available_memory_bytes()
        if memory_budget_bytes is None
        else float(memory_budget_bytes)
    )
    fixed, per_row = estimate_memory_bytes(volume_shape, n_tilts, n_perp, method)
    if fixed + ny * per_row <= budget:
        return None
    rows = int((budget - fixed) // per_row) - 2 * _check_halo(halo_rows)
    if rows < 1:
        raise ValueError(
            f"a {method} reconstruction of {tuple(volume_shape)} with {n_tilts} tilts needs "
            f"{(fixed + (1 + 2 * halo_rows) * per_row) / 1e9:.2f} GB even for one row, more than "
            f"the {budget / 1e9:.2f} GB available; bin the data or reduce the thickness."
        )
    return min(rows, ny)


# --------------------------------------------------------------------------- data scale


def tilt_series_std(tilt_series: Any, rows_per_read: int = 64) -> float:
    """Standard deviation of a (lazily read) ``(n_tilts, y, x)`` series, read by row slabs.

    float64 accumulation (pairwise-combined means and squared deviations); 1.0 when the
    series is constant or has fewer than two values, so dividing by it is always safe.
    """
    ny = int(tilt_series.shape[1])
    count, mean, m2 = 0, 0.0, 0.0
    for y0 in range(0, ny, rows_per_read):
        block = np.asarray(tilt_series[:, y0 : y0 + rows_per_read], dtype=np.float64)
        n_b = block.size
        mean_b = float(block.mean())
        m2_b = float(np.square(block - mean_b).sum())
        total = count + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta**2 * count * n_b / total
        count = total
    std = math.sqrt(m2 / (count - 1)) if count > 1 else 0.0
    return std if np.isfinite(std) and std > 0 else 1.0


def with_data_scale(run_slab: SlabRunner, scale: float) -> SlabRunner:
    """``run_slab`` applied to ``series / scale``, its result multiplied back by ``scale``.

    Give every slab the scale of the whole series (:func:`tilt_series_std`) and let the
    wrapped runner not normalise on its own (e.g. ``normalize=False``): then the slabs of a
    regularised method (TV) all see the same effective weight λ, as the whole volume would.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"data scale must be finite and > 0, got {scale!r}.")

    def scaled(series_slab: np.ndarray, geometry: TiltGeometry, shape: tuple[int, int, int]) -> Any:
        out = to_numpy(run_slab(series_slab / np.float32(scale), geometry, shape))
        return out * np.float32(scale)

    return scaled


# --------------------------------------------------------------------------- runners


def method_slab_runner(
    method: str, *, device: torch.device | str | None = None, **options: Any
) -> SlabRunner:
    """A ``run_slab`` for a registered method (:mod:`cryowedge.config.registry`).

    ``options`` are fields of the method's configuration model (e.g. ``n_iter=20``,
    ``filter_name="hann"``, ``tv_lambda=0.5``). The runner does **not** rescale each slab
    (``normalize=False``): wrap it in :func:`with_data_scale` with the whole series' scale,
    so a regularised method sees the same λ in every slab. It returns the
    ``(nz, rows, nx)`` float32 slab; ``nz`` comes from the slab's ``volume_shape``.
    """
    from cryowedge.config.registry import parse_method_config

    base = parse_method_config({"method": method, "normalize": False,
                                "device": "cpu" if device is None else str(device), **options})
    return config_slab_runner(base)


def config_slab_runner(config: Any) -> SlabRunner:
    """A ``run_slab`` that runs ``config`` (a registered method's model) on each slab.

    The registry's runner for ``config.method`` reconstructs every slab in memory
    (:func:`cryowedge.workflows.reconstruct.reconstruct_array`); the slab's thickness is
    taken from ``volume_shape``, whose ``nx`` must be the aligned detector width. The device
    copies of the projector matrices are shared between slabs (same slice geometry).
    """
    from cryowedge.workflows.reconstruct import reconstruct_array

    def run(
        series_slab: np.ndarray, geometry: TiltGeometry, shape: tuple[int, int, int]
    ) -> np.ndarray:
        n_perp = geometry.aligned_detector_shape[1]
        if shape[2] != n_perp:
            raise ValueError(
                f"slab volume x size {shape[2]} must equal the aligned detector width {n_perp}."
            )
        slab_config = config.model_copy(update={"thickness": int(shape[0])})
        return reconstruct_array(np.asarray(series_slab, dtype=np.float32), geometry, slab_config)

    return run


# --------------------------------------------------------------------------- alignment


def _aligned_geometry(geometry: TiltGeometry) -> TiltGeometry:
    return geometry.with_(
        detector_shape=geometry.aligned_detector_shape, tilt_axis_angle_deg=0.0, shifts_px=None,
        view_matrices=None,
    )


def align_tilt_series(
    tilt_series: Any, geometry: TiltGeometry, path: str | os.PathLike[str]
) -> tuple[LazyMrcArray, TiltGeometry]:
    """Resample a raw ``(n_tilts, ny, nx)`` series into the aligned frame, image by image.

    Each image goes through :meth:`TiltProjector.to_aligned` of its own one-tilt geometry
    (the same bilinear, adjoint-normalised resampling the in-memory methods use; an exact
    permutation for quarter turns and integer shifts), float32, and is written to the MRC
    file ``path``. Only one raw and one aligned image are in memory at a time.

    Returns
    -------
    (LazyMrcArray, TiltGeometry)
        The aligned series ``(n_tilts, n_axis, n_perp)`` read lazily from ``path``, and its
        geometry (tilt axis ``+Y``, no shifts).
    """
    aligned_geom = _aligned_geometry(geometry)
    n_axis, n_perp = aligned_geom.detector_shape
    with MrcSlabWriter(
        path, (geometry.n_tilts, n_axis, n_perp), voxel_size_angstrom=geometry.pixel_size_angstrom
    ) as writer:
        for t in range(geometry.n_tilts):
            one = geometry[t]
            image = torch.from_numpy(np.ascontiguousarray(tilt_series[t : t + 1], dtype=np.float32))
            aligned = TiltProjector(one, (1, n_axis, 1)).to_aligned(image)
            writer.write_sections(t, aligned.numpy())
    logger.info(
        "resampled %d images into the aligned frame (%d x %d) in %s",
        geometry.n_tilts,
        n_axis,
        n_perp,
        path,
    )
    return open_mrc_lazy(path), aligned_geom


# --------------------------------------------------------------------------- the slab loop


def _slabs(ny: int, slab_rows: int, halo_rows: int) -> list[tuple[int, int, int, int]]:
    """``(lo, y0, y1, hi)`` per slab: keep ``y0:y1``, reconstruct ``lo:hi`` (with halo)."""
    out = []
    for y0 in range(0, ny, slab_rows):
        y1 = min(ny, y0 + slab_rows)
        out.append((max(0, y0 - halo_rows), y0, y1, min(ny, y1 + halo_rows)))
    return out


def stream_reconstruct(
    tilt_series: Any,
    geometry: TiltGeometry,
    volume_shape: tuple[int, int, int],
    output_path: str | os.PathLike[str],
    run_slab: SlabRunner,
    *,
    slab_rows: int,
    halo_rows: int = 0,
    voxel_size_angstrom: float | None = None,
    origin_angstrom: float | tuple[float, float, float] = (0.0, 0.0, 0.0),
    overwrite: bool = True,
    progress: Callable[[str, float], None] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Reconstruct slab by slab along the tilt axis and write the volume to an MRC file.

    Parameters
    ----------
    tilt_series
        ``(n_tilts, ny_det, nx_det)``: a NumPy array, ``numpy.memmap`` or
        :class:`~cryowedge.io.mrc.LazyMrcArray` (``load_tilt_series(..., lazy=True)``); read
        one slab of rows at a time, converted to float32.
    geometry
        Its :class:`TiltGeometry`. When the tilt axis is not ``+Y`` (or tilts are shifted
        along it), the series is first resampled into the aligned frame by
        :func:`align_tilt_series` into a temporary file in ``work_dir`` (removed at the end).
    volume_shape
        ``(nz, ny, nx)``; ``ny`` must equal the aligned detector length along the tilt axis.
    output_path
        The MRC volume to write (atomically: a temporary sibling renamed at the end; on any
        error nothing is left behind and an existing file is untouched).
    run_slab
        The in-memory reconstruction of one slab, see :class:`SlabRunner`.
    slab_rows
        Rows kept per slab, in ``[1, ny]`` (:func:`plan_slab_rows` suggests one).
    halo_rows
        Extra rows reconstructed on each side of a slab and discarded (for TV, whose
        gradient couples rows; 0 for the row-independent methods).
    voxel_size_angstrom
        Header voxel size (Å); default the geometry's pixel size.
    origin_angstrom
        Header origin, ``(z, y, x)`` Å.
    overwrite
        If False, refuse an existing ``output_path`` before any work.
    progress
        ``progress(step, fraction)`` after each slab.
    work_dir
        Directory of the temporary aligned series (default: the output's directory).

    Returns
    -------
    pathlib.Path
        ``output_path``.

    Raises
    ------
    ValueError
        Before any work: series and geometry disagree, ``volume_shape`` does not match the
        aligned detector, ``slab_rows`` or ``halo_rows`` out of range, the output directory
        not writable or short of space. During the work: a slab with NaN/Inf, or a
        ``run_slab`` result of the wrong shape.
    OSError
        A write fails (e.g. the disk fills up); nothing is left behind.
    """
    shape = tuple(tilt_series.shape)
    if shape != geometry.tilt_series_shape:
        raise ValueError(
            f"tilt series shape {shape} does not match the geometry's (n_tilts, ny, nx) = "
            f"{geometry.tilt_series_shape}."
        )
    dims = tuple(int(s) for s in volume_shape)
    n_axis, n_perp = geometry.aligned_detector_shape
    if len(dims) != 3 or min(dims) < 1 or dims[1] != n_axis:
        raise ValueError(
            f"volume_shape must be (nz, {n_axis}, nx) (y = the aligned detector length along the "
            f"tilt axis), got {tuple(volume_shape)!r}."
        )
    nz, ny, nx = dims
    rows = check_slab_rows(slab_rows, ny)
    halo = _check_halo(halo_rows)
    output_path = Path(output_path)
    voxel = geometry.pixel_size_angstrom if voxel_size_angstrom is None else voxel_size_angstrom
    aligned_tmp: Path | None = None
    with MrcSlabWriter(
        output_path,
        dims,
        voxel_size_angstrom=voxel,
        origin_angstrom=origin_angstrom,
        overwrite=overwrite,
    ) as writer:
        try:
            series, geom = tilt_series, geometry
            if needs_detector_warp(geometry):
                folder = Path(work_dir) if work_dir is not None else output_path.parent
                aligned_tmp = folder / f".{output_path.stem}.aligned.{secrets.token_hex(4)}.mrc"
                series, geom = align_tilt_series(tilt_series, geometry, aligned_tmp)
            slabs = _slabs(ny, rows, halo)
            logger.info(
                "streaming %s in %d slabs of %d rows (halo %d) into %s",
                dims,
                len(slabs),
                rows,
                halo,
                output_path,
            )
            for k, (lo, y0, y1, hi) in enumerate(slabs):
                block = np.ascontiguousarray(series[:, lo:hi, :], dtype=np.float32)
                if not np.isfinite(block).all():
                    raise ValueError(
                        f"the tilt series has NaN/Inf values in rows {lo}:{hi}; replace or mask "
                        "them (e.g. numpy.nan_to_num) before reconstructing."
                    )
                slab_shape = (nz, hi - lo, nx)
                out = to_numpy(
                    run_slab(block, geom.with_(detector_shape=(hi - lo, n_perp)), slab_shape)
                )
                if tuple(out.shape) != slab_shape:
                    raise ValueError(
                        f"run_slab returned shape {tuple(out.shape)} for rows {lo}:{hi}; "
                        f"expected {slab_shape}."
                    )
                del block
                writer.write_rows(y0, out[:, y0 - lo : y1 - lo])
                del out
                if progress is not None:
                    progress(f"slab {k + 1}/{len(slabs)}", (k + 1) / len(slabs))
        finally:
            if aligned_tmp is not None and aligned_tmp.exists():
                aligned_tmp.unlink()
    return output_path
