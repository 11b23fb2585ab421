"""COCO evaluation for instseg: Detectron2's COCOEvaluator with a fast backend that needs no CUDA build.

Detectron2's fast COCO evaluation (``COCOeval_opt``) lives in its compiled ``_C`` extension. Without
it, Detectron2 falls back to pure-Python pycocotools, which is slow on real validation sets. Here
faster-coco-eval (a prebuilt wheel with the same C++ matching/accumulation) takes its place, while
everything else (result conversion, category id mapping, per-category table, metric names) stays
Detectron2's own code.
"""

import contextlib
import importlib
import logging
import threading
from collections.abc import Iterator

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation as _d2_coco

logger = logging.getLogger(__name__)


BACKENDS = ("detectron2-fast", "faster-coco-eval", "pycocotools")
AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_TABLE_TASKS = ("bbox", "segm")

# Detectron2 resolves its evaluator class from a module global at call time; swaps of that global
# must not interleave between threads.
_SWAP_LOCK = threading.RLock()


def has_compiled_ops() -> bool:
    """Whether Detectron2's compiled extension imports (it carries the fast COCO evaluator)."""
    try:
        importlib.import_module("detectron2._C")
    except ImportError:
        return False
    return True


def _detectron2_fast_available() -> bool:
    """Detectron2's own test: its fast evaluator resolved to something other than pycocotools."""
    return has_compiled_ops() and _d2_coco.COCOeval_opt is not _d2_coco.COCOeval


def _faster_coco_eval_class():
    """The faster-coco-eval evaluator class, or None when the package is not installed."""
    try:
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        return None
    return COCOeval_faster


def select_cocoeval_backend(backend: str = "auto") -> str:
    """Resolve ``backend`` to one of BACKENDS; "auto" picks the fastest one that is installed.

    An explicitly requested backend that cannot run raises instead of silently degrading, so
    reported numbers always come from the implementation that was asked for.
    """
    if backend == "auto":
        if _detectron2_fast_available():
            return "detectron2-fast"
        if _faster_coco_eval_class() is not None:
            return "faster-coco-eval"
        return "pycocotools"
    if backend not in BACKENDS:
        raise ValueError(f"Unknown COCO eval backend {backend!r}; use 'auto' or one of {BACKENDS}")
    if backend == "detectron2-fast" and not _detectron2_fast_available():
        raise RuntimeError(
            "COCO eval backend 'detectron2-fast' needs Detectron2's compiled ops (_C)"
        )
    if backend == "faster-coco-eval" and _faster_coco_eval_class() is None:
        raise RuntimeError(
            "COCO eval backend 'faster-coco-eval' needs the faster-coco-eval package"
        )
    return backend


@contextlib.contextmanager
def _detectron2_fast_evaluator_replaced_by(cocoeval_cls) -> Iterator[None]:
    """Temporarily make Detectron2's "fast implementation" slot resolve to ``cocoeval_cls``."""
    with _SWAP_LOCK:
        original = _d2_coco.COCOeval_opt
        _d2_coco.COCOeval_opt = cocoeval_cls
        try:
            yield
        finally:
            _d2_coco.COCOeval_opt = original


class InstsegCOCOEvaluator(COCOEvaluator):
    """Detectron2's COCOEvaluator that uses faster-coco-eval when Detectron2's fast path is missing.

    ``backend`` is "auto" (Detectron2's compiled evaluator, else faster-coco-eval, else
    pycocotools) or one of BACKENDS to force an implementation. With "auto",
    ``use_fast_impl=False`` keeps its Detectron2 meaning: use the official pycocotools code.
    Other keyword arguments go to Detectron2's COCOEvaluator unchanged. A custom
    ``max_dets_per_image`` other than 100 is evaluated by Detectron2's pycocotools-based
    ``COCOevalMaxDets`` whatever the backend, as in Detectron2.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks=("bbox", "segm"),
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        backend: str = "auto",
        **kwargs,
    ):
        if backend == "auto" and kwargs.get("use_fast_impl", True) is False:
            backend = "pycocotools"
        self.backend = select_cocoeval_backend(backend)
        kwargs["use_fast_impl"] = self.backend == "detectron2-fast"
        super().__init__(
            dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir, **kwargs
        )
        if self.backend == "faster-coco-eval":
            # Route Detectron2's own "fast implementation" branch to faster-coco-eval.
            self._use_fast_impl = True
        self._warn_if_category_mapping_missing(dataset_name)
        logger.info("COCO evaluation backend for %r: %s", dataset_name, self.backend)

    def _warn_if_category_mapping_missing(self, dataset_name: str) -> None:
        """Contiguous class indices are only mapped back once the dataset has been loaded."""
        if hasattr(self._metadata, "thing_dataset_id_to_contiguous_id"):
            return
        cat_ids = sorted(self._coco_api.getCatIds())
        if cat_ids != list(range(len(cat_ids))):
            logger.warning(
                "Dataset %r has category ids %s but no thing_dataset_id_to_contiguous_id metadata "
                "yet; predicted class indices would be scored as raw category ids. Load the "
                "dataset (DatasetCatalog.get) before evaluating.",
                dataset_name,
                cat_ids,
            )

    def _eval_predictions(self, predictions, img_ids=None):
        """Detectron2's evaluation, with faster-coco-eval in its fast-implementation slot."""
        if self.backend != "faster-coco-eval":
            return super()._eval_predictions(predictions, img_ids=img_ids)
        with _detectron2_fast_evaluator_replaced_by(_faster_coco_eval_class()):
            return super()._eval_predictions(predictions, img_ids=img_ids)
