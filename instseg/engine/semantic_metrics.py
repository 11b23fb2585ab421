"""Scores of class-id maps against ground truth from one confusion matrix, for comparing
methods whose classes differ: a trained model's are the dataset's; a classical method's
(background / foreground, or k-means clusters) have no names and are scored under the labelling
that suits them best.

The mIoU here is SemSegEvaluator's definition (mean over the true classes present), so a
trained model gets the same figure either way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np

IGNORE_LABEL = 255


def confusion_matrix(pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_true: int,
                     num_predicted: int) -> np.ndarray:  # fmt: skip
    """(true x predicted) pixel counts over (truth, prediction) maps, ignored pixels left out."""
    confusion = np.zeros((num_true, num_predicted), dtype=np.int64)
    for truth, predicted in pairs:
        keep = truth != IGNORE_LABEL
        index = truth[keep].astype(np.int64) * num_predicted + predicted[keep]
        confusion += np.bincount(index, minlength=confusion.size).reshape(confusion.shape)
    return confusion


def semantic_scores(confusion: np.ndarray) -> dict[str, float]:
    """Percent: ``miou`` over the true classes present, ``fg_iou`` of everything but class 0
    against class 0 (background), and ``pixel_acc``; of a square (true x predicted) matrix."""
    tp = np.diag(confusion).astype(float)
    truth, predicted = confusion.sum(1), confusion.sum(0)
    present = truth > 0
    iou = tp[present] / (truth + predicted - tp)[present]
    fg_tp = confusion[1:, 1:].sum()
    fg_iou = fg_tp / max(1, fg_tp + confusion[0, 1:].sum() + confusion[1:, 0].sum())
    return {
        "miou": 100 * float(iou.mean()),
        "fg_iou": 100 * float(fg_iou),
        "pixel_acc": 100 * float(tp.sum() / max(1, confusion.sum())),
    }


# Labellings tried one by one up to this many; beyond, a local search from the overlap argmax.
EXHAUSTIVE_LIMIT = 50_000


def _collapse(confusion: np.ndarray, labels) -> np.ndarray:
    collapsed = np.zeros((confusion.shape[0],) * 2, dtype=np.int64)
    for predicted, label in enumerate(labels):
        collapsed[:, label] += confusion[:, predicted]
    return collapsed


def best_labelling(confusion: np.ndarray) -> np.ndarray:
    """A (true x unnamed classes) matrix as (true x true) under the labelling of the unnamed
    classes with true ones that gives the highest mIoU: every labelling is tried for a handful
    of classes (a classical method's), else one class at a time is relabelled while that helps."""
    num_true, num_predicted = confusion.shape
    miou = lambda labels: semantic_scores(_collapse(confusion, labels))["miou"]  # noqa: E731
    if num_true**num_predicted <= EXHAUSTIVE_LIMIT:
        best = max(itertools.product(range(num_true), repeat=num_predicted), key=miou)
        return _collapse(confusion, best)
    labels = list(confusion.argmax(0))
    improved = True
    while improved:
        improved = False
        for predicted in range(num_predicted):
            for label in range(num_true):
                trial = labels[:predicted] + [label] + labels[predicted + 1 :]
                if miou(trial) > miou(labels):
                    labels, improved = trial, True
    return _collapse(confusion, labels)


def unnamed_scores(confusion: np.ndarray) -> dict[str, float]:
    """Scores of a method with unnamed classes (its class 0 background): mIoU and accuracy
    under :func:`best_labelling`, foreground IoU as it splits the image itself."""
    scores = semantic_scores(best_labelling(confusion))
    own = np.zeros((2, 2), dtype=np.int64)
    for predicted in range(confusion.shape[1]):
        own[0, min(predicted, 1)] += confusion[0, predicted]
        own[1, min(predicted, 1)] += confusion[1:, predicted].sum()
    scores["fg_iou"] = semantic_scores(own)["fg_iou"]
    return scores
