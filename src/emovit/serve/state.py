"""`ServeState`: what one running app knows (the recognizer, the batcher, readiness, shutdown).

The app keeps it on ``app.state.emovit``; `get_state` returns it typed. It is written by the
loading thread (once) and by the shutdown signal, and read by every request.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emovit.serve.errors import ApiError
from emovit.serve.metrics import Metrics
from emovit.serve.settings import ServeSettings

if TYPE_CHECKING:
    from emovit.faces import FaceOptions
    from emovit.predictor import EmotionRecognizer
    from emovit.serve.batcher import MicroBatcher

__all__ = ["ServeState", "get_state"]

logger = logging.getLogger("emovit.serve")


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
        ready: loaded and warmed up: ``/readyz`` answers 200.
        shutting_down: intake has stopped (SIGTERM): ``/v1/`` and ``/readyz`` answer 503.
        error: why loading failed, if it did.
        video_jobs: videos being analysed now (``/v1/video``).
    """

    settings: ServeSettings = field(default_factory=ServeSettings)
    metrics: Metrics = field(default_factory=Metrics)
    recognizer: EmotionRecognizer | None = None
    batcher: MicroBatcher | None = None
    faces: FaceOptions | None = None
    ready: bool = False
    shutting_down: bool = False
    error: str | None = None
    video_jobs: int = 0
    _video_pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def video_executor(self) -> ThreadPoolExecutor:
        """The threads that analyse uploaded videos: ``max_video_jobs`` of them, apart from the
        default executor the photo requests prepare in (a long video does not starve them)."""
        with self._pool_lock:
            if self._video_pool is None:
                self._video_pool = ThreadPoolExecutor(
                    self.settings.max_video_jobs, thread_name_prefix="emovit-video"
                )
            return self._video_pool

    def close(self) -> None:
        """Let the video threads end (a running analysis stops after its batch at its deadline)."""
        with self._pool_lock:
            if self._video_pool is not None:
                self._video_pool.shutdown(wait=False, cancel_futures=True)
                self._video_pool = None

    def begin_shutdown(self) -> None:
        """Stop intake: new ``/v1/`` requests get 503 and ``/readyz`` 503, while the requests
        already taken finish (the batcher drains at lifespan shutdown)."""
        if not self.shutting_down:
            self.shutting_down = True
            logger.info("shutting down: new requests are refused, requests in flight finish")

    def set_ready(self, recognizer: EmotionRecognizer, batcher: MicroBatcher) -> None:
        self.recognizer, self.batcher = recognizer, batcher
        self.faces = recognizer.faces.replace(detector=recognizer.detector)
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
