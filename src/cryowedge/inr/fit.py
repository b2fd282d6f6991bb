"""Fit a coordinate network to a tilt series through the differentiable projector.

The method of seeds/002 (Van Veen): find ``θ`` so that the projections ``P G_θ(C)`` of the
network's volume match the measured tilt series ``p``, with no training data.

**Units.** The tilt series is divided by its standard deviation (``config.normalize``,
:func:`cryowedge.recon.scaling.data_scale`) and the network predicts the volume in units
of a fixed *value scale* ``s = rms(p) / rms(P 1)`` (the constant density whose projections
have the data's RMS), so its outputs are of order 1 whatever the thickness and the data's
units. The result is ``s · data_scale · G_θ`` in the units of the input (line integrals
in voxels, docs/conventions.md). The regularisers act on ``G_θ`` itself, so ``lam_c`` and
``tv_weight`` do not depend on the data's units either.

**Batches of y-slices.** The tilt axis is ``y``, so rows ``y0:y1`` of the volume project to
rows ``y0:y1`` of the aligned series (:meth:`TiltProjector.restrict_rows`). Each optimiser
step evaluates the network on the ``(nz, rows, nx)`` voxels of one batch of
``slice_batch`` rows (the report's β batches; memory grows with ``slice_batch``, not with
the volume) and minimises

    J_b = mean_b ρ(p − s·P G_θ) + lam_c · R_c(G_θ) + tv_weight · TV(G_θ)

(``ρ`` = square or absolute value; :mod:`cryowedge.inr.regularizers`). Every term is a mean
over the batch's rows, so the whole-volume objective is the row-weighted mean of the
batches' (:func:`inr_objective` computes it batch by batch, with gradients, and equals the
one-batch value: tests/test_inr_fit.py). An epoch visits every batch once, in a random
(seeded) or sequential order. Rows are split into ``ceil(rows / slice_batch)`` batches of
near-equal size.

**Chunks** (``chunk_rows``; the original code's scheme, research/anchors_tomo.md §3.3): the
rows are split into chunks of about ``chunk_rows`` slices, each fitted by its own network,
from the middle chunk outwards (up, then down). The middle chunk runs ``epochs`` epochs from
a random initialisation; every other chunk starts from its neighbour's final weights
(``warm_start``) and runs ``warm_epochs`` (or, without warm start, a fresh network for
``epochs``). All networks take the same global coordinates.

**Seeds.** ``n_seeds`` independent fits (different initial weights, Fourier features and batch
orders) are averaged (the report's Fig. 12).

**Optimiser.** AdamW (``amsgrad``), learning rate ``lr`` decayed over each network's steps to
``lr·lr_final`` (``exponential``: log-linear, the original code's "log decay"; ``cosine``;
or ``constant``).

**Precision.** ``mixed_precision``: the network runs under ``torch.autocast`` (``auto`` =
float16 with a ``GradScaler`` on CUDA, float32 elsewhere; ``bf16`` anywhere, ``fp16`` on CUDA
only); the projector (:mod:`cryowedge.operators.autograd`), the FFT penalty, TV and the
losses always compute in float32.

**Checkpoints** (``checkpoint_path``, every ``config.checkpoint_every`` optimiser steps, and
when a callback stops the fit): one ``torch.save`` file written atomically, holding the
network, optimiser and scaler states, the position (seed, chunk, epoch, batch), the batch
order and its generator state, the global torch RNG state, the finished rows of the current
seed, the sum of the finished seeds, the weights later chunks start from, the history, the
network shape and the fit options. ``resume=True`` continues from it and reproduces the
uninterrupted run's weights exactly on the same machine and thread count. A checkpoint of
another network shape, other fit options (only ``checkpoint_every``, ``device`` and
``threads`` may change) or other data is refused in one line before any fitting.

**Progress** goes to ``callback(IterationInfo)`` after every optimiser step
(:class:`cryowedge.solvers.IterationInfo`: ``iteration``/``n_iter`` count the steps of this
call, ``x`` is the batch's ``(nz, rows, nx)`` slab in output units, ``objective`` the step's
``J_b``, ``extras`` the terms, ``lr``, ``step`` (of the whole run), ``seed_index``,
``chunk``, ``epoch``, ``y0``, ``y1``); returning ``True`` stops the fit. The library logs with
``logging.getLogger(__name__)`` and never prints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.config.inr import InrConfig
from cryowedge.config.models import ReconstructConfig
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.inr.networks import CoordinateNetwork, NetworkSpec, build_network, coordinate_grid
from cryowedge.inr.regularizers import CrowtherWedgePenalty, total_variation
from cryowedge.operators.autograd import apply_forward
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.solvers import IterationInfo

__all__ = [
    "CHECKPOINT_FORMAT",
    "InrProblem",
    "InrResult",
    "Objective",
    "batch_objective",
    "fit_inr",
    "inr_objective",
    "plan_chunks",
    "predict_volume",
    "prepare_problem",
    "read_checkpoint",
    "resolve_inr_autocast",
    "row_batches",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cryowedge-inr-checkpoint"
CHECKPOINT_VERSION = 1
#: Config fields that may differ between an interrupted fit and its resumption.
_RESUMABLE_CHANGES = frozenset({"checkpoint_every", "device", "threads"})
#: InrConfig fields that define the network (a checkpoint must match them).
_NETWORK_FIELDS = ("activation", "width", "n_layers", "encoding", "encoding_scale",
                   "n_frequencies", "omega0")


# --------------------------------------------------------------------------- the problem


@dataclass
class InrProblem:
    """The data and operator of one fit (build it with :func:`prepare_problem`).

    Attributes
    ----------
    data : torch.Tensor
        ``(n_tilts, ny, n_perp)`` aligned tilt series divided by ``data_scale`` (float32,
        on ``device``).
    projector : TiltProjector
        The aligned projector of the ``(nz, ny, nx)`` volume.
    volume_shape : (nz, ny, nx)
        Voxels.
    tilt_angles_deg : numpy.ndarray
        ``(n_tilts,)`` degrees.
    data_scale : float
        What the input series was divided by.
    value_scale : float
        ``s``: volume value of one network unit (in normalised data units).
    device : torch.device
    """

    data: torch.Tensor
    projector: TiltProjector
    volume_shape: tuple[int, int, int]
    tilt_angles_deg: np.ndarray
    data_scale: float
    value_scale: float
    device: torch.device
    _rows: dict[tuple[int, int], TiltProjector] = field(default_factory=dict, repr=False)

    @property
    def half_extent(self) -> float:
        """Voxels per coordinate unit: half the largest volume dimension."""
        return float(max(self.volume_shape)) / 2.0

    def rows_projector(self, y0: int, y1: int) -> TiltProjector:
        """The projector of volume rows ``y0:y1`` (cached; shares the sparse matrices)."""
        key = (int(y0), int(y1))
        if key not in self._rows:
            self._rows[key] = self.projector.restrict_rows(*key)
        return self._rows[key]

    def fingerprint(self) -> list[float]:
        """``[Σ p, Σ p²]`` of the normalised data (float64): refuses resuming on other data."""
        d = self.data.double()
        return [float(d.sum()), float((d * d).sum())]


def _aligned(tilt_series: torch.Tensor, geometry: TiltGeometry,
             shape: tuple[int, int, int]) -> tuple[torch.Tensor, TiltGeometry]:
    """Resample into the aligned frame when the geometry needs a detector warp."""
    op = TiltProjector(geometry, shape)
    if op.warp is None:
        return tilt_series, geometry
    aligned = op.to_aligned(tilt_series)
    geom = geometry.with_(detector_shape=geometry.aligned_detector_shape,
                          tilt_axis_angle_deg=0.0, shifts_px=None, view_matrices=None)
    logger.info("resampled the tilt series into the aligned frame %s", tuple(aligned.shape))
    return aligned, geom


def prepare_problem(
    tilt_series: Any,
    geometry: TiltGeometry,
    volume_shape: tuple[int, int, int] | None = None,
    *,
    normalize: bool = True,
    device: torch.device | str | None = None,
) -> InrProblem:
    """Normalise and align the data, build the projector and the value scale.

    Parameters
    ----------
    tilt_series : array_like, (n_tilts, ny, nx)
        The measured series (finite), matching ``geometry``.
    geometry : TiltGeometry
        Its geometry; a raw one (tilt axis not along ``Y``, shifts along it) is resampled
        into the aligned frame first (:meth:`TiltProjector.to_aligned`).
    volume_shape : (nz, ny, nx), optional
        Default ``geometry.default_volume_shape()``.
    normalize : bool
        Divide by the standard deviation of the series.
    device : torch.device or str, optional
        Default CPU.
    """
    from cryowedge._validation import check_tilt_series
    from cryowedge.recon.scaling import data_scale

    dev = torch.device("cpu") if device is None else torch.device(device)
    shape = geometry.default_volume_shape() if volume_shape is None else tuple(
        int(s) for s in volume_shape)
    series = np.asarray(tilt_series, dtype=np.float32)
    check_tilt_series(series, geometry)
    data = torch.as_tensor(series, device=dev)
    scale = data_scale(data, normalize)
    data, geom = _aligned(data / scale, geometry, shape)
    projector = TiltProjector(geom, shape)
    ones = torch.ones((shape[0], 1, shape[2]), dtype=torch.float32, device=dev)
    p1 = projector.restrict_rows(0, 1)(ones)  # the same for every row
    rms_p1 = float(p1.double().square().mean().sqrt())
    rms_data = float(data.double().square().mean().sqrt())
    value_scale = rms_data / rms_p1 if rms_p1 > 0 and rms_data > 0 else 1.0
    return InrProblem(data.contiguous(), projector, shape,
                      np.asarray(geom.tilt_angles_deg, dtype=np.float64), scale, value_scale, dev)


# --------------------------------------------------------------------------- the objective


@dataclass
class Objective:
    """The terms of ``J`` (module docstring).

    Attributes
    ----------
    loss : {"l2", "l1"}
        Data term ``ρ``.
    lam_c : float
        Weight of the Crowther/wedge penalty (>= 0).
    penalty : CrowtherWedgePenalty or None
        The penalty (None when ``lam_c`` is 0).
    tv_weight : float
        Weight of TV (>= 0).
    """

    loss: str = "l2"
    lam_c: float = 0.0
    penalty: CrowtherWedgePenalty | None = None
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in ("l2", "l1"):
            raise ValueError(f"unknown loss {self.loss!r}; choose l2 or l1.")
        for name in ("lam_c", "tv_weight"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")

    @classmethod
    def from_config(cls, config: InrConfig, problem: InrProblem) -> Objective:
        """The objective of ``config`` for ``problem``'s geometry."""
        penalty = None
        if config.lam_c > 0:
            nz, _, nx = problem.volume_shape
            penalty = CrowtherWedgePenalty(
                nz, nx, problem.tilt_angles_deg,
                crowther_diameter_px=config.crowther_diameter_px, crowther=config.crowther,
                power=1 if config.penalty_norm == "l1" else 2, device=problem.device,
            )
        return cls(config.loss, float(config.lam_c), penalty, float(config.tv_weight))


def _autocast(dtype: torch.dtype | None,
              device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def batch_objective(
    model: CoordinateNetwork,
    problem: InrProblem,
    objective: Objective,
    y0: int,
    y1: int,
    *,
    autocast: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """``J_b`` of rows ``y0:y1`` (differentiable), its terms, and the slab.

    Returns
    -------
    loss : torch.Tensor
        Scalar float32 ``J_b``.
    terms : dict
        ``data``, ``crowther``, ``tv`` (unweighted, floats) and ``loss``.
    slab : torch.Tensor
        ``(nz, y1 − y0, nx)`` network output (network units, float32, in the graph).
    """
    nz, ny, nx = problem.volume_shape
    extra = 1 if objective.tv_weight > 0 and y1 < ny else 0
    dtype = next(model.parameters()).dtype  # float32 (float64 in gradient checks)
    coords = coordinate_grid(problem.volume_shape, (y0, y1 + extra),
                             half_extent=problem.half_extent, device=problem.device, dtype=dtype)
    with _autocast(autocast, problem.device):
        out = model(coords)
    if out.dtype in (torch.float16, torch.bfloat16):
        out = out.float()
    slab = out[:, : y1 - y0]
    projected = apply_forward(problem.rows_projector(y0, y1), slab) * problem.value_scale
    residual = projected - problem.data[:, y0:y1]
    data_term = residual.square().mean() if objective.loss == "l2" else residual.abs().mean()
    loss = data_term
    terms = {"data": float(data_term.detach())}
    if objective.penalty is not None and objective.lam_c > 0:
        crowther = objective.penalty(slab)
        loss = loss + objective.lam_c * crowther
        terms["crowther"] = float(crowther.detach())
    else:
        terms["crowther"] = 0.0
    if objective.tv_weight > 0:
        tv = total_variation(slab, out[:, y1 - y0 :] if extra else None)
        loss = loss + objective.tv_weight * tv
        terms["tv"] = float(tv.detach())
    else:
        terms["tv"] = 0.0
    terms["loss"] = float(loss.detach())
    return loss, terms, slab


def row_batches(y0: int, y1: int, slice_batch: int) -> list[tuple[int, int]]:
    """Rows ``y0:y1`` in ``ceil((y1 − y0) / slice_batch)`` consecutive batches of near-equal
    size."""
    n = max(1, math.ceil((y1 - y0) / int(slice_batch)))
    edges = [y0 + ((y1 - y0) * i) // n for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def inr_objective(
    model: CoordinateNetwork,
    problem: InrProblem,
    objective: Objective,
    *,
    slice_batch: int | None = None,
    rows: tuple[int, int] | None = None,
    backward: bool = False,
    autocast: torch.dtype | None = None,
) -> dict[str, float]:
    """The objective ``J`` of rows ``rows`` (default all), computed by batches of rows.

    ``J`` is the row-weighted mean of the batches' ``J_b``, so it does not depend on
    ``slice_batch`` (default: all rows at once). With ``backward=True`` the gradient of
    ``J`` is accumulated into the parameters' ``.grad`` (batch by batch, so the memory is
    that of one batch). Returns ``loss``, ``data``, ``crowther`` and ``tv`` (floats).
    """
    y0, y1 = (0, problem.volume_shape[1]) if rows is None else (int(rows[0]), int(rows[1]))
    batches = row_batches(y0, y1, slice_batch or (y1 - y0))
    total = {"loss": 0.0, "data": 0.0, "crowther": 0.0, "tv": 0.0}
    for b0, b1 in batches:
        weight = (b1 - b0) / (y1 - y0)
        with torch.set_grad_enabled(backward):
            loss, terms, _ = batch_objective(model, problem, objective, b0, b1, autocast=autocast)
            if backward:
                (loss * weight).backward()
        for key in total:
            total[key] += weight * terms[key]
    return total


@torch.no_grad()
def predict_volume(
    model: CoordinateNetwork,
    volume_shape: tuple[int, int, int],
    *,
    rows: tuple[int, int] | None = None,
    slice_batch: int = 16,
    half_extent: float | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The network's volume on rows ``rows`` (default all), in network units, float32.

    Evaluated ``slice_batch`` rows at a time (memory of one batch), in float32.

    Returns
    -------
    torch.Tensor
        ``(nz, y1 − y0, nx)`` on the CPU.
    """
    nz, ny, nx = (int(s) for s in volume_shape)
    y0, y1 = (0, ny) if rows is None else (int(rows[0]), int(rows[1]))
    dev = next(model.parameters()).device if device is None else torch.device(device)
    h = float(max(nz, ny, nx)) / 2.0 if half_extent is None else float(half_extent)
    out = torch.empty((nz, y1 - y0, nx), dtype=torch.float32)
    for b0, b1 in row_batches(y0, y1, slice_batch):
        coords = coordinate_grid((nz, ny, nx), (b0, b1), half_extent=h, device=dev,
                                 dtype=next(model.parameters()).dtype)
        out[:, b0 - y0 : b1 - y0] = model(coords).float().cpu()
    return out


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Chunk:
    """One network's share of the rows.

    Attributes
    ----------
    index : int
        Position along ``y`` (0 = the lowest rows).
    rows : (y0, y1)
    batches : list of (y0, y1)
        The slice batches of one epoch.
    epochs : int
    parent : int or None
        The chunk whose final weights this one starts from (None: a fresh network).
    """

    index: int
    rows: tuple[int, int]
    batches: tuple[tuple[int, int], ...]
    epochs: int
    parent: int | None

    @property
    def steps(self) -> int:
        return self.epochs * len(self.batches)


def plan_chunks(config: InrConfig, ny: int) -> list[Chunk]:
    """The chunks of a fit in fitting order (the middle one first, then up, then down)."""
    rows = config.chunk_rows or ny
    n = max(1, math.ceil(ny / rows))
    edges = [(ny * i) // n for i in range(n + 1)]
    middle = n // 2
    order = list(range(middle, n)) + list(range(middle - 1, -1, -1))
    chunks = []
    for i in order:
        if i == middle:
            parent = None
        elif not config.warm_start:
            parent = None
        else:
            parent = i - 1 if i > middle else i + 1
        epochs = config.epochs if parent is None else config.warm_epochs
        chunks.append(Chunk(i, (edges[i], edges[i + 1]),
                            tuple(row_batches(edges[i], edges[i + 1], config.slice_batch)),
                            epochs, parent))
    return chunks


def _check_sizes(config: InrConfig, volume_shape: tuple[int, int, int]) -> None:
    nz, ny, nx = volume_shape
    if config.slice_batch > ny:
        raise ValueError(
            f"slice_batch {config.slice_batch} is larger than the volume's {ny} y-slices; "
            f"use slice_batch <= {ny}."
        )
    if config.chunk_rows is not None and config.chunk_rows > ny:
        raise ValueError(
            f"chunk_rows {config.chunk_rows} is larger than the volume's {ny} y-slices; use "
            f"chunk_rows <= {ny} (or none for one network)."
        )


def resolve_inr_autocast(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the network (None: float32): ``auto`` is float16 on CUDA, off
    elsewhere; ``bf16``, ``fp16`` (CUDA only) and ``off`` as in
    :func:`cryowedge.dewedge.fit.resolve_fit_autocast`."""
    if str(mixed_precision).lower() == "auto":
        return torch.float16 if device.type == "cuda" else None
    from cryowedge.dewedge.fit import resolve_fit_autocast

    return resolve_fit_autocast(mixed_precision, device)


def _lr_factor(schedule: str, final: float, step: int, steps: int) -> float:
    """Learning-rate factor of step ``step`` (0-based) of a network's ``steps``."""
    if schedule == "constant" or steps <= 1:
        return 1.0
    t = step / (steps - 1)
    if schedule == "exponential":
        return float(final**t)
    if schedule == "cosine":
        return float(final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t)))
    raise ValueError(f"unknown lr_schedule {schedule!r}; choose exponential, cosine or constant.")


def _sub_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


# --------------------------------------------------------------------------- checkpoints


def _fit_options(config: InrConfig) -> dict[str, Any]:
    """The options that define a fit (compared on resume)."""
    own = [k for k in type(config).model_fields if k not in ReconstructConfig.model_fields]
    keys = [*own, "seed", "normalize"]
    dump = config.model_dump(mode="json")
    return {k: dump[k] for k in keys if k not in _RESUMABLE_CHANGES}


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an INR checkpoint, or the final-volume checkpoint of ``reconstruct`` (a dict
    with ``x``), on the CPU.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        One line: corrupt, or not a cryowedge INR checkpoint.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}; run without resume first.")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a bad file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"checkpoint {str(p)!r} is corrupt or not a cryowedge checkpoint "
            f"({type(err).__name__}: {first[:200]}); fit again without resume."
        ) from None
    if not isinstance(data, dict) or (data.get("format") != CHECKPOINT_FORMAT and "x" not in data):
        raise ValueError(f"{str(p)!r} is not a cryowedge INR checkpoint; fit again without resume.")
    version = int(data.get("version", 0))
    if data.get("format") == CHECKPOINT_FORMAT and version != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {str(p)!r} has version {data.get('version')!r}; this cryowedge reads "
            f"version {CHECKPOINT_VERSION}."
        )
    return data


def _check_resume(data: dict[str, Any], path: Path, config: InrConfig, spec: NetworkSpec,
                  data_shape: tuple[int, ...], volume_shape: tuple[int, ...]) -> None:
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {str(path)!r} holds a finished volume, not a fit in progress; there "
            "is nothing to resume (read its 'x', or fit again without resume)."
        )
    saved = dict(data["network"])
    if saved != spec.to_dict():
        diff = [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}"
                for k, v in spec.to_dict().items() if saved.get(k) != v]
        raise ValueError(
            f"checkpoint {str(path)!r} holds a network of another shape ({'; '.join(diff)}); "
            "resume with the options it was made with, or fit again without resume."
        )
    if tuple(data["data_shape"]) != tuple(data_shape) or tuple(data["volume_shape"]) != tuple(
            volume_shape):
        raise ValueError(
            f"checkpoint {str(path)!r} was made for data {tuple(data['data_shape'])} / volume "
            f"{tuple(data['volume_shape'])}, not {tuple(data_shape)} / {tuple(volume_shape)}."
        )
    old, new = dict(data["fit_options"]), _fit_options(config)
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    if diff:
        raise ValueError(
            f"cannot resume {str(path)!r} with other fit options ({'; '.join(diff)}); resume "
            "with the original settings (only checkpoint_every, device and threads may change)."
        )


def _state_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _save(path: Path, payload: dict[str, Any]) -> None:
    from cryowedge.io._atomic import atomic_write

    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    logger.info("checkpoint: step %d saved to %s", payload["iterations_done"], path)


# --------------------------------------------------------------------------- the loop


@dataclass
class InrResult:
    """The reconstruction and the record of the fit.

    Attributes
    ----------
    volume : numpy.ndarray
        ``(nz, ny, nx)`` float32 in the input's units (the mean over seeds). After an early
        stop: the finished rows of the current seed, the current network elsewhere, averaged
        with the finished seeds.
    model : CoordinateNetwork
        The last network fitted (eval mode).
    history : list of dict
        Per epoch: ``seed_index``, ``chunk``, ``epoch`` (1-based), ``loss``, ``data``,
        ``crowther``, ``tv`` (means over the epoch's steps), ``seconds``.
    steps_done, total_steps : int
        Optimiser steps of the whole run (resumed ones included).
    stopped_early : bool
        A callback stopped the fit.
    resumed_from : int or None
        Steps done by the checkpoint this fit resumed from.
    data_scale, value_scale : float
        See the module docstring.
    crowther_frequency_cpp : float or None
        ``k_c`` of the penalty (None when off).
    seconds : float
        Wall time of this call.
    config : InrConfig
    """

    volume: np.ndarray
    model: CoordinateNetwork
    history: list[dict[str, Any]]
    steps_done: int
    total_steps: int
    stopped_early: bool
    resumed_from: int | None
    data_scale: float
    value_scale: float
    crowther_frequency_cpp: float | None
    seconds: float
    config: InrConfig


def fit_inr(
    tilt_series: Any,
    geometry: TiltGeometry,
    config: InrConfig | None = None,
    *,
    volume_shape: tuple[int, int, int] | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> InrResult:
    """Fit ``config``'s coordinate network(s) to ``tilt_series``; see the module docstring.

    Parameters
    ----------
    tilt_series : array_like, (n_tilts, ny, nx)
        The measured series.
    geometry : TiltGeometry
        Its geometry (angles in degrees; raw geometries are resampled to the aligned frame).
    config : InrConfig, optional
        Options (default :class:`~cryowedge.config.inr.InrConfig`).
    volume_shape : (nz, ny, nx), optional
        Default ``geometry.default_volume_shape(config.thickness)``.
    device : torch.device or str, optional
        Default ``config.device`` (``auto``: CUDA when present).
    callback : callable, optional
        ``callback(IterationInfo)`` after every step; ``True`` stops (a checkpoint is written
        first when ``checkpoint_path`` is given). An ``on_end(info)`` method is called once
        when the fit ends.
    checkpoint_path : path, optional
        The checkpoint file (written every ``config.checkpoint_every`` steps).
    resume : bool
        Continue from ``checkpoint_path``.

    Returns
    -------
    InrResult

    Raises
    ------
    ValueError
        Before any fitting, in one line: ``slice_batch`` or ``chunk_rows`` larger than the
        volume's ``y`` size, a data/geometry mismatch, a checkpoint of another network shape,
        other fit options or other data.
    """
    from cryowedge.utils.device import resolve_device

    t_start = time.perf_counter()
    config = InrConfig() if config is None else config
    if not isinstance(config, InrConfig):
        raise TypeError(f"config must be an InrConfig, got {type(config).__name__}.")
    dev = resolve_device(config.device if device is None else device)
    shape = (geometry.default_volume_shape(config.thickness) if volume_shape is None
             else tuple(int(s) for s in volume_shape))
    _check_sizes(config, shape)
    nz, ny, nx = shape
    spec = NetworkSpec(**config.network_options(), half_extent=float(max(shape)) / 2.0)
    autocast = resolve_inr_autocast(config.mixed_precision, dev)
    ckpt = None if checkpoint_path is None else Path(checkpoint_path)
    state: dict[str, Any] | None = None
    if resume:
        if ckpt is None:
            raise ValueError("resume needs a checkpoint_path.")
        state = read_checkpoint(ckpt)
        _check_resume(state, ckpt, config, spec, tuple(np.shape(tilt_series)), shape)
    problem = prepare_problem(tilt_series, geometry, shape, normalize=config.normalize, device=dev)
    fingerprint = problem.fingerprint()
    if state is not None:
        fp, old = fingerprint, list(state["data_fingerprint"])
        if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(fp, old, strict=True)):
            raise ValueError(
                f"checkpoint {str(ckpt)!r} was made for other data (or other preprocessing); "
                "resume with the same tilt series, or fit again without resume."
            )
    objective = Objective.from_config(config, problem)
    chunks = plan_chunks(config, ny)
    steps_per_seed = sum(c.steps for c in chunks)
    total = config.n_seeds * steps_per_seed
    every = config.checkpoint_every if ckpt is not None else None
    logger.info(
        "inr: %s network %dx%d, volume %s, %d chunk(s), %d steps (%d seed(s)), value scale %.4g",
        spec.activation, spec.n_layers, spec.width, shape, len(chunks), total, config.n_seeds,
        problem.value_scale,
    )

    # ---- the state of the loop (fresh, or from the checkpoint)
    seed_sum = torch.zeros(shape, dtype=torch.float32)  # sum of the finished seeds' volumes
    seed_rows = torch.zeros(shape, dtype=torch.float32)  # finished chunks of the current seed
    parents: dict[int, dict[str, torch.Tensor]] = {}  # weights later chunks start from
    history: list[dict[str, Any]] = []
    pos = {"seed": 0, "chunk": 0, "epoch": 0, "batch": 0, "in_chunk": False}  # the next step
    order: list[int] | None = None  # batch order of the current epoch (None: not drawn yet)
    sums = {"loss": 0.0, "data": 0.0, "crowther": 0.0, "tv": 0.0}  # of the current epoch
    step = 0
    if state is not None:
        seed_sum, seed_rows = state["seed_sum"].clone(), state["seed_rows"].clone()
        parents = {int(k): v for k, v in state["parents"].items()}
        history = [dict(h) for h in state["history"]]
        pos = dict(state["position"])
        order = None if state["order"] is None else [int(i) for i in state["order"]]
        sums = {k: float(v) for k, v in state["epoch_sums"].items()}
        step = int(state["iterations_done"])
        torch.set_rng_state(state["torch_rng"])
        logger.info("resuming from step %d of %d", step, total)
    start_step = step
    model: CoordinateNetwork | None = None
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    order_gen: torch.Generator | None = None
    stopped = False
    last_info: IterationInfo | None = None
    last_saved = -1

    def payload() -> dict[str, Any]:
        assert model is not None and optimizer is not None and scaler is not None
        assert order_gen is not None
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "method": "inr",
            "iterations_done": int(step),
            "total_steps": int(total),
            "network": spec.to_dict(),
            "fit_options": _fit_options(config),
            "data_shape": list(np.shape(tilt_series)),
            "volume_shape": list(shape),
            "data_fingerprint": fingerprint,
            "data_scale": float(problem.data_scale),
            "value_scale": float(problem.value_scale),
            "position": dict(pos),
            "order": None if order is None else list(order),
            "epoch_sums": dict(sums),
            "order_rng": order_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "model_state": _state_cpu(model),
            "optimizer_state": optimizer.state_dict(),
            "scaler_state": scaler.state_dict() if scaler.is_enabled() else None,
            "seed_sum": seed_sum,
            "seed_rows": seed_rows,
            "parents": {str(k): v for k, v in parents.items()},
            "history": [dict(h) for h in history],
        }

    def save() -> None:
        nonlocal last_saved
        if ckpt is not None and last_saved != step:
            _save(ckpt, payload())
            last_saved = step

    def start_chunk(s: int, chunk: Chunk, restore: dict[str, Any] | None) -> None:
        nonlocal model, optimizer, scaler, order_gen
        model = build_network(spec, seed=_sub_seed(config.seed, s, chunk.index), device=dev)
        if chunk.parent is not None:
            model.load_state_dict(parents[chunk.parent])
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay, amsgrad=True)
        scaler = torch.amp.GradScaler(dev.type, enabled=autocast == torch.float16)
        order_gen = torch.Generator().manual_seed(_sub_seed(config.seed, s, chunk.index, 1))
        if restore is not None:
            model.load_state_dict(restore["model_state"])
            optimizer.load_state_dict(restore["optimizer_state"])
            if restore.get("scaler_state") and scaler.is_enabled():
                scaler.load_state_dict(restore["scaler_state"])
            order_gen.set_state(restore["order_rng"])
        model.train()

    def finish_chunk(ci: int, chunk: Chunk, s: int) -> None:
        """Store the chunk's rows and the weights later chunks need; advance ``pos``."""
        nonlocal model
        assert model is not None
        model.eval()
        seed_rows[:, chunk.rows[0] : chunk.rows[1]] = predict_volume(
            model, shape, rows=chunk.rows, slice_batch=config.slice_batch,
            half_extent=spec.half_extent)
        model.train()
        later = chunks[ci + 1 :]
        if any(c.parent == chunk.index for c in later):
            parents[chunk.index] = _state_cpu(model)
        for key in [k for k in parents if not any(c.parent == k for c in later)]:
            del parents[key]
        if ci + 1 == len(chunks):
            seed_sum.add_(seed_rows)
            seed_rows.zero_()
            pos.update(seed=s + 1, chunk=0, epoch=0, batch=0, in_chunk=False)
        else:
            pos.update(seed=s, chunk=ci + 1, epoch=0, batch=0, in_chunk=False)

    try:
        first_seed, first_chunk = int(pos["seed"]), int(pos["chunk"])
        for s in range(first_seed, config.n_seeds):
            for ci in range(first_chunk if s == first_seed else 0, len(chunks)):
                chunk = chunks[ci]
                restore = None
                if state is not None and (s, ci) == (first_seed, first_chunk) and pos["in_chunk"]:
                    restore = state
                start_chunk(s, chunk, restore)
                n_b = len(chunk.batches)
                for epoch in range(int(pos["epoch"]) if restore is not None else 0, chunk.epochs):
                    if restore is not None and order is not None:  # the interrupted epoch
                        t_first = int(pos["batch"])
                    else:
                        order = (torch.randperm(n_b, generator=order_gen).tolist()
                                 if config.batch_order == "random" else list(range(n_b)))
                        t_first = 0
                        sums = dict.fromkeys(sums, 0.0)
                    restore = None
                    t_epoch = time.perf_counter()
                    for t in range(t_first, n_b):
                        assert model is not None and optimizer is not None and scaler is not None
                        y0, y1 = chunk.batches[order[t]]
                        lr = config.lr * _lr_factor(config.lr_schedule, config.lr_final,
                                                    epoch * n_b + t, chunk.steps)
                        for group in optimizer.param_groups:
                            group["lr"] = lr
                        optimizer.zero_grad(set_to_none=True)
                        loss, terms, slab = batch_objective(model, problem, objective, y0, y1,
                                                            autocast=autocast)
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        step += 1
                        for key in sums:
                            sums[key] += terms[key]
                        # ---- advance the position: what a checkpoint after this step holds
                        if t + 1 < n_b:
                            pos.update(seed=s, chunk=ci, epoch=epoch, batch=t + 1, in_chunk=True)
                        else:
                            history.append({"seed_index": s, "chunk": chunk.index,
                                            "epoch": epoch + 1,
                                            **{key: v / n_b for key, v in sums.items()},
                                            "seconds": time.perf_counter() - t_epoch})
                            order = None
                            sums = dict.fromkeys(sums, 0.0)
                            pos.update(seed=s, chunk=ci, epoch=epoch + 1, batch=0, in_chunk=True)
                            if epoch + 1 == chunk.epochs:
                                finish_chunk(ci, chunk, s)
                        info = IterationInfo(
                            iteration=step - start_step,
                            n_iter=total - start_step,
                            x=slab.detach() * (problem.value_scale * problem.data_scale),
                            objective=terms["loss"],
                            extras={**{key: float(v) for key, v in terms.items()}, "lr": lr,
                                    "step": float(step), "seed_index": float(s),
                                    "chunk": float(chunk.index), "epoch": float(epoch + 1),
                                    "y0": float(y0), "y1": float(y1)},
                        )
                        last_info = info
                        if every and step % every == 0 and step < total:
                            save()
                        if callback is not None and callback(info) is True:
                            logger.info("callback stopped the fit at step %d of %d", step, total)
                            stopped = True
                            save()
                            break
                    if stopped:
                        break
                if stopped:
                    break
            if stopped:
                break
    finally:
        if last_info is not None and callable(getattr(callback, "on_end", None)):
            callback.on_end(last_info)  # type: ignore[union-attr]

    # ---- the result
    if model is None:  # resumed from a checkpoint saved after the last step
        assert state is not None
        model = build_network(spec, device=dev)
        model.load_state_dict(state["model_state"])
    finished = int(pos["seed"])  # seeds whose volumes are in seed_sum
    partial = finished < config.n_seeds and (pos["in_chunk"] or int(pos["chunk"]) > 0)
    if stopped and partial:  # the current seed: its finished rows, the current network elsewhere
        current = seed_rows.clone()
        todo = torch.ones(ny, dtype=torch.bool)
        for c in chunks[: int(pos["chunk"])]:
            todo[c.rows[0] : c.rows[1]] = False
        model.eval()
        current[:, todo] = predict_volume(model, shape, slice_batch=config.slice_batch,
                                          half_extent=spec.half_extent)[:, todo]
        mean = (seed_sum + current) / (finished + 1)
    else:
        mean = seed_sum / max(1, min(finished, config.n_seeds))
    volume = (mean * (problem.value_scale * problem.data_scale)).numpy().astype(np.float32)
    model.eval()
    seconds = time.perf_counter() - t_start
    logger.info("inr: %d of %d steps in %.1f s%s", step, total, seconds,
                " (stopped early)" if stopped else "")
    return InrResult(
        volume=volume,
        model=model,
        history=history,
        steps_done=step,
        total_steps=total,
        stopped_early=stopped,
        resumed_from=start_step if state is not None else None,
        data_scale=problem.data_scale,
        value_scale=problem.value_scale,
        crowther_frequency_cpp=(None if objective.penalty is None
                                else objective.penalty.frequency_cpp),
        seconds=seconds,
        config=config,
    )
