"""The Python API: results for images and video frames, equal to the batched predictor's, with
nothing written; the README's example runs as printed."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg import Predictor, Result
from instseg.data.sample_video import iter_sample_video_frames
from instseg.inference.model import BatchPredictor
from instseg.inference.settings import load_model_config
from instseg.io.clips import write_test_clip
from instseg.io.images import read_image

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_dataset):
    folder = tmp_path_factory.mktemp("api_inputs")
    for name in ("00000.jpg", "00001.jpg"):
        shutil.copy(sample_dataset.val_images / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    clip = folder.parent / "api_clip.mp4"
    write_test_clip(clip, iter_sample_video_frames(3, size=(96, 128), seed=2), fps=10)
    return folder, clip


def test_images_and_frames_equal_the_batched_predictor(trained_run, inputs):
    folder, clip = inputs
    files = [str(trained_run / "config.yaml")], str(trained_run / "model_final.pth")
    before = sorted(p.name for p in folder.iterdir())
    predictor = Predictor(
        files[0], files[1], device="cpu", batch_size=2, draw=True, score_threshold=0.0,
        draw_score=0.0,
        max_detections=4,
    )  # fmt: skip
    results = list(predictor.predict([str(folder), str(clip)]))
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    assert [(r.rel, r.frame) for r in results] == [
        ("00000.jpg", 0), ("00001.jpg", 0), ("broken.jpg", 0),
        ("api_clip.mp4", 0), ("api_clip.mp4", 1), ("api_clip.mp4", 2),
    ]  # fmt: skip
    assert all(isinstance(r, Result) for r in results)
    broken = results[2]
    assert broken.error.startswith(str(folder / "broken.jpg")) and len(broken.instances) == 0

    opts = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    reference = BatchPredictor(load_model_config(*files, [*opts, "TEST.DETECTIONS_PER_IMAGE", "4"]))
    for result in results[:2]:
        image = read_image(folder / result.rel)
        expected = reference.predict([reference.preprocess(image)])[0]
        order = torch.argsort(expected.scores, descending=True)
        assert torch.allclose(result.instances.scores, expected.scores[order], atol=1e-3)
        assert result.drawn.shape == image.shape and not np.array_equal(result.drawn, image)
        assert result.time is None
    frames = results[3:]
    assert [round(r.time, 3) for r in frames] == [0.0, 0.1, 0.2]
    records = frames[0].to_coco(7)
    assert all(r["image_id"] == 7 and r["category_id"] >= 1 for r in records)


def test_a_bgr_array_and_unknown_options(trained_run):
    with pytest.raises(TypeError, match="unknown option"):
        Predictor(trained_run / "config.yaml", trained_run / "model_final.pth", threshold=0.5)
    predictor = Predictor(
        trained_run / "config.yaml", trained_run / "model_final.pth", device="cpu",
        score_threshold=0.99,
    )  # fmt: skip
    [result] = predictor.predict(np.zeros((64, 80, 3), np.uint8))
    assert result.path is None and result.image.shape == (64, 80, 3)
    assert all(s >= 0.99 for s in result.instances.scores.tolist())


def test_readme_example_runs(trained_run, inputs, tmp_path, monkeypatch, capsys):
    block = re.search(r"## Python API.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert len(block.strip().splitlines()) <= 6
    shutil.copytree(trained_run, tmp_path / "runs" / "pets")
    shutil.copytree(inputs[0], tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["00000.jpg", "00001.jpg", "broken.jpg"]


def test_pictures_show_only_instances_above_the_draw_score(trained_run, inputs):
    """The results keep every instance above the test threshold; the picture only those
    scoring at least DRAW_SCORE (nothing, above 1)."""
    image = read_image(inputs[0] / "00000.jpg")
    run = trained_run / "config.yaml", trained_run / "model_final.pth"
    kwargs = {"device": "cpu", "draw": True, "score_threshold": 0.0, "renderer": "fast"}
    [everything] = Predictor(*run, draw_score=0.0, **kwargs).predict(image)
    [nothing] = Predictor(*run, draw_score=1.01, **kwargs).predict(image)
    assert len(nothing.instances) == len(everything.instances) > 0
    assert np.array_equal(nothing.drawn, image)
    assert not np.array_equal(everything.drawn, image)


def test_video_frames_carry_the_track_ids_of_the_cli(trained_run, inputs, tmp_path):
    """A video's frames get the ids `instseg predict` writes to its JSONL, counted from 1 again
    for each video; with tracking off, no ids."""
    from instseg.inference.video_sink import predict_video

    clip = inputs[1]
    run = trained_run / "config.yaml", trained_run / "model_final.pth"
    opts = ["INSTSEG.TRACK.MIN_SCORE", "0.0"]
    predictor = Predictor(*run, device="cpu", score_threshold=0.0, max_detections=4, opts=opts)
    results = list(predictor.predict([str(clip), str(clip)]))
    ids = [r.instances.track_id.tolist() for r in results]
    assert len(ids) == 6 and ids[:3] == ids[3:]  # the second video starts again
    assert sorted(ids[0]) == list(range(1, len(ids[0]) + 1)) and len(ids[0]) > 0

    written = predict_video(
        predictor.settings, clip, tmp_path, model=predictor.model, progress=False
    )
    lines = [json.loads(line) for line in written.predictions.read_text().splitlines()]
    assert [[r["track_id"] for r in line["results"]] for line in lines] == ids[:3]
    assert [r["track_id"] for r in results[0].to_coco()] == ids[0]

    untracked = Predictor(*run, device="cpu", opts=["INSTSEG.TRACK.METHOD", "none"])
    assert not any(r.instances.has("track_id") for r in untracked.predict(str(clip)))
