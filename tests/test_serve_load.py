"""A bounded load test on loopback against a real uvicorn process (`run_server`), and graceful shutdown."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .servers import server_log, start_app_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow

CLIENTS = 16
SECONDS = float(os.environ.get("EMOVIT_LOAD_SECONDS", "10"))


def _start(model: Path, **settings: object) -> tuple[subprocess.Popen, str]:
    return start_app_server(model, faces={"detector": "none"}, **settings)


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    return buffer.getvalue()


def _hammer(
    url: str,
    seconds: float,
    statuses: Counter,
    lock: threading.Lock,
    failures: list[str],
    mine: Counter | None = None,
) -> None:
    """Post photos until `seconds` pass, counting the answers' statuses (`mine`: this client's)."""
    data = _jpeg()
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                response = client.post(f"{url}/v1/predict", files={"files": ("f.jpg", data, "image/jpeg")})
            except httpx.HTTPError as exc:
                failures.append(f"{time.monotonic():.3f} {type(exc).__name__}: {exc}")
                continue
            with lock:
                statuses[response.status_code] += 1
            if mine is not None:
                mine[response.status_code] += 1
            if response.status_code == 200:
                (result,) = response.json()["results"]
                if len(result["faces"]) != 1 or not result["timings_ms"].get("inference", 0) > 0:
                    failures.append(f"a 200 without its face or inference time: {result}")


def test_sixteen_clients(tiny_model_dir: Path) -> None:
    proc, url = _start(tiny_model_dir, max_queue=8)
    statuses: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    clients = [Counter() for _ in range(CLIENTS)]
    try:
        threads = [
            threading.Thread(target=_hammer, args=(url, SECONDS, statuses, lock, failures, mine))
            for mine in clients
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert failures == []
    assert all(mine[200] >= 1 for mine in clients), clients  # every client was served, none starved
    assert set(statuses) <= {200, 503}, statuses  # no 5xx but deliberate overload rejections
    assert "emovit_batch_faces_count" in metrics


def test_sigterm_drains_in_flight_requests(tiny_model_dir: Path) -> None:
    proc, url = _start(tiny_model_dir, drain_timeout_s=10)
    statuses: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_hammer, args=(url, 3.0, statuses, lock, failures)) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    sigterm_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    # uvicorn shuts down gracefully, then re-raises the signal: -15 is its normal exit here
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    log = server_log(proc)
    assert "Application shutdown complete" in log, log[-2000:]
    assert "shutting down: new requests are refused" in log  # the signal reached the app at once
    assert "Traceback" not in log, log[-3000:]
    assert statuses[200] > 0
    # Requests either completed or were refused cleanly once intake stopped (no half answers).
    assert set(statuses) <= {200, 503}, statuses
    # Connections fail only once intake has stopped (refused, or an idle keep-alive closed by
    # the server): no request was lost before the signal.
    assert all(float(f.split()[0]) >= sigterm_at for f in failures), failures
