"""Typed configuration of ``cryowedge dewedge`` (DeepDeWedge-style self-supervised dewedging).

One YAML file with a ``shared`` section and one section per step (``prepare``, ``fit``,
``refine``), as in DeepDeWedge; command-line options override it and the resolved model is
saved with every output. Every default of the dewedge steps lives here.

Units: sizes in voxels, learning rate per Adam step, frequencies in cycles/voxel
(docs/conventions.md). Reference defaults and user pain points: research/anchors_ml.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cryowedge.config.models import BaseConfig, cli

__all__ = [
    "DewedgeSharedConfig",
    "DewedgePrepareConfig",
    "DewedgeFitConfig",
    "DewedgeRefineConfig",
    "DewedgeConfig",
]


class DewedgeSharedConfig(BaseConfig):
    """Options every dewedge step uses."""

    subtomo_size: int = Field(
        64, ge=8, description="edge of the cubic sub-tomograms the network sees, voxels "
        "(divisible by 2^depth)"
    )
    chans: int = Field(32, ge=1, description="U-Net channels at the first level")
    depth: int = Field(3, ge=1, le=6, description="U-Net down-sampling levels")
    mode: Literal["dewedge", "n2n"] = Field(
        "dewedge", description="dewedge: fill the missing wedge and denoise (the DeepDeWedge "
        "loss with rotations); n2n: Noise2Noise denoising only (cryoCARE manner, no rotations, "
        "no extra wedge)"
    )
    standardize: Literal["robust", "none"] = Field(
        "robust", description="standardise each tomogram by its robust centre/scale (median, "
        "IQR of the masked region) before fitting and refining"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    seed: int = Field(0, description="random seed (sampling, rotations, initial weights)")

    @model_validator(mode="after")
    def _size_fits_depth(self) -> DewedgeSharedConfig:
        step = 2**self.depth
        if self.subtomo_size % step:
            lower = self.subtomo_size - self.subtomo_size % step
            raise ValueError(
                f"subtomo_size {self.subtomo_size} is not divisible by 2^depth = {step} "
                f"(depth {self.depth}); use {lower or step} or {lower + step}."
            )
        return self


class DewedgePrepareConfig(BaseConfig):
    """Half tomograms and the sample mask from a tilt series (or ready-made halves)."""

    split: Literal["auto", "acquisition", "index"] = Field(
        "auto", description="even/odd split of the views: acquisition order from the .mdoc "
        "(auto: when the angles come from a .mdoc), or stack index"
    )
    method: str = Field("fbp", description="reconstruction method of the halves (registry)")
    filter_name: str = Field("ram-lak", description="FBP filter of the halves")
    thickness: int | None = Field(None, ge=1, description="tomogram thickness, voxels")
    bin_factor: int = Field(
        1, ge=1, description="bin the tilt series by this factor first (as reconstruct --bin)",
        json_schema_extra=cli("--bin"),
    )
    mask_std_percentile: float = Field(
        50.0, ge=0, lt=100, description="sample mask: keep voxels whose local std is above "
        "this percentile (IsoNet make_mask's std_percentage)"
    )
    mask_density_percentile: float = Field(
        50.0, ge=0, lt=100, description="sample mask: keep voxels whose local mean departs "
        "from the median local mean (darker or brighter) by more than this percentile "
        "(IsoNet make_mask's density_percentage; 0: off; docs/dewedge.md)"
    )
    mask_smooth_voxels: float = Field(
        4.0, ge=0, description="Gaussian width (voxels) of the local mean/std of the mask"
    )
    min_mask_fraction: float = Field(
        0.3, ge=0, le=1, description="sample a sub-tomogram only where at least this fraction "
        "of it is inside the sample mask"
    )
    mask_z_crop: float = Field(
        0.0, ge=0, lt=0.5, description="sample mask: fraction of the sections removed at the "
        "top and at the bottom (each)"
    )
    exclude_views: str | None = Field(
        None, description="views to drop before the split: 1-based numbers and inclusive "
        "ranges, like IMOD's EXCLUDELIST (e.g. 1,2,40-41)"
    )
    write_full: bool = Field(
        True, description="also reconstruct the full tilt series (full.mrc), which refine "
        "--source full uses (paper step 3)"
    )
    ctf_correction: Literal["none", "phase-flip", "wiener"] = Field(
        "none", description="CTF-correct the views of every reconstruction (as reconstruct "
        "--ctf-correction); needs a defocus file or defocus_angstrom"
    )
    defocus_angstrom: float | None = Field(
        None, gt=0, description="defocus of every view at the tilt axis, Å (positive = "
        "underfocus), instead of a defocus file"
    )


class DewedgeFitConfig(BaseConfig):
    """Fitting the U-Net on sub-tomogram pairs cut on the fly from the half tomograms."""

    epochs: int = Field(100, ge=1, description="fitting epochs")
    subtomos_per_epoch: int = Field(
        100, ge=1, description="sub-tomogram pairs drawn per epoch (random centres in the mask)"
    )
    batch_size: int = Field(5, ge=1, description="sub-tomograms per optimiser step")
    lr: float = Field(4e-4, gt=0, description="Adam learning rate")
    wedge_weight: float = Field(
        2.0, ge=0, description="weight of the loss term in the region the input lacks "
        "(DeepDeWedge eq. 2; 2 as in the reference code)"
    )
    loss_radius: float = Field(
        0.5, gt=0, le=0.8661, description="loss restricted to frequencies |k| <= this, "
        "cycles/voxel (0.5: the sphere inside the cube)"
    )
    update_wedge_every: int | None = Field(
        10, ge=1, description="every N epochs the current model fills the inputs' missing "
        "wedge (in memory); none: never"
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="fraction of each tomogram (a slab along the tilt "
        "axis, spatially separate) kept for validation"
    )
    val_every: int = Field(1, ge=1, description="validate every N epochs")
    checkpoint_every: int = Field(10, ge=1, description="save a checkpoint every N epochs")
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="autocast: auto = fp16 on CUDA, bf16 on CPU where it holds, off"
    )
    num_workers: int = Field(
        0, ge=0, description="background threads that assemble the next batch while the "
        "network steps (0: assemble in the training loop)"
    )
    compile: bool = Field(False, description="torch.compile the network")
    val_subtomos: int | None = Field(
        None, ge=1, description="validation sub-tomograms, drawn once from the validation slabs "
        "(default: subtomos_per_epoch · val_fraction / (1 − val_fraction), at least batch_size)"
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads of torch (default: torch's choice, all cores)"
    )


class DewedgeRefineConfig(BaseConfig):
    """Applying the fitted network tile by tile to a whole tomogram."""

    source: Literal["auto", "full", "halves"] = Field(
        "auto", description="refine the full-tilt-series tomogram (full, the paper's step 3; "
        "the mean of ready-made halves stands in for it), or the two half tomograms and "
        "average them (halves, cryoCARE's way); auto: full in dewedge mode, halves in n2n "
        "mode (the better of the two for each on the benchmark, docs/dewedge.md)"
    )
    overlap: int | None = Field(
        None, ge=0, description="tile overlap, voxels (default: subtomo_size // 3)"
    )
    batch_size: int = Field(4, ge=1, description="tiles per network call (halved on out-of-memory)")
    band_limit: bool = Field(
        True, description="keep only the frequencies the fitting loss constrains (|k| <= "
        "fit.loss_radius) in each refined tile; beyond them a residual network passes the "
        "input's noise through"
    )
    mask_wedge: bool | None = Field(
        None, description="remove the missing wedge of each tile in Fourier space before the "
        "network, as fitting does to its inputs (default: on in dewedge mode, off in n2n)"
    )
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="autocast during refinement"
    )


class DewedgeConfig(BaseConfig):
    """The whole dewedge configuration: ``shared`` plus one section per step."""

    shared: DewedgeSharedConfig = Field(default_factory=DewedgeSharedConfig)
    prepare: DewedgePrepareConfig = Field(default_factory=DewedgePrepareConfig)
    fit: DewedgeFitConfig = Field(default_factory=DewedgeFitConfig)
    refine: DewedgeRefineConfig = Field(default_factory=DewedgeRefineConfig)
