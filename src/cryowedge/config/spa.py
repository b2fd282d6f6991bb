"""Typed configuration of ``cryowedge spa`` (single-particle reconstruction, issue 13).

The only home of the SPA commands' defaults, help texts and option names:

* :class:`SpaSimulateConfig` — ``cryowedge spa simulate``: particle images of a real density
  at uniformly random orientations, with CTF, noise at a target SNR and an optional error on
  the assigned angles (:func:`cryowedge.spa.simulate.simulate_spa`).
* :class:`SpaReconstructConfig` — ``cryowedge spa reconstruct``: TV-regularised reconstruction
  on the Toeplitz normal operator (thesis Algorithm 2, 30 ADMM × 7 CG, KBWF(4, 19, 2)), or
  the inner-loop-free ADMM; coarse-to-fine scales; CTF handling; half maps and their FSC.
* :class:`SpaRefineConfig` — ``cryowedge spa refine``: joint refinement of the orientations,
  shifts and map (thesis §4.2, Algorithms 3–5), then the final reconstruction with the
  refined poses (all :class:`SpaReconstructConfig` fields).

A ``--config`` YAML file holds any of the fields; options given on the command line override
it; the resolved model is saved as ``<out>/spa.yaml``. Units: sizes in pixels (voxels),
angles in degrees, lengths in Å, SNR a variance ratio (not dB) (docs/conventions.md).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cryowedge.config.models import BaseConfig, cli

__all__ = [
    "CTF_MODE_NAMES",
    "DENSITY_NAMES",
    "SPA_METHODS",
    "SpaReconstructConfig",
    "SpaRefineConfig",
    "SpaSimulateConfig",
    "parse_lambdas",
    "parse_scales",
]

#: Named densities of :func:`cryowedge.spa.simulate.load_density_source` (an MRC path works too).
DENSITY_NAMES = ("1a5t", "ribosome", "emd_5170")
#: Reconstruction solvers (:data:`cryowedge.spa.reconstruct.METHODS`).
SPA_METHODS = ("admm_cg", "ilf")
#: How the CTF enters (:data:`cryowedge.spa.reconstruct.CTF_MODES`).
CTF_MODE_NAMES = ("auto", "model", "phase_flip", "wiener", "none")


def parse_scales(value: Any) -> tuple[int, ...]:
    """``"4,2,1"`` (or a list, or one int) → ``(4, 2, 1)``: decreasing, each dividing the last.

    Raises
    ------
    ValueError
        An entry that is not a whole number >= 1, or scales that do not decrease by divisors.
    """
    items = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    out = []
    for item in items:
        try:
            s = int(str(item))
        except ValueError:
            raise ValueError(
                f"scales must be whole numbers >= 1 separated by commas, e.g. '4,2,1'; got "
                f"{value!r}."
            ) from None
        if s < 1:
            raise ValueError(f"scales must be >= 1 (a coefficient grid step), got {value!r}.")
        out.append(s)
    if not out:
        raise ValueError("scales must name at least one scale, e.g. '1' or '4,2,1'.")
    for a, b in zip(out, out[1:], strict=False):
        if a <= b or a % b:
            raise ValueError(
                f"scales must decrease and each must divide the previous one (e.g. '4,2,1'), got "
                f"{value!r}."
            )
    return tuple(out)


def parse_lambdas(value: Any) -> tuple[float, ...]:
    """``"0.01,0.1,1"`` (or a list) → ``(0.01, 0.1, 1.0)``; ``""``/``None`` → ``()``.

    Raises
    ------
    ValueError
        An entry that is not a number, or below 0.
    """
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else [
        v for v in str(value).replace(" ", "").split(",") if v]
    out = []
    for item in items:
        try:
            lam = float(item)
        except (TypeError, ValueError):
            raise ValueError(
                f"lambda_sweep must be numbers separated by commas, e.g. '0.1,1,10'; got "
                f"{value!r}."
            ) from None
        out.append(_check_lambda(lam, "each λ of lambda_sweep"))
    return tuple(out)


class SpaSimulateConfig(BaseConfig):
    """A simulated single-particle data set (``cryowedge spa simulate``).

    Defaults: the thesis's robustness set-up (§4.1.7) at a laptop size — the 70S ribosome, SNR 1,
    uniform orientations — with a CTF (defocus 1–2.5 µm) so that the data look like extracted
    particles; ``--no-ctf`` gives the thesis's PSF-free data.
    """

    density: str = Field(
        "ribosome",
        description="1a5t (bundled PDB, Gaussian atoms), ribosome or emd_5170 (../shared/data) "
        "or an MRC file of a cubic map",
    )
    source_pixel_size_angstrom: float | None = Field(
        None, gt=0, description="voxel size of the density map, Å (when its header lacks it)",
        json_schema_extra=cli("--source-pixel-size"),
    )
    box_size: int = Field(32, ge=4, description="image and volume size, pixels",
                          json_schema_extra=cli("--box"))
    n_particles: int = Field(500, ge=1, description="number of particle images")
    pixel_size_angstrom: float | None = Field(
        None, gt=0,
        description="pixel size, Å (default: the particle fills 'fill' of the half box)",
        json_schema_extra=cli("--pixel-size"),
    )
    fill: float = Field(0.7, gt=0, le=1,
                        description="particle radius / half box when the pixel size is automatic")
    snr: float | None = Field(1.0, gt=0,
                              description="signal variance / noise variance (not dB)")
    clean: bool = Field(False, description="no noise at all (overrides --snr)")
    snr_per_image: bool = Field(False, description="one noise σ per image, not per data set")
    max_shift_px: float = Field(0.0, ge=0, description="in-plane shifts uniform in ±this, pixels")
    ctf: bool = Field(True, description="apply a per-particle CTF (parameters below)")
    defocus_min_angstrom: float = Field(
        10_000.0, gt=0, description="lowest defocus U, Å",
        json_schema_extra=cli("--defocus-range", part=0,
                              help="defocus U uniform in MIN MAX, Å (underfocus positive)"),
    )
    defocus_max_angstrom: float = Field(
        25_000.0, gt=0, description="highest defocus U, Å",
        json_schema_extra=cli("--defocus-range", part=1),
    )
    astigmatism_angstrom: float = Field(0.0, ge=0, description="largest defocus U − V, Å")
    b_factor_angstrom2: float = Field(0.0, ge=0, description="CTF envelope B-factor, Å²",
                                      json_schema_extra=cli("--b-factor"))
    voltage_kv: float = Field(300.0, gt=0, description="acceleration voltage, kV",
                              json_schema_extra=cli("--voltage"))
    spherical_aberration_mm: float = Field(2.7, ge=0, description="spherical aberration Cs, mm",
                                           json_schema_extra=cli("--cs"))
    amplitude_contrast: float = Field(0.07, ge=0, le=1, description="amplitude contrast fraction")
    angular_error_variance_deg2: float = Field(
        0.0, ge=0, description="variance of the error added to each assigned Euler angle, deg²",
        json_schema_extra=cli("--angular-error"),
    )
    angular_error_distribution: Literal["uniform", "gaussian"] = Field(
        "uniform", description="distribution of that error (the thesis: uniform)"
    )
    n_classes: int | None = Field(None, ge=1,
                                  description="also write this many class averages (no CTF)")
    oversample: int = Field(1, ge=1, le=4,
                            description="simulate on a grid and detector this many times finer")
    seed: int = Field(0, description="random seed (orientations, CTFs, noise, half sets)")

    @model_validator(mode="after")
    def _check(self) -> SpaSimulateConfig:
        if self.defocus_min_angstrom > self.defocus_max_angstrom:
            raise ValueError(
                f"defocus range: MIN {self.defocus_min_angstrom:g} Å is above MAX "
                f"{self.defocus_max_angstrom:g} Å; give --defocus-range MIN MAX."
            )
        if self.ctf and self.astigmatism_angstrom >= self.defocus_min_angstrom:
            raise ValueError(
                f"astigmatism_angstrom ({self.astigmatism_angstrom:g} Å) must be below the lowest "
                f"defocus ({self.defocus_min_angstrom:g} Å)."
            )
        if self.ctf and self.n_classes is not None:
            raise ValueError(
                "class averages are simulated without a CTF (thesis §4.1.7); add --no-ctf or "
                "leave out --n-classes."
            )
        return self

    def simulate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`cryowedge.spa.simulate.simulate_spa`."""
        return {
            "box_size": self.box_size,
            "n_particles": self.n_particles,
            "pixel_size_angstrom": self.pixel_size_angstrom,
            "source_pixel_size_angstrom": self.source_pixel_size_angstrom,
            "fill": self.fill,
            "snr": None if self.clean else self.snr,
            "snr_per_image": self.snr_per_image,
            "max_shift_px": self.max_shift_px,
            "ctf": self.ctf,
            "defocus_range_angstrom": (self.defocus_min_angstrom, self.defocus_max_angstrom),
            "astigmatism_angstrom": self.astigmatism_angstrom,
            "b_factor_angstrom2": self.b_factor_angstrom2,
            "voltage_kv": self.voltage_kv,
            "spherical_aberration_mm": self.spherical_aberration_mm,
            "amplitude_contrast": self.amplitude_contrast,
            "angular_error_variance_deg2": self.angular_error_variance_deg2,
            "angular_error_distribution": self.angular_error_distribution,
            "n_classes": self.n_classes,
            "oversample": self.oversample,
            "seed": self.seed,
        }


def _check_lambda(value: float, name: str) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{name} (the TV weight λ) must be a finite number >= 0, got {value!r}; use 0 for "
            "least squares or a positive weight such as 1."
        )
    return value


class SpaReconstructConfig(BaseConfig):
    """Model-based reconstruction of a particle stack (``cryowedge spa reconstruct``).

    Defaults (research/thesis.md §4.2, §10): TV-ADMM with 30 outer × 7 CG iterations on the
    Toeplitz normal operator, KBWF(a = 4, α = 19, m = 2) on the image grid (s = 1), λ = 1 for
    data divided by their standard deviation (λ is unit-free; the thesis sweeps 10⁻²…10²),
    ρ = 100 λ, no positivity for ADMM-CG (on for ILF), the CTF phase-flipped when the STAR
    file has one, gold-standard half maps (RELION's ``rlnRandomSubset``, else a random split).
    """

    method: Literal["admm_cg", "ilf"] = Field(
        "admm_cg",
        description="admm_cg: TV-ADMM with inner CG (thesis Alg. 2); ilf: inner-loop-free ADMM "
        "(§4.3)",
    )
    tv_lambda: float = Field(1.0, description="TV weight λ ≥ 0 (data normalised: unit-free)",
                             json_schema_extra=cli("--lambda"))
    lambda_sweep: str = Field(
        "",
        description="λ values to try with one kernel, e.g. '0.01,0.1,1,10,100' (the thesis's "
        "sweep); needs --reference: the λ with the best FSC-0.5 against it makes the maps",
    )
    n_iter: int | None = Field(
        None, ge=1, description="outer iterations (default: 30 for admm_cg, 200 for ilf)"
    )
    n_cg: int = Field(7, ge=1, description="CG steps per ADMM iteration (admm_cg)")
    rho: float | None = Field(None, gt=0, description="ADMM penalty ρ (default: 100 λ)")
    positivity: bool | None = Field(
        None, description="constrain the coefficients to ≥ 0 (default: off for admm_cg, on for ilf)"
    )
    scales: str = Field(
        "1",
        description="coefficient grid steps s, coarse to fine, e.g. '4,2,1' (each warm-starts "
        "the next; the map is the last)",
    )
    blob_radius: float = Field(4.0, gt=0, description="Kaiser–Bessel basis radius a, grid steps")
    blob_alpha: float = Field(19.0, gt=0, description="Kaiser–Bessel taper α")
    blob_order: float = Field(2.0, ge=0, description="Kaiser–Bessel order m")
    ctf: Literal["auto", "model", "phase_flip", "wiener", "none"] = Field(
        "auto",
        description="CTF correction: auto (phase_flip when the STAR file has defocus columns, "
        "else none), model (the CTF in the projector), phase_flip, wiener, none",
    )
    inverted_contrast: bool = Field(
        False,
        description="dense matter is bright in the images (RELION extraction); sets the CTF sign",
    )
    bin: int = Field(
        1, ge=1,
        description="downsample the images by this factor (Fourier cropping to box // bin) "
        "before reconstructing; the map's voxel is bin × the pixel size",
    )
    half_maps: bool = Field(True, description="also reconstruct two half sets and their FSC")
    half_split_seed: int = Field(
        0, description="seed of the random half split when the STAR file has no rlnRandomSubset"
    )
    fsc_mask_radius_px: float | None = Field(
        None, gt=0, description="soft spherical mask of this radius for the half-map FSC, pixels "
        "(default: unmasked)",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    double: bool = Field(False, description="compute in float64 (slower; exact tests)")

    @field_validator("tv_lambda")
    @classmethod
    def _lambda(cls, value: float) -> float:
        return _check_lambda(value, "tv_lambda")

    @field_validator("lambda_sweep", mode="before")
    @classmethod
    def _sweep(cls, value: Any) -> str:
        return ",".join(f"{v:g}" for v in parse_lambdas(value))

    @property
    def lambda_list(self) -> tuple[float, ...]:
        """The λ values of ``lambda_sweep`` (empty: no sweep)."""
        return parse_lambdas(self.lambda_sweep)

    @model_validator(mode="after")
    def _sweep_one_scale(self) -> SpaReconstructConfig:
        if self.lambda_sweep and len(self.scale_list) > 1:
            raise ValueError(
                f"lambda_sweep runs at one scale, but scales is {self.scales!r}; give one scale "
                "(e.g. --scales 2) or leave out --lambda-sweep."
            )
        return self

    @field_validator("scales", mode="before")
    @classmethod
    def _scales(cls, value: Any) -> str:
        return ",".join(map(str, parse_scales(value)))

    @property
    def scale_list(self) -> tuple[int, ...]:
        """The coefficient grid steps, coarse to fine (``(4, 2, 1)``)."""
        return parse_scales(self.scales)

    @property
    def iterations(self) -> int:
        """Outer iterations of the chosen solver (the default when ``n_iter`` is not set)."""
        return self.n_iter if self.n_iter is not None else (30 if self.method == "admm_cg" else 200)

    def blob(self) -> Any:
        """The reconstruction basis :class:`~cryowedge.spa.basis.KaiserBesselBlob`."""
        from cryowedge.spa.basis import KaiserBesselBlob

        return KaiserBesselBlob(
            radius=self.blob_radius, alpha=self.blob_alpha, order=self.blob_order
        )

    def solver_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`cryowedge.spa.reconstruct.reconstruct_spa` (no data)."""
        import torch

        return {
            "method": self.method,
            "lam": self.tv_lambda,
            "n_iter": self.iterations,
            "n_cg": self.n_cg,
            "positivity": self.positivity,
            "rho": self.rho,
            "blob": self.blob(),
            "ctf": self.ctf,
            "dtype": torch.float64 if self.double else torch.float32,
        }


class SpaRefineConfig(SpaReconstructConfig):
    """Joint angular refinement (``cryowedge spa refine``), then the final reconstruction.

    The refinement alternates a fast reconstruction at fixed poses with per-particle gradient
    descent on the Euler angles and shifts (thesis Algorithms 3–5: K_GD = 3 steps, backtracking
    η = 0.25, mini-batches). The thesis's absolute first steps γ⁰ (1e-7, 1e-5) depend on its
    data scale; here the first trial step has a fixed length (``angle_step_deg``,
    ``shift_step_px``). The inherited reconstruction fields then make the final map, half maps
    and FSC with the refined poses.
    """

    refine_iter: int = Field(10, ge=1, description="outer refinement iterations (reconstruct + "
                             "pose update)")
    refine_halves: bool = Field(
        True,
        description="with --half-maps, refine the two half sets independently (gold standard: "
        "the half-map FSC is not biased by a shared refinement); off: all particles together",
    )
    refine_reconstruction: Literal["ridge", "tv"] = Field(
        "ridge",
        description="reconstruction step inside the refinement: ridge (CG on HᵀH + μI) or tv "
        "(K_ADMM TV-ADMM iterations, thesis Alg. 4)",
    )
    ridge: float = Field(0.05, ge=0, description="relative Tikhonov weight of the ridge step")
    ridge_cg_iter: int = Field(10, ge=1, description="CG iterations of the ridge step")
    refine_admm_iter: int = Field(5, ge=1, description="K_ADMM of the tv step (thesis: 2 or 5)")
    refine_lambda: float = Field(0.1, description="λ of the tv step (normalised data)")
    gd_steps: int = Field(3, ge=1, description="K_GD: gradient steps per particle and update")
    shrink: float = Field(0.25, gt=0, lt=1, description="backtracking factor η")
    angle_step_deg: float = Field(3.0, gt=0, description="length of the first angle step, °")
    shift_step_px: float = Field(0.5, gt=0, description="length of the first shift step, px")
    refine_shifts: bool = Field(True, description="refine the in-plane shifts too")
    max_shift_px: float | None = Field(None, gt=0,
                                       description="clip the shifts to ±this (default: box/4)")
    batch_size: int = Field(64, ge=1, description="particles per mini-batch")
    parametrization: Literal["euler", "rotation"] = Field(
        "euler", description="descend on (rot, tilt, psi) (thesis) or on a rotation vector"
    )
    gradient: Literal["auto", "kernel", "direct"] = Field(
        "auto", description="evaluation of J_p and its gradient (auto: kernel without CTF model)"
    )
    support_mask: Literal["sphere", "none"] = Field(
        "sphere", description="support of the map during the pose update"
    )

    @field_validator("refine_lambda")
    @classmethod
    def _refine_lambda(cls, value: float) -> float:
        return _check_lambda(value, "refine_lambda")

    def latent_options(self) -> Any:
        """The :class:`~cryowedge.spa.refine.LatentUpdateOptions` of the pose update."""
        from cryowedge.spa.refine import LatentUpdateOptions

        return LatentUpdateOptions(
            n_steps=self.gd_steps,
            shrink=self.shrink,
            angle_step_deg=self.angle_step_deg,
            shift_step_px=self.shift_step_px,
            batch_size=self.batch_size,
            refine_shifts=self.refine_shifts,
            max_shift_px=self.max_shift_px,
            parametrization=self.parametrization,
        )

    def reconstruction_step(self) -> Any:
        """The reconstruction step of :func:`~cryowedge.spa.refine.joint_refinement`."""
        from cryowedge.spa.refine import RidgeReconstruction, TVReconstruction

        if self.refine_reconstruction == "tv":
            return TVReconstruction(lam=self.refine_lambda, n_admm=self.refine_admm_iter,
                                    n_cg=self.n_cg)
        return RidgeReconstruction(ridge=self.ridge, n_iter=self.ridge_cg_iter)
