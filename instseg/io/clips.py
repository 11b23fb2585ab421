"""Encoded test clips: real H.264 (optionally with an AAC tone) for tests, benchmarks and the
demo.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from instseg.io.media import VideoWriteError, WrittenVideo
from instseg.io.video_writer import VideoWriter

try:
    import av
except ImportError:  # the OpenCV paths still work without PyAV
    av = None


def write_test_clip(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: bool = False,
    codec: str = "h264",
) -> WrittenVideo:
    """Write ``frames`` as a clip, with a 440 Hz AAC tone when ``audio`` is set.

    Makes realistic encoded inputs for tests and benchmarks; the size comes from the
    first frame.
    """
    iterator = iter(frames)
    try:
        first = np.asarray(next(iterator))
    except StopIteration:
        raise VideoWriteError(f"{path}: no frames to write") from None
    height, width = first.shape[:2]
    writer = VideoWriter(path, fps, width, height, codec=codec)
    if audio:
        if av is None:
            raise VideoWriteError(f"{path}: a generated audio track needs PyAV, which is missing")
        writer._tone_hz = 440.0
    with writer:
        writer.write(first)
        for image in iterator:
            writer.write(image)
    return writer.result
