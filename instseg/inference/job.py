"""What an ``instseg predict`` job is made of: its options, its files, its tasks and the result it
reports. Every module of the job (planning, resuming, writing, merging) shares these."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from detectron2.config import CfgNode

from instseg.config import ConfigError
from instseg.inference.output_dir import HIDDEN_PREFIX
from instseg.inference.pipeline import STAGES
from instseg.inference.settings import PredictSettings, load_model_config

# What to do with an output folder that already has files: refuse to start, predict everything
# again and replace outputs, or predict only what an earlier run did not finish.
EXISTING_POLICIES = ("refuse", "overwrite", "skip")
# One row per input: ``kind`` is image or video; ``frames`` (frames processed) and ``tracks``
# (tracked objects, when tracking is on) are a video's.
MANIFEST_COLUMNS = ("path", "kind", "status", "frames", "instances", "tracks", "time_ms", "error")
IMAGE, VIDEO = "image", "video"
PARTS_DIR_NAME = ".instseg-parts"
PREDICTIONS_FILE = "predictions.json"
IMAGES_FILE = "images.json"
MANIFEST_FILE = "manifest.csv"
CONFIG_FILE = "config.yaml"
# The config digest and input identities behind the final files, for --skip-existing.
INDEX_FILE = HIDDEN_PREFIX + "-index.json"
RESERVED_NAMES = (PREDICTIONS_FILE, IMAGES_FILE, MANIFEST_FILE, CONFIG_FILE)

OK, ERROR, SKIPPED = "ok", "error", "skipped"


@dataclass
class PredictOptions:
    """How ``instseg predict`` runs, besides the model config (shared with video inputs).

    ``opts`` holds every config override, those derived from command-line flags included, so
    :func:`load_predict_cfg` gives the same config in every process. ``num_workers`` processes
    run on each of ``num_machines`` machines (Detectron2's ``launch``, as ``instseg train``),
    all writing one output folder on a shared filesystem.
    """

    output_dir: str
    config_files: list[str] = field(default_factory=list)
    weights: str | None = None
    opts: list[str] = field(default_factory=list)
    existing: str = "refuse"  # one of EXISTING_POLICIES
    coco_json: str | None = None  # COCO dataset whose image and category ids outputs use
    num_workers: int = 1  # processes per machine (one per GPU with CUDA)
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str = "auto"  # rendezvous of the processes: tcp://HOST:PORT of machine 0
    progress: bool = True  # tqdm progress bar on stderr

    def __post_init__(self) -> None:
        if self.existing not in EXISTING_POLICIES:
            raise ConfigError(f"existing must be one of {EXISTING_POLICIES}, got {self.existing!r}")
        if self.num_workers < 1:
            raise ConfigError(f"--num-workers must be >= 1, got {self.num_workers}")
        if self.num_machines < 1 or not 0 <= self.machine_rank < self.num_machines:
            raise ConfigError(
                f"--machine-rank {self.machine_rank} of --num-machines {self.num_machines}: "
                "need 0 <= rank < machines"
            )
        if self.num_machines > 1 and self.dist_url == "auto":
            raise ConfigError("--num-machines > 1 needs --dist-url tcp://HOST:PORT of machine 0")

    @property
    def overwrite(self) -> bool:
        return self.existing == "overwrite"

    @property
    def world_size(self) -> int:
        return self.num_workers * self.num_machines


def load_predict_cfg(options: PredictOptions) -> CfgNode:
    """The frozen inference config: project YAMLs, ``--weights`` and all overrides."""
    return load_model_config(options.config_files, options.weights, options.opts)


def input_identity(path: str | os.PathLike) -> tuple[int, int]:
    """(size, mtime_ns): a replaced or edited input under the same name is predicted again."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@dataclass
class PredictResult:
    """What a job did. ``stage_ms`` is each stage's busy time per image (milliseconds) and
    ``images_per_s`` the throughput of all processes together; both leave out each process's
    first batch, which pays one-off start-up costs (videos log their own figures)."""

    output_dir: str
    total: int = 0  # inputs
    videos: int = 0  # of which videos
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    instances: int = 0  # in predictions.json and the videos' JSONL files
    frames: int = 0  # video frames processed
    seconds: float = 0.0  # wall time of the whole job
    images_per_s: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    tracked: dict[str, str] = field(default_factory=dict)  # tracks file -> objects per class

    @property
    def exit_status(self) -> int:
        return 1 if self.errors else 0

    def summary_line(self) -> str:
        kinds = f" ({self.total - self.videos} image(s), {self.videos} video(s))"
        frames = f", {self.frames} video frame(s)" if self.videos else ""
        return (
            f"{self.total} input(s){kinds if self.videos else ''}: {self.ok} ok, "
            f"{self.errors} failed, {self.skipped} skipped; {self.instances} instance(s)"
            f"{frames}; outputs in {self.output_dir}"
        )

    def timing_line(self) -> str:
        if not self.stage_ms:
            return "too few images to time (the first batch of each process is left out)"
        stages = ", ".join(
            f"{name} {self.stage_ms.get(name, 0.0):.1f}" for name in STAGES if name != "track"
        )
        return (
            f"throughput {self.images_per_s:.2f} images/s; ms per image: {stages} "
            "(first batch left out)"
        )


@dataclass
class Task:
    """One input to predict (an image or a video), with everything its outputs need."""

    index: int  # position in the full input list
    kind: str  # IMAGE or VIDEO
    path: str
    rel: str
    # Output kind (instseg.inference.output_plan) -> path relative to DIR, as planned.
    outputs: dict[str, str] = field(default_factory=dict)
    # The kinds of ``outputs`` this config writes: a resumed run reuses the input only when
    # they all exist.
    written: tuple[str, ...] = ()
    image_id: int | None = None  # images only: its id in images.json and predictions.json
    identity: tuple[int, int] = (0, 0)  # the input's (size, mtime_ns) when planned

    @property
    def annotated(self) -> str | None:
        return self.outputs.get("annotated")

    @property
    def masks(self) -> str | None:
        return self.outputs.get("masks")

    @property
    def panels(self) -> str | None:
        return self.outputs.get("panels")


def task_record(task: Task, digest: str) -> dict:
    """The fields every part-file record of ``task`` starts with, whoever writes it: the input,
    its identity when planned and the digest of the config its result is made with."""
    return {
        "index": task.index,
        "path": task.rel,
        "kind": task.kind,
        "identity": list(task.identity),
        "config": digest,
    }


@dataclass(frozen=True)
class PriorEntry:
    """Where an earlier run's record of an input is: a part-file line or the final files."""

    instances: int
    identity: tuple[int, int]  # the input's (size, mtime_ns) when it was predicted
    part_file: str | None = None
    row: dict | None = None  # a video's manifest row (final files only)
    offset: int = 0
    image: dict | None = None  # from images.json (final files only)
    predictions_offset: int = 0  # first line of its results in predictions.json
    predictions_count: int = 0


@dataclass
class Job:
    """Everything a worker process needs; picklable for ``launch``. Every rank builds the
    same job from the same inputs; ``run_id`` is rank 0's."""

    settings: PredictSettings
    tasks: list[Task]  # to predict, in input order
    carried: list[tuple[Task, PriorEntry]]  # done by an earlier run, in input order
    total: int
    output_dir: str
    run_id: str
    categories: list[dict]
    category_ids: list[int]  # output category id of each contiguous class
    progress: bool
    log_level: int

    @property
    def cfg(self) -> CfgNode:
        """The config the results are made with (written as config.yaml)."""
        return self.settings.cfg

    @property
    def config_digest(self) -> str:
        return self.settings.digest

    @property
    def parts_dir(self) -> Path:
        return Path(self.output_dir) / PARTS_DIR_NAME

    def part_file(self, rank: int) -> Path:
        return self.parts_dir / f"{self.run_id}.rank{rank}.jsonl"

    def summary_file(self) -> Path:
        return self.parts_dir / f"{self.run_id}.summary.json"
