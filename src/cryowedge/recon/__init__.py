"""Reconstruction algorithms: FBP / WBP and their filters, and the RB-STET reconstructions.

The ``cryowedge reconstruct`` methods and their options are registered in
:mod:`cryowedge.config.registry`; the iterative solvers are in :mod:`cryowedge.solvers`.
"""

from cryowedge.recon.fbp import fbp, filter_projections, wbp
from cryowedge.recon.filters import FILTER_NAMES, fbp_filter
from cryowedge.recon.scaling import data_scale
from cryowedge.recon.stet import (
    inpaint_projections,
    inpaint_then_reconstruct,
    reconstruct_stet,
    reconstruct_tds,
)

__all__ = [
    "FILTER_NAMES",
    "data_scale",
    "fbp",
    "fbp_filter",
    "filter_projections",
    "inpaint_projections",
    "inpaint_then_reconstruct",
    "reconstruct_stet",
    "reconstruct_tds",
    "wbp",
]
