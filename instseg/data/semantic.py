"""Semantic-segmentation datasets: image folders with class-id mask folders (Detectron2's
``load_sem_seg``) and COCO instances JSONs rendered into class-id masks on the fly, with the
mapper and the ground-truth reader that training, the validation loss and evaluation share.

A COCO image's record names its mask ``coco-annotations://<file_name>``: no file is written;
:func:`semantic_target` paints the record's annotations (larger first, so a small object on
a large one stays visible; crowd regions ignored).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.data.datasets import load_coco_json, load_sem_seg
from PIL import Image

from instseg.config import ConfigError, is_semantic

logger = logging.getLogger(__name__)

IGNORE_LABEL = 255
BACKGROUND = "background"
RENDERED_PREFIX = "coco-annotations://"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def coco_semantic_classes(thing_classes: Sequence[str]) -> list[str]:
    """Class ids of masks rendered from a COCO JSON: 0 is background, then its categories."""
    return [BACKGROUND, *thing_classes]


def render_semantic_mask(annotations: Sequence[dict], height: int, width: int) -> np.ndarray:
    """H x W uint8 class ids from Detectron2-format annotations (contiguous ``category_id``):
    background 0, class ``category_id + 1``, crowd regions ``IGNORE_LABEL``."""
    mask = np.zeros((height, width), dtype=np.uint8)
    painted = []
    for ann in annotations:
        segmentation = ann.get("segmentation")
        if not segmentation:
            continue
        if isinstance(segmentation, list):
            rles = mask_util.frPyObjects(segmentation, height, width)
            rle = mask_util.merge(rles)
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_util.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        binary = mask_util.decode(rle).astype(bool)
        value = IGNORE_LABEL if ann.get("iscrowd") else int(ann["category_id"]) + 1
        painted.append((int(binary.sum()), value, binary))
    # Larger regions first: what lies on top of them (smaller) stays visible.
    for _, value, binary in sorted(painted, key=lambda p: -p[0]):
        mask[binary] = value
    return mask


def write_semantic_masks(json_file: str | Path, out_dir: str | Path) -> int:
    """A class-id PNG (:func:`render_semantic_mask`) for every image of a COCO JSON, named as
    the image, under ``out_dir``: a COCO dataset as a mask-folder dataset. Returns the count."""
    from pycocotools.coco import COCO

    from instseg.io.images import atomic_write_image

    coco = COCO(str(json_file))
    contiguous = {cat_id: i for i, cat_id in enumerate(sorted(coco.getCatIds()))}
    out_dir = Path(out_dir)
    for image in coco.dataset["images"]:
        anns = [
            {**a, "category_id": contiguous[a["category_id"]]}
            for a in coco.imgToAnns.get(image["id"], [])
        ]
        mask = render_semantic_mask(anns, image["height"], image["width"])
        atomic_write_image(out_dir / Path(image["file_name"]).with_suffix(".png"), mask)
    return len(coco.dataset["images"])


def read_mask_png(path: str | Path) -> np.ndarray:
    """A class-id PNG as H x W; an RGB or RGBA mask is an error naming the file."""
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(
                f"{path}: mask is {image.mode}, not class ids (one channel, value = class id)"
            )
        return np.asarray(image)


def semantic_target(record: dict) -> np.ndarray:
    """The record's class-id mask: read from its PNG, or rendered from its annotations."""
    name = record["sem_seg_file_name"]
    if name.startswith(RENDERED_PREFIX):
        return render_semantic_mask(
            record.get("annotations", []), record["height"], record["width"]
        )
    return read_mask_png(name)


class SemanticGroundTruth:
    """``SemSegEvaluator``'s ``sem_seg_loading_fn`` for a registered dataset: a mask by the
    name its record gives, whether a file or rendered from annotations."""

    def __init__(self, dataset_name: str):
        self._rendered = {
            r["sem_seg_file_name"]: r
            for r in DatasetCatalog.get(dataset_name)
            if r["sem_seg_file_name"].startswith(RENDERED_PREFIX)
        }

    def __call__(self, name: str, dtype=int) -> np.ndarray:
        record = self._rendered.get(name)
        mask = semantic_target(record) if record is not None else read_mask_png(name)
        return mask.astype(dtype)


def _coco_records(json_file: str, image_root: str, name: str) -> list[dict]:
    records = load_coco_json(json_file, image_root, name)
    for record in records:
        record["sem_seg_file_name"] = RENDERED_PREFIX + record["file_name"]
    return records


def load_mask_folder(image_root: str, mask_root: str) -> list[dict]:
    """Records of every image under ``image_root`` (any common format) with the PNG of the same
    name under ``mask_root``, through Detectron2's ``load_sem_seg`` once per image format."""
    present = {p.suffix for p in Path(image_root).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    records: dict[str, dict] = {}
    for ext in sorted(present):
        for record in load_sem_seg(mask_root, image_root, gt_ext=".png", image_ext=ext):
            records.setdefault(record["file_name"], record)
    if not records:
        raise ConfigError(f"{image_root}: no image has a mask of the same name in {mask_root}")
    return [records[k] for k in sorted(records)]


def register_semantic_dataset(
    name: str, image_root: str, classes: Sequence[str], *, json_file: str = "", mask_root: str = ""
) -> None:
    """Register ``name`` for semantic segmentation from a mask folder or a COCO JSON; a
    repeated call with the same files is a no-op, one with other files replaces it."""
    image_root = str(Path(image_root).resolve())
    if mask_root:
        mask_root = str(Path(mask_root).resolve())
        if not Path(mask_root).is_dir():
            raise ConfigError(f"{mask_root}: mask folder not found")
        loader = functools.partial(load_mask_folder, image_root, mask_root)
        source = {"image_root": image_root, "sem_seg_root": mask_root}
    else:
        json_file = str(Path(json_file).resolve())
        loader = functools.partial(_coco_records, json_file, image_root, name)
        source = {"image_root": image_root, "json_file": json_file}
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if all(meta.get(k) == v for k, v in source.items()) and meta.get("stuff_classes") == list(
            classes
        ):
            return
        logger.info("Re-registering dataset %s", name)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(
        stuff_classes=list(classes), ignore_label=IGNORE_LABEL, evaluator_type="sem_seg", **source
    )


class SemanticDatasetMapper(DatasetMapper):
    """A record to the model's input: image and class-id ``sem_seg`` through the same
    augmentations (Detectron2's ``AugInput``), training images padded to
    ``INSTSEG.SEMANTIC.SIZE_DIVISIBILITY`` (masks with the ignore label)."""

    @configurable
    def __init__(self, is_train: bool, *, size_divisibility: int = 0, ignore_label=255, **kwargs):
        super().__init__(is_train, **kwargs)
        self.size_divisibility = size_divisibility
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        if is_train and cfg.INPUT.CROP.ENABLED:
            crop = T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
            ret["augmentations"] = [
                a for a in ret["augmentations"] if not isinstance(a, T.RandomCrop)
            ]
            ret["augmentations"].insert(0, crop)
        ret["size_divisibility"] = int(cfg.INSTSEG.SEMANTIC.SIZE_DIVISIBILITY) if is_train else 0
        ret["ignore_label"] = int(cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
        return ret

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        target = semantic_target(record) if self.is_train else None
        aug = T.AugInput(image, sem_seg=target)
        self.augmentations(aug)
        image = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        if target is not None:
            target = torch.as_tensor(aug.sem_seg.astype("long"))
        if self.size_divisibility > 0:
            height, width = image.shape[-2:]
            pad = (0, -width % self.size_divisibility, 0, -height % self.size_divisibility)
            image = F.pad(image, pad, value=128)
            if target is not None:
                target = F.pad(target, pad, value=self.ignore_label)
        record["image"] = image
        if target is not None:
            record["sem_seg"] = target
        record.pop("annotations", None)
        record.pop("sem_seg_file_name", None)
        return record


def build_mapper(cfg: CfgNode, is_train: bool, augmentations=None):
    """The dataset mapper for the config's model: semantic or Detectron2's own."""
    kwargs = {} if augmentations is None else {"augmentations": augmentations}
    if is_semantic(cfg):
        return SemanticDatasetMapper(cfg, is_train, **kwargs)
    return DatasetMapper(cfg, is_train, **kwargs)
