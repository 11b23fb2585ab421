"""Config building: Detectron2 defaults, a model-zoo base, project YAMLs, then command-line overrides.

Every key instseg adds lives under ``cfg.INSTSEG`` and is declared once in
:func:`add_instseg_config`. :func:`build_cfg` is the only place configs are merged, always in the
same order, and it returns a frozen node: callers ``clone()`` before any local change.
"""

import difflib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import yaml
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from instseg.errors import ConfigError
from instseg.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "SEMANTIC_ARCHITECTURES",
    "add_instseg_config",
    "build_cfg",
    "load_config_yaml",
    "resolve_config_path",
    "save_cfg",
]

# Repository folder holding the project YAMLs; `configs/NAME.yaml` may be given as NAME alone.
PROJECT_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Meta-architectures that label pixels (MODEL.SEM_SEG_HEAD) rather than find instances.
SEMANTIC_ARCHITECTURES = frozenset({"SemanticSegmentor", "SMPSegmentor"})
# Classical methods: semantic or instances, as MODEL.CLASSICAL.INSTANCES says.
CLASSICAL_ARCHITECTURE = "ClassicalSegmentor"
CLASSICAL_METHODS = ("otsu", "kmeans", "watershed", "canny")

_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: (\S+)")


def add_instseg_config(cfg: CfgNode) -> None:
    """Declare every key instseg adds to Detectron2's config, each once, with its meaning."""
    _C = cfg
    _C.INSTSEG = CfgNode()
    # Model-zoo config merged right after Detectron2's defaults, e.g.
    # "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml". Empty: no zoo base.
    _C.INSTSEG.MODEL_ZOO_CONFIG = ""
    # Class names of the model, in contiguous-id order. Filled from the training JSON's categories
    # by `instseg.datasets.register_datasets` and saved in every run's config.yaml, so inference
    # draws the fine-tuned classes instead of COCO's 80.
    _C.INSTSEG.THING_CLASSES = []
    # Images declaring more pixels than this in their header are refused before decoding, in
    # predict, training and validation (0: no limit).
    _C.INSTSEG.MAX_IMAGE_PIXELS = 100_000_000

    # COCO-format datasets: a split with a NAME is registered under that name with Detectron2's
    # COCO loader. TRAIN becomes DATASETS.TRAIN; VAL becomes DATASETS.TEST (evaluated during
    # training); TEST is evaluated only on request (`instseg eval --dataset`).
    _C.INSTSEG.DATASETS = CfgNode()
    for split in ("TRAIN", "VAL", "TEST"):
        node = CfgNode()
        node.NAME = ""
        node.JSON = ""  # path to the COCO instances JSON
        node.IMAGES = ""  # folder the JSON's file_name entries are relative to
        # Semantic models only: folder of class-id PNGs named as the images (255 = ignore),
        # read by Detectron2's load_sem_seg; instead of JSON, which is rendered into such masks.
        node.MASKS = ""
        _C.INSTSEG.DATASETS[split] = node

    # Before train and eval, every declared dataset gets the structural check of `instseg
    # dataset validate` (image headers included); True also checks every image's data.
    _C.INSTSEG.DATASETS.CHECK_IMAGES = False

    _C.INSTSEG.TRAIN = CfgNode()
    # Compute the loss on the validation set at each evaluation (Detectron2 logs only AP).
    _C.INSTSEG.TRAIN.VAL_LOSS = True
    # Cap on validation images used for the validation loss (0: all of them).
    _C.INSTSEG.TRAIN.VAL_LOSS_MAX_IMAGES = 0
    # Metric (key in the evaluator's flattened results) that selects model_best.pth; a semantic
    # model left at segm/AP is selected by sem_seg/mIoU.
    _C.INSTSEG.TRAIN.BEST_METRIC = "segm/AP"
    # Write training_curves.png after each evaluation and at the end of training.
    _C.INSTSEG.TRAIN.PLOT_CURVES = True

    # Semantic segmentation (MODEL.META_ARCHITECTURE SemanticSegmentor or SMPSegmentor).
    _C.INSTSEG.SEMANTIC = CfgNode()
    # Class names, index = the class id in the masks. A COCO-JSON dataset gives
    # ["background", *its categories]; a mask-folder dataset needs them here.
    _C.INSTSEG.SEMANTIC.CLASSES = []
    # Training images and masks are padded (masks with MODEL.SEM_SEG_HEAD.IGNORE_VALUE) to a
    # multiple of this: decoders upsample by fixed strides.
    _C.INSTSEG.SEMANTIC.SIZE_DIVISIBILITY = 32

    # segmentation-models-pytorch architectures as a Detectron2 meta-architecture
    # (instseg.modeling.smp_segmentor, MODEL.META_ARCHITECTURE SMPSegmentor).
    _C.MODEL.SMP = CfgNode()
    # smp.create_model's arch: Unet, UnetPlusPlus, FPN, PSPNet, DeepLabV3Plus, Linknet, ...
    _C.MODEL.SMP.ARCH = "Unet"
    _C.MODEL.SMP.ENCODER = "resnet34"
    # Encoder start: "" (random init), a checkpoint file of the encoder's weights, or the name
    # of smp's pretrained weights ("imagenet"), downloaded once into the torch hub cache.
    _C.MODEL.SMP.ENCODER_WEIGHTS = ""
    _C.MODEL.SMP.ENCODER_DEPTH = 5
    # Decoder widths, one per encoder stage (U-Net family); empty: the architecture's default.
    _C.MODEL.SMP.DECODER_CHANNELS = []

    # Classical segmentation, no training (instseg.modeling.classical, MODEL.META_ARCHITECTURE
    # ClassicalSegmentor; `instseg segment --method`).
    _C.MODEL.CLASSICAL = CfgNode()
    # otsu (threshold), kmeans (colour clusters), watershed (touching objects apart) or canny.
    _C.MODEL.CLASSICAL.METHOD = "otsu"
    # k-means clusters, the background's included.
    _C.MODEL.CLASSICAL.CLUSTERS = 3
    # Instances (connected components; the watershed's regions) instead of a class-id map.
    _C.MODEL.CLASSICAL.INSTANCES = False
    # Instances smaller than this many pixels are left out.
    _C.MODEL.CLASSICAL.MIN_AREA = 16

    _C.INSTSEG.PREDICT = CfgNode()
    # Images per forward pass; instances are the same as with DefaultPredictor.
    _C.INSTSEG.PREDICT.BATCH_SIZE = 1
    # Keep only these class names (empty: all classes).
    _C.INSTSEG.PREDICT.CLASSES = []
    # Fold eval-mode norms into convolutions and run channels-last: faster on CPU, same instances
    # as DefaultPredictor to float rounding. False: the model exactly as DefaultPredictor builds it.
    _C.INSTSEG.PREDICT.OPTIMIZE_MODEL = True
    # Precision of the network at inference: fp32, bf16, fp16, or auto (bf16 on a CPU with
    # AMX and on CUDA devices with bf16, fp16 on other CUDA devices, fp32 otherwise). Box
    # decoding, mask pasting and thresholding stay fp32 (instseg.engine.precision).
    _C.INSTSEG.PREDICT.PRECISION = "fp32"
    # Draw annotated images / videos.
    _C.INSTSEG.PREDICT.RENDER = True
    # "visualizer" (Detectron2's Visualizer / VideoVisualizer), "fast" (OpenCV drawing of the
    # same masks, boxes, labels and colours) or "auto" (fast: scripts/bench_predict.py).
    _C.INSTSEG.PREDICT.RENDERER = "auto"
    # Annotated images and videos show instances scoring at least this; the results files
    # (predictions.json, JSONL) keep every instance above MODEL.ROI_HEADS.SCORE_THRESH_TEST, so
    # they can be evaluated.
    _C.INSTSEG.PREDICT.DRAW_SCORE = 0.5
    # Write one PNG per image whose pixel values are instance ids (0 = background).
    _C.INSTSEG.PREDICT.SAVE_MASKS = False
    # Bounded queue length between pipeline stages; memory stays flat for any input size.
    _C.INSTSEG.PREDICT.QUEUE_SIZE = 8

    # Tiled inference for large images and small objects (instseg.inference.tiles): images
    # larger than SIZE are cut into overlapping SIZE x SIZE tiles, each predicted at model
    # resolution, BATCH_SIZE tiles per forward pass, and the tiles' instances merged into one set.
    _C.INSTSEG.PREDICT.TILES = CfgNode()
    # Tile side in pixels (0: no tiling).
    _C.INSTSEG.PREDICT.TILES.SIZE = 0
    # Fraction of a tile shared with each neighbour; objects up to about this times SIZE are
    # seen whole by some tile.
    _C.INSTSEG.PREDICT.TILES.OVERLAP = 0.2
    # Also predict the whole image (resized as without tiling), for objects larger than a tile.
    _C.INSTSEG.PREDICT.TILES.FULL_IMAGE = True
    # Two instances of one class from different tiles are one object when, where both tiles
    # see, their masks' intersection is at least this fraction of the smaller mask (IoS).
    _C.INSTSEG.PREDICT.TILES.MATCH_IOS = 0.5

    _C.INSTSEG.TRACK = CfgNode()
    # Identities across a video's frames (instseg.inference.tracking): "hungarian" (Detectron2's
    # IoU-weighted Hungarian tracker, matching boxes within a class) or "none".
    _C.INSTSEG.TRACK.METHOD = "hungarian"
    # Processed frames a lost track waits, at its last box, to be matched again.
    _C.INSTSEG.TRACK.MAX_LOST_FRAMES = 10
    # Least box IoU between a detection and a track's last box for them to match.
    _C.INSTSEG.TRACK.MIN_IOU = 0.3
    # A track is kept while lost only once it was seen in more than this many frames.
    _C.INSTSEG.TRACK.MIN_INSTANCE_PERIOD = 0
    # Instances scoring under this are not tracked (no track id; not in the track files).
    _C.INSTSEG.TRACK.MIN_SCORE = 0.5
    # Tracks seen in fewer frames are listed in NAME.tracks.json but not counted as objects.
    _C.INSTSEG.TRACK.MIN_FRAMES = 3

    _C.INSTSEG.VIDEO = CfgNode()
    # "auto" (H.264 through PyAV when available, else OpenCV mp4v), "h264" or "mp4v".
    _C.INSTSEG.VIDEO.CODEC = "auto"
    # Process every N-th frame.
    _C.INSTSEG.VIDEO.FRAME_STRIDE = 1
    # Time range in seconds (negative: from the start / to the end).
    _C.INSTSEG.VIDEO.START = -1.0
    _C.INSTSEG.VIDEO.END = -1.0
    # Stop after this many processed frames (0: no limit).
    _C.INSTSEG.VIDEO.MAX_FRAMES = 0


def is_semantic(cfg: CfgNode) -> bool:
    """Whether the config's model labels pixels (a class-id map per image) instead of instances."""
    if cfg.MODEL.META_ARCHITECTURE == CLASSICAL_ARCHITECTURE:
        return not cfg.MODEL.CLASSICAL.INSTANCES
    return cfg.MODEL.META_ARCHITECTURE in SEMANTIC_ARCHITECTURES


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config path as given, else the same name under the repository's ``configs/``."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for name in (candidate, Path(f"{candidate}.yaml")):
        shipped = PROJECT_CONFIG_DIR / name
        if shipped.is_file():
            return shipped
    raise ConfigError(f"{path}: config file not found")


def build_cfg(
    config_files: Sequence[str | os.PathLike] = (), opts: Sequence[str] = (), freeze: bool = True
) -> CfgNode:
    """Merge, in this order: Detectron2 defaults, the model-zoo base named by the project YAMLs
    (``INSTSEG.MODEL_ZOO_CONFIG``), each project YAML (later wins; ``_BASE_`` works between
    them), then ``KEY VALUE`` overrides. An unknown key is a :class:`ConfigError` naming the key,
    where it came from and the closest valid key.
    """
    if len(opts) % 2:
        raise ConfigError(f"command line: overrides must be KEY VALUE pairs, got {list(opts)}")
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_instseg_config(cfg)
    cfg.MODEL.DEVICE = default_device()

    paths = [resolve_config_path(path) for path in config_files]
    zoo_config = _zoo_config_name(paths, opts)
    if zoo_config:
        try:
            zoo_file = model_zoo.get_config_file(zoo_config)
        except RuntimeError as e:
            raise ConfigError(f"INSTSEG.MODEL_ZOO_CONFIG: {e}") from None
        _merge(
            cfg,
            f"model zoo {zoo_config}",
            lambda: cfg.merge_from_file(zoo_file, allow_unsafe=False),
        )
        cfg.INSTSEG.MODEL_ZOO_CONFIG = zoo_config
    for path in paths:
        data = CfgNode(load_config_yaml(path))
        _merge(cfg, str(path), lambda data=data: cfg.merge_from_other_cfg(data))
    _merge(cfg, "command line", lambda: cfg.merge_from_list(list(opts)))
    _apply_dataset_names(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def _zoo_config_name(paths: Iterable[Path], opts: Sequence[str]) -> str:
    """The last ``INSTSEG.MODEL_ZOO_CONFIG`` set by a project YAML (with its bases) or override."""
    name = ""
    for path in paths:
        loaded = load_config_yaml(path)
        name = (loaded.get("INSTSEG") or {}).get("MODEL_ZOO_CONFIG", name)
    for key, value in zip(opts[0::2], opts[1::2], strict=True):
        if key == "INSTSEG.MODEL_ZOO_CONFIG":
            name = value
    return name


def load_config_yaml(path: str | os.PathLike, _including: tuple[Path, ...] = ()) -> dict:
    """A config YAML with its ``_BASE_`` chain merged in, as plain data.

    YAML's safe loader only, so a file from anyone never runs code. ``_BASE_`` names a file
    relative to the including one, or a shipped config by name (as ``--config`` takes it).

    Raises:
        ConfigError: one line, ``FILE[:LINE:COLUMN]: problem``.
    """
    path = Path(path)
    if path.suffix == ".py":
        raise ConfigError(f"{path}: Python (LazyConfig) files are not supported; configs are YAML")
    if path.resolve() in _including:
        raise ConfigError(f"{path}: _BASE_ chain includes this file again")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise _yaml_error(e, path) from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config: {' '.join(str(e).split())}") from None
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config is a mapping of KEY: value, not a {type(data).__name__}"
        )
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: _BASE_ must be one file name, got {base!r}")
    merged = load_config_yaml(_resolve_base(base, path), (*_including, path.resolve()))
    _merge_dicts(data, merged)
    return merged


def _resolve_base(base: str, including: Path) -> Path:
    relative = including.parent / Path(base).expanduser()
    if relative.is_file():
        return relative
    for name in (Path(base), Path(f"{base}.yaml")):
        shipped = PROJECT_CONFIG_DIR / name
        if shipped.is_file():
            return shipped
    raise ConfigError(
        f"{including}: _BASE_ {base}: not found (as a path relative to {including.parent}, or as "
        "a shipped config's name)"
    )


def _merge_dicts(source: dict, into: dict) -> None:
    """``source`` over ``into``, recursively: a later file's keys win, sibling keys survive."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge_dicts(value, into[key])
        else:
            into[key] = value


def _yaml_error(exc: yaml.YAMLError, path: str | os.PathLike) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    if "python/" in str(exc):
        problem = "Python tags are not allowed: instseg reads configs as data, never as code"
    return ConfigError(f"{where}: {' '.join(problem.split())}")


_TUPLE_GIVEN_STR = re.compile(
    r"Type mismatch \(<class 'tuple'> vs\. <class 'str'>\) with values \((?:.*?) vs\. (.*)\) "
    r"for config key: (\S+)"
)


def _merge(cfg: CfgNode, source: str, merge) -> None:
    try:
        merge()
    except yaml.YAMLError as e:
        raise _yaml_error(e, source) from None
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        message = " ".join((str(e.args[0]) if e.args else str(e)).split())
        unknown = _UNKNOWN_KEY.search(message)
        if unknown:
            key = unknown.group(1)
            raise ConfigError(
                f"{source}: unknown config key {key}{_suggestion(cfg, key)}"
            ) from None
        as_str = _TUPLE_GIVEN_STR.search(message)
        if as_str:
            value, key = as_str.groups()
            raise ConfigError(
                f'{source}: {key} is a tuple of names: write ("{value}",), not {value}'
            ) from None
        raise ConfigError(f"{source}: {message}") from None


def _suggestion(cfg: CfgNode, key: str) -> str:
    matches = difflib.get_close_matches(key, list(_flat_keys(cfg)), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]}?" if matches else ""


def _flat_keys(node: CfgNode, prefix: str = "") -> Iterable[str]:
    for key, value in node.items():
        full_key = f"{prefix}{key}"
        if isinstance(value, CfgNode):
            yield from _flat_keys(value, f"{full_key}.")
        else:
            yield full_key


def _apply_dataset_names(cfg: CfgNode) -> None:
    """Declared datasets decide what Detectron2 trains and evaluates on."""
    declared = cfg.INSTSEG.DATASETS
    if declared.TRAIN.NAME:
        cfg.DATASETS.TRAIN = (declared.TRAIN.NAME,)
    if declared.VAL.NAME:
        cfg.DATASETS.TEST = (declared.VAL.NAME,)
    elif declared.TRAIN.NAME:
        # No val set: nothing to evaluate during training, rather than the model-zoo base's COCO
        # val set, which the project does not have.
        cfg.DATASETS.TEST = ()


def save_cfg(cfg: CfgNode, path: str | os.PathLike) -> Path:
    """Write the merged config atomically, so a run folder always holds a loadable config.yaml."""
    return atomic_write_text(path, cfg.dump())
