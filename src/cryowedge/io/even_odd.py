"""Even/odd view split of a tilt series for half tomograms (``reconstruct --even-odd``).

Denoisers such as cryoCARE, DeepDeWedge and IsoNet train on two tomograms reconstructed
from interleaved halves of the views. The views alternate in *acquisition* order when it is
known (SerialEM ``.mdoc``: :attr:`cryowedge.io.tilt_files.MdocInfo.acquisition_order`), so
each half has about the same dose history; otherwise in stack order (0, 2, 4, ... even).

Axes: tilt series ``(n_tilts, y, x)`` (docs/conventions.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["acquisition_order_of", "even_odd_indices"]


def even_odd_indices(
    geometry_or_n: Any, acquisition_order: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stack indices ``(even, odd)`` of the views of a tilt series, each ascending (int64).

    Parameters
    ----------
    geometry_or_n
        The number of views, or anything with ``n_tilts`` (a ``TiltGeometry``).
    acquisition_order
        ``(n_views,)`` rank in time of each stack view (0 = acquired first), or None for
        stack order. Only the ranks' order matters (a subset of an mdoc's ranks is fine).

    Returns
    -------
    even, odd
        The views acquired 1st, 3rd, 5th, ... (even rank 0, 2, ...) and 2nd, 4th, ...

    Raises
    ------
    ValueError
        Fewer than 2 views, or an ``acquisition_order`` of the wrong length or with ties.
    """
    n = int(getattr(geometry_or_n, "n_tilts", geometry_or_n))
    if n < 2:
        raise ValueError(f"--even-odd needs at least 2 views to split, got {n}; drop --even-odd "
                         "or exclude fewer views.")
    if acquisition_order is None:
        rank = np.arange(n)
    else:
        order = np.asarray(acquisition_order)
        if order.shape != (n,) or np.unique(order).size != n:
            raise ValueError(f"acquisition order must rank each of the {n} views once, got "
                             f"{order.tolist()}.")
        rank = np.empty(n, dtype=np.int64)
        rank[np.argsort(order, kind="stable")] = np.arange(n)
    views = np.arange(n, dtype=np.int64)
    return views[rank % 2 == 0], views[rank % 2 == 1]


def acquisition_order_of(
    stack_path: str | Path, angles_path: str | Path | None = None
) -> np.ndarray | None:
    """``(n_tilts,)`` acquisition rank of each stack view from the ``.mdoc`` that goes with
    the stack (``angles_path``, else the sibling file that ``load_tilt_series`` would use),
    or None when the angles come from a ``.tlt``/``.rawtlt``/FEI header (no order known)."""
    from cryowedge.io.tilt_files import read_mdoc
    from cryowedge.io.tilt_series import find_angle_file

    path = find_angle_file(stack_path) if angles_path is None else Path(angles_path)
    if path is None or path.suffix != ".mdoc":
        return None
    return np.asarray(read_mdoc(path).acquisition_order)
