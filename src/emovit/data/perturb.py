"""The photo perturbations of the robustness report, on ``H x W x 3`` ``uint8`` face images:
down-then-up sampling, Gaussian blur, JPEG quality 30, rotation, crop shift and brightness.

Each is deterministic given the image and its index in the set (the index alternates the
direction of a rotation, shift or brightness change), so every model, and every epoch of a run
that is chosen on them (``emovit train --select robust-f1``), sees the same perturbed faces.
``scripts/robustness_report.py`` scores models on them; the trainer reads the same functions.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["PERTURBATIONS", "Perturb", "perturb_images"]

#: ``(image, index) -> perturbed image`` of the same shape.
Perturb = Callable[[np.ndarray, int], np.ndarray]


def _downscale(factor: float) -> Perturb:
    def apply(image: np.ndarray, _: int) -> np.ndarray:
        height, width = image.shape[:2]
        small = Image.fromarray(image).resize(
            (max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR
        )
        return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))

    return apply


def _blur(image: np.ndarray, _: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(1.5)))


def _jpeg(image: np.ndarray, _: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=30)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _rotate(image: np.ndarray, index: int) -> np.ndarray:
    angle = 15 if index % 2 else -15
    fill = tuple(int(v) for v in image.reshape(-1, 3).mean(axis=0))
    return np.asarray(
        Image.fromarray(image).rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    )


def _shift(image: np.ndarray, index: int) -> np.ndarray:
    height, width = image.shape[:2]
    dy, dx = [(0, 1), (0, -1), (1, 0), (-1, 0)][index % 4]
    sy, sx = round(0.1 * height) * dy, round(0.1 * width) * dx
    pad = max(abs(sy), abs(sx))
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return np.ascontiguousarray(padded[pad + sy : pad + sy + height, pad + sx : pad + sx + width])


def _brightness(image: np.ndarray, index: int) -> np.ndarray:
    factor = 1.4 if index % 2 else 0.6
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


#: The report's conditions in its order; ``clean`` (None) leaves the faces as they are.
PERTURBATIONS: dict[str, Perturb | None] = {
    "clean": None,
    "downscale x0.5": _downscale(0.5),
    "downscale x0.25": _downscale(0.25),
    "blur (sigma 1.5)": _blur,
    "JPEG q=30": _jpeg,
    "rotation +-15 deg": _rotate,
    "crop shift +-10 %": _shift,
    "brightness +-40 %": _brightness,
}


def perturb_images(images: np.ndarray, condition: str) -> np.ndarray:
    """``N x H x W x 3`` ``uint8`` faces under one of `PERTURBATIONS` (a new array)."""
    perturb = PERTURBATIONS[condition]
    if perturb is None:
        return images.copy()
    return np.stack([perturb(np.ascontiguousarray(image), i) for i, image in enumerate(images)])
