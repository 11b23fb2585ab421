"""Checking a finished video by re-opening it: frames, size, duration and audio must be what
was written, before the file may replace its final path."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from instseg.io.media import VideoReadError, VideoWriteError, WrittenVideo, one_line

try:
    import av
except ImportError:  # the OpenCV path still works without PyAV
    av = None


def check_written(tmp, final, frames, duration, writer, has_audio) -> WrittenVideo:
    """Re-open the output and compare it with what was written."""
    try:
        got_frames, got_duration, size, got_audio = _inspect_output(tmp)
    except Exception as exc:
        raise VideoWriteError(f"{final}: output cannot be re-opened ({one_line(exc)})") from None
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
