"""Cost of the dataset check that ``train`` and ``eval`` run first, beside what training costs.

Writes a COCO JSON of N images (default 10,000, tiny PNG files, 3 polygon annotations each),
then times, in one run: Detectron2's own ``load_coco_json`` of it (what training pays anyway),
the check (JSON structure, ids, geometry, file names, image headers), the check with
``INSTSEG.DATASETS.CHECK_IMAGES`` (image data verified too), and one training iteration of the
demo config on the sample data. The last line is a JSON object of all figures.

    .venv/bin/python scripts/bench_dataset_check.py [--images 10000]
"""

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from detectron2.data.datasets import load_coco_json
from tqdm import tqdm

from instseg.config import build_cfg
from instseg.data.catalog import register_datasets
from instseg.data.preflight import check_dataset
from instseg.data.sample_data import write_sample_dataset
from instseg.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo_R18_FPN_cpu.yaml"


def write_dataset(root: Path, count: int) -> Path:
    images, annotations = [], []
    (root / "images").mkdir(parents=True)
    pixels = np.full((48, 64, 3), 128, np.uint8)
    for i in tqdm(range(count), desc="writing images", unit="img"):
        name = f"{i // 1000:02d}/{i:05d}.png"
        (root / "images" / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(root / "images" / name), pixels)
        images.append({"id": i + 1, "file_name": name, "width": 64, "height": 48})
        for k in range(3):
            x, y = 4 + 10 * k, 4 + 8 * k
            polygon = [x, y, x + 8, y, x + 8, y + 8, x, y + 8]
            annotations.append(
                {
                    "id": 3 * i + k + 1,
                    "image_id": i + 1,
                    "category_id": k + 1,
                    "bbox": [x, y, 8, 8],
                    "area": 64,
                    "segmentation": [polygon],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": f"c{k}"} for k in range(3)]
    json_path = root / "instances.json"
    json_path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return json_path


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def training_iteration_s(work: Path) -> float:
    sample = write_sample_dataset(work / "sample", num_train=8, num_val=2)
    opts = [
        "INSTSEG.DATASETS.TRAIN.NAME", "bench_check_train",
        "INSTSEG.DATASETS.TRAIN.JSON", str(sample.train_json),
        "INSTSEG.DATASETS.TRAIN.IMAGES", str(sample.train_images),
        "INSTSEG.DATASETS.VAL.NAME", "",
        "SOLVER.MAX_ITER", "12", "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "INSTSEG.TRAIN.PLOT_CURVES", "False", "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(work / "train"),
    ]  # fmt: skip
    cfg = register_datasets(build_cfg([DEMO_CONFIG], opts))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    times = [v for v, _ in trainer.storage.history("time").values()][4:]
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    logging.getLogger("instseg").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        json_path = write_dataset(work / "data", args.images)
        root = str(work / "data" / "images")
        load_s = timed(lambda: load_coco_json(str(json_path), root, "bench_check"))
        check_s = timed(lambda: check_dataset(str(json_path), root))
        verify_s = timed(lambda: check_dataset(str(json_path), root, verify_images=True))
        iteration_s = training_iteration_s(work)
    per_1000 = 1000.0 / args.images
    figures = {
        "images": args.images,
        "detectron2_load_coco_json_s": round(load_s, 2),
        "check_s": round(check_s, 2),
        "check_with_image_data_s": round(verify_s, 2),
        "check_s_per_1000_images": round(check_s * per_1000, 3),
        "training_iteration_s": round(iteration_s, 3),
        "check_per_1000_images_in_iterations": round(check_s * per_1000 / iteration_s, 2),
    }
    print(f"{args.images} images: Detectron2 load_coco_json {load_s:.2f}s")
    print(f"check {check_s:.2f}s ({check_s * per_1000:.3f}s per 1000 images)")
    print(f"check with image data {verify_s:.2f}s")
    print(
        f"one demo training iteration {iteration_s:.3f}s: the check of 1000 images costs "
        f"{figures['check_per_1000_images_in_iterations']} iteration(s)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
