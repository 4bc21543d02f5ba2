"""The HTTP service: a FastAPI app over `EmotionRecognizer`, with micro-batching, limits,
metrics, optional bearer token and the web page (``/``).

The app never writes uploads to disk and never logs them; errors are JSON
(``{"error": {"code", "message"}}``) without tracebacks or server paths.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from emovit.errors import EmovitError, ImageError
from emovit.serve.batcher import MicroBatcher, QueueFullError
from emovit.serve.schemas import ErrorResponse, ModelInfoResponse, PredictRequest, PredictResponse

if TYPE_CHECKING:
    from emovit.predictor import EmotionRecognizer

__all__ = ["ServeSettings", "create_app"]

_STATUS_FOR_KIND = {"too_large": 413, "not_image": 415, "unsupported_input": 415}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class ServeSettings:
    """Limits and options of the service (`emovit serve` flags)."""

    token: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_images: int = 16
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 64
    deadline_s: float = 15.0
    drain_timeout_s: float = 10.0
    retry_after_s: int = 1
    cors_origins: list[str] = field(default_factory=list)


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("emovit_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=self.registry)  # fmt: skip
        self.latency = Histogram("emovit_request_seconds", "Latency of /v1/predict", registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))  # fmt: skip
        self.batch = Histogram("emovit_batch_faces", "Faces per model batch", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))  # fmt: skip
        self.rejections = Counter("emovit_rejections", "Rejected requests by reason", ["reason"],
                                  registry=self.registry)  # fmt: skip
        self.queue = Gauge("emovit_queue_depth", "Jobs waiting for the model worker", registry=self.registry)


def _safe_name(name: str | None, index: int) -> str:
    return PurePath(name).name[:200] if name else f"image {index}"


def create_app(
    recognizer: EmotionRecognizer | Callable[[], EmotionRecognizer],
    settings: ServeSettings | None = None,
) -> FastAPI:
    """Build the app. `recognizer` may be a factory: it then loads in the background, and
    ``/readyz`` answers 503 until it has loaded and run one warm-up inference."""
    from prometheus_client import generate_latest

    from emovit import __version__

    cfg = settings or ServeSettings()
    metrics = _Metrics()
    state: dict[str, Any] = {
        "rec": None,
        "batcher": None,
        "ready": False,
        "shutting_down": False,
        "error": None,
    }

    def load() -> None:
        try:
            rec = recognizer() if callable(recognizer) and not hasattr(recognizer, "predict") else recognizer

            batcher = MicroBatcher(
                rec.probabilities,
                max_batch=cfg.max_batch,
                max_wait_ms=cfg.max_wait_ms,
                max_queue=cfg.max_queue,
                on_batch=lambda n: metrics.batch.observe(n),
            )
            warm = rec.prepare([np.full((64, 64, 3), 128, np.uint8)], detector=_whole_image())
            if warm.pixel_values is not None:
                rec.probabilities(warm.pixel_values)
            batcher.start()
            state.update(rec=rec, batcher=batcher, ready=True)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, never as a traceback
            state["error"] = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(target=load, name="emovit-load", daemon=True)
        thread.start()
        yield
        state["shutting_down"] = True
        if state["batcher"] is not None:
            await asyncio.to_thread(state["batcher"].stop, cfg.drain_timeout_s)

    app = FastAPI(
        title="emovit",
        version=__version__,
        description="Facial emotion recognition: faces, boxes and per-emotion probabilities.",
        lifespan=lifespan,
    )
    app.state.emovit = state
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Response:
        path = request.url.path
        try:
            if path.startswith("/v1/"):
                if state["shutting_down"]:
                    raise _ApiError(503, "shutting_down", "the server is shutting down",
                                   {"Retry-After": str(cfg.retry_after_s)})  # fmt: skip
                if cfg.token:
                    header = request.headers.get("authorization", "")
                    given = header[7:] if header.lower().startswith("bearer ") else ""
                    if not hmac.compare_digest(given.encode(), cfg.token.encode()):
                        metrics.rejections.labels("unauthorized").inc()
                        raise _ApiError(401, "unauthorized", "a valid bearer token is required",
                                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
                length = request.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > cfg.max_body_bytes:
                    metrics.rejections.labels("body_too_large").inc()
                    raise _ApiError(413, "body_too_large", f"request body over {cfg.max_body_bytes} bytes")
            response = await call_next(request)
        except _ApiError as problem:
            response = _error(problem)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if path in ("/", "/index.html") or path.startswith("/static/"):
            response.headers["Content-Security-Policy"] = _CSP
        metrics.requests.labels(path if path.startswith("/v1/") else "other", str(response.status_code)).inc()
        return response

    def _error(problem: _ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": problem.code, "message": problem.message}},
            status_code=problem.status,
            headers=problem.headers,
        )

    @app.exception_handler(_ApiError)
    async def problem_handler(request: Request, problem: _ApiError) -> JSONResponse:
        return _error(problem)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(_ApiError(422, "bad_request", f"{where}: {first.get('msg', 'invalid request')}"))

    async def read_body(request: Request) -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > cfg.max_body_bytes:
                metrics.rejections.labels("body_too_large").inc()
                raise _ApiError(413, "body_too_large", f"request body over {cfg.max_body_bytes} bytes")
        return bytes(body)

    async def images_from(request: Request) -> list[tuple[str, bytes]]:
        content_type = request.headers.get("content-type", "")
        body = await read_body(request)
        if content_type.startswith("multipart/form-data"):
            from emovit.serve._multipart import MultipartError, parse_multipart

            try:
                parts = parse_multipart(body, content_type)
            except MultipartError as exc:
                raise _ApiError(422, "bad_request", str(exc)) from None
            images = [
                (_safe_name(p.filename, i), bytes(p.data)) for i, p in enumerate(parts) if p.name == "files"
            ]
        elif content_type.startswith("application/json"):
            try:
                payload = PredictRequest.model_validate_json(body)
            except ValueError as exc:
                raise _ApiError(422, "bad_request", f"invalid JSON body: {str(exc)[:300]}") from None
            images = []
            for i, item in enumerate(payload.images):
                try:
                    images.append((_safe_name(item.name, i), base64.b64decode(item.data, validate=True)))
                except (binascii.Error, ValueError):
                    raise _ApiError(
                        422, "bad_base64", f"{_safe_name(item.name, i)}: invalid base64"
                    ) from None
        else:
            hint = "send multipart/form-data with field 'files', or JSON with base64 images"
            raise _ApiError(415, "unsupported_media_type", hint)
        if not images:
            raise _ApiError(422, "no_images", "no images in the request (multipart field name: 'files')")
        if len(images) > cfg.max_images:
            raise _ApiError(413, "too_many_images", f"at most {cfg.max_images} images per request")
        return images

    def _detector(name: str | None) -> Any:
        if name in (None, "default"):
            return None
        if name == "none":
            return _whole_image()
        raise _ApiError(422, "bad_detector", "detector must be 'default' or 'none'")

    errors = {
        status: {"model": ErrorResponse, "description": text}
        for status, text in (
            (401, "a bearer token is required and was missing or wrong"),
            (413, "body, image count or image pixels over the limit"),
            (415, "not an image, or not multipart/JSON"),
            (422, "invalid request or corrupt image"),
            (503, "loading, overloaded or shutting down; see Retry-After"),
            (504, "not answered within the deadline"),
        )
    }

    @app.post(
        "/v1/predict", response_model=PredictResponse, openapi_extra=_request_schema(), responses=errors
    )
    async def predict(
        request: Request,
        detector: Literal["default", "none"] = Query("default", description="default: the server's detector"),
        top_k: int = Query(3, ge=1, le=20),
        no_face: Literal["skip", "whole"] | None = Query(None, description="images without a face"),
    ) -> Any:
        """Classify the faces in one or more images (multipart field ``files``, or JSON base64)."""
        if not state["ready"]:
            raise _ApiError(
                503, "not_ready", "the model is still loading", {"Retry-After": str(cfg.retry_after_s)}
            )
        start = time.perf_counter()
        images = await images_from(request)
        rec, batcher = state["rec"], state["batcher"]

        async def run() -> list[dict[str, Any]]:
            prepared = await asyncio.to_thread(
                rec.prepare, [data for _, data in images], errors="raise", detector=_detector(detector),
                no_face=no_face, max_pixels=cfg.max_pixels,
            )  # fmt: skip
            for result, (name, _) in zip(prepared.results, images, strict=True):
                result.source = name
            probs = None
            if prepared.pixel_values is not None:
                try:
                    probs = await batcher.submit(prepared.pixel_values)
                except QueueFullError:
                    metrics.rejections.labels("queue_full").inc()
                    raise _ApiError(503, "overloaded", "the server is busy, retry shortly",
                                   {"Retry-After": str(cfg.retry_after_s)}) from None  # fmt: skip
            return [r.to_dict(top_k) for r in rec.attach(prepared, probs)]

        try:
            results = await asyncio.wait_for(run(), timeout=cfg.deadline_s)
        except TimeoutError:
            metrics.rejections.labels("deadline").inc()
            raise _ApiError(504, "deadline", f"not answered within {cfg.deadline_s:g} s") from None
        except ImageError as exc:
            status = _STATUS_FOR_KIND.get(exc.kind, 422)
            metrics.rejections.labels("too_many_pixels" if status == 413 else "bad_image").inc()
            index = next((i for i, (n, _) in enumerate(images) if exc.source == f"<bytes #{i}>"), None)
            name = images[index][0] if index is not None else "image"
            raise _ApiError(status, f"image_{exc.kind}", f"{name}: {exc.problem}") from None
        except EmovitError as exc:
            raise _ApiError(422, "bad_request", str(exc)) from None
        metrics.latency.observe(time.perf_counter() - start)
        return {"model": rec.model.name, "results": results}

    @app.get("/v1/models", response_model=ModelInfoResponse, responses={k: errors[k] for k in (401, 503)})
    async def models() -> Any:
        """The loaded model: architecture table, labels and preprocessing."""
        if not state["ready"]:
            raise _ApiError(
                503, "not_ready", "the model is still loading", {"Retry-After": str(cfg.retry_after_s)}
            )
        from emovit.models import describe_model

        rec = state["rec"]
        info = describe_model(rec.model.path).to_dict()
        info.pop("path", None)
        info["name"] = rec.model.name if not os.path.isabs(rec.model.name) else PurePath(rec.model.name).name
        info["result_labels"] = list(rec.labels)
        info["detector"] = rec.detector.name
        info["backend"] = rec.backend.name
        return info

    @app.get("/livez", response_class=PlainTextResponse)
    async def livez() -> str:
        """The process is up."""
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> Response:
        """200 once the model has loaded and run a warm-up inference; 503 before and while shutting down."""
        if state["shutting_down"]:
            return PlainTextResponse("shutting down", status_code=503)
        if state["error"]:
            return PlainTextResponse("model failed to load", status_code=503)
        return PlainTextResponse(
            "ready" if state["ready"] else "loading", status_code=200 if state["ready"] else 503
        )

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> Response:
        """Prometheus metrics."""
        if state["batcher"] is not None:
            metrics.queue.set(state["batcher"].depth)
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    static = resources.files("emovit.serve").joinpath("static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static.joinpath("index.html")), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def _whole_image() -> Any:
    from emovit.faces import WholeImageDetector

    return WholeImageDetector()


def _request_schema() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                        },
                        "required": ["files"],
                    }
                },
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            },
        }
    }
