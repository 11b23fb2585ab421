"""Training and evaluation: the trainer and its hooks, COCO evaluation, checkpoints and weights."""

from instseg.engine.checkpoints import FinetuneCheckpointer, resolve_weights
from instseg.engine.coco_evaluation import InstsegCOCOEvaluator
from instseg.engine.evaluate import EvalRequest, run_evaluation
from instseg.engine.trainer import Trainer, TrainRequest, launch_training, train

__all__ = [
    "EvalRequest",
    "FinetuneCheckpointer",
    "InstsegCOCOEvaluator",
    "TrainRequest",
    "Trainer",
    "launch_training",
    "resolve_weights",
    "run_evaluation",
    "train",
]
