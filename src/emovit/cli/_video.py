"""Videos in `emovit predict`: which sources are videos, running one through
`EmotionRecognizer.predict_video` into the rows, the annotated video, the timeline and the
summary, and stopping cleanly on Ctrl-C or SIGTERM.

A run that is interrupted (Ctrl-C or SIGTERM) stops after the photo or video frame being
analysed; every output is then closed as a complete file holding everything up to it (the
annotated video stays playable), and the command exits 130. A second Ctrl-C stops at once:
the results file is then left as it was (whole or absent, never half written).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from emovit.cli._common import require
from emovit.errors import DependencyError

if TYPE_CHECKING:
    from emovit.predictor import EmotionRecognizer
    from emovit.video import VideoOptions
    from emovit.writers import ResultWriter

__all__ = ["Interrupt", "VideoJob", "interruptible", "video_flags"]


def video_flags(paths: Sequence[str]) -> list[bool]:
    """For each path, whether it is a video. When videos need a missing extra: fails (exit 2)
    if every input is a video, else warns, and each video becomes an error row naming the
    extra (`VideoJob.run`) while the photos go on."""
    from emovit.video import is_video

    flags = [is_video(path) for path in paths]
    missing = _missing_extra() if any(flags) else None
    if missing is not None:
        if all(flags):
            raise missing
        click.echo(f"warning: {sum(flags)} input(s) are videos: {missing}; the photos go on", err=True)
    return flags


def _missing_extra() -> DependencyError | None:
    """The error of the first package of the video extra that is not installed (None: all are)."""
    try:
        for module in ("av", "scipy", "cv2"):
            require(module, "video", "video analysis")
    except DependencyError as exc:
        return exc
    return None


@dataclass
class Interrupt:
    """A request to stop (Ctrl-C or SIGTERM): the loops check `requested` after each frame."""

    requested: bool = False
    interrupted: bool = False
    #: set with `requested`: a video waiting for its next frame (a camera) stops waiting
    event: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def interruptible(enabled: bool) -> Iterator[Interrupt]:
    """When `enabled`, the first Ctrl-C or SIGTERM only sets `Interrupt.requested`: the loops
    stop at the next photo or frame boundary, so nothing is half written, the block ends
    quietly with `Interrupt.interrupted` set, and the outputs around it are closed as complete
    files (the caller exits 130 afterwards). A second one raises `KeyboardInterrupt` at once,
    wherever the work is: it goes through the outputs around the block, which discard what
    they hold (a results file stays as it was), as any other exception does."""
    state = Interrupt()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def request(signum: int, frame: Any) -> None:
        if state.requested:
            raise KeyboardInterrupt
        state.requested = True
        state.event.set()

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        state.interrupted = state.requested


def _output_errors() -> tuple[type[BaseException], ...]:
    """What writing an annotated video or a timeline raises when it fails: the disk (OSError),
    bad values, and FFmpeg's own errors (not all of them OSErrors)."""
    try:
        from av.error import FFmpegError
    except ImportError:  # no PyAV: no annotated video either
        return (OSError, ValueError)
    return (OSError, ValueError, FFmpegError)


@dataclass
class VideoJob:
    """Runs the videos of one `emovit predict` call and keeps their summaries."""

    rec: EmotionRecognizer
    options: VideoOptions
    annotated: str | None = None
    audio: bool = True  # the annotated video keeps the sound of a video file
    plot: str | None = None
    summaries: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    opened: int = 0  # videos that opened (a file named .mp4 that is no video is an error row, not one)
    check: Callable[[Path], Path] = field(default=lambda path: path, repr=False)  # refuses an input's name
    unsaved: int = 0  # videos whose annotated video or timeline (or both) could not be written
    _warned: bool = field(default=False, repr=False)  # the video at hand lost an output
    #: the video extra's missing package: every video is an error row (the photos go on)
    missing: DependencyError | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.missing = _missing_extra()
        if self.plot and self.missing is None:  # without the extra no timeline is drawn anyway
            require("matplotlib", "video", "--plot")

    def run(
        self,
        path: str,
        stem: str,
        writer: ResultWriter,
        stop: Interrupt | None = None,
        advance: Callable[[float], None] | None = None,
    ) -> bool:
        """Analyse one video into `writer` (and the annotated video and timeline); True when
        it or one of its frames failed. Stops after the frame at hand when `stop` is requested;
        the files are closed even when interrupted. An annotated video or timeline that cannot
        be written is a warning naming the video (counted in `unsaved`): its rows go on.
        `advance` gets the shares of this video analysed (by frame time, 1 in all): one long
        video moves the progress bar as it goes."""
        done = 0.0
        if self.missing is not None:  # this video's error row (and summary); the photos go on
            from emovit.errors import InputError
            from emovit.results import FrameResult
            from emovit.video import VideoSummary

            error = InputError(path, str(self.missing), "unsupported_input")
            writer.write(FrameResult(source=path).fail(error))
            refused = VideoSummary(
                path, self.rec.labels, self.options, error=str(error), error_code=error.code
            )
            self.summaries.append(refused.to_dict())
            if advance is not None:
                advance(1.0)
            return True
        from emovit.video import STOPPED_NOTE, is_camera
        from emovit.video_output import AnnotatedVideoWriter, TimelineRecorder

        errors = _output_errors()
        self._warned = False
        run = self.rec.predict_video(
            path, options=self.options, keep_pixels=bool(self.annotated), stop=stop.event if stop else None
        )
        video: AnnotatedVideoWriter | None = None
        annotate = bool(self.annotated)
        timeline = TimelineRecorder(self.rec.labels) if self.plot else None
        failed = False
        try:
            for frame in run:
                failed = failed or not frame.ok
                writer.write(frame)
                if frame.frame is None:
                    continue
                self.frames += 1
                if advance is not None:
                    share = self._share(frame.time_s, run.info)
                    if share > done:
                        advance(share - done)
                        done = share
                if annotate and frame.image is not None:
                    try:
                        if video is None:
                            info = run.info
                            target = self.check(Path(self.annotated or ".") / f"{stem}.annotated.mp4")
                            video = AnnotatedVideoWriter(
                                target,
                                fps=info.fps if info is not None else None,
                                # a file (not a URL, a camera or a pipe) can be read again for it
                                audio_from=path if self.audio and Path(path).is_file() else None,
                                audio_offset_s=info.start_s if info is not None else 0.0,
                            )
                        video.write(frame)
                    except errors as exc:
                        self._unsaved(path, "annotated video", exc)
                        annotate = False
                        if video is not None:
                            video.abort()
                            video = None
                if timeline is not None:
                    timeline.add(frame)
                frame.image = None
                for face in frame.faces:  # a table output keeps its frames till the end: no pixels
                    face.crop = None
                if stop is not None and stop.requested:
                    break
        finally:
            run.close()
            self.opened += run.info is not None
            summary = run.summary()
            if (
                stop is not None
                and stop.requested
                and not summary.get("complete")
                and not summary.get("error")
            ):
                # an interrupted video's summary said only "complete": false, as a damaged file's does
                outputs = "rows, summary and annotated video" if self.annotated else "rows and summary"
                notes = summary.setdefault("warnings", [])
                if STOPPED_NOTE in notes:  # the library's word for it: this one says why and where
                    notes.remove(STOPPED_NOTE)
                notes.append(
                    f"interrupted (Ctrl-C or SIGTERM) after {summary.get('frames_analysed', 0)} analysed "
                    f"frames: its {outputs} stop there"
                )
            self.summaries.append(summary)
            if video is not None:
                try:
                    written = video.close()
                except errors as exc:
                    self._unsaved(path, "annotated video", exc)
                else:  # which file is whose: videos of one name get _1, _2 after their stem
                    summary["annotated"] = None if written is None else str(written)
            if timeline is not None and summary.get("error") is None:
                try:
                    plotted = timeline.save(
                        self.check(Path(self.plot or ".") / f"{stem}.timeline.png"),
                        title=path if is_camera(path) else Path(path).name,
                    )
                except errors as exc:
                    self._unsaved(path, "timeline", exc)
                else:
                    summary["timeline"] = str(plotted)
            self.unsaved += self._warned
            if advance is not None:
                advance(1.0 - done)
        return failed

    def _share(self, time_s: float | None, info: Any) -> float:
        """How far into the analysed span (start to end, or to the duration) `time_s` is."""
        ends = [e for e in (self.options.end, getattr(info, "duration_s", None)) if e is not None]
        span = (min(ends) if ends else 0.0) - self.options.start  # --end 1000 on a 10 s clip: 10 s
        if time_s is None or span <= 0:
            return 0.0
        return min(1.0, max(0.0, (time_s - self.options.start) / span))

    def _unsaved(self, path: str, what: str, exc: BaseException) -> None:
        click.echo(f"warning: {path}: its {what} could not be written ({exc}); its rows go on", err=True)
        self._warned = True

    def write_summary(self, path: str) -> None:
        import json

        from emovit.fileio import write_text_atomic

        write_text_atomic(path, json.dumps({"videos": self.summaries}, indent=2) + "\n", named=True)
