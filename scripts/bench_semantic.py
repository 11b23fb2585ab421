"""Learned against classical semantic segmentation on the sample data: mIoU, accuracy, wall time.

In one run, on one generated sample dataset (``--num-train`` / ``--num-val`` images of 256 px,
the masks rendered from its COCO JSON):

(a) U-Net (configs/semantic_unet_cpu.yaml) trained from random init, ``--iters`` iterations;
(b) DeepLabV3+ (configs/semantic_deeplabv3plus_cpu.yaml), the same;
(c) each classical method of ``instseg segment`` (otsu, kmeans, watershed, canny), no training.

Every method is scored on the val set from the confusion matrix of its class map against the
masks, twice:

* ``miou``: the six classes (background and five shapes). A trained model is scored as it
  predicts (the same figure as SemSegEvaluator's, which training prints). A classical method
  knows no class names: its classes (background / foreground, or k-means clusters) are given
  the true classes that score best over the val set (every labelling tried): in its favour.
* ``fg_iou``: foreground (any shape) against background, for everyone.

Wall times: training (model building, data loading and the final evaluation included) and
prediction per image. The last line is a JSON object of the figures.

    .venv/bin/python scripts/bench_semantic.py [--iters 800] [--methods unet,deeplab,otsu,...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
LEARNED = {
    "unet": REPO_ROOT / "configs" / "semantic_unet_cpu.yaml",
    "deeplab": REPO_ROOT / "configs" / "semantic_deeplabv3plus_cpu.yaml",
}
CLASSICAL = ("otsu", "kmeans", "watershed", "canny")


def _rounded(figures: dict) -> dict:
    return {k: round(v, 2) for k, v in figures.items()}


def val_truth(cfg, dataset: str):
    from detectron2.data import DatasetCatalog

    from instseg.data.semantic import SemanticGroundTruth

    truth = SemanticGroundTruth(dataset)
    return [(r["file_name"], truth(r["sem_seg_file_name"])) for r in DatasetCatalog.get(dataset)]


def run_learned(name: str, data_opts: list[str], iters: int, work: Path) -> dict:
    from instseg.config import build_cfg
    from instseg.data.catalog import register_datasets
    from instseg.engine.checkpoints import FinetuneCheckpointer
    from instseg.engine.semantic_metrics import confusion_matrix, semantic_scores
    from instseg.engine.trainer import Trainer, TrainRequest, train

    run_dir = work / name
    opts = data_opts + ["SOLVER.MAX_ITER", str(iters), "TEST.EVAL_PERIOD", str(iters)]
    opts += ["SOLVER.CHECKPOINT_PERIOD", str(iters)]
    started = time.perf_counter()
    results = train(TrainRequest([str(LEARNED[name])], opts=opts, output_dir=str(run_dir)))
    train_s = time.perf_counter() - started
    cfg = register_datasets(build_cfg([str(LEARNED[name])], opts))
    model = Trainer.build_model(cfg)
    FinetuneCheckpointer(model).load(str(run_dir / "model_final.pth"))
    model.eval()
    truth = dict(val_truth(cfg, cfg.DATASETS.TEST[0]))
    pairs, started = [], time.perf_counter()
    with torch.no_grad():
        for batch in Trainer.build_test_loader(cfg, cfg.DATASETS.TEST[0]):
            for item, out in zip(batch, model(batch), strict=True):
                pairs.append((truth[item["file_name"]], out["sem_seg"].argmax(0).numpy()))
    predict_ms = 1000 * (time.perf_counter() - started) / len(pairs)
    k = len(cfg.INSTSEG.SEMANTIC.CLASSES)
    figures = _rounded(semantic_scores(confusion_matrix(pairs, k, k)))
    figures["semsegevaluator_miou"] = round(results["sem_seg"]["mIoU"], 2)
    return {**figures, "train_s": round(train_s, 1), "predict_ms": round(predict_ms, 1)}


def run_classical(method: str, truth: list, num_classes: int, clusters: int) -> dict:
    from instseg.engine.semantic_metrics import confusion_matrix, unnamed_scores
    from instseg.modeling.classical import segment

    pairs, started = [], time.perf_counter()
    for file_name, true_ids in truth:
        pairs.append((true_ids, segment(method, cv2.imread(file_name), clusters)))
    predict_ms = 1000 * (time.perf_counter() - started) / len(pairs)
    num_predicted = clusters if method == "kmeans" else 2
    figures = _rounded(unnamed_scores(confusion_matrix(pairs, num_classes, num_predicted)))
    return {**figures, "train_s": 0.0, "predict_ms": round(predict_ms, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=800, help="training iterations per model")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--clusters", type=int, default=3, help="k-means clusters")
    parser.add_argument("--methods", default=",".join([*LEARNED, *CLASSICAL]))
    parser.add_argument("--work", help="folder for the data and runs (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(REPO_ROOT))
    from instseg.config import build_cfg
    from instseg.data.catalog import register_datasets
    from instseg.data.sample_data import write_sample_dataset

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in (*LEARNED, *CLASSICAL)]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_semantic_"))
    sample = write_sample_dataset(work / "data", num_train=args.num_train, num_val=args.num_val)
    data_opts = sample.config_opts("bench_semantic")
    cfg = register_datasets(build_cfg([str(LEARNED["unet"])], data_opts))
    truth = val_truth(cfg, cfg.DATASETS.TEST[0])
    num_classes = len(cfg.INSTSEG.SEMANTIC.CLASSES)
    rows = {}
    for method in methods:
        if method in LEARNED:
            rows[method] = run_learned(method, data_opts, args.iters, work)
        else:
            rows[method] = run_classical(method, truth, num_classes, args.clusters)
        print(f"{method}: {rows[method]}", flush=True)
    print(f"\n{'method':<10} {'mIoU':>6} {'fg IoU':>7} {'pix acc':>8} {'train s':>8} {'ms/img':>7}")
    for method, r in rows.items():
        print(
            f"{method:<10} {r['miou']:>6.2f} {r['fg_iou']:>7.2f} {r['pixel_acc']:>8.2f} "
            f"{r['train_s']:>8.1f} {r['predict_ms']:>7.1f}"
        )
    learned = [r["miou"] for m, r in rows.items() if m in LEARNED]
    classical = [r["miou"] for m, r in rows.items() if m in CLASSICAL]
    summary = {
        "iters": args.iters,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "torch_threads": torch.get_num_threads(),
        "methods": rows,
    }
    if learned and classical:
        summary["learned_minus_best_classical_miou"] = round(min(learned) - max(classical), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
