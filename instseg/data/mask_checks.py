"""``instseg dataset validate --masks``: every problem of an image folder paired with a folder of
class-id PNGs, each named by file, before a semantic model trains on them.

Checked: each image has a mask of the same name and each mask an image; masks are one channel
(an RGB colour mask is the common mistake: its values are colours, not class ids); sizes
match the image's; values are known class ids or the ignore label.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from instseg.data.semantic import IGNORE_LABEL, IMAGE_EXTENSIONS
from instseg.data.validate import ERROR, WARNING, Problem

# Mask modes whose pixel values are class ids (P: palette indices, as many tools save them).
ID_MODES = ("L", "P", "I", "I;16")


def _stems(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.iterdir()):  # one level, as Detectron2's load_sem_seg reads
        if path.is_file() and path.suffix.lower() in extensions:
            found.setdefault(path.stem, path)
    return found


def validate_mask_folder(
    image_root: str | os.PathLike,
    mask_root: str | os.PathLike,
    classes: Sequence[str] = (),
    ignore_label: int = IGNORE_LABEL,
) -> list[Problem]:
    """Problems of the pairs in ``image_root`` and ``mask_root`` (PNG masks, same names); with ``classes``, values other than their ids and ``ignore_label`` are errors."""
    image_root, mask_root = Path(image_root), Path(mask_root)
    for folder in (image_root, mask_root):
        if not folder.is_dir():
            return [Problem(ERROR, str(folder), "folder", "not found")]
    images = _stems(image_root, IMAGE_EXTENSIONS)
    masks = _stems(mask_root, (".png",))
    problems: list[Problem] = []
    for stem in sorted(set(images) - set(masks)):
        problems.append(Problem(ERROR, str(images[stem]), "image", f"no mask {stem}.png"))
    for stem in sorted(set(masks) - set(images)):
        problems.append(Problem(WARNING, str(masks[stem]), "mask", "no image of this name"))
    for stem in sorted(set(images) & set(masks)):
        problems += _check_pair(images[stem], masks[stem], len(classes), ignore_label)
    return problems


def _check_pair(image: Path, mask: Path, num_classes: int, ignore_label: int) -> list[Problem]:
    try:
        with Image.open(image) as im:
            image_size = im.size
        with Image.open(mask) as m:
            mode, size = m.mode, m.size
            if mode not in ID_MODES:
                return [
                    Problem(
                        ERROR, str(mask), "mask",
                        f"{mode} image, not class ids: save one channel whose value is the class "
                        "id (0, 1, ...; 255 = ignore)",
                    )
                ]  # fmt: skip
            values = np.unique(np.asarray(m))
    except OSError as e:
        return [Problem(ERROR, str(mask), "file", f"cannot read: {' '.join(str(e).split())}")]
    problems = []
    if size != image_size:
        problems.append(
            Problem(
                ERROR, str(mask), "size",
                f"{size[0]}x{size[1]} but the image {image.name} is {image_size[0]}x{image_size[1]}",
            )
        )  # fmt: skip
    if num_classes:
        unknown = [int(v) for v in values if v >= num_classes and v != ignore_label]
        if unknown:
            problems.append(
                Problem(
                    ERROR, str(mask), "values",
                    f"unknown class ids {unknown[:8]} (classes 0..{num_classes - 1}, "
                    f"{ignore_label} = ignore)",
                )
            )  # fmt: skip
    if len(values) == 1 and values[0] == ignore_label:
        problems.append(Problem(WARNING, str(mask), "values", "every pixel is ignored"))
    return problems
