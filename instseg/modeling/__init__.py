"""Models instseg adds to Detectron2's registries; importing this package registers them."""

from instseg.modeling.classical import ClassicalSegmentor
from instseg.modeling.smp_segmentor import SMPSegmentor

__all__ = ["ClassicalSegmentor", "SMPSegmentor"]
