"""On-the-fly sub-tomogram pairs for dewedge fitting, with the iterative wedge update in memory.

Nothing is written to disk: every batch is cut from the half tomograms (NumPy arrays,
``numpy.memmap`` or :class:`~cryowedge.io.mrc.LazyMrcArray`, read only where a crop lies),
standardised with the pair's statistics (:mod:`cryowedge.dewedge.standardize`), moved to the
device, rotated there and masked in Fourier space there.

**Regions.** Each tomogram is cut along the tilt axis ``y`` into a fitting slab ``y < y_split``
and, with ``val_fraction > 0``, a validation slab ``y ≥ y_split`` of ``max(ceil(val_fraction ·
ny), s)`` rows (``s`` the sub-tomogram size), so validation never sees a voxel fitting sees
(the cryoCARE split; the reference code's random overlapping cubes leaked, research/anchors_ml.md
§1.7). A crop only ever reads inside its own slab: where it reaches past the slab (or the
tomogram) it is filled by reflection (NumPy ``"reflect"``).

**Samples.** A sample is a centre (the centre voxel ``s // 2`` of an ``s³`` cube that lies
inside its slab) and, in ``dewedge`` mode, one rotation drawn uniformly from SO(3)
(:meth:`scipy.spatial.transform.Rotation.random` with the sample plan's generator). With a
sample mask, centres are drawn among those whose cube holds at least ``min_mask_fraction`` of
mask (:func:`cryowedge.dewedge.mask.valid_centres` on a grid, plus a random offset within the
grid step). The plan of epoch ``e`` is a pure function of ``(seed, e)``, so a resumed fit
draws the same samples, and every DDP rank knows the whole plan and takes its share; the
validation plan is fixed by the seed.

**A dewedge sample** (``mode="dewedge"``), for rotation ``R`` (on (x, y, z) vectors, the object
rotation ``out(R r) = in(r)`` of :class:`~cryowedge.operators.rotation.Rotation3D`):

1. crops of ``c = ceil(√2 · s)`` (rounded up to even) around the centre from half A and half B;
2. both rotated by ``R`` and centre-cropped to ``s`` in one trilinear resampling on the device
   (:func:`rotate_center_crop`, ``torch.nn.functional.grid_sample``; equal to
   :class:`~cryowedge.operators.subvolume.SubvolumeExtract` with ``rotations_xyz = R``, tested);
   corners of the cube that fall outside the crop read zero, in both halves alike;
3. input = rotated half A with the canonical measured wedge ``W`` applied in Fourier space
   (``irfftn(W · rfftn(·))``), target = rotated half B;
4. the target's measured region is ``W`` rotated with the volume:
   ``wedge_mask(..., rotation_xyz=Rᵀ)`` (the spectrum of ``out(R r) = in(r)`` is the input's
   spectrum rotated by ``R``, so frequency ``k`` of the rotated cube was measured where
   ``W(Rᵀ k)``).

**A Noise2Noise sample** (``mode="n2n"``): the ``s³`` cubes of half A and half B, no rotation,
no mask.

**Iterative wedge update** (:meth:`SubtomoPairs.update_wedge`). The current network, without
rotation, is run over each slab of half A tile by tile
(:func:`cryowedge.dewedge.refine.refine_array`, tiles masked with ``W`` exactly like the
fitting inputs); in each tile the measured region is
kept and the network's prediction is inserted in the missing wedge,
``tile + irfftn((1 − W) · rfftn(net(tile)))``, and the tiles are blended back. The filled
half A lives in memory (one float32 copy per tomogram) and replaces half A as the source of
later crops; half B is never changed. Under DDP the slabs are shared out among the ranks and
each filled slab is broadcast from the rank that made it, so every rank holds the same bytes
(no file, no race: MLI-lab/DeepDeWedge#8, #27, #40).

Axes: volumes ``(z, y, x)``; batches ``(B, 1, s, s, s)``; masks on the ``rfftn`` grid
``(…, s, s, s // 2 + 1)`` (docs/conventions.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from cryowedge.dewedge.standardize import StandardizationStats
from cryowedge.geometry.wedge import wedge_mask

__all__ = [
    "TomogramPair",
    "Region",
    "SamplePlan",
    "Batch",
    "SubtomoPairs",
    "crop_size_for",
    "rotate_center_crop",
    "apply_fourier_mask",
]

logger = logging.getLogger(__name__)

#: Cap on the candidate centres examined per slab (the grid step grows beyond it).
MAX_CANDIDATES = 1_000_000


def crop_size_for(subtomo_size: int) -> int:
    """``ceil(√2 · s)`` rounded up to an even number (92 for 64, 136 for 96)."""
    c = math.ceil(math.sqrt(2.0) * int(subtomo_size) - 1e-9)
    return c + (c % 2)


@dataclass(eq=False)
class TomogramPair:
    """Two half tomograms of one sample, its mask, wedge and standardisation.

    Attributes
    ----------
    half_a, half_b
        ``(z, y, x)`` volumes with independent noise (NumPy array, ``numpy.memmap`` or
        :class:`~cryowedge.io.mrc.LazyMrcArray`): half A is the network's input, half B the
        target.
    tilt_angles_deg
        Tilt angles of the series (degrees; only their range sets the canonical wedge, so a
        ``(min, max)`` pair works; asymmetric ranges are kept).
    mask
        Optional ``(z, y, x)`` 0/1 sample mask.
    tilt_axis_angle_deg
        In-plane tilt-axis angle in the tomogram (degrees from ``+y``; 0 for cryowedge
        tomograms), as in :func:`cryowedge.geometry.wedge.wedge_mask`.
    stats
        Standardisation ``(x − centre) / scale`` applied to every crop of either half.
    name
        For messages.
    """

    half_a: Any
    half_b: Any
    tilt_angles_deg: ArrayLike
    mask: Any | None = None
    tilt_axis_angle_deg: float = 0.0
    stats: StandardizationStats = field(default_factory=StandardizationStats.identity)
    name: str = "tomogram"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.half_a.shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class Region:
    """A slab ``y0 ≤ y < y1`` of tomogram ``pair`` used for ``kind`` (``"fit"`` or ``"val"``)."""

    pair: int
    y0: int
    y1: int
    kind: Literal["fit", "val"]


@dataclass
class SamplePlan:
    """Sub-tomogram samples: region index, centre and rotation of each.

    Attributes
    ----------
    region : numpy.ndarray
        ``(n,)`` int, index into :attr:`SubtomoPairs.regions`.
    centres : numpy.ndarray
        ``(n, 3)`` int64 ``(z, y, x)`` centres in the region's coordinates (``y`` from ``y0``).
    rotations : numpy.ndarray or None
        ``(n, 3, 3)`` float64 rotations on (x, y, z) vectors (None in ``n2n`` mode).
    """

    region: np.ndarray
    centres: np.ndarray
    rotations: np.ndarray | None

    def __len__(self) -> int:
        return int(self.region.shape[0])


@dataclass
class Batch:
    """Network input, target and the Fourier masks of the loss (on the batch's device).

    ``input``, ``target``: ``(B, 1, s, s, s)`` float32 (standardised units). ``rot_measured``,
    ``measured``: ``(B, 1, s, s, s // 2 + 1)`` float32 (None in ``n2n`` mode).
    """

    input: torch.Tensor
    target: torch.Tensor
    rot_measured: torch.Tensor | None
    measured: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.input.shape[0])


# --------------------------------------------------------------------------- pure functions


def rotate_center_crop(
    volumes: torch.Tensor, matrices_xyz: torch.Tensor | np.ndarray, out_size: int
) -> torch.Tensor:
    """Rotate cubes about their centre voxel and cut the central ``out_size³``, in one resampling.

    Parameters
    ----------
    volumes
        ``(N, C, c, c, c)`` (or ``(N, c, c, c)``) float tensor, any device.
    matrices_xyz
        ``(N, 3, 3)`` rotations on (x, y, z) vectors: the object rotation ``out(R r) = in(r)``
        about voxel ``c // 2`` (:class:`~cryowedge.operators.rotation.Rotation3D`'s convention),
        i.e. output voxel ``o`` samples the input at ``c//2 + Rᵀ (o − s//2)`` (zyx form).
    out_size
        ``s``; output voxel ``s // 2`` sits on input voxel ``c // 2``.

    Returns
    -------
    torch.Tensor
        ``(N, C, s, s, s)`` (or ``(N, s, s, s)``), trilinear, zero outside the input
        (``grid_sample(..., align_corners=True, padding_mode="zeros")``); the same values as
        ``SubvolumeExtract(..., rotations_xyz=R)`` up to float32 rounding of the positions.
    """
    squeeze = volumes.ndim == 4
    v = volumes[:, None] if squeeze else volumes
    if v.ndim != 5 or len(set(v.shape[-3:])) != 1:
        raise ValueError(f"volumes must be (N, [C,] c, c, c) cubes, got {tuple(volumes.shape)}.")
    n, c = v.shape[0], v.shape[-1]
    s = int(out_size)
    m = torch.as_tensor(
        np.asarray(matrices_xyz) if not isinstance(matrices_xyz, torch.Tensor) else matrices_xyz,
        dtype=torch.float64,
    )
    if m.shape != (n, 3, 3):
        raise ValueError(f"matrices_xyz must be ({n}, 3, 3), got {tuple(m.shape)}.")
    # Positions in (x, y, z) order directly: p_xyz = c//2 + Rᵀ (o_xyz − s//2).
    rt = m.transpose(1, 2).to(device=v.device, dtype=torch.float32)  # (N, 3, 3) = Rᵀ
    o = torch.arange(s, dtype=torch.float32, device=v.device) - float(s // 2)
    gz, gy, gx = torch.meshgrid(o, o, o, indexing="ij")
    offs = torch.stack([gx, gy, gz], dim=-1).reshape(1, -1, 3)  # (1, s³, 3) xyz offsets
    pos = torch.matmul(offs, rt.transpose(1, 2)) + float(c // 2)  # (N, s³, 3): (Rᵀ o)ᵀ = oᵀ R
    grid = (pos * (2.0 / (c - 1)) - 1.0).reshape(n, s, s, s, 3)
    out = F.grid_sample(
        v.to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out[:, 0] if squeeze else out


def apply_fourier_mask(volumes: torch.Tensor, mask_rfft: torch.Tensor) -> torch.Tensor:
    """``irfftn(mask · rfftn(volumes))`` over the last three axes (float32)."""
    shape = tuple(volumes.shape[-3:])
    spec = torch.fft.rfftn(volumes.to(torch.float32), dim=(-3, -2, -1))
    return torch.fft.irfftn(spec * mask_rfft, s=shape, dim=(-3, -2, -1))


def _read_crop(
    source: Any,
    y_range: tuple[int, int],
    start: Sequence[int],
    size: int,
    stats: StandardizationStats,
) -> np.ndarray:
    """``size³`` crop starting at ``start`` (region coordinates) from the slab ``y_range`` of
    ``source``, reflected beyond the slab, standardised, float32."""
    y0, y1 = y_range
    dims = (int(source.shape[0]), y1 - y0, int(source.shape[2]))
    lo = [max(0, int(s)) for s in start]
    hi = [min(n, int(s) + size) for s, n in zip(start, dims, strict=True)]
    block = np.asarray(source[lo[0] : hi[0], y0 + lo[1] : y0 + hi[1], lo[2] : hi[2]])
    block = stats.apply(block)
    pads = [
        (lo_i - int(s), int(s) + size - hi_i) for s, lo_i, hi_i in zip(start, lo, hi, strict=True)
    ]
    if any(p for pair in pads for p in pair):
        block = np.pad(block, pads, mode="reflect")
    return np.ascontiguousarray(block, dtype=np.float32)


class _RegionView:
    """Read-only ``(z, y1 − y0, x)`` view of rows ``y0:y1`` of a volume (slices only)."""

    def __init__(self, source: Any, y0: int, y1: int) -> None:
        self.source, self.y0, self.y1 = source, int(y0), int(y1)
        self.shape = (int(source.shape[0]), self.y1 - self.y0, int(source.shape[2]))
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = tuple(key) + (slice(None),) * (3 - len(key))
        ky = key[1]
        if isinstance(ky, slice):
            start, stop, step = ky.indices(self.shape[1])
            ky = slice(self.y0 + start, self.y0 + stop, step)
        else:
            ky = self.y0 + int(ky) if int(ky) >= 0 else self.y0 + self.shape[1] + int(ky)
        return np.asarray(self.source[key[0], ky, key[2]])


class _WedgeFiller:
    """Callable for :func:`~cryowedge.dewedge.refine.refine_array`: ``x + irfftn((1 − W) ·
    rfftn(net(x)))`` for wedge-masked tiles ``x`` (keeps the measured region, inserts the
    prediction in the missing wedge)."""

    def __init__(self, net: torch.nn.Module, missing: torch.Tensor) -> None:
        self.net = net
        self.missing = missing

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x).to(torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return x.to(torch.float32) + apply_fourier_mask(y, self.missing.to(x.device))


# --------------------------------------------------------------------------- the data set


class SubtomoPairs:
    """Sub-tomogram pairs cut on the fly from one or several tomogram pairs.

    Parameters
    ----------
    pairs
        :class:`TomogramPair` objects (same voxel size assumed; shapes may differ).
    subtomo_size
        ``s``, edge of the cubes the network sees (voxels).
    mode
        ``"dewedge"`` (rotations, extra wedge) or ``"n2n"`` (plain cubes).
    val_fraction
        Fraction of each tomogram's ``y`` rows kept for validation (at least ``s`` rows when
        > 0); 0: no validation.
    min_mask_fraction
        With a mask, the least fraction of an ``s³`` cube that must be mask.
    n_val
        Number of validation samples (fixed, drawn once; 0 when ``val_fraction`` is 0).
    seed
        Seed of every random choice (sample plans, rotations).
    device
        Where batches are assembled (rotation, FFTs).

    Raises
    ------
    ValueError
        One line, before any work: a sub-tomogram larger than a tomogram or than its fitting
        or validation slab, halves of different shapes, a mask of another shape, no cube with
        enough mask, or a tilt range that leaves nothing measured.
    """

    def __init__(
        self,
        pairs: Sequence[TomogramPair],
        *,
        subtomo_size: int,
        mode: Literal["dewedge", "n2n"] = "dewedge",
        val_fraction: float = 0.1,
        min_mask_fraction: float = 0.3,
        n_val: int = 8,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if not pairs:
            raise ValueError("no tomogram pairs to fit: give at least one (half_a, half_b) pair.")
        if mode not in ("dewedge", "n2n"):
            raise ValueError(f"mode must be 'dewedge' or 'n2n', got {mode!r}.")
        self.pairs = list(pairs)
        self.size = s = int(subtomo_size)
        self.mode = mode
        self.crop = crop_size_for(s) if mode == "dewedge" else s
        self.seed = int(seed)
        self.device = torch.device(device)
        self.val_fraction = float(val_fraction)
        self.min_mask_fraction = float(min_mask_fraction)
        self._check_pairs()
        self.regions: list[Region] = []
        for p, pair in enumerate(self.pairs):
            self.regions.extend(self._split(p, pair))
        self._candidates = [self._candidate_grid(r) for r in self.regions]
        self.fit_regions = [i for i, r in enumerate(self.regions) if r.kind == "fit"]
        self.val_regions = [i for i, r in enumerate(self.regions) if r.kind == "val"]
        # Canonical measured wedge of each pair on the s³ rfft grid.
        self._measured: list[torch.Tensor | None] = []
        for pair in self.pairs:
            if mode == "n2n":
                self._measured.append(None)
                continue
            m = wedge_mask(
                (s, s, s),
                pair.tilt_angles_deg,
                tilt_axis_angle_deg=pair.tilt_axis_angle_deg,
                rfft=True,
                device=self.device,
            )
            self._measured.append(m)
        self._check_wedges()
        self.n_val = int(n_val) if self.val_regions else 0
        self.val_plan = self._draw(
            np.random.default_rng([self.seed, 2]), self.n_val, self.val_regions
        )
        self.filled: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ checks and layout
    def _check_pairs(self) -> None:
        s = self.size
        for pair in self.pairs:
            a_shape = tuple(int(n) for n in pair.half_a.shape)
            b_shape = tuple(int(n) for n in pair.half_b.shape)
            if len(a_shape) != 3:
                raise ValueError(
                    f"{pair.name}: half A must be a (z, y, x) volume, got shape {a_shape}."
                )
            if a_shape != b_shape:
                raise ValueError(
                    f"{pair.name}: the halves have different shapes {a_shape} and "
                    f"{b_shape}; give the two halves of one tomogram."
                )
            if pair.mask is not None and tuple(int(n) for n in pair.mask.shape) != a_shape:
                raise ValueError(
                    f"{pair.name}: the mask has shape {tuple(pair.mask.shape)} but "
                    f"the tomogram {a_shape}; give the mask made for it."
                )
            for axis, n in zip("zyx", a_shape, strict=True):
                if s > n:
                    raise ValueError(
                        f"{pair.name}: sub-tomograms of {s}³ voxels do not fit the tomogram "
                        f"{a_shape} ({axis} = {n}); choose subtomo_size <= {min(a_shape)} "
                        "(divisible by 2^depth)."
                    )

    def _check_wedges(self) -> None:
        if self.mode == "n2n":
            return
        for pair, m in zip(self.pairs, self._measured, strict=True):
            assert m is not None
            lo = float(np.min(pair.tilt_angles_deg))
            hi = float(np.max(pair.tilt_angles_deg))
            # Points other than the tilt axis (kx = kz = 0) that are measured:
            off_axis = m.clone()
            off_axis[0, :, 0] = 0.0
            if not hi > lo or float(off_axis.sum()) == 0.0:
                raise ValueError(
                    f"{pair.name}: the tilt range [{lo:g}, {hi:g}]° has no width: the missing "
                    "wedge covers all of Fourier space (but one plane). Give the real tilt "
                    "angles (.tlt/.mdoc) or their (min, max) range."
                )

    def _split(self, p: int, pair: TomogramPair) -> list[Region]:
        ny = pair.shape[1]
        s = self.size
        if self.val_fraction <= 0:
            return [Region(p, 0, ny, "fit")]
        n_val = max(math.ceil(self.val_fraction * ny), s)
        if ny - n_val < s:
            raise ValueError(
                f"{pair.name}: y = {ny} rows cannot hold a validation slab of {n_val} rows "
                f"(val_fraction {self.val_fraction:g}, at least one {s}-voxel cube) and a "
                f"fitting slab of at least {s} rows; use val_fraction 0, a smaller "
                "subtomo_size, or validate on another tomogram."
            )
        return [Region(p, 0, ny - n_val, "fit"), Region(p, ny - n_val, ny, "val")]

    def _candidate_grid(self, region: Region) -> tuple[np.ndarray | None, int, int]:
        """``(centres or None, stride, count)``: mask-valid centres on a grid of ``stride``
        (None without a mask: every centre of the slab is valid)."""
        pair = self.pairs[region.pair]
        s = self.size
        dims = (pair.shape[0], region.y1 - region.y0, pair.shape[2])
        n_start = [n - s + 1 for n in dims]
        if pair.mask is None:
            return None, 1, int(math.prod(n_start))
        from cryowedge.dewedge.mask import valid_centres

        stride = 1
        while math.prod(-(-k // stride) for k in n_start) > MAX_CANDIDATES:
            stride += 1
        centres = valid_centres(
            _RegionView(pair.mask, region.y0, region.y1), s, self.min_mask_fraction, stride=stride
        )
        if len(centres) == 0:
            raise ValueError(
                f"{pair.name}: no {s}³ sub-tomogram in rows {region.y0}-{region.y1} "
                f"({region.kind} slab) holds {self.min_mask_fraction:.0%} of sample mask; "
                "lower min_mask_fraction, use a smaller subtomo_size or val_fraction, or check "
                "the mask."
            )
        return centres, stride, len(centres)

    # ------------------------------------------------------------------ sample plans
    def _draw(self, rng: np.random.Generator, n: int, regions: Sequence[int]) -> SamplePlan:
        s = self.size
        if n == 0 or not regions:
            return SamplePlan(
                np.zeros(0, np.int64),
                np.zeros((0, 3), np.int64),
                None if self.mode == "n2n" else np.zeros((0, 3, 3)),
            )
        counts = np.array([self._candidates[r][2] for r in regions], dtype=np.float64)
        which = rng.choice(len(regions), size=n, p=counts / counts.sum())
        region_idx = np.asarray(regions, dtype=np.int64)[which]
        centres = np.zeros((n, 3), dtype=np.int64)
        for i, r in enumerate(region_idx):
            reg = self.regions[r]
            pair = self.pairs[reg.pair]
            dims = np.array([pair.shape[0], reg.y1 - reg.y0, pair.shape[2]])
            grid, stride, count = self._candidates[r]
            lo = np.full(3, s // 2)
            hi = dims - s + s // 2  # inclusive upper bound of a valid centre
            if grid is None:
                centres[i] = lo + np.floor(rng.random(3) * (hi - lo + 1)).astype(np.int64)
            else:
                base = grid[int(rng.integers(count))]
                jitter = rng.integers(0, stride, size=3) if stride > 1 else np.zeros(3, int)
                centres[i] = np.minimum(base + jitter, hi)
        rotations = None
        if self.mode == "dewedge":
            rotations = Rotation.random(n, random_state=rng).as_matrix().reshape(n, 3, 3)
        return SamplePlan(region_idx, centres, rotations)

    def epoch_plan(self, epoch: int, n: int) -> SamplePlan:
        """The ``n`` fitting samples of epoch ``epoch`` (0-based): a pure function of
        ``(seed, epoch)``."""
        return self._draw(
            np.random.default_rng([self.seed, 1, int(epoch)]), int(n), self.fit_regions
        )

    # ------------------------------------------------------------------ batches
    def make_batch(self, plan: SamplePlan, indices: Sequence[int]) -> Batch:
        """Assemble samples ``indices`` of ``plan`` on :attr:`device` (see module docstring)."""
        idx = [int(i) for i in indices]
        if not idx:
            raise ValueError("make_batch needs at least one sample index.")
        s, c = self.size, self.crop
        crops_a = np.empty((len(idx), c, c, c), dtype=np.float32)
        crops_b = np.empty_like(crops_a)
        pair_of = []
        for j, i in enumerate(idx):
            reg = self.regions[int(plan.region[i])]
            pair = self.pairs[reg.pair]
            start = plan.centres[i] - c // 2
            src_a = self.filled.get(reg.pair, pair.half_a)
            crops_a[j] = _read_crop(src_a, (reg.y0, reg.y1), start, c, pair.stats)
            crops_b[j] = _read_crop(pair.half_b, (reg.y0, reg.y1), start, c, pair.stats)
            pair_of.append(reg.pair)
        both = torch.from_numpy(np.stack([crops_a, crops_b], axis=1)).to(self.device)
        if self.mode == "n2n":
            return Batch(both[:, 0:1], both[:, 1:2], None, None)
        assert plan.rotations is not None
        rot = plan.rotations[idx]  # (B, 3, 3)
        rotated = rotate_center_crop(both, rot, s)  # (B, 2, s, s, s)
        measured = torch.stack([self._measured[p] for p in pair_of])[:, None]  # type: ignore[misc]
        inp = apply_fourier_mask(rotated[:, 0:1], measured)
        rot_measured = torch.empty_like(measured)
        pair_arr = np.asarray(pair_of)
        for p in np.unique(pair_arr):
            js = np.nonzero(pair_arr == p)[0]
            rot_measured[torch.from_numpy(js).to(self.device), 0] = wedge_mask(
                (s, s, s),
                self.pairs[p].tilt_angles_deg,
                tilt_axis_angle_deg=self.pairs[p].tilt_axis_angle_deg,
                rotation_xyz=np.swapaxes(rot[js], -1, -2),
                rfft=True,
                device=self.device,
            )
        return Batch(inp.contiguous(), rotated[:, 1:2].contiguous(), rot_measured, measured)

    # ------------------------------------------------------------------ normalisation
    def input_statistics(self) -> tuple[float, float]:
        """Mean and standard deviation of the standardised half A inside the fitting slabs
        (inside the mask when given), from a subsample of sections."""
        from cryowedge.dewedge.standardize import sample_voxels

        values = []
        for r in self.fit_regions:
            reg = self.regions[r]
            pair = self.pairs[reg.pair]
            v, _ = sample_voxels(
                _RegionView(pair.half_a, reg.y0, reg.y1),
                mask=None if pair.mask is None else _RegionView(pair.mask, reg.y0, reg.y1),
                central_fraction=1.0,
                max_samples=200_000,
            )
            values.append(pair.stats.apply(v.astype(np.float64)).astype(np.float64))
        pooled = np.concatenate(values)
        std = float(np.std(pooled))
        if not np.isfinite(pooled).all():
            raise ValueError("the half tomograms hold NaN or Inf voxels; fix the input first.")
        if not std > 0:
            raise ValueError(
                "half A is constant inside the fitting slabs: nothing to fit; check "
                "the input tomograms."
            )
        return float(np.mean(pooled)), std

    # ------------------------------------------------------------------ wedge update
    def update_wedge(
        self,
        net: torch.nn.Module,
        *,
        batch_size: int = 4,
        mixed_precision: str = "off",
        rank: int = 0,
        world_size: int = 1,
        broadcast: Callable[[np.ndarray, int], None] | None = None,
    ) -> None:
        """Fill the missing wedge of half A with ``net``'s prediction, slab by slab, in memory.

        Parameters
        ----------
        net
            The (unwrapped) network, ``(B, 1, s, s, s)`` → same; run in eval mode, no grad.
        batch_size, mixed_precision
            Tiles per call and autocast (``"off"``, ``"bf16"``, ``"fp16"``).
        rank, world_size, broadcast
            Under DDP slab ``k`` is made by rank ``k % world_size`` and then
            ``broadcast(array, src_rank)`` (in place, every rank) shares it; single process:
            the defaults.
        """
        if self.mode == "n2n":
            return
        from cryowedge.dewedge.refine import refine_array

        s = self.size
        was_training = net.training
        net.eval()
        try:
            for k, reg in enumerate(self.regions):
                pair = self.pairs[reg.pair]
                if reg.pair not in self.filled:
                    self.filled[reg.pair] = np.zeros(pair.shape, dtype=np.float32)
                slab = np.empty((pair.shape[0], reg.y1 - reg.y0, pair.shape[2]), np.float32)
                owner = k % world_size
                if owner == rank:
                    measured = self._measured[reg.pair]
                    assert measured is not None
                    filler = _WedgeFiller(net, (1.0 - measured)[None, None])
                    slab[...] = refine_array(
                        _RegionView(pair.half_a, reg.y0, reg.y1),
                        filler,
                        subtomo_size=s,
                        batch_size=batch_size,
                        stats=pair.stats,
                        wedge_tilt_angles_deg=pair.tilt_angles_deg,
                        tilt_axis_angle_deg=pair.tilt_axis_angle_deg,
                        device=self.device,
                        mixed_precision=mixed_precision,
                    )
                if world_size > 1:
                    if broadcast is None:
                        raise ValueError("update_wedge with world_size > 1 needs broadcast.")
                    broadcast(slab, owner)
                self.filled[reg.pair][:, reg.y0 : reg.y1, :] = slab
        finally:
            net.train(was_training)
        logger.info(
            "missing wedge of half A filled with the current network (%d slabs)", len(self.regions)
        )
