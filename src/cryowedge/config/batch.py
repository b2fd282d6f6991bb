"""Options of ``cryowedge batch``: how many tilt series run at once, and where.

The method's own options (``--config``) are the registered method's model
(:mod:`cryowedge.config.registry`) or, for ``dewedge``, :class:`~cryowedge.config.dewedge.
DewedgeConfig`; this model only holds the cluster and the safety settings. docs/batch.md
explains them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from cryowedge.config.models import BaseConfig

__all__ = ["BatchConfig", "parse_memory_limit"]


def parse_memory_limit(value: Any) -> int:
    """Bytes of a memory limit such as ``"4GB"``, ``"512MiB"`` or ``4e9``; ``ValueError``
    otherwise."""
    from dask.utils import parse_bytes

    try:
        n = int(value) if isinstance(value, (int, float)) else int(parse_bytes(str(value)))
    except (ValueError, TypeError):
        raise ValueError(f"memory limit {value!r} is not a size; write it like 4GB, 512MiB or "
                         "a number of bytes.") from None
    if n <= 0:
        raise ValueError(f"memory limit {value!r} must be positive (e.g. 4GB).")
    return n


class BatchConfig(BaseConfig):
    """Cluster and safety settings of one batch run (``cryowedge batch``)."""

    workers: int | None = Field(
        None, ge=1, description="local Dask workers, each running one tilt series at a time "
        "(default: one per GPU, else cores // threads-per-worker, at most memory // "
        "memory-limit)")
    threads_per_worker: int = Field(
        1, ge=1, description="CPU threads of each worker's reconstruction (torch.set_num_threads)")
    memory_limit: str = Field(
        "4GB", description="memory of each worker (e.g. 4GB): the method streams within it, "
        "and Dask restarts a worker that exceeds it")
    scheduler: str | None = Field(
        None, description="address of a running Dask scheduler to join (tcp://host:8786) "
        "instead of starting a local cluster")
    connect_timeout_s: float = Field(
        10.0, gt=0, description="seconds to wait for --scheduler before giving up")
    retries: int = Field(
        1, ge=0, le=5, description="times an item whose worker died (killed, out of memory) "
        "is run again before it is reported as failed")
    fit_on: int | None = Field(
        None, ge=1, description="dewedge: fit the shared network on the first N tilt series "
        "(default: all), then refine every one with it")

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        parse_memory_limit(value)
        return value

    @property
    def memory_limit_bytes(self) -> int:
        """:attr:`memory_limit` in bytes."""
        return parse_memory_limit(self.memory_limit)
