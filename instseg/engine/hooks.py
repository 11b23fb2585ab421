"""Training hooks: best-model checkpoint, validation loss, evaluation-aware metric writing and
training curves.
"""

import logging
import math
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data import transforms as T
from detectron2.engine import HookBase, hooks
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from instseg.data.semantic import build_mapper
from instseg.viz.curves import plot_training_curves

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
        mapper = build_mapper(cfg, is_train=True, augmentations=[resize])
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
