"""Small operators the solvers compose with projectors: matrices, masks, finite differences.

* :class:`MatrixOperator` wraps an explicit (dense or sparse) matrix; it is the reference
  operator of the solver tests and exposes its rows for row-action methods (ART).
* :class:`MaskOperator` is the diagonal 0/1 sampling operator ``S`` (``S² = S = Sᵀ``) of
  compressed-sensing STEM tomography and of inpainting.
* :class:`FiniteDifference` is the forward-difference gradient ``∇`` used by TV; its adjoint
  is the negative divergence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cryowedge.operators._sparse import csr_matmul, to_torch_csr
from cryowedge.operators.base import LinearOperator, LinearOperatorLike

__all__ = [
    "as_binary_mask",
    "MatrixOperator",
    "MaskOperator",
    "FiniteDifference",
    "RangeSubset",
    "RowForm",
]


@dataclass(frozen=True)
class RowForm:
    """An operator written as ``A = M ⊗ I_batch`` for row-action (ART/Kaczmarz) methods.

    ``matrix`` is a SciPy CSR ``(m, n)`` matrix; ``to_columns(x)`` maps a domain array to
    ``(n, batch)``, ``from_columns`` inverts it, and ``data_to_rows(b)`` maps range data to
    ``(m, batch)``. Row ``i`` of ``M`` acts on every batch column independently, so updating
    all batch columns at once is the same as visiting their rows one after another.
    """

    matrix: sp.csr_matrix
    to_columns: Callable[[torch.Tensor], torch.Tensor]
    from_columns: Callable[[torch.Tensor], torch.Tensor]
    data_to_rows: Callable[[torch.Tensor], torch.Tensor]


class MatrixOperator(LinearOperator):
    """An explicit matrix ``(m, n)`` acting on flattened arrays.

    ``matrix`` may be a NumPy array, a SciPy sparse matrix or a torch tensor; it is kept as
    float64 SciPy CSR (for :meth:`row_form`) and converted to the input's dtype/device.
    ``domain_shape`` / ``range_shape`` (default ``(n,)`` / ``(m,)``) let it act on images:
    inputs are flattened in C order. Leading batch dimensions pass through.
    """

    def __init__(
        self,
        matrix: Any,
        domain_shape: Sequence[int] | None = None,
        range_shape: Sequence[int] | None = None,
    ) -> None:
        if isinstance(matrix, torch.Tensor):
            matrix = matrix.detach().cpu().numpy()
        csr = sp.csr_matrix(matrix, dtype=np.float64)
        m, n = csr.shape
        self.matrix = csr
        self.domain_shape = (n,) if domain_shape is None else tuple(int(s) for s in domain_shape)
        self.range_shape = (m,) if range_shape is None else tuple(int(s) for s in range_shape)
        if int(np.prod(self.domain_shape)) != n or int(np.prod(self.range_shape)) != m:
            raise ValueError(
                f"matrix of shape {csr.shape} cannot map {self.domain_shape} to {self.range_shape}."
            )
        self._torch: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def _get(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.dtype, x.device)
        if key not in self._torch:
            self._torch[key] = (
                to_torch_csr(self.matrix, dtype=x.dtype, device=x.device),
                to_torch_csr(self.matrix.T.tocsr(), dtype=x.dtype, device=x.device),
            )
        return self._torch[key]

    @staticmethod
    def _apply(
        matrix: torch.Tensor, v: torch.Tensor, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
    ) -> torch.Tensor:
        lead = v.shape[: v.ndim - len(in_shape)]
        flat = v.reshape(-1, int(np.prod(in_shape))).T  # (n_in, batch)
        return csr_matmul(matrix, flat).T.reshape(*lead, *out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_domain(x, "x")
        a, _ = self._get(x)
        return self._apply(a, x, self.domain_shape, self.range_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_range(y, "y")
        _, at = self._get(y)
        return self._apply(at, y, self.range_shape, self.domain_shape)

    def row_form(self) -> RowForm:
        """Rows of the matrix for ART (batch size 1)."""
        return RowForm(
            matrix=self.matrix,
            to_columns=lambda x: x.reshape(-1, 1),
            from_columns=lambda c: c.reshape(self.domain_shape),
            data_to_rows=lambda b: b.reshape(-1, 1),
        )

    def __repr__(self) -> str:
        return f"MatrixOperator(shape={self.matrix.shape}, nnz={self.matrix.nnz})"


def as_binary_mask(mask: Any, name: str = "mask") -> torch.Tensor:
    """A bool or 0/1 array/tensor as a bool CPU tensor (``True`` = measured).

    Raises ``ValueError`` naming the offending values when anything other than 0 and 1 occurs.
    """
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    if m.dtype != torch.bool:
        if m.is_complex():
            raise ValueError(f"{name} must hold 0/1 values, got a complex array.")
        values = torch.unique(m)
        if not bool(torch.all((values == 0) | (values == 1))):
            shown = values[:6].tolist()
            raise ValueError(
                f"{name} must contain only 0 and 1 (1 = measured), got values {shown}"
                f"{' ...' if values.numel() > 6 else ''}; pass a binary mask."
            )
        m = m != 0
    return m.cpu()


class MaskOperator(LinearOperator):
    """Diagonal sampling ``S``: multiply by a 0/1 mask (``True`` = measured).

    ``mask`` has the operator's shape (e.g. a tilt series ``(n_tilts, ny, nx)``); the
    operator is self-adjoint and idempotent.
    """

    def __init__(self, mask: np.ndarray | torch.Tensor) -> None:
        m = as_binary_mask(mask)
        self.mask = m
        self.domain_shape = self.range_shape = tuple(m.shape)
        self._cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    @property
    def fraction(self) -> float:
        """Fraction of measured entries (the dose fraction for a scan mask)."""
        return float(self.mask.float().mean())

    def _weights(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.dtype, x.device)
        if key not in self._cache:
            self._cache[key] = self.mask.to(device=x.device, dtype=x.dtype)
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_domain(x, "x")
        return x * self._weights(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.forward(y)

    def __repr__(self) -> str:
        return f"MaskOperator(shape={self.domain_shape}, fraction={self.fraction:.3f})"


class FiniteDifference(LinearOperator):
    """Forward-difference gradient ``∇`` over chosen axes, with Neumann boundary.

    Domain ``shape``; range ``(len(axes), *shape)`` where component ``k`` holds
    ``x[i+1] − x[i]`` along ``axes[k]`` and zero on the last index. The adjoint is the
    negative divergence; ``‖∇‖² ≤ 4·len(axes)``.
    """

    def __init__(self, shape: Sequence[int], axes: Sequence[int] | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        nd = len(self.shape)
        axes = tuple(range(nd)) if axes is None else tuple(int(a) % nd for a in axes)
        if len(set(axes)) != len(axes) or not axes:
            raise ValueError(f"axes must be distinct and non-empty, got {axes!r}.")
        self.axes = axes
        self.domain_shape = self.shape
        self.range_shape = (len(axes), *self.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_domain(x, "x")
        nd = len(self.shape)
        out = x.new_zeros((*x.shape[: x.ndim - nd], len(self.axes), *self.shape))
        for k, ax in enumerate(self.axes):
            dim = x.ndim - nd + ax
            n = x.shape[dim]
            comp = out.select(x.ndim - nd, k)
            comp.narrow(dim, 0, n - 1).copy_(x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1))
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_range(y, "y")
        nd = len(self.shape)
        comp_dim = y.ndim - nd - 1
        out = y.new_zeros((*y.shape[:comp_dim], *self.shape))
        for k, ax in enumerate(self.axes):
            g = y.select(comp_dim, k)
            dim = out.ndim - nd + ax
            n = out.shape[dim]
            if n == 1:
                continue
            # (∇ᵀg)[i] = g[i−1] − g[i], with g[−1] = 0 and g[n−1] ignored (it is zero).
            out.narrow(dim, 0, n - 1).sub_(g.narrow(dim, 0, n - 1))
            out.narrow(dim, 1, n - 1).add_(g.narrow(dim, 0, n - 1))
        return out

    def __repr__(self) -> str:
        return f"FiniteDifference(shape={self.shape}, axes={self.axes})"


class RangeSubset(LinearOperator):
    """Rows ``indices`` (along the first range axis) of any operator: ``y = A(x)[indices]``.

    The generic fallback for block methods (SART) when an operator has no cheaper
    ``subset``; it costs a full forward/adjoint per call.
    """

    def __init__(self, op: LinearOperatorLike, indices: Sequence[int] | np.ndarray) -> None:
        self.op = op
        self.indices = torch.as_tensor(np.atleast_1d(np.asarray(indices, dtype=np.int64)))
        self.domain_shape = tuple(op.domain_shape)
        self.range_shape = (len(self.indices), *tuple(op.range_shape)[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.op.forward(x)
        return y.index_select(y.ndim - len(self.op.range_shape), self.indices.to(y.device))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_range(y, "y")
        dim = y.ndim - len(self.range_shape)
        full = y.new_zeros((*y.shape[:dim], *self.op.range_shape))
        full.index_copy_(dim, self.indices.to(y.device), y)
        return self.op.adjoint(full)
