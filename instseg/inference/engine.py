"""The Python API: ``Predictor(config, weights).predict(source)`` yields one :class:`Result` per
image or video frame, with nothing written to disk, so a notebook or another program gets
Detectron2 ``Instances`` (and optionally the drawn picture) for any SOURCE the CLI takes.

Decoding and preprocessing run in a worker thread beside the model, through a bounded queue;
the model runs in the caller's thread, ``INSTSEG.PREDICT.BATCH_SIZE`` frames per forward pass,
across image and video boundaries alike.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data.catalog import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances

from instseg.data.catalog import build_metadata
from instseg.inference.predictor import (
    BatchPredictor,
    ModelInput,
    class_filter,
    filter_instances,
    load_model_config,
)
from instseg.inference.sources import InputFile, is_video_path, resolve_source
from instseg.inference.stages import END, StageThreads
from instseg.inference.video import VideoOptions
from instseg.io.images import ImageReadError, read_image
from instseg.io.media import VideoError
from instseg.io.video_reader import open_video
from instseg.viz.render import build_renderer

logger = logging.getLogger(__name__)

# Keyword options of Predictor and the config keys they set.
OPTION_KEYS = {
    "device": "MODEL.DEVICE",
    "score_threshold": "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "max_detections": "TEST.DETECTIONS_PER_IMAGE",
    "batch_size": "INSTSEG.PREDICT.BATCH_SIZE",
    "classes": "INSTSEG.PREDICT.CLASSES",
    "renderer": "INSTSEG.PREDICT.RENDERER",
}


@dataclass
class Result:
    """One image, or one frame of a video, as the model saw it.

    ``instances`` are on the CPU, class-filtered and sorted by descending score; ``image`` is
    the input (H x W x 3 uint8, BGR); ``drawn`` the annotated picture (BGR) when the predictor
    draws; ``error`` the one-line reason when this input could not be read (no instances then).
    """

    path: Path | None  # None for an array given directly
    rel: str  # the input's path below the SOURCE root (the manifest's name for it)
    frame: int  # frame index in a video; 0 for an image
    time: float | None  # seconds from the video's start; None for an image
    instances: Instances
    metadata: Metadata
    image: np.ndarray | None = None
    drawn: np.ndarray | None = None
    error: str | None = None

    def to_coco(self, image_id: int = 1) -> list[dict]:
        """COCO results (category ids are contiguous class ids + 1), as predictions.json has."""
        results = instances_to_coco_json(self.instances, image_id)
        for result in results:
            result["category_id"] += 1
        return results


@dataclass
class _Frame:
    path: Path | None
    rel: str
    index: int = 0
    time: float | None = None
    image: np.ndarray | None = None
    model_input: ModelInput | None = None
    error: str | None = None


class Predictor:
    """A trained model ready for inference.

    Args:
        config: a run's ``config.yaml`` (or several project YAMLs, or a built ``CfgNode``).
        weights: a checkpoint (``model_final.pth``); None keeps the config's ``MODEL.WEIGHTS``.
        draw: also draw each result (``Result.drawn``) with the configured renderer.
        opts: further ``KEY VALUE`` overrides, as on the command line.
        **options: shortcuts for common keys (see :data:`OPTION_KEYS`), e.g.
            ``score_threshold=0.5, classes=["cat"], device="cpu"``.
    """

    def __init__(
        self,
        config: str | os.PathLike | Iterable[str | os.PathLike] | CfgNode,
        weights: str | os.PathLike | None = None,
        *,
        draw: bool = False,
        opts: Iterable[str] = (),
        **options,
    ):
        unknown = set(options) - set(OPTION_KEYS)
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; known: {sorted(OPTION_KEYS)}")
        overrides = list(opts)
        for name, value in options.items():
            overrides += [OPTION_KEYS[name], repr(list(value)) if name == "classes" else str(value)]
        if isinstance(config, CfgNode):
            cfg = config.clone()
            cfg.defrost()
            cfg.merge_from_list(overrides)
            cfg.freeze()
        else:
            files = [config] if isinstance(config, str | os.PathLike) else list(config)
            cfg = load_model_config([str(f) for f in files], weights and str(weights), overrides)
        self.cfg = cfg
        self.metadata = build_metadata(cfg)
        self.keep_classes = class_filter(cfg)
        self.video_options = VideoOptions.from_cfg(cfg)
        self.model = BatchPredictor(cfg)
        self.renderer = build_renderer(self.video_options.renderer, self.metadata) if draw else None

    def predict(self, source) -> Iterator[Result]:
        """Results of every image and video frame of ``source``, in input order.

        ``source`` is anything ``instseg predict`` takes (an image, a video, a folder, a glob, a
        list file), a BGR array, or a list of those.
        """
        threads = StageThreads("api", int(self.cfg.INSTSEG.PREDICT.QUEUE_SIZE))
        frames = threads.queue()
        threads.spawn("decode", lambda: self._decode(threads, frames, source))
        batch_size = int(self.cfg.INSTSEG.PREDICT.BATCH_SIZE)
        try:
            batch: list[_Frame] = []
            while True:
                frame = threads.get(frames)
                if frame is not END:
                    batch.append(frame)
                ready = [f for f in batch if f.error is None]
                if batch and (frame is END or len(ready) >= batch_size):
                    yield from self._run(batch, ready)
                    batch = []
                if frame is END:
                    break
        finally:
            threads.close()

    def _run(self, batch: list[_Frame], ready: list[_Frame]) -> Iterator[Result]:
        outputs = self.model.predict([f.model_input for f in ready]) if ready else []
        by_frame = {id(f): instances for f, instances in zip(ready, outputs, strict=True)}
        for f in batch:
            instances = by_frame.get(id(f))
            if instances is None:
                height, width = f.image.shape[:2] if f.image is not None else (0, 0)
                instances = _no_instances(height, width)
            else:
                instances = filter_instances(instances, self.keep_classes)
                if len(instances) > 1:
                    instances = instances[torch.argsort(instances.scores, descending=True)]
            drawn = None
            if self.renderer is not None and f.image is not None:
                drawn = self.renderer.draw(f.image, instances)
            yield Result(
                f.path, f.rel, f.index, f.time, instances, self.metadata, f.image, drawn, f.error
            )

    def _decode(self, threads: StageThreads, out, source) -> None:
        for frame in self._frames(source):
            threads.check()
            if frame.error is None:
                frame.model_input = self.model.preprocess(frame.image)
            threads.put(out, frame)
        threads.put(out, END)

    def _frames(self, source) -> Iterator[_Frame]:
        items = source if isinstance(source, list | tuple) else [source]
        for item in items:
            if isinstance(item, np.ndarray):
                yield _Frame(None, "<array>", image=item)
                continue
            for f in resolve_source(item).files:
                yield from self._file_frames(f)

    def _file_frames(self, f: InputFile) -> Iterator[_Frame]:
        if not is_video_path(f.path):
            try:
                yield _Frame(f.path, f.rel, image=read_image(f.path))
            except ImageReadError as e:
                yield _Frame(f.path, f.rel, error=str(e))
            return
        o = self.video_options
        try:
            with open_video(f.path) as video:
                for vf in video.frames(o.start, o.end, o.stride, o.max_frames):
                    yield _Frame(f.path, f.rel, vf.index, vf.time, vf.image)
        except VideoError as e:
            yield _Frame(f.path, f.rel, error=" ".join(str(e).split()))


def _no_instances(height: int, width: int) -> Instances:
    """The result of an input that could not be read: the fields of a prediction, none in them."""
    return Instances(
        (height, width),
        pred_boxes=Boxes(torch.zeros((0, 4))),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.int64),
        pred_masks=torch.zeros((0, height, width), dtype=torch.bool),
    )
