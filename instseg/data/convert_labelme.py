"""labelme JSON (one file per image) to COCO.

Shapes as labelme defines them: ``polygon``; ``rectangle`` (two corners); ``circle`` (centre and
a point on the circle; a polygon of the true circle, where labelme's own drawing adds half a
pixel to the radius); ``mask`` (two corners and a base64 PNG of the
box). Shapes with the same label and ``group_id`` are one instance with several parts, as in
labelme's own COCO export; lines and points have no area and are dropped.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from instseg.data.coco_builder import (
    CocoBuilder,
    Dropped,
    ShapeError,
    ellipse_polygon,
    fit_polygon,
    rectangle_polygon,
)
from instseg.io.images import ImageReadError, loaded_size


def convert_labelme(
    src: str | os.PathLike, images: str | os.PathLike, builder: CocoBuilder
) -> None:
    """Every ``*.json`` under ``src`` (sorted, recursively) into ``builder``; ``file_name`` is
    relative to ``images``."""
    root = Path(images).resolve()
    for path in sorted(Path(src).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            builder.dropped.append(Dropped(str(path), "file", f"not readable JSON ({e})"))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            builder.dropped.append(Dropped(str(path), "file", "not a labelme file (no 'shapes')"))
            continue
        _convert_file(path, data, root, builder)


def _convert_file(path: Path, data: dict, root: Path, builder: CocoBuilder) -> None:
    image_path = (path.parent / str(data.get("imagePath") or "")).resolve()
    where = f"imagePath {data.get('imagePath')!r}"
    if not data.get("imagePath") or not image_path.is_file():
        builder.dropped.append(Dropped(str(path), where, "image not found"))
        return
    if not image_path.is_relative_to(root):
        builder.dropped.append(Dropped(str(path), where, f"image outside the image root {root}"))
        return
    try:
        size = loaded_size(image_path)
    except ImageReadError as e:
        builder.dropped.append(Dropped(str(path), where, str(e)))
        return
    declared = (data.get("imageWidth"), data.get("imageHeight"))
    if None not in declared and tuple(declared) != size:
        reason = f"the JSON says {declared[0]}x{declared[1]}, the image is {size[0]}x{size[1]}"
        builder.dropped.append(Dropped(str(path), where, reason))
        return
    width, height = size
    image_id = builder.add_image(image_path.relative_to(root).as_posix(), width, height)
    instances: dict[tuple, dict] = {}
    for index, shape in enumerate(data["shapes"]):
        label = str(shape.get("label", "")) if isinstance(shape, dict) else ""
        entry = f"shape {index} ({label or '?'})"
        try:
            if not label:
                raise ShapeError("shape without a label")
            category_id = builder.category_id(label)
            polygon, mask = _shape_geometry(shape, width, height)
        except ShapeError as e:
            builder.dropped.append(Dropped(str(path), entry, str(e)))
            continue
        group = shape.get("group_id")
        key = (label, group) if group is not None else (label, "shape", index)
        instance = instances.setdefault(
            key, {"category_id": category_id, "polygons": [], "mask": None}
        )
        if polygon is not None:
            instance["polygons"].append(polygon)
        if mask is not None:
            instance["mask"] = mask if instance["mask"] is None else instance["mask"] | mask
    for (label, *_), instance in instances.items():
        try:
            builder.add_instance(
                image_id, instance["category_id"], instance["polygons"] or None, instance["mask"]
            )
        except ShapeError as e:
            builder.dropped.append(Dropped(str(path), f"instance {label!r}", str(e)))


def _shape_geometry(shape: dict, width: int, height: int):
    """(flat polygon, None) or (None, full-image mask) for one labelme shape."""
    kind = shape.get("shape_type") or "polygon"
    points = shape.get("points") or []
    if kind == "polygon":
        return fit_polygon(points, width, height), None
    if kind in ("rectangle", "circle", "mask") and len(points) != 2:
        raise ShapeError(f"{kind} with {len(points)} point(s); labelme writes 2")
    if kind == "rectangle":
        (x0, y0), (x1, y1) = points
        return fit_polygon(rectangle_polygon(x0, y0, x1, y1), width, height), None
    if kind == "circle":
        (cx, cy), (px, py) = points
        radius = math.hypot(cx - px, cy - py)
        return fit_polygon(ellipse_polygon(cx, cy, radius, radius), width, height), None
    if kind == "mask":
        return None, _mask_shape(shape, points, width, height)
    raise ShapeError(f"shape_type {kind!r} has no area")


def _mask_shape(shape: dict, points, width: int, height: int) -> np.ndarray:
    (x0, y0), (x1, y1) = np.asarray(points, dtype=float).astype(int)
    try:
        crop = np.asarray(Image.open(io.BytesIO(base64.b64decode(shape.get("mask") or ""))))
    except (ValueError, OSError):
        raise ShapeError("mask is not a base64 PNG") from None
    if crop.ndim == 3:
        crop = crop[..., 0]
    if crop.shape != (y1 - y0 + 1, x1 - x0 + 1):
        raise ShapeError(
            f"mask of {crop.shape[1]}x{crop.shape[0]} for a box of {x1 - x0 + 1}x{y1 - y0 + 1}"
        )
    if x0 < 0 or y0 < 0 or x1 >= width or y1 >= height:
        raise ShapeError(f"mask outside the {width}x{height} image")
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = crop > 0
    return mask
