"""What the video reader and writer share: their errors, the frame and written-file types,
and FFmpeg messages cut to one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    import av
except ImportError:  # the OpenCV paths still work without PyAV
    av = None

from instseg.errors import InstsegError


class VideoError(InstsegError, RuntimeError):
    """Base class for video input/output failures."""


class VideoReadError(VideoError):
    """A file cannot be read as a video; the message is one line starting with the path."""


class VideoWriteError(VideoError):
    """A video could not be written or failed its check after writing."""


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its index in the source, BGR pixels (HxWx3 uint8) and its time.

    ``time`` is the frame's presentation timestamp in seconds from the start of the video
    stream, so frames of variable-frame-rate footage keep their real spacing.
    """

    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True)
class WrittenVideo:
    """What ``VideoWriter.close`` produced, as measured by re-opening the file."""

    path: Path
    frames: int
    duration: float
    codec: str
    bytes: int
    has_audio: bool = False


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg errors repeat the file name; keep only what went wrong."""
    if av is not None and isinstance(exc, av.error.FFmpegError):
        return one_line(exc.strerror or exc)
    return one_line(exc) or type(exc).__name__
