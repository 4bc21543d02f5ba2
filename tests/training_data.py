"""Small labelled datasets written by the tests: an ImageFolder tree and a FER2013 CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emovit.data import FER2013_CSV_LABELS

CLASSES = ("angry", "happy", "sad", "surprise")
USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}


def face_like(label_index: int, rng: np.random.Generator, size: int = 30) -> np.ndarray:
    """A grey image whose pattern depends on the class, so a model can learn it."""
    y, x = np.mgrid[0:size, 0:size] / size
    pattern = [np.sin(6 * x), np.sin(6 * y), np.sin(6 * (x + y)), np.cos(9 * x * y)][label_index % 4]
    image = 128 + 80 * pattern + rng.normal(0, 20, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8)


def dataset_fixture(name: str, per_class: dict[str, int]) -> Any:
    """A module-scoped fixture answering the root of a dataset written once by `write_dataset`."""

    @pytest.fixture(scope="module")
    def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp(name) / "faces"
        write_dataset(root, per_class)
        return root

    return dataset


def write_dataset(root: Path, per_class: dict[str, int], size: int = 30, seed: int = 0) -> dict[str, list]:
    """ImageFolder tree ``root/<split>/<class>/*.png`` and the same pixels as ``root.csv``."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {}
    csv_path = root.with_suffix(".csv")
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for split, count in per_class.items():
            rows[split] = []
            for ci, label in enumerate(CLASSES):
                folder = root / split / label
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    pixels = face_like(ci, rng, size)
                    Image.fromarray(pixels).save(folder / f"{i:03d}.png")
                    writer.writerow(
                        [FER2013_CSV_LABELS.index(label), " ".join(map(str, pixels.ravel())), USAGE[split]]
                    )
                    rows[split].append((label, pixels))
    return rows


#: FER+ vote columns, in FER+'s order and spelling.
FERPLUS_COLUMNS = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
_FERPLUS_NAME = {"angry": "anger", "happy": "happiness", "sad": "sadness", "surprise": "surprise"}


def write_votes(root: Path, path: Path) -> Path:
    """A FER+-style vote file for the tree `root` (``split,file,<10 vote counts>``): 7 votes for
    the folder's class, 2 for the next class, 1 contempt; per class, the first training image
    gets only not-a-face votes (no target), and in validation the first image a tie, the second
    a contempt majority (no majority label)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "file", *FERPLUS_COLUMNS])
        for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for ci, label in enumerate(CLASSES):
                other = _FERPLUS_NAME[CLASSES[(ci + 1) % len(CLASSES)]]
                for i, image in enumerate(sorted((split_dir / label).iterdir())):
                    counts = dict.fromkeys(FERPLUS_COLUMNS, 0)
                    counts.update({_FERPLUS_NAME[label]: 7, other: 2, "contempt": 1})
                    if split_dir.name == "train" and i == 0:
                        counts = {**dict.fromkeys(FERPLUS_COLUMNS, 0), "NF": 10}
                    elif split_dir.name == "validation" and i == 0:
                        counts.update({_FERPLUS_NAME[label]: 4, other: 4, "contempt": 2})
                    elif split_dir.name == "validation" and i == 1:
                        counts.update({_FERPLUS_NAME[label]: 3, other: 1, "contempt": 6})
                    row = [counts[c] for c in FERPLUS_COLUMNS]
                    writer.writerow([split_dir.name, f"{label}/{image.name}", *row])
    return path
