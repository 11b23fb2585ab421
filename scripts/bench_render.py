"""Time the "visualizer" and "fast" renderers on the same synthetic frames.

Frames are interleaved (Visualizer, then Fast, per frame) so both see the same machine load.
Prints ms/frame for each and the speed-up; the last line is a JSON object with the figures.

    .venv/bin/python scripts/bench_render.py --frames 30 --size 640x480 --instances 10
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances

from instseg.viz.build import build_renderer

CLASSES = ["person", "car", "dog", "bicycle", "bird"]


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from exc
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError("size must be at least 16x16")
    return width, height


def synthetic_sequence(frames: int, width: int, height: int, num: int, seed: int):
    """Yield (BGR uint8 HxWx3 frame, Instances) with ellipse masks drifting a few px per frame."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(40, 200, width, dtype=np.float32)[None, :, None]
    background = np.clip(gradient + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    short = min(width, height)
    sizes = rng.uniform(0.08, 0.35, (num, 2)) * short
    starts = rng.uniform(0, 1, (num, 2)) * ([width, height] - sizes)
    velocity = rng.uniform(-3, 3, (num, 2))
    classes = torch.as_tensor(rng.integers(0, len(CLASSES), num), dtype=torch.int64)
    scores = torch.as_tensor(np.sort(rng.uniform(0.5, 1.0, num))[::-1].copy(), dtype=torch.float32)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    for t in range(frames):
        xy0 = np.clip(starts + velocity * t, 0, [width, height] - sizes)
        boxes = np.concatenate([xy0, xy0 + sizes], axis=1)
        masks = np.empty((num, height, width), dtype=bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            masks[i] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        inst = Instances(
            (height, width),
            pred_boxes=Boxes(torch.as_tensor(boxes, dtype=torch.float32)),
            scores=scores,
            pred_classes=classes,
            pred_masks=torch.from_numpy(masks),
        )
        yield background, inst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="timed frames (default 30)")
    parser.add_argument("--size", type=parse_size, default=(640, 480), help="WxH (640x480)")
    parser.add_argument("--instances", type=int, default=10, help="instances per frame (10)")
    parser.add_argument("--video", action="store_true", help="video mode (tracked colours)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.frames < 1 or args.instances < 0:
        parser.error("--frames must be >= 1 and --instances >= 0")

    width, height = args.size
    metadata = Metadata(name="bench_render", thing_classes=CLASSES)
    renderers = {
        name: build_renderer(name, metadata, video=args.video) for name in ("visualizer", "fast")
    }
    frames = list(synthetic_sequence(args.frames + 1, width, height, args.instances, args.seed))

    # One untimed warm-up frame each (font caches, matplotlib imports).
    for renderer in renderers.values():
        renderer.draw(*frames[0])
        renderer.reset()
    np.random.seed(args.seed)

    times: dict[str, list[float]] = {name: [] for name in renderers}
    diffs = []
    for image, inst in frames[1:]:
        outputs = {}
        # New video tracks draw colours from NumPy's global RNG; give both the same state.
        rng_state = np.random.get_state()
        for name, renderer in renderers.items():
            np.random.set_state(rng_state)
            start = time.perf_counter()
            outputs[name] = renderer.draw(image, inst)
            times[name].append((time.perf_counter() - start) * 1000.0)
        diffs.append(float(np.abs(outputs["visualizer"].astype(np.int16) - outputs["fast"]).mean()))

    ms = {name: statistics.fmean(v) for name, v in times.items()}
    median = {name: statistics.median(v) for name, v in times.items()}
    speedup = ms["visualizer"] / ms["fast"]
    print(
        f"{args.frames} frames {width}x{height}, {args.instances} instances, "
        f"{'video' if args.video else 'image'} mode, torch threads {torch.get_num_threads()}"
    )
    print(f"{'renderer':<11} {'mean ms/frame':>14} {'median':>9}")
    for name in renderers:
        print(f"{name:<11} {ms[name]:>14.2f} {median[name]:>9.2f}")
    print(f"speed-up (visualizer / fast, mean): {speedup:.1f}x")
    print(f"mean |visualizer - fast| per pixel channel: {statistics.fmean(diffs):.2f}")
    print(
        json.dumps(
            {
                "frames": args.frames,
                "width": width,
                "height": height,
                "instances": args.instances,
                "video": args.video,
                "visualizer_ms_per_frame": round(ms["visualizer"], 2),
                "fast_ms_per_frame": round(ms["fast"], 2),
                "visualizer_median_ms": round(median["visualizer"], 2),
                "fast_median_ms": round(median["fast"], 2),
                "speedup": round(speedup, 1),
                "mean_abs_pixel_diff": round(statistics.fmean(diffs), 2),
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
