"""Summary statistics of a COCO dataset: images, instances per class, COCO size buckets."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import pycocotools.mask as mask_utils
from tabulate import tabulate

from instseg.data.annotation_checks import (
    MAX_IMAGE_SIDE,
    decode_compressed_counts,
    first_non_number,
    is_int,
    is_number,
)
from instseg.data.validate import REQUIRED_TOP_LEVEL_KEYS
from instseg.errors import ConfigError

logger = logging.getLogger(__name__)


# COCO's object size ranges, in pixels of mask area.
SMALL_AREA_LIMIT = 32**2
MEDIUM_AREA_LIMIT = 96**2


@dataclass(frozen=True)
class SizeCounts:
    """Object counts in COCO's small / medium / large area ranges."""

    small: int = 0
    medium: int = 0
    large: int = 0

    @property
    def total(self) -> int:
        return self.small + self.medium + self.large


@dataclass(frozen=True)
class ClassStats:
    """Instance counts of one category."""

    category_id: int
    name: str
    instances: int
    sizes: SizeCounts  # instances whose area could not be measured are left out


@dataclass(frozen=True)
class DatasetStats:
    """Summary numbers for judging a dataset's balance before training on it."""

    num_images: int
    num_annotations: int
    num_images_without_annotations: int
    classes: tuple[ClassStats, ...]  # in category-id order
    sizes: SizeCounts  # over all annotations

    @property
    def instances_per_class(self) -> dict[str, int]:
        """Instance count by category name, in category-id order."""
        return {category.name: category.instances for category in self.classes}


def load_dataset_stats(json_path: str | os.PathLike) -> DatasetStats:
    """Count images, instances per class and object sizes of a COCO dataset.

    Meant for datasets that pass validation; entries it cannot interpret are skipped.
    Raises ConfigError (one line naming the file) when the file is not a COCO dataset at all.
    """
    dataset = _load_coco_dict(json_path)
    images_by_id = {
        image["id"]: image
        for image in dataset["images"]
        if isinstance(image, dict) and is_int(image.get("id"))
    }
    names_by_category_id: dict[int, str] = {}
    for category in dataset["categories"]:
        if isinstance(category, dict) and is_int(category.get("id")):
            name = category.get("name")
            if not isinstance(name, str) or not name.strip():
                name = f"<unnamed {category['id']}>"
            names_by_category_id.setdefault(category["id"], name)
    counts = _AnnotationCounts(names_by_category_id)
    for annotation in dataset["annotations"]:
        if isinstance(annotation, dict):
            counts.add(annotation, images_by_id)
    classes = tuple(
        ClassStats(
            category_id=category_id,
            name=names_by_category_id[category_id],
            instances=counts.instances[category_id],
            sizes=SizeCounts(*counts.sizes[category_id]),
        )
        for category_id in sorted(names_by_category_id)
    )
    return DatasetStats(
        num_images=len(dataset["images"]),
        num_annotations=len(dataset["annotations"]),
        num_images_without_annotations=sum(
            image_id not in counts.image_ids for image_id in images_by_id
        ),
        classes=classes,
        sizes=SizeCounts(*counts.overall),
    )


def _load_coco_dict(json_path: str | os.PathLike) -> dict:
    """The dataset JSON, checked to have the COCO arrays; one ConfigError line otherwise."""
    try:
        with open(json_path, encoding="utf-8") as json_file:
            dataset = json.load(json_file)
    except FileNotFoundError:
        raise ConfigError(f"{os.fspath(json_path)}: dataset JSON not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{os.fspath(json_path)}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{os.fspath(json_path)}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}"
        ) from None
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in REQUIRED_TOP_LEVEL_KEYS
    ):
        raise ConfigError(
            f"{os.fspath(json_path)}: not a COCO dataset (needs 'images', 'annotations' and "
            "'categories' arrays); validate it for details"
        )
    return dataset


class _AnnotationCounts:
    """Instances and size buckets per category, overall sizes, and the annotated image ids."""

    def __init__(self, names_by_category_id: dict[int, str]) -> None:
        self.instances = dict.fromkeys(names_by_category_id, 0)
        self.sizes = {category_id: [0, 0, 0] for category_id in names_by_category_id}
        self.overall = [0, 0, 0]
        self.image_ids: set = set()

    def add(self, annotation: dict, images_by_id: dict) -> None:
        image_id = annotation.get("image_id")
        if is_int(image_id):
            self.image_ids.add(image_id)
        category_id = annotation.get("category_id")
        if is_int(category_id) and category_id in self.instances:
            self.instances[category_id] += 1
        area = _annotation_area(
            annotation, images_by_id.get(image_id) if is_int(image_id) else None
        )
        if area is None:
            return
        bucket = _size_bucket(area)
        self.overall[bucket] += 1
        if is_int(category_id) and category_id in self.sizes:
            self.sizes[category_id][bucket] += 1


def format_dataset_stats(stats: DatasetStats) -> str:
    """Render stats as an aligned table for logs and the command line."""
    total = stats.num_annotations

    def share(count: int) -> str:
        return f"{100.0 * count / total:.1f}%" if total else "-"

    rows = [
        [
            category.category_id,
            category.name,
            category.instances,
            share(category.instances),
            category.sizes.small,
            category.sizes.medium,
            category.sizes.large,
        ]
        for category in stats.classes
    ]
    rows.append(
        ["", "total", total, share(total), stats.sizes.small, stats.sizes.medium, stats.sizes.large]
    )
    table = tabulate(
        rows,
        headers=["id", "category", "instances", "share", "small", "medium", "large"],
        tablefmt="simple",
        colalign=("right", "left", "right", "right", "right", "right", "right"),
    )
    summary = (
        f"images: {stats.num_images} ({stats.num_images_without_annotations} without annotations)\n"
        f"annotations: {stats.num_annotations}\n"
        f"object sizes: small < {SMALL_AREA_LIMIT} px, medium < {MEDIUM_AREA_LIMIT} px, "
        "large otherwise"
    )
    return f"{summary}\n\n{table}"


def _annotation_area(annotation: dict, image: dict | None) -> float | None:
    """Object area as COCO evaluation sees it: the stored area, else the mask, else the box."""
    area = annotation.get("area")
    if is_number(area) and area >= 0:
        return float(area)
    mask_area = _mask_area(annotation.get("segmentation"), image)
    if mask_area is not None:
        return mask_area
    bbox = annotation.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and first_non_number(bbox) is None:
        return float(max(bbox[2], 0) * max(bbox[3], 0))
    return None


def _mask_area(segmentation: Any, image: dict | None) -> float | None:
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(is_int(v) and 0 < v <= MAX_IMAGE_SIDE for v in size)
        ):
            return None
        if isinstance(counts, str):
            try:  # the C decoder reads past the end of some damaged strings
                decode_compressed_counts(counts)
            except ValueError:
                return None
            return float(mask_utils.area(segmentation))
        if isinstance(counts, list) and all(is_int(run) and 0 <= run < 2**32 for run in counts):
            return float(mask_utils.area(mask_utils.frPyObjects(segmentation, *size)))
        return None
    if not isinstance(segmentation, list) or image is None:
        return None
    height, width = image.get("height"), image.get("width")
    if not all(is_int(side) and 0 < side <= MAX_IMAGE_SIDE for side in (height, width)):
        return None
    # Rasterizing cost grows with coordinate magnitude, so wild coordinates fall back to the box.
    coordinate_limit = 4 * max(height, width)

    def usable(polygon: Any) -> bool:
        return (
            isinstance(polygon, list)
            and len(polygon) >= 6
            and len(polygon) % 2 == 0
            and first_non_number(polygon) is None
            and max(map(abs, polygon)) <= coordinate_limit
        )

    # A partial mask would understate the area; the box is the better fallback.
    if not segmentation or not all(map(usable, segmentation)):
        return None
    rles = mask_utils.frPyObjects(segmentation, height, width)
    return float(mask_utils.area(mask_utils.merge(rles)))


def _size_bucket(area: float) -> int:
    """Index into (small, medium, large) for an area, by COCO's thresholds."""
    if area < SMALL_AREA_LIMIT:
        return 0
    if area < MEDIUM_AREA_LIMIT:
        return 1
    return 2
