"""Building a COCO instances JSON from converted annotations, and the record of what was dropped.

Polygons stay polygons (editable, exact; circles and ellipses become polygons too); shapes that
are pixel masks by nature (labelme's mask shapes) become compressed RLE. ``area`` and ``bbox`` come from the mask either way,
through pycocotools, so they agree with what COCO evaluation and Detectron2 read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_util

# Points may sit this far outside the image (a click on the border) and are clamped; further out,
# the shape is dropped as lying outside the image.
EDGE_TOLERANCE_PX = 2.0
# Vertices of the polygon a circle or an ellipse becomes (IoU with the true disc > 0.99 at r=25).
ELLIPSE_VERTICES = 64


@dataclass(frozen=True)
class Dropped:
    """An entry left out of the output, and why."""

    file: str
    entry: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.entry}: {self.reason}"


class ShapeError(ValueError):
    """A shape that cannot become an instance; the converter records it as dropped."""


@dataclass
class CocoBuilder:
    """Images and instances in, a COCO dict out; ids from 1, categories in the given order (or in
    order of first appearance when ``class_names`` is None)."""

    class_names: list[str] | None = None
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    _names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._names = list(self.class_names or [])

    def category_id(self, name: str) -> int:
        """The id for ``name``; :class:`ShapeError` when the class list is fixed without it."""
        if name not in self._names:
            if self.class_names is not None:
                raise ShapeError(f"class {name!r} is not in --classes")
            self._names.append(name)
        return self._names.index(name) + 1

    def add_image(self, file_name: str, width: int, height: int) -> int:
        image_id = len(self.images) + 1
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        return image_id

    def add_instance(
        self,
        image_id: int,
        category_id: int,
        polygons: list[list[float]] | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        """An instance from polygons (flat ``[x0, y0, x1, y1, ...]`` lists) or a full-image mask;
        with both, their union as RLE."""
        image = self.images[image_id - 1]
        height, width = image["height"], image["width"]
        if mask is not None:
            full = mask.astype(bool)
            if polygons:
                full = full | polygons_to_mask(polygons, height, width)
            rle = mask_util.encode(np.asfortranarray(full.astype(np.uint8)))
            segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        else:
            rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
            segmentation = [[round(float(v), 2) for v in p] for p in polygons]
        area = float(mask_util.area(rle))
        if area <= 0:
            raise ShapeError("covers no pixel")
        self.annotations.append(
            {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "area": area,
                "bbox": [round(float(v), 2) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
        )

    def coco(self) -> dict:
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self._names)]
        return {
            "images": self.images,
            "annotations": self.annotations,
            "categories": categories,
        }


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, height, width))) > 0


def fit_polygon(points, width: int, height: int) -> list[float]:
    """``[[x, y], ...]`` as a flat COCO polygon inside the image; a shape with fewer than 3 points
    or lying outside the image raises :class:`ShapeError`."""
    try:
        xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise ShapeError(f"points are not [x, y] pairs: {str(points)[:60]}") from None
    if len(xy) < 3:
        raise ShapeError(f"polygon with {len(xy)} point(s); needs at least 3")
    if not np.isfinite(xy).all():
        raise ShapeError("polygon with non-finite coordinates")
    tol = EDGE_TOLERANCE_PX
    if (
        (xy[:, 0] < -tol).any()
        or (xy[:, 1] < -tol).any()
        or (xy[:, 0] > width + tol).any()
        or (xy[:, 1] > height + tol).any()
    ):
        raise ShapeError(f"polygon outside the {width}x{height} image")
    xy[:, 0] = xy[:, 0].clip(0, width)
    xy[:, 1] = xy[:, 1].clip(0, height)
    return xy.reshape(-1).tolist()


def rectangle_polygon(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def ellipse_polygon(
    cx: float, cy: float, rx: float, ry: float, theta: float = 0.0
) -> list[list[float]]:
    """A circle or (rotated) ellipse as a polygon, so it stays an editable shape in COCO."""
    points = []
    for i in range(ELLIPSE_VERTICES):
        t = 2 * math.pi * i / ELLIPSE_VERTICES
        x, y = rx * math.cos(t), ry * math.sin(t)
        points.append(
            [
                cx + x * math.cos(theta) - y * math.sin(theta),
                cy + x * math.sin(theta) + y * math.cos(theta),
            ]
        )
    return points
