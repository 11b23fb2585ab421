"""Fine-tuning: Detectron2's DefaultTrainer with instseg's evaluator, validation loss, best-model
checkpoint and training curves, resumable after a crash, single- or multi-process via ``launch``.
"""

import functools
import logging
import math
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.engine import DefaultTrainer, HookBase, hooks, launch
from detectron2.engine import defaults as _d2_defaults
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from detectron2.utils.logger import setup_logger

from instseg.config import build_cfg, save_cfg
from instseg.curves import plot_training_curves
from instseg.datasets import register_datasets
from instseg.weights import FinetuneCheckpointer

logger = logging.getLogger(__name__)


class BestCheckpointer(hooks.BestCheckpointer):
    """Detectron2's BestCheckpointer whose best record is part of the trainer's checkpointed
    state, so that ``--resume`` only replaces ``model_best.pth`` with a better model."""

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state):
        self.best_metric, self.best_iter = state["best_metric"], state["best_iter"]

    def _best_checking(self):
        latest = self.trainer.storage.latest().get(self._val_metric)
        if latest is None:
            self._logger.warning("Metric %s was not computed; no best checkpoint", self._val_metric)
            return
        value, iteration = latest
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            self._logger.info(
                "%s = %.3f is not better than %.3f @ iteration %s; model_best.pth kept",
                self._val_metric,
                value,
                self.best_metric,
                self.best_iter,
            )
            return
        # Record first, then save: the saved trainer state then carries this very record.
        if self._update_best(value, iteration):
            self._checkpointer.save(self._file_prefix, iteration=iteration)
            self._logger.info(
                "New best %s = %.3f @ iteration %d", self._val_metric, value, iteration
            )


class ValidationLoss(HookBase):
    """Logs the training losses computed on the validation set (``val/<loss>``) at each
    evaluation. Normalisation layers stay in inference mode and the RNG is forked, so measuring
    changes neither running statistics nor the training run's random stream."""

    def __init__(self, cfg: CfgNode, eval_period: int):
        self._period = eval_period
        self._cfg = cfg
        self._loader = None

    def _build_loader(self):
        cfg = self._cfg
        dataset = DatasetCatalog.get(cfg.DATASETS.TEST[0])
        if cfg.INSTSEG.TRAIN.VAL_LOSS_MAX_IMAGES > 0:
            dataset = dataset[: cfg.INSTSEG.TRAIN.VAL_LOSS_MAX_IMAGES]
        resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        mapper = DatasetMapper(cfg, is_train=True, augmentations=[resize])
        batch_size = max(1, cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size())
        return build_detection_test_loader(dataset, mapper=mapper, batch_size=batch_size)

    @torch.no_grad()
    def _compute(self) -> dict[str, float]:
        if self._loader is None:
            self._loader = self._build_loader()
        model = self.trainer.model
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)]
        totals: dict[str, float] = {}
        batches = 0
        # A throwaway EventStorage catches the statistics the heads log in training mode, which
        # would otherwise be mixed into the training run's metrics.
        with torch.random.fork_rng(devices=[]), EventStorage(self.trainer.iter):
            for m in norms:
                m.eval()
            try:
                for batch in self._loader:
                    losses = model(batch)
                    for name, value in losses.items():
                        totals[name] = totals.get(name, 0.0) + float(value)
                    batches += 1
            finally:
                for m in norms:
                    m.train()
        gathered = comm.all_gather((totals, batches))
        count = sum(n for _, n in gathered)
        merged = {
            name: sum(t.get(name, 0.0) for t, _ in gathered) / max(count, 1) for name in totals
        }
        merged["total_loss"] = sum(merged.values())
        return merged

    def _run(self):
        if not self._cfg.DATASETS.TEST:
            return
        losses = self._compute()
        if all(math.isfinite(v) for v in losses.values()):
            self.trainer.storage.put_scalars(
                **{f"val/{name}": value for name, value in losses.items()}, smoothing_hint=False
            )
        logger.info("Validation loss: %s", ", ".join(f"{k}={v:.4f}" for k, v in losses.items()))

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._run()

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._run()


class PeriodicWriter(hooks.PeriodicWriter):
    """Detectron2's PeriodicWriter that also writes right after each evaluation. The event storage
    keeps only the latest value of a metric, so with EVAL_PERIOD shorter than the writer period
    an evaluation would otherwise be replaced by the next one before reaching metrics.json."""

    def __init__(self, writers, period: int, eval_period: int):
        super().__init__(writers, period)
        self._eval_period = eval_period

    def after_step(self):
        super().after_step()
        next_iter = self.trainer.iter + 1
        already_written = next_iter % self._period == 0 or next_iter == self.trainer.max_iter
        if self._eval_period > 0 and next_iter % self._eval_period == 0 and not already_written:
            for writer in self._writers:
                writer.write()


class TrainingCurves(HookBase):
    """Redraws ``training_curves.png`` after each evaluation and at the end of training. It runs
    after the writers, so ``metrics.json`` already holds the newest evaluation."""

    def __init__(self, output_dir: str, eval_period: int):
        self._metrics = Path(output_dir) / "metrics.json"
        self._out = Path(output_dir) / "training_curves.png"
        self._period = eval_period

    def _plot(self):
        if self._metrics.is_file():
            plot_training_curves(self._metrics, self._out)

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0:
            self._plot()

    def after_train(self):
        self._plot()


class Trainer(DefaultTrainer):
    """DefaultTrainer with COCO evaluation through instseg's evaluator, validation loss,
    ``model_best.pth``, training curves, and fine-tuning from checkpoints with other classes."""

    def __init__(self, cfg: CfgNode):
        # Detectron2 wraps the model in DistributedDataParallel with device_ids=[local rank],
        # which DDP rejects for a CPU model: CPU processes (gloo) must pass no device ids.
        create_ddp_model = _d2_defaults.create_ddp_model
        if cfg.MODEL.DEVICE == "cpu":
            _d2_defaults.create_ddp_model = functools.partial(create_ddp_model, device_ids=None)
        try:
            super().__init__(cfg)
        finally:
            _d2_defaults.create_ddp_model = create_ddp_model

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        from instseg.evaluate import InstsegCOCOEvaluator

        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return InstsegCOCOEvaluator(dataset_name, output_dir=output_folder)

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
            extra.append(BestCheckpointer(period, self.checkpointer, cfg.INSTSEG.TRAIN.BEST_METRIC))
        hook_list[eval_index + 1 : eval_index + 1] = extra
        for i, hook in enumerate(hook_list):
            if type(hook) is hooks.PeriodicWriter:
                hook_list[i] = PeriodicWriter(hook._writers, hook._period, period)
        if cfg.INSTSEG.TRAIN.PLOT_CURVES and comm.is_main_process():
            hook_list.append(TrainingCurves(cfg.OUTPUT_DIR, period))
        return hook_list


# Short logger names in console lines, as Detectron2 abbreviates its own.
_LOG_ABBREV = {"detectron2": "d2", "fvcore": "fvcore", "instseg": "instseg"}


def setup_run(cfg: CfgNode) -> None:
    """Make the run folder self-describing: log.txt, config.yaml; seed the RNGs."""
    output_dir = Path(cfg.OUTPUT_DIR)
    rank = comm.get_rank()
    if comm.is_main_process():
        output_dir.mkdir(parents=True, exist_ok=True)
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
