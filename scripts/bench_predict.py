"""Throughput and memory of ``instseg predict`` against its limit and the naive per-image loop.

On the same generated images (sample-dataset scenes, written as JPEGs) and the same model, in one
run:

(a) model only: preprocessed tensors straight into the model, batch by batch (the limit), with
    the model as instseg runs it (norms folded, channels-last: ``INSTSEG.PREDICT.OPTIMIZE_MODEL``);
    (a0), the same with Detectron2's model unmodified, is printed for reference;
(b) the naive loop of Detectron2's demo: ``cv2.imread``, ``DefaultPredictor``, ``Visualizer``,
    ``cv2.imwrite``, one image at a time;
(c) :func:`instseg.predict.predict_images`, rendering on with the Visualizer renderer.

Each figure is steady-state images/s: the first batch (or image) of each pays one-off start-up
costs and is left out. ``--rounds`` repeats (a), (b), (c), each round in another order; the
images/s printed are each method's best round (other processes sharing the CPU only ever slow a
round down), the ratios the median of the ratios within each round (taken under the same load). Then the peak
RSS of ``instseg predict`` processes on 50 and 500 small images (demo R18 config, random init,
rendering on) shows whether memory grows with the number of inputs.

Without ``--weights`` the model is the config's, randomly initialised (no download needed) with
``TEST.DETECTIONS_PER_IMAGE`` instances per image. The last line is a JSON object of the figures.

    .venv/bin/python scripts/bench_predict.py --images 12 --size 640x480
"""

from __future__ import annotations

import argparse
import itertools
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
from instseg.inference.predict import PredictOptions, predict_images  # noqa: E402
from instseg.inference.predictor import BatchPredictor, load_model_config  # noqa: E402

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


def with_stock_model(cfg):
    """``cfg`` with the model left as Detectron2 builds it (no folding, no channels-last)."""
    stock = cfg.clone()
    stock.defrost()
    stock.INSTSEG.PREDICT.OPTIMIZE_MODEL = False
    stock.freeze()
    return stock


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


def pipeline(cfg, image_dir: Path, out_dir: Path, workers: int) -> tuple[float, float]:
    """(c): steady-state images/s of predict_images, and its end-to-end images/s."""
    options = PredictOptions(
        output_dir=str(out_dir), existing="overwrite", progress=False, num_workers=workers
    )
    result = predict_images(cfg, str(image_dir), options)
    if result.errors:
        raise RuntimeError(f"predict failed on {result.errors} image(s)")
    return result.images_per_s, result.ok / result.seconds


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
    parser.add_argument("--rounds", type=int, default=1, help="repeat (a), (b), (c) (default 1)")
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
        "INSTSEG.PREDICT.RENDERER",
        "visualizer",
        *args.opts,
    ]
    cfg = load_model_config([args.config], str(weights), opts)
    image_dir = work / "images"
    paths = write_images(image_dir, args.images, args.size)
    width, height = args.size
    print(
        f"{args.images} images {width}x{height}, {args.config}, batch {args.batch_size}, "
        f"(c) in {args.num_workers} process(es), "
        f"{args.detections} instances/image, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs"
    )

    # Every order of the three, in turn, so none always runs first or last; ratios are taken
    # within each round (same machine load) and their median reported.
    orders = list(itertools.permutations(("model", "naive", "predict")))
    runs: dict[str, list[float]] = {
        "model": [],
        "model_stock": [],
        "naive": [],
        "predict": [],
        "predict_e2e": [],
    }
    for round_index in range(args.rounds):
        for name in orders[round_index % len(orders)]:
            if name == "model":
                runs["model"].append(model_only(cfg, paths, args.batch_size))
                runs["model_stock"].append(
                    model_only(with_stock_model(cfg), paths, args.batch_size)
                )
            elif name == "naive":
                runs["naive"].append(naive_loop(cfg, paths, work / "naive"))
            else:
                steady, end_to_end = pipeline(cfg, image_dir, work / "predict", args.num_workers)
                runs["predict"].append(steady)
                runs["predict_e2e"].append(end_to_end)
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{k} {v[-1]:.3f}" for k, v in runs.items())
            + f" images/s; c/a {runs['predict'][-1] / runs['model'][-1]:.2f}, "
            f"c/b {runs['predict'][-1] / runs['naive'][-1]:.2f}"
        )
    best = {name: max(values) for name, values in runs.items()}
    ratios = {
        "c_over_a": statistics.median(
            c / a for c, a in zip(runs["predict"], runs["model"], strict=True)
        ),
        "c_over_b": statistics.median(
            c / b for c, b in zip(runs["predict"], runs["naive"], strict=True)
        ),
    }
    print(f"(a) model only        {best['model']:.3f} images/s (best round)")
    print(f"(a0) unmodified model {best['model_stock']:.3f} images/s")
    print(f"(b) naive loop        {best['naive']:.3f} images/s")
    print(
        f"(c) instseg predict   {best['predict']:.3f} images/s "
        f"(end to end {best['predict_e2e']:.3f})"
    )
    print(
        f"median of per-round ratios: c/a {ratios['c_over_a']:.2f} (target >= 0.85), "
        f"c/b {ratios['c_over_b']:.2f} (>= 1.15)"
    )

    figures = {
        "images": args.images,
        "width": width,
        "height": height,
        "config": args.config,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "rounds": args.rounds,
        "model_images_per_s": round(best["model"], 3),
        "stock_model_images_per_s": round(best["model_stock"], 3),
        "naive_images_per_s": round(best["naive"], 3),
        "predict_images_per_s": round(best["predict"], 3),
        "predict_end_to_end_images_per_s": round(best["predict_e2e"], 3),
        "c_over_a": round(ratios["c_over_a"], 3),
        "c_over_b": round(ratios["c_over_b"], 3),
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
