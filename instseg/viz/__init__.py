"""Pictures: instance colours, the Visualizer and fast renderers, training curves, reports."""

from instseg.viz.build import RENDERERS, build_renderer
from instseg.viz.curves import plot_training_curves
from instseg.viz.renderer import Renderer

__all__ = ["RENDERERS", "Renderer", "build_renderer", "plot_training_curves"]
