"""Point-group symmetry of a CryoGAN volume: group matrices and symmetrisation.

Groups (RELION's conventions): ``C1`` (none), ``Cn`` (an ``n``-fold axis along ``z``) and
``Dn`` (``Cn`` plus ``n`` two-fold axes in the ``xy`` plane, the first along ``x``). The
matrices are ``(G, 3, 3)`` rotations acting on ``(x, y, z)`` vectors (docs/conventions.md).
Symmetrisation averages the volume over the group, ``S c = (1/G) Σ_g R_g c`` (trilinear
rotation about the centre voxel ``n // 2``, :class:`cryowedge.operators.Rotation3D`). Quarter
and half turns map voxels onto voxels exactly, so for ``C2``, ``C4``, ``D2`` and ``D4``
``S`` is an exact projection (``S S = S``); other orders interpolate.
"""

from __future__ import annotations

import math
import re

import numpy as np

__all__ = ["parse_symmetry", "symmetry_matrices", "symmetrize"]

_PATTERN = re.compile(r"^([CD])(\d+)$")


def parse_symmetry(symmetry: str) -> tuple[str, int]:
    """``"D2"`` → ``("D", 2)``; ``ValueError`` for anything but ``Cn``/``Dn`` with ``n >= 1``."""
    m = _PATTERN.match(str(symmetry).strip().upper())
    if not m or int(m.group(2)) < 1:
        raise ValueError(
            f"symmetry must be Cn or Dn with n >= 1 (e.g. C1 for none, D2 for β-galactosidase), "
            f"got {symmetry!r}."
        )
    return m.group(1), int(m.group(2))


def symmetry_matrices(symmetry: str) -> np.ndarray:
    """``(G, 3, 3)`` float64 rotation matrices (on (x, y, z)) of the group; the first is ``I``."""
    kind, n = parse_symmetry(symmetry)
    mats = []
    for k in range(n):
        a = 2.0 * math.pi * k / n
        c, s = math.cos(a), math.sin(a)
        mats.append(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]))
    if kind == "D":
        flip = np.diag([1.0, -1.0, -1.0])  # two-fold about x
        mats += [m @ flip for m in mats[:n]]
    out = np.stack(mats)
    out[np.abs(out - np.round(out)) < 1e-12] = np.round(out[np.abs(out - np.round(out)) < 1e-12])
    return out


def symmetrize(volume, matrices: np.ndarray):
    """Average a ``(n, n, n)`` torch volume over rotations ``(G, 3, 3)`` (see module doc).

    Returns a new ``(n, n, n)`` tensor of the volume's dtype and device (the volume itself when
    ``G == 1``). Differentiable.
    """
    from cryowedge.operators.rotation import Rotation3D

    if matrices.shape[0] == 1:
        return volume
    rot = Rotation3D(tuple(volume.shape), matrices, broadcast=True)
    return rot.forward(volume).mean(dim=0)
