"""Score trackers alone on the scripted clip's ground truth with detector-like noise.

The clip (instseg.data.sample_video.tracking_clip: two objects crossing, one passing behind
another, one leaving, one entering) gives true visible boxes per frame; noisy_detections jitters
them, drops some and adds false positives, with one RNG seed per run. Each tracker sees the same
detections; py-motmetrics gives MOTA, IDF1 and identity switches against the true ids.

Trackers: instseg's default (Detectron2's Hungarian tracker, instseg.inference.tracking), and
Norfair's Kalman-filter tracker with IoU distance when norfair is installed (a candidate, not a
dependency). Last line: a JSON object with every figure.

    .venv/bin/python scripts/bench_tracking.py --seeds 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from instseg.config import build_cfg
from instseg.data.sample_video import noisy_detections, tracking_clip
from instseg.inference.tracking import Tracker, TrackOptions

SIZE = (240, 320)


def instseg_tracker(options: TrackOptions):
    tracker = Tracker(options, SIZE[1], SIZE[0])
    return lambda instances: tracker.update(instances).tolist()


def norfair_tracker(options: TrackOptions):
    import norfair

    tracker = norfair.Tracker(
        distance_function="iou",
        distance_threshold=1.0 - options.min_iou,
        hit_counter_max=options.max_lost_frames,
        initialization_delay=0,
    )

    def update(instances) -> list[int]:
        detections = [
            norfair.Detection(points=box.reshape(2, 2), scores=np.array([s, s]), label=c, data=i)
            for i, (box, c, s) in enumerate(
                zip(
                    instances.pred_boxes.tensor.numpy(),
                    instances.pred_classes.tolist(),
                    instances.scores.tolist(),
                    strict=True,
                )
            )
        ]
        ids = [-1 - i for i in range(len(detections))]  # unconfirmed: ids of their own
        for obj in tracker.update(detections=detections):
            if any(obj.last_detection is d for d in detections):
                ids[obj.last_detection.data] = obj.id
        return ids

    return update


def score(make, seed: int, frames: int) -> dict:
    import motmetrics as mm

    rng = np.random.default_rng(seed)
    update = make()
    accumulator = mm.MOTAccumulator(auto_id=True)
    seconds = 0.0
    for _, truth in tracking_clip(num_frames=frames, size=SIZE):
        detections = noisy_detections(truth, rng, SIZE)
        start = time.perf_counter()
        ids = update(detections)
        seconds += time.perf_counter() - start
        gt = np.array([o.box for o in truth], dtype=np.float64).reshape(-1, 4)
        hyp = detections.pred_boxes.tensor.numpy().astype(np.float64)
        gt[:, 2:] -= gt[:, :2]
        hyp[:, 2:] -= hyp[:, :2]
        accumulator.update(
            [o.track_id for o in truth], ids, mm.distances.iou_matrix(gt, hyp, max_iou=0.5)
        )
    row = mm.metrics.create().compute(
        accumulator, metrics=["mota", "idf1", "num_switches"], name="clip"
    )
    row = row.iloc[0]
    return {
        "mota": float(row["mota"]),
        "idf1": float(row["idf1"]),
        "switches": int(row["num_switches"]),
        "ms_per_frame": 1000.0 * seconds / frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="noise seeds (8)")
    parser.add_argument("--frames", type=int, default=60, help="clip length (60)")
    args = parser.parse_args()
    options = TrackOptions.from_cfg(build_cfg(freeze=False))
    trackers = {"instseg_hungarian": lambda: instseg_tracker(options)}
    try:
        import norfair  # noqa: F401

        trackers["norfair_iou"] = lambda: norfair_tracker(options)
    except ImportError:
        print("norfair not installed: scoring instseg's tracker only")
    results: dict[str, list[dict]] = {name: [] for name in trackers}
    for seed in range(args.seeds):
        line = []
        for name, make in trackers.items():
            r = score(make, seed, args.frames)
            results[name].append(r)
            line.append(f"{name} MOTA {r['mota']:.3f} IDF1 {r['idf1']:.3f} sw {r['switches']}")
        print(f"seed {seed}: " + "; ".join(line))
    figures = {"seeds": args.seeds, "frames": args.frames}
    for name, runs in results.items():
        figures[name] = {
            "mota_median": round(statistics.median(r["mota"] for r in runs), 3),
            "idf1_median": round(statistics.median(r["idf1"] for r in runs), 3),
            "idf1_min": round(min(r["idf1"] for r in runs), 3),
            "switches_max": max(r["switches"] for r in runs),
            "ms_per_frame": round(statistics.median(r["ms_per_frame"] for r in runs), 3),
        }
        print(f"{name}: {figures[name]}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
