"""CroppedMasks stands in for a dense N x H x W mask tensor: the same masks through indexing,
iteration, regions, the id image and COCO RLE (checked against pycocotools on the dense masks)."""

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances

from instseg.inference.records import coco_results
from instseg.io.images import instance_id_image
from instseg.structures.cropped_masks import CroppedMasks


def random_crops(rng, count, height, width):
    crops = []
    for _ in range(count):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = rng.random((h, w)) < 0.6
        crop[0, 0] = crop[-1, -1] = True  # tight: touches every side
        crops.append((x0, y0, crop))
    return crops


def dense_of(crops, height, width):
    dense = np.zeros((len(crops), height, width), dtype=bool)
    for k, (x0, y0, crop) in enumerate(crops):
        dense[k, y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return dense


def test_indexing_iteration_and_regions_match_the_dense_masks():
    rng = np.random.default_rng(0)
    crops = random_crops(rng, 12, 90, 130)
    masks, dense = CroppedMasks(crops, 90, 130), dense_of(crops, 90, 130)
    assert masks.shape == dense.shape and len(masks) == 12
    assert np.array_equal(np.asarray(masks), dense)
    assert all(np.array_equal(a, b) for a, b in zip(masks, dense, strict=True))
    assert np.array_equal(masks[3], dense[3])
    assert np.array_equal(masks[5, 10:50, 20:100], dense[5, 10:50, 20:100])
    keep = torch.tensor([k % 3 == 0 for k in range(12)])
    assert np.array_equal(np.asarray(masks[keep]), dense[keep.numpy()])
    order = torch.tensor([4, 0, 7])
    assert np.array_equal(np.asarray(masks[order]), dense[order.numpy()])
    assert np.array_equal(masks.id_image(), instance_id_image(dense))
    rects = masks.rects()
    assert rects.tolist() == [[x0, y0, c.shape[1], c.shape[0]] for x0, y0, c in crops]


def test_rle_from_crops_is_pycocotools_encoding_of_the_full_masks():
    rng = np.random.default_rng(1)
    height, width = 70, 110
    crops = random_crops(rng, 20, height, width)
    crops.append((0, 0, np.ones((height, width), dtype=bool)))  # the whole image
    crops.append((width - 1, height - 1, np.ones((1, 1), dtype=bool)))  # the last pixel
    masks, dense = CroppedMasks(crops, height, width), dense_of(crops, height, width)
    instances = Instances((height, width))
    instances.pred_boxes = Boxes(torch.zeros((len(crops), 4)))
    instances.scores = torch.linspace(1, 0.1, len(crops))
    instances.pred_classes = torch.zeros(len(crops), dtype=torch.int64)
    instances.pred_masks = masks
    expected = instances_to_coco_json(
        Instances(
            (height, width), **{**instances.get_fields(), "pred_masks": torch.from_numpy(dense)}
        ),
        7,
    )
    got = coco_results(instances, 7, category_ids=[0])
    assert [r["segmentation"] for r in got] == [r["segmentation"] for r in expected]
    for k, result in enumerate(got):
        assert np.array_equal(mask_util.decode(result["segmentation"]).astype(bool), dense[k])
