"""The linear-operator protocol every algorithm in cryowedge works through.

Algorithms (FBP, SIRT, ADMM, ...) see an operator only through this small protocol:
``forward``, ``adjoint``, ``domain_shape`` and ``range_shape``. Concrete operators
(tilt projector, detector warps, scan masks, compositions) live beside this module.
Shapes are the trailing, non-batch dimensions; leading dimensions are batch
dimensions and are passed through (see docs/conventions.md).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "LinearOperatorLike",
    "LinearOperator",
    "AdjointOperator",
    "ComposedOperator",
    "IdentityOperator",
    "power_norm",
]


@runtime_checkable
class LinearOperatorLike(Protocol):
    """Anything with ``forward``/``adjoint`` and the two shapes."""

    domain_shape: tuple[int, ...]
    range_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, y: torch.Tensor) -> torch.Tensor: ...


class LinearOperator:
    """Base class: ``A(x)`` is ``A.forward(x)``, ``A.T(y)`` is ``A.adjoint(y)``, ``A @ B``
    composes."""

    domain_shape: tuple[int, ...]
    range_shape: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    @property
    def T(self) -> LinearOperator:  # noqa: N802 - mathematical notation
        return AdjointOperator(self)

    def __matmul__(self, other: LinearOperatorLike) -> LinearOperator:
        return ComposedOperator(self, other)

    def _check_domain(self, x: torch.Tensor, name: str = "x") -> None:
        n = len(self.domain_shape)
        if tuple(x.shape[x.ndim - n :]) != tuple(self.domain_shape) or x.ndim < n:
            raise ValueError(
                f"{type(self).__name__}: {name} must end in shape {tuple(self.domain_shape)}, "
                f"got {tuple(x.shape)}."
            )

    def _check_range(self, y: torch.Tensor, name: str = "y") -> None:
        n = len(self.range_shape)
        if tuple(y.shape[y.ndim - n :]) != tuple(self.range_shape) or y.ndim < n:
            raise ValueError(
                f"{type(self).__name__}: {name} must end in shape {tuple(self.range_shape)}, "
                f"got {tuple(y.shape)}."
            )


class AdjointOperator(LinearOperator):
    """The adjoint ``Aᵀ`` of an operator, itself an operator."""

    def __init__(self, op: LinearOperatorLike) -> None:
        self.op = op
        self.domain_shape = tuple(op.range_shape)
        self.range_shape = tuple(op.domain_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.adjoint(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.forward(y)

    @property
    def T(self) -> LinearOperator:  # noqa: N802
        return self.op if isinstance(self.op, LinearOperator) else super().T


class ComposedOperator(LinearOperator):
    """``outer ∘ inner``: ``forward(x) = outer(inner(x))``."""

    def __init__(self, outer: LinearOperatorLike, inner: LinearOperatorLike) -> None:
        if tuple(outer.domain_shape) != tuple(inner.range_shape):
            raise ValueError(
                f"cannot compose: outer domain {tuple(outer.domain_shape)} != "
                f"inner range {tuple(inner.range_shape)}"
            )
        self.outer, self.inner = outer, inner
        self.domain_shape = tuple(inner.domain_shape)
        self.range_shape = tuple(outer.range_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))


class IdentityOperator(LinearOperator):
    """The identity on arrays ending in ``shape``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.domain_shape = self.range_shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


def power_norm(
    op: LinearOperatorLike,
    *,
    n_iter: int = 20,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> float:
    """Estimate the operator norm ``‖A‖₂`` by power iteration on ``AᵀA``.

    Returns the largest singular value (an underestimate that converges from below).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(tuple(op.domain_shape), generator=gen, dtype=dtype).to(device)
    x /= torch.linalg.vector_norm(x)
    sigma2 = 0.0
    for _ in range(n_iter):
        y = op.adjoint(op.forward(x))
        sigma2 = float(torch.linalg.vector_norm(y))
        if sigma2 == 0.0:
            return 0.0
        x = y / sigma2
    return sigma2**0.5
