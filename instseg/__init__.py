"""instseg: fine-tune Detectron2's Mask R-CNN on COCO-format data, predict folders, annotate videos.

``from instseg import Predictor`` is the Python API (see ``instseg.api``); it is imported on
first use, so the command line starts without loading torch.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "Result", "__version__"]


def __getattr__(name: str):
    if name in ("Predictor", "Result"):
        from instseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'instseg' has no attribute {name!r}")
