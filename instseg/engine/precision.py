"""Inference precision (``INSTSEG.PREDICT.PRECISION``): fp32, or bf16/fp16 autocast for the
network, with everything after it in fp32.

On a CPU with matrix units for bf16 (AMX, AVX512-BF16), oneDNN runs bf16 convolutions several
times faster than fp32 ones, which are already at the CPU's fp32 peak; on CUDA, half precision is
the usual speed-up. Only the network runs under autocast: box decoding is fp32 in Detectron2
itself (``Box2BoxTransform.apply_deltas``), and rescaling, mask pasting and thresholding
(``detector_postprocess``) run here on fp32 copies of the outputs, where bf16 coordinates would
be pixels off on a large image. The box predictor (two small linear layers) runs in fp32 too: its
class logits in bf16 (8 bits of mantissa) flip the top class of near ties, and it costs nothing
beside the convolutions (``scripts/bench_precision.py`` measures the class agreement).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from instseg.config import ConfigError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The precision inference runs in, and why it was chosen."""

    name: str  # fp32, bf16 or fp16
    device_type: str  # "cpu" or "cuda"
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.name)

    def autocast(self):
        """The context the network runs in (nothing for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def cpu_fast_bf16() -> tuple[bool, str]:
    """Whether this CPU runs bf16 convolutions fast, as torch sees it: oneDNN with bf16 support
    and AMX tiles it could enable (``_init_amx`` is torch's own check, private, used only here)."""
    if not torch.backends.mkldnn.is_available():
        return False, "oneDNN is not available"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, "oneDNN has no bf16 support on this CPU"
    amx = getattr(torch._C._cpu, "_init_amx", None)
    if amx is None or not amx():
        return False, "no AMX tiles for bf16 (emulated bf16 would be slower than fp32)"
    return True, f"oneDNN bf16 with AMX ({torch.backends.cpu.get_cpu_capability()})"


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


def resolve_precision(name: str, device: str) -> Precision:
    """``INSTSEG.PREDICT.PRECISION`` for ``MODEL.DEVICE``: auto never picks a precision the device
    would run slower or lacks; a forced one the CPU would only emulate runs with a warning, one a
    CUDA device lacks is refused."""
    key = str(name).strip().lower()
    if key not in PRECISIONS:
        raise ConfigError(
            f"INSTSEG.PREDICT.PRECISION must be one of {', '.join(PRECISIONS)}, got {name!r}"
        )
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    if device_type == "cuda":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if key == "auto":
            if bf16:
                return Precision("bf16", "cuda", "CUDA device with bf16")
            return Precision("fp16", "cuda", "CUDA device without bf16: fp16")
        if key == "bf16" and not bf16:
            raise ConfigError("INSTSEG.PREDICT.PRECISION bf16: this CUDA device has no bf16")
        return Precision(key, "cuda", "as configured")
    fast, why = cpu_fast_bf16()
    if key == "auto":
        return Precision("bf16" if fast else "fp32", "cpu", why)
    if key == "fp16":
        fast = torch.ops.mkldnn._is_mkldnn_fp16_supported()
        why = "oneDNN fp16" if fast else "oneDNN has no fp16 on this CPU"
    if key != "fp32" and not fast:
        # Runs everywhere (PyTorch emulates what the CPU lacks), only slower than fp32.
        _warn_once(f"INSTSEG.PREDICT.PRECISION {key} on this CPU: {why}; slower than fp32")
        return Precision(key, "cpu", f"as configured, emulated ({why})")
    return Precision(key, "cpu", "as configured")


def to_fp32(instances: Instances) -> Instances:
    """The network's raw outputs with floating fields in fp32, for fp32 post-processing."""
    for name, value in instances.get_fields().items():
        if isinstance(value, Boxes) and value.tensor.is_floating_point():
            instances.set(name, Boxes(value.tensor.float()))
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            instances.set(name, value.float())
    return instances


def run_outside_autocast(module: torch.nn.Module, device_type: str) -> None:
    """Make ``module`` run in fp32 inside an autocast region: its floating inputs are cast to fp32
    and autocast is off for its forward (hooks, so the module and its state_dict are unchanged)."""
    regions: list = []

    def enter(_module, args):
        region = torch.autocast(device_type, enabled=False)
        region.__enter__()
        regions.append(region)
        return tuple(
            a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
        )

    def leave(_module, _args, _output) -> None:
        regions.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave, always_call=True)


class PrecisionModel(torch.nn.Module):
    """A Detectron2 meta-architecture whose network runs in ``precision`` and whose
    post-processing (rescaling, mask pasting and thresholding) runs in fp32; in fp32 it is the
    model itself. Same inputs and outputs as the model in eval mode, so the predictor and
    Detectron2's ``inference_on_dataset`` both take it."""

    def __init__(self, model: torch.nn.Module, precision: Precision) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        box_predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
        if precision.dtype is not None and box_predictor is not None:
            run_outside_autocast(box_predictor, precision.device_type)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        if self.precision.dtype is None:
            return self.model(batched_inputs)
        if not hasattr(self.model, "roi_heads"):  # a semantic model: logits back in fp32
            with self.precision.autocast():
                outputs = self.model(batched_inputs)
            return [{k: v.float() for k, v in o.items()} for o in outputs]
        with self.precision.autocast():
            raw = self.model.inference(batched_inputs, do_postprocess=False)
        outputs = []
        for r, item in zip(raw, batched_inputs, strict=True):
            height = item.get("height", r.image_size[0])
            width = item.get("width", r.image_size[1])
            outputs.append({"instances": detector_postprocess(to_fp32(r), height, width)})
        return outputs
