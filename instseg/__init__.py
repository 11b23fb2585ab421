"""instseg: fine-tune Detectron2's Mask R-CNN on COCO-format data, predict folders, annotate videos."""

__version__ = "0.1.0"
