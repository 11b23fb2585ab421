"""The embedded synthetic dataset: deterministic, valid COCO, and annotations of visible pixels."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from instseg.data.sample_data import (
    SampleDataset,
    draw_scene,
    make_background,
    mask_to_polygons,
    render_sample_image,
    scene_annotations,
    write_sample_dataset,
)
from instseg.data.sample_shapes import (
    CLASS_NAMES,
    MAX_OBJECTS_PER_IMAGE,
    MIN_VISIBLE_AREA,
    SceneObject,
)
from instseg.data.sample_video import iter_sample_video_frames

NUM_TRAIN = 10
NUM_VAL = 4


def _write(out_dir: Path, seed: int) -> SampleDataset:
    return write_sample_dataset(out_dir, seed=seed, num_train=NUM_TRAIN, num_val=NUM_VAL)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, SampleDataset]:
    root = tmp_path_factory.mktemp("sample_data")
    return {
        "first": _write(root / "first", seed=0),
        "repeat": _write(root / "repeat", seed=0),
        "other_seed": _write(root / "other_seed", seed=1),
    }


def _files(dataset: SampleDataset) -> dict[str, bytes]:
    root = dataset.train_json.parent.parent
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _rasterize_polygons(polygons, height, width) -> np.ndarray:
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _iou(first: np.ndarray, second: np.ndarray) -> float:
    return float((first & second).sum()) / max(float((first | second).sum()), 1.0)


def test_layout_and_returned_paths(generated):
    dataset = generated["first"]
    root = dataset.train_json.parent.parent
    assert dataset.train_json == root / "annotations" / "train.json"
    assert dataset.val_json == root / "annotations" / "val.json"
    assert dataset.train_images == root / "train"
    assert dataset.val_images == root / "val"
    assert dataset.class_names == CLASS_NAMES
    assert 4 <= len(CLASS_NAMES) <= 5
    assert len(list(dataset.train_images.glob("*.jpg"))) == NUM_TRAIN
    assert len(list(dataset.val_images.glob("*.jpg"))) == NUM_VAL


def test_same_seed_gives_identical_bytes(generated):
    first, repeat = _files(generated["first"]), _files(generated["repeat"])
    assert sorted(first) == sorted(repeat)
    assert len(first) == NUM_TRAIN + NUM_VAL + 2
    for name, content in first.items():
        assert content == repeat[name], name


def test_different_seed_differs(generated):
    first, other = _files(generated["first"]), _files(generated["other_seed"])
    assert first["annotations/train.json"] != other["annotations/train.json"]
    differing_images = [
        name for name in first if name.endswith(".jpg") and first[name] != other[name]
    ]
    assert len(differing_images) == NUM_TRAIN + NUM_VAL


def test_loads_with_pycocotools_and_matches_images(generated):
    dataset = generated["first"]
    for json_path, image_dir, num_images in (
        (dataset.train_json, dataset.train_images, NUM_TRAIN),
        (dataset.val_json, dataset.val_images, NUM_VAL),
    ):
        coco = COCO(str(json_path))
        categories = coco.loadCats(coco.getCatIds())
        assert [(cat["id"], cat["name"]) for cat in categories] == [
            (index + 1, name) for index, name in enumerate(CLASS_NAMES)
        ]
        assert len(coco.getImgIds()) == num_images
        for image_info in coco.loadImgs(coco.getImgIds()):
            image = cv2.imread(str(image_dir / image_info["file_name"]))
            assert image.shape == (image_info["height"], image_info["width"], 3)
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"]))
            assert 1 <= len(annotations) <= MAX_OBJECTS_PER_IMAGE
        ann_ids = coco.getAnnIds()
        assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) >= 1
        for annotation in coco.loadAnns(ann_ids):
            assert annotation["category_id"] in range(1, len(CLASS_NAMES) + 1)
            assert annotation["iscrowd"] == 0
            assert annotation["area"] >= MIN_VISIBLE_AREA


def test_loads_with_detectron2(generated):
    from detectron2.data.datasets import load_coco_json

    dataset = generated["first"]
    records = load_coco_json(
        str(dataset.train_json), str(dataset.train_images), dataset_name="test_sample_data_train"
    )
    assert len(records) == NUM_TRAIN
    for record in records:
        assert Path(record["file_name"]).is_file()
        assert (record["height"], record["width"]) == (256, 256)
        assert record["annotations"]
        for annotation in record["annotations"]:
            # Detectron2 maps the 1-based COCO ids to contiguous 0-based ones.
            assert 0 <= annotation["category_id"] < len(CLASS_NAMES)
            assert all(
                len(polygon) >= 6 and len(polygon) % 2 == 0
                for polygon in annotation["segmentation"]
            )


def test_polygons_rasterize_to_area_inside_bbox(generated):
    dataset = generated["first"]
    data = json.loads(dataset.train_json.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    assert data["annotations"]
    for annotation in data["annotations"]:
        height, width = sizes[annotation["image_id"]]
        for polygon in annotation["segmentation"]:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
        mask = _rasterize_polygons(annotation["segmentation"], height, width)
        area = annotation["area"]
        assert abs(int(mask.sum()) - area) <= max(3, 0.02 * area), annotation["id"]
        x, y, box_w, box_h = (int(value) for value in annotation["bbox"])
        outside = mask.copy()
        outside[y : y + box_h, x : x + box_w] = False
        assert not outside.any(), annotation["id"]


def test_polygons_match_visible_masks():
    """Re-rasterised polygons must agree with the masks the image was drawn with."""
    checked = 0
    for image_seed in range(6):
        rng = np.random.default_rng(image_seed)
        background = make_background(rng, 128, 160)
        objects = [
            SceneObject(
                class_index=index % len(CLASS_NAMES),
                center=(float(rng.uniform(10, 150)), float(rng.uniform(10, 118))),
                size=float(rng.uniform(14, 70)),
                angle=float(rng.uniform(0, 360)),
                color=(200, 60, 40),
                aspect=float(rng.uniform(0.6, 1.0)),
            )
            for index in range(5)
        ]
        _, visible_masks = draw_scene(background, objects)
        for visible in visible_masks:
            rows = np.flatnonzero(visible.any(axis=1))
            cols = np.flatnonzero(visible.any(axis=0))
            if rows.size == 0 or min(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 < 20:
                continue
            polygons = mask_to_polygons(visible)
            assert _iou(_rasterize_polygons(polygons, 128, 160), visible) > 0.9
            checked += 1
    assert checked >= 10


def test_occluded_object_annotation_excludes_covering_object():
    background = np.full((96, 96, 3), 90, dtype=np.uint8)
    below = SceneObject(class_index=2, center=(40.0, 48.0), size=60.0, angle=0.0, color=(0, 0, 255))
    above = SceneObject(
        class_index=0,
        center=(62.0, 48.0),
        size=36.0,
        angle=0.0,
        color=(255, 0, 0),
        texture="checker",
    )
    image, (visible_below, visible_above) = draw_scene(background, [below, above])
    _, (full_below,) = draw_scene(background, [below])
    _, (full_above,) = draw_scene(background, [above])

    overlap = full_below & full_above
    assert overlap.sum() > 50, "the test scene must overlap"
    assert np.array_equal(visible_above, full_above)
    assert np.array_equal(visible_below, full_below & ~full_above)
    # The covered part of the lower object shows the upper object's colours.
    assert (image[overlap] != np.array(below.color, dtype=np.uint8)).any(axis=1).all()

    annotations = scene_annotations([below, above], [visible_below, visible_above])
    assert [annotation["category_id"] for annotation in annotations] == [3, 1]
    below_annotation = annotations[0]
    assert below_annotation["area"] == int(visible_below.sum())
    rasterized = _rasterize_polygons(below_annotation["segmentation"], 96, 96)
    assert (rasterized & overlap).sum() <= 0.02 * overlap.sum()
    assert _iou(rasterized, visible_below) > 0.95


def test_hidden_object_is_dropped():
    background = np.zeros((64, 64, 3), dtype=np.uint8)
    hidden = SceneObject(
        class_index=0, center=(32.0, 32.0), size=14.0, angle=0.0, color=(0, 255, 0)
    )
    cover = SceneObject(class_index=2, center=(32.0, 32.0), size=50.0, angle=0.0, color=(0, 0, 255))
    _, visible_masks = draw_scene(background, [hidden, cover])
    assert not visible_masks[0].any()
    annotations = scene_annotations([hidden, cover], visible_masks)
    assert [annotation["category_id"] for annotation in annotations] == [3]


def test_render_sample_image_is_deterministic():
    first_image, first_annotations = render_sample_image(7, image_size=(128, 96))
    second_image, second_annotations = render_sample_image(7, image_size=(128, 96))
    assert first_image.shape == (128, 96, 3) and first_image.dtype == np.uint8
    assert np.array_equal(first_image, second_image)
    assert first_annotations == second_annotations


def test_video_frames_shape_motion_and_determinism():
    frames = list(iter_sample_video_frames(6, size=(120, 160), seed=3))
    assert len(frames) == 6
    for frame in frames:
        assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    for previous, current in zip(frames, frames[1:], strict=False):
        difference = np.abs(previous.astype(np.int16) - current.astype(np.int16))
        # Objects move smoothly: the frame changes, but only a little between neighbours.
        assert difference.max() > 0
        assert difference.mean() < 10
    repeat = list(iter_sample_video_frames(6, size=(120, 160), seed=3))
    assert all(np.array_equal(first, second) for first, second in zip(frames, repeat, strict=True))
    other = next(iter_sample_video_frames(1, size=(120, 160), seed=4))
    assert not np.array_equal(frames[0], other)
