"""Draw predicted instances (masks, boxes, "class score%" labels) onto BGR images.

Two renderers share one interface (:class:`Renderer`) and are picked by name with
:func:`build_renderer`:

* ``"visualizer"`` (:class:`VisualizerRenderer`) delegates to Detectron2's matplotlib-based
  ``Visualizer`` / ``VideoVisualizer``: reference look, slow.
* ``"fast"`` (:class:`FastRenderer`) rasterises the same elements with OpenCV/numpy, fast enough
  for video.

Colour policy (both renderers; colours are RGB floats in [0, 1], Detectron2's convention):

* Still images (``video=False``): if ``metadata.thing_colors`` exists, every instance of class
  ``c`` gets ``thing_colors[c] / 255``, i.e. what ``Visualizer`` uses in ``ColorMode.SEGMENTATION``
  without jitter. Otherwise instance ``i`` (its index in the ``Instances``, which is descending
  score for Mask R-CNN output) gets entry ``i`` of Detectron2's colour palette (the colours
  ``random_color`` draws from, without its greys) shuffled once with a fixed seed, so colours are
  distinct within an image and identical from run to run.
* Video (``video=True``): colours come from ``VideoVisualizer``'s tracker, so the same object keeps
  its colour across frames and both renderers assign identical colours to the same sequence.
  Like ``VideoVisualizer`` this ignores ``thing_colors``; new tracks take a colour from
  Detectron2's ``random_color``, which draws from NumPy's global RNG (seed it for reproducible
  colours).
"""

from __future__ import annotations

import logging

from detectron2.data.catalog import Metadata

from instseg.viz.fast_renderer import FastRenderer
from instseg.viz.renderer import Renderer
from instseg.viz.visualizer import VisualizerRenderer

logger = logging.getLogger(__name__)


RENDERERS: dict[str, type[Renderer]] = {
    FastRenderer.name: FastRenderer,
    VisualizerRenderer.name: VisualizerRenderer,
}


def build_renderer(name: str, metadata: Metadata | None, video: bool = False) -> Renderer:
    """Renderer by name ("fast" or "visualizer"), so configs and CLIs can choose one.

    Raises:
        ValueError: for an unknown name; the message lists the valid choices.
    """
    key = str(name).strip().lower()
    if key not in RENDERERS:
        raise ValueError(
            f"Unknown renderer {name!r}; choose one of: {', '.join(sorted(RENDERERS))}"
        )
    return RENDERERS[key](metadata, video=video)
