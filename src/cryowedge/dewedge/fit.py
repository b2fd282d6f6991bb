"""Fit the dewedge U-Net on sub-tomogram pairs cut on the fly (DeepDeWedge step 2).

:func:`fit` runs the loop: every epoch draws ``subtomos_per_epoch`` samples
(:mod:`cryowedge.dewedge.data`), steps Adam on batches of ``batch_size`` with the masked
Fourier loss (:mod:`cryowedge.dewedge.loss`; Noise2Noise MSE in ``n2n`` mode), validates every
``val_every`` epochs on the fixed validation samples, fills the inputs' missing wedge with the
current network every ``update_wedge_every`` epochs (in memory), and writes checkpoints.

**Units.** Crops are standardised per tomogram (:mod:`cryowedge.dewedge.standardize`) and the
network normalises its input by ``input_loc``/``input_scale`` (set here from the data); the
loss is computed on ``(target − output) / input_scale``, so its value does not depend on the
tomogram's units (research/anchors_ml.md §9, MLI-lab/DeepDeWedge#17, #28).

**Precision.** ``mixed_precision``: ``auto`` is float16 autocast with a ``GradScaler`` on CUDA
and bfloat16 autocast on CPUs with native bfloat16 (AVX512-BF16/AMX), float32 elsewhere;
``bf16``/``fp16``/``off`` force it. Losses, FFTs, rotations and the optimiser are float32.
The network runs in ``channels_last_3d`` memory format.

**Checkpoints** (``<output_dir>/checkpoints/``): ``epoch_N.pt`` every ``checkpoint_every``
epochs and at the end, ``last.pt`` (the same content, the one ``resume`` reads) and
``best.pt`` (lowest validation loss). Each holds the model, optimiser and scaler states, the
number of epochs done, the data-order state (the sample plan of epoch ``e`` is a pure function
of ``(seed, e)``, so ``seed`` and ``epoch`` are that state), the torch/NumPy random states, the
resolved config, the standardisation stats and the tilt ranges, the history, and the weights
the last wedge update used (the filled half A is recomputed from them on resume instead of
being stored). Writes are atomic (temporary file + rename). A resumed run reproduces the
uninterrupted run's weights on the same machine and thread count.

**Several processes** (:mod:`cryowedge.dewedge.ddp`): under ``torch.distributed`` each rank
takes a disjoint share of every step's samples, gradients are averaged by
``DistributedDataParallel`` and scaled so that a step equals one step on the whole global
batch (``batch_size × world_size`` samples); rank 0 writes the checkpoints and calls the
callback.

The library never prints: progress goes to ``callback`` and to ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.dewedge.data import Batch, SamplePlan, SubtomoPairs, TomogramPair
from cryowedge.dewedge.loss import masked_fourier_loss, n2n_loss
from cryowedge.dewedge.standardize import StandardizationStats
from cryowedge.dewedge.unet import UNet3D

__all__ = [
    "CHECKPOINT_FORMAT",
    "FitProgress",
    "FitResult",
    "as_pairs",
    "build_model",
    "fit",
    "load_checkpoint",
    "load_model",
    "resolve_fit_autocast",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cryowedge-dewedge-checkpoint"
CHECKPOINT_VERSION = 1
#: Config fields that may change between an interrupted fit and its resumption.
_RESUMABLE_CHANGES = {
    ("fit", "epochs"),
    ("fit", "checkpoint_every"),
    ("fit", "num_workers"),
    ("fit", "compile"),
    ("fit", "threads"),
    ("shared", "device"),
}
#: Fields of the network architecture (a checkpoint with other values cannot be loaded).
_NETWORK_FIELDS = ("chans", "depth")


@dataclass(frozen=True)
class FitProgress:
    """What :func:`fit` reports to its callback.

    Attributes
    ----------
    phase : str
        ``"step"`` after every optimiser step, ``"epoch"`` at the end of every epoch.
    epoch : int
        1-based epoch number; ``epochs`` is the total.
    step, steps_per_epoch : int
        1-based step within the epoch (``steps_per_epoch`` at the end of an epoch).
    loss : float
        Mean fitting loss of the step (``phase="step"``) or of the epoch.
    val_loss : float or None
        Validation loss when it was computed at this epoch's end, else None.
    seconds : float
        Wall-clock seconds since this call of :func:`fit` started.
    """

    phase: str
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    loss: float
    val_loss: float | None
    seconds: float


@dataclass
class FitResult:
    """The fitted network and the record of the fit.

    Attributes
    ----------
    model : UNet3D
        The network after the last epoch (on the fitting device, eval mode).
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``val_loss`` (None when not validated), ``seconds``
        (wall time of the epoch), ``data_seconds`` (assembling batches), ``wait_seconds``
        (the loop waiting for a batch), ``wedge_update`` (True when the wedge was filled).
    best_val_loss, best_epoch
        Lowest validation loss and its epoch (None without validation).
    checkpoint_dir : pathlib.Path
        ``<output_dir>/checkpoints``.
    epochs_done : int
        Epochs completed (``config.fit.epochs`` unless stopped).
    config : DewedgeConfig
        The resolved configuration.
    stats : list of StandardizationStats
        Standardisation of each tomogram pair.
    normalization : tuple of float
        The network's ``(input_loc, input_scale)``.
    resumed_from : int or None
        Epochs done by the checkpoint this fit resumed from.
    timings : dict
        Seconds spent assembling batches (``data_seconds``), waiting for them
        (``wait_seconds``), in optimiser steps, validation, wedge updates, checkpoints, and
        in all (``total_seconds``).
    initial_val_loss : float or None
        Validation loss of the network before fitting (the start of the training curve).
    """

    model: UNet3D
    history: list[dict[str, Any]]
    best_val_loss: float | None
    best_epoch: int | None
    checkpoint_dir: Path
    epochs_done: int
    config: DewedgeConfig
    stats: list[StandardizationStats]
    normalization: tuple[float, float]
    resumed_from: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    initial_val_loss: float | None = None

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path | None:
        p = self.checkpoint_dir / "best.pt"
        return p if p.exists() else None


# --------------------------------------------------------------------------- helpers


def build_model(config: DewedgeConfig) -> UNet3D:
    """The U-Net of ``config.shared`` (``chans``, ``depth``; residual, one channel)."""
    return UNet3D(chans=config.shared.chans, depth=config.shared.depth)


def resolve_fit_autocast(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of fitting (None: float32); see the module docstring.

    Raises ``ValueError`` for ``fp16`` on the CPU (no float16 kernels there worth using).
    """
    choice = str(mixed_precision).lower()
    if choice == "off":
        return None
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        if device.type != "cuda":
            raise ValueError(
                "mixed_precision fp16 needs a CUDA device; on the CPU use bf16 or off."
            )
        return torch.float16
    if choice == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and _cpu_has_bf16():
            return torch.bfloat16
        return None
    raise ValueError(f"mixed_precision must be auto, off, bf16 or fp16, got {mixed_precision!r}.")


def _cpu_has_bf16() -> bool:
    try:
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):  # pragma: no cover - old or unusual builds
        return False


def as_pairs(
    pairs: Any,
    tilt_angles_deg: Any = None,
    *,
    stats: Sequence[StandardizationStats] | None = None,
    standardize: str = "robust",
    tilt_axis_angle_deg: float | Sequence[float] = 0.0,
) -> list[TomogramPair]:
    """Normalise the inputs of :func:`fit` to :class:`~cryowedge.dewedge.data.TomogramPair`.

    ``pairs`` is a :class:`~cryowedge.dewedge.prepare.PreparedData` (angles, axis angles and
    stats come from it), a list of :class:`TomogramPair`, or a list of ``(half_a, half_b)`` /
    ``(half_a, half_b, mask)`` tuples (or one such tuple). ``tilt_angles_deg``: one set of
    angles (or ``(min, max)``) for all, or one per pair. Missing stats are computed with
    :func:`cryowedge.dewedge.standardize.robust_stats` (``standardize="robust"``).
    """
    from cryowedge.dewedge.standardize import robust_stats

    try:
        from cryowedge.dewedge.prepare import PreparedData
    except ImportError:  # pragma: no cover - prepare is part of the package
        PreparedData = ()  # type: ignore[assignment,misc]
    if PreparedData and isinstance(pairs, PreparedData):
        return [
            TomogramPair(
                t.half_a,
                t.half_b,
                t.tilt_angles_deg,
                mask=t.mask,
                tilt_axis_angle_deg=t.tilt_axis_angle_deg,
                stats=t.stats if standardize == "robust" else StandardizationStats.identity(),
                name=t.name,
            )
            for t in pairs.tomograms
        ]
    if isinstance(pairs, TomogramPair):
        items: list[Any] = [pairs]
    elif isinstance(pairs, tuple) and len(pairs) in (2, 3) and hasattr(pairs[0], "shape"):
        items = [pairs]
    else:
        items = list(pairs)
    if not items:
        raise ValueError("no tomogram pairs to fit: give at least one (half_a, half_b) pair.")
    n = len(items)
    if tilt_angles_deg is None:
        angle_list: list[Any] = [None] * n
    elif (
        n > 1
        and isinstance(tilt_angles_deg, (list, tuple))
        and len(tilt_angles_deg) == n
        and all(np.ndim(a) == 1 for a in tilt_angles_deg)
    ):
        angle_list = list(tilt_angles_deg)
    else:
        angle_list = [tilt_angles_deg] * n
    axis_list = (
        list(tilt_axis_angle_deg)
        if isinstance(tilt_axis_angle_deg, (list, tuple))
        else [float(tilt_axis_angle_deg)] * n
    )
    if stats is not None and len(stats) != n:
        raise ValueError(f"got {len(stats)} standardisation stats for {n} tomogram pairs.")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, TomogramPair):
            out.append(item)
            continue
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(
                f"pair {i} must be (half_a, half_b) or (half_a, half_b, mask), got "
                f"{type(item).__name__}."
            )
        a, b = item[0], item[1]
        mask = item[2] if len(item) == 3 else None
        if angle_list[i] is None:
            raise ValueError(
                "tilt_angles_deg is required (the tilt angles in degrees, or their "
                "(min, max)) to know the missing wedge."
            )
        if mask is not None:
            from cryowedge.dewedge.mask import check_mask

            check_mask(mask, tuple(int(s) for s in a.shape), name=f"mask of pair {i}")
        if stats is not None:
            st = stats[i]
        elif standardize == "robust":
            if tuple(a.shape) != tuple(b.shape):
                raise ValueError(
                    f"pair {i}: the halves have different shapes "
                    f"{tuple(a.shape)} and {tuple(b.shape)}."
                )
            st = robust_stats([a, b], masks=mask)
        else:
            st = StandardizationStats.identity()
        out.append(
            TomogramPair(
                a,
                b,
                np.asarray(angle_list[i], dtype=np.float64).ravel(),
                mask=mask,
                tilt_axis_angle_deg=float(axis_list[i]),
                stats=st,
                name=f"pair {i}",
            )
        )
    return out


def _check_angles(pairs: Sequence[TomogramPair]) -> None:
    for pair in pairs:
        a = np.asarray(pair.tilt_angles_deg, dtype=np.float64).ravel()
        if a.size == 0 or not np.isfinite(a).all() or np.abs(a).max() > 90:
            raise ValueError(
                f"{pair.name}: tilt angles must be finite degrees within ±90, got "
                f"{a.tolist()[:6]}{'...' if a.size > 6 else ''}."
            )
        if not a.max() > a.min():
            raise ValueError(
                f"{pair.name}: the tilt range [{a.min():g}, {a.max():g}]° has zero width: the "
                "missing wedge would cover all of Fourier space. Give the real tilt angles."
            )


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def _n_val(config: DewedgeConfig) -> int:
    f = config.fit
    if f.val_fraction <= 0:
        return 0
    if f.val_subtomos is not None:
        return int(f.val_subtomos)
    return max(
        f.batch_size, math.ceil(f.subtomos_per_epoch * f.val_fraction / (1.0 - f.val_fraction))
    )


def _rank_share(start: int, stop: int, rank: int, world: int) -> list[int]:
    """Contiguous share of samples ``start:stop`` for ``rank`` (sizes differ by at most 1)."""
    n = stop - start
    lo = start + (n * rank) // world
    hi = start + (n * (rank + 1)) // world
    return list(range(lo, hi))


# --------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 - the global state others may use
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    legacy = (
        s["name"],
        s["keys"].numpy().astype(np.uint32),
        s["pos"],
        s["has_gauss"],
        s["cached_gaussian"],
    )
    np.random.set_state(legacy)  # noqa: NPY002 - restores the global state saved above
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_bytes(payload: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    from cryowedge.io._atomic import atomic_write

    with atomic_write(path, overwrite=True) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a fit checkpoint (``torch.load(weights_only=True)``, on the CPU).

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        One line: the file is corrupt, truncated, or not a cryowedge dewedge checkpoint.
    """
    from cryowedge._validation import check_readable_file

    p = Path(path)
    check_readable_file(p, "dewedge checkpoint")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle means a bad file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"checkpoint {str(p)!r} is corrupt or not a cryowedge dewedge checkpoint "
            f"({type(err).__name__}: {first[:200]}); use another checkpoint (e.g. an earlier "
            "epoch_N.pt) or fit again."
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{str(p)!r} is not a cryowedge dewedge checkpoint (no 'format: "
            f"{CHECKPOINT_FORMAT}'); give a checkpoint written by dewedge fit."
        )
    if int(data.get("version", 0)) != CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {str(p)!r} has version {data.get('version')!r}; this "
            f"cryowedge reads version {CHECKPOINT_VERSION}."
        )
    return data


def _model_from_checkpoint(data: dict[str, Any], path: Path) -> UNet3D:
    try:
        model = UNet3D(**data["model_config"])
        model.load_state_dict(data["model_state"], strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"checkpoint {str(path)!r} does not hold a consistent network ({first[:200]}); it "
            "is damaged or was written by another version: fit again."
        ) from None
    return model


def load_model(
    checkpoint_path: str | os.PathLike[str],
    *,
    config: DewedgeConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[UNet3D, dict[str, Any]]:
    """The fitted network of a checkpoint and what refinement needs to know.

    Parameters
    ----------
    checkpoint_path
        ``best.pt``, ``last.pt`` or ``epoch_N.pt`` of :func:`fit`.
    config
        If given, the network it describes (``shared.chans``, ``shared.depth``) must be the
        checkpoint's, else one clear ``ValueError``.
    device
        Where the model is put (eval mode).

    Returns
    -------
    model : UNet3D
    metadata : dict
        ``epoch`` (epochs done), ``config`` (:class:`DewedgeConfig` of the fit),
        ``model_config``, ``stats`` (list of :class:`StandardizationStats`, one per pair),
        ``tilt_ranges_deg`` (``[(min, max), ...]`` per pair), ``tilt_axis_angles_deg``,
        ``normalization`` (``(loc, scale)``), ``val_loss``, ``best_val_loss``,
        ``best_epoch``, ``history``, ``subtomo_size``, ``mode``.
    """
    p = Path(checkpoint_path)
    data = load_checkpoint(p)
    cfg = DewedgeConfig.model_validate(data["config"])
    if config is not None:
        diff = [
            f"{name}: checkpoint {getattr(cfg.shared, name)} vs config "
            f"{getattr(config.shared, name)}"
            for name in _NETWORK_FIELDS
            if getattr(cfg.shared, name) != getattr(config.shared, name)
        ]
        if diff:
            raise ValueError(
                f"checkpoint {str(p)!r} holds a different network ("
                f"{'; '.join(diff)}); use the config it was fitted with or another "
                "checkpoint."
            )
    model = _model_from_checkpoint(data, p)
    model.to(device).eval()
    meta = {
        "epoch": int(data["epoch"]),
        "config": cfg,
        "model_config": dict(data["model_config"]),
        "stats": [StandardizationStats.from_dict(s) for s in data["stats"]],
        "tilt_ranges_deg": [tuple(r) for r in data["tilt_ranges_deg"]],
        "tilt_axis_angles_deg": list(data["tilt_axis_angles_deg"]),
        "normalization": tuple(data["normalization"]),
        "val_loss": data.get("val_loss"),
        "best_val_loss": data.get("best_val_loss"),
        "best_epoch": data.get("best_epoch"),
        "history": list(data.get("history", [])),
        "subtomo_size": cfg.shared.subtomo_size,
        "mode": cfg.shared.mode,
    }
    return model, meta


def _config_differences(old: DewedgeConfig, new: DewedgeConfig) -> list[str]:
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    out = []
    for section in ("shared", "fit"):
        for key in sorted(set(a[section]) | set(b[section])):
            if (section, key) in _RESUMABLE_CHANGES:
                continue
            if a[section].get(key) != b[section].get(key):
                out.append(f"{section}.{key}: {a[section].get(key)!r} -> {b[section].get(key)!r}")
    return out


# --------------------------------------------------------------------------- the loop


def fit(
    pairs: Any,
    tilt_angles_deg: Any = None,
    config: DewedgeConfig | None = None,
    *,
    output_dir: str | os.PathLike[str],
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[FitProgress], Any] | None = None,
    stats: Sequence[StandardizationStats] | None = None,
    tilt_axis_angle_deg: float | Sequence[float] = 0.0,
) -> FitResult:
    """Fit the dewedge (or Noise2Noise) U-Net; see the module docstring.

    Parameters
    ----------
    pairs
        The half tomograms: a :class:`~cryowedge.dewedge.prepare.PreparedData`, a list of
        :class:`~cryowedge.dewedge.data.TomogramPair`, or ``(half_a, half_b[, mask])`` tuples
        of ``(z, y, x)`` arrays / memory maps / lazy MRC arrays (half A is the input, half B
        the target).
    tilt_angles_deg
        Tilt angles in degrees (or ``(min, max)``), one set for all pairs or one per pair; not
        needed with ``PreparedData`` or ``TomogramPair``.
    config
        :class:`~cryowedge.config.dewedge.DewedgeConfig` (``shared`` and ``fit`` sections are
        used); default: the ``PreparedData``'s config, else the defaults.
    output_dir
        Checkpoints go to ``<output_dir>/checkpoints/``; ``fit_log.csv`` (per-epoch losses)
        next to it.
    resume
        Continue from ``checkpoints/last.pt`` (epochs, model, optimiser, scaler, random
        state and wedge fill restored). ``fit.epochs`` may be raised to fit longer; other
        changes to ``shared``/``fit`` (except device, threads, workers, compile, checkpoint
        interval) are refused.
    overwrite
        Without ``resume``, an output directory that already holds checkpoints is refused
        unless ``overwrite`` (then its old checkpoints are removed first).
    callback
        ``callback(FitProgress)`` after every step and epoch (rank 0 only); raising in it
        stops the fit (the checkpoints written so far stay).
    stats
        Standardisation per pair (default: from ``PreparedData``/``TomogramPair``, or
        computed by :func:`~cryowedge.dewedge.standardize.robust_stats` when
        ``shared.standardize`` is ``robust``).
    tilt_axis_angle_deg
        In-plane tilt-axis angle(s) of the tomograms for tuple inputs (0 for cryowedge).

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        Before any fitting, in one line: bad sizes (sub-tomogram not divisible by ``2**depth``
        or larger than a tomogram or slab), halves of different shapes, a non-binary mask, a
        tilt range that leaves no wedge measured, a corrupt or mismatched checkpoint.
    FileExistsError
        Checkpoints exist and neither ``resume`` nor ``overwrite`` was given.
    """
    start_time = time.perf_counter()
    if config is None:
        config = getattr(pairs, "config", None) or DewedgeConfig()
    if not isinstance(config, DewedgeConfig):
        raise TypeError(f"config must be a DewedgeConfig, got {type(config).__name__}.")
    sh, fc = config.shared, config.fit
    rank, world = _distributed()
    from cryowedge.utils.device import resolve_device

    device = resolve_device(sh.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    threads_before = torch.get_num_threads()
    if fc.threads is not None and device.type == "cpu":
        torch.set_num_threads(int(fc.threads))  # restored on the way out (finally below)
    try:
        return _fit_body(pairs, tilt_angles_deg, config, device, rank, world, start_time,
                         output_dir=output_dir, resume=resume, overwrite=overwrite,
                         callback=callback, stats=stats, tilt_axis_angle_deg=tilt_axis_angle_deg)
    finally:
        torch.set_num_threads(threads_before)


def _fit_body(
    pairs: Any,
    tilt_angles_deg: Any,
    config: DewedgeConfig,
    device: torch.device,
    rank: int,
    world: int,
    start_time: float,
    *,
    output_dir: str | os.PathLike[str],
    resume: bool,
    overwrite: bool,
    callback: Callable[[FitProgress], Any] | None,
    stats: Sequence[StandardizationStats] | None,
    tilt_axis_angle_deg: float | Sequence[float],
) -> FitResult:
    """The body of :func:`fit`, run with its CPU thread setting (restored by the caller)."""
    sh, fc = config.shared, config.fit
    autocast = resolve_fit_autocast(fc.mixed_precision, device)
    out_dir = Path(output_dir)
    ckpt_dir = out_dir / "checkpoints"

    # ---- checks and data, before any long work
    tomo_pairs = as_pairs(
        pairs,
        tilt_angles_deg,
        stats=stats,
        standardize=sh.standardize,
        tilt_axis_angle_deg=tilt_axis_angle_deg,
    )
    _check_angles(tomo_pairs)
    resume_data = None
    if resume:
        resume_data = load_checkpoint(ckpt_dir / "last.pt")
        old_cfg = DewedgeConfig.model_validate(resume_data["config"])
        diff = _config_differences(old_cfg, config)
        if diff:
            raise ValueError(
                f"cannot resume {str(ckpt_dir / 'last.pt')!r} with a different "
                f"configuration ({'; '.join(diff)}); resume with the original "
                "settings (only fit.epochs may grow) or fit anew with overwrite."
            )
    stale = not resume and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt"))
    if stale and not overwrite:
        raise FileExistsError(
            f"{str(ckpt_dir)!r} already holds checkpoints; pass resume=True to continue "
            "that fit, overwrite=True to start again, or choose another output directory."
        )
    data = SubtomoPairs(
        tomo_pairs,
        subtomo_size=sh.subtomo_size,
        mode=sh.mode,
        val_fraction=fc.val_fraction,
        min_mask_fraction=config.prepare.min_mask_fraction,
        n_val=_n_val(config),
        seed=sh.seed,
        device=device,
    )
    torch.manual_seed(sh.seed)
    model = build_model(config)
    model.check_shape((1, 1) + (sh.subtomo_size,) * 3)
    if resume_data is not None:
        if dict(resume_data["model_config"]) != model.config():
            raise ValueError(
                f"checkpoint {str(ckpt_dir / 'last.pt')!r} holds a different "
                f"network ({resume_data['model_config']} vs {model.config()})."
            )
        model = _model_from_checkpoint(resume_data, ckpt_dir / "last.pt")
        loc, scale = (float(v) for v in resume_data["normalization"])
    else:
        loc, scale = data.input_statistics()
        model.set_normalization(loc, scale)
    if stale:  # every check passed: now the old checkpoints go
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # every rank has looked before rank 0 removes
        if rank == 0:
            for old in ckpt_dir.glob("*.pt"):
                old.unlink()
    model.to(device)
    model = model.to(memory_format=torch.channels_last_3d)
    net = model  # the plain module (checkpoints, wedge update)
    optimizer = torch.optim.Adam(model.parameters(), lr=fc.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)
    ddp_model: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True,  # no copy, and no stride warning for channels_last
        )
    step_model: Any = torch.compile(ddp_model) if fc.compile else ddp_model

    history: list[dict[str, Any]] = []
    best_val: float | None = None
    best_epoch: int | None = None
    start_epoch = 0
    fill_state: dict[str, torch.Tensor] | None = None
    if resume_data is not None:
        optimizer.load_state_dict(resume_data["optimizer_state"])
        if resume_data.get("scaler_state"):
            scaler.load_state_dict(resume_data["scaler_state"])
        start_epoch = int(resume_data["epoch"])
        history = list(resume_data.get("history", []))
        best_val = resume_data.get("best_val_loss")
        best_epoch = resume_data.get("best_epoch")
        _set_rng_state(resume_data["rng"])
        fill_state = resume_data.get("fill_state")
        if fill_state is not None:
            _refill(data, fill_state, config, autocast, rank, world, device)
        logger.info("resuming from epoch %d of %d", start_epoch, fc.epochs)
    if start_epoch >= fc.epochs and resume_data is not None:
        logger.info("nothing to do: %d epochs already done", start_epoch)

    initial_val = None
    if resume_data is not None:
        initial_val = resume_data.get("initial_val_loss")
    elif data.n_val:
        initial_val = _validate(net, data, config, autocast, device, rank, world)
    n_samples = fc.subtomos_per_epoch
    global_batch = fc.batch_size * world
    if world > 1:
        n_samples = math.ceil(n_samples / world) * world  # every rank gets samples every step
    steps = math.ceil(n_samples / global_batch)
    executor = ThreadPoolExecutor(max_workers=1) if fc.num_workers > 0 else None
    totals = {
        "data_seconds": 0.0,
        "wait_seconds": 0.0,
        "step_seconds": 0.0,
        "val_seconds": 0.0,
        "wedge_seconds": 0.0,
        "checkpoint_seconds": 0.0,
    }
    try:
        for epoch in range(start_epoch, fc.epochs):
            t_epoch = time.perf_counter()
            plan = data.epoch_plan(epoch, n_samples)
            shares = [
                _rank_share(t * global_batch, min((t + 1) * global_batch, n_samples), rank, world)
                for t in range(steps)
            ]
            data_time = [0.0]

            def assemble(
                idx: list[int], plan: SamplePlan = plan, data_time: list[float] = data_time
            ) -> Batch:
                t0 = time.perf_counter()
                batch = data.make_batch(plan, idx)
                data_time[0] += time.perf_counter() - t0
                return batch

            wait = 0.0
            step_time = 0.0
            epoch_loss_sum = 0.0
            pending: Future[Batch] | None = None
            step_model.train()
            for t in range(steps):
                t0 = time.perf_counter()
                if executor is not None:
                    batch = pending.result() if pending is not None else assemble(shares[t])
                    pending = executor.submit(assemble, shares[t + 1]) if t + 1 < steps else None
                else:
                    batch = assemble(shares[t])
                t1 = time.perf_counter()
                wait += t1 - t0
                n_step = min((t + 1) * global_batch, n_samples) - t * global_batch
                loss_sum = _train_step(
                    step_model,
                    net,
                    optimizer,
                    scaler,
                    batch,
                    config,
                    autocast,
                    device,
                    world,
                    n_step,
                )
                step_loss = _all_reduce_sum([loss_sum], device)[0] / n_step
                epoch_loss_sum += step_loss * n_step
                step_time += time.perf_counter() - t1
                if callback is not None and rank == 0:
                    callback(
                        FitProgress(
                            "step",
                            epoch + 1,
                            fc.epochs,
                            t + 1,
                            steps,
                            step_loss,
                            None,
                            time.perf_counter() - start_time,
                        )
                    )
            epoch_loss = epoch_loss_sum / n_samples
            val_loss = None
            t_val = time.perf_counter()
            if data.n_val and ((epoch + 1) % fc.val_every == 0 or epoch + 1 == fc.epochs):
                val_loss = _validate(net, data, config, autocast, device, rank, world)
            totals["val_seconds"] += time.perf_counter() - t_val
            wedge = bool(
                sh.mode == "dewedge"
                and fc.update_wedge_every
                and (epoch + 1) % fc.update_wedge_every == 0
                and epoch + 1 < fc.epochs
            )
            t_wedge = time.perf_counter()
            if wedge:
                fill_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                _refill(data, fill_state, config, autocast, rank, world, device)
            totals["wedge_seconds"] += time.perf_counter() - t_wedge
            totals["data_seconds"] += data_time[0]
            totals["wait_seconds"] += wait
            totals["step_seconds"] += step_time
            record = {
                "epoch": epoch + 1,
                "loss": epoch_loss,
                "val_loss": val_loss,
                "seconds": time.perf_counter() - t_epoch,
                "data_seconds": data_time[0],
                "wait_seconds": wait,
                "wedge_update": wedge,
            }
            history.append(record)
            improved = val_loss is not None and (best_val is None or val_loss < best_val)
            if improved:
                best_val, best_epoch = val_loss, epoch + 1
            t_ckpt = time.perf_counter()
            if rank == 0:
                periodic = (epoch + 1) % fc.checkpoint_every == 0 or epoch + 1 == fc.epochs
                if periodic or improved:
                    payload = _payload(
                        net,
                        optimizer,
                        scaler,
                        epoch + 1,
                        config,
                        tomo_pairs,
                        (loc, scale),
                        history,
                        val_loss,
                        best_val,
                        best_epoch,
                        fill_state,
                    )
                    payload["initial_val_loss"] = initial_val
                    blob = _save_bytes(payload)
                    if periodic:
                        _write_atomic(ckpt_dir / f"epoch_{epoch + 1}.pt", blob)
                        _write_atomic(ckpt_dir / "last.pt", blob)
                    if improved:
                        _write_atomic(ckpt_dir / "best.pt", blob)
                _write_log(out_dir / "fit_log.csv", history)
            totals["checkpoint_seconds"] += time.perf_counter() - t_ckpt
            logger.info(
                "epoch %d/%d: loss %.5g%s (%.1f s)",
                epoch + 1,
                fc.epochs,
                epoch_loss,
                "" if val_loss is None else f", val {val_loss:.5g}",
                record["seconds"],
            )
            if callback is not None and rank == 0:
                callback(
                    FitProgress(
                        "epoch",
                        epoch + 1,
                        fc.epochs,
                        steps,
                        steps,
                        epoch_loss,
                        val_loss,
                        time.perf_counter() - start_time,
                    )
                )
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    net.eval()
    totals["total_seconds"] = time.perf_counter() - start_time
    return FitResult(
        model=net,
        history=history,
        best_val_loss=best_val,
        best_epoch=best_epoch,
        checkpoint_dir=ckpt_dir,
        epochs_done=len(history),
        config=config,
        stats=[p.stats for p in tomo_pairs],
        normalization=(loc, scale),
        resumed_from=None if resume_data is None else int(resume_data["epoch"]),
        timings=totals,
        initial_val_loss=initial_val,
    )


def _loss_sum(
    output: torch.Tensor, batch: Batch, net: UNet3D, config: DewedgeConfig
) -> torch.Tensor:
    """Sum over the batch of the per-sample loss in normalised units."""
    scale = net.input_scale.to(torch.float32)
    out_n = output.to(torch.float32) / scale
    tgt_n = batch.target.to(torch.float32) / scale
    if config.shared.mode == "n2n":
        return n2n_loss(out_n, tgt_n, loss_radius=config.fit.loss_radius, reduction="sum")
    assert batch.rot_measured is not None and batch.measured is not None
    return masked_fourier_loss(
        out_n,
        tgt_n,
        batch.rot_measured,
        batch.measured,
        wedge_weight=config.fit.wedge_weight,
        loss_radius=config.fit.loss_radius,
        reduction="sum",
    )


def _forward(
    model: Any, x: torch.Tensor, autocast: torch.dtype | None, device: torch.device
) -> torch.Tensor:
    x = x.contiguous(memory_format=torch.channels_last_3d)
    if autocast is None:
        return model(x)
    with torch.autocast(device.type, dtype=autocast):
        return model(x)


def _train_step(
    model: Any,
    net: UNet3D,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batch: Batch,
    config: DewedgeConfig,
    autocast: torch.dtype | None,
    device: torch.device,
    world: int,
    n_step: int,
) -> float:
    """One optimiser step; returns this rank's summed (unscaled) loss."""
    optimizer.zero_grad(set_to_none=True)
    output = _forward(model, batch.input, autocast, device)
    loss_sum = _loss_sum(output, batch, net, config)
    # DDP averages gradients over ranks: scale so the step is the mean over all n_step samples.
    loss = loss_sum * (world / n_step)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss_sum.detach())


@torch.no_grad()
def _validate(
    net: UNet3D,
    data: SubtomoPairs,
    config: DewedgeConfig,
    autocast: torch.dtype | None,
    device: torch.device,
    rank: int,
    world: int,
) -> float:
    """Mean validation loss over the fixed validation samples (shared among ranks)."""
    n = len(data.val_plan)
    mine = list(range(rank, n, world))
    total = 0.0
    bs = config.fit.batch_size
    net.eval()
    for i in range(0, len(mine), bs):
        batch = data.make_batch(data.val_plan, mine[i : i + bs])
        output = _forward(net, batch.input, autocast, device)
        total += float(_loss_sum(output, batch, net, config))
    net.train()
    return _all_reduce_sum([total], device)[0] / n


def _refill(
    data: SubtomoPairs,
    fill_state: dict[str, torch.Tensor],
    config: DewedgeConfig,
    autocast: torch.dtype | None,
    rank: int,
    world: int,
    device: torch.device,
) -> None:
    """Wedge update with the weights ``fill_state``.

    The network is rebuilt from the weights (contiguous memory format) both during the fit
    and on resume, so the filled volumes are bit-identical in both cases.
    """
    net = build_model(config)
    net.load_state_dict(fill_state)
    net.to(device)
    broadcast = None
    if world > 1:
        from cryowedge.dewedge.ddp import broadcast_array

        broadcast = broadcast_array
    precision = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[autocast]
    data.update_wedge(
        net,
        batch_size=config.fit.batch_size,
        mixed_precision=precision,
        rank=rank,
        world_size=world,
        broadcast=broadcast,
    )


def _payload(
    net: UNet3D,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    epoch: int,
    config: DewedgeConfig,
    pairs: Sequence[TomogramPair],
    normalization: tuple[float, float],
    history: list[dict[str, Any]],
    val_loss: float | None,
    best_val: float | None,
    best_epoch: int | None,
    fill_state: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    from cryowedge._version import __version__

    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "cryowedge_version": __version__,
        "epoch": int(epoch),
        "model_config": net.config(),
        "model_state": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "scaler_state": scaler.state_dict() if scaler.is_enabled() else None,
        "config": config.model_dump(mode="json"),
        "stats": [p.stats.to_dict() for p in pairs],
        "tilt_ranges_deg": [
            [float(np.min(p.tilt_angles_deg)), float(np.max(p.tilt_angles_deg))] for p in pairs
        ],
        "tilt_axis_angles_deg": [float(p.tilt_axis_angle_deg) for p in pairs],
        "normalization": [float(normalization[0]), float(normalization[1])],
        "data_order": {"seed": int(config.shared.seed), "next_epoch": int(epoch)},
        "rng": _rng_state(),
        "history": [dict(h) for h in history],
        "val_loss": val_loss,
        "best_val_loss": best_val,
        "best_epoch": best_epoch,
        "fill_state": fill_state,
    }


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    from cryowedge.io._atomic import write_text_atomic

    buf = io.StringIO()
    cols = ["epoch", "loss", "val_loss", "seconds", "data_seconds", "wait_seconds", "wedge_update"]
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for h in history:
        writer.writerow({k: ("" if h.get(k) is None else h.get(k)) for k in cols})
    write_text_atomic(path, buf.getvalue())
