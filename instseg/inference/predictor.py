"""The model side of inference, shared by image folders and videos.

:class:`BatchPredictor` is Detectron2's ``DefaultPredictor`` split into its two halves,
preprocessing (resize, to tensor: runs in a worker thread) and the forward pass (several images
per call), giving the same instances as ``DefaultPredictor.__call__`` on each image (exactly
with batch size 1; to float rounding, ~1e-3 px, when several images share a forward pass).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultPredictor
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.structures import Instances

import instseg.modeling  # noqa: F401  (registers instseg's meta-architectures)
from instseg.config import (
    CLASSICAL_ARCHITECTURE,
    ConfigError,
    build_cfg,
    is_semantic,
    load_config_yaml,
)
from instseg.engine.checkpoints import FinetuneCheckpointer, check_weights, resolve_weights
from instseg.engine.precision import PrecisionModel, resolve_precision
from instseg.inference.tiles import TileOptions

logger = logging.getLogger(__name__)


@dataclass
class ModelInput:
    """One preprocessed image: what the model takes, plus the size to map predictions back to."""

    image: torch.Tensor  # C x H' x W' float32, resized, in the model's channel order
    height: int  # original height
    width: int  # original width

    def as_dict(self) -> dict:
        return {"image": self.image, "height": self.height, "width": self.width}


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


def load_model_config(
    config_files: Sequence[str], weights: str | None, opts: Sequence[str] = ()
) -> CfgNode:
    """The inference config: project YAMLs and overrides, with ``weights`` resolved to a file.

    Class names come from the config (``INSTSEG.THING_CLASSES``), else from the ``config.yaml``
    that training wrote beside the checkpoint, so drawings name the fine-tuned classes.
    ``INSTSEG.PREDICT.PRECISION auto`` becomes the precision it picks on ``MODEL.DEVICE``, so the
    run's config.yaml says what the network ran in and resuming on another machine that would
    pick another precision predicts again.
    """
    opts = list(opts)
    if weights:
        opts += ["MODEL.WEIGHTS", weights]
    cfg = build_cfg(config_files, opts, freeze=False)
    if cfg.MODEL.META_ARCHITECTURE == CLASSICAL_ARCHITECTURE:
        _set_classical_classes(cfg)
    elif not cfg.MODEL.WEIGHTS:
        raise ConfigError("no weights: pass --weights FILE (a checkpoint from instseg train)")
    run_config = Path(cfg.MODEL.WEIGHTS).parent / "config.yaml"
    semantic = is_semantic(cfg)
    named = cfg.INSTSEG.SEMANTIC.CLASSES if semantic else cfg.INSTSEG.THING_CLASSES
    if not named and run_config.is_file():
        trained = load_config_yaml(run_config).get("INSTSEG") or {}
        if semantic:
            classes = (trained.get("SEMANTIC") or {}).get("CLASSES") or []
        else:
            classes = trained.get("THING_CLASSES") or []
        if classes:
            _set_classes(cfg, list(classes), semantic)
            logger.info("Class names from %s: %s", run_config, ", ".join(classes))
    cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS)
    precision = resolve_precision(cfg.INSTSEG.PREDICT.PRECISION, cfg.MODEL.DEVICE)
    if precision.name != cfg.INSTSEG.PREDICT.PRECISION:
        logger.info("INSTSEG.PREDICT.PRECISION %s: %s (%s)", cfg.INSTSEG.PREDICT.PRECISION,
                    precision.name, precision.reason)  # fmt: skip
        cfg.INSTSEG.PREDICT.PRECISION = precision.name
    cfg.freeze()
    return cfg


def _set_classical_classes(cfg: CfgNode) -> None:
    """A classical method's classes follow from its settings (no checkpoint to name them)."""
    from instseg.modeling.classical import METHODS, classical_classes

    method, clusters = cfg.MODEL.CLASSICAL.METHOD, int(cfg.MODEL.CLASSICAL.CLUSTERS)
    if method not in METHODS:
        raise ConfigError(f"MODEL.CLASSICAL.METHOD {method!r}: choose one of {', '.join(METHODS)}")
    if method == "kmeans" and not 2 <= clusters <= 8:
        raise ConfigError(f"MODEL.CLASSICAL.CLUSTERS {clusters}: k-means takes 2 to 8 clusters")
    _set_classes(cfg, classical_classes(cfg), semantic=not cfg.MODEL.CLASSICAL.INSTANCES)


def _set_classes(cfg: CfgNode, names: list[str], semantic: bool) -> None:
    """The model's class names and, to match, its class count."""
    if semantic:
        cfg.INSTSEG.SEMANTIC.CLASSES, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = names, len(names)
    else:
        cfg.INSTSEG.THING_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES = names, len(names)


def check_model_cfg(cfg: CfgNode) -> None:
    """What a job checks about the model before it writes anything (the model itself loads
    later, in each process): the class filter, the precision, the tiling and the checkpoint's
    contents."""
    class_filter(cfg)
    resolve_precision(cfg.INSTSEG.PREDICT.PRECISION, cfg.MODEL.DEVICE)
    tiles = TileOptions.from_cfg(cfg)
    if tiles.enabled and is_semantic(cfg):
        raise ConfigError("INSTSEG.PREDICT.TILES: tiling is for instance models")
    check_weights(cfg.MODEL.WEIGHTS)


def class_filter(cfg: CfgNode) -> list[int] | None:
    """Contiguous ids of ``INSTSEG.PREDICT.CLASSES`` (None: keep all); unknown names are errors."""
    wanted = list(cfg.INSTSEG.PREDICT.CLASSES)
    if not wanted:
        return None
    if is_semantic(cfg):
        raise ConfigError("--classes: a semantic model labels every pixel; filter its outputs")
    from instseg.data.catalog import build_metadata

    names = build_metadata(cfg).thing_classes
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ConfigError(f"--classes: unknown class {unknown[0]!r}; the model has {names}")
    return [names.index(name) for name in wanted]


def instances_to_draw(instances: Instances, min_score: float) -> Instances:
    """What a picture shows: instances scoring at least ``min_score`` (``DRAW_SCORE``)."""
    if min_score <= 0 or len(instances) == 0:
        return instances
    return instances[instances.scores >= min_score]


def filter_instances(instances: Instances, keep_classes: list[int] | None) -> Instances:
    if keep_classes is None or len(instances) == 0:
        return instances
    keep = torch.isin(instances.pred_classes, torch.as_tensor(keep_classes))
    return instances[keep]
