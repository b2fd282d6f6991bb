"""PNG figures: orthoslice panels and FSC curves (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.io._atomic import atomic_write

__all__ = [
    "central_slices",
    "fsc_plot",
    "orthogonal_slices",
    "orthoslice_figure",
    "orthoslice_panel",
    "orthoslice_png",
    "percentile_limits",
    "save_png",
]


def _numpy(volume: Any) -> np.ndarray:
    if hasattr(volume, "detach"):
        volume = volume.detach().cpu().numpy()
    return np.asarray(volume, dtype=np.float32)


def central_slices(volume: Any) -> tuple[np.ndarray, np.ndarray]:
    """The central XY slice ``(y, x)`` and XZ slice ``(z, x)`` of a ``(z, y, x)`` volume."""
    vol = _numpy(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got shape {vol.shape}.")
    return vol[vol.shape[0] // 2], vol[:, vol.shape[1] // 2, :]


def orthogonal_slices(volume: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The central XY ``(y, x)``, XZ ``(z, x)`` and YZ ``(z, y)`` slices of a ``(z, y, x)`` volume.

    Each slice goes through the centre voxel ``N // 2`` of the axis it cuts.
    """
    vol = _numpy(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be (z, y, x), got shape {vol.shape}.")
    nz, ny, nx = vol.shape
    return vol[nz // 2], vol[:, ny // 2, :], vol[:, :, nx // 2]


def percentile_limits(images: Any, percentile: float = 1.0) -> tuple[float, float]:
    """Grey-level window ``(lo, hi)``: the ``percentile`` and ``100 − percentile`` percentiles.

    ``images`` is one array or a sequence of arrays (any shapes; pooled). Non-finite values are
    ignored. ``percentile`` is in ``[0, 50)``; a constant image gets ``(v − 0.5, v + 0.5)`` so
    that it still displays.
    """
    percentile = float(percentile)
    if not 0.0 <= percentile < 50.0:
        raise ValueError(f"percentile must be in [0, 50) (%), got {percentile}; 1 is usual.")
    parts = images if isinstance(images, (list, tuple)) else [images]
    values = np.concatenate([_numpy(p).ravel() for p in parts])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return -0.5, 0.5
    lo, hi = (float(v) for v in np.percentile(values, [percentile, 100.0 - percentile]))
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig``, write it atomically as a 110-dpi PNG at ``path``, close it; return the
    path."""
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _plt().close(fig)
    return path


def orthoslice_panel(
    volumes: Mapping[str, Any],
    path: str | Path,
    *,
    pixel_size_angstrom: float | None = None,
    percentile: float = 1.0,
) -> Path:
    """Write a PNG with one column per volume: central XY slice, then XZ, then YZ.

    Each column is contrast-stretched to its own ``[percentile, 100 − percentile]`` range
    (pooled over its three slices), so methods with different scales stay comparable by eye.
    Volumes are ``(z, y, x)``; XZ is drawn ``(z, x)`` and YZ ``(z, y)``, ``z`` upwards.
    """
    plt = _plt()
    names = list(volumes)
    if not names:
        raise ValueError("orthoslice_panel needs at least one volume.")
    slices = {name: orthogonal_slices(volumes[name]) for name in names}
    nz, ny, nx = _numpy(volumes[names[0]]).shape
    fig, axes = plt.subplots(
        3, len(names), figsize=(2.6 * len(names), 2.6 * (ny + 2 * nz) / nx),
        gridspec_kw={"height_ratios": [ny, nz, nz]}, squeeze=False,
    )
    for col, name in enumerate(names):
        xy, xz, yz = slices[name]
        lo, hi = percentile_limits([xy, xz, yz], percentile)
        for row, (image, label) in enumerate(((xy, "XY"), (xz, "XZ"), (yz, "YZ"))):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(label)
    if pixel_size_angstrom:
        fig.suptitle(f"central slices ({pixel_size_angstrom:g} Å/voxel)", fontsize=9)
    return save_png(fig, path)


def orthoslice_figure(
    volume: Any,
    *,
    voxel_size_angstrom: float | None = None,
    percentile: float = 1.0,
    title: str | None = None,
) -> Any:
    """A matplotlib figure of one volume's three central slices, laid out as in 3dmod/IMOD.

    XY ``(y, x)`` top left, YZ beside it (``z`` across, so it shares XY's ``y`` axis), XZ
    below it (``z`` upwards, sharing XY's ``x`` axis); each panel at 1 voxel : 1 voxel,
    origin lower left. The three slices share one grey window, the ``percentile`` and
    ``100 − percentile`` percentiles of their pooled values (:func:`percentile_limits`),
    so a few hot voxels do not wash the picture out.

    Parameters
    ----------
    volume : array_like or torch.Tensor, shape (z, y, x)
    voxel_size_angstrom : float, optional
        Voxel size in Å, shown in the title.
    percentile : float
        Clip percentage at each end, in ``[0, 50)``.
    title : str, optional
        First part of the title (e.g. the file name).

    Returns
    -------
    matplotlib.figure.Figure
        With exactly three axes (XY, YZ, XZ); close it or pass it to :func:`save_png`.
    """
    xy, xz, yz = orthogonal_slices(volume)
    lo, hi = percentile_limits([xy, xz, yz], percentile)
    nz, ny, nx = xz.shape[0], xy.shape[0], xy.shape[1]
    plt = _plt()
    scale = 6.0 / (nx + nz)
    fig = plt.figure(figsize=(max(scale * (nx + nz), 3.0), scale * (ny + nz) + 0.5))
    grid = fig.add_gridspec(2, 2, width_ratios=[nx, nz], height_ratios=[ny, nz])
    panels = (
        (grid[0, 0], xy, "XY (central z)", "x", "y"),
        (grid[0, 1], yz.T, "YZ (central x)", "z", "y"),
        (grid[1, 0], xz, "XZ (central y)", "x", "z"),
    )
    for spec, image, label, xlabel, ylabel in panels:
        ax = fig.add_subplot(spec)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=7, labelpad=1)
        ax.set_ylabel(ylabel, fontsize=7, labelpad=1)
        ax.tick_params(labelsize=6)
    parts = [title] if title else []
    parts.append(f"{nz}×{ny}×{nx} (z, y, x)")
    if voxel_size_angstrom:
        parts.append(f"{float(voxel_size_angstrom):g} Å/voxel")
    parts.append(f"grey {percentile:g}–{100 - percentile:g} %")
    fig.suptitle(", ".join(parts), fontsize=8)
    return fig


def orthoslice_png(
    volume: Any,
    path: str | Path,
    *,
    voxel_size_angstrom: float | None = None,
    percentile: float = 1.0,
    title: str | None = None,
) -> Path:
    """Write the :func:`orthoslice_figure` of a ``(z, y, x)`` volume as a PNG, atomically.

    The preview that ``cryowedge reconstruct --preview`` writes beside the MRC. See
    :func:`orthoslice_figure` for the layout and the parameters; returns ``path``.
    """
    fig = orthoslice_figure(volume, voxel_size_angstrom=voxel_size_angstrom,
                            percentile=percentile, title=title)
    return save_png(fig, path)


def fsc_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    pixel_size_angstrom: float = 1.0,
    thresholds: tuple[float, ...] = (0.5, 0.143),
    ylabel: str = "FSC vs ground truth",
) -> Path:
    """Write a PNG of FSC curves ``{name: (frequency_cycles_per_pixel, correlation)}``.

    ``ylabel`` names what the curves correlate (e.g. two half maps).

    Every downward crossing of each threshold is marked on its curve (an open circle); the
    crossing after which the curve stays below the threshold (the one the metrics tables
    report, :data:`cryowedge.metrics.report.FSC_RESOLUTION_RULE`) is filled, and labelled
    with its resolution in Å when there are at most three curves. The x axis is spatial
    frequency in 1/Å up to Nyquist.
    """
    from cryowedge.metrics.fourier import resolution_at_threshold, threshold_crossings

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    px = float(pixel_size_angstrom)
    for name, (freq, corr) in curves.items():
        freq, corr = np.asarray(freq, dtype=np.float64), np.asarray(corr, dtype=np.float64)
        (line,) = ax.plot(freq / px, corr, label=name, lw=1.5)
        keep = freq > 0  # the crossing search takes shells above zero frequency only
        freq, corr = freq[keep], corr[keep]
        if not np.isfinite(corr).any():
            continue
        for t in thresholds:
            cross = threshold_crossings(freq, corr, t)
            if cross.size == 0:
                continue
            ax.plot(cross / px, np.full(cross.size, t), "o", ms=4, mfc="none",
                    mec=line.get_color(), mew=1.0)
            res = resolution_at_threshold(freq, corr, t, px, rule="stays-below")
            if np.isfinite(res) and res > 2.0 * px:
                ax.plot([1.0 / res], [t], "o", ms=4.5, color=line.get_color())
                if len(curves) <= 3:
                        ax.annotate(f"{res:.3g} Å", (1.0 / res, t), xytext=(3, 3),
                                textcoords="offset points", fontsize=6, color=line.get_color())
    for t in thresholds:
        ax.axhline(t, color="0.6", lw=0.8, ls="--")
        ax.text(0.0, t, f" {t:g}", va="bottom", fontsize=7, color="0.4")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel(ylabel)
    ax.set_title("○ every crossing, ● last one (curve stays below after it)", fontsize=7)
    ax.set_ylim(-0.1, 1.02)
    ax.set_xlim(0, 0.5 / px)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.2)
    return save_png(fig, path)
