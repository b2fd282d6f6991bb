"""``cryowedge bench``: side-by-side speed figures.

Examples::

    cryowedge bench projector                 # 256^3, 61 tilts, vs ASTRA CPU FBP
    cryowedge bench projector --size 128 --memory
    cryowedge bench iterative                 # 256^3, 61 tilts, SIRT x100 vs ASTRA CPU SIRT
    cryowedge bench iterative --size 128 --astra-slices 4
    cryowedge bench scale                     # 256^3, 512^3, K3 bin 4; streamed under 2 GB
    cryowedge bench scale --quick             # tiny sizes, a few seconds
    cryowedge bench dewedge                   # dewedge epoch/refine vs a reference-like pipeline
    cryowedge bench crm                       # CRM-SART vs N SART reconstructions (N = 49, 200²)
    cryowedge bench crm --quick --scaling 3,5 # a check in seconds
    cryowedge bench inr                       # coordinate network: s per epoch, to convergence
    cryowedge bench inr --batches 128,64,32,16 --epochs 60  # + memory/time by slice batch
    cryowedge bench spa                       # SPA Table 4.1 at 64³, P = 50/500/5000, peers
    cryowedge bench spa --quick               # 16³, a check in seconds
"""

from __future__ import annotations

import typer

from cryowedge.cli._common import user_errors

bench_app = typer.Typer(
    help="Benchmarks (ratios measured side by side in one run).", no_args_is_help=True
)


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
        bench_projector(
            size, n_tilts, repeats=repeats, device=str(dev), with_astra=astra, report=typer.echo
        )


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


#: ``--quick``: tiny sizes that still exercise every part of ``bench scale``.
QUICK_SCALE = {"sizes": "32", "streamed_shape": "16x256x48", "slab_rows": 32, "check_rows": 20}


@bench_app.command("scale")
def scale(
    sizes: str = typer.Option("256,512,k3", help="in-memory sizes: N (cube), NZxNYxNX or k3 "
                              "(61 tilts of 1440x1023, thickness 300), comma-separated; "
                              "'' for none"),
    methods: str = typer.Option("fbp,sirt", help="in-memory methods (fbp, sirt)"),
    n_tilts: int = typer.Option(61, help="number of tilts over ±60°"),
    sirt_iter: int = typer.Option(20, help="SIRT iterations"),
    streamed_shape: str = typer.Option(
        "128x8192x512", help="streamed volume NZxNYxNX ('' to skip)"
    ),
    limit_gb: float = typer.Option(2.0, help="address-space limit (RLIMIT_AS, GB) of the streamed "
                                   "process; 0 for none"),
    slab_rows: int = typer.Option(0, help="streamed slab height (0: planned from the memory left)"),
    check_rows: int = typer.Option(48, help="rows of the streamed volume recomputed in memory"),
    workdir: str = typer.Option("", help="directory for the streamed files (default: temporary)"),
    quick: bool = typer.Option(False, help="tiny sizes for a check in seconds: --sizes 32 "
                               "--streamed-shape 16x256x48 --slab-rows 32 --check-rows 20"),
) -> None:
    """Time and peak RSS by size, in memory and streamed; last line `streamed_peak_rss_gb: N`."""
    from cryowedge.bench import bench_scale, parse_scale_size

    with user_errors():
        if quick:
            sizes, streamed_shape = str(QUICK_SCALE["sizes"]), str(QUICK_SCALE["streamed_shape"])
            slab_rows, check_rows = int(QUICK_SCALE["slab_rows"]), int(QUICK_SCALE["check_rows"])
        bench_scale(
            [s for s in sizes.split(",") if s.strip()],
            methods=[m.strip() for m in methods.split(",") if m.strip()],
            n_tilts=n_tilts,
            sirt_iter=sirt_iter,
            streamed_shape=(
                parse_scale_size(streamed_shape) if streamed_shape.strip() else (0, 0, 0)
            ),
            address_space_gb=limit_gb if limit_gb > 0 else None,
            slab_rows=slab_rows or None,
            check_rows=check_rows,
            workdir=workdir or None,
            report=typer.echo,
        )


@bench_app.command("dewedge")
def dewedge(
    shape: tuple[int, int, int] = typer.Option((64, 192, 192), help="half tomograms Z Y X"),
    subtomo_size: int = typer.Option(64, help="sub-tomogram edge (voxels)"),
    chans: int = typer.Option(32, help="U-Net channels"),
    depth: int = typer.Option(3, help="U-Net depth"),
    batch_size: int = typer.Option(5, help="sub-tomograms per step"),
    subtomos: int = typer.Option(20, help="sub-tomograms per epoch"),
    threads: int = typer.Option(2, help="torch CPU threads"),
    epochs: int = typer.Option(2, help="timed epochs (after one warm-up epoch)"),
    mixed_precision: str = typer.Option("auto", help="auto | off | bf16 | fp16"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    baseline: bool = typer.Option(True, help="also time the reference-like pipeline"),
    quick: bool = typer.Option(False, help="tiny sizes for a check in seconds"),
) -> None:
    """Dewedge fitting epoch and refinement time vs a reference-like pipeline; last line
    `epoch_seconds: N`."""
    from cryowedge.dewedge.bench import bench_dewedge

    with user_errors():
        if quick:
            shape, subtomo_size, chans, depth, subtomos, epochs = (16, 48, 48), 16, 4, 2, 4, 1
        bench_dewedge(tuple(shape), subtomo_size, chans, depth, batch_size, subtomos, threads,
                      epochs=epochs, mixed_precision=mixed_precision, device=device,
                      baseline=baseline, report=typer.echo)


@bench_app.command("crm")
def crm(
    n_copies: int = typer.Option(49, "--copies", help="number of copies N"),
    size: int = typer.Option(200, help="image side of the 2D data set (pixels)"),
    n_iter: int = typer.Option(20, help="SART iterations of both"),
    relaxation: float = typer.Option(0.2, help="SART relaxation of both"),
    dataset: str = typer.Option("ribosome", help="ribosome (Shepp-Logan if its map is missing) "
                                "| shepp-logan"),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    scaling: str = typer.Option("", help="also a table over these N first, e.g. 3,11,49,200"),
    repeats: int = typer.Option(1, help="alternating runs of both; each keeps its shortest time "
                                "(use 2-3 on a shared machine)"),
    plan_cache_gb: float = typer.Option(0.0, help="CRM-SART's plan cache, GB (0: the solver's "
                                         "default, 4 GiB on the host)"),
    quick: bool = typer.Option(False, help="3 copies of 64x64, for a check in seconds"),
) -> None:
    """CRM-SART vs the AVG pipeline's N SART reconstructions; last line `crm_cost_vs_avg: N`."""
    from cryowedge.crm.bench import QUICK, bench_crm, crm_cost_table

    with user_errors():
        if quick:
            n_copies, size = int(QUICK["n_copies"]), int(QUICK["size"])
        if scaling.strip():
            ns = [int(v) for v in scaling.split(",") if v.strip()]
            crm_cost_table(ns, size, n_iter, relaxation, dataset=dataset, device=device,
                           repeats=repeats, plan_cache_gb=plan_cache_gb or None,
                           report=typer.echo)
        bench_crm(n_copies, size, n_iter, relaxation, dataset=dataset, device=device,
                  repeats=repeats, plan_cache_gb=plan_cache_gb or None, report=typer.echo)


@bench_app.command("inr")
def inr(
    shape: tuple[int, int, int] = typer.Option((32, 128, 128), help="hollow spheres Z Y X"),
    epochs: int = typer.Option(120, help="epochs of the fit"),
    width: int = typer.Option(64, help="features per hidden layer"),
    n_frequencies: int = typer.Option(64, help="Fourier features"),
    slice_batch: int = typer.Option(16, help="y-slices per optimiser step"),
    lam_c: float = typer.Option(0.0, "--lam-c", help="Crowther/wedge penalty weight"),
    threads: int = typer.Option(2, help="torch CPU threads"),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N | auto"),
    score_every: int = typer.Option(5, help="score the epoch's volume every N epochs"),
    batches: str = typer.Option("", help="also the memory/time table over these slice batches "
                                "(e.g. 128,64,32,16), each in a fresh interpreter"),
    baselines: bool = typer.Option(True, help="also time and score FBP and TV-ADMM"),
    quick: bool = typer.Option(False, help="16x32x32, 4 epochs, width 16: a check in seconds"),
) -> None:
    """Coordinate-network fit: seconds per epoch and to convergence on the results table's
    setting; last line `inr_epoch_seconds: N`."""
    from cryowedge.inr.bench import QUICK, bench_inr, slice_batch_tradeoff

    with user_errors():
        n_spheres = 12
        if quick:
            shape, n_spheres = tuple(QUICK["shape"]), int(QUICK["n_spheres"])
            epochs, width = int(QUICK["epochs"]), int(QUICK["width"])
            n_frequencies, slice_batch = int(QUICK["n_frequencies"]), int(QUICK["slice_batch"])
            score_every = 1
        if batches.strip():
            sizes = [int(v) for v in batches.split(",") if v.strip()]
            slice_batch_tradeoff(sizes, tuple(shape), epochs=epochs, n_spheres=n_spheres,
                                 threads=threads, device=device, report=typer.echo,
                                 config={"width": width, "n_frequencies": n_frequencies,
                                         "lam_c": lam_c})
        bench_inr(tuple(shape), epochs=epochs, n_spheres=n_spheres, width=width,
                  n_frequencies=n_frequencies, slice_batch=slice_batch, lam_c=lam_c,
                  threads=threads, device=device, score_every=score_every, baselines=baselines,
                  report=typer.echo)


@bench_app.command("spa")
def spa(
    size: int = typer.Option(64, help="volume edge n (voxels); 128 for the thesis's size"),
    projections: str = typer.Option("50,500,5000", help="numbers of projections P"),
    repeats: int = typer.Option(1, help="timed repeats of each operation (shortest kept)"),
    threads: int = typer.Option(1, help="torch CPU threads"),
    explicit_max_p: int = typer.Option(500, help="largest P at which Hc, Hᵀb and the explicit "
                                       "HᵀHc run; above it they are extrapolated (linear in P)"),
    fast_adjoint: bool = typer.Option(True, help="also time the fast Hᵀb (Theorem 2)"),
    peers: bool = typer.Option(True, help="torch-fourier-slice / torch-projectors side by side "
                               "and the normal-equation solve (skipped if not installed)"),
    peer_p: int = typer.Option(500, help="projections of the peer comparison and the solve"),
    solve_iters: int = typer.Option(20, help="CG iterations of the normal-equation solves"),
    quick: bool = typer.Option(False, help="16³, P = 5,10, peers at P = 10, 3 CG iterations"),
) -> None:
    """SPA operator times (thesis Table 4.1), peers, solve; last line `toeplitz_speedup: N`."""
    from cryowedge.spa.bench import QUICK, bench_spa

    with user_errors():
        if quick:
            size, peer_p, solve_iters = int(QUICK["size"]), int(QUICK["peer_p"]), int(
                QUICK["solve_iters"])
            projections = ",".join(str(p) for p in QUICK["projections"])
        try:
            ps = [int(v) for v in projections.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--projections must be comma-separated integers, got "
                             f"{projections!r}.") from None
        bench_spa(size, ps, repeats=repeats, threads=threads, explicit_max_p=explicit_max_p,
                  fast_adjoint_op=fast_adjoint, peers=peers, peer_p=peer_p,
                  solve_iters=solve_iters, report=typer.echo)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
