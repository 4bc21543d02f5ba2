"""Per-photo latency of detection + classification, per stage (issue: faces).

640x480 scenes with 1-4 FER2013 faces pasted on varied backgrounds; one photo at a time
(batch 1, the interactive case), default settings (YuNet, alignment on). Reports p50/p95 of
each stage (decode, detect, preprocess, inference) and of the whole call, in milliseconds.

Usage: python benchmarks/faces_latency.py [--model default] [--photos 40] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from emovit.bench import at_least_one, machine_info
from emovit.fileio import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))


def scenes(count: int, seed: int = 0) -> list[tuple[bytes, int]]:
    """JPEG-encoded 640x480 photos with 1-4 pasted faces, and their face counts."""
    rng = np.random.default_rng(seed)
    files = sorted((SHARED / "data" / "fer2013" / "test").rglob("*.jpg"))
    slots = [(30, 40), (190, 40), (350, 40), (480, 250), (40, 260), (260, 250)]
    out = []
    for k in range(count):
        y, x = np.mgrid[0:480, 0:640]
        canvas = np.stack([x / 640 * 255, y / 480 * 255, np.full_like(x, 90 + 40 * (k % 3))], -1).astype(
            np.uint8
        )
        faces = 1 + k % 4
        for sx, sy in [slots[i] for i in rng.permutation(len(slots))[:faces]]:
            side = int(rng.integers(100, 150))
            face = Image.open(files[int(rng.integers(len(files)))]).convert("RGB").resize((side, side))
            canvas[sy : sy + side, sx : sx + side] = np.asarray(face)
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, "JPEG", quality=90)
        out.append((buffer.getvalue(), faces))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--photos", type=at_least_one, default=40)
    parser.add_argument("--repeats", type=at_least_one, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "faces_latency.json")
    args = parser.parse_args()
    detector_model = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
    if not detector_model.is_file() or not (SHARED / "data" / "fer2013").is_dir():
        sys.exit(f"skipped: {SHARED} lacks the YuNet model or FER2013")

    from emovit import EmotionRecognizer
    from emovit.faces import FaceOptions

    faces = FaceOptions(detector="yunet", detector_model=detector_model)
    rec = EmotionRecognizer.from_pretrained(args.model, device="cpu", faces=faces)
    photos = scenes(args.photos)
    rec.predict([photos[0][0]])  # warm-up
    stages: dict[str, list[float]] = {
        "decode": [],
        "detect": [],
        "preprocess": [],
        "inference": [],
        "total": [],
    }
    found = expected = 0
    for _ in range(args.repeats):
        for data, faces in photos:
            start = time.perf_counter()
            (result,) = rec.predict([data], batch_size=1)
            stages["total"].append((time.perf_counter() - start) * 1e3)
            for stage in ("decode", "detect", "preprocess", "inference"):
                stages[stage].append(result.timings.get(stage, 0.0))
            found += len(result.faces)
            expected += faces

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 2)

    report = {
        "benchmark": "faces_latency",
        "model": args.model,
        "photos": args.photos,
        "repeats": args.repeats,
        "image_size": [640, 480],
        "faces_per_photo": "1-4",
        "faces_found_share": round(found / expected, 3),
        "latency_ms": {s: {"p50": pct(v, 50), "p95": pct(v, 95)} for s, v in stages.items()},
        "machine": machine_info(),
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
