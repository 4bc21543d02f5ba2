"""Labelled face datasets: ImageFolder trees and the FER2013 CSV, decoded once into memory.

Layouts:

* ImageFolder: ``DATA/<split>/<class>/*.jpg`` (the Kaggle FER2013 / "Facial Emotion
  Expressions" layout) or a single split ``DATA/<class>/*.jpg``;
* FER2013 CSV: columns ``emotion,pixels,Usage`` (48x48 grey pixels as space-separated
  integers; emotion ids 0..6 = angry, disgust, fear, happy, sad, surprise, neutral; Usage
  Training / PublicTest / PrivateTest = train / validation / test).

Class names are mapped onto the canonical emotions by name (``anger`` → ``angry``); names
that are not emotions are kept.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emovit.sources import IMAGE_EXTENSIONS
from emovit.errors import DatasetError, EmovitError
from emovit.labels import EMOTIONS, canonical_label

__all__ = [
    "FER2013_CSV_LABELS",
    "DatasetError",
    "LabelledImages",
    "Sample",
    "decode_samples",
    "class_counts",
    "list_splits",
    "read_samples",
]

#: Emotion id → name in the FER2013 CSV.
FER2013_CSV_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_SPLIT_NAMES = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid", "publictest", "public_test"),
    "test": ("test", "privatetest", "private_test"),
}




@dataclass(frozen=True)
class Sample:
    """One labelled image: a file path or (for CSV rows) a ``uint8`` array, and its label."""

    source: str | np.ndarray
    label: str
    name: str


def _split_key(name: str) -> str | None:
    key = name.strip().lower()
    for split, aliases in _SPLIT_NAMES.items():
        if key in aliases:
            return split
    return None


def _label(name: str) -> str:
    return canonical_label(name) or name.strip().lower()


def list_splits(data: str | os.PathLike[str]) -> list[str]:
    """The splits present in `data` (``train``, ``validation``, ``test``)."""
    path = Path(data)
    if path.is_file():
        with path.open(newline="") as handle:
            usages = {_split_key(row.get("Usage", "")) for row in csv.DictReader(handle)}
        return [s for s in _SPLIT_NAMES if s in usages]
    return [s for s in _SPLIT_NAMES if _split_dir(path, s) is not None]


def _split_dir(root: Path, split: str) -> Path | None:
    if not root.is_dir():
        return None
    for child in sorted(root.iterdir()):
        if child.is_dir() and _split_key(child.name) == split:
            return child
    return None


def _read_folder(root: Path) -> list[Sample]:
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for dirpath, dirs, files in os.walk(class_dir):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    path = os.path.join(dirpath, name)
                    samples.append(Sample(path, _label(class_dir.name), path))
    return samples


def _read_csv(path: Path, split: str | None) -> list[Sample]:
    samples: list[Sample] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: not a FER2013 CSV (missing columns {sorted(missing)})")
        for row_number, row in enumerate(reader, start=2):
            if split is not None and _split_key(row.get("Usage", "")) != split:
                continue
            try:
                label = FER2013_CSV_LABELS[int(row["emotion"])]
                pixels = np.asarray(row["pixels"].split(), dtype=np.uint8)
                side = round(len(pixels) ** 0.5)
                if side * side != len(pixels) or side == 0:
                    raise ValueError(f"{len(pixels)} pixels is not a square image")
            except (ValueError, IndexError) as exc:
                raise DatasetError(f"{path}, line {row_number}: bad row ({exc})") from None
            samples.append(Sample(pixels.reshape(side, side), label, f"{path.name}:{row_number}"))
    return samples


def read_samples(data: str | os.PathLike[str], split: str | None = None) -> list[Sample]:
    """The labelled samples of one split of `data` (or of `data` itself when it is a split).

    Raises:
        DatasetError: no such folder/file, no such split, or no images.
    """
    path = Path(data)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset folder or CSV file")
    if path.is_file():
        samples = _read_csv(path, split)
    else:
        root = _split_dir(path, split) if split else None
        if split and root is None:
            if any(_split_key(p.name) for p in path.iterdir() if p.is_dir()):
                raise DatasetError(f"{path}: has no {split!r} split (found {list_splits(path)})")
            root = path  # DATA is itself one split: <class>/<images>
        samples = _read_folder(root or path)
    if not samples:
        where = f"{path} ({split} split)" if split else str(path)
        raise DatasetError(f"{where}: no labelled images found")
    return samples


def class_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """Images per label, canonical emotions first."""
    counts = Counter(s.label for s in samples)
    order = [e for e in EMOTIONS if e in counts] + sorted(set(counts) - set(EMOTIONS))
    return {label: counts[label] for label in order}


@dataclass
class LabelledImages:
    """Decoded images of one split: ``images`` is ``N x H x W x 3`` ``uint8``, ``labels`` ``N``
    class indices into ``classes``."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def decode_samples(
    samples: Sequence[Sample],
    classes: Sequence[str],
    *,
    size: tuple[int, int] | None = None,
    threads: int | None = None,
) -> LabelledImages:
    """Decode every sample once (threads) into one array; resize to `size` when the images
    do not all share one size (or when `size` is smaller than theirs)."""
    from emovit.imageio import load_image
    from emovit.preprocess import Preprocessor

    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted({s.label for s in samples} - set(index))
    if unknown:
        raise DatasetError(f"labels {unknown} are not among the model's classes {list(classes)}")

    def decode(sample: Sample) -> np.ndarray:
        return load_image(sample.source, name=sample.name)

    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(decode, samples, chunksize=256))
    shapes = {image.shape for image in decoded}
    if size is not None and (len(shapes) > 1 or any(s[0] > size[0] or s[1] > size[1] for s in shapes)):
        resizer = Preprocessor(size=size)
        decoded = [resizer.resize(image) for image in decoded]
    return LabelledImages(
        images=np.stack(decoded),
        labels=np.asarray([index[s.label] for s in samples], dtype=np.int64),
        classes=tuple(classes),
        names=[s.name for s in samples],
    )
