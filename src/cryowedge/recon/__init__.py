"""Reconstruction algorithms: FBP / WBP and their filters."""

from cryowedge.recon.fbp import fbp, filter_projections, wbp
from cryowedge.recon.filters import FILTER_NAMES, fbp_filter

__all__ = ["FILTER_NAMES", "fbp", "fbp_filter", "filter_projections", "wbp"]
