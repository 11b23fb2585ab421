"""Deterministic sample videos: the sample dataset's classes moving over its backgrounds, for the
demo, the tests and the video benchmarks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from instseg.data.sample_data import draw_scene, make_background
from instseg.data.sample_shapes import (
    CLASS_NAMES,
    DEFAULT_IMAGE_SIZE,
    MIN_VISIBLE_AREA,
    SceneObject,
    random_scene_object,
    with_random_appearance,
)


def iter_sample_video_frames(
    num_frames: int,
    size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    num_objects: int = 4,
) -> Iterator[np.ndarray]:
    """BGR uint8 frames of sample-class objects gliding and turning over a cluttered background.

    Objects bounce off the frame edges and the background brightness drifts slowly, so consecutive
    frames differ smoothly; the same arguments give the same frames.
    """
    height, width = size
    rng = np.random.default_rng((seed, 2))
    background = make_background(rng, height, width).astype(np.float32)
    max_size = 0.4 * min(height, width)
    objects = []
    velocities = []
    for index in range(num_objects):
        obj = random_scene_object(
            rng, height, width, class_index=index % len(CLASS_NAMES), max_size=max_size
        )
        # Video objects are at least mid-sized so a detector has something to find in every frame.
        obj = dataclasses.replace(obj, size=max(obj.size, 0.12 * min(height, width)))
        objects.append(obj)
        speed = rng.uniform(0.5, 2.5)
        heading = rng.uniform(0.0, 2.0 * math.pi)
        velocities.append([speed * math.cos(heading), speed * math.sin(heading)])
    spins = rng.uniform(-2.0, 2.0, num_objects)
    drift_phase = rng.uniform(0.0, 2.0 * math.pi)
    for frame_index in range(num_frames):
        gain = 1.0 + 0.06 * math.sin(drift_phase + frame_index * 0.05)
        frame_background = np.clip(background * gain + 0.5, 0, 255).astype(np.uint8)
        frame, _ = draw_scene(frame_background, objects)
        yield frame
        for index, obj in enumerate(objects):
            velocity = velocities[index]
            radius = obj.size / 2.0
            x, y = obj.center
            for axis, (position, limit) in enumerate(((x, width), (y, height))):
                heading_out = (position < radius and velocity[axis] < 0) or (
                    position > limit - radius and velocity[axis] > 0
                )
                if heading_out:
                    velocity[axis] = -velocity[axis]
            objects[index] = obj.moved(velocity[0], velocity[1], float(spins[index]))


@dataclass(frozen=True)
class TruthObject:
    """One object of a frame of :func:`tracking_clip`: its identity, class and visible mask."""

    track_id: int
    class_index: int
    mask: np.ndarray  # H x W bool, the pixels left visible by the objects drawn over it
    visible: float  # visible pixels / pixels of the whole shape (inside the frame)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """XYXY box of the visible pixels."""
        ys, xs = np.nonzero(self.mask)
        return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


# (class index, size, start centre, velocity per frame) of tracking_clip's objects, drawn in this
# order: 1 and 2 cross paths (2 passes over 1), 3 slides behind the static 4 and comes out the
# other side, 5 leaves through the right edge, 6 enters through the left edge at frame 30.
_TRACK_SCRIPT = (
    (0, 56.0, (40.0, 70.0), (4.0, 0.6)),
    (1, 56.0, (280.0, 92.0), (-4.0, -0.4)),
    (3, 40.0, (84.0, 190.0), (7.0, 0.0)),
    (2, 84.0, (170.0, 190.0), (0.0, 0.0)),
    (4, 44.0, (240.0, 30.0), (3.0, 0.2)),
    (1, 44.0, (-22.0 - 30 * 3.0, 140.0), (3.0, 0.0)),
)


def tracking_clip(
    num_frames: int = 60, size: tuple[int, int] = (240, 320), seed: int = 0
) -> Iterator[tuple[np.ndarray, list[TruthObject]]]:
    """A scripted clip with known identities: (BGR frame, visible objects) per frame.

    Six objects of the sample classes move at constant speed over a cluttered background: two
    cross paths, one is hidden behind another for several frames, one leaves the frame and a new
    one enters. An object is listed while at least 20% of its shape is visible (inside the frame and
    not covered), the usual rule of tracking benchmarks.
    """
    height, width = size
    rng = np.random.default_rng((seed, 3))
    background = make_background(rng, height, width)
    objects = [
        with_random_appearance(
            rng,
            SceneObject(
                class_index=c,
                center=center,
                size=s,
                angle=float(rng.uniform(0, 360)),
                color=(0, 0, 0),
            ),
        )
        for c, s, center, _ in _TRACK_SCRIPT
    ]
    for frame_index in range(num_frames):
        placed = [
            obj.moved(v[0] * frame_index, v[1] * frame_index, 1.5 * frame_index)
            for obj, (_, _, _, v) in zip(objects, _TRACK_SCRIPT, strict=True)
        ]
        frame, visible = draw_scene(background, placed)
        truth = []
        for track_id, (obj, mask) in enumerate(zip(placed, visible, strict=True), start=1):
            # Visibility counts the parts outside the frame as hidden, as MOT benchmarks do.
            area = float(cv2.contourArea(obj.outline().astype(np.float32)))
            shown = int(mask.sum())
            if shown >= max(MIN_VISIBLE_AREA, 0.2 * area):
                truth.append(TruthObject(track_id, obj.class_index, mask, min(1.0, shown / area)))
        yield frame, truth


def noisy_detections(
    truth: list[TruthObject],
    rng: np.random.Generator,
    size: tuple[int, int],
    drop: float = 0.05,
    false_positives: float = 0.1,
    jitter: float = 0.03,
    num_classes: int = len(CLASS_NAMES),
) -> Instances:
    """A frame's true visible boxes as a detector would give them, to test trackers alone:
    each side jittered by ``jitter`` of the box size, a ``drop`` share missed, and a false
    positive (random box, class and lower score) in a ``false_positives`` share of frames."""
    boxes, classes, scores = [], [], []
    for obj in truth:
        if rng.random() < drop:
            continue
        x0, y0, x1, y1 = obj.box
        w, h = x1 - x0, y1 - y0
        dx0, dy0, dx1, dy1 = rng.normal(0.0, jitter, 4) * (w, h, w, h)
        boxes.append([x0 + dx0, y0 + dy0, x1 + dx1, y1 + dy1])
        classes.append(obj.class_index)
        scores.append(rng.uniform(0.6, 1.0))
    if rng.random() < false_positives:
        height, width = size
        side = rng.uniform(15, 40)
        x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
        boxes.append([x, y, x + side, y + side])
        classes.append(int(rng.integers(num_classes)))
        scores.append(rng.uniform(0.5, 0.8))
    return Instances(
        size,
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        pred_classes=torch.tensor(classes, dtype=torch.int64),
        scores=torch.tensor(scores, dtype=torch.float32),
    )
