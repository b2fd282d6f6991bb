"""The autograd wrapper under mixed precision: the operator only ever sees float32/float64."""

from __future__ import annotations

import pytest
import torch

from cryowedge import TiltGeometry, TiltProjector
from cryowedge.operators.autograd import apply_adjoint, apply_forward, as_autograd


class _DtypeSpy:
    """Delegates to an operator and records the dtype (and autocast state) of every call."""

    def __init__(self, op) -> None:
        self.op = op
        self.domain_shape, self.range_shape = op.domain_shape, op.range_shape
        self.calls: list[tuple[str, torch.dtype, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(("forward", x.dtype, torch.is_autocast_enabled(x.device.type)))
        return self.op.forward(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self.calls.append(("adjoint", y.dtype, torch.is_autocast_enabled(y.device.type)))
        return self.op.adjoint(y)


def _projector() -> TiltProjector:
    geom = TiltGeometry.from_range(-60, 60, 15, (6, 10))
    return TiltProjector(geom, (8, 6, 10))


def test_bfloat16_model_under_autocast_feeds_the_projector_in_float32():
    op = _projector()
    spy = _DtypeSpy(op)
    n_vox = 8 * 6 * 10
    model = torch.nn.Linear(4, n_vox)
    code = torch.randn(1, 4)
    target = torch.randn(op.range_shape)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        vol = model(code).reshape(op.domain_shape)
        assert vol.dtype == torch.bfloat16  # the situation this is about
        vol.retain_grad()
        sino = as_autograd(spy)(vol)
        loss = ((sino - target) ** 2).sum()
    loss.backward()

    assert sino.dtype == torch.float32
    assert [c[0] for c in spy.calls] == ["forward", "adjoint"]
    assert all(dtype == torch.float32 and not autocast for _, dtype, autocast in spy.calls)

    # the same computation in plain float32 from the same (bfloat16-rounded) volume:
    # A v and the gradient 2 Aᵀ(A v − t) of the loss
    ref_vol = vol.detach().float()
    ref_sino = op.forward(ref_vol)
    ref_grad = op.adjoint(2.0 * (ref_sino - target))
    torch.testing.assert_close(sino.detach(), ref_sino, rtol=1e-6, atol=1e-6)
    assert vol.grad.dtype == torch.bfloat16  # the gradient returns in the input's dtype
    torch.testing.assert_close(vol.grad, ref_grad.to(torch.bfloat16))
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_are_upcast_for_forward_and_adjoint_without_autocast(half):
    op = _projector()
    spy = _DtypeSpy(op)
    x = torch.randn(op.domain_shape).to(half).requires_grad_(True)
    y = torch.randn(op.range_shape).to(half).requires_grad_(True)
    ax = apply_forward(spy, x)
    aty = apply_adjoint(spy, y)
    (ax.sum() + aty.sum()).backward()
    assert ax.dtype == aty.dtype == torch.float32
    assert {dtype for _, dtype, _ in spy.calls} == {torch.float32} and len(spy.calls) == 4
    torch.testing.assert_close(ax, op.forward(x.detach().float()))
    torch.testing.assert_close(aty, op.adjoint(y.detach().float()))
    assert x.grad.dtype == y.grad.dtype == half


def test_float64_stays_float64_under_autocast_and_gradcheck_passes():
    geom = TiltGeometry.from_range(-50, 50, 25, (3, 5))
    op = TiltProjector(geom, (4, 3, 5))
    spy = _DtypeSpy(op)
    x = torch.randn(op.domain_shape, dtype=torch.float64, requires_grad=True)
    y = torch.randn(op.range_shape, dtype=torch.float64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = apply_forward(spy, x)
    assert out.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda v: apply_forward(spy, v), (x,))
    assert torch.autograd.gradcheck(lambda v: apply_adjoint(spy, v), (y,))
    assert {dtype for _, dtype, _ in spy.calls} == {torch.float64}
