"""`VideoOptions`: which frames of a video are analysed, and how faces are followed over time.

One typed object for the library (`EmotionRecognizer.predict_video`), the CLI (`emovit
predict`'s ``--fps``, ``--every``, ``--start``, ``--end``, ``--smooth``, ``--track-buffer``) and
the server (``POST /v1/video``), so every option has one name and one default.

Examples:
    >>> VideoOptions(fps=5).fps
    5.0
    >>> VideoOptions().smooth
    0.3
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from emovit.errors import OptionError, check_real

__all__ = [
    "DEFAULT_SMOOTH_S",
    "DEFAULT_TRACK_BUFFER",
    "VIDEO_DETECT_MAX_SIDE",
    "VideoOptions",
]

#: The smoothing time constant, in seconds. A per-frame classifier flickers from frame to
#: frame; a real expression lasts from about half a second to a few seconds. With 0.3 s the
#: smoothed probabilities average about the last 0.6 s (a step change crosses half-way after
#: 0.3 x ln 2 = 0.2 s), which removes the flicker and still follows every real change.
DEFAULT_SMOOTH_S = 0.3
#: The highest ``fps`` taken: above any camera's rate, every frame is analysed anyway.
MAX_FPS = 1000.0
#: How many analysed frames a face may go undetected and keep its track id (as ByteTrack).
DEFAULT_TRACK_BUFFER = 30
#: Video frames are searched for faces on a copy whose longest side is this (boxes come back
#: in the frame's own pixels): YuNet at 320x240 finds faces of 20 px and more at a quarter of
#: the cost of 640x480, which is what lets 640x480 video run in real time on 2 cores.
VIDEO_DETECT_MAX_SIDE = 320


@dataclass(frozen=True)
class VideoOptions:
    """Sampling, tracking and smoothing of a video.

    Attributes:
        fps: analyse this many frames per second of video time (None: every frame).
        every: analyse every N-th decoded frame (None: every frame; not with `fps`).
        start: skip the video before this time, in seconds.
        end: stop at this time, in seconds (None: the end of the video).
        smooth: time constant of the exponential smoothing of each track's probabilities, in
            seconds of video time (0: off). Time-based, so the same value gives the same
            smoothing at any sampling rate.
        track_buffer: analysed frames a face may go undetected and keep its track id.
        batch_frames: frames whose faces go through the model together.
        queue_frames: decoded frames waiting for analysis at most (memory stays flat).
    """

    fps: float | None = None
    every: int | None = None
    start: float = 0.0
    end: float | None = None
    smooth: float = DEFAULT_SMOOTH_S
    track_buffer: int = DEFAULT_TRACK_BUFFER
    batch_frames: int = 8
    queue_frames: int = 16

    def __post_init__(self) -> None:
        # NaN and infinity passed the comparisons below: fps=inf never ended (the sampling step
        # was 0), smooth=nan made every probability NaN
        check_real(self.fps, "fps", 0, MAX_FPS, optional=True, above_low=True)
        check_real(self.start, "start", 0)
        check_real(self.end, "end", optional=True)
        check_real(self.smooth, "smooth", 0)
        if self.fps is not None:
            object.__setattr__(self, "fps", float(self.fps))
        if self.every is not None and self.every < 1:
            raise OptionError(f"every must be at least 1, got {self.every}", option="every")
        if self.fps is not None and self.every is not None:
            raise OptionError("give fps or every, not both", option="every")
        if self.start < 0:
            raise OptionError(f"start must be 0 or more, got {self.start}", option="start")
        if self.end is not None and self.end <= self.start:
            raise OptionError(f"end ({self.end}) must be after start ({self.start})", option="end")
        if self.smooth < 0:
            raise OptionError(f"smooth must be 0 (off) or more, got {self.smooth}", option="smooth")
        if self.track_buffer < 0:
            raise OptionError(
                f"track_buffer must be 0 or more, got {self.track_buffer}", option="track_buffer"
            )
        if self.batch_frames < 1:
            raise OptionError(
                f"batch_frames must be at least 1, got {self.batch_frames}", option="batch_frames"
            )
        if self.queue_frames < 1:
            raise OptionError(
                f"queue_frames must be at least 1, got {self.queue_frames}", option="queue_frames"
            )

    def replace(self, **changes: Any) -> VideoOptions:
        """A copy with `changes` applied (None values are ignored: "not given")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
