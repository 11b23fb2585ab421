"""`instseg demo` end to end on its test schedule (`--quick --iterations 120`), as a newcomer runs
it: every artifact exists and is valid."""

import csv
import json
import re
from pathlib import Path

import cv2
import pytest
from pycocotools.coco import COCO

from instseg.demo import GRID_IMAGES, THREE_PANEL_IMAGES, VIDEO_FRAMES, VIDEO_SIZE
from instseg.io.video_reader import open_video


def test_demo_prints_ap_and_report(demo_run):
    out, stdout = demo_run
    match = re.search(r"val segm AP ([\d.]+), bbox AP ([\d.]+)", stdout)
    assert match, stdout
    printed_segm_ap = float(match.group(1))
    results = json.loads((out / "eval" / "eval_demo_sample_val.json").read_text())
    assert results["segm"]["AP"] > 0
    assert printed_segm_ap == pytest.approx(results["segm"]["AP"], abs=0.05)
    assert f"report: {out / 'report.md'}" in stdout


def test_demo_training_artifacts(demo_run):
    out, _ = demo_run
    run = out / "train"
    for name in ("config.yaml", "log.txt", "metrics.json", "model_final.pth"):
        assert (run / name).is_file(), name
    curves = cv2.imread(str(run / "training_curves.png"))
    assert curves is not None and curves.shape[0] > 100


def test_demo_predictions_are_valid(demo_run):
    out, _ = demo_run
    predict_dir = out / "predict"
    val_json = out / "sample" / "annotations" / "val.json"
    gt = COCO(str(val_json))
    detections = gt.loadRes(str(predict_dir / "predictions.json"))
    assert len(detections.getAnnIds()) > 0
    with open(predict_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(gt.getImgIds())
    assert {row["status"] for row in rows} == {"ok"}
    for row in rows[:3]:
        image = cv2.imread(str(predict_dir / Path(row["path"]).name))
        assert image is not None


def test_demo_video_reopens_with_all_frames(demo_run):
    out, _ = demo_run
    with open_video(out / "sample" / "clip.mp4") as source:
        assert source.has_audio
    with open_video(out / "video" / "clip.mp4") as video:
        frames = list(video.frames())
        assert len(frames) == VIDEO_FRAMES
        assert (video.height, video.width) == VIDEO_SIZE
        assert video.has_audio
    lines = (out / "video" / "clip.predictions.jsonl").read_text().splitlines()
    assert len(lines) == VIDEO_FRAMES


def test_demo_report_links_viewable_figures(demo_run):
    out, _ = demo_run
    report = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    linked = re.findall(r"\]\(([^)]+)\)", report)
    assert linked
    for target in linked:
        assert (out / target).exists(), target
        assert f'"{target}"' in html
    panels = sorted((out / "figures").glob("panels_*.png"))
    assert len(panels) == THREE_PANEL_IMAGES
    for panel in panels:
        image = cv2.imread(str(panel))
        # three panels side by side: wider than twice its height
        assert image is not None and image.shape[1] > 2 * image.shape[0] * 0.9
    grid = cv2.imread(str(out / "figures" / "predictions_grid.png"))
    assert grid is not None and grid.shape[0] * 4 >= grid.shape[1] * (GRID_IMAGES // 4) // 4


def test_demo_semantic_part_scores_unet_and_a_classical_baseline(demo_run):
    out, stdout = demo_run
    match = re.search(r"semantic \(val\): U-Net mIoU ([\d.]+); otsu mIoU ([\d.]+)", stdout)
    assert match, stdout
    assert 0 < float(match.group(1)) <= 100 and 0 < float(match.group(2)) <= 100
    metrics = (out / "semantic" / "train" / "metrics.json").read_text()
    assert "sem_seg/mIoU" in metrics
    for method in ("unet", "otsu"):
        panels = cv2.imread(str(out / "semantic" / method / "00000.panels.jpg"))
        assert panels is not None and panels.shape[1] > 3 * 256
    report = (out / "report.md").read_text()
    assert "Semantic segmentation" in report and "| U-Net |" in report
