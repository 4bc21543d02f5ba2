"""Video stages: decoding and sampling (`VideoReader`), face tracks (`Tracker`), smoothing over
time (`ProbabilitySmoother`) and the per-video summary (`VideoSummary`).

`emovit.EmotionRecognizer.predict_video` composes them with the photo stages (faces,
preprocess, model); the CLI and the server use it. Decoding needs the ``[video]`` extra
(``pip install 'emovit[video]'``: PyAV with its own FFmpeg, scipy, OpenCV).

Examples:
    >>> from emovit.video import VideoOptions
    >>> VideoOptions(every=2).every
    2
"""

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
from emovit.video._summary import VideoPrediction, VideoSummary
from emovit.video._tracker import Tracker

__all__ = [
    "DEFAULT_SMOOTH_S",
    "DEFAULT_TRACK_BUFFER",
    "VIDEO_DETECT_MAX_SIDE",
    "DecodedFrame",
    "ProbabilitySmoother",
    "Tracker",
    "VideoInfo",
    "VideoOptions",
    "VideoPrediction",
    "VideoReader",
    "VideoSummary",
    "decode_packets",
    "is_video",
    "probe_video",
]
