"""Annotating several videos into one output folder: ``instseg predict`` on videos.

The outputs of every video are planned before any work (:mod:`instseg.inference.output_plan`),
the folder is locked for the run, and the videos are shared among processes and machines
through :mod:`instseg.inference.launcher`; each video is annotated by
:func:`~instseg.inference.video.predict_video`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectron2.config import CfgNode

from instseg.inference.launcher import run_sharded, shard
from instseg.inference.output_dir import OutputLock
from instseg.inference.output_plan import VIDEO_OUTPUT_KINDS, check_output_paths, plan_outputs
from instseg.inference.predictor import BatchPredictor, check_model_cfg
from instseg.inference.video import VideoResult, build_pipeline, predict_video
from instseg.inference.video_options import VideoOptions
from instseg.io.atomic import atomic_path
from instseg.io.media import VideoError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"


@dataclass
class _VideosJob:
    """Everything a worker process needs to annotate its share of the videos; picklable."""

    cfg: CfgNode
    paths: list[Path]
    rels: list[str]
    outputs: list[tuple[Path, ...]]  # (video, predictions, tracks CSV, tracks JSON)
    overwrite: bool
    progress: bool
    log_level: int
    run_id: str
    output_dir: Path

    def summary_file(self) -> Path:
        return self.output_dir / f".instseg-videos-{self.run_id}.json"


def predict_videos(
    cfg: CfgNode,
    video_paths: Sequence[str | Path],
    output_dir: str | Path,
    overwrite: bool = False,
    *,
    rels: Sequence[str] | None = None,
    predictor: BatchPredictor | None = None,
    progress: bool = True,
    num_workers: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
) -> list[VideoResult] | None:
    """Annotate several videos with one loaded model per process, and write ``config.yaml``.

    A video that cannot be read, predicted or written is logged as one error line, recorded in
    its result's ``error`` and skipped; the others go on. Other exceptions (Ctrl-C) stop the
    run. Output names follow :mod:`instseg.inference.output_plan` from ``rels`` (the inputs'
    paths below the SOURCE root; default: their file names), and the output folder is locked
    (by machine 0) for the run. With several processes or machines
    (:mod:`instseg.inference.launcher`), each takes every N-th video; machine 0 returns every
    result, other machines None.
    """
    paths = [Path(p) for p in video_paths]
    output_dir = Path(output_dir)
    rels = list(rels) if rels is not None else [p.name for p in paths]
    plan = plan_outputs(rels, [VIDEO_OUTPUT_KINDS] * len(paths), reserved=(CONFIG_FILE,))
    check_output_paths(output_dir, [n for o in plan for n in o.values()], paths)
    VideoOptions.from_cfg(cfg)  # config errors before the model loads
    check_model_cfg(cfg)
    job = _VideosJob(
        cfg=cfg,
        paths=paths,
        rels=rels,
        outputs=[tuple(output_dir / o[kind] for kind in VIDEO_OUTPUT_KINDS) for o in plan],
        overwrite=overwrite,
        progress=progress,
        log_level=logging.getLogger("instseg").getEffectiveLevel(),
        run_id=uuid.uuid4().hex[:12],
        output_dir=output_dir,
    )
    workers = min(num_workers, max(1, len(paths))) if num_machines == 1 else num_workers
    run = {"num_workers": workers, "num_machines": num_machines, "machine_rank": machine_rank}
    if machine_rank != 0:
        run_sharded(
            _videos_worker, job, dist_url=dist_url, summary_file=_VideosJob.summary_file, **run
        )
        return None
    with OutputLock(output_dir):
        if workers * num_machines == 1:
            results = _annotate(job, job_indices(job, 0, 1), predictor)
        else:
            summary = run_sharded(
                _videos_worker, job, dist_url=dist_url, summary_file=_VideosJob.summary_file, **run
            )
            results = [VideoResult.from_json(r) for r in summary["results"]]
        with atomic_path(output_dir / CONFIG_FILE) as tmp:
            Path(tmp).write_text(cfg.dump(), encoding="utf-8")
    _log_summary(results)
    return results


def job_indices(job: _VideosJob, rank: int, world: int) -> list[int]:
    return shard(list(range(len(job.paths))), rank, world)


def _videos_worker(job: _VideosJob) -> dict | None:
    from detectron2.utils import comm

    rank, world = comm.get_rank(), comm.get_world_size()
    mine = job_indices(job, rank, world)
    results = _annotate(job, mine, None)
    gathered = comm.gather([(i, r.to_json()) for i, r in zip(mine, results, strict=True)], dst=0)
    if rank != 0:
        return None
    ordered = sorted(pair for part in gathered for pair in part)
    return {"results": [r for _, r in ordered]}


def _annotate(job: _VideosJob, indices: list[int], predictor) -> list[VideoResult]:
    pipeline = build_pipeline(job.cfg, predictor) if indices else None
    results = []
    for i in indices:
        path = job.paths[i]
        try:
            result = predict_video(
                job.cfg,
                path,
                job.output_dir,
                job.overwrite,
                pipeline=pipeline,
                outputs=job.outputs[i],
                rel=job.rels[i],
                progress=job.progress,
            )
        except VideoError as exc:
            message = " ".join(str(exc).split())
            logger.error("%s", message)
            result = VideoResult(source=path, error=message)
        results.append(result)
    return results


def _log_summary(results: list[VideoResult]) -> None:
    failed = [r for r in results if not r.ok]
    skipped = sum(r.skipped for r in results)
    done = len(results) - len(failed) - skipped
    if len(results) > 1 or failed:
        logger.info(
            "Videos: %d annotated, %d skipped, %d failed%s",
            done,
            skipped,
            len(failed),
            "".join(f"\n  failed: {r.error}" for r in failed),
        )
