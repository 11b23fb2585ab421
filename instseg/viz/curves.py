"""Training curves drawn from a run's ``metrics.json`` (Detectron2's JSONWriter output).

Reading the file rather than the in-memory event storage keeps the curves whole across
``--resume``: the file holds every run segment, and a re-run iteration replaces the earlier one.
"""

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from instseg.io.atomic import atomic_path

logger = logging.getLogger(__name__)

TRAIN_LOSSES = (
    "total_loss",
    "loss_cls",
    "loss_box_reg",
    "loss_mask",
    "loss_rpn_cls",
    "loss_rpn_loc",
)
VAL_LOSSES = ("val/total_loss",)
AP_METRICS = ("bbox/AP", "segm/AP", "bbox/AP50", "segm/AP50")


def load_metric_series(metrics_path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(iteration, value), ...]} sorted by iteration; the last record of an iteration wins
    (a resumed run re-writes the iterations after its checkpoint)."""
    by_iter: dict[str, dict[int, float]] = defaultdict(dict)
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed process
            iteration = record.get("iteration")
            if iteration is None:
                continue
            for key, value in record.items():
                if key != "iteration" and isinstance(value, int | float):
                    by_iter[key][int(iteration)] = float(value)
    return {key: sorted(values.items()) for key, values in by_iter.items()}


def plot_training_curves(metrics_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Losses (train per head and validation), learning rate and val AP against iteration."""
    series = load_metric_series(metrics_path)
    fig, (ax_loss, ax_lr, ax_ap) = plt.subplots(1, 3, figsize=(16, 4.5), dpi=100)
    for name in TRAIN_LOSSES + VAL_LOSSES:
        if series.get(name):
            iters, values = zip(*series[name], strict=True)
            style = {"linewidth": 2.2, "marker": "o"} if name in VAL_LOSSES else {"linewidth": 1.2}
            ax_loss.plot(iters, values, label=name, **style)
    ax_loss.set(title="losses", xlabel="iteration", yscale="log")
    if series.get("lr"):
        ax_lr.plot(*zip(*series["lr"], strict=True), color="tab:purple")
    ax_lr.set(title="learning rate", xlabel="iteration")
    for name in AP_METRICS:
        if series.get(name):
            ax_ap.plot(*zip(*series[name], strict=True), marker="o", label=name)
    ax_ap.set(title="validation AP", xlabel="iteration", ylim=(0, 100))
    for ax in (ax_loss, ax_ap):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in (ax_loss, ax_lr, ax_ap):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out_path)
