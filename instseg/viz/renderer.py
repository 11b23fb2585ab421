"""The renderer interface and the instance-field helpers both renderers use."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.visualizer import _create_text_labels

from instseg.structures.cropped_masks import CroppedMasks
from instseg.viz.colors import Color, ColorTracker

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- input handling


def as_bgr_uint8(image: np.ndarray) -> np.ndarray:
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


def instance_count(instances: Instances) -> int:
    """len() that treats an Instances without any field (which refuses len()) as empty."""
    return len(instances) if instances.get_fields() else 0


def to_cpu(instances: Instances) -> Instances:
    if any(isinstance(v, torch.Tensor) and v.device.type != "cpu" for v in _tensors(instances)):
        return instances.to("cpu")
    return instances


def _tensors(instances: Instances):
    for v in instances.get_fields().values():
        yield v.tensor if isinstance(v, Boxes | BitMasks) else v


def instance_masks(
    instances: Instances, height: int, width: int
) -> np.ndarray | CroppedMasks | None:
    """pred_masks as a C-contiguous NxHxW bool array (a tiled image's CroppedMasks as they
    are: they index the same way), or None when absent."""
    if not instances.has("pred_masks"):
        return None
    masks = instances.pred_masks
    if isinstance(masks, CroppedMasks):
        if masks.shape[1:] != (height, width):
            raise ValueError(f"pred_masks are {masks.shape[1:]}, the image {(height, width)}")
        return masks
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


def instance_labels(instances: Instances, metadata: Metadata) -> list[str] | None:
    """Visualizer's "class score%" labels, led by the track id in tracked videos ("#7 car 93%")."""
    classes = instances.pred_classes.tolist() if instances.has("pred_classes") else None
    scores = instances.scores.tolist() if instances.has("scores") else None
    labels = _create_text_labels(classes, scores, metadata.get("thing_classes", None))
    if instances.has("track_id"):
        tags = [f"#{i}" if i else "" for i in instances.track_id.tolist()]  # 0: not tracked
        if labels is None:
            labels = tags
        else:
            labels = [f"{t} {label}" if t else label for t, label in zip(tags, labels, strict=True)]
    return labels


def boxes_numpy(instances: Instances) -> np.ndarray | None:
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
        video: track instances across successive ``draw`` calls so an object keeps its colour;
            instances with a ``track_id`` (a tracked video) take their colour from it instead.

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
        self._tracker = ColorTracker(self.metadata) if self.video else None

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
            self._tracker = ColorTracker(self.metadata)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(video={self.video})"
