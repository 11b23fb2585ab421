"""Training curves from metrics.json: resumed iterations replace earlier ones, a line cut short by a
killed process is skipped, and the PNG is decodable and replaced atomically."""

import io
import json
import os

import cv2
import matplotlib.figure
import pytest

from instseg.viz.curves import load_metric_series, plot_training_curves


def _write_lines(path, records, tail=""):
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.write(tail)
    return path


def _train_record(iteration, loss, lr):
    return {
        "iteration": iteration,
        "total_loss": loss,
        "loss_cls": loss / 2,
        "loss_mask": loss / 4,
        "lr": lr,
        "data_time": 0.01,
    }


def _eval_record(iteration, ap, val_loss):
    return {
        "iteration": iteration,
        "segm/AP": ap,
        "bbox/AP": ap + 1.0,
        "segm/AP50": ap * 2,
        "val/total_loss": val_loss,
    }


@pytest.fixture
def resumed_metrics(tmp_path):
    """A metrics.json as a crashed-then-resumed run leaves it: the first segment reached iteration
    29, the run resumed from the checkpoint at iteration 19 and re-wrote 20..39, and the killed
    process's last line was cut short."""
    first = [_train_record(i, 3.0 - i * 0.05, 0.01) for i in (9, 19, 29)]
    first.insert(2, _eval_record(19, 5.0, 2.5))
    resumed = [_train_record(i, 1.0 - i * 0.01, 0.001) for i in (29, 39)]
    resumed.append(_eval_record(39, 12.0, 1.5))
    path = tmp_path / "metrics.json"
    with open(path, "w", encoding="utf-8") as f:
        for record in first:
            f.write(json.dumps(record) + "\n")
        f.write('{"iteration": 31, "total_loss": 0.5, "lr')  # SIGKILL mid-write
        f.write("\n")
        for record in resumed:
            f.write(json.dumps(record) + "\n")
    return path


def test_series_last_record_of_an_iteration_wins(resumed_metrics):
    series = load_metric_series(resumed_metrics)
    assert series["total_loss"] == [
        (9, pytest.approx(2.55)),
        (19, pytest.approx(2.05)),
        (29, pytest.approx(0.71)),  # the resumed run's value, not 1.55 from the killed one
        (39, pytest.approx(0.61)),
    ]
    assert series["lr"] == [(9, 0.01), (19, 0.01), (29, 0.001), (39, 0.001)]
    assert series["segm/AP"] == [(19, 5.0), (39, 12.0)]
    assert series["val/total_loss"] == [(19, 2.5), (39, 1.5)]
    # Nothing from the truncated line (iteration 31) survives.
    assert all(it != 31 for values in series.values() for it, _ in values)


def test_series_skip_truncated_last_line_and_non_numbers(tmp_path):
    path = _write_lines(
        tmp_path / "metrics.json",
        [
            {"iteration": 0, "total_loss": 4.0, "note": "text", "flag": None},
            {"total_loss": 9.0},  # no iteration: not a training record
            {"iteration": 1, "total_loss": 3.0, "segm/AP": float("nan")},
        ],
        tail='{"iteration": 2, "total_loss": 2.',
    )
    series = load_metric_series(path)
    assert series["total_loss"] == [(0, 4.0), (1, 3.0)]
    assert "note" not in series and "flag" not in series
    assert len(series["segm/AP"]) == 1 and series["segm/AP"][0][0] == 1


def test_series_are_sorted_by_iteration(tmp_path):
    # Detectron2's JSONWriter may write an evaluation's iteration after a later training one.
    path = _write_lines(
        tmp_path / "metrics.json",
        [_train_record(19, 1.0, 0.02), _eval_record(14, 3.0, 2.0), _eval_record(9, 1.0, 2.2)],
    )
    assert [it for it, _ in load_metric_series(path)["val/total_loss"]] == [9, 14]


def test_plot_training_curves_writes_decodable_png(resumed_metrics, tmp_path):
    out = tmp_path / "plots" / "training_curves.png"
    assert plot_training_curves(resumed_metrics, out) == out
    image = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (450, 1600, 3)
    # Drawn curves, not an empty canvas: many distinct colours.
    assert len({tuple(px) for px in image.reshape(-1, 3)[::7]}) > 50
    assert os.listdir(out.parent) == ["training_curves.png"]


def test_plot_training_curves_with_training_losses_only(tmp_path):
    # A run without a validation set has no AP or val loss yet; the plot still succeeds.
    path = _write_lines(
        tmp_path / "metrics.json", [_train_record(i, 2.0 / (i + 1), 0.01) for i in range(5)]
    )
    out = plot_training_curves(path, tmp_path / "curves.png")
    assert cv2.imread(str(out)) is not None


def test_plot_training_curves_replaces_the_png_atomically(resumed_metrics, tmp_path, monkeypatch):
    out = tmp_path / "training_curves.png"
    plot_training_curves(resumed_metrics, out)
    before = out.read_bytes()

    real_savefig = matplotlib.figure.Figure.savefig

    def savefig_then_crash(self, fname, *args, **kwargs):
        # Half the image reaches the disk, then the process dies (disk full, SIGKILL, ...).
        buffer = io.BytesIO()
        real_savefig(self, buffer, *args, **kwargs)
        with open(fname, "wb") as f:
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig_then_crash)
    with pytest.raises(OSError, match="No space left"):
        plot_training_curves(resumed_metrics, out)
    assert out.read_bytes() == before
    assert cv2.imread(str(out)) is not None
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "training_curves.png"]
