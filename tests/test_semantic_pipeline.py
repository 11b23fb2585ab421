"""Semantic segmentation end to end: U-Net and DeepLabV3+ trained by the same trainer, evaluated
by SemSegEvaluator (checked against a confusion matrix computed here), and predicted through
the one pipeline for a folder and a video."""

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import DEEPLAB_CONFIG, SEMANTIC_TINY_OPTS, UNET_CONFIG, semantic_dataset_opts
from detectron2.data import DatasetCatalog
from pycocotools.coco import COCO

from instseg.config import build_cfg
from instseg.data.catalog import register_datasets
from instseg.data.sample_video import iter_sample_video_frames
from instseg.data.semantic import SemanticGroundTruth
from instseg.engine.checkpoints import FinetuneCheckpointer
from instseg.engine.evaluate import EvalRequest, format_results, run_evaluation
from instseg.engine.trainer import Trainer, TrainRequest, train
from instseg.inference.job import PredictOptions
from instseg.inference.runner import predict
from instseg.inference.settings import PredictSettings, load_model_config
from instseg.inference.video_sink import predict_video
from instseg.io.clips import write_test_clip
from instseg.io.video_reader import open_video

CLASSES = ["background", "ellipse", "triangle", "rectangle", "star", "cross"]


def test_unet_trains_evaluates_and_keeps_the_best_checkpoint(semantic_run):
    run_dir, results, _ = semantic_run
    sem = results["sem_seg"]
    assert 0 < sem["mIoU"] <= 100 and 0 < sem["pACC"] <= 100
    assert {f"IoU-{c}" for c in CLASSES} <= set(sem)
    assert (run_dir / "model_best.pth").is_file() and (run_dir / "model_final.pth").is_file()
    lines = [json.loads(x) for x in (run_dir / "metrics.json").read_text().splitlines()]
    assert any("sem_seg/mIoU" in line for line in lines)
    assert any("val/loss_sem_seg" in line for line in lines)
    table = format_results(results)
    assert "mIoU" in table and "| triangle |" in table.replace("  ", " ").replace("  ", " ")


def test_deeplabv3plus_trains_and_resumes(tmp_path, sample_dataset):
    opts = semantic_dataset_opts(sample_dataset, "deeplab") + SEMANTIC_TINY_OPTS
    opts += ["SOLVER.MAX_ITER", "6", "TEST.EVAL_PERIOD", "6", "SOLVER.CHECKPOINT_PERIOD", "3"]
    results = train(TrainRequest([str(DEEPLAB_CONFIG)], opts=opts, output_dir=str(tmp_path)))
    assert 0 <= results["sem_seg"]["mIoU"] <= 100
    # As if killed after the first checkpoint: --resume goes on from there.
    (tmp_path / "last_checkpoint").write_text("model_0000002.pth")
    again = TrainRequest([str(DEEPLAB_CONFIG)], opts=opts, output_dir=str(tmp_path), resume=True)
    assert "sem_seg" in train(again)
    log = (tmp_path / "log.txt").read_text()
    assert "Starting training from iteration 3" in log


def _confusion_miou(cfg, weights, dataset):
    """mIoU (percent) over the classes present in the ground truth, from a confusion matrix
    of argmax predictions against the masks, both computed here."""
    model = Trainer.build_model(cfg)
    FinetuneCheckpointer(model).load(weights)
    model.eval()
    k = len(CLASSES)
    confusion = np.zeros((k, k), dtype=np.int64)
    truth = SemanticGroundTruth(dataset)
    by_file = {r["file_name"]: r for r in DatasetCatalog.get(dataset)}
    with torch.no_grad():
        for batch in Trainer.build_test_loader(cfg, dataset):
            for item, out in zip(batch, model(batch), strict=True):
                pred = out["sem_seg"].argmax(0).numpy()
                gt = truth(by_file[item["file_name"]]["sem_seg_file_name"])
                keep = gt != 255
                confusion += np.bincount(gt[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(float)
    gt_pixels, pred_pixels = confusion.sum(1), confusion.sum(0)
    present = gt_pixels > 0
    iou = tp[present] / (gt_pixels + pred_pixels - tp)[present]
    return 100 * iou.mean(), 100 * tp.sum() / confusion.sum()


def test_eval_miou_equals_a_confusion_matrix_computed_here(semantic_run, tmp_path):
    run_dir, _, opts = semantic_run
    weights = str(run_dir / "model_final.pth")
    results, path = run_evaluation(
        EvalRequest([str(UNET_CONFIG)], weights, opts=opts, output_dir=str(tmp_path))
    )
    assert json.loads(path.read_text())["sem_seg"]["mIoU"] == pytest.approx(
        results["sem_seg"]["mIoU"], abs=1e-9
    )
    cfg = register_datasets(build_cfg([str(UNET_CONFIG)], opts))
    miou, pixel_accuracy = _confusion_miou(cfg, weights, cfg.DATASETS.TEST[0])
    assert results["sem_seg"]["mIoU"] == pytest.approx(miou, abs=1e-6)
    assert results["sem_seg"]["pACC"] == pytest.approx(pixel_accuracy, abs=1e-6)


def test_predict_folder_writes_class_ids_overlay_and_panels(semantic_run, sample_dataset, tmp_path):
    run_dir, _, _ = semantic_run
    cfg = load_model_config([str(UNET_CONFIG)], str(run_dir / "model_final.pth"))
    assert list(cfg.INSTSEG.SEMANTIC.CLASSES) == CLASSES  # from the run's config.yaml
    out = tmp_path / "out"
    result = predict(cfg, str(sample_dataset.val_images), PredictOptions(str(out), progress=False))
    assert result.errors == 0 and result.ok == len(list(sample_dataset.val_images.glob("*.jpg")))
    for image_path in sorted(sample_dataset.val_images.glob("*.jpg"))[:3]:
        image = cv2.imread(str(image_path))
        ids = cv2.imread(str(out / f"{image_path.stem}.masks.png"), cv2.IMREAD_UNCHANGED)
        assert ids.shape == image.shape[:2] and ids.dtype == np.uint8
        assert set(np.unique(ids)) <= set(range(len(CLASSES)))
        overlay = cv2.imread(str(out / image_path.name))
        assert overlay.shape == image.shape
        panels = cv2.imread(str(out / f"{image_path.stem}.panels.jpg"))
        assert panels.shape[0] > image.shape[0] and panels.shape[1] > 3 * image.shape[1]
    images = json.loads((out / "images.json").read_text())
    coco = COCO(str(out / "images.json"))
    results = coco.loadRes(str(out / "predictions.json"))
    first = images["images"][0]
    shares = first["class_pixel_shares"]
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    ids = cv2.imread(str(out / "00000.masks.png"), cv2.IMREAD_UNCHANGED)
    for ann in results.loadAnns(results.getAnnIds(imgIds=[first["id"]])):
        class_id = ann["category_id"] - 1
        np.testing.assert_array_equal(results.annToMask(ann).astype(bool), ids == class_id)
        assert shares[CLASSES[class_id]] == pytest.approx((ids == class_id).mean(), abs=1e-6)


def test_predict_video_writes_an_overlay_video_and_per_frame_classes(semantic_run, tmp_path):
    run_dir, _, _ = semantic_run
    cfg = load_model_config([str(UNET_CONFIG)], str(run_dir / "model_final.pth"))
    frames = iter_sample_video_frames(6, size=(120, 160), seed=1)
    clip = write_test_clip(tmp_path / "clip.mp4", frames, fps=10.0).path
    result = predict_video(PredictSettings.from_cfg(cfg), clip, tmp_path / "out", progress=False)
    assert result.ok
    with open_video(result.video) as video:
        decoded = list(video)
    assert len(decoded) == 6 and decoded[0].image.shape == (120, 160, 3)
    lines = [json.loads(x) for x in result.predictions.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    for line in lines:
        assert sum(r["pixel_share"] for r in line["results"]) == pytest.approx(1.0, abs=1e-5)
        assert {r["name"] for r in line["results"]} <= set(CLASSES)
    assert not (tmp_path / "out" / "clip.tracks.csv").exists()


@pytest.mark.parametrize(
    "name",
    [
        "semantic_unet_cpu",
        "semantic_deeplabv3plus_cpu",
        "semantic_unet_R34",
        "semantic_deeplabv3plus_R50",
    ],
)
def test_shipped_semantic_configs_train_and_predict_any_size(name):
    from detectron2.modeling import build_model

    from instseg.config import resolve_config_path

    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "3",
        "INPUT.CROP.ENABLED",
        "False",
    ]
    cfg = build_cfg([resolve_config_path(name)], opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    image = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8).float()
    losses = model([{"image": image, "sem_seg": torch.randint(0, 3, (64, 96))}] * 2)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": image[:, :50, :70], "height": 100, "width": 140}])
    assert tuple(out["sem_seg"].shape) == (3, 100, 140)


def test_python_api_gives_class_maps_drawn_and_as_coco(semantic_run, sample_dataset):
    from instseg import Predictor

    run_dir, _, _ = semantic_run
    predictor = Predictor(run_dir / "config.yaml", run_dir / "model_final.pth", draw=True)
    image = cv2.imread(str(sample_dataset.val_images / "00000.jpg"))
    (result,) = predictor.predict(image)
    assert result.sem_seg.shape == image.shape[:2] and len(result.instances) == 0
    assert result.drawn.shape == image.shape
    coco = result.to_coco(image_id=7)
    assert {r["image_id"] for r in coco} == {7}
    assert sum(r["area"] for r in coco) == image.shape[0] * image.shape[1]
