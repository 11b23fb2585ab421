"""Class-map scores from one confusion matrix, for named and unnamed classes."""

import numpy as np
import pytest

from instseg.engine.semantic_metrics import (
    best_labelling,
    confusion_matrix,
    semantic_scores,
    unnamed_scores,
)


def test_scores_of_a_small_map_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2]])
    confusion = confusion_matrix([(truth, pred)], 3, 3)
    assert confusion.sum() == 7  # the ignored pixel is left out
    scores = semantic_scores(confusion)
    # IoU: background 2/4, class 1 2/3, class 2 1/2; foreground: 3 tp, 1 fp, 1 fn.
    assert scores["miou"] == pytest.approx(100 * (2 / 4 + 2 / 3 + 1 / 2) / 3)
    assert scores["fg_iou"] == pytest.approx(100 * 3 / 5)
    assert scores["pixel_acc"] == pytest.approx(100 * 5 / 7)


def test_unnamed_classes_get_the_labelling_that_suits_them():
    truth = np.zeros((4, 4), int)
    truth[:2] = 3  # top half is class 3 of 4
    pred = (truth == 3).astype(int)  # a perfect foreground split, named 1
    confusion = confusion_matrix([(truth, pred)], 4, 2)
    collapsed = best_labelling(confusion)
    assert collapsed[3, 3] == 8 and collapsed[0, 0] == 8
    assert unnamed_scores(confusion)["miou"] == pytest.approx(100.0)
    assert unnamed_scores(confusion)["fg_iou"] == pytest.approx(100.0)


def test_many_unnamed_classes_are_labelled_by_local_search():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 6, (40, 40))
    pred = truth * 2 + (rng.random((40, 40)) > 0.5)  # twelve clusters, two per class
    confusion = confusion_matrix([(truth, pred)], 6, 12)
    assert unnamed_scores(confusion)["miou"] == pytest.approx(100.0)
