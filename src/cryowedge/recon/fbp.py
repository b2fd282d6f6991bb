"""Filtered and weighted back-projection (FBP / WBP) for single-axis tilt series.

``fbp`` filters each aligned projection along the axis perpendicular to the tilt axis with
a ramp × window (or SIRT-like) filter, weights each tilt by its angular interval ``Δθ``
(radians; uneven schemes are handled) and back-projects with the exact adjoint of
:class:`~cryowedge.operators.TiltProjector`. ``wbp`` replaces ramp × ``Δθ`` by the exact
(Radermacher) weighting, which adapts to the tilt density and the object thickness.
Continuous model: ``f(x) = ∫ (p_θ * h)(x·n_θ) dθ`` with ``ĥ(ν) = |ν|`` (cycles/px), so a
volume comes back in its own units. Conventions: docs/conventions.md.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cryowedge._validation import check_choice, check_tilt_series
from cryowedge.geometry.tilt import TiltGeometry, angular_weights_rad
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.filters import (
    exact_weighting,
    fbp_filter,
    normalise_filter_name,
    normalise_wbp_filter_name,
    padded_length,
    preset_radial_cutoff,
    radial_weighting,
    window,
)

__all__ = ["fbp", "wbp", "filter_projections", "as_tensor", "check_tilt_series"]

logger = logging.getLogger(__name__)

PADDING_MODES = ("zero", "edge")


def as_tensor(
    array: Any, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``array`` (NumPy or torch) as a floating tensor on ``device`` (default: where it is)."""
    if isinstance(array, torch.Tensor):
        t = array
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(array)))
    if not t.dtype.is_floating_point or t.dtype not in (torch.float32, torch.float64):
        t = t.to(dtype)
    if device is not None:
        t = t.to(device)
    return t


def _pad(x: torch.Tensor, n_pad: int, mode: str) -> torch.Tensor:
    n = x.shape[-1]
    if mode == "zero":
        return torch.nn.functional.pad(x, (0, n_pad - n))
    # Edge padding split on both sides reduces truncation artefacts of laterally
    # extended specimens (the usual case in tomography).
    left = (n_pad - n) // 2
    right = n_pad - n - left
    flat = x.reshape(-1, 1, n)
    padded = torch.nn.functional.pad(flat, (left, right), mode="replicate")
    return padded.reshape(*x.shape[:-1], n_pad)


def filter_projections(
    aligned: torch.Tensor, response: torch.Tensor | np.ndarray, n_pad: int, padding: str = "zero"
) -> torch.Tensor:
    """Filter ``(..., n_tilts, n_axis, n_perp)`` along the last axis with an rfft response.

    ``response`` is ``(n_pad // 2 + 1,)`` (same for every tilt) or
    ``(n_tilts, n_pad // 2 + 1)`` (per tilt, as in WBP).
    """
    padding = check_choice(padding, "padding", PADDING_MODES)
    n = aligned.shape[-1]
    resp = torch.as_tensor(np.asarray(response), dtype=aligned.dtype, device=aligned.device)
    if resp.ndim == 2:
        resp = resp[:, None, :]  # (n_tilts, 1, n_freq) broadcasts over the tilt axis
    left = 0 if padding == "zero" else (n_pad - n) // 2
    spec = torch.fft.rfft(_pad(aligned, n_pad, padding), dim=-1)
    out = torch.fft.irfft(spec * resp, n=n_pad, dim=-1)
    return out[..., left : left + n].contiguous()


def _reconstruct(
    tilt_series: Any,
    geometry: TiltGeometry,
    *,
    method: str,
    volume_shape: tuple[int, int, int] | None,
    filter_name: str,
    cutoff: float,
    sirt_iterations: int,
    radial_cutoff: float | None,
    radial_falloff: float,
    padding: str,
    device: torch.device | str | None,
    projector: TiltProjector | None,
) -> torch.Tensor:
    check_tilt_series(tilt_series, geometry)
    if method == "fbp":
        name = normalise_filter_name(filter_name)
    else:
        name = normalise_wbp_filter_name(filter_name)
    padding = check_choice(padding, "padding", PADDING_MODES)
    proj = projector if projector is not None else TiltProjector(geometry, volume_shape)
    data = as_tensor(tilt_series, device=device)
    aligned = proj.to_aligned(data)
    n_perp = proj.aligned_shape[-1]
    if method == "fbp" or name == "none":  # "none": plain Δθ-weighted back-projection for both
        n_pad, response = fbp_filter(
            n_perp,
            name,
            cutoff=cutoff,
            sirt_iterations=sirt_iterations,
            radial_cutoff=radial_cutoff,
            radial_falloff=radial_falloff,
        )
        weights = angular_weights_rad(geometry.tilt_angles_deg)
        per_tilt = weights[:, None] * response[None, :]
    else:
        n_pad = padded_length(n_perp)
        freq = np.fft.rfftfreq(n_pad)
        thickness = proj.domain_shape[0]
        per_tilt = exact_weighting(geometry.tilt_angles_deg, freq, thickness)
        per_tilt = per_tilt * window(name, freq, cutoff)[None, :]
        radial_cutoff = preset_radial_cutoff(name, radial_cutoff)
        if radial_cutoff is not None:
            per_tilt = per_tilt * radial_weighting(freq, radial_cutoff, radial_falloff)[None, :]
    logger.debug("%s: %d tilts, filter %s, padded length %d", method, geometry.n_tilts, name, n_pad)
    filtered = filter_projections(aligned, per_tilt, n_pad, padding)
    return proj.adjoint_aligned(filtered)


def fbp(
    tilt_series: Any,
    geometry: TiltGeometry,
    *,
    volume_shape: tuple[int, int, int] | None = None,
    filter_name: str = "ram-lak",
    cutoff: float = 1.0,
    sirt_iterations: int = 10,
    radial_cutoff: float | None = None,
    radial_falloff: float = 0.035,
    padding: str = "edge",
    device: torch.device | str | None = None,
    projector: TiltProjector | None = None,
) -> torch.Tensor:
    """Filtered back-projection of a single-axis tilt series.

    Parameters
    ----------
    tilt_series
        ``(n_tilts, ny, nx)`` (or batched ``(b, n_tilts, ny, nx)``) raw images, NumPy or torch.
    geometry
        Its :class:`TiltGeometry` (angles in degrees, tilt-axis angle, shifts).
    volume_shape
        ``(nz, ny, nx)`` output; default thickness = detector width perpendicular to the axis.
    filter_name
        ``"ram-lak"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``, ``"hann"``, ``"sirt"``
        (SIRT-like, see :func:`~cryowedge.recon.filters.sirt_like_factor`) or ``"none"``.
    cutoff
        Window cutoff as a fraction of Nyquist, (0, 1].
    sirt_iterations
        Iterations mimicked by the ``"sirt"`` filter.
    radial_cutoff, radial_falloff
        Optional IMOD-style radial low-pass in cycles/px (flat to the cutoff, Gaussian fall-off).
    padding
        ``"edge"`` (default; fewer truncation artefacts for slabs) or ``"zero"``.
    device
        Where to compute (default: the input's device).
    projector
        Re-use an existing projector (its matrices are cached).

    Returns
    -------
    torch.Tensor
        ``(nz, ny, nx)`` (or ``(b, nz, ny, nx)``) volume, same units as the specimen.
    """
    return _reconstruct(
        tilt_series,
        geometry,
        method="fbp",
        volume_shape=volume_shape,
        filter_name=filter_name,
        cutoff=cutoff,
        sirt_iterations=sirt_iterations,
        radial_cutoff=radial_cutoff,
        radial_falloff=radial_falloff,
        padding=padding,
        device=device,
        projector=projector,
    )


def wbp(
    tilt_series: Any,
    geometry: TiltGeometry,
    *,
    volume_shape: tuple[int, int, int] | None = None,
    filter_name: str = "ram-lak",
    cutoff: float = 1.0,
    radial_cutoff: float | None = None,
    radial_falloff: float = 0.035,
    padding: str = "edge",
    device: torch.device | str | None = None,
    projector: TiltProjector | None = None,
) -> torch.Tensor:
    """Weighted back-projection with exact (tilt-density, thickness-aware) weighting.

    Same inputs and output as :func:`fbp`; the ramp × ``Δθ`` of FBP is replaced by
    :func:`~cryowedge.recon.filters.exact_weighting` with ``D`` = the volume thickness
    ``nz``, times the window that ``filter_name`` names (and the optional radial low-pass).

    ``filter_name`` is one of :data:`~cryowedge.recon.filters.WBP_FILTER_NAMES`:
    ``"ram-lak"`` (default: the exact weighting, no window), ``"shepp-logan"``,
    ``"cosine"``, ``"hamming"``, ``"hann"``, or ``"none"``, which, as in :func:`fbp`, means
    no filter at all: plain back-projection weighted by ``Δθ`` (identical to
    ``fbp(..., filter_name="none")``). ``"sirt"`` is refused with a ``ValueError``: the
    SIRT-like filter reshapes the FBP ramp, which WBP does not use.
    """
    return _reconstruct(
        tilt_series,
        geometry,
        method="wbp",
        volume_shape=volume_shape,
        filter_name=filter_name,
        cutoff=cutoff,
        sirt_iterations=1,
        radial_cutoff=radial_cutoff,
        radial_falloff=radial_falloff,
        padding=padding,
        device=device,
        projector=projector,
    )
