"""What an explanation costs: ``emovit explain`` against ``emovit predict --backend torch`` on the
same images, end to end (process start, model load, decode, detection, model, files).

Workloads:

* ``photos``: copies of examples/astronaut.jpg (a 512x512 photo), YuNet detection;
* ``faces``: FER2013 test faces (48x48, pre-cropped), ``--detector none``;
* ``reference`` (``--reference``): the reference ViT-B/16-224 architecture (dima806 config,
  random weights) on FER2013 faces, where the model dominates the cost.

The two commands run alternately, ``--repeats`` times each; the report gives each one's
median wall time, side by side, and the ratio explain / predict (the issue asks for at most 3).

Usage: python benchmarks/bench_explain.py [--faces 100] [--photos 20] [--repeats 3] [--reference]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emovit.bench import at_least_one, machine_info
from emovit.explain import SMOOTHGRAD_SAMPLES

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"


def run(cmd: list[str]) -> float:
    """The wall time of one command; a command that could not run (exit 2 or more: a bad
    option, an internal error) stops the benchmark (exit 1 is some inputs failing)."""
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode >= 2:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def compare(
    name: str, inputs: list[str], common: list[str], repeats: int, out: Path, method: str = "auto"
) -> dict[str, object]:
    """Median wall time of predict (torch) and explain over the same inputs, alternating."""
    base = [sys.executable, "-m", "emovit.cli"]
    predict = [
        *base,
        "predict",
        *inputs,
        "--backend",
        "torch",
        "--format",
        "jsonl",
        "-o",
        str(out / "rows.jsonl"),
    ]
    explain = [*base, "explain", *inputs, "-o", str(out / "maps"), "--method", method]
    times: dict[str, list[float]] = {"predict": [], "explain": []}
    for _ in range(repeats):
        times["predict"].append(run([*predict, *common, "--quiet"]))
        times["explain"].append(run([*explain, *common, "--quiet"]))
    files = len(list((out / "maps").glob("*.png")))
    if not files:  # a time for explaining nothing is no figure
        sys.exit(f"{name}: explain wrote no map ({' '.join(explain)})")
    shutil.rmtree(out / "maps", ignore_errors=True)
    medians = {key: statistics.median(value) for key, value in times.items()}
    row = {
        "workload": name,
        "images": len(inputs),
        "faces_explained": files,
        "predict_torch_s": round(medians["predict"], 2),
        "explain_s": round(medians["explain"], 2),
        "ratio": round(medians["explain"] / medians["predict"], 2),
        "runs_s": {key: [round(v, 2) for v in value] for key, value in times.items()},
        "options": " ".join(common),
        "method": method,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--faces", type=at_least_one, default=100)
    parser.add_argument("--photos", type=at_least_one, default=20)
    parser.add_argument("--repeats", type=at_least_one, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--method", default="auto", help="the default model's method (auto: smoothgrad)")
    parser.add_argument("--reference", action="store_true", help="also the ViT-B/16 reference architecture")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_explain.json")
    args = parser.parse_args()
    test_dir = SHARED / "data" / "fer2013" / "test"
    if not test_dir.is_dir():
        sys.exit(f"skipped: {test_dir} is missing")
    faces = [str(p) for p in sorted(test_dir.rglob("*.jpg"))[:: max(1, 3589 // args.faces)][: args.faces]]
    threads = ["--threads", str(args.threads)] if args.threads else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = []
        for i in range(args.photos):
            photos.append(str(shutil.copy(REPO / "examples" / "astronaut.jpg", work / f"photo{i}.jpg")))
        if YUNET.is_file() and photos:
            detector = ["--detector", "yunet", "--detector-model", str(YUNET)]
            rows.append(compare("photos", photos, [*detector, *threads], args.repeats, work, args.method))
        rows.append(
            compare("faces", faces, ["--detector", "none", *threads], args.repeats, work, args.method)
        )
        if args.reference:
            import torch
            from transformers import ViTConfig, ViTForImageClassification

            fixture = SHARED / "fixtures" / "dima806-facial-emotions"
            torch.manual_seed(0)
            reference = work / "reference"
            ViTForImageClassification(ViTConfig.from_pretrained(fixture)).save_pretrained(reference)
            shutil.copy(fixture / "preprocessor_config.json", reference)
            common = ["--model", str(reference), "--detector", "none", *threads]
            rows.append(compare("reference", faces[:20], common, args.repeats, work))
    report = {
        "benchmark": "bench_explain",
        "what": "emovit explain vs emovit predict --backend torch, end to end, median wall time",
        "model": f"default (MobileViT, 1.97 M parameters, 64 px; explain --method {args.method}: "
        "auto means smoothgrad, "
        f"{SMOOTHGRAD_SAMPLES} samples); reference: ViT-B/16-224 with random weights (explain: grad-rollout)",
        "repeats": args.repeats,
        "results": rows,
        "worst_ratio": max(row["ratio"] for row in rows),  # type: ignore[type-var]
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
