"""The CryoGAN discriminator (thesis Fig. 6.2) and the WGAN-GP losses (thesis eqs. 6.9–6.12).

Discriminator: ``n_blocks`` blocks of Conv 3×3 (padding 1) → MaxPool 2×2 → LeakyReLU(0.1) with
``C·(1, 2, 4, …)`` channels, then Flatten → FC(hidden) → LeakyReLU(0.1) → FC(1). The thesis
uses six blocks with C = 96 (96 … 3072 channels) on 180² images; here ``n_blocks`` is capped at
``⌊log2 n⌋`` so that a 32² image keeps at least one pixel (5 blocks).

WGAN-GP (6.10), batch means in place of sums (Adam is invariant to the constant factor)::

    L_D = −(mean D(b_real) − mean D(b_sim)) + λ mean_n (‖∇_b D(b_int^n)‖ − 1)²
    b_int^n = α_n b_real^n + (1 − α_n) b_sim^n,   α_n ~ U[0, 1]
    L_c = −mean D(b_sim)                                            (6.12)
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "Discriminator",
    "gaussian_blur",
    "gradient_penalty",
    "interpolates",
    "normalize_images",
]


class Discriminator(nn.Module):
    """CNN critic ``D: (B, n, n) → (B,)`` (see the module docstring).

    Parameters
    ----------
    image_size : int
        Image side ``n`` (pixels, >= 2).
    channels : int
        Width ``C`` of the first block; block ``k`` has ``C·2ᵏ`` channels.
    n_blocks : int
        Conv blocks (capped at ``⌊log2 n⌋``).
    hidden : int
        Width of the hidden fully connected layer.
    """

    def __init__(self, image_size: int, channels: int = 96, n_blocks: int = 6, hidden: int = 10):
        super().__init__()
        if image_size < 2:
            raise ValueError(f"image_size must be >= 2 pixels, got {image_size}.")
        self.image_size = int(image_size)
        self.n_blocks = max(1, min(int(n_blocks), int(math.log2(image_size))))
        layers: list[nn.Module] = []
        c_in = 1
        for k in range(self.n_blocks):
            c_out = channels * 2**k
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.MaxPool2d(2, 2),
                nn.LeakyReLU(0.1),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        side = image_size // 2**self.n_blocks
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, n, n)`` images → ``(B,)`` scores."""
        return self.head(self.features(images[:, None])).squeeze(-1)


def normalize_images(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each ``(n, n)`` image of ``(B, n, n)`` to zero mean and unit standard deviation."""
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True)
    return (images - mean) / (std + eps)


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """``(B, n, n)`` images convolved (periodically) with a Gaussian of std ``sigma_px`` pixels.

    Applied in Fourier space, ``exp(−2π² σ² |k|²)`` with ``k`` in cycles/pixel; differentiable.
    """
    if sigma_px <= 0:
        return images
    n0, n1 = images.shape[-2:]
    ky = torch.fft.fftfreq(n0, device=images.device)
    kx = torch.fft.rfftfreq(n1, device=images.device)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    filt = torch.exp(-2.0 * math.pi**2 * sigma_px**2 * k2).to(images.dtype)
    spec = torch.fft.rfft2(images)
    return torch.fft.irfft2(spec * filt, s=(n0, n1))


def interpolates(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``α_n b_real^n + (1 − α_n) b_sim^n`` for ``(B, n, n)`` batches and ``(B,)`` weights."""
    a = alpha.to(real.dtype).reshape(-1, *([1] * (real.ndim - 1)))
    return a * real + (1.0 - a) * fake


def gradient_penalty(
    disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean_n (‖∇_b D(b_int^n)‖₂ − 1)²`` on the interpolates, with a graph for its gradient.

    Parameters
    ----------
    disc : nn.Module
        The critic ``(B, n, n) → (B,)``.
    real, fake : torch.Tensor
        ``(B, n, n)`` batches (treated as constants).
    alpha : torch.Tensor
        ``(B,)`` interpolation weights in ``[0, 1]``.

    Returns
    -------
    (penalty, points)
        The scalar penalty (differentiable w.r.t. the critic's parameters) and the ``(B, n, n)``
        interpolates it was computed on.
    """
    points = interpolates(real.detach(), fake.detach(), alpha).requires_grad_(True)
    scores = disc(points)
    (grad,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    norms = grad.flatten(1).norm(dim=1)
    return ((norms - 1.0) ** 2).mean(), points
