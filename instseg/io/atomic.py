"""Atomic files: the one way instseg writes an output.

Every file is written under a temporary name in its target's folder (``.NAME.instseg-tmp-XXXX``,
so the stray temporaries of a killed run can be found and removed), flushed and fsynced, then
renamed into place: an interrupted job never leaves a half-written file behind a final name.
:func:`commit_together` publishes several finished files through a journal, so that a kill
between two renames is rolled forward by the next run (:func:`recover_commit`).
"""

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

TEMP_MARK = ".instseg-tmp-"
JOURNAL_PREFIX = ".instseg-commit-"

# The process umask, read once (reading it means setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` (the folder is created); nothing is opened."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The target's suffix last: encoders (OpenCV, FFmpeg) pick the format from it.
    return target.with_name(f".{target.name}{TEMP_MARK}{secrets.token_hex(4)}{target.suffix}")


def is_temp_path(path: str | os.PathLike) -> bool:
    return TEMP_MARK in Path(path).name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Flush ``tmp`` to disk and rename it to ``path``, with the mode a plain open() gives."""
    tmp, target = Path(tmp), Path(path)
    os.chmod(tmp, 0o666 & ~_UMASK)
    _fsync(tmp)
    os.replace(tmp, target)
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        _fsync(target.parent)
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; publish it to ``path`` on success only."""
    tmp = temp_path(path)
    try:
        yield tmp
        if not tmp.exists():
            tmp.touch()
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = True) -> int:
    """Delete the temporary files that killed runs left in ``folder`` (and below it).

    Call it only while holding the folder's lock, so no live writer's file is taken.
    """
    removed = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        if not recursive:
            dirnames.clear()
        for name in filenames:
            if TEMP_MARK in name:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(dirpath, name))
                    removed += 1
    if removed:
        logger.info("%s: removed %d temporary file(s) of an interrupted run", folder, removed)
    return removed


def commit_together(pairs: Sequence[tuple[Path, Path]], journal: str | os.PathLike) -> None:
    """Publish each finished ``(tmp, final)`` pair as one step: the journal names them all
    before the first rename, so a kill part-way is completed by :func:`recover_commit`."""
    journal = Path(journal)
    for tmp, _ in pairs:
        _fsync(Path(tmp))
    atomic_write_json(journal, [[str(t), str(f)] for t, f in pairs])
    for tmp, final in pairs:
        publish(tmp, final)
    journal.unlink()


def commit_journal(folder: str | os.PathLike, name: str) -> Path:
    """Where the journal of ``name``'s outputs lies in ``folder`` (see :func:`recover_commits`)."""
    return Path(folder) / f"{JOURNAL_PREFIX}{name.replace('/', '%2F')}.json"


def recover_commits(folder: str | os.PathLike) -> int:
    """Finish every interrupted :func:`commit_together` of ``folder``; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(recover_commit(j) for j in sorted(folder.glob(f"{JOURNAL_PREFIX}*.json")))


def recover_commit(journal: str | os.PathLike) -> bool:
    """Finish a :func:`commit_together` that a kill interrupted; True when there was one."""
    journal = Path(journal)
    if not journal.is_file():
        return False
    try:
        pairs = json.loads(journal.read_text(encoding="utf-8"))
    except ValueError:  # the journal itself was cut short: no rename had started
        journal.unlink()
        return False
    for tmp, final in pairs:
        if Path(tmp).exists():
            publish(tmp, final)
    journal.unlink()
    logger.info("%s: completed the outputs of an interrupted run", journal.parent)
    return True


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


class AtomicFile:
    """A file written progressively under a temporary name, renamed to ``path`` by
    :meth:`commit` or deleted by :meth:`discard`; a crash never leaves a partial final file.
    Text (UTF-8) unless ``binary``.

    As a context manager it commits when the block succeeds and discards when it raises.
    """

    def __init__(self, path: str | os.PathLike, newline: str | None = None, binary: bool = False):
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        if binary:
            self.file = open(self.tmp, "wb")  # noqa: SIM115
        else:
            self.file = open(self.tmp, "w", encoding="utf-8", newline=newline)  # noqa: SIM115
        self._open = True

    def trailer(self) -> str:
        """Text that ends the file (subclasses close their brackets here)."""
        return ""

    def close_unpublished(self) -> Path:
        """Finish writing but leave the file under its temporary name (for commit_together)."""
        if self._open:
            self._open = False
            if self.trailer():
                self.file.write(self.trailer())
            self.file.close()
        return self.tmp

    def write(self, data) -> int:
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def commit(self) -> Path:
        if self._open:
            publish(self.close_unpublished(), self.path)
        return self.path

    def discard(self) -> None:
        if self._open:
            self._open = False
            self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
