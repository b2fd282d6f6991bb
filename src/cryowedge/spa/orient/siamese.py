"""A Siamese CNN that predicts the orientation distance of two projections (thesis eq. 5.6).

Architecture (the thesis gives it only as Fig. A.1, an image missing from the text; this one is
ours). One encoder ``f`` with shared weights maps each ``(n, n)`` image to a feature vector of
``embedding_dim`` values; the predicted distance is ``d̂(b_i, b_j) = ‖f(b_i) − f(b_j)‖₂``
(radians). The encoder is ``len(channels)`` blocks of two 3×3 convolutions (ReLU, batch norm)
and a 2×2 max-pool, then global average pooling, a hidden layer and a linear layer. Images are
standardised by the training set's mean and standard deviation (stored in the checkpoint).

Training (eq. 5.6). MSE between ``d̂`` and the true ``d_q`` of pairs of training projections.
Every step embeds a batch of ``batch_images`` images and uses **all** ``B(B − 1)/2`` pairs in the
batch (the encoder runs once per image, not once per pair). An epoch is ``steps_per_epoch``
steps; the validation loss is the MSE over a fixed set of validation pairs. Adam, learning rate
``lr`` with a cosine decay over the epochs. Device ``"auto"`` takes CUDA when present; with
``amp`` on CUDA the encoder runs under float16 autocast with a gradient scaler (written but not
run on this project's CPU-only machines; the distance and the loss are always float32).

Checkpoints (``torch.save`` of a dict: model and optimiser states, epoch, loss history, the
configuration and the image normalisation) are written every ``checkpoint_every`` epochs and at
the end; ``resume=True`` continues from one (same configuration required).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cryowedge.config.spa_orient import SIAMESE_DEFAULTS as _D
from cryowedge.spa.orient.data import ProjectionSet
from cryowedge.spa.orient.quaternions import quaternion_distance

__all__ = [
    "SiameseConfig",
    "SiameseNet",
    "TrainingResult",
    "train_distance_network",
    "load_distance_network",
    "embed_images",
    "predict_distances",
    "resolve_device",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass
class SiameseConfig:
    """Architecture and training settings (defaults:
    :data:`cryowedge.config.spa_orient.SIAMESE_DEFAULTS`, a small net that trains on 2 CPU
    cores in minutes on 32² images; the thesis: 250 epochs, batch 256, Adam 1e-3, ~10 h).

    Attributes
    ----------
    channels : tuple of int
        Channels of the convolution blocks (each halves the image).
    embedding_dim : int
        Length of the feature vector.
    hidden : int
        Width of the hidden fully-connected layer.
    epochs, steps_per_epoch, batch_images : int
        Epochs, steps per epoch, images per step (all pairs in the batch are used).
    lr, lr_final, weight_decay : float
        Adam learning rate (cosine-decayed to ``lr_final``) and weight decay.
    val_pairs : int
        Fixed validation pairs.
    seed : int
        Initialisation, batches and validation pairs.
    device : str
        ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
    amp : bool
        Float16 autocast + gradient scaling on CUDA (ignored on CPU).
    """

    channels: tuple[int, ...] = _D["channels"]
    embedding_dim: int = _D["embedding_dim"]
    hidden: int = _D["hidden"]
    epochs: int = _D["epochs"]
    steps_per_epoch: int = _D["steps_per_epoch"]
    batch_images: int = _D["batch_images"]
    lr: float = _D["lr"]
    lr_final: float = _D["lr_final"]
    weight_decay: float = _D["weight_decay"]
    val_pairs: int = _D["val_pairs"]
    seed: int = _D["seed"]
    device: str = _D["device"]
    amp: bool = _D["amp"]

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive integers, got {self.channels!r}.")
        for name in ("embedding_dim", "hidden", "epochs", "steps_per_epoch", "val_pairs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}.")
        if self.batch_images < 2:
            raise ValueError(f"batch_images must be >= 2 (pairs within a batch), got "
                             f"{self.batch_images!r}.")
        if not (self.lr > 0 and self.lr_final > 0):
            raise ValueError("lr and lr_final must be > 0.")

    def architecture(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "embedding_dim": self.embedding_dim,
                "hidden": self.hidden}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; a CUDA device without CUDA is a ValueError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available; use cpu or auto.")
    return dev


class SiameseNet(nn.Module):
    """Encoder ``f``: ``(B, n, n)`` images → ``(B, embedding_dim)`` (module docstring)."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), embedding_dim: int = 32,
                 hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in channels:
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * 4, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, embedding_dim),
        )
        self.pool = nn.AdaptiveAvgPool2d(2)  # 2×2 keeps coarse position (asymmetric objects)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1) if images.ndim == 3 else images
        return self.head(self.pool(self.features(x)))


def _pair_distances(e: torch.Tensor) -> torch.Tensor:
    """Upper-triangle ``‖e_i − e_j‖`` of ``(B, k)`` embeddings (float32, smoothed at 0)."""
    e = e.float()
    i, j = torch.triu_indices(e.shape[0], e.shape[0], 1, device=e.device)
    diff = e[i] - e[j]
    return torch.sqrt((diff * diff).sum(-1) + 1e-12)


@dataclass
class TrainingResult:
    """A trained distance network and its record.

    Attributes
    ----------
    model : SiameseNet
        The encoder (eval mode, on CPU).
    config : SiameseConfig
    mean, std : float
        Image normalisation (training set).
    train_loss, val_loss : numpy.ndarray
        ``(epochs,)`` mean training MSE and validation MSE (rad²) per epoch.
    seconds : float
        Training wall time (this call; a resumed run counts only its own epochs).
    """

    model: SiameseNet
    config: SiameseConfig
    mean: float
    std: float
    train_loss: np.ndarray
    val_loss: np.ndarray
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return _save_checkpoint(Path(path), self.model, None, len(self.train_loss), self.config,
                                self.mean, self.std, self.train_loss, self.val_loss)


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer | None, epoch: int,
                     cfg: SiameseConfig, mean: float, std: float, train: np.ndarray,
                     val: np.ndarray, scaler: Any = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "kind": "cryowedge.spa.orient.siamese",
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict() if opt is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "config": asdict(cfg),
        "mean": float(mean),
        "std": float(std),
        "train_loss": np.asarray(train[:epoch], dtype=np.float64).tolist(),
        "val_loss": np.asarray(val[:epoch], dtype=np.float64).tolist(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no distance-network checkpoint at {p}.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # not a torch file at all (pickle/zip errors of many kinds)
        raise ValueError(f"{p} is not a cryowedge distance-network checkpoint ({exc}).") from None
    if not isinstance(state, dict) or state.get("kind") != "cryowedge.spa.orient.siamese":
        raise ValueError(f"{p} is not a cryowedge distance-network checkpoint.")
    return state


def load_distance_network(path: str | os.PathLike[str]) -> TrainingResult:
    """The network of a checkpoint written by :func:`train_distance_network` (eval, CPU)."""
    state = _load_state(path)
    cfg = SiameseConfig(**state["config"])
    model = SiameseNet(cfg.channels, cfg.embedding_dim, cfg.hidden)
    model.load_state_dict(state["model"])
    model.eval()
    return TrainingResult(model, cfg, state["mean"], state["std"],
                          np.asarray(state["train_loss"]), np.asarray(state["val_loss"]))


def _check_set(s: ProjectionSet, name: str) -> None:
    if len(s) < 2 or s.images.ndim != 3 or s.images.shape[1] != s.images.shape[2]:
        raise ValueError(f"{name} must hold >= 2 square images, got shape {s.images.shape}.")
    if s.images.shape[1] % (1 << 0) != 0 or not np.all(np.isfinite(s.images)):
        raise ValueError(f"{name} holds NaN or Inf pixels.")


def train_distance_network(
    train: ProjectionSet,
    val: ProjectionSet | None = None,
    config: SiameseConfig | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: Progress | None = None,
) -> TrainingResult:
    """Train the Siamese distance network on projections with known quaternions (eq. 5.6).

    Parameters
    ----------
    train, val : ProjectionSet
        Training and (optional) validation projections ``(P, n, n)`` with their quaternions.
    config : SiameseConfig, optional
        Architecture and training settings (defaults: :class:`SiameseConfig`).
    checkpoint : path, optional
        File to save to every ``checkpoint_every`` epochs and at the end.
    resume : bool
        Continue from ``checkpoint`` if it exists (its configuration must match ``config``).
    progress : callable, optional
        ``progress(step_name, fraction)``.

    Returns
    -------
    TrainingResult
    """
    cfg = config or SiameseConfig()
    _check_set(train, "train")
    if val is not None:
        _check_set(val, "val")
        if val.images.shape[1:] != train.images.shape[1:]:
            raise ValueError(f"val images {val.images.shape[1:]} differ from train images "
                             f"{train.images.shape[1:]}.")
    if cfg.batch_images > len(train):
        raise ValueError(f"batch_images ({cfg.batch_images}) exceeds the training set "
                         f"({len(train)} images); lower it or add projections.")
    dev = resolve_device(cfg.device)
    use_amp = bool(cfg.amp and dev.type == "cuda")
    torch.manual_seed(cfg.seed)
    gen = np.random.default_rng(cfg.seed)
    mean, std = float(train.images.mean()), float(train.images.std()) or 1.0
    model = SiameseNet(cfg.channels, cfg.embedding_dim, cfg.hidden).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    train_loss = np.full(cfg.epochs, np.nan)
    val_loss = np.full(cfg.epochs, np.nan)
    start = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        state = _load_state(ckpt)
        saved = SiameseConfig(**state["config"])
        if saved.architecture() != cfg.architecture():
            raise ValueError(f"the checkpoint {ckpt} has architecture {saved.architecture()}, "
                             f"not {cfg.architecture()}; train afresh or match the settings.")
        model.load_state_dict(state["model"])
        if state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        mean, std = state["mean"], state["std"]
        start = min(int(state["epoch"]), cfg.epochs)
        train_loss[:start] = state["train_loss"][:start]
        val_loss[:start] = state["val_loss"][:start]
        gen = np.random.default_rng([cfg.seed, start])
        logger.info("resumed %s at epoch %d", ckpt, start)

    x_train = torch.as_tensor((train.images - mean) / std, dtype=torch.float32)
    q_train = torch.as_tensor(train.quaternions, dtype=torch.float64)
    val_data = None
    if val is not None:
        vg = np.random.default_rng(cfg.seed + 1)
        vi = vg.integers(0, len(val), cfg.val_pairs)
        vj = (vi + vg.integers(1, len(val), cfg.val_pairs)) % len(val)
        vd = quaternion_distance(val.quaternions[vi], val.quaternions[vj])
        x_val = torch.as_tensor((val.images - mean) / std, dtype=torch.float32)
        val_data = (x_val, torch.as_tensor(vi), torch.as_tensor(vj),
                    torch.as_tensor(vd, dtype=torch.float32))

    total = cfg.epochs * cfg.steps_per_epoch
    t0 = time.perf_counter()
    iu = torch.triu_indices(cfg.batch_images, cfg.batch_images, 1)
    for epoch in range(start, cfg.epochs):
        model.train()
        losses = []
        for step in range(cfg.steps_per_epoch):
            it = epoch * cfg.steps_per_epoch + step
            lr = cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * it / total))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.as_tensor(gen.choice(len(train), cfg.batch_images, replace=False))
            qb = q_train[idx]
            target = torch.as_tensor(
                quaternion_distance(qb[iu[0]].numpy(), qb[iu[1]].numpy()), dtype=torch.float32
            ).to(dev)
            xb = x_train[idx].to(dev, non_blocking=True)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                emb = model(xb)
            loss = torch.mean((_pair_distances(emb) - target) ** 2)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress("train distance network", (it + 1) / total)
        train_loss[epoch] = float(np.mean(losses))
        if val_data is not None:
            val_loss[epoch] = _validation_loss(model, val_data, dev)
        logger.info("epoch %d/%d: train %.4f rad², val %.4f rad²", epoch + 1, cfg.epochs,
                    train_loss[epoch], val_loss[epoch])
        if ckpt is not None and ((epoch + 1) % max(1, checkpoint_every) == 0
                                 or epoch + 1 == cfg.epochs):
            _save_checkpoint(ckpt, model, opt, epoch + 1, cfg, mean, std, train_loss, val_loss,
                             scaler)
    model.eval()
    return TrainingResult(model.cpu(), cfg, mean, std, train_loss, val_loss,
                          time.perf_counter() - t0)


@torch.no_grad()
def _validation_loss(model: nn.Module, data: tuple, dev: torch.device) -> float:
    x_val, vi, vj, vd = data
    model.eval()
    e = torch.cat(
        [model(x_val[k : k + 512].to(dev)).float().cpu() for k in range(0, len(x_val), 512)]
    )
    d = torch.sqrt(((e[vi] - e[vj]) ** 2).sum(-1) + 1e-12)
    return float(torch.mean((d - vd) ** 2))


@torch.no_grad()
def embed_images(
    net: TrainingResult, images: np.ndarray, *, batch_size: int = 512,
    device: str | torch.device | None = "cpu",
) -> np.ndarray:
    """``(P, embedding_dim)`` float32 feature vectors of ``(P, n, n)`` images."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim != 3:
        raise ValueError(f"images must be a (P, n, n) stack, got shape {imgs.shape}.")
    dev = resolve_device(device)
    model = net.model.to(dev).eval()
    x = torch.as_tensor((imgs - net.mean) / net.std)
    out = [model(x[k:k + batch_size].to(dev)).float().cpu() for k in range(0, len(x), batch_size)]
    net.model.cpu()
    return torch.cat(out).numpy()


def predict_distances(
    net: TrainingResult, images_a: np.ndarray, images_b: np.ndarray
) -> np.ndarray:
    """``(P,)`` predicted distances (radians) of the image pairs ``(a_p, b_p)``."""
    ea = embed_images(net, images_a)
    eb = embed_images(net, images_b)
    return np.linalg.norm(ea - eb, axis=1)
