"""Rendering of predicted Instances: both renderers, colour policy and video colour tracking."""

import cv2
import numpy as np
import pytest
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from detectron2.utils import visualizer as d2_visualizer
from detectron2.utils.video_visualizer import VideoVisualizer

from instseg.viz.build import RENDERERS, build_renderer
from instseg.viz.colors import image_colors
from instseg.viz.fast_renderer import FastRenderer
from instseg.viz.visualizer import VisualizerRenderer

H, W = 90, 120
NAMES = ["visualizer", "fast"]
# Two instances large enough (>= 40 px tall) that labels sit inside the box's top-left corner.
BOX_A = (10, 10, 70, 70)
BOX_B = (80, 20, 110, 60)
TOL = 3  # rounding of 50% blends differs by a unit or two between the renderers


@pytest.fixture(autouse=True)
def _restore_numpy_rng():
    # Video colours come from NumPy's global RNG; keep the seeding here from leaking out.
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture
def metadata():
    return Metadata(name="test_render", thing_classes=["cat", "dog", "bird"])


@pytest.fixture
def image():
    """HxWx3 uint8 BGR noise, so any drawing shows up as a change."""
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, size=(H, W, 3), dtype=np.uint8)


def ellipse_mask(box, height=H, width=W, shrink=2):
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:height, :width]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = (x1 - x0) / 2 - shrink, (y1 - y0) / 2 - shrink
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def make_instances(boxes, classes, scores=None, masks=True, height=H, width=W):
    n = len(boxes)
    inst = Instances((height, width))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(n, 4))
    inst.scores = torch.tensor(scores if scores is not None else [0.9] * n, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    if masks:
        stack = [ellipse_mask(b, height, width) for b in boxes]
        arr = np.stack(stack) if stack else np.zeros((0, height, width), bool)
        inst.pred_masks = torch.from_numpy(arr)
    return inst


def two_instances(masks=True):
    return make_instances([BOX_A, BOX_B], [0, 1], [0.9, 0.8], masks=masks)


def bgr(color):
    """RGB [0, 1] -> BGR 0-255 float array."""
    return np.asarray(color, dtype=np.float64)[::-1] * 255


def expected_fill(image, color):
    return 0.5 * image.astype(np.float64) + 0.5 * bgr(color)


# Interior patches well inside each mask, clear of labels and outlines.
INSIDE_A = (slice(40, 55), slice(28, 52))
INSIDE_B = (slice(44, 54), slice(90, 100))
# Rows below every box and label.
FAR = (slice(80, H), slice(0, W))


@pytest.mark.parametrize("name", NAMES)
def test_masks_blend_toward_instance_colour(name, metadata, image):
    renderer = build_renderer(name, metadata, video=False)
    original = image.copy()
    out = renderer.draw(image, two_instances())

    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(image, original)  # input untouched
    assert len(renderer.last_colors) == 2
    for patch, color in [(INSIDE_A, renderer.last_colors[0]), (INSIDE_B, renderer.last_colors[1])]:
        got = out[patch].astype(np.float64)
        want = expected_fill(image[patch], color)
        assert np.abs(got - want).max() <= TOL
        # ...which is closer to the colour than before.
        before = np.abs(image[patch] - bgr(color)).mean()
        assert np.abs(got - bgr(color)).mean() < before
    np.testing.assert_array_equal(out[FAR], image[FAR])


def test_renderers_agree_on_image_colours(metadata, image):
    inst = two_instances()
    fast, vis = FastRenderer(metadata), VisualizerRenderer(metadata)
    out_fast, out_vis = fast.draw(image, inst), vis.draw(image, inst)
    assert fast.last_colors == vis.last_colors == image_colors([0, 1], 2, metadata)
    assert fast.last_colors[0] != fast.last_colors[1]
    diff = np.abs(out_fast[INSIDE_A].astype(int) - out_vis[INSIDE_A].astype(int))
    assert diff.max() <= TOL


def test_image_colours_follow_thing_colors(image):
    md = Metadata(
        name="test_render_colors",
        thing_classes=["cat", "dog"],
        thing_colors=[(255, 0, 0), (0, 0, 255)],
    )
    inst = make_instances([BOX_A, BOX_B, (20, 75, 40, 85)], [1, 0, 1])
    expected = [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
    for name in NAMES:
        renderer = build_renderer(name, md)
        out = renderer.draw(image, inst)
        assert renderer.last_colors == expected
        got = out[INSIDE_A].astype(np.float64)
        assert np.abs(got - expected_fill(image[INSIDE_A], expected[0])).max() <= TOL


def test_image_colours_are_deterministic_per_index(metadata):
    first = image_colors([0, 0, 0, 0], 4, metadata)
    assert first == image_colors([2, 1, 0, 2], 4, metadata)  # index-based, not class-based
    assert len(set(first)) == 4
    assert all(0.0 <= v <= 1.0 for c in first for v in c)
    assert image_colors(None, 2, metadata) == first[:2]


@pytest.mark.parametrize("name", NAMES)
def test_empty_instances_return_unchanged_copy(name, metadata, image):
    renderer = build_renderer(name, metadata, video=False)
    empty = make_instances([], [])
    assert len(empty) == 0
    for inst in (empty, Instances((H, W))):
        out = renderer.draw(image, inst)
        np.testing.assert_array_equal(out, image)
        assert out is not image and not np.shares_memory(out, image)
        assert renderer.last_colors == []


@pytest.mark.parametrize("name", NAMES)
def test_boxes_only_draws_outline_and_label(name, metadata, image):
    renderer = build_renderer(name, metadata)
    out = renderer.draw(image, two_instances(masks=False))
    assert out.shape == image.shape
    color = bgr(renderer.last_colors[0])

    # The left edge of box A (x = 10, below the label) moves toward the colour...
    edge = (slice(40, 60), slice(9, 12))
    assert np.abs(out[edge] - color).mean() < np.abs(image[edge] - color).mean() - 20
    # ...but its inside is not filled.
    inside = (slice(40, 60), slice(25, 55))
    np.testing.assert_array_equal(out[inside], image[inside])
    np.testing.assert_array_equal(out[FAR], image[FAR])


@pytest.mark.parametrize("name", NAMES)
def test_label_is_drawn_at_box_top_left(name, metadata, image):
    renderer = build_renderer(name, metadata)
    inst = make_instances([BOX_A], [0], [0.9], masks=False)
    out = renderer.draw(image, inst)
    # Just inside the top-left corner: the label's dark plate plus glyphs.
    corner = (slice(BOX_A[1] + 3, BOX_A[1] + 11), slice(BOX_A[0] + 3, BOX_A[0] + 30))
    changed = np.any(out[corner] != image[corner], axis=2).mean()
    assert changed > 0.8
    assert out[corner].mean() < 0.6 * image[corner].mean()

    # Without classes and scores there is no label: the same corner stays untouched.
    bare = Instances((H, W), pred_boxes=inst.pred_boxes)
    out_bare = renderer.draw(image, bare)
    np.testing.assert_array_equal(out_bare[corner], image[corner])


@pytest.mark.parametrize("video", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_masks_without_boxes(name, video, metadata, image):
    renderer = build_renderer(name, metadata, video=video)
    full = two_instances()
    inst = Instances((H, W), scores=full.scores, pred_classes=full.pred_classes)
    inst.pred_masks = full.pred_masks
    out = renderer.draw(image, inst)
    got = out[INSIDE_B].astype(np.float64)
    assert np.abs(got - expected_fill(image[INSIDE_B], renderer.last_colors[1])).max() <= TOL
    np.testing.assert_array_equal(out[FAR], image[FAR])


@pytest.mark.parametrize("name", NAMES)
def test_odd_size_and_grey_origin_images(name, metadata):
    height, width = 77, 121
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    image = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    # One box hangs off the bottom-right corner.
    inst = make_instances(
        [(5, 7, 50, 60), (90, 40, 140, 95)], [2, 0], [0.7, 0.6], height=height, width=width
    )
    renderer = build_renderer(name, metadata)
    out = renderer.draw(image, inst)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    if name == "fast":
        np.testing.assert_array_equal(renderer.draw(grey, inst), out)  # HxW grey accepted too


def test_fast_video_keeps_colour_per_object(metadata, image):
    np.random.seed(3)
    renderer = FastRenderer(metadata, video=True)
    # Both objects share a class, so only box overlap can tell them apart.
    frame1 = make_instances([BOX_A, BOX_B], [0, 0], [0.9, 0.8])
    renderer.draw(image, frame1)
    color_a, color_b = renderer.last_colors
    assert color_a != color_b

    # Next frame: both moved by 2 px and listed in the other order.
    moved_b, moved_a = (82, 22, 112, 62), (12, 11, 72, 71)
    frame2 = make_instances([moved_b, moved_a], [0, 0], [0.95, 0.85])
    out = renderer.draw(image, frame2)
    assert renderer.last_colors == [color_b, color_a]
    patch = (slice(40, 50), slice(92, 102))  # inside the moved B
    got = out[patch].astype(np.float64)
    assert np.abs(got - expected_fill(image[patch], color_b)).max() <= TOL

    # A frame without detections does not break the tracks.
    renderer.draw(image, make_instances([], []))
    renderer.draw(image, make_instances([moved_a], [0]))
    assert renderer.last_colors == [color_a]


def test_video_colours_match_video_visualizer(metadata, image, monkeypatch):
    frames = [
        make_instances([BOX_A, BOX_B], [0, 1], [0.9, 0.8]),
        make_instances([(82, 22, 112, 62), (12, 11, 72, 71)], [1, 0], [0.9, 0.8]),
        make_instances([(14, 12, 74, 72), (30, 72, 60, 88)], [0, 2], [0.9, 0.7]),
        make_instances([(16, 13, 76, 73), (84, 24, 114, 64), (31, 72, 61, 88)], [0, 1, 2]),
    ]
    rgb = np.ascontiguousarray(image[:, :, ::-1])

    # Reference: what Detectron2's own VideoVisualizer hands to overlay_instances.
    drawn = []
    original = d2_visualizer.Visualizer.overlay_instances

    def capture(self, *, assigned_colors=None, **kwargs):
        drawn.append([tuple(float(v) for v in c) for c in assigned_colors])
        return original(self, assigned_colors=assigned_colors, **kwargs)

    monkeypatch.setattr(d2_visualizer.Visualizer, "overlay_instances", capture)
    np.random.seed(11)
    reference = VideoVisualizer(metadata)
    for inst in frames:
        reference.draw_instance_predictions(rgb, inst)
    monkeypatch.setattr(d2_visualizer.Visualizer, "overlay_instances", original)
    assert len(drawn) == len(frames)

    for name in NAMES:
        np.random.seed(11)
        renderer = build_renderer(name, metadata, video=True)
        got = []
        for inst in frames:
            renderer.draw(image, inst)
            got.append(renderer.last_colors)
        assert got == drawn, name
    # Sanity: the sequence really exercises tracking (B re-found, A kept, a new object added).
    assert drawn[1] == [drawn[0][1], drawn[0][0]]
    assert drawn[3][:2] == [drawn[0][0], drawn[0][1]]


def test_reset_starts_fresh_tracks(metadata, image):
    frame = make_instances([BOX_A], [0])
    np.random.seed(5)
    renderer = FastRenderer(metadata, video=True)
    renderer.draw(image, frame)
    first = renderer.last_colors
    renderer.reset()
    np.random.seed(5)
    renderer.draw(image, make_instances([BOX_B], [0]))
    assert renderer.last_colors == first  # same RNG draw, no stale track to inherit from


def test_fast_rejects_masks_of_another_size(metadata, image):
    inst = make_instances([BOX_A], [0], height=H + 1, width=W)
    with pytest.raises(ValueError, match="pred_masks"):
        FastRenderer(metadata).draw(image, inst)


def test_build_renderer(metadata):
    assert isinstance(build_renderer("fast", metadata, video=False), FastRenderer)
    vis = build_renderer(" Visualizer ", metadata, video=True)
    assert isinstance(vis, VisualizerRenderer) and vis.video
    assert set(RENDERERS) == {"fast", "visualizer"}
    with pytest.raises(ValueError, match="fast, visualizer"):
        build_renderer("opengl", metadata, video=False)
