"""Image-quality and resolution metrics for reconstructions (real space and Fourier space).

Frequencies are in cycles per pixel and resolutions in Å; see docs/conventions.md.
"""

from __future__ import annotations

from .fourier import (
    FSCResult,
    fourier_region_correlation,
    fourier_ring_correlation,
    fourier_shell_correlation,
    missing_wedge_correlations,
    resolution_at_threshold,
)
from .image import (
    mse,
    normalized_cross_correlation,
    pearson_correlation,
    psnr,
    rmse,
    ssim,
)
from .normalize import (
    NORMALIZE_METHODS,
    normalization_gain_offset,
    normalization_note,
    normalize_intensity,
)
from .report import compare_volumes, metrics_table_markdown

__all__ = [
    "mse",
    "rmse",
    "psnr",
    "ssim",
    "pearson_correlation",
    "normalized_cross_correlation",
    "FSCResult",
    "fourier_shell_correlation",
    "fourier_ring_correlation",
    "resolution_at_threshold",
    "fourier_region_correlation",
    "missing_wedge_correlations",
    "NORMALIZE_METHODS",
    "normalize_intensity",
    "normalization_gain_offset",
    "normalization_note",
    "compare_volumes",
    "metrics_table_markdown",
]
