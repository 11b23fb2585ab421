"""Explicit, idempotent registration of the COCO-format datasets a config declares.

Nothing is registered on import: stage entry points call :func:`register_datasets`, which also
makes the model's class count and names follow the training JSON's categories.
"""

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data.datasets import register_coco_instances

from instseg.config import ConfigError, is_semantic
from instseg.data.preflight import check_dataset
from instseg.data.semantic import coco_semantic_classes, register_semantic_dataset

logger = logging.getLogger(__name__)

# Detectron2's default MODEL.ROI_HEADS.NUM_CLASSES (COCO's 80 things): this value means "not set
# by the project", so the training JSON decides; any other value must agree with the JSON.
DEFAULT_NUM_CLASSES = 80
# The same for MODEL.SEM_SEG_HEAD.NUM_CLASSES (COCO-stuff's 54).
DEFAULT_NUM_SEMANTIC_CLASSES = 54


@dataclass(frozen=True)
class CocoCategories:
    """Categories of a COCO JSON in Detectron2's contiguous order (sorted by category id)."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    has_rle: bool = False  # some instance masks are RLE, which INPUT.MASK_FORMAT polygon rejects

    @property
    def id_to_contiguous(self) -> dict[int, int]:
        return {cat_id: index for index, cat_id in enumerate(self.ids)}


def load_coco_categories(json_path: str | os.PathLike) -> CocoCategories:
    """Read only what registration needs; bad files are one-line errors naming the file."""
    try:
        with open(json_path, encoding="utf-8") as f:
            coco = json.load(f)
        ordered = sorted(coco["categories"], key=lambda c: c["id"])
        has_rle = any(
            isinstance(a, dict) and isinstance(a.get("segmentation"), dict)
            for a in coco.get("annotations") or []
        )
        ids, names = tuple(c["id"] for c in ordered), tuple(c["name"] for c in ordered)
        return CocoCategories(ids, names, has_rle)
    except FileNotFoundError:
        raise ConfigError(f"{json_path}: dataset JSON not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{json_path}: not a COCO instances JSON ({type(e).__name__}: {e}); "
            "run `instseg dataset validate` for details"
        ) from None


def register_coco_dataset(name: str, json_path: str, image_root: str) -> CocoCategories:
    """Register ``name`` with Detectron2's COCO loader; a repeated call with the same files is a
    no-op, and one with other files replaces the earlier registration."""
    categories = load_coco_categories(json_path)
    json_path, image_root = str(Path(json_path).resolve()), str(Path(image_root).resolve())
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_path and meta.get("image_root") == image_root:
            return categories
        logger.info("Re-registering dataset %s with %s", name, json_path)
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    # The same values Detectron2's load_coco_json derives, set now so that metadata is usable
    # before the dataset is first loaded.
    metadata = {
        "thing_classes": list(categories.names),
        "thing_dataset_id_to_contiguous_id": categories.id_to_contiguous,
    }
    register_coco_instances(name, metadata, json_path, image_root)
    return categories


def register_datasets(cfg: CfgNode) -> CfgNode:
    """Register every split declared under ``INSTSEG.DATASETS`` and return a frozen copy of
    ``cfg`` whose NUM_CLASSES and THING_CLASSES follow the training JSON (or, without a training
    set, the validation/test JSON)."""
    if is_semantic(cfg):
        return register_semantic_datasets(cfg)
    declared = cfg.INSTSEG.DATASETS
    found: dict[str, CocoCategories] = {}
    for split in ("TRAIN", "VAL", "TEST"):
        node = declared[split]
        if not node.NAME:
            continue
        for key in ("JSON", "IMAGES"):
            if not node[key]:
                raise ConfigError(f"INSTSEG.DATASETS.{split}.{key}: required when NAME is set")
        found[split] = register_coco_dataset(node.NAME, node.JSON, node.IMAGES)
        check_dataset(
            node.JSON,
            node.IMAGES,
            verify_images=bool(declared.CHECK_IMAGES),
            max_pixels=int(cfg.INSTSEG.MAX_IMAGE_PIXELS),
        )
    if not found:
        return cfg

    reference_split, reference = next(iter(found.items()))
    for split, categories in found.items():
        if categories.names != reference.names:
            raise ConfigError(
                f"{declared[split].JSON}: categories {list(categories.names)} differ from "
                f"{declared[reference_split].JSON}: {list(reference.names)}"
            )

    classes = list(reference.names)
    cfg = cfg.clone()
    cfg.defrost()
    configured = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if configured not in (DEFAULT_NUM_CLASSES, len(classes)):
        raise ConfigError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {configured} but "
            f"{declared[reference_split].JSON} has {len(classes)} categories; "
            "remove the setting to follow the dataset"
        )
    if cfg.INSTSEG.THING_CLASSES and list(cfg.INSTSEG.THING_CLASSES) != classes:
        raise ConfigError(
            f"INSTSEG.THING_CLASSES {list(cfg.INSTSEG.THING_CLASSES)} differ from the categories "
            f"of {declared[reference_split].JSON}: {classes}"
        )
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    cfg.INSTSEG.THING_CLASSES = classes
    rle = [declared[split].JSON for split, c in found.items() if c.has_rle]
    if rle and cfg.INPUT.MASK_FORMAT == "polygon":
        logger.info("INPUT.MASK_FORMAT bitmask: %s holds RLE masks", rle[0])
        cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.freeze()
    return cfg


def register_semantic_datasets(cfg: CfgNode) -> CfgNode:
    """:func:`register_datasets` for a semantic model: each split from its mask folder or its
    COCO JSON; INSTSEG.SEMANTIC.CLASSES and MODEL.SEM_SEG_HEAD.NUM_CLASSES follow the data."""
    declared = cfg.INSTSEG.DATASETS
    found: dict[str, list[str]] = {}
    for split in ("TRAIN", "VAL", "TEST"):
        node = declared[split]
        if not node.NAME:
            continue
        if not node.IMAGES or not (node.JSON or node.MASKS):
            raise ConfigError(
                f"INSTSEG.DATASETS.{split}: a semantic dataset needs IMAGES and MASKS (class-id "
                "PNGs) or JSON (COCO instances, rendered into masks)"
            )
        if node.JSON and not node.MASKS:
            check_dataset(
                node.JSON,
                node.IMAGES,
                verify_images=bool(declared.CHECK_IMAGES),
                max_pixels=int(cfg.INSTSEG.MAX_IMAGE_PIXELS),
            )
        if node.MASKS:
            classes = list(cfg.INSTSEG.SEMANTIC.CLASSES)
            if not classes:
                raise ConfigError(
                    f"INSTSEG.SEMANTIC.CLASSES: required with INSTSEG.DATASETS.{split}.MASKS "
                    "(class id = index in the list)"
                )
            register_semantic_dataset(node.NAME, node.IMAGES, classes, mask_root=node.MASKS)
        else:
            classes = coco_semantic_classes(load_coco_categories(node.JSON).names)
            register_semantic_dataset(node.NAME, node.IMAGES, classes, json_file=node.JSON)
        found[split] = classes
    if not found:
        return cfg
    reference_split, classes = next(iter(found.items()))
    for split, names in found.items():
        if names != classes:
            raise ConfigError(
                f"INSTSEG.DATASETS.{split}: classes {names} differ from "
                f"INSTSEG.DATASETS.{reference_split}'s {classes}"
            )
    if cfg.INSTSEG.SEMANTIC.CLASSES and list(cfg.INSTSEG.SEMANTIC.CLASSES) != classes:
        raise ConfigError(
            f"INSTSEG.SEMANTIC.CLASSES {list(cfg.INSTSEG.SEMANTIC.CLASSES)} differ from the "
            f"dataset's {classes}"
        )
    configured = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if configured not in (DEFAULT_NUM_SEMANTIC_CLASSES, len(classes)):
        raise ConfigError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {configured} but the data has {len(classes)} "
            "classes; remove the setting to follow the dataset"
        )
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(classes)
    cfg.INSTSEG.SEMANTIC.CLASSES = classes
    cfg.freeze()
    return cfg


def build_metadata(cfg: CfgNode) -> Metadata:
    """Class names for drawing and outputs: the model's own classes, as saved in its config
    (a semantic model's as ``stuff_classes``)."""
    if is_semantic(cfg):
        classes = list(cfg.INSTSEG.SEMANTIC.CLASSES) or [
            f"class_{i}" for i in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        ]
        if len(classes) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ConfigError(
                f"INSTSEG.SEMANTIC.CLASSES has {len(classes)} names but "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}"
            )
        return Metadata(name="instseg_model", stuff_classes=classes, ignore_label=255)
    if cfg.INSTSEG.THING_CLASSES:
        classes = list(cfg.INSTSEG.THING_CLASSES)
    elif cfg.DATASETS.TRAIN and cfg.DATASETS.TRAIN[0] in DatasetCatalog.list():
        classes = list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).thing_classes)
    else:
        classes = [f"class_{i}" for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]
        logger.warning("No class names in the config; using %s", ", ".join(classes[:3]) + ", ...")
    if len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ConfigError(
            f"INSTSEG.THING_CLASSES has {len(classes)} names but MODEL.ROI_HEADS.NUM_CLASSES is "
            f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}"
        )
    return Metadata(name="instseg_model", thing_classes=classes)
