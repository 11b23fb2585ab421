"""Deterministic sample videos: the sample dataset's classes moving over its backgrounds, for the
demo, the tests and the video benchmarks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from instseg.data.sample_data import draw_scene, make_background
from instseg.data.sample_shapes import CLASS_NAMES, DEFAULT_IMAGE_SIZE, random_scene_object


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
