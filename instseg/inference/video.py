"""Annotated output videos: Mask R-CNN on every selected frame, drawn and re-encoded.

For each input ``NAME.EXT`` these files are written into the output folder, each atomically:

* ``NAME.mp4``: the frames with masks, boxes and labels drawn (``INSTSEG.PREDICT.RENDERER``),
  with the source's size, frame times and audio (only when ``INSTSEG.PREDICT.RENDER``);
* ``NAME.predictions.jsonl``: one JSON object per processed frame, ``{"frame": source index,
  "time": seconds, "results": [COCO results]}``, the record format of images'
  predictions.json (:mod:`instseg.inference.records`; ``image_id`` is the frame index,
  ``category_id`` the class id + 1, ``track_id`` the instance's identity when tracking is on);
* with tracking on (``INSTSEG.TRACK.METHOD``, :mod:`instseg.inference.tracking`), the tracks in
  MOTChallenge format, ``NAME.tracks.csv``, and their summary, ``NAME.tracks.json``
  (:mod:`instseg.inference.track_log`).

``NAME`` follows :mod:`instseg.inference.output_plan` (the input's path below the SOURCE root,
without its extension), so same-stem videos in different folders keep apart. Frames
keep their source times (variable frame rates survive; with ``FRAME_STRIDE`` N the nominal rate
is the source's divided by N, so the output still plays in real time with its audio). Outputs
that exist are left alone unless ``overwrite`` is set.

Frames flow through :class:`~instseg.inference.pipeline.Pipeline`, the stages images use, with
the tracker first (its own thread: ids need the frames in order, which every stage keeps), then
two output stages: render (drawing and the JSONL record) and write (encoding and the JSONL
line), a thread each, so encoding overlaps a slow renderer (one thread doing both measured the
same within noise with the fast renderer on two cores: scripts/bench_video.py --merged). A
failure on any frame fails that video with one line;
:func:`~instseg.inference.videos.predict_videos` goes on with the next. The video, its JSONL
and its track files become visible together (one commit journal).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from detectron2.config import CfgNode
from tqdm import tqdm

from instseg.config import is_semantic
from instseg.data.catalog import build_metadata
from instseg.inference.frames import video_frames
from instseg.inference.pipeline import STAGES, Frame, Pipeline, StageClock
from instseg.inference.predictor import BatchPredictor, class_filter, instances_to_draw
from instseg.inference.records import coco_results, frame_record, semantic_results
from instseg.inference.sources import VIDEO_EXTENSIONS, is_video_path
from instseg.inference.track_log import TRACKS_CSV_SUFFIX, TRACKS_JSON_SUFFIX, TrackLog
from instseg.inference.tracking import Tracker, TrackOptions, build_tracker
from instseg.inference.video_options import VideoOptions, expected_frames, resolve_renderer_name
from instseg.io.atomic import AtomicFile, commit_journal, commit_together
from instseg.io.media import VideoError, VideoReadError, VideoWriteError, WrittenVideo
from instseg.io.video_reader import open_video
from instseg.io.video_writer import VideoWriter
from instseg.viz.render import build_renderer
from instseg.viz.renderer import Renderer
from instseg.viz.semantic_renderer import SemanticRenderer

logger = logging.getLogger(__name__)

__all__ = [
    "STAGES",
    "VIDEO_EXTENSIONS",
    "VideoError",
    "VideoOptions",
    "VideoReadError",
    "VideoResult",
    "VideoWriteError",
    "is_video_path",
    "output_paths",
    "predict_video",
    "resolve_renderer_name",
]

PREDICTIONS_SUFFIX = ".predictions.jsonl"
# Render and encode in one thread instead of two; scripts/bench_video.py --merged compares them.
_MERGE_RENDER_ENCODE = False


@dataclass
class VideoResult:
    """What happened to one input video.

    ``stage_ms`` holds each stage's busy time per frame in milliseconds (render includes the
    JSONL records; write is encoding and writing them), and ``throughput`` frames per second
    through the whole pipeline; both leave out the first model batch, which pays one-off
    start-up costs.
    """

    source: Path
    video: Path | None = None  # annotated video; None when rendering is off, skipped or failed
    predictions: Path | None = None  # the JSONL file; None when skipped or failed
    tracks: Path | None = None  # NAME.tracks.csv; None when tracking is off, skipped or failed
    objects: dict[str, int] = field(default_factory=dict)  # tracked objects per class name
    frames: int = 0  # frames processed (and written)
    instances: int = 0  # results in the JSONL, all frames together
    fps: float = 0.0  # the source's frame rate
    width: int = 0
    height: int = 0
    first_bad_frame: int | None = None  # set when the input is truncated or corrupt
    written: WrittenVideo | None = None  # the output as re-opened by the writer's check
    source_bytes: int = 0
    seconds: float = 0.0  # wall time
    throughput: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    skipped: bool = False  # outputs existed and overwrite was off
    error: str | None = None  # one line, when this video failed

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def objects_text(self) -> str:
        """The tracked objects per class as one phrase ("2 cat, 1 dog"; "none")."""
        return ", ".join(f"{n} {name}" for name, n in self.objects.items()) or "none"


class _VideoSink:
    """The track, render and write stages of one video."""

    def __init__(
        self,
        renderer: Renderer | None,
        draw_score: float,
        writer,
        jsonl,
        bar: tqdm,
        tracker: Tracker | None = None,
        track_log: TrackLog | None = None,
        tracks_csv=None,
        semantic_classes: list[str] | None = None,
    ) -> None:
        self.renderer, self.draw_score, self.writer, self.jsonl, self.bar = (
            renderer,
            draw_score,
            writer,
            jsonl,
            bar,
        )
        self.tracker, self.track_log, self.tracks_csv = tracker, track_log, tracks_csv
        self.semantic_classes = semantic_classes  # a semantic model's: results per class
        self.frames = self.instances = 0

    def stages(self, merged: bool = False):
        stages = [("track", self.track)] if self.tracker is not None else []
        if merged:
            return [*stages, ("render", lambda frame: (self.render(frame), self.write(frame)))]
        return [*stages, ("render", self.render), ("write", self.write)]

    def track(self, frame: Frame) -> None:
        if frame.error is not None:
            return  # render fails the video
        frame.instances.track_id = self.tracker.update(frame.instances)
        frame.tracks = self.track_log.lines(frame.instances, frame.index, frame.time)

    def render(self, frame: Frame) -> None:
        if frame.error is not None:  # a frame the model failed on fails its video
            raise VideoError(frame.error)
        if self.renderer is not None:
            try:
                if frame.sem_seg is not None:
                    frame.drawn = self.renderer.overlay(frame.image, frame.sem_seg)
                else:
                    shown = instances_to_draw(frame.instances, self.draw_score)
                    frame.drawn = self.renderer.draw(frame.image, shown)
            except Exception as e:
                frame.fail("cannot draw", e)
                raise VideoWriteError(frame.error) from e
        if frame.sem_seg is not None:
            names = self.semantic_classes
            ids = list(range(1, len(names) + 1))
            results = semantic_results(frame.sem_seg, frame.index, ids, names)
        else:
            results = coco_results(frame.instances, frame.index)
        self.instances += len(results)
        record = frame_record(frame.index, frame.time, results)
        frame.record = json.dumps(record, separators=(",", ":")) + "\n"
        frame.image = frame.instances = frame.sem_seg = None

    def write(self, frame: Frame) -> None:
        if self.writer is not None:
            self.writer.write(frame.drawn, frame.time)
        frame.drawn = None
        self.jsonl.write(frame.record)
        if self.tracks_csv is not None:
            self.tracks_csv.write(frame.tracks)
        self.frames += 1
        self.bar.update(1)


def output_paths(output_dir: Path, name: str) -> tuple[Path, Path, Path, Path]:
    """(annotated video, predictions JSONL, tracks CSV, tracks summary) for an output name."""
    return (
        output_dir / f"{name}.mp4",
        output_dir / f"{name}{PREDICTIONS_SUFFIX}",
        output_dir / f"{name}{TRACKS_CSV_SUFFIX}",
        output_dir / f"{name}{TRACKS_JSON_SUFFIX}",
    )


def build_pipeline(cfg: CfgNode, predictor: BatchPredictor | None) -> Pipeline:
    options = VideoOptions.from_cfg(cfg)
    return Pipeline(
        predictor or BatchPredictor(cfg),
        class_filter(cfg),
        options.batch_size,
        options.queue_size,
        name="video",
    )


def predict_video(
    cfg: CfgNode,
    path: str | Path,
    output_dir: str | Path,
    overwrite: bool = False,
    *,
    predictor: BatchPredictor | None = None,
    pipeline: Pipeline | None = None,
    name: str | None = None,
    outputs: tuple[Path, Path, Path, Path] | None = None,
    rel: str | None = None,
    progress: bool = True,
) -> VideoResult:
    """Annotate one video (see the module docstring for the files written).

    Args:
        cfg: inference config (``load_model_config``); ``INSTSEG.VIDEO`` selects frames and the
            codec, ``INSTSEG.PREDICT`` the batch size, classes, renderer and queue length.
        path: the input video.
        output_dir: created if missing.
        overwrite: replace existing outputs; otherwise a video whose outputs exist is skipped.
        predictor, pipeline: reuse a loaded model (built from ``cfg`` when both are None).
        name: output base name (default: the input's stem).
        outputs: (annotated video, predictions JSONL, tracks CSV, tracks JSON), as planned by
            the predict job; they override ``name``.
        rel: the input's name below the SOURCE root, for its frames' identity.
        progress: show a tqdm bar in frames.

    Raises:
        VideoReadError: the input is not a readable video, or the selection holds no frame.
        VideoWriteError: the output could not be encoded or failed its check (nothing is left
            behind under the final names).
        VideoError: a frame could not be predicted or drawn.
    """
    options = VideoOptions.from_cfg(cfg)
    track_options = TrackOptions.from_cfg(cfg)
    path, output_dir = Path(path), Path(output_dir)
    video_path, jsonl_path, csv_path, summary_path = outputs or output_paths(
        output_dir, name or path.stem
    )
    result = VideoResult(source=path)
    targets = [video_path, jsonl_path] if options.render else [jsonl_path]
    if track_options.enabled:
        targets += [csv_path, summary_path]
    if video_path.resolve() == path.resolve():
        raise VideoWriteError(f"{video_path}: output would replace the input video")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        logger.warning("%s: %s exists; skipping (pass --overwrite to redo)", path, existing[0])
        result.skipped = True
        return result

    started = time.perf_counter()
    with open_video(path) as source:
        result.fps, result.width, result.height = source.fps, source.width, source.height
        result.source_bytes = path.stat().st_size
        video_path.parent.mkdir(parents=True, exist_ok=True)
        pipeline = pipeline or build_pipeline(cfg, predictor)
        metadata = build_metadata(cfg)
        renderer = writer = None
        semantic = is_semantic(cfg)
        if options.render:
            if semantic:
                renderer = SemanticRenderer(metadata, options.renderer)
            else:
                renderer = build_renderer(options.renderer, metadata, video=True)
            writer = VideoWriter(
                video_path,
                # With a stride, frames keep their source times, so the nominal rate drops.
                source.fps / options.stride,
                source.width,
                source.height,
                codec=options.codec,
                audio_source=path if source.has_audio else None,
                publish=False,
            )
        jsonl = AtomicFile(jsonl_path)
        tracker = None if semantic else build_tracker(track_options, source.width, source.height)
        track_log = tracks_csv = None
        if tracker is not None:
            track_log = TrackLog(list(metadata.thing_classes), track_options.min_frames)
            tracks_csv = AtomicFile(csv_path)
        clock = StageClock()
        total = expected_frames(source, options)
        with tqdm(
            total=total, desc=path.name, unit="frame", disable=not progress, dynamic_ncols=True
        ) as bar:
            sink = _VideoSink(
                renderer, options.draw_score, writer, jsonl, bar, tracker, track_log, tracks_csv,
                list(metadata.stuff_classes) if semantic else None,
            )  # fmt: skip
            try:
                frames = video_frames(source, rel or path.name, options)
                pipeline.run(frames, sink.stages(_MERGE_RENDER_ENCODE), clock)
                if sink.frames == 0:
                    span = f"{options.start if options.start is not None else 0:g}s to "
                    span += f"{options.end:g}s" if options.end is not None else "the end"
                    raise VideoReadError(f"{path}: no frames to process ({span} selected)")
                written = writer.close() if writer is not None else None
            except BaseException:
                if writer is not None:
                    writer.abort()
                jsonl.discard()
                if tracks_csv is not None:
                    tracks_csv.discard()
                raise
            # The video and its predictions become visible together, or (killed) on the next run.
            pairs = [(jsonl.close_unpublished(), jsonl_path)]
            if track_log is not None:
                summary = AtomicFile(summary_path)
                summary.write(track_log.summary_text(source.fps, options.stride))
                pairs += [
                    (tracks_csv.close_unpublished(), csv_path),
                    (summary.close_unpublished(), summary_path),
                ]
            if written is not None:
                pairs.append((writer.temp_file, video_path))
            commit_together(pairs, commit_journal(output_dir, jsonl_path.name))
            if overwrite:
                # An earlier run's files that this one did not write would contradict the new
                # predictions: its tracks (now untracked), its annotated video (now unrendered).
                stale = [csv_path, summary_path] if track_log is None else []
                for old in stale + ([video_path] if written is None else []):
                    old.unlink(missing_ok=True)
        result.first_bad_frame = source.first_bad_frame

    result.seconds = time.perf_counter() - started
    result.frames, result.instances = sink.frames, sink.instances
    result.predictions = jsonl_path
    if track_log is not None:
        result.tracks = csv_path
        result.objects = track_log.objects_per_class()
    result.written = written
    result.video = video_path if written is not None else None
    result.throughput = clock.throughput() or (result.frames / result.seconds)
    result.stage_ms = clock.stage_ms()
    _log_result(result)
    return result


def _log_result(result: VideoResult) -> None:
    if result.first_bad_frame is not None:
        logger.warning(
            "%s: input is truncated or corrupt from frame %d on; output has the %d frames before",
            result.source,
            result.first_bad_frame,
            result.frames,
        )
    stages = ", ".join(f"{stage} {ms:.1f} ms" for stage, ms in result.stage_ms.items())
    if result.written is not None:
        w = result.written
        output = (
            f"{w.path} ({w.codec}, {w.bytes / 1e6:.2f} MB vs {result.source_bytes / 1e6:.2f} MB "
            f"in{', with audio' if w.has_audio else ''}) and {result.predictions.name}"
        )
    else:
        output = str(result.predictions)
    if result.tracks is not None:
        logger.info(
            "%s: objects tracked: %s (%s)", result.source, result.objects_text, result.tracks.name
        )
    logger.info(
        "%s: %d frames -> %s in %.1fs, %.2f frames/s; per frame: %s (first batch excluded)",
        result.source,
        result.frames,
        output,
        result.seconds,
        result.throughput,
        stages,
    )
