"""RELION STAR + MRCS particle stacks in and out of :class:`~cryowedge.spa.particles.ParticleStack`.

**Reading** (:func:`read_relion_particles`). The STAR file is read with ``starfile``. Two
layouts are understood:

* RELION 3.1+: a ``data_optics`` block (``rlnOpticsGroup``, ``rlnImagePixelSize``,
  ``rlnVoltage``, ``rlnSphericalAberration``, ``rlnAmplitudeContrast``, …) and a
  ``data_particles`` block whose ``rlnOpticsGroup`` column points into it. Optics values are
  copied to every particle of the group (a column present in the particle table wins).
* RELION ≤ 3.0 (one table): the optics values sit in the particle table; the pixel size is
  ``rlnDetectorPixelSize`` (µm) × 10⁴ / ``rlnMagnification`` Å (or ``rlnImagePixelSize``).

Columns used (all others are kept in :attr:`ParticleStack.metadata` and written back):

=============================================  ==============================================
``rlnImageName``                               ``"index@stack.mrcs"``, index from 1; a name
                                               without ``@`` is a single-image file
``rlnAngleRot/Tilt/Psi``                       degrees → ``rotations`` (all three or none)
``rlnOriginXAngst/YAngst`` (``rlnOriginX/Y``)  Å (pixels) → ``shifts_px = −origin / px``
``rlnDefocusU/V``, ``rlnDefocusAngle``         Å, Å, degrees (angle default 0)
``rlnVoltage``, ``rlnSphericalAberration``     kV, mm
``rlnAmplitudeContrast``                       fraction
``rlnCtfBfactor``, ``rlnCtfScalefactor``       Å², factor (default 0, 1)
``rlnPhaseShift``                              degrees (default 0)
``rlnRandomSubset``                            half set 1 or 2
``rlnClassNumber``, ``rlnOpticsGroup``         labels
=============================================  ==============================================

Stack paths are resolved against ``image_root`` (default: the STAR file's folder); RELION
itself resolves them against its project directory, so pass ``image_root=<project>`` for a
STAR file inside a job folder. ``stack_paths`` renames individual stacks (e.g. a file that
was renamed after the STAR was written). Every problem (missing columns, a missing stack,
an index beyond a stack, images of different sizes, a non-square box) is reported before
any image is read.

**Writing** (:func:`write_relion_particles`): one MRCS stack (``ispg = 0``, the pixel size
as voxel size) and a RELION 3.1 STAR file (``data_optics`` + ``data_particles``), each
written atomically. Not written: ``inverted_contrast`` and the aperture (RELION has no
column for them; pass them to the reader again).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import pandas as pd
import starfile

from cryowedge.geometry.rotations import euler_zyz_to_matrix
from cryowedge.io._atomic import _check_can_write, atomic_write
from cryowedge.io.mrc import write_mrc
from cryowedge.spa.particles import CTFParams, ParticleStack

__all__ = [
    "read_relion_particles",
    "write_relion_particles",
    "ANGLE_COLUMNS",
    "ORIGIN_ANGSTROM_COLUMNS",
    "ORIGIN_PIXEL_COLUMNS",
    "DEFOCUS_COLUMNS",
    "OPTICS_CTF_COLUMNS",
]

logger = logging.getLogger(__name__)

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGIN_ANGSTROM_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst")
ORIGIN_PIXEL_COLUMNS = ("rlnOriginX", "rlnOriginY")
DEFOCUS_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
OPTICS_CTF_COLUMNS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
_OPTIONAL_CTF_COLUMNS = {
    "rlnCtfBfactor": "b_factor_angstrom2",
    "rlnCtfScalefactor": "scale",
    "rlnPhaseShift": "phase_shift_deg",
}
_PIXEL_SIZE_COLUMNS = ("rlnImagePixelSize", "rlnDetectorPixelSize", "rlnMagnification")
# Columns this module interprets (not kept in the metadata).
_USED_COLUMNS = frozenset(
    {
        "rlnImageName",
        *ANGLE_COLUMNS,
        *ORIGIN_ANGSTROM_COLUMNS,
        *ORIGIN_PIXEL_COLUMNS,
        *DEFOCUS_COLUMNS,
        *OPTICS_CTF_COLUMNS,
        *_OPTIONAL_CTF_COLUMNS,
        *_PIXEL_SIZE_COLUMNS,
        "rlnRandomSubset",
        "rlnClassNumber",
        "rlnOpticsGroup",
        "rlnOpticsGroupName",
        "rlnImageSize",
        "rlnImageDimensionality",
    }
)
#: Above this many bytes of images the reader keeps a memory map instead of a copy (mmap=None).
MMAP_THRESHOLD_BYTES = 1 << 30
_PIXEL_SIZE_RTOL = 0.01  # STAR and MRC header pixel sizes that differ more are reported


# --------------------------------------------------------------------------- STAR tables


def _read_star(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"STAR file not found: {str(path)!r}.")
    try:
        return starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises assorted errors on malformed files
        raise ValueError(f"cannot read {str(path)!r} as a STAR file: {exc}") from None


def _tables(data: dict[str, Any], path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particle table and the optics table (or None) of a STAR file."""
    tables = {k: v for k, v in data.items() if isinstance(v, pd.DataFrame)}
    optics = tables.get("optics")
    if "particles" in tables:
        particles = tables["particles"]
    else:
        with_names = [v for k, v in tables.items() if k != "optics" and "rlnImageName" in v.columns]
        if len(with_names) != 1:
            names = ", ".join(f"data_{k}" for k in tables) or "none"
            raise ValueError(
                f"{str(path)!r}: cannot tell which block holds the particles (blocks: {names}); "
                "the particle table must be data_particles or the only table with rlnImageName."
            )
        particles = with_names[0]
    if len(particles) == 0:
        raise ValueError(f"{str(path)!r} holds no particles.")
    if "rlnImageName" not in particles.columns:
        raise ValueError(
            f"{str(path)!r} has no rlnImageName column; a particle STAR file names each image "
            "as 'index@stack.mrcs'."
        )
    return particles.reset_index(drop=True), optics


def _merge_optics(particles: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> pd.DataFrame:
    """The particle table with the optics-group values copied onto each particle."""
    if optics is None or len(optics) == 0:
        return particles
    if "rlnOpticsGroup" not in optics.columns:
        raise ValueError(f"{str(path)!r}: the data_optics block has no rlnOpticsGroup column.")
    groups = pd.to_numeric(optics["rlnOpticsGroup"], errors="coerce")
    if "rlnOpticsGroup" in particles.columns:
        wanted = pd.to_numeric(particles["rlnOpticsGroup"], errors="coerce")
    elif len(optics) == 1:
        wanted = pd.Series(np.repeat(groups.iloc[0], len(particles)))
    else:
        raise ValueError(
            f"{str(path)!r}: data_optics has {len(optics)} groups but the particles have no "
            "rlnOpticsGroup column to say which one each belongs to."
        )
    known = set(groups.dropna().astype(int).tolist())
    unknown = sorted(set(wanted.dropna().astype(int).tolist()) - known)
    if wanted.isna().any() or unknown:
        raise ValueError(
            f"{str(path)!r}: particles refer to optics group(s) "
            f"{unknown or 'that are not numbers'} absent from data_optics "
            f"(groups {sorted(known)})."
        )
    merged = particles.copy()
    lookup = optics.assign(rlnOpticsGroup=groups.astype(int)).set_index("rlnOpticsGroup")
    for column in lookup.columns:
        if column not in merged.columns:
            merged[column] = lookup[column].reindex(wanted.astype(int).to_numpy()).to_numpy()
    merged["rlnOpticsGroup"] = wanted.astype(int).to_numpy()
    return merged


def _numeric(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{str(path)!r}: {column} of particle {i} is {df[column].iloc[i]!r}, not a number."
        )
    return values


def _constant(values: np.ndarray, what: str, path: Path) -> float:
    lo, hi = float(values.min()), float(values.max())
    if hi - lo > 1e-6 * max(abs(hi), 1e-12):
        raise ValueError(
            f"{str(path)!r}: {what} varies between particles ({lo:g} … {hi:g}); a ParticleStack "
            "has one pixel size: rescale the particles to a common pixel size or split the file "
            "by optics group."
        )
    return float(np.median(values))


def _star_pixel_size(df: pd.DataFrame, path: Path) -> float | None:
    if "rlnImagePixelSize" in df.columns:
        return _constant(_numeric(df, "rlnImagePixelSize", path), "rlnImagePixelSize", path)
    if "rlnDetectorPixelSize" in df.columns and "rlnMagnification" in df.columns:
        px = (
            _numeric(df, "rlnDetectorPixelSize", path)
            * 1e4
            / _numeric(df, "rlnMagnification", path)
        )
        return _constant(px, "rlnDetectorPixelSize × 10⁴ / rlnMagnification", path)
    return None


# --------------------------------------------------------------------------- image names


def _parse_image_names(names: Sequence[Any], path: Path) -> tuple[np.ndarray, list[str]]:
    """0-based section indices ``(P,)`` and stack names of ``index@stack`` entries."""
    index = np.empty(len(names), dtype=np.int64)
    files: list[str] = []
    for i, raw in enumerate(names):
        name = str(raw).strip()
        head, sep, tail = name.partition("@")
        if sep and head.strip().isdigit():
            k = int(head)
            if k < 1:
                raise ValueError(
                    f"{str(path)!r}: rlnImageName of particle {i} is {name!r}; image numbers in "
                    "a stack start at 1."
                )
            index[i] = k - 1
            files.append(tail.strip())
        elif sep:
            raise ValueError(
                f"{str(path)!r}: rlnImageName of particle {i} is {name!r}; expected "
                "'index@stack.mrcs' with a whole number before '@'."
            )
        else:
            index[i] = -1  # a single-image file
            files.append(name)
        if not files[-1]:
            raise ValueError(
                f"{str(path)!r}: rlnImageName of particle {i} names no file: {name!r}."
            )
    return index, files


def _resolve(
    name: str,
    star_dir: Path,
    image_root: Path | None,
    stack_paths: Mapping[str, Any],
) -> Path:
    if name in stack_paths:
        return Path(stack_paths[name])
    p = Path(name)
    if p.is_absolute():
        return p
    return (image_root if image_root is not None else star_dir) / p


def _open_stack(path: Path, permissive: bool) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.mmap(path, mode="r", permissive=permissive)
        except (ValueError, EOFError) as err:
            raise ValueError(
                f"cannot read particle stack {str(path)!r} as MRC: mrcfile says: {err}"
                + ("" if permissive else "; try permissive=True for a non-standard header.")
            ) from err
    for item in caught:
        logger.warning("mrcfile warning for %s: %s", path, item.message)
    if mrc.data is None:
        mrc.close()
        raise ValueError(f"particle stack {str(path)!r} has no readable data block.")
    return mrc


# --------------------------------------------------------------------------- read


def read_relion_particles(
    star_path: str | os.PathLike[str],
    *,
    ctf: bool = True,
    pixel_size_angstrom: float | None = None,
    image_root: str | os.PathLike[str] | None = None,
    stack_paths: Mapping[str, str | os.PathLike[str]] | None = None,
    inverted_contrast: bool = False,
    aperture_cutoff_per_angstrom: float | None = None,
    mmap: bool | None = None,
    permissive: bool = False,
) -> ParticleStack:
    """Read a RELION particle STAR file and the MRCS stack(s) it names.

    Parameters
    ----------
    star_path : str or os.PathLike
        The ``.star`` file (RELION 3.1+ with ``data_optics``, or an older single table).
    ctf : bool
        Read the CTF parameters (default). Needs ``rlnDefocusU``, ``rlnDefocusV``,
        ``rlnVoltage``, ``rlnSphericalAberration`` and ``rlnAmplitudeContrast`` (in the
        particle or the optics table); ``False`` reads images and poses only.
    pixel_size_angstrom : float, optional
        Override the pixel size (Å). Default: the STAR file's (``rlnImagePixelSize``, or
        ``rlnDetectorPixelSize`` × 10⁴ / ``rlnMagnification``), else the stack's MRC header.
    image_root : str or os.PathLike, optional
        Folder that relative stack paths are resolved against (default: the STAR file's
        folder; for a RELION job's STAR file pass the RELION project folder).
    stack_paths : mapping, optional
        ``{name in rlnImageName: actual path}`` for stacks stored elsewhere or renamed.
    inverted_contrast : bool
        Whether dense matter is bright in the images (RELION's usual extraction); stored in
        the stack, it sets the CTF's sign (see :class:`ParticleStack`). Default ``False``.
    aperture_cutoff_per_angstrom : float, optional
        Objective-aperture cut-off (cycles/Å) stored with the CTF parameters.
    mmap : bool or None
        Keep the images as a read-only memory map of the stack file instead of a copy in
        memory. Possible when a single float32 stack is referenced whole and in order;
        ``None`` (default) does so for stacks above ``MMAP_THRESHOLD_BYTES`` (1 GiB).
        Otherwise only the referenced images are read.
    permissive : bool
        Open the stacks with ``mrcfile``'s permissive mode (non-standard headers).

    Returns
    -------
    ParticleStack
        ``images`` ``(P, n, n)`` float32 in STAR row order, pixel size (Å), rotations (or
        ``None`` without angle columns), ``shifts_px`` ``(P, 2)`` = ``−(originY, originX) /
        pixel size``, CTF parameters (or ``None`` with ``ctf=False``), half sets, classes,
        optics groups and the other columns as ``metadata``.

    Raises
    ------
    FileNotFoundError
        The STAR file does not exist.
    ValueError
        Before reading any image: CTF columns missing with ``ctf=True`` (named, with the
        way out), only some of the angle columns, a missing stack file (named, with the path
        tried), an image index beyond its stack, stacks of different image sizes or
        non-square images, no pixel size anywhere, a value that is not a number.
    """
    path = Path(star_path)
    data = _read_star(path)
    particles, optics = _tables(data, path)
    df = _merge_optics(particles, optics, path)
    n_part = len(df)

    # --- columns first: every error before any image is touched --------------------------
    angle_present = [c for c in ANGLE_COLUMNS if c in df.columns]
    if angle_present and len(angle_present) != 3:
        missing = [c for c in ANGLE_COLUMNS if c not in df.columns]
        raise ValueError(
            f"{str(path)!r} has {', '.join(angle_present)} but not {', '.join(missing)}; "
            "give all three Euler angles (degrees) or none."
        )
    ctf_params: CTFParams | None = None
    if ctf:
        required = ("rlnDefocusU", "rlnDefocusV", *OPTICS_CTF_COLUMNS)
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise ValueError(
                f"{str(path)!r} lacks the CTF column(s) {', '.join(missing)} (needed: "
                f"{', '.join(required)}, in the particle or optics table); add them (e.g. by "
                "CTF estimation) or pass ctf=False to read the particles without CTF."
            )
        values: dict[str, Any] = {
            "defocus_u_angstrom": _numeric(df, "rlnDefocusU", path),
            "defocus_v_angstrom": _numeric(df, "rlnDefocusV", path),
            "astigmatism_angle_deg": (
                _numeric(df, "rlnDefocusAngle", path) if "rlnDefocusAngle" in df.columns else 0.0
            ),
            "voltage_kv": _numeric(df, "rlnVoltage", path),
            "spherical_aberration_mm": _numeric(df, "rlnSphericalAberration", path),
            "amplitude_contrast": _numeric(df, "rlnAmplitudeContrast", path),
        }
        for column, field in _OPTIONAL_CTF_COLUMNS.items():
            if column in df.columns:
                values[field] = _numeric(df, column, path)
        try:
            ctf_params = CTFParams(
                **values, aperture_cutoff_per_angstrom=aperture_cutoff_per_angstrom
            )
        except ValueError as err:
            raise ValueError(f"{str(path)!r}: {err}") from None

    index, names = _parse_image_names(df["rlnImageName"].tolist(), path)
    star_dir = path.resolve().parent
    root = None if image_root is None else Path(image_root)
    remap = dict(stack_paths or {})
    unique = list(dict.fromkeys(names))
    resolved = {name: _resolve(name, star_dir, root, remap) for name in unique}
    for name, stack_file in resolved.items():
        if not stack_file.is_file():
            first = names.index(name)
            entry = df["rlnImageName"].iloc[first]
            raise ValueError(
                f"particle stack {str(stack_file)!r} (rlnImageName {entry!r} of particle {first} "
                f"in {str(path)!r}) does not exist; pass image_root= (the folder relative paths "
                f"start from) or stack_paths={{{name!r}: <actual file>}}."
            )

    # --- open the stacks (headers + lazy memory maps) -----------------------------------
    stacks: dict[str, Any] = {}
    try:
        shape: tuple[int, int] | None = None
        first_file = ""
        header_px: float | None = None
        for name in unique:
            mrc = _open_stack(resolved[name], permissive)
            stacks[name] = mrc
            arr = mrc.data
            dims = arr.shape[-2:]
            if arr.ndim not in (2, 3):
                raise ValueError(
                    f"particle stack {str(resolved[name])!r} holds a {arr.ndim}D array "
                    f"{arr.shape}; expected a (n_images, ny, nx) stack or one (ny, nx) image."
                )
            if shape is None:
                shape, first_file = dims, str(resolved[name])
                vx = float(mrc.voxel_size.x)
                header_px = vx if vx > 0 else None
            elif dims != shape:
                raise ValueError(
                    f"particles of different sizes: {first_file!r} holds {shape[0]}×{shape[1]} "
                    f"images, {str(resolved[name])!r} holds {dims[0]}×{dims[1]} (y × x); "
                    "re-extract them with one box size."
                )
            n_sections = 1 if arr.ndim == 2 else arr.shape[0]
            rows = [i for i, f in enumerate(names) if f == name]
            idx = index[rows]
            if arr.ndim == 3 and np.any(idx < 0):
                i = rows[int(np.argmax(idx < 0))]
                raise ValueError(
                    f"rlnImageName of particle {i} is {df['rlnImageName'].iloc[i]!r} without an "
                    f"image number, but {str(resolved[name])!r} holds {n_sections} images; write "
                    "it as 'index@file'."
                )
            index[rows] = np.maximum(idx, 0)
            over = index[rows] >= n_sections
            if over.any():
                i = rows[int(np.argmax(over))]
                raise ValueError(
                    f"particle {i} ({df['rlnImageName'].iloc[i]!r}) asks for image "
                    f"{index[i] + 1} of {str(resolved[name])!r}, which holds only "
                    f"{n_sections}; the STAR file and the stack do not match."
                )
        assert shape is not None
        if shape[0] != shape[1]:
            raise ValueError(
                f"the particle images are {shape[0]}×{shape[1]} (y × x); single-particle "
                "analysis needs square boxes: re-extract or pad them."
            )
        if "rlnImageSize" in df.columns:
            sizes = _numeric(df, "rlnImageSize", path)
            if np.any(sizes != shape[0]):
                raise ValueError(
                    f"{str(path)!r}: rlnImageSize {sizes.min():g}…{sizes.max():g} does not match "
                    f"the {shape[0]}-pixel images of {first_file!r}."
                )

        # --- pixel size ---------------------------------------------------------------
        star_px = _star_pixel_size(df, path)
        if pixel_size_angstrom is not None:
            px = float(pixel_size_angstrom)
            source = "pixel_size_angstrom"
        elif star_px is not None:
            px, source = star_px, "the STAR file"
        elif header_px is not None:
            px, source = header_px, f"the MRC header of {first_file!r}"
        else:
            raise ValueError(
                f"no pixel size for {str(path)!r}: the STAR file has no rlnImagePixelSize (nor "
                "rlnDetectorPixelSize and rlnMagnification) and the stack header stores none; "
                "pass pixel_size_angstrom=."
            )
        if header_px is not None and px > 0 and abs(header_px - px) > _PIXEL_SIZE_RTOL * px:
            logger.warning(
                "pixel size %.4g Å from %s differs from the stack header's %.4g Å; using %.4g Å",
                px,
                source,
                header_px,
                px,
            )

        # --- poses, labels ----------------------------------------------------------------
        rotations = None
        if angle_present:
            a = [_numeric(df, c, path) for c in ANGLE_COLUMNS]
            rotations = euler_zyz_to_matrix(a[0], a[1], a[2])
        shifts = np.zeros((n_part, 2))
        if all(c in df.columns for c in ORIGIN_ANGSTROM_COLUMNS):
            ox, oy = (_numeric(df, c, path) for c in ORIGIN_ANGSTROM_COLUMNS)
            shifts = -np.stack([oy, ox], axis=1) / px
        elif all(c in df.columns for c in ORIGIN_PIXEL_COLUMNS):
            ox, oy = (_numeric(df, c, path) for c in ORIGIN_PIXEL_COLUMNS)
            shifts = -np.stack([oy, ox], axis=1)
        shifts = shifts + 0.0  # no negative zeros

        def labels(column: str) -> np.ndarray | None:
            return _numeric(df, column, path) if column in df.columns else None

        metadata_columns = [c for c in particles.columns if c not in _USED_COLUMNS]
        metadata = particles[metadata_columns].copy() if metadata_columns else None

        # --- images ---------------------------------------------------------------------
        n = shape[0]
        images: np.ndarray
        single = len(unique) == 1 and stacks[unique[0]].data.ndim == 3
        if single:
            arr = stacks[unique[0]].data
            whole = arr.shape[0] == n_part and np.array_equal(index, np.arange(n_part))
            native_f32 = arr.dtype == np.float32 and arr.dtype.isnative
            keep = mmap if mmap is not None else arr.nbytes > MMAP_THRESHOLD_BYTES
            if keep and not (whole and native_f32):
                logger.info(
                    "%s: cannot keep a memory map (stack %s, %s, referenced %s); reading a copy",
                    path,
                    unique[0],
                    arr.dtype,
                    "whole" if whole else "in part or out of order",
                )
                keep = False
        else:
            keep = False
        if single and keep:
            images = stacks[unique[0]].data
        else:
            images = np.empty((n_part, n, n), dtype=np.float32)
            for name in unique:
                rows = np.flatnonzero(np.asarray(names) == name)
                arr = stacks[name].data
                if arr.ndim == 2:
                    images[rows] = np.asarray(arr, dtype=np.float32)[None]
                else:
                    order = np.argsort(index[rows], kind="stable")  # read in file order
                    images[rows[order]] = np.asarray(arr[index[rows][order]], dtype=np.float32)
    finally:
        for mrc in stacks.values():
            mrc.close()

    bad = ~np.isfinite(images).all(axis=(1, 2)) if not isinstance(images, np.memmap) else None
    if bad is not None and bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"image of particle {i} ({df['rlnImageName'].iloc[i]!r}) contains NaN or Inf values."
        )
    stack = ParticleStack(
        images=images,
        pixel_size_angstrom=px,
        rotations=rotations,
        shifts_px=shifts,
        ctf=ctf_params,
        half_sets=labels("rlnRandomSubset"),
        class_ids=labels("rlnClassNumber"),
        optics_groups=labels("rlnOpticsGroup"),
        inverted_contrast=inverted_contrast,
        metadata=metadata,
    )
    logger.info(
        "read %d particles of %d px at %.4g Å/px from %s (%d stack file(s)%s)",
        n_part,
        n,
        px,
        path,
        len(unique),
        ", memory-mapped" if isinstance(images, np.memmap) else "",
    )
    return stack


# --------------------------------------------------------------------------- write


def _optics_table(stack: ParticleStack) -> tuple[pd.DataFrame, np.ndarray]:
    """The ``data_optics`` table and each particle's group number ``(P,)``."""
    p = stack.n_particles
    if stack.ctf is not None:
        key = np.stack(
            [
                stack.ctf.voltage_kv,
                stack.ctf.spherical_aberration_mm,
                stack.ctf.amplitude_contrast,
            ],
            axis=1,
        )
    else:
        key = np.zeros((p, 0))
    if stack.optics_groups is not None:
        groups = np.asarray(stack.optics_groups, dtype=np.int64)
        for g in np.unique(groups):
            rows = key[groups == g]
            if rows.size and np.any(rows != rows[0]):
                raise ValueError(
                    f"optics group {g} mixes voltage / Cs / amplitude-contrast values "
                    f"({np.unique(rows, axis=0).tolist()}); give each combination its own group "
                    "(stack.replace(optics_groups=None) regroups them)."
                )
    else:
        if key.shape[1]:
            _, groups = np.unique(key, axis=0, return_inverse=True)
            groups = groups.reshape(-1).astype(np.int64) + 1
        else:
            groups = np.ones(p, dtype=np.int64)
    rows_out = []
    for g in np.unique(groups):
        first = int(np.flatnonzero(groups == g)[0])
        row: dict[str, Any] = {"rlnOpticsGroup": int(g), "rlnOpticsGroupName": f"opticsGroup{g}"}
        if stack.ctf is not None:
            row["rlnVoltage"] = float(stack.ctf.voltage_kv[first])
            row["rlnSphericalAberration"] = float(stack.ctf.spherical_aberration_mm[first])
            row["rlnAmplitudeContrast"] = float(stack.ctf.amplitude_contrast[first])
        row["rlnImagePixelSize"] = stack.pixel_size_angstrom
        row["rlnImageSize"] = stack.image_size
        row["rlnImageDimensionality"] = 2
        rows_out.append(row)
    return pd.DataFrame(rows_out), groups


def _particle_table(stack: ParticleStack, image_ref: str, groups: np.ndarray) -> pd.DataFrame:
    p = stack.n_particles
    columns: dict[str, Any] = {"rlnImageName": [f"{i + 1:06d}@{image_ref}" for i in range(p)]}
    ours: dict[str, Any] = {}
    angles = stack.angles_deg
    if angles is not None:
        for k, name in enumerate(ANGLE_COLUMNS):
            ours[name] = angles[:, k]
    origin = -stack.shifts_angstrom + 0.0  # (P, 2) (y, x) Å, no negative zeros
    ours["rlnOriginXAngst"] = origin[:, 1]
    ours["rlnOriginYAngst"] = origin[:, 0]
    if stack.ctf is not None:
        c = stack.ctf
        ours["rlnDefocusU"] = c.defocus_u_angstrom
        ours["rlnDefocusV"] = c.defocus_v_angstrom
        ours["rlnDefocusAngle"] = c.astigmatism_angle_deg
        ours["rlnCtfBfactor"] = c.b_factor_angstrom2
        ours["rlnCtfScalefactor"] = c.scale
        ours["rlnPhaseShift"] = c.phase_shift_deg
    ours["rlnOpticsGroup"] = groups
    if stack.half_sets is not None:
        ours["rlnRandomSubset"] = stack.half_sets
    if stack.class_ids is not None:
        ours["rlnClassNumber"] = stack.class_ids
    if stack.metadata is not None:
        for name in stack.metadata.columns:
            if name not in ours and name not in columns and name not in _USED_COLUMNS:
                columns[name] = stack.metadata[name].to_numpy()
    columns.update(ours)
    return pd.DataFrame(columns)


def write_relion_particles(
    star_path: str | os.PathLike[str],
    stack: ParticleStack,
    *,
    stack_path: str | os.PathLike[str] | None = None,
    overwrite: bool = True,
) -> tuple[Path, Path]:
    """Write a particle stack as an MRCS stack and a RELION 3.1 STAR file.

    Parameters
    ----------
    star_path : str or os.PathLike
        The ``.star`` file to write.
    stack : ParticleStack
        The particles.
    stack_path : str or os.PathLike, optional
        The ``.mrcs`` stack (default: ``star_path`` with suffix ``.mrcs``). ``rlnImageName``
        refers to it relative to the STAR file's folder when it lies below it, else by its
        absolute path.
    overwrite : bool
        Replace existing files (default); with ``False`` an existing file is an error before
        anything is written.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The STAR file and the stack.

    Notes
    -----
    Optics groups: ``stack.optics_groups`` if set (each must have one voltage, ``C_s`` and
    amplitude contrast), else one group per distinct combination. Columns of
    ``stack.metadata`` are written as they are. Angles are written as
    :attr:`ParticleStack.angles_deg` and shifts as ``rlnOriginX/YAngst = −(dx, dy) · pixel
    size``, with 6 decimals. Both files are written atomically (the stack first).
    """
    if not isinstance(stack, ParticleStack):
        raise TypeError(f"stack must be a ParticleStack, got {type(stack).__name__}.")
    star = Path(star_path)
    if star.suffix != ".star":
        raise ValueError(f"RELION needs STAR files to end in '.star', got {str(star)!r}.")
    mrcs = star.with_suffix(".mrcs") if stack_path is None else Path(stack_path)
    if mrcs.resolve() == star.resolve():
        raise ValueError(f"stack_path {str(mrcs)!r} is the STAR file itself; choose another name.")
    for target in (star, mrcs):
        _check_can_write(target, overwrite)
    optics, groups = _optics_table(stack)
    star_dir = star.resolve().parent
    try:
        image_ref = mrcs.resolve().relative_to(star_dir).as_posix()
    except ValueError:
        image_ref = mrcs.resolve().as_posix()
    table = _particle_table(stack, image_ref, groups)

    write_mrc(
        mrcs,
        np.asarray(stack.images, dtype=np.float32),
        voxel_size_angstrom=stack.pixel_size_angstrom,
        image_stack=True,
        overwrite=overwrite,
    )
    star.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(star, overwrite=overwrite) as tmp:
        starfile.write({"optics": optics, "particles": table}, tmp, float_format="%.6f")
    logger.info("wrote %d particles to %s and %s", stack.n_particles, star, mrcs)
    return star, mrcs
