"""The two encoders behind :class:`~instseg.io.video_writer.VideoWriter`: PyAV (H.264, audio
muxed alongside) and OpenCV's mp4v, remuxed through PyAV when audio must be added.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from instseg.io.atomic import temp_path
from instseg.io.audio import AudioFeed
from instseg.io.media import VideoWriteError

try:
    import av
except ImportError:  # the OpenCV paths still work without PyAV
    av = None

logger = logging.getLogger(__name__)


class EncodedVideo(Protocol):
    """What an encoder reads from the :class:`~instseg.io.video_writer.VideoWriter` it serves:
    the final and temporary paths, the frame size, the encoder settings, the clock (``ticks``
    per second, ``rate`` frames per second) with the frame times so far, and the audio feed."""

    path: Path
    temp_file: Path | None
    width: int
    height: int
    fps: float
    crf: int
    preset: str
    rate: Fraction
    ticks: int
    frame_ticks: int
    pts: list[int]
    audio: AudioFeed | None


def _mux_options(path: Path) -> dict[str, str]:
    if path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        return {"movflags": "+faststart"}  # index up front: playable while downloading
    return {}


class PyAVEncoder:
    """Encode through PyAV into the writer's temporary file, audio interleaved."""

    def __init__(self, writer: EncodedVideo, encoder: str, pix_fmt: str) -> None:
        self.writer = writer
        path = writer.temp_file
        self.container = av.open(str(path), "w", options=_mux_options(path))
        self.tb = Fraction(1, writer.ticks)
        self.mov = "mov" in self.container.format.name or "mp4" in self.container.format.name
        kind = av.Codec(encoder, "w").canonical_name
        if kind not in self.container.supported_codecs:
            raise VideoWriteError(
                f"{writer.path}: a {path.suffix or 'suffix-less'} file cannot hold {kind} video"
            )
        stream = self.container.add_stream(encoder, rate=writer.rate)
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
        self.audio = writer.audio
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
            self.audio.mux_until(self.container, pts / self.writer.ticks)

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
            has_audio = self.audio.finish(self.container, end_pts / self.writer.ticks)
        self.container.close()
        return has_audio

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


class OpenCVEncoder:
    """``cv2.VideoWriter`` with fourcc mp4v; constant frame rate, no audio.

    When audio or irregular frame times are asked for and PyAV exists, the result is
    remuxed once (no re-encoding) to add the audio and restore the timestamps.
    """

    def __init__(self, writer: EncodedVideo) -> None:
        self.writer = writer
        self.remux_path: Path | None = None
        self.constant_rate = False  # True when the frames' own times could not be kept
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        self.cv = cv2.VideoWriter(
            str(writer.temp_file), fourcc, writer.fps, (writer.width, writer.height)
        )
        if not self.cv.isOpened():
            raise VideoWriteError(f"{writer.path}: OpenCV cannot open an mp4v writer for this path")

    def write(self, image: np.ndarray, pts: int) -> None:
        self.cv.write(image)

    def finish(self, end_pts: int) -> bool:
        self.cv.release()
        w = self.writer
        regular = all(p == i * w.frame_ticks for i, p in enumerate(w.pts))
        if regular and w.audio is None:
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
        self.remux_path = temp_path(w.path)
        tb = Fraction(1, w.ticks)
        has_audio = False
        with (
            av.open(str(w.temp_file)) as src,
            av.open(str(self.remux_path), "w", options=_mux_options(w.path)) as out,
        ):
            vin = src.streams.video[0]
            vout = out.add_stream_from_template(vin)
            vout.time_base = tb
            if w.audio is not None:
                w.audio.add_stream(out)
            count, previous = 0, None
            for packet in src.demux(vin):
                if not packet.size or packet.pts is None:
                    continue
                # One packet per frame in display order (OpenCV's mp4v has no B-frames).
                if count >= len(w.pts) or (previous is not None and packet.pts <= previous):
                    raise VideoWriteError(f"{w.path}: OpenCV's packets do not match the frames")
                previous = packet.pts
                pts = w.pts[count]
                nxt = w.pts[count + 1] if count + 1 < len(w.pts) else end_pts
                count += 1
                packet.stream = vout
                packet.time_base = tb
                packet.pts = packet.dts = pts
                packet.duration = nxt - pts
                if w.audio is not None:
                    w.audio.mux_until(out, pts / w.ticks)
                out.mux(packet)
            if count != len(w.pts):
                raise VideoWriteError(f"{w.path}: OpenCV wrote {count} of {len(w.pts)} frames")
            if w.audio is not None:
                has_audio = w.audio.finish(out, end_pts / w.ticks)
        os.replace(self.remux_path, w.temp_file)
        self.remux_path = None
        return has_audio

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.cv.release()
