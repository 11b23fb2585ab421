"""Converting labelme, VIA and YOLO annotations to one COCO instances JSON.

Each reader turns its format's shapes into polygons or masks; :class:`CocoBuilder` makes the
COCO entries, and whatever a reader cannot use is kept as a :class:`Dropped` line (file, entry,
reason) instead of stopping the conversion.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from instseg.data.coco_builder import CocoBuilder, Dropped
from instseg.errors import ConfigError

FORMATS = ("labelme", "via", "yolo")


@dataclass
class Conversion:
    coco: dict
    image_root: Path
    dropped: list[Dropped]


def convert_dataset(
    fmt: str,
    src: str | os.PathLike,
    images: str | os.PathLike | None = None,
    classes: list[str] | None = None,
    class_attribute: str | None = None,
) -> Conversion:
    """``src`` in format ``fmt`` as a COCO dict; ``images`` is the root its ``file_name`` values
    are relative to (default: the labelme folder, the VIA file's folder, YOLO's ``images/``)."""
    src = Path(src)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not src.exists():
        raise ConfigError(f"{src}: not found")
    if fmt == "labelme":
        from instseg.data.convert_labelme import convert_labelme

        if not src.is_dir():
            raise ConfigError(f"{src}: labelme input is a folder of JSON files")
        root = Path(images) if images else src
        builder = CocoBuilder(classes)
        convert_labelme(src, root, builder)
    elif fmt == "via":
        from instseg.data.convert_via import convert_via

        if not src.is_file():
            raise ConfigError(f"{src}: VIA input is a project or annotation JSON file")
        root = Path(images) if images else src.parent
        builder = CocoBuilder(classes)
        convert_via(src, root, builder, class_attribute)
    else:
        from instseg.data.convert_yolo import convert_yolo, yolo_class_names

        if images:
            raise ConfigError("--images does not apply to YOLO: images are under SRC/images")
        names = yolo_class_names(src)
        builder = CocoBuilder(classes or names)
        root = convert_yolo(src, builder, names)
    coco = builder.coco()
    if not coco["images"]:
        reasons = "; ".join(str(d) for d in builder.dropped[:3])
        raise ConfigError(f"{src}: no images converted" + (f" ({reasons})" if reasons else ""))
    return Conversion(coco, root, builder.dropped)
