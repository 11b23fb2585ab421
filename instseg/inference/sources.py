"""Inputs of ``instseg predict``: which files a SOURCE names, and how one image file is read.

A SOURCE is one of:

* an image file;
* a folder, searched recursively for image files (hidden files and folders are left out);
* a glob pattern (``**`` matches folders recursively), e.g. ``"photos/**/*.jpg"``;
* a text file (``.txt``, ``.lst``, ``.list``) naming one path per line, relative to the list's
  folder (blank lines and lines starting with ``#`` are ignored), in the list's order;
* a video file (see :data:`VIDEO_EXTENSIONS`).

Folders, globs and lists may mix images and videos: one job predicts them all.

Every input gets a path relative to the SOURCE's root folder (POSIX separators): outputs mirror
the input tree under the output folder, and the relative path is the input's name in the
manifest and in ``images.json``. Folders and globs are sorted by that path, so the order, and
with it the image ids, is the same on every run.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from instseg.config import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LIST_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputFile",
    "Source",
    "SourceError",
    "is_video_path",
    "resolve_source",
    "resolve_sources",
]

# File name endings searched for in folders and globs (lower case; matching ignores case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pbm", ".pgm"}
    | {".ppm", ".pnm", ".pxm", ".sr", ".ras", ".jp2", ".hdr", ".pic"}
)
# File name endings treated as videos (lower case).
VIDEO_EXTENSIONS = frozenset(
    {".3gp", ".avi", ".flv", ".m2ts", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts"}
    | {".ogv", ".ts", ".webm", ".wmv"}
)
# A SOURCE file with one of these endings is a list of paths, not an image.
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})

_GLOB_CHARS = frozenset("*?[")


class SourceError(ConfigError):
    """A SOURCE that names no usable input; the message is one line for the user."""


@dataclass(frozen=True)
class InputFile:
    """One input: where it is, and its POSIX path relative to the SOURCE root (no ``..``)."""

    path: Path
    rel: str

    @property
    def kind(self) -> str:
        """ "video" for a video file name, else "image"."""
        return "video" if is_video_path(self.path) else "image"


@dataclass
class Source:
    """What a SOURCE expands to: its input files (images and videos), in order."""

    spec: str
    root: Path
    files: list[InputFile]


def is_video_path(path: str | os.PathLike) -> bool:
    """True when the name ends in a video extension (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _is_input_name(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS


def resolve_source(spec: str | os.PathLike, exclude: os.PathLike | str | None = None) -> Source:
    """Expand a SOURCE (see the module docstring) into its input files.

    Args:
        spec: the SOURCE as the user wrote it.
        exclude: a folder never searched (the output folder, when it lies inside the SOURCE).

    Raises:
        SourceError: the SOURCE does not exist or names no image or video.
    """
    spec = os.fspath(spec)
    path = Path(spec).expanduser()
    excluded = Path(exclude).resolve() if exclude is not None else None
    if path.is_dir():
        return _from_folder(spec, path, excluded)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in LIST_EXTENSIONS:
            return _from_list(spec, path)
        return Source(spec, path.parent, [InputFile(path, path.name)])
    if _GLOB_CHARS & set(spec):
        return _from_glob(spec, excluded)
    raise SourceError(f"{spec}: no such file or folder")


def resolve_sources(
    specs: list[str | os.PathLike], exclude: os.PathLike | str | None = None
) -> Source:
    """Several SOURCEs (what a shell makes of ``photos/*``) as one: their files in the order
    given, each once, relative to the nearest folder holding them all."""
    if len(specs) == 1:
        return resolve_source(specs[0], exclude)
    sources = [resolve_source(spec, exclude) for spec in specs]
    paths = [f.path for s in sources for f in s.files]
    root = _common_root(sources[0].root, paths)
    spec = " ".join(os.fspath(s) for s in specs)
    return Source(spec, root, _relative_to(root, paths, sort=False))


def _from_folder(spec: str, folder: Path, excluded: Path | None) -> Source:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        current = Path(dirpath)
        dirnames[:] = [
            d
            for d in dirnames
            if not d.startswith(".") and (excluded is None or (current / d).resolve() != excluded)
        ]
        for name in filenames:
            if name.startswith("."):
                continue
            if _is_input_name(name):
                found.append(current / name)
    if not found:
        raise SourceError(f"{spec}: no image or video files found (looked for {_extension_hint()})")
    return Source(spec, folder, _relative_to(folder, found))


def _from_glob(spec: str, excluded: Path | None) -> Source:
    root = _glob_root(spec)
    matches = [Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)]
    files = [
        p
        for p in matches
        if p.is_file() and (excluded is None or excluded not in p.resolve().parents)
    ]
    found = [p for p in files if _is_input_name(p.name)]
    if not found:
        raise SourceError(f"{spec}: the pattern matches no image or video files")
    return Source(spec, _common_root(root, found), _relative_to(root, found))


def _glob_root(spec: str) -> Path:
    """The folder part of a pattern before its first wildcard: what outputs are relative to."""
    parts = []
    for part in Path(os.path.expanduser(spec)).parts[:-1]:
        if _GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _from_list(spec: str, list_file: Path) -> Source:
    base = list_file.parent
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{spec}: cannot read the list of inputs ({e})") from None
    paths, seen = [], set()
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(os.path.normpath(base / Path(entry).expanduser()))
        if path in seen:
            logger.warning("%s:%d: %s listed again; using it once", spec, number, entry)
            continue
        seen.add(path)
        paths.append(path)
    if not paths:
        raise SourceError(f"{spec}: the list names no files")
    # Outputs mirror the tree below the list's folder; entries outside it make the root the
    # nearest folder holding them all.
    root = _common_root(base, paths)
    return Source(spec, root, _relative_to(root, paths, sort=False))


def _rel_posix(path: Path, root: Path) -> str:
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return PurePosixPath(*Path(rel).parts).as_posix()


def _common_root(root: Path, paths: list[Path]) -> Path:
    """``root``, or the nearest folder holding every path when some lie outside it."""
    base = Path(os.path.abspath(root))
    absolute = [Path(os.path.abspath(p)) for p in paths]
    if all(base in p.parents for p in absolute):
        return root
    try:
        return Path(os.path.commonpath([p.parent for p in absolute]))
    except ValueError:  # paths on different drives
        raise SourceError(f"{root}: inputs must share one root folder") from None


def _relative_to(root: Path, paths: list[Path], sort: bool = True) -> list[InputFile]:
    """Inputs with their paths below ``root``, sorted; ``..`` is resolved first, and when some
    input lies outside ``root`` (``photos/**/../other/*.jpg``) the root becomes the nearest
    folder holding them all, so no relative path ever climbs out of it."""
    unique = {Path(os.path.abspath(p)): p for p in paths}  # one input per file
    base = _common_root(root, paths)
    files = [InputFile(given, _rel_posix(absolute, base)) for absolute, given in unique.items()]
    return sorted(files, key=lambda f: f.rel) if sort else files


def _extension_hint() -> str:
    common = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".mp4", ".mkv", ".avi")
    return ", ".join(common) + ", ..."
