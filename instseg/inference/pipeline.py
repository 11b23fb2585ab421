"""The one inference pipeline: image files and video frames alike, for the Python API, folder
jobs and videos.

A source yields :class:`Frame` objects (an image file, or one frame of a video, with its
identity); the stages are the same for all of them::

    decode + preprocess (thread) -> model, INSTSEG.PREDICT.BATCH_SIZE frames per forward pass,
        then class filter and score order (the calling thread) -> output stages (a thread each)

With tiling on (``INSTSEG.PREDICT.TILES``, :mod:`instseg.inference.tiles`), preprocessing cuts
each large frame into windows that go through the queue and the model one batch of windows at
a time, and the model stage merges a frame's windows (:mod:`instseg.inference.tile_merge`)
before the frame goes on: tiled or not, the output stages see one frame with one set of
instances at the image's size.

:meth:`Pipeline.frames` yields the predicted frames to the caller (the API);
:meth:`Pipeline.run` hands them to output stages (drawing, writing: the sinks of a job), each in
its own thread, in order. Bounded queues keep memory flat for any number of frames. One
:class:`StageClock` times every stage per frame, leaving out the first model batch, which pays
one-off start-up costs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.structures import Instances

from instseg.inference.model import Model, ModelInput, filter_instances
from instseg.inference.settings import PredictSettings
from instseg.inference.stages import END, StageThreads
from instseg.inference.tile_merge import TileMerger

logger = logging.getLogger(__name__)

# Timed per frame; "model" is each forward pass's time shared among its frames; "track" is
# videos' only.
STAGES = ("decode", "preprocess", "model", "track", "render", "write")


@dataclass
class Frame:
    """One image file or video frame on its way through the pipeline.

    Arrays are dropped by the stage that last needs them, so queued frames stay small.
    """

    path: Path | None  # None for an array given directly
    rel: str  # the input's path below the SOURCE root
    index: int = 0  # frame index in a video; 0 for an image
    time: float | None = None  # seconds from the video's start; None for an image
    image: np.ndarray | None = None  # H x W x 3 uint8 BGR
    error: str | None = None  # one line naming the input, once anything failed for it
    tag: Any = None  # the job's own handle for routing outputs (e.g. its task)
    model_input: ModelInput | None = None
    instances: Instances | None = None  # CPU, class-filtered, by descending score
    sem_seg: np.ndarray | None = None  # a semantic model's H x W class ids, instead
    drawn: np.ndarray | None = None
    panels: np.ndarray | None = None  # a semantic model's three-panel figure
    record: Any = None  # what the output stages made of it (a JSON record, a line)
    tracks: str = ""  # a video frame's lines of NAME.tracks.csv
    seconds: dict[str, float] = field(default_factory=dict)
    warm_up: bool = False  # in the first model batch
    merger: TileMerger | None = None  # a tiled frame's windows' instances, until merged

    def fail(self, doing: str, exc: BaseException) -> None:
        """Mark the frame failed with one line naming it (the first failure: a tiled frame's
        other windows may fail after it); its arrays are dropped."""
        where = f"{self.path or self.rel}" + (
            f" frame {self.index}" if self.time is not None else ""
        )
        if self.error is None:
            self.error = f"{where}: {doing}: {type(exc).__name__}: {' '.join(str(exc).split())}"
        self.image = self.model_input = self.drawn = self.merger = None
        self.sem_seg = self.panels = None


class StageClock:
    """Busy time per stage and throughput of the frames that went through without error,
    the first model batch's frames kept apart; constant memory, picklable (ranks gather it)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.frames = 0
        self.warm_seconds = dict.fromkeys(STAGES, 0.0)
        self.warm_frames = 0
        self.warm_done_at: float | None = None
        self.last_done_at: float | None = None

    def add(self, frame: Frame) -> None:
        """Count a frame the last stage has finished."""
        now = time.perf_counter()
        if frame.warm_up:
            self.warm_done_at = now
        self.last_done_at = now
        if frame.error is not None:
            return
        seconds = self.warm_seconds if frame.warm_up else self.seconds
        for name in STAGES:
            seconds[name] += frame.seconds.get(name, 0.0)
        if frame.warm_up:
            self.warm_frames += 1
        else:
            self.frames += 1

    @property
    def wall(self) -> float:
        """Seconds from the end of the first batch to the last finished frame."""
        if self.warm_done_at is None or self.last_done_at is None:
            return 0.0
        return max(0.0, self.last_done_at - self.warm_done_at)

    def stage_ms(self, warm_up_fallback: bool = True) -> dict[str, float]:
        """Milliseconds per frame of each stage; with nothing after the first batch, the first
        batch's own figures (or none without ``warm_up_fallback``)."""
        if self.frames:
            return {name: 1000.0 * s / self.frames for name, s in self.seconds.items()}
        if self.warm_frames and warm_up_fallback:
            return {name: 1000.0 * s / self.warm_frames for name, s in self.warm_seconds.items()}
        return {}

    def throughput(self) -> float:
        """Frames per second after the first batch (0 when nothing came after it)."""
        return self.frames / self.wall if self.frames and self.wall > 0 else 0.0

    @staticmethod
    def combine(clocks: Sequence[StageClock]) -> tuple[dict[str, float], float]:
        """(ms per frame of each stage, total frames per second) of processes running at once."""
        frames = sum(c.frames for c in clocks)
        if not frames:
            return {}, 0.0
        stage_ms = {name: 1000.0 * sum(c.seconds[name] for c in clocks) / frames for name in STAGES}
        return stage_ms, sum(c.throughput() for c in clocks)


OutputStage = tuple[str, Callable[[Frame], None]]


@dataclass
class _Window:
    """One window of a tiled frame on its way to the model; the last one brings the frame on."""

    frame: Frame
    index: int
    model_input: ModelInput | None
    last: bool

    @property
    def error(self) -> str | None:
        return self.frame.error


class Pipeline:
    """A loaded model and the stages around it; each :meth:`frames` or :meth:`run` call starts
    and stops its own threads, so one pipeline serves many sources (one model load)."""

    def __init__(self, model: Model, settings: PredictSettings, name: str = "predict") -> None:
        self.model = model
        self.keep_classes = settings.keep_classes
        self.batch_size = settings.video.batch_size
        self.queue_size = settings.video.queue_size
        self.name = name
        self.tiles = settings.tiles

    def frames(self, source: Iterable[Frame]) -> Iterator[Frame]:
        """Predicted frames of ``source``, in order. A frame that could not be read or
        predicted comes through with ``error`` set and no instances."""
        threads = StageThreads(self.name, self.queue_size)
        decoded = threads.queue()
        threads.spawn("decode", lambda: self._decode(threads, decoded, source))
        try:
            yield from self._model(threads, decoded)
        finally:
            threads.close()

    def run(self, source: Iterable[Frame], stages: Sequence[OutputStage], clock: StageClock):
        """Every frame of ``source`` through the model, then through each ``(name, function)``
        output stage in its own thread; ``clock`` counts each frame the last stage finishes.
        The first exception a stage raises stops all of them and is raised here; a stage that
        fails only one frame records that in ``frame.error`` itself."""
        threads = StageThreads(self.name, self.queue_size)
        queues = [threads.queue() for _ in stages]
        for i, (name, function) in enumerate(stages):
            out = queues[i + 1] if i + 1 < len(stages) else None
            threads.spawn(name, self._output_stage(threads, name, function, queues[i], out, clock))

        def feed() -> None:
            frames = self.frames(source)
            try:
                for frame in frames:
                    threads.put(queues[0], frame)
            finally:
                frames.close()
            threads.put(queues[0], END)

        threads.run(feed)

    # -- stages

    def _decode(self, threads: StageThreads, out, source: Iterable[Frame]) -> None:
        frames = iter(source)
        try:
            while True:
                threads.check()
                start = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                decoded = time.perf_counter()
                frame.seconds["decode"] = decoded - start
                if frame.error is None and self.tiles.enabled:
                    self._put_windows(threads, out, frame)
                    continue
                if frame.error is None:
                    try:
                        frame.model_input = self.model.preprocess(frame.image)
                    except Exception as e:  # a valid file the resize rejects (an extreme shape)
                        frame.fail("cannot prepare image", e)
                    frame.seconds["preprocess"] = time.perf_counter() - decoded
                threads.put(out, frame)
        finally:
            close = getattr(frames, "close", None)  # releases a video decoder stopped early
            if close is not None:
                close()
        threads.put(out, END)

    def _put_windows(self, threads: StageThreads, out, frame: Frame) -> None:
        """A tiled frame's windows, preprocessed one at a time as the queue takes them."""
        height, width = frame.image.shape[:2]
        windows = self.tiles.windows(height, width)
        frame.merger = TileMerger(windows, height, width, self.tiles.match_ios)
        for index, (x0, y0, x1, y1) in enumerate(windows):
            start = time.perf_counter()
            last = index == len(windows) - 1
            image = frame.image  # None once the model stage failed the frame
            if image is None:
                threads.put(out, _Window(frame, index, None, True))
                return
            try:
                model_input = self.model.preprocess(image[y0:y1, x0:x1])
            except Exception as e:  # a valid file the resize rejects (an extreme shape)
                frame.fail("cannot prepare image", e)
                model_input, last = None, True
            frame.seconds["preprocess"] = (
                frame.seconds.get("preprocess", 0.0) + time.perf_counter() - start
            )
            threads.put(out, _Window(frame, index, model_input, last))
            if last:
                return

    def _model(self, threads: StageThreads, decoded) -> Iterator[Frame]:
        batch: list[Frame | _Window] = []
        first = True
        while True:
            item = threads.get(decoded)
            if item is not END:
                batch.append(item)
            ready = [f for f in batch if f.error is None]
            if batch and (item is END or len(ready) >= self.batch_size):
                self._predict(ready)
                for f in batch:
                    frame = self._frame(f)
                    frame.warm_up = frame.warm_up or first  # any of its windows counts
                    if isinstance(f, _Window):
                        if not f.last:
                            continue
                        self._merge(frame)
                    yield frame
                batch, first = [], False
            if item is END:
                return

    def _predict(self, items: list[Frame | _Window]) -> None:
        if not items:
            return
        start = time.perf_counter()
        try:
            outputs = self.model.predict([f.model_input for f in items])
        except Exception as e:
            if len(items) == 1:
                self._frame(items[0]).fail("model failed", e)
                outputs = [None]
            else:
                logger.debug("Batch failed; retrying its frames one by one", exc_info=True)
                outputs = [self._predict_one(f) for f in items]
        share = (time.perf_counter() - start) / len(items)
        for item, instances in zip(items, outputs, strict=True):
            frame = self._frame(item)
            item.model_input = None
            frame.seconds["model"] = frame.seconds.get("model", 0.0) + share
            if instances is None or frame.error is not None:
                continue
            if isinstance(instances, torch.Tensor):
                frame.sem_seg = instances.numpy()
            elif isinstance(item, _Window):
                if frame.merger is not None:
                    frame.merger.add(item.index, instances)
            else:
                frame.instances = self._ordered(instances)

    def _merge(self, frame: Frame) -> None:
        merger, frame.merger = frame.merger, None
        if frame.error is not None or merger is None:
            return
        start = time.perf_counter()
        try:
            frame.instances = self._ordered(merger.result())
        except Exception as e:
            frame.fail("cannot merge tiles", e)
            return
        seconds = time.perf_counter() - start
        frame.seconds["model"] += seconds
        logger.debug(
            "%s: %d windows, %d instances merged into %d in %.2f s", frame.path or frame.rel,
            len(merger.windows), len(merger.pieces), len(frame.instances), seconds,
        )  # fmt: skip

    def _ordered(self, instances: Instances) -> Instances:
        instances = filter_instances(instances, self.keep_classes)
        if len(instances) > 1:
            instances = instances[torch.argsort(instances.scores, descending=True, stable=True)]
        return instances

    @staticmethod
    def _frame(item: Frame | _Window) -> Frame:
        return item.frame if isinstance(item, _Window) else item

    def _predict_one(self, item: Frame | _Window) -> Instances | None:
        try:
            return self.model.predict([item.model_input])[0]
        except Exception as e:
            self._frame(item).fail("model failed", e)
            return None

    @staticmethod
    def _output_stage(threads, name, function, inq, out, clock: StageClock):
        def run() -> None:
            while True:
                frame = threads.get(inq)
                if frame is END:
                    break
                start = time.perf_counter()
                function(frame)
                frame.seconds[name] = frame.seconds.get(name, 0.0) + time.perf_counter() - start
                if out is not None:
                    threads.put(out, frame)
                else:
                    clock.add(frame)
            if out is not None:
                threads.put(out, END)

        return run
