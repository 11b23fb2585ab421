"""Output writers. Every file is written to a temporary name beside its target and renamed into
place, so an interrupted job never leaves a half-written output behind a final name.

Large outputs are streamed: :class:`JsonListWriter` writes a JSON array one element per line as
results arrive, and :class:`JsonLinesWriter` appends flushed lines to part files that a job merges
into its final outputs at the end (readable again after a crash, see :func:`iter_json_lines`).
"""

import contextlib
import csv
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# The process umask, read once (reading it means setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success only."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates owner-only files; give the output the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_write_image(
    path: str | os.PathLike, image: np.ndarray, params: Sequence[int] = ()
) -> Path:
    """Encode ``image`` (H x W x 3 BGR or H x W, uint8 or uint16 for PNG/TIFF) in the format its
    name's extension names and write it atomically.

    Raises:
        ValueError: the extension has no encoder, or the encoder refused the image.
    """
    target = Path(path)
    try:
        ok, encoded = cv2.imencode(target.suffix, image, list(params))
    except cv2.error as e:
        raise ValueError(f"{target}: cannot encode {target.suffix} image: {e}") from None
    if not ok:
        raise ValueError(f"{target}: cannot encode {target.suffix} image")
    return atomic_write_bytes(target, encoded.tobytes())


class _Discarded(Exception):
    """Passed to atomic_path to make it drop the temporary file instead of renaming it."""


class AtomicTextFile:
    """A text file written progressively under a temporary name, renamed to ``path`` by
    :meth:`commit` or deleted by :meth:`discard`; a crash never leaves a partial final file.

    As a context manager it commits when the block succeeds and discards when it raises.
    """

    def __init__(self, path: str | os.PathLike, newline: str | None = None):
        self.path = Path(path)
        self._context = atomic_path(self.path)
        tmp = self._context.__enter__()
        self.file = open(tmp, "w", encoding="utf-8", newline=newline)  # noqa: SIM115
        self._open = True

    def write(self, text: str) -> None:
        self.file.write(text)

    def commit(self) -> Path:
        if self._open:
            self._open = False
            self.file.close()
            self._context.__exit__(None, None, None)
        return self.path

    def discard(self) -> None:
        if self._open:
            self._open = False
            self.file.close()
            self._context.__exit__(_Discarded, _Discarded(), None)

    def __enter__(self) -> "AtomicTextFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class JsonListWriter(AtomicTextFile):
    """A JSON array written element by element (memory stays flat), atomically.

    Each element is on its own line, which :func:`iter_json_list` relies on to read the file
    back one element at a time. With ``key``, the array is the value of ``key`` in a JSON object
    whose other members are ``members`` (written first), e.g. ``{"categories": [...],
    "images": [...]}``.
    """

    def __init__(
        self, path: str | os.PathLike, key: str | None = None, members: dict | None = None
    ):
        super().__init__(path)
        self._count = 0
        self._key = key
        if key is None:
            self.write("[")
        else:
            head = ", ".join(
                f"{json.dumps(k)}: {json.dumps(v)}" for k, v in (members or {}).items()
            )
            self.write("{" + (head + ",\n" if head else "") + f"{json.dumps(key)}: [")

    def add(self, item) -> None:
        self.write(("\n" if self._count == 0 else ",\n") + json.dumps(item))
        self._count += 1

    def commit(self) -> Path:
        if self._open:
            self.write("\n]" + ("}" if self._key is not None else "") + "\n")
        return super().commit()

    def __len__(self) -> int:
        return self._count


def iter_json_list(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """(byte offset, element) of each element of a bare JSON array written by
    :class:`JsonListWriter`, reading one line at a time.

    Raises:
        ValueError: the file is not laid out one element per line (another writer made it).
    """
    with open(path, "rb") as f:
        first = f.readline().strip()
        if first not in (b"[", b"[]"):
            raise ValueError(f"{path}: not a JSON array written one element per line")
        while True:
            offset = f.tell()
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: JSON array is not closed")
            text = line.strip()
            if text == b"]" or first == b"[]":
                return
            try:
                item = json.loads(text.removesuffix(b","))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}: line at byte {offset} is not one JSON element: {e}"
                ) from None
            yield offset, item


class JsonLinesWriter:
    """Appends one JSON object per line and flushes each, so that a crash loses at most the
    line being written. For part files that are merged into final outputs later."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, obj) -> None:
        self._file.write(json.dumps(obj) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonLinesWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """(byte offset, object) of each complete line of a :class:`JsonLinesWriter` file; a last line
    cut short by a crash is left out, with a warning."""
    with open(path, "rb") as f:
        while True:
            offset = f.tell()
            line = f.readline()
            if not line:
                return
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                if line.endswith(b"\n"):
                    raise ValueError(f"{path}: line at byte {offset} is not JSON") from None
                logger.warning("%s: ignoring an incomplete last line (interrupted run)", path)
                return
            yield offset, obj


def read_json_line(path: str | os.PathLike, offset: int) -> object:
    """The JSON value on the line starting at byte ``offset`` (as yielded by the iterators)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.readline().strip().removesuffix(b","))


class CsvWriter(AtomicTextFile):
    """A CSV file with a header row, written row by row and atomically (see
    :class:`AtomicTextFile`)."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        super().__init__(path, newline="")
        self.columns = tuple(columns)
        self._writer = csv.writer(self.file, lineterminator="\n")
        self._writer.writerow(self.columns)

    def add(self, row: dict) -> None:
        self._writer.writerow(["" if row.get(c) is None else row[c] for c in self.columns])


def instance_id_image(masks: np.ndarray) -> np.ndarray:
    """One H x W image whose pixel values are instance ids: 1 for ``masks[0]``, 2 for
    ``masks[1]``, ... and 0 for background; where masks overlap the lower id (earlier mask) wins.

    Args:
        masks (np.ndarray): N x H x W bool, most important (highest score) first.

    Returns:
        np.ndarray: uint8 when N <= 255, else uint16 (both lossless in PNG).
    """
    count = len(masks)
    if count > np.iinfo(np.uint16).max:
        raise ValueError(f"{count} instances do not fit in a 16-bit id image")
    dtype = np.uint8 if count <= np.iinfo(np.uint8).max else np.uint16
    ids = np.zeros(masks.shape[1:], dtype=dtype)
    for index in range(count - 1, -1, -1):
        ids[masks[index]] = index + 1
    return ids
