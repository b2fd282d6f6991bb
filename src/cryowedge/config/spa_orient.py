"""Typed configuration of ``cryowedge spa orient`` (learned orientation recovery, issue 14).

The only home of the orientation-recovery defaults, options and help texts. The library reads
its defaults from here (:data:`SIAMESE_DEFAULTS` for
:class:`cryowedge.spa.orient.siamese.SiameseConfig`, :data:`RECOVERY_DEFAULTS` for
:func:`cryowedge.spa.orient.recover.recover_orientations`), so each is written once:

* :class:`OrientSimulateConfig` — ``spa orient simulate``: projections of a density at
  uniformly random orientations (all or half of SO(3)), written as STAR + MRCS with the true
  angles, and the truth map.
* :class:`OrientTrainConfig` — ``spa orient train``: the training set (a density's projections,
  or a STAR stack with known angles) and the Siamese network's architecture and training.
* :class:`OrientRecoverConfig` — ``spa orient recover``: the recovery optimisation, the
  evaluation and the reconstruction with the recovered orientations.

A ``--config`` YAML file holds any fields of the command's model; options given on the command
line override it; the resolved model is saved next to the outputs. Units: sizes in pixels,
angles in degrees, distances between orientations in radians, lengths in Å.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Literal

from pydantic import Field, field_validator

from cryowedge.config.models import BaseConfig, cli

__all__ = [
    "OrientSimulateConfig",
    "OrientTrainConfig",
    "OrientRecoverConfig",
    "SIAMESE_DEFAULTS",
    "RECOVERY_DEFAULTS",
]

#: The Siamese network and its training (a small net that trains on 2 CPU cores in minutes on
#: 32² images; the thesis: 250 epochs, batch 256, Adam 1e-3, TensorFlow, ~10 h).
SIAMESE_DEFAULTS: dict[str, Any] = {
    "channels": (16, 32, 64), "embedding_dim": 32, "hidden": 128, "epochs": 20,
    "steps_per_epoch": 50, "batch_images": 64, "lr": 1e-3, "lr_final": 1e-5,
    "weight_decay": 0.0, "val_pairs": 2000, "seed": 0, "device": "auto", "amp": True,
}
#: The recovery of eq. 5.7 (lr 0.1 as in the thesis; fresh pairs per step, research §13.14).
RECOVERY_DEFAULTS: dict[str, Any] = {
    "n_steps": 2000, "batch_pairs": 4096, "lr": 0.1, "lr_final": 1e-3, "n_restarts": 1,
    "eval_pairs": 100_000,
}

_NET = SimpleNamespace(**SIAMESE_DEFAULTS)
_REC = RECOVERY_DEFAULTS


class _DensityFields(BaseConfig):
    density: str = Field(
        "1a5t", description="density to project: 1a5t (bundled PDB entry), ribosome or "
        "emd_5170 (../shared/data), or an MRC file"
    )
    source_pixel_size_angstrom: float | None = Field(
        None, gt=0, description="voxel size of the density file (Å) when its header lacks it",
        json_schema_extra=cli("--source-pixel-size"),
    )
    box_size: int = Field(32, ge=8, description="image and map size n (pixels)",
                          json_schema_extra=cli("--box"))
    half_so3: bool = Field(
        True, description="orientations uniform on half of SO(3) (projection directions with "
        "tilt <= 90°, as the thesis) instead of all of it", json_schema_extra=cli("--half"),
    )
    cyclic: int = Field(
        1, ge=1, description="C_n symmetry of the particle about the map's z axis: sample only "
        "the asymmetric unit (RELION rot in [0, 360/n)), the thesis's fix for symmetric "
        "particles; 1 = none"
    )
    snr: float | None = Field(
        None, gt=0, description="white Gaussian noise at var(signal)/σ² (a ratio, not dB); "
        "default noise-free (the thesis's set-up)"
    )
    seed: int = Field(0, description="random seed (orientations, noise, training)")


class OrientSimulateConfig(_DensityFields):
    """``cryowedge spa orient simulate``: a particle stack with true angles and the truth map."""

    n_particles: int = Field(1000, ge=2, description="number of projections")


class OrientTrainConfig(_DensityFields):
    """``cryowedge spa orient train``: the Siamese distance network (thesis eq. 5.6)."""

    n_train: int = Field(3000, ge=2, description="training projections (from --density)")
    n_val: int = Field(500, ge=2, description="validation projections")
    channels: str = Field(
        ",".join(map(str, _NET.channels)), description="channels of the encoder's conv blocks "
        "(comma-separated; each block halves the image)"
    )
    embedding_dim: int = Field(_NET.embedding_dim, ge=1, description="feature-vector length")
    hidden: int = Field(_NET.hidden, ge=1, description="hidden fully-connected width")
    epochs: int = Field(_NET.epochs, ge=1, description="epochs")
    steps_per_epoch: int = Field(_NET.steps_per_epoch, ge=1, description="steps per epoch")
    batch_images: int = Field(
        _NET.batch_images, ge=2, description="images per step (all pairs among them are used)"
    )
    lr: float = Field(_NET.lr, gt=0, description="Adam learning rate (cosine-decayed)")
    lr_final: float = Field(_NET.lr_final, gt=0, description="learning rate at the end")
    val_pairs: int = Field(_NET.val_pairs, ge=1, description="fixed validation pairs")
    device: str = Field(_NET.device, description="auto | cpu | cuda | cuda:N")
    amp: bool = Field(_NET.amp, description="float16 autocast on CUDA (ignored on CPU)")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints")
    resume: bool = Field(False, description="continue from <out>/distance_net.pt if present")

    @field_validator("channels", mode="before")
    @classmethod
    def _channels(cls, value: Any) -> str:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        try:
            chans = [int(str(v).strip()) for v in items if str(v).strip()]
        except ValueError:
            raise ValueError(f"channels must be comma-separated integers, got {value!r}") from None
        if not chans or min(chans) < 1:
            raise ValueError(f"channels must be positive integers, got {value!r}")
        return ",".join(map(str, chans))

    def siamese_config(self) -> Any:
        """The :class:`~cryowedge.spa.orient.siamese.SiameseConfig` of these options."""
        from cryowedge.spa.orient.siamese import SiameseConfig

        return SiameseConfig(
            channels=tuple(int(c) for c in self.channels.split(",")),
            embedding_dim=self.embedding_dim, hidden=self.hidden, epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch, batch_images=self.batch_images, lr=self.lr,
            lr_final=self.lr_final, val_pairs=self.val_pairs, seed=self.seed,
            device=self.device, amp=self.amp,
        )


class OrientRecoverConfig(BaseConfig):
    """``cryowedge spa orient recover``: orientations from the network's distances (eq. 5.7)."""

    n_steps: int = Field(_REC["n_steps"], ge=1, description="Adam steps of the recovery")
    batch_pairs: int = Field(_REC["batch_pairs"], ge=1,
                             description="fresh random pairs per step (research §13.14)")
    lr: float = Field(_REC["lr"], gt=0, description="recovery learning rate (cosine-decayed)")
    lr_final: float = Field(_REC["lr_final"], gt=0, description="learning rate at the end")
    n_restarts: int = Field(
        3, ge=1, description="independent starts; the lowest final loss wins (needs no truth)"
    )
    align: Literal["auto", "reference", "commonlines", "none"] = Field(
        "auto", description="fix the recovered orientations' ambiguity (a left/right rotation "
        "and an inversion): reference = O(4) alignment to the STAR's angles (the fixed eq. "
        "5.8); commonlines = left rotation and inversion chosen from the images (the map is "
        "then right up to a global rotation and the hand); auto = reference when the STAR has "
        "angles, else commonlines; none = write them as recovered (no map)"
    )
    reconstruct: bool = Field(
        True, description="reconstruct a map with the aligned or resolved orientations"
    )
    commonlines_grid: int = Field(
        3000, ge=10, description="candidate left rotations of the common-line search"
    )
    lam: float = Field(0.01, gt=0, description="TV weight λ of the reconstruction (unit-free)")
    n_iter: int | None = Field(None, ge=1, description="ADMM iterations (default 30)")
    seed: int = Field(0, description="random seed (starts, pairs)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
