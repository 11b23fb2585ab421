"""SMPSegmentor: segmentation-models-pytorch networks as a Detectron2 meta-architecture."""

import pytest
import torch
from conftest import CONFIGS_DIR
from detectron2.modeling import build_model

from instseg.config import ConfigError, build_cfg
from instseg.modeling import SMPSegmentor

UNET_CPU = CONFIGS_DIR / "semantic_unet_cpu.yaml"


def _cfg(*opts):
    base = ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4"]
    return build_cfg([UNET_CPU], [*base, *opts])


def test_losses_in_training_and_class_scores_at_the_input_size():
    torch.manual_seed(0)
    model = build_model(_cfg())
    assert isinstance(model, SMPSegmentor)
    image = torch.randint(0, 255, (3, 100, 90), dtype=torch.uint8).float()
    target = torch.randint(0, 4, (100, 90))
    target[:10] = 255  # ignored
    losses = model([{"image": image, "sem_seg": target}])
    assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    losses["loss_sem_seg"].backward()
    assert model.backbone.network.encoder.conv1.weight.grad is not None
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 200, "width": 180}])
    # Padded to 128 x 96 for the encoder, then cropped and resized back to the asked size.
    assert tuple(out["sem_seg"].shape) == (4, 200, 180)


def test_encoder_weights_from_a_file(tmp_path):
    torch.manual_seed(1)
    source = build_model(_cfg())
    path = tmp_path / "encoder.pth"
    torch.save(source.backbone.network.encoder.state_dict(), path)
    model = build_model(_cfg("MODEL.SMP.ENCODER_WEIGHTS", str(path)))
    for key, value in source.backbone.network.encoder.state_dict().items():
        assert torch.equal(model.backbone.network.encoder.state_dict()[key], value), key


def test_bad_encoder_settings_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="MODEL.SMP"):
        build_model(_cfg("MODEL.SMP.ENCODER", "no_such_encoder"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"layer.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ConfigError, match="does not fit MODEL.SMP.ENCODER"):
        build_model(_cfg("MODEL.SMP.ENCODER_WEIGHTS", str(wrong)))
    text = tmp_path / "text.pth"
    text.write_text("not weights")
    with pytest.raises(ConfigError, match="text.pth: not a weights file"):
        build_model(_cfg("MODEL.SMP.ENCODER_WEIGHTS", str(text)))


def test_imagenet_encoder_without_network_is_one_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as with no network
    with pytest.raises(ConfigError, match="ENCODER_WEIGHTS imagenet: cannot download"):
        build_model(_cfg("MODEL.SMP.ENCODER_WEIGHTS", "imagenet"))
