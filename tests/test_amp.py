"""Mixed-precision training on the CPU: the demo config's step in bf16, checkpointed, resumed."""

from __future__ import annotations

import json

import torch
from conftest import DEMO_CONFIG

from instseg.engine.amp import AutocastTrainer
from instseg.engine.trainer import Trainer, TrainRequest, build_train_cfg, train


def _iterations(run_dir) -> list[int]:
    records = [json.loads(line) for line in (run_dir / "metrics.json").read_text().splitlines()]
    return [r["iteration"] for r in records if "total_loss" in r]


def test_amp_on_cpu_trains_in_bf16_and_resumes_across_it(tmp_path, dataset_opts, tiny_opts):
    run = tmp_path / "run"
    opts = dataset_opts + tiny_opts + ["SOLVER.AMP.ENABLED", "True"]
    cfg = build_train_cfg(TrainRequest([str(DEMO_CONFIG)], opts, output_dir=str(run)))
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, AutocastTrainer)
    seen = []
    conv = trainer._trainer.model.backbone.bottom_up.stem.conv1
    handle = conv.register_forward_hook(lambda m, i, out: seen.append((m.training, out.dtype)))
    trainer.resume_or_load(resume=False)
    trainer.train()
    handle.remove()
    # Training forward passes ran in bf16, the final evaluation's in fp32.
    assert set(seen) == {(True, torch.bfloat16), (False, torch.float32)}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # fp32 master weights
    assert _iterations(run)[-1] == 3
    checkpoint = torch.load(run / "model_final.pth", map_location="cpu", weights_only=False)
    assert all(v.dtype != torch.bfloat16 for v in checkpoint["model"].values())

    # Resumed with AMP off, and the other way round, training goes on from the checkpoint.
    for amp, until in (("False", 6), ("True", 8)):
        more = opts + ["SOLVER.AMP.ENABLED", amp, "SOLVER.MAX_ITER", str(until)]
        train(TrainRequest([str(DEMO_CONFIG)], more, output_dir=str(run), resume=True))
        assert _iterations(run)[-1] == until - 1
