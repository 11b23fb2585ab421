"""COCO evaluator backends agree with the official pycocotools numbers on real, imperfect predictions."""

import importlib.util
import json
import logging
import math
import os
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import coco_evaluation as d2_coco
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

from instseg.engine.coco_evaluation import (
    InstsegCOCOEvaluator,
    has_compiled_ops,
    select_cocoeval_backend,
)
from instseg.engine.evaluate import (
    AP_METRICS,
    format_ap_table,
    format_per_class_ap,
    write_results_json,
)

# Non-contiguous ids exercise Detectron2's contiguous <-> dataset id mapping.
CATEGORIES = [{"id": 1, "name": "alpha"}, {"id": 3, "name": "beta"}, {"id": 7, "name": "gamma"}]
# (height, width): room for small (< 32^2 px), medium and large (> 96^2 px) objects.
IMAGE_SIZES = [(64, 64), (160, 160), (96, 128), (64, 64), (144, 136), (152, 144)]


def _polygon_ann(x0, y0, x1, y1):
    """An octagon inscribed in the box, as a COCO polygon."""
    dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
    pts = [
        (x0 + dx, y0),
        (x1 - dx, y0),
        (x1, y0 + dy),
        (x1, y1 - dy),
        (x1 - dx, y1),
        (x0 + dx, y1),
        (x0, y1 - dy),
        (x0, y0 + dy),
    ]
    return {"segmentation": [[float(c) for p in pts for c in p]]}


def _ellipse_mask(h, w, x0, y0, x1, y1):
    yy, xx = np.mgrid[:h, :w]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0


def _make_coco_gt(rng):
    """Six images, a mix of polygon, compressed-RLE, uncompressed-RLE and crowd annotations."""
    images, annotations = [], []
    ann_id = 1
    for img_id, (h, w) in enumerate(IMAGE_SIZES, start=1):
        images.append({"id": img_id, "file_name": f"img{img_id}.png", "height": h, "width": w})
        n = 3 + img_id % 3
        for k in range(n):
            # One large object where the image allows it, otherwise small and medium ones.
            if k == 0 and min(h, w) >= 128:
                bw, bh = int(rng.integers(122, min(w, h) + 1)), int(rng.integers(122, h + 1))
            else:
                bw, bh = int(rng.integers(8, w // 2)), int(rng.integers(8, h // 2))
            x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            x1, y1 = x0 + bw, y0 + bh
            kind = (img_id + k) % 3
            if kind == 0:
                ann = _polygon_ann(x0, y0, x1, y1)
                rle = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], h, w))
            else:
                mask = _ellipse_mask(h, w, x0, y0, x1, y1)
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                if kind == 1:
                    ann = {"segmentation": {"size": [h, w], "counts": rle["counts"].decode()}}
                else:
                    # Uncompressed RLE: column-major run lengths starting with zeros.
                    flat = mask.flatten(order="F").astype(np.int8)
                    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [2]])))
                    runs = np.diff(np.concatenate([[0], change]))
                    ann = {"segmentation": {"size": [h, w], "counts": runs.tolist()}}
            area = float(mask_util.area(rle))
            if area == 0:
                continue
            bx, by, bw_, bh_ = mask_util.toBbox(rle).tolist()
            ann.update(
                id=ann_id,
                image_id=img_id,
                category_id=CATEGORIES[(img_id + k) % 3]["id"],
                bbox=[bx, by, bw_, bh_],
                area=area,
                iscrowd=0,
            )
            annotations.append(ann)
            ann_id += 1
    # A crowd region: detections on it are ignored rather than counted as false positives.
    crowd = _ellipse_mask(160, 160, 100, 4, 150, 40)
    crowd_rle = mask_util.encode(np.asfortranarray(crowd.astype(np.uint8)))
    annotations.append(
        {
            "id": ann_id,
            "image_id": 2,
            "category_id": 3,
            "segmentation": {"size": [160, 160], "counts": crowd_rle["counts"].decode()},
            "bbox": mask_util.toBbox(crowd_rle).tolist(),
            "area": float(mask_util.area(crowd_rle)),
            "iscrowd": 1,
        }
    )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory):
    """Registered COCO-format dataset (loaded once, so the id mapping metadata exists)."""
    rng = np.random.default_rng(0)
    json_file = tmp_path_factory.mktemp("coco") / "gt.json"
    json_file.write_text(json.dumps(_make_coco_gt(rng)))
    name = f"instseg_eval_test_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_file), str(json_file.parent))
    DatasetCatalog.get(name)
    try:
        yield name, COCO(str(json_file))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _dilate(mask, steps):
    """Binary dilation (steps > 0) or erosion (steps < 0) with a 3x3 cross."""
    mask = mask.copy()
    for _ in range(abs(steps)):
        p = np.pad(mask, 1, constant_values=steps < 0)
        shifted = [p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]
        mask = np.logical_or.reduce(shifted) if steps > 0 else np.logical_and.reduce(shifted)
    return mask


def _predictions(coco, dataset_name, *, perfect, seed=1):
    """Detectron2-style (inputs, outputs) built from the ground truth, perturbed unless perfect."""
    rng = np.random.default_rng(seed)
    to_contiguous = MetadataCatalog.get(dataset_name).thing_dataset_id_to_contiguous_id
    inputs, outputs = [], []
    for img in coco.loadImgs(sorted(coco.getImgIds())):
        h, w = img["height"], img["width"]
        boxes, masks, scores, classes = [], [], [], []
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"], iscrowd=False)):
            x, y, bw, bh = ann["bbox"]
            box = np.array([x, y, x + bw, y + bh])
            mask = coco.annToMask(ann).astype(bool)
            cls = to_contiguous[ann["category_id"]]
            if not perfect:
                if rng.random() < 0.15:
                    continue  # missed object
                box = np.clip(box + rng.normal(0, 0.08 * max(bw, bh), 4), 0, [w, h, w, h])
                mask = _dilate(mask, int(rng.integers(-2, 3)))
                if rng.random() < 0.1:
                    cls = (cls + 1) % len(CATEGORIES)  # wrong class
            boxes.append(box)
            masks.append(mask)
            scores.append(1.0 if perfect else rng.uniform(0.3, 1.0))
            classes.append(cls)
        if not perfect:
            for _ in range(int(rng.integers(1, 3))):  # false positives
                x0, y0 = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
                x1, y1 = x0 + rng.uniform(5, w - x0), y0 + rng.uniform(5, h - y0)
                boxes.append(np.array([x0, y0, x1, y1]))
                masks.append(_ellipse_mask(h, w, x0, y0, x1, y1))
                scores.append(rng.uniform(0.05, 0.9))
                classes.append(int(rng.integers(len(CATEGORIES))))
        instances = Instances(
            (h, w),
            pred_boxes=Boxes(torch.tensor(np.array(boxes), dtype=torch.float32).reshape(-1, 4)),
            scores=torch.tensor(scores, dtype=torch.float32),
            pred_classes=torch.tensor(classes, dtype=torch.int64),
            pred_masks=torch.from_numpy(np.array(masks, dtype=bool).reshape(-1, h, w)),
        )
        inputs.append({"image_id": img["id"], "height": h, "width": w})
        outputs.append({"instances": instances})
    return inputs, outputs


def _evaluate(dataset_name, inputs, outputs, backend):
    evaluator = InstsegCOCOEvaluator(dataset_name, distributed=False, backend=backend)
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def noisy_results(coco_dataset):
    name, coco = coco_dataset
    inputs, outputs = _predictions(coco, name, perfect=False)
    return {b: _evaluate(name, inputs, outputs, b) for b in ("faster-coco-eval", "pycocotools")}


def test_backends_agree_on_all_metrics(noisy_results):
    fast, official = noisy_results["faster-coco-eval"], noisy_results["pycocotools"]
    assert set(fast) == set(official) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        expected_keys = {*AP_METRICS, *(f"AP-{c['name']}" for c in CATEGORIES)}
        assert set(fast[task]) == set(official[task]) == expected_keys
        for key, ref in official[task].items():
            assert math.isfinite(ref), (task, key)  # every size range and class is populated
            assert fast[task][key] == pytest.approx(ref, abs=1e-4), (task, key)
        # Perturbed predictions: far from perfect, but not trivially zero.
        assert 5.0 < official[task]["AP"] < 95.0


@pytest.mark.parametrize("backend", ["auto", "pycocotools"])
def test_perfect_predictions_score_100(coco_dataset, backend):
    name, coco = coco_dataset
    inputs, outputs = _predictions(coco, name, perfect=True)
    results = _evaluate(name, inputs, outputs, backend)
    for task in ("bbox", "segm"):
        for key, value in results[task].items():
            assert value == pytest.approx(100.0, abs=1e-6), (task, key)


def test_auto_backend_selection(coco_dataset):
    compiled = importlib.util.find_spec("detectron2._C") is not None
    assert has_compiled_ops() is compiled
    expected = "detectron2-fast" if compiled else "faster-coco-eval"
    assert select_cocoeval_backend() == expected
    assert InstsegCOCOEvaluator(coco_dataset[0], distributed=False).backend == expected
    # Detectron2's meaning of use_fast_impl=False (official code) is kept under "auto".
    official = InstsegCOCOEvaluator(coco_dataset[0], distributed=False, use_fast_impl=False)
    assert official.backend == "pycocotools"


def test_backend_argument_validation(coco_dataset):
    with pytest.raises(ValueError, match="Unknown COCO eval backend"):
        select_cocoeval_backend("lvis")
    if not has_compiled_ops():
        with pytest.raises(RuntimeError, match="compiled ops"):
            InstsegCOCOEvaluator(coco_dataset[0], distributed=False, backend="detectron2-fast")


def test_faster_backend_really_runs_and_restores_detectron2(coco_dataset, caplog, capsys):
    name, coco = coco_dataset
    inputs, outputs = _predictions(coco, name, perfect=False, seed=2)
    original = d2_coco.COCOeval_opt
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="faster_coco_eval"):
        _evaluate(name, inputs, outputs, "faster-coco-eval")
    fast_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("faster_coco"))
    assert "COCOeval_opt.evaluate() finished" in fast_log
    # pycocotools' evaluator prints its progress; it must not have run.
    assert "Running per image evaluation" not in capsys.readouterr().out
    assert d2_coco.COCOeval_opt is original

    caplog.clear()
    _evaluate(name, inputs, outputs, "pycocotools")
    assert "Running per image evaluation" in capsys.readouterr().out
    assert not [r for r in caplog.records if r.name.startswith("faster_coco")]


def test_format_tables_contain_numbers(noisy_results):
    results = noisy_results["faster-coco-eval"]
    table = format_ap_table(results)
    lines = table.splitlines()
    assert all(metric in lines[0] for metric in AP_METRICS)
    for task in ("bbox", "segm"):
        row = next(line for line in lines if line.strip("| ").startswith(task))
        for metric in AP_METRICS:
            assert f"{results[task][metric]:.2f}" in row

    per_class = format_per_class_ap(results)
    assert "bbox AP" in per_class and "segm AP" in per_class
    for cat in CATEGORIES:
        row = next(line for line in per_class.splitlines() if cat["name"] in line)
        for task in ("bbox", "segm"):
            assert f"{results[task]['AP-' + cat['name']]:.2f}" in row


def test_format_ap_table_shows_undefined_metrics():
    table = format_ap_table({"segm": {"AP": 12.3456, "APl": float("nan")}})
    assert "12.35" in table and "nan" in table and "bbox" not in table


def test_write_results_json_is_atomic(tmp_path, noisy_results):
    results = noisy_results["pycocotools"]
    out = tmp_path / "metrics" / "results.json"
    write_results_json(results, out)
    assert os.listdir(out.parent) == ["results.json"]
    assert json.loads(out.read_text()) == results

    # Overwrite: the new content replaces the old, still without leftovers.
    write_results_json({"segm": {"AP": 1.5, "APl": float("nan"), "n": np.float32(2.0)}}, out)
    assert json.loads(out.read_text()) == {"segm": {"AP": 1.5, "APl": None, "n": 2.0}}
    assert os.listdir(out.parent) == ["results.json"]

    # A failing write leaves the previous file intact.
    before = out.read_text()
    with pytest.raises(TypeError):
        write_results_json({"bbox": {"AP": object()}}, out)
    assert out.read_text() == before
    assert os.listdir(out.parent) == ["results.json"]
