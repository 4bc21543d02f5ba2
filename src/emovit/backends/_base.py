"""The interface every backend implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["Backend"]


class Backend(Protocol):
    """Runs the classifier: float32 ``NCHW`` pixel values in, float32 logits out."""

    name: str

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray: ...
