"""Datasets: COCO registration and metadata, validation, statistics, the synthetic sample data."""

from instseg.data.catalog import (
    build_metadata,
    load_coco_categories,
    register_coco_dataset,
    register_datasets,
)
from instseg.data.sample_data import write_sample_dataset
from instseg.data.stats import format_dataset_stats, load_dataset_stats
from instseg.data.validate import Problem, has_errors, validate_coco_dataset

__all__ = [
    "Problem",
    "build_metadata",
    "format_dataset_stats",
    "has_errors",
    "load_coco_categories",
    "load_dataset_stats",
    "register_coco_dataset",
    "register_datasets",
    "validate_coco_dataset",
    "write_sample_dataset",
]
