"""YOLO segmentation labels to COCO: ``images/`` beside ``labels/`` (same relative paths, ``.txt``),
one instance per line, ``class x0 y0 x1 y1 ...`` normalised to the image size; a 5-value line
(``class cx cy w h``) is a box. Class names come from ``data.yaml`` (``names`` as a list or an
index map) or ``classes.txt``; an image without a label file has no instances."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from instseg.data.coco_builder import (
    CocoBuilder,
    Dropped,
    ShapeError,
    fit_polygon,
    rectangle_polygon,
)
from instseg.errors import ConfigError
from instseg.io.images import ImageReadError, loaded_size

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def yolo_class_names(src: str | os.PathLike) -> list[str]:
    src = Path(src)
    data_yaml = next((p for p in (src / "data.yaml", src / "dataset.yaml") if p.is_file()), None)
    if data_yaml is not None:
        try:
            names = (yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as e:
            raise ConfigError(f"{data_yaml}: not a YOLO data.yaml ({e})") from None
        if isinstance(names, dict):
            try:
                return [str(names[i]) for i in range(len(names))]
            except KeyError:
                raise ConfigError(
                    f"{data_yaml}: 'names' keys are not 0..{len(names) - 1}"
                ) from None
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        raise ConfigError(f"{data_yaml}: no 'names' list")
    classes = src / "classes.txt"
    if classes.is_file():
        return [
            line.strip()
            for line in classes.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    raise ConfigError(f"{src}: no data.yaml or classes.txt naming the classes")


def convert_yolo(src: str | os.PathLike, builder: CocoBuilder, names: list[str]) -> Path:
    """Every image under ``src/images`` into ``builder``; returns the image root."""
    src = Path(src)
    root = src / "images"
    if not root.is_dir() or not (src / "labels").is_dir():
        raise ConfigError(f"{src}: a YOLO dataset needs images/ and labels/ folders")
    for image_path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        rel = image_path.relative_to(root)
        try:
            width, height = loaded_size(image_path)
        except ImageReadError as e:
            builder.dropped.append(Dropped(str(image_path), "image", str(e)))
            continue
        image_id = builder.add_image(rel.as_posix(), width, height)
        label_path = (src / "labels" / rel).with_suffix(".txt")
        if not label_path.is_file():
            continue
        for number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                category, polygon = _line_polygon(line, names, width, height)
                category_id = builder.category_id(names[category])
                builder.add_instance(image_id, category_id, [polygon])
            except ShapeError as e:
                builder.dropped.append(Dropped(str(label_path), f"line {number}", str(e)))
    return root


def _line_polygon(line: str, names: list[str], width: int, height: int) -> tuple[int, list[float]]:
    fields = line.split()
    try:
        category = int(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ShapeError(f"not numbers: {line[:60]!r}") from None
    if not 0 <= category < len(names):
        raise ShapeError(f"class id {category} is not among the {len(names)} named classes")
    if len(values) == 4:
        cx, cy, w, h = values
        points = rectangle_polygon(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    elif len(values) % 2:
        raise ShapeError("an odd number of coordinates")
    else:
        points = [values[i : i + 2] for i in range(0, len(values), 2)]
    return category, fit_polygon([[x * width, y * height] for x, y in points], width, height)
