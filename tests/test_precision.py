"""Inference precision: which one auto picks (capability present or absent), forced ones, and
bf16 results against fp32 ones on a trained model, instance by instance."""

from pathlib import Path

import pytest
import torch
from detectron2.structures import pairwise_iou

from instseg.config import ConfigError
from instseg.engine import precision as precision_module
from instseg.engine.precision import resolve_precision
from instseg.inference.model import BatchPredictor
from instseg.inference.settings import load_model_config
from instseg.io.images import read_image


def test_auto_on_a_cpu_follows_the_bf16_capability(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_fast_bf16", lambda: (True, "AMX here"))
    assert resolve_precision("auto", "cpu").name == "bf16"
    monkeypatch.setattr(precision_module, "cpu_fast_bf16", lambda: (False, "no AMX"))
    chosen = resolve_precision("auto", "cpu")
    assert (chosen.name, chosen.reason, chosen.dtype) == ("fp32", "no AMX", None)


def test_forced_and_unknown_precisions():
    assert resolve_precision("FP32", "cpu").name == "fp32"
    assert resolve_precision("bf16", "cpu").dtype is torch.bfloat16
    with pytest.raises(ConfigError, match="PRECISION must be one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", "cpu")


def test_forced_bf16_without_fast_bf16_runs_emulated_with_a_warning(monkeypatch, caplog):
    """A CPU without AMX still runs bf16 (PyTorch emulates it, slower than fp32): forcing it is
    allowed, with one warning; auto never picks it there."""
    monkeypatch.setattr(precision_module, "cpu_fast_bf16", lambda: (False, "no AMX here"))
    precision_module._warn_once.cache_clear()
    with caplog.at_level("WARNING", logger="instseg.engine.precision"):
        chosen = resolve_precision("bf16", "cpu")
        resolve_precision("bf16", "cpu")
    assert chosen.dtype is torch.bfloat16 and "emulated (no AMX here)" in chosen.reason
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["INSTSEG.PREDICT.PRECISION bf16 on this CPU: no AMX here; slower than fp32"]


def test_auto_is_resolved_in_the_config_a_job_records(trained_run, monkeypatch):
    """The run's config.yaml says what the network ran in, not "auto"."""
    run = Path(trained_run)
    for fast in (True, False):
        monkeypatch.setattr(precision_module, "cpu_fast_bf16", lambda fast=fast: (fast, "probe"))
        cfg = load_model_config(
            [str(run / "config.yaml")],
            str(run / "model_final.pth"),
            ["MODEL.DEVICE", "cpu", "INSTSEG.PREDICT.PRECISION", "auto"],
        )
        recorded = cfg.INSTSEG.PREDICT.PRECISION
        assert recorded == ("bf16" if fast else "fp32")


def test_the_capability_check_asks_torch():
    fast, reason = precision_module.cpu_fast_bf16()
    assert isinstance(fast, bool) and reason
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert not fast


def _predictions(trained_run, precision, images):
    run = Path(trained_run)
    opts = ["MODEL.DEVICE", "cpu", "INSTSEG.PREDICT.PRECISION", precision]
    opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05", "TEST.DETECTIONS_PER_IMAGE", "20"]
    predictor = BatchPredictor(
        load_model_config([str(run / "config.yaml")], str(run / "model_final.pth"), opts)
    )
    return [predictor.predict([predictor.preprocess(image)])[0] for image in images]


def test_bf16_instances_match_fp32_ones(trained_run, sample_dataset):
    """Matched one to one by box IoU, bf16 and fp32 instances agree in class and nearly in score;
    boxes, scores and masks come back as fp32 / bool, at the input's size. The test model is
    trained for 20 iterations, so its class scores are close to each other and a few pairs flip
    (98% agree here)."""
    images = [read_image(p) for p in sorted(sample_dataset.val_images.glob("*.jpg"))[:8]]
    fp32 = _predictions(trained_run, "fp32", images)
    bf16 = _predictions(trained_run, "bf16", images)
    pairs = agree = 0
    for a, b, image in zip(fp32, bf16, images, strict=True):
        assert b.pred_boxes.tensor.dtype == torch.float32 and b.scores.dtype == torch.float32
        assert b.pred_masks.dtype == torch.bool and b.image_size == image.shape[:2]
        if not len(a) or not len(b):
            continue
        iou = pairwise_iou(a.pred_boxes, b.pred_boxes)
        best, index = iou.max(dim=1)
        for i in torch.nonzero(best > 0.7).flatten().tolist():
            j = index[i].item()
            pairs += 1
            agree += int(a.pred_classes[i] == b.pred_classes[j])
            assert abs(a.scores[i] - b.scores[j]) < 0.1
    assert pairs >= 10
    assert agree / pairs >= 0.95


def test_bf16_mask_probabilities_stay_close(trained_run, sample_dataset):
    """The briefly trained test model's mask probabilities all sit near 0.5, so thresholded masks
    say little; its probabilities before pasting do: bf16 keeps them within 0.02 of fp32's."""
    run = Path(trained_run)
    cfg = load_model_config(
        [str(run / "config.yaml")], str(run / "model_final.pth"), ["MODEL.DEVICE", "cpu"]
    )
    predictor = BatchPredictor(cfg)
    image = read_image(sorted(sample_dataset.val_images.glob("*.jpg"))[0])
    item = predictor.preprocess(image).as_dict()
    fp32 = predictor.model.inference([item], do_postprocess=False)[0]
    with resolve_precision("bf16", "cpu").autocast():
        # The fp32 run's boxes, so that both mask heads see the same regions.
        bf16 = predictor.model.inference([item], detected_instances=[fp32], do_postprocess=False)[0]
    assert len(fp32) > 0
    assert (fp32.pred_masks - bf16.pred_masks.float()).abs().max() < 0.02


def test_in_bf16_the_box_predictor_runs_in_fp32(trained_run, sample_dataset):
    """The class logits decide the class of near ties: bf16 rounds them to 8 bits of mantissa,
    so the box predictor (two small linear layers) stays fp32 while the box head feeding it
    runs in bf16."""
    run = Path(trained_run)
    cfg = load_model_config(
        [str(run / "config.yaml")],
        str(run / "model_final.pth"),
        ["MODEL.DEVICE", "cpu", "INSTSEG.PREDICT.PRECISION", "bf16"],
    )
    predictor = BatchPredictor(cfg)
    seen = {}

    def record(name, dtypes) -> None:  # a forward hook that returns None keeps the output
        seen.setdefault(name, dtypes)

    heads = predictor.model.roi_heads
    heads.box_head.register_forward_hook(lambda m, i, o: record("head", o.dtype))
    heads.box_predictor.register_forward_hook(
        lambda m, i, o: record("predictor", (i[0].dtype, o[0].dtype, o[1].dtype))
    )
    image = read_image(sorted(sample_dataset.val_images.glob("*.jpg"))[0])
    predictor.predict([predictor.preprocess(image)])
    assert seen["head"] == torch.bfloat16
    assert seen["predictor"] == (torch.float32, torch.float32, torch.float32)
