"""Video stages: decoding and sampling (`VideoReader`; `CameraReader` for a live camera,
``camera://0``; `open_video` picks), face tracks (`Tracker`), smoothing over time
(`ProbabilitySmoother`) and the per-video summary (`VideoSummary`).

`emovit.EmotionRecognizer.predict_video` composes them with the photo stages (faces,
preprocess, model); the CLI and the server use it. Decoding needs the ``[video]`` extra
(``pip install 'emovit[video]'``: PyAV with its own FFmpeg, scipy, OpenCV).

Examples:
    >>> from emovit.video import VideoOptions
    >>> VideoOptions(every=2).every
    2
"""

from emovit.video._camera import CameraReader, camera_device, is_camera, open_video
from emovit.video._options import (
    DEFAULT_SMOOTH_S,
    DEFAULT_TRACK_BUFFER,
    VIDEO_DETECT_MAX_SIDE,
    VideoOptions,
)
from emovit.video._smooth import ProbabilitySmoother
from emovit.video._source import (
    DecodedFrame,
    VideoInfo,
    VideoReader,
    decode_packets,
    is_video,
    probe_video,
)
from emovit.video._summary import STOPPED_NOTE, VideoPrediction, VideoSummary
from emovit.video._tracker import Tracker

__all__ = [
    "DEFAULT_SMOOTH_S",
    "DEFAULT_TRACK_BUFFER",
    "STOPPED_NOTE",
    "VIDEO_DETECT_MAX_SIDE",
    "CameraReader",
    "DecodedFrame",
    "ProbabilitySmoother",
    "Tracker",
    "VideoInfo",
    "VideoOptions",
    "VideoPrediction",
    "VideoReader",
    "VideoSummary",
    "camera_device",
    "decode_packets",
    "is_camera",
    "is_video",
    "open_video",
    "probe_video",
]
