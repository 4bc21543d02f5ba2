"""Micro-batching: one model worker runs the faces of concurrent requests together.

Each request prepares its images (decode, detect, crop, preprocess: `EmotionRecognizer.prepare`)
in its own thread, puts the `PreparedBatch` on a bounded queue and awaits a future; a single
worker thread takes batches until they hold `max_batch` faces or `max_wait_ms` has passed
since the first one, finishes them all with one `EmotionRecognizer.infer` call (one model
call, real per-image inference timings), and hands each request its results.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emovit.predictor import PreparedBatch
    from emovit.results import ImageResult

__all__ = ["MicroBatcher", "QueueFullError"]

Infer = Callable[[Sequence["PreparedBatch"]], list[list["ImageResult"]]]


class QueueFullError(RuntimeError):
    """The queue is at capacity (or the batcher is stopping): answer 503 with Retry-After."""


@dataclass
class _Job:
    batch: PreparedBatch
    future: asyncio.Future[list[ImageResult]]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def faces(self) -> int:
        return len(self.batch.faces)


class MicroBatcher:
    """Runs `infer` (prepared batches → each batch's results, e.g. `EmotionRecognizer.infer`)
    on groups of batches gathered across requests.

    Examples:
        >>> batcher = MicroBatcher(rec.infer, max_batch=32, max_wait_ms=10)  # doctest: +SKIP
        >>> batcher.start()  # doctest: +SKIP
        >>> results = await batcher.submit(rec.prepare(images))  # doctest: +SKIP
    """

    def __init__(
        self,
        infer: Infer,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.infer = infer
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1e3
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._on_batch = on_batch or (lambda n: None)
        self._thread = threading.Thread(target=self._run, name="emovit-model-worker", daemon=True)
        self._stopping = False
        self._intake = threading.Lock()  # `submit`'s check and put against `stop`'s switch
        self._busy = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting in the queue (for metrics)."""
        return self._queue.qsize()

    @property
    def full(self) -> bool:
        """No room for another job now (`submit` would raise `QueueFullError`)."""
        return self._stopping or self._queue.full()

    @property
    def alive(self) -> bool:
        """The model worker thread is running (``/readyz`` answers 503 once it is not)."""
        return self._thread.is_alive()

    @property
    def idle(self) -> bool:
        return self._queue.empty() and self._busy == 0

    async def submit(self, batch: PreparedBatch) -> list[ImageResult]:
        """Queue `batch` and wait for its results; `QueueFullError` when full or stopping."""
        loop = asyncio.get_running_loop()
        job = _Job(batch, loop.create_future(), loop)
        with self._intake:  # never a job queued after `stop` has emptied the queue
            if self._stopping:
                raise QueueFullError("shutting down")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFullError("queue full") from None
        return await job.future

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking jobs, let the queued ones finish (up to `drain_timeout` s), end the worker."""
        with self._intake:
            self._stopping = True  # from here `submit` adds nothing: the queue only shrinks
        deadline = time.monotonic() + drain_timeout
        while not self.idle and self.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        while True:  # the jobs not started in time are answered "shutting down" (503)
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is waiting
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, QueueFullError("shutting down"))
        self._queue.put_nowait(None)  # never blocks: the queue was just emptied
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def _take(self) -> list[_Job] | None:
        """The next batch of live jobs: those whose request already gave up (a deadline, a
        cancelled request) are dropped unrun, with their pixels."""
        first = self._queue.get()
        while first is not None and first.future.done():
            first = self._queue.get()
        if first is None:
            return None
        jobs, faces = [first], first.faces
        deadline = time.perf_counter() + self.max_wait
        while faces < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            if job.future.done():
                continue
            jobs.append(job)
            faces += job.faces
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            self._busy = len(jobs)
            results: list[list[ImageResult]] | None = None
            error: BaseException | None = None
            try:  # nothing here may end the worker: every waiting request gets its answer
                results = self.infer([job.batch for job in jobs])
                if len(results) != len(jobs):
                    raise RuntimeError(f"the model stage gave {len(results)} answers for {len(jobs)} jobs")
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                results, error = None, exc
            with contextlib.suppress(Exception):  # a metrics hook never costs an answer
                self._on_batch(sum(job.faces for job in jobs))
            for i, job in enumerate(jobs):
                answer = None if results is None else results[i]
                with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is waiting
                    job.loop.call_soon_threadsafe(_resolve, job.future, answer, error)
            self._busy = 0


def _resolve(future: asyncio.Future[Any], results: Any, error: BaseException | None) -> None:
    if future.done():  # the request gave up (deadline)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(results)
