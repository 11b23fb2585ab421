"""A process's share of a predict job's records: the output stages of its images (draw each
predicted image, then write its annotated copy, its instance-id PNG and one flushed part-file
line with its COCO results and manifest row) and the part-file line of each of its videos.

A drawing or writing failure fails that image only: it becomes an error row and the job goes
on. A failure to write the part file itself (a full disk) stops the job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from instseg.inference.job import ERROR, OK, Job, Task, task_record
from instseg.inference.model import instances_to_draw
from instseg.inference.pipeline import Frame, StageClock
from instseg.inference.records import coco_results, semantic_results
from instseg.io.images import atomic_write_image, instance_id_image
from instseg.io.writers import JsonLinesWriter
from instseg.structures.cropped_masks import CroppedMasks
from instseg.viz.renderer import Renderer

logger = logging.getLogger(__name__)


@dataclass
class ShardStats:
    """Counts and stage times of one process."""

    ok: int = 0
    errors: int = 0
    instances: int = 0
    clock: StageClock = field(default_factory=StageClock)


class ImageSink:
    """The ``render`` and ``write`` stages of one process; use as a context manager around
    :meth:`Pipeline.run <instseg.inference.pipeline.Pipeline.run>`."""

    def __init__(self, job: Job, rank: int, total: int, renderer: Renderer | None, desc: str):
        self.job = job
        self.output_dir = Path(job.output_dir)
        self.renderer = renderer
        self.draw_score = job.settings.video.draw_score
        self.stats = ShardStats()
        self.part = JsonLinesWriter(job.part_file(rank))
        show = job.progress and rank == 0
        self.bar = tqdm(total=total, desc=desc, unit="img", disable=not show, dynamic_ncols=True)

    def __enter__(self) -> ImageSink:
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()
        self.part.close()

    def stages(self):
        return [("render", self.render), ("write", self.write)]

    def render(self, frame: Frame) -> None:
        if frame.error is not None or self.renderer is None:
            return
        try:
            if frame.sem_seg is not None:
                frame.drawn = self.renderer.overlay(frame.image, frame.sem_seg)
                frame.panels = self.renderer.panels(frame.image, frame.sem_seg, frame.drawn)
                return
            shown = instances_to_draw(frame.instances, self.draw_score)
            frame.drawn = self.renderer.draw(frame.image, shown)
        except Exception as e:  # a renderer failure fails this input only
            logger.debug("Drawing %s failed", frame.path, exc_info=True)
            frame.fail("cannot draw outputs", e)

    def write(self, frame: Frame) -> None:
        start = time.perf_counter()
        task: Task = frame.tag
        record = task_record(task, self.job.config_digest)
        if frame.error is None:
            try:
                record |= self._write_outputs(frame, task)
            except Exception as e:  # a writer failure fails this input only
                logger.debug("Outputs of %s failed", task.path, exc_info=True)
                frame.fail("cannot write outputs", e)
        if frame.error is not None:
            logger.warning("%s", frame.error)
            record |= {"status": ERROR, "instances": 0, "error": frame.error, "time_ms": None}
        elapsed = sum(frame.seconds.values()) + time.perf_counter() - start
        record["time_ms"] = round(elapsed * 1000.0, 1)
        self.part.write(record)
        self._count(record)

    def add_video(self, task: Task, result, error: str | None) -> None:
        """The part-file line of a video :func:`~instseg.inference.video_sink.predict_video` has
        finished (``result``, a ``VideoResult``) or failed on (``error``, one line)."""
        record = task_record(task, self.job.config_digest)
        if error is not None:
            record |= {"status": ERROR, "instances": 0, "error": error, "time_ms": None}
        else:
            record |= {
                "status": OK,
                "frames": result.frames,
                "instances": result.instances,
                "tracks": sum(result.objects.values()) if result.tracks is not None else None,
                "objects": result.objects_text if result.tracks is not None else None,
                "tracks_file": task.outputs["tracks"],
                "error": None,
                "time_ms": round(result.seconds * 1000.0, 1),
            }
        self.part.write(record)
        self._count(record, bar=False)

    def _write_outputs(self, frame: Frame, task: Task) -> dict:
        image, instances = frame.image, frame.instances
        if frame.drawn is not None:
            atomic_write_image(self.output_dir / task.annotated, frame.drawn)
        if frame.sem_seg is not None:
            return self._write_semantic(frame, task)
        if task.masks is not None:
            masks = instances.pred_masks if instances.has("pred_masks") else None
            if isinstance(masks, CroppedMasks):
                ids = masks.id_image()
            elif masks is not None and len(instances):
                ids = instance_id_image(masks.numpy().astype(bool, copy=False))
            else:
                ids = instance_id_image(np.zeros((0, *image.shape[:2]), dtype=bool))
            atomic_write_image(self.output_dir / task.masks, ids)
        results = coco_results(instances, task.image_id, self.job.category_ids)
        height, width = image.shape[:2]
        frame.image = frame.drawn = frame.instances = None
        return {
            "status": OK,
            "instances": len(results),
            "error": None,
            "image": {"id": task.image_id, "file_name": task.rel, "width": width, "height": height},
            "results": results,
        }

    def _write_semantic(self, frame: Frame, task: Task) -> dict:
        """A semantic model's class-id PNG, three-panel figure and per-class results."""
        class_ids = frame.sem_seg
        if task.masks is not None:
            atomic_write_image(self.output_dir / task.masks, class_ids)
        if frame.panels is not None and task.panels is not None:
            atomic_write_image(self.output_dir / task.panels, frame.panels)
        results = semantic_results(
            class_ids,
            task.image_id,
            self.job.category_ids,
            [c["name"] for c in self.job.categories],
        )
        height, width = class_ids.shape
        frame.image = frame.drawn = frame.panels = frame.sem_seg = None
        shares = {r["name"]: r["pixel_share"] for r in results}
        return {
            "status": OK,
            "instances": len(results),
            "error": None,
            "image": {
                "id": task.image_id,
                "file_name": task.rel,
                "width": width,
                "height": height,
                "class_pixel_shares": shares,
            },
            "results": results,
        }

    def _count(self, record: dict, bar: bool = True) -> None:
        if record["status"] == OK:
            self.stats.ok += 1
            self.stats.instances += record["instances"]
        else:
            self.stats.errors += 1
        if bar:
            self.bar.update(1)
