"""The inference config: merged once from a run's files, then read and checked once into
:class:`PredictSettings`, the frozen object every stage of a job takes (no stage re-reads
``cfg``)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectron2.config import CfgNode
from detectron2.data.catalog import Metadata

from instseg.config import (
    CLASSICAL_ARCHITECTURE,
    ConfigError,
    build_cfg,
    is_semantic,
    load_config_yaml,
)
from instseg.data.catalog import build_metadata
from instseg.engine.checkpoints import check_weights, resolve_weights
from instseg.engine.precision import resolve_precision
from instseg.inference.tiles import TileOptions
from instseg.inference.tracking import TrackOptions
from instseg.inference.video_options import VideoOptions
from instseg.viz.build import build_renderer
from instseg.viz.renderer import Renderer
from instseg.viz.semantic_renderer import SemanticRenderer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictSettings:
    """Everything a prediction job reads from its config, checked: the model (``cfg``, from
    which the model is built and which config.yaml records), its classes and precision, tiles,
    tracking, video frames, drawing and outputs."""

    cfg: CfgNode  # frozen
    digest: str  # fingerprint of cfg: results are reused only under the same one
    semantic: bool  # a class-id map per image instead of instances
    metadata: Metadata  # the model's class names (thing_classes, or stuff_classes)
    keep_classes: tuple[int, ...] | None  # INSTSEG.PREDICT.CLASSES as contiguous ids
    precision: str  # what the network runs in
    video: VideoOptions  # frames, codec, batch and queue sizes, rendering
    track: TrackOptions
    tiles: TileOptions
    save_masks: bool
    max_pixels: int  # INSTSEG.MAX_IMAGE_PIXELS

    @classmethod
    def from_cfg(cls, cfg: CfgNode) -> PredictSettings:
        """Read and check every setting (a bad value is a ConfigError naming its key), and the
        checkpoint's contents, before any model loads or file is written."""
        semantic = is_semantic(cfg)
        tiles = TileOptions.from_cfg(cfg)
        if tiles.enabled and semantic:
            raise ConfigError("INSTSEG.PREDICT.TILES: tiling is for instance models")
        metadata = build_metadata(cfg)
        check_weights(cfg.MODEL.WEIGHTS)
        return cls(
            cfg=cfg,
            digest=config_digest(cfg),
            semantic=semantic,
            metadata=metadata,
            keep_classes=_class_filter(cfg, semantic, metadata),
            precision=resolve_precision(cfg.INSTSEG.PREDICT.PRECISION, cfg.MODEL.DEVICE).name,
            video=VideoOptions.from_cfg(cfg),
            track=TrackOptions.from_cfg(cfg),
            tiles=tiles,
            save_masks=bool(cfg.INSTSEG.PREDICT.SAVE_MASKS),
            max_pixels=int(cfg.INSTSEG.MAX_IMAGE_PIXELS),
        )

    @property
    def class_names(self) -> list[str]:
        names = self.metadata.stuff_classes if self.semantic else self.metadata.thing_classes
        return list(names)

    @property
    def tracking(self) -> bool:
        """Whether videos get track ids (a semantic model's never do)."""
        return self.track.enabled and not self.semantic

    def build_renderer(self, video: bool = False) -> Renderer | SemanticRenderer | None:
        """The configured renderer (videos' colours follow tracks); None when not drawing."""
        if not self.video.render:
            return None
        if self.semantic:
            return SemanticRenderer(self.metadata, self.video.renderer)
        return build_renderer(self.video.renderer, self.metadata, video=video)


def config_digest(cfg: CfgNode) -> str:
    """Fingerprint of everything that shapes a result: earlier results are reused only under
    the same digest, so two configs' results never mix in one output folder."""
    return hashlib.sha256(cfg.dump().encode("utf-8")).hexdigest()[:16]


def _class_filter(cfg: CfgNode, semantic: bool, metadata: Metadata) -> tuple[int, ...] | None:
    """Contiguous ids of ``INSTSEG.PREDICT.CLASSES`` (None: keep all); unknown names are errors."""
    wanted = list(cfg.INSTSEG.PREDICT.CLASSES)
    if not wanted:
        return None
    if semantic:
        raise ConfigError("--classes: a semantic model labels every pixel; filter its outputs")
    names = list(metadata.thing_classes)
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ConfigError(f"--classes: unknown class {unknown[0]!r}; the model has {names}")
    return tuple(names.index(name) for name in wanted)


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
    _classes_from_run_config(cfg)
    cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS)
    precision = resolve_precision(cfg.INSTSEG.PREDICT.PRECISION, cfg.MODEL.DEVICE)
    if precision.name != cfg.INSTSEG.PREDICT.PRECISION:
        logger.info("INSTSEG.PREDICT.PRECISION %s: %s (%s)", cfg.INSTSEG.PREDICT.PRECISION,
                    precision.name, precision.reason)  # fmt: skip
        cfg.INSTSEG.PREDICT.PRECISION = precision.name
    cfg.freeze()
    return cfg


def _classes_from_run_config(cfg: CfgNode) -> None:
    """Class names from the ``config.yaml`` training wrote beside the checkpoint, unless the
    config names them."""
    run_config = Path(cfg.MODEL.WEIGHTS).parent / "config.yaml"
    semantic = is_semantic(cfg)
    named = cfg.INSTSEG.SEMANTIC.CLASSES if semantic else cfg.INSTSEG.THING_CLASSES
    if named or not run_config.is_file():
        return
    trained = load_config_yaml(run_config).get("INSTSEG") or {}
    if semantic:
        classes = (trained.get("SEMANTIC") or {}).get("CLASSES") or []
    else:
        classes = trained.get("THING_CLASSES") or []
    if classes:
        _set_classes(cfg, list(classes), semantic)
        logger.info("Class names from %s: %s", run_config, ", ".join(classes))


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
