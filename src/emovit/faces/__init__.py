"""Faces: detectors (YuNet, Haar, none) behind one interface, crops and the model cache.

Needs the ``[faces]`` extra (``opencv-python-headless<5``) for yunet and haar.

Examples:
    >>> from emovit.faces import create_detector
    >>> detector = create_detector("none")
    >>> import numpy as np
    >>> detector.detect(np.zeros((10, 20, 3), np.uint8))[0].box
    (0.0, 0.0, 20.0, 10.0)
"""

from emovit.faces._cache import YUNET, DownloadError, emovit_home, fetch
from emovit.faces._crop import BorderMode, crop_face, eye_angle
from emovit.faces._detectors import (
    Detection,
    DetectorName,
    FaceDetector,
    HaarDetector,
    WholeImageDetector,
    YuNetDetector,
    create_detector,
)

__all__ = [
    "YUNET",
    "BorderMode",
    "Detection",
    "DetectorName",
    "DownloadError",
    "FaceDetector",
    "HaarDetector",
    "WholeImageDetector",
    "YuNetDetector",
    "create_detector",
    "crop_face",
    "emovit_home",
    "eye_angle",
    "fetch",
]
