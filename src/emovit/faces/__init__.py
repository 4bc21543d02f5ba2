"""Faces: detectors (YuNet, Haar, none) behind one interface, crops and the model cache.

Needs the ``[faces]`` extra (``opencv-python-headless<5``) for yunet and haar.

Examples:
    >>> from emovit.faces import create_detector
    >>> detector = create_detector("none")
    >>> import numpy as np
    >>> detector.detect(np.zeros((10, 20, 3), np.uint8))[0].box
    (0.0, 0.0, 20.0, 10.0)
"""

from emovit.errors import DownloadError
from emovit.faces._cache import YUNET, emovit_home, fetch, install
from emovit.faces._crop import BorderMode, crop_face, crop_matrix, eye_angle, to_grey
from emovit.faces._detectors import (
    Detection,
    DetectorName,
    FaceDetector,
    HaarDetector,
    ScaledDetector,
    WholeImageDetector,
    YuNetDetector,
    check_detector,
    create_detector,
)
from emovit.faces._options import DEFAULT_DETECTOR, FaceOptions, NoFacePolicy

__all__ = [
    "DEFAULT_DETECTOR",
    "YUNET",
    "BorderMode",
    "Detection",
    "DetectorName",
    "DownloadError",
    "FaceDetector",
    "FaceOptions",
    "HaarDetector",
    "NoFacePolicy",
    "ScaledDetector",
    "WholeImageDetector",
    "YuNetDetector",
    "check_detector",
    "create_detector",
    "crop_face",
    "crop_matrix",
    "emovit_home",
    "eye_angle",
    "fetch",
    "install",
    "to_grey",
]
