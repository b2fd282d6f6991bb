"""PNG figures for people: orthoslices and FSC curves."""

from cryowedge.viz.figures import central_slices, fsc_plot, orthoslice_panel, save_png

__all__ = ["central_slices", "fsc_plot", "orthoslice_panel", "save_png"]
