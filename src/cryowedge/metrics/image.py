"""Real-space image-quality metrics: MSE, RMSE, PSNR, SSIM, Pearson and uncentred correlation.

Every function takes NumPy arrays or torch tensors (any device; they are copied to
the CPU), computes in float64 NumPy and returns a Python ``float``. ``x`` is the
image or volume under test and ``reference`` the ground truth; their shapes must
match. Axis order follows docs/conventions.md (``(y, x)`` images, ``(z, y, x)``
volumes), although apart from :func:`ssim` the metrics are defined for any shape.

An optional boolean ``mask`` of the same shape restricts a statistic to the voxels
where it is ``True`` (real space). An all-``False`` mask is an error.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from .._arrays import to_numpy
from .._validation import check_finite, check_ndim, check_positive

__all__ = [
    "mse",
    "rmse",
    "psnr",
    "ssim",
    "pearson_correlation",
    "normalized_cross_correlation",
]

logger = logging.getLogger(__name__)

#: Truncation of the SSIM Gaussian window in units of sigma (as scikit-image's
#: ``gaussian_weights=True``: an 11-tap window for sigma = 1.5).
SSIM_TRUNCATE = 3.5


# ----------------------------------------------------------------------------------------
# Input handling shared by the metrics modules (private).
# ----------------------------------------------------------------------------------------


def _as_float_array(value: Any, name: str) -> np.ndarray:
    """Convert a real array or tensor to a finite float64 array, raising on bad input."""
    if value is None:
        raise TypeError(f"{name} must be a NumPy array or torch tensor, got None.")
    arr = to_numpy(value)
    if np.iscomplexobj(arr):
        raise TypeError(
            f"{name} must be real-valued, got a complex array (shape={arr.shape}, "
            f"dtype={arr.dtype}). Pass the real part or the magnitude explicitly."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(
            f"{name} must be a numeric array, got dtype={arr.dtype} (shape={arr.shape})."
        )
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty array with at least one axis, got shape={arr.shape}."
        )
    arr = arr.astype(np.float64, copy=False)
    check_finite(arr, name)
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {name_a}.shape={a.shape} "
            f"and {name_b}.shape={b.shape}."
        )


def _prepare_pair(
    x: Any, reference: Any, name_x: str = "x", name_ref: str = "reference"
) -> tuple[np.ndarray, np.ndarray]:
    x_np = _as_float_array(x, name_x)
    ref_np = _as_float_array(reference, name_ref)
    _check_same_shape(x_np, ref_np, name_x, name_ref)
    return x_np, ref_np


def _as_bool_mask(
    mask: Any, shape: tuple[int, ...], name: str = "mask", *, allow_empty: bool = False
) -> np.ndarray:
    """Validate a boolean mask of the given shape and return it as a NumPy bool array."""
    arr = to_numpy(mask)
    if arr.dtype != np.bool_:
        raise TypeError(
            f"{name} must be a boolean array (True = use this voxel), got dtype={arr.dtype} "
            f"(shape={arr.shape}). Convert it with `{name} > 0` or `{name}.astype(bool)`."
        )
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must have the same shape as the data, got {name}.shape={arr.shape} "
            f"and data shape={tuple(shape)}."
        )
    if not allow_empty and not arr.any():
        raise ValueError(
            f"{name} is empty (all False, shape={arr.shape}); it must select at least one voxel."
        )
    return arr


def _check_data_range(data_range: float) -> float:
    value = float(data_range)
    check_positive(value, "data_range")
    return value


def _default_data_range(ref_values: np.ndarray, masked: bool) -> float:
    data_range = float(ref_values.max() - ref_values.min())
    if not data_range > 0:
        where = " inside the mask" if masked else ""
        raise ValueError(
            f"cannot infer data_range: the reference is constant{where} "
            f"(min = max = {float(ref_values.min())!r}). Pass data_range explicitly."
        )
    return data_range


def _select(arr: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return arr if mask is None else arr[mask]


# ----------------------------------------------------------------------------------------
# Public metrics.
# ----------------------------------------------------------------------------------------


def mse(x: Any, reference: Any, *, mask: Any = None) -> float:
    """Mean squared error ``mean((x - reference)**2)``.

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (...)
        Test and reference images/volumes of identical shape (e.g. ``(z, y, x)``).
    mask : bool array, same shape, optional
        Average only over voxels where ``mask`` is ``True``.

    Returns
    -------
    float
        MSE in squared data units.
    """
    x_np, ref_np = _prepare_pair(x, reference)
    m = None if mask is None else _as_bool_mask(mask, x_np.shape)
    diff = _select(x_np, m) - _select(ref_np, m)
    return float(np.mean(diff * diff))


def rmse(x: Any, reference: Any, *, mask: Any = None) -> float:
    """Root-mean-square error ``sqrt(mse(x, reference))`` in data units.

    Parameters and masking as for :func:`mse`.
    """
    return math.sqrt(mse(x, reference, mask=mask))


def psnr(
    x: Any, reference: Any, *, data_range: float | None = None, mask: Any = None
) -> float:
    """Peak signal-to-noise ratio ``10 * log10(data_range**2 / MSE)`` in dB.

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (...)
        Test and reference images/volumes of identical shape.
    data_range : float, optional
        Dynamic range of the data (> 0). Default: ``reference.max() - reference.min()``,
        taken over the mask when one is given. A constant reference then raises.
    mask : bool array, same shape, optional
        Compute the MSE (and the default data range) only over ``True`` voxels.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when ``x`` equals ``reference`` (MSE = 0).
    """
    x_np, ref_np = _prepare_pair(x, reference)
    m = None if mask is None else _as_bool_mask(mask, x_np.shape)
    x_sel, ref_sel = _select(x_np, m), _select(ref_np, m)
    dr = (
        _default_data_range(ref_sel, m is not None)
        if data_range is None
        else _check_data_range(data_range)
    )
    diff = x_sel - ref_sel
    err = float(np.mean(diff * diff))
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(dr * dr / err)


def _ssim_map(
    x: np.ndarray, ref: np.ndarray, data_range: float, sigma: float, *, whole: bool
) -> np.ndarray:
    """Per-voxel SSIM map from scikit-image, shape of ``x``.

    With ``whole=False`` only voxels at least the window radius from every border are
    meaningful to the caller (it crops them), and the map is computed on the image as
    is. With ``whole=True`` the image is first extended by reflection by one window
    radius (NumPy ``"symmetric"`` = SciPy ``"reflect"``, the mode scikit-image's
    Gaussian filter uses), so the window fits even on axes shorter than it and the map
    of the original voxels is exactly the reflected-border map.
    """
    radius = int(SSIM_TRUNCATE * sigma + 0.5)
    pad = radius if whole else 0
    if pad:
        x = np.pad(x, pad, mode="symmetric")
        ref = np.pad(ref, pad, mode="symmetric")
    _, smap = structural_similarity(
        x,
        ref,
        gaussian_weights=True,
        sigma=sigma,
        use_sample_covariance=False,
        data_range=data_range,
        K1=0.01,
        K2=0.03,
        full=True,
    )
    if pad:
        smap = smap[tuple(slice(pad, n - pad) for n in smap.shape)]
    return smap


def ssim(
    x: Any,
    reference: Any,
    *,
    data_range: float | None = None,
    mask: Any = None,
    sigma: float = 1.5,
    crop_border: bool = True,
) -> float:
    """Mean structural similarity index (Wang et al. 2004) of a 2D image or 3D volume.

    Local means, variances and the covariance are weighted by an isotropic Gaussian
    window of standard deviation ``sigma`` pixels truncated at 3.5 sigma (an 11-tap
    window for sigma = 1.5), with population (not sample) moments, ``K1 = 0.01`` and
    ``K2 = 0.03``; the image is extended by reflection at its borders. The SSIM map
    is scikit-image's ``structural_similarity(x, reference, gaussian_weights=True,
    sigma=sigma, use_sample_covariance=False, data_range=data_range, full=True)``
    (the Wang et al. settings); this function adds the mask, the border cropping and
    an explicit default ``data_range`` (scikit-image refuses to guess one for floats).

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (y, x) or (z, y, x)
        Test and reference of identical shape.
    data_range : float, optional
        Dynamic range used in the stabilising constants ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``.
        Default: ``reference.max() - reference.min()`` (over the mask if given).
    mask : bool array, same shape, optional
        Average the SSIM map only over ``True`` voxels (the local statistics still see
        the whole image).
    sigma : float
        Standard deviation of the Gaussian window, in pixels.
    crop_border : bool
        If ``True`` (default, as scikit-image), voxels closer than the window radius
        ``int(3.5 * sigma + 0.5)`` (5 px for sigma = 1.5) to any border are left out of
        the average, so every axis must be at least ``2 * radius + 1`` long. With a mask
        the average runs over the mask *and* the cropped interior. ``False`` averages the
        whole map (reflected borders included).

    Returns
    -------
    float
        Mean SSIM in ``[-1, 1]``; 1 for identical inputs.
    """
    x_np, ref_np = _prepare_pair(x, reference)
    check_ndim(x_np, (2, 3), "x", "(y, x) or (z, y, x)")
    sigma = float(sigma)
    check_positive(sigma, "sigma")
    m = None if mask is None else _as_bool_mask(mask, x_np.shape)
    dr = (
        _default_data_range(_select(ref_np, m), m is not None)
        if data_range is None
        else _check_data_range(data_range)
    )

    radius = int(SSIM_TRUNCATE * sigma + 0.5)
    if crop_border and any(n < 2 * radius + 1 for n in x_np.shape):
        raise ValueError(
            f"ssim with crop_border=True needs every axis to be at least {2 * radius + 1} "
            f"(the Gaussian window for sigma={sigma}), got shape={x_np.shape}. "
            "Use crop_border=False or a smaller sigma."
        )

    smap = _ssim_map(x_np, ref_np, dr, sigma, whole=not crop_border)
    region = np.ones(x_np.shape, dtype=bool) if m is None else m.copy()
    if crop_border and radius > 0:
        interior = np.zeros_like(region)
        interior[tuple(slice(radius, n - radius) for n in x_np.shape)] = True
        region &= interior
        if not region.any():
            raise ValueError(
                f"mask selects no voxel at least {radius} px away from the border "
                f"(shape={x_np.shape}); use crop_border=False to include border voxels."
            )
    return float(np.mean(smap[region], dtype=np.float64))


def pearson_correlation(x: Any, reference: Any, *, mask: Any = None) -> float:
    """Pearson correlation coefficient (mean-subtracted) between ``x`` and ``reference``.

    ``sum((x - mean x)(r - mean r)) / sqrt(sum((x - mean x)^2) sum((r - mean r)^2))``,
    invariant to affine rescaling ``a x + b`` with ``a > 0`` (sign flips for ``a < 0``).

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (...)
        Inputs of identical shape.
    mask : bool array, same shape, optional
        Use only ``True`` voxels (means are taken over the mask).

    Returns
    -------
    float
        Correlation in ``[-1, 1]``; ``nan`` if either input is constant (zero variance).
    """
    x_np, ref_np = _prepare_pair(x, reference)
    m = None if mask is None else _as_bool_mask(mask, x_np.shape)
    xs = _select(x_np, m).ravel()
    rs = _select(ref_np, m).ravel()
    if xs.max() == xs.min() or rs.max() == rs.min():
        # Checked exactly: mean subtraction of a constant leaves rounding noise, not zeros.
        logger.warning("pearson_correlation is undefined for a constant input; returning nan")
        return math.nan
    xs = xs - xs.mean()
    rs = rs - rs.mean()
    return _normalised_dot(xs, rs, "pearson_correlation")


def normalized_cross_correlation(x: Any, reference: Any, *, mask: Any = None) -> float:
    """Uncentred normalised cross-correlation ``sum(x r) / sqrt(sum(x^2) sum(r^2))``.

    No mean is subtracted (the definition used, e.g., in the CRM paper), so a constant
    offset changes the value; invariant to positive scaling of either input.

    Parameters
    ----------
    x, reference : array_like or torch.Tensor, shape (...)
        Inputs of identical shape.
    mask : bool array, same shape, optional
        Use only ``True`` voxels.

    Returns
    -------
    float
        Value in ``[-1, 1]``; ``nan`` if either input is all zeros.
    """
    x_np, ref_np = _prepare_pair(x, reference)
    m = None if mask is None else _as_bool_mask(mask, x_np.shape)
    return _normalised_dot(
        _select(x_np, m).ravel(), _select(ref_np, m).ravel(), "normalized_cross_correlation"
    )


def _normalised_dot(a: np.ndarray, b: np.ndarray, what: str) -> float:
    # Normalise first so that the products cannot overflow for huge values.
    na = float(np.linalg.norm(a))
    nb = float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        logger.warning("%s is undefined for an all-zero input; returning nan", what)
        return math.nan
    value = float(np.dot(a / na, b / nb))
    return min(1.0, max(-1.0, value))
