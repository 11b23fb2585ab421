"""Annotated output videos: real encoded clips through a real (briefly trained) Mask R-CNN."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import threading
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.engine import DefaultPredictor

from instseg.cli.predict import add_video_arguments, video_overrides
from instseg.config import ConfigError
from instseg.data.sample_video import iter_sample_video_frames
from instseg.inference.job import PredictOptions
from instseg.inference.model import BatchPredictor
from instseg.inference.output_dir import OutputLock
from instseg.inference.runner import predict
from instseg.inference.settings import PredictSettings, load_model_config
from instseg.inference.sources import is_video_path
from instseg.inference.video_sink import VideoResult, predict_video
from instseg.io.clips import write_test_clip
from instseg.io.media import VideoReadError
from instseg.io.video_reader import open_video
from instseg.io.video_writer import VideoWriter, available_h264_encoder

av = pytest.importorskip("av")

needs_h264 = pytest.mark.skipif(available_h264_encoder() is None, reason="no H.264 encoder")
CODECS = [pytest.param("h264", marks=needs_h264), "mp4v"]
FPS = 20
NUM_FRAMES = 12


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # On a small shared CPU one intra-op thread is faster and steadier than contended ones.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_numpy_rng():
    # Video colours come from NumPy's global RNG.
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture(scope="module")
def model_files(trained_run):
    return [str(Path(trained_run) / "config.yaml")], str(Path(trained_run) / "model_final.pth")


@pytest.fixture(scope="module")
def predictor(model_files):
    return BatchPredictor(load_model_config(*model_files))


@pytest.fixture
def make_cfg(model_files):
    """Settings with extra KEY VALUE overrides (none of which may change the shared model)."""
    return lambda *opts: PredictSettings.from_cfg(load_model_config(*model_files, list(opts)))


def make_clip(path: Path, n=NUM_FRAMES, width=160, height=120, audio=False, codec="auto"):
    frames = iter_sample_video_frames(n, size=(height, width), seed=1)
    return write_test_clip(path, frames, fps=FPS, audio=audio, codec=codec).path


def predict_job(cfg, source, out, model=None, **options):
    """The predict job over ``source`` (a path or a list of them) into ``out``."""
    options = PredictOptions(output_dir=str(out), progress=False, **options)
    return predict(cfg, source, options, model=model)


def manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def no_stage_threads() -> bool:
    return not any(t.name.startswith("instseg-video-") for t in threading.enumerate())


# ----------------------------------------------------------------------------- options


def test_is_video_path():
    assert is_video_path("a/b/clip.MP4")
    assert is_video_path(Path("x.mkv"))
    assert not is_video_path("image.jpg")
    assert not is_video_path("folder")


def test_video_arguments_become_overrides():
    parser = argparse.ArgumentParser()
    add_video_arguments(parser)
    assert video_overrides(parser.parse_args([])) == []
    args = parser.parse_args(
        ["--frame-stride", "2", "--start", "1.5", "--end", "4", "--max-frames", "7"]
        + ["--codec", "mp4v"]
    )
    assert video_overrides(args) == [
        "INSTSEG.VIDEO.FRAME_STRIDE", "2",
        "INSTSEG.VIDEO.START", "1.5",
        "INSTSEG.VIDEO.END", "4.0",
        "INSTSEG.VIDEO.MAX_FRAMES", "7",
        "INSTSEG.VIDEO.CODEC", "mp4v",
    ]  # fmt: skip


def test_bad_video_options_are_config_errors(make_cfg, predictor, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", n=3)
    for opts, key in [
        (["INSTSEG.VIDEO.FRAME_STRIDE", "0"], "FRAME_STRIDE"),
        (["INSTSEG.VIDEO.CODEC", "vp9"], "CODEC"),
        (["INSTSEG.VIDEO.START", "2.0", "INSTSEG.VIDEO.END", "1.0"], "END"),
        (["INSTSEG.PREDICT.RENDERER", "pretty"], "RENDERER"),
    ]:
        with pytest.raises(ConfigError, match=key):
            predict_video(make_cfg(*opts), clip, tmp_path / "out", model=predictor)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("codec", CODECS)
def test_output_matches_input_and_keeps_audio(make_cfg, predictor, tmp_path, codec):
    clip = make_clip(tmp_path / "clip.mp4", audio=True)
    out = tmp_path / "out"
    result = predict_video(
        make_cfg("INSTSEG.VIDEO.CODEC", codec), clip, out, model=predictor, progress=False
    )
    assert result.ok and result.frames == NUM_FRAMES and result.first_bad_frame is None
    assert result.video == out / "clip.mp4"
    assert result.written.codec == codec and result.written.has_audio
    assert set(result.stage_ms) == {"decode", "preprocess", "model", "track", "render", "write"}
    assert result.throughput > 0
    with open_video(clip) as source, open_video(result.video) as output:
        assert output.frame_count == source.frame_count == NUM_FRAMES
        assert output.fps == pytest.approx(source.fps)
        assert (output.width, output.height) == (source.width, source.height)
        assert output.has_audio
        assert len(list(output)) == NUM_FRAMES
        raw_bytes = NUM_FRAMES * source.width * source.height * 3
    # The frames went through a real codec (mp4v, the weakest, gives about 1/6 of raw BGR).
    assert result.written.bytes < raw_bytes / 4
    lines = read_jsonl(out / "clip.predictions.jsonl")
    assert [line["frame"] for line in lines] == list(range(NUM_FRAMES))
    assert [line["time"] for line in lines] == pytest.approx(
        [i / FPS for i in range(NUM_FRAMES)], abs=1e-4
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "clip.mp4",
        "clip.predictions.jsonl",
        "clip.tracks.csv",
        "clip.tracks.json",
    ]


@pytest.fixture(scope="module")
def reference_clip(tmp_path_factory, model_files):
    """A clip, and DefaultPredictor's instances for each of its decoded frames."""
    clip = make_clip(tmp_path_factory.mktemp("reference") / "clip.mp4")
    reference = DefaultPredictor(load_model_config(*model_files))
    with open_video(clip) as source:
        expected = [reference(frame.image)["instances"].to("cpu") for frame in source]
    return clip, expected


@pytest.mark.parametrize(
    ("batch_size", "optimize", "max_flipped"),
    [(1, False, 0.0), (1, True, 1e-5), (3, True, 1e-3)],
    ids=["exact", "optimized", "batched"],
)
def test_predictions_equal_default_predictor(
    make_cfg, predictor, tmp_path, reference_clip, batch_size, optimize, max_flipped
):
    """Batch 1 on the unmodified model is DefaultPredictor exactly; the folded channels-last model
    (the default) matches to float rounding, which can flip a pixel whose mask probability sits at
    the threshold; batched forward passes differ a little more (features near padded borders)."""
    clip, reference = reference_clip
    cfg = make_cfg(
        "INSTSEG.PREDICT.BATCH_SIZE",
        str(batch_size),
        "INSTSEG.PREDICT.OPTIMIZE_MODEL",
        str(optimize),
    )
    run_predictor = predictor if optimize else BatchPredictor(cfg.cfg)
    result = predict_video(cfg, clip, tmp_path / "out", model=run_predictor, progress=False)
    lines = read_jsonl(result.predictions)
    atol = 1e-4 if batch_size == 1 else 1e-2

    assert len(lines) == len(reference) == NUM_FRAMES
    total = 0
    for line, expected in zip(lines, reference, strict=True):
        got = line["results"]
        assert len(got) == len(expected)
        total += len(got)
        if not got:
            continue
        # The COCO results format of predictions.json: ids are the class ids + 1, boxes XYWH.
        assert {g["image_id"] for g in got} == {line["frame"]}
        assert [g["category_id"] for g in got] == (expected.pred_classes + 1).tolist()
        np.testing.assert_allclose(
            [g["score"] for g in got], expected.scores.numpy(), rtol=0, atol=atol
        )
        boxes = expected.pred_boxes.tensor.numpy().copy()
        boxes[:, 2:] -= boxes[:, :2]
        np.testing.assert_allclose([g["bbox"] for g in got], boxes, rtol=0, atol=atol)
        decoded = mask_util.decode([g["segmentation"] for g in got]).transpose(2, 0, 1)
        decoded = decoded.astype(bool)
        masks = expected.pred_masks.numpy()
        assert (decoded != masks).sum() <= max_flipped * masks.size
    assert total > 0, "the test model should find something in these frames"


@pytest.mark.parametrize(
    ("opts", "indices"),
    [
        (["INSTSEG.VIDEO.FRAME_STRIDE", "3", "INSTSEG.VIDEO.MAX_FRAMES", "3"], [0, 3, 6]),
        (["INSTSEG.VIDEO.START", "0.25", "INSTSEG.VIDEO.END", "0.6"], [5, 6, 7, 8, 9, 10, 11]),
        (
            ["INSTSEG.VIDEO.START", "0.1", "INSTSEG.VIDEO.FRAME_STRIDE", "4"]
            + ["INSTSEG.PREDICT.RENDER", "False"],
            [2, 6, 10],
        ),
    ],
)
def test_frame_selection(make_cfg, predictor, tmp_path, opts, indices):
    clip = make_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    result = predict_video(make_cfg(*opts), clip, out, model=predictor, progress=False)
    lines = read_jsonl(result.predictions)
    assert [line["frame"] for line in lines] == indices
    assert [line["time"] for line in lines] == pytest.approx([i / FPS for i in indices], abs=1e-4)
    assert result.frames == len(indices)
    if "INSTSEG.PREDICT.RENDER" in opts:
        assert result.video is None and not (out / "clip.mp4").exists()
        return
    with open_video(result.video) as output:
        times = [f.time for f in output]
    # Frames keep their source spacing (times shift so the first selected frame is at 0).
    assert times == pytest.approx([(i - indices[0]) / FPS for i in indices], abs=1e-3)


def test_class_filter(make_cfg, predictor, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", n=4)
    cfg = make_cfg("INSTSEG.PREDICT.RENDER", "False")
    everything = read_jsonl(predict_video(cfg, clip, tmp_path / "all", model=predictor).predictions)
    names = cfg.class_names
    first = everything[0]["results"]
    keep = names[first[0]["category_id"] - 1] if first else names[0]
    cfg = make_cfg("INSTSEG.PREDICT.RENDER", "False", "INSTSEG.PREDICT.CLASSES", f"['{keep}']")
    kept = read_jsonl(predict_video(cfg, clip, tmp_path / "one", model=predictor).predictions)
    kept_id = names.index(keep) + 1

    def untracked(results):  # track ids are numbered among the instances kept
        return [{k: v for k, v in r.items() if k != "track_id"} for r in results]

    for before, after in zip(everything, kept, strict=True):
        expected = [r for r in before["results"] if r["category_id"] == kept_id]
        assert untracked(after["results"]) == untracked(expected)


def test_variable_frame_rate_keeps_times(make_cfg, predictor, tmp_path):
    times = [0.0, 0.04, 0.15, 0.2, 0.45, 0.5, 0.8]
    clip = tmp_path / "vfr.mp4"
    frames = iter_sample_video_frames(len(times), size=(120, 160), seed=2)
    with VideoWriter(clip, 25, 160, 120, codec="auto") as writer:
        for t, image in zip(times, frames, strict=True):
            writer.write(image, t)
    result = predict_video(make_cfg(), clip, tmp_path / "out", model=predictor, progress=False)
    assert [line["time"] for line in read_jsonl(result.predictions)] == pytest.approx(
        times, abs=1e-3
    )
    with open_video(result.video) as output:
        assert [f.time for f in output] == pytest.approx(times, abs=1e-3)


@pytest.mark.parametrize("codec", CODECS)
def test_odd_frame_size(make_cfg, predictor, tmp_path, codec):
    clip = make_clip(tmp_path / "odd.mp4", n=6, width=161, height=119, codec="auto")
    cfg = make_cfg("INSTSEG.VIDEO.CODEC", codec)
    result = predict_video(cfg, clip, tmp_path / "out", model=predictor, progress=False)
    with open_video(result.video) as output:
        assert (output.width, output.height) == (161, 119)
        assert len(list(output)) == 6
    results = read_jsonl(result.predictions)[0]["results"]
    assert all(r["segmentation"]["size"] == [119, 161] for r in results)


# ----------------------------------------------------------------------------- failures


def test_truncated_video_gives_shorter_valid_output(make_cfg, predictor, tmp_path, caplog):
    clip = make_clip(tmp_path / "cut.mkv", n=20)
    data = clip.read_bytes()
    clip.write_bytes(data[: int(len(data) * 0.6)])
    with caplog.at_level(logging.WARNING, logger="instseg"):
        result = predict_video(make_cfg(), clip, tmp_path / "out", model=predictor)
    assert 0 < result.frames < 20
    assert result.first_bad_frame == result.frames
    with open_video(result.video) as output:
        assert len(list(output)) == result.frames
    assert len(read_jsonl(result.predictions)) == result.frames
    # (Detectron2's log formatter may abbreviate record names, so match the module file.)
    ours = [
        r for r in caplog.records if r.filename == "video_sink.py" and r.levelno == logging.WARNING
    ]
    assert len(ours) == 1
    assert str(clip) in ours[0].getMessage()
    assert f"frame {result.frames}" in ours[0].getMessage()


def test_text_file_named_mp4_is_one_clear_error(make_cfg, predictor, tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(VideoReadError) as info:
        predict_video(make_cfg(), fake, tmp_path / "out", model=predictor)
    message = str(info.value)
    assert message.startswith(str(fake)) and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_empty_selection_is_one_clear_error(make_cfg, predictor, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", n=4)
    out = tmp_path / "out"
    with pytest.raises(VideoReadError, match="no frames to process"):
        predict_video(make_cfg("INSTSEG.VIDEO.START", "5.0"), clip, out, model=predictor)
    assert list(out.iterdir()) == []
    assert no_stage_threads()


def test_folder_with_a_bad_file_goes_on(make_cfg, predictor, tmp_path, caplog):
    videos = tmp_path / "videos"
    videos.mkdir()
    make_clip(videos / "a.mp4", n=4)
    (videos / "b.mp4").write_text("not a video")
    make_clip(videos / "c.mkv", n=3)
    make_clip(videos / "c.mp4", n=2)  # same stem as c.mkv: both keep their whole names
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="instseg"):
        result = predict_job(make_cfg(), videos, out, model=predictor)
    assert (result.total, result.videos, result.ok, result.errors) == (4, 4, 3, 1)
    rows = manifest(out)
    assert [(r["path"], r["kind"], r["status"], r["frames"]) for r in rows] == [
        ("a.mp4", "video", "ok", "4"),
        ("b.mp4", "video", "error", ""),
        ("c.mkv", "video", "ok", "3"),
        ("c.mp4", "video", "ok", "2"),
    ]
    assert rows[1]["error"].startswith(str(videos / "b.mp4"))
    instances = [len(r["results"]) for r in read_jsonl(out / "a.predictions.jsonl")]
    assert int(rows[0]["instances"]) == sum(instances)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(videos / "b.mp4") in errors[0].getMessage()
    assert "4 input(s) (0 image(s), 4 video(s)): 3 ok, 1 failed" in caplog.text
    assert "per frame: decode" in caplog.text  # each video's stage timing
    assert sorted(p.name for p in out.glob("*.mp4")) == ["a.mp4", "c.mkv.mp4", "c.mp4.mp4"]

    # A second run into the folder is refused, or resumes: the failed video is tried again.
    with pytest.raises(ConfigError, match="not empty"):
        predict_job(make_cfg(), videos, out, model=predictor)
    again = predict_job(make_cfg(), videos, out, model=predictor, existing="skip")
    assert (again.skipped, again.errors) == (3, 1)
    assert [r["status"] for r in manifest(out)] == ["skipped", "error", "skipped", "skipped"]


def test_skip_existing_predicts_a_video_again_after_a_config_or_file_change(
    make_cfg, predictor, tmp_path, caplog
):
    """--skip-existing reuses a video only under the same config and the same file, and
    config.yaml always describes every result in the folder."""
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "clip.mp4", n=4)
    out = tmp_path / "out"

    def run(*opts):
        result = predict_job(make_cfg(*opts), clip, out, model=predictor, existing="skip")
        config = (out / "config.yaml").read_text()
        return result, config, read_jsonl(out / "clip.predictions.jsonl")

    first, config, records = run()
    assert (first.ok, first.skipped) == (1, 0) and len(records) == 4
    same, again, _ = run()
    assert (same.ok, same.skipped) == (0, 1) and again == config

    # Another config: predicted again (replacing, not "skipping", its earlier outputs), and
    # config.yaml is the new one.
    with caplog.at_level(logging.WARNING, logger="instseg"):
        changed, config, records = run("INSTSEG.VIDEO.FRAME_STRIDE", "2")
    assert (changed.ok, changed.skipped) == (1, 0) and "skipping" not in caplog.text
    assert "FRAME_STRIDE: 2" in config and [r["frame"] for r in records] == [0, 2]

    # The same config but a changed file under the same name: predicted again.
    make_clip(clip, n=6)
    edited, config, records = run("INSTSEG.VIDEO.FRAME_STRIDE", "2")
    assert (edited.ok, edited.skipped) == (1, 0) and [r["frame"] for r in records] == [0, 2, 4]
    assert [r["frames"] for r in manifest(out)] == ["3"]


def test_redone_without_rendering_the_earlier_video_goes(make_cfg, predictor, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", n=3)
    out = tmp_path / "out"
    first = predict_video(make_cfg(), clip, out, model=predictor, progress=False)
    assert first.video == out / "clip.mp4" and first.video.exists()
    cfg = make_cfg("INSTSEG.PREDICT.RENDER", "False")
    # Without --overwrite the finished run is left alone, video included.
    assert predict_video(cfg, clip, out, model=predictor, progress=False).skipped
    assert first.video.exists()
    again = predict_video(cfg, clip, out, overwrite=True, model=predictor, progress=False)
    assert again.video is None and not (out / "clip.mp4").exists()
    assert len(read_jsonl(again.predictions)) == 3
    assert clip.exists()


def test_output_never_replaces_the_input(make_cfg, predictor, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", n=2)
    before = clip.read_bytes()
    with pytest.raises(ConfigError, match="writing clip.mp4 there would replace the input"):
        predict_job(make_cfg(), [clip], tmp_path, model=predictor, existing="overwrite")
    assert clip.read_bytes() == before


@pytest.mark.parametrize("stage", ["decode", "model", "render", "encode"])
def test_stage_failure_propagates_and_leaves_nothing(
    make_cfg, predictor, tmp_path, monkeypatch, stage
):
    """A failure on the third frame of any stage is raised, stops every thread, leaves no file."""
    from instseg.viz.fast_renderer import FastRenderer

    clip = make_clip(tmp_path / "clip.mp4")
    owner, attribute = {
        "decode": (predictor, "preprocess"),
        "model": (predictor, "predict"),
        "render": (FastRenderer, "draw"),
        "encode": (VideoWriter, "write"),
    }[stage]
    original = getattr(owner, attribute)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError(f"{stage} exploded")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, broken)
    out = tmp_path / "out"
    cfg = make_cfg("INSTSEG.PREDICT.QUEUE_SIZE", "1")
    with pytest.raises(RuntimeError, match=f"{stage} exploded"):
        predict_video(cfg, clip, out, model=predictor, progress=False)
    assert list(out.iterdir()) == []
    assert no_stage_threads()


def test_result_defaults():
    result = VideoResult(source=Path("x.mp4"))
    assert result.ok and not result.skipped and result.video is None


def test_same_stem_videos_in_two_folders_are_both_annotated(make_cfg, predictor, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
    for folder in ("a", "b"):
        make_clip(tmp_path / "in" / folder / "clip.mp4", n=2)
    out = tmp_path / "out"
    result = predict_job(make_cfg(), tmp_path / "in", out, model=predictor)
    assert [(r["path"], r["status"]) for r in manifest(out)] == [
        ("a/clip.mp4", "ok"),
        ("b/clip.mp4", "ok"),
    ]
    assert result.ok == 2
    for folder in ("a", "b"):
        assert open_video(out / folder / "clip.mp4").frame_count == 2
        assert len(read_jsonl(out / folder / "clip.predictions.jsonl")) == 2


def test_a_kill_between_the_two_outputs_is_completed_by_the_next_run(
    make_cfg, predictor, tmp_path, monkeypatch
):
    """A video in a subfolder of the SOURCE, its outputs in the same subfolder of the output:
    the next run's lock, which looks in the output folder, finds the interrupted commit."""
    from instseg.io import atomic

    (tmp_path / "in" / "sub").mkdir(parents=True)
    make_clip(tmp_path / "in" / "sub" / "clip.mp4", n=3)
    source = tmp_path / "in"
    predict_job(make_cfg(), source, tmp_path / "ref", model=predictor)
    out = tmp_path / "out"
    original, calls = atomic.publish, []

    def killed_after_first_rename(tmp, path):
        calls.append(path)
        if len(calls) == 3:  # the journal, the JSONL, then the video: killed before it
            raise KeyboardInterrupt
        return original(tmp, path)

    monkeypatch.setattr(atomic, "publish", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        predict_job(make_cfg(), source, out, model=predictor)
    monkeypatch.undo()
    sub = out / "sub"
    assert (sub / "clip.predictions.jsonl").exists() and not (sub / "clip.mp4").exists()
    with OutputLock(out):  # the next run's lock completes the commit
        assert open_video(sub / "clip.mp4").frame_count == 3

    again = predict_job(make_cfg(), source, out, model=predictor, existing="skip")
    assert again.ok == 1  # no record of it was made before the kill: predicted again
    assert open_video(sub / "clip.mp4").frame_count == 3
    reference = read_jsonl(tmp_path / "ref" / "sub" / "clip.predictions.jsonl")
    assert read_jsonl(sub / "clip.predictions.jsonl") == reference
    leftovers = [p.name for p in out.rglob("*") if ".instseg-tmp-" in p.name or "commit" in p.name]
    assert leftovers == [] and not (out / ".instseg-parts").exists()


def test_several_videos_on_the_command_line(model_files, tmp_path):
    """`instseg predict v1.mp4 v2.mp4 MODEL.DEVICE cpu`, as a shell expands `*.mp4`."""
    import subprocess
    import sys

    clips = [make_clip(tmp_path / f"v{i}.mp4", n=2) for i in (1, 2)]
    config, weights = model_files
    instseg = Path(sys.executable).with_name("instseg")
    command = [
        str(instseg), "predict", *map(str, clips), "--output", str(tmp_path / "out"),
        "--config", config[0], "--weights", weights, "--no-progress", "MODEL.DEVICE", "cpu",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 input(s) (0 image(s), 2 video(s)): 2 ok, 0 failed, 0 skipped" in done.stdout
    assert done.stdout.count(".tracks.csv: ") == 2  # objects per class, one line a video
    for name in ("v1", "v2"):
        assert len(read_jsonl(tmp_path / "out" / f"{name}.predictions.jsonl")) == 2
    assert "DEVICE: cpu" in (tmp_path / "out" / "config.yaml").read_text()
