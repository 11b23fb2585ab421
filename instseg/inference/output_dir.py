"""The output folder of ``instseg predict``: its lock, what an earlier run left in it, and the
refuse / overwrite / skip policy for its files.

One job at a time writes a folder. The lock is an ``flock`` on ``DIR/.instseg.lock``, which the
kernel releases when its process dies, so the lock of a killed run is simply taken over; the
file names the holder's pid for the one-line refusal. Under the lock, the interrupted commits of
a killed run are completed and its temporary files removed before any work starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from pathlib import Path

from instseg.config import ConfigError
from instseg.io.atomic import recover_commits, remove_stale_temps

logger = logging.getLogger(__name__)

LOCK_FILE = ".instseg.lock"
# Files of the folder's own bookkeeping: never an input's output name, ignored by "is it empty".
HIDDEN_PREFIX = ".instseg"


def check_output_dir(output_dir: str | os.PathLike, existing: str) -> None:
    """Refuse a non-empty output folder unless the policy says what to do with its files."""
    folder = Path(output_dir)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(f"--output {folder}: exists and is not a folder")
    if existing != "refuse":
        return
    if any(not p.name.startswith(HIDDEN_PREFIX) for p in folder.iterdir()):
        raise ConfigError(
            f"--output {folder}: folder is not empty; pass --overwrite to predict everything "
            "again, or --skip-existing to predict only inputs without outputs"
        )


class OutputLock:
    """Exclusive use of an output folder for one job (a context manager).

    Raises:
        ConfigError: another live process holds the folder; the message names its pid.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.folder = Path(output_dir)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self.created = False

    def acquire(self) -> OutputLock:
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"--output {self.folder}: in use by another instseg run (pid {holder}); "
                "wait for it to finish or choose another output folder"
            ) from None
        previous = os.read(fd, 64).decode("ascii", "replace").strip()
        if previous:
            logger.info("%s: taking over the lock of a stopped run (pid %s)", self.folder, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        recover_commits(self.folder)
        remove_stale_temps(self.folder)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # a clean end leaves no pid to report as stopped
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()
        # A usage error before any result: the folder this run made holds only its own
        # bookkeeping, and goes, so a failed command leaves nothing behind.
        usage_error = exc_type is not None and issubclass(exc_type, ConfigError)
        if (
            self.created
            and usage_error
            and all(p.name.startswith(HIDDEN_PREFIX) for p in self.folder.iterdir())
        ):
            shutil.rmtree(self.folder, ignore_errors=True)
