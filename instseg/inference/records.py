"""The one record format of predictions, for image files and video frames alike: Detectron2's
``instances_to_coco_json`` (COCO results: ``image_id``, ``category_id``, ``bbox`` as float XYWH,
``score``, ``segmentation`` as RLE with ``counts`` a str), with the output's category ids, and
``track_id`` for the instances of a tracked video (null for one scoring under
``INSTSEG.TRACK.MIN_SCORE``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pycocotools.mask as mask_util
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances

from instseg.structures.cropped_masks import CroppedMasks


def coco_results(
    instances: Instances, image_id: int, category_ids: Sequence[int] | None = None
) -> list[dict]:
    """COCO results of CPU instances. ``category_ids[c]`` is the output id of contiguous class
    ``c``; without it, ids are the contiguous ids + 1 (COCO ids start at 1)."""
    masks = instances.pred_masks if instances.has("pred_masks") else None
    if isinstance(masks, CroppedMasks):
        # A tiled image: RLE from each crop; densifying each mask to the full image for
        # instances_to_coco_json would give the same RLE ~30x slower.
        fields = {k: v for k, v in instances.get_fields().items() if k != "pred_masks"}
        results = instances_to_coco_json(Instances(instances.image_size, **fields), image_id)
        for k, result in enumerate(results):
            result["segmentation"] = masks.rle(k)
    else:
        results = instances_to_coco_json(instances, image_id)
    track_ids = instances.track_id.tolist() if instances.has("track_id") else None
    for k, result in enumerate(results):
        c = result["category_id"]
        result["category_id"] = category_ids[c] if category_ids is not None else c + 1
        if track_ids is not None:
            result["track_id"] = track_ids[k] or None  # 0: under INSTSEG.TRACK.MIN_SCORE
    return results


def semantic_results(
    class_ids: np.ndarray, image_id: int, category_ids: Sequence[int], names: Sequence[str]
) -> list[dict]:
    """COCO stuff results of a class-id map: one per class present (``image_id``,
    ``category_id``, ``segmentation`` RLE over the image, ``area`` in pixels), plus the class's
    ``name`` and ``pixel_share`` (its fraction of the image's pixels), in class order."""
    counts = np.bincount(class_ids.ravel(), minlength=len(category_ids))
    total = max(1, class_ids.size)
    results = []
    for c in np.flatnonzero(counts[: len(category_ids)]):
        rle = mask_util.encode(np.asfortranarray(class_ids == c, dtype=np.uint8))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append(
            {
                "image_id": image_id,
                "category_id": int(category_ids[c]),
                "name": names[c],
                "segmentation": rle,
                "area": int(counts[c]),
                "pixel_share": round(float(counts[c]) / total, 6),
            }
        )
    return results


def frame_record(index: int, time: float, results: list[dict]) -> dict:
    """One line of a video's ``.predictions.jsonl``: the frame's source index, its time in
    seconds and its COCO results (``image_id`` is the frame index)."""
    return {"frame": index, "time": round(time, 6), "results": results}
