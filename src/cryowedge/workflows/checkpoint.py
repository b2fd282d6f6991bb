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

__all__ = [
    "Checkpointer",
    "CheckpointState",
    "IterationTracker",
    "RunInterrupted",
    "checkpoint_iterations",
    "checkpoint_path_for",
    "load_checkpoint",
    "prepare_checkpoint",
]

logger = logging.getLogger(__name__)


def checkpoint_path_for(output_path: str | Path) -> Path:
    """The checkpoint file that belongs to an output: ``tomo.mrc`` → ``tomo.ckpt.pt``."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".ckpt.pt")


def checkpoint_iterations(path: str | Path) -> int | None:
    """Iterations saved in the checkpoint at ``path`` (None when there is none or it is unreadable).

    Memory-maps the file, so the iterate is not read.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(payload["iterations_done"])
    except Exception:  # noqa: BLE001 - a damaged checkpoint is reported by load_checkpoint
        return None


def prepare_checkpoint(path: str | Path, *, resume: bool, restart: bool) -> int:
    """Decide what to do with the checkpoint ``path`` before a run; returns the iteration resumed.

    ``resume``: the checkpoint must exist (its iteration count is returned). ``restart``: an
    existing checkpoint is removed (0 is returned). Neither: an existing checkpoint is
    refused, so that a new run never silently replaces an interrupted one's work.

    Raises
    ------
    ValueError
        Both ``resume`` and ``restart``; or neither while a checkpoint exists.
    FileNotFoundError
        ``resume`` without a checkpoint.
    """
    path = Path(path)
    if resume and restart:
        raise ValueError("--resume and --restart exclude each other; pass one.")
    if resume:
        if not path.exists():
            raise FileNotFoundError(
                f"--resume given but no checkpoint {path} exists; run without --resume."
            )
        return checkpoint_iterations(path) or 0
    if path.exists():
        if restart:
            path.unlink()
            logger.info("--restart: removed the old checkpoint %s", path)
            return 0
        done = checkpoint_iterations(path)
        at = f" (iteration {done})" if done is not None else ""
        raise ValueError(
            f"a checkpoint of an earlier run exists: {path}{at}; pass --resume to continue it "
            "or --restart to discard it and start over."
        )
    return 0


class IterationTracker:
    """Solver callback that remembers how far a run got (``offset`` iterations were done before)."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = int(offset)
        self.iteration = 0
        self.n_iter: int | None = None

    @property
    def iterations_done(self) -> int:
        """Iterations of the whole run reached so far, including the resumed ones."""
        return self.offset + self.iteration

    @property
    def total(self) -> int | None:
        """The whole run's iteration count (None before the first iteration)."""
        return None if self.n_iter is None else self.offset + self.n_iter

    def __call__(self, info: IterationInfo) -> None:
        self.iteration = int(info.iteration)
        self.n_iter = int(info.n_iter)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during an iterative run: what was reached, what the checkpoint holds.

    Attributes
    ----------
    iterations_done
        Iterations completed when interrupted (whole run).
    n_iter
        The run's iteration count (None if interrupted before the first iteration).
    checkpoint_path
        The checkpoint file, or None when checkpoints were off.
    saved_iteration
        Iterations saved in the checkpoint (None: nothing saved).
    """

    def __init__(self, iterations_done: int, n_iter: int | None, checkpoint_path: Path | None,
                 saved_iteration: int | None) -> None:
        self.iterations_done = iterations_done
        self.n_iter = n_iter
        self.checkpoint_path = checkpoint_path
        self.saved_iteration = saved_iteration
        super().__init__(self.message)

    @property
    def message(self) -> str:
        of = f" of {self.n_iter}" if self.n_iter is not None else ""
        head = f"interrupted after iteration {self.iterations_done}{of}"
        if self.checkpoint_path is None:
            return f"{head}; nothing was saved (add --checkpoint-every N to make a run resumable)."
        if self.saved_iteration is None:
            return f"{head}; no checkpoint was saved yet ({self.checkpoint_path} does not exist)."
        return f"{head}; iteration {self.saved_iteration}{of} is saved in {self.checkpoint_path}."

    @property
    def resumable(self) -> bool:
        return self.checkpoint_path is not None and self.saved_iteration is not None


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
        x=payload["x"],
        iterations_done=int(payload["iterations_done"]),
        method=str(payload["method"]),
        data_shape=tuple(payload["data_shape"]),
        meta=dict(payload.get("meta", {})),
    )
    if state.method != method:
        raise ValueError(f"checkpoint {path} is for method {state.method!r}, not {method!r}.")
    if state.data_shape != tuple(data_shape) or tuple(state.x.shape) != tuple(volume_shape):
        raise ValueError(
            f"checkpoint {path} was made for data {state.data_shape} / volume "
            f"{tuple(state.x.shape)}, not {tuple(data_shape)} / {tuple(volume_shape)}."
        )
    return state
