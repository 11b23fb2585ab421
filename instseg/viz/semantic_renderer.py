"""Pictures of a class-id map: the colour overlay with a legend, and the three-panel figure
(original | predicted mask | overlay) people put in reports.

Two renderers, as for instances: ``"visualizer"`` is Detectron2's ``Visualizer.draw_sem_seg``
(class names written on their regions); ``"fast"`` (the default) blends class colours with
OpenCV and lists the classes present in a legend box. Both use one colour per class: the
class's ``stuff_colors`` entry, else Detectron2's colour map at the class id; a class named
"background" is left uncoloured.
"""

from __future__ import annotations

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

from instseg.viz.renderer import as_bgr_uint8
from instseg.viz.report import PANEL_TITLES, side_by_side

SEMANTIC_RENDERERS = ("fast", "visualizer")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colors(metadata: Metadata) -> np.ndarray:
    """RGB uint8 colour of each class (K x 3)."""
    classes = list(metadata.get("stuff_classes", []))
    colors = metadata.get("stuff_colors", None)
    if colors is not None and len(colors) >= len(classes):
        return np.asarray(colors[: len(classes)], dtype=np.uint8).reshape(-1, 3)
    palette = colormap(rgb=True, maximum=255).astype(np.uint8)
    return palette[np.arange(len(classes)) % len(palette)]


class SemanticRenderer:
    """Draws class-id maps on BGR images (``name``: "fast" or "visualizer")."""

    def __init__(self, metadata: Metadata, name: str = "fast", alpha: float = 0.5):
        if name not in SEMANTIC_RENDERERS:
            raise ValueError(f"Unknown renderer {name!r}; choose one of {SEMANTIC_RENDERERS}")
        self.metadata = metadata
        self.name = name
        self.alpha = alpha
        self.classes = list(metadata.get("stuff_classes", []))
        self.colors = class_colors(metadata)
        self.painted = np.array([c.lower() != "background" for c in self.classes], dtype=bool)

    def color_mask(self, class_ids: np.ndarray) -> np.ndarray:
        """The class-id map in class colours (BGR); background and unknown ids black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: len(self.colors)] = self.colors[:, ::-1] * self.painted[:, None]
        return lut[np.clip(class_ids, 0, 255).astype(np.uint8)]

    def overlay(self, image_bgr: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """The image with every painted class blended in its colour, and a legend."""
        image = as_bgr_uint8(image_bgr)
        if class_ids.shape != image.shape[:2]:
            raise ValueError(f"class map is {class_ids.shape}, the image {image.shape[:2]}")
        if self.name == "visualizer":
            visualizer = Visualizer(image[:, :, ::-1], self.metadata)
            shown = np.where(self._painted(class_ids), class_ids, 255)  # 255: not drawn
            drawn = visualizer.draw_sem_seg(shown, alpha=self.alpha).get_image()[:, :, ::-1]
            return np.ascontiguousarray(drawn)
        painted = self._painted(class_ids)
        blended = cv2.addWeighted(image, 1 - self.alpha, self.color_mask(class_ids), self.alpha, 0)
        image[painted] = blended[painted]
        return self._legend(image, class_ids)

    def panels(self, image_bgr: np.ndarray, class_ids: np.ndarray, overlay=None) -> np.ndarray:
        """Original | predicted mask (class colours) | overlay, side by side, titled."""
        image = as_bgr_uint8(image_bgr)
        overlay = self.overlay(image, class_ids) if overlay is None else overlay
        return side_by_side([image, self.color_mask(class_ids), overlay], PANEL_TITLES)

    def _painted(self, class_ids: np.ndarray) -> np.ndarray:
        lut = np.zeros(256, dtype=bool)
        lut[: len(self.painted)] = self.painted
        return lut[np.clip(class_ids, 0, 255).astype(np.uint8)]

    def _legend(self, image: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """A box in the top-left corner: a swatch and the name of each painted class present."""
        present = [
            int(c) for c in np.unique(class_ids) if c < len(self.classes) and self.painted[c]
        ]
        if not present:
            return image
        height, width = image.shape[:2]
        scale = max(0.35, min(height, width) / 700)
        line = int(22 * scale / 0.5)
        text_w = max(cv2.getTextSize(self.classes[c], _FONT, scale, 1)[0][0] for c in present)
        box_w, box_h = min(width, text_w + line + 12), min(height, line * len(present) + 8)
        region = image[:box_h, :box_w]
        region[:] = (region * 0.4 + 255 * 0.6).astype(np.uint8)
        for row, c in enumerate(present):
            y = 4 + row * line
            color = tuple(int(v) for v in self.colors[c][::-1])
            cv2.rectangle(image, (4, y + 2), (4 + line - 6, y + line - 4), color, -1)
            cv2.putText(image, self.classes[c], (line + 4, y + int(line * 0.7)), _FONT, scale,
                        (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
        return image
