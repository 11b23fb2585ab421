"""Merging overlapping windows' instances: on a generated 4000x3000 scene with its true masks,
each window is given what a perfect model would see in it (the true masks cropped to the window,
some a pixel too large), and the merge must give back each object exactly once."""

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from instseg.data.sample_large import render_large_scene
from instseg.inference.tile_merge import TileMerger
from instseg.inference.tiles import TileOptions

HEIGHT, WIDTH = 3000, 4000
TILES = TileOptions(size=256, overlap=0.2, full_image=True, match_ios=0.5)


def grid_lines(windows, height, width):
    """The tile borders inside the image: where a tile ends and its neighbour goes on."""
    tiles = windows[:-1] if TILES.full_image else windows
    xs = sorted({x1 for _, _, x1, _ in tiles if x1 < width})
    ys = sorted({y1 for _, _, _, y1 in tiles if y1 < height})
    return xs, ys


@pytest.fixture(scope="module")
def scene():
    windows = TILES.windows(HEIGHT, WIDTH)
    xs, ys = grid_lines(windows, HEIGHT, WIDTH)
    return render_large_scene(0, (HEIGHT, WIDTH), cuts_x=xs, cuts_y=ys), windows


def window_view(scene, window, rng, full_pass: bool) -> Instances:
    """What a near-perfect model returns for one window: each object's mask inside the window,
    at the window's size; one in three of those cut by the window's border a pixel too large
    (dilated), as a model's masks of partial objects may be. The full-image pass sees only the
    large objects (small ones are lost at its scale)."""
    x0, y0, x1, y1 = window
    masks, boxes, classes = [], [], []
    for body, (ox, oy, mask) in zip(scene.annotations, scene.masks, strict=True):
        if full_pass and body["area"] < 5000:
            continue
        view = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        left, top = max(ox, x0), max(oy, y0)
        right, bottom = min(ox + mask.shape[1], x1), min(oy + mask.shape[0], y1)
        if left >= right or top >= bottom:
            continue
        view[top - y0 : bottom - y0, left - x0 : right - x0] = mask[
            top - oy : bottom - oy, left - ox : right - ox
        ]
        if not view.any():
            continue
        rows, cols = np.flatnonzero(view.any(axis=1)), np.flatnonzero(view.any(axis=0))
        cut = (cols[0] == 0 < x0 or rows[0] == 0 < y0 or cols[-1] == x1 - x0 - 1 and x1 < WIDTH
               or rows[-1] == y1 - y0 - 1 and y1 < HEIGHT)  # fmt: skip
        if cut and rng.random() < 1 / 3:
            view = np.asarray(
                torch.nn.functional.max_pool2d(
                    torch.from_numpy(view)[None, None].float(), 3, stride=1, padding=1
                )[0, 0].bool()
            )
            rows, cols = np.flatnonzero(view.any(axis=1)), np.flatnonzero(view.any(axis=0))
        masks.append(view)
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        classes.append(body["category_id"] - 1)
    out = Instances((y1 - y0, x1 - x0))
    out.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    out.scores = torch.tensor(rng.uniform(0.6, 1.0, len(boxes)), dtype=torch.float32)
    out.pred_classes = torch.tensor(classes, dtype=torch.int64)
    out.pred_masks = torch.from_numpy(np.array(masks, dtype=bool).reshape(-1, y1 - y0, x1 - x0))
    return out


def truth_iou(masks, index: int, x0: int, y0: int, mask: np.ndarray) -> float:
    """IoU of instance ``index``'s mask with the true mask at (x0, y0), over their joint box."""
    cx, cy, cw, ch = masks.rects()[index]
    left, top = min(x0, cx), min(y0, cy)
    right, bottom = max(x0 + mask.shape[1], cx + cw), max(y0 + mask.shape[0], cy + ch)
    predicted = masks[index, top:bottom, left:right]
    truth = np.zeros_like(predicted)
    truth[y0 - top : y0 - top + mask.shape[0], x0 - left : x0 - left + mask.shape[1]] = mask
    return np.count_nonzero(truth & predicted) / np.count_nonzero(truth | predicted)


def covering(masks, x: int, y: int) -> list[int]:
    """The instances whose mask holds pixel (x, y)."""
    return [i for i in range(len(masks)) if masks[i, y : y + 1, x : x + 1].any()]


def test_every_object_comes_back_once_with_its_mask(scene):
    scene, windows = scene
    assert len(scene.straddling) >= 20 and len(scene.annotations) >= 150
    rng = np.random.default_rng(0)
    merger = TileMerger(windows, HEIGHT, WIDTH, TILES.match_ios)
    for index, window in enumerate(windows):
        merger.add(index, window_view(scene, window, rng, full_pass=index == len(windows) - 1))
    merged = merger.result()
    assert merged.image_size == (HEIGHT, WIDTH)
    assert len(merged) == len(scene.annotations)  # no object lost, none twice
    assert merged.pred_masks.shape == (len(merged), HEIGHT, WIDTH)
    assert torch.all(merged.scores[:-1] >= merged.scores[1:])
    # Each true object: exactly one instance of its class covering its centre pixel, with mask
    # IoU >= 0.8 against the truth; the objects cut by a tile border included.
    masks = merged.pred_masks
    for k, (body, (x0, y0, mask)) in enumerate(zip(scene.annotations, scene.masks, strict=True)):
        x, y, w, h = body["bbox"]
        cy, cx = (int(v) for v in np.argwhere(mask)[len(np.argwhere(mask)) // 2])
        hits = covering(masks, x0 + cx, y0 + cy)
        assert len(hits) == 1, f"object {k} ({'cut' if k in scene.straddling else 'whole'})"
        assert merged.pred_classes[hits[0]] == body["category_id"] - 1
        assert truth_iou(masks, hits[0], x0, y0, mask) >= 0.8
        box = merged.pred_boxes.tensor[hits[0]].tolist()
        assert box == pytest.approx([x, y, x + w, y + h], abs=1.01)


def test_tile_border_objects_are_merged_not_only_box_suppressed(scene):
    """The halves of an object cut at a border each come from one tile; without the merge both
    would stay (their boxes barely overlap), which is what box NMS by IoU keeps."""
    scene, windows = scene
    rng = np.random.default_rng(1)
    k = scene.straddling[0]
    x0, y0, mask = scene.masks[k]
    cut = [i for i, w in enumerate(windows[:-1]) if w[0] < x0 + mask.shape[1] and x0 < w[2]
           and w[1] < y0 + mask.shape[0] and y0 < w[3]]  # fmt: skip
    assert len(cut) >= 2
    merger = TileMerger(windows, HEIGHT, WIDTH, TILES.match_ios)
    for index in cut:
        merger.add(index, window_view(scene, windows[index], rng, full_pass=False))
    merged = merger.result()
    masks, rows, cols = (
        merged.pred_masks,
        slice(y0, y0 + mask.shape[0]),
        slice(x0, x0 + mask.shape[1]),
    )
    owners = [i for i in range(len(merged)) if (masks[i, rows, cols] & mask).any()]
    assert len(owners) == 1
    assert truth_iou(masks, owners[0], x0, y0, mask) >= 0.8


def test_different_classes_and_disjoint_pieces_stay_apart():
    windows = [(0, 0, 100, 100), (80, 0, 180, 100)]
    merger = TileMerger(windows, 100, 180, match_ios=0.5)

    def view(boxes, classes, width=100):
        out = Instances((100, width))
        out.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        out.scores = torch.tensor([0.9] * len(boxes))
        out.pred_classes = torch.tensor(classes)
        masks = torch.zeros((len(boxes), 100, width), dtype=torch.bool)
        for i, (a, b, c, d) in enumerate(boxes):
            masks[i, int(b) : int(d), int(a) : int(c)] = True
        out.pred_masks = masks
        return out

    # Left tile: a square over the shared strip (x 80-100) and one inside; right tile: the same
    # square (shifted by 80) as another class, and one far away.
    merger.add(0, view([[85, 10, 95, 20], [10, 10, 20, 20]], [0, 0]))
    merger.add(1, view([[5, 10, 15, 20], [60, 60, 70, 70]], [1, 0]))
    assert len(merger.result()) == 4
    # The same square as one class in both tiles is one instance.
    merger = TileMerger(windows, 100, 180, match_ios=0.5)
    merger.add(0, view([[85, 10, 95, 20]], [0]))
    merger.add(1, view([[5, 10, 15, 20]], [0]))
    merged = merger.result()
    assert len(merged) == 1 and merged.pred_boxes.tensor[0].tolist() == [85, 10, 95, 20]


def test_box_only_models_merge_by_boxes():
    windows = [(0, 0, 100, 100), (80, 0, 180, 100)]
    merger = TileMerger(windows, 100, 180, match_ios=0.5)
    for index, box in ((0, [70, 10, 100, 30]), (1, [0, 10, 20, 30])):
        out = Instances((100, 100))
        out.pred_boxes = Boxes(torch.tensor([box], dtype=torch.float32))
        out.scores = torch.tensor([0.8 + 0.1 * index])
        out.pred_classes = torch.tensor([2])
        merger.add(index, out)
    merged = merger.result()
    assert not merged.has("pred_masks")
    assert len(merged) == 1 and merged.pred_boxes.tensor[0].tolist() == [70, 10, 100, 30]
    assert merged.scores[0] == pytest.approx(0.9)
