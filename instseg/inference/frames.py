"""Sources of :class:`~instseg.inference.pipeline.Frame` objects: image files, the selected
frames of a video, or arrays. Reading happens here, in the pipeline's decode thread; a file that
cannot be read becomes a frame with ``error`` set, never an exception."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from instseg.inference.pipeline import Frame
from instseg.inference.sources import InputFile, is_video_path
from instseg.inference.video_options import VideoOptions
from instseg.io.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from instseg.io.media import VideoError
from instseg.io.video_reader import VideoSource, open_video


def image_frame(
    path: str | Path, rel: str, tag: Any = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Frame:
    """One image file, decoded (BGR), or a frame saying why it could not be."""
    try:
        return Frame(Path(path), rel, image=read_image(path, max_pixels), tag=tag)
    except ImageReadError as e:
        return Frame(Path(path), rel, error=str(e), tag=tag)


def video_frames(
    video: VideoSource, rel: str, options: VideoOptions, tag: Any = None
) -> Iterator[Frame]:
    """The frames of an opened video that ``options`` select, with their index and time."""
    frames = video.frames(options.start, options.end, options.stride, options.max_frames)
    try:
        for f in frames:
            yield Frame(video.path, rel, f.index, f.time, f.image, tag=tag)
    finally:
        close = getattr(frames, "close", None)  # releases the decoder when stopped early
        if close is not None:
            close()


def file_frames(
    f: InputFile, options: VideoOptions, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Frame]:
    """An input file's frames: the image itself, or a video's selected frames."""
    if not is_video_path(f.path):
        yield image_frame(f.path, f.rel, max_pixels=max_pixels)
        return
    try:
        with open_video(f.path) as video:
            yield from video_frames(video, f.rel, options)
    except VideoError as e:
        yield Frame(f.path, f.rel, error=" ".join(str(e).split()))


def array_frames(arrays: Iterable[np.ndarray]) -> Iterator[Frame]:
    for array in arrays:
        yield Frame(None, "<array>", image=array)
