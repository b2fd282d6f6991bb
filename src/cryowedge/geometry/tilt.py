"""Single-axis tilt-series geometry.

:class:`TiltGeometry` is an immutable value: tilt angles (degrees), the raw detector
shape, pixel size (Å), the in-plane tilt-axis angle (degrees), optional per-tilt
shifts (pixels) and optional per-tilt in-plane matrices (residual rotation, magnification).
It knows nothing about projectors; operators are built *from* it.
Conventions (angle sign, centre pixel, axis directions) are in docs/conventions.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TiltGeometry", "angular_weights_rad", "rotation_yx"]

#: A tilt-axis angle this close to a multiple of 90° (degrees) is taken as that quarter turn
#: (an exact permutation of the detector); two geometries are equal only if their axis
#: angles differ by at most ``_AXIS_EQUAL_DEG``, less than the snap, so equal geometries
#: always have the same aligned detector.
_QUARTER_SNAP_DEG = 1e-6
_AXIS_EQUAL_DEG = 1e-7
#: Per-view matrices this close (max abs entry difference) to the identity count as none.
_IDENTITY_TOL = 1e-10


def rotation_yx(angle_deg: float | np.ndarray) -> np.ndarray:
    """``(..., 2, 2)`` counter-clockwise rotation by ``angle_deg`` acting on ``(y, x)`` vectors.

    ``x`` right, ``y`` up (as 3dmod shows an image): ``R·(y, x) = (x sin a + y cos a,
    x cos a − y sin a)``. Quarter turns are exact (0/±1 entries).
    """
    a = np.asarray(angle_deg, dtype=np.float64)
    quarter = np.round(a / 90.0)
    exact = np.abs(a - 90.0 * quarter) < _QUARTER_SNAP_DEG
    k = np.mod(quarter, 4).astype(np.int64)
    cos_q = np.choose(k, [1.0, 0.0, -1.0, 0.0])
    sin_q = np.choose(k, [0.0, 1.0, 0.0, -1.0])
    c = np.where(exact, cos_q, np.cos(np.deg2rad(a)))
    s = np.where(exact, sin_q, np.sin(np.deg2rad(a)))
    return np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)


def _as_angles(values: Any) -> np.ndarray:
    angles = np.asarray(values, dtype=np.float64)
    if angles.ndim != 1 or angles.size == 0:
        raise ValueError(
            f"tilt_angles_deg must be a non-empty 1D sequence of degrees, got shape {angles.shape}."
        )
    bad = ~np.isfinite(angles)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"tilt_angles_deg[{i}] = {angles[i]} is not finite; remove that tilt.")
    out_of_range = np.abs(angles) > 90.0
    if out_of_range.any():
        i = int(np.argmax(out_of_range))
        raise ValueError(
            f"tilt_angles_deg[{i}] = {angles[i]} lies outside [-90, 90] degrees; "
            "single-axis tilt angles are in degrees (did you pass radians, or an offset angle?)."
        )
    uniq, counts = np.unique(np.round(angles, 6), return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        idx = [int(i) for i in np.flatnonzero(np.isin(np.round(angles, 6), dup))]
        raise ValueError(
            f"duplicate tilt angle(s) {dup.tolist()} at indices {idx}; every tilt must be unique "
            "(drop or average repeated exposures first)."
        )
    return angles


@dataclass(frozen=True, eq=False)
class TiltGeometry:
    """Geometry of a single-axis tilt series.

    Parameters
    ----------
    tilt_angles_deg
        ``(n_tilts,)`` tilt angles in degrees, in stack order. Unique, within [-90, 90].
    detector_shape
        ``(ny, nx)`` shape of one raw image in pixels.
    pixel_size_angstrom
        Detector pixel size in Å (= voxel size of the reconstruction).
    tilt_axis_angle_deg
        In-plane angle of the tilt axis on the raw image, degrees counter-clockwise from the
        image ``+Y`` axis (0 for aligned IMOD stacks; 90 for an axis along ``X``).
    shifts_px
        Optional ``(n_tilts, 2)`` per-tilt ``(dy, dx)`` shifts in raw-detector pixels: the
        projection of the volume centre lands at ``(ny//2 + dy, nx//2 + dx)``.
    view_matrices
        Optional ``(n_tilts, 2, 2)`` per-tilt in-plane matrices ``V_t`` acting on centred
        ``(y, x)`` pixel vectors, applied before the tilt-axis rotation ``R(φ)``: a point at
        ``a`` in the aligned frame lands at ``raw = R(φ)·V_t·a + shift_t`` on the raw image.
        They hold what differs between views (the deviation of each view's rotation from
        ``φ``, magnification, stretch), e.g. from an IMOD ``.xf`` or AreTomo ``.aln``
        (:mod:`cryowedge.io.alignment`). ``None`` (or all identities) means ``V_t = I``.

    Notes
    -----
    Build subsets with indexing: ``geom[::2]`` (even tilts), ``geom[1::2]`` (odd tilts),
    ``geom[mask]``, or :meth:`angle_range`. See docs/conventions.md.
    """

    tilt_angles_deg: np.ndarray
    detector_shape: tuple[int, int]
    pixel_size_angstrom: float = 1.0
    tilt_axis_angle_deg: float = 0.0
    shifts_px: np.ndarray | None = field(default=None)
    view_matrices: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        angles = _as_angles(self.tilt_angles_deg)
        angles.setflags(write=False)
        object.__setattr__(self, "tilt_angles_deg", angles)
        shape = tuple(int(s) for s in np.atleast_1d(self.detector_shape))
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(
                f"detector_shape must be (ny, nx) with positive sizes, got {self.detector_shape!r}."
            )
        object.__setattr__(self, "detector_shape", shape)
        px = float(self.pixel_size_angstrom)
        if not np.isfinite(px) or px <= 0:
            raise ValueError(
                f"pixel_size_angstrom must be > 0 (Å), got {self.pixel_size_angstrom!r}."
            )
        object.__setattr__(self, "pixel_size_angstrom", px)
        try:
            axis = float(self.tilt_axis_angle_deg)
        except (TypeError, ValueError):
            axis = float("nan")
        if not np.isfinite(axis):
            raise ValueError(
                f"tilt_axis_angle_deg must be a finite angle in degrees, got "
                f"{self.tilt_axis_angle_deg!r}; take it from the .mdoc ('Tilt axis angle') or "
                "pass 0 for an aligned stack."
            )
        quarter = 90.0 * round(axis / 90.0)
        if abs(axis - quarter) < _QUARTER_SNAP_DEG:  # rounding noise of a quarter turn
            axis = quarter + 0.0  # (+ 0.0 turns -0.0 into 0.0)
        object.__setattr__(self, "tilt_axis_angle_deg", axis)
        if self.shifts_px is not None:
            shifts = np.asarray(self.shifts_px, dtype=np.float64)
            if shifts.shape != (angles.size, 2):
                raise ValueError(
                    f"shifts_px must have shape (n_tilts, 2) = ({angles.size}, 2) as (dy, dx) "
                    f"pixels, got {shifts.shape}."
                )
            if not np.isfinite(shifts).all():
                raise ValueError("shifts_px contains non-finite values.")
            if not shifts.any():
                shifts = None
            else:
                shifts.setflags(write=False)
            object.__setattr__(self, "shifts_px", shifts)
        if self.view_matrices is not None:
            mats = np.array(self.view_matrices, dtype=np.float64)
            if mats.shape != (angles.size, 2, 2):
                raise ValueError(
                    f"view_matrices must have shape (n_tilts, 2, 2) = ({angles.size}, 2, 2) "
                    f"acting on (y, x) pixel vectors, got {mats.shape}."
                )
            if not np.isfinite(mats).all():
                raise ValueError("view_matrices contains non-finite values.")
            det = np.linalg.det(mats)
            if (np.abs(det) < 1e-6).any():
                i = int(np.argmax(np.abs(det) < 1e-6))
                raise ValueError(
                    f"view_matrices[{i}] = {mats[i].tolist()} is singular (determinant "
                    f"{det[i]:.3g}); each view's in-plane transform must be invertible."
                )
            if np.abs(mats - np.eye(2)).max() <= _IDENTITY_TOL:
                mats = None
            else:
                mats.setflags(write=False)
            object.__setattr__(self, "view_matrices", mats)

    # ------------------------------------------------------------------ basics
    @property
    def n_tilts(self) -> int:
        """Number of tilts."""
        return int(self.tilt_angles_deg.size)

    @property
    def tilt_angles_rad(self) -> np.ndarray:
        """``(n_tilts,)`` tilt angles in radians."""
        return np.deg2rad(self.tilt_angles_deg)

    @property
    def tilt_range_deg(self) -> tuple[float, float]:
        """``(min, max)`` tilt angle in degrees."""
        return float(self.tilt_angles_deg.min()), float(self.tilt_angles_deg.max())

    @property
    def tilt_series_shape(self) -> tuple[int, int, int]:
        """``(n_tilts, ny, nx)`` shape of the raw tilt series."""
        return (self.n_tilts, *self.detector_shape)

    @property
    def quarter_turns(self) -> int | None:
        """The tilt-axis angle as a number of 90° turns (0–3), or None if not a multiple of 90°."""
        k = int(round(self.tilt_axis_angle_deg / 90.0))
        return k % 4 if self.tilt_axis_angle_deg == 90.0 * k else None  # snapped on construction

    @property
    def nearest_quarter_turns(self) -> int:
        """The quarter turn (0–3) nearest to the tilt-axis angle: 85.3° → 1, like 90°."""
        return int(round(self.tilt_axis_angle_deg / 90.0)) % 4

    @property
    def tilt_axis_cos_sin(self) -> tuple[float, float]:
        """``(cos φ, sin φ)`` of the tilt-axis angle φ; exactly 0/±1 for quarter turns.

        Aligned → raw is the counter-clockwise rotation ``raw = R(φ)·aligned + shift`` about
        the centre pixels (docs/conventions.md).
        """
        k = self.quarter_turns
        if k is not None:  # exact values, so quarter turns are permutations
            return [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][k]
        rad = np.deg2rad(self.tilt_axis_angle_deg)
        return float(np.cos(rad)), float(np.sin(rad))

    @property
    def aligned_detector_shape(self) -> tuple[int, int]:
        """``(n_axis, n_perp)`` detector shape with the tilt axis along ``Y``.

        For a quarter-turn tilt axis this is :attr:`detector_shape`, with ``ny`` and ``nx``
        swapped for odd turns (an exact permutation about the centre pixels). For any other
        angle (e.g. 85.3° from a SerialEM ``.mdoc``: the axis lies nearest to raw ``X``, so
        ``n_axis`` comes from ``nx``) it is the smallest shape whose pixel grid, centred on
        pixel ``N // 2``, contains every raw pixel centre rotated into the aligned frame, so
        no raw pixel is lost; it is a few pixels larger than the swapped shape. With
        ``view_matrices`` the grid holds the footprint of every view (the largest over views).
        It depends only on the detector shape, the axis angle and the view matrices (not on
        ``shifts_px``).
        """
        ny, nx = self.detector_shape
        k = self.quarter_turns
        if k is not None and self.view_matrices is None:
            return (nx, ny) if k % 2 == 1 else (ny, nx)
        # Centred raw corner coordinates (y, x); the map is linear, so corners bound the footprint.
        ry, rx = np.meshgrid(
            [-(ny // 2), ny - 1 - ny // 2], [-(nx // 2), nx - 1 - nx // 2], indexing="ij"
        )
        corners = np.stack([ry.ravel(), rx.ravel()]).astype(np.float64)  # (2, 4) as (y, x)
        aligned = np.linalg.inv(self.aligned_to_raw_matrices()) @ corners  # (n, 2, 4)
        return (_grid_size_holding(aligned[:, 0]), _grid_size_holding(aligned[:, 1]))

    def aligned_to_raw_matrices(self) -> np.ndarray:
        """``(n_tilts, 2, 2)`` linear part ``R(φ)·V_t`` of the aligned → raw map, on ``(y, x)``.

        ``raw = M_t·aligned + shift_t`` in centred pixels (``c = index − N // 2``); with no
        ``view_matrices`` every ``M_t`` is the tilt-axis rotation (exact for quarter turns).
        """
        cos_p, sin_p = self.tilt_axis_cos_sin
        rot = np.array([[cos_p, sin_p], [-sin_p, cos_p]])
        if self.view_matrices is None:
            return np.broadcast_to(rot, (self.n_tilts, 2, 2)).copy()
        return rot @ self.view_matrices

    def default_volume_shape(self, thickness: int | None = None) -> tuple[int, int, int]:
        """``(z, y, x)`` volume matching the aligned detector; ``thickness`` defaults to ``x``.

        ``thickness`` (voxels) must be a positive integer when given.
        """
        n_axis, n_perp = self.aligned_detector_shape
        if thickness is None:
            return (n_perp, n_axis, n_perp)
        if isinstance(thickness, bool) or int(thickness) != thickness or thickness < 1:
            raise ValueError(
                f"thickness must be a positive whole number of voxels, got {thickness!r}; "
                f"omit it for the default ({n_perp} = detector width across the tilt axis)."
            )
        return (int(thickness), n_axis, n_perp)

    # ------------------------------------------------------------------ subsets
    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> TiltGeometry:
        """Subset of tilts (an int keeps one tilt; boolean masks and index arrays work)."""
        idx = np.arange(self.n_tilts)[index]
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise IndexError(f"tilt selection {index!r} selects no tilts out of {self.n_tilts}.")
        return TiltGeometry(
            tilt_angles_deg=self.tilt_angles_deg[idx],
            detector_shape=self.detector_shape,
            pixel_size_angstrom=self.pixel_size_angstrom,
            tilt_axis_angle_deg=self.tilt_axis_angle_deg,
            shifts_px=None if self.shifts_px is None else self.shifts_px[idx],
            view_matrices=None if self.view_matrices is None else self.view_matrices[idx],
        )

    def angle_range_indices(self, min_deg: float, max_deg: float) -> np.ndarray:
        """Indices of the tilts with ``min_deg <= angle <= max_deg``."""
        if min_deg > max_deg:
            raise ValueError(f"min_deg={min_deg} must not exceed max_deg={max_deg}.")
        sel = np.flatnonzero(
            (self.tilt_angles_deg >= min_deg - 1e-9) & (self.tilt_angles_deg <= max_deg + 1e-9)
        )
        if sel.size == 0:
            raise ValueError(
                f"no tilt lies in [{min_deg}, {max_deg}] degrees; this series covers "
                f"[{self.tilt_range_deg[0]}, {self.tilt_range_deg[1]}]."
            )
        return sel

    def angle_range(self, min_deg: float, max_deg: float) -> TiltGeometry:
        """The sub-series with tilts in ``[min_deg, max_deg]`` degrees."""
        return self[self.angle_range_indices(min_deg, max_deg)]

    def even(self) -> TiltGeometry:
        """Tilts 0, 2, 4, ... in stack order (for even/odd self-supervision)."""
        return self[0::2]

    def odd(self) -> TiltGeometry:
        """Tilts 1, 3, 5, ... in stack order."""
        return self[1::2]

    def sorted(self) -> tuple[TiltGeometry, np.ndarray]:
        """Geometry with ascending angles, and the permutation that sorts the stack."""
        order = np.argsort(self.tilt_angles_deg, kind="stable")
        return self[order], order

    def binned(self, factor: int) -> TiltGeometry:
        """The geometry of the images binned ``factor`` × ``factor``: detector
        ``(ny // f, nx // f)`` (trailing rows/columns dropped), pixel size ``× f`` (Å), shifts
        ``/ f`` (binned pixels); angles, axis and view matrices (pixel-size free) unchanged."""
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ValueError(f"binning factor must be a whole number >= 1, got {factor!r}.")
        factor = int(factor)
        if factor == 1:
            return self
        ny, nx = self.detector_shape
        changes: dict[str, Any] = {
            "detector_shape": (ny // factor, nx // factor),
            "pixel_size_angstrom": self.pixel_size_angstrom * factor,
        }
        if self.shifts_px is not None:
            changes["shifts_px"] = np.asarray(self.shifts_px) / factor
        return self.with_(**changes)

    def with_(self, **changes: Any) -> TiltGeometry:
        """Copy with some fields replaced (e.g. ``geom.with_(pixel_size_angstrom=2.0)``)."""
        fields = {
            "tilt_angles_deg": self.tilt_angles_deg,
            "detector_shape": self.detector_shape,
            "pixel_size_angstrom": self.pixel_size_angstrom,
            "tilt_axis_angle_deg": self.tilt_axis_angle_deg,
            "shifts_px": self.shifts_px,
            "view_matrices": self.view_matrices,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown TiltGeometry field(s): {sorted(unknown)}")
        fields.update(changes)
        return TiltGeometry(**fields)

    # ------------------------------------------------------------------ Fourier coverage
    def missing_wedge_mask(
        self, volume_shape: Sequence[int], *, centered: bool = False, rfft: bool = False
    ) -> np.ndarray:
        """Boolean mask of the **unmeasured** Fourier points of a ``(z, y, x)`` volume.

        A point ``(kz, ky, kx)`` (cycles/pixel) is missing when ``kx² + kz² > 0`` and its
        direction ``atan2(kz, kx)``, folded into ``(-90°, 90°]``, lies outside the tilt range
        ``[min(angle), max(angle)]``; asymmetric ranges are handled. See docs/conventions.md.

        Parameters
        ----------
        volume_shape
            ``(nz, ny, nx)``.
        centered
            Zero frequency at index ``N // 2`` (as after ``fftshift``) instead of NumPy order.
        rfft
            Return the half grid of ``numpy.fft.rfftn`` (last axis ``nx // 2 + 1``).

        Returns
        -------
        numpy.ndarray
            ``(nz, ny, nx)`` (or ``(nz, ny, nx//2+1)``) bool, True where missing.
        """
        return missing_wedge_mask(
            volume_shape, self.tilt_range_deg, centered=centered, rfft=rfft
        )

    # ------------------------------------------------------------------ value semantics
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TiltGeometry):
            return NotImplemented
        same_shifts = (self.shifts_px is None and other.shifts_px is None) or (
            self.shifts_px is not None
            and other.shifts_px is not None
            and np.allclose(self.shifts_px, other.shifts_px, atol=1e-6)
        )
        return (
            self.detector_shape == other.detector_shape
            and self.n_tilts == other.n_tilts
            and np.allclose(self.tilt_angles_deg, other.tilt_angles_deg, atol=1e-6)
            and np.isclose(self.pixel_size_angstrom, other.pixel_size_angstrom)
            # tighter than the quarter-turn snap, so equal geometries share their aligned frame
            and abs(self.tilt_axis_angle_deg - other.tilt_axis_angle_deg) <= _AXIS_EQUAL_DEG
            and same_shifts
            # exact, so equal geometries always share their aligned detector
            and (
                (self.view_matrices is None and other.view_matrices is None)
                or (
                    self.view_matrices is not None
                    and other.view_matrices is not None
                    and np.array_equal(self.view_matrices, other.view_matrices)
                )
            )
        )

    def __hash__(self) -> int:
        # Only fields that __eq__ compares exactly: equal geometries always hash equal
        # (angles, pixel size and axis are compared with tolerances).
        return hash((self.detector_shape, self.n_tilts))

    def __repr__(self) -> str:
        angles = np.array2string(self.tilt_angles_deg, separator=", ", threshold=10**6)
        shifts = (
            "None" if self.shifts_px is None else f"np.array({self.shifts_px.tolist()!r})"
        )
        mats = (
            "" if self.view_matrices is None
            else f", view_matrices=np.array({self.view_matrices.tolist()!r})"
        )
        return (
            f"TiltGeometry(tilt_angles_deg=np.array({angles}), "
            f"detector_shape={self.detector_shape}, "
            f"pixel_size_angstrom={self.pixel_size_angstrom!r}, "
            f"tilt_axis_angle_deg={self.tilt_axis_angle_deg!r}, shifts_px={shifts}{mats})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python description (for YAML run records)."""
        return {
            "tilt_angles_deg": self.tilt_angles_deg.tolist(),
            "detector_shape": list(self.detector_shape),
            "pixel_size_angstrom": self.pixel_size_angstrom,
            "tilt_axis_angle_deg": self.tilt_axis_angle_deg,
            "shifts_px": None if self.shifts_px is None else self.shifts_px.tolist(),
            "view_matrices": None if self.view_matrices is None else self.view_matrices.tolist(),
        }

    @classmethod
    def from_range(
        cls,
        min_deg: float,
        max_deg: float,
        step_deg: float,
        detector_shape: Sequence[int],
        **kwargs: Any,
    ) -> TiltGeometry:
        """Uniform tilt scheme ``min_deg:step_deg:max_deg`` (both ends included)."""
        if step_deg <= 0:
            raise ValueError(f"step_deg must be > 0, got {step_deg}.")
        n = int(np.floor((max_deg - min_deg) / step_deg + 1e-9)) + 1
        angles = min_deg + step_deg * np.arange(n)
        return cls(tilt_angles_deg=angles, detector_shape=tuple(detector_shape), **kwargs)


def _grid_size_holding(coords: np.ndarray) -> int:
    """Smallest ``N`` whose centred pixel grid ``[-(N//2), N-1-N//2]`` holds every coordinate."""
    tol = 1e-9  # the detector warp snaps coordinates this close to an integer
    below = int(np.ceil(-float(np.min(coords)) - tol))  # need N // 2 >= below
    above = int(np.ceil(float(np.max(coords)) - tol))  # need (N - 1) // 2 >= above
    return max(1, 2 * below, 2 * above + 1)


def missing_wedge_mask(
    volume_shape: Sequence[int],
    tilt_range_deg: tuple[float, float],
    *,
    centered: bool = False,
    rfft: bool = False,
) -> np.ndarray:
    """Missing-wedge mask for a tilt range; see :meth:`TiltGeometry.missing_wedge_mask`."""
    shape = tuple(int(s) for s in volume_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"volume_shape must be (nz, ny, nx) with positive sizes, got {volume_shape!r}."
        )
    lo, hi = (float(a) for a in tilt_range_deg)
    nz, _, nx = shape
    kz = np.fft.fftfreq(nz)
    kx = np.fft.rfftfreq(nx) if rfft else np.fft.fftfreq(nx)
    if centered:
        kz = np.fft.fftshift(kz)
        if not rfft:
            kx = np.fft.fftshift(kx)
    angle = np.degrees(np.arctan2(kz[:, None], kx[None, :]))  # (-180, 180]
    angle = np.where(angle <= -90.0, angle + 180.0, angle)
    angle = np.where(angle > 90.0, angle - 180.0, angle)
    tol = 1e-9
    missing_zx = (angle < lo - tol) | (angle > hi + tol)
    missing_zx &= (kz[:, None] ** 2 + kx[None, :] ** 2) > 0
    return np.broadcast_to(missing_zx[:, None, :], (nz, shape[1], missing_zx.shape[1])).copy()


def angular_weights_rad(tilt_angles_deg: np.ndarray) -> np.ndarray:
    """Per-tilt angular integration weights ``Δθ`` (radians) for back-projection.

    Each tilt gets half the gap to each neighbour (sorted by angle); the end tilts get
    their one inner half-gap doubled, so a uniform scheme with step ``Δ`` gives ``Δ``
    everywhere. A scheme covering ±90° sums to π.

    Parameters
    ----------
    tilt_angles_deg
        ``(n_tilts,)`` degrees, any order.

    Returns
    -------
    numpy.ndarray
        ``(n_tilts,)`` float64 radians, in the input order.
    """
    angles = np.asarray(tilt_angles_deg, dtype=np.float64)
    if angles.size == 1:
        return np.array([np.pi])
    order = np.argsort(angles)
    a = np.deg2rad(angles[order])
    gaps = np.diff(a)
    w = np.empty_like(a)
    w[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
    w[0], w[-1] = gaps[0], gaps[-1]
    span = a[-1] - a[0]
    if span >= np.pi - 1e-6:
        # ±90° covers the half-circle; the two end views are (mirror) duplicates.
        w[0] *= 0.5
        w[-1] *= 0.5
    out = np.empty_like(w)
    out[order] = w
    return out
