"""``cryowedge bench``: side-by-side speed figures.

Examples::

    cryowedge bench projector                 # 256^3, 61 tilts, vs ASTRA CPU FBP
    cryowedge bench projector --size 128 --memory
    cryowedge bench iterative                 # 256^3, 61 tilts, SIRT x100 vs ASTRA CPU SIRT
    cryowedge bench iterative --size 128 --astra-slices 4
"""

from __future__ import annotations

import typer

from cryowedge.cli._common import user_errors

bench_app = typer.Typer(help="Benchmarks (ratios measured side by side in one run).", no_args_is_help=True)


@bench_app.command("projector")
def projector(
    size: int = typer.Option(256, help="volume edge (voxels)"),
    n_tilts: int = typer.Option(61, help="number of tilts over ±60°"),
    repeats: int = typer.Option(3, help="timed repeats (median)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    astra: bool = typer.Option(True, help="compare with ASTRA's 2D CPU FBP if installed"),
    memory: bool = typer.Option(False, help="also measure peak memory of a 512³ FBP (subprocess)"),
) -> None:
    """Forward/back-projection GUPS and FBP time vs ASTRA; last line `fbp_speedup_vs_astra: N`."""
    from cryowedge.bench import bench_projector, fbp_peak_memory
    from cryowedge.utils.device import resolve_device

    with user_errors():
        dev = resolve_device(device)
        if memory:
            typer.echo(f"fbp_512_peak_memory_gb: {fbp_peak_memory(512, n_tilts):.2f}")
        bench_projector(size, n_tilts, repeats=repeats, device=str(dev), with_astra=astra, report=typer.echo)


@bench_app.command("iterative")
def iterative(
    size: int = typer.Option(256, help="volume edge (voxels)"),
    n_tilts: int = typer.Option(61, help="number of tilts over ±60°"),
    n_iter: int = typer.Option(100, help="SIRT iterations (relaxation 1) for both"),
    astra_slices: int = typer.Option(
        8, help="XZ slices ASTRA reconstructs; its time is extrapolated to all slices"
    ),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    astra: bool = typer.Option(True, help="compare with ASTRA's 2D CPU SIRT if installed"),
) -> None:
    """SIRT time vs ASTRA's CPU SIRT (slice by slice); last line `sirt_speedup_vs_astra: N`."""
    from cryowedge.bench import bench_iterative
    from cryowedge.utils.device import resolve_device

    with user_errors():
        dev = resolve_device(device)
        bench_iterative(
            size,
            n_tilts,
            n_iter,
            astra_slices=astra_slices,
            device=str(dev),
            with_astra=astra,
            report=typer.echo,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
