"""Time annotated-video output against the model alone and a Detectron2-demo-style loop.

One synthetic video of moving sample-class objects, one model, four ways, in rounds (each round
runs all of them in turn, so they see the same machine load; the median over rounds is reported):

  a. model only: decoded, preprocessed frames straight into the model (batches of BATCH_SIZE);
  b. demo loop: cv2.VideoCapture -> DefaultPredictor -> VideoVisualizer -> cv2.VideoWriter
     (mp4v), one frame at a time, as Detectron2's demo does;
  c. instseg.video.predict_video with the "visualizer" renderer;
  d. instseg.video.predict_video with the "fast" renderer.

Each figure is frames/s after a warm-up (the first model batch / frame). Prints ratios c/b, d/b,
d/a and output bytes vs input bytes; the last line is a JSON object with the figures.

    .venv/bin/python scripts/bench_video.py --frames 40 --size 640x360 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode

from instseg import video as video_module
from instseg.config import PROJECT_CONFIG_DIR, build_cfg
from instseg.datasets import build_metadata
from instseg.predictor import BatchPredictor, load_model_config
from instseg.sample_data import CLASS_NAMES, iter_sample_video_frames
from instseg.video import predict_video
from instseg.video_io import open_video, write_test_clip

DEFAULT_CONFIG = PROJECT_CONFIG_DIR / "demo_R18_FPN_cpu.yaml"


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 640x360, got {text!r}") from exc
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError("size must be at least 32x32")
    return width, height


def random_init_weights(config: str, folder: Path, classes: list[str]) -> Path:
    """Save a randomly initialised model of ``config`` (seeded) as a checkpoint file."""
    cfg = build_cfg([config], ["MODEL.ROI_HEADS.NUM_CLASSES", str(len(classes))], freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    path = folder / "random_init.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def model_only(predictor: BatchPredictor, images: list[np.ndarray], batch_size: int) -> float:
    """(a) frames/s of the forward pass on preprocessed frames, first batch excluded."""
    inputs = [predictor.preprocess(image) for image in images]
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    predictor.predict(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        predictor.predict(batch)
    return (len(inputs) - len(batches[0])) / (time.perf_counter() - start)


def demo_loop(cfg, metadata, source: Path, output: Path) -> float:
    """(b) frames/s of a sequential loop as in Detectron2's demo, first frame excluded."""
    predictor = DefaultPredictor(cfg)
    visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    frames, start = 0, None
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        predictions = predictor(frame)["instances"].to("cpu")
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        drawn = visualizer.draw_instance_predictions(rgb, predictions)
        writer.write(cv2.cvtColor(drawn.get_image(), cv2.COLOR_RGB2BGR))
        frames += 1
        if start is None:
            start = time.perf_counter()
    writer.release()
    elapsed = time.perf_counter() - start
    capture.release()
    return (frames - 1) / elapsed


def pipeline(cfg, predictor, source: Path, out_dir: Path, renderer: str, merged: bool):
    """(c), (d): predict_video's frames/s (first batch excluded) and output bytes."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INSTSEG.PREDICT.RENDERER = renderer
    cfg.freeze()
    video_module._MERGE_RENDER_ENCODE = merged
    result = predict_video(
        cfg, source, out_dir, overwrite=True, predictor=predictor, progress=False
    )
    return result.throughput, result.written.bytes, result.stage_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames in the video (40)")
    parser.add_argument("--size", type=parse_size, default=(640, 360), help="WxH (640x360)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="model config YAML")
    parser.add_argument("--weights", help="checkpoint (default: random init, saved to a temp file)")
    parser.add_argument(
        "--score-thresh", type=float, default=0.05, help="MODEL.ROI_HEADS.SCORE_THRESH_TEST"
    )
    parser.add_argument(
        "--max-instances", type=int, default=10, help="TEST.DETECTIONS_PER_IMAGE (10)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="INSTSEG.PREDICT.BATCH_SIZE")
    parser.add_argument("--codec", default="auto", choices=("auto", "h264", "mp4v"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions (1)")
    parser.add_argument(
        "--merged", action="store_true", help="also time render+encode in one thread (e)"
    )
    parser.add_argument("--skip-visualizer", action="store_true", help="skip (b) and (c)")
    args = parser.parse_args()
    if args.frames < 3 or args.rounds < 1:
        parser.error("--frames must be >= 3 and --rounds >= 1")
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = args.size

    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        tmp = Path(tmp)
        classes = list(CLASS_NAMES)
        weights = args.weights or str(random_init_weights(args.config, tmp, classes))
        opts = [
            "MODEL.DEVICE", "cpu",
            "MODEL.ROI_HEADS.NUM_CLASSES", str(len(classes)),
            "INSTSEG.THING_CLASSES", repr(tuple(classes)),
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score_thresh),
            "TEST.DETECTIONS_PER_IMAGE", str(args.max_instances),
            "INSTSEG.PREDICT.BATCH_SIZE", str(args.batch_size),
            "INSTSEG.VIDEO.CODEC", args.codec,
        ]  # fmt: skip
        cfg = load_model_config([args.config], weights, opts)
        metadata = build_metadata(cfg)
        predictor = BatchPredictor(cfg)

        source = tmp / "input.mp4"
        frames = iter_sample_video_frames(args.frames, size=(height, width), seed=0)
        input_bytes = write_test_clip(source, frames, fps=30, codec=args.codec).bytes
        with open_video(source) as video:
            images = [frame.image for frame in video]
        counts = [len(x) for x in predictor.predict([predictor.preprocess(i) for i in images[:3]])]

        methods = ["a_model", "b_demo", "c_visualizer", "d_fast"]
        if args.skip_visualizer:
            methods = ["a_model", "d_fast"]
        if args.merged:
            methods.append("e_fast_merged")
        fps: dict[str, list[float]] = {m: [] for m in methods}
        out_bytes: dict[str, int] = {}
        stage_ms: dict[str, dict[str, float]] = {}
        for round_index in range(args.rounds):
            # Rotate the order so that no method always runs first after a pause.
            order = methods[round_index % len(methods) :] + methods[: round_index % len(methods)]
            for method in order:
                out_dir = tmp / method
                out_dir.mkdir(exist_ok=True)
                if method == "a_model":
                    value = model_only(predictor, images, args.batch_size)
                elif method == "b_demo":
                    out = out_dir / "demo.mp4"
                    value = demo_loop(cfg, metadata, source, out)
                    out_bytes[method] = out.stat().st_size
                else:
                    renderer = "visualizer" if method == "c_visualizer" else "fast"
                    merged = method == "e_fast_merged"
                    value, size, stages = pipeline(
                        cfg, predictor, source, out_dir, renderer, merged
                    )
                    out_bytes[method], stage_ms[method] = size, stages
                fps[method].append(value)
                print(f"round {round_index + 1} {method:<14} {value:7.2f} frames/s", flush=True)

    med = {m: statistics.median(v) for m, v in fps.items()}
    print(
        f"{args.frames} frames {width}x{height}, {args.rounds} round(s), torch threads "
        f"{torch.get_num_threads()}, batch {args.batch_size}, instances/frame {counts}"
    )
    for method in methods:
        extra = f"  {out_bytes[method]:>9} bytes" if method in out_bytes else ""
        print(f"{method:<14} {med[method]:7.2f} frames/s{extra}")
    ratios = {}
    if "b_demo" in med:
        ratios["c_over_b"] = med["c_visualizer"] / med["b_demo"]
        ratios["d_over_b"] = med["d_fast"] / med["b_demo"]
    ratios["d_over_a"] = med["d_fast"] / med["a_model"]
    if "e_fast_merged" in med:
        ratios["e_over_a"] = med["e_fast_merged"] / med["a_model"]
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    print(f"input {input_bytes} bytes; output/input: ", end="")
    print(", ".join(f"{m} {b / input_bytes:.2f}" for m, b in out_bytes.items()))
    for method, stages in stage_ms.items():
        print(f"{method} ms/frame: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    figures = {
        "frames": args.frames,
        "width": width,
        "height": height,
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "instances_first_frames": counts,
        "fps": {m: round(v, 3) for m, v in med.items()},
        "fps_all_rounds": {m: [round(x, 3) for x in v] for m, v in fps.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "input_bytes": input_bytes,
        "output_bytes": out_bytes,
        "stage_ms": {m: {k: round(v, 2) for k, v in s.items()} for m, s in stage_ms.items()},
        "python": platform.python_version(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
