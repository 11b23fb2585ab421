"""The one pipeline: frames of images and videos through a real (briefly trained) model, in order,
batched across bad inputs, with per-stage timing; the first failure of an output stage stops
every stage."""

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.inference.frames import array_frames, image_frame
from instseg.inference.model import BatchPredictor
from instseg.inference.pipeline import STAGES, Frame, Pipeline, StageClock
from instseg.inference.settings import PredictSettings, load_model_config


@pytest.fixture(scope="module")
def predictor(trained_run):
    run = Path(trained_run)
    cfg = load_model_config(
        [str(run / "config.yaml")],
        str(run / "model_final.pth"),
        ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"],
    )
    return BatchPredictor(cfg)


def _settings(predictor, *opts) -> PredictSettings:
    cfg = predictor.cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return PredictSettings.from_cfg(cfg)


def _frames(sample_dataset, tmp_path) -> list[Frame]:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    paths = [sample_dataset.val_images / f"0000{i}.jpg" for i in range(3)]
    frames = [image_frame(p, p.name) for p in paths]
    frames.insert(1, image_frame(tmp_path / "broken.jpg", "broken.jpg"))
    return frames


def test_frames_come_out_in_order_with_instances_by_score(predictor, sample_dataset, tmp_path):
    pipeline = Pipeline(
        predictor,
        _settings(predictor, "INSTSEG.PREDICT.BATCH_SIZE", "2", "INSTSEG.PREDICT.QUEUE_SIZE", "1"),
    )
    out = list(pipeline.frames(_frames(sample_dataset, tmp_path)))
    assert [f.rel for f in out] == ["00000.jpg", "broken.jpg", "00001.jpg", "00002.jpg"]
    broken = out[1]
    assert broken.error.startswith(str(tmp_path / "broken.jpg")) and broken.instances is None
    # The first batch is the two good frames around the broken one, which it does not count.
    assert [f.warm_up for f in out] == [True, True, True, False]
    for frame in (out[0], out[2], out[3]):
        scores = frame.instances.scores
        assert len(scores) > 0 and torch.equal(scores, scores.sort(descending=True).values)
        assert frame.model_input is None and set(frame.seconds) >= {"decode", "preprocess", "model"}
    expected = predictor.predict([predictor.preprocess(out[2].image)])[0]
    assert torch.allclose(out[2].instances.scores, expected.scores.sort(descending=True).values)


def test_class_filter(predictor):
    keep = [1]
    names = _settings(predictor).class_names
    settings = _settings(predictor, "INSTSEG.PREDICT.CLASSES", repr([names[1]]))
    assert settings.keep_classes == (1,)
    pipeline = Pipeline(predictor, settings)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    [frame] = pipeline.frames(array_frames([image]))
    assert set(frame.instances.pred_classes.tolist()) <= set(keep)


def test_output_stages_run_in_order_and_are_timed(predictor, sample_dataset, tmp_path):
    pipeline = Pipeline(predictor, _settings(predictor, "INSTSEG.PREDICT.QUEUE_SIZE", "1"))
    seen: list[tuple[str, str]] = []
    stages = [
        ("render", lambda f: seen.append(("render", f.rel))),
        ("write", lambda f: seen.append(("write", f.rel))),
    ]
    clock = StageClock()
    pipeline.run(_frames(sample_dataset, tmp_path), stages, clock)
    rels = ["00000.jpg", "broken.jpg", "00001.jpg", "00002.jpg"]
    assert [r for s, r in seen if s == "render"] == rels
    assert [r for s, r in seen if s == "write"] == rels
    # Timed: the good frames after the first batch; the broken one is not counted.
    assert clock.frames == 2 and clock.warm_frames == 1
    assert set(clock.stage_ms()) == set(STAGES) and clock.throughput() > 0


def test_a_failing_output_stage_stops_every_stage(predictor, sample_dataset, tmp_path):
    pipeline = Pipeline(
        predictor, _settings(predictor, "INSTSEG.PREDICT.QUEUE_SIZE", "1"), name="failing"
    )
    calls = []

    def fails_on_second(frame):
        calls.append(frame.rel)
        if len(calls) == 2:
            raise OSError("disk full")

    many = [image_frame(sample_dataset.val_images / "00000.jpg", f"{i}.jpg") for i in range(20)]
    with pytest.raises(OSError, match="disk full"):
        pipeline.run(many, [("write", fails_on_second)], StageClock())
    assert len(calls) == 2
    assert not [t for t in threading.enumerate() if t.name.startswith("instseg-failing-")]


def test_stage_clock_falls_back_to_the_first_batch():
    clock = StageClock()
    frame = Frame(None, "x", seconds={"model": 0.5}, warm_up=True)
    clock.add(frame)
    assert clock.stage_ms()["model"] == 500.0
    assert clock.stage_ms(warm_up_fallback=False) == {}
    assert StageClock.combine([clock]) == ({}, 0.0)
