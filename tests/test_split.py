"""Splitting a COCO JSON: stratified by class, deterministic, images never in two splits."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from pycocotools.coco import COCO

from instseg.cli import main
from instseg.config import build_cfg
from instseg.data.split import split_coco

FREQUENCIES = {"car": 0.45, "bus": 0.25, "bike": 0.15, "truck": 0.1, "tram": 0.05}


def _uneven_dataset(path, num_images=300, seed=0):
    """5 classes of uneven frequency, 1-4 instances per image, some images empty."""
    rng = np.random.default_rng(seed)
    names = list(FREQUENCIES)
    coco = {
        "info": {"description": "uneven"},
        "images": [],
        "annotations": [],
        "categories": [{"id": 10 + i, "name": n} for i, n in enumerate(names)],
    }
    for image_id in range(1, num_images + 1):
        coco["images"].append(
            {"id": image_id, "file_name": f"img/{image_id:04d}.jpg", "width": 64, "height": 64}
        )
        for _ in range(rng.integers(0, 5)):
            x, y = (int(v) for v in rng.integers(0, 40, 2))
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 10 + int(rng.choice(5, p=list(FREQUENCIES.values()))),
                    "bbox": [x, y, 10, 10],
                    "area": 100.0,
                    "segmentation": [[x, y, x + 10, y, x + 10, y + 10, x, y + 10]],
                    "iscrowd": 0,
                }
            )
    path.write_text(json.dumps(coco))
    return path


def _shares(coco: dict) -> dict[str, float]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = Counter(names[a["category_id"]] for a in coco["annotations"])
    return {name: counts[name] / sum(counts.values()) for name in FREQUENCIES}


@pytest.mark.parametrize("seed", range(4))
def test_each_class_keeps_its_share_in_every_split(tmp_path, seed):
    source = _uneven_dataset(tmp_path / "all.json")
    whole = json.loads(source.read_text())
    result = split_coco(source, val=0.2, test=0.1, seed=seed)
    assert list(result.parts) == ["train", "val", "test"]
    overall = _shares(whole)
    for split, part in result.parts.items():
        assert part["categories"] == whole["categories"] and part["info"] == whole["info"]
        for name, share in _shares(part).items():
            assert abs(share - overall[name]) <= 0.05, (split, name, share, overall[name])
    ids = [{i["id"] for i in part["images"]} for part in result.parts.values()]
    assert sum(map(len, ids)) == len(whole["images"]) == len(set.union(*ids))
    assert len(ids[1]) == pytest.approx(0.2 * 300, abs=3)
    assert len(ids[2]) == pytest.approx(0.1 * 300, abs=3)
    annotations = [a for part in result.parts.values() for a in part["annotations"]]
    assert sorted(a["id"] for a in annotations) == [a["id"] for a in whole["annotations"]]


def test_cli_same_seed_same_files_and_a_config(tmp_path, capsys):
    source = _uneven_dataset(tmp_path / "all.json")
    (tmp_path / "img").mkdir()
    config = tmp_path / "project.yaml"
    argv = ["dataset", "split", "--json", str(source), "--val", "0.25", "--seed", "7"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "tram" in printed and "images" in printed
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert main([*argv, "--out", str(tmp_path / "c"), "--seed", "8"]) == 0
    for name in ("train.json", "val.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        COCO(str(tmp_path / "a" / name))
    assert (tmp_path / "a" / "val.json").read_bytes() != (tmp_path / "c" / "val.json").read_bytes()
    assert not (tmp_path / "a" / "test.json").exists()
    # The outputs are not overwritten without asking; the config declares the splits.
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    extra = ["--out", str(tmp_path / "a"), "--overwrite", "--images", str(tmp_path)]
    assert main([*argv, *extra, "--config-out", str(config)]) == 0
    cfg = build_cfg([str(config)], [])
    assert str(tmp_path / "a" / "train.json") == cfg.INSTSEG.DATASETS.TRAIN.JSON
    assert cfg.INSTSEG.DATASETS.VAL.NAME == "all_val"
    assert str(tmp_path) == cfg.INSTSEG.DATASETS.VAL.IMAGES


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--val", "0"], "--val 0.0"),
        (["--val", "0.6", "--test", "0.5"], "val + test < 1"),
        (["--config-out", "x.yaml"], "--config-out needs --images"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, args, expected):
    source = _uneven_dataset(tmp_path / "all.json", num_images=20)
    argv = ["dataset", "split", "--json", str(source), "--out", str(tmp_path / "out"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out").exists()


def test_output_may_not_replace_the_input(tmp_path, capsys):
    source = _uneven_dataset(tmp_path / "train.json", num_images=20)
    before = source.read_bytes()
    argv = ["dataset", "split", "--json", str(source), "--out", str(tmp_path), "--overwrite"]
    assert main(argv) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_too_few_images_for_a_split(tmp_path):
    source = _uneven_dataset(tmp_path / "all.json", num_images=2)
    with pytest.raises(Exception, match="empty"):
        split_coco(source, val=0.2, test=0.1)
