"""Helpers for tests that run real processes: free ports, `emovit serve` subprocesses, and
`emovit.serve.run_server` subprocesses (the server without the CLI in front)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import pytest

_LOGS: dict[int, IO[str]] = {}

# Serves `model` with run_server: argv = model, port, ServeSettings fields (JSON), FaceOptions fields (JSON).
_RUN_SERVER = """
import json, sys
from emovit import EmotionRecognizer
from emovit.faces import FaceOptions
from emovit.serve import ServeSettings, create_app, run_server

model, port, settings, faces = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
app = create_app(
    lambda: EmotionRecognizer.from_pretrained(model, device="cpu", faces=FaceOptions(**faces)),
    ServeSettings(**settings),
)
run_server(app, host="127.0.0.1", port=port)
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_log(proc: subprocess.Popen) -> str:
    """Everything a server started here wrote to stderr so far (its log)."""
    log = _LOGS[proc.pid]
    log.flush()
    log.seek(0)
    return log.read()


def _launch(cmd: list[str], port: int, what: str) -> tuple[subprocess.Popen, str]:
    # The log goes to a file, not a pipe: a chatty server must never block on a full pipe.
    log = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - read after the process ends
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    _LOGS[proc.pid] = log
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            break
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=1).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=30)
    pytest.fail(f"{what} did not become ready: {server_log(proc)[-3000:]}")


def start_server(model: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """Start `emovit serve` on a free port and wait until /readyz answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "emovit.cli", "serve", "--model", str(model), "--port", str(port), *extra]
    return _launch(cmd, port, "emovit serve")


def start_app_server(
    model: Path, *, faces: dict[str, Any] | None = None, **settings: Any
) -> tuple[subprocess.Popen, str]:
    """Serve `model` with `emovit.serve.run_server` (`settings`: `ServeSettings` fields,
    `faces`: `FaceOptions` fields, default no detector) and wait until /readyz answers 200."""
    port = free_port()
    face_options = json.dumps(faces if faces is not None else {"detector": "none"})
    cmd = [sys.executable, "-c", _RUN_SERVER, str(model), str(port), json.dumps(settings), face_options]
    return _launch(cmd, port, "run_server")
