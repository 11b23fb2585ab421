"""Time annotated-video output against the model alone and a Detectron2-demo-style loop.

One synthetic video of moving sample-class objects, one model, four ways, in rounds (each round
runs all of them in turn, so they see the same machine load; the median over rounds is reported):

  a. model only: decoded, preprocessed frames straight into the model (batches of BATCH_SIZE);
  b. demo loop: cv2.VideoCapture -> DefaultPredictor -> VideoVisualizer -> cv2.VideoWriter
     (mp4v), one frame at a time, as Detectron2's demo does;
  c. instseg.inference.video_sink.predict_video with the "visualizer" renderer;
  d. instseg.inference.video_sink.predict_video with the "fast" renderer.

Each figure is frames/s after a warm-up (the first model batch / frame). Prints ratios c/b, d/b,
d/a, the tracker's time per frame over the model's (``track_over_model``, from (d)'s stage
times) and output bytes vs input bytes; the last line is a JSON object with the figures.

With ``--track-run DIR`` (a training run: its config.yaml and model_final.pth), the scripted
tracking clip (instseg.data.sample_video.tracking_clip: crossing, hiding, leaving, entering)
also goes through the whole predict_video path with that model, and its NAME.tracks.csv is
scored against the clip's ground truth with py-motmetrics (MOTA, IDF1, identity switches).

    .venv/bin/python scripts/bench_video.py --frames 40 --size 640x360 --rounds 2
    .venv/bin/python scripts/bench_video.py --skip-visualizer --track-run output/demo/train
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode

from instseg.config import PROJECT_CONFIG_DIR, build_cfg
from instseg.data.catalog import build_metadata
from instseg.data.sample_shapes import CLASS_NAMES
from instseg.data.sample_video import iter_sample_video_frames, tracking_clip
from instseg.inference import video_sink as video_module
from instseg.inference.model import BatchPredictor
from instseg.inference.settings import PredictSettings, load_model_config
from instseg.inference.video_sink import predict_video
from instseg.io.clips import write_test_clip
from instseg.io.video_reader import open_video

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
    """Save a randomly initialised model of ``config`` (seeded) as a checkpoint file.

    Freshly initialised mask logits sit at 0, so almost no pixel passes the 0.5 threshold and the
    renderers would have nothing to draw; a positive mask bias makes each mask fill its box, as
    a trained model's masks fill their objects. Compute per frame is unchanged.
    """
    cfg = build_cfg([config], ["MODEL.ROI_HEADS.NUM_CLASSES", str(len(classes))], freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    mask_head = getattr(model.roi_heads, "mask_head", None)
    if mask_head is not None and getattr(mask_head.predictor, "bias", None) is not None:
        torch.nn.init.constant_(mask_head.predictor.bias, 2.0)
    path = folder / "random_init.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@dataclass
class Timing:
    """Steady-state frames and seconds (warm-up left out) plus CPU seconds of a whole call."""

    frames: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    all_frames: int = 0

    def add(self, frames: int, seconds: float, cpu: float, all_frames: int) -> None:
        self.frames += frames
        self.seconds += seconds
        self.cpu += cpu
        self.calls += 1
        self.all_frames += all_frames

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000.0 * self.cpu / self.all_frames if self.all_frames else 0.0


def model_only(predictor: BatchPredictor, images: list[np.ndarray], batch_size: int):
    """(a) the forward pass on preprocessed frames; (timed frames, seconds), first batch out."""
    inputs = [predictor.preprocess(image) for image in images]
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    predictor.predict(batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        predictor.predict(batch)
    return len(inputs) - len(batches[0]), time.perf_counter() - start


def demo_loop(predictor, metadata, source: Path, output: Path, first: int, count: int):
    """(b) a sequential loop as in Detectron2's demo over frames [first, first + count);
    (timed frames, seconds), first frame out. Frames before ``first`` are skipped untimed."""
    visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)
    capture = cv2.VideoCapture(str(source))
    for _ in range(first):
        capture.grab()
    fps = capture.get(cv2.CAP_PROP_FPS)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    frames, start = 0, None
    while frames < count:
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
    return frames - 1, elapsed


def pipeline(cfg, predictor, source, out_dir, renderer, merged, first, count, fps):
    """(c), (d): predict_video over frames [first, first + count); (timed frames, seconds,
    VideoResult), first batch out."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.INSTSEG.PREDICT.RENDERER = renderer
    cfg.INSTSEG.VIDEO.START = (first - 0.5) / fps if first else -1.0
    cfg.INSTSEG.VIDEO.MAX_FRAMES = count
    cfg.freeze()
    video_module._MERGE_RENDER_ENCODE = merged
    settings = PredictSettings.from_cfg(cfg)
    result = predict_video(
        settings, source, out_dir, overwrite=True, model=predictor, progress=False
    )
    timed = result.frames - cfg.INSTSEG.PREDICT.BATCH_SIZE
    return timed, timed / result.throughput, result


def track_scores(run_dir: Path, folder: Path, num_frames: int = 60) -> dict:
    """MOTA, IDF1 and switches of instseg's tracks on the scripted clip, with a trained model."""
    import motmetrics as mm

    clip, truth = [], []
    for frame, objects in tracking_clip(num_frames=num_frames):
        clip.append(frame)
        truth.append(objects)
    source = write_test_clip(folder / "tracking_clip.mp4", clip, fps=10.0).path
    cfg = load_model_config([str(run_dir / "config.yaml")], str(run_dir / "model_final.pth"))
    settings = PredictSettings.from_cfg(cfg)
    result = predict_video(settings, source, folder / "tracks", overwrite=True, progress=False)
    hypotheses = mm.io.loadtxt(str(result.tracks), fmt="mot15-2D")
    accumulator = mm.MOTAccumulator(auto_id=True)
    for index, objects in enumerate(truth):
        boxes = np.array([o.box for o in objects], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] -= boxes[:, :2]
        rows = hypotheses.loc[index + 1] if index + 1 in hypotheses.index else None
        hyp_ids = [] if rows is None else list(rows.index)
        hyp = np.zeros((0, 4)) if rows is None else rows[["X", "Y", "Width", "Height"]].to_numpy()
        distances = mm.distances.iou_matrix(boxes, hyp, max_iou=0.5)
        accumulator.update([o.track_id for o in objects], hyp_ids, distances)
    metrics = mm.metrics.create().compute(
        accumulator, metrics=["mota", "idf1", "num_switches", "num_unique_objects"], name="clip"
    )
    row = metrics.iloc[0]
    return {
        "frames": num_frames,
        "mota": round(float(row["mota"]), 3),
        "idf1": round(float(row["idf1"]), 3),
        "switches": int(row["num_switches"]),
        "true_objects": int(row["num_unique_objects"]),
        "tracks": len(hypotheses.index.get_level_values(1).unique()),
        "track_ms": round(result.stage_ms.get("track", 0.0), 2),
        "model_ms": round(result.stage_ms.get("model", 0.0), 2),
    }


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
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a small shared CPU, contended threads "
        "of one forward pass wait on each other; 0: torch's default)",
    )
    parser.add_argument("--chunk", type=int, default=10, help="frames per interleaved round (10)")
    parser.add_argument("--passes", type=int, default=1, help="passes over the video (1)")
    parser.add_argument(
        "--merged", action="store_true", help="also time render+encode in one thread (e)"
    )
    parser.add_argument("--skip-visualizer", action="store_true", help="skip (b) and (c)")
    parser.add_argument(
        "--track-run",
        type=Path,
        metavar="DIR",
        help="training run whose model is scored on the scripted tracking clip (MOTA, IDF1)",
    )
    args = parser.parse_args()
    if args.batch_size < 1 or args.chunk <= args.batch_size or args.passes < 1:
        parser.error("need --batch-size >= 1, --chunk > --batch-size and --passes >= 1")
    if args.frames < args.chunk:
        parser.error("--frames must be at least --chunk")
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
            # Every instance drawn, as the demo loop draws them (random weights score low).
            "INSTSEG.PREDICT.DRAW_SCORE", "0.0",
            # ... and tracked, so the tracker's cost is that of 10 instances per frame.
            "INSTSEG.TRACK.MIN_SCORE", "0.0",
            "INSTSEG.PREDICT.BATCH_SIZE", str(args.batch_size),
            "INSTSEG.VIDEO.CODEC", args.codec,
        ]  # fmt: skip
        cfg = load_model_config([args.config], weights, opts)
        metadata = build_metadata(cfg)
        predictor = BatchPredictor(cfg)
        demo_predictor = DefaultPredictor(cfg)

        source = tmp / "input.mp4"
        fps = 30.0
        frames = iter_sample_video_frames(args.frames, size=(height, width), seed=0)
        input_bytes = write_test_clip(source, frames, fps=fps, codec=args.codec).bytes
        with open_video(source) as video:
            images = [frame.image for frame in video]
        counts = [len(x) for x in predictor.predict([predictor.preprocess(i) for i in images[:3]])]

        methods = ["a_model", "b_demo", "c_visualizer", "d_fast"]
        if args.skip_visualizer:
            methods = ["a_model", "d_fast"]
        if args.merged:
            methods.append("e_fast_merged")

        def run(method: str, first: int, count: int, out_dir: Path):
            """(timed frames, seconds, output bytes or None, stage ms or None)."""
            out_dir.mkdir(exist_ok=True)
            if method == "a_model":
                chunk = images[first : first + count]
                return (*model_only(predictor, chunk, args.batch_size), None, None)
            if method == "b_demo":
                out = out_dir / "demo.mp4"
                timed, seconds = demo_loop(demo_predictor, metadata, source, out, first, count)
                return timed, seconds, out.stat().st_size, None
            renderer = "visualizer" if method == "c_visualizer" else "fast"
            merged = method == "e_fast_merged"
            timed, seconds, result = pipeline(
                cfg, predictor, source, out_dir, renderer, merged, first, count, fps
            )
            return timed, seconds, result.written.bytes, result.stage_ms

        # Interleaved rounds: every method on the same few frames in turn, so all of them see
        # the same machine load; the order rotates from round to round.
        starts = list(range(0, args.frames - args.chunk + 1, args.chunk))
        timings = {m: Timing() for m in methods}
        round_index = 0
        for _ in range(args.passes):
            for first in starts:
                count = args.chunk if first != starts[-1] else args.frames - first
                shift = round_index % len(methods)
                line = []
                for method in methods[shift:] + methods[:shift]:
                    cpu = time.process_time()
                    timed, seconds, _, _ = run(method, first, count, tmp / method)
                    timings[method].add(timed, seconds, time.process_time() - cpu, count)
                    line.append(f"{method} {timed / seconds:.2f}")
                round_index += 1
                print(f"round {round_index} frames {first}-{first + count - 1}: " + ", ".join(line))

        # Whole-video runs of the written outputs: sizes, and a cross-check of the frames/s.
        whole_fps, out_bytes, stage_ms = {}, {}, {}
        for method in methods[1:]:
            timed, seconds, size, stages = run(method, 0, args.frames, tmp / f"whole_{method}")
            whole_fps[method], out_bytes[method] = timed / seconds, size
            if stages:
                stage_ms[method] = stages
        tracking = track_scores(args.track_run, tmp) if args.track_run else None

    med = {m: t.fps for m, t in timings.items()}
    print(
        f"{args.frames} frames {width}x{height}, rounds of {args.chunk} frames x {round_index}, "
        f"torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"instances/frame {counts}"
    )
    print(f"{'method':<14} {'frames/s':>9} {'CPU ms/frame':>13} {'whole video':>12} {'bytes':>9}")
    for method in methods:
        whole = f"{whole_fps[method]:12.2f}" if method in whole_fps else f"{'':>12}"
        size = f"{out_bytes[method]:9d}" if method in out_bytes else ""
        print(f"{method:<14} {med[method]:9.2f} {timings[method].cpu_ms:13.1f} {whole} {size}")
    ratios = {}
    if "b_demo" in med:
        ratios["c_over_b"] = med["c_visualizer"] / med["b_demo"]
        ratios["d_over_b"] = med["d_fast"] / med["b_demo"]
    ratios["d_over_a"] = med["d_fast"] / med["a_model"]
    if stage_ms.get("d_fast", {}).get("model"):
        ratios["track_over_model"] = stage_ms["d_fast"]["track"] / stage_ms["d_fast"]["model"]
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
        "chunk": args.chunk,
        "rounds": round_index,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "instances_first_frames": counts,
        "fps": {m: round(v, 3) for m, v in med.items()},
        "cpu_ms_per_frame": {m: round(t.cpu_ms, 1) for m, t in timings.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "whole_video_fps": {m: round(v, 3) for m, v in whole_fps.items()},
        "input_bytes": input_bytes,
        "output_bytes": out_bytes,
        "output_over_input": {m: round(b / input_bytes, 2) for m, b in out_bytes.items()},
        "stage_ms": {m: {k: round(v, 2) for k, v in s.items()} for m, s in stage_ms.items()},
        "python": platform.python_version(),
    }
    if tracking is not None:
        print(
            f"tracking clip ({tracking['frames']} frames, {tracking['true_objects']} objects): "
            f"MOTA {tracking['mota']:.3f}, IDF1 {tracking['idf1']:.3f}, "
            f"{tracking['switches']} switches, {tracking['tracks']} tracks"
        )
        figures["tracking"] = tracking
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
