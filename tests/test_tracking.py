"""Track identities: Detectron2's tracker against the scripted clip's ground truth (py-motmetrics),
and a real model's tracks through the whole video path, jsonl and MOTChallenge CSV re-read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import motmetrics as mm
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from instseg.config import ConfigError, build_cfg
from instseg.data.sample_video import noisy_detections, tracking_clip
from instseg.inference.model import BatchPredictor
from instseg.inference.settings import PredictSettings, load_model_config
from instseg.inference.track_log import TrackLog
from instseg.inference.tracking import Tracker, TrackOptions
from instseg.inference.video_sink import predict_video
from instseg.io.clips import write_test_clip
from instseg.viz.colors import track_colors
from instseg.viz.fast_renderer import FastRenderer
from instseg.viz.renderer import instance_labels
from instseg.viz.visualizer import VisualizerRenderer

SIZE = (240, 320)  # tracking_clip's default frame size (height, width)


def instances(boxes, classes, scores=None, size=SIZE) -> Instances:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    scores = scores if scores is not None else [0.9] * len(boxes)
    return Instances(
        size,
        pred_boxes=Boxes(boxes),
        pred_classes=torch.tensor(classes, dtype=torch.int64),
        scores=torch.tensor(scores, dtype=torch.float32),
    )


def xywh(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def mot_summary(accumulator) -> dict:
    metrics = mm.metrics.create()
    summary = metrics.compute(accumulator, metrics=["mota", "idf1", "num_switches"], name="clip")
    return summary.iloc[0].to_dict()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_tracker_keeps_identities_on_the_scripted_clip(seed):
    rng = np.random.default_rng(seed)
    tracker = Tracker(TrackOptions.from_cfg(build_cfg(freeze=False)), SIZE[1], SIZE[0])
    accumulator = mm.MOTAccumulator(auto_id=True)
    gt_ids_seen = set()
    for _, truth in tracking_clip(size=SIZE):
        detections = noisy_detections(truth, rng, SIZE)
        ids = tracker.update(detections)
        assert ids.dtype == torch.int64 and len(ids) == len(detections)
        assert len(set(ids.tolist())) == len(ids)  # one id per instance of a frame
        gt_ids_seen.update(o.track_id for o in truth)
        distances = mm.distances.iou_matrix(
            xywh([o.box for o in truth]), xywh(detections.pred_boxes.tensor), max_iou=0.5
        )
        accumulator.update([o.track_id for o in truth], ids.tolist(), distances)
    assert gt_ids_seen == {1, 2, 3, 4, 5, 6}  # the script: every object shows up
    summary = mot_summary(accumulator)
    print(f"seed {seed}: MOTA {summary['mota']:.3f} IDF1 {summary['idf1']:.3f} "
          f"switches {int(summary['num_switches'])}")  # fmt: skip
    assert summary["idf1"] >= 0.9
    assert summary["num_switches"] <= 2


def test_clip_truth_covers_crossing_hiding_leaving_and_entering():
    frames = [[o.track_id for o in truth] for _, truth in tracking_clip(size=SIZE)]
    seen = "".join("x" if 3 in ids else "." for ids in frames)
    # Object 3 is seen, hidden for a few frames, seen again (and later leaves the frame).
    assert seen.startswith("x")
    runs = [run for run in seen.strip(".").split("x") if run]
    assert len(runs) == 1 and 4 <= len(runs[0]) <= 10, seen
    assert 5 in frames[0] and 5 not in frames[-1]  # leaves
    assert 6 not in frames[0] and 6 in frames[-1]  # enters


def test_a_newcomer_never_inherits_a_leaving_objects_id():
    tracker = Tracker(TrackOptions(), 320, 240)
    first = tracker.update(instances([[10, 10, 50, 50]], [0])).tolist()
    # The object is gone; another of its class appears far away in the same frame.
    second = tracker.update(instances([[250, 150, 290, 190]], [0])).tolist()
    assert second != first


def test_ids_stay_within_a_class():
    tracker = Tracker(TrackOptions(), 320, 240)
    a = tracker.update(instances([[10, 10, 60, 60]], [0])).tolist()
    b = tracker.update(instances([[12, 10, 62, 60]], [1])).tolist()  # same place, other class
    c = tracker.update(instances([[14, 10, 64, 60], [12, 10, 62, 60]], [0, 1])).tolist()
    assert a != b and c == [a[0], b[0]]  # the lost class-0 track comes back


def test_lost_tracks_wait_max_lost_frames():
    box = [[100, 100, 150, 150]]
    for lost, same in ((3, True), (4, False)):
        tracker = Tracker(TrackOptions(max_lost_frames=3), 320, 240)
        first = tracker.update(instances(box, [2])).tolist()
        for _ in range(lost):
            assert tracker.update(instances([], [])).tolist() == []
        assert (tracker.update(instances(box, [2])).tolist() == first) is same


def test_low_scores_are_not_tracked():
    tracker = Tracker(TrackOptions(min_score=0.5), 320, 240)
    ids = tracker.update(instances([[0, 0, 40, 40], [100, 100, 150, 150]], [0, 1], [0.9, 0.3]))
    assert ids.tolist() == [1, 0]
    inst = instances([[0, 0, 40, 40], [100, 100, 150, 150]], [0, 1], [0.9, 0.3])
    inst.track_id = ids
    assert instance_labels(inst, sample_metadata()) == ["#1 ellipse 90%", "triangle 30%"]
    assert TrackLog(["ellipse", "triangle"]).lines(inst, 0, 0.0).count("\n") == 1


def test_bad_track_options_are_config_errors():
    bad = (
        ("METHOD", "'sort'"),
        ("MIN_IOU", "0.0"),
        ("MAX_LOST_FRAMES", "-1"),
        ("MIN_SCORE", "2.0"),
    )
    for key, value in bad:
        cfg = build_cfg(opts=[f"INSTSEG.TRACK.{key}", value])
        with pytest.raises(ConfigError, match="INSTSEG.TRACK"):
            TrackOptions.from_cfg(cfg)


@pytest.mark.parametrize("renderer_class", [FastRenderer, VisualizerRenderer])
def test_labels_and_colours_follow_the_track_id(renderer_class):
    inst = instances([[10, 10, 60, 60], [100, 100, 160, 150]], [0, 1], [0.93, 0.5])
    inst.track_id = torch.tensor([7, 2])
    masks = torch.zeros(2, 240, 320, dtype=torch.bool)
    masks[0, 15:55, 15:55] = masks[1, 105:145, 105:155] = True
    inst.pred_masks = masks
    assert instance_labels(inst, sample_metadata()) == ["#7 ellipse 93%", "#2 triangle 50%"]
    renderer = renderer_class(sample_metadata(), video=True)
    blank = np.zeros((240, 320, 3), np.uint8)
    drawn = renderer.draw(blank, inst)
    assert renderer.last_colors == track_colors([7, 2])
    renderer.draw(blank, inst[[1]])  # id 7 missing for a frame
    assert (renderer.draw(blank, inst) == drawn).all()  # colour is identity
    assert renderer.last_colors == track_colors([7, 2])


def sample_metadata():
    from detectron2.data.catalog import Metadata

    return Metadata(thing_classes=["ellipse", "triangle", "rectangle", "star", "cross"])


def test_track_log_counts_objects_seen_long_enough():
    log = TrackLog(["ellipse", "triangle"], min_frames=2)
    ellipse = instances([[0, 0, 10, 10]], [0])
    ellipse.track_id = torch.tensor([1])
    both = instances([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])
    both.track_id = torch.tensor([1, 2])
    for frame, inst in enumerate((ellipse, both, ellipse)):
        log.lines(inst, frame, frame / 10)
    summary = log.summary(fps=10.0)
    assert summary["objects_per_class"] == {"ellipse": 1}  # the one-frame triangle is not counted
    assert [(t["id"], t["frames"], t["seconds"]) for t in summary["tracks"]] == [
        (1, 3, 0.2),
        (2, 1, 0.0),
    ]


# ----------------------------------------------------------------------------- the video path


@pytest.fixture(scope="module")
def model_files(trained_run):
    return [str(Path(trained_run) / "config.yaml")], str(Path(trained_run) / "model_final.pth")


def test_predicted_tracks_agree_between_jsonl_and_mot_csv(model_files, tmp_path):
    frames = [frame for frame, _ in tracking_clip(num_frames=16, size=SIZE)]
    clip = write_test_clip(tmp_path / "clip.mp4", frames, fps=10, codec="auto").path
    # The suite's briefly trained model scores low: track what it finds.
    opts = ["INSTSEG.VIDEO.FRAME_STRIDE", "2", "INSTSEG.TRACK.MIN_SCORE", "0.1"]
    settings = PredictSettings.from_cfg(load_model_config(*model_files, opts))
    result = predict_video(
        settings, clip, tmp_path / "out", model=BatchPredictor(settings.cfg), progress=False
    )
    assert result.ok and result.tracks == tmp_path / "out" / "clip.tracks.csv"

    lines = [json.loads(line) for line in result.predictions.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(0, 16, 2))
    results = [(line["frame"], r) for line in lines for r in line["results"]]
    # Instances under INSTSEG.TRACK.MIN_SCORE carry no id and stay out of the CSV.
    assert all((r["track_id"] is None) == (r["score"] < 0.1) for _, r in results)
    from_jsonl = {
        (frame + 1, r["track_id"]): (r["bbox"], r["score"], r["category_id"])
        for frame, r in results
        if r["track_id"] is not None
    }
    assert from_jsonl, "the trained model found nothing to track"
    with result.tracks.open(newline="") as f:
        rows = list(csv.reader(f))
    assert all(len(row) == 10 and row[8:] == ["-1", "-1"] for row in rows)
    from_csv = {
        (int(r[0]), int(r[1])): ([float(v) for v in r[2:6]], float(r[6]), int(r[7])) for r in rows
    }
    assert from_csv.keys() == from_jsonl.keys()
    for key, (bbox, score, category) in from_jsonl.items():
        assert from_csv[key][0] == pytest.approx(bbox, abs=0.01)
        assert from_csv[key][1] == pytest.approx(score, abs=1e-4)
        assert from_csv[key][2] == category
    # Each frame's ids are distinct; the CSV is what py-motmetrics reads.
    for line in lines:
        ids = [r["track_id"] for r in line["results"] if r["track_id"] is not None]
        assert len(set(ids)) == len(ids)
    loaded = mm.io.loadtxt(str(result.tracks), fmt="mot15-2D")
    assert len(loaded) == len(rows)

    summary = json.loads((tmp_path / "out" / "clip.tracks.json").read_text())
    assert summary["frame_stride"] == 2 and summary["fps"] == pytest.approx(10.0)
    assert {t["id"] for t in summary["tracks"]} == {key[1] for key in from_jsonl}
    assert sum(t["frames"] for t in summary["tracks"]) == len(rows)
    assert result.objects == summary["objects_per_class"]


def test_tracking_off_writes_no_track_files_and_removes_old_ones(model_files, tmp_path):
    frames = [frame for frame, _ in tracking_clip(num_frames=3, size=SIZE)]
    clip = write_test_clip(tmp_path / "clip.mp4", frames, fps=10, codec="auto").path
    tracked = PredictSettings.from_cfg(load_model_config(*model_files))
    predictor = BatchPredictor(tracked.cfg)
    predict_video(tracked, clip, tmp_path / "out", model=predictor, progress=False)
    assert (tmp_path / "out" / "clip.tracks.csv").is_file()
    # Redone without tracking: the earlier run's track files go with the outputs they matched.
    cfg = PredictSettings.from_cfg(
        load_model_config(*model_files, ["INSTSEG.TRACK.METHOD", "none"])
    )
    result = predict_video(
        cfg, clip, tmp_path / "out", overwrite=True, model=predictor, progress=False
    )
    assert result.ok and result.tracks is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clip.mp4",
        "clip.predictions.jsonl",
    ]
    lines = [json.loads(line) for line in result.predictions.read_text().splitlines()]
    assert all("track_id" not in r for line in lines for r in line["results"])
