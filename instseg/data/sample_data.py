"""Deterministic synthetic COCO instance-segmentation data: the embedded default dataset.

The demo and the tests need data that exists without downloads, is byte-identical for a seed, and
is hard enough that a model must learn shape: colour only hints at the class (each class draws its
hue from a band overlapping its neighbours'), every instance has its own texture, backgrounds are
cluttered with unannotated strokes and soft blobs, and objects occlude each other (annotations
cover the visible part only). Objects stand out from what they cover and distractors stay thinner
than the smallest object, so that a small Mask R-CNN learns it from scratch on a CPU in minutes.

The scene-drawing pieces (``SceneObject``, ``make_background``, ``draw_scene``) are public so that
moving-object videos (:mod:`instseg.data.sample_video`) share the same classes and look.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from instseg.data.sample_shapes import (
    CLASS_NAMES,
    CONTOUR_TOLERANCE,
    CONTOUR_UPSAMPLE,
    CONTRAST_TRIES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    JPEG_QUALITY,
    MAX_OBJECTS_PER_IMAGE,
    MIN_OBJECT_CONTRAST,
    MIN_OBJECT_SIZE,
    MIN_OBJECTS_PER_IMAGE,
    MIN_VISIBLE_AREA,
    MIN_VISIBLE_FRACTION,
    SENSOR_NOISE_SIGMA,
    SceneObject,
    color_contrast,
    mean_color,
    random_bgr_color,
    random_scene_object,
    rasterize,
    texture_patch,
    with_random_appearance,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleDataset:
    """Where a generated dataset lives, in the form training code registers it."""

    train_json: Path
    val_json: Path
    train_images: Path
    val_images: Path
    class_names: tuple[str, ...]

    def config_opts(self, prefix: str) -> list[str]:
        """``KEY VALUE`` overrides declaring it as the train (``PREFIX_train``) and val
        (``PREFIX_val``) sets of a config."""
        return [
            "INSTSEG.DATASETS.TRAIN.NAME", f"{prefix}_train",
            "INSTSEG.DATASETS.TRAIN.JSON", str(self.train_json),
            "INSTSEG.DATASETS.TRAIN.IMAGES", str(self.train_images),
            "INSTSEG.DATASETS.VAL.NAME", f"{prefix}_val",
            "INSTSEG.DATASETS.VAL.JSON", str(self.val_json),
            "INSTSEG.DATASETS.VAL.IMAGES", str(self.val_images),
        ]  # fmt: skip


def draw_scene(
    background: np.ndarray, objects: Sequence[SceneObject]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paint objects in order over ``background`` (later ones on top).

    Returns the BGR uint8 image and, per object, a bool mask of its pixels still visible after all
    later objects were drawn (all False when it is off-image or fully hidden).
    """
    height, width = background.shape[:2]
    image = background.copy()
    owner = np.full((height, width), -1, dtype=np.int16)
    for index, obj in enumerate(objects):
        raster = rasterize(obj, height, width)
        if raster is None:
            continue
        x0, y0, local_mask = raster
        patch_h, patch_w = local_mask.shape
        texture = texture_patch(obj, x0, y0, patch_h, patch_w)
        region = image[y0 : y0 + patch_h, x0 : x0 + patch_w]
        region[local_mask] = np.clip(texture[local_mask] + 0.5, 0, 255).astype(np.uint8)
        owner[y0 : y0 + patch_h, x0 : x0 + patch_w][local_mask] = index
    visible_masks = [owner == index for index in range(len(objects))]
    return image, visible_masks


def make_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Cluttered BGR uint8 background: gradient, smooth and fine noise, soft blobs, thin strokes.

    Nothing here is annotated, so none of it reuses the object shapes: blobs are blurred irregular
    patches and strokes are at most 2 px wide, thinner than the smallest object.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(0.0, 2.0 * math.pi)
    ramp = xx * math.cos(direction) + yy * math.sin(direction)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    start = np.asarray(random_bgr_color(rng, (0.0, 0.6), (0.25, 0.9)), dtype=np.float32)
    end = np.asarray(random_bgr_color(rng, (0.0, 0.6), (0.25, 0.9)), dtype=np.float32)
    canvas = start + ramp[..., None] * (end - start)

    coarse_cells = int(rng.integers(3, 8))
    coarse = rng.standard_normal((coarse_cells, coarse_cells, 3), dtype=np.float32)
    canvas += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 22.0
    fine = rng.standard_normal((max(height // 6, 2), max(width // 6, 2), 3), dtype=np.float32)
    canvas += cv2.resize(fine, (width, height), interpolation=cv2.INTER_LINEAR) * 9.0

    for _ in range(int(rng.integers(2, 6))):
        _paint_blob(rng, canvas, height, width)
    canvas += rng.standard_normal((height, width, 3), dtype=np.float32) * 5.0
    background = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)

    for _ in range(int(rng.integers(3, 9))):
        points = [rng.uniform((0.0, 0.0), (width, height))]
        for _ in range(int(rng.integers(1, 5))):
            step = rng.uniform(-0.35, 0.35, size=2) * (width, height)
            points.append(points[-1] + step)
        polyline = np.round(np.asarray(points)).astype(np.int32)
        stroke_color = random_bgr_color(rng, (0.0, 1.0), (0.1, 1.0))
        thickness = int(rng.integers(1, 3))
        cv2.polylines(background, [polyline], False, stroke_color, thickness, cv2.LINE_AA)
    return background


def _paint_blob(rng: np.random.Generator, canvas: np.ndarray, height: int, width: int) -> None:
    """Alpha-blend a blurred irregular patch, soft-edged so it never reads as an object."""
    radius = rng.uniform(0.06, 0.25) * min(height, width)
    center = rng.uniform((0.0, 0.0), (width, height))
    vertex_count = int(rng.integers(7, 14))
    angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, vertex_count))
    radii = radius * rng.uniform(0.35, 1.0, vertex_count)
    points = center + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    sigma = max(radius / 3.0, 2.0)
    strength = rng.uniform(0.3, 0.65)
    color = np.asarray(random_bgr_color(rng, (0.0, 0.8), (0.15, 0.95)), dtype=np.float32)
    # Only the blob's neighbourhood (polygon plus blur reach) is touched.
    reach = radius + 3.0 * sigma
    x0, y0 = max(int(center[0] - reach), 0), max(int(center[1] - reach), 0)
    x1, y1 = min(int(center[0] + reach) + 1, width), min(int(center[1] + reach) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return
    alpha = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    cv2.fillPoly(alpha, [np.round(points - (x0, y0)).astype(np.int32)], 1.0)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT) * strength
    region = canvas[y0:y1, x0:x1]
    region += alpha[..., None] * (color - region)


def _has_holes(mask: np.ndarray) -> bool:
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def sample_scene_objects(
    rng: np.random.Generator, background: np.ndarray, count: int
) -> list[SceneObject]:
    """Up to ``count`` random objects for ``background`` in drawing order, occlusion kept partial.

    A candidate is rejected if it would hide more than half of an earlier object or punch a hole
    into one (COCO polygons cannot describe holes). Each accepted object's colour is redrawn until
    it stands out from what it covers (MIN_OBJECT_CONTRAST), keeping the best of a few draws.
    """
    height, width = background.shape[:2]
    objects: list[SceneObject] = []
    full_areas: list[int] = []
    owner = np.full((height, width), -1, dtype=np.int16)
    # The background with each accepted object painted in its average colour: what a new object
    # would be seen against.
    underlay = background.astype(np.float32)
    for _ in range(count * 8):
        if len(objects) >= count:
            break
        candidate = random_scene_object(rng, height, width)
        raster = rasterize(candidate, height, width)
        if raster is None:
            continue
        x0, y0, local_mask = raster
        full_area = int(local_mask.sum())
        if full_area < 2 * MIN_VISIBLE_AREA:
            continue
        patch_h, patch_w = local_mask.shape
        trial = owner.copy()
        trial_region = trial[y0 : y0 + patch_h, x0 : x0 + patch_w]
        covered = np.unique(trial_region[local_mask])
        trial_region[local_mask] = len(objects)
        acceptable = True
        for earlier in covered[covered >= 0]:
            still_visible = trial == earlier
            if still_visible.sum() < MIN_VISIBLE_FRACTION * full_areas[earlier] or _has_holes(
                still_visible
            ):
                acceptable = False
                break
        if acceptable:
            underneath = underlay[y0 : y0 + patch_h, x0 : x0 + patch_w][local_mask]
            best_contrast = color_contrast(candidate, underneath)
            for _ in range(CONTRAST_TRIES):
                if best_contrast >= MIN_OBJECT_CONTRAST:
                    break
                recoloured = with_random_appearance(rng, candidate)
                contrast = color_contrast(recoloured, underneath)
                if contrast > best_contrast:
                    candidate, best_contrast = recoloured, contrast
            underlay[y0 : y0 + patch_h, x0 : x0 + patch_w][local_mask] = mean_color(candidate)
            objects.append(candidate)
            full_areas.append(full_area)
            owner = trial
    return objects


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons (flat x, y lists) tracing a bool mask's pixel edges, one per component.

    Holes are not represented; every polygon has at least 3 points.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    y0, x0 = int(rows[0]), int(cols[0])
    crop = mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1].astype(np.uint8)
    scale = CONTOUR_UPSAMPLE
    # A zero border keeps contours off the array edge.
    upsampled = np.zeros(((crop.shape[0] + 2) * scale, (crop.shape[1] + 2) * scale), np.uint8)
    upsampled[scale:-scale, scale:-scale] = np.kron(crop, np.ones((scale, scale), np.uint8))
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        simplified = cv2.approxPolyDP(contour, CONTOUR_TOLERANCE, True)
        if len(simplified) < 3:
            simplified = contour
        points = simplified.reshape(-1, 2)
        if len(points) < 3:
            continue
        # Sub-pixel centres of the upsampled boundary sit 1/(2*scale) px inside the pixel edge.
        coords = (points.astype(np.float64) + 0.5) / scale + (x0 - 1, y0 - 1)
        polygons.append([round(float(value), 3) for value in coords.ravel()])
    return polygons


def scene_annotations(
    objects: Sequence[SceneObject], visible_masks: Sequence[np.ndarray]
) -> list[dict]:
    """COCO annotation bodies (no ids) for the objects with at least MIN_VISIBLE_AREA visible pixels.

    Segmentation, area and bbox all describe the visible mask, not the full shape.
    """
    annotations = []
    for obj, visible in zip(objects, visible_masks, strict=True):
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA:
            continue
        polygons = mask_to_polygons(visible)
        if not polygons:
            continue
        rows = np.flatnonzero(visible.any(axis=1))
        cols = np.flatnonzero(visible.any(axis=0))
        bbox = [
            float(cols[0]),
            float(rows[0]),
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
        ]
        annotations.append(
            {
                "category_id": obj.class_index + 1,
                "segmentation": polygons,
                "area": float(area),
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    return annotations


def render_sample_image(
    seed: int | Sequence[int], image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
) -> tuple[np.ndarray, list[dict]]:
    """One dataset image and its annotation bodies (category_id, segmentation, area, bbox)."""
    height, width = image_size
    rng = np.random.default_rng(seed)
    background = make_background(rng, height, width)
    count = int(rng.integers(MIN_OBJECTS_PER_IMAGE, MAX_OBJECTS_PER_IMAGE + 1))
    objects = sample_scene_objects(rng, background, count)
    image, visible_masks = draw_scene(background, objects)
    noise = rng.standard_normal(image.shape, dtype=np.float32) * SENSOR_NOISE_SIGMA
    image = np.clip(image.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
    return image, scene_annotations(objects, visible_masks)


def _write_split(
    split: str,
    split_index: int,
    num_images: int,
    seed: int,
    image_size: tuple[int, int],
    image_dir: Path,
    json_path: Path,
) -> None:
    height, width = image_size
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_index in range(num_images):
        # Each image has its own seed stream, so changing one split's size leaves the others alone.
        image, bodies = render_sample_image((seed, split_index, image_index), image_size)
        file_name = f"{image_index:05d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {split}/{file_name}")
        (image_dir / file_name).write_bytes(encoded.tobytes())
        image_id = image_index + 1
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for body in bodies:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **body})
    coco = {
        "info": {
            "description": f"instseg synthetic shapes, {split} split, seed {seed}",
            "version": "1",
        },
        "licenses": [],
        "categories": [
            {"id": index + 1, "name": name, "supercategory": "shape"}
            for index, name in enumerate(CLASS_NAMES)
        ],
        "images": images,
        "annotations": annotations,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # Written last and renamed into place: a present JSON means its images are complete.
    partial_path = json_path.with_name(json_path.name + ".partial")
    partial_path.write_text(json.dumps(coco, sort_keys=True, separators=(",", ":")) + "\n")
    partial_path.replace(json_path)
    logger.info("wrote %d %s images, %d instances", num_images, split, len(annotations))


def write_sample_dataset(
    out_dir: str | Path,
    seed: int = 0,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> SampleDataset:
    """Write the synthetic dataset under ``out_dir`` (train/, val/, annotations/*.json).

    The output is byte-identical for the same arguments; ``image_size`` is (height, width).
    """
    if num_train < 0 or num_val < 0:
        raise ValueError("num_train and num_val must be non-negative")
    height, width = image_size
    if min(height, width) < 2 * MIN_OBJECT_SIZE:
        raise ValueError(f"image_size {image_size} too small; need at least {2 * MIN_OBJECT_SIZE}")
    out_dir = Path(out_dir)
    dataset = SampleDataset(
        train_json=out_dir / "annotations" / "train.json",
        val_json=out_dir / "annotations" / "val.json",
        train_images=out_dir / "train",
        val_images=out_dir / "val",
        class_names=CLASS_NAMES,
    )
    started = time.perf_counter()
    split_specs = (
        ("train", 0, num_train, dataset.train_images, dataset.train_json),
        ("val", 1, num_val, dataset.val_images, dataset.val_json),
    )
    for split, split_index, num_images, image_dir, json_path in split_specs:
        _write_split(split, split_index, num_images, seed, (height, width), image_dir, json_path)
    logger.info(
        "sample dataset (seed %d) written to %s in %.1f s",
        seed,
        out_dir,
        time.perf_counter() - started,
    )
    return dataset
