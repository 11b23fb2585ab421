"""Batch prediction over image files: ``instseg predict``.

Each process streams its inputs through :class:`~instseg.inference.pipeline.Pipeline` (the
stages the Python API and videos use), with :class:`~instseg.inference.image_sink.ImageSink`'s
render and write stages as its outputs, so memory stays flat for any number of images and the
model never waits on disk or drawing.

Outputs in the output folder ``DIR`` (``<rel>`` is the input's path relative to the SOURCE root,
so the layout mirrors the input tree; ``<stem>`` is ``<rel>`` without its extension):

* ``DIR/config.yaml``: the merged config the job ran with.
* ``DIR/<rel>``: the image with masks, boxes and labels drawn (``INSTSEG.PREDICT.RENDERER``;
  "auto" is Detectron2's Visualizer), in the input's format, or ``DIR/<stem>.jpg`` for formats
  OpenCV does not write. Only with ``INSTSEG.PREDICT.RENDER``.
* ``DIR/<stem>.masks.png``: with ``INSTSEG.PREDICT.SAVE_MASKS``, pixel value ``k`` is the
  image's ``k``-th instance in descending score order (the order of its entries in
  predictions.json), 0 is background, overlaps go to the higher score; uint8, or uint16 when an
  image has more than 255 instances.
* ``DIR/predictions.json``: the COCO results list (``image_id``, ``category_id``, ``bbox`` as
  float XYWH, ``score``, ``segmentation`` as RLE with ``counts`` a str), grouped by image and
  sorted by descending score within an image, one result per line; load it with pycocotools'
  ``COCO.loadRes``.
* ``DIR/images.json``: a COCO dataset without annotations, ``{"info", "categories": [{"id",
  "name"}], "annotations": [], "images": [{"id", "file_name": <rel>, "width", "height"}]}``:
  what the ids in predictions.json stand for. ``COCO("images.json").loadRes("predictions.json")``
  works for any input; with ``--coco-json`` so does loading against that dataset.
* ``DIR/manifest.csv``: ``path,status,instances,time_ms,error``, one row per input in input order;
  status is ok, error (``error`` says why in one line naming the file) or skipped (done by an
  earlier run, see below).

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
for an input whose identity and config digest match and whose image outputs exist.

Scale-out (:mod:`instseg.inference.launcher`): ``num_workers`` processes on each of
``num_machines`` machines each take every N-th input of rank 0's to-do list; ids come from the
full sorted input list, so they do not depend on N. Rank 0 holds the lock and merges all part
files after a barrier.
"""

from __future__ import annotations

import dataclasses
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

from instseg.config import ConfigError, is_semantic
from instseg.data.catalog import build_metadata
from instseg.engine.precision import resolve_precision
from instseg.inference.finalize import finalize
from instseg.inference.frames import image_frame
from instseg.inference.image_ids import assign_ids
from instseg.inference.image_sink import ImageSink
from instseg.inference.job import (
    EXISTING_POLICIES,
    MANIFEST_COLUMNS,
    PARTS_DIR_NAME,
    RESERVED_NAMES,
    Job,
    PredictOptions,
    PredictResult,
    Task,
    config_digest,
    input_identity,
    load_predict_cfg,
)
from instseg.inference.launcher import run_sharded, shard
from instseg.inference.output_dir import OutputLock, check_output_dir
from instseg.inference.output_plan import check_output_paths, plan_outputs
from instseg.inference.pipeline import STAGES, Pipeline
from instseg.inference.predictor import BatchPredictor, check_model_cfg, class_filter
from instseg.inference.resume import load_prior, outputs_exist
from instseg.inference.sources import Source, SourceError, resolve_source
from instseg.inference.video_options import resolve_renderer_name
from instseg.io.writers import JsonLinesWriter
from instseg.viz.render import build_renderer
from instseg.viz.semantic_renderer import SemanticRenderer

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
    "predict_images",
]


def predict_images(
    cfg: CfgNode, source: Source | str | os.PathLike, options: PredictOptions
) -> PredictResult | None:
    """Predict every image of ``source`` and write the outputs described in the module docstring.

    Unreadable inputs become error rows and the job goes on; configuration problems raise
    :class:`ConfigError` before any model is loaded. Returns None on machines other than
    machine 0 of a multi-machine job (machine 0 reports).
    """
    started = time.perf_counter()
    output_dir = Path(options.output_dir)
    if not isinstance(source, Source):
        source = resolve_source(source, exclude=output_dir)
    if source.kind != "images":
        raise SourceError(f"{source.spec}: holds videos; predict them with instseg.video")
    _check_cfg(cfg, options)
    # Ids and output names first: a bad --coco-json or a clash stops before anything is written.
    metadata = build_metadata(cfg)
    names = metadata.stuff_classes if is_semantic(cfg) else metadata.thing_classes
    image_ids, categories = assign_ids(source.files, names, options.coco_json)
    tasks = _make_tasks(cfg, source, output_dir, image_ids)
    if options.machine_rank != 0:  # machine 0 owns the folder: its lock, checks and merge
        return _run(_plan_job(cfg, tasks, categories, options, output_dir), options)
    check_output_dir(output_dir, options.existing)
    with OutputLock(output_dir):
        job = _plan_job(cfg, tasks, categories, options, output_dir)
        result = _run(job, options)
        shutil.rmtree(output_dir / PARTS_DIR_NAME, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    logger.info("%s", result.summary_line())
    logger.info("%s", result.timing_line())
    return result


def _plan_job(
    cfg: CfgNode, tasks: list[Task], categories: list[dict], options: PredictOptions, output_dir
) -> Job:
    """The job: ``tasks`` less what an earlier run finished (``existing="skip"``)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    carried = []
    digest = config_digest(cfg)
    if options.existing == "skip":
        prior = load_prior(output_dir, digest)
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
        cfg=cfg,
        tasks=todo,
        carried=carried,
        total=len(tasks),
        output_dir=str(output_dir),
        run_id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8],
        config_digest=digest,
        categories=categories,
        category_ids=[c["id"] for c in categories],
        precision=resolve_precision(cfg.INSTSEG.PREDICT.PRECISION, cfg.MODEL.DEVICE).name,
        progress=options.progress,
        log_level=logging.getLogger("instseg").getEffectiveLevel(),
    )


def _run(job: Job, options: PredictOptions) -> PredictResult | None:
    workers = options.num_workers if options.num_machines > 1 else None
    if workers is None:  # one machine: no more processes than inputs
        workers = min(options.num_workers, max(1, len(job.tasks)))
    if workers * options.num_machines > 1:
        logger.info(
            "Predicting %d image(s) in %d process(es) x %d machine(s)",
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


def _check_cfg(cfg: CfgNode, options: PredictOptions) -> None:
    predict = cfg.INSTSEG.PREDICT
    if int(predict.BATCH_SIZE) < 1 or int(predict.QUEUE_SIZE) < 1:
        raise ConfigError("INSTSEG.PREDICT: BATCH_SIZE and QUEUE_SIZE must be >= 1")
    try:
        build_renderer(resolve_renderer_name(predict.RENDERER), None)
    except ValueError as e:
        raise ConfigError(f"INSTSEG.PREDICT.RENDERER: {e}") from None
    check_model_cfg(cfg)
    if options.num_workers > 1 and str(cfg.MODEL.DEVICE).startswith("cuda"):
        available = torch.cuda.device_count()
        if options.num_workers > available:
            raise ConfigError(
                f"--num-workers {options.num_workers}: one process per GPU, and "
                f"{available} GPU(s) are visible"
            )


def _make_tasks(
    cfg: CfgNode, source: Source, output_dir: Path, image_ids: Sequence[int]
) -> list[Task]:
    render, save_masks = bool(cfg.INSTSEG.PREDICT.RENDER), bool(cfg.INSTSEG.PREDICT.SAVE_MASKS)
    semantic = is_semantic(cfg)  # its class-id PNG is its main output
    wanted = (
        ("annotated", render),
        ("masks", save_masks or semantic),
        ("panels", render and semantic),
    )
    kinds = [k for k, on in wanted if on]
    rels = [f.rel for f in source.files]
    plan = plan_outputs(rels, [kinds] * len(rels), reserved=RESERVED_NAMES)
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
                image_id=image_ids[index],
                path=str(f.path),
                rel=f.rel,
                annotated=outputs.get("annotated"),
                masks=outputs.get("masks"),
                panels=outputs.get("panels"),
                identity=identity,
            )
        )
    return tasks


def _worker_main(job: Job) -> dict | None:
    """One process: predict its shard, then (rank 0) merge every part file into the outputs."""
    rank, world = comm.get_rank(), comm.get_world_size()
    tasks = shard(job.tasks, rank, world)
    JsonLinesWriter(job.part_file(rank)).close()  # present even for no inputs
    renderer = None
    if job.cfg.INSTSEG.PREDICT.RENDER:
        name = resolve_renderer_name(job.cfg.INSTSEG.PREDICT.RENDERER)
        if is_semantic(job.cfg):
            renderer = SemanticRenderer(build_metadata(job.cfg), name)
        else:
            renderer = build_renderer(name, build_metadata(job.cfg))
    desc = "predict" if world == 1 else f"predict (rank 0 of {world})"
    with ImageSink(job, rank, len(tasks), renderer, desc) as sink:
        if tasks:
            pipeline = Pipeline(
                BatchPredictor(job.cfg),
                class_filter(job.cfg),
                int(job.cfg.INSTSEG.PREDICT.BATCH_SIZE),
                int(job.cfg.INSTSEG.PREDICT.QUEUE_SIZE),
            )
            max_pixels = int(job.cfg.INSTSEG.MAX_IMAGE_PIXELS)
            frames = (image_frame(t.path, t.rel, t, max_pixels) for t in tasks)
            pipeline.run(frames, sink.stages(), sink.stats.clock)
    if world > 1:
        comm.synchronize()
        all_stats = comm.gather(sink.stats, dst=0)
    else:
        all_stats = [sink.stats]
    if rank != 0:
        return None
    result = finalize(job, [job.part_file(r) for r in range(world)], all_stats)
    return dataclasses.asdict(result)
