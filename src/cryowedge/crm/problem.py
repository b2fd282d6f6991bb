"""The data of a constrained-reconstruction (CRM) problem: copies, their geometry, the support.

CRM (Han et al., *Bioinformatics*; ../shared/seeds/000_…) reconstructs one particle ``h`` from
``N`` copies ``f_i = h_i + g_i`` that each sit in their own surroundings ``g_i`` and were each
measured over their own limited tilt range. The model of copy ``i`` (eq. 6) is::

    b_i = P_i ( R_i (S · h) + (1 − S_i) · g_i )

- ``h``: the particle, a ``(z, y, x)`` volume in the **particle frame**;
- ``S``: the support mask ``(z, y, x)`` of the particle in that frame (1 inside);
- ``R_i``: the copy's orientation, a rotation of the object (``out(R r) = in(r)``, the
  convention of :func:`cryowedge.geometry.rotations.rotate_volume`); ``S_i`` is the support
  carried into the copy frame (``S`` itself when it is a centred sphere);
- ``g_i``: the copy's background, a ``(z, y, x)`` volume in the **copy frame**, zero on
  ``S_i``;
- ``P_i``: the tilt projector of the copy's tilt angles (tilt axis = y, docs/conventions.md);
- ``b_i``: the measured ``(n_tilts, y, x)`` sub-tilt-series of the copy.

A 2D experiment (the paper's) is the same with one row along the tilt axis: volumes
``(nz, 1, nx)``, projections ``(n_tilts, 1, nx)``, and every ``R_i`` a rotation about y.

This module holds only the containers and their checks; operators live in
:mod:`cryowedge.crm.operator`, solvers in :mod:`cryowedge.crm.solvers`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BACKGROUND_FRAMES", "CRMCopy", "CRMData", "sphere_support"]

#: Frames a copy's background may be given in (:class:`CRMData`, ``CRMOperator``).
BACKGROUND_FRAMES = ("copy", "particle")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CRMCopy:
    """One copy of the particle: its tilt angles and its orientation.

    Parameters
    ----------
    tilt_angles_deg
        ``(n_tilts,)`` tilt angles of the copy's sub-tilt-series in degrees, in stack order,
        within [−90, 90] (the microscope's angles).
    rotation_xyz
        ``(3, 3)`` rotation matrix acting on centred ``(x, y, z)`` column vectors that carries
        the particle frame into the copy frame (the object is rotated by it); ``None`` means
        the identity. In 2D it must be a rotation about y.
    """

    tilt_angles_deg: np.ndarray
    rotation_xyz: np.ndarray | None = None

    def __post_init__(self) -> None:
        angles = np.asarray(self.tilt_angles_deg, dtype=np.float64).reshape(-1)
        if angles.size == 0 or not np.all(np.isfinite(angles)):
            raise ValueError(
                f"tilt_angles_deg must be a non-empty finite list, got {self.tilt_angles_deg!r}."
            )
        if np.any(np.abs(angles) > 90.0):
            raise ValueError(
                f"tilt_angles_deg must lie within [-90, 90]; got "
                f"{angles.min():.1f}..{angles.max():.1f}. "
                "Express the copy's orientation with rotation_xyz instead of shifting its angles."
            )
        angles.setflags(write=False)
        object.__setattr__(self, "tilt_angles_deg", angles)
        if self.rotation_xyz is not None:
            rot = np.asarray(self.rotation_xyz, dtype=np.float64)
            if (
                rot.shape != (3, 3)
                or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6)
                or np.linalg.det(rot) < 0
            ):
                raise ValueError(
                    "rotation_xyz must be a proper (3, 3) rotation matrix, "
                    f"got {self.rotation_xyz!r}."
                )
            rot.setflags(write=False)
            object.__setattr__(self, "rotation_xyz", rot)

    @property
    def n_tilts(self) -> int:
        return int(self.tilt_angles_deg.size)

    @property
    def is_identity(self) -> bool:
        return self.rotation_xyz is None or bool(
            np.allclose(self.rotation_xyz, np.eye(3), atol=1e-12)
        )


def sphere_support(volume_shape: Sequence[int], radius_px: float) -> np.ndarray:
    """Centred ball (circle in 2D) of ``radius_px`` voxels as a ``(z, y, x)`` bool mask.

    The centre is voxel ``n // 2`` of each axis; an axis of size 1 (a 2D problem) is ignored,
    so ``(nz, 1, nx)`` gives a disc in the x–z plane.
    """
    shape = tuple(int(s) for s in volume_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"volume_shape must be (z, y, x), got {volume_shape!r}.")
    if not radius_px > 0:
        raise ValueError(f"support radius must be > 0 voxels, got {radius_px!r}.")
    grids = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r2 = sum(g.astype(np.float64) ** 2 for g, n in zip(grids, shape, strict=True) if n > 1)
    return np.asarray(r2 <= float(radius_px) ** 2)


@dataclass
class CRMData:
    """Measured sub-tilt-series of ``N`` copies plus what CRM needs to solve for the particle.

    Parameters
    ----------
    projections
        ``(N, n_tilts, ny, nx)`` float array: ``projections[i]`` is copy ``i``'s sub-tilt-series
        (all copies have the same image size and number of tilts).
    copies
        ``N`` :class:`CRMCopy`, one per copy.
    support
        ``(nz, ny, nx)`` bool mask of the particle in the particle frame; it also fixes the
        volume shape. ``ny`` equals the projections' ``ny``, ``nx`` their ``nx``.
    pixel_size_angstrom
        Voxel size in Å (the MRC outputs keep it).
    truth
        Optional ``(nz, ny, nx)`` ground-truth particle (simulations), for scoring only.
    names
        Optional ``N`` copy names.
    background_frame
        Where each copy's surroundings ``g_i`` live: ``"copy"`` (default: they fill the copy's
        own box, as in a real sub-tilt-series or :func:`~cryowedge.crm.simulate.simulate_crm_2d`'s
        default) or ``"particle"`` (drawn in the particle frame, as the authors' simulator does;
        then a 2D/about-``y`` problem keeps them on the particle-frame grid). The operator
        built by ``CRMOperator.from_data`` follows it (:mod:`cryowedge.crm.operator` notes).
    """

    projections: np.ndarray
    copies: list[CRMCopy]
    support: np.ndarray
    pixel_size_angstrom: float = 1.0
    truth: np.ndarray | None = None
    names: list[str] = field(default_factory=list)
    background_frame: str = "copy"

    def __post_init__(self) -> None:
        if isinstance(self.projections, (list, tuple)):  # one array per copy: same size needed
            shapes = [tuple(np.shape(p)) for p in self.projections]
            if len(set(shapes)) > 1:
                odd = next(i for i, sh in enumerate(shapes) if sh != shapes[0])
                raise ValueError(
                    f"copies have different sub-tilt-series shapes: copy 0 is {shapes[0]}, "
                    f"copy {odd} is {shapes[odd]}; every copy needs the same (n_tilts, ny, nx) "
                    "images (crop or pad them)."
                )
        proj = np.asarray(self.projections)
        if proj.ndim == 3:  # a list of 2D copies given as (N, n_tilts, nx)
            proj = proj[:, :, None, :]
        if proj.ndim != 4:
            raise ValueError(
                "projections must be (N copies, n_tilts, ny, nx), "
                f"got shape {np.shape(self.projections)}."
            )
        if not np.issubdtype(proj.dtype, np.floating):
            proj = proj.astype(np.float32)
        self.projections = proj
        n_copies = proj.shape[0]
        if len(self.copies) != n_copies:
            raise ValueError(
                f"{n_copies} copies of projections but {len(self.copies)} CRMCopy entries; "
                "give one per copy."
            )
        for i, copy in enumerate(self.copies):
            if copy.n_tilts != proj.shape[1]:
                raise ValueError(
                    f"copy {i} has {copy.n_tilts} tilt angles but its sub-tilt-series has "
                    f"{proj.shape[1]} images."
                )
        support = np.asarray(self.support)
        if support.ndim == 2:
            support = support[:, None, :]
        if support.ndim != 3:
            raise ValueError(
                f"support must be a (z, y, x) mask, got shape {np.shape(self.support)}."
            )
        values = np.unique(support)
        if not np.all(np.isin(values, (0, 1))):
            raise ValueError(
                f"support must hold only 0/1 values, got {values[:5]}; threshold it first."
            )
        support = support.astype(bool)
        if support.shape[1:] != proj.shape[2:]:
            raise ValueError(
                f"support shape {support.shape} does not fit the images {proj.shape[2:]}: "
                f"its (y, x) must equal the image (y, x)."
            )
        if not support.any():
            raise ValueError(
                "support is empty: no voxel belongs to the particle; give a larger radius or mask."
            )
        if support.all():
            raise ValueError(
                "support covers the whole box, so there is no background to separate; "
                "use a smaller mask."
            )
        self.support = support
        if self.truth is not None and np.shape(self.truth) != support.shape:
            raise ValueError(
                f"truth shape {np.shape(self.truth)} differs from the support shape "
                f"{support.shape}."
            )
        if not self.pixel_size_angstrom > 0:
            raise ValueError(f"pixel_size_angstrom must be > 0, got {self.pixel_size_angstrom!r}.")
        if self.names and len(self.names) != n_copies:
            raise ValueError(f"{len(self.names)} names for {n_copies} copies.")
        if self.background_frame not in BACKGROUND_FRAMES:
            raise ValueError(
                f"background_frame must be one of {BACKGROUND_FRAMES}, "
                f"got {self.background_frame!r}."
            )

    @property
    def n_copies(self) -> int:
        return int(self.projections.shape[0])

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.support.shape)  # type: ignore[return-value]

    @property
    def is_2d(self) -> bool:
        return self.volume_shape[1] == 1

    def subset(self, indices: ArrayLike) -> CRMData:
        """The copies ``indices`` (e.g. ``range(0, N, 2)`` for a half set)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return CRMData(
            projections=self.projections[idx],
            copies=[self.copies[i] for i in idx],
            support=self.support,
            pixel_size_angstrom=self.pixel_size_angstrom,
            truth=self.truth,
            names=[self.names[i] for i in idx] if self.names else [],
            background_frame=self.background_frame,
        )
