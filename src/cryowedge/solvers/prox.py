"""Proximal operators used by the ADMM solvers (pure tensor functions).

``prox_{t·f}(v) = argmin_x f(x) + ‖x − v‖² / (2t)``.
"""

from __future__ import annotations

import torch

__all__ = ["soft_threshold", "group_soft_threshold", "project_nonnegative", "l21_norm"]


def soft_threshold(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """Prox of ``threshold·‖·‖₁``: ``sign(v)·max(|v| − threshold, 0)``, elementwise."""
    return torch.sign(v) * torch.clamp(v.abs() - threshold, min=0.0)


def group_soft_threshold(v: torch.Tensor, threshold: float, dim: int = 0) -> torch.Tensor:
    """Prox of ``threshold·‖·‖₂,₁`` with groups along ``dim`` (thesis eq. 2.19).

    Each group ``v_n`` (e.g. the 3-vector gradient of one voxel) becomes
    ``(1 − threshold/‖v_n‖₂)₊ · v_n``; groups of zero norm stay zero.
    """
    magnitude = _group_norm(v, dim, keepdim=True)
    scale = torch.clamp(1.0 - threshold / magnitude.clamp_min(torch.finfo(v.dtype).tiny), min=0.0)
    return v * scale


def project_nonnegative(v: torch.Tensor) -> torch.Tensor:
    """Projection onto ``{x ≥ 0}`` (the prox of its indicator)."""
    return torch.clamp(v, min=0.0)


def l21_norm(v: torch.Tensor, dim: int = 0) -> float:
    """``‖v‖₂,₁ = Σ_n ‖v_n‖₂`` with groups along ``dim`` (isotropic TV of a gradient)."""
    return float(_group_norm(v, dim).sum())


def _group_norm(v: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """``‖v_n‖₂`` along ``dim`` as sqrt(Σ v²): ~10× faster on CPU than
    ``torch.linalg.vector_norm(dim=...)`` for a short reduced axis (3 gradient components)."""
    return torch.sum(v * v, dim=dim, keepdim=keepdim).sqrt_()
