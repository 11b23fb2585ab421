"""Reading a COCO instances JSON for the dataset tools, which rewrite it whole."""

from __future__ import annotations

import json
import os
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
