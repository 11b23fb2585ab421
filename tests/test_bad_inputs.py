"""A corpus of bad inputs, each as a user would meet it on the command line: configs, datasets,
images, videos, checkpoints and arguments. Every case is one exact line on stderr, exit status 2,
and the files around it exactly as they were: nothing written outside the output folder, nothing
written earlier lost."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest

from instseg.cli import main
from instseg.data.sample_shapes import CLASS_NAMES

PY_TAG = "SOLVER: !!python/object/apply:os.system ['touch {t}/marker']\n"


class World:
    """A folder of inputs: a trained run, two images, a video, a dataset, an earlier output."""

    def __init__(self, root: Path, run: Path, sample_dataset) -> None:
        self.root = root
        self.run = root / "run"
        shutil.copytree(run, self.run)
        (root / "images").mkdir()
        for name in ("00000.jpg", "00001.jpg"):
            shutil.copy(sample_dataset.val_images / name, root / "images" / name)
        (root / "videos").mkdir()
        (root / "videos" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really")
        self.coco = json.loads(sample_dataset.val_json.read_text())
        self.coco["images"] = self.coco["images"][:2]
        self.coco["annotations"] = [a for a in self.coco["annotations"] if a["image_id"] in (1, 2)]
        self.earlier = root / "earlier"
        self.earlier.mkdir()
        (self.earlier / "predictions.json").write_text("[]\n")

    def write(self, name: str, text: str) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{t}", str(self.root)))
        return str(path)

    def dataset(self, change) -> str:
        coco = json.loads(json.dumps(self.coco))
        change(coco)
        return self.write("data/train.json", json.dumps(coco))

    def predict(
        self, *args: str, output: str = "out", weights: str | None = None, config: str = ""
    ) -> list[str]:
        return [
            "predict", *args, "--config", config or str(self.run / "config.yaml"),
            "--weights", weights or str(self.run / "model_final.pth"),
            "--output", str(self.root / output), "--no-progress", "MODEL.DEVICE", "cpu",
        ]  # fmt: skip

    def train(self, json_path: str, *opts: str) -> list[str]:
        return [
            "train", "--config", "demo_R18_FPN_cpu", "--output", str(self.root / "train"),
            "INSTSEG.DATASETS.TRAIN.NAME", "bad_inputs_train",
            "INSTSEG.DATASETS.TRAIN.JSON", json_path,
            "INSTSEG.DATASETS.TRAIN.IMAGES", str(self.root / "images"),
            "INSTSEG.DATASETS.VAL.NAME", "", *opts,
        ]  # fmt: skip


def _crafted_pkl(w: World) -> str:
    class Boom:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {w.root}/marker",))

    path = w.root / "weights.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": Boom()}}))
    return str(path)


def _show(w: World, text: str, name: str = "bad.yaml") -> list[str]:
    return ["config", "show", "--config", w.write(name, text)]


# id: (command for the world, the exact stderr line without "error: "; {t} is the world's folder)
CASES = {
    # ---- configs
    "config-python-tag": (
        lambda w: _show(w, PY_TAG),
        "{t}/bad.yaml:1:9: Python tags are not allowed: instseg reads configs as data, never as code",
    ),
    "config-python-tag-in-base": (
        lambda w: (
            ["config", "show", "--config", w.write("top.yaml", "_BASE_: base.yaml\n")]
            + (w.write("base.yaml", PY_TAG) and [])
        ),
        "{t}/base.yaml:1:9: Python tags are not allowed: instseg reads configs as data, never as code",
    ),
    "config-empty": (lambda w: _show(w, ""), "{t}/bad.yaml: config file is empty"),
    "config-list": (
        lambda w: _show(w, "- a\n- b\n"),
        "{t}/bad.yaml: a config is a mapping of KEY: value, not a list",
    ),
    "config-syntax": (
        lambda w: _show(w, "SOLVER:\n  BASE_LR: [0.1\n"),
        "{t}/bad.yaml:3:1: expected ',' or ']', but got '<stream end>'",
    ),
    "config-tab-indent": (
        lambda w: _show(w, "SOLVER:\n\tBASE_LR: 0.1\n"),
        "{t}/bad.yaml:2:1: found character '\\t' that cannot start any token",
    ),
    "config-missing-base": (
        lambda w: _show(w, "_BASE_: nowhere.yaml\n"),
        "{t}/bad.yaml: _BASE_ nowhere.yaml: not found (as a path relative to {t}, or as a shipped "
        "config's name)",
    ),
    "config-base-loop": (
        lambda w: _show(w, "_BASE_: bad.yaml\n"),
        "{t}/bad.yaml: _BASE_ chain includes this file again",
    ),
    "config-py-file": (
        lambda w: _show(w, "import os\n", name="lazy.py"),
        "{t}/lazy.py: Python (LazyConfig) files are not supported; configs are YAML",
    ),
    "config-not-found": (
        lambda w: ["config", "show", "--config", str(w.root / "nope.yaml")],
        "{t}/nope.yaml: config file not found",
    ),
    "config-unknown-key": (
        lambda w: _show(w, "SOLVER:\n  BASE_RL: 0.1\n"),
        "{t}/bad.yaml: unknown config key SOLVER.BASE_RL; did you mean SOLVER.BASE_LR?",
    ),
    "config-wrong-type": (
        lambda w: _show(w, "SOLVER:\n  MAX_ITER: many\n"),
        "{t}/bad.yaml: Type mismatch (<class 'int'> vs. <class 'str'>) with values (40000 vs. "
        "many) for config key: SOLVER.MAX_ITER",
    ),
    "config-datasets-train-string": (
        lambda w: _show(w, "DATASETS:\n  TRAIN: mine\n"),
        '{t}/bad.yaml: DATASETS.TRAIN is a tuple of names: write ("mine",), not mine',
    ),
    "override-odd-count": (
        lambda w: ["config", "show", "--config", "demo_R18_FPN_cpu", "SOLVER.BASE_LR"],
        "command line: overrides must be KEY VALUE pairs, got ['SOLVER.BASE_LR']",
    ),
    "override-unknown-key": (
        lambda w: ["config", "show", "--config", "demo_R18_FPN_cpu", "SOLVER.BASE_RL", "0.1"],
        "command line: unknown config key SOLVER.BASE_RL; did you mean SOLVER.BASE_LR?",
    ),
    # ---- datasets
    "stats-missing-json": (
        lambda w: ["dataset", "stats", "--json", str(w.root / "none.json")],
        "{t}/none.json: dataset JSON not found",
    ),
    "stats-invalid-json": (
        lambda w: ["dataset", "stats", "--json", w.write("broken.json", '{"images": [')],
        "{t}/broken.json:1:13: not valid JSON: Expecting value",
    ),
    "stats-not-coco": (
        lambda w: ["dataset", "stats", "--json", w.write("list.json", "[1, 2]")],
        "{t}/list.json: not a COCO dataset (needs 'images', 'annotations' and 'categories' "
        "arrays); validate it for details",
    ),
    "train-json-missing": (
        lambda w: w.train(str(w.root / "none.json")),
        "{t}/none.json: dataset JSON not found",
    ),
    "train-string-bbox": (
        lambda w: w.train(w.dataset(lambda c: c["annotations"][0].update(bbox="1 2 3 4"))),
        "{t}/data/train.json: annotations[0] (id=1).bbox: must be [x, y, width, height] with 4 "
        'finite numbers, got string "1 2 3 4"; `instseg dataset validate --json '
        "{t}/data/train.json --images {t}/images` lists them all",
    ),
    "train-no-annotations": (
        lambda w: w.train(w.dataset(lambda c: c.pop("annotations"))),
        "{t}/data/train.json: <top level>: missing required key 'annotations'; `instseg dataset "
        "validate --json {t}/data/train.json --images {t}/images` lists them all",
    ),
    "train-dotdot-file-name": (
        lambda w: w.train(w.dataset(lambda c: c["images"][0].update(file_name="../x.jpg"))),
        "{t}/data/train.json: images[0] (id=1).file_name: path '../x.jpg' escapes the image "
        "root; `instseg dataset validate --json {t}/data/train.json --images {t}/images` lists "
        "them all",
    ),
    "train-name-without-json": (
        lambda w: w.train("", "INSTSEG.DATASETS.TRAIN.JSON", ""),
        "INSTSEG.DATASETS.TRAIN.JSON: required when NAME is set",
    ),
    # ---- predict arguments and options
    "predict-no-weights": (
        lambda w: [
            "predict",
            str(w.root / "images"),
            "--config",
            str(w.run / "config.yaml"),
            "--output",
            str(w.root / "out"),
        ],  # fmt: skip
        "predict: --weights is required",
    ),
    "predict-missing-source": (
        lambda w: w.predict(str(w.root / "nothing")),
        "{t}/nothing: no such file or folder",
    ),
    "predict-empty-glob": (
        lambda w: w.predict(str(w.root / "images" / "*.png")),
        "{t}/images/*.png: the pattern matches no image or video files",
    ),
    "predict-empty-list": (
        lambda w: w.predict(w.write("inputs.txt", "# nothing\n")),
        "{t}/inputs.txt: the list names no files",
    ),
    "predict-folder-without-inputs": (
        lambda w: w.predict(str(Path(w.write("notes/readme.txt", "no pictures here")).parent)),
        "{t}/notes: no image or video files found (looked for .jpg, .jpeg, .png, .bmp, .tif, "
        ".tiff, .webp, .mp4, .mkv, .avi, ...)",
    ),
    "predict-arg-both-file-and-key": (
        lambda w: (
            w.predict(str(w.root / "images"), "SOLVER.BASE_LR", "0.1")
            + (w.write("SOLVER.BASE_LR", "") and [])
        ),
        "SOLVER.BASE_LR: both a file and a config key; write ./SOLVER.BASE_LR for the file, or "
        "put the file before the first KEY VALUE pair",
    ),
    "predict-output-is-a-file": (
        lambda w: w.predict(str(w.root / "images"), output="images/00000.jpg"),
        "--output {t}/images/00000.jpg: exists and is not a folder",
    ),
    "predict-output-not-empty": (
        lambda w: w.predict(str(w.root / "images"), output="earlier"),
        "--output {t}/earlier: folder is not empty; pass --overwrite to predict everything "
        "again, or --skip-existing to predict only inputs without outputs",
    ),
    "predict-unknown-class": (
        lambda w: w.predict(str(w.root / "images"), "--classes", "unicorn"),
        "--classes: unknown class 'unicorn'; the model has {classes}",
    ),
    "predict-bad-renderer": (
        lambda w: w.predict(str(w.root / "images"), "INSTSEG.PREDICT.RENDERER", "pretty"),
        "INSTSEG.PREDICT.RENDERER must be auto or one of fast, visualizer, got 'pretty'",
    ),
    "predict-batch-size-zero": (
        lambda w: w.predict(str(w.root / "images"), "--batch-size", "0"),
        "INSTSEG.PREDICT: BATCH_SIZE and QUEUE_SIZE must be >= 1",
    ),
    "predict-num-workers-zero": (
        lambda w: w.predict(str(w.root / "images"), "--num-workers", "0"),
        "--num-workers must be >= 1, got 0",
    ),
    "predict-machine-rank-out-of-range": (
        lambda w: w.predict(str(w.root / "images"), "--num-machines", "2", "--machine-rank", "2"),
        "--machine-rank 2 of --num-machines 2: need 0 <= rank < machines",
    ),
    "predict-machines-without-url": (
        lambda w: w.predict(str(w.root / "images"), "--num-machines", "2"),
        "--num-machines > 1 needs --dist-url tcp://HOST:PORT of machine 0",
    ),
    "predict-coco-json-missing": (
        lambda w: w.predict(str(w.root / "images"), "--coco-json", str(w.root / "none.json")),
        "{t}/none.json: dataset JSON not found",
    ),
    "predict-coco-json-no-file-name": (
        lambda w: w.predict(
            str(w.root / "images"),
            "--coco-json",
            w.dataset(lambda c: c["images"][1].pop("file_name")),
        ),
        "--coco-json {t}/data/train.json: images[1] (id=2): no file_name",
    ),
    "predict-coco-json-string-id": (
        lambda w: w.predict(
            str(w.root / "images"),
            "--coco-json",
            w.dataset(lambda c: c["images"][0].update(id="one")),
        ),
        "--coco-json {t}/data/train.json: images[0]: id 'one' is not an integer",
    ),
    # ---- videos
    "video-stride-zero": (
        lambda w: w.predict(str(w.root / "videos"), "--frame-stride", "0"),
        "INSTSEG.VIDEO.FRAME_STRIDE must be >= 1, got 0",
    ),
    "video-end-before-start": (
        lambda w: w.predict(str(w.root / "videos"), "--start", "2", "--end", "1"),
        "INSTSEG.VIDEO: END (1.0s) must come after START (2.0s)",
    ),
    # ---- checkpoints
    "weights-missing": (
        lambda w: w.predict(str(w.root / "images"), weights=str(w.root / "none.pth")),
        "MODEL.WEIGHTS={t}/none.pth: file not found",
    ),
    "weights-crafted-pkl": (
        lambda w: w.predict(str(w.root / "images"), weights=_crafted_pkl(w)),
        "{t}/weights.pkl: not a checkpoint of plain arrays (refused global posix.system)",
    ),
    "weights-empty-file": (
        lambda w: w.predict(str(w.root / "images"), weights=w.write("empty.pth", "")),
        "{t}/empty.pth: not a readable checkpoint (EOFError)",
    ),
    "weights-run-config-python-tag": (
        lambda w: (
            w.predict(
                str(w.root / "images"),
                weights=str(w.root / "other" / "m.pth"),
                config="demo_R18_FPN_cpu",
            )
            + (w.write("other/m.pth", "") and [])
            + (
                w.write("other/config.yaml", "INSTSEG:\n  THING_CLASSES: !!python/name:os.system\n")
                and []
            )
        ),
        "{t}/other/config.yaml:2:18: Python tags are not allowed: instseg reads configs as data, "
        "never as code",
    ),
}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory, trained_run, sample_dataset):
    return World(tmp_path_factory.mktemp("bad_inputs"), Path(trained_run), sample_dataset)


@pytest.fixture
def fresh_console():
    """Console log handlers bound to this test's captured streams, as in a fresh process."""
    from detectron2.utils.logger import setup_logger

    for name in ("instseg", "detectron2", "fvcore"):
        logging.getLogger(name).handlers.clear()
    setup_logger.cache_clear()
    yield
    for name in ("instseg", "detectron2", "fvcore"):
        logging.getLogger(name).handlers.clear()
    setup_logger.cache_clear()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(case, world, capsys, monkeypatch, fresh_console):
    monkeypatch.chdir(world.root)
    command, expected = CASES[case]
    argv = command(world)
    before = _tree(world.root)
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    classes = str(list(CLASS_NAMES))
    expected = expected.replace("{t}", str(world.root)).replace("{classes}", classes)
    assert err.splitlines() == ["error: " + expected]
    assert status == 2
    assert _tree(world.root) == before  # nothing written anywhere, nothing lost
    assert not (world.root / "marker").exists()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
