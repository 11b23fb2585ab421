"""``instseg eval``: a checkpoint evaluated on a registered dataset, AP tables and the results
JSON.
"""

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tabulate import tabulate

from instseg.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)


AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_TABLE_TASKS = ("bbox", "segm")


def _fmt(value) -> str:
    """Two decimals; NaN (metric undefined, e.g. no objects of that size) stays visible as such."""
    if value is None:
        return "-"
    value = float(value)
    return "nan" if math.isnan(value) else f"{value:.2f}"


def format_ap_table(results: Mapping) -> str:
    """Summary table, one row per task (bbox, segm) present in ``results``, AP columns in percent."""
    rows = [
        [task] + [_fmt(results[task].get(metric)) for metric in AP_METRICS]
        for task in _TABLE_TASKS
        if task in results
    ]
    return tabulate(
        rows,
        headers=["task", *AP_METRICS],
        tablefmt="pipe",
        stralign="right",
        disable_numparse=True,
    )


def format_per_class_ap(results: Mapping) -> str:
    """Per-category AP table: one row per class, one column per task (bbox, segm)."""
    tasks = [task for task in _TABLE_TASKS if task in results]
    class_names: list[str] = []
    for task in tasks:
        for key in results[task]:
            if key.startswith("AP-") and key[3:] not in class_names:
                class_names.append(key[3:])
    rows = [
        [name] + [_fmt(results[task].get(f"AP-{name}")) for task in tasks] for name in class_names
    ]
    return tabulate(
        rows,
        headers=["category", *(f"{task} AP" for task in tasks)],
        tablefmt="pipe",
        stralign="right",
        disable_numparse=True,
    )


SEMANTIC_METRICS = ("mIoU", "fwIoU", "mACC", "pACC")


def format_semantic_table(results: Mapping) -> str:
    """Summary of a semantic evaluation: mIoU, frequency-weighted IoU, mean class accuracy and
    pixel accuracy, in percent."""
    sem = results.get("sem_seg", {})
    return tabulate(
        [[_fmt(sem.get(m)) for m in SEMANTIC_METRICS]],
        headers=list(SEMANTIC_METRICS),
        tablefmt="pipe",
        stralign="right",
        disable_numparse=True,
    )


def format_per_class_iou(results: Mapping) -> str:
    """Per-class IoU and accuracy of a semantic evaluation."""
    sem = results.get("sem_seg", {})
    names = [key[4:] for key in sem if key.startswith("IoU-")]
    rows = [[name, _fmt(sem.get(f"IoU-{name}")), _fmt(sem.get(f"ACC-{name}"))] for name in names]
    return tabulate(
        rows,
        headers=["class", "IoU", "ACC"],
        tablefmt="pipe",
        stralign="right",
        disable_numparse=True,
    )


def format_results(results: Mapping, per_class: bool = True) -> str:
    """The tables of any evaluation: AP for instance models, IoU for semantic ones."""
    if "sem_seg" in results:
        tables = [format_semantic_table(results)] + ([format_per_class_iou(results)] * per_class)
    else:
        tables = [format_ap_table(results)] + ([format_per_class_ap(results)] * per_class)
    return "\n".join(tables)


def _json_ready(obj):
    """Plain JSON values: numpy scalars/arrays unwrapped, NaN/inf as null (strict JSON readers)."""
    if isinstance(obj, Mapping):
        return {str(key): _json_ready(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_results_json(results: Mapping, path: str | os.PathLike) -> Path:
    """Write ``results`` as strict JSON (NaN, an undefined metric, as null), atomically."""
    atomic_write_text(path, json.dumps(_json_ready(results), indent=2, allow_nan=False) + "\n")
    logger.info("Wrote evaluation results to %s", path)
    return Path(path)


@dataclass
class EvalRequest:
    """What ``instseg eval`` asks for."""

    config_files: list[str]
    weights: str
    opts: list[str] = field(default_factory=list)
    dataset: str | None = None
    output_dir: str | None = None


def run_evaluation(request: EvalRequest) -> tuple[dict, Path]:
    """Evaluate ``request.weights`` on a registered dataset (default: the config's val set).

    Returns the results (``{"bbox": {...}, "segm": {...}}``, or ``{"sem_seg": {...}}`` for a
    semantic model) and the JSON file they were written to: ``<output>/eval_<dataset>.json``,
    by default beside the weights.
    """
    from detectron2.data import DatasetCatalog

    from instseg.config import ConfigError, build_cfg
    from instseg.data.catalog import register_datasets
    from instseg.engine.checkpoints import FinetuneCheckpointer
    from instseg.engine.precision import PrecisionModel, resolve_precision
    from instseg.engine.trainer import Trainer

    cfg = register_datasets(build_cfg(request.config_files, request.opts))
    dataset = request.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
    if not dataset or dataset not in DatasetCatalog.list():
        raise ConfigError(
            f"dataset {dataset!r} is not registered; declare it under INSTSEG.DATASETS "
            "(VAL or TEST) or pass --dataset NAME"
        )
    output_dir = Path(request.output_dir or Path(request.weights).resolve().parent)
    model = Trainer.build_model(cfg)
    FinetuneCheckpointer(model).load(request.weights)
    precision = resolve_precision(cfg.INSTSEG.PREDICT.PRECISION, cfg.MODEL.DEVICE)
    logger.info("Evaluating %s on %s in %s", request.weights, dataset, precision.name)
    model = PrecisionModel(model, precision)
    evaluator = Trainer.build_evaluator(cfg, dataset, str(output_dir / f"inference_{dataset}"))
    results = Trainer.test(cfg, model, evaluators=[evaluator])
    path = write_results_json(results, output_dir / f"eval_{dataset}.json")
    return results, path
