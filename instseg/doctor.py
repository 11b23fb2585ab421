"""Environment report: versions, device, and which features Detectron2's compiled ops change."""

import importlib.metadata
import platform
import sys


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def detectron2_source() -> str:
    """Which install of Detectron2 this is: the official source build or the PyPI fallback."""
    for name, source in (
        ("detectron2", "official source build (DETECTRON2_SOURCE)"),
        ("sal-detectron2", "PyPI fallback sal-detectron2 (Python code only)"),
    ):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return source
    return "unknown (not installed by pip)"


def collect_environment() -> list[tuple[str, str]]:
    import cv2
    import detectron2
    import numpy
    import torch
    import torchvision

    from instseg import __version__
    from instseg.config import default_device
    from instseg.engine.coco_evaluation import has_compiled_ops, select_cocoeval_backend
    from instseg.engine.precision import resolve_precision

    rows = [
        ("instseg", __version__),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", torch.__version__),
        ("torchvision", torchvision.__version__),
        ("Detectron2", f"{detectron2.__version__} ({detectron2.__file__.rsplit('/', 2)[0]})"),
        ("Detectron2 source", detectron2_source()),
        ("OpenCV", cv2.__version__),
        ("numpy", numpy.__version__),
        ("pycocotools", _version("pycocotools")),
        ("faster-coco-eval", _version("faster-coco-eval")),
        ("PyAV", _version("av")),
        ("CPU threads", str(torch.get_num_threads())),
    ]
    device = default_device()
    if device == "cuda":
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(("device", f"cuda ({names}; CUDA {torch.version.cuda})"))
    else:
        rows.append(("device", "cpu (no CUDA device visible)"))

    precision = resolve_precision("auto", device)
    rows.append(("precision auto", f"{precision.name} ({precision.reason})"))

    compiled = has_compiled_ops()
    rows.append(("Detectron2 compiled ops", "present" if compiled else "absent"))
    rows.append(("COCO eval backend", select_cocoeval_backend()))
    if compiled:
        rows.append(("features", "all Detectron2 features available"))
    else:
        rows += [
            ("  unavailable", "rotated boxes (RRPN/rotated NMS), deformable convolution"),
            ("  unaffected", "Mask R-CNN training, inference, evaluation, rendering"),
        ]
    return rows


def format_environment(rows: list[tuple[str, str]]) -> str:
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows)
