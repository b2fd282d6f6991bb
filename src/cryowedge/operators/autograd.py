"""PyTorch autograd support: a differentiable application of any linear operator.

The backward pass of ``A(x)`` is ``Aᵀ(grad)``, so gradients are exact (checked with
``torch.autograd.gradcheck`` in the tests) and no graph is recorded inside the operator.
"""

from __future__ import annotations

from typing import Any

import torch

from cryowedge.operators.base import LinearOperatorLike

__all__ = ["apply_forward", "apply_adjoint", "as_autograd", "OperatorModule"]


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, op: LinearOperatorLike) -> torch.Tensor:
        ctx.op = op
        return op.forward(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.op.adjoint(grad.contiguous()), None


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, op: LinearOperatorLike) -> torch.Tensor:
        ctx.op = op
        return op.adjoint(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.op.forward(grad.contiguous()), None


def apply_forward(op: LinearOperatorLike, x: torch.Tensor) -> torch.Tensor:
    """Differentiable ``op.forward(x)``; backward uses ``op.adjoint``."""
    return _Forward.apply(x, op)


def apply_adjoint(op: LinearOperatorLike, y: torch.Tensor) -> torch.Tensor:
    """Differentiable ``op.adjoint(y)``; backward uses ``op.forward``."""
    return _Adjoint.apply(y, op)


class OperatorModule(torch.nn.Module):
    """``torch.nn.Module`` wrapper: ``module(x)`` is a differentiable ``op(x)``.

    ``OperatorModule(op, adjoint=True)`` applies ``Aᵀ`` instead.
    """

    def __init__(self, op: LinearOperatorLike, *, adjoint: bool = False) -> None:
        super().__init__()
        self.op = op
        self.use_adjoint = adjoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_adjoint(self.op, x) if self.use_adjoint else apply_forward(self.op, x)


def as_autograd(op: LinearOperatorLike, *, adjoint: bool = False) -> OperatorModule:
    """One-line PyTorch integration: ``project = as_autograd(TiltProjector(geom))``."""
    return OperatorModule(op, adjoint=adjoint)
