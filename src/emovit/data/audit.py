"""Duplicate and leak audit: exact and near-duplicate images within and across splits.

* **exact**: identical pixels after decoding to grey (so a PNG and a lossless re-encoding
  of it match, whatever the file bytes);
* **near**: perceptual hashes (``imagehash.phash``, 64 bits) within `max_distance` bits,
  which catches resized and re-compressed copies.

Counts for a split pair ``(a, b)``: how many images of ``b`` have a copy in ``a``; for
``a == b``, how many images are extra copies of an earlier image of the same split.
``label_conflicts`` counts duplicate pairs (exact or near, in any splits) whose labels differ.
Images that cannot be read (and a FER2013 CSV's bad rows) are listed (``unreadable``) and take
part in no pair.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emovit.data.datasets import Sample, list_splits, read_samples
from emovit.errors import ImageError
from emovit.imageio import load_images

__all__ = ["AuditReport", "DEFAULT_MAX_DISTANCE", "audit", "find_leaks", "hash_samples"]

#: Hamming distance (bits of 64) up to which two perceptual hashes count as the same image.
DEFAULT_MAX_DISTANCE = 4


@dataclass
class Hashes:
    """Hashes of a list of samples: an exact digest and a 64-bit perceptual hash each. A sample
    that could not be read has a digest of its own (equal to no other) and is in `failed`
    (index → the problem); it takes part in no pair."""

    exact: list[bytes]
    phash: np.ndarray  # uint64
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        """True where the sample was read and hashed."""
        mask = np.ones(len(self.exact), dtype=bool)
        mask[list(self.failed)] = False
        return mask


def _hash_image(image: np.ndarray) -> tuple[bytes, int]:
    import imagehash
    from PIL import Image

    grey = image.mean(axis=2).round().astype(np.uint8)
    digest = hashlib.blake2b(grey.tobytes() + str(grey.shape).encode(), digest_size=16).digest()
    bits = imagehash.phash(Image.fromarray(grey)).hash.flatten()
    return digest, int(np.packbits(bits).view(">u8")[0])


def hash_samples(
    samples: Sequence[Sample], threads: int | None = None, advance: Callable[[], None] | None = None
) -> Hashes:
    """Exact and perceptual hashes of every sample (decoded and hashed on threads); a sample
    that cannot be read is recorded in `Hashes.failed`, and the others go on. `advance` is
    called once per sample (a progress bar)."""

    def hashed(image: np.ndarray) -> tuple[bytes, int]:
        result = _hash_image(image)
        if advance is not None:
            advance()
        return result

    pairs = load_images(
        [s.source for s in samples],
        names=[s.name for s in samples],
        threads=threads,
        max_pixels=None,
        then=hashed,
        errors="collect",
    )
    failed = {i: str(p) for i, p in enumerate(pairs) if isinstance(p, ImageError)}
    if advance is not None:
        for _ in failed:  # the unreadable ones, counted too
            advance()
    pairs = [(uuid.uuid4().bytes, 0) if i in failed else p for i, p in enumerate(pairs)]
    phash = np.asarray([p[1] for p in pairs], dtype=np.uint64)
    return Hashes(exact=[p[0] for p in pairs], phash=phash, failed=failed)


def _near_pairs(a: Hashes, b: Hashes, max_distance: int, same: bool) -> np.ndarray:
    """``(i, j)`` index pairs of readable samples with perceptual hashes within `max_distance`
    bits (i < j when `same`)."""
    pairs = _near_hashes(a.phash, b.phash, max_distance, same)
    return pairs[a.ok[pairs[:, 0]] & b.ok[pairs[:, 1]]]


def _near_hashes(a: np.ndarray, b: np.ndarray, max_distance: int, same: bool) -> np.ndarray:
    """``(i, j)`` index pairs with Hamming distance <= max_distance (i < j when `same`)."""
    found = []
    chunk = 512
    for start in range(0, len(a), chunk):
        block = np.bitwise_count(a[start : start + chunk, None] ^ b[None, :])
        i, j = np.nonzero(block <= max_distance)
        i += start
        if same:
            keep = i < j
            i, j = i[keep], j[keep]
        found.append(np.stack([i, j], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


@dataclass
class AuditReport:
    """Result of `audit`; `to_dict` gives the JSON form of ``emovit audit --format json``."""

    images: dict[str, int]
    pairs: list[dict[str, Any]]
    label_conflicts: int
    max_distance: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)  # name, error: in no pair

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "pairs": self.pairs,
            "label_conflicts": self.label_conflicts,
            "max_distance": self.max_distance,
            "examples": self.examples,
            "unreadable": self.unreadable,
        }


def _split_samples(
    data: str | os.PathLike[str], bad_rows: dict[str, list[tuple[str, str]]]
) -> dict[str, list[Sample]]:
    """Each split's samples; a FER2013 CSV's bad rows go into `bad_rows` (by split)."""
    splits: list[str | None] = [*list_splits(data)] or [None]
    by_split = {}
    for split in splits:
        name = split or "all"
        by_split[name] = read_samples(data, split, unreadable=bad_rows.setdefault(name, []))
    return by_split


def audit(
    data: str | os.PathLike[str],
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    examples_per_pair: int = 5,
    threads: int | None = None,
    progress: bool | None = None,
) -> AuditReport:
    """Find exact and near duplicates within and across the splits of `data`. `progress`: a
    bar on stderr while the images are hashed (default: when stderr is a terminal)."""
    from emovit.progress import progress_bar

    bad_rows: dict[str, list[tuple[str, str]]] = {}
    by_split = _split_samples(data, bad_rows)
    total = sum(len(samples) for samples in by_split.values())
    with progress_bar(total, "hashing images", enabled=progress, unit="images") as advance:
        hashes = {split: hash_samples(samples, threads, advance) for split, samples in by_split.items()}
    names = list(by_split)
    pairs: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    conflicts = 0
    for ai, a in enumerate(names):
        for b in names[ai:]:
            same = a == b
            ha, hb = hashes[a], hashes[b]
            near = _near_pairs(ha, hb, max_distance, same)
            index_a: dict[bytes, int] = {}
            for i, digest in enumerate(ha.exact):
                index_a.setdefault(digest, i)
            exact_pairs = set()
            for j, digest in enumerate(hb.exact):
                first = index_a.get(digest)
                if first is not None and (not same or first < j):
                    exact_pairs.add((first, j))
            exact_b = {j for _, j in exact_pairs}  # for a == b: the later copies only
            near_only = {(int(i), int(j)) for i, j in near if (int(i), int(j)) not in exact_pairs}
            near_only = {(i, j) for i, j in near_only if ha.exact[i] != hb.exact[j]}
            near_b = {j for _, j in near_only} - exact_b
            all_pairs = exact_pairs | near_only
            sa, sb = by_split[a], by_split[b]
            conflicts += sum(sa[i].label != sb[j].label for i, j in all_pairs)
            pairs.append({"a": a, "b": b, "exact": len(exact_b), "near": len(near_b)})
            for i, j in sorted(all_pairs)[:examples_per_pair]:
                examples.append(
                    {
                        "a": sa[i].name,
                        "b": sb[j].name,
                        "kind": "exact" if (i, j) in exact_pairs else "near",
                        "distance": int(np.bitwise_count(ha.phash[i] ^ hb.phash[j])),
                        "labels": [sa[i].label, sb[j].label],
                    }
                )
    unreadable = [
        {"split": split, "name": name, "error": error}
        for split, rows in bad_rows.items()
        for name, error in rows
    ] + [
        {"split": split, "name": by_split[split][i].name, "error": error}
        for split, h in hashes.items()
        for i, error in sorted(h.failed.items())
    ]
    return AuditReport(
        images={split: len(samples) for split, samples in by_split.items()},
        pairs=pairs,
        label_conflicts=conflicts,
        max_distance=max_distance,
        examples=examples,
        unreadable=unreadable,
    )


def find_leaks(
    samples: Sequence[Sample],
    reference: Sequence[Sample],
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    threads: int | None = None,
) -> set[int]:
    """Indices of `samples` that have an exact or near copy in `reference` (e.g. train)."""
    hs, hr = hash_samples(samples, threads), hash_samples(reference, threads)
    exact_ref = set(hr.exact)
    leaked = {i for i, digest in enumerate(hs.exact) if digest in exact_ref}
    leaked |= {int(j) for j, _ in _near_pairs(hs, hr, max_distance, same=False)}
    return leaked
