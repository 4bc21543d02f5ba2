"""Face crops: a square box around the detection, with margin, optional eye-levelling, and
padding (edge-replicate) or clipping at the image borders."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from emovit.faces._detectors import Detection, _cv2

__all__ = ["BorderMode", "crop_face", "crop_matrix", "eye_angle", "to_grey"]

BorderMode = Literal["pad", "clip"]


def eye_angle(landmarks: np.ndarray) -> float:
    """Angle in degrees of the line from the image-left eye to the image-right eye."""
    (x0, y0), (x1, y1) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def _square(detection: Detection, margin: float, align: bool) -> tuple[float, float, int, float]:
    """The crop's centre, side (pixels) and rotation (degrees) for a detection."""
    x1, y1, x2, y2 = detection.box
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    angle = eye_angle(detection.landmarks) if align and detection.landmarks is not None else 0.0
    return (x1 + x2) / 2, (y1 + y2) / 2, max(1, round(side)), angle


def crop_matrix(
    detection: Detection, *, margin: float = 0.2, align: bool = False, border: BorderMode = "pad"
) -> np.ndarray:
    """The 2x3 affine map from image pixels to the pixels of `crop_face`'s crop (same
    arguments): where each crop pixel came from, e.g. to lay a map of the crop over the image."""
    cx, cy, side_px, angle = _square(detection, margin, align)
    if abs(angle) < 1e-3:
        left, top = round(cx - side_px / 2), round(cy - side_px / 2)
        if border == "clip":
            left, top = max(left, 0), max(top, 0)
        return np.array([[1.0, 0.0, -left], [0.0, 1.0, -top]])
    # cv2.getRotationMatrix2D((cx, cy), angle, 1.0), then the crop's centre moved to its middle
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.array(
        [
            [cos, sin, (1 - cos) * cx - sin * cy + side_px / 2 - cx],
            [-sin, cos, sin * cx + (1 - cos) * cy + side_px / 2 - cy],
        ]
    )


def crop_face(
    image: np.ndarray,
    detection: Detection,
    *,
    margin: float = 0.2,
    align: bool = False,
    border: BorderMode = "pad",
) -> np.ndarray:
    """Cut the face out of `image` (``HxWx3`` ``uint8``) as a square ``uint8`` crop.

    Args:
        margin: extra context around the face box, as a fraction of its larger side.
        align: rotate about the face centre so that the eyes are level (needs landmarks).
        border: ``pad`` replicates edge pixels where the square leaves the image; ``clip``
            cuts the square at the borders (the crop may then be non-square). A turned
            (aligned) square cannot be cut along the borders: there ``clip`` replicates edge
            pixels as ``pad`` does (black wedges would reach the model).
    """
    cx, cy, side_px, angle = _square(detection, margin, align)
    height, width = image.shape[:2]
    if abs(angle) < 1e-3:
        left, top = round(cx - side_px / 2), round(cy - side_px / 2)
        if border == "clip":
            crop = image[max(top, 0) : min(top + side_px, height), max(left, 0) : min(left + side_px, width)]
            return np.ascontiguousarray(crop) if crop.size else image[:1, :1].copy()
        if left >= 0 and top >= 0 and left + side_px <= width and top + side_px <= height:
            return np.ascontiguousarray(image[top : top + side_px, left : left + side_px])
        pad = [
            (max(0, -top), max(0, top + side_px - height)),
            (max(0, -left), max(0, left + side_px - width)),
            (0, 0),
        ]
        padded = np.pad(image, pad, mode="edge")
        top, left = top + pad[0][0], left + pad[1][0]
        return np.ascontiguousarray(padded[top : top + side_px, left : left + side_px])
    cv2 = _cv2()
    matrix = crop_matrix(detection, margin=margin, align=align, border=border)
    return cv2.warpAffine(
        image, matrix, (side_px, side_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def to_grey(image: np.ndarray) -> np.ndarray:
    """An RGB ``uint8`` image as grey in three equal channels (Pillow's ``L`` luma, the
    conversion grey datasets such as FER2013 were made with)."""
    from PIL import Image

    if image.ndim == 3 and image.shape[2] == 3:
        first = image[..., 0]
        if np.array_equal(first, image[..., 1]) and np.array_equal(first, image[..., 2]):
            return np.ascontiguousarray(image)  # grey already (a FER2013 face): L of it is itself
    grey = np.asarray(Image.fromarray(np.ascontiguousarray(image)).convert("L"))
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
