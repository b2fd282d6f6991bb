"""Small utilities: device resolution."""

from cryowedge.utils.device import resolve_device

__all__ = ["resolve_device"]
