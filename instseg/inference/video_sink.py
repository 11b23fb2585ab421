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
failure on any frame fails that video with one line; the predict job
(:func:`~instseg.inference.runner.predict`) records it and goes on with the next input. The
video, its JSONL and its track files become visible together (one commit journal).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from instseg.inference.frames import video_frames
from instseg.inference.model import Model, build_model, instances_to_draw
from instseg.inference.pipeline import Frame, Pipeline, StageClock
from instseg.inference.records import coco_results, frame_record, semantic_results
from instseg.inference.settings import PredictSettings
from instseg.inference.track_log import TRACKS_CSV_SUFFIX, TRACKS_JSON_SUFFIX, TrackLog
from instseg.inference.tracking import VideoTracker
from instseg.inference.video_options import expected_frames
from instseg.io.atomic import AtomicFile, commit_journal, commit_together
from instseg.io.media import VideoError, VideoReadError, VideoWriteError, WrittenVideo
from instseg.io.video_reader import VideoSource, open_video
from instseg.io.video_writer import VideoWriter

logger = logging.getLogger(__name__)

__all__ = ["VideoPaths", "VideoResult", "predict_video"]

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


@dataclass(frozen=True)
class VideoPaths:
    """Where one video's outputs go."""

    video: Path  # the annotated video
    predictions: Path  # one JSON line per processed frame
    tracks: Path  # MOTChallenge CSV
    track_summary: Path  # tracks and objects per class

    @classmethod
    def named(cls, output_dir: Path, name: str) -> VideoPaths:
        """The outputs of an output base name (see :mod:`instseg.inference.output_plan`)."""
        return cls(
            output_dir / f"{name}.mp4",
            output_dir / f"{name}{PREDICTIONS_SUFFIX}",
            output_dir / f"{name}{TRACKS_CSV_SUFFIX}",
            output_dir / f"{name}{TRACKS_JSON_SUFFIX}",
        )


class _VideoFiles:
    """One video's output files, written under temporary names and published together (or,
    killed between two renames, by the next run's lock, which reads the journals at the top
    of ``output_dir``)."""

    def __init__(
        self, settings: PredictSettings, source: VideoSource, paths: VideoPaths, output_dir: Path
    ):
        self.paths, self.stride, self.output_dir = paths, settings.video.stride, output_dir
        self.writer = None
        if settings.video.render:
            self.writer = VideoWriter(
                paths.video,
                # With a stride, frames keep their source times, so the nominal rate drops.
                source.fps / settings.video.stride,
                source.width,
                source.height,
                codec=settings.video.codec,
                audio_source=source.path if source.has_audio else None,
                publish=False,
            )
        self.jsonl = AtomicFile(paths.predictions)
        self.track_log = self.tracks_csv = None
        if settings.tracking:
            self.track_log = TrackLog(settings.class_names, settings.track.min_frames)
            self.tracks_csv = AtomicFile(paths.tracks)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        self.jsonl.discard()
        if self.tracks_csv is not None:
            self.tracks_csv.discard()

    def close_video(self) -> WrittenVideo | None:
        """Finish encoding the video and check it, still under its temporary name."""
        return self.writer.close() if self.writer is not None else None

    def publish(self, written: WrittenVideo | None, fps: float, overwrite: bool) -> None:
        """Make every file visible together (a journal completes it if killed part-way); with
        ``overwrite``, remove what an earlier run wrote that this one does not."""
        pairs = [(self.jsonl.close_unpublished(), self.paths.predictions)]
        if self.track_log is not None:
            summary = AtomicFile(self.paths.track_summary)
            summary.write(self.track_log.summary_text(fps, self.stride))
            pairs += [
                (self.tracks_csv.close_unpublished(), self.paths.tracks),
                (summary.close_unpublished(), self.paths.track_summary),
            ]
        if written is not None:
            pairs.append((self.writer.temp_file, self.paths.video))
        # Named by the JSONL's path below the output folder: same-named videos of two
        # subfolders keep apart.
        name = os.path.relpath(self.paths.predictions, self.output_dir)
        commit_together(pairs, commit_journal(self.output_dir, Path(name).as_posix()))
        if overwrite:
            # An earlier run's files that this one did not write would contradict the new
            # predictions: its tracks (now untracked), its annotated video (now unrendered).
            stale = [self.paths.tracks, self.paths.track_summary] if self.track_log is None else []
            for old in stale + ([self.paths.video] if written is None else []):
                old.unlink(missing_ok=True)


class _VideoSink:
    """The track, render and write stages of one video."""

    def __init__(self, settings: PredictSettings, files: _VideoFiles, bar: tqdm) -> None:
        self.settings, self.files, self.bar = settings, files, bar
        self.renderer = settings.build_renderer(video=True)
        self.tracker = VideoTracker(settings.track) if files.track_log is not None else None
        self.frames = self.instances = 0

    def stages(self, merged: bool = False):
        stages = [("track", self.track)] if self.tracker is not None else []
        if merged:
            return [*stages, ("render", lambda frame: (self.render(frame), self.write(frame)))]
        return [*stages, ("render", self.render), ("write", self.write)]

    def track(self, frame: Frame) -> None:
        if frame.error is not None:
            return  # render fails the video
        frame.instances.track_id = self.tracker.update(frame.path, frame.index, frame.instances)
        frame.tracks = self.files.track_log.lines(frame.instances, frame.index, frame.time)

    def render(self, frame: Frame) -> None:
        if frame.error is not None:  # a frame the model failed on fails its video
            raise VideoError(frame.error)
        if self.renderer is not None:
            try:
                if frame.sem_seg is not None:
                    frame.drawn = self.renderer.overlay(frame.image, frame.sem_seg)
                else:
                    shown = instances_to_draw(frame.instances, self.settings.video.draw_score)
                    frame.drawn = self.renderer.draw(frame.image, shown)
            except Exception as e:
                frame.fail("cannot draw", e)
                raise VideoWriteError(frame.error) from e
        if frame.sem_seg is not None:
            names = self.settings.class_names
            ids = list(range(1, len(names) + 1))
            results = semantic_results(frame.sem_seg, frame.index, ids, names)
        else:
            results = coco_results(frame.instances, frame.index)
        self.instances += len(results)
        record = frame_record(frame.index, frame.time, results)
        frame.record = json.dumps(record, separators=(",", ":")) + "\n"
        frame.image = frame.instances = frame.sem_seg = None

    def write(self, frame: Frame) -> None:
        if self.files.writer is not None:
            self.files.writer.write(frame.drawn, frame.time)
        frame.drawn = None
        self.files.jsonl.write(frame.record)
        if self.files.tracks_csv is not None:
            self.files.tracks_csv.write(frame.tracks)
        self.frames += 1
        self.bar.update(1)


def predict_video(
    settings: PredictSettings,
    path: str | Path,
    output_dir: str | Path,
    overwrite: bool = False,
    *,
    model: Model | None = None,
    pipeline: Pipeline | None = None,
    name: str | None = None,
    paths: VideoPaths | None = None,
    rel: str | None = None,
    progress: bool = True,
) -> VideoResult:
    """Annotate one video (see the module docstring for the files written).

    ``settings.video`` selects frames and the codec; ``overwrite`` replaces existing outputs,
    else a video whose outputs exist is skipped; ``model`` or ``pipeline`` reuse a loaded model;
    ``name`` is the output base name (default: the input's stem) unless ``paths`` gives the
    outputs as the job planned them; ``rel`` is the input's name below the SOURCE root.

    Raises:
        VideoReadError: the input is not a readable video, or the selection holds no frame.
        VideoWriteError: the output could not be encoded or failed its check (nothing is left
            behind under the final names).
        VideoError: a frame could not be predicted or drawn.
    """
    path = Path(path)
    paths = paths or VideoPaths.named(Path(output_dir), name or path.stem)
    result = VideoResult(source=path)
    existing = _existing_outputs(settings, path, paths)
    if existing and not overwrite:
        logger.warning("%s: %s exists; skipping (pass --overwrite to redo)", path, existing[0])
        result.skipped = True
        return result
    started, clock = time.perf_counter(), StageClock()
    pipeline = pipeline or Pipeline(model or build_model(settings.cfg), settings, name="video")
    with open_video(path) as source:
        result.fps, result.width, result.height = source.fps, source.width, source.height
        result.source_bytes = path.stat().st_size
        paths.video.parent.mkdir(parents=True, exist_ok=True)
        files = _VideoFiles(settings, source, paths, Path(output_dir))
        total = expected_frames(source, settings.video)
        with tqdm(
            total=total, desc=path.name, unit="frame", disable=not progress, dynamic_ncols=True
        ) as bar:
            sink = _VideoSink(settings, files, bar)
            try:
                frames = video_frames(source, rel or path.name, settings.video)
                pipeline.run(frames, sink.stages(_MERGE_RENDER_ENCODE), clock)
                if sink.frames == 0:
                    raise VideoReadError(f"{path}: no frames to process ({_span(settings)})")
                result.written = files.close_video()
            except BaseException:
                files.abort()
                raise
            files.publish(result.written, source.fps, overwrite)
        result.first_bad_frame = source.first_bad_frame
    _finish_result(result, time.perf_counter() - started, sink, clock)
    _log_result(result)
    return result


def _finish_result(result: VideoResult, seconds: float, sink: _VideoSink, clock: StageClock):
    """What a finished video's sink counted, where its files went, and its timing."""
    paths = sink.files.paths
    result.seconds = seconds
    result.frames, result.instances = sink.frames, sink.instances
    result.predictions = paths.predictions
    if sink.files.track_log is not None:
        result.tracks = paths.tracks
        result.objects = sink.files.track_log.objects_per_class()
    result.video = paths.video if result.written is not None else None
    result.throughput = clock.throughput() or (result.frames / result.seconds)
    result.stage_ms = clock.stage_ms()


def _existing_outputs(settings: PredictSettings, path: Path, paths: VideoPaths) -> list[Path]:
    """What an earlier run left of this video's outputs; refuses to overwrite the input."""
    if paths.video.resolve() == path.resolve():
        raise VideoWriteError(f"{paths.video}: output would replace the input video")
    targets = [paths.video, paths.predictions] if settings.video.render else [paths.predictions]
    if settings.tracking:
        targets += [paths.tracks, paths.track_summary]
    return [t for t in targets if t.exists()]


def _span(settings: PredictSettings) -> str:
    start, end = settings.video.start, settings.video.end
    span = f"{start if start is not None else 0:g}s to "
    return span + (f"{end:g}s selected" if end is not None else "the end selected")


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
