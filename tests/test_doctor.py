"""The environment report agrees with what the running interpreter actually has."""

import cv2
import detectron2
import torch

from instseg.doctor import collect_environment, format_environment
from instseg.engine.coco_evaluation import BACKENDS, has_compiled_ops, select_cocoeval_backend


def test_rows_report_installed_versions():
    rows = dict(collect_environment())
    assert rows["torch"] == torch.__version__
    assert rows["OpenCV"] == cv2.__version__
    assert rows["Detectron2"].startswith(f"{detectron2.__version__} (")
    assert rows["CPU threads"] == str(torch.get_num_threads())
    official = has_compiled_ops()  # only the source build has them
    assert rows["Detectron2 source"].startswith("official" if official else "PyPI fallback")


def test_device_row_matches_torch():
    device = dict(collect_environment())["device"]
    assert device.startswith("cuda (" if torch.cuda.is_available() else "cpu")


def test_compiled_ops_and_eval_backend_match_the_evaluator():
    rows = collect_environment()
    keys = [key for key, _ in rows]
    values = dict(rows)
    assert values["Detectron2 compiled ops"] == ("present" if has_compiled_ops() else "absent")
    assert values["COCO eval backend"] == select_cocoeval_backend()
    assert values["COCO eval backend"] in BACKENDS
    if has_compiled_ops():
        assert "features" in values
    else:
        # Without the compiled ops the report says what is missing and what still works.
        assert keys.index("  unavailable") > keys.index("Detectron2 compiled ops")
        assert "Mask R-CNN" in values["  unaffected"]


def test_format_aligns_values_in_one_column():
    rows = [("a", "1"), ("longer key", "two words")]
    lines = format_environment(rows).splitlines()
    assert lines == ["a           1", "longer key  two words"]
