"""The ``instseg`` command line, run as a separate process the way users run it."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import detectron2
import pytest
import torch
import yaml
from conftest import REPO_ROOT

CONSOLE_SCRIPT = Path(sys.executable).with_name("instseg")
TIMEOUT_S = 300
R50 = "configs/mask_rcnn_R50_FPN.yaml"  # relative: the commands run from the repository root


def run_cli(*args, console_script=False) -> subprocess.CompletedProcess:
    """Run the CLI from the repository root, as the installed script or ``python -m``."""
    command = [str(CONSOLE_SCRIPT)] if console_script else [sys.executable, "-m", "instseg.cli"]
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


@pytest.fixture
def faulty_dataset(sample_dataset, tmp_path) -> tuple[Path, list[str]]:
    """The sample's val JSON with one fault of each kind planted, and the report line (or its
    start) that must name each fault. The images stay the sample's."""
    coco = json.loads(sample_dataset.val_json.read_text())
    anns, images = coco["annotations"], coco["images"]
    anns[0]["category_id"] = 99
    anns[1]["bbox"] = [120.0, 120.0, 30.0, 30.0]
    anns[3]["id"] = anns[2]["id"]
    anns[4]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]
    images[1]["file_name"] = "missing.jpg"
    path = tmp_path / "faulty.json"
    path.write_text(json.dumps(coco))
    expected = [
        f"annotations[0] (id={anns[0]['id']}).category_id: refers to unknown category id 99",
        f"annotations[1] (id={anns[1]['id']}).bbox: box [120, 120, 30, 30] extends outside",
        f"annotations[3] (id={anns[2]['id']}): duplicate annotation id {anns[2]['id']}",
        f"annotations[4] (id={anns[4]['id']}).segmentation[0]: polygon has an odd number",
        f"{sample_dataset.val_images / 'missing.jpg'}: images[1] (id={images[1]['id']}): "
        "image file not found",
    ]
    return path, expected


def test_doctor_through_console_script_prints_versions_and_compiled_ops():
    assert CONSOLE_SCRIPT.is_file(), f"console script not installed at {CONSOLE_SCRIPT}"
    result = run_cli("doctor", console_script=True)
    assert result.returncode == 0, result.stderr
    # "KEY  VALUE" rows; keys may contain single spaces.
    rows = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.stdout.splitlines()
    )
    assert rows["torch"] == torch.__version__
    assert rows["OpenCV"] == cv2.__version__
    assert rows["Detectron2"].startswith(f"{detectron2.__version__} (")
    assert rows["Detectron2 compiled ops"] in ("present", "absent")


def test_config_show_prints_merged_config():
    result = run_cli("config", "show", "--config", R50, "SOLVER.BASE_LR", "0.00123")
    assert result.returncode == 0, result.stderr
    lines = {line.strip() for line in result.stdout.splitlines()}
    for expected in (
        "BASE_LR: 0.00123",
        "META_ARCHITECTURE: GeneralizedRCNN",
        "MASK_ON: true",
        "DEPTH: 50",
        "FPN:",
    ):
        assert expected in lines
    shown = yaml.safe_load(result.stdout)
    assert shown["SOLVER"]["BASE_LR"] == 0.00123
    assert "fpn" in shown["MODEL"]["BACKBONE"]["NAME"]
    assert shown["INSTSEG"]["MODEL_ZOO_CONFIG"]


def test_config_show_unknown_key_fails_with_one_line():
    result = run_cli("config", "show", "--config", R50, "SOLVER.BASE_LRR", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "SOLVER.BASE_LRR" in errors[0]
    assert "did you mean SOLVER.BASE_LR?" in errors[0]
    assert result.stdout == ""


def test_dataset_validate_names_every_fault(faulty_dataset, sample_dataset):
    json_path, faults = faulty_dataset
    result = run_cli(
        "dataset", "validate", "--json", json_path, "--images", sample_dataset.val_images
    )
    assert result.returncode == 1, result.stdout + result.stderr
    for fault in faults:
        assert fault in result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"{json_path}: ")
    assert int(summary.split(": ")[1].split()[0]) >= len(faults)


def test_dataset_stats_prints_per_class_counts(sample_dataset):
    result = run_cli("dataset", "stats", "--json", sample_dataset.train_json)
    assert result.returncode == 0, result.stderr
    coco = json.loads(sample_dataset.train_json.read_text())
    counts = Counter(a["category_id"] for a in coco["annotations"])
    # Table rows: id, category, instances, ...; the total row has no id.
    rows = [line.split() for line in result.stdout.splitlines()]
    instances = {tuple(row[:2]): row[2] for row in rows if len(row) >= 3}
    for category in coco["categories"]:
        assert instances[(str(category["id"]), category["name"])] == str(counts[category["id"]])
    assert [row[1] for row in rows if row and row[0] == "total"] == [str(len(coco["annotations"]))]
    assert f"images: {len(coco['images'])}" in result.stdout


def test_dataset_sample_writes_a_dataset_that_validates_clean(tmp_path):
    out = tmp_path / "generated"
    result = run_cli("dataset", "sample", "--out", out, "--num-train", "3", "--num-val", "2")
    assert result.returncode == 0, result.stderr
    train_json = out / "annotations" / "train.json"
    assert f"train: {train_json} ({out / 'train'})" in result.stdout
    assert len(json.loads(train_json.read_text())["images"]) == 3
    assert len(list((out / "val").glob("*.jpg"))) == 2

    checked = run_cli("dataset", "validate", "--json", train_json, "--images", out / "train")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.strip().splitlines()[-1].startswith(f"{train_json}: 0 error(s)")
