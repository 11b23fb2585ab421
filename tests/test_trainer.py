"""Training: a self-describing run folder, SIGKILL then ``--resume`` that continues where the last
checkpoint left off (iteration, optimizer, LR schedule, best-model record), two CPU processes with
gloo, and the warning for random init with FrozenBN."""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from conftest import DEMO_CONFIG, REPO_ROOT, build_once
from detectron2.solver import build_lr_scheduler

from instseg.config import build_cfg
from instseg.engine.hooks import BestCheckpointer
from instseg.engine.trainer import Trainer, TrainRequest, build_train_cfg, train

MAX_ITER = 16
PERIOD = 4  # checkpoints and evaluations
KILL_AT_CHECKPOINT = "model_0000007.pth"  # the second periodic checkpoint
# Decays at 6 and 12 after a 2-iteration warmup: a scheduler restarted from scratch after the
# resume would give other learning rates than the restored one.
RESUME_OPTS = [
    "SOLVER.MAX_ITER", str(MAX_ITER),
    "SOLVER.CHECKPOINT_PERIOD", str(PERIOD),
    "TEST.EVAL_PERIOD", str(PERIOD),
    "SOLVER.BASE_LR", "0.005",
    "SOLVER.STEPS", "(6, 12)",
    "SOLVER.WARMUP_ITERS", "2",
    # Every detection is scored, so that AP is a number even for a barely trained model.
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]  # fmt: skip
SCRATCH_WARNING = "Training from random init with FrozenBN diverges"


def _instseg(*args):
    return [sys.executable, "-m", "instseg.cli", *args]


def _read_records(metrics_path):
    """metrics.json records in file order; a line cut short by SIGKILL is skipped."""
    records = []
    for line in metrics_path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _lr_schedule(cfg):
    """The learning rate Detectron2's scheduler gives each iteration of ``cfg``'s run."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _best_record(evaluations, start=(None, None)):
    """(best_metric, best_iter) as Detectron2's BestCheckpointer keeps it: strictly greater wins."""
    best, best_iter = start
    for iteration, value in sorted(evaluations):
        if math.isfinite(value) and (best is None or value > best):
            best, best_iter = value, iteration
    return best, best_iter


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, dataset_opts, tiny_opts):
    """A run started with ``instseg train``, SIGKILLed once its second periodic checkpoint was
    written, inspected, then finished with ``instseg train --resume``."""

    def build(root: Path) -> dict:
        run = root / "run"

        def command(*flags):
            args = ["train", *flags, "--config", str(DEMO_CONFIG), "--output", str(run)]
            return _instseg(*args, *dataset_opts, *tiny_opts, *RESUME_OPTS)

        with open(root / "first.out", "w") as out:
            first = subprocess.Popen(command(), cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
            tag = run / "last_checkpoint"
            deadline = time.monotonic() + 540
            try:
                while not (tag.is_file() and tag.read_text().strip() == KILL_AT_CHECKPOINT):
                    assert first.poll() is None, (root / "first.out").read_text()[-3000:]
                    assert time.monotonic() < deadline, "no checkpoint in time"
                    time.sleep(0.05)
            finally:
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
        assert first.returncode == -signal.SIGKILL
        killed_at = tag.read_text().strip()
        checkpoint = _load(run / killed_at)
        killed_metrics = _read_records(run / "metrics.json")

        # What a resume would load, checked in this process before the CLI resumes for real.
        inspect = root / "inspect"
        inspect.mkdir()
        (inspect / "last_checkpoint").write_text(str(run / killed_at))
        cfg = build_train_cfg(TrainRequest([str(run / "config.yaml")], output_dir=str(inspect)))
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=True)
        restored = {
            "start_iter": trainer.start_iter,
            "best": next(h for h in trainer._hooks if isinstance(h, BestCheckpointer)),
            "scheduler_epoch": trainer.scheduler.last_epoch,
            "optimizer": trainer.optimizer.state_dict(),
        }
        restored["best"] = (restored["best"].best_metric, restored["best"].best_iter)
        del trainer

        with open(root / "second.out", "w") as out:
            second = subprocess.run(
                command("--resume"),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=540,
            )
        assert second.returncode == 0, (root / "second.out").read_text()[-3000:]
        return {
            "run": run,
            "terminal": (root / "first.out").read_text() + (root / "second.out").read_text(),
            "killed_at": killed_at,
            "checkpoint": checkpoint,
            "killed_metrics": killed_metrics,
            "restored": restored,
            "cfg": build_cfg([str(run / "config.yaml")]),
        }

    return build_once(tmp_path_factory, "resumed_run", build)


def test_run_folder_is_self_describing(resumed_run):
    run = resumed_run["run"]
    # The model's architecture is in log.txt, not on the terminal.
    assert "GeneralizedRCNN(" in (run / "log.txt").read_text()
    assert "GeneralizedRCNN(" not in resumed_run["terminal"]
    config_text = (run / "config.yaml").read_text()
    rebuilt = build_train_cfg(TrainRequest([str(run / "config.yaml")]))
    assert yaml.safe_load(rebuilt.dump()) == yaml.safe_load(config_text)
    assert rebuilt.SOLVER.MAX_ITER == MAX_ITER and str(run) == rebuilt.OUTPUT_DIR
    assert rebuilt.MODEL.ROI_HEADS.NUM_CLASSES == 5

    assert "Starting training from iteration 0" in (run / "log.txt").read_text()
    events = list(run.glob("events.out.tfevents.*"))
    assert events and all(path.stat().st_size > 0 for path in events)
    for name in ("model_final.pth", "model_best.pth", "metrics.json", "last_checkpoint"):
        assert (run / name).is_file(), name

    curves = cv2.imread(str(run / "training_curves.png"), cv2.IMREAD_COLOR)
    assert curves is not None and curves.shape == (450, 1600, 3)


def test_every_evaluation_reaches_metrics_json(resumed_run):
    records = _read_records(resumed_run["run"] / "metrics.json")
    ap_iters = {r["iteration"] for r in records if "segm/AP" in r}
    val_iters = {r["iteration"] for r in records if "val/total_loss" in r}
    # Evaluations after iterations 3 and 11 and at the end (recorded at MAX_ITER); the one
    # after iteration 7 only if the killed process got to write it.
    assert {3, 11, MAX_ITER} <= ap_iters <= {3, 7, 11, MAX_ITER}
    assert val_iters == ap_iters
    for record in records:
        if "val/total_loss" in record:
            assert math.isfinite(record["val/total_loss"]) and record["val/total_loss"] > 0
            assert "bbox/AP" in record and "segm/AP50" in record


def test_resume_continues_from_the_checkpoint(resumed_run):
    run, checkpoint = resumed_run["run"], resumed_run["checkpoint"]
    resumed_from = checkpoint["iteration"]
    assert resumed_from == 2 * PERIOD - 1
    assert resumed_run["restored"]["start_iter"] == resumed_from + 1

    log = (run / "log.txt").read_text()
    first_start = log.index("Starting training from iteration 0")
    assert log.index(f"Loading from {run / resumed_run['killed_at']}") > first_start
    assert f"Starting training from iteration {resumed_from + 1}" in log[first_start:]
    assert log.count("Starting training from iteration") == 2

    # Training records continue after the checkpoint instead of starting over at 0.
    training = [r["iteration"] for r in _read_records(run / "metrics.json") if "total_loss" in r]
    killed = [r["iteration"] for r in resumed_run["killed_metrics"] if "total_loss" in r]
    assert killed and max(killed) <= resumed_from
    assert training[: len(killed)] == killed
    assert training[len(killed) :] and min(training[len(killed) :]) > resumed_from
    assert training == sorted(set(training))
    assert training[-1] == MAX_ITER - 1
    assert _load(run / "model_final.pth")["iteration"] == MAX_ITER - 1


def test_resume_restores_optimizer_and_lr_schedule(resumed_run):
    checkpoint, restored = resumed_run["checkpoint"], resumed_run["restored"]
    schedule = _lr_schedule(resumed_run["cfg"])
    resumed_from = checkpoint["iteration"]

    # The scheduler and the optimizer (learning rate, momentum buffers) come back as saved.
    assert restored["scheduler_epoch"] == resumed_from + 1
    saved = checkpoint["trainer"]["_trainer"]["optimizer"]
    assert [g["lr"] for g in restored["optimizer"]["param_groups"]] == pytest.approx(
        [schedule[resumed_from + 1]] * len(saved["param_groups"])
    )
    assert saved["state"].keys() == restored["optimizer"]["state"].keys()
    for key, state in saved["state"].items():
        assert torch.equal(
            state["momentum_buffer"], restored["optimizer"]["state"][key]["momentum_buffer"]
        )

    # Every learning rate the run logged, before and after the kill, follows the schedule.
    logged = {
        r["iteration"]: r["lr"]
        for r in _read_records(resumed_run["run"] / "metrics.json")
        if "lr" in r
    }
    assert any(it > resumed_from for it in logged) and any(it < resumed_from for it in logged)
    assert len({round(lr, 12) for lr in logged.values()}) >= 2
    for iteration, lr in logged.items():
        assert lr == pytest.approx(schedule[iteration], rel=1e-6), iteration


def test_resume_keeps_the_best_model_record(resumed_run):
    run, checkpoint = resumed_run["run"], resumed_run["checkpoint"]
    resumed_from = checkpoint["iteration"]
    saved = checkpoint["trainer"]["hooks"]["BestCheckpointer"]
    assert resumed_run["restored"]["best"] == (saved["best_metric"], saved["best_iter"])

    evaluations = [
        (r["iteration"], r["segm/AP"])
        for r in _read_records(run / "metrics.json")
        if "segm/AP" in r
    ]
    # The checkpoint holds the record of the evaluations before it (the evaluation at its own
    # iteration runs after the checkpoint is written, and the resumed run does not repeat it).
    before = [(it, ap) for it, ap in evaluations if it < resumed_from]
    after = [(it, ap) for it, ap in evaluations if it > resumed_from]
    assert before and after
    assert (saved["best_metric"], saved["best_iter"]) == _best_record(before)

    # model_final.pth is written before the last evaluation (recorded at MAX_ITER);
    # model_best.pth whenever the record improves, so it carries the final record.
    final = _load(run / "model_final.pth")["trainer"]["hooks"]["BestCheckpointer"]
    expected = _best_record([e for e in after if e[0] < MAX_ITER], start=_best_record(before))
    assert (final["best_metric"], final["best_iter"]) == expected
    best = _load(run / "model_best.pth")
    overall = _best_record(after, start=_best_record(before))
    assert overall[0] == max(ap for _, ap in before + after if math.isfinite(ap))
    assert best["iteration"] == overall[1]
    record = best["trainer"]["hooks"]["BestCheckpointer"]
    assert (record["best_metric"], record["best_iter"]) == overall


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPU processes use NCCL, not gloo")
def test_two_cpu_processes_with_gloo(tmp_path, dataset_opts, tiny_opts):
    run = tmp_path / "run"
    command = _instseg("train", "--num-gpus", "2", "--config", str(DEMO_CONFIG))
    command += ["--output", str(run), *dataset_opts, *tiny_opts]
    command += ["SOLVER.MAX_ITER", "3", "SOLVER.BASE_LR", "0.005", "MODEL.DEVICE", "cpu"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    final = _load(run / "model_final.pth")
    assert final["iteration"] == 2
    log = (run / "log.txt").read_text()
    rank1_log = (run / "log.txt.rank1").read_text()
    for text in (log, rank1_log):
        assert "Starting training from iteration 0" in text
        # IMS_PER_BATCH 2 over two processes.
        assert "Making batched data loader with batch_size=1" in text
    # The final evaluation gathered both processes' predictions over the whole val set.
    assert "Start inference on 4 batches" in log and "Start inference on 4 batches" in rank1_log
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log


def test_random_init_with_frozen_bn_warns(tmp_path, dataset_opts, tiny_opts, resumed_run):
    opts = [
        *dataset_opts,
        *tiny_opts,
        "INSTSEG.DATASETS.VAL.NAME", "",
        "MODEL.WEIGHTS", "",
        "MODEL.RESNETS.NORM", "FrozenBN",
        "SOLVER.MAX_ITER", "1",
        "SOLVER.BASE_LR", "0.001",
    ]  # fmt: skip
    train(TrainRequest([str(DEMO_CONFIG)], opts=opts, output_dir=str(tmp_path / "run")))
    warnings = [
        line
        for line in (tmp_path / "run" / "log.txt").read_text().splitlines()
        if SCRATCH_WARNING in line
    ]
    assert len(warnings) == 1 and "WARNING" in warnings[0]
    assert "configs/mask_rcnn_R50_FPN_scratch_GN.yaml" in warnings[0]
    # Random init with BatchNorm (the demo config) is fine: no warning.
    assert SCRATCH_WARNING not in (resumed_run["run"] / "log.txt").read_text()


DIES_DURING_SECOND_SAVE = """
import os, signal, sys
import torch
from instseg.cli import main

original, calls = torch.save, []

def save(obj, f, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # the second checkpoint: half a file, then the power goes
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original(obj, f, *args, **kwargs)

torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_checkpoint_save_then_resume_finishes(tmp_path, dataset_opts, tiny_opts):
    run = tmp_path / "run"
    opts = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0"]
    args = ["train", "--config", str(DEMO_CONFIG), "--output", str(run)]
    args += [*dataset_opts, *tiny_opts, *opts]
    script = tmp_path / "dies.py"
    script.write_text(DIES_DURING_SECOND_SAVE)
    killed = subprocess.run(
        [sys.executable, str(script), *args], cwd=REPO_ROOT, capture_output=True, timeout=540
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    # The cut-short save left no model_0000003.pth and last_checkpoint names a whole file.
    assert not (run / "model_0000003.pth").exists()
    assert (run / "last_checkpoint").read_text() == "model_0000001.pth"
    assert _load(run / "model_0000001.pth")["iteration"] == 1
    assert [p.name for p in run.iterdir() if "instseg-tmp" in p.name]  # the half file

    resumed = subprocess.run(
        _instseg(*args[:1], "--resume", *args[1:]),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Starting training from iteration 2" in (run / "log.txt").read_text()
    assert _load(run / "model_final.pth")["iteration"] == 5
    assert not [p.name for p in run.iterdir() if "instseg-tmp" in p.name]
