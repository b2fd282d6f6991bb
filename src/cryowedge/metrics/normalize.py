"""Grey-level calibration of a reconstruction against a reference before scoring it.

Reconstruction methods differ in their grey-level scale and offset (FBP's filter gain,
positivity-clipped SIRT, TV): PSNR, RMSE, SSIM and the uncentred NCC computed on raw
grey levels partly score that calibration rather than the structure. The options here
map the volume under test into the reference's units; the reference is never changed,
so RMSE stays in reference units and the default data range is the reference's.

``"none"``
    Raw grey levels (no change).
``"zscore"``
    ``x`` is standardised and given the reference's mean and standard deviation:
    ``(x - mean x) / std x * std r + mean r``. Removes any positive gain and offset.
``"affine"``
    Least-squares gain and offset: ``a x + b`` with ``(a, b)`` minimising
    ``sum((a x + b - r)^2)``. The usual choice when comparing methods, and the
    default of ``cryowedge evaluate`` and of every results table.

Means, standard deviations and the fit are taken inside the evaluation mask when one is
given, and the resulting map is applied to the whole volume.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .._validation import check_choice
from .image import _as_bool_mask, _prepare_pair

__all__ = [
    "NORMALIZE_METHODS",
    "check_normalize",
    "normalize_intensity",
    "normalization_gain_offset",
    "normalization_note",
]

logger = logging.getLogger(__name__)

#: Accepted values of ``normalize`` (see the module docstring).
NORMALIZE_METHODS: tuple[str, ...] = ("none", "zscore", "affine")

_NOTES = {
    "none": "raw grey levels (no normalisation)",
    "zscore": (
        "zscore normalisation (each volume given the reference's mean and standard "
        "deviation before PSNR, SSIM, RMSE, NCC and FSC)"
    ),
    "affine": (
        "affine normalisation (each volume's least-squares gain and offset against the "
        "reference applied before PSNR, SSIM, RMSE, NCC and FSC; Pearson on the raw volume)"
    ),
}


def _validated(
    x: Any, reference: Any, method: str, mask: Any
) -> tuple[np.ndarray, np.ndarray, str, np.ndarray | None]:
    """``(x, reference, method, mask)`` checked: float64 arrays, a known method, a bool mask."""
    method = check_normalize(method)
    x_np, ref_np = _prepare_pair(x, reference)
    return x_np, ref_np, method, None if mask is None else _as_bool_mask(mask, x_np.shape)


def check_normalize(normalize: str) -> str:
    """Return ``normalize`` lower-cased if it is one of :data:`NORMALIZE_METHODS`, else raise."""
    if not isinstance(normalize, str):
        raise ValueError(
            f"normalize must be one of {', '.join(NORMALIZE_METHODS)}, got {normalize!r}."
        )
    return check_choice(normalize, "normalize", NORMALIZE_METHODS)


def normalization_gain_offset(
    x: Any, reference: Any, method: str = "affine", *, mask: Any = None
) -> tuple[float, float]:
    """Gain ``a`` and offset ``b`` that :func:`normalize_intensity` applies (``a x + b``).

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (...)
        Volume under test and reference of identical shape (e.g. ``(z, y, x)``).
    method : {"none", "zscore", "affine"}
        See the module docstring.
    mask : bool array, same shape, optional
        Fit only over ``True`` voxels.

    Returns
    -------
    (float, float)
        Gain (dimensionless ratio of reference to test units) and offset (reference
        units). ``(1, 0)`` for ``"none"``. When ``x`` is constant inside the mask the
        gain is 0 and the offset the reference mean (the least-squares answer), with a
        warning logged.
    """
    return _gain_offset(*_validated(x, reference, method, mask))


def _gain_offset(
    x_np: np.ndarray, ref_np: np.ndarray, method: str, m: np.ndarray | None
) -> tuple[float, float]:
    """:func:`normalization_gain_offset` on validated float64 arrays and mask."""
    if method == "none":
        return 1.0, 0.0
    xs = (x_np if m is None else x_np[m]).ravel()
    rs = (ref_np if m is None else ref_np[m]).ravel()
    mean_x, mean_r = float(xs.mean()), float(rs.mean())
    dx = xs - mean_x
    var_x = float(np.mean(dx * dx))
    if xs.max() == xs.min() or var_x == 0.0:
        logger.warning(
            "normalize=%r: the volume is constant%s; it is replaced by the reference mean",
            method,
            " inside the mask" if m is not None else "",
        )
        return 0.0, mean_r
    if method == "zscore":
        dr = rs - mean_r
        gain = float(np.sqrt(np.mean(dr * dr) / var_x))
    else:
        gain = float(np.mean(dx * (rs - mean_r)) / var_x)
        if gain < 0:
            logger.warning(
                "normalize='affine': the fitted gain is negative (%.3g): the volume is "
                "anti-correlated with the reference and its contrast is inverted",
                gain,
            )
    return gain, mean_r - gain * mean_x


def normalize_intensity(
    x: Any, reference: Any, method: str = "affine", *, mask: Any = None
) -> np.ndarray:
    """Map ``x`` into the reference's grey levels: ``a x + b`` (module docstring).

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (...)
        Volume under test and reference of identical shape (e.g. ``(z, y, x)``).
    method : {"none", "zscore", "affine"}
        ``"none"`` returns ``x`` as float64 unchanged (not copied if it already is).
    mask : bool array, same shape, optional
        Fit the gain and offset only over ``True`` voxels; they are applied everywhere.

    Returns
    -------
    numpy.ndarray
        float64 array, shape of ``x``, in reference units.

    Raises
    ------
    ValueError
        For an unknown ``method`` (the message lists the choices), different shapes,
        non-finite values or a bad mask.
    """
    return _apply(*_validated(x, reference, method, mask))


def _apply(
    x_np: np.ndarray, ref_np: np.ndarray, method: str, m: np.ndarray | None
) -> np.ndarray:
    """:func:`normalize_intensity` on validated float64 arrays and mask."""
    if method == "none":
        return x_np
    gain, offset = _gain_offset(x_np, ref_np, method, m)
    return gain * x_np + offset


def normalization_note(method: str) -> str:
    """One sentence naming the normalisation, to print next to a results table.

    Parameters
    ----------
    method : {"none", "zscore", "affine"}

    Returns
    -------
    str
        E.g. ``"Grey levels: affine normalisation (...)."``
    """
    return f"Grey levels: {_NOTES[check_normalize(method)]}."
