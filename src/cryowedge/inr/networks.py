"""Coordinate networks ``G_θ: (x, y, z) → density``: a Fourier-feature MLP and a SIREN.

Both take **normalised coordinates** ``c = (index − N // 2) / half_extent`` of shape
``(..., 3)`` in the order ``(x, y, z)`` (the paper's ``c``), with one ``half_extent`` (in
voxels, half the largest volume dimension) for all three axes so that the coordinate frame is
isotropic; ``c`` lies in about ``[-1, 1]``. They return ``(...)``: the density in the
network's own units (the fit multiplies it by a fixed value scale, :mod:`cryowedge.inr.fit`).

* ``activation="relu" | "gelu" | "silu"``: an MLP (Tancik et al. 2020) on a Fourier-feature
  encoding of the coordinates:

  - ``encoding="gaussian"``: ``γ(c) = [cos 2πBr, sin 2πBr]`` with ``r = c · half_extent`` in
    voxels and ``B`` an ``(n_frequencies, 3)`` matrix of independent ``N(0, σ²)`` entries
    (``σ = encoding_scale`` in **cycles per voxel**, so the same ``σ`` means the same detail
    at any volume size; fixed, a buffer in ``state_dict``);
  - ``encoding="positional"``: per axis, ``n_frequencies // 3`` frequencies spaced
    geometrically from one cycle across the largest dimension up to ``encoding_scale``
    cycles per voxel (Tancik's "positional encoding");
  - ``encoding="none"``: the raw coordinates.

* ``activation="sine"``: a SIREN (Sitzmann et al. 2020): ``sin(ω₀ (W x + b))`` layers with
  the SIREN initialisation — the first layer ``W ~ U(−1/n_in, 1/n_in)``, the others
  ``W ~ U(−√(6/n_in)/ω₀, √(6/n_in)/ω₀)``, biases as PyTorch's default — so that the
  weighted input ``ω₀ W x`` of every hidden layer has a standard deviation of about 1 and
  the activations stay arcsine-distributed on ``[−1, 1]`` (standard deviation ``1/√2``)
  whatever the depth (tests/test_inr_networks.py checks it). A Fourier encoding may
  precede it (default none, as in the original code).

``n_layers`` counts the linear layers, the last one included (the paper's five-layer MLP is
four activated hidden layers of ``width`` features and one linear output). Every network
is built from a plain dict (:meth:`CoordinateNetwork.config`), which checkpoints store to
refuse weights of another shape.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "ENCODINGS",
    "CoordinateNetwork",
    "FourierFeatures",
    "NetworkSpec",
    "build_network",
    "coordinate_grid",
]

logger = logging.getLogger(__name__)

#: Hidden-layer nonlinearities; ``"sine"`` makes the network a SIREN.
ACTIVATIONS = ("relu", "gelu", "silu", "sine")
#: Coordinate encodings.
ENCODINGS = ("gaussian", "positional", "none")


@dataclass(frozen=True)
class NetworkSpec:
    """The shape of a coordinate network (everything a checkpoint must match).

    Attributes
    ----------
    activation : str
        ``relu``, ``gelu``, ``silu`` (MLP) or ``sine`` (SIREN).
    width : int
        Features of every hidden layer.
    n_layers : int
        Linear layers including the output layer (>= 2).
    encoding : str
        ``gaussian``, ``positional`` or ``none``.
    encoding_scale : float
        Gaussian: standard deviation of the frequencies; positional: the highest frequency.
        Cycles per voxel.
    n_frequencies : int
        Gaussian: rows of ``B`` (the encoding has ``2·n_frequencies`` features); positional:
        ``3·(n_frequencies // 3)`` frequencies in all.
    omega0 : float
        SIREN frequency factor ``ω₀`` of every sine layer.
    half_extent : float
        Voxels per coordinate unit (half the largest volume dimension).
    """

    activation: str = "relu"
    width: int = 256
    n_layers: int = 5
    encoding: str = "gaussian"
    encoding_scale: float = 0.05
    n_frequencies: int = 128
    omega0: float = 30.0
    half_extent: float = 64.0

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}."
            )
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"unknown encoding {self.encoding!r}; choose one of {', '.join(ENCODINGS)}."
            )
        if int(self.width) != self.width or self.width < 1:
            raise ValueError(f"width must be a positive integer, got {self.width!r}.")
        if int(self.n_layers) != self.n_layers or self.n_layers < 2:
            raise ValueError(
                f"n_layers must be an integer >= 2 (hidden layers + the output layer), got "
                f"{self.n_layers!r}."
            )
        if not (math.isfinite(self.encoding_scale) and self.encoding_scale > 0):
            raise ValueError(
                f"encoding_scale must be > 0 cycles per voxel, got {self.encoding_scale!r}."
            )
        minimum = 3 if self.encoding == "positional" else 1
        if int(self.n_frequencies) != self.n_frequencies or self.n_frequencies < minimum:
            raise ValueError(
                f"n_frequencies must be an integer >= {minimum} for encoding "
                f"{self.encoding!r}, got {self.n_frequencies!r}."
            )
        if not (math.isfinite(self.omega0) and self.omega0 > 0):
            raise ValueError(f"omega0 must be > 0, got {self.omega0!r}.")
        if not (math.isfinite(self.half_extent) and self.half_extent > 0):
            raise ValueError(f"half_extent must be > 0 voxels, got {self.half_extent!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (checkpoints, records)."""
        return asdict(self)


class FourierFeatures(nn.Module):
    """Fourier-feature encoding of normalised ``(..., 3)`` coordinates (module docstring).

    Parameters
    ----------
    encoding : str
        ``gaussian`` or ``positional``.
    scale : float
        Cycles per voxel (standard deviation, or the highest frequency).
    n_frequencies : int
        See :class:`NetworkSpec`.
    half_extent : float
        Voxels per coordinate unit.
    generator : torch.Generator, optional
        Source of the Gaussian frequencies.

    Notes
    -----
    ``frequencies`` is an ``(F, 3)`` buffer in cycles per **coordinate unit**; the output is
    ``(..., 2F)``: cosines, then sines.
    """

    frequencies: torch.Tensor

    def __init__(
        self,
        encoding: str,
        scale: float,
        n_frequencies: int,
        half_extent: float,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if encoding == "gaussian":
            b = torch.randn(int(n_frequencies), 3, generator=generator) * float(scale)
        elif encoding == "positional":
            per_axis = int(n_frequencies) // 3
            lowest = 1.0 / (2.0 * float(half_extent))  # one cycle across the largest dimension
            highest = max(float(scale), lowest)
            freqs = torch.logspace(
                math.log10(lowest), math.log10(highest), per_axis, dtype=torch.float64
            ).to(torch.float32)
            b = torch.zeros(3 * per_axis, 3)
            for axis in range(3):
                b[axis * per_axis : (axis + 1) * per_axis, axis] = freqs
        else:
            raise ValueError(
                f"unknown encoding {encoding!r}; choose one of gaussian, positional."
            )
        # cycles per voxel → cycles per coordinate unit (r = c · half_extent)
        self.register_buffer("frequencies", b * float(half_extent))

    @property
    def out_features(self) -> int:
        return 2 * int(self.frequencies.shape[0])

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        # Phases reach hundreds of radians: computed in float32 (or float64) even under
        # autocast, where a float16 product would be off by a large fraction of a radian.
        with _no_autocast(coords.device):
            c = coords.float() if coords.dtype in (torch.float16, torch.bfloat16) else coords
            phase = (2.0 * math.pi) * (c @ self.frequencies.T.to(c.dtype))
            return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class _Sine(nn.Module):
    def __init__(self, omega0: float) -> None:
        super().__init__()
        self.omega0 = float(omega0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * x)


def _activation(name: str, omega0: float) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    if name == "sine":
        return _Sine(omega0)
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.")


class CoordinateNetwork(nn.Module):
    """``G_θ``: normalised coordinates ``(..., 3)`` (x, y, z) → density ``(...)``.

    Build it with :func:`build_network`; see the module docstring for the architectures and
    initialisations.

    Parameters
    ----------
    spec : NetworkSpec
        Architecture.
    generator : torch.Generator, optional
        Source of every random initial value (weights, biases, Fourier frequencies), so that
        a seed fixes the network whatever the global RNG state.
    """

    def __init__(self, spec: NetworkSpec, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.encoder: nn.Module
        if spec.encoding == "none":
            self.encoder = nn.Identity()
            n_in = 3
        else:
            enc = FourierFeatures(
                spec.encoding,
                spec.encoding_scale,
                spec.n_frequencies,
                spec.half_extent,
                generator=generator,
            )
            self.encoder, n_in = enc, enc.out_features
        layers: list[nn.Module] = []
        sizes = [n_in] + [spec.width] * (spec.n_layers - 1)
        for i in range(spec.n_layers - 1):
            layers += [nn.Linear(sizes[i], sizes[i + 1]), _activation(spec.activation, spec.omega0)]
        layers.append(nn.Linear(spec.width, 1))
        self.layers = nn.Sequential(*layers)
        self._initialise(generator)

    @torch.no_grad()
    def _initialise(self, generator: torch.Generator | None) -> None:
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            n_in = lin.in_features
            if self.spec.activation == "sine":
                bound = 1.0 / n_in if i == 0 else math.sqrt(6.0 / n_in) / self.spec.omega0
            elif self.spec.activation == "relu":
                bound = math.sqrt(6.0 / n_in)  # He (Kaiming) uniform
            else:
                bound = math.sqrt(3.0 / n_in)  # variance-preserving for gelu/silu/linear out
            if i == len(linears) - 1 and self.spec.activation != "sine":
                bound = math.sqrt(3.0 / n_in)
            lin.weight.uniform_(-bound, bound, generator=generator)
            b = 1.0 / math.sqrt(n_in)  # PyTorch's default bias range
            lin.bias.uniform_(-b, b, generator=generator)

    def config(self) -> dict[str, Any]:
        """The :class:`NetworkSpec` as a dict (``build_network(**net.config())`` rebuilds it)."""
        return self.spec.to_dict()

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        if coords.shape[-1] != 3:
            raise ValueError(
                f"coordinates must end in 3 values (x, y, z), got shape {tuple(coords.shape)}."
            )
        return self.layers(self.encoder(coords)).squeeze(-1)


def build_network(
    spec: NetworkSpec | Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    **changes: Any,
) -> CoordinateNetwork:
    """A :class:`CoordinateNetwork` from a spec (or its dict) plus keyword changes.

    Parameters
    ----------
    spec : NetworkSpec or dict, optional
        The architecture (default: :class:`NetworkSpec`'s defaults).
    seed : int, optional
        Seed of the initial weights and frequencies (default: the global RNG).
    device : torch.device or str, optional
        Where the parameters go.
    **changes
        Fields of :class:`NetworkSpec` to replace.

    Raises
    ------
    ValueError
        Unknown activation or encoding, or a bad size (one line naming the value).
    """
    base = {} if spec is None else (spec.to_dict() if isinstance(spec, NetworkSpec) else dict(spec))
    unknown = set(base) | set(changes)
    unknown -= set(NetworkSpec.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown network option(s) {', '.join(sorted(unknown))}; valid: "
            f"{', '.join(NetworkSpec.__dataclass_fields__)}."
        )
    full = NetworkSpec(**{**base, **changes})
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    net = CoordinateNetwork(full, generator=generator)
    return net if device is None else net.to(device)


def coordinate_grid(
    volume_shape: tuple[int, int, int],
    rows: tuple[int, int] | None = None,
    *,
    half_extent: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalised ``(x, y, z)`` coordinates of the voxels of tilt-axis rows ``y0:y1``.

    Parameters
    ----------
    volume_shape : (nz, ny, nx)
        The whole volume (the centre ``N // 2`` of each axis is coordinate 0).
    rows : (y0, y1), optional
        Rows along ``y`` (default all).
    half_extent : float, optional
        Voxels per coordinate unit (default ``max(volume_shape) / 2``).
    device, dtype
        Of the result.

    Returns
    -------
    torch.Tensor
        ``(nz, y1 − y0, nx, 3)``: the last axis is ``(x, y, z)`` in coordinate units.
    """
    nz, ny, nx = (int(s) for s in volume_shape)
    y0, y1 = (0, ny) if rows is None else (int(rows[0]), int(rows[1]))
    h = float(max(nz, ny, nx)) / 2.0 if half_extent is None else float(half_extent)
    z = (torch.arange(nz, dtype=torch.float64, device=device) - nz // 2) / h
    y = (torch.arange(y0, y1, dtype=torch.float64, device=device) - ny // 2) / h
    x = (torch.arange(nx, dtype=torch.float64, device=device) - nx // 2) / h
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1).to(dtype)
