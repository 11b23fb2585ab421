"""Mixed-precision training on a CPU (``SOLVER.AMP.ENABLED`` with ``MODEL.DEVICE cpu``): bf16.

Detectron2's ``AMPTrainer`` is CUDA-only: its step asserts CUDA, enters CUDA's autocast and
scales the loss for fp16. On a CPU with bf16 matrix units, bf16 autocast of the forward pass
makes a training step faster and needs no loss scaling (bf16 has fp32's exponent range), so
:class:`AutocastTrainer` is Detectron2's plain ``SimpleTrainer`` step with the model's forward
(loss included) run under ``torch.autocast``, and backward and the optimizer step outside it, as
PyTorch recommends. Its state is SimpleTrainer's, so ``--resume`` works across AMP on and off.
On CUDA, ``AMPTrainer`` is used unchanged.
"""

from __future__ import annotations

import torch
from detectron2.engine import SimpleTrainer


class AutocastTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose model forward runs under ``torch.autocast(device_type, dtype)``.

    Takes ``AMPTrainer``'s three leading arguments, so Detectron2's ``DefaultTrainer`` can build
    it in ``AMPTrainer``'s place.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        device_type: str = "cpu",
        dtype: torch.dtype = torch.bfloat16,
        **kwargs,
    ) -> None:
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.device_type, self.dtype = device_type, dtype
        self._autocast: list = []
        # Hooks instead of a wrapper module: the model, its state_dict and DDP stay as they are.
        model.register_forward_pre_hook(self._enter)
        model.register_forward_hook(self._exit, always_call=True)

    def _enter(self, module, args) -> None:
        if module.training:  # evaluation during training stays in the configured precision
            context = torch.autocast(self.device_type, dtype=self.dtype)
            context.__enter__()
            self._autocast.append(context)

    def _exit(self, module, args, output) -> None:
        if self._autocast:
            self._autocast.pop().__exit__(None, None, None)
