"""Drawing through Detectron2's own ``Visualizer``: the reference look."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch
from detectron2.structures import BitMasks, Instances

from instseg.viz.colors import PaletteVisualizer, as_color, image_colors, track_colors
from instseg.viz.renderer import (
    Renderer,
    as_bgr_uint8,
    instance_count,
    instance_labels,
    instance_masks,
    to_cpu,
)

logger = logging.getLogger(__name__)


class VisualizerRenderer(Renderer):
    """Reference rendering through Detectron2's ``Visualizer`` (images) / ``VideoVisualizer``."""

    name = "visualizer"

    def draw(self, image_bgr: np.ndarray, instances: Instances) -> np.ndarray:
        image = as_bgr_uint8(image_bgr)
        height, width = image.shape[:2]
        instances = to_cpu(instances)
        if instance_count(instances) == 0:
            self.last_colors = []
            return image
        if self.video and not instances.has("pred_boxes") and instances.has("pred_masks"):
            # VideoVisualizer tracks by box (and draws none when masks exist): derive boxes so
            # mask-only predictions still work.
            instances = Instances(instances.image_size, **instances.get_fields())
            instances.pred_boxes = BitMasks(
                torch.from_numpy(instance_masks(instances, height, width))
            ).get_bounding_boxes()

        rgb = image[:, :, ::-1]
        if instances.has("track_id"):
            # A tracked video: colour and label by track id, in VideoVisualizer's look.
            self.last_colors = track_colors(instances.track_id.tolist())
            visualizer = PaletteVisualizer(
                rgb,
                self.metadata,
                self.last_colors,
                labels=instance_labels(instances, self.metadata),
                boxes_with_masks=not self.video,
            )
            vis_image = visualizer.draw_instance_predictions(instances)
        elif self.video:
            self._tracker.last_assigned = []
            vis_image = self._tracker.draw_instance_predictions(rgb, instances)
            if instances.has("COLOR"):
                self.last_colors = [as_color(c) for c in instances.COLOR]
            else:
                self.last_colors = list(self._tracker.last_assigned)
        else:
            classes = instances.pred_classes.tolist() if instances.has("pred_classes") else None
            self.last_colors = image_colors(classes, len(instances), self.metadata)
            visualizer = PaletteVisualizer(rgb, self.metadata, self.last_colors)
            vis_image = visualizer.draw_instance_predictions(instances)

        out = vis_image.get_image()[:, :, ::-1]
        if out.shape[:2] != (height, width):
            logger.debug("Visualizer returned %s for a %dx%d image", out.shape, width, height)
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(out)
