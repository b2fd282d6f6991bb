"""A residual 3D U-Net for sub-tomogram denoising and missing-wedge filling.

Re-implemented from the description of the DeepDeWedge/IsoNet network (research/anchors_ml.md
§1.4): per resolution level a few ``Conv3d(3³) → InstanceNorm3d → LeakyReLU`` layers, a
stride-2 convolution to go down, a stride-2 transposed convolution to come back up with the
skip connection concatenated, a final ``1³`` convolution and a residual connection that adds
the input. Channels double at every level down (``chans · 2^level``; the bottleneck has
``chans · 2^depth``).

The network holds two non-trainable buffers, ``input_loc`` and ``input_scale`` (voxel-value
units of the tomogram): it works on ``(x − loc) / scale`` and maps its result back, so the
weights see unit-scale data whatever the tomogram's units (research/anchors_ml.md §9: tiny
voxel values gave losses of 1e-10). :func:`cryowedge.dewedge.fit.fit` sets them from the fitting
data.

Shapes: input and output ``(B, in_chans, D, H, W)`` = ``(B, 1, z, y, x)``, with ``D, H, W``
divisible by ``2**depth``. Works in ``torch.channels_last_3d`` memory format and under
``torch.autocast`` (bfloat16/float16): the residual and the de-normalisation are done in
float32, so the output is float32 for a float32 input.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

__all__ = ["UNet3D"]

logger = logging.getLogger(__name__)


def _conv_block(c_in: int, c_out: int, n_convs: int, slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            # no bias: the instance norm right after removes it (a bias there only collects
            # rounding noise, which Adam would amplify to ±lr steps)
            nn.Conv3d(c_in if i == 0 else c_out, c_out, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm3d(c_out, affine=True),
            nn.LeakyReLU(slope, inplace=True),
        ]
    return nn.Sequential(*layers)


class UNet3D(nn.Module):
    """Residual 3D U-Net ``(B, in_chans, D, H, W) → (B, out_chans, D, H, W)``.

    Parameters
    ----------
    chans
        Channels of the first level (doubled at every level down).
    depth
        Number of stride-2 down-samplings (``D, H, W`` must be divisible by ``2**depth``).
    in_chans, out_chans
        Input and output channels (1 for tomograms). ``residual`` needs them equal.
    residual
        Add the (normalised) input to the network's output.
    convs_per_level
        ``Conv3d → InstanceNorm3d → LeakyReLU`` layers per level (3 as in the reference).
    negative_slope
        Slope of the LeakyReLU for negative inputs.

    Notes
    -----
    ``config()`` returns the constructor arguments; checkpoints store it so that a model can be
    rebuilt (and a mismatching one refused) by :func:`cryowedge.dewedge.fit.load_model`.
    """

    def __init__(
        self,
        chans: int = 32,
        depth: int = 3,
        in_chans: int = 1,
        out_chans: int = 1,
        residual: bool = True,
        *,
        convs_per_level: int = 3,
        negative_slope: float = 0.05,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("chans", chans, 1),
            ("depth", depth, 1),
            ("in_chans", in_chans, 1),
            ("out_chans", out_chans, 1),
            ("convs_per_level", convs_per_level, 1),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if residual and in_chans != out_chans:
            raise ValueError(
                f"residual=True needs in_chans == out_chans, got {in_chans} and {out_chans}; "
                "pass residual=False."
            )
        self._config: dict[str, Any] = {
            "chans": int(chans),
            "depth": int(depth),
            "in_chans": int(in_chans),
            "out_chans": int(out_chans),
            "residual": bool(residual),
            "convs_per_level": int(convs_per_level),
            "negative_slope": float(negative_slope),
        }
        self.depth = int(depth)
        self.residual = bool(residual)
        widths = [chans * 2**i for i in range(depth + 1)]  # level 0 .. bottleneck
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        c_prev = in_chans
        for level in range(depth):
            self.encoders.append(
                _conv_block(c_prev, widths[level], convs_per_level, negative_slope)
            )
            self.downs.append(
                nn.Sequential(
                    nn.Conv3d(widths[level], widths[level], kernel_size=3, stride=2, padding=1),
                    nn.LeakyReLU(negative_slope, inplace=True),
                )
            )
            c_prev = widths[level]
        self.bottleneck = _conv_block(
            widths[depth - 1], widths[depth], convs_per_level, negative_slope
        )
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.ups.append(
                nn.ConvTranspose3d(widths[level + 1], widths[level], kernel_size=2, stride=2)
            )
            self.decoders.append(
                _conv_block(2 * widths[level], widths[level], convs_per_level, negative_slope)
            )
        self.final = nn.Conv3d(widths[0], out_chans, kernel_size=1)
        self.register_buffer("input_loc", torch.zeros(()))
        self.register_buffer("input_scale", torch.ones(()))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (``UNet3D(**model.config())`` rebuilds the architecture)."""
        return dict(self._config)

    def set_normalization(self, loc: float, scale: float) -> None:
        """Set the input centre and scale (voxel-value units); ``scale`` must be > 0."""
        if not (float(scale) > 0.0) or not torch.isfinite(torch.tensor(float(loc))):
            raise ValueError(
                f"normalisation needs a finite loc and scale > 0, got loc={loc!r}, "
                f"scale={scale!r} (is the tomogram constant?)."
            )
        self.input_loc.fill_(float(loc))
        self.input_scale.fill_(float(scale))

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``shape`` is ``(B, in_chans, D, H, W)`` fitting ``depth``."""
        step = 2**self.depth
        c_in = self._config["in_chans"]
        if len(shape) != 5 or shape[1] != c_in:
            raise ValueError(
                f"UNet3D input must be (B, {c_in}, D, H, W), got shape {tuple(shape)}."
            )
        bad = [n for n in shape[2:] if n % step]
        if bad:
            raise ValueError(
                f"UNet3D spatial sizes {tuple(shape[2:])} must be divisible by 2^depth = {step} "
                f"(depth {self.depth}); crop or pad to a multiple of {step}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, D, H, W)`` → ``(B, out_chans, D, H, W)`` in voxel-value units."""
        self.check_shape(tuple(x.shape))
        loc = self.input_loc.to(torch.float32)
        scale = self.input_scale.to(torch.float32)
        xn = (x.to(torch.float32) - loc) / scale
        h = xn
        skips = []
        for enc, down in zip(self.encoders, self.downs, strict=True):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.bottleneck(h)
        for up, dec in zip(self.ups, self.decoders, strict=True):
            h = up(h)
            h = dec(torch.cat([h, skips.pop()], dim=1))
        out = self.final(h).to(torch.float32)
        if self.residual:
            out = out + xn
        return out * scale + loc
