"""Run one method over many tilt series on a Dask cluster: :func:`run_batch`.

One Dask task per tilt series (:func:`cryowedge.batch.tasks.run_item`), on a
``distributed.LocalCluster`` started here (``workers`` processes of one task each, every
one pinned to ``threads_per_worker`` torch threads or to its own GPU, each with
``memory_limit``) or on a running scheduler (``scheduler="tcp://host:8786"``; with
dask-jobqueue on SLURM/PBS, see docs/batch.md). Every check that can be made is made before
the first task: the items (folder, glob or table), the per-item configs, duplicate output
names, the memory one item needs against the limit, the scheduler within its timeout.

Safety: an item is complete when its marker ``<name>.config.yaml`` (written last,
atomically) carries the hash of its config and inputs (:func:`item_hash`) and its output
exists; complete items are skipped on a re-run. A failing item is reported and the others go
on; a worker that dies (killed, or over its memory limit) has its item run again ``retries``
times, then reported. Ctrl-C cancels the tasks, stops a local cluster and removes every
unfinished item's files (:class:`BatchInterrupted`). The report (``batch_report.json`` and
``batch_report.md`` in the output folder) lists every item.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cryowedge.batch.items import BatchItem, check_unique_names, discover_items
from cryowedge.batch.tasks import (
    WORKER_BASELINE_BYTES,
    ItemResult,
    ItemTask,
    marker_path,
    output_path,
    plan_slab_rows_for,
    planning_shape,
    read_marker_hash,
    remove_item_files,
    run_item,
    warm_up,
)
from cryowedge.config.batch import BatchConfig

__all__ = ["BatchInterrupted", "BatchReport", "item_hash", "resolve_method_config", "run_batch"]

logger = logging.getLogger(__name__)

REPORT_NAME = "batch_report"

#: ``progress(step, fraction)``, as the workflows report it (``"items k/n"``).
ProgressFn = Callable[[str, float], Any]


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch: the unfinished items' files are removed; ``report`` says which
    items were complete."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__("batch interrupted")
        self.report = report


@dataclass
class BatchReport:
    """Every item of a batch run with its status, time, peak memory and output."""

    method: str
    outdir: Path
    items: list[ItemResult]
    wall_seconds: float = 0.0
    cluster: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    run_seconds: float = 0.0  # from the first task submitted to the last result

    def overhead_per_item(self) -> float | None:
        """Seconds per item a worker spent on anything but the item itself (scheduling,
        transfer, the marker check): ``(run_seconds × workers − Σ item seconds) / items``
        over the items that ran; None when none ran."""
        ran = [r for r in self.items if r.status in ("done", "failed") and r.seconds > 0]
        workers = self.cluster.get("local_workers") or self.cluster.get("workers") or 1
        if not ran:
            return None
        return (self.run_seconds * workers - sum(r.seconds for r in ran)) / len(ran)

    def count(self, status: str) -> int:
        """Items with ``status`` (done, skipped, failed, interrupted)."""
        return sum(r.status == status for r in self.items)

    @property
    def ok(self) -> bool:
        """True when every item is done or skipped."""
        return all(r.status in ("done", "skipped") for r in self.items)

    def by_name(self) -> dict[str, ItemResult]:
        """Results keyed by item name."""
        return {r.name: r for r in self.items}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        from cryowedge._version import __version__

        return {"method": self.method, "outdir": str(self.outdir),
                "time": _dt.datetime.now().isoformat(timespec="seconds"),
                "cryowedge_version": __version__, "wall_seconds": round(self.wall_seconds, 3),
                "interrupted": self.interrupted, "cluster": self.cluster,
                "run_seconds": round(self.run_seconds, 3),
                "overhead_seconds_per_item": None if self.overhead_per_item() is None
                else round(self.overhead_per_item(), 3),
                "counts": {s: self.count(s) for s in ("done", "skipped", "failed",
                                                       "interrupted")},
                "items": [r.to_dict() for r in self.items]}

    def to_markdown(self) -> str:
        """The report as a Markdown table."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in ("done", "skipped", "failed",
                                                              "interrupted") if self.count(s))
        lines = [f"# cryowedge batch: {self.method}", "",
                 f"{len(self.items)} items: {counts}; wall time {self.wall_seconds:.1f} s"
                 + (" (interrupted)" if self.interrupted else ""), "",
                 f"Cluster: {', '.join(f'{k} {v}' for k, v in self.cluster.items())}", "",
                 "| item | status | time (s) | peak memory (GB) | attempts | output | error |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.items:
            peak = "" if r.peak_memory_bytes is None else f"{r.peak_memory_bytes / 1e9:.2f}"
            error = (r.error or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r.name} | {r.status} | {r.seconds:.2f} | {peak} | {r.attempts} | "
                         f"{r.output or ''} | {error} |")
        return "\n".join(lines) + "\n"

    def write(self) -> tuple[Path, Path]:
        """``batch_report.json`` and ``batch_report.md`` in the output folder (atomically)."""
        from cryowedge.io._atomic import write_text_atomic

        j = write_text_atomic(self.outdir / f"{REPORT_NAME}.json",
                              json.dumps(self.to_dict(), indent=2) + "\n")
        m = write_text_atomic(self.outdir / f"{REPORT_NAME}.md", self.to_markdown())
        return j, m


# ------------------------------------------------------------------------------ configs


def resolve_method_config(method: str, config: str | os.PathLike[str] | dict[str, Any]
                          | BaseModel | None = None) -> BaseModel:
    """The method's config: a registered reconstruction method's model, or for ``dewedge``
    a :class:`~cryowedge.config.dewedge.DewedgeConfig`; from a YAML file, a dict or a model.

    Raises
    ------
    ValueError
        An unknown method, a config for another method, or an invalid option.
    """
    import yaml

    if isinstance(config, BaseModel):
        data = config.model_dump(exclude_unset=True)
        if "method" in type(config).model_fields:
            data["method"] = config.method  # type: ignore[attr-defined]
    elif config is None:
        data = {}
    elif isinstance(config, dict):
        data = dict(config)
    else:
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config {path} does not exist.")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of options, got "
                             f"{type(data).__name__}.")
    if method == "dewedge":
        from cryowedge.config.dewedge import DewedgeConfig

        return DewedgeConfig.model_validate(data)
    from cryowedge.config.registry import get_method, parse_method_config

    get_method(method)  # unknown method: one line naming the choices
    if data.get("method", method) != method:
        raise ValueError(f"the config is for method {data['method']!r} but the batch runs "
                         f"{method!r}; remove 'method:' from the config or run "
                         f"'cryowedge batch {data['method']} ...'.")
    return parse_method_config({**data, "method": method})


def _item_config(config: BaseModel, item: BatchItem) -> BaseModel:
    changes = item.config_overrides()
    if not changes:
        return config
    if "method" not in type(config).model_fields:  # dewedge: thickness goes to prepare
        changes.pop("tilt_axis_angle_deg", None)
        prepare = {k: v for k, v in changes.items() if k in ("thickness", "defocus_angstrom")}
        return config.model_copy(update={"prepare": config.prepare.updated(**prepare)}) \
            if prepare else config
    return config.updated(**changes)


def _file_identity(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return str(path)
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def item_hash(stage: str, config: BaseModel, item: BatchItem) -> str:
    """sha256 of what decides an item's output: the stage, the resolved config and the inputs
    (path, size and modification time of the stack, the angle and defocus files, the pixel
    size override). A changed config or input makes a re-run redo the item."""
    from cryowedge.io.tilt_series import find_angle_file

    angles = item.angles or find_angle_file(item.tilt_series)
    key = {"stage": stage, "config": config.model_dump(mode="json"),
           "tilt_series": _file_identity(item.tilt_series), "angles": _file_identity(angles),
           "defocus_file": _file_identity(item.defocus_file),
           "pixel_size_angstrom": item.pixel_size_angstrom}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def is_complete(outdir: Path, item: BatchItem, stage: str, digest: str) -> bool:
    """The item's marker carries ``digest`` and its output exists."""
    return (read_marker_hash(marker_path(outdir, item.name, stage)) == digest
            and output_path(outdir, item.name, stage).exists())


def check_memory(items: Sequence[tuple[BatchItem, BaseModel]], limit_bytes: int) -> None:
    """``ValueError`` before any work when one item cannot run within ``limit_bytes``
    (streaming in single rows included); items whose header cannot be read are left to fail
    (and be reported) at run time."""
    from cryowedge.workflows.streaming import MEMORY_FRACTION

    budget = MEMORY_FRACTION * (limit_bytes - WORKER_BASELINE_BYTES)
    if budget <= 0:
        raise ValueError(f"memory limit {limit_bytes / 1e9:.2f} GB is below what a worker "
                         f"needs before any data ({WORKER_BASELINE_BYTES / 1e9:.1f} GB for "
                         "Python and torch); raise --memory-limit.")
    for item, config in items:
        try:
            shape, n_tilts = planning_shape(item, config)
        except Exception:  # noqa: BLE001 - a corrupt file is reported when it runs
            continue
        try:
            plan_slab_rows_for(config, shape, n_tilts, budget)
        except ValueError as err:
            raise ValueError(f"--memory-limit {limit_bytes / 1e9:.2f} GB is too small for "
                             f"{item.where()}: {err}") from None


# ------------------------------------------------------------------------------ the cluster


def _worker_memory_limit(client: Any) -> int | None:
    """The smallest ``memory_limit`` of the cluster's workers, bytes (None: unlimited)."""
    limits = [w.get("memory_limit") or 0 for w in
              client.scheduler_info().get("workers", {}).values()]
    limits = [int(v) for v in limits if v]
    return min(limits) if limits else None


@contextlib.contextmanager
def open_client(batch: BatchConfig, client: Any = None) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A ``distributed.Client`` on ``batch.scheduler`` or on a new ``LocalCluster``.

    Yields ``(client, description)``; the cluster is closed at the end (also on Ctrl-C).
    A given ``client`` is used as it is and left open.
    """
    import dask
    from distributed import Client, LocalCluster

    if client is not None:
        yield client, {"client": str(client.scheduler.address),
                       "workers": len(client.scheduler_info().get("workers", {})),
                       "memory_limit_bytes": _worker_memory_limit(client),
                       "dashboard": _dashboard(client)}
        return
    # A worker holds one task at a time (saturation 1.0). The item's own run count (in its
    # running file, see ItemTask.max_attempts) decides when it is given up; the scheduler
    # is allowed a few more failures so that its blame (every task on a dying worker) never
    # gives up an item first.
    settings = {"distributed.scheduler.allowed-failures": int(batch.retries) + 3,
                "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(settings):
        if batch.scheduler:
            try:
                client = Client(batch.scheduler, timeout=f"{batch.connect_timeout_s}s",
                                set_as_default=False)
            except (OSError, TimeoutError) as err:
                raise ValueError(
                    f"could not reach the Dask scheduler at {batch.scheduler!r} within "
                    f"{batch.connect_timeout_s:g} s ({type(err).__name__}); start it "
                    "('dask scheduler', or a dask-jobqueue cluster) or drop --scheduler to "
                    "run on a local cluster.") from None
            client.run(warm_up)
            info = {"scheduler": batch.scheduler,
                    "workers": len(client.scheduler_info().get("workers", {})),
                    "memory_limit_bytes": _worker_memory_limit(client)}
            try:
                yield client, {**info, "dashboard": _dashboard(client)}
            finally:
                client.close()
            return
        n_workers = batch.workers or default_workers(batch.threads_per_worker,
                                                     batch.memory_limit_bytes)
        threads = str(batch.threads_per_worker)
        t0 = time.perf_counter()
        with dask.config.set(local_worker_environment(batch.threads_per_worker)), \
                _without_environment_variable("MALLOC_TRIM_THRESHOLD_"):
            cluster = LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True,
                memory_limit=batch.memory_limit_bytes,
                dashboard_address=":0",  # a free port (the dashboard itself needs bokeh)
                env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                silence_logs=logging.ERROR)
        client = Client(cluster, set_as_default=False)
        client.run(warm_up)  # every worker imports torch and the workflows now
        info = {"local_workers": n_workers,
                "start_seconds": round(time.perf_counter() - t0, 3),
                "threads_per_worker": batch.threads_per_worker,
                "memory_limit": batch.memory_limit,
                "memory_limit_bytes": batch.memory_limit_bytes}
        try:
            yield client, {**info, "dashboard": _dashboard(client)}
        finally:
            client.close()
            cluster.close()


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _dashboard(client: Any) -> str | None:
    try:
        return client.dashboard_link if _has_bokeh() else None
    except Exception:  # noqa: BLE001 - no dashboard is not an error
        return None


def local_worker_environment(threads_per_worker: int) -> dict[str, Any]:
    """Dask settings for the environment a local worker process starts with.

    The nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in a new worker's environment by default
    (to hand memory back to the OS). Setting it turns off glibc's dynamic mmap threshold, so
    every large temporary array is a fresh ``mmap`` with page faults: the reconstructions ran
    2.2–2.7× slower in a worker than in a plain process (TV, 64×128×128, 41 tilts: 5.1 s
    against 2.3 s on one thread). ``None`` unsets it. The thread counts are set before the
    process starts, where OpenMP reads them.
    """
    threads = int(threads_per_worker)
    return {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": threads,
        "distributed.nanny.pre-spawn-environ.MKL_NUM_THREADS": threads,
        "distributed.nanny.pre-spawn-environ.OPENBLAS_NUM_THREADS": threads,
    }


@contextlib.contextmanager
def _without_environment_variable(name: str) -> Iterator[None]:
    """``name`` removed from this process's environment while worker processes are spawned.

    A Dask nanny writes its pre-spawn variables into the environment of the process that
    starts it and leaves them there, so after any earlier ``LocalCluster`` this process holds
    ``MALLOC_TRIM_THRESHOLD_=65536`` and new workers inherit it whatever the config says.
    """
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def default_workers(threads_per_worker: int, memory_limit_bytes: int | None = None) -> int:
    """One worker per GPU when there are GPUs, else ``cores // threads_per_worker``; never
    more than the machine's memory holds at ``memory_limit_bytes`` each."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = max(1, (cores or 1) // max(1, threads_per_worker))
    if memory_limit_bytes:
        import psutil

        n = min(n, max(1, psutil.virtual_memory().total // memory_limit_bytes))
    return n


# ------------------------------------------------------------------------------ run


def run_batch(
    method: str,
    inputs: str | os.PathLike[str] | Sequence[BatchItem],
    outdir: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | dict[str, Any] | BaseModel | None = None,
    batch: BatchConfig | None = None,
    progress: ProgressFn | None = None,
    on_result: Callable[[ItemResult], Any] | None = None,
    on_dashboard: Callable[[str | None], Any] | None = None,
    hook: Callable[[str, int], Any] | None = None,
    client: Any = None,
    **batch_options: Any,
) -> BatchReport:
    """Run ``method`` on every tilt series of ``inputs`` into ``outdir``; see the module
    docstring.

    Parameters
    ----------
    method
        A registered reconstruction method (``fbp``, ``sirt``, ``tv``, ``inr``, …; see
        ``cryowedge reconstruct --help``) or ``dewedge`` (prepare each, fit one shared
        network on the first ``fit_on``, refine each).
    inputs
        A folder of stacks (each with its ``.tlt``/``.rawtlt``/``.mdoc`` beside it), a glob, a
        ``.csv``/``.star`` table (:func:`cryowedge.batch.items.read_table`) or a list of
        :class:`~cryowedge.batch.items.BatchItem`.
    outdir
        Output folder: ``<name>.mrc`` (``(z, y, x)`` tomogram, the stack's pixel size),
        ``<name>.run.yaml``, ``<name>.config.yaml`` (resolved config; the completion marker),
        ``batch_report.json``/``.md``.
    config
        The method's options: YAML path, dict or model (default: the method's defaults).
    batch, batch_options
        :class:`~cryowedge.config.batch.BatchConfig`, or its fields as keywords
        (``workers=2, threads_per_worker=1, memory_limit="4GB", scheduler=None``).
    progress
        ``progress("items k/n", fraction)`` after each finished item.
    on_result
        Called with each :class:`~cryowedge.batch.tasks.ItemResult` as it finishes.
    on_dashboard
        Called once with the Dask dashboard address (None when there is none).
    hook
        ``hook(name, attempt)`` run in the worker before each item (fault-injection tests).
    client
        A ``distributed.Client`` to run on (left open), instead of ``batch.scheduler`` or a
        new local cluster.

    Returns
    -------
    BatchReport
        Also written to ``outdir``. Failed items do not raise: check ``report.ok``.

    Raises
    ------
    ValueError, FileNotFoundError
        Bad input, before any work (see the module docstring).
    BatchInterrupted
        Ctrl-C; the unfinished items' files are removed and the report is written.
    """
    if batch is None:
        batch = BatchConfig(**batch_options)
    elif batch_options:
        batch = BatchConfig(**{**batch.model_dump(), **batch_options})
    items = list(inputs) if isinstance(inputs, (list, tuple)) else discover_items(inputs)
    if not items:
        raise ValueError("no tilt series to process.")
    check_unique_names(items)
    for item in items:
        if not Path(item.tilt_series).is_file():
            raise FileNotFoundError(f"{item.where()}: tilt series {item.tilt_series} does not "
                                    "exist.")
        if item.angles is not None and not Path(item.angles).is_file():
            raise FileNotFoundError(f"{item.where()}: angle file {item.angles} does not exist.")
    base = resolve_method_config(method, config)
    configs = []
    for item in items:
        try:
            configs.append(_item_config(base, item))
        except (ValidationError, ValueError) as err:
            raise ValueError(f"{item.where()}: its overrides are invalid for {method}: "
                             f"{_first_line(err)}") from None
    out = Path(outdir)
    _check_outputs_are_not_inputs(method, out, items,
                                  None if isinstance(inputs, (list, tuple)) else inputs)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise PermissionError(f"output folder {out} is not writable.")
    pairs = list(zip(items, configs, strict=True)) if method != "dewedge" else []
    local = client is None and not batch.scheduler
    if pairs and local:  # before the cluster starts
        check_memory(pairs, batch.memory_limit_bytes)
    runner = _Runner(method, out, batch, progress, on_result, hook)
    runner.external = not local
    t0 = time.perf_counter()
    try:
        with open_client(batch, client) as (client, info):
            runner.cluster = info
            runner.memory_limit = info.get("memory_limit_bytes")
            if pairs and not local and runner.memory_limit:
                check_memory(pairs, runner.memory_limit)
            if on_dashboard is not None:
                on_dashboard(info.get("dashboard"))
            if info.get("dashboard"):
                logger.info("Dask dashboard: %s", info["dashboard"])
            if method == "dewedge":
                results = runner.dewedge(client, items, configs)
            else:
                results = runner.stage(client, "reconstruct", items, configs)
    except KeyboardInterrupt:  # a local cluster is closed by now (its workers are gone)
        report = runner.interrupted(items, time.perf_counter() - t0)
        raise BatchInterrupted(report) from None
    report = BatchReport(method, out, results, time.perf_counter() - t0, runner.cluster,
                         run_seconds=runner.run_seconds)
    for path in out.glob(".*.batch-running"):  # run counts of items given up in this run
        path.unlink(missing_ok=True)
    report.write()
    logger.info("batch %s: %d done, %d skipped, %d failed in %.1f s", method,
                report.count("done"), report.count("skipped"), report.count("failed"),
                report.wall_seconds)
    return report


def _check_outputs_are_not_inputs(method: str, out: Path, items: Sequence[BatchItem],
                                  source: Any) -> None:
    """``ValueError`` when the output folder is the input folder, or an output would be an
    input file."""
    from cryowedge.io.tilt_series import find_angle_file
    from cryowedge.workflows.outputs import same_file

    if source is not None and Path(source).is_dir() and out.exists() and same_file(source, out):
        raise ValueError(f"OUTDIR {out} is the input folder; choose another folder (the "
                         "tomograms would be read as tilt series on a re-run).")
    final = "dewedge-refine" if method == "dewedge" else "reconstruct"
    inputs = {}
    for item in items:
        for path in (item.tilt_series, item.angles or find_angle_file(item.tilt_series),
                     item.defocus_file):
            if path is not None:
                inputs[str(Path(path).resolve())] = item
    for item in items:
        for path in (output_path(out, item.name, final), marker_path(out, item.name, final)):
            hit = inputs.get(str(path.resolve()))
            if hit is not None:
                raise ValueError(f"the output {path} of {item.where()} is an input of "
                                 f"{hit.where()}; choose another OUTDIR.")


def _first_line(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(err).splitlines()[0]


class _Runner:
    """Submits the tasks of one batch and gathers their results (one instance per run)."""

    def __init__(self, method: str, outdir: Path, batch: BatchConfig,
                 progress: ProgressFn | None, on_result: Callable[[ItemResult], Any] | None,
                 hook: Callable[[str, int], Any] | None) -> None:
        self.method, self.outdir, self.batch = method, outdir, batch
        self.progress, self.on_result, self.hook = progress, on_result, hook
        self.cluster: dict[str, Any] = {}
        self.memory_limit: int | None = None  # per worker, bytes, as the cluster reports it
        self.external = False  # a cluster this run did not start (its workers live on)
        self.client: Any = None
        self.futures: dict[Any, BatchItem] = {}
        self.results: dict[str, ItemResult] = {}
        self.started: list[tuple[str, str]] = []  # (name, stage) submitted and not finished
        self.total = 0
        self.finished = 0
        self.run_seconds = 0.0
        self.t_start = time.time()  # files modified since then were written by this run
        self.run_id = uuid.uuid4().hex[:12]

    def _tick(self, result: ItemResult | None = None) -> None:
        self.finished += 1
        if self.progress is not None:
            self.progress(f"items {self.finished}/{self.total}", self.finished / self.total)
        if result is not None and self.on_result is not None:
            self.on_result(result)

    def stage(self, client: Any, stage: str, items: Sequence[BatchItem],
              configs: Sequence[BaseModel], extra: dict[str, Any] | None = None,
              count: bool = True) -> list[ItemResult]:
        """Run ``stage`` on every item (complete ones skipped); results in item order."""
        from distributed import as_completed

        if count:
            self.total += len(items)
        results: dict[str, ItemResult] = {}
        futures = {}
        t_run = time.perf_counter()
        tasks: dict[str, ItemTask] = {}
        extra_hash = json.dumps(extra or {}, sort_keys=True, default=str)
        for item, config in zip(items, configs, strict=True):
            digest = item_hash(stage, config, item)
            if extra:
                digest = hashlib.sha256((digest + extra_hash).encode()).hexdigest()
            if is_complete(self.outdir, item, stage, digest):
                results[item.name] = ItemResult(
                    item.name, str(item.tilt_series), "skipped",
                    output=str(output_path(self.outdir, item.name, stage)))
                self.results[item.name] = results[item.name]
                self._tick(results[item.name])
                continue
            task = ItemTask(item, stage, config.model_dump(mode="json"), digest,
                            str(self.outdir), self.batch.threads_per_worker,
                            self.memory_limit,
                            self.hook, dict(extra or {}), self.batch.retries + 1,
                            self.run_id)
            future = client.submit(run_item, task, pure=False, retries=0,
                                   key=f"cryowedge-{stage}-{item.name}-{digest[:8]}")
            futures[future] = item
            tasks[item.name] = task
            self.started.append((item.name, stage))
        self.client, self.futures = client, futures  # (released as their results come)
        submitted = bool(futures)
        pending = as_completed(list(futures), loop=client.loop)
        for future in pending:
            item = futures[future]
            if self._innocent_victim(future, item, stage):
                logger.info("%s: its worker died under another item; running it again",
                            item.name)
                # the worker died under another item (a scheduler that queues several tasks
                # per worker blames them all): run this one again, it never ran to its end
                again = client.submit(run_item, tasks[item.name], pure=False,
                                      key=f"{future.key}-again-{time.time_ns()}")
                futures[again] = item
                pending.add(again)
                del futures[future]
                future.release()
                continue
            result = self._result_of(future, item, stage)
            del futures[future]
            future.release()  # a worker that dies later cannot take its result along
            results[item.name] = self.results[item.name] = result
            self.started.remove((item.name, stage))
            self._tick(result)
        if submitted:
            self.run_seconds += time.perf_counter() - t_run
        return [results[item.name] for item in items]

    def _innocent_victim(self, future: Any, item: BatchItem, stage: str) -> bool:
        """A KilledWorker for an item that ran fewer than ``retries + 1`` times."""
        if future.status != "error":
            return False
        from distributed.scheduler import KilledWorker

        if not isinstance(future.exception(), KilledWorker):
            return False
        marker = self.outdir / f".{item.name}.{stage}.batch-running"
        try:
            runs = int(marker.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            runs = 0
        return runs < self.batch.retries + 1

    def _result_of(self, future: Any, item: BatchItem, stage: str) -> ItemResult:
        try:
            return future.result()
        except Exception as err:  # noqa: BLE001 - KilledWorker, a lost connection
            from distributed.scheduler import KilledWorker

            remove_item_files(self.outdir, item.name, stage, since=self.t_start)
            (self.outdir / f".{item.name}.{stage}.batch-running").unlink(missing_ok=True)
            if isinstance(err, KilledWorker):
                message = (f"the worker running it died {self.batch.retries + 1} time(s) "
                           "(killed, or above --memory-limit); not retried again")
            else:
                message = f"{type(err).__name__}: {err}"
            return ItemResult(item.name, str(item.tilt_series), "failed", error=message,
                              attempts=self.batch.retries + 1)

    def dewedge(self, client: Any, items: Sequence[BatchItem],
                configs: Sequence[BaseModel]) -> list[ItemResult]:
        """Prepare each item, fit one network on the first ``fit_on`` prepared, refine each."""
        from cryowedge.batch.tasks import run_shared_fit

        self.total = 2 * len(items) + 1
        prepared = self.stage(client, "dewedge-prepare", items, configs, count=False)
        good = [(it, cf) for it, cf, r in zip(items, configs, prepared, strict=True)
                if r.status in ("done", "skipped")]
        failed = {r.name: r for r in prepared if r.status == "failed"}
        if not good:
            self.finished += 1 + len(items)
            return list(prepared)
        fit_items = [it for it, _ in good][: self.batch.fit_on or len(good)]
        future = client.submit(run_shared_fit, str(self.outdir), [it.name for it in fit_items],
                               configs[0].model_dump(mode="json"), self.batch.threads_per_worker,
                               pure=False, key=f"cryowedge-dewedge-fit-{time.time_ns()}")
        try:
            checkpoint, fit_hash = future.result()
        except Exception as err:  # noqa: BLE001 - every item is then reported as failed
            self.finished += 1 + len(items)
            return [failed.get(it.name) or ItemResult(
                it.name, str(it.tilt_series), "failed",
                error=f"shared fit failed: {type(err).__name__}: {err}") for it in items]
        self._tick()
        refined = self.stage(client, "dewedge-refine", [it for it, _ in good],
                             [cf for _, cf in good],
                             extra={"checkpoint": checkpoint, "fit": fit_hash},
                             count=False)
        self.finished += len(failed)
        by_name = {r.name: r for r in refined}
        return [failed.get(it.name) or by_name[it.name] for it in items]

    def interrupted(self, items: Sequence[BatchItem], wall: float) -> BatchReport:
        """After Ctrl-C: cancel what is queued, remove unfinished items' files, report.

        A local cluster is already closed (its workers are gone), so every unfinished item's
        files go. On a cluster this run did not start, an item already running cannot be
        stopped: it is left to finish (its files appear complete and atomically) or to clean
        up after itself, and only items that had not started are cleaned here."""
        if self.external and self.client is not None and self.futures:
            with contextlib.suppress(Exception):
                self.client.cancel(list(self.futures))
        for name, stage in list(self.started):
            running = self.outdir / f".{name}.{stage}.batch-running"
            if self.external and running.exists():
                continue
            remove_item_files(self.outdir, name, stage, since=self.t_start)
            running.unlink(missing_ok=True)
        final = "dewedge-refine" if self.method == "dewedge" else "reconstruct"
        results = []
        for item in items:
            done = self.results.get(item.name)
            if done is not None and (self.method != "dewedge" or done.output is None
                                     or done.output.endswith("_refined.mrc")):
                results.append(done)
                continue
            complete = (output_path(self.outdir, item.name, final).exists()
                        and marker_path(self.outdir, item.name, final).exists())
            results.append(ItemResult(
                item.name, str(item.tilt_series), "done" if complete else "interrupted",
                output=str(output_path(self.outdir, item.name, final)) if complete else None))
        report = BatchReport(self.method, self.outdir, results, wall, self.cluster,
                             interrupted=True)
        with contextlib.suppress(OSError):
            report.write()
        return report
