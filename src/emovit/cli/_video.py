"""Videos in `emovit predict`: which sources are videos, running one through
`EmotionRecognizer.predict_video` into the rows, the annotated video, the timeline and the
summary, and stopping cleanly on Ctrl-C or SIGTERM.

A run with videos that is interrupted (Ctrl-C or SIGTERM) stops after the frame being
analysed; every output is then closed as a complete file holding everything up to that frame
(the annotated video stays playable), and the command exits 130. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emovit.cli._common import require

if TYPE_CHECKING:
    from emovit.predictor import EmotionRecognizer
    from emovit.video import VideoOptions
    from emovit.writers import ResultWriter

__all__ = ["Interrupt", "VideoJob", "interruptible", "video_flags"]


def video_flags(paths: Sequence[str]) -> list[bool]:
    """For each path, whether it is a video; fails (exit 2) when videos need a missing extra."""
    from emovit.video import is_video

    flags = [is_video(path) for path in paths]
    if any(flags):
        for module in ("av", "scipy", "cv2"):
            require(module, "video", "video analysis")
    return flags


@dataclass
class Interrupt:
    """A request to stop (Ctrl-C or SIGTERM): the loops check `requested` after each frame."""

    requested: bool = False
    interrupted: bool = False


@contextlib.contextmanager
def interruptible(enabled: bool) -> Iterator[Interrupt]:
    """When `enabled`, the first Ctrl-C or SIGTERM only sets `Interrupt.requested` (the loops
    stop at the next frame boundary, so no frame is half written); a second one raises at
    once. Either way the block ends quietly with `Interrupt.interrupted` set, so that the
    outputs around it are closed as complete files (the caller exits 130 afterwards)."""
    state = Interrupt()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def request(signum: int, frame: Any) -> None:
        if state.requested:
            raise KeyboardInterrupt
        state.requested = True

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    except KeyboardInterrupt:
        state.requested = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        state.interrupted = state.requested


@dataclass
class VideoJob:
    """Runs the videos of one `emovit predict` call and keeps their summaries."""

    rec: EmotionRecognizer
    options: VideoOptions
    annotated: str | None = None
    plot: str | None = None
    summaries: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0

    def __post_init__(self) -> None:
        if self.plot:
            require("matplotlib", "video", "--plot")

    def run(self, path: str, stem: str, writer: ResultWriter, stop: Interrupt | None = None) -> bool:
        """Analyse one video into `writer` (and the annotated video and timeline); True when
        it or one of its frames failed. Stops after the frame at hand when `stop` is requested;
        the files are closed even when interrupted."""
        from emovit.video_output import AnnotatedVideoWriter, TimelineRecorder

        run = self.rec.predict_video(path, options=self.options, keep_pixels=bool(self.annotated))
        video: AnnotatedVideoWriter | None = None
        timeline = TimelineRecorder(self.rec.labels) if self.plot else None
        failed = False
        try:
            for frame in run:
                failed = failed or not frame.ok
                writer.write(frame)
                if frame.frame is None:
                    continue
                self.frames += 1
                if self.annotated and frame.image is not None:
                    if video is None:
                        fps = run.info.fps if run.info is not None else None
                        video = AnnotatedVideoWriter(Path(self.annotated) / f"{stem}.annotated.mp4", fps=fps)
                    video.write(frame)
                if timeline is not None:
                    timeline.add(frame)
                frame.image = None
                if stop is not None and stop.requested:
                    break
        finally:
            run.close()
            if video is not None:
                video.close()
            summary = run.summary()
            self.summaries.append(summary)
            if timeline is not None and summary.get("error") is None:
                timeline.save(Path(self.plot or ".") / f"{stem}.timeline.png", title=Path(path).name)
        return failed

    def write_summary(self, path: str) -> None:
        import json

        from emovit.fileio import write_text_atomic

        write_text_atomic(path, json.dumps({"videos": self.summaries}, indent=2) + "\n")
