"""Names of the FBP / WBP filters, in a low module that config and recon both import.

The filters themselves are in :mod:`cryowedge.recon.filters` (which re-exports these names);
:mod:`cryowedge.config.models` validates ``filter_name`` here without importing torch.
"""

from __future__ import annotations

from cryowedge._validation import check_choice

__all__ = [
    "FILTER_NAMES",
    "IMOD_RADIAL_CUTOFF",
    "IMOD_RADIAL_FALLOFF",
    "WBP_FILTER_NAMES",
    "normalise_filter_name",
    "normalise_wbp_filter_name",
    "preset_radial_cutoff",
]

#: Names accepted by ``filter_name`` (aliases ``ramlak``/``ramp`` map to ``ram-lak``).
#: ``"imod"`` is the preset of IMOD's ``tilt`` as etomo sets it up: the ramp with the radial
#: low-pass ``RADIAL 0.35 0.035`` (flat to 0.35 cycles/px, then a Gaussian of σ 0.035).
FILTER_NAMES = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann", "sirt", "imod", "none")
#: Radial cut-off and fall-off (cycles/px) of the ``"imod"`` preset (etomo's defaults).
IMOD_RADIAL_CUTOFF = 0.35
IMOD_RADIAL_FALLOFF = 0.035
_ALIASES = {
    "ramlak": "ram-lak",
    "ramp": "ram-lak",
    "ram_lak": "ram-lak",
    "shepp_logan": "shepp-logan",
    "hanning": "hann",
}
#: Names :func:`~cryowedge.recon.fbp.wbp` accepts: the windows on the exact weighting
#: (``"ram-lak"`` = no window) and ``"none"`` (plain back-projection, as in FBP). The
#: SIRT-like filter modifies the FBP ramp, which WBP replaces, so it is FBP-only.
WBP_FILTER_NAMES = tuple(name for name in FILTER_NAMES if name != "sirt")


def normalise_filter_name(name: str) -> str:
    """Canonical filter name; raises ``ValueError`` listing the choices for an unknown one."""
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    return check_choice(key, "filter", FILTER_NAMES)


def preset_radial_cutoff(name: str, radial_cutoff: float | None) -> float | None:
    """The radial cut-off a filter implies: the ``"imod"`` preset's 0.35 unless one is given."""
    if radial_cutoff is None and normalise_filter_name(name) == "imod":
        return IMOD_RADIAL_CUTOFF
    return radial_cutoff


def normalise_wbp_filter_name(name: str) -> str:
    """Canonical WBP filter name (one of :data:`WBP_FILTER_NAMES`); ``ValueError`` otherwise."""
    key = normalise_filter_name(name)
    if key not in WBP_FILTER_NAMES:
        raise ValueError(
            f"filter {name!r} is not available for WBP (it modifies the FBP ramp, which WBP's "
            f"exact weighting replaces); choose one of {', '.join(WBP_FILTER_NAMES)}, or use "
            "method 'fbp'."
        )
    return key
