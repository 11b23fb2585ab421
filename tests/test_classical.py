"""Classical baselines: each method on a drawn scene with known objects, as a meta-architecture
through instseg segment (semantic and instance outputs), and scored by Detectron2's evaluators."""

import json
import uuid

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from instseg.cli import main
from instseg.config import resolve_config_path
from instseg.data.semantic import register_semantic_dataset, write_semantic_masks
from instseg.engine.trainer import Trainer
from instseg.inference.settings import load_model_config
from instseg.modeling.classical import METHODS, regions, segment


def _scene():
    """Two separate squares, one disc touching the second, on a textured grey background."""
    rng = np.random.default_rng(0)
    image = (150 + rng.normal(0, 6, (120, 160, 3))).clip(0, 255).astype(np.uint8)
    truth = np.zeros((120, 160), bool)
    for x0, y0 in ((15, 20), (80, 60)):
        image[y0 : y0 + 30, x0 : x0 + 30] = (40, 60, 200)
        truth[y0 : y0 + 30, x0 : x0 + 30] = True
    cv2.circle(image, (20, 90), 14, (30, 160, 40), -1)
    cv2.circle(truth.view(np.uint8), (20, 90), 14, 1, -1)
    return image, truth


@pytest.mark.parametrize("method", METHODS)
def test_each_method_finds_the_objects_of_a_clean_scene(method):
    image, truth = _scene()
    ids = segment(method, image, clusters=3)
    assert ids.shape == truth.shape
    foreground = ids > 0
    iou = (foreground & truth).sum() / (foreground | truth).sum()
    assert iou > 0.8, f"{method}: foreground IoU {iou:.2f}"


def test_watershed_regions_and_components_are_the_objects():
    image, _ = _scene()
    assert len(regions("otsu", image, 3, min_area=16)) == 3
    assert len(regions("watershed", image, 3, min_area=16)) == 3


def test_segment_writes_semantic_outputs_and_instances(tmp_path, sample_dataset, capsys):
    out = tmp_path / "kmeans"
    source = str(sample_dataset.val_images)
    assert main(["segment", "--method", "kmeans", source, "--output", str(out)]) == 0
    assert "8 ok, 0 failed" in capsys.readouterr().out
    ids = cv2.imread(str(out / "00000.masks.png"), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (128, 128) and set(np.unique(ids)) <= {0, 1, 2}
    assert (out / "00000.panels.jpg").is_file() and (out / "00000.jpg").is_file()
    images = json.loads((out / "images.json").read_text())
    assert [c["name"] for c in images["categories"]] == ["background", "cluster 1", "cluster 2"]

    out = tmp_path / "watershed"
    argv = ["segment", "--method", "watershed", "--instances", source, "--output", str(out)]
    assert main(argv) == 0
    results = COCO(str(out / "images.json")).loadRes(str(out / "predictions.json"))
    assert len(results.getAnnIds()) > 0
    assert {c["name"] for c in results.loadCats(results.getCatIds())} == {"foreground"}


def test_bad_classical_settings_are_config_errors():
    from instseg.config import ConfigError

    with pytest.raises(ConfigError, match="MODEL.CLASSICAL.METHOD 'sobel'"):
        load_model_config(
            [resolve_config_path("classical")], None, ["MODEL.CLASSICAL.METHOD", "sobel"]
        )
    opts = ["MODEL.CLASSICAL.METHOD", "kmeans", "MODEL.CLASSICAL.CLUSTERS", "1"]
    with pytest.raises(ConfigError, match="2 to 8 clusters"):
        load_model_config([resolve_config_path("classical")], None, opts)


def test_classical_method_is_scored_by_semsegevaluator(sample_dataset, tmp_path):
    """Otsu over the val images, scored as foreground/background by instseg eval's evaluator,
    equals the IoU computed here from segment() and the masks."""
    masks = tmp_path / "masks"
    write_semantic_masks(sample_dataset.val_json, masks)
    for path in masks.glob("*.png"):  # every object is foreground
        ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), np.where(ids == 255, 255, ids > 0).astype(np.uint8))
    name = f"classical_fg_{uuid.uuid4().hex[:6]}"
    register_semantic_dataset(
        name, str(sample_dataset.val_images), ["background", "foreground"], mask_root=str(masks)
    )
    cfg = load_model_config(
        [resolve_config_path("classical")],
        None,
        ["DATASETS.TEST", f"('{name}',)", "DATALOADER.NUM_WORKERS", "0"],
    )
    model = Trainer.build_model(cfg)
    results = Trainer.test(cfg, model, evaluators=[Trainer.build_evaluator(cfg, name, None)])
    tp = fp = fn = 0
    for image_path in sorted(sample_dataset.val_images.glob("*.jpg")):
        pred = segment("otsu", cv2.imread(str(image_path))) > 0
        gt = cv2.imread(str(masks / f"{image_path.stem}.png"), cv2.IMREAD_UNCHANGED) == 1
        tp, fp, fn = tp + (pred & gt).sum(), fp + (pred & ~gt).sum(), fn + (~pred & gt).sum()
    assert results["sem_seg"]["IoU-foreground"] == pytest.approx(
        100 * tp / (tp + fp + fn), abs=1e-6
    )
