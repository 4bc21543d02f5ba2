"""Which trained models teach best together: every ensemble of the given models, scored on the
validation split against FER+ majority labels (issue 15, item 2).

Each model answers every validation face and its mirror image through the predictor (the path
`emovit predict --detector none` takes). An ensemble answers the way a distillation teacher does
(`emovit train --teacher A --teacher B --teacher-tta flip`): the mean of the log-probabilities of
every member and view. Every subset of the models is scored (accuracy and macro-F1 of its top
answer), so the pair or set to teach the next student is read off the table, not guessed.

It refuses the test split: teachers are chosen on validation only.

Usage:
    python scripts/teacher_ensembles.py runs/default/teacher-ferplus runs/augment-choice/standard \\
        runs/augment-choice/distilled -o docs/reports/teacher-ensembles

Writes ``ensembles.json`` (every subset) and ``ensembles.md`` (each model alone, the best
ensembles of each size, the best overall).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from emovit.data import canonical_split, majority_label, read_samples, read_vote_labels, sample_votes
from emovit.fileio import sha256_of, write_report
from emovit.imageio import load_images
from emovit.labels import EMOTIONS
from emovit.predictor import EmotionRecognizer

# defaults are found from the repository, wherever the script is started
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))


def log_probs(model: str, images: list[np.ndarray]) -> np.ndarray:
    """``2 x N x 7`` log-probabilities of `model` on `images` and on their mirror images
    (canonical emotion order), one face per image."""
    rec = EmotionRecognizer.from_pretrained(model, detector="none", batch_size=256)
    missing = [e for e in EMOTIONS if e not in rec.model.label_map.names]
    if missing:
        raise SystemExit(f"{model}: it lacks the classes {missing}, so it cannot teach the seven emotions")
    views = []
    for batch in (images, [np.ascontiguousarray(image[:, ::-1]) for image in images]):
        probs = [[r.faces[0].probs[e] for e in EMOTIONS] for r in rec.predict(batch, errors="raise")]
        views.append(np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)))
    return np.stack(views)


def score(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from emovit.evaluation import macro_f1

    return {
        "accuracy": round(float((predicted == truth).mean()), 4),
        "macro_f1": round(macro_f1(truth, predicted), 4),
    }


def ensembles(answers: dict[str, np.ndarray], truth: np.ndarray, max_size: int) -> list[dict[str, Any]]:
    """Every subset of `answers` (up to `max_size` members), as a teacher with flip-TTA answers."""
    rows: list[dict[str, Any]] = []
    names = list(answers)
    for size in range(1, min(max_size, len(names)) + 1):
        for members in itertools.combinations(names, size):
            mean = np.mean([answers[m] for m in members], axis=(0, 1))
            rows.append({"members": list(members), **score(mean.argmax(-1), truth)})
    return rows


def markdown(singles: dict[str, dict[str, dict[str, float]]], rows: list[dict[str, Any]], n: int) -> str:
    lines = [
        "# Teacher ensembles on the validation split (FER+ majority labels)",
        "",
        "Each member sees every face and its mirror image; an ensemble answers the mean of the "
        "log-probabilities of every member and view, as `emovit train --teacher … --teacher-tta flip` does.",
        "",
        "| model | alone acc / F1 | with its mirror acc / F1 |",
        "|---|---|---|",
    ]
    for name, s in singles.items():
        plain, flip = s["plain"], s["flip"]
        lines.append(
            f"| {name} | {plain['accuracy']:.3f} / {plain['macro_f1']:.3f} "
            f"| {flip['accuracy']:.3f} / {flip['macro_f1']:.3f} |"
        )
    best = sorted(rows, key=lambda r: (r["accuracy"], r["macro_f1"]), reverse=True)
    sizes = sorted({len(r["members"]) for r in rows if len(r["members"]) > 1})
    lines += ["", "Best ensemble of each size:", "", "| members | acc | macro-F1 |", "|---|---|---|"]
    for size in sizes:
        top = next(r for r in best if len(r["members"]) == size)
        lines.append(f"| {', '.join(top['members'])} | {top['accuracy']:.3f} | {top['macro_f1']:.3f} |")
    lines += ["", f"The {n} best overall:", "", "| members | acc | macro-F1 |", "|---|---|---|"]
    for r in best[:n]:
        lines.append(f"| {', '.join(r['members'])} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="trained model folders (or registry names)")
    parser.add_argument("--data", type=Path, default=SHARED / "data/fer2013")
    parser.add_argument("--labels", type=Path, default=SHARED / "data/ferplus/labels.csv")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--max-size", type=int, default=4, help="the largest ensemble to score")
    parser.add_argument("--top", type=int, default=10, help="rows of the overall table")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs/reports/teacher-ensembles")
    args = parser.parse_args(argv)
    if canonical_split(args.split) == "test":
        parser.error("teachers are chosen on validation only: the test split is never used to choose")
    if len(set(args.models)) != len(args.models):
        parser.error("a model is given twice")

    samples = read_samples(args.data, args.split)
    votes = read_vote_labels(args.labels)
    majority = [majority_label(row) for row in sample_votes(samples, votes)]
    keep = [i for i, label in enumerate(majority) if label is not None]
    truth = np.asarray([EMOTIONS.index(majority[i]) for i in keep])
    images = load_images([samples[i].source for i in keep])
    print(f"{len(keep)} of {len(samples)} {args.split} faces have a FER+ majority emotion", file=sys.stderr)

    answers: dict[str, np.ndarray] = {}
    singles: dict[str, dict[str, dict[str, float]]] = {}
    for model in args.models:
        answers[model] = log_probs(model, images)
        plain = answers[model][0].argmax(-1)
        flip = np.exp(answers[model]).mean(axis=0).argmax(-1)  # as `emovit predict --tta flip`
        singles[model] = {"plain": score(plain, truth), "flip": score(flip, truth)}
        print(f"{model}: {singles[model]}", file=sys.stderr)
    rows = ensembles(answers, truth, args.max_size)

    from emovit.models import resolve_model

    weights = {m: resolve_model(m) / "model.safetensors" for m in args.models}
    report = {
        "settings": {
            "data": os.path.relpath(args.data),  # no home folder in a committed report
            "labels": os.path.relpath(args.labels),
            "split": args.split,
            "faces": len(keep),
        },
        "models": {
            m: {"weights_sha256": sha256_of(w) if w.is_file() else None, **singles[m]}
            for m, w in weights.items()
        },
        "ensembles": rows,
    }
    text = markdown(singles, rows, args.top)
    write_report(args.output, "ensembles", report, text)
    print(text)
    return 0


if __name__ == "__main__":
    from emovit.errors import script_exit

    sys.exit(script_exit(main))
