"""Merging COCO instances JSONs into one: categories unified by name, every id renumbered.

Datasets annotated in several rounds, by several people or tools, arrive as several JSONs whose
category ids disagree ("car" is 1 in one file and 3 in another). Matching by name is the only
reading that keeps each annotation's meaning; ids are then 1..N in order of first appearance.
A ``file_name`` in two inputs would make two images one, so it is an error unless each input gets
its own folder prefix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instseg.data.coco_json import load_coco_json
from instseg.errors import ConfigError


@dataclass
class MergedDataset:
    """The merged COCO dict and, per input, how many images and instances it gave."""

    coco: dict
    counts: list[tuple[Path, int, int]] = field(default_factory=list)


def merge_coco(
    paths: Sequence[str | os.PathLike], prefixes: Sequence[str] | None = None
) -> MergedDataset:
    """Merge ``paths`` in order; ``prefixes`` (one per input) are prepended to its file names as
    a folder (``prefix/file_name``), so one image root holding those folders serves the result."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise ConfigError("merge needs at least two COCO JSON files")
    if prefixes is not None and len(prefixes) != len(paths):
        raise ConfigError(f"--prefix given {len(prefixes)} time(s) for {len(paths)} input(s)")
    merged = MergedDataset(
        {"info": {}, "licenses": [], "images": [], "annotations": [], "categories": []}
    )
    category_ids: dict[str, int] = {}
    license_ids: dict[tuple, int] = {}
    seen_files: dict[str, Path] = {}
    for index, path in enumerate(paths):
        coco = load_coco_json(path)
        merged.coco["info"] = merged.coco["info"] or coco.get("info") or {}
        categories = _map_categories(path, coco["categories"], category_ids, merged.coco)
        licenses = _map_licenses(coco.get("licenses") or [], license_ids, merged.coco)
        prefix = prefixes[index].strip("/") if prefixes else ""
        images = _add_images(path, coco["images"], prefix, licenses, seen_files, merged.coco)
        _add_annotations(path, coco["annotations"], images, categories, merged.coco)
        merged.counts.append((path, len(coco["images"]), len(coco["annotations"])))
    return merged


def _add_images(
    path: Path, images: list, prefix: str, licenses: dict, seen_files: dict, out: dict
) -> dict:
    """Append ``path``'s images to ``out`` with new ids; returns old id -> new id."""
    ids = {}
    for image in images:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ConfigError(f"{path}: image entry without 'id' and 'file_name': {image!r}")
        file_name = f"{prefix}/{image['file_name']}" if prefix else str(image["file_name"])
        if file_name in seen_files:
            raise ConfigError(
                f"{path}: image {file_name!r} is also in {seen_files[file_name]}; "
                "give each input its own folder with --prefix"
            )
        seen_files[file_name] = path
        if image["id"] in ids:
            raise ConfigError(f"{path}: image id {image['id']} appears twice")
        new = dict(image, id=len(out["images"]) + 1, file_name=file_name)
        if "license" in image:
            new["license"] = licenses.get(image["license"], image["license"])
        ids[image["id"]] = new["id"]
        out["images"].append(new)
    return ids


def _add_annotations(
    path: Path, annotations: list, images: dict, categories: dict, out: dict
) -> None:
    """Append ``path``'s annotations to ``out``, renumbered and pointing at the merged ids."""
    for ann in annotations:
        if not isinstance(ann, dict):
            raise ConfigError(f"{path}: annotation entry is not an object: {ann!r}")
        if ann.get("image_id") not in images:
            raise ConfigError(
                f"{path}: annotation {ann.get('id')} refers to image id "
                f"{ann.get('image_id')!r}, which is not in the file"
            )
        if ann.get("category_id") not in categories:
            raise ConfigError(
                f"{path}: annotation {ann.get('id')} has category id "
                f"{ann.get('category_id')!r}, which is not in the file's categories"
            )
        out["annotations"].append(
            dict(
                ann,
                id=len(out["annotations"]) + 1,
                image_id=images[ann["image_id"]],
                category_id=categories[ann["category_id"]],
            )
        )


def _map_categories(path: Path, categories: list, ids: dict[str, int], out: dict) -> dict:
    """This file's category id -> the merged id of the category with the same name."""
    mapping = {}
    for category in categories:
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise ConfigError(f"{path}: category entry without 'id' and 'name': {category!r}")
        name = str(category["name"])
        if category["id"] in mapping:
            raise ConfigError(f"{path}: category id {category['id']} appears twice")
        if name not in ids:
            ids[name] = len(ids) + 1
            out["categories"].append(dict(category, id=ids[name], name=name))
        mapping[category["id"]] = ids[name]
    return mapping


def _map_licenses(licenses: list, ids: dict[tuple, int], out: dict) -> dict:
    mapping = {}
    for lic in licenses:
        if not isinstance(lic, dict) or "id" not in lic:
            continue
        key = (lic.get("name"), lic.get("url"))
        if key not in ids:
            ids[key] = len(ids) + 1
            out["licenses"].append(dict(lic, id=ids[key]))
        mapping[lic["id"]] = ids[key]
    return mapping
