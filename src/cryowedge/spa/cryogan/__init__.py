"""CryoGAN (thesis chapter 6, appendix A.6; issue 14): reconstruction as distribution matching.

A learnable volume drives a physics simulator (random pose, shift, CTF from the data's list,
the project's blob projector, noise with a learned scale); a CNN critic tells simulated from
real particle images; WGAN-GP training moves the volume until the two distributions match.
No orientation is ever estimated. See docs/spa_learned.md.

* :class:`CryoGanSimulator` — the generator (:mod:`.simulator`);
* :class:`Discriminator`, :func:`gradient_penalty` — the critic and WGAN-GP (:mod:`.discriminator`);
* :class:`CryoGan`, :func:`train_cryogan` — training, half sets, FSC, checkpoints (:mod:`.train`);
* :func:`align_maps` — rotation/reflection alignment of maps (:mod:`.align`);
* :func:`symmetry_matrices`, :func:`symmetrize` — point groups (:mod:`.symmetry`).
"""

from cryowedge.spa.cryogan.align import AlignResult, align_maps, mirror_x
from cryowedge.spa.cryogan.discriminator import (
    Discriminator,
    gradient_penalty,
    interpolates,
    normalize_images,
)
from cryowedge.spa.cryogan.simulator import BLOBS, CryoGanSimulator, Latent, uniform_rotations
from cryowedge.spa.cryogan.symmetry import parse_symmetry, symmetrize, symmetry_matrices
from cryowedge.spa.cryogan.train import (
    CHECKPOINT_NAME,
    CryoGan,
    CryoGanResult,
    EpochRecord,
    half_map_fsc,
    resolve_device,
    train_cryogan,
)

__all__ = [
    "AlignResult",
    "align_maps",
    "mirror_x",
    "Discriminator",
    "gradient_penalty",
    "interpolates",
    "normalize_images",
    "BLOBS",
    "CryoGanSimulator",
    "Latent",
    "uniform_rotations",
    "parse_symmetry",
    "symmetrize",
    "symmetry_matrices",
    "CHECKPOINT_NAME",
    "CryoGan",
    "CryoGanResult",
    "EpochRecord",
    "half_map_fsc",
    "resolve_device",
    "train_cryogan",
]
