"""Reading a COCO instances JSON for the dataset tools, which rewrite it whole."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from instseg.errors import ConfigError


def load_coco_json(path: str | os.PathLike) -> dict:
    """A COCO instances JSON as a dict; anything else is a one-line error naming the file."""
    path = Path(path)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(coco, dict):
        raise ConfigError(f"{path}: not a COCO instances JSON (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise ConfigError(f"{path}: not a COCO instances JSON (no '{key}' list)")
    return coco


def instances_per_class(coco: dict) -> dict[str, int]:
    """Instance count by category name, every category listed in the file's order."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    found = Counter(names.get(a["category_id"]) for a in coco["annotations"])
    return {name: found[name] for name in names.values()}
