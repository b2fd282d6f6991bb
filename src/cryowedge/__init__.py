"""cryowedge: missing-wedge-aware reconstruction for cryo-electron tomography.

Layers (each calls only downward): pure functions (filters, metrics, phantoms) →
geometry (:class:`TiltGeometry`) and operators (:class:`TiltProjector`) → algorithms
(:func:`fbp`, :func:`wbp`) → workflows (file in, file out) → the ``cryowedge`` CLI.
Conventions (axes ``(z, y, x)``, degrees, Å, centre ``N // 2``): docs/conventions.md.
"""

from cryowedge._version import __version__
from cryowedge.geometry.tilt import TiltGeometry, missing_wedge_mask
from cryowedge.operators.autograd import as_autograd
from cryowedge.operators.base import LinearOperator
from cryowedge.operators.tilt_projector import TiltProjector
from cryowedge.recon.fbp import fbp, wbp

__all__ = [
    "__version__",
    "LinearOperator",
    "TiltGeometry",
    "TiltProjector",
    "as_autograd",
    "fbp",
    "missing_wedge_mask",
    "wbp",
]
