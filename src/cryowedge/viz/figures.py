"""PNG figures: orthoslice panels and FSC curves (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cryowedge.io._atomic import atomic_write

__all__ = ["orthoslice_panel", "fsc_plot", "central_slices", "save_png"]


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


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig``, write it atomically as a 110-dpi PNG at ``path``, close it; return the path."""
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
    """Write a PNG with one column per volume: central XY slice above, XZ slice below.

    Each column is contrast-stretched to its own ``[percentile, 100 − percentile]`` range,
    so methods with different scales stay comparable by eye. Volumes are ``(z, y, x)``.
    """
    plt = _plt()
    names = list(volumes)
    if not names:
        raise ValueError("orthoslice_panel needs at least one volume.")
    slices = {name: central_slices(volumes[name]) for name in names}
    nz, ny = (_numpy(volumes[names[0]]).shape[i] for i in (0, 1))
    fig, axes = plt.subplots(
        2, len(names), figsize=(2.6 * len(names), 2.6 * (1 + nz / ny)),
        gridspec_kw={"height_ratios": [ny, nz]}, squeeze=False,
    )
    for col, name in enumerate(names):
        xy, xz = slices[name]
        lo, hi = np.percentile(np.concatenate([xy.ravel(), xz.ravel()]), [percentile, 100 - percentile])
        for row, (image, label) in enumerate(((xy, "XY"), (xz, "XZ"))):
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


def fsc_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    pixel_size_angstrom: float = 1.0,
    thresholds: tuple[float, ...] = (0.5, 0.143),
) -> Path:
    """Write a PNG of FSC curves ``{name: (frequency_cycles_per_pixel, correlation)}``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, (freq, corr) in curves.items():
        ax.plot(np.asarray(freq) / pixel_size_angstrom, corr, label=name, lw=1.5)
    for t in thresholds:
        ax.axhline(t, color="0.6", lw=0.8, ls="--")
        ax.text(0.0, t, f" {t:g}", va="bottom", fontsize=7, color="0.4")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC vs ground truth")
    ax.set_ylim(-0.1, 1.02)
    ax.set_xlim(0, 0.5 / pixel_size_angstrom)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.2)
    return save_png(fig, path)
