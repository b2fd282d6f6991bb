"""Refine: apply a fitted network to whole tomograms, tile by tile, in bounded memory.

This is step 3 of DeepDeWedge (seeds/003: "split it into sub-tomograms and refine the
sub-tomograms by passing them through the fitted network ... reassemble"). The tomogram is
covered by cubic tiles of ``subtomo_size`` voxels that overlap by ``overlap`` voxels (default
``subtomo_size // 3``, as the reference code), laid out symmetrically about the volume so that
tiles overhang both borders equally; where a tile leaves the volume it is filled by
**reflection** of the tomogram (numpy ``"reflect"``, repeated for tomograms thinner than a
tile). Each tile is

1. standardised with the pair's statistics (:mod:`cryowedge.dewedge.standardize`),
2. optionally stripped of the **missing wedge** in Fourier space (see below),
3. passed through the network in batches, and
4. blended: every output voxel is the sum of the tiles covering it weighted by separable
   raised-cosine ramps (``sin²`` over the overlap, 1 in the middle), the 1D ramps of each
   axis normalised so that the weights of the tiles covering a voxel sum to **exactly 1**.
   An identity network therefore returns its input to float32 rounding, and there are no
   seams (MLI-lab/DeepDeWedge#2, IsoNet#29).
5. mapped back to the input's units (the inverse standardisation).

**Wedge convention.** During fitting the network's input is a rotated sub-tomogram of half A
*with the canonical missing wedge removed in Fourier space on the cube it sees*; the reference
code likewise masks the wedge of the tomogram before refining ("for consistency with
training"). So by default (``mask_wedge`` on in ``dewedge`` mode) each tile is masked with the
canonical wedge of the tomogram's tilt range (:func:`cryowedge.geometry.wedge.wedge_mask`,
hard edge, on the tile of ``subtomo_size`` — exactly the operation fitting applies to its
inputs) before the network. In ``n2n`` mode (Noise2Noise, no extra wedge in fitting) tiles are
not masked.

**Bounded memory.** Tiles are processed band by band along the longer of ``z`` and ``y``: a
band is one layer of tiles, read from the input (a :class:`~cryowedge.io.mrc.LazyMrcArray`
reads only those rows) together with its reflected margins; its weighted outputs accumulate
in a buffer of ``subtomo_size`` rows, and the rows no later tile touches are written out
(:class:`~cryowedge.io.mrc.MrcSlabWriter`, atomically, with the input's voxel size and
origin) before the next band. Memory is a few bands, whatever the tomogram size; no temporary
file is made. The network runs in batches of ``batch_size`` tiles; on an out-of-memory error
the batch is halved and retried (down to one tile), and the smaller size is kept
(MLI-lab/DeepDeWedge#21, juglab/cryoCARE_pip#20).

**Units contract with fitting.** The network consumes standardised values — what
``PreparedTomogram.stats.apply`` gives (raw values with ``shared.standardize: none``) — and
returns values in the same units; refine inverts the standardisation afterwards. Normalisation
buffers inside a network (``UNet3D.input_loc``/``input_scale``) are the network's own business;
refine warns when they show the network was fitted on unstandardised values.

Sources: refine the full-tilt-series tomogram (``source="full"``, the paper's choice), or both
half tomograms and average the two outputs (``source="halves"``, the cryoCARE/DDW-code
choice); several sources are averaged tile by tile, in one pass.

Axes: volumes ``(z, y, x)``; network input and output ``(B, 1, s, s, s)`` (docs/conventions.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.dewedge.standardize import StandardizationStats, robust_stats
from cryowedge.workflows._record import ProgressFn, report_progress

__all__ = [
    "RefineResult",
    "TileLayout",
    "blend_weights_1d",
    "is_out_of_memory",
    "refine_array",
    "refine_checkpoint",
    "refine_file",
    "refine_prepared",
    "resolve_autocast",
    "tile_starts",
]

logger = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- tiling


def tile_starts(n: int, size: int, overlap: int) -> np.ndarray:
    """First index of each tile along an axis of ``n`` voxels (may be negative or overhang).

    Tiles of ``size`` voxels step by ``size - overlap``; the fewest tiles that cover the axis
    are used, and the grid is centred so that it overhangs both ends by about the same amount
    (``start_0 = -((span - n) // 2)``).

    Returns
    -------
    numpy.ndarray
        ``(n_tiles,)`` int64 start indices.
    """
    n, size, overlap = int(n), int(size), int(overlap)
    if n < 1 or size < 1:
        raise ValueError(f"axis length and tile size must be >= 1, got {n} and {size}.")
    if not 0 <= overlap < size:
        raise ValueError(f"tile overlap must lie in [0, subtomo_size) = [0, {size}), got "
                         f"{overlap}; use e.g. subtomo_size // 3 = {size // 3}.")
    stride = size - overlap
    count = 1 if n <= size else math.ceil((n - size) / stride) + 1
    span = (count - 1) * stride + size
    return -((span - n) // 2) + np.arange(count, dtype=np.int64) * stride


def _ramp(size: int, overlap: int) -> np.ndarray:
    """``(size,)`` raised-cosine tile profile: ``sin²`` rising over ``overlap`` voxels at each
    end (strictly positive), 1 in the middle (float64)."""
    i = np.arange(size, dtype=np.float64)
    if overlap == 0:
        return np.ones(size)
    rise = np.sin(0.5 * np.pi * np.minimum((i + 0.5) / overlap, 1.0)) ** 2
    return np.minimum(rise, rise[::-1])


def blend_weights_1d(n: int, size: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile starts and their normalised blending weights along one axis.

    Returns
    -------
    starts : numpy.ndarray
        ``(n_tiles,)`` int64, as :func:`tile_starts`.
    weights : numpy.ndarray
        ``(n_tiles, size)`` float64: the weight of voxel ``start + i`` in tile ``t``; zero
        outside ``[0, n)``; at every voxel of the axis the weights of the tiles covering it
        sum to 1 (to float64 rounding). The 3D weight of a tile is the outer product of its
        three axes' weights, so those sum to 1 as well.
    """
    starts = tile_starts(n, size, overlap)
    profile = _ramp(size, overlap)
    total = np.zeros(n, dtype=np.float64)
    weights = np.zeros((len(starts), size), dtype=np.float64)
    for t, s0 in enumerate(starts):
        lo, hi = max(0, -int(s0)), min(size, n - int(s0))
        weights[t, lo:hi] = profile[lo:hi]
        total[s0 + lo : s0 + hi] += profile[lo:hi]
    for t, s0 in enumerate(starts):
        lo, hi = max(0, -int(s0)), min(size, n - int(s0))
        weights[t, lo:hi] /= total[s0 + lo : s0 + hi]
    return starts, weights


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices folded into ``[0, n)`` by (repeated) reflection without repeating the edge."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    return np.where(m < n, m, period - m)


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles of a ``(z, y, x)`` volume lie and how they are blended.

    Attributes
    ----------
    shape : tuple of int
        ``(z, y, x)`` of the volume.
    size, overlap : int
        Tile edge and overlap, voxels.
    starts : tuple of numpy.ndarray
        Per axis, the tile starts (:func:`tile_starts`).
    weights : tuple of numpy.ndarray
        Per axis, ``(n_tiles, size)`` normalised weights (:func:`blend_weights_1d`).
    band_axis : int
        0 or 1: the axis processed band by band (the longer of ``z`` and ``y``).
    """

    shape: tuple[int, int, int]
    size: int
    overlap: int
    starts: tuple[np.ndarray, ...] = field(repr=False)
    weights: tuple[np.ndarray, ...] = field(repr=False)
    band_axis: int

    @classmethod
    def for_volume(cls, shape: Sequence[int], size: int, overlap: int | None = None
                   ) -> TileLayout:
        """Layout of tiles of ``size`` with ``overlap`` (default ``size // 3``)."""
        dims = tuple(int(s) for s in shape)
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"expected a (z, y, x) volume shape, got {tuple(shape)!r}.")
        size = int(size)
        overlap = size // 3 if overlap is None else int(overlap)
        pairs = [blend_weights_1d(n, size, overlap) for n in dims]
        return cls(shape=dims, size=size, overlap=overlap,  # type: ignore[arg-type]
                   starts=tuple(p[0] for p in pairs), weights=tuple(p[1] for p in pairs),
                   band_axis=0 if dims[0] > dims[1] else 1)

    @property
    def n_tiles(self) -> int:
        """Number of tiles (per source)."""
        return math.prod(len(s) for s in self.starts)


# --------------------------------------------------------------------------- the network


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA out-of-memory error or a failed CPU allocation raised by torch."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text
        or isinstance(err, MemoryError))


def resolve_autocast(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mixed_precision`` on ``device`` (None: full float32).

    ``auto`` is float16 on CUDA and bfloat16 on CPUs with native bfloat16 kernels (as in
    fitting; ``cryowedge bench dewedge`` reports the refined volume's correlation with a
    float32 refinement), float32 elsewhere; ``bf16`` and ``fp16`` force the dtype; ``off``
    disables autocast (bit-reproducible float32).
    """
    from cryowedge.dewedge.fit import resolve_fit_autocast

    choice = str(mixed_precision).lower()
    if choice == "off":
        return None
    if choice == "auto":
        return resolve_fit_autocast("auto", device)
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        return torch.float16
    raise ValueError(f"mixed_precision must be auto, off, bf16 or fp16, got {mixed_precision!r}.")


class _BatchRunner:
    """Runs tiles through the model in batches, halving the batch on out-of-memory."""

    def __init__(self, model: Model, device: torch.device, batch_size: int,
                 autocast: torch.dtype | None, wedge: torch.Tensor | None, size: int,
                 band: torch.Tensor | None = None) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
        self.model = model
        self.device = device
        self.batch_size = int(batch_size)
        self.autocast = autocast
        self.wedge = wedge
        self.size = size
        self.band = band
        self.backoffs = 0

    def _forward(self, cubes: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(cubes).to(self.device)[:, None]  # (B, 1, s, s, s)
        with torch.inference_mode():
            if self.wedge is not None:
                s = (self.size,) * 3
                x = torch.fft.irfftn(torch.fft.rfftn(x, dim=(-3, -2, -1)) * self.wedge,
                                     s=s, dim=(-3, -2, -1))
            if self.autocast is not None:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    y = self.model(x)
            else:
                y = self.model(x)
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != tuple(x.shape):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"the model must map (B, 1, s, s, s) to the same shape; it maps "
                             f"{tuple(x.shape)} to {got}.")
        if self.band is not None:  # keep only the band the loss fitted (see band_radius)
            s = (self.size,) * 3
            y = torch.fft.irfftn(torch.fft.rfftn(y.to(torch.float32), dim=(-3, -2, -1))
                                 * self.band, s=s, dim=(-3, -2, -1))
        return y[:, 0].to(torch.float32).cpu().numpy()

    def __call__(self, cubes: np.ndarray) -> np.ndarray:
        """``(n, s, s, s)`` float32 tiles → ``(n, s, s, s)`` float32 outputs."""
        out = np.empty_like(cubes)
        i = 0
        while i < len(cubes):
            b = min(self.batch_size, len(cubes) - i)
            try:
                out[i : i + b] = self._forward(cubes[i : i + b])
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if b == 1:
                    raise RuntimeError(
                        f"out of memory with a single {self.size}³ tile on {self.device}: "
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}. Use "
                        "a smaller subtomo_size (refit), free the device, or refine on the CPU "
                        "(device cpu)."
                    ) from err
                self.batch_size = max(1, b // 2)
                self.backoffs += 1
                logger.warning("out of memory with %d tiles per batch; retrying with %d", b,
                               self.batch_size)
                continue
            i += b
        return out


# --------------------------------------------------------------------------- the engine


def _read_band(source: Any, layout: TileLayout, start: int) -> np.ndarray:
    """Rows ``start … start + size`` of ``source`` along the band axis with both other axes
    extended over the tile grid, reflected where the tiles leave the volume (float32)."""
    a = layout.band_axis
    size = layout.size
    rows = _reflect(np.arange(start, start + size), layout.shape[a])
    lo, hi = int(rows.min()), int(rows.max()) + 1
    key: list[Any] = [slice(None)] * 3
    key[a] = slice(lo, hi)
    band = np.asarray(source[tuple(key)], dtype=np.float32)
    if lo != 0 or hi - lo != size or not np.array_equal(rows, np.arange(lo, hi)):
        band = np.take(band, rows - lo, axis=a)
    for b in (ax for ax in range(3) if ax != a):
        first, last = int(layout.starts[b][0]), int(layout.starts[b][-1]) + size
        if first != 0 or last != layout.shape[b]:
            band = np.take(band, _reflect(np.arange(first, last), layout.shape[b]), axis=b)
    return band


def _tiled_apply(
    sources: Sequence[Any],
    stats: Sequence[StandardizationStats],
    runner: _BatchRunner,
    layout: TileLayout,
    sink: Callable[[int, np.ndarray], None],
    progress: ProgressFn | None,
) -> None:
    """Refine ``sources`` (averaged) tile by tile; ``sink(first_row, block)`` receives the
    finished rows along ``layout.band_axis`` in the input's units, in order."""
    a = layout.band_axis
    others = [ax for ax in range(3) if ax != a]
    size = layout.size
    n_a = layout.shape[a]
    acc_shape = list(layout.shape)
    acc_shape[a] = size
    acc = np.zeros(acc_shape, dtype=np.float32)
    starts_a = layout.starts[a]
    grid = [(j, k) for j in range(len(layout.starts[others[0]]))
            for k in range(len(layout.starts[others[1]]))]
    total = layout.n_tiles * len(sources)
    done = 0
    share = 1.0 / len(sources)

    def key_for(ax_slices: dict[int, slice]) -> tuple[slice, ...]:
        return tuple(ax_slices.get(ax, slice(None)) for ax in range(3))

    for i, p in enumerate(starts_a):
        p = int(p)
        bands = [st.apply(_read_band(src, layout, p)) for src, st in zip(sources, stats,
                                                                          strict=True)]
        w_a = layout.weights[a][i]
        jobs = [(j, k, s) for (j, k) in grid for s in range(len(sources))]
        b0 = 0
        while b0 < len(jobs):  # the batch size may shrink on the way (out of memory)
            chunk = jobs[b0 : b0 + runner.batch_size]
            b0 += len(chunk)
            cubes = np.empty((len(chunk), size, size, size), dtype=np.float32)
            for c, (j, k, s) in enumerate(chunk):
                q = int(layout.starts[others[0]][j] - layout.starts[others[0]][0])
                r = int(layout.starts[others[1]][k] - layout.starts[others[1]][0])
                cubes[c] = bands[s][key_for({others[0]: slice(q, q + size),
                                             others[1]: slice(r, r + size)})]
            outputs = runner(cubes)
            for c, (j, k, s) in enumerate(chunk):
                qs, rs = int(layout.starts[others[0]][j]), int(layout.starts[others[1]][k])
                q_lo, q_hi = max(0, -qs), min(size, layout.shape[others[0]] - qs)
                r_lo, r_hi = max(0, -rs), min(size, layout.shape[others[1]] - rs)
                shape_w = [1, 1, 1]
                weight = np.ones((1, 1, 1), dtype=np.float64)
                for ax, vec in ((a, w_a), (others[0], layout.weights[others[0]][j][q_lo:q_hi]),
                                (others[1], layout.weights[others[1]][k][r_lo:r_hi])):
                    shape_w = [1, 1, 1]
                    shape_w[ax] = len(vec)
                    weight = weight * vec.reshape(shape_w)
                tile = outputs[c][key_for({others[0]: slice(q_lo, q_hi),
                                           others[1]: slice(r_lo, r_hi)})]
                tile = stats[s].invert(tile)
                acc[key_for({others[0]: slice(qs + q_lo, qs + q_hi),
                             others[1]: slice(rs + r_lo, rs + r_hi)})] += (
                    (share * weight).astype(np.float32) * tile)
            done += len(chunk)
            report_progress(progress, f"tiles {done}/{total}", done / total)
        nxt = int(starts_a[i + 1]) if i + 1 < len(starts_a) else n_a
        first, last = max(p, 0), min(nxt, n_a)
        if last > first:
            sink(first, acc[key_for({a: slice(first - p, last - p)})])
        shift = nxt - p
        new = np.zeros_like(acc)
        if shift < size:
            new[key_for({a: slice(0, size - shift)})] = acc[key_for({a: slice(shift, size)})]
        acc = new


def _prepare_runner(model: Model, *, size: int, batch_size: int, device: Any,
                    mixed_precision: str, wedge_tilt_angles_deg: Any | None,
                    tilt_axis_angle_deg: float,
                    band_radius: float | None = None) -> _BatchRunner:
    from cryowedge.utils.device import resolve_device

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    if isinstance(model, torch.nn.Module):
        model.to(dev)
        model.eval()
    wedge = None
    if wedge_tilt_angles_deg is not None:
        from cryowedge.geometry.wedge import wedge_mask

        wedge = wedge_mask((size, size, size), wedge_tilt_angles_deg,
                           tilt_axis_angle_deg=tilt_axis_angle_deg, rfft=True, device=dev)
    band = None
    if band_radius is not None and band_radius < 0.866:  # √3/2 holds the whole cube
        from cryowedge.dewedge.loss import sphere_mask

        band = sphere_mask((size, size, size), band_radius, device=dev)
    return _BatchRunner(model, dev, batch_size, resolve_autocast(mixed_precision, dev), wedge,
                        size, band)


def _check_model_units(model: Model, stats: Sequence[StandardizationStats]) -> None:
    """Warn when a network with normalisation buffers (``input_loc``/``input_scale``, e.g.
    :class:`~cryowedge.dewedge.unet.UNet3D`) was evidently fitted on unstandardised values
    while refine feeds it standardised tiles (the contract: the network consumes what
    ``stats.apply`` gives)."""
    scale = getattr(model, "input_scale", None)
    if scale is None or not any(s.method == "robust" for s in stats):
        return
    try:
        value = float(scale)
    except (TypeError, ValueError):  # pragma: no cover - not a scalar buffer
        return
    if value > 0 and abs(math.log10(value)) > 1:
        logger.warning(
            "the network normalises its input with scale %.3g, but refine feeds it standardised "
            "tiles (unit scale): it looks fitted on unstandardised data; refine with "
            "shared.standardize none, or fit on standardised crops (docs/dewedge.md)", value)


def _check_sources(sources: Sequence[Any]) -> tuple[int, int, int]:
    if not sources:
        raise ValueError("nothing to refine: give at least one tomogram.")
    shapes = [tuple(int(s) for s in src.shape) for src in sources]
    if len(shapes[0]) != 3:
        raise ValueError(f"expected (z, y, x) tomograms, got shape {shapes[0]}.")
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"the tomograms to average have different shapes {shapes}; give the two "
                         "halves of one tomogram (same shape).")
    return shapes[0]  # type: ignore[return-value]


def refine_array(
    volumes: Any,
    model: Model,
    *,
    subtomo_size: int,
    overlap: int | None = None,
    batch_size: int = 4,
    stats: StandardizationStats | Sequence[StandardizationStats] | None = None,
    wedge_tilt_angles_deg: Any | None = None,
    tilt_axis_angle_deg: float = 0.0,
    device: Any = "auto",
    mixed_precision: str = "off",
    band_radius: float | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Apply ``model`` to a whole tomogram (or average it over several) tile by tile, in memory.

    Parameters
    ----------
    volumes
        One ``(z, y, x)`` volume or a list of volumes of the same shape (e.g. the two halves)
        whose outputs are averaged: NumPy arrays, memory maps or
        :class:`~cryowedge.io.mrc.LazyMrcArray`.
    model
        Any callable (a ``torch.nn.Module`` is moved to ``device`` and put in eval mode)
        mapping ``(B, 1, s, s, s)`` float32 tensors to the same shape, ``s = subtomo_size``.
    subtomo_size, overlap
        Tile edge and overlap in voxels (overlap default ``subtomo_size // 3``; must be
        ``< subtomo_size``). Any volume shape works, also smaller than a tile.
    batch_size
        Tiles per network call; halved on out-of-memory (see module docstring).
    stats
        Standardisation applied to every tile before the network and inverted after (one for
        all volumes, or one per volume); None: the identity (the network sees raw values).
    wedge_tilt_angles_deg
        Tilt angles (degrees; only the range is used) of the canonical missing wedge removed
        from each tile before the network; None: no masking.
    tilt_axis_angle_deg
        In-plane tilt-axis angle of that wedge (0 for cryowedge tomograms).
    device, mixed_precision
        Where the network runs (``auto``/``cpu``/``cuda[:N]``) and its autocast
        (:func:`resolve_autocast`; default off).
    band_radius
        Keep only frequencies ``|k| ≤ band_radius`` (cycles/voxel) of each output tile: the
        band the fitting loss constrains (``fit.loss_radius``). Beyond it the loss says nothing,
        so a residual network passes the input's noise through there (measured: the corners of
        the cube held most of a refined tomogram's power). None: no band limit (an identity
        network then returns the input exactly).
    progress
        ``progress(step, fraction)`` with ``step = "tiles k/n"`` after every batch.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 refined tomogram in the input's units.
    """
    sources = list(volumes) if isinstance(volumes, (list, tuple)) else [volumes]
    shape = _check_sources(sources)
    stats_list = _stats_list(stats, len(sources))
    _check_model_units(model, stats_list)
    layout = TileLayout.for_volume(shape, subtomo_size, overlap)
    runner = _prepare_runner(model, size=layout.size, batch_size=batch_size, device=device,
                             mixed_precision=mixed_precision,
                             wedge_tilt_angles_deg=wedge_tilt_angles_deg,
                             tilt_axis_angle_deg=tilt_axis_angle_deg, band_radius=band_radius)
    out = np.empty(shape, dtype=np.float32)
    a = layout.band_axis

    def sink(first: int, block: np.ndarray) -> None:
        key: list[Any] = [slice(None)] * 3
        key[a] = slice(first, first + block.shape[a])
        out[tuple(key)] = block

    _tiled_apply(sources, stats_list, runner, layout, sink, progress)
    return out


def _stats_list(stats: Any, n: int) -> list[StandardizationStats]:
    if stats is None:
        return [StandardizationStats.identity()] * n
    if isinstance(stats, StandardizationStats):
        return [stats] * n
    items = list(stats)
    if len(items) != n:
        raise ValueError(f"got {len(items)} standardisation stats for {n} tomograms.")
    return items


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class RefineResult:
    """What :func:`refine_file` wrote.

    Attributes
    ----------
    output_path : pathlib.Path
        The refined tomogram (MRC, float32).
    shape : tuple of int
        Its ``(z, y, x)`` shape (the input's).
    voxel_size_angstrom, origin_angstrom : tuple of float
        ``(z, y, x)`` in Å, copied from the (first) input.
    sources : tuple of str
        What was refined (file names, averaged when several).
    n_tiles : int
        Network calls per source (tiles).
    batch_size : int
        Tiles per batch at the end (smaller than asked after an out-of-memory back-off).
    seconds : float
        Wall time of the tiled inference and writing.
    record_path : pathlib.Path or None
        The run record ``<output stem>.run.yaml``.
    """

    output_path: Path
    shape: tuple[int, int, int]
    voxel_size_angstrom: tuple[float, float, float]
    origin_angstrom: tuple[float, float, float]
    sources: tuple[str, ...]
    n_tiles: int
    batch_size: int
    seconds: float
    record_path: Path | None = None


def _open(source: Any) -> Any:
    from cryowedge.io.mrc import open_mrc_lazy

    return open_mrc_lazy(source) if isinstance(source, (str, Path)) else source


def _refine_to_mrc(
    sources: Sequence[Any],
    output_path: Path,
    model: Model,
    *,
    subtomo_size: int,
    overlap: int | None,
    batch_size: int,
    stats: Sequence[StandardizationStats],
    wedge_tilt_angles_deg: Any | None,
    tilt_axis_angle_deg: float,
    device: Any,
    mixed_precision: str,
    band_radius: float | None = None,
    voxel_size_angstrom: Any,
    origin_angstrom: Any,
    overwrite: bool,
    inputs: Sequence[Any],
    progress: ProgressFn | None,
    parameters: dict[str, Any],
    source_names: Sequence[str],
) -> RefineResult:
    from cryowedge.io.mrc import MrcSlabWriter
    from cryowedge.workflows._record import write_run_record
    from cryowedge.workflows.outputs import check_outputs, keep_backups, mrc_nbytes

    shape = _check_sources(sources)
    _check_model_units(model, stats)
    layout = TileLayout.for_volume(shape, subtomo_size, overlap)
    record_path = output_path.with_name(output_path.stem + ".run.yaml")
    check_outputs([output_path, record_path], inputs=[p for p in inputs if p is not None],
                  overwrite=overwrite, n_bytes=mrc_nbytes(shape) + 65536)
    runner = _prepare_runner(model, size=layout.size, batch_size=batch_size, device=device,
                             mixed_precision=mixed_precision,
                             wedge_tilt_angles_deg=wedge_tilt_angles_deg,
                             tilt_axis_angle_deg=tilt_axis_angle_deg, band_radius=band_radius)
    if overwrite:
        keep_backups([output_path, record_path])
    t0 = time.perf_counter()
    with MrcSlabWriter(output_path, shape, voxel_size_angstrom=voxel_size_angstrom,
                       origin_angstrom=origin_angstrom, overwrite=True) as writer:
        write = writer.write_sections if layout.band_axis == 0 else writer.write_rows
        _tiled_apply(sources, stats, runner, layout, write, progress)
    seconds = time.perf_counter() - t0
    result = RefineResult(
        output_path=output_path, shape=shape,
        voxel_size_angstrom=tuple(float(v) for v in writer.voxel_size_angstrom),  # type: ignore[arg-type]
        origin_angstrom=tuple(float(v) for v in writer.origin_angstrom),  # type: ignore[arg-type]
        sources=tuple(source_names), n_tiles=layout.n_tiles, batch_size=runner.batch_size,
        seconds=seconds, record_path=record_path)
    write_run_record(output_path.parent, "dewedge refine", {
        **parameters, "subtomo_size": layout.size, "overlap": layout.overlap,
        "batch_size": batch_size, "final_batch_size": runner.batch_size,
        "device": str(runner.device), "autocast": str(runner.autocast),
        "wedge_tilt_range_deg": (None if wedge_tilt_angles_deg is None else
                                 [float(np.min(wedge_tilt_angles_deg)),
                                  float(np.max(wedge_tilt_angles_deg))]),
        "stats": [s.to_dict() for s in stats], "sources": list(source_names),
        "seconds": round(seconds, 3)}, {"volume": str(output_path)}, name=record_path.name)
    logger.info("refined %s: %d tiles × %d source(s) in %.1f s", output_path, layout.n_tiles,
                len(sources), seconds)
    return result


def refine_file(
    inputs: str | Path | Sequence[str | Path],
    output_path: str | Path,
    model: Model,
    *,
    subtomo_size: int,
    overlap: int | None = None,
    batch_size: int = 4,
    stats: StandardizationStats | None = None,
    wedge_tilt_angles_deg: Any | None = None,
    tilt_axis_angle_deg: float = 0.0,
    device: Any = "auto",
    mixed_precision: str = "auto",
    band_radius: float | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> RefineResult:
    """Refine an MRC tomogram (or average the refinement of two halves) into an MRC file.

    The inputs are read lazily (only the rows of the current band of tiles); the output is
    written band by band with :class:`~cryowedge.io.mrc.MrcSlabWriter` (atomic: a hidden
    temporary file next to the output, renamed at the end; nothing under ``/tmp``), with the
    voxel size and origin of the first input, and a run record ``<output stem>.run.yaml``.

    Parameters
    ----------
    inputs
        One MRC path (the full tomogram) or several of the same shape and voxel size (the
        halves, averaged).
    output_path
        The refined tomogram; refused if it exists unless ``overwrite`` (the old file is then
        kept as ``<name>~``), or if it is an input.
    model
        Callable ``(B, 1, s, s, s) → (B, 1, s, s, s)``.
    stats
        Standardisation of the inputs (the one the network was fitted with: the ``stats`` of
        the prepared tomogram). None computes robust statistics from the inputs (pooled), which
        matches fitting only when the inputs are the fitted halves.
    subtomo_size, overlap, batch_size, wedge_tilt_angles_deg, tilt_axis_angle_deg, device, \
mixed_precision, band_radius, progress
        As :func:`refine_array`.

    Raises
    ------
    ValueError
        Inputs of different shapes or voxel sizes, a bad overlap, an output that is an input
        or cannot be written — all before any tile is computed.
    """
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    sources = [_open(p) for p in paths]
    _check_sources(sources)
    voxels = [tuple(src.voxel_size_angstrom) for src in sources]
    if any(not np.allclose(v, voxels[0], rtol=1e-4, atol=0) for v in voxels):
        raise ValueError(f"the tomograms to average have different voxel sizes {voxels} Å; give "
                         "the two halves of one tomogram.")
    if stats is None:
        stats = robust_stats(sources)
        logger.info("standardisation from the inputs: centre %.4g, scale %.4g", stats.centre,
                    stats.scale)
    return _refine_to_mrc(
        sources, Path(output_path), model, subtomo_size=subtomo_size, overlap=overlap,
        batch_size=batch_size, stats=[stats] * len(sources),
        wedge_tilt_angles_deg=wedge_tilt_angles_deg, tilt_axis_angle_deg=tilt_axis_angle_deg,
        device=device, mixed_precision=mixed_precision, band_radius=band_radius,
        voxel_size_angstrom=sources[0].voxel_size_angstrom,
        origin_angstrom=sources[0].origin_angstrom, overwrite=overwrite, inputs=paths,
        progress=progress, parameters={"inputs": [str(p) for p in paths]},
        source_names=[p.name for p in paths])


def refine_prepared(
    prepared: Any,
    model: Model,
    output_dir: str | Path | None = None,
    *,
    config: Any | None = None,
    source: str | None = None,
    device: Any | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> list[RefineResult]:
    """Refine every tomogram of a prepared data set (:mod:`cryowedge.dewedge.prepare`).

    Parameters
    ----------
    prepared
        A :class:`~cryowedge.dewedge.prepare.PreparedData`, or the path of its directory or
        ``prepared.yaml``.
    model
        The fitted network (``(B, 1, s, s, s)`` → same).
    output_dir
        Where ``<name>_refined.mrc`` (and its run record) go; default: the prepared directory.
    config
        A :class:`~cryowedge.config.dewedge.DewedgeConfig` (default: the one saved by prepare);
        ``shared.subtomo_size``, ``shared.mode``, ``shared.standardize`` and the ``refine``
        section are used.
    source
        ``"auto"``, ``"full"`` or ``"halves"`` (default ``config.refine.source``; ``"auto"`` is
        ``"full"`` in ``dewedge`` mode and ``"halves"`` in ``n2n`` mode). ``"full"`` refines the
        full-tilt-series tomogram; when prepare did not make one (ready-made halves), the mean
        of the two halves stands in for it (the FBP of all views is, up to the view weights,
        that mean). ``"halves"`` refines both halves and averages the outputs.
    device
        Overrides ``config.shared.device``.

    Returns
    -------
    list of RefineResult
        One per tomogram, in the manifest's order.

    Notes
    -----
    Every tile is standardised with the tomogram's ``stats`` (the pair's, also for the full
    tomogram, so it reaches the network at the amplitude fitted on), unless
    ``shared.standardize`` is ``none``; in ``dewedge`` mode (and unless ``refine.mask_wedge``
    is False) the canonical wedge of the tomogram's tilt range is removed from each tile first.
    """
    from cryowedge.config.dewedge import DewedgeConfig
    from cryowedge.dewedge.prepare import MeanOf, PreparedData, load_prepared

    data = prepared if isinstance(prepared, PreparedData) else load_prepared(prepared)
    cfg = data.config if config is None else config
    if not isinstance(cfg, DewedgeConfig):
        raise TypeError(f"config must be a DewedgeConfig, got {type(cfg).__name__}.")
    which = source or cfg.refine.source
    if which == "auto":  # each mode's better protocol (docs/dewedge.md, "Sources")
        which = "full" if cfg.shared.mode == "dewedge" else "halves"
    if which not in ("full", "halves"):
        raise ValueError(f"source must be 'auto', 'full' or 'halves', got {which!r}.")
    out_dir = Path(output_dir) if output_dir is not None else data.directory
    mask_wedge = cfg.refine.mask_wedge
    if mask_wedge is None:
        mask_wedge = cfg.shared.mode == "dewedge"
    dev = device if device is not None else cfg.shared.device
    names = [t.name for t in data.tomograms]
    if len(set(names)) != len(names):  # pragma: no cover - prepare makes names unique
        raise ValueError(f"tomogram names repeat in the manifest: {names}.")
    results = []
    for n_done, tomo in enumerate(data.tomograms):
        if which == "halves":
            sources: list[Any] = [tomo.open_lazy("half_a"), tomo.open_lazy("half_b")]
            inputs = [tomo.half_a_path, tomo.half_b_path]
        elif tomo.full_path is not None:
            sources, inputs = [tomo.open_lazy("full")], [tomo.full_path]
        else:
            logger.info("%s: no full tomogram was prepared; refining the mean of the halves",
                        tomo.name)
            sources = [MeanOf(tomo.open_lazy("half_a"), tomo.open_lazy("half_b"))]
            inputs = [tomo.half_a_path, tomo.half_b_path]
        stats = tomo.stats if cfg.shared.standardize == "robust" else (
            StandardizationStats.identity())

        def part(step: str, fraction: float, k: int = n_done, name: str = tomo.name) -> None:
            report_progress(progress, f"{name}: {step}" if len(names) > 1 else step,
                            (k + fraction) / len(names))

        results.append(_refine_to_mrc(
            sources, out_dir / f"{tomo.name}_refined.mrc", model,
            subtomo_size=cfg.shared.subtomo_size, overlap=cfg.refine.overlap,
            batch_size=cfg.refine.batch_size, stats=[stats] * len(sources),
            wedge_tilt_angles_deg=tomo.tilt_angles_deg if mask_wedge else None,
            tilt_axis_angle_deg=tomo.tilt_axis_angle_deg, device=dev,
            mixed_precision=cfg.refine.mixed_precision,
            band_radius=cfg.fit.loss_radius if cfg.refine.band_limit else None,
            voxel_size_angstrom=tomo.voxel_size_angstrom, origin_angstrom=tomo.origin_angstrom,
            overwrite=overwrite, inputs=inputs, progress=part if progress else None,
            parameters={"prepared": str(data.manifest_path), "tomogram": tomo.name,
                        "source": which, "mask_wedge": bool(mask_wedge),
                        "band_radius": cfg.fit.loss_radius if cfg.refine.band_limit else None,
                        "config": cfg.model_dump(mode="json")},
            source_names=[Path(p).name for p in inputs]))
    return results


def refine_checkpoint(
    checkpoint_path: str | Path,
    prepared: Any,
    output_dir: str | Path | None = None,
    *,
    config: Any | None = None,
    **kwargs: Any,
) -> list[RefineResult]:
    """:func:`refine_prepared` with the network of a fit checkpoint.

    The model comes from :func:`cryowedge.dewedge.fit.load_model`. Without ``config``, the
    configuration the network was fitted with (the checkpoint's) is used, so its
    ``subtomo_size``, ``mode`` (wedge masking) and ``standardize`` match the fit; a given
    ``config`` must describe the same network (``load_model`` refuses another). ``kwargs`` go
    to :func:`refine_prepared` (``source``, ``device``, ``overwrite``, ``progress``).
    """
    from cryowedge.dewedge.fit import load_model

    model, metadata = load_model(checkpoint_path, config=config)
    cfg = config if config is not None else metadata.get("config")
    return refine_prepared(prepared, model, output_dir, config=cfg, **kwargs)
