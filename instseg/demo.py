"""The embedded default, end to end and offline: sample data, validation, fine-tuning, evaluation,
folder inference, an annotated video, and a report linking everything.

Every stage is the same code the CLI runs on user data; the demo only chooses inputs.
"""

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from instseg.config import ConfigError, default_device, resolve_config_path
from instseg.data.sample_data import write_sample_dataset
from instseg.data.sample_video import iter_sample_video_frames
from instseg.data.stats import load_dataset_stats
from instseg.data.validate import has_errors, validate_coco_dataset
from instseg.engine.evaluate import (
    EvalRequest,
    format_ap_table,
    format_per_class_ap,
    run_evaluation,
)
from instseg.engine.precision import resolve_precision
from instseg.engine.trainer import TrainRequest, train
from instseg.io.clips import write_test_clip
from instseg.viz.report import ReportSection, draw_three_panel, make_grid, write_png, write_report

logger = logging.getLogger(__name__)

DEMO_CONFIG = "demo_R18_FPN_cpu"
# --quick: a shorter schedule (same data and model) that checks the whole pipeline in minutes
# (every class gets some AP; the full schedule is what gives a usable model).
QUICK_OPTS = ["SOLVER.MAX_ITER", "250", "SOLVER.STEPS", "(200, 235)", "TEST.EVAL_PERIOD", "0"]
VIDEO_FRAMES, VIDEO_FPS, VIDEO_SIZE = 48, 12, (256, 320)
# The semantic part: the small U-Net on the same data (its masks rendered from the COCO JSON)
# beside a classical baseline.
SEMANTIC_CONFIG = "semantic_unet_cpu"
SEMANTIC_ITERS, SEMANTIC_QUICK_ITERS = 400, 80
CLASSICAL_BASELINE = "otsu"
THREE_PANEL_IMAGES = 3
GRID_IMAGES = 12


@dataclass
class DemoSummary:
    output_dir: Path
    segm_ap: float = float("nan")
    bbox_ap: float = float("nan")
    semantic: dict[str, dict[str, float]] = field(default_factory=dict)  # method: scores
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    report: Path | None = None

    def lines(self) -> list[str]:
        stages = ", ".join(f"{name} {secs:.0f}s" for name, secs in self.seconds.items())
        semantic = "; ".join(
            f"{method} mIoU {scores['miou']:.1f}" for method, scores in self.semantic.items()
        )
        return [
            f"val segm AP {self.segm_ap:.1f}, bbox AP {self.bbox_ap:.1f}",
            *([f"semantic (val): {semantic}"] if semantic else []),
            f"time: {sum(self.seconds.values()) / 60:.1f} min ({stages})",
            f"report: {self.report}",
        ]


@contextlib.contextmanager
def _timed(summary: DemoSummary, name: str) -> Iterator[None]:
    logger.info("Demo stage: %s", name)
    start = time.perf_counter()
    yield
    summary.seconds[name] = time.perf_counter() - start


def _precision_opts() -> list[str]:
    """Mixed-precision training where ``INSTSEG.PREDICT.PRECISION auto`` picks a reduced precision
    (bf16 on a CPU with AMX, CUDA): the same schedule in less time; fp32 elsewhere, where bf16
    would be emulated and slower."""
    precision = resolve_precision("auto", default_device())
    logger.info("Demo training precision: %s (%s)", precision.name, precision.reason)
    return [] if precision.dtype is None else ["SOLVER.AMP.ENABLED", "True"]


def run_demo(
    output_dir: str | os.PathLike,
    quick: bool = False,
    weights: str | None = None,
    iterations: int | None = None,
):
    """Run every stage into ``output_dir``; returns a :class:`DemoSummary`. ``iterations``
    replaces the schedule's length (the U-Net trains a third as many, at least 20)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary(out)
    with _timed(summary, "data"):
        sample, stats = _write_data(out)
    with _timed(summary, "train"):
        run_dir = out / "train"
        opts = sample.config_opts("demo_sample") + _precision_opts() + (QUICK_OPTS if quick else [])
        opts += _schedule_opts(iterations)
        config = str(resolve_config_path(DEMO_CONFIG))
        train(TrainRequest([config], opts=opts, output_dir=str(run_dir), weights=weights))
    with _timed(summary, "evaluate"):
        results, results_path = run_evaluation(
            EvalRequest(
                config_files=[str(run_dir / "config.yaml")],
                weights=str(run_dir / "model_final.pth"),
                output_dir=str(out / "eval"),
            )
        )
        summary.segm_ap, summary.bbox_ap = results["segm"]["AP"], results["bbox"]["AP"]
    with _timed(summary, "predict"):
        predict_dir = out / "predict"
        settings, prediction = _predict_val_images(run_dir, sample, predict_dir)
    with _timed(summary, "video"):
        video = _annotate_clip(settings, out)
    with _timed(summary, "semantic"):
        semantic_iters = SEMANTIC_QUICK_ITERS if quick else SEMANTIC_ITERS
        if iterations:
            semantic_iters = max(20, iterations // 3)
        semantic_section = _semantic_demo(out, sample, semantic_iters, summary)
    with _timed(summary, "report"):
        summary.report = _write_demo_report(
            out, stats, results, results_path, run_dir, sample, predict_dir, prediction, video,
            semantic_section,
        )  # fmt: skip
    return summary


def _schedule_opts(iterations: int | None) -> list[str]:
    """A schedule of ``iterations`` shaped as the quick demo's: warm-up over the first 40% (it
    must end before the first drop, whose value fvcore's warm-up would otherwise aim at), the
    learning rate dropping at 80% and 94%."""
    if not iterations:
        return []
    if iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, got {iterations}")
    steps = f"({int(iterations * 0.8)}, {int(iterations * 0.94)})"
    return [
        "SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", steps,
        "SOLVER.WARMUP_ITERS", str(int(iterations * 0.4)), "TEST.EVAL_PERIOD", "0",
    ]  # fmt: skip


def _write_data(out: Path):
    """The sample dataset, validated, and its statistics."""
    sample = write_sample_dataset(out / "sample", seed=0)
    for json_path, images in (
        (sample.train_json, sample.train_images),
        (sample.val_json, sample.val_images),
    ):
        problems = validate_coco_dataset(json_path, images)
        if has_errors(problems):
            raise ConfigError(f"{json_path}: sample dataset failed validation: {problems[0]}")
    return sample, load_dataset_stats(sample.train_json)


def _predict_val_images(run_dir: Path, sample, predict_dir: Path):
    """(the inference settings, the job's result) of the trained model over the val images."""
    from instseg.inference.runner import PredictOptions, load_predict_cfg, predict
    from instseg.inference.settings import PredictSettings

    options = PredictOptions(
        output_dir=str(predict_dir),
        config_files=[str(run_dir / "config.yaml")],
        weights=str(run_dir / "model_final.pth"),
        # Shown to people, as Detectron2's demo does: confident instances only (the
        # evaluate stage above scored every detection).
        opts=["INSTSEG.PREDICT.SAVE_MASKS", "True", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5"],
        existing="overwrite",
        coco_json=str(sample.val_json),
        progress=False,
    )
    settings = PredictSettings.from_cfg(load_predict_cfg(options))
    return settings, predict(settings, sample.val_images, options)


def _annotate_clip(settings, out: Path):
    """A generated clip with audio, annotated with tracks."""
    from instseg.inference.video_sink import predict_video

    clip = write_test_clip(
        out / "sample" / "clip.mp4",
        iter_sample_video_frames(VIDEO_FRAMES, size=VIDEO_SIZE, seed=1),
        fps=VIDEO_FPS,
        audio=True,
    )
    return predict_video(settings, clip.path, out / "video")


def _semantic_demo(out: Path, sample, iters: int, summary: DemoSummary) -> ReportSection:
    """Train the small U-Net, predict the val images with it and with a classical method, and
    score both on the same masks (instseg.engine.semantic_metrics)."""
    from instseg.inference.runner import PredictOptions, load_predict_cfg, predict

    run_dir = out / "semantic" / "train"
    opts = sample.config_opts("demo_semantic") + [
        "SOLVER.MAX_ITER", str(iters), "TEST.EVAL_PERIOD", str(iters),
        "SOLVER.CHECKPOINT_PERIOD", str(iters),
    ]  # fmt: skip
    config = str(resolve_config_path(SEMANTIC_CONFIG))
    train(TrainRequest(config_files=[config], opts=opts, output_dir=str(run_dir)))
    runs = {
        "U-Net": ([str(run_dir / "config.yaml")], str(run_dir / "model_final.pth")),
        CLASSICAL_BASELINE: ([str(resolve_config_path("classical"))], ""),
    }
    folders = {}
    for method, (configs, weights) in runs.items():
        folders[method] = out / "semantic" / method.lower().replace("-", "")
        extra = [] if weights else ["MODEL.CLASSICAL.METHOD", CLASSICAL_BASELINE]
        options = PredictOptions(
            str(folders[method]), configs, weights, extra, existing="overwrite", progress=False
        )
        predict(load_predict_cfg(options), sample.val_images, options)
    summary.semantic = _score_semantic(folders, run_dir)
    rows = [
        f"| {method} | {s['miou']:.1f} | {s['fg_iou']:.1f} | {s['pixel_acc']:.1f} |"
        for method, s in summary.semantic.items()
    ]
    table = "\n".join(["| method | mIoU | foreground IoU | pixel accuracy |", "|---|---|---|---|"])
    text = (
        f"U-Net ({SEMANTIC_CONFIG}, {iters} iterations from random init) and "
        f"{CLASSICAL_BASELINE} (no training) on the val images: every pixel background or one "
        f"of the shapes. The classical method's classes are scored under the labelling that "
        f"suits them best.\n\n" + "\n".join([table, *rows])
    )
    stems = [p.stem for p in sorted(Path(sample.val_images).glob("*.jpg"))[:2]]
    images = [folders[m] / f"{stem}.panels.jpg" for stem in stems for m in folders]
    return ReportSection("Semantic segmentation", text, images=images,
                         links=[("U-Net config.yaml", run_dir / "config.yaml")])  # fmt: skip


def _score_semantic(folders: dict[str, Path], run_dir: Path) -> dict[str, dict[str, float]]:
    """Each method's class-id PNGs against the val masks."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from instseg.data.semantic import SemanticGroundTruth
    from instseg.engine.semantic_metrics import confusion_matrix, semantic_scores, unnamed_scores

    truth = SemanticGroundTruth("demo_semantic_val")
    records = DatasetCatalog.get("demo_semantic_val")
    num_classes = len(MetadataCatalog.get("demo_semantic_val").stuff_classes)
    scores = {}
    for method, folder in folders.items():
        images = json.loads((folder / "images.json").read_text())
        num_predicted = len(images["categories"])
        pairs = []
        for record in records:
            stem = Path(record["file_name"]).stem
            predicted = cv2.imread(str(folder / f"{stem}.masks.png"), cv2.IMREAD_UNCHANGED)
            pairs.append((truth(record["sem_seg_file_name"]), predicted.astype(np.int64)))
        confusion = confusion_matrix(pairs, num_classes, num_predicted)
        named = num_predicted == num_classes
        scores[method] = semantic_scores(confusion) if named else unnamed_scores(confusion)
    return scores


def _write_demo_report(
    out, stats, results, results_path, run_dir, sample, predict_dir, prediction, video, semantic
):
    grid, panels = _prediction_figures(out / "figures", sample, predict_dir)
    sections = [
        ReportSection(
            "Data",
            f"Sample dataset: {stats.num_images} training images, {stats.num_annotations} "
            f"instances of {len(stats.classes)} classes "
            f"({', '.join(c.name for c in stats.classes)}).",
            links=[("train.json", Path(sample.train_json)), ("val.json", Path(sample.val_json))],
        ),
        ReportSection(
            "Evaluation (val set)",
            format_ap_table(results) + "\n\n" + format_per_class_ap(results),
            links=[("evaluation results (JSON)", Path(results_path))],
        ),
        ReportSection(
            "Training",
            images=[run_dir / "training_curves.png"],
            links=[
                (name, run_dir / name)
                for name in ("config.yaml", "metrics.json", "log.txt", "model_final.pth")
            ],
        ),
        ReportSection(
            "Predictions on the val images",
            prediction.summary_line() + "\n" + prediction.timing_line(),
            images=[grid],
            links=[
                ("predictions.json (COCO results)", predict_dir / "predictions.json"),
                ("manifest.csv", predict_dir / "manifest.csv"),
            ],
        ),
        ReportSection("Original / predicted masks / overlay", images=panels),
        _video_section(video),
        semantic,
    ]
    md, _ = write_report(out, "instseg demo report", sections)
    return md


def _prediction_figures(figures: Path, sample, predict_dir: Path) -> tuple[Path, list[Path]]:
    """A grid of annotated val images and the first ones' three-panel figures."""
    val_images = sorted(Path(sample.val_images).glob("*.jpg"))
    annotated = [predict_dir / p.name for p in val_images if (predict_dir / p.name).is_file()]
    grid = write_png(
        figures / "predictions_grid.png",
        make_grid([cv2.imread(str(p)) for p in annotated[:GRID_IMAGES]], columns=4),
    )
    panels = []
    for image_path in val_images[:THREE_PANEL_IMAGES]:
        original = cv2.imread(str(image_path))
        ids = cv2.imread(str(predict_dir / f"{image_path.stem}.masks.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(predict_dir / image_path.name))
        panel = draw_three_panel(original, ids, overlay)
        panels.append(write_png(figures / f"panels_{image_path.stem}.png", panel))
    return grid, panels


def _video_section(video) -> ReportSection:
    tracked = f"; objects tracked: {video.objects_text}" if video.tracks is not None else ""
    return ReportSection(
        "Annotated video",
        f"{video.frames} frames at {video.fps:.0f} fps, {video.width}x{video.height}; "
        f"{video.throughput:.1f} frames/s through the pipeline{tracked}.",
        links=[
            ("annotated video", Path(video.video)),
            ("per-frame predictions (JSON lines)", Path(video.predictions)),
        ]
        + ([("tracks (MOTChallenge CSV)", Path(video.tracks))] if video.tracks else []),
    )
