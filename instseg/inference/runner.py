"""Prediction over any SOURCE of image files and videos: ``instseg predict``.

A job is a list of inputs planned up front (:class:`~instseg.inference.job.Task`: an image or a
video, with its identity and its planned outputs). One code path plans it, shares it among
processes and machines, resumes it and publishes it, whatever the inputs' kinds. Each process
streams its images through :class:`~instseg.inference.pipeline.Pipeline` with
:class:`~instseg.inference.image_sink.ImageSink`'s render and write stages, and each of its
videos through the same loaded pipeline with
:func:`~instseg.inference.video_sink.predict_video`'s track, render and write stages; memory stays
flat for any number of inputs and the model never waits on disk or drawing.

Outputs in the output folder ``DIR`` (``<rel>`` is the input's path relative to the SOURCE root,
so the layout mirrors the input tree; ``<stem>`` is ``<rel>`` without its extension):

* ``DIR/config.yaml``: the merged config every result in the folder was made with.
* ``DIR/<rel>``: the image with masks, boxes and labels drawn (``INSTSEG.PREDICT.RENDERER``),
  in the input's format, or ``DIR/<stem>.jpg`` for formats OpenCV does not write. Only with
  ``INSTSEG.PREDICT.RENDER``.
* ``DIR/<stem>.masks.png``: with ``INSTSEG.PREDICT.SAVE_MASKS``, pixel value ``k`` is the
  image's ``k``-th instance in descending score order (the order of its entries in
  predictions.json), 0 is background, overlaps go to the higher score; uint8, or uint16 when an
  image has more than 255 instances.
* ``DIR/predictions.json``: the images' COCO results list (``image_id``, ``category_id``,
  ``bbox`` as float XYWH, ``score``, ``segmentation`` as RLE with ``counts`` a str), grouped by
  image and sorted by descending score within an image, one result per line; load it with
  pycocotools' ``COCO.loadRes``.
* ``DIR/images.json``: a COCO dataset without annotations, ``{"info", "categories": [{"id",
  "name"}], "annotations": [], "images": [{"id", "file_name": <rel>, "width", "height"}]}``:
  what the ids in predictions.json stand for. ``COCO("images.json").loadRes("predictions.json")``
  works for any input; with ``--coco-json`` so does loading against that dataset.
* for each video, ``DIR/<stem>.mp4``, ``DIR/<stem>.predictions.jsonl`` and, with tracking,
  ``DIR/<stem>.tracks.csv`` and ``DIR/<stem>.tracks.json`` (:mod:`instseg.inference.video_sink`).
* ``DIR/manifest.csv``: ``path,kind,status,frames,instances,tracks,time_ms,error``, one row
  per input in input order; status is ok, error (``error`` says why in one line naming the
  file) or skipped (done by an earlier run, see below).

Output names follow :mod:`instseg.inference.output_plan`: planned before any work, inside
``DIR``, never an input, unique across inputs and kinds (``a.jpg`` and ``a.png`` give
``a.jpg.masks.png`` and ``a.png.masks.png``).

Ids: see :mod:`instseg.inference.image_ids` (1, 2, ... in input order, or a COCO dataset's
with ``PredictOptions.coco_json``).

Crash safety: the job holds the folder's lock (:mod:`instseg.inference.output_dir`). Every
output file is written through :mod:`instseg.io.atomic`. Each process appends one flushed line
per input to its own part file in ``DIR/.instseg-parts/``, tagged with the input's identity
(size, mtime) and the config's digest; the final predictions.json, images.json, manifest.csv,
config.yaml and ``DIR/.instseg-index.json`` (digest and identities behind them) are assembled
from the part files at the end (streamed, in input order) and published together through a
commit journal. An interrupted job leaves its part files, never a truncated final file.
Re-running with ``existing="skip"`` reuses them, and the final files of a finished run, but only
for an input, image or video, whose identity and config digest match and whose outputs exist;
an input predicted again that fails loses its earlier outputs, so every result in the folder
was made with the config in config.yaml.

Scale-out (:mod:`instseg.inference.launcher`): ``num_workers`` processes on each of
``num_machines`` machines each take every N-th input of rank 0's to-do list, images and videos
alike; ids come from the full sorted input list, so they do not depend on N. Rank 0 holds the
lock and merges all part files after a barrier.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.utils import comm

from instseg.config import ConfigError
from instseg.inference.finalize import finalize
from instseg.inference.frames import image_frame
from instseg.inference.image_ids import assign_ids
from instseg.inference.image_sink import ImageSink
from instseg.inference.job import (
    EXISTING_POLICIES,
    IMAGE,
    MANIFEST_COLUMNS,
    PARTS_DIR_NAME,
    RESERVED_NAMES,
    VIDEO,
    Job,
    PredictOptions,
    PredictResult,
    Task,
    input_identity,
    load_predict_cfg,
)
from instseg.inference.launcher import run_sharded, shard
from instseg.inference.model import Model, build_model
from instseg.inference.output_dir import OutputLock, check_output_dir
from instseg.inference.output_plan import VIDEO_OUTPUT_KINDS, check_output_paths, plan_outputs
from instseg.inference.pipeline import STAGES, Pipeline
from instseg.inference.resume import load_prior, outputs_exist
from instseg.inference.settings import PredictSettings
from instseg.inference.sources import Source, resolve_source, resolve_sources
from instseg.inference.video_sink import VideoPaths, predict_video
from instseg.io.media import VideoError

logger = logging.getLogger(__name__)

__all__ = [
    "EXISTING_POLICIES",
    "MANIFEST_COLUMNS",
    "PARTS_DIR_NAME",
    "STAGES",
    "PredictOptions",
    "PredictResult",
    "check_output_dir",
    "load_predict_cfg",
    "predict",
]


def predict(
    cfg: CfgNode | PredictSettings,
    source: Source | str | os.PathLike | Sequence[str | os.PathLike],
    options: PredictOptions,
    *,
    model: Model | None = None,
) -> PredictResult | None:
    """Predict every image and video of ``source`` (a SOURCE, several, or a resolved
    :class:`Source`) and write the outputs described in the module docstring.

    ``cfg`` is the merged config (:func:`load_predict_cfg`), read once into the job's
    :class:`PredictSettings`, or those settings. Unreadable inputs become error rows and the job
    goes on; configuration problems raise :class:`ConfigError` before any model is loaded.
    ``model`` reuses a loaded model (one process only). Returns None on machines other than
    machine 0 of a multi-machine job (machine 0 reports).
    """
    started = time.perf_counter()
    output_dir = Path(options.output_dir)
    if isinstance(source, list | tuple):
        source = resolve_sources(list(source), exclude=output_dir)
    elif not isinstance(source, Source):
        source = resolve_source(source, exclude=output_dir)
    settings = cfg if isinstance(cfg, PredictSettings) else PredictSettings.from_cfg(cfg)
    _check_workers(settings, options)
    # Ids and output names first: a bad --coco-json or a clash stops before anything is written.
    tasks, categories = _make_tasks(settings, source, output_dir, options.coco_json)
    if options.machine_rank != 0:  # machine 0 owns the folder: its lock, checks and merge
        return _run(_plan_job(settings, tasks, categories, options, output_dir), options, None)
    check_output_dir(output_dir, options.existing)
    with OutputLock(output_dir):
        job = _plan_job(settings, tasks, categories, options, output_dir)
        result = _run(job, options, model)
        shutil.rmtree(output_dir / PARTS_DIR_NAME, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    logger.info("%s", result.summary_line())
    if result.total > result.videos:
        logger.info("%s", result.timing_line())
    return result


def _plan_job(
    settings: PredictSettings,
    tasks: list[Task],
    categories: list[dict],
    options: PredictOptions,
    output_dir: Path,
) -> Job:
    """The job: ``tasks`` less what an earlier run finished (``existing="skip"``)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    carried = []
    if options.existing == "skip":
        prior = load_prior(output_dir, settings.digest)
        todo = []
        for task in tasks:
            entry = prior.get(task.rel)
            if (
                entry is not None
                and entry.identity == task.identity
                and outputs_exist(output_dir, task)
            ):
                carried.append((task, entry))
            else:
                todo.append(task)
        logger.info(
            "%d of %d input(s) done by an earlier run with this config", len(carried), len(tasks)
        )
    else:
        todo = tasks
        if options.machine_rank == 0:
            shutil.rmtree(output_dir / PARTS_DIR_NAME, ignore_errors=True)
    return Job(
        settings=settings,
        tasks=todo,
        carried=carried,
        total=len(tasks),
        output_dir=str(output_dir),
        run_id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8],
        categories=categories,
        category_ids=[c["id"] for c in categories],
        progress=options.progress,
        log_level=logging.getLogger("instseg").getEffectiveLevel(),
    )


def _run(job: Job, options: PredictOptions, model: Model | None) -> PredictResult | None:
    workers = options.num_workers if options.num_machines > 1 else None
    if workers is None:  # one machine: no more processes than inputs
        workers = min(options.num_workers, max(1, len(job.tasks)))
    if workers * options.num_machines == 1:
        return PredictResult(**_worker_main(job, model))
    logger.info(
        "Predicting %d input(s) in %d process(es) x %d machine(s)",
        len(job.tasks),
        workers,
        options.num_machines,
    )
    summary = run_sharded(
        _worker_main,
        job,
        num_workers=workers,
        num_machines=options.num_machines,
        machine_rank=options.machine_rank,
        dist_url=options.dist_url,
        summary_file=Job.summary_file,
    )
    return PredictResult(**summary) if summary is not None else None


def _check_workers(settings: PredictSettings, options: PredictOptions) -> None:
    if options.num_workers > 1 and str(settings.cfg.MODEL.DEVICE).startswith("cuda"):
        available = torch.cuda.device_count()
        if options.num_workers > available:
            raise ConfigError(
                f"--num-workers {options.num_workers}: one process per GPU, and "
                f"{available} GPU(s) are visible"
            )


def _output_kinds(settings: PredictSettings) -> dict[str, tuple[tuple[str, ...], ...]]:
    """(planned, written) output kinds of an image and of a video. A video's names are all
    planned, so a rerun with other settings can clear what it no longer writes."""
    render = settings.video.render
    image = (
        ("annotated", render),
        ("masks", settings.save_masks or settings.semantic),  # a semantic model's main output
        ("panels", render and settings.semantic),
    )
    video = (
        ("video", render),
        ("predictions", True),
        ("tracks", settings.tracking),
        ("track_summary", settings.tracking),
    )
    image_kinds = tuple(k for k, on in image if on)
    return {
        IMAGE: (image_kinds, image_kinds),
        VIDEO: (VIDEO_OUTPUT_KINDS, tuple(k for k, on in video if on)),
    }


def _make_tasks(
    settings: PredictSettings, source: Source, output_dir: Path, coco_json: str | None
) -> tuple[list[Task], list[dict]]:
    """Every input's task (ids, output names, identity) and the output categories."""
    kinds = _output_kinds(settings)
    images = [f for f in source.files if f.kind == IMAGE]
    ids, categories = assign_ids(images, settings.class_names, coco_json)
    image_ids = {f.rel: image_id for f, image_id in zip(images, ids, strict=True)}
    rels = [f.rel for f in source.files]
    plan = plan_outputs(rels, [kinds[f.kind][0] for f in source.files], reserved=RESERVED_NAMES)
    check_output_paths(
        output_dir,
        [n for outputs in plan for n in outputs.values()],
        [f.path for f in source.files],
    )
    tasks = []
    for index, (f, outputs) in enumerate(zip(source.files, plan, strict=True)):
        try:
            identity = input_identity(f.path)
        except OSError:
            identity = (0, 0)  # vanished: its read fails later as an error row
        tasks.append(
            Task(
                index=index,
                kind=f.kind,
                path=str(f.path),
                rel=f.rel,
                outputs=outputs,
                written=kinds[f.kind][1],
                image_id=image_ids.get(f.rel),
                identity=identity,
            )
        )
    return tasks, categories


def _worker_main(job: Job, model: Model | None = None) -> dict | None:
    """One process: predict its shard, then (rank 0) merge every part file into the outputs."""
    rank, world = comm.get_rank(), comm.get_world_size()
    tasks = shard(job.tasks, rank, world)
    images = sum(task.kind == IMAGE for task in tasks)
    desc = "predict" if world == 1 else f"predict (rank 0 of {world})"
    with ImageSink(job, rank, images, job.settings.build_renderer(), desc) as sink:
        if tasks:
            pipeline = Pipeline(model or build_model(job.cfg), job.settings)
            # Runs of images, then each video, in input order: the part file stays sorted.
            for kind, run in itertools.groupby(tasks, key=lambda task: task.kind):
                if kind == IMAGE:
                    _predict_images(job, pipeline, sink, list(run))
                else:
                    for task in run:
                        sink.add_video(task, *_predict_video(job, pipeline, task))
    if world > 1:
        comm.synchronize()
        all_stats = comm.gather(sink.stats, dst=0)
    else:
        all_stats = [sink.stats]
    if rank != 0:
        return None
    result = finalize(job, [job.part_file(r) for r in range(world)], all_stats)
    return dataclasses.asdict(result)


def _predict_images(job: Job, pipeline: Pipeline, sink: ImageSink, tasks: list[Task]) -> None:
    max_pixels = job.settings.max_pixels
    frames = (image_frame(t.path, t.rel, t, max_pixels) for t in tasks)
    pipeline.run(frames, sink.stages(), sink.stats.clock)


def _predict_video(job: Job, pipeline: Pipeline, task: Task):
    """(result, error) of one video; a video that cannot be read, predicted or written is an
    error, and the job goes on."""
    output_dir = Path(job.output_dir)
    try:
        result = predict_video(
            job.settings,
            task.path,
            output_dir,
            overwrite=True,  # planned: a video predicted again replaces its earlier outputs
            pipeline=pipeline,
            paths=VideoPaths(*(output_dir / task.outputs[kind] for kind in VIDEO_OUTPUT_KINDS)),
            rel=task.rel,
            progress=job.progress,
        )
    except VideoError as exc:
        message = " ".join(str(exc).split())
        logger.error("%s", message)
        return None, message
    return result, None
