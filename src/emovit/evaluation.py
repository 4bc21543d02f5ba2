"""Honest evaluation: accuracy, macro-F1, per-class scores, confusion matrix, calibration.

``evaluate`` classifies a labelled ImageFolder/CSV split and writes a report folder:
``metrics.json``, ``confusion_matrix.json`` / ``.png``, ``reliability.png``,
``predictions.csv`` and ``report.md``. Metrics come from scikit-learn. Dataset labels are
mapped onto the model's by name; classes the model lacks are reported and left out of the
scores (a model cannot be right about a class it does not have). ``exclude_leaks`` drops test
images that also appear (exactly or nearly) in a training set.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emovit.imageio import load_image

if TYPE_CHECKING:
    from emovit.predictor import EmotionRecognizer
    from emovit.training.datasets import Sample

__all__ = ["EvaluationReport", "classification_metrics", "expected_calibration_error", "evaluate"]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix and ECE."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
    )

    ids = list(range(len(labels)))
    present = sorted(set(y_true.tolist()))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    confidence = probs.max(axis=1)
    clipped = np.clip(probs, 1e-12, 1.0)
    return {
        "images": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "log_loss": float(log_loss(y_true, clipped / clipped.sum(1, keepdims=True), labels=ids)),
        "ece": expected_calibration_error(confidence, (y_true == y_pred).astype(float)),
        "per_class": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in ids
        },
        "confusion_matrix": {
            "labels": list(labels),
            "rows_true_columns_predicted": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        },
    }


@dataclass
class EvaluationReport:
    """What `evaluate` measured, and where it wrote the report."""

    metrics: dict[str, Any]
    output: Path | None

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    @property
    def macro_f1(self) -> float:
        return float(self.metrics["macro_f1"])


def _decode_all(samples: Sequence[Sample], threads: int | None) -> list[np.ndarray]:
    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda s: load_image(s.source, name=s.name), samples, chunksize=64))


def _classify(
    recognizer: EmotionRecognizer, images: list[np.ndarray], batch_size: int, tta: bool, progress: bool
) -> np.ndarray:
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc="evaluating", unit="img", leave=False)
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        probs = recognizer.classify_arrays(chunk)
        if tta:
            probs = (
                probs + recognizer.classify_arrays([np.ascontiguousarray(im[:, ::-1]) for im in chunk])
            ) / 2
        out.append(probs)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return np.concatenate(out) if out else np.zeros((0, len(recognizer.labels)))


def evaluate(
    model: str | os.PathLike[str] | EmotionRecognizer,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    tta: bool = False,
    exclude_leaks: str | os.PathLike[str] | None = None,
    max_distance: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Evaluate `model` on a labelled dataset split and (optionally) write a report folder.

    Examples:
        >>> report = evaluate("default", "fer2013/test", "reports/default")  # doctest: +SKIP
        >>> round(report.accuracy, 3)  # doctest: +SKIP
        0.68
    """
    from emovit.predictor import EmotionRecognizer
    from emovit.training.audit import DEFAULT_MAX_DISTANCE, find_leaks
    from emovit.training.datasets import list_splits, read_samples

    recognizer = (
        model
        if isinstance(model, EmotionRecognizer)
        else EmotionRecognizer.from_pretrained(model, device=device, detector="none")
    )
    if split is None and "test" in list_splits(data):
        split = "test"
    samples = read_samples(data, split)
    total = len(samples)
    leaks_excluded = 0
    if exclude_leaks is not None:
        train_split = "train" if "train" in list_splits(exclude_leaks) else None
        reference = read_samples(exclude_leaks, train_split)
        leaked = find_leaks(
            samples, reference, max_distance=max_distance or DEFAULT_MAX_DISTANCE, threads=threads
        )
        samples = [s for i, s in enumerate(samples) if i not in leaked]
        leaks_excluded = len(leaked)
    labels = list(recognizer.labels)
    index = {label: i for i, label in enumerate(labels)}
    unscorable: dict[str, int] = {}
    kept = []
    for sample in samples:
        if sample.label in index:
            kept.append(sample)
        else:
            unscorable[sample.label] = unscorable.get(sample.label, 0) + 1
    images = _decode_all(kept, threads)
    probs = _classify(recognizer, images, batch_size, tta, progress)
    y_true = np.asarray([index[s.label] for s in kept], dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, probs, labels)
    metrics.update(
        {
            "model": recognizer.model.name,
            "data": str(data),
            "split": split,
            "tta": "flip" if tta else None,
            "images_in_split": total,
            "leaks_excluded": leaks_excluded if exclude_leaks is not None else None,
            "leak_reference": str(exclude_leaks) if exclude_leaks is not None else None,
            "classes_missing_from_model": unscorable,
        }
    )
    out = Path(output) if output is not None else None
    if out is not None:
        _write_report(out, metrics, kept, y_true, y_pred, probs, labels)
    return EvaluationReport(metrics=metrics, output=out)


def _write_report(
    out: Path,
    metrics: dict[str, Any],
    samples: Sequence[Sample],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "confusion_matrix.json").write_text(json.dumps(metrics["confusion_matrix"], indent=2) + "\n")
    with (out / "predictions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "true", "predicted", "score", "correct", *[f"prob_{lab}" for lab in labels]]
        )
        for sample, t, p, row in zip(samples, y_true, y_pred, probs, strict=True):
            writer.writerow(
                [sample.name, labels[t], labels[p], f"{row[p]:.5f}", int(t == p), *(f"{v:.5f}" for v in row)]
            )
    _plot_confusion(
        out / "confusion_matrix.png",
        np.asarray(metrics["confusion_matrix"]["rows_true_columns_predicted"]),
        labels,
    )
    _plot_reliability(
        out / "reliability.png", probs.max(axis=1), (y_true == y_pred).astype(float), metrics["ece"]
    )
    (out / "report.md").write_text(_markdown(metrics, labels))


def _plot_confusion(path: Path, matrix: np.ndarray, labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{matrix[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7, color=colour
            )
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title("Confusion matrix (counts, row share)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_reliability(
    path: Path, confidence: np.ndarray, correct: np.ndarray, ece: float, bins: int = 15
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    acc = [correct[which == b].mean() if (which == b).any() else np.nan for b in range(bins)]
    count = [int((which == b).sum()) for b in range(bins)]
    centres = (edges[:-1] + edges[1:]) / 2
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.2, 6), dpi=110, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.bar(centres, acc, width=1 / bins, edgecolor="black", alpha=0.8, label="accuracy")
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram (ECE {ece:.3f})")
    top.legend(loc="upper left")
    bottom.bar(centres, count, width=1 / bins, color="grey", edgecolor="black")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _markdown(metrics: dict[str, Any], labels: list[str]) -> str:
    lines = [
        f"# Evaluation of `{metrics['model']}`",
        "",
        f"Data: `{metrics['data']}` (split: {metrics['split'] or 'whole folder'}), "
        f"{metrics['images']} images scored of {metrics['images_in_split']}.",
    ]
    if metrics["leaks_excluded"] is not None:
        lines.append(
            f"Leak-free: {metrics['leaks_excluded']} images that also appear in "
            f"`{metrics['leak_reference']}` (exact or near duplicates) were left out."
        )
    if metrics["classes_missing_from_model"]:
        lines.append(f"Not scored (the model lacks these classes): {metrics['classes_missing_from_model']}.")
    if metrics["tta"]:
        lines.append("Test-time augmentation: horizontal flip (probabilities averaged).")
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {metrics['accuracy']:.4f} |",
        f"| macro-F1 | {metrics['macro_f1']:.4f} |",
        f"| weighted-F1 | {metrics['weighted_f1']:.4f} |",
        f"| log loss | {metrics['log_loss']:.4f} |",
        f"| ECE (15 bins) | {metrics['ece']:.4f} |",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        c = metrics["per_class"][label]
        lines.append(
            f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
        )
    lines += ["", "![confusion matrix](confusion_matrix.png)", "", "![reliability](reliability.png)", ""]
    return "\n".join(lines)
