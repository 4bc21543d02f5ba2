"""Server hygiene: request ids, JSON for every error (500 included), client disconnects, slow
clients (header and body deadlines, header size), in-process and against a real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient

from emovit import EmotionRecognizer
from emovit.serve import ServeSettings, create_app

from .servers import server_log, start_app_server

BOUNDARY = "emovitboundary"


def _png(seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def _multipart(data: bytes, name: str = "a.png") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


@pytest.fixture(scope="module")
def recognizer(tiny_model_dir: Path) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", detector="none")


@contextlib.contextmanager
def serving(rec: Any, **settings: Any) -> Iterator[TestClient]:
    app = create_app(rec, ServeSettings(**settings))
    with TestClient(app) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        yield client


def _call(
    app: Any, receive: Any, *, headers: list[tuple[bytes, bytes]] | None = None, path: str = "/v1/predict"
) -> list[dict]:
    """Run one POST `path` through the ASGI app with `receive`; the messages it sent."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return sent


def _status_and_body(sent: list[dict]) -> tuple[int, dict, dict[str, str]]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], json.loads(body), headers


class _Broken:
    """A recognizer whose prepare stage raises something unexpected on requests (named
    inputs), after a normal warm-up."""

    def __init__(self, rec: EmotionRecognizer) -> None:
        self._rec = rec

    def __getattr__(self, name: str) -> object:
        return getattr(self._rec, name)

    def prepare(self, *args: object, **kwargs: object) -> object:
        if kwargs.get("names") is None:
            return self._rec.prepare(*args, **kwargs)  # type: ignore[arg-type]
        raise RuntimeError("boom in /srv/secret/path")


class _Watched:
    """A recognizer that counts the video frames its runs have yielded."""

    def __init__(self, rec: EmotionRecognizer) -> None:
        self._rec, self.frames = rec, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._rec, name)

    def predict_video(self, *args: Any, **kwargs: Any) -> object:
        return _CountedRun(self._rec.predict_video(*args, **kwargs), self)


class _CountedRun:
    def __init__(self, run: Any, watched: _Watched) -> None:
        self._run, self._watched = run, watched

    def __getattr__(self, name: str) -> object:
        return getattr(self._run, name)

    def __iter__(self) -> Iterator[Any]:
        for frame in self._run:
            self._watched.frames += 1
            yield frame


# ---------------------------------------------------------------------------------- in-process


def test_every_response_has_a_request_id(recognizer: EmotionRecognizer) -> None:
    with serving(recognizer, token="s3cret") as client:
        seen = set()
        for response in (
            client.get("/"),
            client.get("/livez"),
            client.get("/readyz"),
            client.get("/metrics"),
            client.get("/static/app.js"),
            client.get("/no/such/page"),
            client.post("/v1/predict", files=[("files", ("a.png", _png(), "image/png"))]),
            client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}),
        ):
            seen.add(response.headers["x-request-id"])
        assert len(seen) == 8  # one per request
        echoed = client.get("/livez", headers={"X-Request-ID": "proxy-42.a:b"})
        assert echoed.headers["x-request-id"] == "proxy-42.a:b"
        replaced = client.get("/livez", headers={"X-Request-ID": "bad id\twith spaces"})
        assert replaced.headers["x-request-id"] != "bad id\twith spaces"


def test_a_request_cut_off_by_the_shutdown_gets_its_503_and_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the drain time is over uvicorn cancels what is still running: the client gets its
    503 shutting_down, and the middleware ends there; it raised the cancellation on, and uvicorn
    logged "Exception in ASGI application" with a traceback for each request cut off."""
    from emovit.serve.middleware import RequestContextMiddleware
    from emovit.serve.state import ServeState

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(60)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main() -> asyncio.Task[None]:
        app = RequestContextMiddleware(slow, ServeState())
        scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}
        task = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.05)
        task.cancel("Task cancelled, timeout graceful shutdown exceeded")
        await asyncio.wait([task])
        return task

    with caplog.at_level(logging.INFO, logger="emovit.serve"):
        task = asyncio.run(main())
    assert not task.cancelled() and task.exception() is None
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 503 and json.loads(body)["error"]["code"] == "shutting_down"
    assert "cut off by the shutdown" in caplog.text and "Traceback" not in caplog.text


def test_unknown_paths_and_methods_answer_json(recognizer: EmotionRecognizer) -> None:
    with serving(recognizer) as client:
        missing = client.get("/v1/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        wrong = client.get("/v1/predict")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
        assert wrong.json()["error"]["request_id"] == wrong.headers["x-request-id"]


def test_unexpected_error_is_a_json_500_with_its_id_in_the_log(
    recognizer: EmotionRecognizer, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(_Broken(recognizer)) as client, caplog.at_level(logging.INFO, logger="emovit.serve"):
        response = client.post("/v1/predict", files=[("files", ("a.png", _png(), "image/png"))])
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    request_id = response.headers["x-request-id"]
    assert error["code"] == "internal" and error["request_id"] == request_id
    assert "boom" not in response.text and "/srv" not in response.text and "Traceback" not in response.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and request_id in errors[0].getMessage()
    assert 'path="/v1/predict",status="500"' in client.app.state.emovit.metrics.render().decode()


def test_client_disconnect_mid_upload_is_one_info_line(
    recognizer: EmotionRecognizer, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        {"type": "http.request", "body": _multipart(_png())[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict:
        return messages.pop(0)

    with serving(recognizer) as client, caplog.at_level(logging.DEBUG):
        sent = _call(client.app, receive)
    assert sent == []  # nobody is left to answer: no 500 either
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    (line,) = [r for r in caplog.records if "disconnect" in r.getMessage()]
    assert line.levelno == logging.INFO and line.exc_info is None and line.name == "emovit.serve"


def test_slow_body_is_cut_off_with_408(recognizer: EmotionRecognizer) -> None:
    messages = [{"type": "http.request", "body": _multipart(_png())[:100], "more_body": True}]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(30)  # the rest never comes
        return {"type": "http.disconnect"}

    with serving(recognizer, body_timeout_s=0.3) as client:
        sent = _call(client.app, receive)
    status, body, headers = _status_and_body(sent)
    assert status == 408 and body["error"]["code"] == "body_timeout"
    assert headers["connection"] == "close" and body["error"]["request_id"] == headers["x-request-id"]


def test_video_uploads_have_their_own_body_timeout(recognizer: EmotionRecognizer) -> None:
    """One 30 s body timeout served photos and videos alike: a 100 MiB clip needed about
    28 Mbit/s. Videos now have their own (`video_body_timeout_s`, `--video-body-timeout`)."""

    def slow() -> Any:
        messages = [{"type": "http.request", "body": _multipart(_png())[:100], "more_body": True}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(30)
            return {"type": "http.disconnect"}

        return receive

    with serving(recognizer, body_timeout_s=60.0, video_body_timeout_s=0.3) as client:
        status, body, _ = _status_and_body(_call(client.app, slow(), path="/v1/video"))
    assert status == 408 and body["error"]["code"] == "body_timeout" and "0.3 s" in body["error"]["message"]


def test_a_clip_whose_client_left_is_not_analysed_to_the_end(
    recognizer: EmotionRecognizer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A clip's analysis ran to its end for nobody when the client had gone (the page's Cancel, a
    closed tab), holding the one video slot; it now stops after its batch (``client_gone``)."""
    pytest.importorskip("av")
    from .video_clips import background, write_clip

    clip = write_clip(tmp_path / "long.mp4", [background(48, 48, seed=i % 7) for i in range(150)])
    body = _multipart(clip.read_bytes(), "long.mp4")

    def client(stays: bool) -> Any:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            if stays:
                await asyncio.sleep(60)
            return {"type": "http.disconnect"}

        return receive

    watched = _Watched(recognizer)
    with serving(watched) as app_client, caplog.at_level(logging.INFO):
        status, answer, _ = _status_and_body(_call(app_client.app, client(True), path="/v1/video"))
        assert status == 200 and answer["summary"]["frames_analysed"] == watched.frames == 150
        assert 'reason="client_gone"' not in app_client.get("/metrics").text
        watched.frames = 0
        sent = _call(app_client.app, client(False), path="/v1/video")
        metrics = app_client.get("/metrics").text
    assert sent == [] and watched.frames < 150  # nobody to answer: stopped, not run to the end
    assert 'emovit_rejections_total{reason="client_gone"} 1.0' in metrics
    assert 'emovit_requests_total{path="/v1/video",status="499"} 1.0' in metrics
    assert any("the client left while its video was analysed" in r.getMessage() for r in caplog.records)
    assert not any("long.mp4" in r.getMessage() for r in caplog.records)  # nothing uploaded is logged


def test_streamed_body_over_the_limit_is_413(recognizer: EmotionRecognizer) -> None:
    """No Content-Length (chunked upload): the limit is counted as the body arrives."""
    chunks = [_multipart(bytes(3000))[i : i + 500] for i in range(0, 3000, 500)]

    async def receive() -> dict:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    with serving(recognizer, max_body_bytes=1200) as client:
        status, body, headers = _status_and_body(_call(client.app, receive))
    assert status == 413 and body["error"]["code"] == "body_too_large" and headers["connection"] == "close"


# ---------------------------------------------------------------------------------- real uvicorn


def _read_all(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (or `seconds` pass)."""
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.fixture(scope="module")
def live(tiny_model_dir: Path) -> Iterator[tuple[Any, str]]:
    proc, url = start_app_server(
        tiny_model_dir, header_timeout_s=1.0, body_timeout_s=1.0, keep_alive_s=1.0, max_header_bytes=4096
    )
    try:
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


@pytest.mark.slow
def test_slow_headers_are_cut_off(live: tuple[Any, str]) -> None:
    proc, url = live
    with _connect(url) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes

        def trickle() -> None:  # a header line every 0.5 s for 6 s must not keep it open
            with contextlib.suppress(OSError):
                for i in range(12):
                    time.sleep(0.5)
                    sock.sendall(b"X-Slow-%d: 1\r\n" % i)

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        answer = _read_all(sock, 10)
        closed = time.monotonic() - start
        sender.join()
    # the 1 s header timeout counts from the first byte: a timer each line restarted would
    # answer only after the trickle ends (6 s)
    assert answer.startswith(b"HTTP/1.1 408") and closed < 4, (answer, closed)
    assert b'"code": "header_timeout"' in answer and b"x-request-id: " in answer
    with _connect(url) as sock:  # a connection that never says anything is closed too
        assert _read_all(sock, 10) == b""
    assert "request headers not received within 1 s" in server_log(proc)


@pytest.mark.slow
def test_slow_body_and_big_headers_over_the_wire(live: tuple[Any, str]) -> None:
    _, url = live
    body = _multipart(_png())
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()
    with _connect(url) as sock:
        sock.sendall(head + body[:50])
        answer = _read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in answer, answer
    with _connect(url) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        refused = _read_all(sock, 10)  # the app's error shape with a request id (it was plain text)
        assert refused.startswith(b"HTTP/1.1 431") and b'"code": "headers_too_large"' in refused, refused
        assert b"x-request-id: " in refused and b"application/json" in refused
    with _connect(url) as sock:  # and a normal request on the same server still works
        sock.sendall(head + body)
        answer = _read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 200") and b"x-request-id" in answer.lower(), answer[:300]


@pytest.mark.slow
def test_disconnect_mid_upload_over_the_wire(live: tuple[Any, str]) -> None:
    proc, url = live
    body = _multipart(_png())
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()
    said = "disconnected before the request was read"
    before = server_log(proc).count(said)  # the server is the module's: count this test's line
    with _connect(url) as sock:
        sock.sendall(head + body[:50])
        time.sleep(0.2)
    for _ in range(50):
        if server_log(proc).count(said) > before:
            break
        time.sleep(0.1)
    log = server_log(proc)
    assert log.count(said) == before + 1, log[-2000:]
    assert "Traceback" not in log and "Exception in ASGI" not in log and '" 500' not in log, log[-3000:]


@pytest.mark.slow
def test_a_malformed_multipart_body_leaves_no_trace_of_its_bytes(live: tuple[Any, str]) -> None:
    """python-multipart's own warning quoted the client's bytes on the server's stderr."""
    proc, url = live
    body = b"xQz7-not-a-multipart-body"
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=X\r\nConnection: close\r\n\r\n"
    ).encode()
    with _connect(url) as sock:
        sock.sendall(head + body)
        answer = _read_all(sock, 10)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    time.sleep(0.3)
    log = server_log(proc)
    assert "Expected boundary" not in log and "got 120" not in log, log[-2000:]
