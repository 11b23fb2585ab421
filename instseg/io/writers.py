"""Streamed writers for large outputs: :class:`JsonListWriter` writes a JSON array one element
per line as results arrive, :class:`JsonLinesWriter` appends flushed lines to part files that
a job merges at the end (readable again after a crash, see :func:`iter_json_lines`), and
:class:`CsvWriter` writes a table row by row, atomically.
"""

import csv
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from instseg.io.atomic import AtomicFile

logger = logging.getLogger(__name__)

# The process umask, read once (reading it means setting it).


class JsonListWriter(AtomicFile):
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

    def trailer(self) -> str:
        return "\n]" + ("}" if self._key is not None else "") + "\n"

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


class CsvWriter(AtomicFile):
    """A CSV file with a header row, written row by row and atomically (see
    :class:`AtomicFile`)."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        super().__init__(path, newline="")
        self.columns = tuple(columns)
        self._writer = csv.writer(self.file, lineterminator="\n")
        self._writer.writerow(self.columns)

    def add(self, row: dict) -> None:
        self._writer.writerow(["" if row.get(c) is None else row[c] for c in self.columns])
