"""Fine-tuning: Detectron2's DefaultTrainer with instseg's evaluator, validation loss, best-model
checkpoint and training curves, resumable after a crash, single- or multi-process via ``launch``.
"""

import functools
import logging
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, hooks, launch
from detectron2.engine import defaults as _d2_defaults
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

import instseg.modeling  # noqa: F401  (registers instseg's meta-architectures)
from instseg.config import build_cfg, is_semantic, save_cfg
from instseg.data.catalog import register_datasets
from instseg.data.semantic import SemanticGroundTruth, build_mapper
from instseg.engine.amp import AutocastTrainer
from instseg.engine.checkpoints import FinetuneCheckpointer
from instseg.engine.hooks import BestCheckpointer, PeriodicWriter, TrainingCurves, ValidationLoss
from instseg.engine.precision import cpu_fast_bf16
from instseg.io.atomic import remove_stale_temps

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """DefaultTrainer with COCO evaluation through instseg's evaluator, validation loss,
    ``model_best.pth``, training curves, and fine-tuning from checkpoints with other classes."""

    def __init__(self, cfg: CfgNode):
        # Detectron2 wraps the model in DistributedDataParallel with device_ids=[local rank],
        # which DDP rejects for a CPU model: CPU processes (gloo) must pass no device ids.
        # On a CPU, SOLVER.AMP.ENABLED means bf16 autocast (instseg.engine.amp), built where
        # Detectron2 would build its CUDA-only AMPTrainer.
        create_ddp_model, amp_trainer = _d2_defaults.create_ddp_model, _d2_defaults.AMPTrainer
        if cfg.MODEL.DEVICE == "cpu":
            _d2_defaults.create_ddp_model = functools.partial(create_ddp_model, device_ids=None)
            _d2_defaults.AMPTrainer = AutocastTrainer
            if cfg.SOLVER.AMP.ENABLED:
                fast, why = cpu_fast_bf16()
                log = logger.info if fast else logger.warning
                log("SOLVER.AMP.ENABLED on CPU: bf16 autocast (%s)", why)
        try:
            super().__init__(cfg)
        finally:
            _d2_defaults.create_ddp_model = create_ddp_model
            _d2_defaults.AMPTrainer = amp_trainer

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, False))

    def build_hooks(self):
        cfg = self.cfg
        # Loads re-initialise class-specific predictors on a class-count change; every hook built
        # below checkpoints through this same object.
        self.checkpointer = FinetuneCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        hook_list = super().build_hooks()
        period = cfg.TEST.EVAL_PERIOD
        has_val = bool(cfg.DATASETS.TEST)
        eval_index = next(i for i, h in enumerate(hook_list) if isinstance(h, hooks.EvalHook))
        extra = []
        if has_val and cfg.INSTSEG.TRAIN.VAL_LOSS:
            extra.append(ValidationLoss(cfg, period))
        if has_val and comm.is_main_process():
            extra.append(BestCheckpointer(period, self.checkpointer, best_metric(cfg)))
        hook_list[eval_index + 1 : eval_index + 1] = extra
        for i, hook in enumerate(hook_list):
            if type(hook) is hooks.PeriodicWriter:
                hook_list[i] = PeriodicWriter(hook._writers, hook._period, period)
        if cfg.INSTSEG.TRAIN.PLOT_CURVES and comm.is_main_process():
            hook_list.append(TrainingCurves(cfg.OUTPUT_DIR, period))
        return hook_list


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: str | None):
    """COCO AP (instseg's evaluator) for instance models, Detectron2's SemSegEvaluator (mIoU,
    per-class IoU, pixel accuracy, fwIoU) for semantic ones."""
    if is_semantic(cfg):
        from detectron2.evaluation import SemSegEvaluator

        return SemSegEvaluator(
            dataset_name,
            output_dir=output_folder,
            sem_seg_loading_fn=SemanticGroundTruth(dataset_name),
        )
    from instseg.engine.coco_evaluation import InstsegCOCOEvaluator

    return InstsegCOCOEvaluator(dataset_name, output_dir=output_folder)


def best_metric(cfg: CfgNode) -> str:
    """The metric that selects model_best.pth: a semantic model left at the instance default
    is selected by mIoU."""
    metric = cfg.INSTSEG.TRAIN.BEST_METRIC
    return "sem_seg/mIoU" if is_semantic(cfg) and metric == "segm/AP" else metric


# Short logger names in console lines, as Detectron2 abbreviates its own.
_LOG_ABBREV = {"detectron2": "d2", "fvcore": "fvcore", "instseg": "instseg"}


def setup_run(cfg: CfgNode) -> None:
    """Make the run folder self-describing: log.txt, config.yaml; seed the RNGs."""
    output_dir = Path(cfg.OUTPUT_DIR)
    rank = comm.get_rank()
    if comm.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
    # Detectron2 caches setup_logger by its arguments: a second run into the same folder in this
    # process (a resume) must get its file handlers back after they are detached below.
    setup_logger.cache_clear()
    for name in ("detectron2", "fvcore", "instseg"):
        named_logger = logging.getLogger(name)
        console_streams = (sys.stdout, sys.stderr)
        # A previous run in this process logged to its own log.txt: detach that file.
        for handler in list(named_logger.handlers):
            if getattr(handler, "stream", None) not in console_streams:
                named_logger.removeHandler(handler)
        # Log to the console only where nobody did yet (a spawned worker, a script).
        console = not any(
            getattr(h, "stream", None) in console_streams for h in named_logger.handlers
        )
        setup_logger(
            str(output_dir), rank, name=name, abbrev_name=name[:2], configure_stdout=console
        )
    if comm.is_main_process():
        save_cfg(cfg, output_dir / "config.yaml")
        logger.info("Merged config written to %s", output_dir / "config.yaml")
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)


@dataclass
class TrainRequest:
    """What ``instseg train`` asks for; rebuilt into a cfg inside every worker process."""

    config_files: list[str]
    opts: list[str] = field(default_factory=list)
    output_dir: str | None = None
    weights: str | None = None
    resume: bool = False


def build_train_cfg(request: TrainRequest) -> CfgNode:
    opts = list(request.opts)
    if request.output_dir:
        opts += ["OUTPUT_DIR", request.output_dir]
    if request.weights is not None:
        opts += ["MODEL.WEIGHTS", request.weights]
    cfg = register_datasets(build_cfg(request.config_files, opts))
    if not cfg.DATASETS.TRAIN or cfg.DATASETS.TRAIN[0] not in DatasetCatalog.list():
        from instseg.config import ConfigError

        raise ConfigError("no training set: declare INSTSEG.DATASETS.TRAIN (NAME, JSON, IMAGES)")
    return cfg


def train(request: TrainRequest) -> dict:
    """Train in this process (one worker of a ``launch`` group); returns the final eval results."""
    cfg = build_train_cfg(request)
    if comm.get_world_size() > 1 and cfg.MODEL.DEVICE == "cpu":
        # Processes share the cores: one intra-op thread pool each would oversubscribe them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    setup_run(cfg)
    if not cfg.MODEL.WEIGHTS and cfg.MODEL.RESNETS.NORM == "FrozenBN":
        logger.warning(
            "Training from random init with FrozenBN diverges; use GN/BN, e.g. "
            "configs/mask_rcnn_R50_FPN_scratch_GN.yaml"
        )
    if comm.is_main_process():
        # Of a checkpoint save that a kill cut short (checkpoints are in the folder itself).
        remove_stale_temps(cfg.OUTPUT_DIR, recursive=False)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=request.resume)
    if request.resume and trainer.start_iter >= trainer.max_iter:
        logger.info("Training already finished at iteration %d", trainer.max_iter)
    trainer.train()
    return getattr(trainer, "_last_eval_results", {}) or {}


def launch_training(
    request: TrainRequest,
    num_gpus: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
) -> dict:
    """Run :func:`train` in ``num_gpus`` processes per machine (CPU processes use gloo).
    Returns the final evaluation results when training ran in this process."""
    if num_gpus * num_machines == 1:
        return train(request)
    launch(
        train,
        num_gpus,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=(request,),
    )
    return {}
