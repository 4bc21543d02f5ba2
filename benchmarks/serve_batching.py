"""Service throughput with micro-batching on vs off, 16 concurrent clients (issue: service).

Starts `emovit serve` on loopback with the reference architecture (ViT-B/16-224, random
weights from ../shared) twice per round, batching on (--max-batch 16) and off
(--max-batch 1), interleaved for --rounds rounds; each run lets 16 clients post one 224x224
face for --seconds. Reports answered requests/s, p50/p95 latency and the on/off ratio (median
over rounds) to benchmarks/results/serve_batching.json.

Usage: python benchmarks/serve_batching.py [--seconds 20] [--rounds 2] [--clients 16]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from emovit.bench import at_least_one, machine_info
from emovit.fileio import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(model: Path, batching: bool, clients: int, seconds: float, image: bytes) -> dict[str, float]:
    import httpx

    port = free_port()
    flags = (
        ["--max-batch", "16", "--max-wait-ms", "20"]
        if batching
        else ["--max-batch", "1", "--max-wait-ms", "0"]
    )
    cmd = [sys.executable, "-m", "emovit.cli", "serve", "--model", str(model), "--port", str(port),
           "--detector", "none", "--max-queue", "64", "--deadline", "120", *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{url}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                if proc.poll() is not None:
                    sys.exit(
                        f"the server exited (code {proc.returncode}) before it was ready: {' '.join(cmd)}"
                    )
                time.sleep(0.1)
        else:  # no figures of a server that never answered
            sys.exit(f"the server was not ready within 60 s: {' '.join(cmd)}")
        latencies: list[float] = []
        codes: list[int] = []
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def client() -> None:
            with httpx.Client(timeout=180) as http:
                while time.monotonic() < stop:
                    start = time.perf_counter()
                    response = http.post(f"{url}/v1/predict", files={"files": ("f.jpg", image, "image/jpeg")})
                    with lock:
                        codes.append(response.status_code)
                        if response.status_code == 200:
                            latencies.append(time.perf_counter() - start)

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "answered_per_s": len(latencies) / elapsed,
        "latency_p50_s": float(np.percentile(latencies, 50)) if latencies else float("nan"),
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else float("nan"),
        "non_200": sum(c != 200 for c in codes),
        "server_errors_other_than_503": sum(c >= 500 and c != 503 for c in codes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=at_least_one, default=2)
    parser.add_argument("--clients", type=at_least_one, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_batching.json")
    args = parser.parse_args()
    fixture = SHARED / "fixtures" / "dima806-facial-emotions"
    if not fixture.is_dir():
        sys.exit(f"skipped: {fixture} is missing")
    import torch
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "reference"
        torch.manual_seed(0)
        ViTForImageClassification(ViTConfig.from_pretrained(fixture)).save_pretrained(model)
        shutil.copy(fixture / "preprocessor_config.json", model)
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(
            buffer, "JPEG"
        )
        runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for rnd in range(args.rounds):
            for mode in ("on", "off"):
                print(f"round {rnd + 1}: batching {mode}", file=sys.stderr, flush=True)
                runs[mode].append(run(model, mode == "on", args.clients, args.seconds, buffer.getvalue()))
    median = {mode: statistics.median(r["answered_per_s"] for r in rs) for mode, rs in runs.items()}
    report = {
        "benchmark": "serve_batching",
        "model": "reference architecture (ViT-B/16-224, random weights)",
        "clients": args.clients,
        "seconds_per_run": args.seconds,
        "rounds": args.rounds,
        "answered_per_s_median": median,
        "ratio_on_vs_off": median["on"] / median["off"] if median["off"] else None,
        "runs": runs,
    }
    report["machine"] = machine_info()
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("answered_per_s_median", "ratio_on_vs_off")}, indent=2))


if __name__ == "__main__":
    main()
