"""A video's tracks as files other tools read: ``NAME.tracks.csv`` and ``NAME.tracks.json``.

``NAME.tracks.csv`` is a MOTChallenge results file, one line per tracked instance::

    frame, id, bb_left, bb_top, bb_width, bb_height, score, class, -1, -1

``frame`` is the source frame index + 1 (MOTChallenge counts from 1; with ``FRAME_STRIDE`` N
the strided frames keep their source numbers, so the file lines up with ground truth of the
whole clip), ``class`` the output category id (as in the JSONL), and the last two columns are
MOTChallenge's unused world coordinates. py-motmetrics (``fmt="mot15-2D"``) and TrackEval read
it as it is.

``NAME.tracks.json`` summarises each track (class, first and last frame, frames seen, seconds
from first to last sighting) and counts objects per class: tracks seen in at least
``INSTSEG.TRACK.MIN_FRAMES`` frames, so a one-frame false positive is listed, not counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from detectron2.structures import Instances

TRACKS_CSV_SUFFIX = ".tracks.csv"
TRACKS_JSON_SUFFIX = ".tracks.json"


@dataclass
class _Track:
    category_id: int
    first_frame: int
    first_time: float
    last_frame: int = 0
    last_time: float = 0.0
    frames: int = 0


@dataclass
class TrackLog:
    """Collects one video's tracks frame by frame; the CSV lines go out as they come."""

    class_names: list[str]
    min_frames: int = 1
    tracks: dict[int, _Track] = field(default_factory=dict)

    def lines(self, instances: Instances, frame_index: int, time: float) -> str:
        """The CSV lines of one frame's tracked instances (CPU, with ``track_id``; 0 is none)."""
        if len(instances) == 0:
            return ""
        boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
        ids = instances.track_id.tolist()
        classes = instances.pred_classes.tolist()
        scores = instances.scores.tolist()
        out = []
        for (x0, y0, x1, y1), track_id, c, score in zip(boxes, ids, classes, scores, strict=True):
            if track_id == 0:  # under INSTSEG.TRACK.MIN_SCORE: not tracked
                continue
            track = self.tracks.setdefault(track_id, _Track(c + 1, frame_index, time))
            track.last_frame, track.last_time = frame_index, time
            track.frames += 1
            out.append(
                f"{frame_index + 1},{track_id},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},"
                f"{score:.4f},{c + 1},-1,-1\n"
            )
        return "".join(out)

    def objects_per_class(self) -> dict[str, int]:
        """Tracks seen in at least ``min_frames`` frames, per class name."""
        counts = Counter(
            self._name(t.category_id) for t in self.tracks.values() if t.frames >= self.min_frames
        )
        return dict(sorted(counts.items()))

    def summary(self, fps: float, frame_stride: int = 1) -> dict:
        """The ``NAME.tracks.json`` object (``fps``: the source's frame rate)."""
        tracks = [
            {
                "id": track_id,
                "category_id": t.category_id,
                "class": self._name(t.category_id),
                "first_frame": t.first_frame,
                "last_frame": t.last_frame,
                "frames": t.frames,
                "seconds": round(t.last_time - t.first_time, 6),
            }
            for track_id, t in sorted(self.tracks.items())
        ]
        return {
            "fps": fps,
            "frame_stride": frame_stride,
            "min_frames": self.min_frames,
            "objects_per_class": self.objects_per_class(),
            "tracks": tracks,
        }

    def summary_text(self, fps: float, frame_stride: int = 1) -> str:
        return json.dumps(self.summary(fps, frame_stride), indent=2) + "\n"

    def _name(self, category_id: int) -> str:
        c = category_id - 1
        return self.class_names[c] if 0 <= c < len(self.class_names) else str(category_id)
