"""One-call comparison of a reconstruction with a reference, and a Markdown table of results."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .._validation import check_ndim, check_positive, check_positive_int
from .fourier import RESOLUTION_RULES, fourier_shell_correlation, missing_wedge_correlations
from .image import (
    _as_bool_mask,
    _prepare_pair,
    normalized_cross_correlation,
    pearson_correlation,
    psnr,
    rmse,
    ssim,
)
from .normalize import _apply, check_normalize, normalization_note

__all__ = ["FSC_RESOLUTION_RULE", "compare_volumes", "fsc_rule_note", "metrics_table_markdown"]

#: How :func:`compare_volumes` reads ``fsc05_angstrom`` and ``fsc0143_angstrom`` off the FSC
#: curve (:func:`~cryowedge.metrics.resolution_at_threshold`): the crossing after which the
#: curve stays below the threshold. An FSC curve can dip below a threshold and recover
#: (noise in a few shells, CTF zeros); its first dip would understate the resolution.
FSC_RESOLUTION_RULE = "stays-below"

#: Metric keys that hold an FSC resolution.
_FSC_COLUMNS = ("fsc05_angstrom", "fsc0143_angstrom")


def fsc_rule_note(rule: str = FSC_RESOLUTION_RULE) -> str:
    """One sentence saying how the FSC resolution columns were read, for a results table."""
    if rule not in RESOLUTION_RULES:
        raise ValueError(f"rule must be one of {sorted(RESOLUTION_RULES)}, got {rule!r}.")
    return (f"FSC resolutions (fsc05_angstrom, fsc0143_angstrom, Å at FSC = 0.5 and 0.143): "
            f"{RESOLUTION_RULES[rule]} (rule {rule!r}).")


def compare_volumes(
    x: Any,
    reference: Any,
    *,
    pixel_size_angstrom: float = 1.0,
    mask: Any = None,
    wedge_mask: Any = None,
    data_range: float | None = None,
    normalize: str = "none",
) -> dict[str, float]:
    """Compute the standard metric set of ``x`` against ``reference``.

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (z, y, x) or (y, x)
        Reconstruction and ground truth of identical shape.
    pixel_size_angstrom : float
        Pixel size in Å (> 0), used for the FSC resolutions.
    mask : bool array, same shape, optional
        Real-space mask: restricts PSNR, SSIM (map average), Pearson, NCC and RMSE to
        ``True`` voxels and is multiplied into both maps before the FSC.
    wedge_mask : bool array, shape (z, y, x), optional
        Missing wedge (``True`` = unmeasured, unshifted FFT order). When given, the
        correlations inside and outside the wedge are added (3D inputs only).
    data_range : float, optional
        Data range for PSNR and SSIM; default ``reference.max() - reference.min()``
        (over the mask).
    normalize : {"none", "zscore", "affine"}
        Grey-level calibration of ``x`` against ``reference`` before the metrics
        (:mod:`cryowedge.metrics.normalize`): ``"affine"`` applies the least-squares
        gain and offset (fitted inside ``mask`` if given), ``"zscore"`` matches the
        reference's mean and standard deviation. PSNR, SSIM, RMSE, NCC, the FSC and the
        wedge correlations then see the calibrated volume; Pearson is computed on the
        raw ``x`` (it is invariant to a positive gain and offset, and so keeps the sign
        of an inverted contrast that a negative fitted gain would hide). The default
        ``"none"`` (raw grey levels) keeps this function consistent with
        :func:`~cryowedge.metrics.psnr` and :func:`~cryowedge.metrics.ssim` and with
        earlier releases; ``cryowedge evaluate`` and the results tables use ``"affine"``,
        the usual choice when comparing methods whose calibration differs.

    Returns
    -------
    dict[str, float]
        Keys ``psnr`` (dB), ``ssim``, ``pearson``, ``ncc``, ``rmse`` (data units),
        ``fsc05_angstrom`` and ``fsc0143_angstrom`` (resolution in Å at FSC = 0.5 and
        0.143, read with :data:`FSC_RESOLUTION_RULE`: the crossing after which the curve
        stays below the threshold), and with ``wedge_mask`` also ``inside_wedge`` and
        ``outside_wedge``.

    Notes
    -----
    SSIM averages its map away from the borders (:func:`~cryowedge.metrics.ssim` with
    ``crop_border=True``), so every axis must be at least 11 voxels long.
    """
    normalize = check_normalize(normalize)
    x_np, ref_np = _prepare_pair(x, reference)
    check_ndim(x_np, (2, 3), "x", "(y, x) or (z, y, x)")
    pixel_size_angstrom = float(pixel_size_angstrom)
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")
    m = None if mask is None else _as_bool_mask(mask, x_np.shape)
    raw = x_np
    x_np = _apply(x_np, ref_np, normalize, m)

    fsc = fourier_shell_correlation(x_np, ref_np, mask=m)
    out: dict[str, float] = {
        "psnr": psnr(x_np, ref_np, data_range=data_range, mask=m),
        "ssim": ssim(x_np, ref_np, data_range=data_range, mask=m),
        "pearson": pearson_correlation(raw, ref_np, mask=m),
        "ncc": normalized_cross_correlation(x_np, ref_np, mask=m),
        "rmse": rmse(x_np, ref_np, mask=m),
        "fsc05_angstrom": fsc.resolution_angstrom(0.5, pixel_size_angstrom,
                                                  rule=FSC_RESOLUTION_RULE),
        "fsc0143_angstrom": fsc.resolution_angstrom(0.143, pixel_size_angstrom,
                                                    rule=FSC_RESOLUTION_RULE),
    }
    if wedge_mask is not None:
        out.update(missing_wedge_correlations(x_np, ref_np, wedge_mask))
    return out


def _format_value(value: Any, digits: int) -> str:
    if value is None:
        return ""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value).replace("|", "\\|")
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def metrics_table_markdown(
    rows: Mapping[str, Mapping[str, float]],
    *,
    columns: Sequence[str] | None = None,
    significant_digits: int = 4,
    normalize: str | None = None,
    fsc_rule: str | None = None,
) -> str:
    """Render metric dictionaries as a Markdown table, one row per method.

    Parameters
    ----------
    rows : mapping of str to mapping of str to float
        ``{method_name: {metric_key: value}}``, e.g. ``{"WBP": compare_volumes(...)}``.
    columns : sequence of str, optional
        Metric keys to show, in order. Default: every key, in first-seen order.
        A method without a key gets an empty cell.
    significant_digits : int
        Significant digits per value (``format(v, ".4g")`` by default); ``inf``/``nan``
        are written as such.
    normalize : {"none", "zscore", "affine"}, optional
        The grey-level normalisation the rows were computed with (``compare_volumes(...,
        normalize=...)``). When given, the table is preceded by the sentence of
        :func:`~cryowedge.metrics.normalization_note` and a blank line, so the report
        says how the volumes were calibrated. If the table then shows an FSC resolution
        column, the :func:`fsc_rule_note` for :data:`FSC_RESOLUTION_RULE` follows it.
    fsc_rule : {"first-below", "stays-below"}, optional
        The crossing rule the FSC columns were read with; when given (and an FSC column
        is shown) its :func:`fsc_rule_note` comes first, with or without ``normalize``.

    Returns
    -------
    str
        The table (header, separator, one line per method), ending with a newline;
        the note lines (normalisation, FSC rule), if any, and a blank line come first.
    """
    if not isinstance(rows, Mapping) or len(rows) == 0:
        raise ValueError(
            "rows must be a non-empty mapping {method_name: {metric: value}}, got "
            f"{type(rows).__name__} of length {len(rows) if hasattr(rows, '__len__') else '?'}."
        )
    check_positive_int(significant_digits, "significant_digits")
    notes = [] if normalize is None else [normalization_note(normalize)]
    for name, metrics in rows.items():
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"rows[{name!r}] must be a mapping of metric name to value, "
                f"got {type(metrics).__name__}."
            )
    if columns is None:
        columns = list(dict.fromkeys(k for metrics in rows.values() for k in metrics))
    else:
        columns = [str(c) for c in columns]
    if not columns:
        raise ValueError("no metric columns to show: every row in rows is empty.")

    def esc(text: Any) -> str:
        return str(text).replace("|", "\\|")

    header = "| method | " + " | ".join(esc(c) for c in columns) + " |"
    sep = "| --- | " + " | ".join("---:" for _ in columns) + " |"
    lines = [header, sep]
    for name, metrics in rows.items():
        cells = [_format_value(metrics.get(c), significant_digits) for c in columns]
        lines.append(f"| {esc(name)} | " + " | ".join(cells) + " |")
    if fsc_rule is None and normalize is not None:
        fsc_rule = FSC_RESOLUTION_RULE
    if fsc_rule is not None and any(c in _FSC_COLUMNS for c in columns):
        notes.append(fsc_rule_note(fsc_rule))
    if notes:
        lines = [*notes, "", *lines]
    return "\n".join(lines) + "\n"
