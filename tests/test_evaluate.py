"""The evaluation stage: a trained run's checkpoint scored on the sample val set gives the same
numbers as the official pycocotools COCOeval on the same predictions, in a JSON and on the CLI."""

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.data.sample_shapes import CLASS_NAMES
from instseg.engine.evaluate import AP_METRICS, EvalRequest, format_ap_table, run_evaluation

# A barely trained model scores most detections low; keeping every detection makes the AP
# comparison cover many predictions, matched and unmatched.
KEEP_ALL_DETECTIONS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def _nan_for_null(results):
    return {
        task: {key: float("nan") if value is None else value for key, value in metrics.items()}
        for task, metrics in results.items()
    }


@pytest.fixture(scope="module")
def evaluation(trained_run, dataset_names, tmp_path_factory):
    """run_evaluation of the run's final model on its val set, configured by its config.yaml."""
    out = tmp_path_factory.mktemp("evaluation")
    request = EvalRequest(
        config_files=[str(trained_run / "config.yaml")],
        weights=str(trained_run / "model_final.pth"),
        opts=KEEP_ALL_DETECTIONS,
        output_dir=str(out),
    )
    results, path = run_evaluation(request)
    return results, path, out, dataset_names[1]


def test_results_json_has_every_metric(evaluation):
    results, path, out, val_name = evaluation
    assert path == out / f"eval_{val_name}.json"
    written = json.loads(path.read_text())
    assert set(written) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        expected_keys = set(AP_METRICS) | {f"AP-{name}" for name in CLASS_NAMES}
        assert set(written[task]) == expected_keys
        for key, value in written[task].items():
            in_memory = results[task][key]
            if value is None:
                assert math.isnan(in_memory), key
            else:
                assert value == pytest.approx(in_memory) and 0 <= value <= 100, key
    # Every metric defined for objects this small; the 128 px images hold no large objects.
    assert all(written[task][m] is not None for task in written for m in AP_METRICS[:5])


def _pycocotools_eval(gt, predictions, iou_type):
    detections = copy.deepcopy(predictions)
    if iou_type == "segm":
        # As in the COCO protocol: the mask's own box and area, not the predicted box.
        for det in detections:
            det.pop("bbox", None)
    coco_eval = COCOeval(gt, gt.loadRes(detections), iou_type)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


def test_numbers_equal_official_cocoeval(evaluation, sample_dataset):
    results, _, out, val_name = evaluation
    predictions_file = out / f"inference_{val_name}" / "coco_instances_results.json"
    predictions = json.loads(predictions_file.read_text())
    gt = COCO(str(sample_dataset.val_json))
    # Every val image has detections to score.
    assert {p["image_id"] for p in predictions} == set(gt.getImgIds())

    for iou_type in ("bbox", "segm"):
        coco_eval = _pycocotools_eval(gt, predictions, iou_type)
        for index, metric in enumerate(AP_METRICS):
            official = coco_eval.stats[index]
            reported = results[iou_type][metric]
            if official < 0:  # undefined: no ground truth in that size range
                assert math.isnan(reported), (iou_type, metric)
            else:
                assert reported / 100 == pytest.approx(official, rel=1e-6, abs=1e-9), (
                    iou_type,
                    metric,
                )
        precision = coco_eval.eval["precision"]  # [IoU, recall, class, area, max dets]
        for k, cat_id in enumerate(coco_eval.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            official = float(np.mean(values)) if values.size else float("nan")
            name = gt.cats[int(cat_id)]["name"]
            reported = results[iou_type][f"AP-{name}"]
            assert reported / 100 == pytest.approx(official, rel=1e-6, abs=1e-9, nan_ok=True), name


def test_cli_eval_prints_the_ap_table(trained_run, dataset_names, tmp_path):
    command = [
        sys.executable, "-m", "instseg.cli", "eval",
        "--config", str(trained_run / "config.yaml"),
        "--weights", str(trained_run / "model_final.pth"),
        "--output", str(tmp_path),
        *KEEP_ALL_DETECTIONS,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results_path = tmp_path / f"eval_{dataset_names[1]}.json"
    results = _nan_for_null(json.loads(results_path.read_text()))
    assert format_ap_table(results) in done.stdout
    for name in CLASS_NAMES:
        assert any(line.strip("| ").startswith(name) for line in done.stdout.splitlines()), name
    assert f"results: {results_path}" in done.stdout


def test_bf16_evaluation_is_close_to_fp32(evaluation, trained_run, tmp_path):
    """The network in bf16 (post-processing in fp32) scores about what fp32 scores; the test
    model is barely trained, so the bound is loose here (scripts/bench_precision.py measures a
    trained one)."""
    fp32 = evaluation[0]
    request = EvalRequest(
        config_files=[str(trained_run / "config.yaml")],
        weights=str(trained_run / "model_final.pth"),
        opts=[*KEEP_ALL_DETECTIONS, "INSTSEG.PREDICT.PRECISION", "bf16"],
        output_dir=str(tmp_path),
    )
    bf16, _ = run_evaluation(request)
    for task in ("bbox", "segm"):
        assert abs(bf16[task]["AP"] - fp32[task]["AP"]) < 3.0, task
