"""Writing videos: H.264 in MP4 through PyAV (or MPEG-4 Part 2 "mp4v" through
``cv2.VideoWriter`` as a fallback), optionally with the audio of another file. Output goes
to a temporary file beside the target that is re-opened and checked before it replaces the
final path, so a failed run never leaves a partial video behind.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from instseg.io.atomic import publish, temp_path
from instseg.io.audio import AudioFeed, CopyFeed, ToneFeed
from instseg.io.encoders import OpenCVEncoder, PyAVEncoder
from instseg.io.media import VideoWriteError, WrittenVideo, ffmpeg_reason
from instseg.io.video_check import check_written

try:
    import av
except ImportError:  # the OpenCV paths still work without PyAV
    av = None

logger = logging.getLogger(__name__)

# H.264 encoders in order of preference; hardware ones are only used if they open.
_H264_ENCODERS = (
    "libx264",
    "libopenh264",
    "h264_videotoolbox",
    "h264_nvenc",
    "h264_qsv",
    "h264_amf",
    "h264_vaapi",
)


# Timestamps are kept on a clock of at least this many ticks per second.
_MIN_TICKS_PER_SECOND = 90000


@functools.lru_cache(maxsize=1)
def available_h264_encoder() -> str | None:
    """Name of the first H.264 encoder PyAV's FFmpeg has that actually opens, else None."""
    if av is None:
        return None
    for name in _H264_ENCODERS:
        if name not in av.codecs_available:
            continue
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
            ctx.time_base = Fraction(1, 30)
            ctx.framerate = Fraction(30)
            ctx.open()
            return name
        except Exception as exc:  # hardware encoders are listed even without the device
            logger.debug("H.264 encoder %s is unusable here: %s", name, ffmpeg_reason(exc))
    return None


def _tick_rate(rate: Fraction, limit: int | None = None) -> int:
    """Ticks per second: a multiple of the frame rate's numerator, so constant-rate frames
    land on exact ticks, and fine enough to keep irregular times to ~0.01 ms.

    ``limit`` caps it for encoders with a small clock (MPEG-4 Part 2: 16 bits).
    """
    n = rate.numerator
    if limit is None:
        return n * max(1, math.ceil(_MIN_TICKS_PER_SECOND / n))
    return n * (limit // n) if n <= limit else limit


class VideoWriter:
    """Write BGR frames to a video file, checked by re-opening before it gets its name.

    ``codec``: ``"h264"`` (PyAV, H.264, yuv420p, or yuv444p when a side is odd because
    4:2:0 cannot represent odd sizes), ``"mp4v"`` (OpenCV's MPEG-4 Part 2 writer) or
    ``"auto"`` (h264 when available, else mp4v). Frame ``time`` values become the
    timestamps (shifted so the first frame is at 0); without them frames are 1/fps apart.
    ``audio_source``: a media file whose audio, cut to the same time range, is added.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        codec: str = "h264",
        audio_source: str | os.PathLike | None = None,
        *,
        crf: int = 23,
        preset: str = "veryfast",
        publish: bool = True,
    ) -> None:
        self.path = Path(path)
        # False: close() leaves the checked file at ``temp_file`` for the caller to publish
        # together with other outputs (instseg.io.atomic.commit_together).
        self.publish = publish
        if not (fps and math.isfinite(fps) and fps > 0):
            raise VideoWriteError(f"{self.path}: fps must be a positive number, got {fps!r}")
        if int(width) <= 0 or int(height) <= 0:
            raise VideoWriteError(f"{self.path}: invalid frame size {width}x{height}")
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.codec = self._resolve_codec(codec)
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.crf, self.preset = crf, preset
        self.rate = Fraction(self.fps).limit_denominator(1001)
        self._set_clock(_tick_rate(self.rate))
        self._t0: float | None = None
        self.pts: list[int] = []
        self._tmp: Path | None = None
        self._closed = False
        self._backend: PyAVEncoder | OpenCVEncoder | None = None
        self.audio: AudioFeed | None = None
        self._tone_hz: float | None = None  # set by write_test_clip for a generated track
        self.result: WrittenVideo | None = None
        if not self.path.parent.is_dir():
            raise VideoWriteError(f"{self.path}: folder {self.path.parent} does not exist")

    def _resolve_codec(self, codec: str) -> str:
        if codec == "auto":
            return "h264" if available_h264_encoder() else "mp4v"
        if codec == "h264":
            if av is None:
                raise VideoWriteError(f"{self.path}: codec 'h264' needs PyAV, which is missing")
            if available_h264_encoder() is None:
                raise VideoWriteError(f"{self.path}: PyAV's FFmpeg has no usable H.264 encoder")
            return codec
        if codec == "mp4v":
            return codec
        raise VideoWriteError(f"{self.path}: unknown codec {codec!r} (use h264, mp4v or auto)")

    # -- setup

    def _set_clock(self, ticks: int) -> None:
        self.ticks = ticks
        self.frame_ticks = round(ticks / self.rate)

    def _start(self) -> None:
        self._tmp = temp_path(self.path)
        odd = self.width % 2 or self.height % 2
        with self._aborting(f"cannot start the {self.codec} encoder"):
            self.audio = self._make_audio_feed()
            if self.codec == "h264":
                name = available_h264_encoder()
                self._backend = PyAVEncoder(self, name, self._h264_pix_fmt(name, odd))
            elif odd:
                # OpenCV silently rounds odd sizes down; FFmpeg's own mpeg4 encoder keeps them.
                if av is None:
                    raise VideoWriteError(
                        f"{self.path}: mp4v through OpenCV cannot keep the odd size "
                        f"{self.width}x{self.height} and PyAV is missing"
                    )
                self._set_clock(_tick_rate(self.rate, limit=65535))
                self._backend = PyAVEncoder(self, "mpeg4", "yuv420p")
            else:
                self._backend = OpenCVEncoder(self)

    @contextlib.contextmanager
    def _aborting(self, doing: str):
        """Any failure inside deletes the output; a foreign one becomes a VideoWriteError."""
        try:
            yield
        except VideoWriteError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise VideoWriteError(f"{self.path}: {doing} ({ffmpeg_reason(exc)})") from None

    def _h264_pix_fmt(self, encoder: str, odd: bool) -> str:
        if not odd:
            return "yuv420p"
        formats = {f.name for f in (av.Codec(encoder, "w").video_formats or ())}
        if "yuv444p" in formats:
            return "yuv444p"
        raise VideoWriteError(
            f"{self.path}: {encoder} cannot encode the odd size {self.width}x{self.height} "
            "(4:2:0 needs even sides); use codec='mp4v'"
        )

    def _make_audio_feed(self) -> AudioFeed | None:
        if self._tone_hz is not None:
            return ToneFeed(self._tone_hz) if av is not None else None
        if self.audio_source is None:
            return None
        if av is None:
            logger.warning(
                "%s: PyAV is missing, so the audio of %s is dropped", self.path, self.audio_source
            )
            return None
        try:
            container = av.open(str(self.audio_source), metadata_errors="ignore")
        except Exception as exc:
            raise VideoWriteError(
                f"{self.path}: cannot open audio source {self.audio_source} ({ffmpeg_reason(exc)})"
            ) from None
        if not container.streams.audio:
            container.close()
            logger.info(
                "%s: %s has no audio stream; writing video only", self.path, self.audio_source
            )
            return None
        return CopyFeed(container, self.audio_source)

    # -- writing

    def write(self, image_bgr: np.ndarray, time: float | None = None) -> None:
        """Append one frame; ``time`` (seconds) must increase from frame to frame."""
        if self._closed:
            raise VideoWriteError(f"{self.path}: write() after close()")
        image = self._check_image(image_bgr)
        if self._backend is None:
            self._start()
        if time is not None and self._t0 is None and not self.pts:
            self._t0 = float(time)
        if time is not None:
            pts = round((float(time) - (self._t0 or 0.0)) * self.ticks)
        else:
            pts = self.pts[-1] + self.frame_ticks if self.pts else 0
        if self.pts and pts <= self.pts[-1]:
            self.abort()
            raise VideoWriteError(
                f"{self.path}: frame {len(self.pts)} time {time} does not come after the "
                f"previous frame's {self.pts[-1] / self.ticks:.6f}s"
            )
        if not self.pts and self.audio is not None:
            self.audio.start(self._t0 or 0.0)
        self.pts.append(pts)
        with self._aborting(f"encoding frame {len(self.pts) - 1} failed"):
            self._backend.write(image, pts)

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            self.abort()
            raise VideoWriteError(
                f"{self.path}: frames must be HxWx3 uint8 BGR, got {image.shape} {image.dtype}"
            )
        h, w = image.shape[:2]
        if (w, h) != (self.width, self.height):
            self.abort()
            raise VideoWriteError(
                f"{self.path}: frame {len(self.pts)} is {w}x{h}, expected {self.width}x{self.height}"
            )
        return np.ascontiguousarray(image)

    # -- finishing

    @property
    def frames_written(self) -> int:
        return len(self.pts)

    def close(self) -> WrittenVideo:
        """Finish encoding, check the re-opened file, then move it to ``path``."""
        if self._closed:
            raise VideoWriteError(f"{self.path}: close() called twice")
        if not self.pts:
            self.abort()
            raise VideoWriteError(f"{self.path}: no frames were written")
        self._closed = True
        end_pts = self.pts[-1] + self.frame_ticks
        try:
            has_audio = self._backend.finish(end_pts)
            if getattr(self._backend, "constant_rate", False):
                end_pts = len(self.pts) * self.frame_ticks  # the given times were dropped
            expected = end_pts / self.ticks
            written = check_written(self._tmp, self.path, len(self.pts), expected, self, has_audio)
            if self.publish:
                publish(self._tmp, self.path)
        except VideoWriteError:
            self._discard()
            raise
        except Exception as exc:
            self._discard()
            raise VideoWriteError(
                f"{self.path}: finishing the video failed ({ffmpeg_reason(exc)})"
            ) from None
        finally:
            if self.audio is not None:
                self.audio.close()
        logger.debug(
            "%s: wrote %d frames, %.3fs, %s, %d bytes",
            self.path,
            written.frames,
            written.duration,
            written.codec,
            written.bytes,
        )
        self.result = written
        return written

    @property
    def temp_file(self) -> Path | None:
        return self._tmp

    def abort(self) -> None:
        """Stop without producing a file; whatever was written so far is deleted."""
        self._closed = True
        self._discard()

    def _discard(self) -> None:
        if self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.abort()
        if self.audio is not None:
            with contextlib.suppress(Exception):
                self.audio.close()
        for tmp in (self._tmp, getattr(self._backend, "remux_path", None)):
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()
