"""The seven canonical emotions and the mapping from any checkpoint's `id2label` onto them.

Checkpoints carry their own labels in their own order (the reference model's is sad, disgust,
angry, neutral, fear, surprise, happy). emovit maps them by *name*, never by position, so every
model reports the same seven names; labels it does not know (e.g. ``contempt``) are kept as they are.

Examples:
    >>> canonical_label("Happiness")
    'happy'
    >>> LabelMap.from_id2label({0: "sad", 1: "contempt"}).names
    ('sad', 'contempt')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from emovit.errors import LabelError

__all__ = ["ALIASES", "EMOTIONS", "LabelMap", "canonical_label", "order_labels"]

#: The canonical emotions, in the fixed order in which results list them.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

#: Other spellings found in datasets and checkpoints, lower case, mapped to the canonical name.
ALIASES: Mapping[str, str] = {
    "anger": "angry",
    "angered": "angry",
    "mad": "angry",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happiness": "happy",
    "happy face": "happy",
    "joy": "happy",
    "joyful": "happy",
    "smile": "happy",
    "calm": "neutral",
    "neutrality": "neutral",
    "sadness": "sad",
    "unhappy": "sad",
    "surprised": "surprise",
    "surprising": "surprise",
    "suprise": "surprise",
}


#: Aliases that name a neighbouring feeling rather than the emotion itself: beside a label
#: naming that emotion exactly, they are a class of their own.
_NEAR_SYNONYMS = frozenset({"calm", "smile", "joy", "joyful", "unhappy", "mad", "afraid", "scared"})


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def canonical_label(name: str) -> str | None:
    """Return the canonical emotion for `name` (case-insensitive, aliases allowed), else None."""
    key = _normalise(name)
    if key in EMOTIONS:
        return key
    return ALIASES.get(key)


def order_labels(names: Iterable[str]) -> list[str]:
    """The canonical emotions among `names` in `EMOTIONS` order, then the others as given
    (the one order every result, dataset and report lists labels in).

    Examples:
        >>> order_labels(["sad", "contempt", "angry"])
        ['angry', 'sad', 'contempt']
    """
    names = list(dict.fromkeys(names))
    return [e for e in EMOTIONS if e in names] + [n for n in names if n not in EMOTIONS]


@dataclass(frozen=True)
class LabelMap:
    """How a checkpoint's class ids map onto emotion names.

    Attributes:
        names: the name for each class id, in id order: the canonical emotion where the
            checkpoint's label maps onto one, else the checkpoint's label, lower-cased.
        order: the class ids in the order results list them: canonical emotions first (in
            `EMOTIONS` order), then the unknown labels in id order.
    """

    names: tuple[str, ...]
    order: tuple[int, ...]

    @classmethod
    def from_id2label(cls, id2label: Mapping[int | str, str]) -> LabelMap:
        """Build the map from a config's `id2label` (keys may be ints or digit strings)."""
        try:
            by_id = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError) as exc:
            raise LabelError(f"id2label keys must be integers, got {list(id2label)!r}") from exc
        if sorted(by_id) != list(range(len(by_id))):
            raise LabelError(f"id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}")
        names: list[str] = []
        # a near-synonym whose emotion another label names exactly is a class of its own
        # (RAVDESS has both "neutral" and "calm"): it keeps its own name, an unknown label
        exact = {_normalise(raw) for raw in by_id.values() if _normalise(raw) in EMOTIONS}
        for i in range(len(by_id)):
            raw = by_id[i]
            name = canonical_label(raw) or _normalise(raw)
            if name in exact and _normalise(raw) in _NEAR_SYNONYMS:
                name = _normalise(raw)
            if name in names:
                first = names.index(name)
                raise LabelError(
                    f"labels {by_id[first]!r} (id {first}) and {raw!r} (id {i}) both mean {name!r}"
                )
            names.append(name)
        ordered = order_labels(names)
        return cls(names=tuple(names), order=tuple(names.index(n) for n in ordered))

    @property
    def ordered_names(self) -> tuple[str, ...]:
        """The label names in result order (canonical emotions first)."""
        return tuple(self.names[i] for i in self.order)

    @property
    def unknown(self) -> tuple[str, ...]:
        """Labels of the checkpoint that are not one of the canonical emotions."""
        return tuple(n for n in self.names if n not in EMOTIONS)

    @property
    def missing(self) -> tuple[str, ...]:
        """Canonical emotions this checkpoint cannot predict."""
        return tuple(e for e in EMOTIONS if e not in self.names)

    def __len__(self) -> int:
        return len(self.names)
