"""Dataset registration: idempotent, replaceable, and the model's classes follow the JSON."""

import json
import re
import uuid

import cv2
import numpy as np
import pytest
from conftest import R50_CONFIG
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from instseg.config import ConfigError, build_cfg
from instseg.data.catalog import (
    build_metadata,
    load_coco_categories,
    register_coco_dataset,
    register_datasets,
)
from instseg.data.sample_shapes import CLASS_NAMES

# Listed out of id order, with gaps: Detectron2 sorts by id and maps ids to 0..N-1.
SPARSE_CATEGORIES = [
    {"id": 11, "name": "zebra"},
    {"id": 3, "name": "apple"},
    {"id": 7, "name": "mango"},
]


def _write_coco(path, categories, annotated_category_ids=()):
    """A small COCO JSON with one 40x30 image and one box per annotated category id."""
    annotations = [
        {
            "id": index + 1,
            "image_id": 1,
            "category_id": category_id,
            "bbox": [2.0 + index, 3.0, 10.0, 8.0],
            "segmentation": [[2.0 + index, 3.0, 12.0 + index, 3.0, 12.0 + index, 11.0]],
            "area": 40.0,
            "iscrowd": 0,
        }
        for index, category_id in enumerate(annotated_category_ids)
    ]
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
        "annotations": annotations,
        "categories": categories,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    cv2.imwrite(str(path.parent / "a.jpg"), np.zeros((30, 40, 3), np.uint8))
    return path


@pytest.fixture
def names():
    """Fresh dataset names, removed from Detectron2's catalogs afterwards."""
    made = []

    def make(stem="ds"):
        made.append(f"test_{stem}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    for name in made:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def _split_opts(split, name, json_path, images):
    prefix = f"INSTSEG.DATASETS.{split}"
    return [
        f"{prefix}.NAME",
        name,
        f"{prefix}.JSON",
        str(json_path),
        f"{prefix}.IMAGES",
        str(images),
    ]


def test_registration_is_idempotent(sample_dataset, names):
    name = names()
    first = register_coco_dataset(
        name, str(sample_dataset.train_json), str(sample_dataset.train_images)
    )
    again = register_coco_dataset(
        name, str(sample_dataset.train_json), str(sample_dataset.train_images)
    )
    assert first == again
    assert DatasetCatalog.list().count(name) == 1
    meta = MetadataCatalog.get(name)
    assert meta.json_file == str(sample_dataset.train_json.resolve())
    assert meta.image_root == str(sample_dataset.train_images.resolve())
    assert meta.evaluator_type == "coco"


def test_registration_with_other_files_replaces(sample_dataset, names, tmp_path):
    name = names()
    register_coco_dataset(name, str(sample_dataset.train_json), str(sample_dataset.train_images))
    other = _write_coco(tmp_path / "other.json", SPARSE_CATEGORIES, [3, 7])
    register_coco_dataset(name, str(other), str(tmp_path))
    assert DatasetCatalog.list().count(name) == 1
    meta = MetadataCatalog.get(name)
    assert meta.json_file == str(other.resolve())
    assert meta.thing_classes == ["apple", "mango", "zebra"]
    assert len(DatasetCatalog.get(name)) == 1


def test_non_contiguous_ids_map_like_detectron2(tmp_path, names):
    json_path = _write_coco(tmp_path / "sparse.json", SPARSE_CATEGORIES, [11, 3, 7, 3])
    name = names("sparse")
    categories = register_coco_dataset(name, str(json_path), str(tmp_path))
    assert categories.ids == (3, 7, 11)
    assert categories.id_to_contiguous == {3: 0, 7: 1, 11: 2}

    # Loading through the catalog runs Detectron2's loader, which asserts that the metadata set at
    # registration equals what it derives itself.
    records = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["apple", "mango", "zebra"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 11: 2}
    assert [a["category_id"] for a in records[0]["annotations"]] == [2, 0, 1, 0]

    reference = names("reference")
    load_coco_json(str(json_path), str(tmp_path), dataset_name=reference)
    reference_meta = MetadataCatalog.get(reference)
    assert reference_meta.thing_classes == meta.thing_classes
    assert reference_meta.thing_dataset_id_to_contiguous_id == categories.id_to_contiguous


def test_classes_follow_training_json(sample_dataset, dataset_opts):
    base = build_cfg([R50_CONFIG], dataset_opts)
    assert base.MODEL.ROI_HEADS.NUM_CLASSES == 80
    cfg = register_datasets(base)
    assert cfg.is_frozen()
    assert len(sample_dataset.class_names) == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert list(cfg.INSTSEG.THING_CLASSES) == list(sample_dataset.class_names)
    assert cfg.DATASETS.TRAIN[0] in DatasetCatalog.list()
    assert cfg.DATASETS.TEST[0] in DatasetCatalog.list()
    assert base.MODEL.ROI_HEADS.NUM_CLASSES == 80  # the input config is left alone


def test_classes_of_sparse_json(tmp_path, names):
    json_path = _write_coco(tmp_path / "sparse.json", SPARSE_CATEGORIES, [3])
    cfg = register_datasets(build_cfg([], _split_opts("TRAIN", names(), json_path, tmp_path)))
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert list(cfg.INSTSEG.THING_CLASSES) == ["apple", "mango", "zebra"]


def test_explicit_num_classes_agreeing_with_json_is_accepted(dataset_opts):
    opts = dataset_opts + ["MODEL.ROI_HEADS.NUM_CLASSES", str(len(CLASS_NAMES))]
    assert len(CLASS_NAMES) == register_datasets(build_cfg([], opts)).MODEL.ROI_HEADS.NUM_CLASSES


def test_conflicting_num_classes(dataset_opts, sample_dataset):
    opts = dataset_opts + ["MODEL.ROI_HEADS.NUM_CLASSES", "3"]
    with pytest.raises(ConfigError) as info:
        register_datasets(build_cfg([], opts))
    message = str(info.value)
    assert "MODEL.ROI_HEADS.NUM_CLASSES is 3" in message
    assert str(sample_dataset.train_json) in message
    assert f"{len(CLASS_NAMES)} categories" in message


def test_conflicting_thing_classes(dataset_opts):
    opts = dataset_opts + ["INSTSEG.THING_CLASSES", "['a', 'b', 'c', 'd', 'e']"]
    with pytest.raises(ConfigError, match="INSTSEG.THING_CLASSES"):
        register_datasets(build_cfg([], opts))


def test_val_categories_differing_from_train(sample_dataset, tmp_path, names):
    val_json = _write_coco(tmp_path / "val.json", SPARSE_CATEGORIES, [3])
    opts = _split_opts("TRAIN", names(), sample_dataset.train_json, sample_dataset.train_images)
    opts += _split_opts("VAL", names(), val_json, tmp_path)
    with pytest.raises(ConfigError) as info:
        register_datasets(build_cfg([], opts))
    assert str(val_json) in str(info.value)
    assert str(sample_dataset.train_json) in str(info.value)


def test_missing_json_names_the_file(tmp_path, names):
    missing = tmp_path / "annotations" / "train.json"
    with pytest.raises(ConfigError, match=rf"{missing}: dataset JSON not found"):
        register_datasets(build_cfg([], _split_opts("TRAIN", names(), missing, tmp_path)))


def test_json_without_categories_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ConfigError, match=rf"{path}: not a COCO instances JSON"):
        load_coco_categories(path)


def test_name_without_files_is_a_config_error(names):
    with pytest.raises(ConfigError, match="INSTSEG.DATASETS.TRAIN.JSON"):
        register_datasets(build_cfg([], ["INSTSEG.DATASETS.TRAIN.NAME", names()]))


def test_no_declared_datasets_leaves_config_unchanged():
    cfg = build_cfg([])
    assert register_datasets(cfg) is cfg


def test_build_metadata_from_config_classes(dataset_opts):
    cfg = register_datasets(build_cfg([], dataset_opts))
    meta = build_metadata(cfg)
    assert meta.thing_classes == list(CLASS_NAMES)


def test_build_metadata_from_registered_training_set(tmp_path, names):
    name = names()
    json_path = _write_coco(tmp_path / "sparse.json", SPARSE_CATEGORIES, [3])
    register_coco_dataset(name, str(json_path), str(tmp_path))
    cfg = build_cfg([], ["DATASETS.TRAIN", f"('{name}',)", "MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    assert build_metadata(cfg).thing_classes == ["apple", "mango", "zebra"]


def test_build_metadata_without_names_numbers_the_classes():
    cfg = build_cfg([], ["MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    assert build_metadata(cfg).thing_classes == ["class_0", "class_1", "class_2"]


def test_build_metadata_rejects_class_count_mismatch():
    cfg = build_cfg([], ["INSTSEG.THING_CLASSES", "['a', 'b']", "MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    with pytest.raises(ConfigError, match="2 names but MODEL.ROI_HEADS.NUM_CLASSES is 3"):
        build_metadata(cfg)


def _broken(tmp_path, change):
    path = _write_coco(tmp_path / "d" / "train.json", SPARSE_CATEGORIES, [11, 3])
    coco = json.loads(path.read_text())
    change(coco, tmp_path / "d")
    path.write_text(json.dumps(coco))
    return path


def _symlink_outside(coco, root):
    cv2.imwrite(str(root.parent / "elsewhere.jpg"), np.zeros((30, 40, 3), np.uint8))
    (root / "a.jpg").unlink()
    (root / "a.jpg").symlink_to(root.parent / "elsewhere.jpg")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c, r: c.pop("annotations"), "<top level>: missing required key 'annotations'"),
        (
            lambda c, r: c["annotations"][0].update(bbox="2 3 10 8"),
            r"annotations\[0\] \(id=1\).bbox",
        ),
        (lambda c, r: c["annotations"][0].update(segmentation={"size": [30, 40]}), "counts"),
        (lambda c, r: c["images"][0].update(file_name="../a.jpg"), "file_name"),
        (lambda c, r: c["images"][0].update(file_name="/etc/a.jpg"), "absolute path"),
        (_symlink_outside, "symbolic link leading outside the image root"),
    ],
    ids=["no-annotations", "string-bbox", "rle-without-counts", "dotdot", "absolute", "symlink"],
)
def test_training_datasets_are_checked_before_use(tmp_path, names, change, message):
    path = _broken(tmp_path, change)
    cfg = build_cfg([], _split_opts("TRAIN", names(), path, tmp_path / "d"))
    with pytest.raises(ConfigError) as info:
        register_datasets(cfg)
    line = str(info.value)
    assert "\n" not in line and "instseg dataset validate --json" in line
    assert re.search(message, line), line
