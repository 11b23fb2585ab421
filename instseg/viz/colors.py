"""Instance colours shared by both renderers: a fixed palette for still images and
Detectron2's ``VideoVisualizer`` colour tracking for videos.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer, _DetectedInstance
from detectron2.utils.visualizer import (
    ColorMode,
    Visualizer,
)

logger = logging.getLogger(__name__)


Color = tuple[float, float, float]
"""An RGB colour with channels in [0, 1]."""

MASK_ALPHA = 0.5
"""Mask fill (and box outline) opacity; Visualizer's value for ``ColorMode.IMAGE``."""

_PALETTE_SEED = 0
# VideoVisualizer keeps an unmatched track alive for this many frames (literal in its code).
_TRACK_TTL = 8
# Matplotlib's default figure dpi, which Visualizer's point-based sizes are relative to.
DPI = 100.0
TEXT_BG_ALPHA = 0.8


@lru_cache(maxsize=1)
def _palette() -> tuple[Color, ...]:
    """Detectron2's chromatic palette in a fixed shuffled order (greys would hide masks)."""
    colors = colormap(rgb=True, maximum=1).astype(np.float64)
    saturation = np.array([colorsys.rgb_to_hls(*c)[2] for c in colors])
    chromatic = colors[saturation > 0]
    order = np.random.RandomState(_PALETTE_SEED).permutation(len(chromatic))
    return tuple(tuple(float(v) for v in chromatic[i]) for i in order)


def image_colors(
    classes: Sequence[int] | None, num_instances: int, metadata: Metadata
) -> list[Color]:
    """Deterministic per-instance colours for still images (see the module docstring).

    Args:
        classes: class index per instance, or None when the predictions carry no classes.
        num_instances: number of instances.
        metadata: dataset metadata; ``thing_colors`` (RGB 0-255 per class) is used when present.

    Returns:
        ``num_instances`` RGB colours in [0, 1].
    """
    palette = _palette()
    thing_colors = metadata.get("thing_colors", None)
    colors: list[Color] = []
    for i in range(num_instances):
        c = None if classes is None else int(classes[i])
        if thing_colors is not None and c is not None and 0 <= c < len(thing_colors):
            colors.append(tuple(float(v) / 255.0 for v in thing_colors[c]))
        else:
            colors.append(palette[i % len(palette)])
    return colors


def track_colors(track_ids: Sequence[int]) -> list[Color]:
    """One colour per track id, the same in every frame and both renderers: colour is
    identity (neighbouring ids get distinct palette entries)."""
    palette = _palette()
    return [palette[int(i) % len(palette)] for i in track_ids]


def as_color(color) -> Color:
    return tuple(float(v) for v in np.asarray(color, dtype=np.float64).reshape(3))


@lru_cache(maxsize=512)
def label_rgb(color: Color) -> Color:
    """Label text colour: the instance colour lightened by 70% (HLS), kept readable on black.

    Same recipe as Visualizer's labels, so both renderers' text looks alike.
    """
    h, lightness, s = colorsys.rgb_to_hls(*color)
    rgb = np.clip(colorsys.hls_to_rgb(h, min(max(lightness * 1.7, 0.0), 1.0), s), 0.0, 1.0)
    rgb = np.maximum(rgb, 0.2)
    rgb[np.argmax(rgb)] = max(0.8, float(rgb.max()))
    return as_color(rgb)


def to_bgr255(color: Color) -> tuple[int, int, int]:
    r, g, b = (int(round(v * 255.0)) for v in color)
    return (b, g, r)


class ColorTracker(VideoVisualizer):
    """VideoVisualizer whose colour tracking can run without drawing, and which records colours.

    ``assign_colors`` feeds the tracker exactly as ``draw_instance_predictions`` does, so a
    FastRenderer and a VideoVisualizer fed the same frames (and RNG state) agree on colours.
    """

    def __init__(self, metadata: Metadata):
        super().__init__(metadata, instance_mode=ColorMode.IMAGE)
        self.last_assigned: list[Color] = []

    def _assign_colors(self, instances):
        colors = super()._assign_colors(instances)
        self.last_assigned = [as_color(c) for c in colors]
        return colors

    def _assign_colors_by_id(self, instances):
        colors = super()._assign_colors_by_id(instances)
        self.last_assigned = [as_color(c) for c in colors]
        return colors

    def assign_colors(self, predictions: Instances, boxes_xyxy: np.ndarray) -> list[Color]:
        """Advance the tracker by one frame and return one colour per instance.

        Args:
            predictions: the frame's instances (CPU).
            boxes_xyxy (np.ndarray): Nx4 float XYXY boxes used for IoU matching.
        """
        n = len(predictions)
        if n == 0:
            # VideoVisualizer returns before tracking on empty frames; keep its behaviour.
            self.last_assigned = []
            return []
        if predictions.has("COLOR"):
            self.last_assigned = [as_color(c) for c in predictions.COLOR]
            return self.last_assigned
        if predictions.has("ID"):
            self._assign_colors_by_id(predictions)
            return self.last_assigned
        classes = (
            predictions.pred_classes.numpy() if predictions.has("pred_classes") else [None] * n
        )
        detected = [
            _DetectedInstance(classes[i], boxes_xyxy[i], mask_rle=None, color=None, ttl=_TRACK_TTL)
            for i in range(n)
        ]
        self._assign_colors(detected)
        return self.last_assigned


class PaletteVisualizer(Visualizer):
    """Visualizer that draws with given colours instead of picking random ones per call, and
    optionally given labels and no boxes where masks are drawn (VideoVisualizer's look)."""

    def __init__(
        self,
        img_rgb: np.ndarray,
        metadata: Metadata,
        colors: list[Color],
        labels: list[str] | None = None,
        boxes_with_masks: bool = True,
    ):
        super().__init__(img_rgb, metadata, instance_mode=ColorMode.IMAGE)
        self._colors = colors
        self._labels = labels
        self._boxes_with_masks = boxes_with_masks

    def overlay_instances(self, *, assigned_colors=None, **kwargs):
        if assigned_colors is None:
            assigned_colors = self._colors
        if self._labels is not None:
            kwargs["labels"] = self._labels
        if not self._boxes_with_masks and kwargs.get("masks") is not None:
            kwargs["boxes"] = None
        return super().overlay_instances(assigned_colors=assigned_colors, **kwargs)
