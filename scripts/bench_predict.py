"""Throughput and memory of ``instseg predict`` against its limit and the naive per-image loop.

On the same generated images (sample-dataset scenes, written as JPEGs) and the same model, in one
run, for each network precision of ``--precisions`` (``INSTSEG.PREDICT.PRECISION``):

(a) model only: preprocessed tensors straight into the model, batch by batch (the limit), with
    the model as instseg runs it (norms folded, channels-last: ``INSTSEG.PREDICT.OPTIMIZE_MODEL``)
    in that precision; (a0), Detectron2's model unmodified in fp32, is printed for reference;
(b) the naive loop of Detectron2's demo: ``cv2.imread``, ``DefaultPredictor``, ``Visualizer``,
    ``cv2.imwrite``, one image at a time (fp32: DefaultPredictor has no other precision);
(c) :func:`instseg.inference.runner.predict` in that precision with its default renderer (the fast
    one), and (v) the same with the Visualizer renderer that (b) draws with.

Each figure is steady-state images/s: the first batch (or image) of each pays one-off start-up
costs and is left out. ``--rounds`` repeats every row, each round in another order; the
images/s printed are each row's best round (other processes sharing the CPU only ever slow a
round down), the ratios the median of the ratios within each round (taken under the same load).
Then the peak RSS of ``instseg predict`` processes on 50 and 500 small images (demo R18 config,
random init, rendering on) shows whether memory grows with the number of inputs.

Without ``--weights`` the model is the config's, randomly initialised (no download needed) with
``TEST.DETECTIONS_PER_IMAGE`` instances per image. The last line is a JSON object of the figures.

    .venv/bin/python scripts/bench_predict.py --images 12 --size 640x480
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

from instseg.config import build_cfg  # noqa: E402
from instseg.data.catalog import build_metadata  # noqa: E402
from instseg.data.sample_data import render_sample_image  # noqa: E402
from instseg.data.sample_shapes import CLASS_NAMES, JPEG_QUALITY  # noqa: E402
from instseg.inference.model import BatchPredictor  # noqa: E402
from instseg.inference.runner import PredictOptions, predict  # noqa: E402
from instseg.inference.settings import load_model_config  # noqa: E402

DEFAULT_CONFIG = "configs/mask_rcnn_R50_FPN.yaml"
RSS_CONFIG = "configs/demo_R18_FPN_cpu.yaml"
RSS_COUNTS = (50, 500)
RSS_SIZE = (128, 96)  # width, height
RSS_OPTS = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, got {text!r}") from exc
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError("size must be at least 32x32")
    return width, height


def write_images(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``count`` sample-dataset scenes of ``size`` (width, height) as JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    paths = []
    for index in range(count):
        image, _ = render_sample_image((seed, 7, index), (height, width))
        path = folder / f"{index:05d}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        paths.append(path)
    return paths


def random_init_weights(config: str, opts: list[str], path: Path) -> Path:
    """Save a randomly initialised model of ``config`` (what a fresh training run starts from)."""
    cfg = build_cfg([config], [*opts, "MODEL.WEIGHTS", ""], freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(path.parent)).save(path.stem)
    return path


def model_only(cfg, paths: list[Path], batch_size: int) -> float:
    """(a): images/s of BatchPredictor.predict on tensors prepared beforehand."""
    predictor = BatchPredictor(cfg)
    inputs = [predictor.preprocess(cv2.imread(str(p))) for p in paths]
    batches = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    predictor.predict(batches[0])  # warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        predictor.predict(batch)
    return sum(len(b) for b in batches[1:]) / (time.perf_counter() - start)


def with_predict(cfg, **settings):
    """``cfg`` with ``INSTSEG.PREDICT`` settings changed (``OPTIMIZE_MODEL=False``: the model left
    as Detectron2 builds it)."""
    changed = cfg.clone()
    changed.defrost()
    for key, value in settings.items():
        changed.INSTSEG.PREDICT[key] = value
    changed.freeze()
    return changed


def naive_loop(cfg, paths: list[Path], out_dir: Path) -> float:
    """(b): images/s of Detectron2's demo loop, one image at a time."""
    predictor = DefaultPredictor(cfg)
    metadata = build_metadata(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> None:
        image = cv2.imread(str(path))
        instances = predictor(image)["instances"].to("cpu")
        visualizer = Visualizer(image[:, :, ::-1], metadata)
        drawn = visualizer.draw_instance_predictions(instances).get_image()[:, :, ::-1]
        cv2.imwrite(str(out_dir / path.name), drawn)

    one(paths[0])  # warm-up
    start = time.perf_counter()
    for path in paths[1:]:
        one(path)
    return (len(paths) - 1) / (time.perf_counter() - start)


def pipeline(cfg, image_dir: Path, out_dir: Path, workers: int) -> float:
    """(c): steady-state images/s of predict."""
    options = PredictOptions(
        output_dir=str(out_dir), existing="overwrite", progress=False, num_workers=workers
    )
    result = predict(cfg, str(image_dir), options)
    if result.errors:
        raise RuntimeError(f"predict failed on {result.errors} image(s)")
    return result.images_per_s


def peak_rss_mb(
    image_dir: Path, out_dir: Path, config: str, weights: Path, opts: list[str]
) -> float:
    """Peak RSS (MB) of one `instseg predict` process, measured by a fresh parent process."""
    command = [
        sys.executable,
        "-m",
        "instseg.cli",
        "predict",
        str(image_dir),
        "--config",
        config,
        "--weights",
        str(weights),
        "--output",
        str(out_dir),
        "--overwrite",
        "--no-progress",
        "--renderer",
        "visualizer",
        *opts,
    ]
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, cwd=REPO_ROOT
    )
    returncode, max_rss_kb = output.stdout.split()
    if int(returncode) != 0:
        raise RuntimeError(f"instseg predict failed:\n{output.stderr[-2000:]}")
    return int(max_rss_kb) / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="images per method (default 40)")
    parser.add_argument("--size", type=parse_size, default=(640, 480), help="WxH (640x480)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"model config ({DEFAULT_CONFIG})")
    parser.add_argument("--weights", help="trained checkpoint (default: random init)")
    parser.add_argument("--batch-size", type=int, default=1, help="(a) and (c) batch size (1)")
    parser.add_argument("--num-workers", type=int, default=1, help="(c) processes (1)")
    parser.add_argument("--detections", type=int, default=10, help="instances per image (10)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every row (default 1)")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="network precisions of (a) and (c) (fp32,bf16)"
    )
    parser.add_argument("--skip-rss", action="store_true", help="leave out the RSS part")
    parser.add_argument("--work-dir", help="keep files here (default: a temporary folder)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="overrides")
    args = parser.parse_args()
    if args.images < 3:
        parser.error("--images must be >= 3 (the first one or batch warms up)")

    os.environ.setdefault("MPLBACKEND", "Agg")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_predict_"))
    class_opts = ["INSTSEG.THING_CLASSES", repr(list(CLASS_NAMES))]
    class_opts += ["MODEL.ROI_HEADS.NUM_CLASSES", str(len(CLASS_NAMES))]
    weights = Path(args.weights) if args.weights else None
    if weights is None:
        weights = random_init_weights(args.config, class_opts, work / "random_init.pth")
    opts = [
        *class_opts,
        "MODEL.DEVICE",
        "cpu",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "TEST.DETECTIONS_PER_IMAGE",
        str(args.detections),
        # Every instance drawn, as the naive loop draws them (random weights score low).
        "INSTSEG.PREDICT.DRAW_SCORE",
        "0.0",
        "INSTSEG.PREDICT.BATCH_SIZE",
        str(args.batch_size),
        *args.opts,
    ]
    cfg = load_model_config([args.config], str(weights), opts)
    image_dir = work / "images"
    paths = write_images(image_dir, args.images, args.size)
    width, height = args.size
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    print(
        f"{args.images} images {width}x{height}, {args.config}, batch {args.batch_size}, "
        f"(c) in {args.num_workers} process(es), precisions {', '.join(precisions)}, "
        f"{args.detections} instances/image, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs"
    )

    def run_row(name: str) -> float:
        kind, _, precision = name.partition("_")
        if kind == "stock":
            return model_only(with_predict(cfg, OPTIMIZE_MODEL=False), paths, args.batch_size)
        if kind == "naive":
            return naive_loop(cfg, paths, work / "naive")
        row_cfg = with_predict(cfg, PRECISION=precision)
        if kind == "model":
            return model_only(row_cfg, paths, args.batch_size)
        renderer = "visualizer" if kind == "visualizer" else "auto"
        row_cfg = with_predict(row_cfg, RENDERER=renderer)
        return pipeline(row_cfg, image_dir, work / name, args.num_workers)

    # Every row each round, in an order shifted round by round so none always runs first or
    # last; ratios are taken within each round (same machine load) and their median reported.
    names = ["stock", "naive"] + [
        f"{kind}_{precision}"
        for precision in precisions
        for kind in ("model", "predict", "visualizer")
    ]
    runs: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        shift = round_index * len(names) // max(args.rounds, 1)
        for name in names[shift:] + names[:shift]:
            runs[name].append(run_row(name))
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{k} {v[-1]:.3f}" for k, v in runs.items())
            + " images/s"
        )

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(runs[top], runs[bottom], strict=True))

    best = {name: max(values) for name, values in runs.items()}
    print(f"(a0) unmodified model, fp32   {best['stock']:.3f} images/s (best round)")
    print(f"(b) naive loop, fp32           {best['naive']:.3f} images/s")
    figures: dict = {
        "images": args.images,
        "width": width,
        "height": height,
        "config": args.config,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "rounds": args.rounds,
        "stock_model_images_per_s": round(best["stock"], 3),
        "naive_images_per_s": round(best["naive"], 3),
    }
    for precision in precisions:
        model, predict, visualizer = (
            f"{k}_{precision}" for k in ("model", "predict", "visualizer")
        )
        print(f"(a) model only, {precision:<14} {best[model]:.3f} images/s")
        print(
            f"(c) instseg predict, {precision:<9} {best[predict]:.3f} images/s: "
            f"c/a {ratio(predict, model):.2f}, c/b {ratio(predict, 'naive'):.2f}"
        )
        print(
            f"(v) the same, Visualizer     {best[visualizer]:.3f} images/s: "
            f"v/a {ratio(visualizer, model):.2f}, v/b {ratio(visualizer, 'naive'):.2f}"
        )
        figures.update(
            {
                f"model_{precision}_images_per_s": round(best[model], 3),
                f"predict_{precision}_images_per_s": round(best[predict], 3),
                f"visualizer_{precision}_images_per_s": round(best[visualizer], 3),
                f"c_over_a_{precision}": round(ratio(predict, model), 3),
                f"c_over_b_{precision}": round(ratio(predict, "naive"), 3),
                f"v_over_a_{precision}": round(ratio(visualizer, model), 3),
                f"v_over_b_{precision}": round(ratio(visualizer, "naive"), 3),
            }
        )
        if precision != precisions[0]:
            speedup = ratio(model, f"model_{precisions[0]}")
            figures[f"model_{precision}_over_{precisions[0]}"] = round(speedup, 3)
    figures |= {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if not args.skip_rss:
        rss_weights = random_init_weights(RSS_CONFIG, class_opts, work / "random_init_r18.pth")
        rss_opts = [*class_opts, *RSS_OPTS, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
        rss_opts += ["TEST.DETECTIONS_PER_IMAGE", "5", "MODEL.DEVICE", "cpu"]
        rss_opts += ["INSTSEG.PREDICT.DRAW_SCORE", "0.0"]
        write_images(work / "rss_images", max(RSS_COUNTS), RSS_SIZE, seed=1)
        rss = {}
        for count in RSS_COUNTS:
            folder = work / f"rss_{count}"
            folder.mkdir(exist_ok=True)
            for index in range(count):
                link = folder / f"{index:05d}.jpg"
                if not link.exists():
                    link.symlink_to(work / "rss_images" / f"{index:05d}.jpg")
            start = time.perf_counter()
            rss[count] = peak_rss_mb(
                folder, work / f"rss_out_{count}", RSS_CONFIG, rss_weights, rss_opts
            )
            print(
                f"peak RSS, {count} images {RSS_SIZE[0]}x{RSS_SIZE[1]}: {rss[count]:.0f} MB "
                f"({time.perf_counter() - start:.0f} s)"
            )
        growth = rss[max(RSS_COUNTS)] - rss[min(RSS_COUNTS)]
        print(
            f"RSS growth {min(RSS_COUNTS)} -> {max(RSS_COUNTS)} images: {growth:.0f} MB "
            "(target <= 150)"
        )
        figures.update(
            {f"rss_mb_{count}": round(value, 1) for count, value in rss.items()}
            | {"rss_growth_mb": round(growth, 1)}
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
