"""Self-supervised denoising and missing-wedge filling (DeepDeWedge method) and Noise2Noise.

Steps (seeds/003, research/anchors_ml.md): :mod:`~cryowedge.dewedge.prepare` (half tomograms,
sample mask, standardisation), :mod:`~cryowedge.dewedge.fit` (the U-Net fitted on sub-tomogram
pairs cut on the fly), :mod:`~cryowedge.dewedge.refine` (tiled inference). Building blocks:
:mod:`~cryowedge.dewedge.unet`, :mod:`~cryowedge.dewedge.loss`, :mod:`~cryowedge.dewedge.data`,
:mod:`~cryowedge.dewedge.ddp` (DistributedDataParallel under ``torchrun``).
"""

from cryowedge.dewedge.data import SubtomoPairs, TomogramPair
from cryowedge.dewedge.fit import FitProgress, FitResult, fit, load_model
from cryowedge.dewedge.loss import masked_fourier_loss, n2n_loss
from cryowedge.dewedge.unet import UNet3D

__all__ = [
    "FitProgress",
    "FitResult",
    "SubtomoPairs",
    "TomogramPair",
    "UNet3D",
    "fit",
    "load_model",
    "masked_fourier_loss",
    "n2n_loss",
]
