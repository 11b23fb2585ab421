"""Stage threads joined by bounded queues: the plumbing of folder and video inference.

Decoding, the model and drawing/writing run at once, so the model does not wait on I/O; bounded
queues keep memory flat however many inputs there are. The first failure in any stage stops all
of them: blocked queue calls wake up every ``POLL_S`` to notice, and the failure is raised in the
calling thread once every stage has wound down.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# How often blocked queue operations look for a failure in another stage (seconds).
POLL_S = 0.1
# How long to wait for stage threads to wind down after a failure before leaving them.
JOIN_TIMEOUT_S = 60.0


class End:
    """Queue sentinel: no more items."""


END = End()


class Cancelled(Exception):
    """Raised inside a stage when another stage failed; never escapes :meth:`StageThreads.run`."""


class StageThreads:
    """Stage threads and the queues between them; the calling thread runs one stage itself.

    Thread names are ``instseg-{name}-{stage}``, so a test can check that none outlive a run.
    """

    def __init__(self, name: str, queue_size: int) -> None:
        self.name = name
        self.queue_size = queue_size
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def queue(self) -> queue.Queue:
        return queue.Queue(maxsize=self.queue_size)

    def fail(self, exc: BaseException) -> None:
        """Record a stage's failure (a ``Cancelled`` is only the echo of one) and stop all."""
        with self._lock:
            if not isinstance(exc, Cancelled):
                self.errors.append(exc)
        self.stop.set()

    def check(self) -> None:
        """Raise ``Cancelled`` if another stage failed: for stages that do not block on queues."""
        if self.stop.is_set():
            raise Cancelled

    def put(self, q: queue.Queue, item) -> None:
        while True:
            self.check()
            try:
                q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue):
        while True:
            self.check()
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue

    def spawn(self, stage: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # handed to the calling thread
                self.fail(exc)

        thread = threading.Thread(target=run, name=f"instseg-{self.name}-{stage}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def run(self, target: Callable[[], None]) -> None:
        """Run ``target`` (the calling thread's stage), wait for every stage thread, then raise
        the first failure of any stage, if there was one."""
        try:
            target()
        except BaseException as exc:
            self.fail(exc)
        try:
            self._join()
        except BaseException as exc:  # e.g. Ctrl-C while the last outputs are written
            self.fail(exc)
            self._join()
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        """Stop every stage and wait for it (a consumer that leaves early, e.g. a closed
        generator); a failure recorded so far is raised."""
        self.stop.set()
        self._join()
        errors = [e for e in self.errors if not isinstance(e, GeneratorExit)]
        if errors:
            raise errors[0]

    def _join(self) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self.threads:
            thread.join(
                timeout=max(0.0, deadline - time.monotonic()) if self.stop.is_set() else None
            )
            if thread.is_alive():
                logger.error("Stage thread %s did not stop in time; leaving it", thread.name)
