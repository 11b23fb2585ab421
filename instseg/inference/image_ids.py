"""Image and category ids of ``instseg predict``'s outputs.

Without a dataset, image ids are 1, 2, ... in input order and category ids the model's
contiguous class ids plus 1. With a COCO dataset JSON, inputs whose relative path (or, failing
that, unique base name) is a ``file_name`` of the dataset take that image's id, and category ids
are the dataset's, so predictions evaluate against it with COCOeval.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import PurePosixPath

from instseg.config import ConfigError
from instseg.data.catalog import load_coco_categories
from instseg.inference.sources import InputFile

logger = logging.getLogger(__name__)


def assign_ids(
    files: Sequence[InputFile], class_names: Sequence[str], coco_json: str | None
) -> tuple[list[int], list[dict]]:
    """Image id of each input and the output categories (see the module docstring)."""
    if not coco_json:
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
        return list(range(1, len(files) + 1)), categories

    dataset_categories = load_coco_categories(coco_json)
    if len(dataset_categories.ids) != len(class_names):
        raise ConfigError(
            f"--coco-json {coco_json}: {len(dataset_categories.ids)} categories, but the model "
            f"has {len(class_names)} classes ({', '.join(class_names)})"
        )
    if list(dataset_categories.names) != list(class_names):
        logger.warning(
            "--coco-json %s: category names %s differ from the model's classes %s; matching "
            "them by position (sorted category id)",
            coco_json,
            list(dataset_categories.names),
            list(class_names),
        )
    categories = [
        {"id": cat_id, "name": name}
        for cat_id, name in zip(dataset_categories.ids, dataset_categories.names, strict=True)
    ]
    with open(coco_json, encoding="utf-8") as f:
        images = json.load(f).get("images") or []
    by_path: dict[str, int] = {}
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        image_id, file_name = _checked_entry(coco_json, i, image)
        by_path[file_name] = image_id
        by_name[PurePosixPath(file_name).name].append(image_id)
    next_id = max([0, *by_path.values()]) + 1
    image_ids, unmatched = [], []
    for f in files:
        image_id = by_path.get(f.rel)
        if image_id is None:
            candidates = by_name.get(PurePosixPath(f.rel).name, [])
            image_id = candidates[0] if len(candidates) == 1 else None
        if image_id is None:
            unmatched.append(f.rel)
            image_id, next_id = next_id, next_id + 1
        image_ids.append(image_id)
    duplicates = [i for i, n in Counter(image_ids).items() if n > 1]
    if duplicates:
        raise ConfigError(
            f"--coco-json {coco_json}: several inputs match dataset image id {duplicates[0]}"
        )
    if unmatched:
        logger.warning(
            "%d input(s) are not images of %s (e.g. %s); they get new ids above the dataset's, "
            "so load predictions.json against images.json rather than the dataset",
            len(unmatched),
            coco_json,
            unmatched[0],
        )
    return image_ids, categories


def _checked_entry(coco_json: str, i: int, image) -> tuple[int, str]:
    """(id, POSIX file_name) of ``images[i]``, or a one-line error naming the entry."""
    where = f"--coco-json {coco_json}: images[{i}]"
    if not isinstance(image, dict):
        raise ConfigError(f"{where} is not an object")
    image_id, file_name = image.get("id"), image.get("file_name")
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise ConfigError(f"{where}: id {image_id!r} is not an integer")
    if not isinstance(file_name, str) or not file_name:
        raise ConfigError(f"{where} (id={image_id}): no file_name")
    return image_id, PurePosixPath(file_name.replace("\\", "/")).as_posix()
