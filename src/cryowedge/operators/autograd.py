"""PyTorch autograd support: a differentiable application of any linear operator.

The backward pass of ``A(x)`` is ``Aᵀ(grad)``, so gradients are exact (checked with
``torch.autograd.gradcheck`` in the tests) and no graph is recorded inside the operator.

Mixed precision: the operator always computes in float32 or float64. Half-precision
inputs (``float16``/``bfloat16``, e.g. a network's output under ``torch.autocast``) are cast
to float32 in the forward and backward passes, which run with autocast disabled (as
``torch.amp.custom_fwd(cast_inputs=torch.float32)`` would, on any device). The output is
then float32, and the gradient returned for a half-precision input has the input's dtype.
float32 and float64 inputs are passed through unchanged, so ``gradcheck`` in float64 works.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from cryowedge.operators.base import LinearOperatorLike

__all__ = ["apply_forward", "apply_adjoint", "as_autograd", "OperatorModule", "COMPUTE_DTYPES"]

#: Half-precision dtypes that are upcast to float32 before reaching an operator.
_HALF_DTYPES = (torch.float16, torch.bfloat16)
#: The dtypes an operator receives through this module.
COMPUTE_DTYPES = (torch.float32, torch.float64)


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float32 when it is half precision, unchanged otherwise (contiguous)."""
    if t.dtype in _HALF_DTYPES:
        t = t.to(torch.float32)
    return t.contiguous()


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Disable autocast for ``device``'s type inside the operator (no-op where unsupported)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _apply(op_method: Any, t: torch.Tensor) -> torch.Tensor:
    with _no_autocast(t.device):
        return op_method(_full_precision(t))


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, op: LinearOperatorLike) -> torch.Tensor:
        ctx.op, ctx.input_dtype = op, x.dtype
        return _apply(op.forward, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _apply(ctx.op.adjoint, grad).to(ctx.input_dtype), None


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, op: LinearOperatorLike) -> torch.Tensor:
        ctx.op, ctx.input_dtype = op, y.dtype
        return _apply(op.adjoint, y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _apply(ctx.op.forward, grad).to(ctx.input_dtype), None


def apply_forward(op: LinearOperatorLike, x: torch.Tensor) -> torch.Tensor:
    """Differentiable ``op.forward(x)``; backward uses ``op.adjoint``.

    ``x`` has ``op.domain_shape`` (after any batch dimensions); half-precision ``x`` is
    computed in float32 and gives a float32 result (see the module docstring).
    """
    return _Forward.apply(x, op)


def apply_adjoint(op: LinearOperatorLike, y: torch.Tensor) -> torch.Tensor:
    """Differentiable ``op.adjoint(y)``; backward uses ``op.forward``.

    ``y`` has ``op.range_shape`` (after any batch dimensions); half precision as in
    :func:`apply_forward`.
    """
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
