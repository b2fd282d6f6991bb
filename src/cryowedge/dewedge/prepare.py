"""Prepare: half tomograms, sample masks and standardisation for dewedge fitting.

Step 1 of DeepDeWedge (seeds/003): split the tilt series into two halves with independent
noise, reconstruct each, and note where the sample is. Three ways in, one result:

* :func:`prepare_tilt_series` — from one or several tilt series. The views are split
  even/odd in **acquisition order** when the angles come from a SerialEM ``.mdoc`` (so both
  halves have the same dose history), else by **stack index**
  (``config.prepare.split``; :func:`cryowedge.io.even_odd.even_odd_indices`). Each half is
  reconstructed by the project's reconstruction workflow
  (:func:`cryowedge.workflows.reconstruct.reconstruct_file`: the method registry, FBP by
  default, streamed in slabs when large, ``.xf``/``.aln`` alignment, binning, view exclusion,
  and any option of :class:`~cryowedge.config.models.ReconstructConfig` passed through
  ``reconstruct_options`` — e.g. CTF correction), the half being selected by excluding the
  other half's views. The full tilt series is reconstructed too (``full.mrc``, for refining
  as the paper does) unless ``prepare.write_full`` is off. The first reconstruction fixes the
  thickness for the others, so all volumes have one shape.
* :func:`prepare_halves` — from ready-made half tomograms (the DeepDeWedge workflow), one
  pair or a list of pairs, with their tilt angles (a ``.tlt``/``.rawtlt``/``.mdoc`` file,
  the angles, or a ``(min, max)`` range). The halves are not copied.
* :func:`prepare_frames` — from dose-fractionated frames (one motion-corrected MRC of
  frames per tilt): even frames are summed into half A's views, odd frames into half B's, all
  frames into the full series (``frames_even.mrc``, ``frames_odd.mrc``, ``frames_sum.mrc``),
  which are then reconstructed as above. Both halves hold every tilt at half the dose.
* :func:`load_prepared` — the :class:`PreparedData` of an earlier run, from its
  ``prepared.yaml``.

Every check (view counts, shapes, voxel sizes, masks, output files) runs before any
reconstruction. Files (one tilt series; several get one sub-directory each, named after the
stack)::

    <out>/full.mrc         full-tilt-series tomogram (+ full.run.yaml)
    <out>/half_even.mrc    half A: even views (+ half_even.run.yaml)
    <out>/half_odd.mrc     half B: odd views (+ half_odd.run.yaml)
    <out>/mask.mrc         sample mask, int8 0/1 (mode 0)
    <out>/prepared.yaml    manifest: files, tilt angles, voxel size, stats, resolved config

All files, temporary ones included (atomic writes, resampled raw stacks), are written under
``<out>``; nothing goes to ``/tmp``. Axes: volumes ``(z, y, x)``, tilt series ``(n_tilts, y,
x)`` (docs/conventions.md).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cryowedge.config.dewedge import DewedgeConfig
from cryowedge.dewedge.mask import check_mask, make_sample_mask, mask_fraction, valid_centres
from cryowedge.dewedge.standardize import StandardizationStats, robust_stats
from cryowedge.workflows._record import ProgressFn, report_progress

__all__ = [
    "MANIFEST_NAME",
    "MIN_VIEWS_PER_HALF",
    "MeanOf",
    "PreparedData",
    "PreparedTomogram",
    "frame_paths",
    "load_prepared",
    "open_mrc_memmap",
    "prepare_frames",
    "prepare_halves",
    "prepare_tilt_series",
    "split_frame_sums",
    "split_views",
    "tilt_angles_from",
]

logger = logging.getLogger(__name__)

#: File name of the manifest in the output directory.
MANIFEST_NAME = "prepared.yaml"
#: Fewest views a half tilt series may have.
MIN_VIEWS_PER_HALF = 4
_FORMAT = "cryowedge-dewedge-prepared"
_VERSION = 1

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- volumes


def open_mrc_memmap(path: PathLike) -> np.memmap:
    """Read-only ``numpy.memmap`` of an MRC volume's data block, ``(z, y, x)``.

    Uses the header only (through :func:`cryowedge.io.mrc.open_mrc_lazy`'s checks: not
    compressed, not truncated, 3D, real). The map stays valid as long as the array lives (no
    file object to keep open). Fancy indexing and ``torch.from_numpy(np.asarray(crop))`` work
    as for any NumPy array; only the pages touched are read.
    """
    import mrcfile

    from cryowedge.io.mrc import open_mrc_lazy

    lazy = open_mrc_lazy(path)  # the checks, and a one-line error for a bad file
    with mrcfile.open(lazy.path, mode="r", header_only=True) as mrc:
        header = mrc.header
        dtype = mrcfile.utils.data_dtype_from_header(header)
        offset = int(header.nbytes) + int(header.nsymbt)
    return np.memmap(lazy.path, dtype=dtype, mode="r", offset=offset, shape=lazy.shape)


class MeanOf:
    """Lazy voxel-wise mean of two ``(z, y, x)`` volumes of one shape (read on indexing).

    Stands in for the full-tilt-series tomogram when only the halves exist: FBP is linear,
    and the FBP of all views equals the mean of the FBPs of two equal halves up to their view
    weights. Indexing returns float32.
    """

    def __init__(self, a: Any, b: Any) -> None:
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"cannot average volumes of shapes {tuple(a.shape)} and "
                             f"{tuple(b.shape)}.")
        self.a, self.b = a, b
        self.shape = tuple(int(s) for s in a.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        out = np.asarray(self.a[key], dtype=np.float32) + np.asarray(self.b[key],
                                                                     dtype=np.float32)
        out *= np.float32(0.5)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)


# --------------------------------------------------------------------------- the result


def _path_for_manifest(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


@dataclass(eq=False)
class PreparedTomogram:
    """One prepared tomogram: a pair of half tomograms, its mask, angles and statistics.

    Attributes
    ----------
    name : str
        Unique name (the stack's or the first half's stem); refine writes
        ``<name>_refined.mrc``.
    half_a_path, half_b_path : pathlib.Path
        Half A (even views: the fitting input) and half B (odd views: the target).
    mask_path : pathlib.Path
        Sample mask, 0/1, same shape.
    full_path : pathlib.Path or None
        Full-tilt-series tomogram, if prepared.
    shape : tuple of int
        ``(z, y, x)`` of every volume of the pair.
    voxel_size_angstrom, origin_angstrom : tuple of float
        ``(z, y, x)`` in Å (from half A's header).
    tilt_angles_deg : numpy.ndarray
        ``(n,)`` degrees: the tilt angles of the whole series (or a ``(min, max)`` pair), from
        which the canonical missing wedge is made (only the range matters; asymmetric ranges
        are kept).
    tilt_axis_angle_deg : float
        In-plane angle of the tilt axis in the tomogram, degrees from ``+y`` (0 for cryowedge
        tomograms; see :func:`cryowedge.geometry.wedge.wedge_mask`).
    stats : StandardizationStats
        Standardisation of the pair (pooled over both halves, inside the mask); the fitting
        core applies ``stats.apply`` to crops of either half, refine applies it to tiles.
    half_tilt_angles_deg : tuple of numpy.ndarray or None
        The angles of half A and half B (when split here).
    split : str
        How the views were split (``"acquisition order (mdoc)"``, ``"stack order"``,
        ``"given halves"``).
    source : str or None
        The tilt series it came from.
    mask_fraction : float
        Fraction of the voxels in the mask.
    n_valid_centres : int
        Sub-tomogram centres (``subtomo_size`` cubes) with at least ``min_mask_fraction`` of
        mask (:func:`cryowedge.dewedge.mask.valid_centres`, automatic stride).

    The volumes open on first use as read-only memory maps (:attr:`half_a`, :attr:`half_b`,
    :attr:`mask`, :attr:`full`) or as lazy positioned readers (:meth:`open_lazy`).
    """

    name: str
    half_a_path: Path
    half_b_path: Path
    mask_path: Path
    full_path: Path | None
    shape: tuple[int, int, int]
    voxel_size_angstrom: tuple[float, float, float]
    origin_angstrom: tuple[float, float, float]
    tilt_angles_deg: np.ndarray
    tilt_axis_angle_deg: float = 0.0
    stats: StandardizationStats = field(default_factory=StandardizationStats.identity)
    half_tilt_angles_deg: tuple[np.ndarray, np.ndarray] | None = None
    split: str = "given halves"
    source: str | None = None
    mask_fraction: float = 1.0
    n_valid_centres: int = 0

    @cached_property
    def half_a(self) -> np.memmap:
        """Half A ``(z, y, x)``, read-only memory map."""
        return open_mrc_memmap(self.half_a_path)

    @cached_property
    def half_b(self) -> np.memmap:
        """Half B ``(z, y, x)``, read-only memory map."""
        return open_mrc_memmap(self.half_b_path)

    @cached_property
    def mask(self) -> np.memmap:
        """Sample mask ``(z, y, x)`` (0/1), read-only memory map."""
        return open_mrc_memmap(self.mask_path)

    @cached_property
    def full(self) -> np.memmap | None:
        """Full-tilt-series tomogram ``(z, y, x)`` or None, read-only memory map."""
        return None if self.full_path is None else open_mrc_memmap(self.full_path)

    def open_lazy(self, which: str) -> Any:
        """``"half_a"``, ``"half_b"``, ``"mask"`` or ``"full"`` as a
        :class:`~cryowedge.io.mrc.LazyMrcArray` (positioned reads, no address-space cost)."""
        from cryowedge.io.mrc import open_mrc_lazy

        path = {"half_a": self.half_a_path, "half_b": self.half_b_path, "mask": self.mask_path,
                "full": self.full_path}[which]
        if path is None:
            raise ValueError(f"{self.name}: no {which} tomogram was prepared.")
        return open_mrc_lazy(path)

    def to_dict(self, base: Path) -> dict[str, Any]:
        """Manifest entry (paths relative to ``base`` when inside it)."""
        halves = self.half_tilt_angles_deg
        return {
            "name": self.name,
            "half_a": _path_for_manifest(self.half_a_path, base),
            "half_b": _path_for_manifest(self.half_b_path, base),
            "mask": _path_for_manifest(self.mask_path, base),
            "full": None if self.full_path is None else _path_for_manifest(self.full_path, base),
            "shape": [int(s) for s in self.shape],
            "voxel_size_angstrom": [float(v) for v in self.voxel_size_angstrom],
            "origin_angstrom": [float(v) for v in self.origin_angstrom],
            "tilt_angles_deg": [float(a) for a in self.tilt_angles_deg],
            "tilt_range_deg": [float(np.min(self.tilt_angles_deg)),
                               float(np.max(self.tilt_angles_deg))],
            "tilt_axis_angle_deg": float(self.tilt_axis_angle_deg),
            "half_tilt_angles_deg": None if halves is None else {
                "a": [float(a) for a in halves[0]], "b": [float(a) for a in halves[1]]},
            "split": self.split,
            "source": self.source,
            "stats": self.stats.to_dict(),
            "mask_fraction": round(float(self.mask_fraction), 6),
            "n_valid_centres": int(self.n_valid_centres),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Path) -> PreparedTomogram:
        """Inverse of :meth:`to_dict`; relative paths are taken from ``base``."""
        def path(key: str) -> Path | None:
            value = data.get(key)
            return None if value is None else (base / value if not Path(value).is_absolute()
                                               else Path(value))

        halves = data.get("half_tilt_angles_deg")
        return cls(
            name=str(data["name"]), half_a_path=path("half_a"), half_b_path=path("half_b"),  # type: ignore[arg-type]
            mask_path=path("mask"), full_path=path("full"),  # type: ignore[arg-type]
            shape=tuple(int(s) for s in data["shape"]),  # type: ignore[arg-type]
            voxel_size_angstrom=tuple(float(v) for v in data["voxel_size_angstrom"]),  # type: ignore[arg-type]
            origin_angstrom=tuple(float(v) for v in data["origin_angstrom"]),  # type: ignore[arg-type]
            tilt_angles_deg=np.asarray(data["tilt_angles_deg"], dtype=np.float64),
            tilt_axis_angle_deg=float(data.get("tilt_axis_angle_deg", 0.0)),
            stats=StandardizationStats.from_dict(data["stats"]),
            half_tilt_angles_deg=None if halves is None else (
                np.asarray(halves["a"], dtype=np.float64), np.asarray(halves["b"], np.float64)),
            split=str(data.get("split", "given halves")), source=data.get("source"),
            mask_fraction=float(data.get("mask_fraction", 1.0)),
            n_valid_centres=int(data.get("n_valid_centres", 0)))


@dataclass(eq=False)
class PreparedData:
    """Everything the fitting core needs: the prepared tomograms and the resolved config.

    Attributes
    ----------
    tomograms : list of PreparedTomogram
        One per pair of halves.
    config : DewedgeConfig
        The configuration prepare ran with (saved in the manifest).
    manifest_path : pathlib.Path
        The ``prepared.yaml``.
    """

    tomograms: list[PreparedTomogram]
    config: DewedgeConfig
    manifest_path: Path

    @property
    def directory(self) -> Path:
        """The directory of the manifest."""
        return self.manifest_path.parent

    def pairs(self) -> list[tuple[np.memmap, np.memmap, np.memmap]]:
        """``[(half_a, half_b, mask), ...]`` as read-only ``(z, y, x)`` memory maps."""
        return [(t.half_a, t.half_b, t.mask) for t in self.tomograms]

    def __len__(self) -> int:
        return len(self.tomograms)

    def __iter__(self) -> Iterator[PreparedTomogram]:
        return iter(self.tomograms)

    def __getitem__(self, index: int) -> PreparedTomogram:
        return self.tomograms[index]

    def write_manifest(self, *, overwrite: bool = True) -> Path:
        """Write :attr:`manifest_path` atomically (YAML)."""
        from cryowedge._version import __version__
        from cryowedge.io._atomic import write_text_atomic

        record = {
            "format": _FORMAT,
            "version": _VERSION,
            "cryowedge_version": __version__,
            "time": _dt.datetime.now().isoformat(timespec="seconds"),
            "config": self.config.model_dump(mode="json"),
            "tomograms": [t.to_dict(self.directory) for t in self.tomograms],
        }
        return write_text_atomic(self.manifest_path, yaml.safe_dump(record, sort_keys=False),
                                 overwrite=overwrite)


def load_prepared(path: PathLike) -> PreparedData:
    """The :class:`PreparedData` of a ``prepared.yaml`` (or of the directory holding it).

    Raises
    ------
    FileNotFoundError
        No manifest, or a file it names is missing.
    ValueError
        Not a prepare manifest, or an unknown format version.
    """
    from cryowedge._validation import check_readable_file

    manifest = Path(path)
    if manifest.is_dir():
        manifest = manifest / MANIFEST_NAME
    check_readable_file(manifest, "dewedge prepare manifest")
    data = yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{str(manifest)!r} is not a dewedge prepare manifest (no 'format: "
                         f"{_FORMAT}'); give the prepared.yaml written by dewedge prepare.")
    if int(data.get("version", 0)) != _VERSION:
        raise ValueError(f"{str(manifest)!r} has manifest version {data.get('version')!r}; this "
                         f"cryowedge reads version {_VERSION}: run dewedge prepare again.")
    base = manifest.parent
    tomograms = [PreparedTomogram.from_dict(t, base) for t in data.get("tomograms") or []]
    for tomo in tomograms:
        for p in (tomo.half_a_path, tomo.half_b_path, tomo.mask_path, tomo.full_path):
            if p is not None:
                check_readable_file(p, f"{tomo.name} volume named in {manifest.name}")
    config = DewedgeConfig.model_validate(data.get("config") or {})
    return PreparedData(tomograms=tomograms, config=config, manifest_path=manifest)


# --------------------------------------------------------------------------- tilt angles


def tilt_angles_from(spec: Any) -> np.ndarray:
    """Tilt angles (degrees) from a ``.tlt``/``.rawtlt``/``.mdoc`` path, a sequence of angles,
    or a ``(min, max)`` pair (only the range sets the wedge).

    Raises
    ------
    ValueError
        Non-finite angles, angles outside ±90°, or a range of zero width (a single angle: the
        wedge would cover all of Fourier space but one plane).
    """
    if isinstance(spec, (str, os.PathLike)):
        p = Path(spec)
        if p.suffix == ".mdoc":
            from cryowedge.io.tilt_files import read_mdoc

            angles = np.asarray(read_mdoc(p).tilt_angles_deg, dtype=np.float64)
        else:
            from cryowedge.io.tilt_files import read_tilt_angles

            angles = read_tilt_angles(p)
        where = f"{p.name}"
    else:
        angles = np.asarray(spec, dtype=np.float64).ravel()
        where = "the tilt angles"
    if angles.size < 2 or not np.all(np.isfinite(angles)):
        raise ValueError(f"{where}: need at least a finite (min, max) tilt range in degrees, got "
                         f"{angles.tolist()}.")
    if np.any(np.abs(angles) > 90):
        raise ValueError(f"{where}: tilt angles must lie within ±90°, got "
                         f"[{angles.min()}, {angles.max()}].")
    if not angles.max() > angles.min():
        raise ValueError(f"{where}: the tilt range [{angles.min()}, {angles.max()}]° has zero "
                         "width, so the missing wedge would cover all of Fourier space; give the "
                         "real tilt angles (.tlt/.mdoc) or their (min, max).")
    return angles


# --------------------------------------------------------------------------- splitting


def split_views(
    n_views: int,
    acquisition_order: np.ndarray | None = None,
    exclude: str | None = None,
    *,
    name: str = "tilt series",
) -> tuple[np.ndarray, np.ndarray]:
    """Stack indices of the two halves (even, odd) after excluding ``exclude``.

    The kept views alternate in ``acquisition_order`` (rank in time of each stack view) when
    given, else in stack order (:func:`cryowedge.io.even_odd.even_odd_indices`).

    Raises
    ------
    ValueError
        A bad exclusion list, or a half with fewer than :data:`MIN_VIEWS_PER_HALF` views.
    """
    from cryowedge.io.even_odd import even_odd_indices
    from cryowedge.io.views import kept_views

    keep = kept_views(exclude, n_views)
    order = None if acquisition_order is None else np.asarray(acquisition_order)[keep]
    if keep.size < 2 * MIN_VIEWS_PER_HALF:
        a, b = (keep.size + 1) // 2, keep.size // 2
        raise ValueError(
            f"{name}: {keep.size} views (after exclusions) give halves of {a} and {b} views; "
            f"each half needs at least {MIN_VIEWS_PER_HALF} views to be reconstructed on its "
            f"own, so at least {2 * MIN_VIEWS_PER_HALF} views in all: use a tilt series with "
            "more views or exclude fewer."
        )
    even, odd = even_odd_indices(keep.size, order)
    return keep[even], keep[odd]


def _view_list(indices: np.ndarray) -> str:
    """IMOD-style 1-based list with ranges (``"1-3,7,9-10"``) of 0-based ``indices``."""
    values = sorted(int(i) + 1 for i in indices)
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ",".join(parts)


# --------------------------------------------------------------------------- shared steps


def _check_subtomo_fits(shape: Sequence[int], size: int, name: str) -> None:
    for axis, n in zip("zyx", shape, strict=True):
        if size > int(n):
            raise ValueError(
                f"{name}: sub-tomograms of {size}³ voxels do not fit the tomogram "
                f"{tuple(int(s) for s in shape)} ({axis} = {n}); choose shared.subtomo_size "
                f"<= {min(int(s) for s in shape)} (divisible by 2^depth) or a thicker tomogram."
            )


def _base_options(cfg: DewedgeConfig, tilt_axis_angle_deg: float | None,
                  reconstruct_options: dict[str, Any] | None) -> dict[str, Any]:
    """The :class:`~cryowedge.config.models.ReconstructConfig` fields every reconstruction of
    a preparation shares (method, filter, binning, device, axis, CTF correction, extras)."""
    from cryowedge.config.registry import get_method

    p = cfg.prepare
    method_fields = get_method(p.method).config.model_fields
    options: dict[str, Any] = {"method": p.method, "bin_factor": p.bin_factor,
                               "device": cfg.shared.device}
    if "filter_name" in method_fields:
        options["filter_name"] = p.filter_name
    if tilt_axis_angle_deg is not None:
        options["tilt_axis_angle_deg"] = float(tilt_axis_angle_deg)
    if p.ctf_correction != "none":
        options["ctf_correction"] = p.ctf_correction
        if p.defocus_angstrom is not None:
            options["defocus_angstrom"] = p.defocus_angstrom
    options.update(reconstruct_options or {})
    return options


def _finish_tomogram(
    *, name: str, half_a: Path, half_b: Path, full: Path | None, mask_path: Path,
    given_mask: Path | None, tilt_angles: np.ndarray, tilt_axis_angle_deg: float,
    half_angles: tuple[np.ndarray, np.ndarray] | None, split: str, source: str | None,
    config: DewedgeConfig,
) -> PreparedTomogram:
    """Mask (made or checked), valid centres and statistics of a pair whose halves exist."""
    from cryowedge.io.mrc import open_mrc_lazy, write_mrc

    a, b = open_mrc_lazy(half_a), open_mrc_lazy(half_b)
    _check_pair(a, b, name)
    shape = a.shape
    p = config.prepare
    if given_mask is not None:
        mask_source = open_mrc_lazy(given_mask)
        check_mask(mask_source, shape, name=given_mask.name)
        mask = np.asarray(mask_source[...], dtype=np.uint8)
        mask_path = given_mask
    else:
        volume = open_mrc_lazy(full) if full is not None else MeanOf(a, b)
        mask = make_sample_mask(volume, std_percentile=p.mask_std_percentile,
                                density_percentile=p.mask_density_percentile,
                                smooth_voxels=p.mask_smooth_voxels, z_crop=p.mask_z_crop)
        write_mrc(mask_path, mask.view(np.int8), voxel_size_angstrom=a.voxel_size_angstrom,
                  origin_angstrom=a.origin_angstrom, overwrite=True)
    size = config.shared.subtomo_size
    centres = valid_centres(mask, size, p.min_mask_fraction)
    if len(centres) == 0:
        raise ValueError(
            f"{name}: no {size}³ sub-tomogram holds {p.min_mask_fraction:.0%} of sample mask "
            f"(mask covers {mask.mean():.1%} of the tomogram); lower prepare.min_mask_fraction "
            "or the mask percentiles, or use a smaller shared.subtomo_size."
        )
    stats = (robust_stats([a, b], masks=mask) if config.shared.standardize == "robust"
             else StandardizationStats.identity())
    logger.info("%s: centre %.4g, scale %.4g; mask %.1f %%; %d valid sub-tomogram centres",
                name, stats.centre, stats.scale, 100 * mask.mean(), len(centres))
    return PreparedTomogram(
        name=name, half_a_path=half_a, half_b_path=half_b, mask_path=mask_path, full_path=full,
        shape=shape, voxel_size_angstrom=a.voxel_size_angstrom,
        origin_angstrom=a.origin_angstrom, tilt_angles_deg=tilt_angles,
        tilt_axis_angle_deg=float(tilt_axis_angle_deg), stats=stats,
        half_tilt_angles_deg=half_angles, split=split, source=source,
        mask_fraction=mask_fraction(mask), n_valid_centres=len(centres))


def _check_pair(a: Any, b: Any, name: str) -> None:
    """One-line errors for halves of different shapes or voxel sizes."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name}: the halves have different shapes, {a.path.name} {tuple(a.shape)} and "
            f"{b.path.name} {tuple(b.shape)} (z, y, x); reconstruct both with the same geometry "
            "and thickness."
        )
    va, vb = np.asarray(a.voxel_size_angstrom), np.asarray(b.voxel_size_angstrom)
    if not np.allclose(va, vb, rtol=1e-4, atol=0):
        raise ValueError(
            f"{name}: the halves have different voxel sizes, {a.path.name} {tuple(va)} Å and "
            f"{b.path.name} {tuple(vb)} Å (z, y, x); bin or reconstruct both the same way (or fix "
            "the header of the wrong one)."
        )
    if a.is_image_stack or b.is_image_stack:
        which = a.path.name if a.is_image_stack else b.path.name
        raise ValueError(f"{name}: {which} is an image stack (a tilt series?), not a tomogram; "
                         "give reconstructed half tomograms, or use prepare_tilt_series.")


def _unique_names(stems: Sequence[str]) -> list[str]:
    names: list[str] = []
    for stem in stems:
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.append(name)
    return names


def _as_list(value: Any, n: int, what: str) -> list[Any]:
    """``value`` repeated ``n`` times, or the per-input list it already is (a ``list``)."""
    if isinstance(value, list):
        if len(value) != n:
            raise ValueError(f"got {len(value)} {what} for {n} inputs; give one for each, or one "
                             "for all.")
        return list(value)
    return [value] * n


def _per_pair_specs(spec: Any, n: int) -> list[Any]:
    """Tilt-angle specs per pair: a list/tuple of ``n`` non-scalar specs (paths, angle lists,
    ranges) is one per pair; anything else (a path, the angles, a ``(min, max)``) is shared."""
    if (isinstance(spec, (list, tuple)) and len(spec) == n
            and all(isinstance(s, (str, os.PathLike)) or not np.isscalar(s) for s in spec)):
        return list(spec)
    return [spec] * n


# --------------------------------------------------------------------------- tilt series


def prepare_tilt_series(
    tilt_series: PathLike | Sequence[PathLike],
    output_dir: PathLike,
    *,
    angles: PathLike | Sequence[PathLike | None] | None = None,
    pixel_size_angstrom: float | None = None,
    tilt_axis_angle_deg: float | None = None,
    alignment: PathLike | Sequence[PathLike | None] | None = None,
    defocus: PathLike | Sequence[PathLike | None] | None = None,
    config: DewedgeConfig | None = None,
    reconstruct_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> PreparedData:
    """Half tomograms, full tomogram, mask and statistics from tilt series (paper step 1).

    Parameters
    ----------
    tilt_series
        One MRC tilt series ``(n_tilts, y, x)`` or a list (several tomograms fitted together;
        each gets ``<output_dir>/<stack stem>/``).
    output_dir
        Where everything is written (module docstring).
    angles
        ``.tlt``/``.rawtlt``/``.mdoc`` of each tilt series (one, or one per series; default:
        the sibling file :func:`cryowedge.io.tilt_series.load_tilt_series` finds). A
        ``.mdoc`` gives the acquisition order of the split.
    pixel_size_angstrom, tilt_axis_angle_deg
        Override the header's pixel size (Å) and the raw stack's in-plane tilt-axis angle
        (degrees), as ``cryowedge reconstruct`` does.
    alignment
        IMOD ``.xf`` or AreTomo ``.aln`` of each raw stack (one, or one per series).
    defocus
        Defocus file of each series (IMOD ``.defocus``, CTFFIND4, AreTomo ``_CTF.txt``; one, or
        one per series) for ``prepare.ctf_correction``.
    config
        The :class:`~cryowedge.config.dewedge.DewedgeConfig` (default: defaults); the
        ``prepare`` section sets the split, method, filter, thickness, binning, exclusions
        and mask, ``shared`` the sub-tomogram size checked against the volume and the
        standardisation.
    reconstruct_options
        Extra fields of the reconstruction method's config
        (:class:`~cryowedge.config.models.ReconstructConfig`, e.g. ``{"filter_name":
        "hann"}`` or CTF-correction options), applied to all three reconstructions.
    overwrite
        Replace existing outputs (each kept as ``<name>~``); otherwise they are refused
        before any work.
    progress
        ``progress(step, fraction)`` of the whole preparation.

    Returns
    -------
    PreparedData
        Also saved as ``<output_dir>/prepared.yaml``.

    Raises
    ------
    ValueError
        A half with fewer than 4 views, ``split="acquisition"`` without a ``.mdoc``,
        sub-tomograms larger than the tomogram, outputs that exist (``FileExistsError``) —
        all before the first reconstruction; a mask with no valid sub-tomogram after it.
    """
    from cryowedge.config.models import ReconstructConfig
    from cryowedge.io.even_odd import acquisition_order_of
    from cryowedge.io.tilt_series import find_angle_file, load_tilt_series
    from cryowedge.workflows.outputs import check_outputs, mrc_nbytes
    from cryowedge.workflows.reconstruct import reconstruct_file

    cfg = config if config is not None else DewedgeConfig()
    p = cfg.prepare
    stacks = [Path(tilt_series)] if isinstance(tilt_series, (str, os.PathLike)) else [
        Path(t) for t in tilt_series]
    if not stacks:
        raise ValueError("prepare_tilt_series needs at least one tilt series.")
    angle_files = _as_list(angles, len(stacks), "angle files")
    alignments = _as_list(alignment, len(stacks), "alignment files")
    defocus_files = _as_list(defocus, len(stacks), "defocus files")
    out = Path(output_dir)
    names = _unique_names([s.stem for s in stacks])
    single = len(stacks) == 1
    manifest_path = out / MANIFEST_NAME

    base_options = _base_options(cfg, tilt_axis_angle_deg, reconstruct_options)

    # ---- every check before any reconstruction
    plans = []
    all_outputs: list[Path] = [manifest_path]
    n_bytes = 65536
    for stack, angle_file, align, defocus_file, name in zip(
            stacks, angle_files, alignments, defocus_files, names, strict=True):
        if (base_options.get("ctf_correction", "none") != "none" and defocus_file is None
                and base_options.get("defocus_angstrom") is None):
            raise ValueError(
                f"{stack.name}: CTF correction {base_options['ctf_correction']!r} needs the "
                "defocus: give a defocus file (defocus=) or prepare.defocus_angstrom."
            )
        series = load_tilt_series(stack, angle_file, pixel_size_angstrom=pixel_size_angstrom,
                                  tilt_axis_angle_deg=tilt_axis_angle_deg, lazy=True)
        geometry = series.geometry
        if align is not None:  # the view count is checked now, and the aligned detector known
            from cryowedge.io.alignment import apply_alignment, load_alignment

            geometry = apply_alignment(geometry, load_alignment(align, geometry.n_tilts))
        order = acquisition_order_of(stack, angle_file)
        if p.split == "index":
            order = None
        elif p.split == "acquisition" and order is None:
            found = angle_file or find_angle_file(stack)
            raise ValueError(
                f"{stack.name}: split 'acquisition' needs the acquisition order from a SerialEM "
                f".mdoc, but the angles come from {found.name if found else 'the FEI header'}; "
                "pass the .mdoc as the angles, or use split 'index' (stack order)."
            )
        if order is not None and order.size != geometry.n_tilts:
            order = None
        split_label = "acquisition order (mdoc)" if order is not None else "stack order"
        even, odd = split_views(geometry.n_tilts, order, p.exclude_views, name=stack.name)
        ReconstructConfig(**{**base_options, "thickness": p.thickness})  # options valid now
        binned = geometry.binned(p.bin_factor) if p.bin_factor > 1 else geometry
        shape = binned.default_volume_shape(p.thickness)  # z: the x size until reconstructed
        _check_subtomo_fits(shape if p.thickness else (cfg.shared.subtomo_size, *shape[1:]),
                            cfg.shared.subtomo_size, stack.name)
        folder = out if single else out / name
        files = {"full": folder / "full.mrc" if p.write_full else None,
                 "half_a": folder / "half_even.mrc", "half_b": folder / "half_odd.mrc",
                 "mask": folder / "mask.mrc"}
        for f in files.values():
            if f is not None:
                all_outputs.append(f)
                if f.name != "mask.mrc":
                    all_outputs.append(f.with_name(f.stem + ".run.yaml"))
        n_bytes += mrc_nbytes(shape) * (3 if p.write_full else 2) + mrc_nbytes(shape, 1)
        user_excluded = (np.setdiff1d(np.arange(geometry.n_tilts),
                                      np.concatenate([even, odd])))
        plans.append({"stack": stack, "angles": angle_file, "alignment": align,
                      "defocus": defocus_file, "name": name,
                      "files": files, "even": even, "odd": odd, "excluded": user_excluded,
                      "split": split_label, "angles_deg": geometry.tilt_angles_deg})
    inputs = [x for plan in plans
              for x in (plan["stack"], plan["angles"], plan["alignment"], plan["defocus"])]
    check_outputs(all_outputs, inputs=inputs, overwrite=overwrite, n_bytes=n_bytes)

    # ---- the work
    tomograms = []
    steps = 4 if p.write_full else 3
    for t, plan in enumerate(plans):
        files, name = plan["files"], plan["name"]
        angles_deg = np.asarray(plan["angles_deg"], dtype=np.float64)
        kept = np.sort(np.concatenate([plan["even"], plan["odd"]]))
        jobs = []
        if files["full"] is not None:
            jobs.append(("full", files["full"], plan["excluded"]))
        jobs.append(("even half", files["half_a"], np.union1d(plan["excluded"], plan["odd"])))
        jobs.append(("odd half", files["half_b"], np.union1d(plan["excluded"], plan["even"])))
        thickness = p.thickness
        for j, (label, path, excluded) in enumerate(jobs):
            start = (t * steps + j) / (len(plans) * steps)
            span = 1.0 / (len(plans) * steps)
            prefix = label if single else f"{name} {label}"

            def part(step: str, fraction: float, s: float = start, w: float = span,
                     pre: str = prefix) -> None:
                report_progress(progress, f"{pre}: {step}", s + w * fraction)

            options = {**base_options, "thickness": thickness,
                       "exclude_views": _view_list(excluded) if excluded.size else None}
            extra = {} if plan["defocus"] is None else {"defocus_path": plan["defocus"]}
            reconstruct_file(plan["stack"], path, ReconstructConfig(**options),
                             angles_path=plan["angles"], pixel_size_angstrom=pixel_size_angstrom,
                             alignment_path=plan["alignment"], overwrite=overwrite,
                             progress=part if progress else None, **extra)
            if thickness is None:  # the first reconstruction fixed it: the others follow
                from cryowedge.io.mrc import open_mrc_lazy

                thickness = int(open_mrc_lazy(path).shape[0])
                _check_subtomo_fits((thickness, 1 << 30, 1 << 30), cfg.shared.subtomo_size,
                                    plan["stack"].name)
        report_progress(progress, f"{name}: mask and statistics",
                        ((t + 1) * steps - 1) / (len(plans) * steps))
        tomograms.append(_finish_tomogram(
            name=name, half_a=files["half_a"], half_b=files["half_b"], full=files["full"],
            mask_path=files["mask"], given_mask=None, tilt_angles=angles_deg[kept],
            tilt_axis_angle_deg=0.0,
            half_angles=(angles_deg[plan["even"]], angles_deg[plan["odd"]]),
            split=plan["split"], source=str(plan["stack"]), config=cfg))
    data = PreparedData(tomograms=tomograms, config=cfg, manifest_path=manifest_path)
    data.write_manifest()
    report_progress(progress, "done", 1.0)
    return data


# --------------------------------------------------------------------------- ready halves


def prepare_halves(
    halves: tuple[PathLike, PathLike] | Sequence[tuple[PathLike, PathLike]],
    output_dir: PathLike,
    *,
    tilt_angles: Any,
    masks: PathLike | Sequence[PathLike | None] | None = None,
    full: PathLike | Sequence[PathLike | None] | None = None,
    tilt_axis_angle_deg: float = 0.0,
    config: DewedgeConfig | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> PreparedData:
    """Prepare ready-made half tomograms (one pair or a list of pairs) for fitting.

    Parameters
    ----------
    halves
        ``(half_a, half_b)`` MRC paths (even/odd, or frame-split halves), or a list of pairs.
        The files are used in place (read-only), not copied.
    output_dir
        Where the masks (``mask.mrc``, or ``<name>_mask.mrc`` for several pairs) and
        ``prepared.yaml`` go.
    tilt_angles
        The wedge of each pair: a ``.tlt``/``.rawtlt``/``.mdoc`` path, the angles, or a
        ``(min, max)`` range in degrees (asymmetric ranges are kept); one for all pairs, or a
        list with one per pair.
    masks
        Optional ready-made sample masks (0/1 MRC of the same shape), one or one per pair (None
        entries are made here).
    full
        Optional full-tilt-series tomograms, one or one per pair (refine ``source="full"``).
    tilt_axis_angle_deg
        In-plane tilt-axis angle of the tomograms, degrees from ``+y`` (0 when the axis is
        ``y``, as in cryowedge and IMOD tomograms).
    config, overwrite, progress
        As :func:`prepare_tilt_series`.

    Raises
    ------
    ValueError
        Halves (or a full tomogram, or a mask) of different shape or voxel size, a bad tilt
        range, a mask that is not 0/1, sub-tomograms larger than the tomogram — before any
        mask is computed.
    """
    from cryowedge.io.mrc import open_mrc_lazy
    from cryowedge.workflows.outputs import check_outputs, mrc_nbytes

    cfg = config if config is not None else DewedgeConfig()
    if (isinstance(halves, (tuple, list)) and len(halves) == 2
            and all(isinstance(h, (str, os.PathLike)) for h in halves)):
        pairs = [(Path(halves[0]), Path(halves[1]))]  # type: ignore[arg-type]
    else:
        pairs = [(Path(a), Path(b)) for a, b in halves]  # type: ignore[misc]
    if not pairs:
        raise ValueError("prepare_halves needs at least one pair of half tomograms.")
    n = len(pairs)
    angle_specs = _per_pair_specs(tilt_angles, n)
    mask_list = _as_list(masks, n, "masks")
    full_list = _as_list(full, n, "full tomograms")
    out = Path(output_dir)
    names = _unique_names([a.stem for a, _ in pairs])
    manifest_path = out / MANIFEST_NAME

    # ---- checks before any work
    plans = []
    outputs: list[Path] = [manifest_path]
    n_bytes = 65536
    for (a_path, b_path), spec, mask, fullp, name in zip(pairs, angle_specs, mask_list,
                                                         full_list, names, strict=True):
        a, b = open_mrc_lazy(a_path), open_mrc_lazy(b_path)
        _check_pair(a, b, name)
        angles = tilt_angles_from(spec)
        if fullp is not None:
            _check_pair(a, open_mrc_lazy(fullp), f"{name} (full tomogram)")
        if mask is not None:
            check_mask(open_mrc_lazy(mask), a.shape, name=Path(mask).name)
        _check_subtomo_fits(a.shape, cfg.shared.subtomo_size, name)
        mask_out = out / ("mask.mrc" if n == 1 else f"{name}_mask.mrc")
        if mask is None:
            outputs.append(mask_out)
            n_bytes += mrc_nbytes(a.shape, 1)
        plans.append((a_path, b_path, angles, mask, fullp, name, mask_out))
    inputs = [x for plan in plans for x in (plan[0], plan[1], plan[3], plan[4])]
    check_outputs(outputs, inputs=inputs, overwrite=overwrite, n_bytes=n_bytes)

    tomograms = []
    for k, (a_path, b_path, angles, mask, fullp, name, mask_out) in enumerate(plans):
        report_progress(progress, f"{name}: mask and statistics", k / n)
        tomograms.append(_finish_tomogram(
            name=name, half_a=a_path, half_b=b_path,
            full=None if fullp is None else Path(fullp), mask_path=mask_out,
            given_mask=None if mask is None else Path(mask), tilt_angles=angles,
            tilt_axis_angle_deg=tilt_axis_angle_deg, half_angles=None, split="given halves",
            source=None, config=cfg))
    data = PreparedData(tomograms=tomograms, config=cfg, manifest_path=manifest_path)
    data.write_manifest()
    report_progress(progress, "done", 1.0)
    return data


# --------------------------------------------------------------------------- frame stacks

#: Suffixes of the frame stacks a directory of frames is searched for.
FRAME_SUFFIXES = (".mrc", ".mrcs")
_SPLIT_FRAMES = "frames (even/odd)"


def _natural_key(path: Path) -> list[Any]:
    """Sort key of a file name with its numbers compared as numbers (``TS_2`` < ``TS_10``)."""
    import re

    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", path.name)]


def frame_paths(frames: PathLike | Sequence[PathLike]) -> list[Path]:
    """The per-tilt frame stacks of ``frames``, in tilt-series (stack) order.

    Parameters
    ----------
    frames
        A list of MRC paths (used in the order given: one per tilt, in the order of the
        angle file), or one directory (every ``*.mrc``/``*.mrcs`` in it), or one glob
        pattern (``"frames/TS_01_*.mrc"``). Directory and glob entries are sorted by name
        with numbers compared as numbers (``TS_01_2.mrc`` before ``TS_01_10.mrc``).

    Raises
    ------
    ValueError
        A directory or pattern with no matching file.
    """
    import glob

    items = [frames] if isinstance(frames, (str, os.PathLike)) else list(frames)
    if len(items) == 1:
        one = Path(items[0])
        if one.is_dir():
            found = sorted((f for f in one.iterdir() if f.suffix.lower() in FRAME_SUFFIXES
                            and f.is_file()), key=_natural_key)
            if not found:
                raise ValueError(f"frame directory {str(one)!r} holds no "
                                 f"{'/'.join('*' + s for s in FRAME_SUFFIXES)} file; give the "
                                 "per-tilt frame stacks (one MRC of frames per tilt).")
            return found
        if glob.has_magic(str(items[0])):
            found = sorted((Path(f) for f in glob.glob(str(items[0]))), key=_natural_key)
            if not found:
                raise ValueError(f"no file matches the frame pattern {str(items[0])!r}.")
            return found
    return [Path(f) for f in items]


def split_frame_sums(frames: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half A, half B and full view of one tilt from its ``(n_frames, y, x)`` frames.

    Half A sums the even frames (0, 2, …), half B the odd frames (1, 3, …): frames carry
    independent shot noise, so the two halves do too, and each holds every tilt at half the
    dose. The full view is the sum of all frames. For an odd number of frames each half is
    rescaled to ``n_frames / 2`` frames' worth (half A by ``n / (2 ⌈n/2⌉)``, half B by
    ``n / (2 ⌊n/2⌋)``), so both carry the same signal and their sum is the full view in
    expectation; for an even number the halves are the plain sums and ``A + B`` equals the
    full view exactly. Frames are read one at a time (``frames`` may be a lazy MRC array).

    Returns
    -------
    tuple of numpy.ndarray
        ``(half_a, half_b, full)``, each ``(y, x)`` float32 (accumulated in float64).

    Raises
    ------
    ValueError
        Fewer than 2 frames.
    """
    n = int(frames.shape[0])
    if n < 2:
        raise ValueError(f"{n} frame(s): the even/odd frame split needs at least 2 frames per "
                         "tilt.")
    shape = tuple(int(s) for s in frames.shape[1:])
    sums = [np.zeros(shape, dtype=np.float64), np.zeros(shape, dtype=np.float64)]
    for k in range(n):
        sums[k % 2] += np.asarray(frames[k], dtype=np.float64)
    full = sums[0] + sums[1]
    n_a, n_b = (n + 1) // 2, n // 2
    a = sums[0] * (n / (2 * n_a)) if n_a != n_b else sums[0]
    b = sums[1] * (n / (2 * n_b)) if n_a != n_b else sums[1]
    return a.astype(np.float32), b.astype(np.float32), full.astype(np.float32)


def _check_frame_stacks(paths: Sequence[Path]) -> tuple[tuple[int, int], Any]:
    """``((ny, nx), first lazy stack)`` after one-line errors for unreadable stacks, stacks
    with fewer than 2 frames, or stacks of another image shape than the first."""
    from cryowedge.io.mrc import open_mrc_lazy

    first = None
    for path in paths:
        lazy = open_mrc_lazy(path)
        if lazy.shape[0] < 2:
            raise ValueError(
                f"frame stack {path.name} holds {lazy.shape[0]} frame; the even/odd frame split "
                "needs at least 2 frames per tilt (give the dose-fractionated frames, or split "
                "the views with prepare_tilt_series)."
            )
        if first is None:
            first = lazy
        elif tuple(lazy.shape[1:]) != tuple(first.shape[1:]):
            raise ValueError(
                f"frame stack {path.name} has images of {lazy.shape[1]}×{lazy.shape[2]} (y×x) "
                f"pixels, but {first.path.name} has {first.shape[1]}×{first.shape[2]}; every "
                "tilt's frames must have one image shape (crop or bin them alike)."
            )
    assert first is not None
    return (int(first.shape[1]), int(first.shape[2])), first


def prepare_frames(
    frames: PathLike | Sequence[PathLike],
    output_dir: PathLike,
    *,
    angles: PathLike,
    pixel_size_angstrom: float | None = None,
    tilt_axis_angle_deg: float | None = None,
    alignment: PathLike | None = None,
    defocus: PathLike | None = None,
    config: DewedgeConfig | None = None,
    reconstruct_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> PreparedData:
    """Half tomograms from dose-fractionated frames: even frames → half A, odd → half B.

    Each tilt's frames (already motion-corrected and aligned to each other, one MRC stack
    ``(n_frames, y, x)`` per tilt) are summed in two halves (:func:`split_frame_sums`). Both
    halves then hold **every** tilt at half the dose, with independent shot noise, so their
    tomograms have the full tilt range (unlike the even/odd view split, whose halves each
    miss every other view). The full tilt series is the sum of all frames. The three tilt
    series are written as MRC stacks (``frames_even.mrc``, ``frames_odd.mrc``,
    ``frames_sum.mrc``) and reconstructed exactly as :func:`prepare_tilt_series` does (the
    method registry, binning, ``prepare.exclude_views`` applied to all three, alignment, CTF
    correction); mask and statistics follow as there.

    Parameters
    ----------
    frames
        The frame stacks, one per tilt in the order of ``angles``: a list of MRC paths, a
        directory, or a glob pattern (:func:`frame_paths`).
    output_dir
        Where everything goes: the three stacks above, ``full.mrc`` (unless
        ``prepare.write_full`` is off; then no ``frames_sum.mrc`` either), ``half_even.mrc``
        (half A, even frames), ``half_odd.mrc`` (half B, odd frames), ``mask.mrc``,
        ``prepared.yaml``.
    angles
        ``.tlt``/``.rawtlt``/``.mdoc`` with one tilt angle per frame stack (required: frame
        stacks carry no angles).
    pixel_size_angstrom
        Pixel size of the frames (Å); default: the first stack's header, else the ``.mdoc``.
    tilt_axis_angle_deg, alignment, defocus, config, reconstruct_options, overwrite, progress
        As :func:`prepare_tilt_series` (one alignment and one defocus file for the series).
        ``prepare.split`` does not apply (the split is by frames).

    Returns
    -------
    PreparedData
        One tomogram named after the angle file's stem; ``split`` is
        ``"frames (even/odd)"``; both halves list all kept tilt angles.

    Raises
    ------
    ValueError
        Before any work, in one line: no frame stacks, a stack with fewer than 2 frames,
        stacks of different image shapes, a number of stacks other than the number of
        angles, fewer than 4 tilts left after ``exclude_views``, sub-tomograms larger than
        the images, CTF correction without a defocus; ``FileExistsError`` for existing
        outputs without ``overwrite``.
    """
    from contextlib import ExitStack

    from cryowedge.config.models import ReconstructConfig
    from cryowedge.io.mrc import MrcSlabWriter, open_mrc_lazy
    from cryowedge.io.views import kept_views
    from cryowedge.workflows.outputs import check_outputs, keep_backups, mrc_nbytes
    from cryowedge.workflows.reconstruct import reconstruct_file

    cfg = config if config is not None else DewedgeConfig()
    p = cfg.prepare
    paths = frame_paths(frames)
    if not paths:
        raise ValueError("prepare_frames needs the frame stacks: one MRC of frames per tilt.")
    if angles is None:
        raise ValueError("frame stacks carry no tilt angles: give angles= (a .tlt/.rawtlt/.mdoc "
                         "with one angle per frame stack, in the same order).")
    angle_file = Path(angles)
    angles_deg = tilt_angles_from(angle_file)
    if angles_deg.size != len(paths):
        raise ValueError(
            f"{angle_file.name} lists {angles_deg.size} tilt angles but {len(paths)} frame "
            "stacks were given; give one frame stack per tilt, in the order of the angles."
        )
    (ny, nx), first = _check_frame_stacks(paths)
    keep = kept_views(p.exclude_views, len(paths))
    if keep.size < MIN_VIEWS_PER_HALF:
        raise ValueError(
            f"{keep.size} tilts left after excluding {p.exclude_views!r}; the frame halves hold "
            f"every tilt, and each needs at least {MIN_VIEWS_PER_HALF}: exclude fewer views."
        )
    base_options = _base_options(cfg, tilt_axis_angle_deg, reconstruct_options)
    if (base_options.get("ctf_correction", "none") != "none" and defocus is None
            and base_options.get("defocus_angstrom") is None):
        raise ValueError(
            f"CTF correction {base_options['ctf_correction']!r} needs the defocus: give a "
            "defocus file (defocus=) or prepare.defocus_angstrom."
        )
    ReconstructConfig(**{**base_options, "thickness": p.thickness})  # options valid now
    size = cfg.shared.subtomo_size
    side = min(ny, nx) // p.bin_factor  # the aligned detector is (ny, nx) or (nx, ny)
    _check_subtomo_fits((p.thickness or size, side, side), size, angle_file.stem)
    if pixel_size_angstrom is not None:
        px = float(pixel_size_angstrom)
    else:
        px = float(first.voxel_size_angstrom[-1]) if first.has_voxel_size else 0.0

    out = Path(output_dir)
    name = angle_file.stem
    stacks = {"a": out / "frames_even.mrc", "b": out / "frames_odd.mrc",
              "full": out / "frames_sum.mrc" if p.write_full else None}
    files = {"full": out / "full.mrc" if p.write_full else None,
             "half_a": out / "half_even.mrc", "half_b": out / "half_odd.mrc",
             "mask": out / "mask.mrc"}
    manifest_path = out / MANIFEST_NAME
    outputs = [manifest_path, *(f for f in stacks.values() if f is not None)]
    for f in files.values():
        if f is not None:
            outputs.append(f)
            if f.name != "mask.mrc":
                outputs.append(f.with_name(f.stem + ".run.yaml"))
    n_stacks = 3 if p.write_full else 2
    n_volumes = 3 if p.write_full else 2
    shape = (p.thickness or side, ny // p.bin_factor, nx // p.bin_factor)
    n_bytes = (65536 + n_stacks * mrc_nbytes((len(paths), ny, nx))
               + n_volumes * mrc_nbytes(shape) + mrc_nbytes(shape, 1))
    check_outputs(outputs, inputs=[*paths, angle_file, alignment, defocus], overwrite=overwrite,
                  n_bytes=n_bytes)
    if overwrite:
        keep_backups([f for f in stacks.values() if f is not None])

    # ---- the frame sums, one tilt at a time
    steps = n_volumes + 2
    with ExitStack() as stack:
        writers = {key: stack.enter_context(MrcSlabWriter(
            path, (len(paths), ny, nx), voxel_size_angstrom=px, overwrite=overwrite))
            for key, path in stacks.items() if path is not None}
        for i, path in enumerate(paths):
            report_progress(progress, f"summing frames {i + 1}/{len(paths)}",
                            i / len(paths) / steps)
            sums = dict(zip(("a", "b", "full"), split_frame_sums(open_mrc_lazy(path)),
                            strict=True))
            for key, writer in writers.items():
                writer.write_sections(i, sums[key][None])
    logger.info("%s: %d frame stacks summed into even/odd halves", name, len(paths))

    # ---- the reconstructions, as prepare_tilt_series makes them
    jobs = [("full", stacks["full"], files["full"])] if p.write_full else []
    jobs += [("even frames", stacks["a"], files["half_a"]),
             ("odd frames", stacks["b"], files["half_b"])]
    thickness = p.thickness
    for j, (label, source, path) in enumerate(jobs):
        start = (j + 1) / steps

        def part(step: str, fraction: float, s: float = start, pre: str = label) -> None:
            report_progress(progress, f"{pre}: {step}", s + fraction / steps)

        options = {**base_options, "thickness": thickness, "exclude_views": p.exclude_views}
        extra = {} if defocus is None else {"defocus_path": defocus}
        reconstruct_file(source, path, ReconstructConfig(**options), angles_path=angle_file,
                         pixel_size_angstrom=pixel_size_angstrom, alignment_path=alignment,
                         overwrite=overwrite, progress=part if progress else None, **extra)
        if thickness is None:  # the first reconstruction fixed it: the others follow
            thickness = int(open_mrc_lazy(path).shape[0])
            _check_subtomo_fits((thickness, 1 << 30, 1 << 30), size, name)
    report_progress(progress, f"{name}: mask and statistics", (steps - 1) / steps)
    kept_angles = angles_deg[keep]
    tomogram = _finish_tomogram(
        name=name, half_a=files["half_a"], half_b=files["half_b"], full=files["full"],
        mask_path=files["mask"], given_mask=None, tilt_angles=kept_angles,
        tilt_axis_angle_deg=0.0, half_angles=(kept_angles, kept_angles.copy()),
        split=_SPLIT_FRAMES, source=str(paths[0].parent), config=cfg)
    data = PreparedData(tomograms=[tomogram], config=cfg, manifest_path=manifest_path)
    data.write_manifest()
    report_progress(progress, "done", 1.0)
    return data
