"""Geometry checks of COCO annotations (boxes, polygons, RLE masks) and the value helpers the
dataset checker shares; mixed into :class:`~instseg.data.validate._DatasetChecker`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


# Boxes a pixel past the border come from rounding in common annotation tools; anything
# further out is a coordinate bug.
BOX_TOLERANCE_PX = 1.0

# Mask code stores sides as 32-bit integers; anything larger is a corrupt value.
MAX_IMAGE_SIDE = 2**31 - 1


_NUMBER_TYPES = frozenset({int, float})


@dataclass(frozen=True)
class ImageRecord:
    """What later checks need to know about one entry of ``images``."""

    index: int
    label: str
    file_name: str | None  # None when missing or unsafe, so the file is never opened
    width: int | None
    height: int | None

    @property
    def has_size(self) -> bool:
        return self.width is not None and self.height is not None


class AnnotationChecks:
    """Box and mask checks; the host class provides ``error`` and ``warning``."""

    def _check_bbox(self, where: str, bbox: Any, image: ImageRecord | None) -> None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and first_non_number(bbox) is None):
            self.error(
                where,
                f"must be [x, y, width, height] with 4 finite numbers, got {describe_value(bbox)}",
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

    def _check_segmentation(self, where: str, segmentation: Any, image: ImageRecord | None) -> None:
        if isinstance(segmentation, dict):
            self._check_rle(where, segmentation, image)
        elif isinstance(segmentation, list):
            if not segmentation:
                self.error(where, "contains no polygons")
            for index, polygon in enumerate(segmentation):
                self._check_polygon(f"{where}[{index}]", polygon, image)
        else:
            self.error(
                where,
                f"must be a list of polygons or an RLE object, got {describe_value(segmentation)}",
            )

    def _check_polygon(self, where: str, polygon: Any, image: ImageRecord | None) -> None:
        if not isinstance(polygon, list):
            self.error(
                where, f"must be an array of x, y coordinates, got {describe_value(polygon)}"
            )
            return
        bad_index = first_non_number(polygon)
        if bad_index is not None:
            self.error(
                f"{where}[{bad_index}]",
                f"must be a finite number, got {describe_value(polygon[bad_index])}",
            )
        num_coordinates = len(polygon)
        if num_coordinates % 2:
            self.error(where, f"polygon has an odd number of coordinates ({num_coordinates})")
        if num_coordinates // 2 < 3:
            self.error(where, f"polygon has {num_coordinates // 2} points; needs at least 3")
        if bad_index is None and num_coordinates % 2 == 0 and image is not None and image.has_size:
            self._check_polygon_inside(where, polygon, image)

    def _check_polygon_inside(self, where: str, polygon: list, image: ImageRecord) -> None:
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

    def _check_rle(self, where: str, rle: dict, image: ImageRecord | None) -> None:
        missing = [key for key in ("counts", "size") if key not in rle]
        for key in missing:
            self.error(where, f"RLE is missing '{key}'")
        if missing:
            return
        size = rle["size"]
        size_ok = (
            isinstance(size, list)
            and len(size) == 2
            and all(is_int(v) and 0 < v <= MAX_IMAGE_SIDE for v in size)
        )
        if not size_ok:
            self.error(
                f"{where}.size",
                f"must be [height, width] with positive integers up to {MAX_IMAGE_SIDE}, "
                f"got {describe_value(size)}",
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
                return decode_compressed_counts(counts)
            except ValueError as exc:
                self.error(where, f"malformed compressed RLE: {exc}")
                return None
        if isinstance(counts, list):
            for index, run in enumerate(counts):
                if not (is_int(run) and run >= 0):
                    self.error(
                        f"{where}[{index}]",
                        f"must be a non-negative integer, got {describe_value(run)}",
                    )
                    return None
            return counts
        self.error(
            where,
            f"must be a compressed string or an array of run lengths, got {describe_value(counts)}",
        )
        return None


def decode_compressed_counts(counts: str) -> list[int]:
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


def entry_label(section: str, index: int, entry: Any) -> str:
    """Name an array entry by position and, when it has a usable one, by id."""
    entry_id = entry.get("id") if isinstance(entry, dict) else None
    if is_int(entry_id):
        return f"{section}[{index}] (id={entry_id})"
    return f"{section}[{index}]"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= sys.float_info.max  # JSON allows integers no float can hold
    return isinstance(value, float) and math.isfinite(value)


def first_non_number(values: list) -> int | None:
    """Index of the first element that is not a finite number, or None."""
    # Fast path for the common all-numeric case: type scan and sum run at C speed.
    try:
        if set(map(type, values)) <= _NUMBER_TYPES and math.isfinite(sum(values)):
            return None
    except OverflowError:
        pass
    return next((index for index, value in enumerate(values) if not is_number(value)), None)


def _fmt(number: float) -> str:
    if isinstance(number, int) or number.is_integer():
        return str(int(number))
    return f"{number:.3f}".rstrip("0").rstrip(".")


def describe_value(value: Any, max_chars: int = 60) -> str:
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
