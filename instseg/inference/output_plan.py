"""One naming rule for every output of a predict job, computed before any work starts.

An input ``<rel>`` (its POSIX path below the SOURCE root) gets, inside the output folder:
the annotated image ``<rel>`` (``<rel-stem>.jpg`` for formats OpenCV cannot write),
``<rel-stem>.masks.png``, a semantic model's three-panel figure ``<rel-stem>.panels.jpg``, the annotated video ``<rel-stem>.mp4``, ``<rel-stem>.predictions.jsonl``
and the track files ``<rel-stem>.tracks.csv`` and ``<rel-stem>.tracks.json``.
Where a name would be claimed twice, by two inputs or by two kinds of output (``a.jpg`` and
``a.png`` both giving ``a.masks.png``; ``x.jpg``'s mask and the input ``x.masks.png``), each
claimant keeps its whole input name (``a.jpg.masks.png``), and any clash left after that gets
the input's position (``a.jpg~3.masks.png``). An annotated image always keeps its input's name. The plan depends only on the sorted input list, so
every rank of a distributed job computes the same one.

Every planned path is checked after resolving ``..`` and symbolic links: it lies inside the
output folder, and it is not an input file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from instseg.config import ConfigError

# Output kinds: the ending each adds to an input's stem, and whether the input's own extension
# may stand in for it (an annotated image keeps its format).
KIND_SUFFIXES = {
    "annotated": None,
    "masks": ".masks.png",
    "panels": ".panels.jpg",
    "video": ".mp4",
    "predictions": ".predictions.jsonl",
    "tracks": ".tracks.csv",
    "track_summary": ".tracks.json",
}
# What a video gives, in the order predict_video takes its paths.
VIDEO_OUTPUT_KINDS = ("video", "predictions", "tracks", "track_summary")
# Formats OpenCV encodes; annotated images of other formats are written as JPEG.
WRITABLE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def _stem(rel: str) -> str:
    path = PurePosixPath(rel)
    return path.with_suffix("").as_posix() if path.suffix else rel


def _names(rel: str, kind: str, index: int | None = None) -> tuple[str, str]:
    """(preferred name, whole-name fallback) of one output; ``index`` marks a last-resort name."""
    tag = f"~{index}" if index is not None else ""
    suffix = KIND_SUFFIXES[kind]
    if suffix is None:
        ext = PurePosixPath(rel).suffix
        if ext.lower() in WRITABLE_EXTENSIONS:
            return (rel if not tag else f"{_stem(rel)}{tag}{ext}"), f"{rel}{tag}{ext}"
        return f"{_stem(rel)}{tag}.jpg", f"{rel}{tag}.jpg"
    return f"{_stem(rel)}{tag}{suffix}", f"{rel}{tag}{suffix}"


def plan_outputs(
    rels: Sequence[str],
    kinds: Sequence[Sequence[str]],
    reserved: Sequence[str] = (),
) -> list[dict[str, str]]:
    """Output names relative to the output folder: for each input, ``{kind: name}``.

    Annotated images claim their names first (an annotated copy keeps the input's name), then
    the other kinds; within a round, every claimant of a clashing name falls back alike, so
    the result does not depend on input order.

    Args:
        rels: the inputs' relative paths, in input order (unique).
        kinds: for each input, the output kinds it produces (keys of :data:`KIND_SUFFIXES`).
        reserved: names the job itself writes (manifest.csv, ...), never given to an input.
    """
    key = str.casefold  # two names that differ only in case are one file on many disks
    taken = {key(n) for n in reserved}
    chosen: list[dict[str, str]] = [{} for _ in rels]
    for round_kinds in (("annotated",), tuple(k for k in KIND_SUFFIXES if k != "annotated")):
        claims = [(i, kind) for i, ks in enumerate(kinds) for kind in ks if kind in round_kinds]
        preferred = {c: _names(rels[c[0]], c[1])[0] for c in claims}
        counts = Counter(key(n) for n in preferred.values())
        for (i, kind), name in preferred.items():
            if counts[key(name)] > 1 or key(name) in taken:
                name = _names(rels[i], kind)[1]
            chosen[i][kind] = name
        fallback = Counter(key(chosen[i][kind]) for i, kind in claims)
        for i, kind in claims:
            name = chosen[i][kind]
            if fallback[key(name)] > 1 or key(name) in taken:
                chosen[i][kind] = name = _names(rels[i], kind, i)[1]
            if key(name) in taken:  # cannot happen for unique inputs; a guard on the rule
                raise ConfigError(f"two outputs would be named {name}")
            taken.add(key(name))
    return chosen


def check_output_paths(
    output_dir: Path, names: Sequence[str], inputs: Sequence[str | os.PathLike]
) -> None:
    """Refuse any planned output that leaves the output folder or would replace an input.

    Raises:
        ConfigError: one line naming the output and why.
    """
    root = output_dir.resolve()
    sources = {os.path.normcase(Path(p).resolve()) for p in inputs}
    for name in names:
        target = (root / name).resolve()
        if not target.is_relative_to(root):
            raise ConfigError(
                f"--output {output_dir}: output {name} would be written outside the output "
                f"folder (to {target}); choose another output folder"
            )
        if os.path.normcase(target) in sources:
            raise ConfigError(
                f"--output {output_dir}: writing {name} there would replace the input {target}; "
                "choose another output folder"
            )
