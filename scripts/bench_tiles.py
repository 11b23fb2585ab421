"""Tiled inference against the untiled pass and SAHI's sliced prediction: mask AP, speed, memory.

On the same generated large scenes (``--size``, default 3000x4000: the sample classes, many
12-30 px objects, a few of 300-600 px, some small ones centred on the tile borders; COCO ground
truth) and the same trained model, in one run, each method in its own process (so each has its
own peak RSS):

(a) untiled: ``instseg predict`` as without tiling (the image resized to ``INPUT.MAX_SIZE_TEST``);
(b) instseg tiled: ``instseg predict`` with ``INSTSEG.PREDICT.TILES`` (``--tile``, overlap
    ``--overlap``, the full-image pass on), ``--batch-size`` tiles per forward pass;
(c) SAHI (when installed): ``sahi.predict.get_sliced_prediction`` with SAHI's Detectron2 model
    (``DefaultPredictor``, one tile at a time) on the same tile grid, its full-image pass, and
    its default merge (greedy NMM by IoS 0.5, forced so that it is kept at any threshold).

For the objects centred on tile borders, the run also counts how many each method finds (a
confident instance, score >= 0.5, with mask IoU >= 0.5) and how many of those come out as one
instance (no second confident one with IoU > 0.3). Every method uses the model's config (``TEST.DETECTIONS_PER_IMAGE`` per window) and the score
threshold ``--score``; instseg writes no pictures here (SAHI draws none). Images/s is each
method's whole run over the scenes, model loading included. Mask and box AP come
from pycocotools with up to 1000 detections per image (a scene holds a few hundred objects).
The model is ``--run`` (a finished ``instseg train`` folder, e.g. output/demo/train); the
last line is a JSON object of the figures.

    .venv/bin/python scripts/bench_tiles.py --run output/demo/train [--images 2] [--tile 256]
    .venv/bin/python scripts/bench_tiles.py --run RUN --images 1 --size 10000x10000 --methods tiled
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("untiled", "tiled", "sahi")


def scenes(work: Path, count: int, size: tuple[int, int], tile: int, overlap: float) -> Path:
    """``count`` scenes in ``work/images`` and their ground truth ``work/large.json``."""
    from instseg.data.sample_large import render_large_scene, write_large_scene
    from instseg.inference.tiles import TileOptions

    height, width = size
    windows = TileOptions(tile, overlap, False, 0.5).windows(height, width)
    xs = sorted({x1 for _, _, x1, _ in windows if x1 < width})
    ys = sorted({y1 for _, _, _, y1 in windows if y1 < height})
    merged = None
    for index in range(count):
        part = work / f"scene{index}"
        scene = render_large_scene(index, size, cuts_x=xs, cuts_y=ys)
        json_path = write_large_scene(part, scene, name=f"{index:03d}.jpg")
        coco = json.loads(json_path.read_text())
        for k in scene.straddling:
            coco["annotations"][k]["straddling"] = True
        (work / "images").mkdir(exist_ok=True)
        (part / "images" / f"{index:03d}.jpg").replace(work / "images" / f"{index:03d}.jpg")
        for image in coco["images"]:
            image["id"] = index + 1
        for annotation in coco["annotations"]:
            annotation["image_id"] = index + 1
        if merged is None:
            merged = coco
        else:
            offset = len(merged["annotations"])
            for annotation in coco["annotations"]:
                annotation["id"] += offset
            merged["images"] += coco["images"]
            merged["annotations"] += coco["annotations"]
    path = work / "large.json"
    path.write_text(json.dumps(merged))
    return path


def run_instseg(args, work: Path, tiled: bool) -> list[dict]:
    from instseg.inference.runner import PredictOptions, load_predict_cfg, predict

    out = work / ("tiled" if tiled else "untiled")
    opts = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score)]
    opts += ["INSTSEG.PREDICT.RENDER", "False", "INSTSEG.PREDICT.BATCH_SIZE", str(args.batch_size)]
    if tiled:
        opts += ["INSTSEG.PREDICT.TILES.SIZE", str(args.tile)]
        opts += ["INSTSEG.PREDICT.TILES.OVERLAP", str(args.overlap)]
    options = PredictOptions(
        output_dir=str(out),
        config_files=[str(Path(args.run) / "config.yaml")],
        weights=str(Path(args.run) / "model_final.pth"),
        opts=opts,
        existing="overwrite",
        coco_json=str(work / "large.json"),
        progress=False,
    )
    result = predict(load_predict_cfg(options), str(work / "images"), options)
    if result.errors:
        raise RuntimeError(f"instseg predict failed on {result.errors} image(s)")
    return json.loads((out / "predictions.json").read_text())


def run_sahi(args, work: Path) -> list[dict]:
    import cv2
    import numpy as np
    import pycocotools.mask as mask_util
    from detectron2.engine import DefaultPredictor
    from sahi.models.detectron2 import Detectron2DetectionModel
    from sahi.predict import get_sliced_prediction

    from instseg.inference.settings import load_model_config

    run = Path(args.run)
    cfg = load_model_config(
        [str(run / "config.yaml")],
        str(run / "model_final.pth"),
        ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score)],
    )
    names = list(cfg.INSTSEG.THING_CLASSES)
    model = Detectron2DetectionModel(
        confidence_threshold=args.score,
        category_mapping={str(k): name for k, name in enumerate(names)},
        device="cpu",
        load_at_init=False,
    )
    # What its load_model builds, from this config instead of a model-zoo name.
    model.model, model.category_names = DefaultPredictor(cfg), names
    coco = json.loads((work / "large.json").read_text())
    results = []
    for image in coco["images"]:
        rgb = cv2.imread(str(work / "images" / image["file_name"]))[:, :, ::-1]
        prediction = get_sliced_prediction(
            np.ascontiguousarray(rgb),
            model,
            slice_height=args.tile,
            slice_width=args.tile,
            overlap_height_ratio=args.overlap,
            overlap_width_ratio=args.overlap,
            perform_standard_pred=True,
            postprocess_type="GREEDYNMM",
            postprocess_match_metric="IOS",
            postprocess_match_threshold=0.5,
            force_postprocess_type=True,
            verbose=0,
        )
        height, width = image["height"], image["width"]
        for p in prediction.object_prediction_list:
            x0, y0, x1, y1 = p.bbox.to_xyxy()
            polygons = [s for s in p.mask.segmentation if len(s) >= 6] if p.mask else []
            if not polygons:
                continue
            rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
            rle["counts"] = rle["counts"].decode("utf-8")
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": int(p.category.id) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(p.score.value),
                    "segmentation": rle,
                }
            )
    return results


def worker(args) -> None:
    """One method in this process; prints a JSON line (images/s and the results' file)."""
    work = Path(args.work_dir)
    images = len(json.loads((work / "large.json").read_text())["images"])
    start = time.perf_counter()
    if args.worker == "sahi":
        results = run_sahi(args, work)
    else:
        results = run_instseg(args, work, tiled=args.worker == "tiled")
    seconds = time.perf_counter() - start
    path = work / f"{args.worker}_results.json"
    path.write_text(json.dumps(results))
    print(json.dumps({"seconds": seconds, "images_per_s": images / seconds, "results": str(path)}))


def measure(args, work: Path, method: str) -> dict:
    """Run ``method`` in a fresh process under a probe that reports its peak RSS."""
    command = [sys.executable, __file__, "--worker", method, "--work-dir", str(work)]
    command += ["--run", args.run, "--tile", str(args.tile), "--overlap", str(args.overlap)]
    command += ["--batch-size", str(args.batch_size), "--score", str(args.score)]
    probe = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(done.stderr[-3000:] if done.returncode else '')\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else '{}')\n"
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, env=env
    )
    lines = done.stdout.strip().splitlines()
    returncode, max_rss_kb = lines[0].split()
    if int(returncode) != 0:
        raise RuntimeError(f"{method} failed:\n{done.stderr}")
    figures = json.loads(lines[1])
    figures["peak_rss_mb"] = int(max_rss_kb) / 1024.0
    return figures


def average_precision(gt_path: Path, results: list[dict]) -> dict[str, float]:
    """COCO mask and box AP (x100) with up to 1000 detections per image."""
    from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        if not results:
            return {"segm": 0.0, "bbox": 0.0}
        detections = gt.loadRes(results)
        out = {}
        for kind in ("segm", "bbox"):
            evaluation = COCOevalMaxDets(gt, detections, kind)
            evaluation.params.maxDets = [1, 10, 1000]
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            out[kind] = max(0.0, 100.0 * float(evaluation.stats[0]))
    return out


def cut_objects_once(gt_path: Path, results: list[dict], min_score: float = 0.5) -> tuple:
    """The objects centred on a tile border: how many there are, how many some confident
    instance finds (mask IoU >= 0.5), how many of those are covered by exactly one confident
    instance (mask IoU > 0.3), and how many come out as one instance with mask IoU >= 0.8."""
    import numpy as np
    import pycocotools.mask as mask_util

    truth = json.loads(gt_path.read_text())
    sizes = {i["id"]: (i["height"], i["width"]) for i in truth["images"]}
    total = found = once = exact = 0
    for annotation in truth["annotations"]:
        if not annotation.get("straddling"):
            continue
        total += 1
        height, width = sizes[annotation["image_id"]]
        rle = mask_util.merge(mask_util.frPyObjects(annotation["segmentation"], height, width))
        x, y, w, h = annotation["bbox"]
        near = [
            r["segmentation"]
            for r in results
            if r["image_id"] == annotation["image_id"] and r["score"] >= min_score
            and r["bbox"][0] < x + w and x < r["bbox"][0] + r["bbox"][2]
            and r["bbox"][1] < y + h and y < r["bbox"][1] + r["bbox"][3]
        ]  # fmt: skip
        if not near:
            continue
        ious = np.asarray(mask_util.iou(near, [rle], [0])).ravel()
        if ious.max() >= 0.5:
            found += 1
            once += int((ious > 0.3).sum() == 1)
            exact += int((ious > 0.3).sum() == 1 and ious.max() >= 0.8)
    return total, found, once, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished instseg train folder")
    parser.add_argument("--images", type=int, default=2, help="scenes (default 2)")
    parser.add_argument("--size", default="3000x4000", help="HxW of each scene (3000x4000)")
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels (256)")
    parser.add_argument("--overlap", type=float, default=0.2, help="tile overlap fraction (0.2)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (4)")
    parser.add_argument("--score", type=float, default=0.3, help="score threshold (0.3)")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"which rows (default {','.join(METHODS)})"
    )
    parser.add_argument("--work-dir", help="keep files here (default: a temporary folder)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_tiles_"))
    work.mkdir(parents=True, exist_ok=True)
    height, width = (int(v) for v in args.size.lower().split("x"))
    gt_path = scenes(work, args.images, (height, width), args.tile, args.overlap)
    truth = json.loads(gt_path.read_text())
    print(
        f"{args.images} scene(s) {width}x{height}, {len(truth['annotations'])} objects; "
        f"model {args.run}; tiles {args.tile} px, overlap {args.overlap}, batch {args.batch_size}"
    )
    methods = [m.strip() for m in args.methods.split(",") if m.strip() in METHODS]
    if "sahi" in methods:
        try:
            import sahi  # noqa: F401
        except ImportError:
            print("SAHI is not installed (pip install sahi): its row is left out")
            methods.remove("sahi")
    figures: dict = {"images": args.images, "width": width, "height": height, "tile": args.tile}
    for method in methods:
        row = measure(args, work, method)
        results = json.loads(Path(row["results"]).read_text())
        ap = average_precision(gt_path, results)
        total, found, once, exact = cut_objects_once(gt_path, results)
        print(
            f"{method:<8} mask AP {ap['segm']:5.1f}  box AP {ap['bbox']:5.1f}  "
            f"{row['images_per_s']:.4f} images/s  peak RSS {row['peak_rss_mb']:.0f} MB  "
            f"({len(results)} instances; of {total} border objects found {found}, as one "
            f"instance {once}, one with mask IoU >= 0.8 {exact})"
        )
        figures[method] = {
            "mask_ap": round(ap["segm"], 2),
            "box_ap": round(ap["bbox"], 2),
            "images_per_s": round(row["images_per_s"], 4),
            "peak_rss_mb": round(row["peak_rss_mb"], 1),
            "instances": len(results),
            "border_objects_found": found,
            "border_objects": total,
            "border_objects_as_one": once,
            "border_objects_as_one_iou_08": exact,
        }
    if "sahi" in figures and "tiled" in figures:
        figures["tiled_over_sahi_speed"] = round(
            figures["tiled"]["images_per_s"] / figures["sahi"]["images_per_s"], 2
        )
        figures["tiled_minus_sahi_mask_ap"] = round(
            figures["tiled"]["mask_ap"] - figures["sahi"]["mask_ap"], 2
        )
    if "untiled" in figures and "tiled" in figures:
        figures["tiled_minus_untiled_mask_ap"] = round(
            figures["tiled"]["mask_ap"] - figures["untiled"]["mask_ap"], 2
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    main()
