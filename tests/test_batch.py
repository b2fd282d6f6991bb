"""``cryowedge batch`` (issue 15): Dask execution, failure isolation, resumability, bad input.

One in-process ``LocalCluster`` (2 worker processes, one failure of a worker allowed per task)
is shared by the tests of this module; the bad-input tests need none (every check happens
before a cluster starts). Tilt series are tiny: 11 tilts of 32 × 32 pixels, thickness 8.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cryowedge.batch import BatchInterrupted, BatchItem, discover_items, read_table, run_batch
from cryowedge.io.mrc import read_mrc, write_mrc
from cryowedge.io.tilt_files import write_tilt_angles

pytest.importorskip("distributed")

ANGLES = np.linspace(-50.0, 50.0, 11)


def _write_series(folder: Path, name: str, seed: int, shape=(11, 32, 32)) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[1], : shape[2]]
    blob = np.exp(-((x - 16.0 - 3 * np.sin(np.deg2rad(ANGLES))[:, None, None]) ** 2
                    + (y - 12.0 - seed) ** 2) / 20.0)
    data = (blob + 0.1 * rng.normal(size=shape)).astype(np.float32)
    path = folder / f"{name}.mrc"
    write_mrc(path, data, voxel_size_angstrom=10.0, overwrite=True)
    write_tilt_angles(folder / f"{name}.tlt", ANGLES)
    return path


@pytest.fixture(scope="module")
def client():
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 4,
                          "distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               memory_limit="2GB", dashboard_address=":0",
                               silence_logs=logging.CRITICAL,
                               env={"OMP_NUM_THREADS": "1"})
    c = Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


@pytest.fixture
def series_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        _write_series(folder, f"ts_{i}", seed=i)
    return folder


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _wait_idle(folder: Path, timeout: float = 60.0) -> None:
    """Until no item runs in ``folder`` (tasks of a shared cluster outlive an interruption)."""
    end = time.monotonic() + timeout
    while any(p.name.endswith(".batch-running") for p in folder.iterdir()):
        assert time.monotonic() < end, "items still running"
        time.sleep(0.1)


# ------------------------------------------------------------------------------ faults


def test_corrupt_file_is_reported_and_the_others_finish(client, series_dir, tmp_path):
    (series_dir / "broken.mrc").write_bytes(b"not an mrc file" * 50)
    write_tilt_angles(series_dir / "broken.tlt", ANGLES)
    out = tmp_path / "out"
    steps = []
    report = run_batch("fbp", series_dir, out, config={"thickness": 8, "filter_name": "hann"},
                       client=client, progress=lambda s, f: steps.append((s, f)))
    rows = report.by_name()
    assert rows["broken"].status == "failed" and "MRC" in rows["broken"].error
    assert [rows[f"ts_{i}"].status for i in range(3)] == ["done"] * 3
    assert steps[-1] == ("items 4/4", 1.0)
    assert report.run_seconds > 0 and report.overhead_per_item() is not None
    assert not report.ok
    # the outputs equal a direct reconstruction with the resolved per-item config
    from cryowedge.config.models import ReconstructConfig
    from cryowedge.workflows.reconstruct import reconstruct_file

    saved = ReconstructConfig.from_yaml(out / "ts_1.config.yaml")
    assert saved.method == "fbp" and saved.thickness == 8 and saved.filter_name == "hann"
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run: the same summation order, the same bits
    try:
        direct = reconstruct_file(series_dir / "ts_1.mrc", tmp_path / "direct.mrc", saved)
    finally:
        torch.set_num_threads(threads)
    batch_vol = read_mrc(out / "ts_1.mrc")
    np.testing.assert_array_equal(batch_vol.data, read_mrc(direct).data)
    assert batch_vol.data.shape == (8, 32, 32)
    assert np.allclose(batch_vol.voxel_size_angstrom, 10.0)
    assert rows["ts_1"].peak_memory_bytes > 0 and rows["ts_1"].seconds > 0
    # the report files list every item; nothing of the broken item is left behind
    import json

    data = json.loads((out / "batch_report.json").read_text())
    assert {r["name"]: r["status"] for r in data["items"]} == {
        "broken": "failed", "ts_0": "done", "ts_1": "done", "ts_2": "done"}
    assert "| broken | failed |" in (out / "batch_report.md").read_text()
    assert not list(out.glob("broken*")) and _hidden(out) == []


def test_killed_worker_is_retried_once_then_reported(client, series_dir, tmp_path):
    def crash(name: str, attempt: int) -> None:  # runs in the worker process
        if name == "ts_0" or (name == "ts_1" and attempt == 1):
            os._exit(1)  # the worker dies mid-item, as if killed

    out = tmp_path / "out"
    report = run_batch("fbp", series_dir, out, config={"thickness": 8}, client=client,
                       hook=crash)
    rows = report.by_name()
    assert rows["ts_1"].status == "done", report.to_markdown()
    assert rows["ts_1"].attempts == 2  # retried once
    assert rows["ts_0"].status == "failed" and "died 2 time" in rows["ts_0"].error
    assert rows["ts_2"].status == "done"
    assert (out / "ts_1.mrc").is_file() and not (out / "ts_0.mrc").exists()
    assert _hidden(out) == []


def test_rerun_after_interruption_redoes_only_unfinished_items_byte_identically(
        client, series_dir, tmp_path):
    for i in range(3, 6):
        _write_series(series_dir, f"ts_{i}", seed=i)
    config = {"thickness": 8, "n_iter": 2, "order": "random", "seed": 3}  # seeded SART
    whole = run_batch("sart", series_dir, tmp_path / "whole", config=config, client=client)
    assert whole.count("done") == 6

    out = tmp_path / "interrupted"

    def stop_after_first(result):
        raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as stop:
        run_batch("sart", series_dir, out, config=config, client=client,
                  on_result=stop_after_first)
    assert stop.value.report.interrupted
    _wait_idle(out)
    # nothing partial: every tomogram has its marker, no temporary is left
    assert _hidden(out) == []
    finished = {p.stem for p in out.glob("*.mrc")}
    assert finished == {p.name.removesuffix(".config.yaml") for p in out.glob("*.config.yaml")}
    assert 1 <= len(finished) < 6

    again = run_batch("sart", series_dir, out, config=config, client=client)
    status = {r.name: r.status for r in again.items}
    assert {n for n, s in status.items() if s == "skipped"} == finished
    assert {n for n, s in status.items() if s == "done"} == {f"ts_{i}" for i in range(6)} - finished
    for i in range(6):
        assert (out / f"ts_{i}.mrc").read_bytes() == (
            tmp_path / "whole" / f"ts_{i}.mrc").read_bytes()
    # a changed config makes every item run again
    changed = run_batch("sart", series_dir, out, config={**config, "n_iter": 1},
                        client=client)
    assert changed.count("done") == 6


def test_table_overrides_per_row(client, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _write_series(folder, "a", 0)
    _write_series(folder, "b", 1)
    table = tmp_path / "table.csv"
    table.write_text("tilt_series,name,pixel_size,thickness\n"
                     "in/a.mrc,first,7.5,6\n"
                     "in/b.mrc,,,\n")
    out = tmp_path / "out"
    report = run_batch("wbp", table, out, config={"thickness": 10}, client=client)
    assert report.ok, report.to_markdown()
    first, b = read_mrc(out / "first.mrc"), read_mrc(out / "b.mrc")
    assert first.data.shape == (6, 32, 32) and np.allclose(first.voxel_size_angstrom, 7.5)
    assert b.data.shape == (10, 32, 32) and np.allclose(b.voxel_size_angstrom, 10.0)


def test_dewedge_fits_one_shared_network_and_refines_every_tomogram(client, tmp_path):
    import yaml

    from cryowedge.config.models import SimulateConfig
    from cryowedge.simulate.from_config import simulate_from_config

    folder = tmp_path / "in"
    folder.mkdir()
    cfg = SimulateConfig(shape=(32, 64, 64), n_particles=3, tilt_step_deg=4.0, snr=None,
                         even_odd=False, oversample=1, device="cpu")
    truth, sim = simulate_from_config(cfg)
    clean = np.asarray(sim.tilt_series, dtype=np.float32)
    for i in range(2):
        noisy = clean + np.random.default_rng(i).normal(scale=clean.std(), size=clean.shape)
        write_mrc(folder / f"TS_{i}.mrc", noisy.astype(np.float32), voxel_size_angstrom=10.0)
        write_tilt_angles(folder / f"TS_{i}.tlt", sim.geometry.tilt_angles_deg)
    config = {"shared": {"subtomo_size": 16, "chans": 4, "depth": 2, "device": "cpu"},
              "prepare": {"thickness": 32},
              "fit": {"epochs": 1, "subtomos_per_epoch": 4, "batch_size": 2,
                      "checkpoint_every": 1}}
    out = tmp_path / "out"
    report = run_batch("dewedge", folder, out, config=config, client=client, fit_on=1)
    assert report.ok, report.to_markdown()
    shared = yaml.safe_load((out / "dewedge" / "shared" / "prepared.yaml").read_text())
    assert [t["name"] for t in shared["tomograms"]] == ["TS_0"]  # fitted on the first
    for i in range(2):  # ... and applied to both
        refined = read_mrc(out / f"TS_{i}_refined.mrc")
        assert refined.data.shape == truth.shape and np.isfinite(refined.data).all()
        assert np.allclose(refined.voxel_size_angstrom, 10.0)
    again = run_batch("dewedge", folder, out, config=config, client=client, fit_on=1)
    assert again.count("skipped") == 2
    # fitting on both refits the shared network, and every tomogram is refined again
    refit = run_batch("dewedge", folder, out, config=config, client=client)
    assert refit.count("done") == 2
    shared = yaml.safe_load((out / "dewedge" / "shared" / "prepared.yaml").read_text())
    assert [t["name"] for t in shared["tomograms"]] == ["TS_0", "TS_1"]


def test_a_file_in_the_way_fails_its_item_and_is_not_touched(client, series_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ts_2.mrc").write_bytes(b"someone else's tomogram")
    report = run_batch("fbp", series_dir, out, config={"thickness": 8}, client=client)
    rows = report.by_name()
    assert rows["ts_2"].status == "failed" and "exists" in rows["ts_2"].error
    assert (out / "ts_2.mrc").read_bytes() == b"someone else's tomogram"
    assert rows["ts_0"].status == rows["ts_1"].status == "done"


# ------------------------------------------------------------------------------ bad input


def test_output_folder_that_is_the_input_folder_is_refused(series_dir):
    with pytest.raises(ValueError, match="is the input folder"):
        run_batch("fbp", series_dir, series_dir)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no tilt series"):
        run_batch("fbp", tmp_path / "empty", tmp_path / "out")


def test_table_with_missing_or_unknown_columns_is_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("stack_file,thickness\nx.mrc,8\n")
    with pytest.raises(ValueError, match="unknown column"):
        read_table(table)
    table.write_text("name,thickness\nx,8\n")
    with pytest.raises(ValueError, match="no tilt_series column"):
        read_table(table)
    table.write_text("tilt_series,thickness\nx.mrc,eight\n")
    with pytest.raises(ValueError, match="row 1: thickness"):
        read_table(table)


def test_star_table_is_read(tmp_path):
    import pandas as pd
    import starfile

    path = tmp_path / "tomograms.star"
    starfile.write({"global": pd.DataFrame({"rlnTomoName": ["TS_01"],
                                            "rlnTomoTiltSeriesName": ["data/TS_01.mrc"],
                                            "rlnTomoTiltSeriesPixelSize": [4.2]})}, path)
    (item,) = read_table(path)
    assert item == BatchItem(name="TS_01", tilt_series=tmp_path / "data" / "TS_01.mrc",
                             pixel_size_angstrom=4.2)


def test_duplicate_output_names_are_refused(tmp_path):
    for sub in ("s1", "s2"):
        (tmp_path / sub).mkdir()
        _write_series(tmp_path / sub, "TS_01", 0)
    with pytest.raises(ValueError, match="same output 'TS_01'"):
        discover_items(str(tmp_path / "s*" / "*.mrc"))


def test_unreachable_scheduler_fails_within_the_timeout(series_dir, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="could not reach the Dask scheduler"):
        run_batch("fbp", series_dir, tmp_path / "out", config={"thickness": 8},
                  scheduler="tcp://127.0.0.1:9", connect_timeout_s=1)
    assert time.monotonic() - t0 < 60  # a generous bound on "gives up", not a timing test


def test_memory_limit_below_one_item_is_refused_before_starting(series_dir, tmp_path):
    with pytest.raises(ValueError, match="too small for ts_0.*GB even for one row"):
        run_batch("fbp", series_dir, tmp_path / "out", config={"thickness": 100_000},
                  memory_limit="1GB")
    assert not (tmp_path / "out" / "batch_report.json").exists()


def test_bad_per_row_override_names_the_row(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _write_series(folder, "a", 0)
    table = tmp_path / "t.csv"
    table.write_text("tilt_series,defocus\nin/a.mrc,30000\n")  # defocus without CTF correction
    with pytest.raises(ValueError, match=r"row 1 \(a\).*ctf-correction"):
        run_batch("fbp", table, tmp_path / "out")


def test_config_for_another_method_is_refused(series_dir, tmp_path):
    with pytest.raises(ValueError, match="config is for method 'tv'"):
        run_batch("fbp", series_dir, tmp_path / "out", config={"method": "tv"})
    with pytest.raises(ValueError, match="unknown method 'fpb'"):
        run_batch("fpb", series_dir, tmp_path / "out")


def test_cli_bad_input_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from cryowedge.cli import app

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["batch", "fbp", str(tmp_path / "empty"),
                                      str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "holds no tilt series" in result.output


def test_worker_memory_limit_makes_the_item_stream(series_dir, tmp_path):
    """run_item in this process (no cluster): a limit just above this process's resident size
    leaves room for a few rows, so the item streams in slabs and equals the in-memory one."""
    import psutil
    import yaml

    from cryowedge.batch.tasks import ItemTask, run_item
    from cryowedge.config.models import ReconstructConfig
    from cryowedge.workflows.streaming import estimate_memory_bytes

    config = ReconstructConfig(method="fbp", thickness=8).model_dump(mode="json")
    item = BatchItem(name="ts_0", tilt_series=series_dir / "ts_0.mrc")
    fixed, per_row = estimate_memory_bytes((8, 32, 32), 11, 32, "fbp")
    limit = psutil.Process().memory_info().rss + 2 * (fixed + 6 * per_row)
    streamed = run_item(ItemTask(item, "reconstruct", config, "h", str(tmp_path / "s"),
                                 memory_limit_bytes=limit))
    whole = run_item(ItemTask(item, "reconstruct", config, "h", str(tmp_path / "w")))
    assert streamed.status == whole.status == "done", (streamed.error, whole.error)
    rows = yaml.safe_load((tmp_path / "s" / "ts_0.run.yaml").read_text())["parameters"]
    assert rows["streamed_slab_rows"] is not None and rows["streamed_slab_rows"] < 32
    assert yaml.safe_load((tmp_path / "w" / "ts_0.run.yaml").read_text())["parameters"][
        "streamed_slab_rows"] is None
    np.testing.assert_allclose(read_mrc(tmp_path / "s" / "ts_0.mrc").data,
                               read_mrc(tmp_path / "w" / "ts_0.mrc").data, rtol=1e-5, atol=1e-6)


def test_ctrl_c_on_a_local_cluster_leaves_no_partial_outputs(series_dir, tmp_path):
    """run_batch's own cluster: Ctrl-C (here: raised after the first result) stops the
    workers mid-item; the item that was being written leaves nothing behind."""
    import json

    def slow_writer(name: str, attempt: int) -> None:  # runs in the worker process
        try:  # the first item to start runs normally; the others stall mid-write
            os.close(os.open(tmp_path / "first", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            (tmp_path / "out" / f".{name}.1234abcd.tmp.mrc").write_bytes(b"half a tomogram")
            time.sleep(30)

    def interrupt(result):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(BatchInterrupted) as stop:
        run_batch("fbp", series_dir, out, config={"thickness": 8}, workers=1,
                  memory_limit="2GB", hook=slow_writer, on_result=interrupt)
    statuses = {r.name: r.status for r in stop.value.report.items}
    (first,) = [n for n, s in statuses.items() if s == "done"]
    assert sorted(statuses.values()) == ["done", "interrupted", "interrupted"]
    assert _hidden(out) == []
    assert sorted(p.name for p in out.iterdir()) == [
        "batch_report.json", "batch_report.md", f"{first}.config.yaml", f"{first}.mrc",
        f"{first}.run.yaml"]
    assert json.loads((out / "batch_report.json").read_text())["interrupted"] is True


def test_local_workers_keep_the_default_allocator_and_their_threads():
    """Dask's default MALLOC_TRIM_THRESHOLD_ made every reconstruction 2–3× slower in a
    worker; the local cluster unsets it and gives OpenMP the thread count at start-up."""
    from cryowedge.batch.run import open_client
    from cryowedge.config.batch import BatchConfig

    def environment():
        return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"))

    with open_client(BatchConfig(workers=1, threads_per_worker=2, memory_limit="2GB")) as (
            client, info):
        seen = list(client.run(environment).values())
    assert info["local_workers"] == 1
    assert seen == [(None, "2")]
