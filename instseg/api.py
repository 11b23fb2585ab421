"""The Python API: ``Predictor(config, weights).predict(source)`` yields one :class:`Result` per
image or video frame, with nothing written to disk, so a notebook or another program gets
Detectron2 ``Instances`` (and optionally the drawn picture) for any SOURCE the CLI takes.

It runs :class:`~instseg.inference.pipeline.Pipeline`, the same stages as ``instseg predict``:
decoding in a worker thread, the model in the caller's thread, ``INSTSEG.PREDICT.BATCH_SIZE``
frames per forward pass across image and video boundaries alike. A video's frames carry track
ids (``instances.track_id``, as the CLI's JSONL has them) unless ``INSTSEG.TRACK.METHOD`` is
``none``; each video starts its own ids from 1.
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
from detectron2.structures import Boxes, Instances

from instseg.inference.frames import array_frames, file_frames
from instseg.inference.model import build_model, instances_to_draw
from instseg.inference.pipeline import Frame, Pipeline
from instseg.inference.records import coco_results, semantic_results
from instseg.inference.settings import PredictSettings, load_model_config
from instseg.inference.sources import resolve_source
from instseg.inference.tracking import VideoTracker

logger = logging.getLogger(__name__)

# Keyword options of Predictor and the config keys they set.
OPTION_KEYS = {
    "device": "MODEL.DEVICE",
    "score_threshold": "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "max_detections": "TEST.DETECTIONS_PER_IMAGE",
    "batch_size": "INSTSEG.PREDICT.BATCH_SIZE",
    "classes": "INSTSEG.PREDICT.CLASSES",
    "renderer": "INSTSEG.PREDICT.RENDERER",
    "draw_score": "INSTSEG.PREDICT.DRAW_SCORE",
    "precision": "INSTSEG.PREDICT.PRECISION",
}


@dataclass
class Result:
    """One image, or one frame of a video, as the model saw it.

    ``instances`` are on the CPU, class-filtered and sorted by descending score; ``image`` is
    the input (H x W x 3 uint8, BGR); ``drawn`` the annotated picture (BGR) when the predictor
    draws; ``error`` the one-line reason when this input could not be read (no instances then).
    A semantic model gives ``sem_seg`` (H x W class ids of ``metadata.stuff_classes``) and no
    instances.
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
    sem_seg: np.ndarray | None = None

    def to_coco(self, image_id: int = 1) -> list[dict]:
        """COCO results (category ids are contiguous class ids + 1), as predictions.json has;
        for a semantic model, COCO stuff results (one RLE per class present)."""
        if self.sem_seg is not None:
            names = list(self.metadata.stuff_classes)
            return semantic_results(self.sem_seg, image_id, range(1, len(names) + 1), names)
        return coco_results(self.instances, image_id)


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
        self.settings = PredictSettings.from_cfg(cfg)
        self.cfg, self.metadata = cfg, self.settings.metadata
        self.model = build_model(cfg)
        self.pipeline = Pipeline(self.model, self.settings, name="api")
        self.renderer = self.settings.build_renderer() if draw else None

    def predict(self, source) -> Iterator[Result]:
        """Results of every image and video frame of ``source``, in input order.

        ``source`` is anything ``instseg predict`` takes (an image, a video, a folder, a glob, a
        list file), a BGR array, or a list of those.
        """
        tracker = VideoTracker(self.settings.track) if self.settings.tracking else None
        for frame in self.pipeline.frames(self._frames(source)):
            instances = frame.instances
            if instances is None:
                height, width = frame.image.shape[:2] if frame.image is not None else (0, 0)
                instances = _no_instances(height, width)
            elif frame.time is not None and tracker is not None:
                instances.track_id = tracker.update(frame.path, frame.index, instances)
            yield Result(
                frame.path,
                frame.rel,
                frame.index,
                frame.time,
                instances,
                self.metadata,
                frame.image,
                self._draw(frame, instances),
                frame.error,
                frame.sem_seg,
            )

    def _draw(self, frame: Frame, instances: Instances) -> np.ndarray | None:
        if self.renderer is not None and frame.sem_seg is not None:
            return self.renderer.overlay(frame.image, frame.sem_seg)
        if self.renderer is not None and frame.image is not None:
            shown = instances_to_draw(instances, self.settings.video.draw_score)
            return self.renderer.draw(frame.image, shown)
        return None

    def _frames(self, source) -> Iterator[Frame]:
        items = source if isinstance(source, list | tuple) else [source]
        for item in items:
            if isinstance(item, np.ndarray):
                yield from array_frames([item])
                continue
            for f in resolve_source(item).files:
                yield from file_frames(f, self.settings.video, self.settings.max_pixels)


def _no_instances(height: int, width: int) -> Instances:
    """The result of an input that could not be read: the fields of a prediction, none in them."""
    return Instances(
        (height, width),
        pred_boxes=Boxes(torch.zeros((0, 4))),
        scores=torch.zeros(0),
        pred_classes=torch.zeros(0, dtype=torch.int64),
        pred_masks=torch.zeros((0, height, width), dtype=torch.bool),
    )
