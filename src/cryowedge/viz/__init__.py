"""PNG figures for people: orthoslices and FSC curves."""

from cryowedge.viz.figures import central_slices, fsc_plot, orthoslice_panel

__all__ = ["central_slices", "fsc_plot", "orthoslice_panel"]
