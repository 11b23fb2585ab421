"""Identities across video frames: a track id for every instance, from Detectron2's trackers.

The tracker sees each processed frame's instances in order (with ``FRAME_STRIDE`` N, every N-th
source frame, so an object moves N times as far between two updates and ``MAX_LOST_FRAMES``
counts processed frames). Ids start at 1, as MOTChallenge files expect, and are never reused
within a video.

Instances scoring under ``MIN_SCORE`` are not tracked (track id 0, left out of the track files):
a low-score detection that flickers on and off would otherwise start a track each time.

Detectron2's :class:`~detectron2.tracking.IOUWeightedHungarianBBoxIOUTracker` matches boxes
by IoU with the Hungarian algorithm and keeps a lost track at its last box for a few frames.
:class:`_ClassAwareHungarianTracker` adds two things to it: a box is matched only to a track of
its own class, and an assignment whose IoU is under ``MIN_IOU`` starts a new track instead of
taking an unrelated one (``linear_sum_assignment`` pairs every row it can, whatever the cost, so
an object entering as another leaves would inherit the leaving one's id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.tracking import IOUWeightedHungarianBBoxIOUTracker
from detectron2.tracking.utils import LARGE_COST_VALUE

from instseg.config import ConfigError

logger = logging.getLogger(__name__)

METHODS = ("hungarian", "none")


@dataclass(frozen=True)
class TrackOptions:
    """``INSTSEG.TRACK.*``, checked."""

    method: str = "hungarian"
    max_lost_frames: int = 10
    min_iou: float = 0.3
    min_instance_period: int = 0
    min_frames: int = 3
    min_score: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> TrackOptions:
        """Read and check the options; a bad value is a ConfigError naming its key."""
        track = cfg.INSTSEG.TRACK
        method = str(track.METHOD).strip().lower()
        if method not in METHODS:
            raise ConfigError(
                f"INSTSEG.TRACK.METHOD must be one of {', '.join(METHODS)}, got {track.METHOD!r}"
            )
        options = cls(
            method=method,
            max_lost_frames=int(track.MAX_LOST_FRAMES),
            min_iou=float(track.MIN_IOU),
            min_instance_period=int(track.MIN_INSTANCE_PERIOD),
            min_frames=int(track.MIN_FRAMES),
            min_score=float(track.MIN_SCORE),
        )
        if options.max_lost_frames < 0 or options.min_instance_period < 0:
            raise ConfigError("INSTSEG.TRACK: MAX_LOST_FRAMES and MIN_INSTANCE_PERIOD must be >= 0")
        if not 0.0 < options.min_iou <= 1.0:
            raise ConfigError(f"INSTSEG.TRACK.MIN_IOU must be in (0, 1], got {options.min_iou}")
        if not 0.0 <= options.min_score <= 1.0:
            raise ConfigError(f"INSTSEG.TRACK.MIN_SCORE must be in [0, 1], got {options.min_score}")
        if options.min_frames < 1:
            raise ConfigError(f"INSTSEG.TRACK.MIN_FRAMES must be >= 1, got {options.min_frames}")
        return options


class _ClassAwareHungarianTracker(IOUWeightedHungarianBBoxIOUTracker):
    """Detectron2's IoU-weighted Hungarian tracker, matching within a class and refusing
    assignments under the IoU threshold (see the module docstring)."""

    def build_cost_matrix(self, instances: Instances, prev_instances: Instances) -> np.ndarray:
        # The parent's costs (-IoU at or above the threshold, LARGE_COST_VALUE below), in one
        # array expression instead of its Python loop over pairs, which was half the tracker's
        # time; then LARGE_COST_VALUE across classes.
        iou = pairwise_iou(instances.pred_boxes, prev_instances.pred_boxes).numpy()
        classes = np.asarray(instances.pred_classes).reshape(-1, 1)
        prev_classes = np.asarray(prev_instances.pred_classes).reshape(1, -1)
        match = (iou >= self._track_iou_threshold) & (classes == prev_classes)
        self._cost = np.where(match, -iou, float(LARGE_COST_VALUE))
        return self._cost

    def _process_matched_idx(self, instances, matched_idx, matched_prev_idx):
        keep = self._cost[matched_idx, matched_prev_idx] < LARGE_COST_VALUE
        self._kept = (matched_idx[keep], matched_prev_idx[keep])
        return super()._process_matched_idx(instances, *self._kept)

    def _process_unmatched_idx(self, instances, matched_idx):
        return super()._process_unmatched_idx(instances, self._kept[0])

    def _process_unmatched_prev_idx(self, instances, matched_prev_idx):
        return super()._process_unmatched_prev_idx(instances, self._kept[1])


class Tracker:
    """Track ids for one video's frames, fed in order.

    Only boxes, classes and scores reach Detectron2's tracker: it copies its inputs every frame,
    and masks would make that the cost of the stage.
    """

    def __init__(self, options: TrackOptions, width: int, height: int) -> None:
        self.options = options
        self._tracker = _ClassAwareHungarianTracker(
            video_height=height,
            video_width=width,
            max_lost_frame_count=options.max_lost_frames,
            min_instance_period=options.min_instance_period,
            track_iou_threshold=options.min_iou,
        )

    def update(self, instances: Instances) -> torch.Tensor:
        """int64 track ids (from 1) of ``instances`` (CPU; pred_boxes, pred_classes, scores);
        0 for an instance scoring under ``MIN_SCORE``, which is not tracked."""
        keep = torch.nonzero(instances.scores >= self.options.min_score).flatten()
        light = Instances(
            instances.image_size,
            pred_boxes=Boxes(instances.pred_boxes.tensor[keep].detach().float()),
            pred_classes=instances.pred_classes[keep].detach(),
            scores=instances.scores[keep].detach().float(),
        )
        tracked = self._tracker.update(light)
        ids = torch.zeros(len(instances), dtype=torch.int64)
        # Detectron2 appends the tracks it keeps while lost after the frame's own instances.
        ids[keep] = torch.as_tensor(
            [int(i) + 1 for i in tracked.ID[: len(keep)]], dtype=torch.int64
        )
        return ids


class VideoTracker:
    """Track ids for the frames of a stream of videos, in order: ids start again from 1 with
    each video (a new path, or a frame index that goes back). The predict job's track stage
    and the Python API share it."""

    def __init__(self, options: TrackOptions) -> None:
        self.options = options
        self._tracker: Tracker | None = None
        self._last: tuple[object, int] | None = None  # (path, frame index) of the last frame

    def update(self, path: object, index: int, instances: Instances) -> torch.Tensor:
        """Track ids of ``instances``, frame ``index`` of the video at ``path``."""
        if self._last is None or self._last[0] != path or self._last[1] >= index:
            height, width = instances.image_size
            self._tracker = Tracker(self.options, width, height)
        self._last = (path, index)
        return self._tracker.update(instances)
