"""Faults for the Ray tests, importable by Ray's worker processes (the tests put the repository
on their PYTHONPATH)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emovit.faces import Detection, WholeImageDetector


class DieOnce:
    """A whole-image face detector that kills its process at its `after`-th image, once per
    test: the first process to get there writes `marker` and dies; every later one (the actor
    Ray restarts) sees the marker and goes on."""

    name = "none"  # the whole-image detector, but for one death

    def __init__(self, marker: str, after: int) -> None:
        self.marker, self.after, self.seen = marker, after, 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        self.seen += 1
        if self.seen == self.after and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return WholeImageDetector().detect(image)


class DieOnWidth:
    """A whole-image face detector that kills its process on every image `width` pixels wide
    (a poison input: the worker dies however often Ray tries it)."""

    name = "none"  # the whole-image detector, but for one width

    def __init__(self, width: int) -> None:
        self.width = width

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.shape[1] == self.width:
            os._exit(1)
        return WholeImageDetector().detect(image)
