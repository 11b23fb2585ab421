"""Training benchmark: instseg's Trainer against a plain Detectron2 DefaultTrainer, then the demo.

Part 1 trains both trainers on the same config and data, alternating rounds so that both see the
same machine load, and reports seconds per iteration, the data-loading share and the wall time
per iteration including one evaluation (instseg adds validation loss, model_best.pth and curves
there), and instseg's Trainer with ``SOLVER.AMP.ENABLED`` (bf16 autocast on a CPU) beside them. Part 2 runs the demo config on the sample dataset end to end and reports the val segm AP
and the wall time it took. The last line printed is a JSON object of all figures.

    .venv/bin/python scripts/bench_train.py [--iters 40] [--rounds 2] [--skip-demo]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import setup_logger

from instseg.config import build_cfg
from instseg.data.catalog import register_datasets
from instseg.data.sample_data import write_sample_dataset
from instseg.engine.trainer import Trainer, TrainRequest, train

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo_R18_FPN_cpu.yaml"


class PlainTrainer(DefaultTrainer):
    """What a Detectron2 user writes: DefaultTrainer with the stock COCOEvaluator."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return COCOEvaluator(dataset_name, output_dir=output_folder or cfg.OUTPUT_DIR)


def time_trainer(trainer_cls, cfg) -> dict:
    """Train from scratch for cfg.SOLVER.MAX_ITER iterations with one evaluation at the end."""
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    history = trainer.storage.history
    skip = 5  # warm-up: allocator, first data-loader batches
    iter_times = [v for v, _ in history("time").values()][skip:]
    data_times = [v for v, _ in history("data_time").values()][skip:]
    return {
        "s_per_iter": statistics.mean(iter_times),
        "data_share": sum(data_times) / sum(iter_times),
        "wall_per_iter": wall / cfg.SOLVER.MAX_ITER,
    }


def bench_overhead(sample, work: Path, iters: int, rounds: int) -> dict:
    trainers = (
        ("plain", PlainTrainer, []),
        ("instseg", Trainer, []),
        # SOLVER.AMP.ENABLED on a CPU: bf16 autocast of the forward (instseg.engine.amp).
        ("instseg_bf16", Trainer, ["SOLVER.AMP.ENABLED", "True"]),
    )
    results: dict[str, list[dict]] = {name: [] for name, _, _ in trainers}
    for round_index in range(rounds):
        for name, trainer_cls, extra in trainers:
            opts = sample.config_opts("bench") + extra + [
                "SOLVER.MAX_ITER", str(iters),
                "TEST.EVAL_PERIOD", str(iters),
                "SOLVER.CHECKPOINT_PERIOD", str(iters * 10),
                "OUTPUT_DIR", str(work / f"{name}_{round_index}"),
                "SEED", "1",
            ]  # fmt: skip
            cfg = register_datasets(build_cfg([DEMO_CONFIG], opts))
            Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
            figures = time_trainer(trainer_cls, cfg)
            results[name].append(figures)
            print(
                f"round {round_index} {name:8s} {figures['s_per_iter']:.3f} s/iter, "
                f"data {100 * figures['data_share']:.1f}%, "
                f"wall {figures['wall_per_iter']:.3f} s/iter incl. eval",
                flush=True,
            )

    def mean(name, key):
        return statistics.mean(r[key] for r in results[name])

    figures = {
        "iters": iters,
        "rounds": rounds,
        "plain_s_per_iter": mean("plain", "s_per_iter"),
        "instseg_s_per_iter": mean("instseg", "s_per_iter"),
        "plain_data_share": mean("plain", "data_share"),
        "instseg_data_share": mean("instseg", "data_share"),
        "plain_wall_per_iter": mean("plain", "wall_per_iter"),
        "instseg_wall_per_iter": mean("instseg", "wall_per_iter"),
        "instseg_bf16_s_per_iter": mean("instseg_bf16", "s_per_iter"),
    }
    figures["fp32_over_bf16_s_per_iter"] = (
        figures["instseg_s_per_iter"] / figures["instseg_bf16_s_per_iter"]
    )
    figures["s_per_iter_ratio"] = figures["instseg_s_per_iter"] / figures["plain_s_per_iter"]
    figures["wall_ratio"] = figures["instseg_wall_per_iter"] / figures["plain_wall_per_iter"]
    return figures


def bench_demo(sample, work: Path) -> dict:
    start = time.perf_counter()
    results = train(
        TrainRequest(
            config_files=[str(DEMO_CONFIG)],
            opts=sample.config_opts("bench_demo"),
            output_dir=str(work / "demo"),
        )
    )
    return {
        "demo_train_wall_s": time.perf_counter() - start,
        "demo_segm_AP": results["segm"]["AP"],
        "demo_bbox_AP": results["bbox"]["AP"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=40, help="iterations per timed run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per trainer")
    parser.add_argument("--skip-demo", action="store_true", help="skip the full demo training")
    parser.add_argument("--work", help="folder for data and runs (default: a temp folder)")
    args = parser.parse_args()
    setup_logger(name="instseg")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        sample = write_sample_dataset(work / "sample", seed=0)
        figures = {"torch_threads": torch.get_num_threads()}
        figures.update(bench_overhead(sample, work, args.iters, args.rounds))
        print(
            f"instseg / plain DefaultTrainer: {figures['s_per_iter_ratio']:.3f}x s/iter, "
            f"{figures['wall_ratio']:.3f}x wall incl. one evaluation; "
            f"fp32 / bf16 (SOLVER.AMP.ENABLED) s/iter: {figures['fp32_over_bf16_s_per_iter']:.2f}"
        )
        if not args.skip_demo:
            figures.update(bench_demo(sample, work))
            print(
                f"demo: val segm AP {figures['demo_segm_AP']:.1f} "
                f"(bbox {figures['demo_bbox_AP']:.1f}) in {figures['demo_train_wall_s'] / 60:.1f} min"
            )
        print(
            json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()})
        )


if __name__ == "__main__":
    main()
