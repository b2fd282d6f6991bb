"""The region of a reconstruction: a box of the full tomogram, a z offset, an X-axis tilt.

IMOD's ``tilt`` reconstructs a sub-area (``SLICE``, ``WIDTH``, ``SHIFT``) and a specimen
tilted about ``X`` (``XAXISTILT``, ``XTILTFILE``). :class:`ReconstructionRegion` holds the
same three things; :func:`plan_region` turns one into a :class:`RegionPlan`: the volume to
reconstruct in the *lab* frame (the frame of the tilt series), the detector rows it needs,
how it moves the projector's per-view shifts, and, with an X-axis tilt, where each output
voxel samples the lab volume. Pure NumPy on :class:`~cryowedge.geometry.tilt.TiltGeometry`;
the workflow that applies a plan to data is :mod:`cryowedge.workflows.region`.

Coordinates (docs/conventions.md, "Regions"): the *full tomogram* is what the same command
writes without a region, ``(nz, n_axis, n_perp)`` voxels on the aligned (and binned)
detector grid. Centred coordinates ``(z, y, x)`` count voxels from its centre voxel
``N // 2``, with ``z = 0`` on the tilt axis.

* ``roi = (x0, y0, nx, ny)``: columns ``x0 … x0 + nx − 1`` and rows ``y0 … y0 + ny − 1``
  of the full tomogram (0-based). Output voxel ``[k, j, i]`` is full-tomogram voxel
  ``[k, y0 + j, x0 + i]``.
* ``z_offset`` (voxels): the output's centre section lies ``z_offset`` above the tilt axis
  (``+z``, towards the electron source). IMOD's ``SHIFT`` ``z`` value, same sign.
* ``x_axis_tilt_deg``: IMOD's ``XAXISTILT``, same sign. The output frame is the lab frame
  turned about ``x``: output point ``(y, z)`` is lab point
  ``(y cos α + z sin α, −y sin α + z cos α)``, so a specimen lying in the lab plane
  ``z = −y tan α`` comes out flat. A per-view ``.xtilt`` file adds ``−mean(values)``
  (:func:`x_axis_tilt_from_xtilt`), as ``tilt`` does.

Without an X-axis tilt the lab volume *is* the output box and nothing is resampled: a ROI
of an FBP equals the crop of the full FBP, voxel for voxel. With one, the lab volume is the
bounding box of the tilted output box (``≈ nz cos α + ny |sin α|`` sections) and each
output voxel is a bilinear sample of it in the ``(y, z)`` plane (the one extra
interpolation; IMOD's default ``XTILTINTERP 1`` does the same, from its vertical slices).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryowedge.geometry.tilt import TiltGeometry

__all__ = [
    "MAX_X_AXIS_TILT_DEG",
    "ReconstructionRegion",
    "RegionPlan",
    "check_roi",
    "is_aligned",
    "plan_region",
    "x_axis_tilt_from_xtilt",
]

logger = logging.getLogger(__name__)

#: Largest accepted |X-axis tilt| (degrees). Real values are a few degrees; more means a
#: wrong sign, radians, or a tilt angle given in the wrong place.
MAX_X_AXIS_TILT_DEG = 30.0
#: Per-view ``.xtilt`` values that differ by more than this (degrees) get a warning: the
#: region applies one tilt, their mean.
XTILT_SPREAD_WARN_DEG = 0.05


def _whole(value: Any) -> int | None:
    try:
        as_int = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return as_int if as_int == value and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ReconstructionRegion:
    """Which part of the full tomogram to reconstruct, and in which frame.

    Parameters
    ----------
    roi
        ``(x0, y0, nx, ny)`` in voxels of the full tomogram (0-based start column and row,
        width and height; ``y`` is the tilt axis), or None for all of it.
    z_offset
        Height of the output's centre section above the tilt axis, voxels (IMOD ``SHIFT`` z).
    x_axis_tilt_deg
        Rotation of the output frame about ``x``, degrees (IMOD ``XAXISTILT``), at most
        :data:`MAX_X_AXIS_TILT_DEG` in magnitude.
    """

    roi: tuple[int, int, int, int] | None = None
    z_offset: float = 0.0
    x_axis_tilt_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.roi is not None:
            values = tuple(self.roi) if np.ndim(self.roi) == 1 else ()
            ints = [_whole(v) for v in values]
            if len(ints) != 4 or any(v is None for v in ints):
                raise ValueError(
                    f"roi must be four whole numbers X0 Y0 NX NY (start column, start row, width, "
                    f"height in voxels), got {self.roi!r}."
                )
            x0, y0, nx, ny = (int(v) for v in ints)  # type: ignore[arg-type]
            if x0 < 0 or y0 < 0 or nx < 1 or ny < 1:
                raise ValueError(
                    f"roi X0 Y0 NX NY = {x0} {y0} {nx} {ny}: the start must be >= 0 and the "
                    "sizes >= 1 (0-based voxels of the full tomogram)."
                )
            object.__setattr__(self, "roi", (x0, y0, nx, ny))
        for name in ("z_offset", "x_axis_tilt_deg"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}.")
            object.__setattr__(self, name, value + 0.0)
        if abs(self.x_axis_tilt_deg) > MAX_X_AXIS_TILT_DEG:
            raise ValueError(
                f"X-axis tilt {self.x_axis_tilt_deg:g}° is beyond ±{MAX_X_AXIS_TILT_DEG:g}°; it is "
                "the specimen's small tilt about X in degrees (IMOD XAXISTILT), not a tilt angle."
            )

    @property
    def is_full(self) -> bool:
        """True when the region is the full tomogram in the lab frame (nothing to do)."""
        return self.roi is None and self.z_offset == 0.0 and self.x_axis_tilt_deg == 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python description (for run records)."""
        return {
            "roi": None if self.roi is None else list(self.roi),
            "z_offset": self.z_offset,
            "x_axis_tilt_deg": self.x_axis_tilt_deg,
        }


def x_axis_tilt_from_xtilt(xtilt_deg: np.ndarray, x_axis_tilt_deg: float = 0.0) -> float:
    """The one X-axis tilt (IMOD ``XAXISTILT`` sign) of ``x_axis_tilt_deg`` plus a ``.xtilt`` file.

    ``tilt`` reads the file's per-view values ``a`` and uses ``a − XAXISTILT`` as the angle it
    rotates by the negative of (``tilt.f90``: ``alpha(iv) = alpha(iv) − globalpha``, then
    ``sinAlpha = −sin(alpha)``), so a file value ``a`` acts as ``XAXISTILT = −a``. The region
    applies one tilt to all views: ``x_axis_tilt_deg − mean(a)``, with a warning when the
    values differ by more than :data:`XTILT_SPREAD_WARN_DEG` (``tilt`` would then tilt each
    view on its own, ``(n_views,)`` degrees).
    """
    values = np.asarray(xtilt_deg, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("the .xtilt file has no values; it needs one X-axis tilt per view.")
    spread = float(values.max() - values.min())
    if spread > XTILT_SPREAD_WARN_DEG:
        logger.warning(
            "the .xtilt values differ by up to %.3f deg between views; using their mean %.3f deg "
            "(cryowedge applies one X-axis tilt to all views)",
            spread,
            float(values.mean()),
        )
    return float(x_axis_tilt_deg) - float(values.mean())


def check_roi(
    roi: tuple[int, int, int, int], full_shape_yx: tuple[int, int], what: str = "--roi"
) -> None:
    """ValueError unless ``roi = (x0, y0, nx, ny)`` lies inside the ``(ny, nx)`` full tomogram.

    ``full_shape_yx`` is the aligned (binned) detector ``(n_axis, n_perp)``; the message names
    it and the valid ranges.
    """
    x0, y0, nx, ny = roi
    n_axis, n_perp = (int(s) for s in full_shape_yx)
    if x0 + nx <= n_perp and y0 + ny <= n_axis:
        return
    raise ValueError(
        f"{what} {x0} {y0} {nx} {ny} reaches column {x0 + nx - 1} and row {y0 + ny - 1}, outside "
        f"the {n_perp} × {n_axis} (x × y) tomogram of these images (aligned, after any --bin): "
        f"X0 + NX must be <= {n_perp} and Y0 + NY <= {n_axis} (0-based voxels)."
    )


def _aligned_perp_shifts(geometry: TiltGeometry) -> np.ndarray:
    """``(n_tilts,)`` shift across the tilt axis in the aligned frame, pixels."""
    if geometry.shifts_px is None:
        return np.zeros(geometry.n_tilts)
    to_aligned = np.linalg.inv(geometry.aligned_to_raw_matrices())  # (n, 2, 2) on (y, x)
    return np.einsum("nij,nj->ni", to_aligned, geometry.shifts_px)[:, 1]


def is_aligned(geometry: TiltGeometry) -> bool:
    """True when raw and aligned frame coincide: tilt axis ``+Y``, no view matrices, no
    shift along the axis (the condition under which detector rows can simply be selected)."""
    if geometry.tilt_axis_angle_deg != 0.0 or geometry.view_matrices is not None:
        return False
    return geometry.shifts_px is None or not np.any(geometry.shifts_px[:, 0] != 0)


@dataclass(frozen=True)
class RegionPlan:
    """What to reconstruct for a region, and how to get the output from it.

    Attributes
    ----------
    region
        The :class:`ReconstructionRegion` planned.
    full_shape
        ``(nz, n_axis, n_perp)`` of the full tomogram (voxels).
    output_shape
        ``(nz, ny, nx)`` of the output volume.
    lab_shape
        ``(nz_lab, ny_lab, nx)`` of the volume reconstructed in the lab frame; equal to
        ``output_shape`` without an X-axis tilt.
    lab_rows
        ``(ya, yb)``: the aligned detector rows ``ya:yb`` the lab volume needs (its ``y``).
    lab_centre_zx
        Centred ``(z, x)`` position (voxels) of the lab volume's centre voxel ``N // 2``.
    """

    region: ReconstructionRegion
    full_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    lab_shape: tuple[int, int, int]
    lab_rows: tuple[int, int]
    lab_centre_zx: tuple[float, float]

    @property
    def rotates(self) -> bool:
        """True when the output is resampled from the lab volume (an X-axis tilt)."""
        return self.region.x_axis_tilt_deg != 0.0

    @property
    def output_start(self) -> tuple[float, float, int]:
        """``(z, y, x)`` index of the output's first voxel in the full tomogram's grid:
        ``(z_offset, y0, x0)`` (``z_offset`` need not be whole)."""
        x0, y0 = (0, 0) if self.region.roi is None else self.region.roi[:2]
        return (self.region.z_offset, y0, x0)

    def origin_angstrom(self, voxel_size_angstrom: float) -> tuple[float, float, float]:
        """``(z, y, x)`` MRC header origin (Å) that places the output in the full tomogram.

        IMOD's convention (``tilt`` with ``AdjustOrigin``, ``trimvol``): a voxel's coordinate
        is ``index · voxel size − origin``, so a box starting at full-tomogram voxel ``s``
        has origin ``−s · voxel size`` and 3dmod overlays it on the full tomogram (whose
        origin is 0).
        """
        return tuple(
            -float(s) * float(voxel_size_angstrom) + 0.0  # type: ignore[return-value]
            for s in self.output_start
        )

    # ------------------------------------------------------------------ geometry
    def lab_geometry(self, geometry: TiltGeometry) -> TiltGeometry:
        """The geometry that reconstructs the lab volume from ``geometry``'s data.

        Per view, the lab volume's centre projects ``Δu = x_c cos θ + z_c sin θ`` pixels across
        the axis from the full tomogram's centre; that is added to the shifts (through the
        view's aligned → raw matrix, so raw geometries keep their single detector warp).
        When the lab volume needs only some rows, ``geometry`` must be aligned
        (:func:`is_aligned`) and its data cut to rows ``lab_rows``: the result then has
        detector ``(yb − ya, nx)``.

        Raises
        ------
        ValueError
            Rows are cut but ``geometry`` is not aligned (resample it first), or its aligned
            detector is not the one planned.
        """
        n_axis, n_perp = geometry.aligned_detector_shape
        if (n_axis, n_perp) != tuple(self.full_shape[1:]):
            raise ValueError(
                f"the region was planned for a {self.full_shape[2]} × {self.full_shape[1]} (x × y) "
                f"aligned detector, this geometry has {n_perp} × {n_axis}."
            )
        zc, xc = self.lab_centre_zx
        theta = geometry.tilt_angles_rad
        du = xc * np.cos(theta) + zc * np.sin(theta)  # (n_tilts,) aligned pixels
        shift = np.einsum(
            "nij,nj->ni",
            geometry.aligned_to_raw_matrices(),
            np.stack([np.zeros_like(du), du], axis=1),
        )
        shifts = shift if geometry.shifts_px is None else geometry.shifts_px + shift
        ya, yb = self.lab_rows
        if (ya, yb) == (0, n_axis):
            return geometry.with_(shifts_px=shifts)
        if not is_aligned(geometry):
            raise ValueError(
                f"rows {ya}:{yb} of a raw geometry (tilt axis {geometry.tilt_axis_angle_deg}°, "
                "view matrices or shifts along the axis) cannot be cut; resample the series "
                "into the aligned frame first."
            )
        return geometry.with_(
            detector_shape=(yb - ya, geometry.detector_shape[1]), shifts_px=shifts
        )

    # ------------------------------------------------------------------ X-axis tilt
    def sample_positions(self, j0: int = 0, j1: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Where output rows ``j0:j1`` sample the lab volume: ``(kz, jy)`` float64 indices.

        Both are ``(nz, j1 − j0)``: output voxel ``[k, j0 + m, i]`` is the lab volume at
        section ``kz[k, m]``, row ``jy[k, m]``, column ``i`` (bilinear in ``(kz, jy)``).
        Without an X-axis tilt these are whole numbers (the identity up to the offsets).
        """
        nz, ny, _ = self.output_shape
        j1 = ny if j1 is None else int(j1)
        alpha = np.deg2rad(self.region.x_axis_tilt_deg)
        x0, y0 = (0, 0) if self.region.roi is None else self.region.roi[:2]
        n_axis = self.full_shape[1]
        z = (np.arange(nz) - nz // 2 + self.region.z_offset)[:, None]  # centred output z
        y = (np.arange(j0, j1) + y0 - n_axis // 2)[None, :]  # centred output y
        z_lab = -y * np.sin(alpha) + z * np.cos(alpha)
        y_lab = y * np.cos(alpha) + z * np.sin(alpha)
        nz_lab = self.lab_shape[0]
        kz = z_lab - self.lab_centre_zx[0] + nz_lab // 2
        jy = y_lab + n_axis // 2 - self.lab_rows[0]
        return np.broadcast_to(kz, (nz, j1 - j0)).copy(), np.broadcast_to(jy, (nz, j1 - j0)).copy()

    def lab_rows_for(self, j0: int, j1: int) -> tuple[int, int]:
        """Lab-volume rows ``la:lb`` that output rows ``j0:j1`` sample (clipped to the volume)."""
        _, jy = self.sample_positions(j0, j1)
        la = max(0, int(np.floor(jy.min())) - 1)
        lb = min(self.lab_shape[1], int(np.ceil(jy.max())) + 2)
        return la, max(lb, la + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python description (for run records)."""
        return {
            **self.region.to_dict(),
            "output_shape": list(self.output_shape),
            "lab_shape": list(self.lab_shape),
            "lab_rows": list(self.lab_rows),
            "output_start_zyx": [float(s) for s in self.output_start],
        }


def plan_region(
    geometry: TiltGeometry, region: ReconstructionRegion, full_shape: tuple[int, int, int]
) -> RegionPlan:
    """The :class:`RegionPlan` of ``region`` on ``geometry`` for a full tomogram ``full_shape``.

    Parameters
    ----------
    geometry
        The tilt geometry (raw or aligned; only its aligned frame, angles and shifts are used).
    region
        What to reconstruct.
    full_shape
        ``(nz, n_axis, n_perp)``: the full tomogram the same run would write without a region
        (its ``nz`` is the output thickness).

    Raises
    ------
    ValueError
        One line, before any work: the ROI lies outside the full tomogram (:func:`check_roi`),
        or the z offset moves the volume off the data (some view sees none of it; the
        message gives the z offsets that work).
    """
    nz, n_axis, n_perp = (int(s) for s in full_shape)
    if (n_axis, n_perp) != tuple(geometry.aligned_detector_shape):
        raise ValueError(
            f"full_shape {tuple(full_shape)} does not match the aligned detector "
            f"{geometry.aligned_detector_shape} (y must be {geometry.aligned_detector_shape[0]}, "
            f"x {geometry.aligned_detector_shape[1]})."
        )
    roi = region.roi if region.roi is not None else (0, 0, n_perp, n_axis)
    check_roi(roi, (n_axis, n_perp))
    x0, y0, nx, ny = roi
    xc = x0 + nx // 2 - n_perp // 2  # centred x of the output's centre column
    _check_on_data(geometry, region, nz, nx, xc, n_perp)
    output_shape = (nz, ny, nx)
    if region.x_axis_tilt_deg == 0.0:
        return RegionPlan(
            region,
            (nz, n_axis, n_perp),
            output_shape,
            output_shape,
            (y0, y0 + ny),
            (region.z_offset, float(xc)),
        )
    # Bounding box, in the lab frame, of the tilted output box (corners ± 1 for bilinear taps).
    alpha = np.deg2rad(region.x_axis_tilt_deg)
    zs = np.array([-(nz // 2), nz - 1 - nz // 2]) + region.z_offset
    ys = np.array([y0, y0 + ny - 1]) - n_axis // 2
    z_lab = (-ys[None, :] * np.sin(alpha) + zs[:, None] * np.cos(alpha)).ravel()
    y_lab = (ys[None, :] * np.cos(alpha) + zs[:, None] * np.sin(alpha)).ravel()
    z_lo, z_hi = int(np.floor(z_lab.min())) - 1, int(np.ceil(z_lab.max())) + 1
    nz_lab = z_hi - z_lo + 1
    ya = max(0, int(np.floor(y_lab.min())) - 1 + n_axis // 2)
    yb = min(n_axis, int(np.ceil(y_lab.max())) + 2 + n_axis // 2)
    if yb <= ya:  # the whole box samples outside the detector rows: keep one row
        ya, yb = min(ya, n_axis - 1), min(ya, n_axis - 1) + 1
    return RegionPlan(
        region,
        (nz, n_axis, n_perp),
        output_shape,
        (nz_lab, yb - ya, nx),
        (ya, yb),
        (float(z_lo + nz_lab // 2), float(xc)),
    )


def _check_on_data(
    geometry: TiltGeometry, region: ReconstructionRegion, nz: int, nx: int, xc: float, n_perp: int
) -> None:
    """ValueError when some view sees no voxel of the output box (it is off the data there).

    A box of half-widths ``(h_z, h_x)`` centred at ``(z_offset, x_c)`` covers, at tilt ``θ``,
    detector columns ``x_c cos θ + z_offset sin θ + s ± (h_x |cos θ| + h_z |sin θ|)``
    (``s`` the view's shift across the axis); a view whose column range misses the detector
    (± one column for the linear interpolation) contributes nothing.
    """
    theta = geometry.tilt_angles_rad
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    s = _aligned_perp_shifts(geometry)
    h = (nx - 1) / 2 * np.abs(cos_t) + (nz - 1) / 2 * np.abs(sin_t)
    x_mid = xc - nx // 2 + (nx - 1) / 2  # centre of the x range (½ px off xc for even nx)
    z_mid = region.z_offset - nz // 2 + (nz - 1) / 2
    lo, hi = -(n_perp // 2) - 1.0, n_perp - 1 - n_perp // 2 + 1.0
    base = x_mid * cos_t + s
    centre = base + z_mid * sin_t
    missed = (centre - h > hi) | (centre + h < lo)
    if not missed.any():
        return
    t = int(np.argmax(missed))
    # z offsets for which every view sees part of the box: lo - h <= base + z_mid sin θ <= hi + h
    d_lo, d_hi = -np.inf, np.inf
    shift = z_mid - region.z_offset
    for b, hh, sn in zip(base, h, sin_t, strict=True):
        if abs(sn) < 1e-12:
            continue
        a, c = (lo - hh - b) / sn - shift, (hi + hh - b) / sn - shift
        d_lo, d_hi = max(d_lo, min(a, c)), min(d_hi, max(a, c))
    raise ValueError(
        f"z offset {region.z_offset:g} voxels moves the {nz}-section volume off the data: at tilt "
        f"{geometry.tilt_angles_deg[t]:g}° none of it projects onto the {n_perp}-pixel-wide "
        f"detector; use a z offset between {math.ceil(d_lo)} and {math.floor(d_hi)} voxels."
    )
