"""The model step of inference: one small interface, :class:`Model`, that the pipeline calls
for every source and every sink, and its PyTorch implementation.

:class:`BatchPredictor` is Detectron2's ``DefaultPredictor`` split into its two halves,
preprocessing (resize, to tensor: runs in a worker thread) and the forward pass (several images
per call), giving the same instances as ``DefaultPredictor.__call__`` on each image (exactly
with batch size 1; to float rounding, ~1e-3 px, when several images share a forward pass).
Another runtime (an exported model) implements :class:`Model` and plugs in through
:func:`build_model` without touching sources, sinks, tracking, tiling or the job.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.structures import Instances

import instseg.modeling  # noqa: F401  (registers instseg's meta-architectures)
from instseg.engine.checkpoints import FinetuneCheckpointer
from instseg.engine.precision import PrecisionModel, resolve_precision

logger = logging.getLogger(__name__)


@dataclass
class ModelInput:
    """One preprocessed image: what the model takes, plus the size to map predictions back to."""

    image: torch.Tensor  # C x H' x W' float32, resized, in the model's channel order
    height: int  # original height
    width: int  # original width

    def as_dict(self) -> dict:
        return {"image": self.image, "height": self.height, "width": self.width}


class Model(Protocol):
    """What the pipeline needs of a model: preprocess one image (in a worker thread), then run
    a batch and return, per image, fp32 Detectron2 ``Instances`` on the CPU at the image's size
    or, for a semantic model, its H x W class-id map."""

    def preprocess(self, image_bgr: np.ndarray) -> ModelInput: ...

    def predict(self, inputs: Sequence[ModelInput]) -> list[Instances | torch.Tensor]: ...


def build_model(cfg: CfgNode) -> Model:
    """The model a config names, loaded and prepared for inference."""
    return BatchPredictor(cfg)


class BatchPredictor(DefaultPredictor):
    """DefaultPredictor that preprocesses separately and runs several images per forward pass.

    With ``INSTSEG.PREDICT.OPTIMIZE_MODEL`` the loaded model's eval-mode norms are folded into
    their convolutions and its weights stored channels-last (:func:`optimize_for_inference`).
    """

    def __init__(self, cfg: CfgNode):
        # DefaultPredictor would load MODEL.WEIGHTS with a plain DetectionCheckpointer, which
        # unpickles a .pkl as code; built without weights, the model is loaded here as data.
        unloaded = cfg.clone()
        unloaded.defrost()
        unloaded.MODEL.WEIGHTS = ""
        super().__init__(unloaded)
        self.cfg = cfg.clone()
        FinetuneCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.precision = resolve_precision(cfg.INSTSEG.PREDICT.PRECISION, cfg.MODEL.DEVICE)
        logger.info("Inference precision: %s (%s)", self.precision.name, self.precision.reason)
        self.network = PrecisionModel(self.model, self.precision)
        if cfg.INSTSEG.PREDICT.OPTIMIZE_MODEL:
            optimize_for_inference(self.model)

    def preprocess(self, image_bgr: np.ndarray) -> ModelInput:
        """image_bgr (np.ndarray): H x W x 3 uint8 in BGR order, as cv2.imread returns it."""
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        return ModelInput(tensor, height, width)

    @torch.inference_mode()
    def predict(self, inputs: Sequence[ModelInput]) -> list[Instances | torch.Tensor]:
        """Forward a batch; returns each image's Instances (a semantic model: its H x W class-id
        map, uint8) on the CPU, in input order.

        Images of different resized shapes are run in separate passes: padding them to a common
        size would change the features near their borders, so results would differ from
        DefaultPredictor's.
        """
        results: list[Instances | torch.Tensor | None] = [None] * len(inputs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, item in enumerate(inputs):
            groups.setdefault(tuple(item.image.shape), []).append(index)
        device = self.cfg.MODEL.DEVICE
        for indices in groups.values():
            batch = []
            for i in indices:
                item = inputs[i].as_dict()
                item["image"] = item["image"].to(device)
                batch.append(item)
            for i, output in zip(indices, self.network(batch), strict=True):
                results[i] = _result(output)
        return results


def _result(output: dict) -> Instances | torch.Tensor:
    if "instances" in output:
        return output["instances"].to("cpu")
    logits = output["sem_seg"]  # K x H x W at the input's size
    dtype = torch.uint8 if logits.shape[0] <= 256 else torch.int16
    return logits.argmax(dim=0).to("cpu", dtype)


def fold_norms(model: torch.nn.Module) -> int:
    """Fold each eval-mode (Frozen)BatchNorm that follows a Detectron2 ``Conv2d`` into its weights.

    Such a norm is a fixed per-channel scale and shift, which the convolution can apply itself:
    one pass over every feature map less. Returns the number of folded norms.
    """
    folded = 0
    for conv in model.modules():
        if not isinstance(conv, Conv2d):
            continue
        norm = conv.norm
        if not (isinstance(norm, FrozenBatchNorm2d) or _is_foldable_batch_norm(norm)):
            continue
        with torch.no_grad():
            # The same arithmetic as FrozenBatchNorm2d.forward / F.batch_norm in eval mode.
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = torch.nn.Parameter(shift)
        conv.norm = None
        folded += 1
    return folded


def _is_foldable_batch_norm(norm: torch.nn.Module | None) -> bool:
    return (
        isinstance(norm, torch.nn.BatchNorm2d)
        and not norm.training
        and norm.affine
        and norm.track_running_stats
    )


def optimize_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold norms into convolutions and store conv weights channels-last (NHWC).

    On CPU, oneDNN convolutions run natively in NHWC: NCHW weights make every convolution
    convert its input and output. Instances match the unmodified model's to float rounding
    (tests compare against ``DefaultPredictor``). Call on a model in eval mode, after loading.
    """
    folded = fold_norms(model)
    model.to(memory_format=torch.channels_last)
    logger.info("Inference model: %d norms folded into convolutions, weights channels-last", folded)
    return model


def instances_to_draw(instances: Instances, min_score: float) -> Instances:
    """What a picture shows: instances scoring at least ``min_score`` (``DRAW_SCORE``)."""
    if min_score <= 0 or len(instances) == 0:
        return instances
    return instances[instances.scores >= min_score]


def filter_instances(instances: Instances, keep_classes: Sequence[int] | None) -> Instances:
    if keep_classes is None or len(instances) == 0:
        return instances
    keep = torch.isin(instances.pred_classes, torch.as_tensor(keep_classes))
    return instances[keep]
