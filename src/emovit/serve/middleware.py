"""The service's middleware, outermost first (all plain ASGI, no per-request tasks):

* `RequestContextMiddleware`: a request id for every request (``X-Request-ID``), security
  headers, request metrics, and the last line of defence: an exception that escapes the app
  becomes a JSON 500 naming the request id (logged once, with that id), and a client that
  disconnects mid-upload (or leaves while its video is analysed) one info line;
* (CORS, when origins are configured);
* `ApiGateMiddleware`: ``/v1/`` refuses new requests while shutting down (503) and checks
  the bearer token (401);
* `BodyLimitMiddleware`: bodies over the size limit answer 413, bodies that do not arrive
  within the time limit 408 (both close the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import uuid
from typing import TYPE_CHECKING

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect

from emovit.serve.errors import ApiError, error_response, request_id_of

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from emovit.serve.state import ServeState

__all__ = ["ApiGateMiddleware", "BodyLimitMiddleware", "RequestContextMiddleware"]

logger = logging.getLogger("emovit.serve")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_API_PATHS = ("/v1/predict", "/v1/video", "/v1/models")
_INCOMING_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_CLOSE = {"Connection": "close"}


def route_path(scope: Scope) -> str:
    """The path the app routes on: without the ``root_path`` a proxy prefix adds (uvicorn's
    ``--root-path`` puts it in ``scope["path"]`` too; the gates must see what the routes see)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _is_page(path: str) -> bool:
    return path in ("/", "/index.html") or path.startswith("/static/")


def _request_id(scope: Scope) -> str:
    """The client's (or proxy's) X-Request-ID when it is a plain token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _INCOMING_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Request id, security headers, metrics, and JSON for whatever escapes the app."""

    def __init__(self, app: ASGIApp, state: ServeState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        method, path = scope["method"], route_path(scope)
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                if _is_page(path):
                    headers["Content-Security-Policy"] = CSP
                elif path.startswith("/v1/"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect as gone:  # reading the body, or a route that saw it (`_stop_when_gone`)
            status = 499  # nginx's "client closed request": nobody is left to answer
            why = str(gone) or "the client disconnected before the request was read"
            logger.info("request %s: %s %s: %s", request_id, method, path, why)
        except ApiError as problem:  # raised outside a route (e.g. while a middleware read the body)
            if status == 0:
                await problem.response(request_id)(scope, receive, send_with_headers)
        except asyncio.CancelledError:  # the server stopped waiting for it (shutdown's last step)
            if status == 0:
                retry = {"Retry-After": str(self.state.settings.retry_after_s), **_CLOSE}
                stopping = ApiError(
                    503, "shutting_down", "the server shut down before the answer was ready", retry
                )
                with contextlib.suppress(Exception):
                    await stopping.response(request_id)(scope, receive, send_with_headers)
                status = 503
            # the drain time is over and the client has its answer: a planned stop, not an error
            # (raised on, uvicorn logged "Exception in ASGI application" and a traceback for each)
            logger.info(
                "request %s: %s %s: cut off by the shutdown (drain time over)", request_id, method, path
            )
        except Exception:
            logger.exception("request %s: %s %s failed with an unexpected error", request_id, method, path)
            if status == 0:
                message = f"an unexpected error; quote request id {request_id} when reporting it"
                response = error_response(500, "internal", message, request_id, _CLOSE)
                await response(scope, receive, send_with_headers)
            else:  # the answer had started: all that is left is to cut it short
                status = 500
        finally:
            label = path if path in _API_PATHS else "other"
            self.state.metrics.requests.labels(label, str(status or 500)).inc()


class ApiGateMiddleware:
    """``/v1/``: 503 while shutting down, 401 without the bearer token (when one is set)."""

    def __init__(self, app: ASGIApp, state: ServeState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope).startswith("/v1/"):
            problem = self._problem(scope)
            if problem is not None:
                await problem.response(request_id_of(scope))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> ApiError | None:
        settings = self.state.settings
        if self.state.shutting_down:
            self.state.metrics.rejections.labels("shutting_down").inc()
            return ApiError(503, "shutting_down", "the server is shutting down",
                            {"Retry-After": str(settings.retry_after_s), **_CLOSE})  # fmt: skip
        if settings.token:
            header = dict(scope["headers"]).get(b"authorization", b"")  # the bytes as sent
            scheme, _, rest = header.partition(b" ")
            given = rest.strip(b" ") if scheme.lower() == b"bearer" else b""  # RFC 7235: 1*SP between
            if not hmac.compare_digest(given, settings.token.encode("utf-8")):
                self.state.metrics.rejections.labels("unauthorized").inc()
                return ApiError(401, "unauthorized", "a valid bearer token is required",
                                {"WWW-Authenticate": "Bearer", **_CLOSE})  # fmt: skip
        return None


class BodyLimitMiddleware:
    """413 for a body over `max_body_bytes` (declared, or counted as it arrives), 408 for one
    that has not fully arrived `body_timeout_s` after the request began (``/v1/video``:
    `max_video_bytes` and `video_body_timeout_s`)."""

    def __init__(self, app: ASGIApp, state: ServeState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings, metrics = self.state.settings, self.state.metrics
        video = route_path(scope) == "/v1/video"
        limit = settings.max_video_bytes if video else settings.max_body_bytes
        timeout = settings.video_body_timeout_s if video else settings.body_timeout_s
        too_large = ApiError(
            413, "body_too_large", f"request body over {limit / 2**20:.3g} MiB ({limit:,} bytes)", _CLOSE
        )
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            metrics.rejections.labels("body_too_large").inc()
            await too_large.response(request_id_of(scope))(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        received, complete = 0, False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                metrics.rejections.labels("body_timeout").inc()
                raise ApiError(408, "body_timeout",
                               f"the request body did not arrive within {timeout:g} s",
                               _CLOSE) from None  # fmt: skip
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    metrics.rejections.labels("body_too_large").inc()
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)
