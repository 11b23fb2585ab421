"""Pictures of class-id maps: overlay with legend, three panels, Detectron2's Visualizer path."""

import numpy as np
import pytest
from detectron2.data.catalog import Metadata

from instseg.viz.semantic_renderer import SemanticRenderer, class_colors

METADATA = Metadata(stuff_classes=["background", "road", "car"])


def _scene():
    image = np.full((80, 120, 3), 100, np.uint8)
    ids = np.zeros((80, 120), np.uint8)
    ids[40:70, 60:110] = 2  # a car, bottom right, away from the legend
    return image, ids


def test_overlay_paints_classes_leaves_background_and_lists_present_classes():
    image, ids = _scene()
    renderer = SemanticRenderer(METADATA, alpha=0.5)
    drawn = renderer.overlay(image, ids)
    car = class_colors(METADATA)[2][::-1].astype(int)  # BGR
    np.testing.assert_allclose(drawn[55, 85], (100 + car) / 2, atol=1)
    np.testing.assert_array_equal(drawn[75, 5], image[75, 5])  # background, outside the legend
    legend = drawn[:30, :60].astype(int)
    assert np.abs(legend - car).sum(axis=2).min() < 3  # the car's swatch
    road = class_colors(METADATA)[1][::-1].astype(int)
    assert np.abs(legend - road).sum(axis=2).min() > 3  # road is absent: not listed
    np.testing.assert_array_equal(image, np.full((80, 120, 3), 100, np.uint8))  # input intact


def test_panels_and_visualizer_keep_the_image_size():
    image, ids = _scene()
    for name in ("fast", "visualizer"):
        renderer = SemanticRenderer(METADATA, name)
        assert renderer.overlay(image, ids).shape == image.shape
        panels = renderer.panels(image, ids)
        assert panels.shape[1] > 3 * 120 and panels.shape[0] > 80
        mask_panel = panels[-80:, 126:246]
        assert (mask_panel[:30, :50] == 0).all()  # background black in the mask panel
    with pytest.raises(ValueError, match="class map is"):
        SemanticRenderer(METADATA).overlay(image, ids[:10])
