"""``cryowedge evaluate``: compare tomograms with a reference.

Example::

    cryowedge evaluate fbp.mrc wbp.mrc --reference ground_truth.mrc --out eval/ --tilt-range -60 60
    cryowedge evaluate sirt.mrc --reference ground_truth.mrc --normalize none   # raw grey levels

By default each volume's least-squares gain and offset against the reference are applied
before PSNR, SSIM, RMSE, NCC and FSC (``--normalize affine``), because methods differ in
calibration; metrics.md says which normalisation was used.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cryowedge.cli._common import console, user_errors

# = cryowedge.workflows.evaluate.DEFAULT_NORMALIZE (a test keeps them equal); not imported
# here so that --help stays fast.
DEFAULT_NORMALIZE = "affine"


def evaluate(
    volumes: list[Path] = typer.Argument(..., help="MRC volumes to score"),
    reference: Path = typer.Option(..., help="ground-truth / reference MRC"),
    out: Path = typer.Option(Path("evaluation"), help="directory for metrics.md/.json and fsc.png"),
    tilt_range: tuple[float, float] | None = typer.Option(
        None, help="tilt range (deg) for the missing-wedge correlations"
    ),
    normalize: str = typer.Option(
        DEFAULT_NORMALIZE,
        help="grey levels before the metrics: none | zscore (reference mean and std) | "
        "affine (least-squares gain and offset against the reference)",
    ),
    overwrite: bool = typer.Option(
        False, help="replace existing metrics and plot (the old ones are kept as <name>~)"
    ),
) -> None:
    """Metrics table (PSNR, SSIM, CC, FSC resolution, wedge CC) and an FSC plot."""
    from cryowedge.metrics import metrics_table_markdown
    from cryowedge.metrics.normalize import check_normalize
    from cryowedge.workflows.evaluate import evaluate_files

    with user_errors():
        normalize = check_normalize(normalize)
        for path in [*volumes, reference]:
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist.")
        rows = evaluate_files(volumes, reference, out, tilt_range_deg=tilt_range,
                              normalize=normalize, overwrite=overwrite)
    console.print(metrics_table_markdown(rows, normalize=normalize))
    console.print(f"wrote {out / 'metrics.md'}, {out / 'metrics.json'}, {out / 'fsc.png'}")


def register(app: typer.Typer) -> None:
    app.command(help=evaluate.__doc__)(evaluate)
