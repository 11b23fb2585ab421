"""Annotated output videos: Mask R-CNN on every selected frame, drawn and re-encoded.

For each input ``NAME.EXT`` two files are written into the output folder, each atomically:

* ``NAME.mp4``: the frames with masks, boxes and labels drawn (``INSTSEG.PREDICT.RENDERER``),
  with the source's size, frame times and audio (only when ``INSTSEG.PREDICT.RENDER``);
* ``NAME.predictions.jsonl``: one JSON object per processed frame, ``{"frame": source index,
  "time": seconds, "instances": [{"class_id", "class_name", "score", "box": [x0, y0, x1, y1],
  "mask": COCO RLE with "counts" as str}]}``.

``NAME`` is the input's stem, or ``STEM_EXT`` when several inputs of one run share a stem. Frames
keep their source times (variable frame rates survive; with ``FRAME_STRIDE`` N the nominal rate
is the source's divided by N, so the output still plays in real time with its audio). Outputs
that exist are left alone unless ``overwrite`` is set.

Frames flow through four stages joined by bounded queues (``INSTSEG.PREDICT.QUEUE_SIZE``), so
memory stays flat for any length and the model does not wait on decoding, drawing or encoding::

    decode + preprocess (thread) -> model (calling thread, batches) -> render + JSONL record
        (thread) -> encode + JSONL write (thread)

Every stage is one thread fed in order, so frames stay in order. A failure in any stage stops
all of them and is raised in the calling thread. Drawing and encoding have a thread each: with
the fast renderer on two cores, one thread doing both measured the same within noise
(scripts/bench_video.py --merged), and separate threads let encoding overlap a slow renderer.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from detectron2.config import CfgNode
from detectron2.structures import Instances
from tqdm import tqdm

from instseg.config import ConfigError
from instseg.data.catalog import build_metadata
from instseg.inference.output_dir import OutputLock
from instseg.inference.output_plan import check_output_paths, plan_outputs
from instseg.inference.predictor import BatchPredictor, ModelInput, class_filter, filter_instances
from instseg.inference.sources import VIDEO_EXTENSIONS, is_video_path
from instseg.inference.stages import END, StageThreads
from instseg.io.atomic import AtomicTextFile, commit_journal, commit_together
from instseg.io.media import VideoError, VideoFrame, VideoReadError, VideoWriteError, WrittenVideo
from instseg.io.video_reader import VideoSource, open_video
from instseg.io.video_writer import VideoWriter
from instseg.viz.render import RENDERERS, build_renderer
from instseg.viz.renderer import Renderer

logger = logging.getLogger(__name__)

__all__ = [
    "STAGES",
    "VIDEO_EXTENSIONS",
    "VideoError",
    "VideoOptions",
    "VideoReadError",
    "VideoResult",
    "VideoWriteError",
    "instances_to_records",
    "is_video_path",
    "output_paths",
    "predict_video",
    "predict_videos",
    "resolve_renderer_name",
]

STAGES = ("decode", "model", "render", "encode")
CODECS = ("auto", "h264", "mp4v")
PREDICTIONS_SUFFIX = ".predictions.jsonl"
# ----------------------------------------------------------------------------- options


def resolve_renderer_name(name: str, video: bool = True) -> str:
    """``INSTSEG.PREDICT.RENDERER`` to a renderer name: "auto" is "fast" for videos.

    scripts/bench_video.py measures why: the Visualizer renderer takes several times the model's
    time per frame on a CPU, the fast one a small fraction of it.
    """
    key = str(name).strip().lower()
    if key == "auto":
        return "fast" if video else "visualizer"
    return key


@dataclass(frozen=True)
class VideoOptions:
    """The video settings of a config (``INSTSEG.VIDEO.*`` and ``INSTSEG.PREDICT.*``), checked."""

    start: float | None = None  # seconds; None: from the first frame
    end: float | None = None  # seconds, exclusive; None: to the last frame
    stride: int = 1
    max_frames: int | None = None
    codec: str = "auto"
    batch_size: int = 1
    queue_size: int = 8
    render: bool = True
    renderer: str = "fast"

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> VideoOptions:
        """Read and check the options; a bad value is a ConfigError naming its key."""
        return _options_from_cfg(cls, cfg)


def _options_from_cfg(cls: type[VideoOptions], cfg: CfgNode) -> VideoOptions:
    video, predict = cfg.INSTSEG.VIDEO, cfg.INSTSEG.PREDICT
    start = float(video.START) if float(video.START) >= 0 else None
    end = float(video.END) if float(video.END) >= 0 else None
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"INSTSEG.VIDEO: END ({end}s) must come after START ({start}s)")
    stride = int(video.FRAME_STRIDE)
    if stride < 1:
        raise ConfigError(f"INSTSEG.VIDEO.FRAME_STRIDE must be >= 1, got {stride}")
    max_frames = int(video.MAX_FRAMES)
    if max_frames < 0:
        raise ConfigError(f"INSTSEG.VIDEO.MAX_FRAMES must be >= 0 (0: no limit), got {max_frames}")
    codec = str(video.CODEC).strip().lower()
    if codec not in CODECS:
        raise ConfigError(f"INSTSEG.VIDEO.CODEC must be one of {', '.join(CODECS)}, got {codec!r}")
    batch_size, queue_size = int(predict.BATCH_SIZE), int(predict.QUEUE_SIZE)
    if batch_size < 1 or queue_size < 1:
        raise ConfigError("INSTSEG.PREDICT: BATCH_SIZE and QUEUE_SIZE must be >= 1")
    renderer = resolve_renderer_name(predict.RENDERER, video=True)
    if renderer not in RENDERERS:
        raise ConfigError(
            f"INSTSEG.PREDICT.RENDERER must be auto or one of {', '.join(sorted(RENDERERS))}, "
            f"got {predict.RENDERER!r}"
        )
    return cls(
        start=start,
        end=end,
        stride=stride,
        max_frames=max_frames or None,
        codec=codec,
        batch_size=batch_size,
        queue_size=queue_size,
        render=bool(predict.RENDER),
        renderer=renderer,
    )


# ----------------------------------------------------------------------------- results


@dataclass
class VideoResult:
    """What happened to one input video.

    ``stage_ms`` holds each stage's busy time per frame in milliseconds (decode includes
    preprocessing; render includes the JSONL records; encode includes writing them), and
    ``throughput`` frames per second through the whole pipeline; both leave out the first model
    batch, which pays one-off start-up costs.
    """

    source: Path
    video: Path | None = None  # annotated video; None when rendering is off, skipped or failed
    predictions: Path | None = None  # the JSONL file; None when skipped or failed
    frames: int = 0  # frames processed (and written)
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
    error: str | None = None  # one line, set by predict_videos when this video failed

    @property
    def ok(self) -> bool:
        return self.error is None


# ----------------------------------------------------------------------------- records


def instances_to_records(instances: Instances, class_names: Sequence[str]) -> list[dict]:
    """JSON-ready dicts of CPU instances: class, score, XYXY box and the mask as COCO RLE.

    Boxes are rounded to 1e-4 px and scores to 1e-6; masks are exact.
    """
    n = len(instances) if instances.get_fields() else 0
    if n == 0:
        return []
    boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
    scores = instances.scores.numpy().astype(np.float64)
    classes = instances.pred_classes.numpy()
    rles: list[dict | None] = [None] * n
    if instances.has("pred_masks"):
        masks = np.asarray(instances.pred_masks.numpy(), dtype=np.uint8)
        # pycocotools wants H x W x N in Fortran order.
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    records = []
    for i in range(n):
        c = int(classes[i])
        record: dict[str, Any] = {
            "class_id": c,
            "class_name": class_names[c] if 0 <= c < len(class_names) else str(c),
            "score": round(float(scores[i]), 6),
            "box": [round(float(v), 4) for v in boxes[i]],
        }
        rle = rles[i]
        if rle is not None:
            record["mask"] = {
                "size": [int(v) for v in rle["size"]],
                "counts": rle["counts"].decode(),
            }
        records.append(record)
    return records


# ----------------------------------------------------------------------------- pipeline


class _StageClock:
    """Busy time of one stage, frames of the warm-up batch left out; constant memory."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.frames = 0
        self.warm_seconds = 0.0
        self.warm_frames = 0

    def add(self, seconds: float, frames: int, warm_up: bool) -> None:
        if warm_up:
            self.warm_seconds += seconds
            self.warm_frames += frames
        else:
            self.seconds += seconds
            self.frames += frames

    def per_frame_ms(self) -> float:
        if self.frames:
            return 1000.0 * self.seconds / self.frames
        # A clip no longer than one batch: the warm-up is all there is.
        return 1000.0 * self.warm_seconds / self.warm_frames if self.warm_frames else 0.0


@dataclass
class _Item:
    frame: VideoFrame
    model_input: ModelInput | None = None
    instances: Instances | None = None
    drawn: np.ndarray | None = None
    line: str = ""
    warm_up: bool = False


class _VideoJob:
    """One video through the pipeline; built and run by :func:`predict_video`."""

    def __init__(
        self,
        source: VideoSource,
        options: VideoOptions,
        predictor: BatchPredictor,
        renderer: Renderer | None,
        class_names: Sequence[str],
        keep_classes: list[int] | None,
        writer: VideoWriter | None,
        jsonl,
        progress: tqdm,
    ) -> None:
        self.source = source
        self.options = options
        self.predictor = predictor
        self.renderer = renderer
        self.class_names = list(class_names)
        self.keep_classes = keep_classes
        self.writer = writer
        self.jsonl = jsonl
        self.progress = progress
        self.clocks = {stage: _StageClock() for stage in STAGES}
        self.frames_done = 0
        self.warm_done_at: float | None = None
        self.last_done_at: float | None = None
        self.warm_frames = 0
        self.written: WrittenVideo | None = None
        self.pipeline = StageThreads("video", options.queue_size)

    # -- stages

    def _decode(self, out: queue.Queue) -> None:
        o = self.options
        frames = self.source.frames(o.start, o.end, o.stride, o.max_frames)
        try:
            count = 0
            while True:
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                model_input = self.predictor.preprocess(frame.image)
                warm_up = count < o.batch_size
                self.clocks["decode"].add(time.perf_counter() - t0, 1, warm_up)
                self.pipeline.put(out, _Item(frame, model_input, warm_up=warm_up))
                count += 1
        finally:
            close = getattr(frames, "close", None)  # releases the decoder when stopped early
            if close is not None:
                close()
        self.pipeline.put(out, END)

    def _model(self, inq: queue.Queue, out: queue.Queue) -> None:
        batch: list[_Item] = []
        while True:
            item = self.pipeline.get(inq)
            if item is not END:
                batch.append(item)
            if batch and (item is END or len(batch) >= self.options.batch_size):
                t0 = time.perf_counter()
                outputs = self.predictor.predict([b.model_input for b in batch])
                outputs = [filter_instances(x, self.keep_classes) for x in outputs]
                self.clocks["model"].add(time.perf_counter() - t0, len(batch), batch[0].warm_up)
                for b, instances in zip(batch, outputs, strict=True):
                    b.model_input = None  # the resized tensor is not needed past the model
                    b.instances = instances
                    self.pipeline.put(out, b)
                batch = []
            if item is END:
                self.pipeline.put(out, END)
                return

    def _render(self, inq: queue.Queue, out: queue.Queue | None) -> None:
        while True:
            item = self.pipeline.get(inq)
            if item is END:
                if out is not None:
                    self.pipeline.put(out, END)
                else:
                    self._finish()
                return
            t0 = time.perf_counter()
            if self.renderer is not None:
                item.drawn = self.renderer.draw(item.frame.image, item.instances)
            record = {
                "frame": item.frame.index,
                "time": round(item.frame.time, 6),
                "instances": instances_to_records(item.instances, self.class_names),
            }
            item.line = json.dumps(record, separators=(",", ":")) + "\n"
            item.instances = None
            self.clocks["render"].add(time.perf_counter() - t0, 1, item.warm_up)
            if out is not None:
                self.pipeline.put(out, item)
            else:
                self._encode_one(item)

    def _encode(self, inq: queue.Queue) -> None:
        while True:
            item = self.pipeline.get(inq)
            if item is END:
                self._finish()
                return
            self._encode_one(item)

    def _encode_one(self, item: _Item) -> None:
        t0 = time.perf_counter()
        if self.writer is not None:
            self.writer.write(item.drawn, item.frame.time)
        self.jsonl.write(item.line)
        done = time.perf_counter()
        self.clocks["encode"].add(done - t0, 1, item.warm_up)
        self.frames_done += 1
        if item.warm_up:
            self.warm_frames += 1
            self.warm_done_at = done
        self.last_done_at = done
        self.progress.update(1)

    def _finish(self) -> None:
        if self.frames_done == 0:
            o = self.options
            span = f"{o.start if o.start is not None else 0:g}s to "
            span += f"{o.end:g}s" if o.end is not None else "the end"
            raise VideoReadError(f"{self.source.path}: no frames to process ({span} selected)")
        if self.writer is not None:
            self.written = self.writer.close()

    # -- running

    def run(self, merge_render_encode: bool) -> None:
        p = self.pipeline
        decoded, predicted = p.queue(), p.queue()
        p.spawn("decode", lambda: self._decode(decoded))
        if merge_render_encode:
            p.spawn("render-encode", lambda: self._render(predicted, None))
        else:
            rendered = p.queue()
            p.spawn("render", lambda: self._render(predicted, rendered))
            p.spawn("encode", lambda: self._encode(rendered))
        p.run(lambda: self._model(decoded, predicted))

    def abort(self) -> None:
        if self.writer is not None and self.written is None:
            self.writer.abort()

    def throughput(self) -> float:
        """Frames per second after the warm-up batch (all frames when there is nothing after)."""
        steady = self.frames_done - self.warm_frames
        if steady > 0 and self.warm_done_at is not None and self.last_done_at > self.warm_done_at:
            return steady / (self.last_done_at - self.warm_done_at)
        return 0.0


# Render and encode in one thread instead of two; scripts/bench_video.py --merged compares them.
_MERGE_RENDER_ENCODE = False


def _expected_frames(source: VideoSource, options: VideoOptions) -> int | None:
    """Frames the selection should give, for the progress bar (None when unknown)."""
    if not source.frame_count:
        return None
    fps = source.fps
    first = 0 if options.start is None else min(source.frame_count, math.ceil(options.start * fps))
    last = source.frame_count
    if options.end is not None:
        last = min(last, math.ceil(options.end * fps))
    count = math.ceil(max(0, last - first) / options.stride)
    return min(count, options.max_frames) if options.max_frames else count


def output_paths(output_dir: Path, name: str) -> tuple[Path, Path]:
    """(annotated video, predictions JSONL) for an output name."""
    return output_dir / f"{name}.mp4", output_dir / f"{name}{PREDICTIONS_SUFFIX}"


def predict_video(
    cfg: CfgNode,
    path: str | Path,
    output_dir: str | Path,
    overwrite: bool = False,
    *,
    predictor: BatchPredictor | None = None,
    name: str | None = None,
    outputs: tuple[Path, Path] | None = None,
    progress: bool = True,
) -> VideoResult:
    """Annotate one video (see the module docstring for the files written).

    Args:
        cfg: inference config (``load_model_config``); ``INSTSEG.VIDEO`` selects frames and the
            codec, ``INSTSEG.PREDICT`` the batch size, classes, renderer and queue length.
        path: the input video.
        output_dir: created if missing.
        overwrite: replace existing outputs; otherwise a video whose outputs exist is skipped.
        predictor: reuse a loaded model (built from ``cfg`` when None).
        name: output base name (default: the input's stem).
        outputs: (annotated video, predictions JSONL) paths, as planned by
            :func:`predict_videos`; they override ``name``.
        progress: show a tqdm bar in frames.

    Raises:
        VideoReadError: the input is not a readable video, or the selection holds no frame.
        VideoWriteError: the output could not be encoded or failed its check (nothing is left
            behind under the final names).
    """
    options = VideoOptions.from_cfg(cfg)
    path = Path(path)
    output_dir = Path(output_dir)
    name = name or path.stem
    video_path, jsonl_path = outputs or output_paths(output_dir, name)
    result = VideoResult(source=path)
    targets = [video_path, jsonl_path] if options.render else [jsonl_path]
    if video_path.resolve() == path.resolve():
        raise VideoWriteError(f"{video_path}: output would replace the input video")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        logger.warning("%s: %s exists; skipping (pass --overwrite to redo)", path, existing[0])
        result.skipped = True
        return result

    started = time.perf_counter()
    metadata = build_metadata(cfg)
    keep_classes = class_filter(cfg)
    with open_video(path) as source:
        result.fps, result.width, result.height = source.fps, source.width, source.height
        result.source_bytes = path.stat().st_size
        video_path.parent.mkdir(parents=True, exist_ok=True)
        if predictor is None:
            predictor = BatchPredictor(cfg)
        renderer = (
            build_renderer(options.renderer, metadata, video=True) if options.render else None
        )
        writer = None
        if options.render:
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
        total = _expected_frames(source, options)
        bar = tqdm(
            total=total, desc=path.name, unit="frame", disable=not progress, dynamic_ncols=True
        )
        jsonl = AtomicTextFile(jsonl_path)
        with bar:
            job = _VideoJob(
                source,
                options,
                predictor,
                renderer,
                metadata.thing_classes,
                keep_classes,
                writer,
                jsonl,
                bar,
            )
            try:
                job.run(_MERGE_RENDER_ENCODE)
            except BaseException:
                job.abort()
                jsonl.discard()
                raise
            # The video and its predictions become visible together, or (killed) on the next run.
            pairs = [(jsonl.close_unpublished(), jsonl_path)]
            if job.written is not None:
                pairs.append((writer.temp_file, video_path))
            commit_together(pairs, commit_journal(output_dir, jsonl_path.name))
        result.first_bad_frame = source.first_bad_frame

    result.seconds = time.perf_counter() - started
    result.frames = job.frames_done
    result.predictions = jsonl_path
    result.written = job.written
    result.video = video_path if job.written is not None else None
    result.throughput = job.throughput() or (result.frames / result.seconds)
    result.stage_ms = {stage: job.clocks[stage].per_frame_ms() for stage in STAGES}
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
    logger.info(
        "%s: %d frames -> %s in %.1fs, %.2f frames/s; per frame: %s (first batch excluded)",
        result.source,
        result.frames,
        output,
        result.seconds,
        result.throughput,
        stages,
    )


def predict_videos(
    cfg: CfgNode,
    video_paths: Sequence[str | Path],
    output_dir: str | Path,
    overwrite: bool = False,
    *,
    rels: Sequence[str] | None = None,
    predictor: BatchPredictor | None = None,
    progress: bool = True,
) -> list[VideoResult]:
    """Annotate several videos with one loaded model, in order.

    A video that cannot be read or written is logged as one error line, recorded in its
    result's ``error`` and skipped; the others go on. Other exceptions (a model failure,
    Ctrl-C) stop the run. Output names follow :mod:`instseg.inference.output_plan` from
    ``rels`` (the inputs' paths below the SOURCE root; default: their file names), and the
    output folder is locked for the run.
    """
    paths = [Path(p) for p in video_paths]
    output_dir = Path(output_dir)
    rels = list(rels) if rels is not None else [p.name for p in paths]
    plan = plan_outputs(rels, [("video", "predictions")] * len(paths), reserved=("config.yaml",))
    check_output_paths(output_dir, [n for o in plan for n in o.values()], paths)
    with OutputLock(output_dir):
        return _predict_videos_locked(cfg, paths, plan, output_dir, overwrite, predictor, progress)


def _predict_videos_locked(cfg, paths, plan, output_dir, overwrite, predictor, progress):
    VideoOptions.from_cfg(cfg)  # config errors before the model loads
    class_filter(cfg)
    if predictor is None and paths:
        predictor = BatchPredictor(cfg)
    results = []
    for path, names in zip(paths, plan, strict=True):
        outputs = (output_dir / names["video"], output_dir / names["predictions"])
        try:
            result = predict_video(
                cfg,
                path,
                output_dir,
                overwrite,
                predictor=predictor,
                outputs=outputs,
                progress=progress,
            )
        except VideoError as exc:
            message = " ".join(str(exc).split())
            logger.error("%s", message)
            result = VideoResult(source=path, error=message)
        results.append(result)
    failed = [r for r in results if not r.ok]
    skipped = sum(r.skipped for r in results)
    done = len(results) - len(failed) - skipped
    if len(results) > 1 or failed:
        logger.info(
            "Videos: %d annotated, %d skipped, %d failed%s",
            done,
            skipped,
            len(failed),
            "".join(f"\n  failed: {r.error}" for r in failed),
        )
    return results
