"""Reading videos: PyAV (FFmpeg) with threaded decoding, falling back to ``cv2.VideoCapture``
when PyAV is missing or cannot open a file. Frames carry their presentation time, so
variable-frame-rate footage keeps its real timing end to end.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2

from instseg.io.media import VideoFrame, VideoReadError, ffmpeg_reason

try:
    import av
except ImportError:  # the OpenCV paths still work without PyAV
    av = None

logger = logging.getLogger(__name__)


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
            raise VideoReadError(f"not a readable video ({ffmpeg_reason(exc)})") from None
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
                raise VideoReadError(f"no decodable frame ({ffmpeg_reason(exc)})") from None
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
            reason = f"demuxing failed: {ffmpeg_reason(exc)}"
            break
        if packet.is_corrupt:
            reason = "corrupt packet"
            break
        try:
            decoded = packet.decode()
        except Exception as exc:
            reason = f"decoding failed: {ffmpeg_reason(exc)}"
            break
        yield from decoded
    if reason is not None:
        with contextlib.suppress(Exception):
            yield from stream.codec_context.decode(None)
        yield reason
