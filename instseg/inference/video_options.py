"""The video settings of a config (``INSTSEG.VIDEO.*``, ``INSTSEG.PREDICT.*``), read and checked
once, and the frames they select."""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectron2.config import CfgNode

from instseg.config import ConfigError
from instseg.io.video_reader import VideoSource
from instseg.viz.build import RENDERERS

CODECS = ("auto", "h264", "mp4v")


def resolve_renderer_name(name: str) -> str:
    """``INSTSEG.PREDICT.RENDERER`` to a renderer name: "auto" is "fast".

    scripts/bench_video.py and scripts/bench_predict.py measure why: on a CPU the Visualizer
    renderer takes about a third of a bf16 R50-FPN forward pass per image (and holds the GIL
    while it does), the fast one a few milliseconds.
    """
    key = str(name).strip().lower()
    return "fast" if key == "auto" else key


@dataclass(frozen=True)
class VideoOptions:
    """The video settings of a config (``INSTSEG.VIDEO.*`` and ``INSTSEG.PREDICT.*``), checked."""

    start: float | None = None  # seconds; None: from the first frame
    end: float | None = None  # seconds, exclusive; None: to the last frame
    stride: int = 1
    max_frames: int | None = None
    codec: str = "auto"
    batch_size: int = 1
    queue_size: int = 8
    render: bool = True
    renderer: str = "fast"
    draw_score: float = 0.5

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> VideoOptions:
        """Read and check the options; a bad value is a ConfigError naming its key."""
        return _options_from_cfg(cls, cfg)


def _options_from_cfg(cls: type[VideoOptions], cfg: CfgNode) -> VideoOptions:
    video, predict = cfg.INSTSEG.VIDEO, cfg.INSTSEG.PREDICT
    start = float(video.START) if float(video.START) >= 0 else None
    end = float(video.END) if float(video.END) >= 0 else None
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"INSTSEG.VIDEO: END ({end}s) must come after START ({start}s)")
    stride = int(video.FRAME_STRIDE)
    if stride < 1:
        raise ConfigError(f"INSTSEG.VIDEO.FRAME_STRIDE must be >= 1, got {stride}")
    max_frames = int(video.MAX_FRAMES)
    if max_frames < 0:
        raise ConfigError(f"INSTSEG.VIDEO.MAX_FRAMES must be >= 0 (0: no limit), got {max_frames}")
    codec = str(video.CODEC).strip().lower()
    if codec not in CODECS:
        raise ConfigError(f"INSTSEG.VIDEO.CODEC must be one of {', '.join(CODECS)}, got {codec!r}")
    batch_size, queue_size = int(predict.BATCH_SIZE), int(predict.QUEUE_SIZE)
    if batch_size < 1 or queue_size < 1:
        raise ConfigError("INSTSEG.PREDICT: BATCH_SIZE and QUEUE_SIZE must be >= 1")
    renderer = resolve_renderer_name(predict.RENDERER)
    if renderer not in RENDERERS:
        raise ConfigError(
            f"INSTSEG.PREDICT.RENDERER must be auto or one of {', '.join(sorted(RENDERERS))}, "
            f"got {predict.RENDERER!r}"
        )
    return cls(
        start=start,
        end=end,
        stride=stride,
        max_frames=max_frames or None,
        codec=codec,
        batch_size=batch_size,
        queue_size=queue_size,
        render=bool(predict.RENDER),
        renderer=renderer,
        draw_score=float(predict.DRAW_SCORE),
    )


def expected_frames(source: VideoSource, options: VideoOptions) -> int | None:
    """Frames the selection should give, for the progress bar (None when unknown)."""
    if not source.frame_count:
        return None
    fps = source.fps
    first = 0 if options.start is None else min(source.frame_count, math.ceil(options.start * fps))
    last = source.frame_count
    if options.end is not None:
        last = min(last, math.ceil(options.end * fps))
    count = math.ceil(max(0, last - first) / options.stride)
    return min(count, options.max_frames) if options.max_frames else count
