"""Semantic datasets: masks rendered from COCO JSON, mask folders through load_sem_seg, the
mapper's padding, registration of both kinds from a config."""

import json
import uuid

import cv2
import numpy as np
import pytest
from conftest import CONFIGS_DIR
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO

from instseg.config import ConfigError, build_cfg
from instseg.data.catalog import register_datasets
from instseg.data.semantic import (
    IGNORE_LABEL,
    SemanticDatasetMapper,
    SemanticGroundTruth,
    load_mask_folder,
    read_mask_png,
    render_semantic_mask,
    write_semantic_masks,
)

UNET_CPU = CONFIGS_DIR / "semantic_unet_cpu.yaml"


def _truth_from_pycocotools(json_file, image):
    """Class ids painted with pycocotools' own annToMask, larger objects first."""
    coco = COCO(str(json_file))
    order = {cat: i + 1 for i, cat in enumerate(sorted(coco.getCatIds()))}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    truth = np.zeros((image["height"], image["width"]), dtype=np.uint8)
    for ann in sorted(anns, key=lambda a: -int(coco.annToMask(a).sum())):
        truth[coco.annToMask(ann).astype(bool)] = order[ann["category_id"]]
    return truth


def test_masks_rendered_from_coco_json_match_pycocotools(sample_dataset, tmp_path):
    count = write_semantic_masks(sample_dataset.val_json, tmp_path / "masks")
    images = json.loads(sample_dataset.val_json.read_text())["images"]
    assert count == len(images)
    for image in images[:4]:
        mask = read_mask_png(tmp_path / "masks" / image["file_name"].replace(".jpg", ".png"))
        truth = _truth_from_pycocotools(sample_dataset.val_json, image)
        np.testing.assert_array_equal(mask, truth)
        assert set(np.unique(mask)) > {0}


def test_crowd_regions_are_ignored_and_small_objects_stay_on_top():
    square = lambda x0, y0, x1, y1: [[x0, y0, x1, y0, x1, y1, x0, y1]]  # noqa: E731
    anns = [
        {"category_id": 1, "segmentation": square(10, 10, 20, 20), "iscrowd": 0},
        {"category_id": 0, "segmentation": square(0, 0, 40, 40), "iscrowd": 0},
        {"category_id": 2, "segmentation": square(30, 30, 50, 50), "iscrowd": 1},
    ]
    mask = render_semantic_mask(anns, 60, 60)
    assert mask[15, 15] == 2  # the small object on the large one
    assert mask[5, 5] == 1
    assert mask[45, 45] == IGNORE_LABEL
    assert mask[55, 5] == 0


def test_rgb_mask_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="a.png: mask is RGB"):
        read_mask_png(path)


def _mask_folder_dataset(sample_dataset, tmp_path):
    masks = tmp_path / "val_masks"
    write_semantic_masks(sample_dataset.val_json, masks)
    return masks


def test_mask_folder_records_pair_images_with_masks(sample_dataset, tmp_path):
    masks = _mask_folder_dataset(sample_dataset, tmp_path)
    (masks / "orphan.png").write_bytes((masks / "00000.png").read_bytes())
    records = load_mask_folder(str(sample_dataset.val_images), str(masks))
    assert len(records) == len(list(sample_dataset.val_images.glob("*.jpg")))
    for r in records:
        assert r["sem_seg_file_name"].endswith(r["file_name"].rsplit("/", 1)[1][:-4] + ".png")


def test_config_registers_coco_and_mask_folder_datasets_alike(sample_dataset, tmp_path):
    masks = _mask_folder_dataset(sample_dataset, tmp_path)
    suffix = uuid.uuid4().hex[:6]
    classes = ["background", *sample_dataset.class_names]
    coco_cfg = register_datasets(
        build_cfg(
            [UNET_CPU],
            [
                "INSTSEG.DATASETS.TRAIN.NAME", f"sem_coco_{suffix}",
                "INSTSEG.DATASETS.TRAIN.JSON", str(sample_dataset.val_json),
                "INSTSEG.DATASETS.TRAIN.IMAGES", str(sample_dataset.val_images),
                "INSTSEG.DATASETS.VAL.NAME", f"sem_png_{suffix}",
                "INSTSEG.DATASETS.VAL.JSON", "",
                "INSTSEG.DATASETS.VAL.MASKS", str(masks),
                "INSTSEG.DATASETS.VAL.IMAGES", str(sample_dataset.val_images),
                "INSTSEG.SEMANTIC.CLASSES", repr(classes),
            ],
        )
    )  # fmt: skip
    num_classes = coco_cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert num_classes == len(classes)
    assert MetadataCatalog.get(f"sem_coco_{suffix}").stuff_classes == classes
    # The same images give the same ground truth from both sources.
    by_file = {r["file_name"]: r for r in DatasetCatalog.get(f"sem_png_{suffix}")}
    rendered = SemanticGroundTruth(f"sem_coco_{suffix}")
    from_png = SemanticGroundTruth(f"sem_png_{suffix}")
    for record in DatasetCatalog.get(f"sem_coco_{suffix}")[:3]:
        png = by_file[record["file_name"]]["sem_seg_file_name"]
        np.testing.assert_array_equal(
            rendered(record["sem_seg_file_name"]), from_png(png), err_msg=record["file_name"]
        )


def test_mask_folder_without_classes_is_a_config_error(sample_dataset, tmp_path):
    masks = _mask_folder_dataset(sample_dataset, tmp_path)
    opts = [
        "INSTSEG.DATASETS.VAL.NAME", f"sem_png_{uuid.uuid4().hex[:6]}",
        "INSTSEG.DATASETS.VAL.MASKS", str(masks),
        "INSTSEG.DATASETS.VAL.IMAGES", str(sample_dataset.val_images),
        "INSTSEG.DATASETS.TRAIN.NAME", "",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="INSTSEG.SEMANTIC.CLASSES: required"):
        register_datasets(build_cfg([UNET_CPU], opts))


def test_training_mapper_pads_image_and_mask_to_the_divisibility(sample_dataset):
    name = f"sem_pad_{uuid.uuid4().hex[:6]}"
    cfg = register_datasets(
        build_cfg(
            [UNET_CPU],
            [
                "INSTSEG.DATASETS.TRAIN.NAME", name,
                "INSTSEG.DATASETS.TRAIN.JSON", str(sample_dataset.val_json),
                "INSTSEG.DATASETS.TRAIN.IMAGES", str(sample_dataset.val_images),
                "INSTSEG.DATASETS.VAL.NAME", "",
                "INPUT.MIN_SIZE_TRAIN", "(100,)",
                "INPUT.RANDOM_FLIP", "none",
            ],
        )
    )  # fmt: skip
    record = DatasetCatalog.get(name)[0]
    mapped = SemanticDatasetMapper(cfg, is_train=True)(record)
    assert tuple(mapped["image"].shape) == (3, 128, 128)  # 100 -> padded to 128
    assert tuple(mapped["sem_seg"].shape) == (128, 128)
    assert (mapped["sem_seg"][100:, :] == IGNORE_LABEL).all()
    assert set(mapped["sem_seg"][:100, :100].unique().tolist()) <= set(range(6))
    test = SemanticDatasetMapper(cfg, is_train=False)(record)
    assert "sem_seg" not in test and "annotations" not in test


def test_sample_command_writes_semantic_masks(tmp_path, capsys):
    from instseg.cli import main

    out = tmp_path / "sample"
    argv = ["dataset", "sample", "--out", str(out), "--num-train", "2", "--num-val", "1"]
    assert main([*argv, "--semantic-masks"]) == 0
    printed = capsys.readouterr().out
    assert "semantic classes: background, ellipse" in printed
    masks = sorted((out / "train_masks").glob("*.png"))
    assert [m.stem for m in masks] == ["00000", "00001"]
    assert (out / "val_masks" / "00000.png").is_file()
    assert read_mask_png(masks[0]).shape == (256, 256)
