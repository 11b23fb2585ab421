"""Validation of COCO-format instance segmentation datasets.

Broken annotations otherwise surface as obscure crashes deep inside training, or as
instances silently dropped by the loader. Checking up front turns every problem into one
line naming the file, the entry and what is wrong (a JSON path, an annotation id or an
image file), so a whole dataset can be fixed in one pass.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import Any

from instseg.data.annotation_checks import (
    MAX_IMAGE_SIDE,
    AnnotationChecks,
    ImageRecord,
    describe_value,
    entry_label,
    is_int,
    is_number,
)
from instseg.data.image_checks import ImageFileChecks
from instseg.io.images import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)


ERROR = "error"
WARNING = "warning"

REQUIRED_TOP_LEVEL_KEYS = ("images", "annotations", "categories")
REQUIRED_IMAGE_FIELDS = ("id", "file_name", "width", "height")
REQUIRED_ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox")
REQUIRED_CATEGORY_FIELDS = ("id",)


_NUMBER_TYPES = frozenset({int, float})
_TOP_LEVEL = "<top level>"


@dataclass(frozen=True)
class Problem:
    """One defect in a dataset, located precisely enough to fix without searching."""

    severity: str  # ERROR or WARNING
    file: str  # the JSON path, or the resolved image path for problems with image files
    where: str  # location in the JSON, e.g. "annotations[3] (id=17).segmentation[0]"
    message: str

    def __post_init__(self) -> None:
        if self.severity not in (ERROR, WARNING):
            raise ValueError(f"severity must be {ERROR!r} or {WARNING!r}, got {self.severity!r}")

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == WARNING else ""
        return f"{self.file}: {self.where}: {prefix}{self.message}"


def has_errors(problems: Iterable[Problem]) -> bool:
    """Whether any problem is severe enough to make the dataset unusable as is."""
    return any(problem.severity == ERROR for problem in problems)


def validate_coco_dataset(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    check_images: bool = True,
    *,
    verify_images: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Problem]:
    """Check a COCO instance-segmentation dataset and return every problem found.

    Bad data never raises; it is reported. ``check_images`` additionally opens every image
    file's header (it exists, stays inside the root, has the JSON's size and at most
    ``max_pixels`` pixels) and, with ``verify_images``, a cheap integrity check of its data
    (no full decode), to catch images that would stop a training run midway.
    """
    checker = _DatasetChecker(os.fspath(json_path))
    checker.max_pixels, checker.verify_images = max_pixels, verify_images
    dataset = checker.parse()
    if dataset is not None:
        sections = checker.check_top_level(dataset)
        checker.check_categories(sections.get("categories"))
        checker.check_images(sections.get("images"))
        checker.check_annotations(sections.get("annotations"))
        checker.warn_unannotated_images()
        checker.warn_unused_categories()
        if check_images and "images" in sections:
            checker.check_image_files(os.fspath(image_root))
    problems = checker.problems
    errors = sum(problem.severity == ERROR for problem in problems)
    logger.debug(
        "Validated %s: %d error(s), %d warning(s)", json_path, errors, len(problems) - errors
    )
    return problems


class _DatasetChecker(AnnotationChecks, ImageFileChecks):
    """Accumulates problems while walking one dataset file section by section."""

    def __init__(self, json_file: str):
        self.json_file = json_file
        self.problems: list[Problem] = []
        self.image_records: list[ImageRecord] = []
        # None until the section is known to be usable; reference checks are skipped
        # otherwise, so one broken section does not flag every annotation.
        self.images_by_id: dict[int, ImageRecord] | None = None
        self.category_ids: set[int] | None = None
        self.category_labels: dict[int, tuple[str, object]] = {}  # id: (label, name)
        self.used_category_ids: set = set()
        self.annotated_image_ids: set[int] | None = None

    def error(self, where: str, message: str, file: str | None = None) -> None:
        self.problems.append(Problem(ERROR, file or self.json_file, where, message))

    def warning(self, where: str, message: str, file: str | None = None) -> None:
        self.problems.append(Problem(WARNING, file or self.json_file, where, message))

    def parse(self) -> Any:
        try:
            with open(self.json_file, encoding="utf-8") as json_file:
                text = json_file.read()
        except OSError as exc:
            self.error("<file>", f"cannot read file: {exc.strerror or exc}")
            return None
        except UnicodeDecodeError as exc:
            self.error("<file>", f"not UTF-8 text: byte {exc.start} cannot be decoded")
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            self.error(f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}")
            return None

    def check_top_level(self, dataset: Any) -> dict[str, list]:
        """Return the required sections that are arrays, keyed by name."""
        if not isinstance(dataset, dict):
            self.error(_TOP_LEVEL, f"must be a JSON object, got {describe_value(dataset)}")
            return {}
        sections = {}
        for key in REQUIRED_TOP_LEVEL_KEYS:
            if key not in dataset:
                self.error(_TOP_LEVEL, f"missing required key '{key}'")
            elif not isinstance(dataset[key], list):
                self.error(key, f"must be an array, got {describe_value(dataset[key])}")
            else:
                sections[key] = dataset[key]
        return sections

    def check_categories(self, categories: list | None) -> None:
        if categories is None:
            return
        self.category_ids = set()
        if not categories:
            self.error("categories", "contains no categories")
        first_index_by_id: dict[int, int] = {}
        label_by_name: dict[str, str] = {}
        for index, category in enumerate(categories):
            label = entry_label("categories", index, category)
            if not self._check_entry_fields(label, category, REQUIRED_CATEGORY_FIELDS):
                continue
            if "id" in category and self._check_id(label, category["id"]):
                category_id = category["id"]
                if category_id in first_index_by_id:
                    first = first_index_by_id[category_id]
                    self.error(
                        label,
                        f"duplicate category id {category_id} (first used by categories[{first}])",
                    )
                else:
                    first_index_by_id[category_id] = index
                    self.category_ids.add(category_id)
                    self.category_labels[category_id] = (label, category.get("name"))
            name = category.get("name")
            if name is None or (isinstance(name, str) and not name.strip()):
                self.error(label, "category has no name")
            elif not isinstance(name, str):
                self.error(f"{label}.name", f"must be a string, got {describe_value(name)}")
            elif name in label_by_name:
                self.warning(
                    label, f"duplicate category name '{name}' (also used by {label_by_name[name]})"
                )
            else:
                label_by_name[name] = label

    def check_images(self, images: list | None) -> None:
        if images is None:
            return
        self.images_by_id = {}
        if not images:
            self.error("images", "contains no images")
        label_by_file_name: dict[str, str] = {}
        for index, image in enumerate(images):
            label = entry_label("images", index, image)
            if not self._check_entry_fields(label, image, REQUIRED_IMAGE_FIELDS):
                continue
            id_ok = "id" in image and self._check_id(label, image["id"])
            width = self._positive_int_field(label, image, "width")
            height = self._positive_int_field(label, image, "height")
            file_name = self._check_file_name(label, image)
            if file_name is not None:
                normalized = os.path.normpath(file_name)
                if normalized in label_by_file_name:
                    self.warning(
                        f"{label}.file_name",
                        f"file '{file_name}' is also used by {label_by_file_name[normalized]}",
                    )
                else:
                    label_by_file_name[normalized] = label
            record = ImageRecord(index, label, file_name, width, height)
            self.image_records.append(record)
            if not id_ok:
                continue
            first = self.images_by_id.get(image["id"])
            if first is not None:
                self.error(
                    label, f"duplicate image id {image['id']} (first used by images[{first.index}])"
                )
            else:
                self.images_by_id[image["id"]] = record

    def check_annotations(self, annotations: list | None) -> None:
        if annotations is None:
            return
        self.annotated_image_ids = set()
        first_index_by_id: dict[int, int] = {}
        for index, annotation in enumerate(annotations):
            label = entry_label("annotations", index, annotation)
            if not self._check_entry_fields(label, annotation, REQUIRED_ANNOTATION_FIELDS):
                continue
            if "id" in annotation and self._check_id(label, annotation["id"]):
                annotation_id = annotation["id"]
                if annotation_id in first_index_by_id:
                    first = first_index_by_id[annotation_id]
                    self.error(
                        label,
                        f"duplicate annotation id {annotation_id} (first used by annotations[{first}])",
                    )
                else:
                    first_index_by_id[annotation_id] = index
            image = self._check_image_reference(label, annotation)
            self._check_category_reference(label, annotation)
            self.used_category_ids.add(annotation.get("category_id"))
            if annotation.get("iscrowd") == 1 and isinstance(annotation.get("segmentation"), list):
                self.warning(
                    f"{label}.segmentation",
                    "crowd region given as polygons (COCO writes crowd regions as RLE); "
                    "Detectron2 leaves crowd regions out of training",
                )
            if "bbox" in annotation:
                self._check_bbox(f"{label}.bbox", annotation["bbox"], image)
            if "segmentation" in annotation:
                self._check_segmentation(f"{label}.segmentation", annotation["segmentation"], image)
            else:
                self.warning(label, "no segmentation; the instance has no mask")
            if "area" in annotation:
                area = annotation["area"]
                if not (is_number(area) and area >= 0):
                    self.error(
                        f"{label}.area",
                        f"must be a non-negative number, got {describe_value(area)}",
                    )
            if "iscrowd" in annotation and not (
                is_int(annotation["iscrowd"]) and annotation["iscrowd"] in (0, 1)
            ):
                self.error(
                    f"{label}.iscrowd",
                    f"must be 0 or 1, got {describe_value(annotation['iscrowd'])}",
                )

    def warn_unannotated_images(self) -> None:
        if self.images_by_id is None or self.annotated_image_ids is None:
            return
        for image_id, record in self.images_by_id.items():
            if image_id not in self.annotated_image_ids:
                self.warning(record.label, "image has no annotations")

    def warn_unused_categories(self) -> None:
        if self.annotated_image_ids is None:  # the annotations could not be read
            return
        for category_id, (label, name) in self.category_labels.items():
            if category_id in self.used_category_ids:
                continue
            hint = ""
            if str(name).strip("_ ").lower() == "background":
                hint = (
                    f"; labelling tools export {name!r} as a category: remove it, Mask R-CNN "
                    "has its own background class"
                )
            self.warning(
                label,
                f"category {name!r} has no annotations: the model would learn a class without "
                f"examples{hint}",
            )

    def check_image_files(self, image_root: str) -> None:
        if not os.path.isdir(image_root):
            self.error("<image root>", "image root directory not found", file=image_root)
            return
        root = os.path.realpath(image_root)
        for record in self.image_records:
            if record.file_name is None:
                continue
            path = os.path.join(image_root, record.file_name)
            if os.path.commonpath([root, os.path.realpath(path)]) != root:
                self.error(
                    f"{record.label}.file_name",
                    f"{record.file_name!r} is a symbolic link leading outside the image root "
                    f"(to {os.path.realpath(path)}); training never reads outside it",
                    file=path,
                )
                continue
            self._check_image_file(path, record)

    # Entry-level helpers.

    def _check_entry_fields(self, label: str, entry: Any, required: tuple[str, ...]) -> bool:
        """Report a non-object entry or missing fields; False means skip the entry."""
        if not isinstance(entry, dict):
            self.error(label, f"must be an object, got {describe_value(entry)}")
            return False
        for field in required:
            if field not in entry:
                self.error(label, f"missing required field '{field}'")
        return True

    def _check_id(self, label: str, value: Any, field: str = "id") -> bool:
        if is_int(value):
            return True
        self.error(f"{label}.{field}", f"must be an integer, got {describe_value(value)}")
        return False

    def _positive_int_field(self, label: str, entry: dict, field: str) -> int | None:
        if field not in entry:
            return None
        value = entry[field]
        if is_int(value) and 0 < value <= MAX_IMAGE_SIDE:
            return value
        self.error(
            f"{label}.{field}",
            f"must be a positive integer up to {MAX_IMAGE_SIDE}, got {describe_value(value)}",
        )
        return None

    def _check_file_name(self, label: str, image: dict) -> str | None:
        """Return the file name if it is safe to join onto the image root."""
        if "file_name" not in image:
            return None
        file_name = image["file_name"]
        where = f"{label}.file_name"
        if not isinstance(file_name, str) or not file_name:
            self.error(where, f"must be a non-empty string, got {describe_value(file_name)}")
            return None
        if os.path.isabs(file_name) or PureWindowsPath(file_name).drive:
            self.error(
                where, f"absolute path '{file_name}'; file_name must be relative to the image root"
            )
            return None
        normalized = os.path.normpath(file_name)
        if normalized == os.pardir or normalized.startswith(os.pardir + os.sep):
            self.error(where, f"path '{file_name}' escapes the image root")
            return None
        return file_name

    def _check_image_reference(self, label: str, annotation: dict) -> ImageRecord | None:
        if "image_id" not in annotation:
            return None
        image_id = annotation["image_id"]
        if not self._check_id(label, image_id, "image_id"):
            return None
        if self.annotated_image_ids is not None:
            self.annotated_image_ids.add(image_id)
        if self.images_by_id is None:
            return None
        image = self.images_by_id.get(image_id)
        if image is None:
            self.error(f"{label}.image_id", f"refers to unknown image id {image_id}")
        return image

    def _check_category_reference(self, label: str, annotation: dict) -> None:
        if "category_id" not in annotation:
            return
        category_id = annotation["category_id"]
        if not self._check_id(label, category_id, "category_id"):
            return
        if self.category_ids is not None and category_id not in self.category_ids:
            self.error(f"{label}.category_id", f"refers to unknown category id {category_id}")

    # Geometry checks.
