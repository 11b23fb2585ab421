"""The end of an ``instseg predict`` job: every rank's part file and the earlier run's records,
streamed in input order into predictions.json, images.json, manifest.csv, config.yaml and the
resume index, which become visible together through one commit journal. An input predicted
again that failed loses its earlier outputs, which another config or input version made."""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from instseg.inference.image_sink import ShardStats
from instseg.inference.job import (
    CONFIG_FILE,
    ERROR,
    IMAGES_FILE,
    INDEX_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    OK,
    PREDICTIONS_FILE,
    SKIPPED,
    VIDEO,
    Job,
    PredictResult,
    Task,
)
from instseg.inference.pipeline import StageClock
from instseg.inference.resume import prior_record
from instseg.io.atomic import AtomicFile, commit_journal, commit_together
from instseg.io.writers import CsvWriter, JsonListWriter, iter_json_lines

logger = logging.getLogger(__name__)


def _part_records(path: Path) -> Iterator[dict]:
    if path.is_file():
        for _, record in iter_json_lines(path):
            yield record


def _carried_records(job: Job) -> Iterator[dict]:
    for task, entry in job.carried:
        yield prior_record(job, task, entry)


def finalize(
    job: Job, part_files: Sequence[Path], all_stats: Sequence[ShardStats]
) -> PredictResult:
    """Stream every part file (and the earlier run's records) into the final files, in input
    order; an input without any record (which would mean a lost part file line) is an error row."""
    output_dir = Path(job.output_dir)
    streams = [_part_records(path) for path in part_files] + [_carried_records(job)]
    merged = heapq.merge(*streams, key=lambda record: record["index"])
    result = PredictResult(output_dir=str(output_dir), total=job.total)
    info = {
        "description": "instseg predict: the images of predictions.json",
        "precision": job.settings.precision,
    }
    tasks_by_index = {task.index: task for task in job.tasks}
    predictions = JsonListWriter(output_dir / PREDICTIONS_FILE)
    images = JsonListWriter(
        output_dir / IMAGES_FILE,
        key="images",
        members={"info": info, "categories": job.categories, "annotations": []},
    )
    manifest = CsvWriter(output_dir / MANIFEST_FILE, MANIFEST_COLUMNS)
    index = AtomicFile(output_dir / INDEX_FILE)
    config = AtomicFile(output_dir / CONFIG_FILE)
    files = (predictions, images, manifest, index, config)
    identities: dict[str, list[int]] = {}
    failed: list[Task | None] = []
    try:
        expected = 0
        for record in _with_missing(merged, job.total, tasks_by_index):
            if record["index"] != expected:
                continue  # a repeated record: the first one counts
            expected += 1
            manifest.add(record)
            _count(result, record)
            if record["status"] == ERROR:  # a task of this run (reused records are never errors)
                failed.append(tasks_by_index.get(record["index"]))
                continue
            identities[record["path"]] = record["identity"]
            if record.get("kind") == VIDEO:
                continue  # its results are in its own JSONL file
            images.add(record["image"])
            for r in record["results"]:
                predictions.add(r)
        index.write(json.dumps({"config": job.config_digest, "inputs": identities}) + "\n")
        config.write(job.cfg.dump())
        _remove_outputs(output_dir, failed)
        # The final files become visible together (or, killed part-way, on the next run).
        pairs = [(f.close_unpublished(), f.path) for f in files]
        commit_together(pairs, commit_journal(output_dir, "predict"))
    except BaseException:
        for f in files:
            f.discard()
        raise
    result.stage_ms, result.images_per_s = StageClock.combine([s.clock for s in all_stats])
    for path in part_files:
        path.unlink(missing_ok=True)
    return result


def _count(result: PredictResult, record: dict) -> None:
    status = record["status"]
    result.videos += record.get("kind") == VIDEO
    result.errors += status == ERROR
    result.ok += status == OK
    result.skipped += status == SKIPPED
    result.instances += int(record.get("instances") or 0)
    result.frames += int(record.get("frames") or 0)
    if record.get("objects") is not None:
        result.tracked[record["tracks_file"]] = record["objects"]


def _remove_outputs(output_dir: Path, tasks: Sequence[Task | None]) -> None:
    """Remove what earlier runs wrote for ``tasks``, inputs this run failed on: those outputs
    were made from another config or another version of the input."""
    for task in filter(None, tasks):
        for name in task.outputs.values():
            (output_dir / name).unlink(missing_ok=True)


def _with_missing(records: Iterator[dict], total: int, tasks_by_index: dict[int, Task]):
    """``records`` (sorted by index) with an error row for every index in 0..total-1 that none
    covers."""
    expected = 0
    for record in records:
        while expected < record["index"]:
            yield _missing_record(expected, tasks_by_index)
            expected += 1
        yield record
        expected = max(expected, record["index"] + 1)
    while expected < total:
        yield _missing_record(expected, tasks_by_index)
        expected += 1


def _missing_record(index: int, tasks_by_index: dict[int, Task]) -> dict:
    task = tasks_by_index.get(index)
    rel = task.rel if task else f"#{index}"
    message = f"{task.path if task else rel}: no result recorded (a worker process stopped early)"
    logger.error("%s", message)
    return {
        "index": index,
        "path": rel,
        "kind": task.kind if task else None,
        "status": ERROR,
        "instances": 0,
        "time_ms": None,
        "error": message,
    }
