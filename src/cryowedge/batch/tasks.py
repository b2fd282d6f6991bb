"""What runs on a Dask worker: one item (one tilt series) of a batch, start to finish.

:func:`run_item` is the only function shipped to the workers. It pins the worker to its
threads (``torch.set_num_threads``) or to its own GPU, removes what an earlier, killed
attempt left, runs the method through its public workflow (``reconstruct_file`` for every
registered reconstruction method, the dewedge steps for ``dewedge``), records the worker
process's peak resident memory while the item ran, and writes the item's completion marker
``<name>.config.yaml`` (the resolved config with its hash) last, atomically. It never
raises: a failure comes back as an :class:`ItemResult` with ``status="failed"`` and nothing
of the item left in the output folder.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryowedge.batch.items import BatchItem

__all__ = [
    "HASH_PREFIX",
    "ItemResult",
    "ItemTask",
    "item_files",
    "marker_path",
    "read_marker_hash",
    "remove_item_files",
    "run_item",
]

logger = logging.getLogger(__name__)

#: First line of a completion marker: ``# batch-hash: <sha256>``.
HASH_PREFIX = "# batch-hash: "

#: Resident memory of an idle worker (Python, torch, distributed), bytes, for the pre-check.
WORKER_BASELINE_BYTES = 600 << 20


@dataclass(frozen=True)
class ItemTask:
    """One item as the worker receives it (plain data; pickled to the worker).

    Attributes
    ----------
    item
        The tilt series and its overrides.
    stage
        ``"reconstruct"`` (a registered method), ``"dewedge-prepare"`` or ``"dewedge-refine"``.
    config
        The resolved config, ``model_dump(mode="json")`` of the method's model.
    config_hash
        sha256 of the config and the inputs (:func:`cryowedge.batch.run.item_hash`).
    outdir
        Output folder.
    threads
        ``torch.set_num_threads`` of the item.
    memory_limit_bytes
        The worker's limit (None: none); the method streams within it.
    hook
        Test/diagnostic callable ``hook(name, attempt)`` run in the worker first.
    extra
        Stage-specific values (the dewedge checkpoint).
    max_attempts
        Runs of this item whose worker may die before it is given up (``retries + 1``): the
        count lives in the item's ``.<name>.<stage>.batch-running`` file, so it does not
        depend on which tasks the scheduler blames for a worker's death.
    run_id
        Token of this batch run: run counts of an earlier run (another token) start over.
    """

    item: BatchItem
    stage: str
    config: dict[str, Any]
    config_hash: str
    outdir: str
    threads: int = 1
    memory_limit_bytes: int | None = None
    hook: Callable[[str, int], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    max_attempts: int = 2
    run_id: str = ""


@dataclass
class ItemResult:
    """What became of one item (one row of the report)."""

    name: str
    input: str
    status: str  # done | skipped | failed | interrupted
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    output: str | None = None
    error: str | None = None
    attempts: int = 0
    worker: str | None = None
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row (peak memory in GB)."""
        row = dict(self.__dict__)
        peak = row.pop("peak_memory_bytes")
        row["peak_memory_gb"] = None if peak is None else round(peak / 1e9, 3)
        row["seconds"] = round(self.seconds, 3)
        return row


# ------------------------------------------------------------------------------ the files


def marker_path(outdir: str | Path, name: str, stage: str = "reconstruct") -> Path:
    """The completion marker of an item: ``<outdir>/<name>.config.yaml`` (the resolved config;
    dewedge preparation: ``<outdir>/dewedge/<name>/batch.config.yaml``)."""
    if stage == "dewedge-prepare":
        return Path(outdir) / "dewedge" / name / "batch.config.yaml"
    return Path(outdir) / f"{name}.config.yaml"


def output_path(outdir: str | Path, name: str, stage: str = "reconstruct") -> Path:
    """The main output of an item."""
    if stage == "dewedge-prepare":
        return Path(outdir) / "dewedge" / name / "prepared.yaml"
    if stage == "dewedge-refine":
        return Path(outdir) / f"{name}_refined.mrc"
    return Path(outdir) / f"{name}.mrc"


def _running_path(outdir: str | Path, name: str, stage: str) -> Path:
    return Path(outdir) / f".{name}.{stage}.batch-running"


def read_marker_hash(path: Path) -> str | None:
    """The hash in a marker's first line, or None (no marker, or not one of ours)."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline().strip()
    except OSError:
        return None
    return first[len(HASH_PREFIX):].strip() if first.startswith(HASH_PREFIX) else None


def item_files(outdir: str | Path, name: str, stage: str = "reconstruct") -> list[Path]:
    """Every file an item of ``stage`` may leave in ``outdir``: outputs, records, hidden
    temporaries of the atomic writers (``.<name>.<hex>.tmp.mrc``), its marker."""
    out = Path(outdir)
    if stage == "dewedge-prepare":
        folder = out / "dewedge" / name
        return sorted(folder.rglob("*")) + [folder] if folder.is_dir() else []
    if stage == "dewedge-refine":
        stems = [f"{name}_refined"]
    else:
        stems = [name, f"{name}_even", f"{name}_odd"]
    files: list[Path] = [marker_path(out, name, stage)]
    if not out.is_dir():
        return files
    for stem in stems:
        files += [out / f"{stem}.mrc", out / f"{stem}.run.yaml", out / f"{stem}_preview.png",
                  out / f"{stem}.ckpt.pt", out / f"{stem}.xy-tmp.mrc",
                  out / f"{stem}.failed-write.npy"]
        files += [p for p in out.glob(f".{stem}.*") if not p.name.endswith(".batch-running")]
    return files


def remove_item_files(outdir: str | Path, name: str, stage: str = "reconstruct", *,
                      since: float | None = None) -> list[Path]:
    """Remove what an unfinished item left (partial outputs, temporaries, a stale marker).

    ``since`` (a :func:`time.time`) removes only files modified since then, i.e. made by
    this run, and hidden temporaries: a file of the same name that was there before (not
    written by a batch) is never touched."""
    removed = []
    for path in item_files(outdir, name, stage):
        try:
            if since is not None and not path.name.startswith(".") and not path.is_dir():
                if not path.exists() or path.stat().st_mtime < since:
                    continue
            if path.is_dir():
                path.rmdir()  # emptied above (rglob lists children first after sorting)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(path)
        except OSError as err:  # pragma: no cover - permissions, a directory not empty
            logger.warning("could not remove %s: %s", path, err)
    return removed


def write_marker(task: ItemTask, text: str, result: ItemResult | None = None) -> Path:
    """The completion marker, atomically: hash line, comments, then the config YAML."""
    import json

    from cryowedge.io._atomic import write_text_atomic

    path = marker_path(task.outdir, task.item.name, task.stage)
    header = [f"{HASH_PREFIX}{task.config_hash}",
              f"# result: {json.dumps(result.__dict__ if result is not None else {})}",
              f"# cryowedge batch: {task.stage} of {task.item.tilt_series}",
              f"# angles: {task.item.angles or 'next to the stack'}",
              f"# pixel_size_angstrom: {task.item.pixel_size_angstrom or 'from the file'}"]
    return write_text_atomic(path, "\n".join(header) + "\n" + text)


# ------------------------------------------------------------------------------ the worker


class _PeakMemory:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _worker_slot() -> tuple[str | None, int]:
    """``(worker name, index)``: local workers are named 0, 1, …; others count as 0."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None, 0
    try:
        return str(name), int(name)
    except (TypeError, ValueError):
        return str(name), 0


def _pin(task: ItemTask) -> str:
    """Threads of this item; a GPU of its own when there are GPUs. Returns the device."""
    import torch

    torch.set_num_threads(max(1, int(task.threads)))
    _, index = _worker_slot()
    if torch.cuda.is_available():
        gpu = index % torch.cuda.device_count()
        torch.cuda.set_device(gpu)
        return f"cuda:{gpu}"
    return "cpu"


def warm_up() -> None:
    """Import torch and the workflows in a worker (run once per worker when the cluster
    starts, so the first item of each worker does not pay for it)."""
    import torch  # noqa: F401

    import cryowedge.workflows.reconstruct  # noqa: F401


def _attempt(outdir: str, name: str, stage: str, run_id: str) -> int:
    """1 for a first run; 2, 3, … when an earlier attempt of this item in this batch run
    (``run_id``) died mid-way."""
    path = _running_path(outdir, name, stage)
    try:
        words = path.read_text().split()
        attempt = int(words[0]) + 1 if words[1] == run_id else 1
    except (OSError, ValueError, IndexError):
        attempt = 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{attempt} {run_id} pid {os.getpid()}\n")
    return attempt


def _finished_result(task: ItemTask) -> ItemResult | None:
    """The stored result of an item already complete with this task's hash (Dask runs a
    finished task again when the worker holding its result dies: it is not redone)."""
    import json

    path = marker_path(task.outdir, task.item.name, task.stage)
    if read_marker_hash(path) != task.config_hash or not output_path(
            task.outdir, task.item.name, task.stage).exists():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            handle.readline()
            line = handle.readline()
        return ItemResult(**json.loads(line.removeprefix("# result: ")))
    except (OSError, ValueError, TypeError):
        return None


def run_item(task: ItemTask) -> ItemResult:
    """Run one item on this worker (see the module docstring); never raises."""
    item, outdir = task.item, task.outdir
    finished = _finished_result(task)
    if finished is not None:
        return finished
    attempt = _attempt(outdir, item.name, task.stage, task.run_id)
    worker, _ = _worker_slot()
    result = ItemResult(item.name, str(item.tilt_series), "failed", attempts=attempt,
                        worker=worker)
    t0, started = time.perf_counter(), time.time()
    if attempt > task.max_attempts:  # it died in every run so far: do not run it again
        remove_item_files(outdir, item.name, task.stage)  # (its running file stays)
        result.attempts = attempt - 1
        result.error = (f"the worker running it died {attempt - 1} time(s) (killed, or above "
                        "the memory limit); not run again")
        return result
    try:
        result.device = _pin(task)
        # files of an earlier attempt (this item ran before and died) or of a run with another
        # config (its marker) are ours to replace; anything else is left, and a file that is
        # in the way then fails the item ("exists") instead of being overwritten
        ours = attempt > 1 or read_marker_hash(marker_path(outdir, item.name,
                                                           task.stage)) is not None
        remove_item_files(outdir, item.name, task.stage, since=None if ours else started)
        if task.hook is not None:
            task.hook(item.name, attempt)
        with _PeakMemory() as peak:
            output, text = _STAGES[task.stage](task, result.device)
        result.peak_memory_bytes = peak.peak
        result.status, result.output = "done", str(output)
        result.seconds = time.perf_counter() - t0
        write_marker(task, text, result)
    except Exception as err:  # noqa: BLE001 - every failure becomes a row of the report
        logger.debug("item %s failed:\n%s", item.name, traceback.format_exc())
        result.error = f"{type(err).__name__}: {err}"
        remove_item_files(outdir, item.name, task.stage, since=started)
    result.seconds = time.perf_counter() - t0
    _running_path(outdir, item.name, task.stage).unlink(missing_ok=True)
    return result


# ------------------------------------------------------------------------------ the stages


def plan_slab_rows_for(config: Any, shape: tuple[int, int, int], n_tilts: int,
                       budget_bytes: float) -> int | None:
    """Rows per slab so that ``config``'s method fits ``budget_bytes`` (None: in memory).

    ``shape`` is the ``(nz, ny, nx)`` volume; raises ``ValueError`` when one row does not
    fit, or when a method that cannot stream does not fit whole.
    """
    from cryowedge.config.registry import get_method
    from cryowedge.workflows.streaming import estimate_memory_bytes, plan_slab_rows

    spec = get_method(config.method)
    halo = int(getattr(config, "halo_rows", 0)) if spec.slab_mode == "halo" else 0
    if spec.slab_mode == "none":
        fixed, per_row = estimate_memory_bytes(shape, n_tilts, shape[2], config.method)
        need = fixed + shape[1] * per_row
        if need > budget_bytes:
            raise ValueError(
                f"{config.method} of a {shape} volume needs about {need / 1e9:.2f} GB and "
                f"cannot stream; only {budget_bytes / 1e9:.2f} GB of the worker's memory limit "
                "is usable: raise --memory-limit or bin the data.")
        return None
    return plan_slab_rows(shape, n_tilts, shape[2], config.method, budget_bytes,
                          halo_rows=halo)


def planning_shape(item: BatchItem, config: Any) -> tuple[tuple[int, int, int], int]:
    """``((nz, ny, nx), n_tilts)`` of an item from its header only (after binning); ``nz`` is
    the thickness, or the detector width when it is estimated at run time (an upper bound)."""
    from cryowedge.io.mrc import open_mrc_lazy

    n_tilts, ny, nx = (int(s) for s in open_mrc_lazy(item.tilt_series).shape)
    b = int(getattr(config, "bin_factor", 1) or 1)
    ny, nx = ny // b, nx // b
    if getattr(config, "roi", None):
        nx, ny = int(config.roi[2]), int(config.roi[3])
    nz = int(config.thickness) if getattr(config, "thickness", None) else nx
    return (nz, ny, nx), n_tilts


def _run_reconstruct(task: ItemTask, device: str) -> tuple[Path, str]:
    import psutil

    from cryowedge.config.registry import parse_method_config
    from cryowedge.workflows.reconstruct import reconstruct_file
    from cryowedge.workflows.streaming import MEMORY_FRACTION

    item = task.item
    config = parse_method_config(task.config)
    text = config.to_yaml()
    if device.startswith("cuda") and config.device == "auto":
        config = config.updated(device=device)
    if task.memory_limit_bytes is not None and config.slab_rows is None:
        budget = MEMORY_FRACTION * (task.memory_limit_bytes - psutil.Process().memory_info().rss)
        shape, n_tilts = planning_shape(item, config)
        rows = plan_slab_rows_for(config, shape, n_tilts, budget)
        if rows is not None:
            logger.info("%s: streaming in slabs of %d rows to stay within %.2f GB", item.name,
                        rows, task.memory_limit_bytes / 1e9)
            config = config.updated(slab_rows=rows)
    output = output_path(task.outdir, item.name)
    reconstruct_file(item.tilt_series, output, config, angles_path=item.angles,
                     pixel_size_angstrom=item.pixel_size_angstrom,
                     defocus_path=item.defocus_file, overwrite=False)
    return output, text


def _run_dewedge_prepare(task: ItemTask, device: str) -> tuple[Path, str]:
    from cryowedge.config.dewedge import DewedgeConfig
    from cryowedge.dewedge.prepare import prepare_tilt_series

    cfg = DewedgeConfig.model_validate(task.config)
    folder = Path(task.outdir) / "dewedge" / task.item.name
    item = task.item
    prepare_tilt_series(item.tilt_series, folder, angles=item.angles,
                        pixel_size_angstrom=item.pixel_size_angstrom,
                        tilt_axis_angle_deg=item.tilt_axis_angle_deg,
                        defocus=item.defocus_file, config=cfg, overwrite=True)
    return folder / "prepared.yaml", cfg.to_yaml()


def _run_dewedge_refine(task: ItemTask, device: str) -> tuple[Path, str]:
    from cryowedge.config.dewedge import DewedgeConfig
    from cryowedge.dewedge.prepare import load_prepared
    from cryowedge.dewedge.refine import refine_checkpoint

    cfg = DewedgeConfig.model_validate(task.config)
    prepared = load_prepared(Path(task.outdir) / "dewedge" / task.item.name / "prepared.yaml")
    results = refine_checkpoint(task.extra["checkpoint"], prepared, task.outdir, config=cfg,
                                device=device, overwrite=False)
    if len(results) != 1:
        raise RuntimeError(f"refinement of {task.item.name} wrote {len(results)} tomograms, "
                           "expected one.")
    written, record = Path(results[0].output_path), results[0].record_path
    target = output_path(task.outdir, task.item.name, task.stage)
    if written != target:  # a table's name differs from the stack's stem
        os.replace(written, target)
        if record is not None and Path(record).exists():
            os.replace(record, target.with_name(target.stem + ".run.yaml"))
    return target, cfg.to_yaml()


_STAGES: dict[str, Callable[[ItemTask, str], tuple[Path, str]]] = {
    "reconstruct": _run_reconstruct,
    "dewedge-prepare": _run_dewedge_prepare,
    "dewedge-refine": _run_dewedge_refine,
}


def run_shared_fit(outdir: str, names: list[str], config: dict[str, Any],
                   threads: int) -> tuple[str, str]:
    """Fit one dewedge network on the prepared tomograms of ``names`` (the multi-pair fit of
    :func:`cryowedge.dewedge.fit.fit`) into ``<outdir>/dewedge/shared/``; returns the
    checkpoint to refine with and the fit's hash (tomograms and config). A finished fit with
    the same hash is reused."""
    import hashlib
    import json

    import torch

    from cryowedge.config.dewedge import DewedgeConfig
    from cryowedge.dewedge.fit import fit
    from cryowedge.dewedge.pipeline import pick_checkpoint
    from cryowedge.dewedge.prepare import PreparedData, load_prepared
    from cryowedge.io._atomic import write_text_atomic

    torch.set_num_threads(max(1, int(threads)))
    cfg = DewedgeConfig.model_validate(config)
    shared = Path(outdir) / "dewedge" / "shared"
    prepared_hashes = [read_marker_hash(marker_path(outdir, n, "dewedge-prepare")) for n in names]
    digest = hashlib.sha256(json.dumps([names, prepared_hashes, config],
                                       sort_keys=True).encode()).hexdigest()
    done = shared / "fit.done"
    if done.is_file() and done.read_text().strip() == digest:
        return str(pick_checkpoint(shared)), digest
    done.unlink(missing_ok=True)
    tomograms = []
    for name in names:
        tomograms += load_prepared(Path(outdir) / "dewedge" / name / "prepared.yaml").tomograms
    shared.mkdir(parents=True, exist_ok=True)
    prepared = PreparedData(tomograms=tomograms, config=cfg,
                            manifest_path=shared / "prepared.yaml")
    prepared.write_manifest()
    fit(prepared, config=cfg, output_dir=shared, overwrite=True)
    write_text_atomic(done, digest + "\n")
    return str(pick_checkpoint(shared)), digest
