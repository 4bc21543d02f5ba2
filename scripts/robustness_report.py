"""Robustness report: accuracy under the degradations real photos bring, on FER+ and FER2013.

For each model, every FER2013 test face (`--split`) is scored clean and under each perturbation
(downscale x0.5 / x0.25 and back, Gaussian blur, JPEG quality 30, rotation +-15 degrees, crop
shift +-10 %, brightness +-40 %), against FER2013's labels and FER+'s majority labels; and on
composites: the same faces pasted into larger scenes (plain, noise and gradient backgrounds),
found by YuNet and cropped the way `emovit predict` crops them (the model's own framing).
Everything goes through the predictor. The test split is only reported here, never used to
choose anything.

Usage:
    python scripts/robustness_report.py --model default --model runs/default/ferplus \\
        --data ../shared/data/fer2013 --labels ../shared/data/ferplus/labels.csv \\
        --yunet ../shared/models/face_detection_yunet_2023mar.onnx -o docs/reports/robustness

``--name`` gives each model its column's name (in order; default: the model as given), e.g.
``--name before --name after``; with ``--reuse``, a model whose name and weights (sha256) the
output folder's ``robustness.json`` already holds, measured with the same settings (data, split,
labels, composites, limit) and framing, is taken from there instead of measured again.

Writes ``robustness.json`` and ``robustness.md`` (one table: rows are conditions, columns are
models x label sets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from emovit.data import (
    canonical_split,
    find_leaks,
    list_splits,
    majority_label,
    read_samples,
    read_vote_labels,
    sample_votes,
)
from emovit.data.perturb import PERTURBATIONS
from emovit.faces import FaceOptions
from emovit.fileio import sha256_of, write_report
from emovit.imageio import load_images
from emovit.predictor import EmotionRecognizer

# defaults are found from the repository, wherever the script is started
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))


def _composite(face: np.ndarray, index: int, rng: np.random.Generator) -> np.ndarray:
    height, width = 480, 640
    kind = index % 3
    if kind == 0:
        canvas = np.full((height, width, 3), rng.integers(0, 256), np.uint8)
    elif kind == 1:
        canvas = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        ramp = np.linspace(rng.integers(0, 128), rng.integers(128, 256), width)
        canvas = np.repeat(np.repeat(ramp[None, :, None], height, 0), 3, 2).astype(np.uint8)
    side = int(rng.integers(96, 240))
    big = np.asarray(Image.fromarray(face).resize((side, side), Image.BILINEAR))
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    canvas[top : top + side, left : left + side] = big
    return canvas


def _leaked(data: Path, split: str, samples: list) -> set[int]:
    """The indices of `samples` with an exact or near copy in the splits that trained or chose
    the models (train; and validation, for the test split)."""
    references = [s for s in ("train", "validation") if s in list_splits(data) and s != split]
    if split == "validation":
        references = ["train"]
    reference = [sample for name in references for sample in read_samples(data, name)]
    return find_leaks(samples, reference) if reference else set()


def _both_scores(
    predicted: list[str | None], fer: list[str | None], ferplus: list[str | None], leaked: set[int]
) -> dict[str, object]:
    """FER2013 and FER+ scores of one condition, on every image and leak-free (without the
    images that have a copy in the training or selection splits)."""
    keep = [i for i in range(len(predicted)) if i not in leaked]
    pick = lambda values: [values[i] for i in keep]  # noqa: E731
    return {
        "fer2013": _scores(predicted, fer),
        "ferplus": _scores(predicted, ferplus),
        "leak_free": {
            "fer2013": _scores(pick(predicted), pick(fer)),
            "ferplus": _scores(pick(predicted), pick(ferplus)),
        },
    }


def _scores(predicted: list[str | None], truth: list[str | None]) -> dict[str, float]:
    from emovit.evaluation import macro_f1

    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if t is not None]
    y_true = [t for t, _ in pairs]
    y_pred = [p if p is not None else "none" for _, p in pairs]
    return {
        "images": len(pairs),
        "accuracy": float(np.mean([t == p for t, p in zip(y_true, y_pred, strict=True)])),
        "macro_f1": macro_f1(y_true, y_pred),
    }


def measure(
    model: str,
    data: Path,
    labels: Path,
    yunet: Path | None,
    limit: int | None,
    name: str | None = None,
    split: str = "test",
) -> dict[str, object]:
    split = canonical_split(split)  # recorded as train / validation / test (the choice checks it)
    samples = read_samples(data, split)
    if limit and limit < len(samples):
        # a fixed random subset, in the split's order: the first N were all one class (folder order)
        keep = np.random.default_rng(0).choice(len(samples), size=limit, replace=False)
        samples = [samples[i] for i in sorted(keep)]
    votes = read_vote_labels(labels)
    fer = [s.label for s in samples]
    ferplus = [majority_label(row) for row in sample_votes(samples, votes)]
    images = load_images([s.source for s in samples])
    leaked = _leaked(data, split, samples)
    rec = EmotionRecognizer.from_pretrained(model, detector="none", batch_size=256)
    out: dict[str, object] = {
        "model": name or model,
        "path": model,
        "settings": _settings(data, labels, yunet, limit, split),
        "weights_sha256": _sha256(rec.model.path),
        "framing": rec.model.framing.to_dict(),
        "leaks_excluded": len(leaked),
        "conditions": {},
    }
    conditions: dict[str, object] = {}
    for name, perturb in PERTURBATIONS.items():
        batch = images if perturb is None else [perturb(image, i) for i, image in enumerate(images)]
        predicted = [r.label for r in rec.predict(batch)]
        conditions[name] = _both_scores(predicted, fer, ferplus, leaked)
        print(f"{model}: {name}: {conditions[name]}", file=sys.stderr)
    if yunet is not None:
        detect = EmotionRecognizer.from_pretrained(
            model, faces=FaceOptions(detector="yunet", detector_model=yunet), batch_size=32
        )
        rng = np.random.default_rng(0)
        scenes = (_composite(image, i, rng) for i, image in enumerate(images))
        predicted = [r.label for r in detect.stream(scenes)]
        found = sum(p is not None for p in predicted)
        conditions["composite (YuNet, model framing)"] = {
            **_both_scores(predicted, fer, ferplus, leaked),
            "detected": found / len(predicted),
        }
        print(f"{model}: composite: {conditions['composite (YuNet, model framing)']}", file=sys.stderr)
    out["conditions"] = conditions
    return out


def _settings(
    data: Path, labels: Path, yunet: Path | None, limit: int | None, split: str
) -> dict[str, object]:
    """What a measurement depends on besides the model (a reused one must match all of it)."""
    return {
        "data": Path(data).name,
        "split": split,
        "labels": Path(labels).name,
        "composites": yunet is not None,
        "limit": limit,
        "leak_free": True,  # measured with the leak-free scores too
    }


def _sha256(folder: object) -> str | None:
    weights = Path(str(folder)) / "model.safetensors"
    return sha256_of(weights) if weights.is_file() else None


def markdown(reports: list[dict[str, object]]) -> str:
    names = [str(r["model"]) for r in reports]
    leak_free = all("leak_free" in c for r in reports for c in r["conditions"].values())  # type: ignore[attr-defined]
    per_model = ["FER+ acc / F1", "FER2013 acc", *(["leak-free FER+ acc / F1"] if leak_free else [])]
    head = "| condition | " + " | ".join(f"{n} {what}" for n in names for what in per_model) + " |"
    lines = [head, "|---|" + "---|" * len(per_model) * len(names)]
    first = reports[0]["conditions"]
    assert isinstance(first, dict)
    for condition in first:
        cells = []
        for report in reports:
            conditions = report["conditions"]
            assert isinstance(conditions, dict)
            if condition not in conditions:
                cells.append(" | ".join(["-"] * len(per_model)))
                continue
            plus, fer = conditions[condition]["ferplus"], conditions[condition]["fer2013"]
            cell = f"{plus['accuracy']:.3f} / {plus['macro_f1']:.3f} | {fer['accuracy']:.3f}"
            if leak_free:
                clean = conditions[condition]["leak_free"]["ferplus"]
                cell += f" | {clean['accuracy']:.3f} / {clean['macro_f1']:.3f}"
            cells.append(cell)
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    notes = []
    for report in reports:
        composite = report["conditions"].get("composite (YuNet, model framing)")  # type: ignore[attr-defined]
        if composite and "detected" in composite:
            notes.append(f"{report['model']}: {composite['detected']:.1%} of the composites' faces found")
        if leak_free:
            notes.append(
                f"{report['model']}: {report.get('leaks_excluded', '?')} images with a copy left out"
            )
    return "\n".join(lines) + "\n" + ("\n" + "; ".join(notes) + ".\n" if notes else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="a model (repeat to compare)")
    parser.add_argument("--name", action="append", default=[], help="a column name per --model, in order")
    parser.add_argument("--reuse", action="store_true", help="take already measured names from -o's JSON")
    parser.add_argument("--data", type=Path, default=SHARED / "data/fer2013")
    parser.add_argument("--labels", type=Path, default=SHARED / "data/ferplus/labels.csv")
    parser.add_argument("--yunet", type=Path, default=None, help="YuNet ONNX file: adds the composites")
    parser.add_argument(
        "--split", default="test", help="the split to score (validation: the one to choose augmentations on)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="only N images: a fixed random subset of the split (a quick look)",
    )
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs/reports/robustness")
    args = parser.parse_args(argv)
    if args.name and len(args.name) != len(args.model):
        parser.error("give one --name per --model")
    if args.limit is not None and args.limit < 1:  # 0 ran the whole split, a negative cut its end
        parser.error("--limit must be at least 1")
    names = args.name or args.model
    previous: dict[str, dict[str, object]] = {}
    saved = args.output / "robustness.json"
    if args.reuse and saved.is_file():
        previous = {str(r["model"]): r for r in json.loads(saved.read_text())}
    from emovit.models import Framing, read_framing, resolve_model

    settings = _settings(args.data, args.labels, args.yunet, args.limit, args.split)
    reports = []
    for model, name in zip(args.model, names, strict=True):
        old, folder = previous.get(name), resolve_model(model)
        same = (
            old is not None
            and old.get("settings") == settings
            and old.get("weights_sha256") == _sha256(folder)
            and old.get("framing") == (read_framing(folder) or Framing()).to_dict()
        )
        if same and old is not None:
            print(f"{name}: reusing {saved} (same weights)", file=sys.stderr)
            reports.append(old)
        else:
            reports.append(measure(model, args.data, args.labels, args.yunet, args.limit, name, args.split))
    text = markdown(reports)
    write_report(args.output, "robustness", reports, text)
    print(text)
    return 0


if __name__ == "__main__":
    from emovit.errors import script_exit

    sys.exit(script_exit(main))
