"""Small utilities: device resolution, CPU threads."""

from cryowedge.utils.device import cpu_threads, resolve_device

__all__ = ["cpu_threads", "resolve_device"]
