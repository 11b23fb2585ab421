"""Data structures of predictions beside Detectron2's own (``detectron2.structures``)."""

from instseg.structures.cropped_masks import CroppedMasks

__all__ = ["CroppedMasks"]
