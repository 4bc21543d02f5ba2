"""`ServeState`: what one running app knows (the recognizer, the batcher, readiness, shutdown).

The app keeps it on ``app.state.emovit``; `get_state` returns it typed. It is written by the
loading thread (once) and by the shutdown signal, and read by every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from emovit.serve.errors import ApiError
from emovit.serve.metrics import Metrics
from emovit.serve.settings import ServeSettings

if TYPE_CHECKING:
    from emovit.faces import FaceOptions
    from emovit.predictor import EmotionRecognizer
    from emovit.serve.batcher import MicroBatcher

__all__ = ["JobSlots", "ServeState", "Slot", "get_state"]

_T = TypeVar("_T")

logger = logging.getLogger("emovit.serve")


class JobSlots:
    """At most `limit` jobs of one kind at once, each run in a thread of the kind's own pool
    (long jobs never starve the default executor that photo requests prepare in).

    A request takes its slot with `take` before it reads its body (N uploads at once are not
    all held in memory) and gives it back when its job's thread has ended, not when the
    client stops waiting (a 504): `Slot.submit`. A slot taken but never submitted (the body
    was bad) is given back when its ``with`` block ends.

    When all are busy, the 503's ``Retry-After`` is when the first running job should end, from
    how long the kind's jobs have taken (a moving average), so clients of a server busy with a
    ten-second explanation do not knock every second; never less than the server's
    ``retry_after_s`` nor more than `MAX_RETRY_AFTER_S`.
    """

    #: the longest Retry-After an estimate gives
    MAX_RETRY_AFTER_S = 60
    #: the weight of the latest job in the moving average of job times
    _LATEST_WEIGHT = 0.3

    def __init__(self, kind: str, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.kind, self.limit = kind, limit
        self.busy = 0  # changed on the event loop's thread only
        self.typical_s: float | None = None  # the moving average of the jobs' times, once one ended
        self._running: dict[int, float] = {}  # the submitted jobs' start times, by Slot id
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def take(self, retry_after_s: int) -> Slot:
        """A slot, or a 503 with Retry-After when all are busy."""
        if self.busy >= self.limit:
            wait = self.retry_after(retry_after_s)
            raise ApiError(503, "overloaded", f"the server is busy with another {self.kind} job, retry "
                           f"in about {wait} s", {"Retry-After": str(wait)})  # fmt: skip
        self.busy += 1
        return Slot(self)

    def retry_after(self, floor_s: int) -> int:
        """Whole seconds until the first running job should end (at least `floor_s`; `floor_s`
        while no job has ended yet to tell how long they take)."""
        if self.typical_s is None or not self._running:
            return floor_s
        now = self._clock()
        left = min(self.typical_s - (now - started) for started in self._running.values())
        return max(floor_s, min(math.ceil(left), self.MAX_RETRY_AFTER_S))

    def _started(self, slot: Slot, at: float) -> None:
        self._running[id(slot)] = at

    def _ended(self, slot: Slot, took_s: float | None) -> None:
        """On the event loop: `slot` is given back, its job having taken `took_s` (None: it
        never ran)."""
        self.busy -= 1
        self._running.pop(id(slot), None)
        if took_s is not None:
            latest = self._LATEST_WEIGHT
            self.typical_s = (
                took_s if self.typical_s is None else (1 - latest) * self.typical_s + latest * took_s
            )

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix=f"emovit-{self.kind}")
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class Slot:
    """One taken `JobSlots` slot (a context manager): `submit` runs its one job."""

    def __init__(self, slots: JobSlots) -> None:
        self.slots = slots
        self._submitted = False

    def submit(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> asyncio.Future[_T]:
        """Run ``fn(*args, **kwargs)`` in the kind's pool (called on the event loop); the slot
        is given back when it has run, or was cancelled before it started."""
        if self._submitted:
            raise RuntimeError("a slot runs one job")
        loop = asyncio.get_running_loop()
        slots = self.slots
        started = slots._clock()

        def ended(job: Future[_T]) -> None:  # in the worker thread (or here, when cancelled)
            took = None if job.cancelled() else slots._clock() - started
            with contextlib.suppress(RuntimeError):  # the server's loop has closed meanwhile
                loop.call_soon_threadsafe(slots._ended, self, took)

        job = slots.pool().submit(fn, *args, **kwargs)
        self._submitted = True
        slots._started(self, started)
        job.add_done_callback(ended)
        return asyncio.wrap_future(job)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._submitted:
            self.slots._ended(self, None)


@dataclass
class ServeState:
    """The state of one app.

    Attributes:
        settings: its limits and options.
        metrics: its Prometheus metrics.
        recognizer: the loaded recognizer (None while loading).
        batcher: the model worker (None while loading).
        faces: the face options requests start from (the recognizer's, with a detector that
            concurrent requests can share).
        explainable: the model has torch weights, which ``explain=true`` needs.
        ready: loaded and warmed up: ``/readyz`` answers 200.
        shutting_down: intake has stopped (SIGTERM): ``/v1/`` and ``/readyz`` answer 503.
        error: why loading failed, if it did.
        video_slots: the videos being analysed (``/v1/video``), at most ``max_video_jobs``.
        explain_slots: the requests computing explanation maps, at most ``max_explain_jobs``.
    """

    settings: ServeSettings = field(default_factory=ServeSettings)
    metrics: Metrics = field(default_factory=Metrics)
    recognizer: EmotionRecognizer | None = None
    batcher: MicroBatcher | None = None
    faces: FaceOptions | None = None
    explainable: bool = False
    ready: bool = False
    shutting_down: bool = False
    error: str | None = None
    video_slots: JobSlots = field(init=False, repr=False)
    explain_slots: JobSlots = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.video_slots = JobSlots("video", self.settings.max_video_jobs)
        self.explain_slots = JobSlots("explain", self.settings.max_explain_jobs)

    def close(self) -> None:
        """Cancel the jobs not started yet; running ones end on their own (a video analysis
        after its batch: its request set its stop event when it was cancelled)."""
        self.video_slots.close()
        self.explain_slots.close()

    def begin_shutdown(self) -> None:
        """Stop intake: new ``/v1/`` requests get 503 and ``/readyz`` 503, while the requests
        already taken finish (the batcher drains at lifespan shutdown)."""
        if not self.shutting_down:
            self.shutting_down = True
            logger.info("shutting down: new requests are refused, requests in flight finish")

    def set_ready(self, recognizer: EmotionRecognizer, batcher: MicroBatcher) -> None:
        self.recognizer, self.batcher = recognizer, batcher
        faces = recognizer.faces.replace(detector=recognizer.detector)
        if faces.max_faces is None and self.settings.max_faces is not None:
            faces = faces.replace(max_faces=self.settings.max_faces)
        self.faces = faces
        # maps need torch weights: loaded, or beside an ONNX export (looked up once, not per request)
        self.explainable = bool(getattr(recognizer, "explainable", False))
        self.ready = True

    def require_ready(self) -> tuple[EmotionRecognizer, MicroBatcher, FaceOptions]:
        """The recognizer, batcher and face options, or a 503 while loading."""
        if not self.ready or self.recognizer is None or self.batcher is None or self.faces is None:
            why = (
                "the model failed to load (see the server log)"
                if self.error
                else "the model is still loading"
            )
            raise ApiError(503, "not_ready", why, {"Retry-After": str(self.settings.retry_after_s)})
        if not self.batcher.alive:  # nothing would ever answer the request: say so at once
            raise ApiError(503, "not_ready", "the model worker has stopped (see the server log)")
        return self.recognizer, self.batcher, self.faces


def get_state(app: Any) -> ServeState:
    """The `ServeState` of an app built by `create_app`.

    Examples:
        >>> app = create_app(recognizer)  # doctest: +SKIP
        >>> get_state(app).ready  # doctest: +SKIP
        False
    """
    state = getattr(getattr(app, "state", None), "emovit", None)
    if not isinstance(state, ServeState):
        raise TypeError(f"{type(app).__name__} was not built by emovit.serve.create_app")
    return state
