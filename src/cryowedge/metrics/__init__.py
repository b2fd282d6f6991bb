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
    threshold_crossings,
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
from .snr import high_pass_snr_db, masked_snr_db, snr_db

__all__ = [
    "compare_volumes",
    "fourier_region_correlation",
    "fourier_ring_correlation",
    "fourier_shell_correlation",
    "FSCResult",
    "high_pass_snr_db",
    "masked_snr_db",
    "metrics_table_markdown",
    "missing_wedge_correlations",
    "mse",
    "normalization_gain_offset",
    "normalization_note",
    "normalize_intensity",
    "NORMALIZE_METHODS",
    "normalized_cross_correlation",
    "pearson_correlation",
    "psnr",
    "resolution_at_threshold",
    "rmse",
    "snr_db",
    "ssim",
    "threshold_crossings",
]
