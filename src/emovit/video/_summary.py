"""The per-video summary (frames, duration, faces per frame, and per track: when it was seen,
its dominant emotion and the share of each), and `VideoPrediction`, the iterable of frame
results that `EmotionRecognizer.predict_video` returns.

The summary is built as the frames go by, in constant memory per track: counts and sums, never
the frames themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from emovit.results import FrameResult
    from emovit.video._options import VideoOptions
    from emovit.video._source import FrameReader, VideoInfo

__all__ = ["STOPPED_NOTE", "VideoPrediction", "VideoSummary"]

#: The warning of a video stopped on request (`EmotionRecognizer.predict_video`'s ``stop``).
STOPPED_NOTE = "stopped on request: the rest of the video was not analysed"


@dataclass
class _TrackStats:
    first_s: float
    last_s: float
    frames: int
    label_counts: dict[str, int]
    prob_sums: np.ndarray


@dataclass
class VideoSummary:
    """Accumulates the summary of one video, frame by frame (`add`), and gives it (`to_dict`)."""

    source: str
    labels: Sequence[str]
    options: VideoOptions | None = None
    info: VideoInfo | None = None
    warnings: list[str] = field(default_factory=list)
    completed: bool = False
    stopped: bool = False  # ended early on request (`stop`)
    error: str | None = None
    error_code: str | None = None
    frames_analysed: int = 0
    frames_failed: int = 0
    faces: int = 0
    first_s: float | None = None
    last_s: float | None = None
    tracks: dict[int, _TrackStats] = field(default_factory=dict)
    _reader: FrameReader | None = field(default=None, repr=False, compare=False)

    def attach(self, reader: FrameReader) -> None:
        """Follow `reader`: its video's facts, its warnings and whether its frames ended early."""
        self.info = reader.info
        self.warnings = reader.warnings
        self._reader = reader

    @property
    def complete(self) -> bool:
        """The whole video (within start/end) was analysed: read to its end, not stopped, not
        damaged (a note such as timestamps that do not increase does not make it incomplete)."""
        damaged = self._reader is not None and self._reader.incomplete
        return self.completed and not self.stopped and not damaged and self.error is None

    def add(self, frame: FrameResult) -> None:
        if frame.frame is None or frame.time_s is None:  # the whole video failed
            if not frame.ok:
                self.error, self.error_code = frame.error, frame.error_code
            return
        self.frames_analysed += 1
        self.frames_failed += not frame.ok
        self.faces += len(frame.faces)
        t = frame.time_s
        self.first_s = t if self.first_s is None else min(self.first_s, t)
        self.last_s = t if self.last_s is None else max(self.last_s, t)
        for face in frame.faces:
            if face.track_id is None:
                continue
            probs = np.array([face.probs.get(label, 0.0) for label in self.labels])
            stats = self.tracks.get(face.track_id)
            if stats is None:
                stats = _TrackStats(t, t, 0, dict.fromkeys(self.labels, 0), np.zeros(len(self.labels)))
                self.tracks[face.track_id] = stats
            stats.last_s = t
            stats.frames += 1
            stats.label_counts[face.label] = stats.label_counts.get(face.label, 0) + 1
            stats.prob_sums += probs

    def duration_s(self) -> float:
        """Seconds of video analysed: the declared duration (within ``start``/``end``) when
        the whole video was read, or up to the end of the last analysed frame when that is
        later (a container that declares too little: joined TS segments) or the video was not
        read to its end."""
        start = self.options.start if self.options is not None else 0.0
        end = self.options.end if self.options is not None else None
        declared = self.info.duration_s if self.info is not None else None
        step = 1.0 / self.info.fps if self.info is not None and self.info.fps else 0.0
        seen = 0.0 if self.last_s is None else self.last_s + step - min(start, self.first_s or 0.0)
        if end is not None:
            seen = min(seen, end - start)
        if self.complete and declared:
            return max(0.0, min(declared, end if end is not None else declared) - start, seen)
        return max(0.0, seen)

    def to_dict(self) -> dict[str, Any]:
        """The summary (the README's schema): source, frames_analysed, duration_s,
        fps_analysed, faces_per_frame, tracks, and the video's facts and warnings."""
        duration = self.duration_s()
        tracks = []
        for track_id in sorted(self.tracks):
            stats = self.tracks[track_id]
            share = {label: stats.label_counts.get(label, 0) / stats.frames for label in self.labels}
            means = stats.prob_sums / stats.frames
            tracks.append(
                {
                    "track_id": track_id,
                    "first_s": round(stats.first_s, 6),
                    "last_s": round(stats.last_s, 6),
                    "duration_s": round(stats.last_s - stats.first_s, 6),
                    "frames": stats.frames,
                    "dominant": max(share, key=share.__getitem__),
                    "share": share,
                    "mean_probs": {label: float(v) for label, v in zip(self.labels, means, strict=True)},
                }
            )
        video = self.info.to_dict() if self.info is not None else None
        counted = self._reader.frames_in_range if self._reader is not None else 0
        if video is not None and self.complete and counted and duration > 0:
            video["average_fps"] = round(counted / duration, 6)  # measured: right for variable rates
        out: dict[str, Any] = {
            "source": self.source,
            "frames_analysed": self.frames_analysed,
            "duration_s": round(duration, 6),
            "fps_analysed": round(self.frames_analysed / duration, 6) if duration > 0 else 0.0,
            "faces_per_frame": self.faces / self.frames_analysed if self.frames_analysed else 0.0,
            "tracks": tracks,
            "frames_failed": self.frames_failed,
            "complete": self.complete,
            "warnings": list(self.warnings),
            "video": video,
        }
        if self.error is not None:
            out["error"], out["error_code"] = self.error, self.error_code
        return out


class VideoPrediction:
    """The analysed frames of one video, lazily: iterate once for the `FrameResult`s (frame
    by frame, as they are analysed); `summary` then gives the video's summary (before the
    end, the summary of the frames so far).

    Examples:
        >>> run = rec.predict_video("clip.mp4", fps=5)  # doctest: +SKIP
        >>> for frame in run:  # doctest: +SKIP
        ...     print(frame.time_s, [(f.track_id, f.label) for f in frame.faces])
        >>> run.summary()["tracks"][0]["dominant"]  # doctest: +SKIP
        'happy'
    """

    def __init__(self, frames: Iterator[FrameResult], summary: VideoSummary) -> None:
        self._frames = frames
        self._summary = summary
        self._started = False

    @property
    def source(self) -> str:
        return self._summary.source

    @property
    def info(self) -> VideoInfo | None:
        """What the container says about the video (None until it is opened, or if it cannot be)."""
        return self._summary.info

    @property
    def warnings(self) -> list[str]:
        return list(self._summary.warnings)

    @property
    def reached_end(self) -> bool:
        """Whether the video goes on past the ``end`` option (a frame at or after it was decoded)."""
        reader = self._summary._reader
        return reader is not None and reader.reached_end

    def __iter__(self) -> Iterator[FrameResult]:
        if self._started:
            raise RuntimeError("a VideoPrediction can be iterated once")
        self._started = True
        for frame in self._frames:
            self._summary.add(frame)
            yield frame
        self._summary.completed = True

    def summary(self) -> dict[str, Any]:
        """The summary of the frames consumed so far (of the whole video once iterated)."""
        return self._summary.to_dict()

    def close(self) -> None:
        """Stop decoding (when the frames are not consumed to the end)."""
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> VideoPrediction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
