"""CLI throughput and pipeline parity on the reference architecture.

Builds the reference ViT-B/16-224 (dima806 config from ../shared, random weights), then:

* runs ``emovit predict`` as a user would on 100 FER2013 test images (JSONL output) and
  reports images/s over the whole command and over the classification alone;
* compares emovit's probabilities with ``transformers.pipeline("image-classification")`` on
  the same images (max |Δprob|).

Usage: python benchmarks/cli_throughput.py [--images 100] [--out benchmarks/results/cli_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emovit.bench import at_least_one, machine_info
from emovit.fileio import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))


def build_reference(out: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    fixture = SHARED / "fixtures" / "dima806-facial-emotions"
    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig.from_pretrained(fixture)).save_pretrained(out)
    shutil.copy(fixture / "preprocessor_config.json", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=at_least_one, default=100)
    parser.add_argument("--batch-size", type=at_least_one, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cli_throughput.json")
    args = parser.parse_args()
    test_dir = SHARED / "data" / "fer2013" / "test"
    if not test_dir.is_dir():
        sys.exit(f"skipped: {test_dir} is missing")
    images = sorted(test_dir.rglob("*.jpg"))[:: max(1, 3589 // args.images)][: args.images]

    with tempfile.TemporaryDirectory() as tmp:
        model = build_reference(Path(tmp) / "reference")
        listing = "\n".join(map(str, images))
        cmd = [sys.executable, "-m", "emovit.cli", "predict", "-", "--model", str(model)]
        cmd += ["--format", "jsonl", "--quiet", "--batch-size", str(args.batch_size), "--detector", "none"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, input=listing, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - start
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        classify_s = sum(sum(r["timings_ms"].values()) for r in rows) / 1e3

        from PIL import Image
        from transformers import pipeline

        from emovit import EmotionRecognizer

        rec = EmotionRecognizer.from_pretrained(model, device="cpu", detector="none")
        ours = rec.predict(images)
        classifier = pipeline("image-classification", model=str(model), device="cpu")
        worst = 0.0
        for path, result in zip(images, ours, strict=True):
            theirs = {d["label"]: d["score"] for d in classifier(Image.open(path).convert("RGB"), top_k=7)}
            worst = max(worst, max(abs(result.probs[k] - v) for k, v in theirs.items()))

    report = {
        "benchmark": "cli_throughput",
        "model": "reference architecture (dima806 config, random weights)",
        "images": len(rows),
        "batch_size": args.batch_size,
        "ok": sum(r["ok"] for r in rows),
        "command_wall_s": round(wall, 2),
        "command_images_per_s": round(len(rows) / wall, 2),
        "classification_s": round(classify_s, 2),
        "classification_images_per_s": round(len(rows) / classify_s, 2),
        "pipeline_parity_max_abs_prob_diff": worst,
        "machine": machine_info(),
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
