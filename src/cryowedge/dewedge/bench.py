"""Dewedge fitting speed, side by side with a reference-like pipeline (``cryowedge bench dewedge``).

One fixed configuration (the issue's): a ``64 × 192 × 192`` pair of half tomograms,
sub-tomograms of ``64³`` cut from ``92³`` crops, U-Net ``chans 32``, ``depth 3``, batch 5,
20 sub-tomograms per epoch, 2 CPU threads. Printed in full by :func:`bench_dewedge`.

* **ours** — :func:`cryowedge.dewedge.fit.fit` as users run it: crops cut on the fly from the
  in-memory volumes, rotation (``grid_sample``) and wedge masks in torch, both threads,
  ``channels_last_3d``, ``mixed_precision="auto"`` (bfloat16 autocast on CPUs with native
  bfloat16). One warm-up epoch, then the median of the timed epochs.
* **reference-like** — the reference implementation's data path re-created (research/
  anchors_ml.md §1.4): sub-tomogram pairs of ``92³`` stored once as ``.pt`` files and loaded
  every epoch, each pair rotated by three cubic-spline rotations on the CPU
  (``scipy.ndimage.affine_transform``, order 3: half A, half B and the wedge mask), then
  centre-cropped; the loss with inverse FFTs; the same U-Net in float32 on one thread. It
  leaves out the reference's ``detect_anomaly=True`` (which would only slow it further).

Reported: seconds per epoch, seconds per sub-tomogram, and the fraction of the epoch spent
waiting for data; the last line is ``epoch_seconds: N`` (ours).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["bench_dewedge", "reference_like_epoch", "reference_like_refine"]

logger = logging.getLogger(__name__)


def _pair(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random structure plus independent noise in each half, ±60° wedge applied."""
    from scipy import ndimage

    from cryowedge.geometry.wedge import wedge_mask

    rng = np.random.default_rng(seed)
    signal = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    signal /= signal.std()
    w = wedge_mask(shape, [-60, 60], rfft=True).numpy()
    halves = []
    for _ in range(2):
        v = signal + rng.normal(size=shape)
        halves.append(np.fft.irfftn(np.fft.rfftn(v) * w, s=shape).astype(np.float32))
    return halves[0], halves[1]


def _cubic_rotate(volume: np.ndarray, matrix_xyz: np.ndarray) -> np.ndarray:
    """``out(R r) = in(r)`` about the centre voxel with cubic splines (scipy, order 3)."""
    from scipy import ndimage

    from cryowedge.geometry.rotations import xyz_to_zyx_matrix

    m = xyz_to_zyx_matrix(matrix_xyz).T  # output index o samples input at Rᵀ (o − c) + c
    c = np.array(volume.shape) // 2
    return ndimage.affine_transform(volume, m, offset=c - m @ c, order=3, mode="constant")


def reference_like_epoch(
    files: list[tuple[Path, Path]],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    subtomo_size: int,
    batch_size: int,
    measured_mask_full: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    """One epoch of the reference-like pipeline; returns ``seconds`` and ``data_seconds``.

    ``files``: ``(half_a.pt, half_b.pt)`` crops of ``c³``; ``measured_mask_full``: the
    canonical measured-wedge mask ``(c, c, c)`` (fftshifted), rotated like the volumes.
    """
    from scipy.spatial.transform import Rotation

    s = subtomo_size
    t_epoch = time.perf_counter()
    data_seconds = 0.0
    for b0 in range(0, len(files), batch_size):
        t0 = time.perf_counter()
        inputs, targets, rot_masks = [], [], []
        for fa, fb in files[b0 : b0 + batch_size]:
            a = torch.load(fa, weights_only=True).numpy()
            b = torch.load(fb, weights_only=True).numpy()
            c = a.shape[0]
            lo = c // 2 - s // 2
            crop = (slice(lo, lo + s),) * 3
            r = Rotation.random(random_state=rng).as_matrix()
            ra = _cubic_rotate(a, r)[crop]
            rb = _cubic_rotate(b, r)[crop]
            rm = _cubic_rotate(measured_mask_full, r)[crop]  # the reference rotates the mask
            w = measured_mask_full[crop]
            inp = np.fft.ifftn(np.fft.ifftshift(np.fft.fftshift(np.fft.fftn(ra)) * w)).real
            inputs.append(inp.astype(np.float32))
            targets.append(rb.astype(np.float32))
            rot_masks.append(np.stack([rm, w]).astype(np.float32))
        x = torch.from_numpy(np.stack(inputs))[:, None]
        y = torch.from_numpy(np.stack(targets))[:, None]
        masks = torch.from_numpy(np.stack(rot_masks))  # (B, 2, s, s, s) fftshifted
        data_seconds += time.perf_counter() - t0
        optimizer.zero_grad()
        out = model(x)
        spec = torch.fft.fftshift(torch.fft.fftn(y - out, dim=(-3, -2, -1)), dim=(-3, -2, -1))
        rot, meas = masks[:, 0:1], masks[:, 1:2]
        outside = torch.fft.ifftn(
            torch.fft.ifftshift(spec * rot * meas, dim=(-3, -2, -1)), dim=(-3, -2, -1)
        ).real
        inside = torch.fft.ifftn(
            torch.fft.ifftshift(spec * rot * (1 - meas), dim=(-3, -2, -1)), dim=(-3, -2, -1)
        ).real
        loss = outside.square().mean() + 2.0 * inside.square().mean()
        loss.backward()
        optimizer.step()
    return {"seconds": time.perf_counter() - t_epoch, "data_seconds": data_seconds}


def reference_like_refine(
    halves: tuple[np.ndarray, np.ndarray],
    model: torch.nn.Module,
    *,
    subtomo_size: int,
    batch_size: int = 10,
    measured_mask: np.ndarray,
) -> np.ndarray:
    """The reference's refinement re-created (research/anchors_ml.md §1.4, "Refinement"):
    the canonical wedge removed from the whole tomogram, reflection padding, cubes with stride
    ``s − ⌈s/3⌉``, the network in float32 in batches of 10, separable linear-ramp blending on
    the CPU; each half separately, then the mean. ``measured_mask``: the measured region of
    the whole volume (rfft layout)."""
    s = subtomo_size
    overlap = -(-s // 3)
    stride = s - overlap
    ramp = np.minimum(1.0, (np.arange(s) + 1.0) / (overlap + 1.0))
    ramp = np.minimum(ramp, ramp[::-1])
    weight = ramp[:, None, None] * ramp[None, :, None] * ramp[None, None, :]
    outputs = []
    for half in halves:
        shape = half.shape
        masked = np.fft.irfftn(np.fft.rfftn(half) * measured_mask, s=shape).astype(np.float32)
        # pad by the overlap on both sides, plus what makes (length − s) a multiple of the stride
        pads = [(overlap, overlap + (-(n + 2 * overlap - s)) % stride) for n in shape]
        padded = np.pad(masked, pads, mode="reflect")
        acc = np.zeros(padded.shape, np.float32)
        norm = np.zeros(padded.shape, np.float32)
        starts = [range(0, padded.shape[i] - s + 1, stride) for i in range(3)]
        corners = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
        with torch.no_grad():
            for b0 in range(0, len(corners), batch_size):
                chunk = corners[b0 : b0 + batch_size]
                tiles = np.stack([padded[z : z + s, y : y + s, x : x + s] for z, y, x in chunk])
                out = model(torch.from_numpy(tiles)[:, None]).numpy()[:, 0]
                for (z, y, x), tile in zip(chunk, out, strict=True):
                    acc[z : z + s, y : y + s, x : x + s] += tile * weight
                    norm[z : z + s, y : y + s, x : x + s] += weight
        crop = tuple(slice(p[0], p[0] + n) for p, n in zip(pads, shape, strict=True))
        outputs.append(acc[crop] / np.maximum(norm[crop], 1e-12))
    return 0.5 * (outputs[0] + outputs[1])


def bench_dewedge(
    shape: tuple[int, int, int] = (64, 192, 192),
    subtomo_size: int = 64,
    chans: int = 32,
    depth: int = 3,
    batch_size: int = 5,
    subtomos_per_epoch: int = 20,
    threads: int = 2,
    *,
    epochs: int = 2,
    mixed_precision: str = "auto",
    refine_batch_size: int = 4,
    device: str = "cpu",
    baseline: bool = True,
    work_dir: str | Path | None = None,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time dewedge fitting epochs (ours, then reference-like) and report them; see the module
    docstring. ``epochs`` timed epochs follow one warm-up epoch. Returns the figures."""
    from cryowedge.config.dewedge import DewedgeConfig
    from cryowedge.dewedge.data import crop_size_for
    from cryowedge.dewedge.fit import fit, resolve_fit_autocast
    from cryowedge.dewedge.unet import UNet3D
    from cryowedge.geometry.wedge import wedge_mask

    torch.set_num_threads(int(threads))
    dev = torch.device(device)
    crop = crop_size_for(subtomo_size)
    autocast = resolve_fit_autocast(mixed_precision, dev)
    report(f"pair of half tomograms {shape[0]}x{shape[1]}x{shape[2]} (z, y, x), float32, in memory")
    report(
        f"sub-tomograms {subtomo_size}^3 cut from {crop}^3 crops; U-Net chans {chans}, "
        f"depth {depth}, 3 convs per level; batch {batch_size}; {subtomos_per_epoch} "
        f"sub-tomograms per epoch; no validation, no wedge update inside the timed epochs"
    )
    report(
        f"device {dev}; torch threads {torch.get_num_threads()}; ours: mixed precision "
        f"{mixed_precision} -> {autocast or 'float32'}, channels_last_3d; "
        f"{epochs} timed epoch(s) after 1 warm-up epoch"
    )
    a, b = _pair(shape)
    results: dict[str, Any] = {}
    owned = None
    if work_dir is None:
        owned = tempfile.TemporaryDirectory(prefix="cryowedge-bench-dewedge-")
        work = Path(owned.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        report("... ours: fitting")
        cfg = DewedgeConfig.model_validate(
            {
                "shared": {
                    "subtomo_size": subtomo_size,
                    "chans": chans,
                    "depth": depth,
                    "device": device,
                    "standardize": "robust",
                },
                "fit": {
                    "epochs": 1 + epochs,
                    "subtomos_per_epoch": subtomos_per_epoch,
                    "batch_size": batch_size,
                    "val_fraction": 0.0,
                    "update_wedge_every": None,
                    "checkpoint_every": 10_000,
                    "mixed_precision": mixed_precision,
                    "threads": threads,
                },
            }
        )
        res = fit([(a, b)], [-60, 60], cfg, output_dir=work / "ours", overwrite=True)
        timed = res.history[1:] or res.history
        epoch_s = statistics.median(h["seconds"] for h in timed)
        wait = sum(h["wait_seconds"] for h in timed) / sum(h["seconds"] for h in timed)
        results.update(
            epoch_seconds=epoch_s,
            seconds_per_subtomo=epoch_s / subtomos_per_epoch,
            wait_fraction=wait,
            warmup_epoch_seconds=res.history[0]["seconds"],
        )
        report(
            f"ours: epoch {epoch_s:.2f} s (warm-up epoch {res.history[0]['seconds']:.2f} s), "
            f"{epoch_s / subtomos_per_epoch:.3f} s per sub-tomogram, waiting for data "
            f"{100 * wait:.1f} % of the epoch"
        )
        from cryowedge.dewedge.refine import refine_array

        report("... ours: refining the pair (both halves through the network, then the mean)")
        t0 = time.perf_counter()
        refined = refine_array([a, b], res.model, subtomo_size=subtomo_size,
                               batch_size=refine_batch_size, stats=res.stats[0],
                               wedge_tilt_angles_deg=[-60, 60], device=device,
                               mixed_precision=mixed_precision)
        refine_s = time.perf_counter() - t0
        results.update(refine_seconds=refine_s)
        report(f"ours: refine {refine_s:.2f} s (mixed precision {mixed_precision}, "
               f"batch {refine_batch_size}, overlap {subtomo_size // 3})")
        if baseline:
            report("... reference-like: storing the sub-tomogram pairs as .pt files")
            torch.set_num_threads(1)
            rng = np.random.default_rng(0)
            files = []
            for i in range(subtomos_per_epoch):
                z0 = [int(rng.integers(0, max(1, n - crop + 1))) for n in shape]
                cube = []
                for half, name in ((a, "a"), (b, "b")):
                    block = half[z0[0] : z0[0] + crop, z0[1] : z0[1] + crop, z0[2] : z0[2] + crop]
                    pads = [(0, crop - n) for n in block.shape]
                    block = np.pad(block, pads, mode="reflect")
                    path = work / "subtomos" / f"{i}_{name}.pt"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(torch.from_numpy(np.ascontiguousarray(block)), path)
                    cube.append(path)
                files.append((cube[0], cube[1]))
            mask = np.fft.fftshift(wedge_mask((crop,) * 3, [-60, 60]).numpy()).astype(np.float32)
            torch.manual_seed(0)
            model = UNet3D(chans=chans, depth=depth)
            opt = torch.optim.Adam(model.parameters(), lr=4e-4)
            report("... reference-like: one epoch (float32, 1 thread, scipy cubic rotations)")
            ref = reference_like_epoch(
                files,
                model,
                opt,
                subtomo_size=subtomo_size,
                batch_size=batch_size,
                measured_mask_full=mask,
                rng=rng,
            )
            ref_s = ref["seconds"]
            results.update(
                reference_epoch_seconds=ref_s,
                reference_seconds_per_subtomo=ref_s / subtomos_per_epoch,
                reference_data_fraction=ref["data_seconds"] / ref_s,
                speedup=ref_s / epoch_s,
            )
            report(
                f"reference-like: epoch {ref_s:.2f} s, {ref_s / subtomos_per_epoch:.3f} s "
                f"per sub-tomogram, data (load + 3 cubic rotations per pair) "
                f"{100 * ref['data_seconds'] / ref_s:.1f} % of the epoch"
            )
            report(f"speedup_vs_reference_like: {ref_s / epoch_s:.2f}")
            report("... reference-like: refining the pair (float32, 1 thread, batch 10)")
            net = res.model.float().to(memory_format=torch.contiguous_format).cpu().eval()
            stats = res.stats[0]
            measured = wedge_mask(shape, [-60, 60], rfft=True).numpy()
            t0 = time.perf_counter()
            ref_out = reference_like_refine(
                (stats.apply(a).astype(np.float32), stats.apply(b).astype(np.float32)), net,
                subtomo_size=subtomo_size, measured_mask=measured)
            ref_refine_s = time.perf_counter() - t0
            agreement = float(np.corrcoef(stats.invert(ref_out).ravel(), refined.ravel())[0, 1])
            results.update(reference_refine_seconds=ref_refine_s,
                           refine_speedup=ref_refine_s / refine_s,
                           refine_agreement=agreement)
            report(f"reference-like: refine {ref_refine_s:.2f} s; refine speedup "
                   f"{ref_refine_s / refine_s:.2f}; correlation of the two refined volumes "
                   f"{agreement:.4f}")
    finally:
        torch.set_num_threads(int(threads))
        if owned is not None:
            owned.cleanup()
    report(f"epoch_seconds: {results['epoch_seconds']:.2f}")
    return results
