"""``instseg predict`` end to end with a real model on real files: results equal Detectron2's
DefaultPredictor, outputs are COCO-loadable, bad inputs are rows not crashes, and interrupted or
sharded jobs end with the same outputs as a plain run.

The model is the demo config at test sizes with seeded random weights: unlike a few training
iterations, it gives instances (class scores near 1/6) on every image, every time.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from conftest import kill_at_random_moments, png_declaring
from detectron2.engine import DefaultPredictor
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.config import PROJECT_CONFIG_DIR, ConfigError
from instseg.data.sample_video import iter_sample_video_frames
from instseg.inference.runner import (
    PARTS_DIR_NAME,
    PredictOptions,
    load_predict_cfg,
    predict,
)
from instseg.io.clips import write_test_clip

DEMO_CONFIG = str(PROJECT_CONFIG_DIR / "demo_R18_FPN_cpu.yaml")
# At most this many instances per image, which keeps drawing cheap.
DETECTIONS = 4
PREDICT_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", str(DETECTIONS),
]  # fmt: skip
# Reference inputs: (sample val image, where it goes in the input tree).
LAYOUT = [
    ("00000.jpg", "00000.jpg"),
    ("00001.jpg", "sub/00001.jpg"),
    ("00002.jpg", "sub/deeper/00002.jpg"),
    ("00003.jpg", "sub/deeper/00003.jpg"),
]


def _options(run_dir, output_dir, opts=(), **kwargs) -> PredictOptions:
    return PredictOptions(
        output_dir=str(output_dir),
        config_files=[str(run_dir / "config.yaml")],
        weights=str(run_dir / "model_final.pth"),
        opts=[*PREDICT_OPTS, *opts],
        progress=False,
        **kwargs,
    )


def _run(run_dir, source, output_dir, opts=(), **kwargs):
    options = _options(run_dir, output_dir, opts, **kwargs)
    return predict(load_predict_cfg(options), str(source), options)


def _manifest(output_dir) -> list[dict]:
    with open(Path(output_dir) / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _load(output_dir, name):
    return json.loads((Path(output_dir) / name).read_text())


def _assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    """Equal as sets of results, up to the float noise that another batch composition gives
    (boxes and scores within 1e-4, masks within a few pixels)."""
    assert len(got) == len(expected)
    pending = defaultdict(list)
    for result in expected:
        pending[result["image_id"], result["category_id"]].append(result)
    for result in got:
        candidates = pending[result["image_id"], result["category_id"]]
        match = next(
            (
                c
                for c in candidates
                if np.allclose(c["bbox"], result["bbox"], atol=1e-4)
                and abs(c["score"] - result["score"]) <= 1e-4
            ),
            None,
        )
        assert match is not None, f"no counterpart for {result}"
        candidates.remove(match)
        a, b = (mask_util.decode(r["segmentation"]) for r in (result, match))
        assert np.count_nonzero(a != b) <= 4


def _copy_tree(sample_dataset, folder, layout=LAYOUT) -> Path:
    for src, rel in layout:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_dataset.val_images / src, folder / rel)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, random_init_run, sample_dataset):
    """One run over a nested folder: masks saved, ids from the val JSON, batches of 3."""
    base = tmp_path_factory.mktemp("reference")
    images = _copy_tree(sample_dataset, base / "images")
    output = base / "out"
    result = _run(
        random_init_run,
        images,
        output,
        ["INSTSEG.PREDICT.SAVE_MASKS", "True", "INSTSEG.PREDICT.BATCH_SIZE", "3"],
        coco_json=str(sample_dataset.val_json),
    )
    return {"images": images, "output": output, "result": result}


def _assert_equal_default_predictor(output, images, run_dir, sample_dataset, max_flipped):
    """Every image's results are DefaultPredictor's, in its order: boxes and scores to 1e-4,
    classes equal, masks with at most ``max_flipped`` differing pixels each."""
    cfg = load_predict_cfg(_options(run_dir, output))
    predictor = DefaultPredictor(cfg)
    id_of = {
        image["file_name"]: image["id"]
        for image in _load(sample_dataset.val_json.parent, "val.json")["images"]
    }
    predictions = _load(output, "predictions.json")
    for src, rel in LAYOUT:
        expected = predictor(cv2.imread(str(images / rel)))["instances"]
        got = [p for p in predictions if p["image_id"] == id_of[src]]
        assert len(got) == len(expected) == DETECTIONS
        boxes = expected.pred_boxes.tensor.numpy()
        for k, result in enumerate(got):
            x0, y0, x1, y1 = boxes[k]
            np.testing.assert_allclose(result["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-4)
            assert result["score"] == pytest.approx(float(expected.scores[k]), abs=1e-4)
            assert result["category_id"] == int(expected.pred_classes[k]) + 1  # val ids are 1..5
            mask = mask_util.decode(result["segmentation"]).astype(bool)
            assert (mask != expected.pred_masks[k].numpy()).sum() <= max_flipped


def test_predictions_equal_default_predictor(reference, random_init_run, sample_dataset):
    """The default run (norms folded, channels-last, batches of 3) matches DefaultPredictor to
    float rounding, which may flip a pixel whose mask probability sits at the threshold."""
    assert reference["result"].ok == len(LAYOUT) and reference["result"].exit_status == 0
    _assert_equal_default_predictor(
        reference["output"], reference["images"], random_init_run, sample_dataset, 1
    )


def test_unoptimized_predictions_are_default_predictor_exactly(
    reference, random_init_run, sample_dataset, tmp_path
):
    """With INSTSEG.PREDICT.OPTIMIZE_MODEL off and batch 1 the model is DefaultPredictor's own:
    the same masks pixel for pixel."""
    output = tmp_path / "out"
    opts = ["INSTSEG.PREDICT.OPTIMIZE_MODEL", "False", "INSTSEG.PREDICT.RENDER", "False"]
    result = _run(
        random_init_run,
        reference["images"],
        output,
        opts,
        coco_json=str(sample_dataset.val_json),
    )
    assert result.ok == len(LAYOUT) and result.exit_status == 0
    _assert_equal_default_predictor(output, reference["images"], random_init_run, sample_dataset, 0)


def test_predictions_evaluate_against_the_dataset(reference, sample_dataset):
    output = reference["output"]
    ground_truth = COCO(str(sample_dataset.val_json))
    detections = ground_truth.loadRes(str(output / "predictions.json"))
    evaluator = COCOeval(ground_truth, detections, "segm")
    evaluator.params.imgIds = sorted({p["image_id"] for p in _load(output, "predictions.json")})
    evaluator.params.useCats = 0  # the random model's classes are noise; the ids are the point
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    # Every predicted image meets the dataset's image of the same id in COCOeval, ground truth
    # and detections on both sides (AP is -1 where either side is missing).
    met = {e["image_id"] for e in evaluator.evalImgs if e and e["gtIds"] and e["dtIds"]}
    assert met == set(evaluator.params.imgIds) and len(met) == len(LAYOUT)
    assert evaluator.stats[0] >= 0

    # images.json names the dataset's ids and categories and works as a ground truth on its own.
    images = _load(output, "images.json")
    dataset = _load(sample_dataset.val_json.parent, "val.json")
    by_name = {image["file_name"]: image["id"] for image in dataset["images"]}
    assert {i["file_name"]: i["id"] for i in images["images"]} == {
        rel: by_name[src] for src, rel in LAYOUT
    }
    assert images["categories"] == [
        {"id": c["id"], "name": c["name"]} for c in dataset["categories"]
    ]
    COCO(str(output / "images.json")).loadRes(str(output / "predictions.json"))


def test_output_tree_mirrors_the_inputs(reference):
    output = reference["output"]
    for _, rel in LAYOUT:
        drawn = cv2.imread(str(output / rel))
        assert drawn is not None and drawn.shape == cv2.imread(str(reference["images"] / rel)).shape
        assert (output / rel).with_suffix(".masks.png").is_file()
    assert [row["path"] for row in _manifest(output)] == sorted(rel for _, rel in LAYOUT)
    counts = Counter(p["image_id"] for p in _load(output, "predictions.json"))
    ids = {i["file_name"]: i["id"] for i in _load(output, "images.json")["images"]}
    for row in _manifest(output):
        assert row["status"] == "ok" and int(row["instances"]) == counts[ids[row["path"]]]
    assert (output / "config.yaml").is_file() and not (output / PARTS_DIR_NAME).exists()
    # No temporary file or commit journal left; only the folder's lock and index are hidden.
    assert sorted(p.name for p in output.rglob(".*")) == [".instseg-index.json", ".instseg.lock"]


def test_mask_pngs_hold_instance_ids_in_score_order(reference):
    output = reference["output"]
    images = {image["file_name"]: image["id"] for image in _load(output, "images.json")["images"]}
    predictions = _load(output, "predictions.json")
    for _, rel in LAYOUT:
        ids = cv2.imread(str((output / rel).with_suffix(".masks.png")), cv2.IMREAD_UNCHANGED)
        results = [p for p in predictions if p["image_id"] == images[rel]]
        assert ids.dtype == np.uint8 and ids.max() <= len(results) <= DETECTIONS
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        claimed = np.zeros(ids.shape, dtype=bool)
        for k, result in enumerate(results, start=1):
            mask = mask_util.decode(result["segmentation"]).astype(bool)
            # Instance k owns its mask except where a higher-scoring instance was painted.
            assert np.array_equal(ids == k, mask & ~claimed)
            claimed |= mask
        assert np.array_equal(ids == 0, ~claimed)


def test_bad_files_are_error_rows(tmp_path, random_init_run, sample_dataset):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = cv2.imread(str(sample_dataset.val_images / "00004.jpg"))
    cv2.imwrite(str(folder / "good.jpg"), good)
    cv2.imwrite(str(folder / "good.png"), good)  # same stem: output names keep the extension
    cv2.imwrite(str(folder / "one_pixel.png"), good[:1, :1])
    cv2.imwrite(str(folder / "deep16.png"), good.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(good, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(good, cv2.COLOR_BGR2BGRA))
    jpeg = (sample_dataset.val_images / "00005.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    # A few hundred bytes declaring 20000x20000 (past PIL's own limit) and 12000x10000 pixels.
    (folder / "bomb.png").write_bytes(png_declaring(20000, 20000))
    (folder / "big.png").write_bytes(png_declaring(12000, 10000))
    bad = {
        "truncated.jpg": "truncated JPEG",
        "empty.jpg": "empty file",
        "text.png": "not an image",
        "bomb.png": ": 400 megapixels, over the limit of 100 (INSTSEG.MAX_IMAGE_PIXELS)",
        "big.png": ": 12000x10000 = 120 megapixels, over the limit of 100",
    }

    output = tmp_path / "out"
    result = _run(random_init_run, folder, output, ["INSTSEG.PREDICT.SAVE_MASKS", "True"])
    assert (result.ok, result.errors, result.exit_status) == (6, 5, 1)
    rows = _manifest(output)
    assert sorted(row["path"] for row in rows) == sorted(p.name for p in folder.iterdir())
    for row in rows:
        if row["path"] in bad:
            assert row["status"] == "error" and row["instances"] == "0"
            assert row["error"].startswith(str(folder / row["path"]))
            assert bad[row["path"]] in row["error"]
            assert not (output / row["path"]).exists()
        else:
            assert row["status"] == "ok" and row["error"] == "", row
            drawn = cv2.imread(str(output / row["path"]))
            assert drawn.shape[:2] == cv2.imread(str(folder / row["path"])).shape[:2]
    sizes = {
        i["file_name"]: (i["width"], i["height"]) for i in _load(output, "images.json")["images"]
    }
    assert sizes["one_pixel.png"] == (1, 1) and len(sizes) == 6
    masks = sorted(p.name for p in output.glob("*.masks.png"))
    assert masks == [
        "deep16.masks.png",
        "good.jpg.masks.png",
        "good.png.masks.png",
        "gray.masks.png",
        "one_pixel.masks.png",
        "rgba.masks.png",
    ]
    total = sum(int(row["instances"]) for row in rows)
    assert len(_load(output, "predictions.json")) == total == result.instances > 0


def test_skip_existing_redoes_only_missing(tmp_path, random_init_run, sample_dataset, monkeypatch):
    layout = [(f"0000{i}.jpg", f"0000{i}.jpg") for i in range(4)]
    images = _copy_tree(sample_dataset, tmp_path / "images", layout)
    output = tmp_path / "out"

    # An interrupted job: the third output write dies. No final file may appear.
    _interrupt_third_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(random_init_run, images, output)
    monkeypatch.undo()
    assert not (output / "predictions.json").exists() and not (output / "manifest.csv").exists()
    assert list((output / PARTS_DIR_NAME).glob("*.jsonl"))

    with pytest.raises(ConfigError, match="not empty.*--overwrite.*--skip-existing"):
        _run(random_init_run, images, output)

    result = _run(random_init_run, images, output, existing="skip")
    assert (result.ok, result.skipped, result.errors) == (2, 2, 0)
    statuses = {row["path"]: row["status"] for row in _manifest(output)}
    assert statuses == {
        "00000.jpg": "skipped",
        "00001.jpg": "skipped",
        "00002.jpg": "ok",
        "00003.jpg": "ok",
    }
    first = _load(output, "predictions.json")
    assert len(first) == sum(int(r["instances"]) for r in _manifest(output)) > 0
    assert not (output / PARTS_DIR_NAME).exists()

    # A finished job: a lost output and a new input are the only work.
    (output / "00001.jpg").unlink()
    shutil.copy(sample_dataset.val_images / "00004.jpg", images / "00004.jpg")
    result = _run(random_init_run, images, output, existing="skip")
    assert (result.ok, result.skipped) == (2, 3)
    statuses = {row["path"]: row["status"] for row in _manifest(output)}
    assert [p for p, s in statuses.items() if s == "ok"] == ["00001.jpg", "00004.jpg"]
    second = _load(output, "predictions.json")
    assert len(second) == sum(int(r["instances"]) for r in _manifest(output))
    _assert_same_predictions(first, [p for p in second if p["image_id"] <= 4])


def test_classes_and_list_sources(tmp_path, random_init_run, sample_dataset):
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    listing.write_text(
        f"{sample_dataset.val_images}/00006.jpg\n{sample_dataset.val_images}/00007.jpg\n"
    )
    names = list(load_predict_cfg(_options(random_init_run, tmp_path)).INSTSEG.THING_CLASSES)
    keep = names[1]
    output = tmp_path / "out"
    opts = ["INSTSEG.PREDICT.RENDER", "False", "INSTSEG.PREDICT.CLASSES", repr([keep])]
    result = _run(random_init_run, listing, output, opts)
    assert result.ok == 2
    predictions = _load(output, "predictions.json")
    assert {p["category_id"] for p in predictions} <= {names.index(keep) + 1}
    assert [row["path"] for row in _manifest(output)] == ["00006.jpg", "00007.jpg"]
    assert not list(output.glob("*.jpg"))  # rendering off

    with pytest.raises(ConfigError, match="unknown class"):
        _run(
            random_init_run,
            listing,
            tmp_path / "o2",
            ["INSTSEG.PREDICT.CLASSES", "['nope']"],
        )


def test_two_processes_merge_like_one(tmp_path, reference, random_init_run, sample_dataset):
    output = tmp_path / "two"
    result = _run(
        random_init_run,
        f"{reference['images']}/**/*.jpg",
        output,
        ["INSTSEG.PREDICT.SAVE_MASKS", "True"],
        coco_json=str(sample_dataset.val_json),
        num_workers=2,
    )
    assert (result.total, result.ok, result.errors) == (len(LAYOUT), len(LAYOUT), 0)
    reference_output = reference["output"]

    def rows(folder):
        return sorted((r["path"], r["status"], r["instances"]) for r in _manifest(folder))

    assert rows(output) == rows(reference_output)
    _assert_same_predictions(
        _load(output, "predictions.json"), _load(reference_output, "predictions.json")
    )
    assert _load(output, "images.json") == _load(reference_output, "images.json")
    assert not (output / PARTS_DIR_NAME).exists()


def test_cli(tmp_path, random_init_run, sample_dataset):
    folder = _copy_tree(sample_dataset, tmp_path / "in", LAYOUT[:2])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    instseg = Path(sys.executable).with_name("instseg")
    command = [
        str(instseg),
        "predict",
        str(folder),
        "--config",
        str(random_init_run / "config.yaml"),
        "--weights",
        str(random_init_run / "model_final.pth"),
        "--output",
        str(tmp_path / "out"),
        "--no-render",
        "--max-detections",
        "2",
        "--no-progress",
        *PREDICT_OPTS[:4],  # KEY VALUE overrides, then an option: both count
        "--classes",
        "ellipse,star",
    ]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "3 input(s): 2 ok, 1 failed, 0 skipped" in done.stdout
    assert "images/s" in done.stdout
    rows = {row["path"]: row["status"] for row in _manifest(tmp_path / "out")}
    assert rows == {"00000.jpg": "ok", "sub/00001.jpg": "ok", "broken.jpg": "error"}
    config = (tmp_path / "out" / "config.yaml").read_text()
    assert "DETECTIONS_PER_IMAGE: 2" in config and "SCORE_THRESH_TEST: 0.0" in config
    assert {p["category_id"] for p in _load(tmp_path / "out", "predictions.json")} <= {1, 4}

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "not empty" in again.stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_dotdot_glob_keeps_outputs_inside_and_inputs_intact(
    tmp_path, random_init_run, sample_dataset
):
    root = tmp_path / "g"
    (root / "src" / "sub").mkdir(parents=True)
    _copy_tree(sample_dataset, root / "other", [("00000.jpg", "x.jpg")])
    before = _files(root)
    output = root / "out"
    result = _run(
        random_init_run,
        f"{root}/src/**/../other/*.jpg",
        output,
        ["INSTSEG.PREDICT.SAVE_MASKS", "True"],
    )
    assert result.ok == 1
    after = _files(root)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before
    assert [row["path"] for row in _manifest(output)] == ["x.jpg"]
    assert {"out/x.jpg", "out/x.masks.png"} <= set(after)


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path, random_init_run, sample_dataset):
    images = _copy_tree(sample_dataset, tmp_path / "images", LAYOUT[:2])
    output = tmp_path / "out"
    _run(random_init_run, images, output)
    finished = _files(output)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom instseg.inference.output_dir import OutputLock\n"
            "with OutputLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)",
            str(output),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for existing in ("overwrite", "skip"):
            with pytest.raises(
                ConfigError, match=f"in use by another instseg run \\(pid {holder.pid}\\)"
            ):
                _run(random_init_run, images, output, existing=existing)
    finally:
        holder.kill()
        holder.wait()
    assert _files(output).keys() - {".instseg.lock"} == finished.keys() - {".instseg.lock"}
    for name in ("predictions.json", "images.json", "manifest.csv"):
        assert (output / name).read_bytes() == finished[name]


def _interrupt_third_write(monkeypatch):
    from instseg.inference.image_sink import ImageSink

    original = ImageSink._write_outputs
    calls = []

    def dies_on_third(self, frame, task):
        calls.append(task.rel)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, frame, task)

    monkeypatch.setattr(ImageSink, "_write_outputs", dies_on_third)


def _interrupted_overwrite(monkeypatch, run_dir, images, output, opts):
    """An --overwrite run into ``output`` interrupted (Ctrl-C) at its third image's outputs."""
    _interrupt_third_write(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(run_dir, images, output, opts, existing="overwrite")
    monkeypatch.undo()


def test_interrupted_overwrite_then_skip_never_mixes_configs(
    tmp_path, random_init_run, sample_dataset, monkeypatch
):
    layout = [(f"0000{i}.jpg", f"0000{i}.jpg") for i in range(4)]
    images = _copy_tree(sample_dataset, tmp_path / "images", layout)
    output = tmp_path / "out"

    def detections(n):
        return ["TEST.DETECTIONS_PER_IMAGE", str(n)]

    _run(random_init_run, images, output, detections(3))
    _interrupted_overwrite(monkeypatch, random_init_run, images, output, detections(1))

    # A third config: nothing earlier is reused.
    result = _run(random_init_run, images, output, detections(2), existing="skip")
    assert (result.ok, result.skipped) == (4, 0)
    assert {int(r["instances"]) for r in _manifest(output)} == {2}
    assert "TEST:\n" in (output / "config.yaml").read_text()
    assert "DETECTIONS_PER_IMAGE: 2" in (output / "config.yaml").read_text()

    # The interrupted run's config again: its two finished inputs are reused, the rest redone.
    _interrupted_overwrite(monkeypatch, random_init_run, images, output, detections(1))
    result = _run(random_init_run, images, output, detections(1), existing="skip")
    assert (result.ok, result.skipped) == (2, 2)
    assert {int(r["instances"]) for r in _manifest(output)} == {1}


def test_skip_existing_predicts_a_changed_image_again(tmp_path, random_init_run, sample_dataset):
    layout = [(f"0000{i}.jpg", f"0000{i}.jpg") for i in range(3)]
    images = _copy_tree(sample_dataset, tmp_path / "images", layout)
    output = tmp_path / "out"
    _run(random_init_run, images, output)
    replacement = cv2.imread(str(sample_dataset.val_images / "00005.jpg"))
    cv2.imwrite(str(images / "00001.jpg"), cv2.resize(replacement, (200, 150)))
    result = _run(random_init_run, images, output, existing="skip")
    assert (result.ok, result.skipped) == (1, 2)
    statuses = {row["path"]: row["status"] for row in _manifest(output)}
    assert statuses["00001.jpg"] == "ok"
    image = next(i for i in _load(output, "images.json")["images"] if i["file_name"] == "00001.jpg")
    assert (image["width"], image["height"]) == (200, 150)


def test_clashing_names_give_distinct_outputs(tmp_path, random_init_run, sample_dataset):
    layout = [
        ("00000.jpg", "a.jpg"),
        ("00001.jpg", "a.jpg.png"),
        ("00002.jpg", "x.jpg"),
        ("00003.jpg", "x.masks.png"),
    ]
    images = _copy_tree(sample_dataset, tmp_path / "images", layout)
    output = tmp_path / "out"
    result = _run(
        random_init_run,
        images,
        output,
        ["INSTSEG.PREDICT.SAVE_MASKS", "True"],
    )
    assert result.ok == 4
    written = [p for p in _files(output) if not p.startswith(".") and "." in p]
    outputs = [p for p in written if p not in RESERVED]
    assert len(outputs) == 8, sorted(outputs)  # an annotated image and a mask each
    for rel in ("a.jpg", "a.jpg.png", "x.jpg", "x.masks.png"):
        drawn = cv2.imread(str(output / rel))
        assert drawn is not None and drawn.shape[2] == 3, rel


RESERVED = {"predictions.json", "images.json", "manifest.csv", "config.yaml"}


def _normalized_manifest(folder) -> list[tuple]:
    # An input finished before a kill is "skipped" by the run that completes the job; timing
    # columns aside, every other column is the same.
    return [
        ("ok" if r["status"] == "skipped" else r["status"],)
        + tuple(v for k, v in r.items() if k not in ("status", "time_ms"))
        for r in _manifest(folder)
    ]


def _clip(path: Path, frames: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_test_clip(path, iter_sample_video_frames(frames, size=(96, 128), seed=2), 10).path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_input_failing_when_predicted_again_loses_its_earlier_outputs(
    tmp_path, random_init_run, sample_dataset
):
    """Outputs made from another version of an input do not stay beside a config.yaml that
    did not make them: an input predicted again that fails is an error row without outputs."""
    layout = [("00000.jpg", "a.jpg"), ("00001.jpg", "b.jpg")]
    images = _copy_tree(sample_dataset, tmp_path / "in", layout)
    output = tmp_path / "out"
    masks = ["INSTSEG.PREDICT.SAVE_MASKS", "True"]
    _run(random_init_run, images, output, masks)
    assert (output / "b.jpg").is_file() and (output / "b.masks.png").is_file()
    (images / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 no longer a picture")
    result = _run(random_init_run, images, output, masks, existing="skip")
    assert (result.skipped, result.errors) == (1, 1)
    assert [(r["path"], r["status"]) for r in _manifest(output)] == [
        ("a.jpg", "skipped"),
        ("b.jpg", "error"),
    ]
    assert not (output / "b.jpg").exists() and not (output / "b.masks.png").exists()
    assert (output / "a.jpg").is_file() and (output / "a.masks.png").is_file()
    assert [i["file_name"] for i in _load(output, "images.json")["images"]] == ["a.jpg"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_mixed_folder_is_one_job(tmp_path, random_init_run, sample_dataset, workers):
    """Images and videos in one folder: one run, one manifest with a row per input in input
    order, the images' results in predictions.json, each video's in its JSONL; the processes
    of a two-process run share one plan of the outputs (clashing names included)."""
    layout = [("00000.jpg", "a.jpg"), ("00001.jpg", "c/b.jpg"), ("00002.jpg", "d.jpg")]
    folder = _copy_tree(sample_dataset, tmp_path / "in", [*layout, ("00003.jpg", "d.png")])
    _clip(folder / "b.mp4", 3)
    _clip(folder / "c/a.mp4", 2)
    (folder / "e.mp4").write_bytes(b"not a video")
    output = tmp_path / "out"
    masks = ["INSTSEG.PREDICT.SAVE_MASKS", "True"]
    result = _run(random_init_run, folder, output, masks, num_workers=workers)
    rows = _manifest(output)
    assert [(r["path"], r["kind"], r["status"], r["frames"]) for r in rows] == [
        ("a.jpg", "image", "ok", ""),
        ("b.mp4", "video", "ok", "3"),
        ("c/a.mp4", "video", "ok", "2"),
        ("c/b.jpg", "image", "ok", ""),
        ("d.jpg", "image", "ok", ""),
        ("d.png", "image", "ok", ""),
        ("e.mp4", "video", "error", ""),
    ]
    assert rows[-1]["error"].startswith(str(folder / "e.mp4"))
    assert (result.total, result.videos, result.ok, result.errors, result.frames) == (7, 3, 6, 1, 5)
    images = _load(output, "images.json")["images"]
    assert [i["file_name"] for i in images] == ["a.jpg", "c/b.jpg", "d.jpg", "d.png"]
    for name in ("a.masks.png", "c/b.masks.png", "d.jpg.masks.png", "d.png.masks.png"):
        assert cv2.imread(str(output / name), cv2.IMREAD_UNCHANGED) is not None, name
    predictions = _load(output, "predictions.json")
    assert {p["image_id"] for p in predictions} == {i["id"] for i in images}
    for row in rows:
        if row["kind"] == "image" and row["status"] == "ok":
            image_id = next(i["id"] for i in images if i["file_name"] == row["path"])
            assert int(row["instances"]) == sum(p["image_id"] == image_id for p in predictions)
    for rel, frames in (("b", 3), ("c/a", 2)):
        records = _jsonl(output / f"{rel}.predictions.jsonl")
        assert len(records) == frames
        row = next(r for r in rows if r["path"] == f"{rel}.mp4")
        assert int(row["instances"]) == sum(len(r["results"]) for r in records)
        assert int(row["tracks"]) == len(
            json.loads((output / f"{rel}.tracks.json").read_text())["tracks"]
        )
        assert (output / f"{rel}.mp4").is_file()
    assert not (output / PARTS_DIR_NAME).exists()


def test_sigkill_at_random_moments_then_skip_existing_ends_like_one_run(
    tmp_path, random_init_run, sample_dataset
):
    """A mixed folder (images and a video) killed at 6 random moments, re-run with
    --skip-existing after each kill, ends with one uninterrupted run's outputs, record for
    record, and no temporary file."""
    available = sorted(p.name for p in sample_dataset.val_images.glob("*.jpg"))
    layout = [(available[i % len(available)], f"d{i % 3}/{i:05d}.jpg") for i in range(12)]
    images = _copy_tree(sample_dataset, tmp_path / "images", layout)
    _clip(images / "d1" / "clip.mp4", 12)
    instseg = Path(sys.executable).with_name("instseg")

    def command(output):
        return [
            str(instseg), "predict", str(images), "--output", str(output), "--skip-existing",
            "--config", str(random_init_run / "config.yaml"),
            "--weights", str(random_init_run / "model_final.pth"),
            "--save-masks", "--no-progress", *PREDICT_OPTS,
        ]  # fmt: skip

    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    done = subprocess.run(command(tmp_path / "ref"), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    duration = time.monotonic() - start

    output = tmp_path / "out"
    kills = kill_at_random_moments(command(output), env, duration, seed=0)
    assert kills >= 3  # most runs were cut short
    done = subprocess.run(command(output), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    reference = tmp_path / "ref"
    assert _load(output, "predictions.json") == _load(reference, "predictions.json")
    assert _load(output, "images.json") == _load(reference, "images.json")
    assert _normalized_manifest(output) == _normalized_manifest(reference)
    assert (output / "config.yaml").read_text() == (reference / "config.yaml").read_text()
    for name in ("clip.predictions.jsonl", "clip.tracks.csv", "clip.tracks.json"):
        assert (output / "d1" / name).read_bytes() == (reference / "d1" / name).read_bytes()
    for _, rel in layout:
        assert (output / rel).is_file() and (output / rel).with_suffix(".masks.png").is_file()
    leftovers = [p for p in output.rglob("*") if ".instseg-tmp-" in p.name or "commit" in p.name]
    assert leftovers == [] and not (output / PARTS_DIR_NAME).exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_machines_share_one_output_folder(tmp_path, reference, random_init_run, sample_dataset):
    """Two "machines" (two process groups on localhost, gloo) write one folder like one run."""
    instseg = Path(sys.executable).with_name("instseg")
    output = tmp_path / "two-machines"
    url = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                str(instseg),
                "predict",
                f"{reference['images']}/**/*.jpg",
                "--output",
                str(output),
                "--config",
                str(random_init_run / "config.yaml"),
                "--weights",
                str(random_init_run / "model_final.pth"),
                "--coco-json",
                str(sample_dataset.val_json),
                "--save-masks",
                "--no-progress",
                "--num-machines",
                "2",
                "--machine-rank",
                str(rank),
                "--dist-url",
                url,
                *PREDICT_OPTS,
            ],  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert f"{len(LAYOUT)} input(s): {len(LAYOUT)} ok" in outputs[0]
    assert "machine 1: done" in outputs[1]
    reference_output = reference["output"]
    rows = [(r["path"], r["status"], r["instances"]) for r in _manifest(output)]
    assert rows == [(r["path"], r["status"], r["instances"]) for r in _manifest(reference_output)]
    _assert_same_predictions(
        _load(output, "predictions.json"), _load(reference_output, "predictions.json")
    )
    assert _load(output, "images.json") == _load(reference_output, "images.json")
    assert not (output / PARTS_DIR_NAME).exists()


def test_several_sources_on_the_command_line(tmp_path, random_init_run, sample_dataset):
    """`instseg predict a.jpg sub/b.jpg KEY VALUE`, as a shell expands `*.jpg`."""
    folder = _copy_tree(sample_dataset, tmp_path / "in", LAYOUT[:2])
    instseg = Path(sys.executable).with_name("instseg")
    command = [
        str(instseg), "predict", str(folder / "00000.jpg"), str(folder / "sub" / "00001.jpg"),
        "--config", str(random_init_run / "config.yaml"),
        "--weights", str(random_init_run / "model_final.pth"),
        "--output", str(tmp_path / "out"), "--no-progress", "--draw-score", "0.3",
        *PREDICT_OPTS,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 input(s): 2 ok" in done.stdout
    rows = [row["path"] for row in _manifest(tmp_path / "out")]
    assert rows == ["00000.jpg", "sub/00001.jpg"]
    assert (tmp_path / "out" / "sub" / "00001.jpg").is_file()
    assert "DRAW_SCORE: 0.3" in (tmp_path / "out" / "config.yaml").read_text()
