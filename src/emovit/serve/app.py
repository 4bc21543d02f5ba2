"""`create_app`: the FastAPI app over an `EmotionRecognizer` (routes, middleware, error handlers,
the loading thread and the drain at shutdown).

The app never writes uploads to disk and never logs them; errors are JSON
(``{"error": {"code", "message", "request_id"}}``) without tracebacks or server paths.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from emovit.serve.batcher import MicroBatcher
from emovit.serve.errors import install_error_handlers
from emovit.serve.middleware import ApiGateMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from emovit.serve.routes import router
from emovit.serve.settings import ServeSettings
from emovit.serve.state import ServeState

if TYPE_CHECKING:
    from emovit.predictor import EmotionRecognizer

__all__ = ["create_app"]

logger = logging.getLogger("emovit.serve")


def _load(recognizer: EmotionRecognizer | Callable[[], EmotionRecognizer], state: ServeState) -> None:
    """Build (if given a factory) and warm up the recognizer, start the model worker."""
    from emovit.faces import FaceOptions

    try:
        rec: EmotionRecognizer = (
            recognizer() if callable(recognizer) and not hasattr(recognizer, "predict") else recognizer  # type: ignore[assignment]
        )
        settings = state.settings
        batcher = MicroBatcher(
            rec.infer,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            on_batch=state.metrics.batch.observe,
        )
        warm = rec.prepare([np.full((64, 64, 3), 128, np.uint8)], faces=FaceOptions(detector="none"))
        rec.infer([warm])
        if state.shutting_down:  # stopped while loading: nobody would stop a worker started now
            logger.info("model loaded after shutdown began: not started")
            return
        batcher.start()
        state.set_ready(rec, batcher)
        logger.info("model loaded and warmed up: ready")
    except Exception as exc:  # noqa: BLE001 - reported by /readyz and one log line, never to clients
        state.error = f"{type(exc).__name__}: {exc}"
        logger.error("the model failed to load: %s", state.error)


def _add_request_models(app: FastAPI) -> None:
    """Put the JSON request body's models into the OpenAPI components: the predict route
    declares its body by hand (multipart or JSON), so FastAPI does not collect them itself,
    and its ``$ref`` pointed at nothing."""
    from emovit.serve.schemas import PredictRequest

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            found = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            models = {
                "PredictRequest": {k: v for k, v in found.items() if k != "$defs"},
                **found.get("$defs", {}),
            }
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model in models.items():
                components.setdefault(name, model)
            if app.state.emovit.settings.token:  # /docs gets its Authorize button, clients the scheme
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, operations in schema.get("paths", {}).items():
                    if path.startswith("/v1/"):
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    recognizer: EmotionRecognizer | Callable[[], EmotionRecognizer],
    settings: ServeSettings | None = None,
) -> FastAPI:
    """Build the app. `recognizer` may be a factory: it then loads in a background thread, and
    ``/readyz`` answers 503 until it has loaded and run one warm-up inference.

    Its `ServeState` is `get_state(app)`; `run_server` serves it with uvicorn.

    Examples:
        >>> app = create_app(EmotionRecognizer.from_pretrained("default"))  # doctest: +SKIP
        >>> run_server(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from emovit import __version__

    state = ServeState(settings=settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=_load, args=(recognizer, state), name="emovit-load", daemon=True)
        loader.start()
        yield
        state.begin_shutdown()
        # stopped while the model loads: let the loading end (it starts no worker now), so that
        # no inference is still running when the process exits (that aborted it)
        await asyncio.to_thread(loader.join, state.settings.drain_timeout_s)
        if state.batcher is not None:
            await asyncio.to_thread(state.batcher.stop, state.settings.drain_timeout_s)
        state.close()

    app = FastAPI(
        title="emovit",
        version=__version__,
        description="Facial emotion recognition: faces, boxes and per-emotion probabilities.",
        lifespan=lifespan,
        docs_url=None,  # emovit.serve.routes.api_docs: the same page, with a word for offline browsers
    )
    app.state.emovit = state
    install_error_handlers(app)
    app.include_router(router)
    _add_request_models(app)
    app.mount("/static", StaticFiles(directory=str(resources.files("emovit.serve").joinpath("static"))),
              name="static")  # fmt: skip
    # Added innermost first: requests pass RequestContext, CORS, ApiGate, BodyLimit, then the routes.
    app.add_middleware(BodyLimitMiddleware, state=state)
    app.add_middleware(ApiGateMiddleware, state=state)
    if state.settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=state.settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])  # fmt: skip
    app.add_middleware(RequestContextMiddleware, state=state)
    return app
