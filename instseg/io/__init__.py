"""Files in and out: atomic writes, streamed JSON/CSV writers, images, videos and their audio.

The lowest layer: it imports nothing from the rest of instseg but ``instseg.errors``.
"""

from instseg.io.atomic import (
    AtomicFile,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from instseg.io.clips import write_test_clip
from instseg.io.images import ImageReadError, atomic_write_image, instance_id_image, read_image
from instseg.io.media import VideoError, VideoFrame, VideoReadError, VideoWriteError, WrittenVideo
from instseg.io.video_reader import VideoSource, open_video
from instseg.io.video_writer import VideoWriter, available_h264_encoder
from instseg.io.writers import (
    CsvWriter,
    JsonLinesWriter,
    JsonListWriter,
    iter_json_lines,
    iter_json_list,
)

__all__ = [
    "AtomicFile",
    "CsvWriter",
    "ImageReadError",
    "JsonLinesWriter",
    "JsonListWriter",
    "VideoError",
    "VideoFrame",
    "VideoReadError",
    "VideoSource",
    "VideoWriteError",
    "VideoWriter",
    "WrittenVideo",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_image",
    "atomic_write_json",
    "atomic_write_text",
    "available_h264_encoder",
    "instance_id_image",
    "iter_json_lines",
    "iter_json_list",
    "open_video",
    "read_image",
    "write_test_clip",
]
