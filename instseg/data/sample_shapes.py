"""The shapes of the synthetic sample data: classes, outlines, colours and textures of one
object.
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)


CLASS_NAMES: tuple[str, ...] = ("ellipse", "triangle", "rectangle", "star", "cross")
TEXTURES: tuple[str, ...] = ("stripes", "checker", "gradient", "noise")

DEFAULT_NUM_TRAIN = 400
DEFAULT_NUM_VAL = 50
DEFAULT_IMAGE_SIZE = (256, 256)
# Fixed so that the same seed gives the same JPEG bytes.
JPEG_QUALITY = 92
# Smallest object extent in pixels; background strokes stay thinner than this.
MIN_OBJECT_SIZE = 12.0
# Occluded instances with fewer visible pixels are left unannotated (too little left to learn).
MIN_VISIBLE_AREA = 24
# A new object is only placed if every object it covers keeps this fraction of its pixels.
MIN_VISIBLE_FRACTION = 0.5
MIN_OBJECTS_PER_IMAGE = 3
MAX_OBJECTS_PER_IMAGE = 10
# Half-width of each class's hue band; class centres are 1/len(CLASS_NAMES) = 0.2 apart, so
# neighbouring bands overlap and 40% of hues are shared by two classes (more so once saturation
# is low or texture mixes in a second hue).
CLASS_HUE_SPREAD = 0.14
# Least mean BGR distance between an object and the background it covers: every annotated object
# is visible to a person, as in a real dataset (camouflaged objects would be label noise here).
MIN_OBJECT_CONTRAST = 60.0
# Colour draws per object before the most contrasting one is kept.
CONTRAST_TRIES = 12
# Contours are traced on a mask upsampled by this factor so polygons follow the pixel edges (a
# polygon through boundary pixel centres re-rasterises a pixel ring too small).
CONTOUR_UPSAMPLE = 4
# Polygon simplification tolerance in upsampled pixels (0.375 px): small enough to keep
# single-pixel steps, so polygons re-rasterise to the mask's exact pixel count.
CONTOUR_TOLERANCE = 1.5
# cv2.fillPoly fixed-point bits, so sub-pixel vertices (smooth rotation in videos) are honoured.
_FILL_SHIFT = 4
# Exponent on the uniform draw of log-size; below 1 it favours mid-sized objects.
_SIZE_SKEW = 0.5
# Sensor noise on finished images, so object interiors are not perfectly flat.
SENSOR_NOISE_SIGMA = 3.0


@dataclass(frozen=True)
class SceneObject:
    """One shape instance: geometry in image pixels plus the texture that hides its colour cue.

    ``center`` is (x, y) with pixel i spanning [i, i + 1) as in COCO; ``size`` is the diameter of
    the circle around the shape before ``aspect`` squashes its local y axis; ``angle`` is in
    degrees (counter-clockwise on screen); colours are BGR; ``texture`` is one of TEXTURES.
    """

    class_index: int
    center: tuple[float, float]
    size: float
    angle: float
    color: tuple[int, int, int]
    texture: str = "stripes"
    texture_color: tuple[int, int, int] = (255, 255, 255)
    texture_period: float = 6.0
    texture_angle: float = 0.0
    texture_seed: int = 0
    aspect: float = 1.0

    def outline(self) -> np.ndarray:
        """Vertices (N, 2) as float64 x, y in image pixels."""
        unit = _UNIT_OUTLINES[self.class_index]
        local = unit * (self.size / 2.0)
        local[:, 1] *= self.aspect
        theta = math.radians(self.angle)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        # Screen y points down, so this rotation turns counter-clockwise as seen on screen.
        xs = local[:, 0] * cos_t + local[:, 1] * sin_t + self.center[0]
        ys = -local[:, 0] * sin_t + local[:, 1] * cos_t + self.center[1]
        return np.stack([xs, ys], axis=1)

    def moved(self, dx: float, dy: float, dangle: float = 0.0) -> SceneObject:
        """A copy shifted and turned, keeping texture and colour (for animation)."""
        return dataclasses.replace(
            self,
            center=(self.center[0] + dx, self.center[1] + dy),
            angle=self.angle + dangle,
        )


def _unit_outlines() -> tuple[np.ndarray, ...]:
    """Each class's outline with circumradius 1, centred at the origin."""
    ellipse_angles = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
    ellipse = np.stack([np.cos(ellipse_angles), np.sin(ellipse_angles)], axis=1)
    triangle_angles = np.radians([-90.0, 30.0, 150.0])
    triangle = np.stack([np.cos(triangle_angles), np.sin(triangle_angles)], axis=1)
    rectangle = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) / math.sqrt(2)
    star_angles = np.radians(-90.0 + 36.0 * np.arange(10))
    star_radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
    star = np.stack([star_radii * np.cos(star_angles), star_radii * np.sin(star_angles)], axis=1)
    arm = 0.36
    cross = np.array(
        [
            [arm, -1],
            [arm, -arm],
            [1, -arm],
            [1, arm],
            [arm, arm],
            [arm, 1],
            [-arm, 1],
            [-arm, arm],
            [-1, arm],
            [-1, -arm],
            [-arm, -arm],
            [-arm, -1],
        ],
        dtype=np.float64,
    ) / math.hypot(1.0, arm)
    return (ellipse, triangle, rectangle, star, cross)


_UNIT_OUTLINES = _unit_outlines()
# Rectangles may be long and thin; the other shapes stay recognisable under milder squashing.
_ASPECT_RANGES = ((0.55, 1.0), (0.7, 1.0), (0.4, 1.0), (0.75, 1.0), (0.75, 1.0))


def _hsv_to_bgr(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return (round(blue * 255), round(green * 255), round(red * 255))


def random_bgr_color(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
) -> tuple[int, int, int]:
    return _hsv_to_bgr(rng.uniform(0.0, 1.0), rng.uniform(*saturation), rng.uniform(*value))


def random_scene_object(
    rng: np.random.Generator,
    height: int,
    width: int,
    class_index: int | None = None,
    max_size: float | None = None,
) -> SceneObject:
    """A random instance: any class, colour and texture; size 12 px to half the side."""
    if class_index is None:
        class_index = int(rng.integers(len(CLASS_NAMES)))
    if max_size is None:
        max_size = 0.5 * min(height, width)
    max_size = max(max_size, MIN_OBJECT_SIZE)
    # Log-scale sizes, skewed towards mid sizes so that tiny shapes are a minority (~1 in 20 under 20 px).
    log_fraction = rng.uniform(0.0, 1.0) ** _SIZE_SKEW
    size = float(MIN_OBJECT_SIZE * (max_size / MIN_OBJECT_SIZE) ** log_fraction)
    # Centres may sit near the border so some objects are cut by the image edge.
    margin = 0.15 * size
    center = (
        float(rng.uniform(margin, width - margin)),
        float(rng.uniform(margin, height - margin)),
    )
    geometry = SceneObject(
        class_index=class_index,
        center=center,
        size=size,
        angle=float(rng.uniform(0.0, 360.0)),
        color=(0, 0, 0),
        aspect=float(rng.uniform(*_ASPECT_RANGES[class_index])),
    )
    return with_random_appearance(rng, geometry)


def with_random_appearance(rng: np.random.Generator, obj: SceneObject) -> SceneObject:
    """A copy of ``obj`` with a new random colour and texture (geometry kept).

    The hue comes from the class's band (CLASS_HUE_SPREAD around its centre): like real
    categories, colour hints at the class without deciding it where neighbouring bands overlap.
    """
    hue = obj.class_index / len(CLASS_NAMES) + rng.uniform(-CLASS_HUE_SPREAD, CLASS_HUE_SPREAD)
    saturation = rng.uniform(0.3, 1.0)
    value = rng.uniform(0.3, 1.0)
    # The second texture colour is a visible but milder variation of the first, so the pattern
    # decorates the shape instead of breaking it into pieces.
    value_shift = rng.uniform(0.15, 0.3)
    second_value = value - value_shift if value > 0.6 else value + value_shift
    second_hue = hue + rng.uniform(-0.12, 0.12)
    return dataclasses.replace(
        obj,
        color=_hsv_to_bgr(hue, saturation, value),
        texture=TEXTURES[int(rng.integers(len(TEXTURES)))],
        texture_color=_hsv_to_bgr(
            second_hue, rng.uniform(0.2, 1.0), float(np.clip(second_value, 0.08, 1.0))
        ),
        texture_period=float(max(4.0, obj.size * rng.uniform(0.15, 0.35))),
        texture_angle=float(rng.uniform(0.0, 180.0)),
        texture_seed=int(rng.integers(2**31)),
    )


def mean_color(obj: SceneObject) -> np.ndarray:
    return (np.asarray(obj.color, np.float32) + np.asarray(obj.texture_color, np.float32)) / 2.0


def color_contrast(obj: SceneObject, underneath: np.ndarray) -> float:
    """Mean BGR distance between the object's average colour and the (N, 3) pixels it covers."""
    return float(np.linalg.norm(underneath - mean_color(obj), axis=1).mean())


def rasterize(obj: SceneObject, height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """The object's mask inside its clipped bounding box: (x0, y0, bool mask), or None if off-image."""
    outline = obj.outline()
    x0 = max(int(math.floor(outline[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(outline[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(outline[:, 0].max())) + 2, width)
    y1 = min(int(math.ceil(outline[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    local_mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    # OpenCV puts pixel centres on integers; COCO (and the outline) puts them at i + 0.5.
    fixed_point = np.round((outline - (x0 + 0.5, y0 + 0.5)) * (1 << _FILL_SHIFT)).astype(np.int32)
    cv2.fillPoly(local_mask, [fixed_point], 1, lineType=cv2.LINE_8, shift=_FILL_SHIFT)
    if not local_mask.any():
        return None
    return x0, y0, local_mask.astype(bool)


def texture_patch(obj: SceneObject, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """BGR float32 texture for a (height, width) patch at (x0, y0), fixed to the object's frame."""
    xs = np.arange(x0, x0 + width, dtype=np.float32) + np.float32(0.5 - obj.center[0])
    ys = np.arange(y0, y0 + height, dtype=np.float32) + np.float32(0.5 - obj.center[1])
    dx, dy = np.meshgrid(xs, ys)
    theta = math.radians(obj.angle + obj.texture_angle)
    cos_t, sin_t = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    along = dx * cos_t - dy * sin_t
    across = dx * sin_t + dy * cos_t
    period = np.float32(max(obj.texture_period, 2.0))
    size = np.float32(max(obj.size, 1.0))
    if obj.texture == "stripes":
        mix = (np.mod(along / period, 1.0) < 0.5).astype(np.float32)
    elif obj.texture == "checker":
        cells = np.floor(along / period) + np.floor(across / period)
        mix = (np.mod(cells, 2.0) < 0.5).astype(np.float32)
    elif obj.texture == "gradient":
        mix = np.clip(0.5 + along / size, 0.0, 1.0)
    elif obj.texture == "noise":
        texture_rng = np.random.default_rng(obj.texture_seed)
        coarse = texture_rng.random((6, 6), dtype=np.float32)
        fine = texture_rng.random((14, 14), dtype=np.float32)
        mix = 0.65 * _sample_grid(coarse, along / size, across / size)
        mix += 0.35 * _sample_grid(fine, along / size, across / size)
        mix = np.clip((mix - 0.5) * 1.8 + 0.5, 0.0, 1.0)
    else:
        raise ValueError(f"unknown texture {obj.texture!r}; expected one of {TEXTURES}")
    color = np.asarray(obj.color, dtype=np.float32)
    second = np.asarray(obj.texture_color, dtype=np.float32)
    return color + mix[..., None] * (second - color)


def _sample_grid(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a small grid spanning object-normalised coordinates [-0.5, 0.5]."""
    cells = grid.shape[0] - 1
    map_x = ((u + 0.5) * cells).astype(np.float32)
    map_y = ((v + 0.5) * cells).astype(np.float32)
    return cv2.remap(grid, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
