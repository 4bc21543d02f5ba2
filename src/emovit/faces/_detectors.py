"""Face detectors behind one interface: YuNet, OpenCV's Haar cascade, and "none"."""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from emovit.errors import DependencyError, DownloadError, ModelLoadError, OptionError

__all__ = [
    "Detection",
    "DetectorName",
    "FaceDetector",
    "HaarDetector",
    "ScaledDetector",
    "WholeImageDetector",
    "YuNetDetector",
    "check_detector",
    "create_detector",
]

DetectorName = Literal["yunet", "haar", "auto", "none"]
# Images (after YuNet's downscaling) whose short side is under this hold no detectable face.
_MIN_DETECT_SIDE = 10


@dataclass
class Detection:
    """A face found in an image: box ``(x1, y1, x2, y2)`` in pixels (floats), the detector's
    score (None when it gives none), and five landmarks ``(x, y)`` when available (right eye,
    left eye, nose tip, right and left mouth corners, as seen in the image: the subject's)."""

    box: tuple[float, float, float, float]
    score: float | None = None
    landmarks: np.ndarray | None = None
    whole_image: bool = False  # the "face" is the whole image: classify it as it is

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


class FaceDetector(Protocol):
    """Finds faces in an ``HxWx3`` ``uint8`` RGB image. emovit's detectors are safe to call
    from several threads at once (the OpenCV ones serialise their calls)."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DependencyError(
            "opencv-python-headless", "faces", "face detection", option="detector"
        ) from None
    return cv2


class WholeImageDetector:
    """``none``: the whole image is one face (pre-cropped data such as FER2013)."""

    name = "none"

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        return [Detection(box=(0.0, 0.0, float(width), float(height)), whole_image=True)]


class YuNetDetector:
    """OpenCV's ``FaceDetectorYN`` with the OpenCV Zoo YuNet (2023mar) ONNX model.

    Large images are scaled down to `max_side` for detection (boxes are mapped back)."""

    name = "yunet"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        max_side: int = 1280,
    ) -> None:
        cv2 = _cv2()
        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(f"{path}: no such YuNet model file", option="detector_model")
        try:
            self._detector = cv2.FaceDetectorYN.create(
                str(path), "", (320, 320), score_threshold, nms_threshold, 5000
            )
        except cv2.error as exc:
            raise ModelLoadError(
                f"{path}: OpenCV cannot load it as a YuNet model ({exc})", option="detector_model"
            ) from None
        self.model_path = path
        self.max_side = max_side
        self._lock = threading.Lock()  # setInputSize + detect must not interleave across threads

    def detect(self, image: np.ndarray) -> list[Detection]:
        with self._lock:
            return self._detect(image)

    def _detect(self, image: np.ndarray) -> list[Detection]:
        cv2 = _cv2()
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if min(height, width) * scale < _MIN_DETECT_SIDE:
            return []  # a strip too thin to hold a face (and too thin for YuNet's input)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self._detector.detect(bgr)
        out = []
        for row in faces if faces is not None else []:
            if not np.isfinite(row[:15]).all() or row[2] <= 0 or row[3] <= 0:
                continue  # YuNet can emit non-finite or empty boxes on noise (found by fuzzing)
            x, y, w, h = (float(v) / scale for v in row[:4])
            if x >= width or y >= height or x + w <= 0 or y + h <= 0 or max(w, h) > 2 * max(width, height):
                continue  # a box outside the image or larger than it: not a face
            marks = row[4:14].reshape(5, 2).astype(np.float64) / scale
            out.append(Detection(box=(x, y, x + w, y + h), score=float(row[14]), landmarks=marks))
        return out


class ScaledDetector:
    """Runs `detector` on a copy of each image scaled down to `max_side` (its longest side) and
    maps the boxes and landmarks back to the image's pixels: detection costs about the square
    of the scale (4x less at half size), and faces are still cropped from the full image.

    Examples:
        >>> inner = WholeImageDetector()
        >>> ScaledDetector.wrap(inner, 320) is inner  # the whole image needs no search
        True
    """

    def __init__(self, detector: FaceDetector, max_side: int) -> None:
        self.detector, self.max_side = detector, max_side
        self.name = detector.name

    @classmethod
    def wrap(cls, detector: FaceDetector, max_side: int | None) -> FaceDetector:
        """`detector` scaled to `max_side` (None: as it is); never wraps twice."""
        inner = detector.detector if isinstance(detector, ScaledDetector) else detector
        if max_side is None or isinstance(inner, WholeImageDetector):
            return inner
        if isinstance(inner, YuNetDetector | HaarDetector) and max_side > inner.max_side:
            inner.max_side = max_side  # the detector's own cap (1280) would undo a larger search size
        return cls(inner, max_side)

    def detect(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        scale = self.max_side / max(height, width)
        if scale >= 1.0:
            return self.detector.detect(image)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        try:
            cv2 = _cv2()
            small = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
        except DependencyError:  # a custom detector without OpenCV around
            from PIL import Image

            small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
        sx, sy = width / size[0], height / size[1]
        out = []
        for det in self.detector.detect(small):
            x1, y1, x2, y2 = det.box
            marks = det.landmarks * np.array([sx, sy]) if det.landmarks is not None else None
            box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
            out.append(Detection(box=box, score=det.score, landmarks=marks, whole_image=det.whole_image))
        return out


class HaarDetector:
    """OpenCV's bundled frontal-face Haar cascade: always available offline, less accurate,
    no landmarks and no score."""

    name = "haar"

    def __init__(
        self, *, min_neighbors: int = 5, scale_factor: float = 1.1, min_size: int = 24, max_side: int = 1280
    ) -> None:
        cv2 = _cv2()
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ModelLoadError(f"{path}: OpenCV's Haar cascade could not be loaded", option="detector")
        self.min_neighbors, self.scale_factor, self.min_size = min_neighbors, scale_factor, min_size
        self.max_side = max_side  # searched on a copy this long at most, as YuNet (full size took seconds)
        self._lock = threading.Lock()  # one cascade object is not safe to share across threads

    def detect(self, image: np.ndarray) -> list[Detection]:
        cv2 = _cv2()
        height, width = image.shape[:2]
        if min(height, width) < _MIN_DETECT_SIDE:
            return []
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        with self._lock:  # the cascade only: converting and scaling need no lock
            boxes = self._cascade.detectMultiScale(
                grey,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(self.min_size,) * 2,
            )
        return [
            Detection(box=(x / scale, y / scale, (x + w) / scale, (y + h) / scale))
            for x, y, w, h in (map(float, box) for box in boxes)
        ]


def check_detector(name: object) -> None:
    """Raise the `DependencyError` that `create_detector` would for a named detector that needs
    OpenCV (haar, yunet) where it is not installed: cheap, so a caller says it before it loads
    a model (seconds). Other names and detector objects pass."""
    if name in ("haar", "yunet"):
        _cv2()


def create_detector(
    name: DetectorName | str = "auto",
    *,
    model_path: str | os.PathLike[str] | None = None,
    score_threshold: float = 0.5,
) -> FaceDetector:
    """Build a detector by name.

    * ``yunet``: `model_path`, else the cached model, else a verified download (error if that fails);
    * ``haar``: OpenCV's bundled cascade;
    * ``auto``: yunet when its model is cached or can be fetched, else haar with one warning;
      without OpenCV installed, the whole image is one face, with one warning;
    * ``none``: the whole image is one face.
    """
    from emovit.faces._cache import YUNET, fetch

    if name == "none":
        return WholeImageDetector()
    if name == "haar":
        return HaarDetector()
    if name not in ("yunet", "auto"):
        raise OptionError(f"unknown detector {name!r}; use yunet, haar, auto or none", option="detector")
    try:
        _cv2()
    except DependencyError as exc:
        if name == "yunet":
            raise
        warnings.warn(f"{exc}; without it each image is classified as one face", stacklevel=2)
        return WholeImageDetector()
    if model_path is not None:
        return YuNetDetector(model_path, score_threshold=score_threshold)
    try:
        return YuNetDetector(fetch(YUNET), score_threshold=score_threshold)
    except DownloadError as exc:
        if name == "yunet":
            raise DownloadError(
                f"the YuNet face detector is not available: {exc}. Fetch it once with `emovit models "
                "fetch yunet` (or --from PATH), pass --detector-model PATH to a local copy, or use "
                "--detector auto (falls back to haar) / haar / none"
            ) from None
        warnings.warn(
            f"YuNet face detector unavailable ({exc}); using OpenCV's Haar cascade instead (offline, "
            "`emovit models fetch yunet --from PATH` installs a local copy of the file)",
            stacklevel=2,
        )
        return HaarDetector()
