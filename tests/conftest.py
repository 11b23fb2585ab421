"""Shared session fixtures: a small on-disk sample dataset, config overrides that make the CPU demo
config fast, and one short training run that several test modules inspect."""

import os
import uuid
from pathlib import Path

import pytest

# Before anything imports matplotlib: plots are written to files, never shown.
os.environ["MPLBACKEND"] = "Agg"
# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning. On a
# machine whose cores are shared with other jobs, spinning threads wait on descheduled peers and
# make every small convolution many times slower; the number of threads stays torch's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Under pytest-xdist (`-n N`), each worker, and every process it starts, gets its share of the
# cores: N torch processes each using all of them would only wait on each other.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"
DEMO_CONFIG = CONFIGS_DIR / "demo_R18_FPN_cpu.yaml"
R50_CONFIG = CONFIGS_DIR / "mask_rcnn_R50_FPN.yaml"
UNET_CONFIG = CONFIGS_DIR / "semantic_unet_cpu.yaml"
DEEPLAB_CONFIG = CONFIGS_DIR / "semantic_deeplabv3plus_cpu.yaml"

SAMPLE_NUM_TRAIN = 24
SAMPLE_NUM_VAL = 8
SAMPLE_IMAGE_SIZE = (128, 128)
TRAINED_RUN_ITERS = 20

# Overrides that shrink configs/demo_R18_FPN_cpu.yaml to a few seconds of CPU work: small images,
# batch 2, no evaluation or periodic checkpoints during training, a low score threshold so that a
# barely trained model still emits instances, and a fixed seed. The learning rate is lowered
# because Detectron2 stretches a warmup longer than the run over the whole run: the demo's 0.02
# would be reached within a few iterations from random init, and the model, evaluated with
# BatchNorm statistics of only a few batches, then scores every box as background.
TINY_OPTS = [
    "SOLVER.MAX_ITER", "4",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.BASE_LR", "0.005",
    "SOLVER.CHECKPOINT_PERIOD", "100000",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "160",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "160",
    "DATALOADER.NUM_WORKERS", "0",
    "TEST.EVAL_PERIOD", "0",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05",
    "SEED", "0",
]  # fmt: skip


def build_once(tmp_path_factory, name: str, build):
    """``build(folder)`` once per test session, however many xdist workers need it: the first
    to ask builds it under a lock in the folder the workers share, the others wait and load its
    pickled result. A failed build fails every asker at once instead of running again."""
    import fcntl
    import pickle

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    done, failed = root / f"{name}.pickle", root / f"{name}.failed"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists() and not failed.exists():
            folder = root / name
            folder.mkdir(exist_ok=True)
            try:
                value = build(folder)
            except BaseException as e:
                failed.write_text(f"{name}: {type(e).__name__}: {e}"[-3000:])
                raise
            done.write_bytes(pickle.dumps(value))
    assert not failed.exists(), failed.read_text()
    return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """The built-in synthetic dataset (24 train / 8 val images of 128x128 px), written once."""
    from instseg.data.sample_data import write_sample_dataset

    return write_sample_dataset(
        tmp_path_factory.mktemp("sample"),
        seed=0,
        num_train=SAMPLE_NUM_TRAIN,
        num_val=SAMPLE_NUM_VAL,
        image_size=SAMPLE_IMAGE_SIZE,
    )


@pytest.fixture(scope="session")
def dataset_names():
    """(train, val) dataset names unique to this test session."""
    suffix = uuid.uuid4().hex[:8]
    return f"test_sample_train_{suffix}", f"test_sample_val_{suffix}"


@pytest.fixture(scope="session")
def dataset_opts(sample_dataset, dataset_names):
    """KEY VALUE overrides declaring ``sample_dataset`` as INSTSEG.DATASETS.TRAIN and VAL."""
    train_name, val_name = dataset_names
    return [
        "INSTSEG.DATASETS.TRAIN.NAME", train_name,
        "INSTSEG.DATASETS.TRAIN.JSON", str(sample_dataset.train_json),
        "INSTSEG.DATASETS.TRAIN.IMAGES", str(sample_dataset.train_images),
        "INSTSEG.DATASETS.VAL.NAME", val_name,
        "INSTSEG.DATASETS.VAL.JSON", str(sample_dataset.val_json),
        "INSTSEG.DATASETS.VAL.IMAGES", str(sample_dataset.val_images),
    ]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_opts():
    """KEY VALUE overrides that make the demo config fast (see ``TINY_OPTS``); a fresh list."""
    return list(TINY_OPTS)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, dataset_opts, tiny_opts):
    """Folder of one finished 20-iteration training run of the demo config on ``sample_dataset``:
    config.yaml, model_final.pth, metrics.json, log.txt, last_checkpoint."""
    from instseg.engine.trainer import TrainRequest, train

    def build(run_dir: Path) -> Path:
        opts = dataset_opts + tiny_opts + ["SOLVER.MAX_ITER", str(TRAINED_RUN_ITERS)]
        train(TrainRequest([str(DEMO_CONFIG)], opts=opts, output_dir=str(run_dir)))
        return run_dir

    return build_once(tmp_path_factory, "trained_run", build)


# The semantic CPU configs at test sizes: a few iterations of 128 px images, evaluated once at
# the end (so the best-checkpoint hook runs).
SEMANTIC_TINY_OPTS = [
    "SOLVER.MAX_ITER", "30",
    "SOLVER.WARMUP_ITERS", "5",
    "SOLVER.CHECKPOINT_PERIOD", "100000",
    "TEST.EVAL_PERIOD", "30",
    "INPUT.MIN_SIZE_TRAIN", "(128,)",
    "INPUT.MAX_SIZE_TRAIN", "160",
    "INPUT.MIN_SIZE_TEST", "128",
    "INPUT.MAX_SIZE_TEST", "160",
    "DATALOADER.NUM_WORKERS", "0",
    "SEED", "0",
]  # fmt: skip


def semantic_dataset_opts(sample_dataset, tag: str) -> list[str]:
    """``sample_dataset`` declared under names unique to this session."""
    return sample_dataset.config_opts(f"test_sem_{tag}_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def semantic_run(tmp_path_factory, sample_dataset):
    """(run folder, final eval results, config opts) of the small U-Net trained 30 iterations
    on ``sample_dataset``, its masks rendered from the COCO JSON."""
    from instseg.engine.trainer import TrainRequest, train

    def build(run_dir: Path):
        opts = semantic_dataset_opts(sample_dataset, "unet") + SEMANTIC_TINY_OPTS
        results = train(TrainRequest([str(UNET_CONFIG)], opts=opts, output_dir=str(run_dir)))
        return run_dir, results, opts

    return build_once(tmp_path_factory, "semantic_run", build)


@pytest.fixture(scope="session")
def random_init_run(tmp_path_factory, tiny_opts, sample_dataset):
    """A run folder (config.yaml with the sample classes, model_final.pth) of the demo config at
    test sizes with seeded random weights: unlike a few training iterations, it gives instances
    (class scores near 1/6) on every image, every time."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from instseg.config import build_cfg, save_cfg

    run_dir = tmp_path_factory.mktemp("random_init_run")
    names = list(sample_dataset.class_names)
    opts = [*tiny_opts, "MODEL.DEVICE", "cpu", "INSTSEG.THING_CLASSES", repr(names)]
    cfg = build_cfg([str(DEMO_CONFIG)], [*opts, "MODEL.ROI_HEADS.NUM_CLASSES", str(len(names))])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(run_dir)).save("model_final")
    save_cfg(cfg, run_dir / "config.yaml")
    return run_dir


def pytest_collection_modifyitems(config, items):
    """The demo's own tests first and the other tests of its run last: the worker that starts
    with them builds the run while the others work through the rest, instead of waiting."""

    def rank(item) -> int:
        if "demo_run" not in getattr(item, "fixturenames", ()):
            return 1
        return 0 if item.path.name == "test_demo.py" else 2

    items.sort(key=rank)  # stable: the order within each rank is the collection's


# The demo's test schedule: every stage of `instseg demo`, with training cut to what a test
# needs (a model that finds the sample shapes); `make demo` runs the full schedule.
DEMO_TEST_ITERATIONS = 120


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """(output folder, stdout) of one `instseg demo --quick --iterations 120` run, as a newcomer
    runs the demo; its model (train/model_final.pth) serves the tests that need one that has
    learned something. It takes minutes: built once for all xdist workers (``build_once``)."""
    import subprocess
    import sys

    def build(out: Path) -> tuple[Path, str]:
        command = [sys.executable, "-m", "instseg.cli", "demo", "--quick", "--output", str(out)]
        command += ["--iterations", str(DEMO_TEST_ITERATIONS)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return out, proc.stdout

    return build_once(tmp_path_factory, "demo", build)


def kill_at_random_moments(
    command: list[str], env: dict, duration: float, seed: int, attempts: int = 6
) -> int:
    """Start ``command`` ``attempts`` times, each killed with SIGKILL at a random moment between
    a quarter and three quarters of ``duration`` (if still running); returns how many were
    killed. A resumed run has less left to do, so moments near ``duration`` would mostly come
    too late."""
    import signal
    import subprocess

    import numpy as np

    kills = 0
    for moment in np.random.default_rng(seed).uniform(0.25, 0.75, size=attempts) * duration:
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    return kills


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` grey pixels (data for one row)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )
