"""Micro-batching: one model worker groups the faces of concurrent requests.

Requests put their preprocessed faces (an ``N x C x H x W`` array) on a bounded queue and
await a future; a single worker thread takes jobs until it holds `max_batch` faces or
`max_wait_ms` has passed since the first one, runs the classifier once on all of them, and
hands each request its rows.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MicroBatcher", "QueueFullError"]


class QueueFullError(RuntimeError):
    """The queue is at capacity: the caller should answer 503 with Retry-After."""


@dataclass
class _Job:
    faces: np.ndarray
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Runs `classify` (faces ``N x C x H x W`` → probabilities ``N x K``) on batches
    gathered across requests."""

    def __init__(
        self,
        classify: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.classify = classify
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1e3
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._on_batch = on_batch or (lambda n: None)
        self._thread = threading.Thread(target=self._run, name="emovit-model-worker", daemon=True)
        self._stopping = False
        self._busy = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting in the queue (for metrics)."""
        return self._queue.qsize()

    @property
    def idle(self) -> bool:
        return self._queue.empty() and self._busy == 0

    async def submit(self, faces: np.ndarray) -> np.ndarray:
        """Queue `faces` and wait for their probabilities; `QueueFullError` when full."""
        loop = asyncio.get_running_loop()
        job = _Job(faces, loop.create_future(), loop)
        if self._stopping:
            raise QueueFullError("shutting down")
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFullError("queue full") from None
        return await job.future

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop taking jobs, let the queued ones finish (up to `drain_timeout` s), end the worker."""
        self._stopping = True
        deadline = time.monotonic() + drain_timeout
        while not self.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        self._queue.put(None)
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def _take(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs, faces = [first], len(first.faces)
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
            jobs.append(job)
            faces += len(job.faces)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            self._busy = len(jobs)
            faces = np.concatenate([job.faces for job in jobs])
            try:
                probs = self.classify(faces)
                error: BaseException | None = None
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                probs, error = None, exc
            self._on_batch(len(faces))
            start = 0
            for job in jobs:
                rows = None if probs is None else probs[start : start + len(job.faces)]
                start += len(job.faces)
                job.loop.call_soon_threadsafe(_resolve, job.future, rows, error)
            self._busy = 0


def _resolve(future: asyncio.Future[Any], rows: Any, error: BaseException | None) -> None:
    if future.done():  # the request gave up (deadline)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(rows)
