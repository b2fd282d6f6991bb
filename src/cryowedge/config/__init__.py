"""Typed configuration models (the single home of defaults)."""

from cryowedge.config.models import BaseConfig, DemoConfig, ReconstructConfig, SimulateConfig

__all__ = ["BaseConfig", "DemoConfig", "ReconstructConfig", "SimulateConfig"]
