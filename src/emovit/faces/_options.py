"""`FaceOptions`: every setting of the face stage (detect, select, crop) in one typed object.

The library, the CLI, the server and the video path all take this one object, so each
option has one name and one default. ``margin``, ``align`` and ``grey`` default to None:
the loaded model's recorded framing (``emovit.json``) decides, and a value given here
overrides it.

Examples:
    >>> FaceOptions(detector="none").detector
    'none'
    >>> FaceOptions().replace(margin=0.0).margin
    0.0
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from emovit.errors import OptionError, check_count, check_flag, check_real

if TYPE_CHECKING:
    from emovit.faces._crop import BorderMode
    from emovit.faces._detectors import DetectorName, FaceDetector

__all__ = ["DEFAULT_DETECTOR", "FaceOptions", "NoFacePolicy"]

NoFacePolicy = Literal["skip", "whole", "raise"]
DEFAULT_DETECTOR: DetectorName = "auto"


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found and cropped.

    Attributes:
        detector: ``auto`` (YuNet when cached or downloadable, else OpenCV's Haar cascade with
            a warning), ``yunet``, ``haar``, ``none`` (each image is one face), or a detector.
        detector_model: a local YuNet ONNX file (instead of the cached or downloaded one).
        det_threshold: minimum detection score (yunet).
        margin: context around each face box, as a fraction of its larger side (None: the
            model's recorded framing, else 0.2).
        align: level the eyes with the detector's landmarks (None: the model's framing, else on).
        grey: convert crops to grey before the model (None: the model's framing, else off).
        border: ``pad`` (replicate edge pixels) or ``clip`` crops at the image borders.
        min_face: ignore faces smaller than this many pixels.
        max_faces: keep at most this many faces per image (the largest).
        no_face: images without a face: ``skip`` (a result with no faces), ``whole``
            (classify the whole image) or ``raise`` (`NoFaceError`, an error row when collecting).
        detect_max_side: search faces on a copy scaled down to this longest side (boxes come
            back in the image's pixels; crops are cut from the full image). None: YuNet's own
            1280 for photos, `emovit.video.VIDEO_DETECT_MAX_SIDE` (320) for video frames.
    """

    detector: DetectorName | FaceDetector = DEFAULT_DETECTOR
    detector_model: str | os.PathLike[str] | None = None
    det_threshold: float = 0.5
    margin: float | None = None
    align: bool | None = None
    grey: bool | None = None
    border: BorderMode = "pad"
    min_face: int = 20
    max_faces: int | None = None
    no_face: NoFacePolicy = "skip"
    detect_max_side: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.detector, str) and self.detector not in ("auto", "yunet", "haar", "none"):
            raise OptionError(
                f"unknown detector {self.detector!r}; use auto, yunet, haar or none", option="detector"
            )
        if not isinstance(self.detector, str) and not callable(getattr(self.detector, "detect", None)):
            raise OptionError(  # it was taken, and every image then failed at detection
                f"detector must be auto, yunet, haar, none (each image is one face) or an object with a "
                f"detect(image) method, got {self.detector!r}",
                option="detector",
            )
        check_real(self.det_threshold, "det_threshold", 0, 1)
        check_real(self.margin, "margin", 0, optional=True)
        check_flag(self.align, "align", optional=True)
        check_flag(self.grey, "grey", optional=True)
        if self.border not in ("pad", "clip"):
            raise OptionError(f"border must be 'pad' or 'clip', got {self.border!r}", option="border")
        check_count(self.min_face, "min_face")
        check_count(self.max_faces, "max_faces", optional=True)
        if self.no_face not in ("skip", "whole", "raise"):
            raise OptionError(f"no_face must be skip, whole or raise, got {self.no_face!r}", option="no_face")
        check_count(self.detect_max_side, "detect_max_side", 32, optional=True)

    def replace(self, **changes: Any) -> FaceOptions:
        """A copy with `changes` applied (None values are ignored: "not given")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
