"""Options of the coordinate-network reconstruction (``cryowedge reconstruct --method inr``).

:class:`InrConfig` is registered as method ``"inr"`` (runner
:func:`cryowedge.workflows.inr.run_inr`); this module is imported at the end of
:mod:`cryowedge.config.models`, so the method exists wherever the registry is read. The
defaults live here only; docs/inr.md explains them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from cryowedge.config.models import BaseConfig, ReconstructConfig, cli
from cryowedge.config.registry import register_method

__all__ = ["DemoInrConfig", "InrConfig"]


@register_method(
    runner="cryowedge.workflows.inr:run_inr",
    summary="coordinate network (Fourier-feature MLP or SIREN) fitted to the projections",
    # The runner bounds its own memory by batches of y-slices (slice_batch); the volume and
    # the series stay in memory, so it never streams.
    slab_mode="none",
    work_arrays=(3, 2),
)
class InrConfig(ReconstructConfig):
    """A coordinate network ``G_θ(x, y, z)`` fitted so that the projections of its output
    match the tilt series (``--method inr``; docs/inr.md).

    The data are divided by their standard deviation (``normalize``), the network predicts
    the volume in units of a fixed value scale (:mod:`cryowedge.inr.fit`), and the objective
    per batch of ``slice_batch`` y-rows is the mean ``loss`` of the projection residual plus
    ``lam_c`` times the Crowther/wedge penalty plus ``tv_weight`` times TV.
    ``checkpoint_every`` counts optimiser steps.
    """

    #: reconstruct_file keeps checkpoints (--checkpoint-every, --resume) for this method.
    checkpointed: ClassVar[bool] = True

    method: Literal["inr"] = "inr"
    activation: Literal["relu", "gelu", "silu", "sine"] = Field(
        "relu", description="hidden nonlinearity: relu/gelu/silu make a Fourier-feature MLP, "
        "sine a SIREN"
    )
    width: int = Field(256, ge=1, description="features per hidden layer")
    n_layers: int = Field(
        5, ge=2, description="linear layers including the output layer (5 = the paper's "
        "five-layer MLP)"
    )
    encoding: Literal["gaussian", "positional", "none"] = Field(
        "gaussian", description="coordinate encoding: random Gaussian Fourier features, "
        "log-spaced positional features, or raw coordinates (usual for sine)"
    )
    encoding_scale: float = Field(
        0.05, gt=0, allow_inf_nan=False,
        description="Fourier-feature scale σ, cycles per voxel (gaussian: std of the "
        "frequencies; positional: the highest one)"
    )
    n_frequencies: int = Field(128, ge=1, description="Fourier features (each gives a cos "
                               "and a sin)")
    omega0: float = Field(30.0, gt=0, description="SIREN frequency factor ω0 (activation sine)")
    loss: Literal["l2", "l1"] = Field(
        "l2", description="data term: mean squared (l2) or absolute (l1) projection residual"
    )
    lam_c: float = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="weight of the Fourier penalty on the energy inside the missing wedge and "
        "above the Crowther frequency, growing linearly with frequency (0: off)",
        json_schema_extra=cli("--lam-c"),
    )
    penalty_norm: Literal["l1", "l2"] = Field(
        "l1", description="Fourier penalty on |V| (l1, the paper's absolute spectrum) or "
        "|V|² (l2)"
    )
    crowther: bool = Field(True, description="penalise above the Crowther frequency too "
                           "(else the missing wedge only)")
    crowther_diameter_px: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="object thickness D for the Crowther frequency 1/(D·Δθ), voxels "
        "(default: the volume thickness)"
    )
    tv_weight: float = Field(0.0, ge=0, allow_inf_nan=False,
                             description="weight of anisotropic TV (0: off)")
    epochs: int = Field(
        300, ge=1, description="passes over the y-slices (of the first chunk with "
        "--chunk-rows); steps per epoch = ceil(rows / slice_batch)"
    )
    slice_batch: int = Field(
        16, ge=1, description="y-slices per optimiser step (the paper's batch: bounds the "
        "memory)"
    )
    batch_order: Literal["random", "sequential"] = Field(
        "random", description="order of the slice batches within an epoch"
    )
    chunk_rows: int | None = Field(
        None, ge=1, description="fit the volume in chunks of this many y-slices, one network "
        "each, from the middle outwards (default: one network for the whole volume)"
    )
    warm_start: bool = Field(
        True, description="start each chunk from its neighbour's weights (with --chunk-rows)"
    )
    warm_epochs: int = Field(
        60, ge=1, description="epochs of a warm-started chunk (with --chunk-rows)"
    )
    lr: float = Field(5e-3, gt=0, allow_inf_nan=False,
                      description="AdamW learning rate (1e-2 suits width <= 128; about 1e-3 "
                      "for activation sine)")
    lr_schedule: Literal["exponential", "cosine", "constant"] = Field(
        "exponential", description="learning-rate decay over each network's steps: "
        "exponential (log-linear to lr·lr_final), cosine, or none"
    )
    lr_final: float = Field(
        0.1, gt=0, le=1, allow_inf_nan=False,
        description="final learning rate as a fraction of lr (exponential, cosine)"
    )
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False,
                                description="AdamW weight decay")
    n_seeds: int = Field(
        1, ge=1, description="average the volumes of this many random initialisations"
    )
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="network autocast: auto = fp16 on CUDA, off on the CPU (the "
        "projector and the losses always run in float32)"
    )

    @model_validator(mode="after")
    def _batch_within_chunk(self) -> InrConfig:
        if self.chunk_rows is not None and self.slice_batch > self.chunk_rows:
            raise ValueError(
                f"slice_batch {self.slice_batch} is larger than chunk_rows {self.chunk_rows}; "
                f"use slice_batch <= {self.chunk_rows}."
            )
        return self

    def network_options(self) -> dict[str, Any]:
        """The :class:`~cryowedge.inr.networks.NetworkSpec` fields given by this config."""
        return {
            "activation": self.activation,
            "width": self.width,
            "n_layers": self.n_layers,
            "encoding": self.encoding,
            "encoding_scale": self.encoding_scale,
            "n_frequencies": self.n_frequencies,
            "omega0": self.omega0,
        }


class DemoInrConfig(BaseConfig):
    """The INR panel of ``cryowedge demo``: a small coordinate network fitted to the central
    ``rows`` y-slices of the demo's tilt series (the tilt axis is ``y``, so those rows are a
    problem of their own), next to FBP of the same rows (``inr_demo.png``, ``inr_demo.md``).

    A CPU-sized fit in seconds: an MLP of ``width`` features on ``n_frequencies`` Gaussian
    Fourier features at ``encoding_scale`` cycles/voxel, ``epochs`` passes in batches of
    ``slice_batch`` rows (docs/inr.md; the full-size defaults are :class:`InrConfig`'s).
    """

    rows: int = Field(16, ge=1, description="central y-slices fitted")
    width: int = Field(32, ge=1, description="features per hidden layer")
    n_frequencies: int = Field(32, ge=1, description="Fourier features")
    encoding_scale: float = Field(0.05, gt=0, allow_inf_nan=False,
                                  description="Fourier-feature scale σ, cycles per voxel")
    slice_batch: int = Field(4, ge=1, description="y-slices per optimiser step")
    epochs: int = Field(80, ge=1, description="passes over the rows")
    lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="AdamW learning rate")
    lam_c: float = Field(0.0, ge=0, allow_inf_nan=False,
                         description="Crowther/wedge penalty weight (0: off)")
    filter_name: str = Field("hann", description="filter of the FBP shown next to it")
    seed: int = Field(0, description="random seed of the fit")

    @model_validator(mode="after")
    def _batch_within_rows(self) -> DemoInrConfig:
        if self.slice_batch > self.rows:
            raise ValueError(f"inr.slice_batch {self.slice_batch} is larger than inr.rows "
                             f"{self.rows}; use slice_batch <= {self.rows}.")
        return self

    def inr_config(self, thickness: int) -> InrConfig:
        """The :class:`InrConfig` of the panel's fit (on the CPU)."""
        return InrConfig(width=self.width, n_frequencies=self.n_frequencies,
                         encoding_scale=self.encoding_scale, slice_batch=self.slice_batch,
                         epochs=self.epochs, lr=self.lr, lam_c=self.lam_c, seed=self.seed,
                         thickness=thickness, device="cpu")
