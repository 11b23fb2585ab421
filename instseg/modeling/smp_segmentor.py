"""segmentation-models-pytorch's architectures (U-Net, U-Net++, FPN, DeepLabV3+, ...) as a
Detectron2 meta-architecture, so they train, evaluate and predict like every other model.

:class:`SMPSegmentor` is Detectron2's ``SemanticSegmentor``: its normalisation, padding,
losses-or-results contract and ``sem_seg_postprocess`` are reused as they are; only the
backbone (the whole smp network, giving logits at input resolution) and the head (cross-entropy
with the ignore label) are instseg's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, SemanticSegmentor
from torch import nn

from instseg.errors import ConfigError

logger = logging.getLogger(__name__)

_LOGITS = "logits"


class SMPBackbone(Backbone):
    """A whole smp network behind Detectron2's backbone interface: one "logits" feature map at
    stride 1, and the input padding its encoder needs."""

    def __init__(self, network: nn.Module, num_classes: int, size_divisibility: int):
        super().__init__()
        self.network = network
        self.num_classes = num_classes
        self._size_divisibility = size_divisibility

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {_LOGITS: self.network(x)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {_LOGITS: ShapeSpec(channels=self.num_classes, stride=1)}

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility


class LogitsHead(nn.Module):
    """Cross-entropy on logits that are already at input resolution (ignored pixels left out)."""

    def __init__(self, ignore_value: int, loss_weight: float = 1.0):
        super().__init__()
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

    def forward(self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None):
        logits = features[_LOGITS]
        if not self.training:
            return logits, {}
        loss = F.cross_entropy(logits.float(), targets, ignore_index=self.ignore_value)
        return None, {"loss_sem_seg": loss * self.loss_weight}


@META_ARCH_REGISTRY.register()
class SMPSegmentor(SemanticSegmentor):
    """``MODEL.SMP.ARCH`` with ``MODEL.SMP.ENCODER``, ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` outputs."""

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        network = build_smp_network(cfg)
        # The encoder halves the input ENCODER_DEPTH times: inputs are padded to a multiple.
        depth = int(cfg.MODEL.SMP.ENCODER_DEPTH)
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "backbone": SMPBackbone(network, head.NUM_CLASSES, 2**depth),
            "sem_seg_head": LogitsHead(head.IGNORE_VALUE, head.LOSS_WEIGHT),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }


def build_smp_network(cfg: CfgNode) -> nn.Module:
    """The smp model of ``cfg.MODEL.SMP``; encoder weights from a file, smp's download, or none."""
    import segmentation_models_pytorch as smp  # ~1 s to import: only when such a model is built

    node = cfg.MODEL.SMP
    weights = str(node.ENCODER_WEIGHTS)
    from_file = bool(weights) and Path(weights).expanduser().is_file()
    kwargs = {"encoder_depth": int(node.ENCODER_DEPTH)}
    if node.DECODER_CHANNELS:
        kwargs["decoder_channels"] = tuple(int(c) for c in node.DECODER_CHANNELS)
    try:
        network = smp.create_model(
            node.ARCH,
            encoder_name=node.ENCODER,
            encoder_weights=None if from_file or not weights else weights,
            in_channels=3,
            classes=int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES),
            **kwargs,
        )
    except KeyError as e:
        raise ConfigError(f"MODEL.SMP: {' '.join(str(e).split())}") from None
    except (OSError, ConnectionError) as e:  # no network for smp's pretrained weights
        raise ConfigError(
            f"MODEL.SMP.ENCODER_WEIGHTS {weights}: cannot download ({type(e).__name__}); give a "
            "checkpoint file of the encoder, or '' for random init"
        ) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"MODEL.SMP: {' '.join(str(e).split())}") from None
    if from_file:
        load_encoder_weights(network.encoder, Path(weights).expanduser())
    return network


def load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """An encoder's state dict from ``path``, loaded as data (``weights_only``), every key
    accounted for; a torchvision-style classifier's ``fc.*`` is left out, as smp does."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle with code, a truncated file
        raise ConfigError(f"{path}: not a weights file ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a state dict of encoder weights")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    # nn.Module's own: smp encoders override load_state_dict and return nothing.
    missing, unexpected = nn.Module.load_state_dict(encoder, state, strict=False)
    if missing or unexpected:
        names = (missing or unexpected)[:3]
        raise ConfigError(
            f"{path}: does not fit MODEL.SMP.ENCODER ({len(missing)} missing, {len(unexpected)} "
            f"unexpected keys, e.g. {', '.join(names)})"
        )
    logger.info("Encoder weights from %s", path)
