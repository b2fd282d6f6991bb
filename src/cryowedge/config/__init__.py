"""Typed configuration models (the single home of defaults)."""

from cryowedge.config.models import (
    BaseConfig,
    DemoConfig,
    ReconstructConfig,
    SimulateConfig,
    StetConfig,
    StetReconstructConfig,
    StetSimulateConfig,
)

__all__ = [
    "BaseConfig",
    "DemoConfig",
    "ReconstructConfig",
    "SimulateConfig",
    "StetConfig",
    "StetReconstructConfig",
    "StetSimulateConfig",
]
