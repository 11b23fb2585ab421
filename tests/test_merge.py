"""Merging COCO JSONs: categories by name, ids renumbered, file names kept apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from instseg.cli import main
from instseg.data.coco_json import instances_per_class
from instseg.data.merge import merge_coco
from instseg.data.sample_data import write_sample_dataset
from instseg.data.validate import validate_coco_dataset
from instseg.errors import ConfigError


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample_dataset(tmp_path_factory.mktemp("sample"), num_train=4, num_val=3)


def _renumber_categories(src, dst):
    """The same dataset with other category ids, listed in another order."""
    coco = json.loads(src.read_text())
    shift = {c["id"]: 100 - c["id"] for c in coco["categories"]}
    coco["categories"] = [dict(c, id=shift[c["id"]]) for c in reversed(coco["categories"])]
    for ann in coco["annotations"]:
        ann["category_id"] = shift[ann["category_id"]]
    dst.write_text(json.dumps(coco))
    return dst


def _instances(coco: COCO) -> dict:
    """(file name, class name) -> masks, the meaning of a dataset independent of its ids."""
    found = {}
    for ann in coco.dataset["annotations"]:
        name = coco.imgs[ann["image_id"]]["file_name"]
        key = (name, coco.cats[ann["category_id"]]["name"])
        found.setdefault(key, []).append(coco.annToMask(ann))
    return found


def test_merge_keeps_every_instance_by_class_name(sample, tmp_path):
    val = _renumber_categories(sample.val_json, tmp_path / "val_other_ids.json")
    out = tmp_path / "merged.json"
    argv = ["dataset", "merge", str(sample.train_json), str(val), "--out", str(out)]
    assert main([*argv, "--prefix", "train", "--prefix", "val"]) == 0
    merged = COCO(str(out))
    assert [c["id"] for c in merged.dataset["categories"]] == list(
        range(1, len(sample.class_names) + 1)
    )
    assert sorted(c["name"] for c in merged.dataset["categories"]) == sorted(sample.class_names)
    assert [i["id"] for i in merged.dataset["images"]] == list(range(1, 8))
    assert len({a["id"] for a in merged.dataset["annotations"]}) == len(
        merged.dataset["annotations"]
    )
    for split, path in (("train/", sample.train_json), ("val/", sample.val_json)):
        original = _instances(COCO(str(path)))
        mine = {k: v for k, v in _instances(merged).items() if k[0].startswith(split)}
        mine = {(k[0].removeprefix(split), k[1]): v for k, v in mine.items()}
        assert mine.keys() == original.keys()
        for key, masks in original.items():
            assert all(np.array_equal(a, b) for a, b in zip(mine[key], masks, strict=True))
    # One image root serves the merge: it holds train/ and val/.
    assert validate_coco_dataset(out, sample.train_images.parent) == []


def test_the_same_file_name_twice_needs_prefixes(sample, tmp_path, capsys):
    out = tmp_path / "merged.json"
    argv = ["dataset", "merge", str(sample.train_json), str(sample.val_json), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(sample.val_json) in err and "00000.jpg" in err and "--prefix" in err
    assert not out.exists()


def test_bad_inputs_are_one_line_naming_the_file(sample, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": []')
    dangling = tmp_path / "dangling.json"
    coco = json.loads(sample.val_json.read_text())
    coco["annotations"][0]["image_id"] = 999
    dangling.write_text(json.dumps(coco))
    train = str(sample.train_json)
    cases = [
        ([train, str(broken)], str(broken)),
        ([train, str(tmp_path / "missing.json")], "missing.json"),
        ([train, str(dangling), "--prefix", "a", "--prefix", "b"], "image id 999"),
        ([train, str(sample.val_json), "--prefix", "a"], "--prefix given 1"),
        ([train], "at least two"),
    ]
    for args, expected in cases:
        assert main(["dataset", "merge", *args, "--out", str(tmp_path / "o.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "o.json").exists()


def test_out_may_not_be_an_input(sample, tmp_path):
    copy = tmp_path / "train.json"
    copy.write_bytes(sample.train_json.read_bytes())
    before = copy.read_bytes()
    argv = ["dataset", "merge", str(copy), str(sample.val_json), "--out", str(copy)]
    assert main([*argv, "--prefix", "a", "--prefix", "b"]) == 2
    assert copy.read_bytes() == before


def test_merge_api_counts(sample):
    merged = merge_coco([sample.train_json, sample.val_json], ["t", "v"])
    assert [(images, n) for _, images, n in merged.counts] == [
        (4, len(json.loads(sample.train_json.read_text())["annotations"])),
        (3, len(json.loads(sample.val_json.read_text())["annotations"])),
    ]
    assert sum(instances_per_class(merged.coco).values()) == len(merged.coco["annotations"])
    with pytest.raises(ConfigError):
        merge_coco([sample.train_json, sample.train_json])
