"""Weights resolution and loading for fine-tuning.

``MODEL.WEIGHTS`` may be a model-zoo config name (resolved to its published checkpoint), a
``detectron2://`` or http(s) URL (downloaded once and cached), or a local ``.pth``/``.pkl``.
Loading a checkpoint trained on another class set keeps everything but the class-specific
predictors, which start from their random init, and says so in one line.
"""

import contextlib
import logging
import os
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path

import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from instseg.config import ConfigError
from instseg.io.atomic import AtomicFile

logger = logging.getLogger(__name__)

# Seconds without an answer before a download counts as failed, so that an offline machine whose
# firewall drops packets fails fast instead of hanging.
DOWNLOAD_TIMEOUT_S = 15

_URL_PREFIXES = ("http://", "https://", "detectron2://", "catalog://")
SCRATCH_CONFIG = "configs/mask_rcnn_R50_FPN_scratch_GN.yaml"


class WeightsError(ConfigError):
    """Weights that cannot be found or downloaded; the message says what to do instead."""


def describe_weights(weights: str) -> tuple[str, str]:
    """(kind, location) of a MODEL.WEIGHTS value without touching the network."""
    if not weights:
        return "scratch", ""
    if weights.startswith("zoo:"):
        weights = weights[len("zoo:") :]
    elif weights.startswith(_URL_PREFIXES):
        return "url", weights
    elif os.path.exists(weights):
        return "file", weights
    if weights.endswith((".yaml", ".py")):
        try:
            return "zoo", model_zoo.get_checkpoint_url(weights)
        except RuntimeError:
            raise WeightsError(
                f"MODEL.WEIGHTS={weights}: neither a local file nor a model-zoo config name"
            ) from None
    raise WeightsError(f"MODEL.WEIGHTS={weights}: file not found")


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def resolve_weights(weights: str) -> str:
    """Return a local path for ``weights`` ("" for random init), downloading URLs into the cache.

    Raises:
        WeightsError: one line saying what was tried and how to pass a local file instead.
    """
    kind, location = describe_weights(weights)
    if kind in ("scratch", "file"):
        return location
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return PathManager.get_local_path(location)
    except Exception as e:  # urllib, socket and iopath raise many types; all mean "not available"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        tried = f"{weights} -> {location}" if location != weights else weights
        raise WeightsError(
            f"MODEL.WEIGHTS={tried}: download failed ({type(e).__name__}: {reason}). "
            "Download it on a connected machine and pass the local file with "
            "--weights PATH.pkl|.pth, or train from random init with "
            f"--config {SCRATCH_CONFIG}"
        ) from None


# The only globals a model-zoo .pkl may name: numpy arrays, dtypes and scalars, the codec
# pickle uses for bytes, and ordered dicts. Anything else (os.system, ...) is refused.
_PKL_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
    }
)


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PKL_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def check_pkl_is_data(path: str | os.PathLike) -> None:
    """Read a .pkl checkpoint through an unpickler that builds only arrays and containers, so a
    crafted file cannot run code when loaded.

    Raises:
        WeightsError: one line naming the file and the refused global.
    """
    try:
        with open(path, "rb") as f:
            _DataUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise WeightsError(f"{path}: not a checkpoint of plain arrays ({e})") from None


def check_weights(path: str) -> None:
    """Refuse a checkpoint that is not plain data before any work starts (the model loads it
    later, in each process): ``.pkl`` through the restricted unpickler, ``.pth`` through
    ``torch.load(weights_only=True)``, memory-mapped so tensors are not read.

    Raises:
        WeightsError: one line naming the file.
    """
    if not path:
        return
    if path.endswith(".pkl"):
        check_pkl_is_data(path)
        return
    load_tensors(path, mmap=True)


def load_tensors(path, mmap: bool = False):
    """``torch.load(weights_only=True)`` on the CPU, failures as one WeightsError line; with
    ``mmap``, tensors stay on disk (None for a legacy, non-zip file, which cannot be mapped)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        reason = " ".join(str(e).split())[:200]
        raise WeightsError(f"{path}: not a checkpoint of plain tensors ({reason})") from None
    except (EOFError, RuntimeError, ValueError, OSError) as e:  # empty, cut short, not torch
        if mmap and isinstance(e, RuntimeError) and "mmap" in str(e):
            return None
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise WeightsError(f"{path}: not a readable checkpoint ({reason})") from None


class _AtomicWrites:
    """A path manager whose files opened for writing appear under their name only once complete
    (temporary file, fsync, rename): a kill during a save never leaves a truncated checkpoint,
    nor a ``last_checkpoint`` naming one. fvcore writes both through ``path_manager.open``."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def open(self, path: str, mode: str = "r", **kwargs):
        if "w" in mode and "://" not in str(path):
            return AtomicFile(path, binary="b" in mode)
        return self._inner.open(path, mode, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class FinetuneCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that re-initialises predictors whose class count differs, reads
    checkpoints as data only (``.pth`` with ``weights_only``, ``.pkl`` checked first), and
    writes them atomically."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.path_manager = _AtomicWrites(self.path_manager)

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            # Checked with the restricted unpickler, the file holds only what it admits, so
            # Detectron2's own reader (and its zoo/Caffe2 layout handling) can take it.
            check_pkl_is_data(filename)
        return super()._load_file(filename)

    def _torch_load(self, f):
        return load_tensors(f)

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        if incompatible.incorrect_shapes:
            names = sorted({key.rsplit(".", 1)[0] for key, _, _ in incompatible.incorrect_shapes})
            logger.info(
                "Re-initialised %d parameters of %s: their shapes differ from the checkpoint "
                "(another number of classes); all other weights were loaded",
                len(incompatible.incorrect_shapes),
                ", ".join(names),
            )
            reinitialised = {key for key, _, _ in incompatible.incorrect_shapes}
            missing = [key for key in incompatible.missing_keys if key not in reinitialised]
            incompatible = incompatible._replace(incorrect_shapes=[], missing_keys=missing)
        return incompatible

    def load(self, path, *args, **kwargs):
        return super().load(resolve_weights(path) if path else path, *args, **kwargs)


def has_checkpoint(output_dir: str | os.PathLike) -> bool:
    return (Path(output_dir) / "last_checkpoint").is_file()
