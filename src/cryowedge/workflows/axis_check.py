"""Check a tilt-axis angle against the data: do held-out views agree with it?

A tilt series whose axis lies along image ``X`` but is reconstructed with the default 0°
(axis along ``Y``) gives ring-shaped garbage, and nothing in the images themselves stops
the run. :func:`check_tilt_axis` asks the data cheaply. It reconstructs a coarse volume
from every other view (FBP) at each candidate axis angle, re-projects it at the views left
out and correlates the prediction with the measured views. The geometry that describes the
specimen predicts unseen views best.

Method
------
1. **Views.** The views are sorted by tilt angle; when there are more than ``max_views``,
   every k-th is kept (an even spread over the whole range, not the central views only).
   Only these views are read, one at a time (a :class:`~cryowedge.io.mrc.LazyMrcArray` or
   :class:`~cryowedge.io.views.ViewSubset` reads nothing else).
2. **Region and binning.** Of each view, only the central square of side
   ``min(ny, nx)`` is read, and it is binned by block mean
   (:func:`~cryowedge.io.views.bin_images`) to at most ``target_size`` pixels. The square
   makes the aligned detector the same for every quarter-turn candidate, so the candidates
   are scored on the same pixels with the same volume.
3. **Prediction.** Alternate views (in angle order) train a Hann-filtered FBP
   (:func:`~cryowedge.recon.fbp.fbp`) of thickness ``thickness_fraction`` × the binned side;
   the other views are predicted by :class:`~cryowedge.operators.TiltProjector`. The thin
   volume matters. The wrong axis explains the slowly changing views of a specimen only
   with an object that fills the whole width in ``z`` (rings about the wrong axis, the
   "ring-shaped garbage"), which a volume half as thick cannot hold. At full thickness
   the noise-free Shepp–Logan series (±60° at 3°) scored 0.955 at the wrong axis against
   0.950 at the true one; at half thickness 0.865 against 0.974 (``--ablation`` of the
   benchmark below).
4. **Score.** Each held-out view and its prediction are band-passed (difference of
   Gaussians, σ = ``band_sigmas_px`` binned pixels: about 0.05–0.2 cycles/pixel) and
   correlated. The lowest frequencies are left out because there a truncated, laterally
   extended slab is predicted as well or better by any smooth interpolation between
   neighbouring views; the geometry shows in the finer detail that moves between tilts.
   Without the band-pass a ±45° cell slab at SNR 0.3 scored 0.305 at the wrong axis
   against 0.266 at the true one (t +4.8, a near false alarm); with it 0.264 against 0.280.
   A candidate's score is its mean correlation.
5. **Decision.** The per-view correlations of the best other candidate and of the assumed
   angle are compared in pairs (Fisher ``z = atanh(r)``). The data *disagree clearly*
   when the other candidate wins in at least ``min_win_fraction`` of the held-out views,
   its paired t statistic (mean ``Δz`` over its standard error, across held-out views) is
   at least ``min_t``, and the mean ``Δz`` is at least ``min_effect``.

Which candidates can be told apart
----------------------------------
Only the direction of the axis *as a line* can be read from the data: 0° and 180° (also
+90° and −90°) predict every view the same way, up to a one-pixel centring difference on
an even-sized grid (the 180° turn is explained exactly by the volume inverted through its
centre; docs/conventions.md, "Handedness and IMOD"). So the candidates are the assumed
angle and the two quarter turns from it; 180° away is not tried. Between +90° and −90° the
better-scoring one is reported, which reflects the centring, not the hand; a mirror or
180° rotation of the result remains possible and needs a structure of known hand or the
defocus gradient to settle. A raw stack whose axis is not a quarter turn (SerialEM's 85.3°)
is not resolved finer than the nearest quarter turn; the hint then points at it, and the
``.mdoc`` has the exact angle.

Measured separation (``OMP_NUM_THREADS=2 python benchmarks/axis_check_margins.py``)
-----------------------------------------------------------------------------------
86 series: Shepp–Logan (64×96×96), hollow spheres in a 32-voxel box, crowded-cell slabs
(0.5, 0.6 and 0.9 of a 40-, 48- and 72-voxel box, 96² wide), noise-free and Gaussian SNR
0.3, tilts ±60° at 3° and 2°, ±45° at 3°, −50…+66° at 2°, true axis 0° and 90° (80); a
cell with a 3 µm CTF (SNR 0.5) and a dense ±60° series at 1° (121 views, 41 read), each at
0° and 90°; hollow spheres on a raw 85.3° axis; and the real aligned needle (axis −90°).

* **True axis assumed** (86 checks): no warning. In every series the assumed angle scored
  highest; the best other angle's paired t was at most −1.9 (the rule needs +5), it won at
  most 40 % of the held-out views (the rule needs 80 %), its mean ``Δz`` was at most −0.013.
* **A quarter turn off** (86 checks; 0° for the 85.3° stack): 75 warned, every one naming
  the true line (the angle itself or 180° from it), with t ≥ 5.1, wins ≥ 87 %,
  ``Δz`` ≥ 0.028. Noise-free series all warned (t ≥ 7.7). The 11 left without a warning
  were SNR-0.3 series (Shepp–Logan, and ±45° or −50…+66° cell slabs) with t 2.4–4.9: no
  hint rather than a wrong one.
* **Real needle** (``../shared/data``, 77 views at 2°, 39 read) at the default 0°: warns,
  corr 0.904 at 0° against 0.957 at −90° (0.952 at +90°), t 18.9, every held-out view
  better at −90°. At −90° assumed: no warning (t −18.9).

So the thresholds sit between the two groups: t 5 against at most −1.9 for a right axis
and at least 2.4 for a wrong one, with the win fraction as a second, independent guard.

Cost (2 shared CPU cores)
-------------------------
At most ``max_views`` views of at most ``target_size``² binned pixels are used, so beyond
reading and binning the views the cost does not grow with the stack: three Hann FBPs and
projections at 128² take 0.1–0.5 s. The needle (256², 77 views) takes 0.7 s (1.7 s as the
first call in a process, whose imports a reconstruction needs anyway); a simulated 96²
series 0.05–0.6 s. A 4096² × 41-view float32 stack read lazily (``--4k``; 2.7 GB, page
cache warm) takes 3.1 s, nearly all of it reading and binning 41 views of 64 MB each; a
stack on a cold disk adds the time to read 41 views.

Axes: tilt series ``(n_tilts, y, x)``, angles in degrees (docs/conventions.md).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from cryowedge._arrays import to_numpy
from cryowedge.geometry.tilt import TiltGeometry
from cryowedge.io.views import bin_images

__all__ = [
    "AxisCheck",
    "axis_candidates",
    "check_defaulted_axis",
    "check_tilt_axis",
    "defaulted_axis_message",
]

logger = logging.getLogger(__name__)

#: Fewest views (after the subset) and binned pixels the check needs to say anything.
MIN_VIEWS = 10
MIN_SIZE_PX = 32


@dataclass(frozen=True)
class AxisCheck:
    """Result of :func:`check_tilt_axis`.

    Attributes
    ----------
    assumed_deg : float
        The tilt-axis angle the geometry had (degrees).
    candidates_deg : tuple of float
        Angles tried (degrees): the assumed one first, then the quarter turns from it.
    scores : tuple of float
        Mean band-passed correlation of the predicted and the measured held-out views per
        candidate, in the order of ``candidates_deg`` (NaN when inconclusive).
    best_deg : float
        The candidate with the highest score (the assumed angle when inconclusive).
    disagrees : bool
        True when the data clearly prefer a candidate other than the assumed angle
        (see the decision rule in the module docstring).
    alternative_deg : float
        The best candidate that is not the assumed angle (NaN when inconclusive).
    t_statistic : float
        Paired t of ``atanh(r)`` of ``alternative_deg`` over the assumed angle across the
        held-out views (positive: the alternative predicts better).
    win_fraction : float
        Share of held-out views that ``alternative_deg`` predicts better.
    effect : float
        Mean ``atanh(r)`` difference (alternative − assumed).
    binning : int
        Block-mean factor of the images used.
    size_px : int
        Side of the binned square region (pixels).
    n_train, n_held_out : int
        Views reconstructed from and views predicted.
    seconds : float
        Wall time of the check, reading included.
    note : str
        Why the check is inconclusive, or empty.
    """

    assumed_deg: float
    candidates_deg: tuple[float, ...]
    scores: tuple[float, ...]
    best_deg: float
    disagrees: bool
    alternative_deg: float = float("nan")
    t_statistic: float = float("nan")
    win_fraction: float = float("nan")
    effect: float = float("nan")
    binning: int = 1
    size_px: int = 0
    n_train: int = 0
    n_held_out: int = 0
    seconds: float = 0.0
    note: str = ""
    per_view: dict[float, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def conclusive(self) -> bool:
        """False when the series was too small to check (see ``note``)."""
        return not self.note

    def score_of(self, angle_deg: float) -> float:
        """The score of candidate ``angle_deg`` (degrees); KeyError if it was not tried."""
        for angle, score in zip(self.candidates_deg, self.scores, strict=True):
            if abs(angle - angle_deg) < 1e-6:
                return score
        raise KeyError(f"{angle_deg}° was not a candidate; tried {list(self.candidates_deg)}")

    def summary(self) -> str:
        """``corr 0.966 at 0°, 0.983 at -90°`` (assumed angle, then the alternative)."""
        if not self.conclusive:
            return f"not checked: {self.note}"
        return (
            f"corr {self.score_of(self.assumed_deg):.3f} at {_fmt(self.assumed_deg)}°, "
            f"{self.score_of(self.alternative_deg):.3f} at {_fmt(self.alternative_deg)}°"
        )

    def to_record(self) -> dict[str, Any]:
        """Plain-type dict for a run record."""
        return {
            "assumed_deg": float(self.assumed_deg),
            "candidates_deg": [float(a) for a in self.candidates_deg],
            "scores": [None if math.isnan(s) else round(float(s), 4) for s in self.scores],
            "best_deg": float(self.best_deg),
            "disagrees": bool(self.disagrees),
            "t_statistic": None if math.isnan(self.t_statistic) else round(self.t_statistic, 2),
            "win_fraction": None if math.isnan(self.win_fraction) else round(self.win_fraction, 3),
            "binning": int(self.binning),
            "size_px": int(self.size_px),
            "n_train": int(self.n_train),
            "n_held_out": int(self.n_held_out),
            "seconds": round(float(self.seconds), 2),
            "note": self.note,
        }


def _fmt(angle: float) -> str:
    return f"{angle:g}"


def _wrap(angle: float) -> float:
    """``angle`` in (−180, 180] degrees."""
    wrapped = -((-float(angle) + 180.0) % 360.0 - 180.0)
    return 0.0 if wrapped == 0 else wrapped


def axis_candidates(assumed_deg: float) -> tuple[float, ...]:
    """The assumed angle and the quarter turns from it, in (−180, 180] degrees.

    ``assumed + 180`` is left out: it predicts the views as the assumed angle does (module
    docstring, "Which candidates can be told apart").
    """
    return (_wrap(assumed_deg), _wrap(assumed_deg + 90.0), _wrap(assumed_deg - 90.0))


def _same_line(a: float, b: float) -> bool:
    """True when axis angles ``a`` and ``b`` (degrees) differ by a multiple of 180°."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d) < 1e-6


def _view_subset(angles: np.ndarray, max_views: int) -> np.ndarray:
    """Stack indices of at most ``max_views`` views, in ascending angle, evenly spread."""
    order = np.argsort(angles, kind="stable")
    stride = max(1, math.ceil(order.size / max_views))
    return order[::stride]


def _read_square(
    data: Any, indices: np.ndarray, shape: tuple[int, int], side: int, factor: int
) -> np.ndarray:
    """Views ``indices`` of ``data``, their central ``side``² square, binned ``factor``×.

    The square is centred on the detector centre pixel ``(ny // 2, nx // 2)``, which is
    also the centre pixel ``side // 2`` of the square; only its rows are read.
    """
    ny, nx = shape
    y0, x0 = ny // 2 - side // 2, nx // 2 - side // 2
    n = side // factor
    out = np.empty((indices.size, n, n), dtype=np.float32)
    for i, t in enumerate(indices):
        view = to_numpy(data[int(t), y0 : y0 + side, x0 : x0 + side])
        out[i] = bin_images(np.asarray(view, dtype=np.float32), factor)
    return out


def _band(images: np.ndarray, sigmas: tuple[float, float]) -> np.ndarray:
    """Difference of Gaussians over the last two axes of ``(n, y, x)`` images."""
    lo, hi = sigmas
    return ndimage.gaussian_filter(images, (0, lo, lo)) - ndimage.gaussian_filter(
        images, (0, hi, hi)
    )


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of images of ``(n, y, x)`` ``a`` and ``b``."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), 0.0)


def check_tilt_axis(
    tilt_series: Any,
    geometry: TiltGeometry,
    *,
    candidates_deg: tuple[float, ...] | None = None,
    target_size: int = 128,
    max_views: int = 41,
    thickness_fraction: float = 0.5,
    band_sigmas_px: tuple[float, float] = (0.7, 3.0),
    min_t: float = 5.0,
    min_win_fraction: float = 0.8,
    min_effect: float = 0.01,
) -> AxisCheck:
    """Score tilt-axis angles by how well they predict held-out views (module docstring).

    Parameters
    ----------
    tilt_series : array_like, shape (n_tilts, ny, nx)
        The views, in any order: a NumPy array, a torch tensor, a memory map, a
        :class:`~cryowedge.io.mrc.LazyMrcArray` or :class:`~cryowedge.io.views.ViewSubset`
        (anything indexable as ``data[t, y0:y1, x0:x1]``). Only the views and rows used are
        read.
    geometry : TiltGeometry
        Its geometry; ``geometry.tilt_axis_angle_deg`` is the angle being checked. Shifts
        (raw pixels) and per-view matrices are kept for every candidate.
    candidates_deg : tuple of float, optional
        Angles to try (degrees); default :func:`axis_candidates` of the assumed angle. The
        assumed angle is always tried.
    target_size : int
        Bin the central square to at most this many pixels on a side (>= 32).
    max_views : int
        Read at most this many views, evenly spread over the angle range (>= 10).
    thickness_fraction : float
        Thickness of the coarse volume as a fraction of the binned side, in (0, 1].
    band_sigmas_px : (float, float)
        Gaussian σ (binned pixels) of the difference-of-Gaussians band-pass, low < high.
    min_t, min_win_fraction, min_effect : float
        The decision rule: the data disagree when another candidate beats the assumed
        angle with a paired t ≥ ``min_t``, in ≥ ``min_win_fraction`` of the held-out
        views, by a mean ``Δ atanh(r)`` ≥ ``min_effect``.

    Returns
    -------
    AxisCheck
        Scores, the best angle and whether the data disagree clearly with the assumed one.
        A series with fewer than 10 views or a square under 32 binned pixels gives an
        inconclusive result (``disagrees`` False, ``note`` saying why) rather than an error.

    Raises
    ------
    ValueError
        If the series does not match the geometry or an option is out of range.
    """
    from cryowedge.operators.tilt_projector import TiltProjector
    from cryowedge.recon.fbp import fbp

    start = time.perf_counter()
    shape = tuple(int(s) for s in tilt_series.shape)
    if shape != tuple(geometry.tilt_series_shape):
        raise ValueError(
            f"tilt_series must be (n_tilts, ny, nx) = {tuple(geometry.tilt_series_shape)} to "
            f"match the geometry, got shape {shape}."
        )
    if isinstance(target_size, bool) or int(target_size) != target_size or target_size < 32:
        raise ValueError(f"target_size must be a whole number >= 32 (pixels), got {target_size!r}.")
    if isinstance(max_views, bool) or int(max_views) != max_views or max_views < MIN_VIEWS:
        raise ValueError(f"max_views must be a whole number >= {MIN_VIEWS}, got {max_views!r}.")
    if not 0.0 < float(thickness_fraction) <= 1.0:
        raise ValueError(f"thickness_fraction must be in (0, 1], got {thickness_fraction!r}.")
    lo, hi = (float(s) for s in band_sigmas_px)
    if not 0.0 <= lo < hi:
        raise ValueError(
            f"band_sigmas_px must be (low, high) with 0 <= low < high pixels, got "
            f"{band_sigmas_px!r}."
        )
    assumed = _wrap(geometry.tilt_axis_angle_deg)
    cands = (
        axis_candidates(assumed)
        if candidates_deg is None
        else tuple(_wrap(a) for a in candidates_deg)
    )
    cands = (assumed, *[a for a in dict.fromkeys(cands) if abs(a - assumed) > 1e-9])
    if not any(not _same_line(a, assumed) for a in cands):
        raise ValueError(
            f"candidates_deg {list(candidates_deg or ())} holds no angle other "
            f"than the assumed {assumed:g}° (or 180° from it); nothing to compare."
        )

    ny, nx = geometry.detector_shape
    side_raw = min(ny, nx)
    factor = max(1, math.ceil(side_raw / int(target_size)))
    side_raw = (side_raw // factor) * factor
    size = side_raw // factor
    views = _view_subset(geometry.tilt_angles_deg, int(max_views))

    def inconclusive(note: str) -> AxisCheck:
        nan = float("nan")
        logger.info("tilt-axis check skipped: %s", note)
        return AxisCheck(
            assumed,
            cands,
            tuple(nan for _ in cands),
            assumed,
            False,
            binning=factor,
            size_px=size,
            seconds=time.perf_counter() - start,
            note=note,
        )

    if views.size < MIN_VIEWS:
        return inconclusive(f"{views.size} views; the check needs at least {MIN_VIEWS}")
    if size < MIN_SIZE_PX:
        return inconclusive(
            f"the central square is {size} px after binning (at least {MIN_SIZE_PX} needed)"
        )

    images = _read_square(tilt_series, views, (ny, nx), side_raw, factor)
    if not np.isfinite(images).all():
        raise ValueError("tilt_series contains non-finite values; cannot check the tilt axis.")
    images -= images.mean()  # a constant offset (integer counts) is no structure
    geom = geometry[views].with_(detector_shape=(side_raw, side_raw)).binned(factor)
    held_out = np.arange(views.size) % 2 == 1
    train = ~held_out
    measured = _band(images[held_out], (lo, hi))
    thickness = max(4, int(round(float(thickness_fraction) * size)))

    per_view: dict[float, np.ndarray] = {}
    for angle in cands:
        g = geom.with_(tilt_axis_angle_deg=angle)
        vol_shape = (thickness, *g.aligned_detector_shape)
        volume = fbp(images[train], g[train], volume_shape=vol_shape, filter_name="hann")
        predicted = TiltProjector(g[held_out], vol_shape)(volume).cpu().numpy()
        per_view[angle] = _correlations(_band(predicted, (lo, hi)), measured)
    scores = tuple(float(per_view[a].mean()) for a in cands)
    best = cands[int(np.argmax(scores))]
    others = [a for a in cands if not _same_line(a, assumed)]
    alt = max(others, key=lambda a: float(per_view[a].mean()))
    clip = 1.0 - 1e-6
    dz = np.arctanh(np.clip(per_view[alt], -clip, clip)) - np.arctanh(
        np.clip(per_view[assumed], -clip, clip)
    )
    effect = float(dz.mean())
    spread = float(dz.std(ddof=1)) / math.sqrt(dz.size)
    t_stat = effect / spread if spread > 0 else math.copysign(math.inf, effect) if effect else 0.0
    wins = float((dz > 0).mean())
    disagrees = bool(t_stat >= min_t and wins >= min_win_fraction and effect >= min_effect)
    result = AxisCheck(
        assumed,
        cands,
        scores,
        best,
        disagrees,
        alternative_deg=alt,
        t_statistic=float(t_stat),
        win_fraction=wins,
        effect=effect,
        binning=factor,
        size_px=size,
        n_train=int(train.sum()),
        n_held_out=int(held_out.sum()),
        seconds=time.perf_counter() - start,
        per_view=per_view,
    )
    logger.info(
        "tilt-axis check: %s (t %.1f, wins %.0f %%, %d views, bin %d, %.1f s)",
        result.summary(),
        t_stat,
        100 * wins,
        views.size,
        factor,
        result.seconds,
    )
    return result


def defaulted_axis_message(check: AxisCheck) -> str:
    """The warning for a defaulted axis the data disagree with (CLI option names)."""
    alt = _fmt(check.alternative_deg)
    other = _fmt(_wrap(check.alternative_deg + 180.0))
    return (
        f"tilt axis {_fmt(check.assumed_deg)}° was assumed (no --tilt-axis-angle, no .mdoc); "
        f"the data fit {alt}° better (held-out views: {check.summary()}); rerun with "
        f"--tilt-axis-angle {alt} ({other} fits alike up to a one-pixel centring: the views "
        "do not fix the hand, docs/conventions.md)"
    )


def check_defaulted_axis(
    tilt_series: Any,
    geometry: TiltGeometry,
    *,
    defaulted: bool,
    enabled: bool = True,
    progress: Any = None,
) -> AxisCheck | None:
    """Run :func:`check_tilt_axis` for a workflow when the axis angle was defaulted.

    ``defaulted`` says that nothing gave the angle (no option, no ``.mdoc``, no alignment
    file); ``enabled`` is the ``check_tilt_axis`` config field. Logs a warning with
    :func:`defaulted_axis_message` when the data disagree clearly, an info line otherwise.
    A check that fails (a ``ValueError`` or ``RuntimeError`` of the data) is logged as a
    warning and gives None: the check only advises, it never stops a reconstruction.
    ``progress(step, fraction)`` is told ``"checking the tilt axis"``.
    """
    if not defaulted:
        return None
    if not enabled:
        logger.info(
            "tilt axis %g° assumed (defaulted); its check is switched off",
            geometry.tilt_axis_angle_deg,
        )
        return None
    if progress is not None:
        progress("checking the tilt axis", 0.02)
    try:
        check = check_tilt_axis(tilt_series, geometry)
    except (ValueError, RuntimeError) as err:
        logger.warning(
            "could not check the defaulted tilt axis %g°: %s", geometry.tilt_axis_angle_deg, err
        )
        return None
    if check.disagrees:
        logger.warning("%s", defaulted_axis_message(check))
    elif check.conclusive:
        logger.info(
            "tilt axis %g° assumed (defaulted); the data do not disagree (%s)",
            check.assumed_deg,
            check.summary(),
        )
    return check
