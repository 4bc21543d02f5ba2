"""Helpers for tests that run real processes: free ports and `emovit serve` subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """Start `emovit serve` on a free port and wait until /readyz answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "emovit.cli", "serve", "--model", str(model), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if proc.poll() is not None:
            break
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=1).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"emovit serve did not become ready: {proc.stderr.read()[-3000:]}")
