"""Audio muxed beside an encoded video: the source's track copied (or re-encoded to AAC
where MP4 cannot take it), or a generated tone for test inputs.
"""

from __future__ import annotations

import contextlib
import logging
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

try:
    import av
except ImportError:  # the OpenCV paths still work without PyAV
    av = None

logger = logging.getLogger(__name__)

# Audio codecs the MP4/MOV muxers take as-is; anything else is re-encoded to AAC.
_MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})
# AVFMT_TS_NEGATIVE: the muxer stores timestamps below zero (MP4 through an edit list).
_TS_NEGATIVE = 0x40000


# --------------------------------------------------------------------------- audio


class AudioFeed:
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


class ToneFeed(AudioFeed):
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


class CopyFeed(AudioFeed):
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
