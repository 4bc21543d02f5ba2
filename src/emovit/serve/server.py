"""`run_server`: uvicorn with the service's connection limits and a graceful SIGTERM drain.

On SIGTERM (or Ctrl-C) the app stops intake at once (``/v1/`` and ``/readyz`` answer 503),
uvicorn stops accepting connections and waits for the requests in flight, then the model
worker finishes its queue (``drain_timeout_s``) and the process exits.

Slow clients: a connection must deliver its request line and headers within
``header_timeout_s`` (else it is closed, with a 408 when part of them arrived), headers are
capped at ``max_header_bytes`` (431), idle keep-alive connections close after
``keep_alive_s``, and the app answers 408 to a body that has not arrived ``body_timeout_s``
after the request began.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from emovit.serve.state import ServeState, get_state

if TYPE_CHECKING:
    from fastapi import FastAPI

    from emovit.serve.settings import ServeSettings

__all__ = ["run_server"]

logger = logging.getLogger("emovit.serve")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _plain_response(status: str, text: str, code: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection (written straight to the socket), in
    the app's error shape with a request id (it was plain text, with no X-Request-ID)."""
    import json
    import uuid

    request_id = uuid.uuid4().hex
    body = json.dumps({"error": {"code": code, "message": text, "request_id": request_id}}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\nx-content-type-options: nosniff\r\n"
    )
    return head.encode() + b"connection: close\r\n\r\n" + body


class _HeadLimitsProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline and a strict size limit for each request's line
    and headers (its "head").

    uvicorn has no head deadline of its own: its keep-alive timer stops at the first byte, so a
    client sending one header byte every few seconds would hold a connection for ever. The
    deadline runs whenever the connection waits on the client with no request of the app in
    progress (before a request's head, or for the unread rest of an already answered request).
    h11's size limit only applies to heads still incomplete after a read; a complete one that
    arrives in one read (up to 64 KiB) passes it, so the size is checked here before h11."""

    header_timeout: float = 10.0
    max_header_bytes: int = 16 * 1024
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_size(data) > self.max_header_bytes:
            self._refuse(
                "431 Request Header Fields Too Large",
                "the request headers are too large",
                "headers_too_large",
            )
            return
        super().data_received(data)
        if not self._waiting_on_client():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self._waiting_on_client():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_size(self, data: bytes) -> int:
        pending = self.conn.trailing_data[0] + data
        end = pending.find(b"\r\n\r\n")
        return end + 4 if end >= 0 else len(pending)

    def _waiting_on_client(self) -> bool:
        return self.conn.their_state is h11.IDLE or self.conn.our_state in (h11.DONE, h11.MUST_CLOSE)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: str, text: str, code: str) -> None:
        """Answer `status` and close, when no request of the app is in progress."""
        if self.conn.our_state is h11.IDLE:
            self.transport.write(_plain_response(status, text, code))
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            logger.info("%s: %s: connection closed", client, text)
        self.transport.close()

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._waiting_on_client():
            return
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._refuse(
                "408 Request Timeout",
                f"request headers not received within {self.header_timeout:g} s",
                "header_timeout",
            )
        else:  # an idle connection, or the unread rest of an answered request
            self.transport.close()


class _DrainingServer(uvicorn.Server):
    """A uvicorn server that tells the app to stop intake the moment the signal arrives."""

    def __init__(self, config: uvicorn.Config, state: ServeState) -> None:
        super().__init__(config)
        self.emovit_state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.emovit_state.begin_shutdown()  # /readyz and /v1/ answer 503 while draining
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.emovit_state.error is not None:  # the model failed to load: never ready, so stop
            self.should_exit = True  # (a supervisor restarts or reports it; /livez would lie)
        return await super().on_tick(counter)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with emovit's own logger on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["emovit"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    # the multipart parser's warnings quote the client's bytes ("expected boundary character
    # 45, got 120") on stderr, outside the server's log: a malformed body is already the
    # client's 4xx, and nothing uploaded is logged
    config["loggers"]["python_multipart"] = {"handlers": [], "level": "CRITICAL", "propagate": False}
    return config


def run_server(
    app: FastAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    log_level: str = "info",
) -> None:
    """Serve `app` (from `create_app`) with uvicorn until SIGTERM or Ctrl-C, then drain; stop
    at once, raising `ModelLoadError`, when the model fails to load.

    Args:
        app: the app; its `ServeState` learns of the shutdown signal at once.
        host: the interface to bind (``0.0.0.0`` exposes it; a warning says so).
        port: the TCP port.
        settings: the connection limits (header time and size, keep-alive, connections, drain);
            default: the settings the app was built with.
        log_level: uvicorn's log level.

    Examples:
        >>> app = create_app(EmotionRecognizer.from_pretrained("default"))  # doctest: +SKIP
        >>> run_server(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    state = get_state(app)
    cfg = settings or state.settings
    limits = {"header_timeout": cfg.header_timeout_s, "max_header_bytes": cfg.max_header_bytes}
    protocol = type("HeadLimitsProtocol", (_HeadLimitsProtocol,), limits)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=cfg.keep_alive_s,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=cfg.max_header_bytes,
        limit_concurrency=cfg.max_connections,
        timeout_graceful_shutdown=math.ceil(cfg.drain_timeout_s) + 1,
        log_level=log_level,
        log_config=_log_config(),
        server_header=False,
    )
    if host not in _LOOPBACK:
        logger.warning("listening on %s: reachable from other machines", host)
    _DrainingServer(config, state).run()
    if state.error is not None:
        from emovit.errors import ModelLoadError

        raise ModelLoadError(f"the server stopped: the model failed to load ({state.error})")
