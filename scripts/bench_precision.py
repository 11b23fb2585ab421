"""Accuracy and speed of bf16 inference against fp32 on a trained model, in one run.

Trains the demo config on the sample dataset (or takes ``--run``, a finished run folder), then
evaluates its checkpoint on the val set in fp32 and in bf16 (COCO bbox and segm AP, through
``instseg eval``'s path), matches the two precisions' instances one to one by box IoU to count
class agreement, and times the model-only forward pass in each. The last line is a JSON object.

    .venv/bin/python scripts/bench_precision.py [--run RUN] [--quick]
    .venv/bin/python scripts/bench_precision.py --config configs/mask_rcnn_R50_FPN_scratch_GN.yaml \
        SOLVER.MAX_ITER 300 INPUT.MIN_SIZE_TEST 512 ...   # R50-FPN trained briefly

Without AVX512-BF16/AMX, oneDNN emulates bf16: the AP and class figures still hold (products of
bf16 numbers are exact in fp32, which both paths accumulate in), the speeds do not.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from detectron2.structures import pairwise_iou

from instseg.data.sample_data import write_sample_dataset
from instseg.demo import QUICK_OPTS
from instseg.engine.evaluate import EvalRequest, run_evaluation
from instseg.engine.precision import cpu_fast_bf16
from instseg.engine.trainer import TrainRequest, train
from instseg.inference.model import BatchPredictor
from instseg.inference.settings import load_model_config
from instseg.io.images import read_image

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo_R18_FPN_cpu.yaml"


def predictions(run: Path, precision: str, images) -> tuple[list, float]:
    opts = ["MODEL.DEVICE", "cpu", "INSTSEG.PREDICT.PRECISION", precision]
    predictor = BatchPredictor(
        load_model_config([str(run / "config.yaml")], str(run / "model_final.pth"), opts)
    )
    inputs = [predictor.preprocess(image) for image in images]
    predictor.predict(inputs[:1])  # warm-up
    start = time.perf_counter()
    outputs = [predictor.predict([x])[0] for x in inputs]
    return outputs, len(inputs) / (time.perf_counter() - start)


def class_agreement(fp32, bf16, min_score: float = 0.0, min_iou: float = 0.7) -> tuple[int, int]:
    """(pairs, pairs of one class) of the fp32 instances scoring ``min_score`` or more, each
    matched to the bf16 instance of highest box IoU (above ``min_iou``)."""
    pairs = agree = 0
    for a, b in zip(fp32, bf16, strict=True):
        if not len(a) or not len(b):
            continue
        best, index = pairwise_iou(a.pred_boxes, b.pred_boxes).max(dim=1)
        for i in torch.nonzero((best > min_iou) & (a.scores >= min_score)).flatten().tolist():
            pairs += 1
            agree += int(a.pred_classes[i] == b.pred_classes[index[i]])
    return pairs, agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished run folder (default: train the demo config)")
    parser.add_argument("--quick", action="store_true", help="the quick demo schedule")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="config to train (the demo's)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for training")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_precision_"))
    sample = write_sample_dataset(work / "sample", seed=0)
    data_opts = sample.config_opts("bench_precision")
    run = Path(args.run) if args.run else work / "train"
    if not args.run:
        opts = data_opts + (QUICK_OPTS if args.quick else []) + args.opts
        train(TrainRequest([args.config], opts=opts, output_dir=str(run)))
    results = {}
    for precision in ("fp32", "bf16"):
        request = EvalRequest(
            config_files=[str(run / "config.yaml")],
            weights=str(run / "model_final.pth"),
            opts=[*data_opts, "INSTSEG.PREDICT.PRECISION", precision],
            output_dir=str(work / f"eval_{precision}"),
        )
        results[precision], _ = run_evaluation(request)
    images = [read_image(p) for p in sorted(sample.val_images.glob("*.jpg"))]
    fp32, fp32_speed = predictions(run, "fp32", images)
    bf16, bf16_speed = predictions(run, "bf16", images)
    pairs, agree = class_agreement(fp32, bf16)
    # The instances drawn by default (INSTSEG.PREDICT.DRAW_SCORE): near-ties of class scores,
    # where the two precisions part, are mostly among the low-score ones.
    drawn_pairs, drawn_agree = class_agreement(fp32, bf16, min_score=0.5)
    figures = {
        "run": str(run),
        "config": args.config if not args.run else str(run / "config.yaml"),
        "bf16_native": cpu_fast_bf16()[0],
        "ap": {p: {t: round(results[p][t]["AP"], 2) for t in ("bbox", "segm")} for p in results},
        "ap_delta_bf16_minus_fp32": {
            t: round(results["bf16"][t]["AP"] - results["fp32"][t]["AP"], 2)
            for t in ("bbox", "segm")
        },
        "matched_pairs": pairs,
        "class_agreement": round(agree / pairs, 4) if pairs else None,
        "matched_pairs_score_05": drawn_pairs,
        "class_agreement_score_05": round(drawn_agree / drawn_pairs, 4) if drawn_pairs else None,
        "model_images_per_s": {"fp32": round(fp32_speed, 2), "bf16": round(bf16_speed, 2)},
    }
    for precision, ap in figures["ap"].items():
        print(f"{precision}: bbox AP {ap['bbox']:.2f}, segm AP {ap['segm']:.2f}")
    print(f"bf16 - fp32: {figures['ap_delta_bf16_minus_fp32']}")
    print(f"class agreement of {pairs} matched instances: {figures['class_agreement']}")
    print(f"  of the {drawn_pairs} scoring >= 0.5 in fp32: {figures['class_agreement_score_05']}")
    print(f"model only, images/s: {figures['model_images_per_s']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
