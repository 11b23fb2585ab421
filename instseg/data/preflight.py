"""The check every dataset passes before ``train`` or ``eval`` reads it: the structural part of
``instseg dataset validate`` (JSON, ids, geometry, file names, image headers; image data too with
``INSTSEG.DATASETS.CHECK_IMAGES``), so bad data stops the run at once with one line instead of a
crash inside Detectron2's loader hours later, and no image outside the root is ever read."""

from __future__ import annotations

import logging
import time

from instseg.data.validate import ERROR, validate_coco_dataset
from instseg.errors import ConfigError
from instseg.io.images import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)


def check_dataset(
    json_path: str,
    image_root: str,
    verify_images: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> None:
    """Raise ConfigError naming the first error (and how many there are); log warnings."""
    start = time.perf_counter()
    problems = validate_coco_dataset(
        json_path, image_root, verify_images=verify_images, max_pixels=max_pixels
    )
    errors = [p for p in problems if p.severity == ERROR]
    for warning in (p for p in problems if p.severity != ERROR):
        logger.warning("%s", warning)
    logger.info(
        "Checked %s: %d error(s), %d warning(s) in %.2fs",
        json_path,
        len(errors),
        len(problems) - len(errors),
        time.perf_counter() - start,
    )
    if errors:
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        raise ConfigError(
            f"{errors[0]}{more}; `instseg dataset validate --json {json_path} --images "
            f"{image_root}` lists them all"
        )
