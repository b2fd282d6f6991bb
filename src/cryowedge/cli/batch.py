"""``cryowedge batch``: one method over many tilt series, on a Dask cluster.

Examples::

    cryowedge batch fbp tilt_series/ tomograms/ --config fbp.yaml --workers 2
    cryowedge batch tv 'session_*/TS_*.mrc' tv/ --workers 4 --memory-limit 8GB
    cryowedge batch sirt table.csv out/ --scheduler tcp://head-node:8786
    cryowedge batch dewedge tilt_series/ dewedged/ --config dewedge.yaml --fit-on 4

The work is :func:`cryowedge.batch.run_batch`; docs/batch.md explains the files and the
cluster options.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, progress_bar, user_errors
from cryowedge.config.batch import BatchConfig

_F = BatchConfig.model_fields


def _batch(
    method: str = typer.Argument(..., help="a reconstruction method (fbp, wbp, sirt, sart, art, "
                                 "cgls, tv, inr, ...: cryowedge reconstruct --help) or dewedge"),
    inputs: str = typer.Argument(..., metavar="INPUT", help="folder of tilt series (each with "
                                 "its .tlt/.rawtlt/.mdoc), a quoted glob, or a .csv/.star table "
                                 "(one row per tilt series)"),
    outdir: Path = typer.Argument(..., help="output folder (tomograms, configs, report)"),
    config: Path | None = typer.Option(None, help="YAML options of the method"),
    workers: int | None = typer.Option(None, min=1, help=_F["workers"].description),
    threads_per_worker: int = typer.Option(1, min=1, help=_F["threads_per_worker"].description),
    memory_limit: str = typer.Option("4GB", help=_F["memory_limit"].description),
    scheduler: str | None = typer.Option(None, help=_F["scheduler"].description),
    connect_timeout: float = typer.Option(10.0, help=_F["connect_timeout_s"].description),
    retries: int = typer.Option(1, min=0, max=5, help=_F["retries"].description),
    fit_on: int | None = typer.Option(None, min=1, help=_F["fit_on"].description),
) -> None:
    """Run one method on every tilt series of a folder, glob or table (resumable)."""
    from cryowedge.batch import BatchInterrupted, run_batch

    def dashboard(link: str | None) -> None:
        if link:
            console.print(f"Dask dashboard: {link}", soft_wrap=True, markup=False)

    try:
        with user_errors():
            batch = BatchConfig(workers=workers, threads_per_worker=threads_per_worker,
                                memory_limit=memory_limit, scheduler=scheduler,
                                connect_timeout_s=connect_timeout, retries=retries,
                                fit_on=fit_on)
            with progress_bar(f"batch ({method})") as progress:
                report = run_batch(method, inputs, outdir, config=config, batch=batch,
                                   progress=progress, on_dashboard=dashboard)
    except BatchInterrupted as stop:
        done = stop.report.count("done") + stop.report.count("skipped")
        console.print(f"[bold yellow]interrupted: {done} of {len(stop.report.items)} items are "
                      "complete; unfinished items left no files. Run the same command again to "
                      "do the rest.[/]", soft_wrap=True)
        raise typer.Exit(code=130) from None
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("done", "skipped", "failed")
                       if report.count(s))
    console.print(f"{len(report.items)} items: {counts} in {report.wall_seconds:.1f} s; report "
                  f"{Path(outdir) / 'batch_report.md'}", soft_wrap=True, markup=False)
    for r in report.items:
        if r.status == "failed":
            console.print(f"failed: {r.name}: {r.error}", soft_wrap=True, markup=False)
    if not report.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command(name="batch")(_batch)
