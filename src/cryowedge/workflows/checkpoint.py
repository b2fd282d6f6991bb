"""Checkpoints of iterative reconstructions: save the iterate every N iterations, resume.

A checkpoint is a ``torch.save`` file written atomically next to the output
(``<output stem>.ckpt.pt``) holding the iterate (in the solver's normalised units), the
iterations done, the method and the shapes. Resuming continues from the saved iterate for
the remaining iterations. SIRT resumes exactly (its state is the iterate alone); SART/ART
draw fresh visiting orders, CGLS restarts its Krylov space and TV-ADMM restarts its split
and dual variables from the iterate — all converge to the same solution, but the path
after a resume differs from an uninterrupted run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cryowedge.io._atomic import atomic_write
from cryowedge.solvers import IterationInfo

__all__ = ["Checkpointer", "CheckpointState", "load_checkpoint", "checkpoint_path_for"]

logger = logging.getLogger(__name__)


def checkpoint_path_for(output_path: str | Path) -> Path:
    """The checkpoint file that belongs to an output: ``tomo.mrc`` → ``tomo.ckpt.pt``."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".ckpt.pt")


@dataclass
class CheckpointState:
    """What a checkpoint holds."""

    x: torch.Tensor
    iterations_done: int
    method: str
    data_shape: tuple[int, ...]
    meta: dict[str, Any]


class Checkpointer:
    """Solver callback that saves the iterate every ``every`` iterations (atomically).

    ``offset`` is the number of iterations already done before this run (after a resume).
    """

    def __init__(self, path: str | Path, every: int, *, method: str, data_shape: tuple[int, ...],
                 offset: int = 0, meta: dict[str, Any] | None = None) -> None:
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {every!r}.")
        self.path = Path(path)
        self.every = every
        self.method = method
        self.data_shape = tuple(data_shape)
        self.offset = offset
        self.meta = meta or {}

    def save(self, x: torch.Tensor, iterations_done: int) -> None:
        payload = {
            "x": x.detach().to("cpu", copy=True),
            "iterations_done": int(iterations_done),
            "method": self.method,
            "data_shape": list(self.data_shape),
            "meta": self.meta,
        }
        with atomic_write(self.path) as tmp:
            torch.save(payload, tmp)
        logger.info("checkpoint: %d iterations saved to %s", iterations_done, self.path)

    def __call__(self, info: IterationInfo) -> None:
        if info.iteration % self.every == 0 and info.iteration < info.n_iter:
            self.save(info.x, self.offset + info.iteration)


def load_checkpoint(path: str | Path, *, method: str, data_shape: tuple[int, ...],
                    volume_shape: tuple[int, ...]) -> CheckpointState:
    """Load and validate a checkpoint for ``method`` on data/volume of the given shapes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; run without --resume first.")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = CheckpointState(
        x=payload["x"], iterations_done=int(payload["iterations_done"]), method=str(payload["method"]),
        data_shape=tuple(payload["data_shape"]), meta=dict(payload.get("meta", {})),
    )
    if state.method != method:
        raise ValueError(f"checkpoint {path} is for method {state.method!r}, not {method!r}.")
    if state.data_shape != tuple(data_shape) or tuple(state.x.shape) != tuple(volume_shape):
        raise ValueError(
            f"checkpoint {path} was made for data {state.data_shape} / volume "
            f"{tuple(state.x.shape)}, not {tuple(data_shape)} / {tuple(volume_shape)}."
        )
    return state
