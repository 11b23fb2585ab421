"""Batch prediction over image files: ``instseg predict``.

Each process streams its inputs through three stages joined by bounded queues, so memory stays
flat for any number of images and the model never waits on disk or drawing::

    decode thread: read, decode, BatchPredictor.preprocess
        -> main thread: the model, INSTSEG.PREDICT.BATCH_SIZE images per forward pass
        -> output thread: class filter, COCO results, drawing, file writes, part-file rows

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

Ids: image ids are 1, 2, ... in input order, category ids are the model's contiguous class ids
plus 1. With a COCO dataset JSON (``PredictOptions.coco_json``), inputs whose relative path (or,
failing that, unique base name) is a ``file_name`` of the dataset take that image's id, and
category ids are the dataset's, so predictions evaluate against it with COCOeval.

Crash safety: the job holds the folder's lock (:mod:`instseg.inference.output_dir`). Every
output file is written through :mod:`instseg.io.atomic`. Each process appends one flushed line
per input to its own part file in ``DIR/.instseg-parts/``, tagged with the input's identity
(size, mtime) and the config's digest; the final predictions.json, images.json, manifest.csv,
config.yaml and ``DIR/.instseg-index.json`` (digest and identities behind them) are assembled
from the part files at the end (streamed, in input order) and published together through a
commit journal. An interrupted job leaves its part files, never a truncated final file.
Re-running with ``existing="skip"`` reuses them, and the final files of a finished run, but only
for an input whose identity and config digest match and whose image outputs exist.

Scale-out: ``num_workers`` processes (Detectron2's ``launch``: gloo on CPU, one process per GPU
with CUDA) each take every N-th input of the to-do list; ids come from the full sorted input list,
so they do not depend on N. Rank 0 merges all part files after a barrier.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import heapq
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from detectron2.utils import comm
from tqdm import tqdm

from instseg.config import ConfigError
from instseg.data.catalog import build_metadata, load_coco_categories
from instseg.inference.output_dir import HIDDEN_PREFIX, OutputLock, check_output_dir
from instseg.inference.output_plan import check_output_paths, plan_outputs
from instseg.inference.predictor import (
    BatchPredictor,
    ModelInput,
    class_filter,
    filter_instances,
    load_model_config,
)
from instseg.inference.sources import InputFile, Source, SourceError, resolve_source
from instseg.inference.stages import END, StageThreads
from instseg.io.atomic import AtomicTextFile, commit_journal, commit_together
from instseg.io.images import ImageReadError, atomic_write_image, instance_id_image, read_image
from instseg.io.writers import (
    CsvWriter,
    JsonLinesWriter,
    JsonListWriter,
    iter_json_lines,
    iter_json_list,
    read_json_line,
)
from instseg.viz.render import build_renderer
from instseg.viz.renderer import Renderer

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

# What to do with an output folder that already has files: refuse to start, predict everything
# again and replace outputs, or predict only what an earlier run did not finish.
EXISTING_POLICIES = ("refuse", "overwrite", "skip")
MANIFEST_COLUMNS = ("path", "status", "instances", "time_ms", "error")
PARTS_DIR_NAME = ".instseg-parts"
PREDICTIONS_FILE = "predictions.json"
IMAGES_FILE = "images.json"
MANIFEST_FILE = "manifest.csv"
CONFIG_FILE = "config.yaml"
# The config digest and input identities behind the final files, for --skip-existing.
INDEX_FILE = HIDDEN_PREFIX + "-index.json"
RESERVED_NAMES = (PREDICTIONS_FILE, IMAGES_FILE, MANIFEST_FILE, CONFIG_FILE)
# Timed per image; "model" is each forward pass's time shared among its images.
STAGES = ("decode", "preprocess", "model", "render", "write")

OK, ERROR, SKIPPED = "ok", "error", "skipped"


# ----------------------------------------------------------------------------- options


@dataclass
class PredictOptions:
    """How ``instseg predict`` runs, besides the model config (shared with video inputs).

    ``opts`` holds every config override, those derived from command-line flags included, so
    :func:`load_predict_cfg` gives the same config in every process.
    """

    output_dir: str
    config_files: list[str] = field(default_factory=list)
    weights: str | None = None
    opts: list[str] = field(default_factory=list)
    existing: str = "refuse"  # one of EXISTING_POLICIES
    coco_json: str | None = None  # COCO dataset whose image and category ids outputs use
    num_workers: int = 1  # processes (one per GPU with CUDA)
    progress: bool = True  # tqdm progress bar on stderr
    dist_url: str = "auto"  # rendezvous of the worker processes

    def __post_init__(self) -> None:
        if self.existing not in EXISTING_POLICIES:
            raise ConfigError(f"existing must be one of {EXISTING_POLICIES}, got {self.existing!r}")
        if self.num_workers < 1:
            raise ConfigError(f"--num-workers must be >= 1, got {self.num_workers}")

    @property
    def overwrite(self) -> bool:
        return self.existing == "overwrite"


def load_predict_cfg(options: PredictOptions) -> CfgNode:
    """The frozen inference config: project YAMLs, ``--weights`` and all overrides."""
    return load_model_config(options.config_files, options.weights, options.opts)


# ----------------------------------------------------------------------------- results


@dataclass
class PredictResult:
    """What a job did. ``stage_ms`` is each stage's busy time per image (milliseconds) and
    ``images_per_s`` the throughput of all processes together; both leave out each process's
    first batch, which pays one-off start-up costs."""

    output_dir: str
    total: int = 0  # inputs
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    instances: int = 0  # in predictions.json
    seconds: float = 0.0  # wall time of the whole job
    images_per_s: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)

    @property
    def exit_status(self) -> int:
        return 1 if self.errors else 0

    def summary_line(self) -> str:
        return (
            f"{self.total} input(s): {self.ok} ok, {self.errors} failed, {self.skipped} skipped; "
            f"{self.instances} instance(s); outputs in {self.output_dir}"
        )

    def timing_line(self) -> str:
        if not self.stage_ms:
            return "too few images to time (the first batch of each process is left out)"
        stages = ", ".join(f"{name} {self.stage_ms.get(name, 0.0):.1f}" for name in STAGES)
        return (
            f"throughput {self.images_per_s:.2f} images/s; ms per image: {stages} "
            "(first batch left out)"
        )


@dataclass
class _Task:
    """One input to predict, with everything its outputs need."""

    index: int  # position in the full input list
    image_id: int
    path: str
    rel: str
    annotated: str | None  # output path relative to DIR; None when not drawing
    masks: str | None  # output path relative to DIR; None without SAVE_MASKS
    identity: tuple[int, int] = (0, 0)  # the input's (size, mtime_ns) when planned


@dataclass(frozen=True)
class _PriorEntry:
    """Where an earlier run's record of an input is: a part-file line or the final files."""

    instances: int
    identity: tuple[int, int]  # the input's (size, mtime_ns) when it was predicted
    part_file: str | None = None
    offset: int = 0
    image: dict | None = None  # from images.json (final files only)
    predictions_offset: int = 0  # first line of its results in predictions.json
    predictions_count: int = 0


@dataclass
class _Job:
    """Everything a worker process needs; picklable for ``launch``."""

    cfg: CfgNode
    tasks: list[_Task]  # to predict, in input order
    carried: list[tuple[_Task, _PriorEntry]]  # done by an earlier run, in input order
    total: int
    output_dir: str
    run_id: str
    config_digest: str  # of the config the results were made with (see config_digest)
    categories: list[dict]
    category_ids: list[int]  # output category id of each contiguous class
    progress: bool
    log_level: int

    @property
    def parts_dir(self) -> Path:
        return Path(self.output_dir) / PARTS_DIR_NAME

    def part_file(self, rank: int) -> Path:
        return self.parts_dir / f"{self.run_id}.rank{rank}.jsonl"

    def summary_file(self) -> Path:
        return self.parts_dir / f"{self.run_id}.summary.json"


# ----------------------------------------------------------------------------- entry point


def predict_images(
    cfg: CfgNode, source: Source | str | os.PathLike, options: PredictOptions
) -> PredictResult:
    """Predict every image of ``source`` and write the outputs described in the module docstring.

    Unreadable inputs become error rows and the job goes on; configuration problems raise
    :class:`ConfigError` before any model is loaded.
    """
    started = time.perf_counter()
    output_dir = Path(options.output_dir)
    if not isinstance(source, Source):
        source = resolve_source(source, exclude=output_dir)
    if source.kind != "images":
        raise SourceError(f"{source.spec}: holds videos; predict them with instseg.video")
    check_output_dir(output_dir, options.existing)
    _check_cfg(cfg, options)
    with OutputLock(output_dir):
        result = _predict_locked(cfg, source, options, output_dir)
    result.seconds = time.perf_counter() - started
    logger.info("%s", result.summary_line())
    logger.info("%s", result.timing_line())
    return result


def _predict_locked(
    cfg: CfgNode, source: Source, options: PredictOptions, output_dir: Path
) -> PredictResult:
    metadata = build_metadata(cfg)
    image_ids, categories = _assign_ids(source.files, metadata.thing_classes, options.coco_json)
    tasks = _make_tasks(cfg, source, output_dir, image_ids)

    output_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = output_dir / PARTS_DIR_NAME
    carried: list[tuple[_Task, _PriorEntry]] = []
    digest = config_digest(cfg)
    if options.existing == "skip":
        prior = _load_prior(output_dir, digest)
        todo = []
        for task in tasks:
            entry = prior.get(task.rel)
            if (
                entry is not None
                and entry.identity == task.identity
                and _outputs_exist(output_dir, task)
            ):
                carried.append((task, entry))
            else:
                todo.append(task)
        logger.info(
            "%d of %d input(s) done by an earlier run with this config", len(carried), len(tasks)
        )
    else:
        todo = tasks
        shutil.rmtree(parts_dir, ignore_errors=True)

    job = _Job(
        cfg=cfg,
        tasks=todo,
        carried=carried,
        total=len(tasks),
        output_dir=str(output_dir),
        run_id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8],
        config_digest=digest,
        categories=categories,
        category_ids=[c["id"] for c in categories],
        progress=options.progress,
        log_level=logging.getLogger("instseg").getEffectiveLevel(),
    )
    workers = min(options.num_workers, max(1, len(todo)))
    if workers > 1:
        from detectron2.engine import launch

        logger.info("Predicting %d image(s) in %d processes", len(todo), workers)
        launch(_worker_main, workers, dist_url=options.dist_url, args=(job,))
        result = PredictResult(**json.loads(job.summary_file().read_text()))
    else:
        result = _worker_main(job)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return result


def _check_cfg(cfg: CfgNode, options: PredictOptions) -> None:
    predict = cfg.INSTSEG.PREDICT
    if int(predict.BATCH_SIZE) < 1 or int(predict.QUEUE_SIZE) < 1:
        raise ConfigError("INSTSEG.PREDICT: BATCH_SIZE and QUEUE_SIZE must be >= 1")
    try:
        build_renderer(_renderer_name(cfg), None)
    except ValueError as e:
        raise ConfigError(f"INSTSEG.PREDICT.RENDERER: {e}") from None
    class_filter(cfg)
    if options.num_workers > 1 and str(cfg.MODEL.DEVICE).startswith("cuda"):
        available = torch.cuda.device_count()
        if options.num_workers > available:
            raise ConfigError(
                f"--num-workers {options.num_workers}: one process per GPU, and "
                f"{available} GPU(s) are visible"
            )


def _renderer_name(cfg: CfgNode) -> str:
    name = str(cfg.INSTSEG.PREDICT.RENDERER).strip().lower()
    return "visualizer" if name == "auto" else name


def _assign_ids(
    files: Sequence[InputFile], class_names: Sequence[str], coco_json: str | None
) -> tuple[list[int], list[dict]]:
    """Image id of each input and the output categories (see "Ids" in the module docstring)."""
    if not coco_json:
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
        return list(range(1, len(files) + 1)), categories

    dataset_categories = load_coco_categories(coco_json)
    if len(dataset_categories.ids) != len(class_names):
        raise ConfigError(
            f"--coco-json {coco_json}: {len(dataset_categories.ids)} categories, but the model "
            f"has {len(class_names)} classes ({', '.join(class_names)})"
        )
    if list(dataset_categories.names) != list(class_names):
        logger.warning(
            "--coco-json %s: category names %s differ from the model's classes %s; matching "
            "them by position (sorted category id)",
            coco_json,
            list(dataset_categories.names),
            list(class_names),
        )
    categories = [
        {"id": cat_id, "name": name}
        for cat_id, name in zip(dataset_categories.ids, dataset_categories.names, strict=True)
    ]
    with open(coco_json, encoding="utf-8") as f:
        images = json.load(f).get("images") or []
    by_path: dict[str, int] = {}
    by_name: dict[str, list[int]] = defaultdict(list)
    for image in images:
        file_name = PurePosixPath(str(image["file_name"]).replace("\\", "/")).as_posix()
        by_path[file_name] = int(image["id"])
        by_name[PurePosixPath(file_name).name].append(int(image["id"]))
    next_id = max([0, *by_path.values()]) + 1
    image_ids, unmatched = [], []
    for f in files:
        image_id = by_path.get(f.rel)
        if image_id is None:
            candidates = by_name.get(PurePosixPath(f.rel).name, [])
            image_id = candidates[0] if len(candidates) == 1 else None
        if image_id is None:
            unmatched.append(f.rel)
            image_id, next_id = next_id, next_id + 1
        image_ids.append(image_id)
    duplicates = [i for i, n in Counter(image_ids).items() if n > 1]
    if duplicates:
        raise ConfigError(
            f"--coco-json {coco_json}: several inputs match dataset image id {duplicates[0]}"
        )
    if unmatched:
        logger.warning(
            "%d input(s) are not images of %s (e.g. %s); they get new ids above the dataset's, "
            "so load predictions.json against images.json rather than the dataset",
            len(unmatched),
            coco_json,
            unmatched[0],
        )
    return image_ids, categories


def _make_tasks(
    cfg: CfgNode, source: Source, output_dir: Path, image_ids: Sequence[int]
) -> list[_Task]:
    render, save_masks = bool(cfg.INSTSEG.PREDICT.RENDER), bool(cfg.INSTSEG.PREDICT.SAVE_MASKS)
    kinds = [k for k, on in (("annotated", render), ("masks", save_masks)) if on]
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
            _Task(
                index=index,
                image_id=image_ids[index],
                path=str(f.path),
                rel=f.rel,
                annotated=outputs.get("annotated"),
                masks=outputs.get("masks"),
                identity=identity,
            )
        )
    return tasks


def _outputs_exist(output_dir: Path, task: _Task) -> bool:
    return all((output_dir / name).is_file() for name in (task.annotated, task.masks) if name)


# ----------------------------------------------------------------------------- earlier runs


def config_digest(cfg: CfgNode) -> str:
    """Fingerprint of everything that shapes a result: earlier results are reused only under
    the same digest, so two configs' results never mix in one output folder."""
    return hashlib.sha256(cfg.dump().encode("utf-8")).hexdigest()[:16]


def input_identity(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime_ns): a replaced or edited input under the same name is predicted again."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _load_prior(output_dir: Path, digest: str) -> dict[str, _PriorEntry]:
    """Inputs an earlier run finished (status ok or skipped), by relative path: from the final
    files of a completed run, then the part files of interrupted ones (newest last, so the
    latest record of an input wins; a later error removes it)."""
    prior: dict[str, _PriorEntry] = {}
    try:
        prior.update(_prior_from_final(output_dir, digest))
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("Cannot reuse the results in %s (%s); predicting all inputs", output_dir, e)
    parts_dir = output_dir / PARTS_DIR_NAME
    part_files = sorted(parts_dir.glob("*.jsonl")) if parts_dir.is_dir() else []
    for part_file in part_files:
        try:
            for offset, record in iter_json_lines(part_file):
                if record.get("config") != digest:
                    continue
                if record["status"] == OK:
                    prior[record["path"]] = _PriorEntry(
                        instances=int(record["instances"]),
                        identity=tuple(record["identity"]),
                        part_file=str(part_file),
                        offset=offset,
                    )
                else:
                    prior.pop(record["path"], None)
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("Ignoring part file %s: %s", part_file, e)
    return prior


def _prior_from_final(output_dir: Path, digest: str) -> dict[str, _PriorEntry]:
    manifest, images_file = output_dir / MANIFEST_FILE, output_dir / IMAGES_FILE
    predictions_file, index_file = output_dir / PREDICTIONS_FILE, output_dir / INDEX_FILE
    if not all(f.is_file() for f in (manifest, images_file, predictions_file, index_file)):
        return {}
    index = json.loads(index_file.read_text(encoding="utf-8"))
    if index.get("config") != digest:
        logger.warning(
            "%s: made with another config; predicting every input again", output_dir / CONFIG_FILE
        )
        return {}
    identities = {rel: tuple(identity) for rel, identity in index["inputs"].items()}
    with open(manifest, encoding="utf-8", newline="") as f:
        done = {
            row["path"]: int(row["instances"] or 0)
            for row in csv.DictReader(f)
            if row["status"] in (OK, SKIPPED)
        }
    with open(images_file, encoding="utf-8") as f:
        images = {image["file_name"]: image for image in json.load(f)["images"]}
    spans: dict[int, list[int]] = {}
    for offset, result in iter_json_list(predictions_file):
        span = spans.setdefault(int(result["image_id"]), [offset, 0])
        span[1] += 1
    prior = {}
    for rel, instances in done.items():
        image = images.get(rel)
        if image is None:
            continue
        offset, count = spans.get(int(image["id"]), (0, 0))
        if count != instances:
            continue
        if rel not in identities:
            continue
        prior[rel] = _PriorEntry(
            instances,
            identity=identities[rel],
            image=image,
            predictions_offset=offset,
            predictions_count=count,
        )
    return prior


def _prior_record(job: _Job, task: _Task, entry: _PriorEntry) -> dict:
    """An earlier run's record of ``task``, as a part-file row with this run's ids."""
    if entry.part_file is not None:
        record = read_json_line(entry.part_file, entry.offset)
        image, results = record["image"], record["results"]
    else:
        image = dict(entry.image)
        results = []
        if entry.predictions_count:
            with open(Path(job.output_dir) / PREDICTIONS_FILE, "rb") as f:
                f.seek(entry.predictions_offset)
                for _ in range(entry.predictions_count):
                    results.append(json.loads(f.readline().strip().removesuffix(b",")))
    image = {**image, "id": task.image_id, "file_name": task.rel}
    for result in results:
        result["image_id"] = task.image_id
    return {
        "index": task.index,
        "path": task.rel,
        "identity": list(task.identity),
        "config": job.config_digest,
        "status": SKIPPED,
        "instances": len(results),
        "time_ms": None,
        "error": None,
        "image": image,
        "results": results,
    }


# ----------------------------------------------------------------------------- workers


def _worker_main(job: _Job) -> PredictResult | None:
    """One process: predict its shard, then (rank 0) merge every part file into the outputs."""
    rank, world = comm.get_rank(), comm.get_world_size()
    if world > 1:
        _setup_worker(job, rank, world)
    stats = _ShardRunner(job, job.tasks[rank::world], rank).run()
    if world > 1:
        comm.synchronize()
        all_stats = comm.gather(stats, dst=0)
    else:
        all_stats = [stats]
    if rank != 0:
        return None
    result = _finalize(job, [job.part_file(r) for r in range(world)], all_stats)
    if world > 1:
        job.summary_file().write_text(json.dumps(dataclasses.asdict(result)))
    return result


def _setup_worker(job: _Job, rank: int, world: int) -> None:
    from detectron2.utils.logger import setup_logger

    # Rank 0 logs like the parent; the others only warnings (bad inputs), on the same stdout.
    setup_logger(name="instseg", abbrev_name="instseg", configure_stdout=True).setLevel(
        job.log_level if rank == 0 else logging.WARNING
    )
    setup_logger(name="detectron2", abbrev_name="d2", configure_stdout=True).setLevel(
        logging.WARNING
    )
    if not str(job.cfg.MODEL.DEVICE).startswith("cuda"):
        # Processes share the cores: one full intra-op thread pool each would oversubscribe them.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // comm.get_local_size()))


@dataclass
class _Item:
    """One input on its way through the pipeline; arrays are dropped once no stage needs them."""

    task: _Task
    image: np.ndarray | None = None  # H x W x 3 uint8 BGR
    model_input: ModelInput | None = None
    instances: Instances | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    warm_up: bool = False  # in the first batch


@dataclass
class _ShardStats:
    """Counts and stage times of one process (timing sums leave out the first batch)."""

    ok: int = 0
    errors: int = 0
    instances: int = 0
    timed_images: int = 0
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    timed_wall: float = 0.0  # from the end of the first batch to the last output


class _ShardRunner:
    """The three-stage pipeline over one process's share of the inputs."""

    def __init__(self, job: _Job, tasks: list[_Task], rank: int):
        self.job, self.tasks, self.rank = job, tasks, rank
        cfg = job.cfg
        self.output_dir = Path(job.output_dir)
        self.batch_size = int(cfg.INSTSEG.PREDICT.BATCH_SIZE)
        queue_size = int(cfg.INSTSEG.PREDICT.QUEUE_SIZE)
        self.keep_classes = class_filter(cfg)
        self.renderer: Renderer | None = None
        if cfg.INSTSEG.PREDICT.RENDER:
            self.renderer = build_renderer(_renderer_name(cfg), build_metadata(cfg))
        self.predictor = BatchPredictor(cfg) if tasks else None
        self.threads = StageThreads("predict", queue_size)
        self.decoded = self.threads.queue()
        self.predicted = self.threads.queue()
        self.stats = _ShardStats()
        self._warm_done_at: float | None = None
        self._last_output_at: float | None = None

    def run(self) -> _ShardStats:
        JsonLinesWriter(self.job.part_file(self.rank)).close()  # present even for no inputs
        if not self.tasks:
            return self.stats
        threads = self.threads
        threads.spawn("decode", self._decode)
        threads.spawn("output", self._output)
        threads.run(self._model_loop)
        if self._warm_done_at is not None and self._last_output_at is not None:
            self.stats.timed_wall = max(0.0, self._last_output_at - self._warm_done_at)
        return self.stats

    # Stage 1: decode thread.

    def _decode(self) -> None:
        for task in self.tasks:
            self.threads.check()
            item = _Item(task)
            start = time.perf_counter()
            try:
                item.image = read_image(task.path)
                decoded = time.perf_counter()
                item.model_input = self.predictor.preprocess(item.image)
                item.seconds["decode"] = decoded - start
                item.seconds["preprocess"] = time.perf_counter() - decoded
            except ImageReadError as e:
                item.error = str(e)
            except Exception as e:  # a valid file the resize rejects (e.g. an extreme shape)
                item.error = f"{task.path}: cannot prepare image: {type(e).__name__}: {e}"
                item.image = None
            self.threads.put(self.decoded, item)
        self.threads.put(self.decoded, END)

    # Stage 2: the model, in the calling thread.

    def _model_loop(self) -> None:
        batch: list[_Item] = []
        first = True
        while True:
            item = self.threads.get(self.decoded)
            if item is END:
                break
            batch.append(item)
            if sum(i.error is None for i in batch) >= self.batch_size:
                self._run_batch(batch, first)
                batch, first = [], False
        if batch:
            self._run_batch(batch, first)
        self.threads.put(self.predicted, END)

    def _run_batch(self, batch: list[_Item], warm_up: bool) -> None:
        ready = [i for i in batch if i.error is None]
        if ready:
            start = time.perf_counter()
            try:
                outputs = self.predictor.predict([i.model_input for i in ready])
            except Exception:
                logger.debug("Batch failed; retrying its images one by one", exc_info=True)
                outputs = [self._predict_one(i) for i in ready]
            share = (time.perf_counter() - start) / len(ready)
            for item, instances in zip(ready, outputs, strict=True):
                item.instances = instances
                item.model_input = None
                item.seconds["model"] = share
        for item in batch:
            item.warm_up = warm_up
            self.threads.put(self.predicted, item)
        if warm_up and self._warm_done_at is None:
            self._warm_done_at = time.perf_counter()

    def _predict_one(self, item: _Item) -> Instances | None:
        try:
            return self.predictor.predict([item.model_input])[0]
        except Exception as e:
            item.error = f"{item.task.path}: model failed: {type(e).__name__}: {e}"
            item.image = None
            return None

    # Stage 3: outputs, in the output thread.

    def _output(self) -> None:
        show = self.job.progress and self.rank == 0
        total = len(self.tasks)
        desc = (
            "predict"
            if comm.get_world_size() == 1
            else f"predict (rank 0 of {comm.get_world_size()})"
        )
        with (
            JsonLinesWriter(self.job.part_file(self.rank)) as part,
            tqdm(total=total, desc=desc, unit="img", disable=not show, dynamic_ncols=True) as bar,
        ):
            while True:
                item = self.threads.get(self.predicted)
                if item is END:
                    return
                record = self._write_outputs(item)
                part.write(record)
                self._count(item, record)
                bar.update(1)

    def _write_outputs(self, item: _Item) -> dict:
        task = item.task
        record = {
            "index": task.index,
            "path": task.rel,
            "identity": list(task.identity),
            "config": self.job.config_digest,
        }
        if item.error is None:
            try:
                return {**record, **self._write_image_outputs(item)}
            except Exception as e:  # a renderer or writer failure fails this input only
                logger.debug("Outputs of %s failed", task.path, exc_info=True)
                item.error = f"{task.path}: cannot draw or write outputs: {type(e).__name__}: {e}"
        logger.warning("%s", item.error)
        time_ms = sum(item.seconds.values()) * 1000.0
        return {
            **record,
            "status": ERROR,
            "instances": 0,
            "time_ms": round(time_ms, 1),
            "error": item.error,
        }

    def _write_image_outputs(self, item: _Item) -> dict:
        task, image = item.task, item.image
        instances = filter_instances(item.instances, self.keep_classes)
        if len(instances) > 1:
            order = torch.argsort(instances.scores, descending=True, stable=True)
            instances = instances[order]
        start = time.perf_counter()
        if self.renderer is not None:
            drawn = self.renderer.draw(image, instances)
            rendered = time.perf_counter()
            item.seconds["render"] = rendered - start
            atomic_write_image(self.output_dir / task.annotated, drawn)
        else:
            rendered = start
        if task.masks is not None:
            if instances.has("pred_masks") and len(instances):
                masks = instances.pred_masks.numpy().astype(bool, copy=False)
            else:
                masks = np.zeros((0, *image.shape[:2]), dtype=bool)
            atomic_write_image(self.output_dir / task.masks, instance_id_image(masks))
        results = instances_to_coco_json(instances, task.image_id)
        for result in results:
            result["category_id"] = self.job.category_ids[result["category_id"]]
        item.seconds["write"] = time.perf_counter() - rendered
        height, width = image.shape[:2]
        item.image = item.instances = None
        return {
            "status": OK,
            "instances": len(results),
            "time_ms": round(sum(item.seconds.values()) * 1000.0, 1),
            "error": None,
            "image": {"id": task.image_id, "file_name": task.rel, "width": width, "height": height},
            "results": results,
        }

    def _count(self, item: _Item, record: dict) -> None:
        stats = self.stats
        if record["status"] == OK:
            stats.ok += 1
            stats.instances += record["instances"]
        else:
            stats.errors += 1
        self._last_output_at = time.perf_counter()
        if not item.warm_up and record["status"] == OK:
            stats.timed_images += 1
            for name in STAGES:
                stats.stage_seconds[name] += item.seconds.get(name, 0.0)


# ----------------------------------------------------------------------------- merging


def _part_records(path: Path) -> Iterator[dict]:
    if path.is_file():
        for _, record in iter_json_lines(path):
            yield record


def _carried_records(job: _Job) -> Iterator[dict]:
    for task, entry in job.carried:
        yield _prior_record(job, task, entry)


def _finalize(
    job: _Job, part_files: Sequence[Path], all_stats: Sequence[_ShardStats]
) -> PredictResult:
    """Stream every part file (and the earlier run's records) into the final files, in input
    order; an input without any record (which would mean a lost part file line) is an error row."""
    output_dir = Path(job.output_dir)
    streams = [_part_records(path) for path in part_files] + [_carried_records(job)]
    merged = heapq.merge(*streams, key=lambda record: record["index"])
    result = PredictResult(output_dir=str(output_dir), total=job.total)
    info = {"description": "instseg predict: the images of predictions.json"}
    tasks_by_index = {task.index: task for task in job.tasks}
    predictions = JsonListWriter(output_dir / PREDICTIONS_FILE)
    images = JsonListWriter(
        output_dir / IMAGES_FILE,
        key="images",
        members={"info": info, "categories": job.categories, "annotations": []},
    )
    manifest = CsvWriter(output_dir / MANIFEST_FILE, MANIFEST_COLUMNS)
    index = AtomicTextFile(output_dir / INDEX_FILE)
    config = AtomicTextFile(output_dir / CONFIG_FILE)
    files = (predictions, images, manifest, index, config)
    identities: dict[str, list[int]] = {}
    try:
        expected = 0
        for record in _with_missing(merged, job.total, tasks_by_index):
            if record["index"] != expected:
                continue  # a repeated record: the first one counts
            expected += 1
            manifest.add(record)
            status = record["status"]
            if status == ERROR:
                result.errors += 1
                continue
            identities[record["path"]] = record["identity"]
            result.ok += status == OK
            result.skipped += status == SKIPPED
            images.add(record["image"])
            for r in record["results"]:
                predictions.add(r)
            result.instances += len(record["results"])
        index.write(json.dumps({"config": job.config_digest, "inputs": identities}) + "\n")
        config.write(job.cfg.dump())
        # The final files become visible together (or, killed part-way, on the next run).
        pairs = [(f.close_unpublished(), f.path) for f in files]
        commit_together(pairs, commit_journal(output_dir, "predict"))
    except BaseException:
        for f in files:
            f.discard()
        raise
    timed = sum(s.timed_images for s in all_stats)
    if timed:
        result.stage_ms = {
            name: 1000.0 * sum(s.stage_seconds[name] for s in all_stats) / timed for name in STAGES
        }
        result.images_per_s = sum(s.timed_images / s.timed_wall for s in all_stats if s.timed_wall)
    for path in part_files:
        path.unlink(missing_ok=True)
    return result


def _with_missing(records: Iterator[dict], total: int, tasks_by_index: dict[int, _Task]):
    """``records`` (sorted by index) with an error row for every index in 0..total-1 that none
    covers."""
    expected = 0
    for record in records:
        while expected < record["index"]:
            yield _missing_record(expected, tasks_by_index)
            expected += 1
        yield record
        expected = max(expected, record["index"] + 1)
    while expected < total:
        yield _missing_record(expected, tasks_by_index)
        expected += 1


def _missing_record(index: int, tasks_by_index: dict[int, _Task]) -> dict:
    task = tasks_by_index.get(index)
    rel = task.rel if task else f"#{index}"
    message = f"{task.path if task else rel}: no result recorded (a worker process stopped early)"
    logger.error("%s", message)
    return {
        "index": index,
        "path": rel,
        "status": ERROR,
        "instances": 0,
        "time_ms": None,
        "error": message,
    }
