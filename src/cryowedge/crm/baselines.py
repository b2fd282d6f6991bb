"""The averaging baselines of the CRM paper: simple (AVG) and masked averaging in Fourier (M-AVG).

Both start from the copies reconstructed one by one (:func:`reconstruct_copies`): each copy's
sub-tilt-series is reconstructed by the project's :func:`~cryowedge.solvers.sart` (the same λ
and iteration count as CRM-SART, paper defaults 0.2 and 20) and brought into the particle
frame (:meth:`CRMOperator.copy_system`). For a folded problem with a support constant along
``y`` (rotations about ``y``, every 2D problem) the copy is reconstructed with the copy's own
rows of ``A_CRM``: its inside-support part directly in the particle frame at ``θ + φ``, its
background in the operator's background frame (no interpolation); otherwise it is
reconstructed in the copy frame and rotated back by ``R_iᵀ`` (trilinear
:class:`~cryowedge.operators.Rotation3D`).

* **AVG** (eq. 4): ``ĥ = (1/N) Σ S · ĥ_i``.
* **M-AVG** (Schmid & Booth 2008): ``ĥ = S · F⁻¹[ Σ W_i F(S·ĥ_i) / (Σ W_i + ε) ]``, with
  ``W_i`` copy ``i``'s measured region in the particle frame
  (:func:`~cryowedge.geometry.wedge.wedge_mask` of its tilt range, rotated by ``R_i``) and a
  small ``ε`` so that frequencies no copy measured stay 0 instead of dividing by 0.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cryowedge.crm.operator import CRMOperator, as_crm_operator
from cryowedge.crm.problem import CRMData
from cryowedge.crm.solvers import resolve_problem
from cryowedge.geometry.wedge import wedge_mask
from cryowedge.operators.rotation import Rotation3D
from cryowedge.solvers._common import prepare
from cryowedge.solvers.algebraic import sart

__all__ = ["BASELINES", "masked_fourier_average", "reconstruct_copies", "simple_average"]

logger = logging.getLogger(__name__)


def reconstruct_copies(
    operator: CRMOperator | CRMData,
    data: Any = None,
    *,
    n_iter: int = 20,
    relaxation: float = 0.2,
    positivity: bool = False,
    order: str = "random",
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Each copy reconstructed on its own by SART, in the particle frame, unmasked.

    Parameters
    ----------
    operator, data
        A :class:`~cryowedge.crm.operator.CRMOperator` and its ``(N, n_tilts, ny, nx)``
        projections, or a :class:`~cryowedge.crm.problem.CRMData`.
    n_iter, relaxation, positivity, order, seed
        Passed to :func:`~cryowedge.solvers.sart` for every copy (same seed for each).
    device, dtype
        Where and in which precision (default: those of the data).

    Returns
    -------
    torch.Tensor
        ``(N, nz, ny, nx)``: copy ``i``'s reconstruction ``ĥ_i`` in the particle frame.
    """
    op, data = resolve_problem(operator, data)
    b, _ = prepare(op, data, None, device, dtype)
    out = torch.empty((op.n_copies, *op.volume_shape), dtype=b.dtype, device=b.device)
    for i in range(op.n_copies):
        proj, rot = op.copy_system(i, cache=False)
        rec = sart(
            proj,
            b[i],
            n_iter=n_iter,
            relaxation=relaxation,
            positivity=positivity,
            order=order,
            seed=seed,
        ).x
        if rot is not None:  # rotated problem: copy frame → particle frame by R_iᵀ
            rec = Rotation3D(op.volume_shape, rot.matrices_xyz[0].T).forward(rec)
        out[i] = rec
        logger.debug("reconstruct_copies: copy %d/%d done", i + 1, op.n_copies)
    return out


def _copies(
    op: CRMOperator, data: Any, copies: torch.Tensor | None, sart_kwargs: dict[str, Any]
) -> torch.Tensor:
    if copies is None:
        return reconstruct_copies(op, data, **sart_kwargs)
    c = copies if isinstance(copies, torch.Tensor) else torch.as_tensor(np.asarray(copies))
    expected = (op.n_copies, *op.volume_shape)
    if tuple(c.shape) != expected:
        raise ValueError(
            f"copies must have shape {expected} (one particle-frame volume per copy), "
            f"got {tuple(c.shape)}."
        )
    if not c.dtype.is_floating_point:
        c = c.float()
    return c


def simple_average(
    operator: CRMOperator | CRMData,
    data: Any = None,
    *,
    copies: torch.Tensor | None = None,
    **sart_kwargs: Any,
) -> torch.Tensor:
    """AVG: the mean of the copies' reconstructions masked to the support, ``(nz, ny, nx)``.

    ``copies`` (``(N, nz, ny, nx)`` from :func:`reconstruct_copies`) skips the reconstruction;
    otherwise ``sart_kwargs`` go to :func:`reconstruct_copies`.
    """
    op, data = (
        resolve_problem(operator, data) if copies is None else (as_crm_operator(operator), data)
    )
    rec = _copies(op, data, copies, sart_kwargs)
    s = torch.from_numpy(op.support).to(device=rec.device, dtype=rec.dtype)
    return rec.mean(dim=0) * s


def masked_fourier_average(
    operator: CRMOperator | CRMData,
    data: Any = None,
    *,
    copies: torch.Tensor | None = None,
    eps: float = 1e-2,
    mask_copies: bool = True,
    soft_edge_deg: float = 0.0,
    **sart_kwargs: Any,
) -> torch.Tensor:
    """M-AVG: each copy weighted in Fourier space by its own measured region, ``(nz, ny, nx)``.

    ``ĥ = S · F⁻¹[Σ W_i F(S·ĥ_i) / (Σ W_i + eps)]`` (module notes). ``W_i`` is
    :func:`~cryowedge.geometry.wedge.wedge_mask` of copy ``i``'s tilt angles with
    ``rotation_xyz = R_i`` (the copy's wedge seen in the particle frame), hard-edged unless
    ``soft_edge_deg > 0``. ``mask_copies`` multiplies each ``ĥ_i`` by ``S`` before the
    transform (the copies' backgrounds are not the particle). ``eps`` > 0 is in the units of
    the summed weights (each 0..1). Other arguments as :func:`simple_average`.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (it keeps unmeasured frequencies at 0), got {eps!r}.")
    op, data = (
        resolve_problem(operator, data) if copies is None else (as_crm_operator(operator), data)
    )
    rec = _copies(op, data, copies, sart_kwargs)
    s = torch.from_numpy(op.support).to(device=rec.device, dtype=rec.dtype)
    dims = (-3, -2, -1)
    num = None
    den = None
    for i, copy in enumerate(op.copies):
        vol = rec[i] * s if mask_copies else rec[i]
        w = wedge_mask(
            op.volume_shape,
            copy.tilt_angles_deg,
            rotation_xyz=copy.rotation_xyz,
            rfft=True,
            soft_edge_deg=soft_edge_deg,
            dtype=rec.dtype,
            device=rec.device,
        )
        spec = torch.fft.rfftn(vol, dim=dims) * w
        num = spec if num is None else num + spec
        den = w if den is None else den + w
    assert num is not None and den is not None
    out = torch.fft.irfftn(num / (den + eps), s=op.volume_shape, dim=dims)
    return out * s


#: Baselines by their ``cryowedge crm`` name.
BASELINES = {"avg": simple_average, "m-avg": masked_fourier_average}
