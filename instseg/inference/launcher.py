"""Scale-out of inference through Detectron2's ``launch``, the way ``instseg train`` scales:
``num_workers`` processes on each of ``num_machines`` machines (gloo on CPU, one process per GPU
with CUDA), each taking every N-th item of a job's to-do list. Every rank works from rank 0's plan
of the job; rank 0 reports the result."""

from __future__ import annotations

import faulthandler
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from detectron2.utils import comm

logger = logging.getLogger(__name__)


def run_sharded(
    worker: Callable[[Any], dict | None],
    job: Any,
    *,
    num_workers: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    summary_file: Callable[[Any], Path],
) -> dict | None:
    """``worker(job)`` in every process; returns rank 0's JSON-ready summary (None on the
    processes of other machines). ``summary_file(job)`` is where rank 0 leaves it for the
    launching process; ``job`` needs ``cfg`` and ``log_level`` attributes."""
    if num_workers * num_machines == 1:
        return worker(job)
    from detectron2.engine import launch

    launch(
        _entry,
        num_workers,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=(worker, job, summary_file),
    )
    if machine_rank != 0:
        return None
    path = summary_file(job)
    summary = json.loads(path.read_text(encoding="utf-8"))
    path.unlink(missing_ok=True)
    return summary


def _entry(worker, job, summary_file) -> None:
    _setup_worker(job)
    # Each machine planned its own job; every rank works from rank 0's plan.
    job = comm.all_gather(job)[0]
    summary = worker(job)
    if comm.get_rank() == 0:
        path = summary_file(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary), encoding="utf-8")
    # Leave together, and take the process group down before exiting: a rank that exits while
    # gloo still has work in flight with another can abort ("terminate called ...").
    comm.synchronize()
    torch.distributed.destroy_process_group()
    if multiprocessing.parent_process() is not None:
        # Everything this worker owes is written; skip the interpreter's teardown, where native
        # threads (FFmpeg's, gloo's) have aborted a finished worker on a busy machine.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _setup_worker(job) -> None:
    from detectron2.utils.logger import setup_logger

    # A native crash in a worker prints every thread's Python stack instead of a bare signal.
    faulthandler.enable()

    # Rank 0 logs like the parent; the others only warnings (bad inputs), on the same stdout.
    setup_logger(name="instseg", abbrev_name="instseg", configure_stdout=True).setLevel(
        job.log_level if comm.get_rank() == 0 else logging.WARNING
    )
    setup_logger(name="detectron2", abbrev_name="d2", configure_stdout=True).setLevel(
        logging.WARNING
    )
    if not str(job.cfg.MODEL.DEVICE).startswith("cuda"):
        # Processes share the cores: one full intra-op thread pool each would oversubscribe them.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // comm.get_local_size()))


def shard(items: list, rank: int | None = None, world: int | None = None) -> list:
    """This process's share: every ``world``-th item from ``rank``."""
    rank = comm.get_rank() if rank is None else rank
    world = comm.get_world_size() if world is None else world
    return items[rank::world]
