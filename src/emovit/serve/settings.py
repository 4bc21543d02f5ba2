"""`ServeSettings`: every limit and option of the service in one object (the `emovit serve` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field

from emovit.errors import OptionError

__all__ = ["ServeSettings"]


@dataclass
class ServeSettings:
    """Limits and options of the service.

    The app enforces the request limits (token, body, images, pixels, queue, deadlines);
    `run_server` passes the connection limits (header size and time, keep-alive, connection
    count, drain) to uvicorn.

    Attributes:
        token: require ``Authorization: Bearer <token>`` on ``/v1/`` (None: open).
        max_body_bytes: request bodies over this answer 413.
        max_pixels: images with more pixels answer 413 (checked before decoding).
        max_images: images per request.
        max_faces: faces kept per image (the largest) when the recognizer sets no limit of its
            own: a photo of a crowd must not make one request the model's work of many (None:
            no limit).
        max_batch: faces per model batch (micro-batching across requests).
        max_wait_ms: how long the model worker waits to fill a batch.
        max_queue: requests waiting for the model worker before 503.
        deadline_s: seconds from a fully read body to the answer before 504.
        body_timeout_s: seconds to receive a whole request body before 408.
        header_timeout_s: seconds to receive a request's line and headers before the
            connection is closed (408 when part of it arrived).
        keep_alive_s: an idle keep-alive connection is closed after this.
        max_header_bytes: request line plus headers over this answer 431.
        max_connections: open connections and requests before uvicorn answers 503 (None: no limit).
        drain_timeout_s: on SIGTERM, seconds to finish the requests already taken.
        retry_after_s: the ``Retry-After`` of 503 answers (the least, for a busy explain or
            video slot, which estimates when its running job ends: `JobSlots`).
        cors_origins: browser origins allowed to call the API (CORS is off when empty).
        max_video_bytes: ``/v1/video`` bodies over this answer 413 (instead of max_body_bytes).
        video_body_timeout_s: seconds to receive a whole ``/v1/video`` body before 408 (instead
            of body_timeout_s: at 300 s a 100 MiB clip needs about 2.8 Mbit/s).
        max_video_seconds: longer videos answer 413 (and no more than this is ever analysed).
        video_deadline_s: seconds from a fully read video to the answer before 504.
        max_video_jobs: videos analysed at once; more answer 503 with Retry-After.
        max_request_pixels: the pixels of all of a request's images together, from their headers
            before any is decoded (16 small files can decode to gigabytes): more answer 413.
        max_explain_jobs: ``explain=true`` requests served at once (each map costs many model
            passes); more answer 503 with Retry-After.

    Examples:
        >>> ServeSettings(token="s3cret", max_images=4).max_images
        4
    """

    token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_request_pixels: int = 50_000_000
    max_images: int = 16
    max_faces: int | None = 64
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 64
    deadline_s: float = 15.0
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_header_bytes: int = 16 * 1024
    max_connections: int | None = None
    drain_timeout_s: float = 10.0
    retry_after_s: int = 1
    cors_origins: list[str] = field(default_factory=list)
    max_video_bytes: int = 100 * 1024 * 1024
    video_body_timeout_s: float = 300.0
    max_video_seconds: float = 60.0
    video_deadline_s: float = 120.0
    max_video_jobs: int = 1
    max_explain_jobs: int = 1

    def __post_init__(self) -> None:
        if self.max_faces is not None and self.max_faces < 1:
            raise OptionError(f"max_faces must be at least 1 (or None: no limit), got {self.max_faces}",
                              option="max_faces")  # fmt: skip
