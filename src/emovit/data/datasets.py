"""Labelled face datasets: ImageFolder trees and the FER2013 CSV, decoded once into memory.

Layouts:

* ImageFolder: ``DATA/<split>/<class>/*.jpg`` (the Kaggle FER2013 / "Facial Emotion
  Expressions" layout) or a single split ``DATA/<class>/*.jpg``;
* FER2013 CSV: columns ``emotion,pixels,Usage`` (48x48 grey pixels as space-separated
  integers; emotion ids 0..6 = angry, disgust, fear, happy, sad, surprise, neutral; Usage
  Training / PublicTest / PrivateTest = train / validation / test).

Class names are mapped onto the canonical emotions by name (``anger`` → ``angry``); names
that are not emotions are kept. Images of an ImageFolder tree carry their split and their path
inside the split folder, the key that per-image label files (`emovit.data.read_vote_labels`) use.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emovit.errors import DatasetError, ImageError
from emovit.labels import canonical_label, order_labels
from emovit.sources import IMAGE_EXTENSIONS

__all__ = [
    "FER2013_CSV_LABELS",
    "LabelledImages",
    "Sample",
    "canonical_split",
    "class_counts",
    "decode_samples",
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
    """One labelled image: a file path or (for CSV rows) a ``uint8`` array, and its label.

    Attributes:
        source: the file path, or the pixels of a CSV row.
        label: the class (canonical emotion name where the folder name maps onto one).
        name: how reports and errors name the image (its path, or ``file.csv:LINE``).
        split: ``train``, ``validation`` or ``test`` for images of a tree with splits (or a
            split folder given on its own), else None.
        key: for ImageFolder images, the POSIX path inside the split folder
            (``happy/Training_1.jpg``), else None.
    """

    source: str | np.ndarray
    label: str
    name: str
    split: str | None = None
    key: str | None = None


def _split_key(name: str) -> str | None:
    key = name.strip().lower()
    for split, aliases in _SPLIT_NAMES.items():
        if key in aliases:
            return split
    return None


def canonical_split(name: str) -> str:
    """``train``, ``validation`` or ``test`` for a split's name or alias (``val``, ``PublicTest``,
    ...); other names as they are."""
    return _split_key(name) or name


def _label(name: str) -> str:
    return canonical_label(name) or name.strip().lower()


def list_splits(data: str | os.PathLike[str]) -> list[str]:
    """The splits present in `data` (``train``, ``validation``, ``test``)."""
    path = Path(data)
    if path.is_file():
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                usages = {_split_key(row.get("Usage") or "") for row in csv.DictReader(handle)}
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"{path}: not a FER2013 CSV file ({exc})") from None
        return [s for s in _SPLIT_NAMES if s in usages]
    return [s for s in _SPLIT_NAMES if _split_dir(path, s) is not None]


def _split_dir(root: Path, split: str) -> Path | None:
    if not root.is_dir():
        return None
    for child in sorted(root.iterdir()):
        if child.is_dir() and _split_key(child.name) == split:
            return child
    return None


def _system_folder(name: str) -> bool:
    """Hidden and file-system folders (a volume's ``lost+found``, a desktop's trash) are no class."""
    return name.startswith(".") or name in {"lost+found", "System Volume Information", "$RECYCLE.BIN"}


def _unlisted(exc: OSError) -> None:
    """A folder of the dataset that cannot be listed: its images would silently drop out."""
    raise DatasetError(f"{exc.filename}: a dataset folder that cannot be listed ({exc.strerror or exc})")


def _read_folder(root: Path) -> list[Sample]:
    split = _split_key(root.name)
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not _system_folder(p.name)):
        for dirpath, dirs, files in os.walk(class_dir, onerror=_unlisted):
            dirs.sort()
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                    path = os.path.join(dirpath, name)
                    key = Path(os.path.relpath(path, root)).as_posix()
                    samples.append(Sample(path, _label(class_dir.name), path, split=split, key=key))
    return samples


def _read_csv(path: Path, split: str | None, unreadable: list[tuple[str, str]] | None) -> list[Sample]:
    try:
        return _read_csv_rows(path, split, unreadable)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a FER2013 CSV file ({exc})") from None


def _read_csv_rows(path: Path, split: str | None, unreadable: list[tuple[str, str]] | None) -> list[Sample]:
    """The rows of a FER2013 CSV (of one split). A bad row (an emotion that is no id, pixels
    that are no square image of 0-255 values) is left out, as `decode_samples` leaves out a
    broken file: three bad rows among thousands cost three images, not the run. Each is added
    to `unreadable` as ``(name, reason)``, or without that list named in a warning."""
    samples: list[Sample] = []
    bad: list[tuple[str, str]] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{path}: not a FER2013 CSV (missing columns {sorted(missing)})")
        for row_number, row in enumerate(reader, start=2):
            if split is not None and _split_key(row.get("Usage") or "") != split:
                continue
            try:
                emotion = int(row["emotion"] or "")
                if not 0 <= emotion < len(FER2013_CSV_LABELS):
                    raise ValueError(f"emotion {emotion} is not an id 0-{len(FER2013_CSV_LABELS) - 1}")
                label = FER2013_CSV_LABELS[emotion]
                values = np.asarray((row["pixels"] or "").split(), dtype=np.int64)
                if values.size and (values.min() < 0 or values.max() > 255):
                    raise ValueError("a pixel value outside 0-255")
                pixels = values.astype(np.uint8)
                side = round(len(pixels) ** 0.5)
                if side * side != len(pixels) or side == 0:
                    raise ValueError(f"{len(pixels)} pixels is not a square image")
            except (ValueError, OverflowError) as exc:
                bad.append((f"{path.name}:{row_number}", f"line {row_number}: bad row ({exc})"))
                continue
            sample_split = _split_key(row.get("Usage") or "")
            samples.append(
                Sample(pixels.reshape(side, side), label, f"{path.name}:{row_number}", split=sample_split)
            )
    if bad and not samples:
        raise DatasetError(f"{path}: none of its {len(bad)} rows could be read ({bad[0][1]})")
    if bad and unreadable is not None:
        unreadable.extend((name, f"{path}, {reason}") for name, reason in bad)
    elif bad:
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        warnings.warn(
            f"{path}: {len(bad)} of {len(bad) + len(samples)} rows could not be read and are left out: "
            f"{'; '.join(reason for _, reason in bad[:5])}{more}",
            stacklevel=4,
        )
    return samples


def read_samples(
    data: str | os.PathLike[str],
    split: str | None = None,
    *,
    unreadable: list[tuple[str, str]] | None = None,
) -> list[Sample]:
    """The labelled samples of one split of `data` (or of `data` itself when it is a split).

    The bad rows of a FER2013 CSV are left out: appended to `unreadable` as ``(name, reason)``
    when it is given (`emovit.evaluation.evaluate` lists them in ``failures.csv``), else named
    in a warning.

    Raises:
        DatasetError: no such folder/file, no such split, or no images.
    """
    path = Path(data)
    if not path.exists():
        raise DatasetError(f"{path}: no such dataset folder or CSV file")
    split = canonical_split(split) if split else split
    if path.is_file():
        samples = _read_csv(path, split, unreadable)
    else:
        root = _split_dir(path, split) if split else None
        if split and root is None:
            if any(_split_key(p.name) for p in path.iterdir() if p.is_dir()):
                raise DatasetError(f"{path}: has no {split!r} split (found {list_splits(path)})")
            own = _split_key(path.name)
            if own is not None and own != split:  # never another split in its place (test for validation)
                raise DatasetError(
                    f"{path} is the {own!r} split, not the {split!r} one: pass the folder holding the splits"
                )
            root = path  # DATA is itself one split: <class>/<images>
        samples = _read_folder(root or path)
    if not samples:
        where = f"{path} ({split} split)" if split else str(path)
        loose = _loose_images(root or path) if path.is_dir() else 0
        hint = (  # a flat folder: the label is the class folder's name (a vote file keys by it too)
            f" ({loose:,} images lie directly in it: a labelled folder holds one folder per class, "
            "<class>/<image>, or split folders of them)"
            if loose
            else ""
        )
        raise DatasetError(f"{where}: no labelled images found{hint}")
    return samples


def _loose_images(folder: Path) -> int:
    """Images directly in `folder` (not in a class folder)."""
    try:
        return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    except OSError:
        return 0


def class_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """Images per label, canonical emotions first."""
    counts = Counter(s.label for s in samples)
    return {label: counts[label] for label in order_labels(counts)}


@dataclass
class LabelledImages:
    """Decoded images of one split.

    Attributes:
        images: ``N x H x W x 3`` ``uint8``.
        labels: ``N`` class indices into `classes` (for soft targets: their most likely class).
        classes: the class names, in the model's id order.
        names: the images' names, for reports.
        targets: ``N x K`` float32 training targets: one-hot `labels` unless soft targets
            (e.g. FER+ vote distributions) were given.
        unreadable: the split's images that could not be read and are left out, each as its
            error (``name: reason``).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    names: list[str]
    targets: np.ndarray | None = field(default=None, repr=False)
    unreadable: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.targets is None:
            self.targets = np.eye(len(self.classes), dtype=np.float32)[self.labels]

    def __len__(self) -> int:
        return len(self.labels)


def decode_samples(
    samples: Sequence[Sample],
    classes: Sequence[str],
    *,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    targets: np.ndarray | None = None,
    threads: int | None = None,
) -> LabelledImages:
    """Decode every sample once (threads) into one array.

    Args:
        samples: the images and their labels.
        classes: the class order of `LabelledImages.labels` (every label must be one of them,
            unless `targets` are given).
        transform: applied to each decoded image in its worker thread; training passes the
            model's `emovit.preprocess.Preprocessor.resize` so that images reach the model's
            input size exactly as at inference. Without it all images must share one size.
        targets: ``N x len(classes)`` soft targets (rows summing to 1) instead of the samples'
            labels.
        threads: decoding threads (default: up to 8).

    Images that cannot be read are left out with a warning naming them (`LabelledImages.names`
    lists the kept ones).

    Raises:
        DatasetError: a label is not among `classes`, the images differ in size, or none of
            them could be read.
    """
    from emovit.imageio import load_images

    index = {label: i for i, label in enumerate(classes)}
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float32)
        if targets.shape != (len(samples), len(classes)):
            raise DatasetError(
                f"targets must be {len(samples)} x {len(classes)} (samples x classes), got {targets.shape}"
            )
        labels = targets.argmax(axis=1).astype(np.int64)
    else:
        unknown = sorted({s.label for s in samples} - set(index))
        if unknown:
            raise DatasetError(f"labels {unknown} are not among the model's classes {list(classes)}")
        labels = np.asarray([index[s.label] for s in samples], dtype=np.int64)
    decoded = load_images(
        [s.source for s in samples],
        names=[s.name for s in samples],
        threads=threads,
        then=transform,
        errors="collect",
    )
    failed = [i for i, image in enumerate(decoded) if isinstance(image, ImageError)]
    unreadable: list[str] = []
    if failed:  # a few broken files among thousands: left out, named, the rest goes on
        if len(failed) == len(samples):
            raise DatasetError(f"none of the {len(samples)} images could be read (first: {decoded[0]})")
        shown = "; ".join(str(decoded[i]) for i in failed[:5])
        more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        left_out = f"{len(failed)} of {len(samples)} images could not be read and are left out"
        warnings.warn(f"{left_out}: {shown}{more}", stacklevel=2)
        unreadable = [str(decoded[i]) for i in failed]
        keep = np.setdiff1d(np.arange(len(samples)), failed)
        samples = [samples[i] for i in keep]
        decoded = [decoded[i] for i in keep]
        labels = labels[keep]
        targets = targets[keep] if targets is not None else None
    shapes = sorted({image.shape for image in decoded})
    if len(shapes) > 1:
        raise DatasetError(
            f"the images differ in size ({', '.join(str(s[:2]) for s in shapes[:4])}, ...); "
            "resize them while decoding (transform=Preprocessor.resize)"
        )
    channels = shapes[0][2] if shapes else 3
    return LabelledImages(
        images=np.stack(decoded) if decoded else np.zeros((0, 1, 1, channels), np.uint8),
        labels=labels,
        classes=tuple(classes),
        names=[s.name for s in samples],
        targets=targets,
        unreadable=unreadable,
    )
