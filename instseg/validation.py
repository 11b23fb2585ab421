"""Validation and summary statistics for COCO-format instance segmentation datasets.

Broken annotations otherwise surface as obscure crashes deep inside training, or as
instances silently dropped by the loader. Checking up front turns every problem into one
``FILE: WHERE: PROBLEM`` line that points at the offending location in the JSON (or at the
image file), so a whole dataset can be fixed in one pass.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import Any

import pycocotools.mask as mask_utils
from PIL import Image, UnidentifiedImageError
from tabulate import tabulate

logger = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"

REQUIRED_TOP_LEVEL_KEYS = ("images", "annotations", "categories")
REQUIRED_IMAGE_FIELDS = ("id", "file_name", "width", "height")
REQUIRED_ANNOTATION_FIELDS = ("id", "image_id", "category_id", "bbox")
REQUIRED_CATEGORY_FIELDS = ("id",)

# Boxes a pixel past the border come from rounding in common annotation tools; anything
# further out is a coordinate bug.
BOX_TOLERANCE_PX = 1.0

# Mask code stores sides as 32-bit integers; anything larger is a corrupt value.
MAX_IMAGE_SIDE = 2**31 - 1

# COCO's object size ranges, in pixels of mask area.
SMALL_AREA_LIMIT = 32**2
MEDIUM_AREA_LIMIT = 96**2

_EXIF_ORIENTATION_TAG = 0x0112
# Orientations that rotate by 90 degrees, so the loader's EXIF transpose swaps width/height.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_JPEG_END_MARKER = b"\xff\xd9"
# Entropy-coded data cannot contain the end marker, so it must appear near the end of any
# complete file; a small tail window tolerates padding and short trailers.
_JPEG_TAIL_BYTES = 4096
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
    json_path: str | os.PathLike, image_root: str | os.PathLike, check_images: bool = True
) -> list[Problem]:
    """Check a COCO instance-segmentation dataset and return every problem found.

    Bad data never raises; it is reported. ``check_images`` additionally opens every image
    file (header and a cheap integrity check, no full decode) to catch missing, corrupt or
    mis-sized images before they stop a training run midway.
    """
    checker = _DatasetChecker(os.fspath(json_path))
    dataset = checker.parse()
    if dataset is not None:
        sections = checker.check_top_level(dataset)
        checker.check_categories(sections.get("categories"))
        checker.check_images(sections.get("images"))
        checker.check_annotations(sections.get("annotations"))
        checker.warn_unannotated_images()
        if check_images and "images" in sections:
            checker.check_image_files(os.fspath(image_root))
    problems = checker.problems
    errors = sum(problem.severity == ERROR for problem in problems)
    logger.debug(
        "Validated %s: %d error(s), %d warning(s)", json_path, errors, len(problems) - errors
    )
    return problems


@dataclass(frozen=True)
class _ImageRecord:
    """What later checks need to know about one entry of ``images``."""

    index: int
    label: str
    file_name: str | None  # None when missing or unsafe, so the file is never opened
    width: int | None
    height: int | None

    @property
    def has_size(self) -> bool:
        return self.width is not None and self.height is not None


class _DatasetChecker:
    """Accumulates problems while walking one dataset file section by section."""

    def __init__(self, json_file: str):
        self.json_file = json_file
        self.problems: list[Problem] = []
        self.image_records: list[_ImageRecord] = []
        # None until the section is known to be usable; reference checks are skipped
        # otherwise, so one broken section does not flag every annotation.
        self.images_by_id: dict[int, _ImageRecord] | None = None
        self.category_ids: set[int] | None = None
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
            self.error(_TOP_LEVEL, f"must be a JSON object, got {_describe(dataset)}")
            return {}
        sections = {}
        for key in REQUIRED_TOP_LEVEL_KEYS:
            if key not in dataset:
                self.error(_TOP_LEVEL, f"missing required key '{key}'")
            elif not isinstance(dataset[key], list):
                self.error(key, f"must be an array, got {_describe(dataset[key])}")
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
            label = _entry_label("categories", index, category)
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
            name = category.get("name")
            if name is None or (isinstance(name, str) and not name.strip()):
                self.error(label, "category has no name")
            elif not isinstance(name, str):
                self.error(f"{label}.name", f"must be a string, got {_describe(name)}")
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
            label = _entry_label("images", index, image)
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
            record = _ImageRecord(index, label, file_name, width, height)
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
            label = _entry_label("annotations", index, annotation)
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
            if "bbox" in annotation:
                self._check_bbox(f"{label}.bbox", annotation["bbox"], image)
            if "segmentation" in annotation:
                self._check_segmentation(f"{label}.segmentation", annotation["segmentation"], image)
            else:
                self.warning(label, "no segmentation; the instance has no mask")
            if "area" in annotation:
                area = annotation["area"]
                if not (_is_number(area) and area >= 0):
                    self.error(
                        f"{label}.area", f"must be a non-negative number, got {_describe(area)}"
                    )
            if "iscrowd" in annotation and not (
                _is_int(annotation["iscrowd"]) and annotation["iscrowd"] in (0, 1)
            ):
                self.error(
                    f"{label}.iscrowd", f"must be 0 or 1, got {_describe(annotation['iscrowd'])}"
                )

    def warn_unannotated_images(self) -> None:
        if self.images_by_id is None or self.annotated_image_ids is None:
            return
        for image_id, record in self.images_by_id.items():
            if image_id not in self.annotated_image_ids:
                self.warning(record.label, "image has no annotations")

    def check_image_files(self, image_root: str) -> None:
        if not os.path.isdir(image_root):
            self.error("<image root>", "image root directory not found", file=image_root)
            return
        for record in self.image_records:
            if record.file_name is not None:
                self._check_image_file(os.path.join(image_root, record.file_name), record)

    # Entry-level helpers.

    def _check_entry_fields(self, label: str, entry: Any, required: tuple[str, ...]) -> bool:
        """Report a non-object entry or missing fields; False means skip the entry."""
        if not isinstance(entry, dict):
            self.error(label, f"must be an object, got {_describe(entry)}")
            return False
        for field in required:
            if field not in entry:
                self.error(label, f"missing required field '{field}'")
        return True

    def _check_id(self, label: str, value: Any, field: str = "id") -> bool:
        if _is_int(value):
            return True
        self.error(f"{label}.{field}", f"must be an integer, got {_describe(value)}")
        return False

    def _positive_int_field(self, label: str, entry: dict, field: str) -> int | None:
        if field not in entry:
            return None
        value = entry[field]
        if _is_int(value) and 0 < value <= MAX_IMAGE_SIDE:
            return value
        self.error(
            f"{label}.{field}",
            f"must be a positive integer up to {MAX_IMAGE_SIDE}, got {_describe(value)}",
        )
        return None

    def _check_file_name(self, label: str, image: dict) -> str | None:
        """Return the file name if it is safe to join onto the image root."""
        if "file_name" not in image:
            return None
        file_name = image["file_name"]
        where = f"{label}.file_name"
        if not isinstance(file_name, str) or not file_name:
            self.error(where, f"must be a non-empty string, got {_describe(file_name)}")
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

    def _check_image_reference(self, label: str, annotation: dict) -> _ImageRecord | None:
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

    def _check_bbox(self, where: str, bbox: Any, image: _ImageRecord | None) -> None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and _first_non_number(bbox) is None):
            self.error(
                where,
                f"must be [x, y, width, height] with 4 finite numbers, got {_describe(bbox)}",
            )
            return
        x, y, width, height = bbox
        if width <= 0 or height <= 0:
            self.error(where, f"non-positive size: width {_fmt(width)}, height {_fmt(height)}")
            return
        if image is None or not image.has_size:
            return
        if (
            x < -BOX_TOLERANCE_PX
            or y < -BOX_TOLERANCE_PX
            or x + width > image.width + BOX_TOLERANCE_PX
            or y + height > image.height + BOX_TOLERANCE_PX
        ):
            box = ", ".join(_fmt(value) for value in bbox)
            self.error(where, f"box [{box}] extends outside the {image.width}x{image.height} image")

    def _check_segmentation(
        self, where: str, segmentation: Any, image: _ImageRecord | None
    ) -> None:
        if isinstance(segmentation, dict):
            self._check_rle(where, segmentation, image)
        elif isinstance(segmentation, list):
            if not segmentation:
                self.error(where, "contains no polygons")
            for index, polygon in enumerate(segmentation):
                self._check_polygon(f"{where}[{index}]", polygon, image)
        else:
            self.error(
                where, f"must be a list of polygons or an RLE object, got {_describe(segmentation)}"
            )

    def _check_polygon(self, where: str, polygon: Any, image: _ImageRecord | None) -> None:
        if not isinstance(polygon, list):
            self.error(where, f"must be an array of x, y coordinates, got {_describe(polygon)}")
            return
        bad_index = _first_non_number(polygon)
        if bad_index is not None:
            self.error(
                f"{where}[{bad_index}]",
                f"must be a finite number, got {_describe(polygon[bad_index])}",
            )
        num_coordinates = len(polygon)
        if num_coordinates % 2:
            self.error(where, f"polygon has an odd number of coordinates ({num_coordinates})")
        if num_coordinates // 2 < 3:
            self.error(where, f"polygon has {num_coordinates // 2} points; needs at least 3")
        if bad_index is None and num_coordinates % 2 == 0 and image is not None and image.has_size:
            self._check_polygon_inside(where, polygon, image)

    def _check_polygon_inside(self, where: str, polygon: list, image: _ImageRecord) -> None:
        """Warn about points off the image: masks get clipped, but it often means swapped x/y."""
        xs, ys = polygon[0::2], polygon[1::2]
        x_limit, y_limit = image.width + BOX_TOLERANCE_PX, image.height + BOX_TOLERANCE_PX
        if not xs or not ys:
            return
        if (
            min(xs) >= -BOX_TOLERANCE_PX
            and min(ys) >= -BOX_TOLERANCE_PX
            and max(xs) <= x_limit
            and max(ys) <= y_limit
        ):
            return
        x, y = next(
            (x, y)
            for x, y in zip(xs, ys, strict=True)
            if not (-BOX_TOLERANCE_PX <= x <= x_limit and -BOX_TOLERANCE_PX <= y <= y_limit)
        )
        self.warning(
            where,
            f"point ({_fmt(x)}, {_fmt(y)}) lies outside the {image.width}x{image.height} image",
        )

    def _check_rle(self, where: str, rle: dict, image: _ImageRecord | None) -> None:
        missing = [key for key in ("counts", "size") if key not in rle]
        for key in missing:
            self.error(where, f"RLE is missing '{key}'")
        if missing:
            return
        size = rle["size"]
        size_ok = (
            isinstance(size, list)
            and len(size) == 2
            and all(_is_int(v) and 0 < v <= MAX_IMAGE_SIDE for v in size)
        )
        if not size_ok:
            self.error(
                f"{where}.size",
                f"must be [height, width] with positive integers up to {MAX_IMAGE_SIDE}, "
                f"got {_describe(size)}",
            )
        elif image is not None and image.has_size and size != [image.height, image.width]:
            self.error(
                f"{where}.size",
                f"RLE size {size} differs from the image's [height, width] "
                f"[{image.height}, {image.width}]",
            )
        runs = self._rle_runs(f"{where}.counts", rle["counts"])
        if runs is not None and size_ok:
            covered, expected = sum(runs), size[0] * size[1]
            if covered != expected:
                self.error(
                    f"{where}.counts",
                    f"run lengths cover {covered} pixels but size {size} has {expected}",
                )

    def _rle_runs(self, where: str, counts: Any) -> list[int] | None:
        """Return the run lengths, or None after reporting why they are unusable."""
        if isinstance(counts, str):
            try:
                return _decode_compressed_counts(counts)
            except ValueError as exc:
                self.error(where, f"malformed compressed RLE: {exc}")
                return None
        if isinstance(counts, list):
            for index, run in enumerate(counts):
                if not (_is_int(run) and run >= 0):
                    self.error(
                        f"{where}[{index}]", f"must be a non-negative integer, got {_describe(run)}"
                    )
                    return None
            return counts
        self.error(
            where,
            f"must be a compressed string or an array of run lengths, got {_describe(counts)}",
        )
        return None

    # Image files.

    def _check_image_file(self, path: str, record: _ImageRecord) -> None:
        label = record.label
        try:
            with Image.open(path) as image:
                width, height = image.size
                image_format = image.format
                # Raw EXIF from the header; getexif() may decode pixels, which verify forbids.
                exif_bytes = image.info.get("exif")
                image.verify()
            orientation = _exif_orientation(exif_bytes)
        except FileNotFoundError:
            self.error(label, "image file not found", file=path)
            return
        except UnidentifiedImageError:
            self.error(label, "not a recognizable image file", file=path)
            return
        except OSError as exc:
            if exc.errno is None:  # raised by a decoder rather than the file system
                self.error(label, f"corrupt image file: {exc}", file=path)
            else:
                self.error(label, f"cannot open image file: {exc.strerror}", file=path)
            return
        except Exception as exc:  # decoders signal corrupt data with assorted exception types
            logger.debug("Reading %s failed", path, exc_info=True)
            self.error(label, f"corrupt image file: {type(exc).__name__}: {exc}", file=path)
            return
        if image_format == "JPEG" and not jpeg_has_end_marker(path):
            self.error(
                label, "JPEG data has no end-of-image marker; the file looks truncated", file=path
            )
        if not record.has_size:
            return
        rotation_note = ""
        # The training loader applies EXIF orientation, so the JSON must describe the
        # rotated image.
        if orientation in _TRANSPOSING_ORIENTATIONS:
            width, height = height, width
            rotation_note = " after EXIF rotation"
        if (width, height) != (record.width, record.height):
            self.error(
                label,
                f"image is {width}x{height} (width x height){rotation_note} on disk "
                f"but the JSON says {record.width}x{record.height}",
                file=path,
            )


def _decode_compressed_counts(counts: str) -> list[int]:
    """Decode COCO's compressed RLE string, rejecting input the C decoder would misread.

    The reference decoder does no validation, so a damaged string produces garbage masks
    or out-of-bounds writes instead of an error.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value = shift = 0
        more = True
        while more:
            if position >= len(counts):
                raise ValueError("string ends in the middle of a run length")
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                raise ValueError(f"invalid character {counts[position]!r} at offset {position}")
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"run {len(runs)} has negative length {value}")
        runs.append(value)
    return runs


def _exif_orientation(exif_bytes: bytes | None) -> int | None:
    if not exif_bytes:
        return None
    exif = Image.Exif()
    exif.load(exif_bytes)
    return exif.get(_EXIF_ORIENTATION_TAG)


def jpeg_has_end_marker(path: str) -> bool:
    with open(path, "rb") as jpeg_file:
        jpeg_file.seek(0, os.SEEK_END)
        jpeg_file.seek(max(0, jpeg_file.tell() - _JPEG_TAIL_BYTES))
        return _JPEG_END_MARKER in jpeg_file.read()


def _entry_label(section: str, index: int, entry: Any) -> str:
    """Name an array entry by position and, when it has a usable one, by id."""
    entry_id = entry.get("id") if isinstance(entry, dict) else None
    if _is_int(entry_id):
        return f"{section}[{index}] (id={entry_id})"
    return f"{section}[{index}]"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= sys.float_info.max  # JSON allows integers no float can hold
    return isinstance(value, float) and math.isfinite(value)


def _first_non_number(values: list) -> int | None:
    """Index of the first element that is not a finite number, or None."""
    # Fast path for the common all-numeric case: type scan and sum run at C speed.
    try:
        if set(map(type, values)) <= _NUMBER_TYPES and math.isfinite(sum(values)):
            return None
    except OverflowError:
        pass
    return next((index for index, value in enumerate(values) if not _is_number(value)), None)


def _fmt(number: float) -> str:
    if isinstance(number, int) or number.is_integer():
        return str(int(number))
    return f"{number:.3f}".rstrip("0").rstrip(".")


def _describe(value: Any, max_chars: int = 60) -> str:
    """Short JSON-flavoured description of a value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {json.dumps(value)}"
    if isinstance(value, dict):
        return "object"
    kind = "string" if isinstance(value, str) else "array"
    text = json.dumps(value)
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    return f"{kind} {text}"


# Statistics.


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
    Raises OSError or ValueError when the file is not a COCO dataset at all.
    """
    with open(json_path, encoding="utf-8") as json_file:
        dataset = json.load(json_file)
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in REQUIRED_TOP_LEVEL_KEYS
    ):
        raise ValueError(
            f"{os.fspath(json_path)}: not a COCO dataset (needs 'images', 'annotations' and "
            "'categories' arrays); validate it for details"
        )
    images_by_id = {
        image["id"]: image
        for image in dataset["images"]
        if isinstance(image, dict) and _is_int(image.get("id"))
    }
    names_by_category_id: dict[int, str] = {}
    for category in dataset["categories"]:
        if isinstance(category, dict) and _is_int(category.get("id")):
            name = category.get("name")
            if not isinstance(name, str) or not name.strip():
                name = f"<unnamed {category['id']}>"
            names_by_category_id.setdefault(category["id"], name)

    instances_by_category_id = dict.fromkeys(names_by_category_id, 0)
    sizes_by_category_id = {category_id: [0, 0, 0] for category_id in names_by_category_id}
    overall_sizes = [0, 0, 0]
    annotated_image_ids = set()
    for annotation in dataset["annotations"]:
        if not isinstance(annotation, dict):
            continue
        image_id = annotation.get("image_id")
        if _is_int(image_id):
            annotated_image_ids.add(image_id)
        category_id = annotation.get("category_id")
        if _is_int(category_id) and category_id in instances_by_category_id:
            instances_by_category_id[category_id] += 1
        area = _annotation_area(
            annotation, images_by_id.get(image_id) if _is_int(image_id) else None
        )
        if area is None:
            continue
        bucket = _size_bucket(area)
        overall_sizes[bucket] += 1
        if _is_int(category_id) and category_id in sizes_by_category_id:
            sizes_by_category_id[category_id][bucket] += 1

    classes = tuple(
        ClassStats(
            category_id=category_id,
            name=names_by_category_id[category_id],
            instances=instances_by_category_id[category_id],
            sizes=SizeCounts(*sizes_by_category_id[category_id]),
        )
        for category_id in sorted(names_by_category_id)
    )
    return DatasetStats(
        num_images=len(dataset["images"]),
        num_annotations=len(dataset["annotations"]),
        num_images_without_annotations=sum(
            image_id not in annotated_image_ids for image_id in images_by_id
        ),
        classes=classes,
        sizes=SizeCounts(*overall_sizes),
    )


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
    if _is_number(area) and area >= 0:
        return float(area)
    mask_area = _mask_area(annotation.get("segmentation"), image)
    if mask_area is not None:
        return mask_area
    bbox = annotation.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4 and _first_non_number(bbox) is None:
        return float(max(bbox[2], 0) * max(bbox[3], 0))
    return None


def _mask_area(segmentation: Any, image: dict | None) -> float | None:
    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(_is_int(v) and 0 < v <= MAX_IMAGE_SIDE for v in size)
        ):
            return None
        if isinstance(counts, str):
            try:  # the C decoder reads past the end of some damaged strings
                _decode_compressed_counts(counts)
            except ValueError:
                return None
            return float(mask_utils.area(segmentation))
        if isinstance(counts, list) and all(_is_int(run) and 0 <= run < 2**32 for run in counts):
            return float(mask_utils.area(mask_utils.frPyObjects(segmentation, *size)))
        return None
    if not isinstance(segmentation, list) or image is None:
        return None
    height, width = image.get("height"), image.get("width")
    if not all(_is_int(side) and 0 < side <= MAX_IMAGE_SIDE for side in (height, width)):
        return None
    # Rasterizing cost grows with coordinate magnitude, so wild coordinates fall back to the box.
    coordinate_limit = 4 * max(height, width)

    def usable(polygon: Any) -> bool:
        return (
            isinstance(polygon, list)
            and len(polygon) >= 6
            and len(polygon) % 2 == 0
            and _first_non_number(polygon) is None
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
