"""Reading and writing the videos of the annotated-video pipeline.

Decoding goes through PyAV (FFmpeg) with threaded decoding, falling back to
``cv2.VideoCapture`` when PyAV is missing or cannot open a file. Frames carry their
presentation time so variable-frame-rate footage keeps its real timing end to end.

Writing produces H.264 in MP4 through PyAV (or MPEG-4 Part 2 "mp4v" through
``cv2.VideoWriter`` as a fallback), optionally with the audio track of another file.
Output goes to a temporary file in the destination folder that is re-opened and checked
before it replaces the final path, so a failed run never leaves a partial video behind.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

try:
    import av
except ImportError:  # the OpenCV paths still work without PyAV
    av = None

from instseg.errors import InstsegError

logger = logging.getLogger(__name__)

__all__ = [
    "VideoError",
    "VideoFrame",
    "VideoReadError",
    "VideoSource",
    "VideoWriteError",
    "VideoWriter",
    "WrittenVideo",
    "available_h264_encoder",
    "open_video",
    "write_test_clip",
]

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
# Audio codecs the MP4/MOV muxers take as-is; anything else is re-encoded to AAC.
_MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})
# AVFMT_TS_NEGATIVE: the muxer stores timestamps below zero (MP4 through an edit list).
_TS_NEGATIVE = 0x40000
# Timestamps are kept on a clock of at least this many ticks per second.
_MIN_TICKS_PER_SECOND = 90000


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


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg errors repeat the file name; keep only what went wrong."""
    if av is not None and isinstance(exc, av.error.FFmpegError):
        return _one_line(exc.strerror or exc)
    return _one_line(exc) or type(exc).__name__


# --------------------------------------------------------------------------- reading


def open_video(path: str | os.PathLike, backend: str = "auto") -> VideoSource:
    """Open a video for reading; raises VideoReadError when it is not a readable video.

    ``backend`` is ``"auto"`` (PyAV, else OpenCV), ``"pyav"`` or ``"opencv"``.
    """
    return VideoSource(path, backend=backend)


class VideoSource:
    """A video file opened for reading: metadata up front, frames on iteration.

    Every call to :meth:`frames` (or ``iter``) decodes afresh from the start, so a
    source can be iterated more than once.
    """

    def __init__(self, path: str | os.PathLike, backend: str = "auto") -> None:
        if backend not in ("auto", "pyav", "opencv"):
            raise ValueError(f"backend must be 'auto', 'pyav' or 'opencv', not {backend!r}")
        self.path = Path(path)
        self.fps: float = 0.0
        self.width: int = 0
        self.height: int = 0
        self.frame_count: int | None = None
        self.duration: float | None = None
        self.has_audio: bool = False
        self.backend: str = ""
        # Index of the first frame that failed to decode in the last full pass.
        self.first_bad_frame: int | None = None
        self._exact_frames: int | None = None
        self._origin: Fraction = Fraction(0)
        # Where ``duration`` came from: "stream", "tag" or "container" (all streams).
        self._duration_source: str | None = None
        self._single_stream = False
        self._open_handles: set[Any] = set()
        self._probe(backend)

    # -- probing

    def _probe(self, backend: str) -> None:
        p = self.path
        if not p.exists():
            raise VideoReadError(f"{p}: no such file")
        if p.is_dir():
            raise VideoReadError(f"{p}: is a directory, not a video file")
        if p.stat().st_size == 0:
            raise VideoReadError(f"{p}: file is empty (0 bytes)")
        if backend == "pyav" and av is None:
            raise VideoReadError(f"{p}: PyAV is not installed")
        reason = None  # PyAV's, which is more precise than OpenCV's when both fail
        if backend in ("auto", "pyav") and av is not None:
            try:
                self._probe_pyav()
                self.backend = "pyav"
                return
            except VideoReadError as exc:
                if backend == "pyav":
                    raise VideoReadError(f"{p}: {exc}") from None
                reason = str(exc)
        try:
            self._probe_opencv()
            self.backend = "opencv"
            if reason:
                logger.debug("%s: PyAV failed (%s); reading with OpenCV", p, reason)
        except VideoReadError as exc:
            raise VideoReadError(f"{p}: {reason or exc}") from None

    def _probe_pyav(self) -> None:
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except Exception as exc:  # FFmpeg reports unreadable input in many ways
            raise VideoReadError(f"not a readable video ({_ffmpeg_reason(exc)})") from None
        try:
            if not container.streams.video:
                kinds = "audio only" if container.streams.audio else "no audio or video"
                raise VideoReadError(f"contains no video stream ({kinds})")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            first = None
            try:
                for frame in container.decode(stream):
                    first = frame
                    break
            except Exception as exc:
                raise VideoReadError(f"no decodable frame ({_ffmpeg_reason(exc)})") from None
            if first is None:
                raise VideoReadError("no decodable frame")
            tb = stream.time_base or Fraction(1, 1)
            if stream.start_time is not None:
                self._origin = stream.start_time * tb
            elif first.pts is not None:
                self._origin = first.pts * tb
            self.width = int(stream.codec_context.width or first.width)
            self.height = int(stream.codec_context.height or first.height)
            self.has_audio = bool(container.streams.audio)
            self._single_stream = len(container.streams) == 1
            self.duration, self._duration_source = _pyav_duration(container, stream)
            self._exact_frames = int(stream.frames) if stream.frames else None
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if fps <= 0 and self._exact_frames and self.duration:
                fps = self._exact_frames / self.duration
            self.fps = _fallback_fps(self.path, fps)
            self.frame_count = self._exact_frames
            if self.frame_count is None and self.duration:
                self.frame_count = round(self.duration * self.fps)
        finally:
            container.close()

    def _probe_opencv(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise VideoReadError("OpenCV cannot open it as a video")
            ok, image = cap.read()
            if not ok or image is None:
                raise VideoReadError("OpenCV decodes no frame from it")
            self.height, self.width = image.shape[:2]
            self.fps = _fallback_fps(self.path, float(cap.get(cv2.CAP_PROP_FPS) or 0.0))
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.frame_count = count if count > 0 else None
            self._exact_frames = None
            self.duration = self.frame_count / self.fps if self.frame_count else None
            self.has_audio = False  # OpenCV does not expose audio streams
        finally:
            cap.release()

    # -- iteration

    def __iter__(self) -> Iterator[VideoFrame]:
        return self.frames()

    def frames(
        self,
        start: float | None = None,
        end: float | None = None,
        stride: int = 1,
        max_frames: int | None = None,
    ) -> Iterator[VideoFrame]:
        """Frames with ``start <= time < end`` (seconds), every ``stride``-th one from the
        first selected, at most ``max_frames`` of them; indices stay the source's."""
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_frames is not None and max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        if max_frames == 0:
            return iter(())
        decoded = self._decode_pyav() if self.backend == "pyav" else self._decode_opencv()
        return self._select(decoded, start, end, stride, max_frames)

    def _select(self, decoded, start, end, stride, max_frames) -> Iterator[VideoFrame]:
        emitted = 0
        first_selected = None
        try:
            for index, time, to_image in decoded:
                if start is not None and time < start:
                    continue
                if end is not None and time >= end:
                    break
                if first_selected is None:
                    first_selected = index
                if (index - first_selected) % stride:
                    continue
                yield VideoFrame(index=index, time=time, image=to_image())
                emitted += 1
                if max_frames is not None and emitted >= max_frames:
                    break
        finally:
            decoded.close()

    def _report_bad(self, index: int, reason: str) -> None:
        self.first_bad_frame = index
        logger.warning(
            "%s: video is truncated or corrupt; stopped at frame %d (%s)", self.path, index, reason
        )

    def _decode_pyav(self):
        """Yield ``(index, time, to_image)`` until the end or the first undecodable frame."""
        container = av.open(str(self.path), metadata_errors="ignore")
        self._open_handles.add(container)
        count = 0
        last_time = None
        bad_reason = None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = stream.time_base or Fraction(1, 1)
            step = 1.0 / self.fps
            for frame in _pyav_frames(container, stream):
                if isinstance(frame, str):
                    bad_reason = frame
                    break
                if frame.pts is not None:
                    time = float(frame.pts * tb - self._origin)
                else:
                    time = 0.0 if last_time is None else last_time + step
                last_time = time
                yield count, time, functools.partial(frame.to_ndarray, format="bgr24")
                count += 1
            # Reached only when the caller consumed the whole stream.
            if bad_reason is None:
                bad_reason = self._missing_tail(count, last_time)
            if bad_reason is not None:
                self._report_bad(count, bad_reason)
            else:
                self.first_bad_frame = None
        finally:
            self._open_handles.discard(container)
            container.close()

    def _missing_tail(self, count: int, last_time: float | None) -> str | None:
        """Spot a stream that ended cleanly but earlier than its header promised.

        Both the frame count and the covered time must fall short when both are known:
        edit lists legitimately hide frames that the sample table still counts.
        """
        if self.backend == "opencv":
            expected = self.frame_count
            if expected and expected - count > max(2, 0.02 * expected):
                return f"{count} of about {expected} frames decoded"
            return None
        findings = []
        if self._exact_frames:
            short = count < self._exact_frames
            findings.append((short, f"{count} of {self._exact_frames} frames decoded"))
        usable = self._duration_source != "container" or self._single_stream
        if self.duration and last_time is not None and usable:
            covered = last_time + 1.0 / self.fps
            short = self.duration - covered > max(3.0 / self.fps, 0.25)
            findings.append((short, f"frames end at {covered:.3f}s of {self.duration:.3f}s"))
        if findings and all(short for short, _ in findings):
            return "; ".join(text for _, text in findings)
        return None

    def _decode_opencv(self):
        cap = cv2.VideoCapture(str(self.path))
        self._open_handles.add(cap)
        count = 0
        try:
            if not cap.isOpened():
                raise VideoReadError(f"{self.path}: OpenCV cannot open it as a video")
            while True:
                ok, image = cap.read()
                if not ok or image is None:
                    break
                time = float(cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                yield count, time, functools.partial(_identity, image)
                count += 1
            # OpenCV reports damage and the end alike; compare with the header's count.
            reason = self._missing_tail(count, None)
            if reason is not None:
                self._report_bad(count, reason)
            else:
                self.first_bad_frame = None
        finally:
            self._open_handles.discard(cap)
            cap.release()

    # -- lifetime

    def close(self) -> None:
        """Release decoders of iterations still in progress."""
        for handle in list(self._open_handles):
            with contextlib.suppress(Exception):
                handle.release() if hasattr(handle, "release") else handle.close()
        self._open_handles.clear()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VideoSource({str(self.path)!r}, {self.width}x{self.height}, fps={self.fps:.3f}, "
            f"frames={self.frame_count}, backend={self.backend!r})"
        )


def _identity(value):
    return value


def _fallback_fps(path: Path, fps: float) -> float:
    if fps > 0 and math.isfinite(fps):
        return fps
    logger.warning("%s: no usable frame rate in the container; assuming 30 fps", path)
    return 30.0


def _parse_clock(text: str) -> float | None:
    """'HH:MM:SS.fraction' as written in Matroska DURATION tags."""
    try:
        h, m, s = text.strip().split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return None


def _pyav_duration(container, stream) -> tuple[float | None, str | None]:
    """The video stream's length in seconds and where it was found."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base), "stream"
    seconds = _parse_clock((stream.metadata or {}).get("DURATION", ""))
    if seconds:
        return seconds, "tag"
    if container.duration:
        return container.duration / 1_000_000, "container"
    return None, None


def _pyav_frames(container, stream):
    """Decoded frames in order; a string (the reason) replaces the first undecodable one.

    After a demux or decode error the decoder is drained so frames it already holds,
    all earlier than the damage, are still delivered.
    """
    packets = container.demux(stream)
    reason = None
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except Exception as exc:
            reason = f"demuxing failed: {_ffmpeg_reason(exc)}"
            break
        if packet.is_corrupt:
            reason = "corrupt packet"
            break
        try:
            decoded = packet.decode()
        except Exception as exc:
            reason = f"decoding failed: {_ffmpeg_reason(exc)}"
            break
        yield from decoded
    if reason is not None:
        with contextlib.suppress(Exception):
            yield from stream.codec_context.decode(None)
        yield reason


# --------------------------------------------------------------------------- writing


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
            logger.debug("H.264 encoder %s is unusable here: %s", name, _ffmpeg_reason(exc))
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
    ) -> None:
        self.path = Path(path)
        if not (fps and math.isfinite(fps) and fps > 0):
            raise VideoWriteError(f"{self.path}: fps must be a positive number, got {fps!r}")
        if int(width) <= 0 or int(height) <= 0:
            raise VideoWriteError(f"{self.path}: invalid frame size {width}x{height}")
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.codec = self._resolve_codec(codec)
        self.audio_source = Path(audio_source) if audio_source is not None else None
        self.crf, self.preset = crf, preset
        self._rate = Fraction(self.fps).limit_denominator(1001)
        self._set_clock(_tick_rate(self._rate))
        self._t0: float | None = None
        self._pts: list[int] = []
        self._tmp: Path | None = None
        self._closed = False
        self._backend: _PyAVEncoder | _OpenCVEncoder | None = None
        self._audio: _AudioFeed | None = None
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
        self._ticks = ticks
        self._frame_ticks = round(ticks / self._rate)

    def _start(self) -> None:
        self._tmp = self.path.with_name(
            f".{self.path.stem}.{uuid.uuid4().hex[:8]}{self.path.suffix}"
        )
        odd = self.width % 2 or self.height % 2
        try:
            self._audio = self._make_audio_feed()
            if self.codec == "h264":
                name = available_h264_encoder()
                self._backend = _PyAVEncoder(self, name, self._h264_pix_fmt(name, odd))
            elif odd:
                # OpenCV silently rounds odd sizes down; FFmpeg's own mpeg4 encoder keeps them.
                if av is None:
                    raise VideoWriteError(
                        f"{self.path}: mp4v through OpenCV cannot keep the odd size "
                        f"{self.width}x{self.height} and PyAV is missing"
                    )
                self._set_clock(_tick_rate(self._rate, limit=65535))
                self._backend = _PyAVEncoder(self, "mpeg4", "yuv420p")
            else:
                self._backend = _OpenCVEncoder(self)
        except VideoWriteError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise VideoWriteError(
                f"{self.path}: cannot start the {self.codec} encoder ({_ffmpeg_reason(exc)})"
            ) from None

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

    def _make_audio_feed(self) -> _AudioFeed | None:
        if self._tone_hz is not None:
            return _ToneFeed(self._tone_hz) if av is not None else None
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
                f"{self.path}: cannot open audio source {self.audio_source} ({_ffmpeg_reason(exc)})"
            ) from None
        if not container.streams.audio:
            container.close()
            logger.info(
                "%s: %s has no audio stream; writing video only", self.path, self.audio_source
            )
            return None
        return _CopyFeed(container, self.audio_source)

    # -- writing

    def write(self, image_bgr: np.ndarray, time: float | None = None) -> None:
        """Append one frame; ``time`` (seconds) must increase from frame to frame."""
        if self._closed:
            raise VideoWriteError(f"{self.path}: write() after close()")
        image = self._check_image(image_bgr)
        if self._backend is None:
            self._start()
        if time is not None and self._t0 is None and not self._pts:
            self._t0 = float(time)
        if time is not None:
            pts = round((float(time) - (self._t0 or 0.0)) * self._ticks)
        else:
            pts = self._pts[-1] + self._frame_ticks if self._pts else 0
        if self._pts and pts <= self._pts[-1]:
            self.abort()
            raise VideoWriteError(
                f"{self.path}: frame {len(self._pts)} time {time} does not come after the "
                f"previous frame's {self._pts[-1] / self._ticks:.6f}s"
            )
        if not self._pts and self._audio is not None:
            self._audio.start(self._t0 or 0.0)
        self._pts.append(pts)
        try:
            self._backend.write(image, pts)
        except VideoWriteError:
            self.abort()
            raise
        except Exception as exc:
            self.abort()
            raise VideoWriteError(
                f"{self.path}: encoding frame {len(self._pts) - 1} failed ({_ffmpeg_reason(exc)})"
            ) from None

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
                f"{self.path}: frame {len(self._pts)} is {w}x{h}, expected {self.width}x{self.height}"
            )
        return np.ascontiguousarray(image)

    # -- finishing

    @property
    def frames_written(self) -> int:
        return len(self._pts)

    def close(self) -> WrittenVideo:
        """Finish encoding, check the re-opened file, then move it to ``path``."""
        if self._closed:
            raise VideoWriteError(f"{self.path}: close() called twice")
        if not self._pts:
            self.abort()
            raise VideoWriteError(f"{self.path}: no frames were written")
        self._closed = True
        end_pts = self._pts[-1] + self._frame_ticks
        try:
            has_audio = self._backend.finish(end_pts)
            if getattr(self._backend, "constant_rate", False):
                end_pts = len(self._pts) * self._frame_ticks  # the given times were dropped
            expected = end_pts / self._ticks
            written = _check_written(
                self._tmp, self.path, len(self._pts), expected, self, has_audio
            )
            os.replace(self._tmp, self.path)
        except VideoWriteError:
            self._discard()
            raise
        except Exception as exc:
            self._discard()
            raise VideoWriteError(
                f"{self.path}: finishing the video failed ({_ffmpeg_reason(exc)})"
            ) from None
        finally:
            if self._audio is not None:
                self._audio.close()
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

    def abort(self) -> None:
        """Stop without producing a file; whatever was written so far is deleted."""
        self._closed = True
        self._discard()

    def _discard(self) -> None:
        if self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.abort()
        if self._audio is not None:
            with contextlib.suppress(Exception):
                self._audio.close()
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


def _check_written(tmp, final, frames, duration, writer, has_audio) -> WrittenVideo:
    """Re-open the output and compare it with what was written."""
    try:
        got_frames, got_duration, size, got_audio = _inspect_output(tmp)
    except Exception as exc:
        raise VideoWriteError(f"{final}: output cannot be re-opened ({_one_line(exc)})") from None
    if size != (writer.width, writer.height):
        raise VideoWriteError(
            f"{final}: re-opened output is {size[0]}x{size[1]}, expected {writer.width}x{writer.height}"
        )
    if got_frames != frames:
        raise VideoWriteError(
            f"{final}: re-opened output has {got_frames} frames, expected {frames}"
        )
    tolerance = max(1.5 / writer.fps, 0.05)
    if got_duration is not None and abs(got_duration - duration) > tolerance:
        raise VideoWriteError(
            f"{final}: re-opened output lasts {got_duration:.3f}s, expected {duration:.3f}s"
        )
    if has_audio and not got_audio:
        raise VideoWriteError(f"{final}: re-opened output lost its audio stream")
    return WrittenVideo(
        path=Path(final),
        frames=got_frames,
        duration=got_duration if got_duration is not None else duration,
        codec=writer.codec,
        bytes=os.path.getsize(tmp),
        has_audio=got_audio,
    )


def _inspect_output(path: Path) -> tuple[int, float | None, tuple[int, int], bool]:
    """(frames, video duration, (width, height), has audio) of a finished file."""
    if av is None:
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise VideoReadError("OpenCV cannot open it")
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if count <= 0:
                count = 0
                while cap.grab():
                    count += 1
            size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            return count, (count / fps if fps > 0 else None), size, False
        finally:
            cap.release()
    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.video:
            raise VideoReadError("no video stream")
        stream = container.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        has_audio = bool(container.streams.audio)
        count = int(stream.frames or 0)
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        if count == 0 or duration is None:
            # No sample table (e.g. Matroska): count packets, which is one per frame.
            count, first, end = 0, None, None
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                count += 1
                t0 = packet.pts * packet.time_base
                first = t0 if first is None else min(first, t0)
                t1 = (packet.pts + (packet.duration or 0)) * packet.time_base
                end = t1 if end is None else max(end, t1)
            if duration is None and first is not None:
                duration = float(end - first)
        return count, duration, size, has_audio


def _mux_options(path: Path) -> dict[str, str]:
    if path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        return {"movflags": "+faststart"}  # index up front: playable while downloading
    return {}


class _PyAVEncoder:
    """Encode through PyAV into the writer's temporary file, audio interleaved."""

    def __init__(self, writer: VideoWriter, encoder: str, pix_fmt: str) -> None:
        self.writer = writer
        path = writer._tmp
        self.container = av.open(str(path), "w", options=_mux_options(path))
        self.tb = Fraction(1, writer._ticks)
        self.mov = "mov" in self.container.format.name or "mp4" in self.container.format.name
        kind = av.Codec(encoder, "w").canonical_name
        if kind not in self.container.supported_codecs:
            raise VideoWriteError(
                f"{writer.path}: a {path.suffix or 'suffix-less'} file cannot hold {kind} video"
            )
        stream = self.container.add_stream(encoder, rate=writer._rate)
        stream.width, stream.height = writer.width, writer.height
        stream.pix_fmt = pix_fmt
        stream.time_base = self.tb
        ctx = stream.codec_context
        ctx.time_base = self.tb
        # Frames are converted with the BT.601 matrix in limited range; say so in the stream.
        ctx.colorspace = 6  # AVCOL_SPC_SMPTE170M
        ctx.color_range = 1  # AVCOL_RANGE_MPEG
        if encoder in ("libx264", "libx265"):
            stream.options = {"crf": str(writer.crf), "preset": writer.preset}
        elif encoder == "mpeg4":
            ctx.qscale = True  # constant quantiser 4: visually clean, moderate size
            ctx.global_quality = 4 * 118  # FF_QP2LAMBDA
        self.stream = stream
        self.pix_fmt = pix_fmt
        self.audio = writer._audio
        if self.audio is not None:
            self.audio.add_stream(self.container)
        # Presentation duration of each submitted frame, known once the next one arrives;
        # packets wait in ``pending`` until theirs is known (and the last one until close).
        self.durations: dict[int, int] = {}
        self.pending: deque = deque()
        self.last_pts: int | None = None
        self.first_dts: int | None = None

    def write(self, image: np.ndarray, pts: int) -> None:
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame = frame.reformat(format=self.pix_fmt, dst_colorspace="ITU601", dst_color_range="MPEG")
        frame.pts = pts
        frame.time_base = self.tb
        if self.last_pts is not None:
            self.durations[self.last_pts] = pts - self.last_pts
        self.last_pts = pts
        self.pending.extend(self.stream.encode(frame))
        self._mux_ready(final=False)
        if self.audio is not None:
            self.audio.mux_until(self.container, pts / self.writer._ticks)

    def _mux_ready(self, final: bool, end_pts: int | None = None) -> None:
        while self.pending and (final or len(self.pending) > 1):
            packet = self.pending[0]
            duration = self.durations.get(packet.pts)
            if duration is None and not final:
                break
            self.pending.popleft()
            self.durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
            if self.first_dts is None:
                self.first_dts = packet.dts if packet.dts is not None else 0
            if final and not self.pending and self.mov and packet.dts is not None:
                # MP4 measures the track from the first to the last packet in decode order
                # (plus that one's duration); with reordered frames neither end is a shown
                # frame's time, so size the last duration to make the length come out right.
                packet.duration = max(1, end_pts - packet.dts + self.first_dts)
            self.container.mux(packet)

    def finish(self, end_pts: int) -> bool:
        self.durations[self.last_pts] = end_pts - self.last_pts
        self.pending.extend(self.stream.encode(None))
        self._mux_ready(final=True, end_pts=end_pts)
        has_audio = False
        if self.audio is not None:
            has_audio = self.audio.finish(self.container, end_pts / self.writer._ticks)
        self.container.close()
        return has_audio

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


class _OpenCVEncoder:
    """``cv2.VideoWriter`` with fourcc mp4v; constant frame rate, no audio.

    When audio or irregular frame times are asked for and PyAV exists, the result is
    remuxed once (no re-encoding) to add the audio and restore the timestamps.
    """

    def __init__(self, writer: VideoWriter) -> None:
        self.writer = writer
        self.remux_path: Path | None = None
        self.constant_rate = False  # True when the frames' own times could not be kept
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        self.cv = cv2.VideoWriter(
            str(writer._tmp), fourcc, writer.fps, (writer.width, writer.height)
        )
        if not self.cv.isOpened():
            raise VideoWriteError(f"{writer.path}: OpenCV cannot open an mp4v writer for this path")

    def write(self, image: np.ndarray, pts: int) -> None:
        self.cv.write(image)

    def finish(self, end_pts: int) -> bool:
        self.cv.release()
        w = self.writer
        regular = all(p == i * w._frame_ticks for i, p in enumerate(w._pts))
        if regular and w._audio is None:
            return False
        if av is None:
            logger.warning(
                "%s: PyAV is missing, so mp4v output keeps a constant frame rate and no audio",
                w.path,
            )
            self.constant_rate = True
            return False
        return self._remux(end_pts)

    def _remux(self, end_pts: int) -> bool:
        w = self.writer
        self.remux_path = w._tmp.with_name(f".{w.path.stem}.{uuid.uuid4().hex[:8]}{w.path.suffix}")
        tb = Fraction(1, w._ticks)
        has_audio = False
        with (
            av.open(str(w._tmp)) as src,
            av.open(str(self.remux_path), "w", options=_mux_options(w.path)) as out,
        ):
            vin = src.streams.video[0]
            vout = out.add_stream_from_template(vin)
            vout.time_base = tb
            if w._audio is not None:
                w._audio.add_stream(out)
            count, previous = 0, None
            for packet in src.demux(vin):
                if not packet.size or packet.pts is None:
                    continue
                # One packet per frame in display order (OpenCV's mp4v has no B-frames).
                if count >= len(w._pts) or (previous is not None and packet.pts <= previous):
                    raise VideoWriteError(f"{w.path}: OpenCV's packets do not match the frames")
                previous = packet.pts
                pts = w._pts[count]
                nxt = w._pts[count + 1] if count + 1 < len(w._pts) else end_pts
                count += 1
                packet.stream = vout
                packet.time_base = tb
                packet.pts = packet.dts = pts
                packet.duration = nxt - pts
                if w._audio is not None:
                    w._audio.mux_until(out, pts / w._ticks)
                out.mux(packet)
            if count != len(w._pts):
                raise VideoWriteError(f"{w.path}: OpenCV wrote {count} of {len(w._pts)} frames")
            if w._audio is not None:
                has_audio = w._audio.finish(out, end_pts / w._ticks)
        os.replace(self.remux_path, w._tmp)
        self.remux_path = None
        return has_audio

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.cv.release()


# --------------------------------------------------------------------------- audio


class _AudioFeed:
    """Audio muxed alongside the video, in output seconds (first video frame at 0)."""

    def add_stream(self, container) -> None:
        raise NotImplementedError

    def start(self, source_t0: float) -> None:
        """``source_t0``: where output time 0 lies on the reader's timeline."""
        self.source_t0 = source_t0

    def mux_until(self, container, out_time: float) -> None:
        raise NotImplementedError

    def finish(self, container, out_end: float) -> bool:
        """Mux what remains up to ``out_end``; True when any audio was written."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ToneFeed(_AudioFeed):
    """A generated sine tone encoded as AAC (for making test inputs)."""

    rate = 48000

    def __init__(self, hz: float) -> None:
        self.hz = hz
        self.samples = 0
        self.stream = None

    def add_stream(self, container) -> None:
        self.stream = container.add_stream("aac", rate=self.rate, layout="mono")
        self.stream.time_base = Fraction(1, self.rate)

    def _emit(self, container, upto: int) -> None:
        while self.samples < upto:
            n = min(1024, upto - self.samples)
            t = (self.samples + np.arange(n)) / self.rate
            data = (0.2 * np.sin(2 * np.pi * self.hz * t)).astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self.samples
            frame.time_base = Fraction(1, self.rate)
            self.samples += n
            for packet in self.stream.encode(frame):
                container.mux(packet)

    def mux_until(self, container, out_time: float) -> None:
        self._emit(container, int(out_time * self.rate))

    def finish(self, container, out_end: float) -> bool:
        self._emit(container, round(out_end * self.rate))
        for packet in self.stream.encode(None):
            container.mux(packet)
        return self.samples > 0


class _CopyFeed(_AudioFeed):
    """The first audio stream of another file, cut to the written video's time range.

    Packets are copied when the output container takes the codec (cut to whole packets),
    otherwise decoded, cut to the sample and re-encoded to AAC.
    """

    def __init__(self, container, path: Path) -> None:
        self.src = container
        self.path = path
        self.ain = container.streams.audio[0]
        self.ain.thread_type = "AUTO"
        # Reader times count from the first video frame; map them onto this file's clock.
        origin = Fraction(0)
        if container.streams.video:
            v = container.streams.video[0]
            if v.start_time is not None and v.time_base:
                origin = v.start_time * v.time_base
        elif self.ain.start_time is not None and self.ain.time_base:
            origin = self.ain.start_time * self.ain.time_base
        self.origin = float(origin)
        self.a0 = self.origin
        self.packets = None
        self.lookahead = None
        self.copy = False
        self.negative_ok = False
        self.stream = None
        self.written = 0
        # re-encoding state: source-clock time of the resampler's next output sample
        self.resampler = None
        self.rate = 0
        self.resampled_time: float | None = None
        self.out_samples = 0

    def add_stream(self, container) -> None:
        name = self.ain.codec_context.name
        fmt = container.format.name
        if "mp4" in fmt or "mov" in fmt:
            self.copy = name in _MP4_AUDIO_COPY
        elif "matroska" in fmt:
            self.copy = name in container.supported_codecs
        else:
            self.copy = name in {"aac", "mp3", "ac3"} and name in container.supported_codecs
        self.negative_ok = bool(container.format.flags & _TS_NEGATIVE)
        if self.copy:
            self.stream = container.add_stream_from_template(self.ain)
            return
        rate = self.ain.codec_context.sample_rate
        self.rate = rate if rate in (av.Codec("aac", "w").audio_rates or ()) else 48000
        # Layouts without a named channel order ("2 channels") do not open the encoder.
        layout = "mono" if self.ain.codec_context.channels == 1 else "stereo"
        self.stream = container.add_stream("aac", rate=self.rate, layout=layout)
        self.stream.time_base = Fraction(1, self.rate)
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
        logger.info("%s: re-encoding %s audio to AAC for this container", self.path, name)

    def start(self, source_t0: float) -> None:
        super().start(source_t0)
        self.a0 = source_t0 + self.origin  # output time 0 on the audio file's clock
        self.packets = self.src.demux(self.ain)

    def _next_packet(self):
        if self.lookahead is not None:
            packet, self.lookahead = self.lookahead, None
            return packet
        for packet in self.packets:
            if packet.size and packet.pts is not None:
                return packet
        return None

    def mux_until(self, container, out_time: float, final: bool = False) -> None:
        limit = self.a0 + out_time
        while True:
            packet = self._next_packet()
            if packet is None:
                return
            tb = packet.time_base
            if float(packet.pts * tb) >= limit:
                if not final:
                    self.lookahead = packet
                return
            end = float((packet.pts + (packet.duration or 0)) * tb)
            if packet.duration and end <= self.a0:
                continue  # entirely before the first frame
            if self.copy:
                self._copy(container, packet)
            else:
                self._transcode(container, packet, limit if final else None)

    def _copy(self, container, packet) -> None:
        shift = round(self.a0 / packet.time_base)
        if packet.pts < shift and not self.negative_ok:
            return  # a timestamp below zero would shift every stream of this container
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = self.stream
        container.mux(packet)
        self.written += 1

    def _transcode(self, container, packet, limit: float | None) -> None:
        for frame in packet.decode():
            if self.resampled_time is None:
                self.resampled_time = float(frame.pts * frame.time_base) if frame.pts else 0.0
            frame.pts = None
            for out in self.resampler.resample(frame):
                self._cut_and_encode(container, out, limit)

    def _cut_and_encode(self, container, frame, limit: float | None) -> None:
        start = self.resampled_time
        n = frame.samples
        self.resampled_time += n / self.rate
        lo = max(0, math.ceil((self.a0 - start) * self.rate - 1e-6))
        hi = n if limit is None else min(n, math.floor((limit - start) * self.rate + 1e-6))
        if hi <= lo:
            return
        if lo or hi < n:
            data = np.ascontiguousarray(frame.to_ndarray()[:, lo:hi])
            cut = av.AudioFrame.from_ndarray(data, format="fltp", layout=frame.layout.name)
            cut.sample_rate = self.rate
            frame = cut
        self._encode(container, frame)

    def _encode(self, container, frame) -> None:
        if frame is not None:
            frame.pts = self.out_samples
            frame.time_base = Fraction(1, self.rate)
            self.out_samples += frame.samples
        for packet in self.stream.encode(frame):
            container.mux(packet)
            self.written += 1

    def finish(self, container, out_end: float) -> bool:
        if self.packets is not None:
            self.mux_until(container, out_end, final=True)
        if not self.copy and self.resampler is not None:
            if self.resampled_time is not None:
                for frame in self.resampler.resample(None):
                    self._cut_and_encode(container, frame, self.a0 + out_end)
            self._encode(container, None)
        return self.written > 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.src.close()


# --------------------------------------------------------------------------- test inputs


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
