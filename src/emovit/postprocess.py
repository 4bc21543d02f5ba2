"""From model logits to results: softmax, the canonical label order, test-time augmentation.

Every door (the predictor, export checks, evaluation, training reports) turns logits into
probabilities here, so there is one softmax and one label order.

Examples:
    >>> import numpy as np
    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "TTA_MODES",
    "TtaMode",
    "flip_pixels",
    "merge_tta",
    "softmax",
    "to_result_order",
    "tta_probabilities",
]

TtaMode = Literal["none", "flip"]
TTA_MODES: tuple[str, ...] = ("none", "flip")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits (float64 in, float64 out)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def to_result_order(probs: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Reorder the columns of `probs` (checkpoint id order) into result order
    (`emovit.labels.LabelMap.order`: canonical emotions first)."""
    return probs[:, np.asarray(order)]


def flip_pixels(pixel_values: np.ndarray) -> np.ndarray:
    """Mirror a preprocessed ``NCHW`` batch left to right (the flip of flip-TTA)."""
    return np.ascontiguousarray(pixel_values[..., ::-1])


def merge_tta(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Merge the probabilities of several views of the same faces: their mean."""
    return np.mean(np.stack(list(probs)), axis=0)


def tta_probabilities(
    classify: Callable[[np.ndarray], np.ndarray], pixel_values: np.ndarray, mode: TtaMode
) -> np.ndarray:
    """Probabilities of a preprocessed batch under `mode`: ``none`` one pass, ``flip`` the
    mean over the faces and their mirror images."""
    if mode == "none":
        return classify(pixel_values)
    if mode == "flip":
        return merge_tta([classify(pixel_values), classify(flip_pixels(pixel_values))])
    raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")
