"""``--skip-existing``: what an earlier run in the output folder finished, and its records.

An input, image or video, is reused only when its identity (size, mtime) and the config digest
match those its record was made with, and its outputs exist; anything else is predicted again,
so results of two configs or of two versions of an input never mix.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from instseg.inference.job import (
    CONFIG_FILE,
    IMAGES_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    OK,
    PARTS_DIR_NAME,
    PREDICTIONS_FILE,
    SKIPPED,
    VIDEO,
    Job,
    PriorEntry,
    Task,
    task_record,
)
from instseg.io.writers import iter_json_lines, iter_json_list, read_json_line

logger = logging.getLogger(__name__)


def outputs_exist(output_dir: Path, task: Task) -> bool:
    return all((output_dir / task.outputs[kind]).is_file() for kind in task.written)


def load_prior(output_dir: Path, digest: str) -> dict[str, PriorEntry]:
    """Inputs an earlier run finished (status ok or skipped), by relative path: from the final
    files of a completed run, then the part files of interrupted ones (newest last, so the
    latest record of an input wins; a later error removes it)."""
    prior: dict[str, PriorEntry] = {}
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
                    prior[record["path"]] = PriorEntry(
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


def _prior_from_final(output_dir: Path, digest: str) -> dict[str, PriorEntry]:
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
        rows = [row for row in csv.DictReader(f) if row["status"] in (OK, SKIPPED)]
    prior = {
        row["path"]: PriorEntry(int(row["instances"] or 0), identities[row["path"]], row=row)
        for row in rows
        if row["kind"] == VIDEO and row["path"] in identities
    }
    done = {row["path"]: int(row["instances"] or 0) for row in rows if row["kind"] != VIDEO}
    with open(images_file, encoding="utf-8") as f:
        images = {image["file_name"]: image for image in json.load(f)["images"]}
    spans: dict[int, list[int]] = {}
    for offset, result in iter_json_list(predictions_file):
        span = spans.setdefault(int(result["image_id"]), [offset, 0])
        span[1] += 1
    for rel, instances in done.items():
        image = images.get(rel)
        if image is None:
            continue
        offset, count = spans.get(int(image["id"]), (0, 0))
        if count != instances or rel not in identities:
            continue
        prior[rel] = PriorEntry(
            instances,
            identity=identities[rel],
            image=image,
            predictions_offset=offset,
            predictions_count=count,
        )
    return prior


def prior_record(job: Job, task: Task, entry: PriorEntry) -> dict:
    """An earlier run's record of ``task``, as a part-file row with this run's ids."""
    if task.kind == VIDEO:
        return _prior_video_record(job, task, entry)
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
        **task_record(task, job.config_digest),
        "status": SKIPPED,
        "instances": len(results),
        "time_ms": None,
        "error": None,
        "image": image,
        "results": results,
    }


def _prior_video_record(job: Job, task: Task, entry: PriorEntry) -> dict:
    """A video's earlier record: its manifest row's counts (its results stay in its JSONL)."""
    earlier = (
        entry.row if entry.part_file is None else read_json_line(entry.part_file, entry.offset)
    )
    counts = {key: earlier.get(key) for key in ("frames", "instances", "tracks")}
    return {
        **{key: int(value) if value not in (None, "") else None for key, value in counts.items()},
        **task_record(task, job.config_digest),
        "status": SKIPPED,
        "time_ms": None,
        "error": None,
    }
