"""Inference: one predict job for every kind of source (``runner.predict``), its settings, the
model seam, the stage pipeline and its outputs."""

from instseg.inference.model import BatchPredictor, Model, build_model
from instseg.inference.settings import PredictSettings, load_model_config
from instseg.inference.sources import resolve_source

__all__ = [
    "BatchPredictor",
    "Model",
    "PredictSettings",
    "build_model",
    "load_model_config",
    "resolve_source",
]
