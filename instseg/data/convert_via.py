"""VGG Image Annotator (VIA) JSON to COCO: 1.x and 2.x, project files and annotation exports.

VIA keeps images by ``filename`` with regions as a list (2.x) or a dict keyed "0", "1", ... (1.x);
each region has ``shape_attributes`` (polygon, rect, circle, ellipse; polylines and points have no
area) and ``region_attributes``, one of which names the class. VIA stores no image size, so each
image's header is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from instseg.data.coco_builder import (
    CocoBuilder,
    Dropped,
    ShapeError,
    ellipse_polygon,
    fit_polygon,
    rectangle_polygon,
)
from instseg.errors import ConfigError
from instseg.io.images import ImageReadError, loaded_size


def convert_via(
    src: str | os.PathLike,
    images: str | os.PathLike,
    builder: CocoBuilder,
    class_attribute: str | None = None,
) -> None:
    src = Path(src)
    entries = _via_entries(src)
    attribute = _class_attribute(src, entries, class_attribute)
    root = Path(images)
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            builder.dropped.append(Dropped(str(src), f"entry {key!r}", "no 'filename'"))
            continue
        name = str(entry["filename"])
        image_path = root / name
        if not image_path.is_file():
            builder.dropped.append(Dropped(str(src), f"image {name!r}", f"not found in {root}"))
            continue
        try:
            width, height = loaded_size(image_path)
        except ImageReadError as e:
            builder.dropped.append(Dropped(str(src), f"image {name!r}", str(e)))
            continue
        image_id = builder.add_image(Path(name).as_posix(), width, height)
        for index, region in enumerate(_regions(entry)):
            where = f"image {name!r} region {index}"
            try:
                label = _region_class(region, attribute)
                category_id = builder.category_id(label)
                polygon = _region_polygon(region.get("shape_attributes") or {}, width, height)
                builder.add_instance(image_id, category_id, [polygon])
            except ShapeError as e:
                builder.dropped.append(Dropped(str(src), where, str(e)))


def _via_entries(src: Path) -> dict:
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{src}: not a readable JSON file ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]  # a 2.x project file
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and "regions" in v for v in data.values()
    ):
        raise ConfigError(f"{src}: not a VIA JSON (entries with 'filename' and 'regions')")
    return data


def _regions(entry: dict) -> list:
    regions = entry.get("regions") or []
    return list(regions.values()) if isinstance(regions, dict) else list(regions)


def _class_attribute(src: Path, entries: dict, chosen: str | None) -> str:
    present = sorted(
        {
            name
            for entry in entries.values()
            for region in _regions(entry)
            if isinstance(region, dict)
            for name in (region.get("region_attributes") or {})
        }
    )
    if chosen is None and len(present) == 1:
        return present[0]
    if chosen is None or chosen not in present:
        listed = ", ".join(present) or "none"
        what = "give --class-attribute" if chosen is None else f"no region attribute {chosen!r}"
        raise ConfigError(f"{src}: {what}; region attributes present: {listed}")
    return chosen


def _region_class(region: dict, attribute: str) -> str:
    value = (region.get("region_attributes") or {}).get(attribute)
    if isinstance(value, dict):  # a checkbox attribute: {option: true, ...}
        chosen = [k for k, v in value.items() if v]
        value = chosen[0] if len(chosen) == 1 else None
    if not isinstance(value, str) or not value.strip():
        raise ShapeError(f"no class in region attribute {attribute!r}")
    return value.strip()


def _region_polygon(shape: dict, width: int, height: int) -> list[float]:
    kind = shape.get("name")
    try:
        if kind == "polygon":
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            if len(xs) != len(ys):
                raise ShapeError("all_points_x and all_points_y differ in length")
            return fit_polygon(list(zip(xs, ys, strict=True)), width, height)
        if kind == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return fit_polygon(rectangle_polygon(x, y, x + w, y + h), width, height)
        if kind in ("circle", "ellipse"):
            cx, cy = float(shape["cx"]), float(shape["cy"])
            rx = float(shape["r"] if kind == "circle" else shape["rx"])
            ry = float(shape["r"] if kind == "circle" else shape["ry"])
            theta = float(shape.get("theta", 0.0))
            return fit_polygon(ellipse_polygon(cx, cy, rx, ry, theta), width, height)
    except ShapeError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ShapeError(f"{kind} without a usable {e}") from None
    raise ShapeError(f"shape {kind!r} has no area")
