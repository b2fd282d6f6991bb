"""Typed configuration models: the ONLY home of defaults.

The CLI derives its option defaults from these models, and every run writes the resolved
model (plus version and command line) next to its outputs. ``extra="forbid"`` catches
typos in YAML files.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BaseConfig",
    "SimulateConfig",
    "ReconstructConfig",
    "DemoConfig",
    "RECONSTRUCT_METHODS",
    "ITERATIVE_METHODS",
    "DEFAULT_ITERATIONS",
    "DEFAULT_RELAXATION",
    "StetSimulateConfig",
    "StetReconstructConfig",
    "StetConfig",
    "RENAMED_OPTIONS",
]

#: Options that were renamed, old name → new name, so old YAML files get a precise hint.
RENAMED_OPTIONS = {"lam": "tv_lambda"}


class BaseConfig(BaseModel):
    """Pydantic base with YAML round trip and no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        """Refuse unknown keys with a hint (the renamed name, or the closest valid one)."""
        if not isinstance(data, dict):
            return data
        fields = list(cls.model_fields)
        problems = []
        for key in (k for k in data if k not in cls.model_fields):
            new = RENAMED_OPTIONS.get(str(key))
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = (f"renamed to '{new}'" if new in cls.model_fields
                    else f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(fields)}")
            problems.append(f"unknown option '{key}' ({hint})")
        if problems:
            raise ValueError("; ".join(problems))
        return data

    @classmethod
    def from_yaml(cls, path: str | Path) -> BaseConfig:
        """Load from a YAML file (unknown keys are an error)."""
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of options, got {type(data).__name__}.")
        return cls(**data)

    def to_yaml(self) -> str:
        """YAML text of the resolved configuration."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def updated(self, **changes: Any) -> BaseConfig:
        """Copy with the non-``None`` values of ``changes`` applied (and validated)."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return type(self)(**data)


class _PhantomTiltSeriesConfig(BaseConfig):
    """What every simulation shares: the phantom, the volume and the tilt scheme."""

    phantom: Literal["cell", "shepp-logan", "spheres"] = Field(
        "cell", description="crowded cell, 3D Shepp-Logan or hollow spheres"
    )
    shape: tuple[int, int, int] = Field((64, 128, 128), description="volume (z, y, x) in voxels")
    pixel_size_angstrom: float = Field(10.0, gt=0, description="voxel / detector pixel size, Å")
    tilt_min_deg: float = Field(-60.0, ge=-90, le=90)
    tilt_max_deg: float = Field(60.0, ge=-90, le=90)
    tilt_step_deg: float = Field(2.0, gt=0)
    n_particles: int = Field(12, ge=0, description="particles in the cell phantom")
    oversample: int = Field(2, ge=1, le=4, description="project a finer volume and bin")
    seed: int = 0

    @model_validator(mode="after")
    def _check_tilts_and_shape(self) -> _PhantomTiltSeriesConfig:
        if self.tilt_min_deg >= self.tilt_max_deg:
            raise ValueError(
                f"tilt_min_deg ({self.tilt_min_deg}) must be below tilt_max_deg ({self.tilt_max_deg})."
            )
        if min(self.shape) < 4:
            raise ValueError(f"shape must be at least 4 voxels per axis, got {self.shape}.")
        return self


class SimulateConfig(_PhantomTiltSeriesConfig):
    """Phantom and tilt-series simulation (``cryowedge simulate``)."""

    snr: float | None = Field(0.5, gt=0, description="Gaussian noise SNR (signal var / noise var)")
    dose_e_per_angstrom2: float | None = Field(
        None, gt=0, description="Poisson noise at this dose per tilt, instead of snr"
    )
    defocus_angstrom: float | None = Field(None, description="apply a CTF with this defocus (Å)")
    even_odd: bool = Field(True, description="also write half-dose even/odd series")

    @model_validator(mode="after")
    def _check_noise(self) -> SimulateConfig:
        if self.snr is not None and self.dose_e_per_angstrom2 is not None:
            raise ValueError("set either snr or dose_e_per_angstrom2 (set the other to null).")
        return self


#: Reconstruction methods: direct (fbp, wbp) and iterative (the rest; see cryowedge.solvers).
RECONSTRUCT_METHODS = ("fbp", "wbp", "sirt", "sart", "art", "cgls", "tv")
ITERATIVE_METHODS = ("sirt", "sart", "art", "cgls", "tv")
#: Per-method defaults used when ``n_iter`` / ``relaxation`` are left unset. SART's 0.2 is
#: the CRM paper's; ART's 0.5 damps noise in row action; CGLS fixes its own steps (1.0).
#: On noisy data SIRT/SART/CGLS semi-converge (later iterations fit noise), so the counts
#: are modest; see docs/results.md for the measured trade-off.
DEFAULT_ITERATIONS = {"sirt": 20, "sart": 10, "art": 3, "cgls": 10, "tv": 30}
DEFAULT_RELAXATION = {"sirt": 1.0, "sart": 0.2, "art": 0.5, "cgls": 1.0, "tv": 1.0}


class ReconstructConfig(BaseConfig):
    """Reconstruction options (``cryowedge reconstruct``)."""

    method: Literal["fbp", "wbp", "sirt", "sart", "art", "cgls", "tv"] = "fbp"
    filter_name: str = Field("ram-lak", description="ram-lak|shepp-logan|cosine|hamming|hann|sirt|none")
    cutoff: float = Field(1.0, gt=0, le=1, description="window cutoff, fraction of Nyquist")
    sirt_iterations: int = Field(10, ge=1, description="iterations mimicked by the sirt filter")
    radial_cutoff: float | None = Field(None, gt=0, le=0.5, description="radial low-pass, cycles/px")
    radial_falloff: float = Field(0.035, gt=0, description="radial Gaussian fall-off, cycles/px")
    padding: Literal["edge", "zero"] = "edge"
    thickness: int | None = Field(None, ge=1, description="output z size (voxels); default = x size")
    tilt_axis_angle_deg: float = Field(0.0, description="in-plane tilt-axis angle on the raw images")
    device: str = Field("auto", description="auto|cpu|cuda|cuda:N")
    # --- iterative methods (sirt, sart, art, cgls, tv) ---
    n_iter: int | None = Field(None, description="iterations (sweeps for art/sart, outer for tv); "
                               f"default per method {DEFAULT_ITERATIONS}")
    relaxation: float | None = Field(None, description="relaxation in (0, 2) (ADMM over-relaxation "
                                     f"for tv); default per method {DEFAULT_RELAXATION}")
    positivity: bool = Field(False, description="constrain the tomogram to be >= 0 (not for cgls)")
    tv_lambda: float = Field(5.0, ge=0, description="TV weight λ on the data normalised to unit std "
                             "(about noise variance / prior scale: lower it for cleaner data)")
    regularizer: Literal["tv", "tv-aniso", "l1"] = Field("tv", description="tv regulariser")
    rho: float | None = Field(None, gt=0, description="initial ADMM penalty (default 10 x tv_lambda)")
    cg_iter: int = Field(10, ge=1, description="inner CG iterations per ADMM step")
    tol: float | None = Field(None, gt=0, description="stop when the relative change falls below")
    order: Literal["random", "sequential"] = Field("random", description="art/sart visiting order")
    normalize: bool = Field(True, description="scale the data to unit std before iterating "
                            "(and the result back) for well-scaled arithmetic")
    checkpoint_every: int | None = Field(None, ge=1, description="save the iterate every N "
                                         "iterations next to the output (resume with --resume)")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ReconstructConfig:
        from cryowedge.recon.filters import normalise_filter_name

        self.__dict__["filter_name"] = normalise_filter_name(self.filter_name)
        if self.n_iter is not None and self.n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {self.n_iter}.")
        if self.relaxation is not None and not 0.0 < self.relaxation < 2.0:
            raise ValueError(f"relaxation must lie in (0, 2), got {self.relaxation}.")
        if self.method == "cgls" and self.positivity:
            raise ValueError("cgls cannot enforce positivity; use --method sirt, sart or tv.")
        return self

    @property
    def resolved_iterations(self) -> int:
        """``n_iter`` or the method's default."""
        return self.n_iter if self.n_iter is not None else DEFAULT_ITERATIONS.get(self.method, 1)

    @property
    def resolved_relaxation(self) -> float:
        """``relaxation`` or the method's default."""
        return self.relaxation if self.relaxation is not None else DEFAULT_RELAXATION.get(self.method, 1.0)


class DemoConfig(BaseConfig):
    """The no-argument demo: a small crowded cell, ±60° series, noise, FBP and WBP."""

    simulate: SimulateConfig = SimulateConfig(shape=(64, 128, 128), n_particles=16, snr=1.0)
    reconstruct: ReconstructConfig = ReconstructConfig(filter_name="hann")


# --------------------------------------------------------------------------------------
# Compressed-sensing STEM tomography (random-beam STET, thesis ch. 3): cryowedge stet ...
# --------------------------------------------------------------------------------------


class StetSimulateConfig(_PhantomTiltSeriesConfig):
    """Random-beam STET simulation (``cryowedge stet simulate``).

    The full-dose series is projected from the phantom (oversampled, so the data are not
    generated by the reconstruction operator), Gaussian noise is added at ``snr``, and a
    random scan mask keeps ``dose_fraction`` of the pixels of every tilt (the same dose
    per scanned pixel as at full dose; unmeasured pixels are stored as 0).
    """

    tilt_min_deg: float = Field(-70.0, ge=-90, le=90)
    tilt_max_deg: float = Field(70.0, ge=-90, le=90)
    tilt_step_deg: float = Field(1.0, gt=0)
    seed: int = Field(0, description="seed of the phantom, the noise and the scan mask")
    dose_fraction: float = Field(0.3, gt=0, le=1, description="fraction of pixels scanned per tilt")
    snr: float = Field(10.0, gt=0, description="Gaussian noise SNR per pixel (signal var / noise var); "
                       "10 suits STEM of stained sections")


class StetReconstructConfig(BaseConfig):
    """Reconstruction from randomly undersampled STET data (``cryowedge stet reconstruct``).

    ``method="tv"`` solves thesis eq. 3.6, ``min ½‖S H x − b‖² + λ‖∇x‖₁`` (anisotropic TV by
    default) directly on the undersampled data; ``"inpaint-tv"`` is the two-step baseline of
    Saghi et al.: 2-D TV inpainting of every projection (weight ``inpaint_mu``), then TV
    reconstruction from the inpainted projections. With ``normalize`` the data are divided
    by the standard deviation of the measured pixels first (and the result multiplied
    back), so ``tv_lambda`` and ``inpaint_mu`` do not depend on the data's units (the
    convention of :class:`ReconstructConfig`).
    """

    method: Literal["tv", "inpaint-tv"] = Field(
        "tv", description="tv: CS-TV on the undersampled data; inpaint-tv: inpaint, then TV"
    )
    tv_lambda: float = Field(1.0, ge=0, description="TV weight λ on the data normalised to unit std")
    regularizer: Literal["tv", "tv-aniso", "l1"] = Field("tv-aniso", description="regulariser")
    positivity: bool = Field(True, description="constrain the tomogram to be >= 0")
    n_iter: int = Field(40, ge=1, description="outer ADMM iterations of the reconstruction")
    cg_iter: int = Field(6, ge=1, description="inner CG iterations per ADMM step")
    rho: float | None = Field(None, gt=0, description="initial ADMM penalty (default 10 x tv_lambda)")
    inpaint_mu: float = Field(0.1, ge=0, description="2-D TV weight μ of the inpainting step")
    inpaint_iter: int = Field(30, ge=1, description="ADMM iterations of the inpainting step")
    normalize: bool = Field(True, description="scale the data to unit std first, so tv_lambda is unit-free")
    thickness: int | None = Field(None, ge=1, description="output z size (voxels); default = x size")
    tilt_axis_angle_deg: float = Field(0.0, description="in-plane tilt-axis angle on the raw images")
    device: str = Field("auto", description="auto|cpu|cuda|cuda:N")


class StetConfig(BaseConfig):
    """Both STET steps in one file: ``simulate:`` and ``reconstruct:`` sections."""

    simulate: StetSimulateConfig = Field(default_factory=StetSimulateConfig)
    reconstruct: StetReconstructConfig = Field(default_factory=StetReconstructConfig)

    @classmethod
    def section_from_yaml(cls, path: str | Path, section: Literal["simulate", "reconstruct"]) -> BaseConfig:
        """One section from a YAML file that holds either a whole ``StetConfig`` (keys
        ``simulate``/``reconstruct``) or just that section's fields."""
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of options, got {type(data).__name__}.")
        if data and set(data) <= {"simulate", "reconstruct"}:
            return getattr(cls(**data), section)
        model = StetSimulateConfig if section == "simulate" else StetReconstructConfig
        return model(**data)
