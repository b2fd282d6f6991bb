"""The CryoGAN generator: a physics simulator with a learnable volume (thesis Alg. 8).

``b_sim = C_h S_t P_θ c + σ n`` (thesis eqs. 6.1–6.2, A.26–A.27):

* ``c`` — the learnable ``(n, n, n)`` blob coefficients (``(z, y, x)``), initialised to **zero**;
  the imaged density is ``Σ_k c[k] ϕ(x − k)`` (:func:`cryowedge.spa.expand` gives its voxel map);
* ``P_θ`` — the project's blob projector :class:`~cryowedge.spa.SpaProjector` for a pose
  ``θ`` drawn uniformly from SO(3) (normalised 4D Gaussian as a unit quaternion);
* ``S_t`` — the shift ``t = (dy, dx)`` pixels, uniform in ``±max_shift_px`` (applied exactly by
  the projector: the blobs are splatted at the shifted positions);
* ``C_h`` — the CTF of a particle drawn uniformly from the data's CTF list
  (:func:`cryowedge.spa.ctf_model.ctf_arrays`, sign following ``inverted_contrast``);
* ``n`` — standard Gaussian noise, or a background patch from the data (the patch of the
  particle whose CTF was drawn when there is one patch per particle), times the learned
  scale ``σ = exp(log_noise_scale)``;
* optionally a learned signal scale ``a = exp(log_signal_scale)`` on the projections (thesis
  A.6.6: "two scalars that are learnt ... the same for every pair of noise/projection
  images"), so that ``b_sim = a·C_h S_t P_θ c + σ n``.

Gradients reach ``c`` through :func:`cryowedge.operators.autograd.apply_forward` (the backward
of the projector is its exact adjoint). :meth:`CryoGanSimulator.constrain_` applies the
volume constraints after a step: symmetrisation, spherical support, positivity and, when
asked, the thesis's radial clipping (:func:`radial_threshold`, our reading of A.6.5: "the
clipping value increases linearly with the distance from the center ... to the border of the
mask, while its minimum value at the center increases linearly from 0 to 10% of the maximum
protein value with the number of epochs"): coefficients below a floor that grows from the centre
to the border are set to 0, so early training is plain positivity and the map fades towards
the mask edge instead of ending in a step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cryowedge.geometry.rotations import quaternion_to_matrix
from cryowedge.operators.autograd import apply_forward
from cryowedge.spa.basis import RECONSTRUCTION_BLOB, SIMULATION_BLOB, KaiserBesselBlob
from cryowedge.spa.cryogan.symmetry import symmetrize, symmetry_matrices
from cryowedge.spa.ctf_model import ctf_arrays
from cryowedge.spa.particles import CTFParams
from cryowedge.spa.projector import SpaProjector
from cryowedge.spa.refine import sphere_mask

__all__ = [
    "BLOBS",
    "CryoGanSimulator",
    "Latent",
    "highpass_filter",
    "radial_threshold",
    "uniform_rotations",
]

logger = logging.getLogger(__name__)

#: Volume bases by config name.
BLOBS: dict[str, KaiserBesselBlob] = {
    "reconstruction": RECONSTRUCTION_BLOB,
    "simulation": SIMULATION_BLOB,
}


def uniform_rotations(n: int, generator: torch.Generator) -> np.ndarray:
    """``(n, 3, 3)`` float64 rotations uniform on SO(3) (Haar), drawn from ``generator``."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64).numpy()
    return quaternion_to_matrix(q)


def radial_threshold(
    volume: torch.Tensor, radius: float, centre_fraction: float, border_fraction: float
) -> torch.Tensor:
    """Zero the coefficients of ``volume`` below a radial floor (in place; returns ``volume``).

    ``floor(r) = max(volume) · (centre_fraction + border_fraction · r / radius)`` with ``r`` the
    distance (voxels) from the box centre ``n // 2``; values below it (negatives included) become
    0. ``centre_fraction = border_fraction = 0`` is plain positivity.

    Parameters
    ----------
    volume : torch.Tensor
        ``(n, n, n)`` coefficients.
    radius : float
        Support radius (voxels) where the floor reaches ``centre + border`` fraction.
    centre_fraction, border_fraction : float
        Floor at the centre and its increase at ``radius``, as fractions of the maximum value.
    """
    n = volume.shape[-1]
    vmax = float(volume.max())
    if vmax <= 0:
        return volume.clamp_(min=0.0)
    ax = torch.arange(n, dtype=volume.dtype, device=volume.device) - n // 2
    r = torch.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2)
    floor = vmax * (centre_fraction + border_fraction * (r / max(radius, 1e-12)))
    return volume.mul_((volume >= floor).to(volume.dtype))


def highpass_filter(volume: torch.Tensor, cutoff_cycles_per_voxel: float) -> torch.Tensor:
    """``(n, n, n)`` ``volume`` with the frequencies below the cutoff removed (raised-cosine edge).

    The edge is one shell wide (``1/n`` cycles/voxel) below the cutoff, so the filter is 0 for
    ``|k| ≤ cutoff − 1/n`` and 1 for ``|k| ≥ cutoff`` (``k`` in cycles/voxel, Nyquist 0.5).
    """
    n = volume.shape[-1]
    k = torch.fft.fftfreq(n, dtype=torch.float64, device=volume.device)
    kr = torch.fft.rfftfreq(n, dtype=torch.float64, device=volume.device)
    mag = torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kr[None, None, :] ** 2)
    lo = cutoff_cycles_per_voxel - 1.0 / n
    t = ((mag - lo) / (1.0 / n)).clamp(0.0, 1.0)
    filt = (0.5 - 0.5 * torch.cos(math.pi * t)).to(volume.dtype)
    spec = torch.fft.rfftn(volume, dim=(-3, -2, -1))
    return torch.fft.irfftn(spec * filt, s=volume.shape[-3:], dim=(-3, -2, -1))


@dataclass(frozen=True)
class Latent:
    """The random variables of one simulated batch of ``B`` images.

    Attributes
    ----------
    rotations : numpy.ndarray
        ``(B, 3, 3)`` poses (RELION matrices on (x, y, z)).
    shifts_px : numpy.ndarray
        ``(B, 2)`` shifts ``(dy, dx)`` in pixels.
    ctf_index : numpy.ndarray
        ``(B,)`` int64 indices into the CTF list (all 0 without CTF).
    noise : torch.Tensor
        ``(B, n, n)`` unit-scale noise (Gaussian or patches), before ``σ``.
    """

    rotations: np.ndarray
    shifts_px: np.ndarray
    ctf_index: np.ndarray
    noise: torch.Tensor


class CryoGanSimulator(nn.Module):
    """Generator of simulated particle images from a learnable volume (module docstring).

    Parameters
    ----------
    size : int
        Volume side and image side ``n`` (pixels).
    pixel_size_angstrom : float
        Pixel size (Å), for the CTF.
    ctf : CTFParams or None
        The data's per-particle CTF parameters (sampled uniformly); ``None``: no CTF.
    inverted_contrast : bool
        Whether the data images have dense matter bright (CTF sign, see
        :class:`~cryowedge.spa.particles.ParticleStack`).
    blob : str or KaiserBesselBlob
        Volume basis (``"reconstruction"`` KBWF(4, 19, 2) or ``"simulation"`` KBWF(2, 10.8, 2)).
    max_shift_px : float
        Shifts uniform in ``±max_shift_px`` per axis.
    noise : {"gaussian", "patches"}
        Noise model; ``"patches"`` needs ``patches``.
    patches : array_like, optional
        ``(K, n, n)`` background patches (zero mean is enforced).
    noise_scale : float
        Initial ``σ`` (> 0).
    learn_signal_scale : bool
        Multiply the projections by a learned ``a`` (initially 1; thesis A.6.6).
    support_fraction : float
        Support radius as a fraction of ``n // 2`` (coefficients outside are kept at 0).
    positivity : bool
        Clip the coefficients at 0 in :meth:`constrain_`.
    symmetry : str
        Point group (``C1``, ``Cn``, ``Dn``) imposed in :meth:`constrain_`.
    dtype, device
        Precision and device of the volume and the projector.
    """

    def __init__(
        self,
        size: int,
        pixel_size_angstrom: float,
        *,
        ctf: CTFParams | None = None,
        inverted_contrast: bool = False,
        blob: str | KaiserBesselBlob = "reconstruction",
        max_shift_px: float = 0.0,
        noise: str = "gaussian",
        patches: np.ndarray | None = None,
        noise_scale: float = 1.0,
        learn_signal_scale: bool = False,
        support_fraction: float = 0.95,
        positivity: bool = True,
        symmetry: str = "C1",
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        n = int(size)
        if n < 4:
            raise ValueError(f"size must be >= 4 pixels, got {size}.")
        if not (math.isfinite(pixel_size_angstrom) and pixel_size_angstrom > 0):
            raise ValueError(f"pixel_size_angstrom must be > 0 Å, got {pixel_size_angstrom!r}.")
        if not (math.isfinite(noise_scale) and noise_scale > 0):
            raise ValueError(f"noise_scale must be > 0, got {noise_scale!r}.")
        if noise not in ("gaussian", "patches"):
            raise ValueError(f"noise must be 'gaussian' or 'patches', got {noise!r}.")
        if isinstance(blob, str):
            if blob not in BLOBS:
                raise ValueError(f"blob must be one of {', '.join(BLOBS)}, got {blob!r}.")
            blob = BLOBS[blob]
        self.n = n
        self.pixel_size_angstrom = float(pixel_size_angstrom)
        self.ctf_params = ctf
        self.inverted_contrast = bool(inverted_contrast)
        self.blob = blob
        self.max_shift_px = float(max_shift_px)
        self.noise_kind = noise
        self.dtype = dtype
        self.device = torch.device(device)
        if noise == "patches":
            if patches is None:
                raise ValueError(
                    "noise='patches' needs background patches (K, n, n); pass "
                    "patches= or use noise='gaussian'."
                )
            p = np.asarray(patches, dtype=np.float32)
            if p.ndim != 3 or p.shape[1:] != (n, n) or p.shape[0] < 1:
                raise ValueError(f"patches must have shape (K, {n}, {n}), got {p.shape}.")
            p = p - p.mean(axis=(1, 2), keepdims=True)
            self.patches: torch.Tensor | None = torch.as_tensor(p)
        else:
            self.patches = None
        self.volume = nn.Parameter(torch.zeros((n, n, n), dtype=dtype, device=self.device))
        self.log_noise_scale = nn.Parameter(
            torch.tensor(math.log(noise_scale), dtype=dtype, device=self.device)
        )
        self.log_signal_scale = (
            nn.Parameter(torch.zeros((), dtype=dtype, device=self.device))
            if learn_signal_scale
            else None
        )
        radius = max(1.0, support_fraction * (n // 2))
        self.support_radius = radius
        self.register_buffer(
            "support", torch.as_tensor(sphere_mask(n, radius), device=self.device), persistent=False
        )
        self.positivity = bool(positivity)
        self.symmetry = symmetry
        self.symmetry_matrices = symmetry_matrices(symmetry)

    # ---------------------------------------------------------------- sampling
    @property
    def n_ctfs(self) -> int:
        """Number of CTFs in the list (0 without CTF)."""
        return 0 if self.ctf_params is None else self.ctf_params.n_particles

    def sample_latent(self, batch: int, generator: torch.Generator) -> Latent:
        """Draw poses, shifts, CTF indices and unit noise for ``batch`` images."""
        rot = uniform_rotations(batch, generator)
        shifts = torch.rand(batch, 2, generator=generator, dtype=torch.float64) * 2.0 - 1.0
        shifts = (shifts * self.max_shift_px).numpy()
        if self.n_ctfs:
            idx = torch.randint(self.n_ctfs, (batch,), generator=generator).numpy()
        else:
            idx = np.zeros(batch, dtype=np.int64)
        if self.patches is not None:
            k = self.patches.shape[0]
            pidx = (
                torch.as_tensor(idx)
                if k == self.n_ctfs
                else torch.randint(k, (batch,), generator=generator)
            )
            noise = self.patches[pidx]
        else:
            noise = torch.randn(batch, self.n, self.n, generator=generator, dtype=torch.float32)
        return Latent(rot, shifts, idx, noise)

    def ctf_half(self, ctf_index: np.ndarray) -> np.ndarray | None:
        """``(B, n, n // 2 + 1)`` half-grid CTFs of list entries ``ctf_index`` (None without)."""
        if self.ctf_params is None:
            return None
        return ctf_arrays(
            self.ctf_params,
            self.n,
            self.pixel_size_angstrom,
            indices=np.asarray(ctf_index),
            rfft=True,
            inverted_contrast=self.inverted_contrast,
        )

    # ---------------------------------------------------------------- forward model
    def projector(
        self, rotations: np.ndarray, shifts_px: np.ndarray, ctf_half: np.ndarray | None
    ) -> SpaProjector:
        """The blob projector ``C_h S_t P_θ`` of one batch (``(B, 3, 3)``, ``(B, 2)``, CTFs)."""
        return SpaProjector(
            self.n,
            np.array(rotations, dtype=np.float64),
            np.array(shifts_px, dtype=np.float64),
            blob=self.blob,
            ctf=ctf_half,
            dtype=self.dtype,
            device=self.device,
        )

    def noiseless(self, latent: Latent) -> torch.Tensor:
        """``C_h S_t P_θ c``: ``(B, n, n)`` projections of the current volume (differentiable)."""
        op = self.projector(latent.rotations, latent.shifts_px, self.ctf_half(latent.ctf_index))
        return apply_forward(op, self.volume)

    @property
    def noise_scale(self) -> torch.Tensor:
        """The learned ``σ`` (scalar tensor)."""
        return self.log_noise_scale.exp()

    def forward(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """A simulated batch ``(B, n, n)``: projections plus scaled noise (differentiable)."""
        latent = self.sample_latent(batch, generator)
        return self.simulate(latent)

    @property
    def signal_scale(self) -> torch.Tensor:
        """The learned ``a`` (scalar tensor; 1 when not learned)."""
        if self.log_signal_scale is None:
            return torch.ones((), dtype=self.dtype, device=self.device)
        return self.log_signal_scale.exp()

    def simulate(self, latent: Latent) -> torch.Tensor:
        """``a·C_h S_t P_θ c + σ n`` for a given latent (``(B, n, n)``)."""
        clean = self.noiseless(latent)
        if self.log_signal_scale is not None:
            clean = clean * self.signal_scale.to(clean.dtype)
        noise = latent.noise.to(dtype=clean.dtype, device=clean.device)
        return clean + self.noise_scale.to(clean.dtype) * noise

    # ---------------------------------------------------------------- constraints
    @torch.no_grad()
    def constrain_(self, floor_centre: float = 0.0, floor_border: float = 0.0) -> None:
        """Symmetrise, zero outside the support, then positivity, in place.

        With ``floor_centre`` or ``floor_border`` > 0 (and ``positivity``), positivity becomes
        :func:`radial_threshold` with these fractions of the maximum.
        """
        v = self.volume
        if self.symmetry_matrices.shape[0] > 1:
            v.copy_(symmetrize(v.detach(), self.symmetry_matrices))
        v.mul_(self.support.to(v.dtype))
        if self.positivity:
            if floor_centre > 0 or floor_border > 0:
                radial_threshold(v, self.support_radius, floor_centre, floor_border)
            else:
                v.clamp_(min=0.0)

    def voxel_map(self) -> np.ndarray:
        """``(n, n, n)`` float32 voxel map ``Σ_k c[k] ϕ(x − k)`` of the current volume."""
        from cryowedge.spa.basis import expand

        with torch.no_grad():
            return (
                expand(self.volume.detach().to(torch.float64).cpu(), self.blob)
                .numpy()
                .astype(np.float32)
            )
