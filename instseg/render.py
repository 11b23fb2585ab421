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

import colorsys
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer, _DetectedInstance
from detectron2.utils.visualizer import (
    _SMALL_OBJECT_AREA_THRESH,
    ColorMode,
    Visualizer,
    _create_text_labels,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RENDERERS",
    "Color",
    "FastRenderer",
    "Renderer",
    "VisualizerRenderer",
    "build_renderer",
    "image_colors",
]

Color = tuple[float, float, float]
"""An RGB colour with channels in [0, 1]."""

MASK_ALPHA = 0.5
"""Mask fill (and box outline) opacity; Visualizer's value for ``ColorMode.IMAGE``."""

_PALETTE_SEED = 0
# VideoVisualizer keeps an unmatched track alive for this many frames (literal in its code).
_TRACK_TTL = 8
# Matplotlib's default figure dpi, which Visualizer's point-based sizes are relative to.
_DPI = 100.0
_TEXT_BG_ALPHA = 0.8


# ----------------------------------------------------------------------------- colours


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


def _as_color(color) -> Color:
    return tuple(float(v) for v in np.asarray(color, dtype=np.float64).reshape(3))


@lru_cache(maxsize=512)
def _label_rgb(color: Color) -> Color:
    """Label text colour: the instance colour lightened by 70% (HLS), kept readable on black.

    Same recipe as Visualizer's labels, so both renderers' text looks alike.
    """
    h, lightness, s = colorsys.rgb_to_hls(*color)
    rgb = np.clip(colorsys.hls_to_rgb(h, min(max(lightness * 1.7, 0.0), 1.0), s), 0.0, 1.0)
    rgb = np.maximum(rgb, 0.2)
    rgb[np.argmax(rgb)] = max(0.8, float(rgb.max()))
    return _as_color(rgb)


def _to_bgr255(color: Color) -> tuple[int, int, int]:
    r, g, b = (int(round(v * 255.0)) for v in color)
    return (b, g, r)


class _ColorTracker(VideoVisualizer):
    """VideoVisualizer whose colour tracking can run without drawing, and which records colours.

    ``assign_colors`` feeds the tracker exactly as ``draw_instance_predictions`` does, so a
    FastRenderer and a VideoVisualizer fed the same frames (and RNG state) agree on colours.
    """

    def __init__(self, metadata: Metadata):
        super().__init__(metadata, instance_mode=ColorMode.IMAGE)
        self.last_assigned: list[Color] = []

    def _assign_colors(self, instances):
        colors = super()._assign_colors(instances)
        self.last_assigned = [_as_color(c) for c in colors]
        return colors

    def _assign_colors_by_id(self, instances):
        colors = super()._assign_colors_by_id(instances)
        self.last_assigned = [_as_color(c) for c in colors]
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
            self.last_assigned = [_as_color(c) for c in predictions.COLOR]
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


class _PaletteVisualizer(Visualizer):
    """Visualizer that draws with given colours instead of picking random ones per call."""

    def __init__(self, img_rgb: np.ndarray, metadata: Metadata, colors: list[Color]):
        super().__init__(img_rgb, metadata, instance_mode=ColorMode.IMAGE)
        self._colors = colors

    def overlay_instances(self, *, assigned_colors=None, **kwargs):
        if assigned_colors is None:
            assigned_colors = self._colors
        return super().overlay_instances(assigned_colors=assigned_colors, **kwargs)


# ----------------------------------------------------------------------------- input handling


def _as_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """A fresh C-contiguous HxWx3 uint8 copy; HxW / HxWx1 grey input is replicated to 3 channels."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"expected an HxWx3 BGR image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.array(arr, dtype=np.uint8, order="C", copy=True)


def _num_instances(instances: Instances) -> int:
    """len() that treats an Instances without any field (which refuses len()) as empty."""
    return len(instances) if instances.get_fields() else 0


def _to_cpu(instances: Instances) -> Instances:
    if any(isinstance(v, torch.Tensor) and v.device.type != "cpu" for v in _tensors(instances)):
        return instances.to("cpu")
    return instances


def _tensors(instances: Instances):
    for v in instances.get_fields().values():
        yield v.tensor if isinstance(v, Boxes | BitMasks) else v


def _masks_numpy(instances: Instances, height: int, width: int) -> np.ndarray | None:
    """pred_masks as a C-contiguous NxHxW bool array, or None when absent."""
    if not instances.has("pred_masks"):
        return None
    masks = instances.pred_masks
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.dtype != bool:
        masks = masks > 0.5 if masks.dtype.kind == "f" else masks != 0
    if masks.ndim != 3 or masks.shape[1:] != (height, width):
        raise ValueError(
            f"pred_masks must be Nx{height}x{width} to match the image, got {masks.shape}"
        )
    return np.ascontiguousarray(masks)


def _boxes_numpy(instances: Instances) -> np.ndarray | None:
    if not instances.has("pred_boxes"):
        return None
    boxes = instances.pred_boxes
    boxes = boxes.tensor if isinstance(boxes, Boxes) else torch.as_tensor(boxes)
    return boxes.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)


# ----------------------------------------------------------------------------- renderers


class Renderer(ABC):
    """Draws predictions on BGR frames; subclasses differ only in speed and exact rasterisation.

    Args:
        metadata: dataset metadata with ``thing_classes`` (label names) and optionally
            ``thing_colors`` (RGB 0-255 per class).
        video: track instances across successive ``draw`` calls so an object keeps its colour.

    Attributes:
        last_colors (list[Color]): RGB [0, 1] colour of each instance of the last ``draw`` call,
            in the order of its ``Instances``.
    """

    name: str = ""

    def __init__(self, metadata: Metadata | None, video: bool = False):
        self.metadata = metadata if metadata is not None else Metadata()
        self.video = bool(video)
        self.last_colors: list[Color] = []
        # VideoVisualizer-based colour tracking shared by both renderers (video only).
        self._tracker = _ColorTracker(self.metadata) if self.video else None

    @abstractmethod
    def draw(self, image_bgr: np.ndarray, instances: Instances) -> np.ndarray:
        """Render ``instances`` on a copy of the image.

        Args:
            image_bgr (np.ndarray): HxWx3 uint8, BGR (HxW grey is accepted too).
            instances (Instances): predictions for this image (any device); uses pred_boxes,
                scores, pred_classes and pred_masks (NxHxW bool) when present.

        Returns:
            np.ndarray: HxWx3 uint8, BGR, same size as the input; the input is not modified.
        """

    def reset(self) -> None:
        """Forget tracked video colours, e.g. before starting another video."""
        if self.video:
            self._tracker = _ColorTracker(self.metadata)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(video={self.video})"


class VisualizerRenderer(Renderer):
    """Reference rendering through Detectron2's ``Visualizer`` (images) / ``VideoVisualizer``."""

    name = "visualizer"

    def draw(self, image_bgr: np.ndarray, instances: Instances) -> np.ndarray:
        image = _as_bgr_uint8(image_bgr)
        height, width = image.shape[:2]
        instances = _to_cpu(instances)
        if _num_instances(instances) == 0:
            self.last_colors = []
            return image
        if self.video and not instances.has("pred_boxes") and instances.has("pred_masks"):
            # VideoVisualizer tracks by box (and draws none when masks exist): derive boxes so
            # mask-only predictions still work.
            instances = Instances(instances.image_size, **instances.get_fields())
            instances.pred_boxes = BitMasks(
                torch.from_numpy(_masks_numpy(instances, height, width))
            ).get_bounding_boxes()

        rgb = image[:, :, ::-1]
        if self.video:
            self._tracker.last_assigned = []
            vis_image = self._tracker.draw_instance_predictions(rgb, instances)
            if instances.has("COLOR"):
                self.last_colors = [_as_color(c) for c in instances.COLOR]
            else:
                self.last_colors = list(self._tracker.last_assigned)
        else:
            classes = instances.pred_classes.tolist() if instances.has("pred_classes") else None
            self.last_colors = image_colors(classes, len(instances), self.metadata)
            visualizer = _PaletteVisualizer(rgb, self.metadata, self.last_colors)
            vis_image = visualizer.draw_instance_predictions(instances)

        out = vis_image.get_image()[:, :, ::-1]
        if out.shape[:2] != (height, width):
            logger.debug("Visualizer returned %s for a %dx%d image", out.shape, width, height)
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(out)


class FastRenderer(Renderer):
    """OpenCV/numpy rendering of what ``VisualizerRenderer`` draws, with the same colours.

    Mask fills and box outlines are painted into one colour layer (smaller instances on top) and
    alpha-blended once over their union; mask outlines, then labels, are drawn opaque on top. Mask
    work is cropped to each mask's bounding rectangle.

    Args:
        metadata, video: see :class:`Renderer`.
        draw_boxes: None follows the Visualizer path (boxes always on images; in video only when
            there are no masks, as ``VideoVisualizer`` does); True/False forces boxes on/off.
    """

    name = "fast"

    def __init__(
        self, metadata: Metadata | None, video: bool = False, draw_boxes: bool | None = None
    ):
        super().__init__(metadata, video)
        self.draw_boxes = draw_boxes

    def draw(self, image_bgr: np.ndarray, instances: Instances) -> np.ndarray:
        image = _as_bgr_uint8(image_bgr)
        height, width = image.shape[:2]
        instances = _to_cpu(instances)
        n = _num_instances(instances)
        if n == 0:
            self.last_colors = []
            return image

        masks = _masks_numpy(instances, height, width)
        boxes = _boxes_numpy(instances)
        rects = None
        if masks is not None:
            # Tight (x, y, w, h) of each mask; w == 0 for an empty mask.
            rects = np.array([cv2.boundingRect(m.view(np.uint8)) for m in masks], dtype=np.int64)
        has_boxes = boxes is not None
        if boxes is None:
            if rects is None:
                self.last_colors = []
                return image
            boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1).astype(
                np.float64
            )

        if self.video:
            colors = self._tracker.assign_colors(instances, boxes)
        else:
            classes = instances.pred_classes.tolist() if instances.has("pred_classes") else None
            colors = image_colors(classes, n, self.metadata)
        self.last_colors = colors

        if self.draw_boxes is None:
            show_boxes = has_boxes and not (self.video and masks is not None)
        else:
            show_boxes = self.draw_boxes and has_boxes

        # Largest first so smaller instances end up on top, as Visualizer orders them.
        if show_boxes or masks is None:
            areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        else:
            areas = np.array(
                [
                    cv2.countNonZero(masks[i, y : y + h, x : x + w].view(np.uint8)) if w else 0
                    for i, (x, y, w, h) in enumerate(rects)
                ]
            )
        order = np.argsort(-areas, kind="stable")
        bgr = [_to_bgr255(c) for c in colors]

        font_pt = max(math.sqrt(height * width) // 90, 10)  # Visualizer's default font size
        box_thickness = max(1, int(round(max(font_pt / 4, 1) * _DPI / 72)))
        ibox = np.empty((n, 4), dtype=np.int64)
        ibox[:, [0, 2]] = np.clip(np.round(boxes[:, [0, 2]]), 0, width - 1)
        ibox[:, [1, 3]] = np.clip(np.round(boxes[:, [1, 3]]), 0, height - 1)

        self._blend_layer(
            image, order, bgr, masks, rects, ibox if show_boxes else None, box_thickness
        )
        if masks is not None:
            self._draw_outlines(image, order, bgr, masks, rects)

        classes = instances.pred_classes.tolist() if instances.has("pred_classes") else None
        scores = instances.scores.tolist() if instances.has("scores") else None
        labels = _create_text_labels(classes, scores, self.metadata.get("thing_classes", None))
        if labels is not None:
            use_mask_anchor = masks is not None and not show_boxes
            for i in order:
                self._draw_label(
                    image,
                    labels[i],
                    colors[i],
                    boxes[i],
                    masks[i] if use_mask_anchor else None,
                    rects[i] if use_mask_anchor else None,
                    font_pt,
                )
        return image

    @staticmethod
    def _blend_layer(image, order, bgr, masks, rects, ibox, thickness) -> None:
        """Alpha-blend mask fills and box outlines in one pass over their union (in place)."""
        height, width = image.shape[:2]
        layer = np.zeros_like(image)
        cover = np.zeros((height, width), dtype=np.uint8)
        x_lo, y_lo, x_hi, y_hi = width, height, 0, 0
        for i in order:
            if ibox is not None:
                x0, y0, x1, y1 = (int(v) for v in ibox[i])
                cv2.rectangle(layer, (x0, y0), (x1, y1), bgr[i], thickness)
                cv2.rectangle(cover, (x0, y0), (x1, y1), 1, thickness)
                half = thickness // 2 + 1
                x_lo, y_lo = min(x_lo, x0 - half), min(y_lo, y0 - half)
                x_hi, y_hi = max(x_hi, x1 + half + 1), max(y_hi, y1 + half + 1)
            if masks is not None:
                x, y, w, h = (int(v) for v in rects[i])
                if w == 0:
                    continue
                m = masks[i, y : y + h, x : x + w].view(np.uint8)
                tile = np.empty((h, w, 3), dtype=np.uint8)
                tile[:] = bgr[i]
                cv2.copyTo(tile, m, layer[y : y + h, x : x + w])
                cover[y : y + h, x : x + w] |= m
                x_lo, y_lo = min(x_lo, x), min(y_lo, y)
                x_hi, y_hi = max(x_hi, x + w), max(y_hi, y + h)
        x_lo, y_lo = max(x_lo, 0), max(y_lo, 0)
        x_hi, y_hi = min(x_hi, width), min(y_hi, height)
        if x_lo >= x_hi or y_lo >= y_hi:
            return
        roi = image[y_lo:y_hi, x_lo:x_hi]
        blended = cv2.addWeighted(roi, 1.0 - MASK_ALPHA, layer[y_lo:y_hi, x_lo:x_hi], MASK_ALPHA, 0)
        # copyTo writes through into the image view (only where cover is set).
        cv2.copyTo(blended, cover[y_lo:y_hi, x_lo:x_hi], roi)

    @staticmethod
    def _draw_outlines(image, order, bgr, masks, rects) -> None:
        """Opaque 1 px mask outlines (Visualizer draws polygon edges at full opacity)."""
        for i in order:
            x, y, w, h = (int(v) for v in rects[i])
            if w == 0:
                continue
            crop = np.ascontiguousarray(masks[i, y : y + h, x : x + w]).view(np.uint8)
            contours, _ = cv2.findContours(
                crop, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y)
            )
            cv2.drawContours(image, contours, -1, bgr[i], 1, cv2.LINE_AA)

    @staticmethod
    def _draw_label(image, text, color, box, mask, rect, font_pt) -> None:
        """Draw "class score%" on a translucent black plate, placed as Visualizer places it.

        Anchored at the box's top-left corner, or, with ``mask`` given (masks without boxes), at
        the median mask pixel; small objects get the label below (or beside) them instead.
        """
        height, width = image.shape[:2]
        if mask is not None:
            x, y, w, h = (int(v) for v in rect)
            if w == 0:
                return
            ys, xs = np.nonzero(mask[y : y + h, x : x + w])
            pos_x, pos_y = float(np.median(xs)) + x, float(np.median(ys)) + y
            x0, y0, x1, y1 = x, y, x + w, y + h
            centered = True
        else:
            x0, y0, x1, y1 = (float(v) for v in box)
            pos_x, pos_y = x0, y0
            centered = False
        if (y1 - y0) * (x1 - x0) < _SMALL_OBJECT_AREA_THRESH or y1 - y0 < 40:
            pos_x, pos_y = (x1, y0) if y1 >= height - 5 else (x0, y1)

        height_ratio = (y1 - y0) / math.sqrt(height * width)
        size_pt = float(np.clip((height_ratio - 0.02) / 0.08 + 1, 1.2, 2)) * 0.5 * font_pt
        # Hershey glyphs are ~22 px tall at scale 1; cap height is ~0.7 em.
        scale = max(0.7 * size_pt * _DPI / 72 / 22, 0.3)
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), baseline = cv2.getTextSize(text, font, scale, 1)
        pad = max(1, int(round(0.3 * th)))
        plate_w, plate_h = tw + 2 * pad, th + baseline + 2 * pad
        left = int(round(pos_x - plate_w / 2 if centered else pos_x))
        top = int(round(pos_y))
        left = min(max(left, 0), max(width - plate_w, 0))
        top = min(max(top, 0), max(height - plate_h, 0))
        plate = image[top : top + plate_h, left : left + plate_w]
        plate[:] = cv2.convertScaleAbs(plate, alpha=1.0 - _TEXT_BG_ALPHA)
        cv2.putText(
            image,
            text,
            (left + pad, top + pad + th),
            font,
            scale,
            _to_bgr255(_label_rgb(color)),
            1,
            cv2.LINE_AA,
        )


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
