"""PNG figures for people: orthoslices (panels and single-volume previews) and FSC curves."""

from cryowedge.viz.figures import (
    central_slices,
    fsc_plot,
    orthogonal_slices,
    orthoslice_figure,
    orthoslice_panel,
    orthoslice_png,
    percentile_limits,
    save_png,
)

__all__ = [
    "central_slices",
    "fsc_plot",
    "orthogonal_slices",
    "orthoslice_figure",
    "orthoslice_panel",
    "orthoslice_png",
    "percentile_limits",
    "save_png",
]
