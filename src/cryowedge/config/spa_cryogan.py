"""Typed configuration of ``cryowedge spa cryogan`` (CryoGAN, thesis chapter 6, issue 14).

The only home of CryoGAN's defaults. :class:`CryoGanConfig` holds the thesis's settings
(research/thesis.md §8.2, synthetic data, appendix A.6.5): Adam (β₁ = 0.5, β₂ = 0.9,
ε = 1e-8), learning rate 1e-3 decaying 8 % per epoch, batch 8, ``n_discr = 4``, gradient
penalty λ = 0.001, discriminator gradient norm ≤ 10⁶ and per-voxel volume gradient ≤ 10³,
both clip values ramped from 0 over the first 2 epochs, a spherical support of 95 % of the
box (171/180), positivity with the radial clipping floor (our reading of A.6.5: 10 % of the
maximum at the centre after 16 epochs, rising towards the border), 16 epochs, a discriminator
of six conv blocks with C = 96 channels (96 … 3072). :data:`PRESETS` adds ``cpu-small``: the
same algorithm with a narrower discriminator (C = 16, thesis §8.4: "C = 16–32 for 64² inputs
on CPU"), λ = 1 (the thesis's real-data value, steadier with a small discriminator), the
smaller blob and a volume learning rate of 1e-2: a CPU run makes ~50× fewer volume steps than
the thesis's (hundreds, not ~10⁴). On the hollow-shell test particle the map's correlation with
the truth went from 0.73 to 0.79 in 16 steps at 3e-3, reached 0.98 in 80 steps at 1e-2 and 0.99
in 40 at 3e-2 (docs/results.md, CryoGAN).

The thesis's real-data options are fields too, off by default: the critic-input blur
(``blur_sigma_px``), the two-stage schedule (``stage1_epochs``) and the learned signal scale.

:class:`CryoGanDataConfig` describes the simulated data set ``cryowedge spa cryogan
--simulate`` makes when no particle STAR file is given.
Units: sizes in pixels/voxels, shifts in pixels, lengths in Å, angles in degrees.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from cryowedge.config.models import BaseConfig

__all__ = ["CryoGanConfig", "CryoGanDataConfig", "PRESETS", "SYMMETRY_HELP", "preset_config"]

SYMMETRY_HELP = "point group: C1 (none), Cn (n-fold axis along z) or Dn (Cn plus 2-folds along x)"


class CryoGanConfig(BaseConfig):
    """How CryoGAN is trained (defaults: the thesis, §8.2 synthetic column)."""

    epochs: int = Field(
        16,
        ge=1,
        description="training epochs (one epoch = every real image of "
        "a half set shown once to the discriminator)",
    )
    batch_size: int = Field(8, ge=1, description="images per batch (real and simulated)")
    n_discr: int = Field(4, ge=1, description="discriminator steps per volume step")
    lr_volume: float = Field(
        1e-3, gt=0, description="Adam learning rate of the volume and the noise scale"
    )
    lr_discriminator: float = Field(
        1e-3, gt=0, description="Adam learning rate of the discriminator"
    )
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam β₁")
    beta2: float = Field(0.9, ge=0, lt=1, description="Adam β₂")
    adam_eps: float = Field(1e-8, gt=0, description="Adam ε")
    lr_decay: float = Field(
        0.08, ge=0, lt=1, description="learning-rate decay per epoch (lr ← lr·(1 − decay))"
    )
    gp_lambda: float = Field(
        1e-3, ge=0, description="gradient-penalty weight λ (thesis: 0.001 synthetic, 1 real data)"
    )
    clip_discriminator: float = Field(
        1e6, gt=0, description="max norm of the discriminator gradient"
    )
    clip_volume: float = Field(1e3, gt=0, description="max |gradient| per volume coefficient")
    clip_noise_scale: float = Field(
        10.0, gt=0, description="max |gradient| of the learned noise scale"
    )
    clip_ramp_epochs: float = Field(
        2.0,
        ge=0,
        description="epochs over which both clip values "
        "grow linearly from ~0 to their maximum (0: no ramp)",
    )
    learn_signal_scale: bool = Field(
        False,
        description="also learn a scale of the projections (thesis real data: two learned "
        "scalars, projection and noise); False: only the noise scale (the ratio, synthetic data)",
    )
    radial_floor_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="radial clipping (thesis A.6.5, our reading): coefficients below "
        "max·(f·ramp + f·r/R) are set to 0, f this fraction, ramp 0→1 over "
        "radial_floor_ramp_epochs, r/R the distance to the centre over the support radius "
        "(0: plain positivity)",
    )
    radial_floor_ramp_epochs: float = Field(
        16.0,
        gt=0,
        description="epochs over which the floor at the centre grows from 0 to "
        "radial_floor_fraction of the maximum (the thesis: its 16 epochs)",
    )
    blur_sigma_px: float = Field(
        0.0,
        ge=0,
        description="Gaussian blur σ (pixels) of real and simulated images before the "
        "discriminator, shrinking by blur_decay per epoch (thesis real data: 2; synthetic: none)",
    )
    blur_decay: float = Field(
        0.02, ge=0, lt=1, description="relative decrease of blur_sigma_px per epoch"
    )
    stage1_epochs: int = Field(
        0,
        ge=0,
        description="two-stage schedule (thesis real data: 8): the first this many epochs "
        "without shifts; then the volume's optimiser restarts, shifts are switched on and the "
        "volume updates are limited to frequencies finer than "
        "stage2_highpass_fraction_nyquist (0: one stage)",
    )
    stage2_highpass_fraction_nyquist: float = Field(
        0.17,
        gt=0,
        lt=1,
        description="stage 2 refines only frequencies above this fraction of Nyquist "
        "(thesis: 15 Å at a 2.548 Å Nyquist ≈ 0.17)",
    )
    channels: int = Field(
        96, ge=1, description="discriminator width C (blocks have C·1, 2, 4, … channels)"
    )
    n_blocks: int = Field(
        6, ge=1, description="conv blocks of the discriminator (capped at log2 of the image size)"
    )
    hidden: int = Field(10, ge=1, description="width of the discriminator's hidden FC layer")
    normalize_images: bool = Field(
        True, description="normalise each image to zero mean and unit std before the discriminator"
    )
    blob: Literal["reconstruction", "simulation"] = Field(
        "reconstruction",
        description="volume basis: KBWF(4, 19, 2) ('reconstruction') or the "
        "narrower KBWF(2, 10.8, 2) ('simulation', 4× faster projections)",
    )
    noise: Literal["gaussian", "patches"] = Field(
        "gaussian",
        description="noise of the simulator: Gaussian with a learned σ, or "
        "background patches from the data times a learned scale",
    )
    max_shift_px: float = Field(
        0.0, ge=0, description="random shifts uniform in ±this many pixels per axis"
    )
    support_fraction: float = Field(
        0.95,
        gt=0,
        le=1,
        description="radius of the spherical support as a fraction of half the box",
    )
    positivity: bool = Field(True, description="clip the volume at 0 after every step")
    symmetry: str = Field("C1", description=SYMMETRY_HELP)
    half_sets: bool = Field(
        True,
        description="train two independent GANs on the two half sets "
        "(half-map FSC); False: one GAN on all particles",
    )
    same_discriminator_init: bool = Field(
        True,
        description="start both half-set discriminators from the same weights (the thesis); "
        "False: independent initialisations",
    )
    fsc_every: int = Field(
        1, ge=0, description="half-map FSC every this many epochs (0: only at the end)"
    )
    align_rotations: int = Field(
        3000,
        ge=1,
        description="rotations of the global search that "
        "aligns half map 2 onto half map 1 before the FSC (a GAN "
        "recovers the map up to a rotation/reflection)",
    )
    checkpoint_every: int = Field(
        1, ge=0, description="save a checkpoint every this many epochs (0: never)"
    )
    seed: int = Field(
        0,
        description="seed of every random stream (poses, shifts, CTFs, noise, "
        "batches, initialisation)",
    )
    device: str = Field(
        "auto", description="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', …"
    )
    amp: bool = Field(
        False, description="bfloat16 autocast of the discriminator on CUDA (ignored on CPU)"
    )
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="volume and projector precision"
    )

    @model_validator(mode="after")
    def _check_symmetry(self) -> CryoGanConfig:
        from cryowedge.spa.cryogan.symmetry import parse_symmetry  # torch-free parser

        parse_symmetry(self.symmetry)
        return self


class CryoGanDataConfig(BaseConfig):
    """A simulated data set for ``cryowedge spa cryogan --simulate`` (thesis §8.4 set-up)."""

    density: str = Field(
        "ribosome",
        description="density: 'ribosome', '1a5t', 'emd_5170' or an "
        "MRC path (cryowedge.spa.load_density_source)",
    )
    box_size: int = Field(32, ge=8, description="image and volume size (pixels)")
    n_particles: int = Field(4000, ge=2, description="particles (split into two half sets)")
    snr: float | None = Field(
        0.3,
        gt=0,
        description="var(signal)/σ² per data set (the thesis's "
        "SNR 0.55 read as a norm ratio is ≈ 0.30 as an energy ratio, "
        "§13.15); None: no noise",
    )
    ctf: bool = Field(True, description="per-particle CTF")
    defocus_min_angstrom: float = Field(10_000.0, gt=0, description="smallest defocus (Å)")
    defocus_max_angstrom: float = Field(25_000.0, gt=0, description="largest defocus (Å)")
    b_factor_angstrom2: float = Field(0.0, ge=0, description="CTF envelope B-factor (Å²)")
    max_shift_px: float = Field(0.0, ge=0, description="shifts uniform in ±this (pixels)")
    pixel_size_angstrom: float | None = Field(
        None, gt=0, description="pixel size (Å); default: the particle fills 70 % of the half box"
    )
    seed: int = Field(0, description="seed of the simulation")

    @model_validator(mode="after")
    def _check_defocus(self) -> CryoGanDataConfig:
        if self.defocus_max_angstrom < self.defocus_min_angstrom:
            raise ValueError(
                f"defocus_max_angstrom ({self.defocus_max_angstrom}) must be >= "
                f"defocus_min_angstrom ({self.defocus_min_angstrom})."
            )
        return self


#: Named option sets: ``thesis`` (the defaults) and ``cpu-small`` (a narrow discriminator,
#: λ = 1 and the small blob, for 32³–64³ runs on a CPU).
PRESETS: dict[str, dict[str, Any]] = {
    "thesis": {},
    "cpu-small": {
        "channels": 16,
        "gp_lambda": 1.0,
        "lr_volume": 1e-2,
        "blob": "simulation",
        "align_rotations": 2000,
    },
}


def preset_config(name: str = "thesis", **changes: Any) -> CryoGanConfig:
    """The :class:`CryoGanConfig` of preset ``name`` with ``changes`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown CryoGAN preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return CryoGanConfig(**{**PRESETS[name], **changes})
