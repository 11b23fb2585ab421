"""A large scene of the sample classes, for tiled inference: many small objects, a few large ones,
some small ones placed across given lines (a tile grid's borders), with COCO ground truth.

Objects never overlap here (a scene this size has room), so every annotation is a whole shape
and is built from the object's own cropped raster: memory stays at the image's size whatever
the number of objects.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from instseg.data.sample_data import make_background, mask_to_polygons
from instseg.data.sample_shapes import (
    CLASS_NAMES,
    CONTRAST_TRIES,
    JPEG_QUALITY,
    MIN_OBJECT_CONTRAST,
    SENSOR_NOISE_SIGMA,
    SceneObject,
    color_contrast,
    random_scene_object,
    rasterize,
    texture_patch,
    with_random_appearance,
)

SMALL_SIZES = (12.0, 30.0)  # diameters in pixels
LARGE_SIZES = (300.0, 600.0)
_GAP = 6  # least pixels between two objects' boxes


@dataclass
class LargeScene:
    """The image (BGR uint8), per object its COCO annotation body and its mask as (x0, y0, bool
    crop), and which objects straddle a line."""

    image: np.ndarray
    annotations: list[dict]
    masks: list[tuple[int, int, np.ndarray]]
    straddling: list[int]  # indices into annotations


def _annotation(obj: SceneObject, x0: int, y0: int, mask: np.ndarray) -> dict:
    polygons = [
        [v + (x0 if k % 2 == 0 else y0) for k, v in enumerate(polygon)]
        for polygon in mask_to_polygons(mask)
    ]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return {
        "category_id": obj.class_index + 1,
        "segmentation": polygons,
        "area": float(mask.sum()),
        "bbox": [
            float(x0 + cols[0]),
            float(y0 + rows[0]),
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
        ],
        "iscrowd": 0,
    }


class _Canvas:
    """A scene being filled: objects go where they overlap nothing placed before (with a gap),
    each recoloured until it stands out from what it covers."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng, self.height, self.width = rng, height, width
        self.image = make_background(rng, height, width).copy()
        self.taken: list[tuple[int, int, int, int]] = []
        self.annotations: list[dict] = []
        self.masks: list[tuple[int, int, np.ndarray]] = []

    def place(self, sizes: tuple[float, float], line: tuple[str, int] | None, tries=50) -> bool:
        """One object of a diameter in ``sizes``, centred on ``line`` (("x" or "y", position))
        when given; False when ``tries`` candidates all overlapped or left the scene."""
        for _ in range(tries):
            obj = random_scene_object(self.rng, self.height, self.width)
            diameter = float(self.rng.uniform(*sizes))
            x, y = obj.center
            if line is not None:
                x, y = (line[1], y) if line[0] == "x" else (x, line[1])
            obj = dataclasses.replace(obj, size=diameter, center=(float(x), float(y)))
            raster = rasterize(obj, self.height, self.width)
            if raster is not None and self._free(*raster):
                self._paint(obj, *raster)
                return True
        return False

    def _box(self, x0: int, y0: int, mask: np.ndarray) -> tuple[int, int, int, int]:
        return (x0 - _GAP, y0 - _GAP, x0 + mask.shape[1] + _GAP, y0 + mask.shape[0] + _GAP)

    def _free(self, x0: int, y0: int, mask: np.ndarray) -> bool:
        box = self._box(x0, y0, mask)
        inside = x0 > 0 and y0 > 0 and box[2] < self.width and box[3] < self.height
        return inside and not any(
            box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in self.taken
        )

    def _paint(self, obj, x0: int, y0: int, mask: np.ndarray) -> None:
        region = self.image[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        under = region[mask].astype(np.float32)
        for _ in range(CONTRAST_TRIES):
            if color_contrast(obj, under) >= MIN_OBJECT_CONTRAST:
                break
            obj = with_random_appearance(self.rng, obj)
        texture = texture_patch(obj, x0, y0, *mask.shape)
        region[mask] = np.clip(texture[mask] + 0.5, 0, 255).astype(np.uint8)
        self.taken.append(self._box(x0, y0, mask))
        self.annotations.append(_annotation(obj, x0, y0, mask))
        self.masks.append((x0, y0, mask))


def render_large_scene(
    seed: int,
    size: tuple[int, int] = (3000, 4000),
    num_small: int = 200,
    num_large: int = 4,
    cuts_x: Sequence[int] = (),
    cuts_y: Sequence[int] = (),
    num_straddling: int = 24,
) -> LargeScene:
    """A ``size`` (height, width) scene: ``num_large`` large objects, ``num_straddling`` small
    ones centred on the vertical lines ``cuts_x`` or horizontal lines ``cuts_y``, then up to
    ``num_small`` more small ones anywhere free."""
    height, width = size
    rng = np.random.default_rng(seed)
    canvas = _Canvas(rng, height, width)
    straddling: list[int] = []
    lines = [("x", c) for c in cuts_x] + [("y", c) for c in cuts_y]
    for _ in range(num_large):
        canvas.place(LARGE_SIZES, None)
    for k in range(num_straddling if lines else 0):
        if canvas.place(SMALL_SIZES, lines[k % len(lines)]):
            straddling.append(len(canvas.annotations) - 1)
    for _ in range(num_small):
        canvas.place(SMALL_SIZES, None)
    noise = rng.standard_normal(canvas.image.shape, dtype=np.float32) * SENSOR_NOISE_SIGMA
    image = np.clip(canvas.image.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
    return LargeScene(image, canvas.annotations, canvas.masks, straddling)


def write_large_scene(folder: str | Path, scene: LargeScene, name: str = "large.jpg") -> Path:
    """The scene as ``folder/images/name`` and its ground truth as ``folder/large.json``
    (COCO, the sample dataset's categories); returns the JSON's path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(folder / "images" / name), scene.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    height, width = scene.image.shape[:2]
    coco = {
        "images": [{"id": 1, "file_name": name, "height": height, "width": width}],
        "annotations": [
            {"id": k + 1, "image_id": 1, **body} for k, body in enumerate(scene.annotations)
        ],
        "categories": [
            {"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASS_NAMES)
        ],
    }
    path = folder / "large.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path
