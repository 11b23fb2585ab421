"""labelme / VIA / YOLO to COCO: small datasets written as each tool documents its format, with
the masks they describe drawn independently; the COCO output must reproduce those masks, validate
clean and train."""

from __future__ import annotations

import base64
import io
import json
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import yaml
from conftest import DEMO_CONFIG
from PIL import Image
from pycocotools.coco import COCO

from instseg.cli import main
from instseg.config import ConfigError
from instseg.data.convert import convert_dataset
from instseg.data.validate import validate_coco_dataset

W, H = 160, 128
CLASSES = ["cat", "dog", "fox"]


def _polygon_mask(points) -> np.ndarray:
    flat = [float(v) for p in points for v in p]
    return mask_util.decode(mask_util.frPyObjects([flat], H, W))[..., 0] > 0


def _disc(cx, cy, r) -> np.ndarray:
    """Pixels whose centre (COCO's convention: +0.5) lies in the circle."""
    y, x = np.mgrid[0:H, 0:W]
    return (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r**2


def _write_image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _iou(a, b) -> float:
    return (a & b).sum() / max(1, (a | b).sum())


def _check_against_truth(coco_path, truth: dict):
    """Every true instance (file, class, mask) has one converted instance with IoU >= 0.99."""
    coco = COCO(str(coco_path))
    found = {}
    for ann in coco.dataset["annotations"]:
        key = (coco.imgs[ann["image_id"]]["file_name"], coco.cats[ann["category_id"]]["name"])
        found.setdefault(key, []).append(coco.annToMask(ann) > 0)
    assert sorted(found) == sorted(truth)
    for key, masks in truth.items():
        assert len(found[key]) == len(masks), key
        for mask in masks:
            best = max(_iou(mask, m) for m in found[key])
            assert best >= 0.99, (key, best)


def _train_two_iterations(coco_path, image_root, tiny_opts, tmp_path):
    from instseg.engine.trainer import TrainRequest, train

    opts = [
        "INSTSEG.DATASETS.TRAIN.NAME", f"converted_{uuid.uuid4().hex[:8]}",
        "INSTSEG.DATASETS.TRAIN.JSON", str(coco_path),
        "INSTSEG.DATASETS.TRAIN.IMAGES", str(image_root),
        "INSTSEG.DATASETS.VAL.NAME", "",
        *tiny_opts,
        "SOLVER.MAX_ITER", "2",
    ]  # fmt: skip
    train(TrainRequest([str(DEMO_CONFIG)], opts=opts, output_dir=str(tmp_path / "run")))
    assert (tmp_path / "run" / "model_final.pth").is_file()


# ----------------------------------------------------------------------------- labelme


def _mask_png(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _shape(label, points, kind="polygon", group_id=None, **extra):
    return {"label": label, "points": points, "group_id": group_id, "description": "",
            "shape_type": kind, "flags": {}, "mask": None, **extra}  # fmt: skip


@pytest.fixture
def labelme_dataset(tmp_path):
    """Two images in a subfolder, JSONs beside them (labelme's default), every area shape type."""
    root = tmp_path / "labelme"
    truth = {}
    blob = np.zeros((20, 30), dtype=bool)
    blob[3:17, 4:26] = True
    blob[8:12, 10:20] = False
    files = {
        "a.png": [
            _shape("cat", [[10, 10], [60, 12], [40, 50]]),
            _shape("dog", [[90, 20], [140, 60]], "rectangle"),
            # one dog in two parts (occluded in the middle): one instance
            _shape("dog", [[10, 80], [50, 80], [50, 120], [10, 120]], group_id=1),
            _shape("dog", [[70, 80], [100, 80], [100, 120]], group_id=1),
        ],
        "sub/b.png": [
            _shape("fox", [[50, 60], [80, 60]], "circle"),
            _shape("cat", [[100, 10], [129, 29]], "mask", mask=_mask_png(blob)),
            _shape("cat", [[5, 5], [20, 5]]),  # two points: dropped
            _shape("dog", [[200, 10], [260, 10], [230, 60]]),  # outside: dropped
            _shape("fox", [[5, 100], [40, 110]], "line"),  # no area: dropped
        ],
    }
    truth[("a.png", "cat")] = [_polygon_mask([[10, 10], [60, 12], [40, 50]])]
    truth[("a.png", "dog")] = [
        _polygon_mask([[90, 20], [140, 20], [140, 60], [90, 60]]),
        _polygon_mask([[10, 80], [50, 80], [50, 120], [10, 120]])
        | _polygon_mask([[70, 80], [100, 80], [100, 120]]),
    ]
    truth[("sub/b.png", "fox")] = [_disc(50, 60, 30)]
    placed = np.zeros((H, W), dtype=bool)
    placed[10:30, 100:130] = blob
    truth[("sub/b.png", "cat")] = [placed]
    for seed, (name, shapes) in enumerate(files.items()):
        image = root / name
        _write_image(image, seed)
        doc = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image.name,
               "imageData": None, "imageHeight": H, "imageWidth": W}  # fmt: skip
        image.with_suffix(".json").write_text(json.dumps(doc))
    (root / "notes.json").write_text(json.dumps({"todo": "not an annotation"}))
    return root, truth


def test_labelme(labelme_dataset, tmp_path, tiny_opts, capsys):
    root, truth = labelme_dataset
    out = tmp_path / "coco.json"
    assert main(["dataset", "convert", str(root), "--from", "labelme", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    dropped = [line for line in printed.splitlines() if line.startswith("dropped:")]
    assert len(dropped) == 4, printed
    for reason in ("needs at least 3", "outside the 160x128 image", "'line' has no area",
                   "not a labelme file"):  # fmt: skip
        assert sum(reason in line for line in dropped) == 1, reason
    assert all(str(root) in line for line in dropped)
    _check_against_truth(out, truth)
    assert validate_coco_dataset(out, root) == []
    _train_two_iterations(out, root, tiny_opts, tmp_path)


def test_labelme_checks_image_sizes_and_classes(labelme_dataset, tmp_path):
    root, _ = labelme_dataset
    doc = json.loads((root / "a.json").read_text())
    (root / "a.json").write_text(json.dumps(dict(doc, imageWidth=999)))
    result = convert_dataset("labelme", root, classes=["cat", "dog"])
    reasons = [str(d) for d in result.dropped]
    assert any("a.json" in r and "999x128" in r and "160x128" in r for r in reasons)
    assert any("'fox' is not in --classes" in r for r in reasons)
    assert [c["name"] for c in result.coco["categories"]] == ["cat", "dog"]
    assert [i["file_name"] for i in result.coco["images"]] == ["sub/b.png"]


def test_supervision_misses_labelme_circles_and_masks(labelme_dataset):
    """Why labelme is read here and not through supervision: its reader skips circle and mask
    shapes and drops the imagePath folder."""
    sv_labelme = pytest.importorskip("supervision.dataset.formats.labelme")
    root, truth = labelme_dataset
    sub = root / "sub"
    ours = convert_dataset("labelme", sub).coco
    assert len(ours["annotations"]) == len(
        truth[("sub/b.png", "fox")] + truth[("sub/b.png", "cat")]
    )
    clean = sub / "clean"
    clean.mkdir()
    doc = json.loads((sub / "b.json").read_text())
    doc["shapes"] = doc["shapes"][
        :2
    ]  # only the circle and the mask (its reader raises on the rest)
    (clean / "b.json").write_text(json.dumps(doc))
    _, _, annotations = sv_labelme.load_labelme_annotations(str(sub), str(clean), force_masks=True)
    assert sum(len(d) for d in annotations.values()) == 0


# ----------------------------------------------------------------------------- VIA


def _via_regions(version: int):
    regions = [
        ({"name": "polygon", "all_points_x": [10, 60, 40], "all_points_y": [10, 12, 50]}, "cat"),
        ({"name": "rect", "x": 90, "y": 20, "width": 50, "height": 40}, "dog"),
        ({"name": "circle", "cx": 50, "cy": 90, "r": 25}, "fox"),
        ({"name": "ellipse", "cx": 120, "cy": 95, "rx": 30, "ry": 18, "theta": 0}, "fox"),
        ({"name": "point", "cx": 5, "cy": 5}, "cat"),  # no area: dropped
    ]
    listed = [{"shape_attributes": s, "region_attributes": {"species": c, "note": ""}}
              for s, c in regions]  # fmt: skip
    return {str(i): r for i, r in enumerate(listed)} if version == 1 else listed


def _ellipse_mask(cx, cy, rx, ry):
    y, x = np.mgrid[0:H, 0:W]
    return ((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1


@pytest.mark.parametrize("version", [1, 2])
def test_via(tmp_path, tiny_opts, version):
    _write_image(tmp_path / "img" / "x.jpg", 0)
    Image.open(tmp_path / "img" / "x.jpg").convert("RGB").save(tmp_path / "img" / "x.png")
    entries = {f"x.png{i}": {"filename": "x.png", "size": 1, "regions": _via_regions(version),
                             "file_attributes": {}} for i in range(1)}  # fmt: skip
    doc = entries if version == 1 else {"_via_settings": {}, "_via_img_metadata": entries}
    src = tmp_path / "via.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "coco.json"
    images = tmp_path / "img"
    argv = ["dataset", "convert", str(src), "--from", "via", "--out", str(out), "--images"]
    assert main([*argv, str(images), "--class-attribute", "species"]) == 0
    truth = {
        ("x.png", "cat"): [_polygon_mask([[10, 10], [60, 12], [40, 50]])],
        ("x.png", "dog"): [_polygon_mask([[90, 20], [140, 20], [140, 60], [90, 60]])],
        ("x.png", "fox"): [_disc(50, 90, 25), _ellipse_mask(120, 95, 30, 18)],
    }
    _check_against_truth(out, truth)
    assert validate_coco_dataset(out, images) == []
    _train_two_iterations(out, images, tiny_opts, tmp_path)


def test_via_without_the_class_attribute_lists_those_present(tmp_path, capsys):
    src = tmp_path / "via.json"
    src.write_text(json.dumps({"x.png": {"filename": "x.png", "regions": _via_regions(2)}}))
    argv = ["dataset", "convert", str(src), "--from", "via", "--out", str(tmp_path / "o.json")]
    for extra, expected in (
        ([], "give --class-attribute"),
        (["--class-attribute", "kind"], "'kind'"),
    ):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "note, species" in err, err
    assert not (tmp_path / "o.json").exists()


# ----------------------------------------------------------------------------- YOLO


def test_yolo(tmp_path, tiny_opts, capsys):
    root = tmp_path / "yolo"
    polygons = {
        "train/a.png": [(0, [[10, 10], [60, 12], [40, 50]]), (2, [[90, 20], [140, 20], [140, 60]])],
        "val/b.png": [(1, [[20, 70], [80, 70], [80, 120], [20, 120]])],
    }
    for seed, (name, shapes) in enumerate(polygons.items()):
        _write_image(root / "images" / name, seed)
        lines = [
            f"{c} " + " ".join(f"{x / W:.6f} {y / H:.6f}" for x, y in pts) for c, pts in shapes
        ]
        if name == "val/b.png":
            lines += ["7 0.1 0.1 0.2 0.1 0.2 0.2", "1 0.5 0.5", "0 0.5 0.5 0.25 0.25"]
        label = (root / "labels" / name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"names": {0: "cat", 1: "dog", 2: "fox"}}))
    out = tmp_path / "coco.json"
    assert main(["dataset", "convert", str(root), "--from", "yolo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "class id 7 is not among the 3" in printed and "needs at least 3" in printed
    box = [
        [0.375 * W, 0.375 * H],
        [0.625 * W, 0.375 * H],
        [0.625 * W, 0.625 * H],
        [0.375 * W, 0.625 * H],
    ]
    truth = {
        ("train/a.png", "cat"): [_polygon_mask(polygons["train/a.png"][0][1])],
        ("train/a.png", "fox"): [_polygon_mask(polygons["train/a.png"][1][1])],
        ("val/b.png", "dog"): [_polygon_mask(polygons["val/b.png"][0][1])],
        ("val/b.png", "cat"): [_polygon_mask(box)],
    }
    _check_against_truth(out, truth)
    assert [c["name"] for c in json.loads(out.read_text())["categories"]] == CLASSES
    assert validate_coco_dataset(out, root / "images") == []
    _train_two_iterations(out, root / "images", tiny_opts, tmp_path)


def test_bad_inputs_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notyolo").mkdir()
    not_via = tmp_path / "not_via.json"
    not_via.write_text(json.dumps({"images": []}))
    cases = [
        (["x", "--from", "coco"], "unknown format 'coco'"),
        ([str(tmp_path / "missing"), "--from", "labelme"], "not found"),
        ([str(tmp_path / "empty"), "--from", "labelme"], "no images converted"),
        ([str(not_via), "--from", "via"], "not a VIA JSON"),
        ([str(tmp_path / "notyolo"), "--from", "yolo"], "no data.yaml or classes.txt"),
    ]
    for args, expected in cases:
        assert main(["dataset", "convert", *args, "--out", str(tmp_path / "o.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    (tmp_path / "notyolo" / "classes.txt").write_text("cat\n")
    with pytest.raises(ConfigError, match="images/ and labels/"):
        convert_dataset("yolo", tmp_path / "notyolo")


def test_image_sizes_are_as_the_loader_sees_them(tmp_path, capsys):
    """A JPEG whose EXIF turns it by 90 degrees is recorded turned, as labelme, VIA and the
    training loader show it; an image that cannot be read is a dropped line, not a stop."""
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (W, H), (90, 120, 30)).save(root / "images" / "turned.jpg", exif=exif)
    (root / "labels" / "turned.txt").write_text("0 0.1 0.1 0.9 0.1 0.5 0.9\n")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "classes.txt").write_text("cat\n")
    out = tmp_path / "coco.json"
    assert main(["dataset", "convert", str(root), "--from", "yolo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert any("broken.png" in line and "not a readable image" in line
               for line in printed.splitlines() if line.startswith("dropped:"))  # fmt: skip
    coco = json.loads(out.read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        ("turned.jpg", H, W)
    ]
    assert validate_coco_dataset(out, root / "images") == []
