"""Find the face margin whose YuNet crops best reproduce FER2013's own framing.

FER2013 faces are tight 48x48 crops. To learn which ``--margin`` makes `emovit predict`
crop a photo the way FER2013 was cropped, each face is scaled up and pasted into a larger
canvas (plain, noise or gradient background), YuNet detects it, and the square crop that
the predictor would take at each margin is compared with where the face was pasted:
intersection over union of the two squares and the pixel error of the crop against the
pasted face (both at 48x48). Only the train and validation splits are used (never test).

Usage:
    python scripts/find_framing.py ../shared/data/fer2013 \
        --yunet ../shared/models/face_detection_yunet_2023mar.onnx -o docs/reports/framing

Writes ``framing.json`` (per margin: mean IoU, mean pixel error, detection rate) and
``framing.png`` (both curves), and prints the best margin.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emovit.data import read_samples
from emovit.faces import YuNetDetector, crop_face
from emovit.fileio import write_text_atomic
from emovit.imageio import load_image

# defaults are found from the repository, wherever the script is started
REPO = Path(__file__).resolve().parents[1]

MARGINS = np.round(np.arange(-0.3, 0.501, 0.025), 3)
CANVAS = (480, 640)  # height, width


def _background(kind: int, rng: np.random.Generator) -> np.ndarray:
    height, width = CANVAS
    if kind == 0:  # plain
        return np.full((height, width, 3), rng.integers(0, 256), np.uint8)
    if kind == 1:  # noise
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ramp = np.linspace(rng.integers(0, 128), rng.integers(128, 256), width)  # gradient
    return np.repeat(np.repeat(ramp[None, :, None], height, 0), 3, 2).astype(np.uint8)


def _paste(face: np.ndarray, kind: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    from PIL import Image

    side = int(rng.integers(96, 260))
    big = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR))
    canvas = _background(kind, rng)
    top = int(rng.integers(0, CANVAS[0] - side))
    left = int(rng.integers(0, CANVAS[1] - side))
    canvas[top : top + side, left : left + side] = big
    return canvas, (left, top, side)


def _square(det_box: tuple[float, ...], margin: float) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = det_box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def measure(data: Path, yunet: Path, count: int, seed: int) -> dict[str, object]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    samples = read_samples(data, "train") + read_samples(data, "validation")
    pick = rng.choice(len(samples), size=min(count, len(samples)), replace=False)
    detector = YuNetDetector(yunet)
    ious = {float(m): [] for m in MARGINS}
    errors = {float(m): [] for m in MARGINS}
    detected = 0
    for n, i in enumerate(pick):
        face = load_image(samples[i].source)
        canvas, (left, top, side) = _paste(face, n % 3, rng)
        found = detector.detect(canvas)
        if not found:
            continue
        best = max(found, key=lambda d: d.width * d.height)
        detected += 1
        truth = (left, top, left + side, top + side)
        reference = face[..., 0].astype(np.float64)
        for margin in MARGINS:
            ious[float(margin)].append(_iou(_square(best.box, float(margin)), truth))
            crop = crop_face(canvas, best, margin=float(margin), align=False)
            small = np.asarray(Image.fromarray(crop).convert("L").resize((48, 48), Image.Resampling.BILINEAR))
            errors[float(margin)].append(float(np.abs(small.astype(np.float64) - reference).mean()))
    rows = [
        {
            "margin": float(m),
            "mean_iou": float(np.mean(ious[float(m)])) if ious[float(m)] else 0.0,
            "mean_abs_pixel_error": float(np.mean(errors[float(m)])) if errors[float(m)] else 0.0,
        }
        for m in MARGINS
    ]
    best_iou = max(rows, key=lambda r: r["mean_iou"])
    best_pixels = min(rows, key=lambda r: r["mean_abs_pixel_error"])
    return {
        "images": len(pick),
        "detected": detected,
        "detection_rate": detected / len(pick),
        "splits": ["train", "validation"],
        "seed": seed,
        "backgrounds": ["plain", "noise", "gradient"],
        "face_side_px": [96, 260],
        "best_margin_iou": best_iou["margin"],
        "best_margin_pixels": best_pixels["margin"],
        "rows": rows,
    }


def plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    assert isinstance(rows, list)
    margins = [r["margin"] for r in rows]
    fig, left = plt.subplots(figsize=(6.4, 4), dpi=110)
    left.plot(
        margins, [r["mean_iou"] for r in rows], "o-", color="tab:blue", label="IoU with FER2013 framing"
    )
    left.set_xlabel("--margin (fraction of the detector's box)")
    left.set_ylabel("mean IoU", color="tab:blue")
    right = left.twinx()
    right.plot(margins, [r["mean_abs_pixel_error"] for r in rows], "s--", color="tab:red")
    right.set_ylabel("mean |pixel error| at 48x48", color="tab:red")
    left.set_title(f"YuNet crops vs FER2013 framing ({report['detected']} faces)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the FER2013 ImageFolder tree")
    parser.add_argument("--yunet", type=Path, required=True, help="YuNet 2023mar ONNX file")
    parser.add_argument(
        "--count",
        type=int,
        default=600,
        help="faces to paste (train + validation; 600: the committed report)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs/reports/framing")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    report = measure(args.data, args.yunet, args.count, args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.output / "framing.json", json.dumps(report, indent=2) + "\n")
    plot(report, args.output / "framing.png")
    print(
        f"detected {report['detected']}/{report['images']}; best margin by IoU {report['best_margin_iou']}, "
        f"by pixel error {report['best_margin_pixels']}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    from emovit.errors import script_exit

    sys.exit(script_exit(main))
