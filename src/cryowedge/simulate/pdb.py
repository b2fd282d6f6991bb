"""Particle density maps from atomic models (PDB or mmCIF files) as sums of Gaussian atoms.

Files are read with gemmi. Coordinates are in ångström in (x, y, z) order as in the file;
maps are ``(z, y, x)`` float32 arrays with the box centre at ``N // 2`` (docs/conventions.md).

The map is ``sum_atoms w_a · G(r - r_a; σ)`` integrated over each voxel, where ``w_a`` is
the atomic number of the element (a simple proxy for its electron-scattering strength) and
``G`` an isotropic normalised Gaussian. Each voxel therefore holds the weight "mass" that
falls inside it, and the map sums to ``Σ w_a`` (minus what falls outside the box).
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Sequence
from importlib import resources

import gemmi
import numpy as np
from numpy.typing import ArrayLike
from scipy.special import erf

from cryowedge._validation import check_finite, check_positive, check_positive_int

__all__ = [
    "ATOMIC_NUMBERS",
    "read_pdb_atoms",
    "atom_weights",
    "gaussian_atom_map",
    "load_example_particle",
]

logger = logging.getLogger(__name__)

_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
    "Fr Ra Ac Th Pa U"
).split()

#: Atomic number of each element symbol (upper case); ``D`` (deuterium) counts as H.
ATOMIC_NUMBERS: dict[str, int] = {s.upper(): z for z, s in enumerate(_SYMBOLS, start=1)}
ATOMIC_NUMBERS["D"] = 1

_WATER_NAMES = frozenset({"HOH", "WAT", "DOD", "H2O", "SOL", "TIP", "TIP3"})
_KEPT_ALTLOCS = frozenset({"\0", " ", "A", "1"})  # no alternate location, or the first one
_DATA_FILE = "1A5T.pdb.gz"


def _is_mmcif(text: str) -> bool:
    """True if ``text`` is CIF: its first line that is not blank or a comment opens a data block."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.lower().startswith("data_")
    return False


def _check_pdb_coordinates(text: str, path: str) -> None:
    """Refuse ATOM/HETATM records whose x, y, z columns (31-54) are not numbers.

    gemmi's fixed-column reader is lenient (it reads ``"11.1x4"`` as 11.1); a typo in a
    coordinate must not silently move an atom.
    """
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith(("ATOM  ", "HETATM")):
            try:
                float(line[30:38]), float(line[38:46]), float(line[46:54])
            except ValueError as exc:
                raise ValueError(
                    f"{path}, line {lineno}: cannot read x, y, z from columns 31-54 of "
                    f"{line.rstrip()!r} ({exc}). Is this a fixed-column PDB file?"
                ) from None


def _read_structure(path: str) -> gemmi.Structure:
    """Parse a PDB or mmCIF file (gzip detected by content, format by content) with gemmi."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("latin-1")
    is_cif = _is_mmcif(text)
    if not is_cif:
        _check_pdb_coordinates(text, path)
    try:
        if is_cif:
            return gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        return gemmi.read_pdb_string(text)
    except (RuntimeError, ValueError) as exc:
        lines = str(exc).strip().splitlines()
        reason = " ".join(lines[:2]) if lines else type(exc).__name__
        raise ValueError(
            f"cannot read {path} as {'mmCIF' if is_cif else 'PDB'}: {reason}. Check the file."
        ) from None


def read_pdb_atoms(
    path: str | os.PathLike[str],
    *,
    include_hetatm: bool = True,
    include_water: bool = False,
    include_hydrogens: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Read atom coordinates and elements from a PDB or mmCIF file (optionally gzipped).

    Parsing is gemmi's (:func:`gemmi.read_pdb_string`, :func:`gemmi.cif.read_string`):
    the element comes from the element column (PDB columns 77-78, mmCIF
    ``type_symbol``) or, when that is blank, from the atom name by gemmi's rules (column
    13 blank or a digit: one-letter element from column 14; ions such as ``ZN`` named by
    their element). Only the first model is read, and of alternate locations only none,
    ``A`` or ``1`` are kept. Atoms come in the structure's order (chain, residue, atom),
    which is the file order for well-formed files.

    Parameters
    ----------
    path : str or os.PathLike
        ``.pdb``/``.ent`` or ``.cif``/``.mmcif`` file, optionally gzipped (``.gz``).
        Gzip and the format are detected from the content (mmCIF starts with
        ``data_``), not from the name.
    include_hetatm : bool
        Keep ``HETATM`` records (ligands, ions).
    include_water : bool
        Keep water molecules (``HOH``, ``WAT``, ...). Off by default: crystal waters
        are not part of the particle.
    include_hydrogens : bool
        Keep H and D atoms.

    Returns
    -------
    coords_xyz_angstrom : numpy.ndarray
        ``(n, 3)`` float64 coordinates (x, y, z) in Å.
    elements : numpy.ndarray
        ``(n,)`` str element symbols, upper case (e.g. ``"C"``, ``"ZN"``; ``"X"`` when
        no element can be inferred, which :func:`atom_weights` refuses).

    Raises
    ------
    ValueError
        If the file cannot be parsed or a coordinate is not a number (the message names
        the file and, for PDB, the line), or no atom is found.
    """
    p = os.fspath(path)
    structure = _read_structure(p)
    coords: list[tuple[float, float, float]] = []
    elements: list[str] = []
    if len(structure) > 0:
        for chain in structure[0]:
            for residue in chain:
                if residue.het_flag == "H" and not include_hetatm:
                    continue
                if not include_water and residue.name.strip().upper() in _WATER_NAMES:
                    continue
                for atom in residue:
                    if atom.altloc not in _KEPT_ALTLOCS:
                        continue
                    element = atom.element.name.upper()
                    if not include_hydrogens and element in ("H", "D"):
                        continue
                    coords.append((atom.pos.x, atom.pos.y, atom.pos.z))
                    elements.append(element)
    if not coords:
        raise ValueError(
            f"no ATOM/HETATM records found in {p}; check the file or the include_* options."
        )
    xyz = np.asarray(coords, dtype=np.float64)
    if not np.isfinite(xyz).all():
        bad = int(np.flatnonzero(~np.isfinite(xyz).all(axis=1))[0])
        raise ValueError(
            f"{p}: atom {bad} (element {elements[bad]}) has a coordinate that is not a number "
            f"({xyz[bad].tolist()}); fix the file."
        )
    return xyz, np.asarray(elements, dtype=str)


def atom_weights(elements: Sequence[str] | np.ndarray) -> np.ndarray:
    """Scattering weights of elements: their atomic number (H 1, C 6, N 7, O 8, P 15, S 16).

    Parameters
    ----------
    elements : sequence of str
        ``(n,)`` element symbols (any case).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 weights.

    Raises
    ------
    ValueError
        For an unknown symbol (pass explicit ``weights`` to :func:`gaussian_atom_map`).
    """
    out = np.empty(len(elements), dtype=np.float64)
    for i, e in enumerate(elements):
        z = ATOMIC_NUMBERS.get(str(e).strip().upper())
        if z is None:
            raise ValueError(
                f"unknown element symbol {e!r} (atom {i}); fix the element columns 77-78 "
                "or pass weights= explicitly."
            )
        out[i] = z
    return out


def _axis_weights(
    pos: np.ndarray, sigma: float, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-integrated 1D Gaussian weights on a window around each position.

    Returns the first window index per atom ``(n,)`` and the weights ``(n, 2 half + 2)``,
    normalised to sum to 1 over the window.
    """
    start = np.floor(pos).astype(np.int64) - half
    offsets = np.arange(2 * half + 2)
    idx = start[:, None] + offsets[None, :]
    scale = 1.0 / (np.sqrt(2.0) * sigma)
    upper = erf((idx + 0.5 - pos[:, None]) * scale)
    lower = erf((idx - 0.5 - pos[:, None]) * scale)
    w = 0.5 * (upper - lower)
    w /= w.sum(axis=1, keepdims=True)
    return start, w


def gaussian_atom_map(
    coords_xyz_angstrom: ArrayLike,
    elements: Sequence[str] | np.ndarray | None = None,
    *,
    pixel_size_angstrom: float,
    box_size: int | Sequence[int] | None = None,
    b_factor: float = 0.0,
    resolution_angstrom: float | None = None,
    center: bool = True,
    weights: ArrayLike | None = None,
) -> np.ndarray:
    """Density map of atoms as a sum of voxel-integrated isotropic Gaussians.

    The Gaussian width combines a B-factor blur and a resolution term (the ChimeraX
    ``molmap`` choice σ = resolution / (π √2))::

        σ² = B / (8 π²) + (resolution / (π √2))²      (Å²)

    (a Gaussian of std σ has the Fourier envelope ``exp(-2 π² σ² k²)``, which equals the
    B-factor envelope ``exp(-B k² / 4)`` for ``σ² = B / (8π²)``). Each atom is
    splatted on a local window of ±(4σ + 1) voxels with per-axis erf weights (exact
    voxel integrals, separable), so the cost is ``O(n_atoms · window³)``.

    Parameters
    ----------
    coords_xyz_angstrom : array_like
        ``(n, 3)`` atom coordinates (x, y, z) in Å.
    elements : sequence of str, optional
        ``(n,)`` element symbols; weights are atomic numbers (:func:`atom_weights`).
        Ignored when ``weights`` is given.
    pixel_size_angstrom : float
        Voxel size (Å).
    box_size : int or (nz, ny, nx), optional
        Output shape. Default: the smallest even cube that holds every atom with its
        Gaussian tail (for ``center=False`` it must be given or it is sized to hold
        all positive coordinates).
    b_factor : float
        Extra isotropic B-factor (Å², >= 0).
    resolution_angstrom : float, optional
        Target resolution (Å); default ``2 * pixel_size_angstrom`` (Nyquist), which
        keeps the map free of aliasing.
    center : bool
        If True, shift the weighted centroid of the atoms to the box centre
        (voxel ``N // 2`` per axis). If False, the coordinate origin (0, 0, 0) Å is
        the centre of voxel index (0, 0, 0), the MRC convention with origin 0.
    weights : array_like, optional
        ``(n,)`` explicit per-atom weights (e.g. electron form factors).

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 map in weight units per voxel; its sum is ``Σ weights``
        less any mass falling outside the box (logged as a warning if > 0.1 %).
    """
    coords = np.asarray(coords_xyz_angstrom, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 3 or len(coords) == 0:
        raise ValueError(
            f"coords_xyz_angstrom must have shape (n, 3) with n >= 1, got {coords.shape}."
        )
    if not np.isfinite(coords).all():  # check_finite imports torch: only call it to report
        check_finite(coords, "coords_xyz_angstrom")
    check_positive(pixel_size_angstrom, "pixel_size_angstrom")
    check_positive(b_factor, "b_factor", allow_zero=True)
    if resolution_angstrom is None:
        resolution_angstrom = 2.0 * pixel_size_angstrom
    check_positive(resolution_angstrom, "resolution_angstrom")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
    elif elements is not None:
        w = atom_weights(elements)
    else:
        raise ValueError("pass elements (to weight atoms by atomic number) or weights=.")
    if w.shape != (len(coords),):
        raise ValueError(
            f"need one weight/element per atom: {len(coords)} atoms but {w.shape[0]} weights."
        )

    sigma_a = np.sqrt(b_factor / (8 * np.pi**2) + (resolution_angstrom / (np.pi * np.sqrt(2))) ** 2)
    sigma = sigma_a / pixel_size_angstrom  # voxels
    half = int(np.ceil(4.0 * sigma + 1.0))

    pos = coords[:, ::-1] / pixel_size_angstrom  # (z, y, x) voxel units
    if center:
        centroid = (w[:, None] * pos).sum(axis=0) / w.sum()
        pos = pos - centroid
    if box_size is None:
        if center:
            extent = np.abs(pos).max() + half + 1
            n = 2 * int(np.ceil(extent))
            shape = (n, n, n)
        else:
            shape = tuple(int(np.ceil(v)) + half + 2 for v in np.maximum(pos.max(axis=0), 0))
    elif isinstance(box_size, (int, np.integer)):
        check_positive_int(box_size, "box_size")
        shape = (int(box_size),) * 3
    else:
        shape = tuple(int(v) for v in box_size)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(
                f"box_size must be an int or 3 positive ints (z, y, x), got {box_size!r}."
            )
    if center:
        pos = pos + np.array([n // 2 for n in shape], dtype=np.float64)

    total = np.zeros(int(np.prod(shape)), dtype=np.float64)
    window = 2 * half + 2
    chunk = max(1, 4_000_000 // window**3)
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    for s in range(0, len(pos), chunk):
        p = pos[s : s + chunk]
        ww = w[s : s + chunk]
        parts = [_axis_weights(p[:, a], sigma, half) for a in range(3)]
        (sz, wz), (sy, wy), (sx, wx) = parts
        vals = (
            ww[:, None, None, None]
            * wz[:, :, None, None]
            * wy[:, None, :, None]
            * wx[:, None, None, :]
        )
        offs = np.arange(window)
        iz = sz[:, None] + offs
        iy = sy[:, None] + offs
        ix = sx[:, None] + offs
        valid = (
            ((iz >= 0) & (iz < shape[0]))[:, :, None, None]
            & ((iy >= 0) & (iy < shape[1]))[:, None, :, None]
            & ((ix >= 0) & (ix < shape[2]))[:, None, None, :]
        )
        flat = (
            iz[:, :, None, None] * strides[0]
            + iy[:, None, :, None] * strides[1]
            + ix[:, None, None, :] * strides[2]
        )
        total += np.bincount(flat[valid], weights=vals[valid], minlength=total.size)
    out = total.reshape(shape)
    lost = 1.0 - out.sum() / w.sum() if w.sum() != 0 else 0.0
    if lost > 1e-3:
        logger.warning(
            "gaussian_atom_map: %.2f %% of the atom weight falls outside the box %s; "
            "enlarge box_size.",
            100 * lost,
            shape,
        )
    return out.astype(np.float32)


def load_example_particle(
    pixel_size_angstrom: float = 10.0,
    *,
    box_size: int | None = None,
    resolution_angstrom: float | None = None,
    b_factor: float = 0.0,
) -> np.ndarray:
    """Density map of the bundled PDB entry 1A5T (about 37 kDa), centred in its box.

    Waters are dropped; hydrogens, the Zn ion and all protein atoms are kept. See
    ``cryowedge/simulate/data/README.md`` for provenance (PDB data, CC0).

    Parameters
    ----------
    pixel_size_angstrom : float
        Voxel size (Å). At the default 10 Å the particle spans about 8 voxels.
    box_size : int, optional
        Cube side; default the smallest even cube that holds the particle.
    resolution_angstrom : float, optional
        Gaussian width as in :func:`gaussian_atom_map` (default 2 × voxel size).
    b_factor : float
        Extra B-factor (Å²).

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 map, weighted centroid at voxel ``N // 2``, in units of
        atomic number per voxel.
    """
    ref = resources.files("cryowedge.simulate").joinpath("data", _DATA_FILE)
    with resources.as_file(ref) as path:
        coords, elements = read_pdb_atoms(path)
    return gaussian_atom_map(
        coords,
        elements,
        pixel_size_angstrom=pixel_size_angstrom,
        box_size=box_size,
        b_factor=b_factor,
        resolution_angstrom=resolution_angstrom,
        center=True,
    )
