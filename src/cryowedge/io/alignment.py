"""Alignment files of IMOD (``.xf``, ``.xtilt``) and AreTomo (``.aln``), and their geometry.

The files describe how each raw image maps onto the aligned image (tilt axis along ``Y``).
cryowedge does not resample the stack with them: :func:`apply_alignment` turns them into
a :class:`~cryowedge.geometry.tilt.TiltGeometry` (per-view matrices and shifts), so the
projector's detector warp is the only interpolation. Conventions, including the half-pixel
centre difference to IMOD, are in docs/conventions.md ("Alignment files").

Two file-level forms are read and written as such:

* IMOD ``.xf`` (also ``.xg``, ``.prexf``, ``.prexg``): one line ``A11 A12 A21 A22 DX DY``
  per view, ``aligned = A·raw + D`` on centred ``(x, y)`` pixel coordinates (``x`` right,
  ``y`` up; centre at ``(N − 1)/2`` counting from 0). :func:`read_imod_xf` returns
  ``(n_views, 2, 3)`` rows ``[[A11, A12, DX], [A21, A22, DY]]``.
* AreTomo ``.aln`` (AreTomo2 and AreTomo3): ``#`` header lines, then per view
  ``SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT``. AreTomo corrects a raw image by
  ``raw = R(ROT)·aligned + (TX, TY)`` (rotate the aligned coordinate counter-clockwise by
  ROT, then add the shift; AreTomo2 ``Correct/GCorrPatchShift.cu``, kernel ``mGCorrect``,
  called with ``GetTiltAxis`` and ``GetShift`` of the view, the values that
  ``MrcUtil/CSaveAlignFile.cpp`` writes as ROT and TX, TY), centres at ``(N − 1)/2``.
  So ``ROT`` is cryowedge's ``tilt_axis_angle_deg`` and ``(TY, TX)`` its shift, up to that
  centring. :func:`read_aretomo_aln` returns an :class:`AretomoAln`.

Both become an :class:`Alignment`: per-view IMOD-style ``(n_views, 2, 3)`` transforms plus
the tilt angles when the file has them. :func:`load_alignment` reads either by suffix and
checks the number of views against the stack.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from .._validation import check_readable_file
from ..geometry.tilt import TiltGeometry
from ._atomic import write_text_atomic
from .tilt_files import read_tilt_angles

__all__ = [
    "Alignment",
    "AretomoAln",
    "XF_SUFFIXES",
    "alignment_from_geometry",
    "apply_alignment",
    "load_alignment",
    "read_aretomo_aln",
    "read_imod_xf",
    "read_imod_xtilt",
    "write_aretomo_aln",
    "write_imod_xf",
]

logger = logging.getLogger(__name__)

#: Suffixes read as IMOD transform files (same format: six numbers per view).
XF_SUFFIXES = (".xf", ".xg", ".prexf", ".prexg")
_ALN_COLUMNS = ("SEC", "ROT", "GMAG", "TX", "TY", "SMEAN", "SFIT", "SCALE", "BASE", "TILT")


def _text(path: Path, what: str) -> str:
    check_readable_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not a text file ({err}); expected an {what}.") from err


# --------------------------------------------------------------------------- IMOD .xf


def read_imod_xf(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IMOD transform file (``.xf``, ``.xg``, ``.prexf``, ``.prexg``).

    Parameters
    ----------
    path
        Text file, one line ``A11 A12 A21 A22 DX DY`` per view (blank lines ignored).

    Returns
    -------
    numpy.ndarray
        ``(n_views, 2, 3)`` float64 ``[[A11, A12, DX], [A21, A22, DY]]``: ``aligned = A·raw
        + D`` on centred ``(x, y)`` pixels, in file (= stack) order.

    Raises
    ------
    ValueError
        A line does not hold six finite numbers (the message names the line), a matrix is
        singular, or the file holds no transforms.
    """
    path = Path(path)
    rows: list[list[float]] = []
    for number, line in enumerate(_text(path, "IMOD .xf file").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 6 or not np.isfinite(values).all():
            raise ValueError(
                f"{str(path)!r} line {number}: {line.strip()!r} is not six numbers "
                "'A11 A12 A21 A22 DX DY'; is this an IMOD .xf file?"
            )
        rows.append(values)
    if not rows:
        raise ValueError(f"{str(path)!r} holds no transforms; an .xf file has one line per view.")
    v = np.asarray(rows)
    xf = np.stack([v[:, [0, 1, 4]], v[:, [2, 3, 5]]], axis=1)
    det = np.linalg.det(xf[:, :, :2])
    if (np.abs(det) < 1e-6).any():
        i = int(np.argmax(np.abs(det) < 1e-6))
        raise ValueError(
            f"{str(path)!r} view {i} (line {i + 1}) has a singular matrix "
            f"{xf[i, :, :2].tolist()}; every view needs an invertible transform."
        )
    return xf


def write_imod_xf(path: str | os.PathLike[str], xf: ArrayLike, *, overwrite: bool = True) -> Path:
    """Write ``(n_views, 2, 3)`` transforms as an IMOD ``.xf`` file, atomically.

    Lines are ``A11 A12 A21 A22 DX DY`` with 7 decimals for the matrix and 4 for the shift
    (wider than IMOD's own ``%12.7f``/``%12.3f``, readable by IMOD). Returns the path.
    """
    arr = np.asarray(xf, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (2, 3) or arr.shape[0] == 0:
        raise ValueError(
            f"xf must be (n_views, 2, 3) [[A11, A12, DX], [A21, A22, DY]], got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise ValueError("xf holds non-finite values.")
    text = "".join(
        f"{t[0, 0]:12.7f}{t[0, 1]:12.7f}{t[1, 0]:12.7f}{t[1, 1]:12.7f}"
        f"{t[0, 2]:14.4f}{t[1, 2]:14.4f}\n"
        for t in arr
    )
    return write_text_atomic(path, text, overwrite=overwrite)


def read_imod_xtilt(path: str | os.PathLike[str], n_views: int | None = None) -> np.ndarray:
    """Read an IMOD ``.xtilt`` file: one X-axis tilt (degrees) per view.

    Returns ``(n_views,)`` float64 degrees. With ``n_views`` given, a file with another
    number of values is refused (ValueError naming both counts).
    """
    values = read_tilt_angles(path)
    if n_views is not None and values.size != int(n_views):
        raise ValueError(
            f"{str(path)!r} has {values.size} X-tilt values but the tilt series has {n_views} "
            "views; use the .xtilt written for this stack."
        )
    return values


# --------------------------------------------------------------------------- AreTomo .aln


@dataclass(frozen=True, eq=False)
class AretomoAln:
    """Global alignment of an AreTomo ``.aln`` file, one entry per aligned section.

    Attributes
    ----------
    section : numpy.ndarray
        ``(n_views,)`` int, the SEC column (as written by AreTomo).
    rot_deg : numpy.ndarray
        ``(n_views,)`` tilt-axis angle ROT, degrees counter-clockwise from ``+Y``.
    gmag : numpy.ndarray
        ``(n_views,)`` magnification GMAG (AreTomo writes 1).
    shifts_xy : numpy.ndarray
        ``(n_views, 2)`` ``(TX, TY)`` in raw pixels.
    tilt_angles_deg : numpy.ndarray
        ``(n_views,)`` TILT column, degrees.
    raw_size : tuple of int or None
        ``# RawSize = nx ny nz`` of the header (the stack before dark frames were dropped).
    dark_frames : tuple of int
        0-based frame indices of ``# DarkFrame`` lines (views AreTomo left out).
    """

    section: np.ndarray
    rot_deg: np.ndarray
    gmag: np.ndarray
    shifts_xy: np.ndarray
    tilt_angles_deg: np.ndarray
    raw_size: tuple[int, int, int] | None = None
    dark_frames: tuple[int, ...] = field(default=())

    @property
    def n_views(self) -> int:
        """Number of aligned sections."""
        return int(self.rot_deg.size)

    def to_xf(self) -> np.ndarray:
        """``(n_views, 2, 3)`` IMOD-style transforms: ``aligned = R(−ROT)·(raw − T)``."""
        rad = np.deg2rad(self.rot_deg)
        c, s = np.cos(rad), np.sin(rad)
        a = np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2)  # R(-ROT) on (x, y)
        d = -np.einsum("nij,nj->ni", a, self.shifts_xy)
        return np.concatenate([a, d[:, :, None]], axis=2)


def read_aretomo_aln(path: str | os.PathLike[str]) -> AretomoAln:
    """Read the global alignment of an AreTomo ``.aln`` file.

    Parameters
    ----------
    path
        ``.aln`` text file: ``#`` header lines (``RawSize``, ``DarkFrame``, the column
        names), one line ``SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT`` per aligned view,
        then optionally ``# Local Alignment`` and patch lines (ignored).

    Returns
    -------
    AretomoAln

    Raises
    ------
    ValueError
        A data line does not hold ten numbers, GMAG differs from 1 (its composition with
        ROT is not documented by AreTomo; AreTomo2/3 write 1), or no view is listed.
    """
    path = Path(path)
    rows: list[list[float]] = []
    raw_size: tuple[int, int, int] | None = None
    darks: list[int] = []
    for number, line in enumerate(_text(path, "AreTomo .aln file").splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, _, value = stripped[1:].partition("=")
            key = key.strip().lower()
            if key == "local alignment":
                break
            try:
                if key == "rawsize":
                    nums = [int(float(v)) for v in value.split()]
                    if len(nums) == 3:
                        raw_size = (nums[0], nums[1], nums[2])
                elif key == "darkframe":
                    darks.append(int(float(value.split()[0])))
            except (ValueError, IndexError):
                logger.warning("%s line %d: unreadable header %r ignored", path, number, stripped)
            continue
        try:
            values = [float(p) for p in stripped.split()]
        except ValueError:
            values = []
        if len(values) != len(_ALN_COLUMNS) or not np.isfinite(values).all():
            raise ValueError(
                f"{str(path)!r} line {number}: {stripped!r} is not ten numbers "
                f"'{' '.join(_ALN_COLUMNS)}'; is this an AreTomo .aln file?"
            )
        rows.append(values)
    if not rows:
        raise ValueError(f"{str(path)!r} lists no aligned views; is this an AreTomo .aln file?")
    v = np.asarray(rows)
    gmag = v[:, 2]
    bad = np.abs(gmag - 1.0) > 1e-4
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{str(path)!r} view {i} has GMAG = {gmag[i]}; cryowedge reads only GMAG = 1 (what "
            "AreTomo2/3 write), since AreTomo does not document how GMAG composes with ROT."
        )
    return AretomoAln(
        section=v[:, 0].astype(np.int64),
        rot_deg=v[:, 1].copy(),
        gmag=gmag.copy(),
        shifts_xy=v[:, 3:5].copy(),
        tilt_angles_deg=v[:, 9].copy(),
        raw_size=raw_size,
        dark_frames=tuple(darks),
    )


def write_aretomo_aln(
    path: str | os.PathLike[str],
    rot_deg: ArrayLike,
    shifts_xy: ArrayLike,
    tilt_angles_deg: ArrayLike,
    *,
    raw_size: Sequence[int] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a global-only AreTomo ``.aln`` file, atomically, in AreTomo2's layout.

    Parameters
    ----------
    rot_deg
        ``(n_views,)`` ROT, degrees (``raw = R(ROT)·aligned + T``).
    shifts_xy
        ``(n_views, 2)`` ``(TX, TY)`` raw pixels.
    tilt_angles_deg
        ``(n_views,)`` TILT, degrees.
    raw_size
        ``(nx, ny, n_views)`` for the ``# RawSize`` header (zeros if omitted).
    """
    rot = np.asarray(rot_deg, dtype=np.float64).ravel()
    shifts = np.asarray(shifts_xy, dtype=np.float64)
    tilts = np.asarray(tilt_angles_deg, dtype=np.float64).ravel()
    n = rot.size
    if n == 0 or shifts.shape != (n, 2) or tilts.shape != (n,):
        raise ValueError(
            f"rot_deg {rot.shape}, shifts_xy {shifts.shape} and tilt_angles_deg {tilts.shape} "
            "must be (n_views,), (n_views, 2) and (n_views,) with n_views >= 1."
        )
    if not (np.isfinite(rot).all() and np.isfinite(shifts).all() and np.isfinite(tilts).all()):
        raise ValueError("rot_deg, shifts_xy and tilt_angles_deg must be finite.")
    size = tuple(int(s) for s in raw_size) if raw_size is not None else (0, 0, n)
    lines = [
        "# AreTomo Alignment / Priims bprmMn (written by cryowedge)\n",
        f"# RawSize = {size[0]} {size[1]} {size[2]}\n",
        "# NumPatches = 0\n",
        "# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE"
        "     TILT\n",
    ]
    lines += [
        f"{i + 1:5d}  {rot[i]:9.4f}  {1.0:9.5f}  {shifts[i, 0]:9.3f}  {shifts[i, 1]:9.3f}  "
        f"{1.0:7.2f}  {1.0:7.2f}  {1.0:7.2f}  {0.0:7.2f}  {tilts[i]:8.2f}\n"
        for i in range(n)
    ]
    return write_text_atomic(path, "".join(lines), overwrite=overwrite)


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, eq=False)
class Alignment:
    """Per-view in-plane alignment in IMOD's form, from an ``.xf`` or ``.aln`` file.

    Attributes
    ----------
    xf : numpy.ndarray
        ``(n_views, 2, 3)`` ``[[A11, A12, DX], [A21, A22, DY]]``: ``aligned = A·raw + D`` on
        centred ``(x, y)`` pixels, centre ``(N − 1)/2`` counting from 0 (IMOD's).
    tilt_angles_deg : numpy.ndarray or None
        ``(n_views,)`` degrees when the file has them (``.aln`` TILT), else None.
    source : str
        The file it came from (for messages and run records).
    """

    xf: np.ndarray
    tilt_angles_deg: np.ndarray | None = None
    source: str = ""

    @property
    def n_views(self) -> int:
        """Number of views."""
        return int(self.xf.shape[0])


def load_alignment(path: str | os.PathLike[str], n_views: int | None = None) -> Alignment:
    """Read an alignment file by its suffix and check it against the stack.

    Parameters
    ----------
    path
        IMOD ``.xf`` (or ``.xg``, ``.prexf``, ``.prexg``) or AreTomo ``.aln``.
    n_views
        Number of images in the tilt series; when given, a file for another number of
        views is refused before any work.

    Raises
    ------
    ValueError
        Unknown suffix, unreadable content, or a view count that differs from ``n_views``
        (one line naming both counts).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    dark_note = ""
    if suffix in XF_SUFFIXES:
        alignment = Alignment(xf=read_imod_xf(p), source=str(p))
    elif suffix == ".aln":
        aln = read_aretomo_aln(p)
        alignment = Alignment(xf=aln.to_xf(), tilt_angles_deg=aln.tilt_angles_deg, source=str(p))
        if aln.dark_frames:
            dark_note = (
                f" (AreTomo dropped {len(aln.dark_frames)} dark frame(s), 0-based "
                f"{list(aln.dark_frames)}; remove them from the stack too)"
            )
    else:
        raise ValueError(
            f"alignment file {str(p)!r} has suffix {p.suffix!r}; use an IMOD transform file "
            f"({', '.join(XF_SUFFIXES)}) or an AreTomo .aln."
        )
    if n_views is not None and alignment.n_views != int(n_views):
        raise ValueError(
            f"alignment file {str(p)!r} has {alignment.n_views} views but the tilt series has "
            f"{int(n_views)}{dark_note}; use the alignment written for this stack (exclude the "
            "same views from both)."
        )
    return alignment


def _imod_centre_offset(n: int) -> float:
    """cryowedge centre ``N // 2`` minus IMOD centre ``(N − 1)/2`` (0 or ½ pixel)."""
    return n // 2 - (n - 1) / 2.0


def _centre_offsets_xy(
    detector_shape: Sequence[int], quarter_turns: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(δ_raw, δ_aligned)`` as ``(x, y)`` vectors: cryowedge minus IMOD centre, pixels.

    The aligned image is taken with the raw size, ``x`` and ``y`` swapped for an odd
    nearest quarter turn of the axis (so its tilt axis runs along ``Y``).
    """
    ny, nx = (int(s) for s in detector_shape)
    d_raw = np.array([_imod_centre_offset(nx), _imod_centre_offset(ny)])
    al_y, al_x = (nx, ny) if quarter_turns % 2 else (ny, nx)
    d_al = np.array([_imod_centre_offset(al_x), _imod_centre_offset(al_y)])
    return d_raw, d_al


_SWAP = np.array([[0.0, 1.0], [1.0, 0.0]])  # (x, y) <-> (y, x)


def apply_alignment(
    geometry: TiltGeometry, alignment: Alignment, *, use_tilt_angles: bool = False
) -> TiltGeometry:
    """The geometry of a raw tilt series aligned by ``alignment``.

    Each view's IMOD map ``aligned = A·raw + D`` is inverted into cryowedge's
    ``raw = R(φ)·V_t·aligned + shift_t`` (docs/conventions.md, "Alignment files"): the
    common tilt-axis angle ``φ`` is the circular mean of the per-view rotation angles,
    ``V_t`` holds each view's remainder (rotation deviation, magnification), and the shifts
    convert IMOD's centre ``(N − 1)/2`` to cryowedge's ``N // 2`` in the raw and the aligned
    image, so that reconstructing the raw stack with this geometry gives the tomogram of the
    stack IMOD's ``newstack`` would align (same size as the raw one, ``x``/``y`` swapped
    for an axis near ±90°). The raw stack is never resampled here; the detector warp does
    one bilinear interpolation.

    Parameters
    ----------
    geometry
        Geometry of the raw stack (angles, detector shape, pixel size). Its tilt-axis
        angle and shifts are replaced.
    alignment
        From :func:`load_alignment`; must have ``geometry.n_tilts`` views.
    use_tilt_angles
        Take the tilt angles from the alignment file (``.aln`` TILT) instead of
        ``geometry``'s.

    Returns
    -------
    TiltGeometry
        With ``tilt_axis_angle_deg``, ``view_matrices`` (None when every view is a pure
        rotation by ``φ``) and ``shifts_px`` set.
    """
    if alignment.n_views != geometry.n_tilts:
        raise ValueError(
            f"alignment {alignment.source!r} has {alignment.n_views} views but the tilt series "
            f"has {geometry.n_tilts}; use the alignment written for this stack."
        )
    angles = geometry.tilt_angles_deg
    if alignment.tilt_angles_deg is not None:
        if use_tilt_angles:
            angles = alignment.tilt_angles_deg
        elif np.abs(alignment.tilt_angles_deg - angles).max() > 0.05:
            logger.warning(
                "tilt angles of %s differ from the stack's by up to %.2f deg; keeping the "
                "stack's (pass use_tilt_angles=True to take the file's)",
                alignment.source,
                float(np.abs(alignment.tilt_angles_deg - angles).max()),
            )
    a = alignment.xf[:, :, :2]
    d = alignment.xf[:, :, 2]
    b = np.linalg.inv(a)  # raw = B·(aligned − D), (x, y)
    theta = np.arctan2(b[:, 1, 0] - b[:, 0, 1], b[:, 0, 0] + b[:, 1, 1])
    phi = float(np.rad2deg(np.arctan2(np.sin(theta).mean(), np.cos(theta).mean())))
    phi = round(phi, 9) + 0.0
    if (
        geometry.tilt_axis_angle_deg != 0.0
        and abs((phi - geometry.tilt_axis_angle_deg + 180.0) % 360.0 - 180.0) > 1.0
    ):
        logger.info(
            "tilt-axis angle %.2f deg replaced by %.2f deg from %s",
            geometry.tilt_axis_angle_deg,
            phi,
            alignment.source,
        )
    base = geometry.with_(
        tilt_angles_deg=angles, tilt_axis_angle_deg=phi, shifts_px=None, view_matrices=None
    )
    d_raw, d_al = _centre_offsets_xy(geometry.detector_shape, base.nearest_quarter_turns)
    # raw_imod = B·(al_imod − D), al_imod = al_cw + δ_al, raw_cw = raw_imod − δ_raw
    shifts_xy = np.einsum("nij,nj->ni", b, d_al[None, :] - d) - d_raw[None, :]
    m_yx = _SWAP @ b @ _SWAP  # aligned → raw on (y, x)
    cos_p, sin_p = base.tilt_axis_cos_sin
    rot_inv = np.array([[cos_p, -sin_p], [sin_p, cos_p]])  # R(φ)⁻¹ on (y, x)
    view = rot_inv @ m_yx
    view[np.abs(view) < 1e-12] = 0.0
    view[np.abs(view - 1.0) < 1e-12] = 1.0
    shifts_yx = shifts_xy[:, ::-1].copy()
    shifts_yx[np.abs(shifts_yx) < 1e-9] = 0.0
    return base.with_(view_matrices=view, shifts_px=shifts_yx)


def alignment_from_geometry(geometry: TiltGeometry) -> Alignment:
    """The IMOD ``.xf`` form of a geometry: the inverse of :func:`apply_alignment`.

    ``write_imod_xf(path, alignment_from_geometry(g).xf)`` exports cryowedge's per-view
    in-plane geometry for IMOD (same centring rules as :func:`apply_alignment`).
    """
    m_yx = geometry.aligned_to_raw_matrices()
    b = _SWAP @ m_yx @ _SWAP  # aligned → raw on (x, y)
    shifts_xy = (
        np.zeros((geometry.n_tilts, 2))
        if geometry.shifts_px is None
        else geometry.shifts_px[:, ::-1]
    )
    d_raw, d_al = _centre_offsets_xy(geometry.detector_shape, geometry.nearest_quarter_turns)
    a = np.linalg.inv(b)
    # raw_cw = B·(δ_al − D) − δ_raw + B·al_cw  =>  D = δ_al − A·(raw shift + δ_raw)
    d = d_al[None, :] - np.einsum("nij,nj->ni", a, shifts_xy + d_raw[None, :])
    return Alignment(xf=np.concatenate([a, d[:, :, None]], axis=2), source="geometry")
