"""Typed configuration models: the ONLY home of defaults.

The CLI derives its option defaults from these models, and every run writes the resolved
model (plus version and command line) next to its outputs. ``extra="forbid"`` catches
typos in YAML files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BaseConfig",
    "SimulateConfig",
    "ReconstructConfig",
    "DemoConfig",
]


class BaseConfig(BaseModel):
    """Pydantic base with YAML round trip and no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

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


class SimulateConfig(BaseConfig):
    """Phantom and tilt-series simulation (``cryowedge simulate``)."""

    phantom: Literal["cell", "shepp-logan", "spheres"] = Field(
        "cell", description="crowded cell, 3D Shepp-Logan or hollow spheres"
    )
    shape: tuple[int, int, int] = Field((64, 128, 128), description="volume (z, y, x) in voxels")
    pixel_size_angstrom: float = Field(10.0, gt=0, description="voxel / detector pixel size, Å")
    tilt_min_deg: float = Field(-60.0, ge=-90, le=90)
    tilt_max_deg: float = Field(60.0, ge=-90, le=90)
    tilt_step_deg: float = Field(2.0, gt=0)
    snr: float | None = Field(0.5, gt=0, description="Gaussian noise SNR (signal var / noise var)")
    dose_e_per_angstrom2: float | None = Field(
        None, gt=0, description="Poisson noise at this dose per tilt, instead of snr"
    )
    defocus_angstrom: float | None = Field(None, description="apply a CTF with this defocus (Å)")
    n_particles: int = Field(12, ge=0, description="particles in the cell phantom")
    oversample: int = Field(2, ge=1, le=4, description="project a finer volume and bin")
    even_odd: bool = Field(True, description="also write half-dose even/odd series")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SimulateConfig:
        if self.tilt_min_deg >= self.tilt_max_deg:
            raise ValueError(
                f"tilt_min_deg ({self.tilt_min_deg}) must be below tilt_max_deg ({self.tilt_max_deg})."
            )
        if self.snr is not None and self.dose_e_per_angstrom2 is not None:
            raise ValueError("set either snr or dose_e_per_angstrom2 (set the other to null).")
        if min(self.shape) < 4:
            raise ValueError(f"shape must be at least 4 voxels per axis, got {self.shape}.")
        return self


class ReconstructConfig(BaseConfig):
    """Reconstruction options (``cryowedge reconstruct``)."""

    method: Literal["fbp", "wbp"] = "fbp"
    filter_name: str = Field("ram-lak", description="ram-lak|shepp-logan|cosine|hamming|hann|sirt|none")
    cutoff: float = Field(1.0, gt=0, le=1, description="window cutoff, fraction of Nyquist")
    sirt_iterations: int = Field(10, ge=1, description="iterations mimicked by the sirt filter")
    radial_cutoff: float | None = Field(None, gt=0, le=0.5, description="radial low-pass, cycles/px")
    radial_falloff: float = Field(0.035, gt=0, description="radial Gaussian fall-off, cycles/px")
    padding: Literal["edge", "zero"] = "edge"
    thickness: int | None = Field(None, ge=1, description="output z size (voxels); default = x size")
    tilt_axis_angle_deg: float = Field(0.0, description="in-plane tilt-axis angle on the raw images")
    device: str = Field("auto", description="auto|cpu|cuda|cuda:N")

    @model_validator(mode="after")
    def _check(self) -> ReconstructConfig:
        from cryowedge.recon.filters import normalise_filter_name

        self.__dict__["filter_name"] = normalise_filter_name(self.filter_name)
        return self


class DemoConfig(BaseConfig):
    """The no-argument demo: a small crowded cell, ±60° series, noise, FBP and WBP."""

    simulate: SimulateConfig = SimulateConfig(shape=(64, 128, 128), n_particles=16, snr=1.0)
    reconstruct: ReconstructConfig = ReconstructConfig(filter_name="hann")
