"""Per-image annotator votes (FER+) keyed like an ImageFolder tree: soft training targets and
majority labels for scoring.

The file is a CSV with a ``file`` column (the image's path inside its split folder, e.g.
``happy/Training_10019449.jpg``), an optional ``split`` column (``train``, ``validation``,
``test`` or an alias such as ``PublicTest``) and one vote-count column per class: the seven
emotions under any name emovit maps onto them (FER+ writes ``neutral, happiness, surprise,
sadness, anger, disgust, fear``) and, optionally, ``contempt``, ``unknown`` and ``NF`` (not a
face). ``../shared/data/ferplus/labels.csv`` is this format.

The rules, one each for training and for scoring:

* **target** (`vote_distribution`): votes for contempt, unknown and not-a-face are dropped and
  the rest renormalised over the seven emotions; an image with no emotion vote has no target
  and is left out of training.
* **label** (`majority_label`): the class with the most votes, when it is one of the seven and
  no other class (contempt, unknown and not-a-face included) has as many; ties and images whose
  majority is contempt, unknown or not-a-face get None and are left out of scoring.

Examples:
    >>> votes = np.array([6, 0, 0, 3, 0, 0, 0, 1, 0, 0], np.float32)  # VOTE_CLASSES order
    >>> majority_label(votes)
    'angry'
    >>> [round(float(p), 3) for p in vote_distribution(votes)]
    [0.667, 0.0, 0.0, 0.333, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TextIO

import numpy as np

from emovit.data.datasets import Sample, _split_key
from emovit.errors import DatasetError
from emovit.labels import EMOTIONS, canonical_label

__all__ = [
    "VOTE_CLASSES",
    "VoteLabels",
    "majority_label",
    "majority_samples",
    "read_vote_labels",
    "sample_votes",
    "vote_distribution",
    "vote_targets",
]

#: The columns of every vote vector: the seven emotions, then the votes that are not one.
VOTE_CLASSES: tuple[str, ...] = (*EMOTIONS, "contempt", "unknown", "not_a_face")
_NOT_EMOTIONS = {"contempt": "contempt", "unknown": "unknown", "nf": "not_a_face", "not a face": "not_a_face"}
_KEY_COLUMNS = {"split", "file"}


class VoteLabels:
    """The vote vectors of a vote file (`VOTE_CLASSES` order) by ``(split, file)``; `split` is
    None for files without a split column.

    Examples:
        >>> votes = VoteLabels({("test", "happy/a.jpg"): np.ones(10, np.float32)})
        >>> votes.lookup("data/fer2013/test/happy/a.jpg") is not None
        True
    """

    def __init__(self, rows: dict[tuple[str | None, str], np.ndarray]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, split: str | None, file: str) -> np.ndarray | None:
        """The votes of `file` (its path inside the split folder) in `split`, or None."""
        key = _file_key(file)
        found = self.rows.get((split, key))
        return found if found is not None or split is None else self.rows.get((None, key))

    def lookup(self, image: Sample | str | os.PathLike[str]) -> np.ndarray | None:
        """The votes of a sample (by its split and path inside the split folder) or of an image
        path (matched by its trailing ``[split/]class/file`` parts), or None."""
        if isinstance(image, Sample):
            if image.key is not None:
                return self.get(image.split, image.key)
            if not isinstance(image.source, str):
                return None
            image = image.source
        parts = PurePosixPath(_file_key(os.fspath(image))).parts
        for k in range(1, len(parts) + 1):
            split = _split_key(parts[-k - 1]) if k < len(parts) else None
            found = self.get(split, "/".join(parts[-k:]))
            if found is not None:
                return found
        return None


def _vote_class(column: str) -> str | None:
    name = " ".join(column.strip().lower().replace("_", " ").replace("-", " ").split())
    return canonical_label(name) or _NOT_EMOTIONS.get(name)


def _file_key(file: str) -> str:
    return PurePosixPath(file.strip().replace("\\", "/")).as_posix().removeprefix("./")


def read_vote_labels(path: str | os.PathLike[str]) -> VoteLabels:
    """Read a vote file: for each image, its votes as a float32 vector in `VOTE_CLASSES` order
    (absent contempt/unknown/not-a-face columns count 0), keyed by split and file.

    Raises:
        DatasetError: the file is missing, lacks the ``file`` column or an emotion column, has
            a column it does not know, a count that is not a number >= 0, or a row twice.
    """
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark
    except OSError as exc:
        raise DatasetError(
            f"{path}: cannot read the vote labels ({exc.strerror or exc})", option="labels"
        ) from None
    try:
        with handle:
            return _read_votes(path, handle)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV vote file ({exc})", option="labels") from None


def _read_votes(path: Path, handle: TextIO) -> VoteLabels:
    """The rows of `read_vote_labels`, from its open file."""
    reader = csv.DictReader(handle)
    columns = [c for c in reader.fieldnames or () if c is not None]
    lower = {c.strip().lower(): c for c in columns}
    if "file" not in lower:
        raise DatasetError(
            f"{path}: no 'file' column (the image path inside its split folder)", option="labels"
        )
    vote_columns: dict[str, int] = {}
    for column in columns:
        if column.strip().lower() in _KEY_COLUMNS:
            continue
        name = _vote_class(column)
        if name is None:
            raise DatasetError(
                f"{path}: column {column!r} is neither an emotion nor contempt, unknown or NF",
                option="labels",
            )
        vote_columns[column] = VOTE_CLASSES.index(name)
    missing = [e for e in EMOTIONS if e not in {VOTE_CLASSES[i] for i in vote_columns.values()}]
    if missing:
        raise DatasetError(f"{path}: no vote column for {missing}", option="labels")
    votes: dict[tuple[str | None, str], np.ndarray] = {}
    for row in reader:
        line = reader.line_num  # the file's line (blank lines are skipped, not counted)
        split_cell = row.get(lower["split"], "") if "split" in lower else None
        split = _split_key(split_cell) if split_cell else None
        if split_cell and split is None:
            raise DatasetError(f"{path}, line {line}: unknown split {split_cell!r}", option="labels")
        extra, short = row.get(None) or [], [c for c in columns if row[c] is None]
        if extra or short:  # cells beyond or short of the header
            cells = len(columns) - len(short) + len(extra)
            why = "a missing vote would count as 0 and change the label" if short else "cells of no column"
            raise DatasetError(
                f"{path}, line {line}: {cells} cells, the header has {len(columns)} ({why})", option="labels"
            )
        key = (split, _file_key(row[lower["file"]] or ""))
        vector = np.zeros(len(VOTE_CLASSES), dtype=np.float32)
        for column, index in vote_columns.items():
            try:  # an empty cell is no count: read as 0, it changed the majority without a word
                count = float(row[column])
            except ValueError:
                count = math.nan
            if not math.isfinite(count) or count < 0:
                raise DatasetError(
                    f"{path}, line {line}: {column} must be a vote count >= 0 (0 written out), "
                    f"got {row[column]!r}",
                    option="labels",
                )
            vector[index] += count
        if key in votes:
            raise DatasetError(f"{path}, line {line}: a second row for {key[1]!r}", option="labels")
        votes[key] = vector
    if not votes:
        raise DatasetError(f"{path}: no rows", option="labels")
    return VoteLabels(votes)


def vote_distribution(votes: np.ndarray) -> np.ndarray | None:
    """The training target: the emotion votes (`EMOTIONS` order) over their sum; None when no
    annotator chose an emotion."""
    emotions = np.asarray(votes, dtype=np.float64)[: len(EMOTIONS)]
    total = emotions.sum()
    return (emotions / total).astype(np.float32) if total > 0 else None


def majority_label(votes: np.ndarray) -> str | None:
    """The scoring label: the emotion with strictly the most votes of all classes, else None
    (a tie, no votes, or a majority of contempt, unknown or not-a-face)."""
    votes = np.asarray(votes, dtype=np.float64)
    top = votes.max() if votes.size else 0.0
    winners = np.flatnonzero(votes == top)
    if top <= 0 or len(winners) != 1 or winners[0] >= len(EMOTIONS):
        return None
    return EMOTIONS[int(winners[0])]


def sample_votes(samples: Sequence[Sample], votes: VoteLabels) -> np.ndarray:
    """``N x len(VOTE_CLASSES)`` votes of `samples`, matched by split and path inside the split.

    Raises:
        DatasetError: a sample is not from an ImageFolder tree, or has no row in `votes`.
    """
    out = np.zeros((len(samples), len(VOTE_CLASSES)), dtype=np.float32)
    missing: list[str] = []
    for i, sample in enumerate(samples):
        if sample.key is None:
            raise DatasetError(
                f"{sample.name}: vote labels are matched by path, so they need an ImageFolder tree "
                "(DATA/<split>/<class>/<image>), not a CSV",
                option="labels",
            )
        row = votes.lookup(sample)
        if row is None:
            missing.append(f"{sample.split}/{sample.key}" if sample.split else sample.key)
        else:
            out[i] = row
    if missing:
        why = (  # the others matched: the paths are written right, these rows are simply absent
            "the file has no row for them (it names the other images: add their rows, or move "
            "these images out of the tree)"
            if len(missing) < len(samples)
            else _split_mismatch(samples, votes)
            or "the file's 'file' column must hold each image's path inside its split folder"
        )
        shown = ", ".join(missing[:3])
        raise DatasetError(
            f"{len(missing)} of {len(samples)} images have no vote row (e.g. {shown}); {why}", option="labels"
        )
    return out


def _split_mismatch(samples: Sequence[Sample], votes: VoteLabels) -> str | None:
    """Why no sample matched when their paths are in the file under another split (a class-
    folder tree whose own folder name, taken as its split, is none of the file's), else None."""
    splits = sorted({split for split, _ in votes.rows if split is not None})
    found = [
        split
        for sample in samples[:50]
        for split in splits
        if sample.key is not None and votes.get(split, sample.key) is not None
    ]
    if not found:
        return None
    split, under = samples[0].split, ", ".join(sorted(set(found)))
    if split is None:
        return (
            f"the images have no split, but the file has rows for these paths under split {under}: "
            "give the images in a folder named after their split (DATA/<split>/<class>/<image>)"
        )
    if split not in splits:
        return (
            f"the images are taken as split {split!r}, which the file has no rows for, but it has rows "
            f"for these paths under split {under}: give the images in a folder named after their split"
        )
    return f"the file lists these paths under split {under}, not {split}"


def vote_targets(
    samples: Sequence[Sample], votes: VoteLabels, classes: Sequence[str]
) -> tuple[list[Sample], np.ndarray]:
    """Training samples and their soft targets (`vote_distribution`, columns in `classes`
    order): images without an emotion vote are left out."""
    unknown = [c for c in classes if c not in EMOTIONS]
    if unknown or len(set(classes)) != len(EMOTIONS):
        raise DatasetError(f"vote targets cover the seven emotions; classes {list(classes)} do not")
    columns = [EMOTIONS.index(c) for c in classes]
    kept: list[Sample] = []
    targets: list[np.ndarray] = []
    for sample, row in zip(samples, sample_votes(samples, votes), strict=True):
        distribution = vote_distribution(row)
        if distribution is not None:
            kept.append(sample)
            targets.append(distribution[columns])
    return kept, np.asarray(targets, dtype=np.float32).reshape(len(kept), len(classes))


def majority_samples(samples: Sequence[Sample], votes: VoteLabels) -> list[Sample]:
    """`samples` relabelled with their `majority_label`; images without one are left out."""
    out = []
    for sample, row in zip(samples, sample_votes(samples, votes), strict=True):
        label = majority_label(row)
        if label is not None:
            out.append(dataclasses.replace(sample, label=label))
    return out
