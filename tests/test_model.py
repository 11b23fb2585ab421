"""The inference model path: norm folding and channels-last keep the model's outputs."""

import pytest
import torch
from conftest import DEMO_CONFIG
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model

from instseg.config import build_cfg
from instseg.inference.model import BatchPredictor, fold_norms, optimize_for_inference


def _model(*opts):
    cfg = build_cfg([str(DEMO_CONFIG)], ["MODEL.DEVICE", "cpu", *opts], freeze=False)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    # Non-trivial statistics, as a trained model has: folding must use every one of them.
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | FrozenBatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(channels, generator=generator))
    return cfg, model


def _norms(model, kind):
    return [m.norm for m in model.modules() if isinstance(m, Conv2d) and isinstance(m.norm, kind)]


@pytest.mark.parametrize("norm", ["BN", "FrozenBN"])
def test_fold_norms_keeps_backbone_features(norm):
    _, model = _model("MODEL.RESNETS.NORM", norm)
    kind = FrozenBatchNorm2d if norm == "FrozenBN" else torch.nn.BatchNorm2d
    expected_folds = len(_norms(model, kind))
    image = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model.backbone(image)
        assert fold_norms(model) == expected_folds > 0
        after = model.backbone(image)
    assert _norms(model, kind) == []
    for name, feature in before.items():
        # Float32 rounding over ~20 layers: about 2e-6 of the feature scale; a wrong fold is O(1).
        error = (after[name] - feature).abs().max().item()
        assert error <= 1e-5 * feature.abs().max().item(), name


def test_group_norm_and_training_batch_norm_are_left_alone():
    _, model = _model("MODEL.FPN.NORM", "GN")
    group_norms = len(_norms(model, torch.nn.GroupNorm))
    model.backbone.bottom_up.stem.train()  # a norm still learning has no fixed affine
    fold_norms(model)
    assert len(_norms(model, torch.nn.GroupNorm)) == group_norms > 0
    assert isinstance(model.backbone.bottom_up.stem.conv1.norm, torch.nn.BatchNorm2d)


def test_optimized_model_gives_the_same_instances():
    _, model = _model("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10")
    inputs = [{"image": torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(3)) * 255}]
    with torch.no_grad():
        expected = model(inputs)[0]["instances"]
        optimize_for_inference(model)
        got = model(inputs)[0]["instances"]
    assert model.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert len(got) == len(expected) > 0
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-4)


@pytest.mark.parametrize("optimize", [True, False])
def test_batch_predictor_optimizes_only_when_asked(optimize):
    cfg, _ = _model("INSTSEG.PREDICT.OPTIMIZE_MODEL", str(optimize), "MODEL.WEIGHTS", "")
    predictor = BatchPredictor(cfg)
    remaining = _norms(predictor.model, torch.nn.BatchNorm2d)
    assert (remaining == []) is optimize
