"""The files of `emovit explain` and `emovit predict --explain DIR`: per explained face,
``<stem>.face<i>.png`` (the face crop with its heat map and label, `FaceResult.plot_explanation`)
and ``<stem>.face<i>.npy`` (the raw map: float32, 0..1, at the crop's pixel size), each
written atomically (whole or not at all).

Examples:
    >>> results = rec.explain(["a.jpg"])  # doctest: +SKIP
    >>> write_explanations(results[0], "why", "a")  # doctest: +SKIP
    [PosixPath('why/a.face0.png'), PosixPath('why/a.face0.npy')]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from emovit.fileio import atomic_open, write_image
from emovit.results import ImageResult

__all__ = ["write_explanations"]


def write_explanations(
    result: ImageResult,
    folder: str | os.PathLike[str],
    stem: str,
    *,
    check: Callable[[Path], Path] = lambda path: path,
) -> list[Path]:
    """Write the PNG and the NPY of every face of `result` that has an explanation and its
    crop (`emovit.EmotionRecognizer.explain` keeps both) into `folder`; returns the paths.
    `check` sees each target first (and raises ``OSError`` for one that must not be written)."""

    written: list[Path] = []
    for index, face in enumerate(result.faces):
        if face.explanation is None or face.crop is None:
            continue
        base = Path(folder) / f"{stem}.face{index}"
        png, npy = check(base.with_name(base.name + ".png")), check(base.with_name(base.name + ".npy"))
        write_image(png, face.plot_explanation(), "PNG")
        with atomic_open(npy, "wb", durable=False) as handle:
            np.save(handle, face.explanation.crop_map.astype(np.float32, copy=False))
        written += [png, npy]
    return written
