"""Honest evaluation: accuracy, macro-F1, per-class scores, confusion matrix, calibration.

``evaluate`` classifies a labelled ImageFolder/CSV split through the predictor (the same
stages as `emovit predict`, face detection included) and writes a report folder:
``metrics.json``, ``confusion_matrix.json`` / ``.png``, ``reliability.png``,
``predictions.csv``, ``failures.csv`` (the images that failed or had no face, and why) and
``report.md`` (written whole in a hidden folder, then moved over a previous report, report.md
last: a crash while writing leaves the previous report as it was). Metrics come
from scikit-learn. Dataset labels are mapped onto the model's by name; classes the model lacks
are reported and left out of the scores (a model cannot be right about a class it does not
have). ``exclude_leaks`` drops test images that also appear (exactly or nearly) in a training
set.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emovit.data import Sample
from emovit.errors import DatasetError, OptionError, StorageError
from emovit.fileio import atomic_open, check_writable, make_folders, remove_empty, write_text_atomic

if TYPE_CHECKING:
    from emovit.faces import FaceOptions
    from emovit.predictor import EmotionRecognizer
    from emovit.results import ImageResult

__all__ = [
    "EvaluationReport",
    "classification_metrics",
    "evaluate",
    "expected_calibration_error",
    "macro_f1",
    "resampled_macro_f1",
]


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


def macro_f1(y_true: Sequence[Any] | np.ndarray, y_pred: Sequence[Any] | np.ndarray) -> float:
    """The macro-F1 of every emovit figure (evaluation, training's model selection, the prior
    adjustment, the reports): the mean F1 over the classes present in `y_true`; a class never
    in the truth has no recall, and counting it as 0 would only shrink the mean."""
    from sklearn.metrics import f1_score

    present = sorted(set(np.asarray(y_true).tolist()))
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def resampled_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`macro_f1` of many resamples at once: row ``b`` of `weights` (``(B, N)``, e.g. the counts
    of a bootstrap draw) says how often each of the `N` predictions counts. `y_true` and `y_pred`
    are class indices; a class absent from a resample's truth is left out of its mean, as
    `macro_f1` leaves out a class absent from the truth. Returns the ``B`` scores."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    classes = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
    truth = np.eye(classes)[y_true]  # (N, K) one-hot
    guess = np.eye(classes)[y_pred]
    tp = weights @ (truth * guess)
    support, predicted = weights @ truth, weights @ guess
    present = support > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=present)
    return (f1 * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1)


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
        "macro_f1": macro_f1(y_true, y_pred),
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


def _first_face_probs(result: ImageResult, width: int) -> np.ndarray | None:
    """The probabilities of a result's first (largest) face, or None (failed, no face)."""
    if not result.ok or not result.faces:
        return None
    return np.asarray(list(result.faces[0].probs.values()), dtype=np.float64).reshape(width)


def _with_votes(samples: list[Sample], labels: str | os.PathLike[str]) -> tuple[list[Sample], int]:
    """`samples` relabelled with the majority of their votes in a FER+-style label file;
    images without a clear majority among the seven emotions (ties, contempt, unknown,
    not-a-face) are left out. Returns the kept samples and how many left.

    Raises:
        DatasetError: an image has no row in the file (a renamed class folder, another
            dataset): it is not quietly counted as "no majority"."""
    from emovit.data import majority_label, read_vote_labels, sample_votes

    rows = sample_votes(samples, read_vote_labels(labels))
    kept: list[Sample] = []
    for sample, row in zip(samples, rows, strict=True):
        label = majority_label(row)
        if label is not None:
            kept.append(Sample(sample.source, label, sample.name))
    return kept, len(samples) - len(kept)


def _detector_name(recognizer: EmotionRecognizer) -> str:
    """The recognizer's face detector by name (``custom`` for one of the caller's own)."""
    return str(getattr(recognizer.detector, "name", "custom"))


def _leak_references(
    exclude_leaks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
) -> list[str | os.PathLike[str]]:
    """The folders whose images the scored ones must not duplicate (one path or several)."""
    if exclude_leaks is None:
        return []
    if isinstance(exclude_leaks, str | os.PathLike):
        return [exclude_leaks]
    return list(exclude_leaks)


def evaluate(
    model: str | os.PathLike[str] | EmotionRecognizer,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    faces: FaceOptions | None = None,
    tta: bool = False,
    labels: str | os.PathLike[str] | None = None,
    exclude_leaks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    max_distance: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    backend: str = "auto",
    threads: int | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Evaluate `model` on a labelled dataset split and (optionally) write a report folder.

    Every image goes through the predictor, as `emovit predict` sees it: decoding, face
    detection (`faces`; ``FaceOptions(detector="none")`` for pre-cropped faces), the model's
    framing, preprocessing and the backend; images stream batch by batch, so memory stays
    flat however large the split. An image that fails or in which no face is found is
    counted (``failed``, ``no_face``) and scored as wrong in ``accuracy_all``; the other
    metrics are over the images with a face. ``labels`` scores a FER+-style vote file's
    majority label instead of the folder's.

    Examples:
        >>> report = evaluate("default", "fer2013/test", "reports/default")  # doctest: +SKIP
        >>> round(report.accuracy, 3)  # doctest: +SKIP
        0.68
    """
    made = [] if output is None else _report_folder(output)
    try:
        return _evaluate(
            model, data, output, split=split, faces=faces, tta=tta, labels=labels,
            exclude_leaks=exclude_leaks, max_distance=max_distance, batch_size=batch_size,
            device=device, backend=backend, threads=threads, progress=progress,
        )  # fmt: skip
    except BaseException:
        remove_empty(made)  # refused or stopped before its report: no empty folder left behind
        raise


def _report_folder(output: str | os.PathLike[str]) -> list[Path]:
    """Create the report folder (and its missing parents) and check it can be written, before
    any scoring; the folders made, deepest first."""
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{output}: a file, not a report folder", option="output")
    made: list[Path] = []
    try:
        made = make_folders(path)
        check_writable(path)  # a read-only folder too
    except OSError as exc:
        remove_empty(made)
        raise OptionError(
            f"{output}: cannot create or write the report folder ({exc.strerror or exc})", option="output"
        ) from None
    return made


def _evaluate(
    model: str | os.PathLike[str] | EmotionRecognizer,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    split: str | None,
    faces: FaceOptions | None,
    tta: bool,
    labels: str | os.PathLike[str] | None,
    exclude_leaks: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    max_distance: int | None,
    batch_size: int,
    device: str,
    backend: str,
    threads: int | None,
    progress: bool,
) -> EvaluationReport:
    """`evaluate` once its report folder is made."""
    from emovit.data import DEFAULT_MAX_DISTANCE, find_leaks, list_splits, read_samples
    from emovit.predictor import EmotionRecognizer
    from emovit.progress import progress_bar

    if isinstance(model, EmotionRecognizer):
        recognizer = model
    else:
        recognizer = EmotionRecognizer.from_pretrained(
            model, device=device, faces=faces, backend=backend, threads=threads, batch_size=batch_size
        )
    if split is None:
        found = list_splits(data)
        if "test" in found:
            split = "test"
        elif found:  # train/validation folders read as classes would score nothing, misleadingly
            raise DatasetError(
                f"{data}: has the split folders {found} but no test split; name the one to score",
                option="split",
            )
    bad_rows: list[tuple[str, str]] = []  # a CSV's unreadable rows: failures.csv names them
    samples = read_samples(data, split, unreadable=bad_rows)
    total = len(samples) + len(bad_rows)
    no_majority = None
    if labels is not None:
        samples, no_majority = _with_votes(samples, labels)
    leaks_excluded = 0
    references = _leak_references(exclude_leaks)
    if references:
        reference = []  # what training and selection saw: a dataset's train split, or each folder
        for folder in references:
            try:
                reference += read_samples(folder, "train" if "train" in list_splits(folder) else None)
            except DatasetError as exc:  # the flag at fault is --exclude-leaks, not DATA
                raise DatasetError(str(exc), option="exclude_leaks") from None
        leaked = find_leaks(
            samples,
            reference,
            max_distance=DEFAULT_MAX_DISTANCE if max_distance is None else max_distance,
            threads=threads,
        )
        samples = [s for i, s in enumerate(samples) if i not in leaked]
        leaks_excluded = len(leaked)
    names = list(recognizer.labels)
    index = {label: i for i, label in enumerate(names)}
    unscorable: dict[str, int] = {}
    kept = []
    for sample in samples:
        if sample.label in index:
            kept.append(sample)
        else:
            unscorable[sample.label] = unscorable.get(sample.label, 0) + 1
    scored: list[Sample] = []
    rows: list[np.ndarray] = []
    failed: dict[str, int] = {}
    no_face = 0
    unscored: list[tuple[Sample, str, str, str]] = []  # failed or faceless: failures.csv names them
    previous_tta = recognizer.tta
    recognizer.tta = "flip" if tta else previous_tta
    try:
        with progress_bar(len(kept), "evaluating", enabled=progress) as advance:
            sources = (s.source for s in kept)
            for sample, result in zip(kept, recognizer.stream(sources, batch_size=batch_size), strict=True):
                probs = _first_face_probs(result, len(names))
                if probs is not None:
                    scored.append(sample)
                    rows.append(probs)
                elif not result.ok:
                    code = result.error_code or "error"
                    failed[code] = failed.get(code, 0) + 1
                    unscored.append((sample, code, result.error_stage or "", result.error or ""))
                else:
                    no_face += 1
                    unscored.append((sample, "no_face", "detect", f"{sample.name}: no face found"))
                advance()
    finally:
        recognizer.tta = previous_tta
    for name, reason in bad_rows:
        failed["bad_row"] = failed.get("bad_row", 0) + 1
        unscored.append((Sample(np.zeros((0, 0), np.uint8), "", name), "bad_row", "read", reason))
    if not rows:
        if not kept and leaks_excluded and not unscorable:
            raise DatasetError(
                f"{data}: all {leaks_excluded} images were left out as copies of images in "
                f"{', '.join(map(str, references))} (--exclude-leaks): nothing left to score"
            )
        if not kept:  # every class folder is one the model does not have
            raise DatasetError(
                f"{data}: no image of a class the model has ({', '.join(names)}); found "
                f"{', '.join(f'{k}: {v}' for k, v in unscorable.items()) or 'no images'}"
            )
        hint = (
            "; pre-cropped faces need detector 'none' (--detector none)"
            if no_face and _detector_name(recognizer) != "none"
            else ""
        )
        from emovit.writers import display_name

        first = "; ".join(display_name(error, controls=True) for *_, error in unscored[:3])
        raise DatasetError(
            f"{data}: none of the {len(kept)} images could be scored ({no_face} without a face, "
            f"{sum(failed.values())} failed: {failed}){hint}; first: {first}"
        )
    probs_all = np.stack(rows)
    y_true = np.asarray([index[s.label] for s in scored], dtype=np.int64)
    y_pred = probs_all.argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, probs_all, names)
    detector = _detector_name(recognizer)
    metrics.update(
        {
            "model": recognizer.model.name,
            "data": str(data),
            "split": split,
            "labels": str(labels) if labels is not None else None,
            "images_without_majority": no_majority,
            "tta": "flip" if tta or previous_tta == "flip" else None,
            "detector": detector,
            "framing": {
                "margin": recognizer.faces.margin,
                "align": recognizer.faces.align,
                "grey": recognizer.faces.grey,
            },
            "images_in_split": total,
            "images_evaluated": len(kept) + len(bad_rows),
            "failed": failed,
            "no_face": no_face,
            "accuracy_all": float((y_true == y_pred).sum() / (len(kept) + len(bad_rows))),
            "leaks_excluded": leaks_excluded if references else None,
            "leak_reference": " + ".join(map(str, references)) if references else None,
            "classes_missing_from_model": unscorable,
        }
    )
    out = Path(output) if output is not None else None
    if out is not None:
        files = {"metrics": metrics, "samples": scored, "y_true": y_true, "y_pred": y_pred}
        files |= {"probs": probs_all, "labels": names, "unscored": unscored}
        _write_report(out, functools.partial(_write_report_files, **files))
    return EvaluationReport(metrics=metrics, output=out)


#: The files of a report folder (report.md last: written last, it says the report is whole).
REPORT_FILES = (
    "metrics.json",
    "confusion_matrix.json",
    "predictions.csv",
    "failures.csv",
    "confusion_matrix.png",
    "reliability.png",
    "report.md",
)


def _write_report(out: Path, write: Callable[[Path], None]) -> None:
    """Put a report into `out`: ``write(folder)`` fills a fresh folder with `REPORT_FILES`."""
    # The new report is written whole into a hidden folder beside the files it replaces, then
    # each file is renamed into place, report.md (which says the report is whole) removed first
    # and put last: a full disk or a crash while writing leaves the previous report as it was,
    # and a crash among the renames never leaves a report.md beside another run's files. The
    # folder's other files are the user's and stay.
    staging = out / ".emovit-report.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        write(staging)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):  # named by the report, not its hidden staging folder
            reason = str(exc).rsplit(": cannot be written ", 1)[-1]
            reason = reason if isinstance(exc, StorageError) else f"({exc.strerror or exc})"
            raise StorageError(
                f"{out}: the report cannot be written {reason}; any previous one is kept"
            ) from None
        raise
    try:
        for name in reversed(REPORT_FILES):  # report.md first
            (out / name).unlink(missing_ok=True)
        for name in REPORT_FILES:  # report.md last
            os.replace(staging / name, out / name)
    except OSError as exc:
        raise StorageError(f"{out}: the report cannot be put in place ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_report_files(
    out: Path,
    metrics: dict[str, Any],
    samples: Sequence[Sample],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    unscored: Sequence[tuple[Sample, str, str, str]],
) -> None:
    """Every file of `REPORT_FILES` into `out`, each through a temporary name."""
    from emovit.writers import display_name  # a name that is not UTF-8: escaped, as predict writes it

    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(out / "confusion_matrix.json", json.dumps(metrics["confusion_matrix"], indent=2) + "\n")
    with atomic_open(out / "predictions.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "true", "predicted", "score", "correct", *[f"prob_{lab}" for lab in labels]]
        )
        for sample, t, p, row in zip(samples, y_true, y_pred, probs, strict=True):
            writer.writerow(
                [
                    display_name(sample.name),
                    labels[t],
                    labels[p],
                    f"{row[p]:.5f}",
                    int(t == p),
                    *(f"{v:.5f}" for v in row),
                ]
            )
    with atomic_open(out / "failures.csv") as handle:  # every image not scored, and why
        writer = csv.writer(handle)
        writer.writerow(["image", "true", "error_code", "error_stage", "error"])
        for sample, code, stage, error in unscored:
            writer.writerow([display_name(sample.name), sample.label, code, stage, display_name(error)])
    _plot_confusion(
        out / "confusion_matrix.png",
        np.asarray(metrics["confusion_matrix"]["rows_true_columns_predicted"]),
        labels,
    )
    _plot_reliability(
        out / "reliability.png", probs.max(axis=1), (y_true == y_pred).astype(float), metrics["ece"]
    )
    write_text_atomic(out / "report.md", _markdown(metrics, labels))


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
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
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
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
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
    if metrics.get("labels"):
        lines.append(
            f"Labels: the majority vote of `{metrics['labels']}`; "
            f"{metrics['images_without_majority']} images without a majority among the seven "
            "emotions (ties, contempt, unknown, not a face) were left out."
        )
    lines.append(
        f"Faces: detector `{metrics.get('detector')}`, framing {metrics.get('framing')}; "
        f"{metrics.get('no_face', 0)} images without a face, {sum(metrics.get('failed', {}).values())} "
        f"failed (accuracy counting those as wrong: {metrics.get('accuracy_all', 0):.4f})."
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
