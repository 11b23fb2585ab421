"""Output writers: atomic final files, streamed JSON arrays, part files that survive a crash."""

import csv
import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from instseg.io.atomic import AtomicFile
from instseg.io.images import atomic_write_image, instance_id_image
from instseg.io.writers import (
    CsvWriter,
    JsonLinesWriter,
    JsonListWriter,
    iter_json_lines,
    iter_json_list,
    read_json_line,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_json_list_round_trip_and_offsets(tmp_path):
    items = [{"image_id": i, "score": i / 10, "name": f"x,\n{i}"} for i in range(5)]
    path = tmp_path / "list.json"
    with JsonListWriter(path) as writer:
        assert not path.exists()  # only the temporary file exists while writing
        for item in items:
            writer.add(item)
    assert json.loads(path.read_text()) == items
    streamed = list(iter_json_list(path))
    assert [item for _, item in streamed] == items
    assert read_json_line(path, streamed[3][0]) == items[3]
    assert _leftovers(tmp_path) == []


def test_empty_json_list_and_enclosing_object(tmp_path):
    with JsonListWriter(tmp_path / "empty.json") as writer:
        pass
    assert json.loads((tmp_path / "empty.json").read_text()) == []
    assert list(iter_json_list(tmp_path / "empty.json")) == []
    assert len(writer) == 0

    images = [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 3}]
    members = {"categories": [{"id": 1, "name": "cat"}], "annotations": []}
    with JsonListWriter(tmp_path / "images.json", key="images", members=members) as writer:
        writer.add(images[0])
    data = json.loads((tmp_path / "images.json").read_text())
    assert data == {**members, "images": images}
    COCO(str(tmp_path / "images.json"))  # a valid (annotation-free) COCO dataset


def test_failed_block_leaves_no_final_file(tmp_path):
    path = tmp_path / "out.json"
    with pytest.raises(RuntimeError), JsonListWriter(path) as writer:
        writer.add({"a": 1})
        raise RuntimeError("crash")
    assert not path.exists()
    assert _leftovers(tmp_path) == []

    text = AtomicFile(tmp_path / "t.txt")
    text.write("partial")
    text.discard()
    assert list(tmp_path.iterdir()) == []


def test_iter_json_list_rejects_other_layouts(tmp_path):
    path = tmp_path / "compact.json"
    path.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    with pytest.raises(ValueError, match="one element per line"):
        list(iter_json_list(path))


def test_json_lines_skip_an_incomplete_last_line(tmp_path):
    path = tmp_path / "part.jsonl"
    with JsonLinesWriter(path) as writer:
        writer.write({"index": 0})
        writer.write({"index": 1})
    with JsonLinesWriter(path) as writer:  # appends
        writer.write({"index": 2})
    with open(path, "a") as f:
        f.write('{"index": 3, "res')  # a crash in the middle of a line
    records = [record for _, record in iter_json_lines(path)]
    assert records == [{"index": 0}, {"index": 1}, {"index": 2}]


def test_csv_writer(tmp_path):
    path = tmp_path / "manifest.csv"
    with CsvWriter(path, ("path", "status", "error")) as writer:
        writer.add({"path": "a, b.jpg", "status": "ok", "error": None})
        writer.add({"path": "c.jpg", "status": "error", "error": 'c.jpg: "bad"'})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"path": "a, b.jpg", "status": "ok", "error": ""},
        {"path": "c.jpg", "status": "error", "error": 'c.jpg: "bad"'},
    ]


def test_instance_id_image_overlaps_and_dtype():
    masks = np.zeros((3, 4, 5), dtype=bool)
    masks[0, :2, :2] = True
    masks[1, 1:3, 1:3] = True  # overlaps mask 0 at (1, 1): mask 0 (higher score) wins
    masks[2, 3, 4] = True
    ids = instance_id_image(masks)
    assert ids.dtype == np.uint8
    assert ids[1, 1] == 1 and ids[2, 2] == 2 and ids[3, 4] == 3 and ids[3, 0] == 0
    assert set(np.unique(ids)) == {0, 1, 2, 3}

    many = np.zeros((300, 2, 300), dtype=bool)
    for k in range(300):
        many[k, k % 2, k] = True
    ids = instance_id_image(many)
    assert ids.dtype == np.uint16 and ids.max() == 300
    assert instance_id_image(np.zeros((0, 3, 3), dtype=bool)).shape == (3, 3)


def test_atomic_write_image(tmp_path):
    ids = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    path = atomic_write_image(tmp_path / "sub" / "m.masks.png", ids)
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), ids)
    with pytest.raises(ValueError, match="cannot encode"):
        atomic_write_image(tmp_path / "x.nosuchformat", ids)
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []
