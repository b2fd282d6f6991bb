"""Per-view defocus and exposure of a tilt series (``reconstruct --defocus-file``, dose weighting).

Defocus files, told apart by their content (:func:`read_defocus_file`):

* **IMOD** ``.defocus`` (ctfplotter). Version 1 lines ``v1 v2 t1 t2 defocus_nm``; version 2
  adds the version number ``2`` as a sixth column of the *first* line; version 3 and later
  start with a header line ``flags 0 0.0 0.0 0.0 version`` whose flags say which columns
  follow: 1 astigmatism (``defocus1_nm defocus2_nm astig_angle``), 2 astigmatism angle in
  radians, 4 phase shift, 8 phase shift in radians, 16 tilt angles inverted, 32 cut-on
  frequency. Views ``v1..v2`` are 1-based and inclusive; like ctfphaseflip, an entry's
  value belongs to its middle view ``(v1 + v2) // 2`` and views between entries are
  interpolated linearly (constant beyond the first and last entry).
* **CTFFIND4** output text: ``#`` header lines, then rows ``micrograph_number defocus1_A
  defocus2_A astig_azimuth_deg phase_shift_rad cross_corr spacing_A``, one per image of a
  stack (numbered from 1).
* **AreTomo** ``_CTF.txt`` / ``_ctf.txt``: the same CTFFIND-like rows (AreTomo3 adds an
  eighth column ``dfHand``), numbered from 0 or 1. AreTomo3 writes one row per *raw* tilt,
  including dark frames; the rows are matched to the stack's views in order.

A constant defocus for every view is :func:`constant_defocus`. All of them give a
:class:`DefocusTable`: per view ``defocus_u``/``defocus_v`` in Å (positive = underfocus),
the astigmatism angle in degrees (direction of ``defocus_u``, counter-clockwise from the
image ``+x`` axis towards ``+y``, as :func:`cryowedge.simulate.ctf.ctf_2d` takes it) and an
extra phase shift in degrees. Conventions: docs/conventions.md ("Other units and names").

Exposure: :func:`view_doses` gives each view's own exposure and the exposure received before
it (e⁻/Å²), from a SerialEM ``.mdoc`` (``ExposureDose`` in acquisition order) or from a
constant dose per tilt times the acquisition rank.

Every check (file form, view count, views covered) raises a one-line ``ValueError`` naming
the file and the fix, before any work.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryowedge._validation import check_readable_file

__all__ = [
    "DefocusTable",
    "ViewDoses",
    "constant_defocus",
    "find_mdoc",
    "read_defocus_file",
    "view_doses",
]

logger = logging.getLogger(__name__)

_IMOD_HAS_ASTIG = 1
_IMOD_ASTIG_IN_RAD = 2
_IMOD_HAS_PHASE = 4
_IMOD_PHASE_IN_RAD = 8
_IMOD_INVERT_ANGLES = 16
_IMOD_HAS_CUT_ON = 32


@dataclass(frozen=True, eq=False)
class DefocusTable:
    """Per-view CTF parameters of a tilt series, in stack order.

    Attributes
    ----------
    defocus_u_angstrom, defocus_v_angstrom
        ``(n_views,)`` float64 defocus along and across the astigmatism azimuth (Å, > 0 =
        underfocus). Equal when there is no astigmatism.
    astigmatism_angle_deg
        ``(n_views,)`` azimuth of ``defocus_u`` (degrees, counter-clockwise from ``+x``).
    phase_shift_deg
        ``(n_views,)`` extra phase shift (degrees; phase plate), 0 without one.
    source
        What the values came from: ``"imod"``, ``"ctffind4"``, ``"aretomo"`` or ``"constant"``.
    path
        The file read, or None for a constant.
    tilt_angles_deg
        ``(n_views,)`` tilt angles the file gives (IMOD files only; interpolated like the
        defocus), else None. Used to warn when a file belongs to another stack.
    """

    defocus_u_angstrom: np.ndarray
    defocus_v_angstrom: np.ndarray
    astigmatism_angle_deg: np.ndarray
    phase_shift_deg: np.ndarray
    source: str
    path: Path | None = None
    tilt_angles_deg: np.ndarray | None = None

    @property
    def n_views(self) -> int:
        """Number of views."""
        return int(self.defocus_u_angstrom.shape[0])

    @property
    def mean_defocus_angstrom(self) -> np.ndarray:
        """``(n_views,)`` mean of ``defocus_u`` and ``defocus_v`` (Å)."""
        return 0.5 * (self.defocus_u_angstrom + self.defocus_v_angstrom)

    def subset(self, indices: np.ndarray | list[int]) -> DefocusTable:
        """The table of views ``indices`` (0-based, in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return DefocusTable(
            defocus_u_angstrom=self.defocus_u_angstrom[idx],
            defocus_v_angstrom=self.defocus_v_angstrom[idx],
            astigmatism_angle_deg=self.astigmatism_angle_deg[idx],
            phase_shift_deg=self.phase_shift_deg[idx],
            source=self.source,
            path=self.path,
            tilt_angles_deg=None if self.tilt_angles_deg is None else self.tilt_angles_deg[idx],
        )

    def summary(self) -> dict[str, object]:
        """A small JSON-able description for run records (source, file, range in Å)."""
        mean = self.mean_defocus_angstrom
        return {
            "source": self.source,
            "file": None if self.path is None else str(self.path),
            "n_views": self.n_views,
            "defocus_min_angstrom": round(float(mean.min()), 1),
            "defocus_max_angstrom": round(float(mean.max()), 1),
            "max_astigmatism_angstrom": round(
                float(np.max(np.abs(self.defocus_u_angstrom - self.defocus_v_angstrom))), 1),
        }


def constant_defocus(defocus_angstrom: float, n_views: int) -> DefocusTable:
    """The same defocus (Å, > 0 = underfocus), no astigmatism, for ``n_views`` views."""
    value = float(defocus_angstrom)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"defocus must be a positive number of Å (underfocus), got {defocus_angstrom!r}; "
            "e.g. --defocus 30000 for 3 µm."
        )
    full = np.full(int(n_views), value)
    zeros = np.zeros(int(n_views))
    return DefocusTable(full, full.copy(), zeros, zeros.copy(), "constant")


def _numeric_rows(path: Path, text: str) -> tuple[list[list[float]], list[int], bool]:
    """Rows of numbers (and their 1-based line numbers) and whether '#' comments appear."""
    rows: list[list[float]] = []
    numbers: list[int] = []
    has_comments = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            has_comments = True
            continue
        try:
            values = [float(v) for v in stripped.split()]
        except ValueError:
            raise ValueError(
                f"{str(path)!r}, line {number}: cannot read {stripped[:60]!r} as numbers; a "
                "defocus file is an IMOD .defocus, a CTFFIND4 output or an AreTomo _CTF.txt."
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{str(path)!r}, line {number}: non-finite value in {stripped!r}.")
        rows.append(values)
        numbers.append(number)
    return rows, numbers, has_comments


def _is_int(value: float) -> bool:
    return float(value).is_integer()


def read_defocus_file(path: str | os.PathLike[str], n_views: int) -> DefocusTable:
    """Per-view defocus of an ``n_views``-view stack from an IMOD, CTFFIND4 or AreTomo file.

    The format is read from the content (module docstring): ``#`` comment lines mean
    CTFFIND4 or AreTomo (AreTomo when a row has 8 columns or a comment names AreTomo or
    ``dfHand``); otherwise an IMOD ``.defocus`` file, whose first line carries its version.

    Parameters
    ----------
    path
        The defocus file.
    n_views
        Number of views of the stack (before any exclusion).

    Returns
    -------
    DefocusTable
        ``n_views`` entries in stack order; defocus in Å, angles in degrees.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be read as any of the formats, gives a non-positive defocus, or its
        views do not match the stack: another number of rows (CTFFIND4/AreTomo), views
        beyond ``n_views``, or views that no entry covers (IMOD). The message names the file,
        the counts and the fix.
    """
    path = Path(path)
    check_readable_file(path, "defocus file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{str(path)!r} is not a text file ({err}); --defocus-file takes an "
                         "IMOD .defocus, a CTFFIND4 output .txt or an AreTomo _CTF.txt.") from err
    rows, numbers, has_comments = _numeric_rows(path, text)
    if not rows:
        raise ValueError(f"{str(path)!r} holds no defocus values (empty or comments only).")
    if has_comments:
        lowered = text.lower()
        aretomo = any(len(r) == 8 for r in rows) or "aretomo" in lowered or "dfhand" in lowered
        table = _read_ctffind_like(path, rows, numbers, n_views, "aretomo" if aretomo else
                                   "ctffind4")
    else:
        table = _read_imod(path, rows, numbers, n_views)
    bad = np.flatnonzero((table.defocus_u_angstrom <= 0) | (table.defocus_v_angstrom <= 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{str(path)!r}: view {i + 1} has defocus {table.defocus_u_angstrom[i]:.1f} / "
            f"{table.defocus_v_angstrom[i]:.1f} Å; cryowedge needs underfocus (> 0). Fix or "
            "re-estimate that view, or exclude it with --exclude."
        )
    logger.info("%s: %s defocus of %d views, %.0f-%.0f Å", path.name, table.source,
                table.n_views, table.mean_defocus_angstrom.min(), table.mean_defocus_angstrom.max())
    return table


def _read_ctffind_like(path: Path, rows: list[list[float]], numbers: list[int], n_views: int,
                       source: str) -> DefocusTable:
    """CTFFIND4 / AreTomo rows: number, defocus1 Å, defocus2 Å, azimuth °, phase rad, ..."""
    for row, number in zip(rows, numbers, strict=True):
        if len(row) < 5:
            raise ValueError(
                f"{str(path)!r}, line {number}: expected at least 5 columns (micrograph number, "
                f"defocus 1 Å, defocus 2 Å, azimuth °, phase shift rad), got {len(row)}."
            )
    data = np.asarray([r[:5] for r in rows], dtype=np.float64)
    index = data[:, 0]
    if not all(_is_int(v) for v in index):
        raise ValueError(f"{str(path)!r}: the first column must number the images, got "
                         f"{index[:5].tolist()}.")
    ordinal = index.astype(np.int64) - int(index.min())
    if np.unique(ordinal).size != ordinal.size or ordinal.max() != ordinal.size - 1:
        raise ValueError(
            f"{str(path)!r}: the image numbers {index.astype(int).tolist()[:10]}... are not one "
            "contiguous run without repeats; keep one row per image of the stack."
        )
    if ordinal.size != n_views:
        extra = (" AreTomo3 writes a row for every raw tilt, dark frames included: remove the "
                 "rows of views missing from the stack, or pass the stack they belong to."
                 if source == "aretomo" else
                 " Run CTFFIND4 on this stack (one row per image), or pass the file that "
                 "belongs to it.")
        raise ValueError(
            f"defocus file {str(path)!r} has {ordinal.size} rows but the stack has {n_views} "
            f"views; they must match one-to-one.{extra}"
        )
    order = np.argsort(ordinal)
    data = data[order]
    return DefocusTable(
        defocus_u_angstrom=data[:, 1].copy(),
        defocus_v_angstrom=data[:, 2].copy(),
        astigmatism_angle_deg=data[:, 3].copy(),
        phase_shift_deg=np.rad2deg(data[:, 4]),
        source=source,
        path=path,
    )


def _read_imod(path: Path, rows: list[list[float]], numbers: list[int],
               n_views: int) -> DefocusTable:
    """IMOD ctfplotter ``.defocus`` (versions 1-5); defocus in nm, views 1-based ranges."""
    first = rows[0]
    version, flags = 1, 0
    data_rows, data_numbers = rows, numbers
    if len(first) == 6 and _is_int(first[5]) and first[5] >= 2:
        version = int(first[5])
        if version >= 3:  # a header line: flags 0 0.0 0.0 0.0 version
            flags = int(first[0])
            data_rows, data_numbers = rows[1:], numbers[1:]
    elif len(first) != 5:
        raise ValueError(
            f"{str(path)!r}, line {numbers[0]}: cannot tell the format: an IMOD .defocus file "
            "starts with 'view1 view2 tilt1 tilt2 defocus_nm [version]' (or the version-3 "
            "header 'flags 0 0.0 0.0 0.0 3'); CTFFIND4 and AreTomo files start with '#' lines."
        )
    if not data_rows:
        raise ValueError(f"{str(path)!r} has a header but no defocus lines.")
    n_cols = 5 + (2 if flags & _IMOD_HAS_ASTIG else 0)  # defocus2 and angle after defocus1
    n_cols += 1 if flags & _IMOD_HAS_PHASE else 0
    n_cols += 1 if flags & _IMOD_HAS_CUT_ON else 0
    starts, ends, angles, d1, d2, astig, phase = ([] for _ in range(7))
    for i, (row, number) in enumerate(zip(data_rows, data_numbers, strict=True)):
        needed = n_cols if version >= 3 else 5
        if len(row) < needed:
            raise ValueError(
                f"{str(path)!r}, line {number}: expected {needed} columns for an IMOD version-"
                f"{version} file (flags {flags}), got {len(row)}: {row}."
            )
        # version 2 carries the version number in the sixth column of its first line only
        if version < 3 and len(row) > 5 + (1 if (i == 0 and version == 2) else 0):
            raise ValueError(
                f"{str(path)!r}, line {number}: {len(row)} columns in an IMOD version-{version} "
                "file, which has 5 (view1 view2 tilt1 tilt2 defocus_nm); astigmatism needs the "
                "version-3 header line."
            )
        if not (_is_int(row[0]) and _is_int(row[1])):
            raise ValueError(f"{str(path)!r}, line {number}: view numbers must be whole "
                             f"numbers, got {row[0]} {row[1]}.")
        v1, v2 = int(row[0]), int(row[1])
        if v1 < 1 or v2 < v1:
            raise ValueError(f"{str(path)!r}, line {number}: views {v1}-{v2} are not a 1-based "
                             "range (first <= last, numbered from 1).")
        starts.append(v1)
        ends.append(v2)
        angles.append(0.5 * (row[2] + row[3]))
        d1.append(row[4] * 10.0)  # nm -> Å
        if flags & _IMOD_HAS_ASTIG:
            d2.append(row[5] * 10.0)
            a = row[6]
            astig.append(math.degrees(a) if flags & _IMOD_ASTIG_IN_RAD else a)
        else:
            d2.append(row[4] * 10.0)
            astig.append(0.0)
        if flags & _IMOD_HAS_PHASE:
            p = row[7 if flags & _IMOD_HAS_ASTIG else 5]
            phase.append(math.degrees(p) if flags & _IMOD_PHASE_IN_RAD else p)
        else:
            phase.append(0.0)
    start, end = np.asarray(starts), np.asarray(ends)
    if end.max() > n_views:
        raise ValueError(
            f"defocus file {str(path)!r} names views up to {int(end.max())} but the stack has "
            f"{n_views} views; use the .defocus file of this stack (views are numbered from 1)."
        )
    covered = np.zeros(n_views, dtype=bool)
    for a, b in zip(start, end, strict=True):
        covered[a - 1: b] = True
    if not covered.all():
        missing = np.flatnonzero(~covered) + 1
        shown = ",".join(str(v) for v in missing[:10]) + ("..." if missing.size > 10 else "")
        raise ValueError(
            f"defocus file {str(path)!r} covers {int(covered.sum())} of the stack's {n_views} "
            f"views; views {shown} have no defocus. Fit them in ctfplotter and save, or exclude "
            "them with --exclude."
        )
    sign = -1.0 if flags & _IMOD_INVERT_ANGLES else 1.0
    middle = (start + end) // 2 - 1  # 0-based view that owns each entry (as ctfphaseflip)
    order = np.argsort(middle, kind="stable")
    middle, keep = np.unique(middle[order], return_index=True)
    pick = order[keep]  # the first entry of each middle view

    def per_view(values: list[float]) -> np.ndarray:
        return np.interp(np.arange(n_views), middle, np.asarray(values)[pick])

    return DefocusTable(
        defocus_u_angstrom=per_view(d1),
        defocus_v_angstrom=per_view(d2),
        astigmatism_angle_deg=per_view(astig),
        phase_shift_deg=per_view(phase),
        source="imod",
        path=path,
        tilt_angles_deg=sign * per_view(angles),
    )


# --------------------------------------------------------------------------- exposure


@dataclass(frozen=True, eq=False)
class ViewDoses:
    """Exposure of each view of a tilt series (stack order), for dose weighting.

    Attributes
    ----------
    prior_e_per_angstrom2
        ``(n_views,)`` exposure the specimen received before the view was taken (e⁻/Å²).
    own_e_per_angstrom2
        ``(n_views,)`` exposure of the view itself (e⁻/Å²).
    source
        ``"mdoc"`` or ``"dose-per-tilt"``.
    order
        How the acquisition order was known: ``"mdoc"`` or ``"stack order (assumed)"``.
    """

    prior_e_per_angstrom2: np.ndarray
    own_e_per_angstrom2: np.ndarray
    source: str
    order: str

    def subset(self, indices: np.ndarray | list[int]) -> ViewDoses:
        """The doses of views ``indices`` (0-based); prior doses still count every view."""
        idx = np.asarray(indices, dtype=np.int64)
        return ViewDoses(self.prior_e_per_angstrom2[idx], self.own_e_per_angstrom2[idx],
                         self.source, self.order)


def find_mdoc(stack_path: str | Path, angles_path: str | Path | None = None) -> Path | None:
    """The SerialEM ``.mdoc`` of a stack: ``angles_path`` when it is one, else a sibling
    ``<stem>.mdoc``, ``<name>.mdoc`` (``TS.mrc.mdoc``) or ``<stem>.st.mdoc``, else None."""
    if angles_path is not None and Path(angles_path).suffix == ".mdoc":
        return Path(angles_path)
    stack = Path(stack_path)
    for candidate in (stack.with_suffix(".mdoc"), Path(str(stack) + ".mdoc"),
                      stack.with_suffix(".st.mdoc")):
        if candidate.exists() and candidate != stack:
            return candidate
    return None


def view_doses(
    n_views: int,
    *,
    mdoc_path: str | Path | None = None,
    dose_per_tilt: float | None = None,
) -> ViewDoses:
    """Each view's own and prior exposure (e⁻/Å²), from an ``.mdoc`` or a dose per tilt.

    The prior exposure of a view is the sum of the exposures of the views acquired before
    it. With ``mdoc_path`` the acquisition order is the mdoc's (``DateTime``, else section
    order), and the exposures are its ``ExposureDose`` values unless ``dose_per_tilt`` is
    given (then every view has that exposure). Without an mdoc the views are assumed to have
    been acquired in stack order (logged as a warning: a dose-symmetric scheme needs the
    mdoc).

    Raises
    ------
    ValueError
        Neither a dose per tilt nor an mdoc with ``ExposureDose``; an mdoc with another
        number of views than the stack; a dose per tilt that is not positive.
    """
    from cryowedge.io.tilt_files import read_mdoc

    if dose_per_tilt is not None and not (math.isfinite(dose_per_tilt) and dose_per_tilt > 0):
        raise ValueError(f"--dose-per-tilt must be a positive exposure in e/Å², got "
                         f"{dose_per_tilt!r}.")
    info = read_mdoc(mdoc_path) if mdoc_path is not None else None
    if info is not None and info.n_tilts != n_views:
        raise ValueError(
            f"{Path(mdoc_path).name} lists {info.n_tilts} images but the stack has {n_views} "  # type: ignore[arg-type]
            "views; dose weighting needs the mdoc of this stack (or --dose-per-tilt without it)."
        )
    if dose_per_tilt is not None:
        own = np.full(n_views, float(dose_per_tilt))
        source = "dose-per-tilt"
    elif info is not None and info.exposure_dose_e_per_angstrom2 is not None:
        own = np.asarray(info.exposure_dose_e_per_angstrom2, dtype=np.float64).copy()
        source = "mdoc"
    else:
        where = (f"{Path(mdoc_path).name} has no ExposureDose values" if info is not None  # type: ignore[arg-type]
                 else "no .mdoc was found next to the stack")
        raise ValueError(
            f"dose weighting needs each view's exposure, but {where}; pass --dose-per-tilt "
            "E (e/Å² per view), or drop --dose-weighting."
        )
    if info is not None:
        rank = np.asarray(info.acquisition_order, dtype=np.int64)
        order = "mdoc"
    else:
        logger.warning("dose weighting: no .mdoc, so the views are assumed to have been taken in "
                       "stack order (a dose-symmetric series needs its .mdoc for the right order)")
        rank = np.arange(n_views)
        order = "stack order (assumed)"
    by_time = np.argsort(rank, kind="stable")
    prior = np.empty(n_views)
    prior[by_time] = np.concatenate([[0.0], np.cumsum(own[by_time])[:-1]])
    return ViewDoses(prior, own, source, order)
