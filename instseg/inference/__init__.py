"""Inference: the batched predictor, input sources, the stage pipeline and its outputs."""

from instseg.inference.model import BatchPredictor
from instseg.inference.settings import load_model_config
from instseg.inference.sources import resolve_source

__all__ = ["BatchPredictor", "load_model_config", "resolve_source"]
