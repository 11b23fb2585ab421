"""Video reading/writing against real encoded files (small frames, short clips)."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest

from instseg.io.clips import write_test_clip
from instseg.io.media import VideoReadError, VideoWriteError
from instseg.io.video_reader import open_video
from instseg.io.video_writer import VideoWriter, available_h264_encoder

needs_h264 = pytest.mark.skipif(available_h264_encoder() is None, reason="no H.264 encoder")
CODECS = [pytest.param("h264", marks=needs_h264), "mp4v"]


def make_frames(n: int, width: int = 160, height: int = 120) -> list[np.ndarray]:
    """Smooth gradients plus a moving block: compresses like real footage, tells frames apart."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        image = np.stack(
            [(xx * 255 // width + 3 * i) % 256, yy * 255 // height, (xx + yy + 5 * i) % 256 // 2],
            axis=-1,
        ).astype(np.uint8)
        x = (i * 5) % max(1, width - 24)
        image[8:32, x : x + 24] = (250, 250, 250)
        frames.append(image)
    return frames


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def audio_duration(path) -> float:
    """Seconds covered by the audio packets (first start to last end)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size and p.pts is not None]
        start = min(p.pts for p in packets) * stream.time_base
        end = max(p.pts + p.duration for p in packets) * stream.time_base
        return float(end - start)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip(tmp_path, codec):
    frames = make_frames(24)
    written = write_test_clip(tmp_path / "clip.mp4", frames, fps=24, codec=codec)
    assert written.frames == 24
    assert written.codec == codec
    assert written.duration == pytest.approx(1.0, abs=0.01)
    assert written.bytes == (tmp_path / "clip.mp4").stat().st_size
    assert leftovers(tmp_path) == ["clip.mp4"]

    with open_video(tmp_path / "clip.mp4") as source:
        assert (source.width, source.height) == (160, 120)
        assert source.fps == pytest.approx(24)
        assert source.frame_count == 24
        assert source.duration == pytest.approx(1.0, abs=0.01)
        assert not source.has_audio
        decoded = list(source)
        assert source.first_bad_frame is None
    assert [f.index for f in decoded] == list(range(24))
    assert [f.time for f in decoded] == pytest.approx([i / 24 for i in range(24)], abs=1e-3)
    for frame, original in zip(decoded, frames, strict=True):
        assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
        assert mean_abs_diff(frame.image, original) < 4


@needs_h264
def test_h264_output_is_compact(tmp_path):
    """CRF encoding keeps files small: well under the constant-quality mp4v fallback."""
    frames = make_frames(30, 320, 240)
    h264 = write_test_clip(tmp_path / "a.mp4", frames, fps=30, codec="h264")
    mp4v = write_test_clip(tmp_path / "b.mp4", frames, fps=30, codec="mp4v")
    assert h264.bytes < mp4v.bytes
    assert h264.bytes / (30 * 320 * 240) < 0.1  # bytes per pixel per frame


@pytest.mark.parametrize("codec", CODECS)
def test_odd_size_round_trip(tmp_path, codec):
    frames = make_frames(3, 641, 359)
    written = write_test_clip(tmp_path / "odd.mp4", frames, fps=25, codec=codec)
    assert written.frames == 3
    with open_video(written.path) as source:
        assert (source.width, source.height) == (641, 359)
        decoded = list(source)
    assert len(decoded) == 3
    for frame, original in zip(decoded, frames, strict=True):
        assert frame.image.shape == (359, 641, 3)
        assert mean_abs_diff(frame.image, original) < 5


def test_auto_codec_picks_h264_when_available(tmp_path):
    written = write_test_clip(tmp_path / "auto.mp4", make_frames(2, 96, 64), fps=10, codec="auto")
    assert written.codec == ("h264" if available_h264_encoder() else "mp4v")


def test_opencv_backend_reads_the_same_frames(tmp_path):
    frames = make_frames(12, 96, 64)
    path = write_test_clip(tmp_path / "clip.mp4", frames, fps=12, codec="auto").path
    with open_video(path, backend="opencv") as source:
        assert source.backend == "opencv"
        assert (source.width, source.height, source.frame_count) == (96, 64, 12)
        decoded = list(source.frames(stride=4))
    assert [f.index for f in decoded] == [0, 4, 8]
    assert [f.time for f in decoded] == pytest.approx([0, 1 / 3, 2 / 3], abs=1e-3)
    assert mean_abs_diff(decoded[1].image, frames[4]) < 4


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize("codec", CODECS)
def test_audio_is_carried_over(tmp_path, codec):
    source_path = tmp_path / "with_audio.mp4"
    made = write_test_clip(source_path, make_frames(20, 96, 64), fps=20, audio=True, codec=codec)
    assert made.has_audio
    assert audio_duration(source_path) == pytest.approx(1.0, abs=0.05)

    out = tmp_path / "out.mp4"
    with (
        open_video(source_path) as source,
        VideoWriter(out, source.fps, source.width, source.height, codec, source_path) as writer,
    ):
        assert source.has_audio
        for frame in source:
            writer.write(frame.image, frame.time)
    assert writer.result.has_audio
    with open_video(out) as reopened:
        assert reopened.has_audio and reopened.frame_count == 20
    assert audio_duration(out) == pytest.approx(1.0, abs=0.05)


@needs_h264
def test_audio_is_cut_to_the_written_range(tmp_path):
    source_path = tmp_path / "with_audio.mp4"
    write_test_clip(source_path, make_frames(30, 96, 64), fps=30, audio=True)
    out = tmp_path / "part.mp4"
    with open_video(source_path) as source:
        writer = VideoWriter(out, source.fps, 96, 64, audio_source=source_path)
        with writer:
            for frame in source.frames(start=0.3, end=0.8):
                writer.write(frame.image, frame.time)
    assert writer.result.frames == 15
    assert writer.result.duration == pytest.approx(0.5, abs=0.01)
    assert audio_duration(out) == pytest.approx(0.5, abs=0.05)


@needs_h264
def test_audio_the_container_cannot_take_is_reencoded_to_aac(tmp_path):
    """PCM audio (fine in Matroska) has to become AAC in MP4."""
    source_path = tmp_path / "pcm.mkv"
    with av.open(str(source_path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i, image in enumerate(make_frames(10, 96, 64)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(video.encode(frame))
        tone = (3000 * np.sin(np.arange(16000) / 8)).astype(np.int16)
        for start in range(0, 16000, 1600):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1600], layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
            container.mux(audio.encode(chunk))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))

    out = tmp_path / "out.mp4"
    with (
        open_video(source_path) as source,
        VideoWriter(out, 10, 96, 64, audio_source=source_path) as w,
    ):
        for frame in source:
            w.write(frame.image, frame.time)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
    assert audio_duration(out) == pytest.approx(1.0, abs=0.08)


def test_audio_source_without_audio_writes_video_only(tmp_path):
    silent = write_test_clip(tmp_path / "silent.mp4", make_frames(3, 96, 64), fps=10, codec="auto")
    with VideoWriter(tmp_path / "out.mp4", 10, 96, 64, "auto", silent.path) as writer:
        for image in make_frames(3, 96, 64):
            writer.write(image)
    assert not writer.result.has_audio


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["text", "empty", "missing", "directory"])
def test_not_a_video_raises_one_line_error(tmp_path, kind):
    path = tmp_path / "fake.mp4"
    if kind == "text":
        path.write_text("this is not a video\n" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(VideoReadError) as info:
        open_video(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    expected = {"text": "not a readable video", "empty": "empty", "missing": "no such file"}
    assert expected.get(kind, "directory") in message


def test_truncated_matroska_yields_the_good_frames(tmp_path, caplog):
    """Matroska streams: cut short it still opens, and decoding stops where the data ends.

    (An MP4 with its index at the end does not open at all once cut; see the next test.)
    """
    path = tmp_path / "clip.mkv"
    write_test_clip(path, make_frames(40, 96, 64), fps=20, codec="auto")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])

    with (
        caplog.at_level(logging.WARNING, logger="instseg.io.video_reader"),
        open_video(path) as source,
    ):
        decoded = list(source)
    assert 0 < len(decoded) < 40
    assert [f.index for f in decoded] == list(range(len(decoded)))
    assert source.first_bad_frame == len(decoded)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert f"frame {len(decoded)}" in warnings[0].getMessage()


@needs_h264
def test_truncated_faststart_mp4_yields_the_good_frames(tmp_path, caplog):
    """The writer puts the MP4 index first, so a cut copy still opens and decodes partly."""
    path = tmp_path / "clip.mp4"
    write_test_clip(path, make_frames(40, 96, 64), fps=20)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with (
        caplog.at_level(logging.WARNING, logger="instseg.io.video_reader"),
        open_video(path) as source,
    ):
        assert source.frame_count == 40
        decoded = list(source)
    assert 0 < len(decoded) < 40
    assert source.first_bad_frame == len(decoded)
    assert f"frame {len(decoded)}" in caplog.text


def test_truncated_mp4_with_index_at_end_is_unreadable(tmp_path):
    path = tmp_path / "clip.mp4"
    write_test_clip(path, make_frames(20, 96, 64), fps=20, codec="mp4v")  # OpenCV: index last
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoReadError, match="^" + str(path)):
        open_video(path)


# --------------------------------------------------------------------------- timing


VFR_TIMES = [0.0, 0.03, 0.1, 0.12, 0.3, 0.31, 0.5, 0.72, 0.8, 1.0, 1.05, 1.3]


@pytest.mark.parametrize("codec", CODECS)
def test_variable_frame_rate_is_preserved(tmp_path, codec):
    first, second = tmp_path / "vfr.mp4", tmp_path / "again.mp4"
    with VideoWriter(first, 25, 96, 64, codec=codec) as writer:
        for time, image in zip(VFR_TIMES, make_frames(len(VFR_TIMES), 96, 64), strict=True):
            writer.write(image, time)
    assert writer.result.duration == pytest.approx(1.34, abs=1e-3)  # last frame lasts 1/fps

    with open_video(first) as source:
        decoded = list(source)
        assert [f.time for f in decoded] == pytest.approx(VFR_TIMES, abs=1e-3)
        with VideoWriter(second, source.fps, 96, 64, codec=codec) as rewriter:
            for frame in decoded:
                rewriter.write(frame.image, frame.time)
    with open_video(second) as source:
        assert [f.time for f in source] == pytest.approx(VFR_TIMES, abs=1e-3)


def test_frame_selection(tmp_path):
    path = write_test_clip(
        tmp_path / "clip.mp4", make_frames(30, 96, 64), fps=30, codec="auto"
    ).path
    with open_video(path) as source:
        everything = list(source)
        window = list(source.frames(start=0.2, end=0.6, stride=3))
        limited = list(source.frames(start=0.2, stride=3, max_frames=2))
        tail = list(source.frames(start=0.9))
    assert len(everything) == 30
    assert [f.index for f in window] == [6, 9, 12, 15]
    assert [f.time for f in window] == pytest.approx([0.2, 0.3, 0.4, 0.5], abs=1e-6)
    assert [f.index for f in limited] == [6, 9]
    assert [f.index for f in tail] == [27, 28, 29]
    for frame in window:
        np.testing.assert_array_equal(frame.image, everything[frame.index].image)
    with pytest.raises(ValueError):
        source.frames(stride=0)


# --------------------------------------------------------------------------- write failures


@pytest.mark.parametrize("codec", CODECS)
def test_failed_write_leaves_no_file(tmp_path, codec):
    final = tmp_path / "out.mp4"
    with (
        pytest.raises(VideoWriteError, match="expected 96x64"),
        VideoWriter(final, 10, 96, 64, codec) as w,
    ):
        for image in make_frames(3, 96, 64):
            w.write(image)
        w.write(np.zeros((64, 80, 3), np.uint8))
    assert leftovers(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    final = tmp_path / "out.mp4"
    final.write_bytes(b"previous result")
    writer = VideoWriter(final, 10, 96, 64, codec="auto")
    writer.write(make_frames(1, 96, 64)[0], time=1.0)
    with pytest.raises(VideoWriteError, match="does not come after"):
        writer.write(make_frames(1, 96, 64)[0], time=0.5)
    assert final.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == ["out.mp4"]


def test_writer_rejects_bad_setup(tmp_path):
    with pytest.raises(VideoWriteError, match="no frames"):
        VideoWriter(tmp_path / "empty.mp4", 10, 96, 64, codec="auto").close()
    with pytest.raises(VideoWriteError, match="does not exist"):
        VideoWriter(tmp_path / "missing" / "out.mp4", 10, 96, 64)
    with pytest.raises(VideoWriteError, match="unknown codec"):
        VideoWriter(tmp_path / "out.mp4", 10, 96, 64, codec="xvid")
    assert leftovers(tmp_path) == []


@needs_h264
def test_encoder_setup_failure_leaves_no_file(tmp_path):
    """WebM cannot hold H.264: the error names the problem and nothing is left behind."""
    writer = VideoWriter(tmp_path / "out.webm", 10, 96, 64, codec="h264")
    with pytest.raises(VideoWriteError, match="cannot hold h264"):
        writer.write(make_frames(1, 96, 64)[0])
    with pytest.raises(VideoWriteError):
        writer.write(make_frames(1, 96, 64)[0])
    assert leftovers(tmp_path) == []
