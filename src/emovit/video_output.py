"""Files made from a video's results: the annotated video and the emotion timeline.

* `AnnotatedVideoWriter`: the analysed frames re-encoded with boxes, track ids and smoothed
  labels drawn on them (H.264 when the bundled FFmpeg has an encoder for it, else MPEG-4), each
  frame at its own presentation time, so the video keeps the source's frame rate and timing;
  the source's sound over the same span, re-encoded to AAC, in step with the pictures.
* `TimelineRecorder`: each track's smoothed probabilities over time, drawn as a PNG with one
  panel per track (matplotlib, no display needed).

Both write under a temporary name and rename onto the target when closed, and both can be
closed after an interruption: the files then hold everything up to the last analysed frame
(the video stays playable).
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from array import array
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from emovit.errors import DependencyError
from emovit.fileio import atomic_open, temporary_prefix
from emovit.results import EMOTION_COLOURS, FrameResult
from emovit.video import decode_packets

__all__ = ["AnnotatedVideoWriter", "TimelineRecorder", "video_encoder"]


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise DependencyError("av", "video", "writing annotated video") from None
    return av


def video_encoder() -> str:
    """The encoder annotated videos use: ``libx264`` (H.264) when this FFmpeg has it, else ``mpeg4``."""
    av = _av()
    for name in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - not built into this FFmpeg: try the next
            continue
        return name
    raise DependencyError("av", "video", "an H.264 or MPEG-4 encoder in PyAV's FFmpeg")


class AnnotatedVideoWriter:
    """Writes `FrameResult`s, drawn on their frames, into an MP4 file.

    Args:
        path: the target (``DIR/<stem>.annotated.mp4``); written as a hidden temporary file
            beside it and renamed onto it by `close`.
        fps: the source's frame rate (the output's nominal rate; None: 30).
        audio_from: a local video file whose first audio stream is carried over the span the
            frames cover, re-encoded to AAC (None: no sound). A sound track that cannot be
            read or encoded is a warning and is left out (or cut where it failed): the
            pictures never depend on it.
        audio_offset_s: where the frames' time 0 lies in that file's timeline (the video
            stream's start, `VideoInfo.start_s`): sound and pictures stay in step.

    Examples:
        >>> with AnnotatedVideoWriter("out/clip.annotated.mp4", fps=30) as writer:  # doctest: +SKIP
        ...     for frame in rec.predict_video("clip.mp4", keep_pixels=True):
        ...         writer.write(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | None = None,
        audio_from: str | os.PathLike[str] | None = None,
        audio_offset_s: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.fps = fps or 30.0
        self.frames = 0
        self.audio_from = audio_from
        self.audio_offset_s = audio_offset_s
        self._sound: _SoundTrack | None = None
        self._end_s = 0.0  # the end of the last frame written, in the output's time
        # unique: two runs writing the same target never share a temporary file
        self._tmp = self.path.with_name(f"{temporary_prefix(self.path)}{uuid.uuid4().hex[:12]}.part")
        self._tick = 90_000  # time base 1/tick (MPEG-4 Part 2 allows at most 65535)
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] = (0, 0)
        self._origin: float | None = None
        self._last_pts = -1
        # each frame lasts until the next one: packets wait for their frame's duration (the
        # encoder's own assumed its nominal rate, and a variable-rate clip's file said 1.2 s
        # for its 2 s); the last frame lasts as long as the gap before it
        self._durations: dict[int, int] = {}
        self._waiting: list[Any] = []

    def _open(self, width: int, height: int) -> None:
        av = _av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self._tmp), mode="w", format="mp4")
        try:
            codec = video_encoder()
            stream = container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1001))
        except BaseException:  # no encoder: the real error, and no temporary file left behind
            with contextlib.suppress(Exception):
                container.close()
            self._tmp.unlink(missing_ok=True)
            raise
        self._container = container
        self._size = (width - width % 2, height - height % 2)  # yuv420p needs even sides
        stream.width, stream.height = self._size
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":  # its time base must fit 16 bits: a thousandth of a frame will do
            self._tick = max(1, min(65_535, round(self.fps * 1000)))
        stream.time_base = Fraction(1, self._tick)
        stream.codec_context.time_base = Fraction(1, self._tick)
        if codec != "mpeg4":
            # no B-frames: their decoding times are earlier frames' times, so a variable-rate clip's
            # file ended early (the MP4 sample durations follow the decoding times)
            stream.options = {"preset": "veryfast", "crf": "23", "bf": "0"}
        else:
            stream.bit_rate = 4_000_000
        self._stream = stream
        if self.audio_from is not None:  # every stream is added before the first packet is muxed
            self._sound = _SoundTrack.open(container, self.audio_from)

    def write(self, frame: FrameResult, image: np.ndarray | None = None) -> None:
        """Draw `frame`'s faces on `image` (default: the frame's kept pixels) and encode it."""
        pixels = image if image is not None else frame.image
        if pixels is None:
            raise ValueError(f"{frame.source}: no pixels for frame {frame.frame} (use keep_pixels=True)")
        av = _av()
        if self._container is None:
            self._open(pixels.shape[1], pixels.shape[0])
        width, height = self._size
        drawn = frame.plot(pixels)
        drawn = _fitted(drawn, width, height)
        time_s = frame.time_s or 0.0
        if self._origin is None:
            self._origin = time_s
            if self._sound is not None:
                self._sound.origin_s = self.audio_offset_s + time_s
        pts = max(round((time_s - self._origin) * self._tick), self._last_pts + 1)
        gap = pts - self._last_pts if self._last_pts >= 0 else round(self._tick / self.fps)
        if self._last_pts >= 0:
            self._durations[self._last_pts] = gap
        self._last_pts = pts
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(drawn), format="rgb24")
        video_frame.pts, video_frame.time_base = pts, Fraction(1, self._tick)
        self._mux(self._container, self._stream.encode(video_frame))
        self.frames += 1
        # the last frame's, until the next one comes: the gap before it, and at least a frame of
        # the nominal rate (a frame bumped one tick after its twin would show for one tick)
        shown = self._durations.setdefault(pts, max(gap, round(self._tick / self.fps)))
        self._end_s = (pts + shown) / self._tick
        if self._sound is not None:  # the sound up to this frame: the file stays interleaved
            self._sound.mux_until(self._container, pts / self._tick)

    def _mux(self, container: Any, packets: Any, *, last: bool = False) -> None:
        """Mux `packets` in order, each once its frame's duration is known (`last`: all)."""
        self._waiting.extend(packets)
        while self._waiting:
            packet = self._waiting[0]
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            elif not last and packet.pts is not None:
                break
            container.mux(self._waiting.pop(0))

    def close(self) -> Path | None:
        """Flush the encoder and put the file in place (None when no frame was written)."""
        if self._container is None:
            return None
        container, self._container = self._container, None
        try:
            self._mux(container, self._stream.encode(), last=True)
            if self._sound is not None:  # the sound of the last frame's time on screen
                self._sound.finish(container, self._end_s)
            container.close()
        except BaseException:
            with contextlib.suppress(Exception):
                container.close()
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            raise
        finally:
            if self._sound is not None:
                self._sound.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Give up the file: close what is open and delete the temporary file (the target, if
        an earlier run wrote it, is left as it was)."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        if self._sound is not None:
            self._sound.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SoundTrack:
    """The first audio stream of a video file, decoded, resampled and encoded to AAC into an
    annotated video: each audio frame at its own time in the source less `origin_s` (the first
    written frame's time there). What lies before it is cut, a gap in the source stays a gap
    (silence), damaged packets are skipped, and a change of format midway (stereo to 5.1) is
    followed. Anything else that goes wrong warns once and ends the sound there; the pictures
    go on."""

    _CHUNK = 1024  # samples per AAC frame
    _SLACK_S = 0.04  # timestamps this far from the samples so far: a gap (or an overlap)

    def __init__(self, source: str, input_: Any, stream: Any, out: Any, layout: str, rate: int) -> None:
        self.source = source
        self.origin_s = 0.0
        self._input, self._stream, self._out = input_, stream, out
        self._layout, self._rate = layout, rate
        self._frames: Iterator[Any] | None = None  # opened at the first call, after a seek
        self._next: Any = None  # a decoded frame read ahead, not yet due
        self._resampler: Any = None
        self._setup: tuple[str, str, int] | None = None  # what the resampler takes
        self._buffer = np.zeros((1 if layout == "mono" else 2, 0), np.float32)
        self._written: int | None = None  # samples encoded (the buffer's start), in output samples
        self._done = False  # read to its end, or failed
        self._broken = False  # failed: a warning said so, nothing more is encoded

    @classmethod
    def open(cls, container: Any, source: str | os.PathLike[str]) -> _SoundTrack | None:
        """The sound of `source` added as a stream of `container` (None when it has none, or
        it cannot be read or encoded here: a warning)."""
        av = _av()
        name = os.fspath(source)
        input_ = None
        try:
            input_ = av.open(name)
            # a stream FFmpeg has no decoder for has no codec context
            streams = [
                s for s in input_.streams.audio if s.codec_context is not None and s.codec_context.sample_rate
            ]
            if not streams:
                input_.close()
                return None
            stream = streams[0]
            rate = stream.codec_context.sample_rate
            rate = rate if rate in (av.codec.Codec("aac", "w").audio_rates or ()) else 48_000
            layout = "mono" if stream.codec_context.layout.nb_channels == 1 else "stereo"
            out = container.add_stream("aac", rate=rate, layout=layout)
            out.time_base = Fraction(1, rate)
            return cls(name, input_, stream, out, layout, rate)
        except Exception as exc:  # noqa: BLE001 - no AAC encoder in this FFmpeg, a file it cannot open...
            if input_ is not None:
                with contextlib.suppress(Exception):
                    input_.close()
            warnings.warn(f"{name}: its sound is left out of the annotated video ({exc})", stacklevel=3)
            return None

    def mux_until(self, container: Any, until_s: float) -> None:
        """Encode the sound that starts before `until_s` (output time)."""
        if self._done:
            return
        try:
            self._read_until(until_s)
            self._encode(container, upto=round(until_s * self._rate))  # the end may still be cut
        except Exception as exc:  # noqa: BLE001 - a sound track that cannot be read: the pictures go on
            self._fail(exc)

    def _read_until(self, until_s: float) -> None:
        """Decode, resample and place (in the buffer) the sound that starts before `until_s`."""
        if self._frames is None:
            self._frames = self._start()
        while not self._done:
            frame = self._next if self._next is not None else next(self._frames, None)
            self._next = None
            if frame is None:
                self._done = True
                break
            if frame.pts is None or not frame.samples:
                continue
            at = float(frame.time) - self.origin_s
            if at >= until_s:
                self._next = frame
                break
            if at + frame.samples / frame.sample_rate <= 0:  # before the first frame shown
                continue
            self._place(round(at * self._rate), self._resampled(frame))

    def finish(self, container: Any, end_s: float) -> None:
        """Encode the sound up to `end_s`, the end of the last frame shown, and flush."""
        if self._broken:
            return
        try:
            self._read_until(end_s)
            if self._resampler is not None:
                self._append(self._resampler.resample(None))
            if self._written is not None:  # nothing past the pictures
                self._buffer = self._buffer[:, : max(0, round(end_s * self._rate) - self._written)]
            self._encode(container, last=True)
            for packet in self._out.encode(None):
                container.mux(packet)
        except Exception as exc:  # noqa: BLE001 - as above
            self._fail(exc)

    def _start(self) -> Iterator[Any]:
        """The decoded frames from shortly before `origin_s` (a seek: a video analysed from
        its second hour does not read the first)."""
        if self.origin_s > 1.0 and self._stream.time_base:
            with contextlib.suppress(Exception):  # cannot seek: read from the start
                target = int((self.origin_s - 1.0) / self._stream.time_base)
                self._input.seek(target, stream=self._stream, backward=True)
        return decode_packets(self._input, self._stream)

    def _resampled(self, frame: Any) -> np.ndarray:
        """`frame`'s samples in the output's format, rate and layout (``channels x n``)."""
        av = _av()
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        if setup != self._setup:  # the first frame, or the source's format changed midway
            if self._resampler is not None:
                self._append(self._resampler.resample(None))
            self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self._rate)
            self._setup = setup
        frames = self._resampler.resample(frame)
        return np.concatenate([f.to_ndarray() for f in frames], axis=1) if frames else self._buffer[:, :0]

    def _append(self, frames: list[Any]) -> None:
        if frames:
            self._buffer = np.concatenate([self._buffer, *(f.to_ndarray() for f in frames)], axis=1)

    def _place(self, start: int, samples: np.ndarray) -> None:
        """Put `samples` at output sample `start`: after a gap, silence fills it; where they
        overlap what came before, the overlap is dropped."""
        if self._written is None:
            self._written = max(0, start)
            if start < 0:  # the frame that straddles the first frame shown: from its time on
                samples = samples[:, -start:]
        else:
            gap = start - (self._written + self._buffer.shape[1])
            if gap > self._SLACK_S * self._rate:
                samples = np.concatenate([np.zeros((samples.shape[0], gap), np.float32), samples], axis=1)
            elif gap < -self._SLACK_S * self._rate:
                samples = samples[:, -gap:]
        self._buffer = np.concatenate([self._buffer, samples], axis=1)

    def _encode(self, container: Any, upto: int | None = None, last: bool = False) -> None:
        """Encode the buffer's whole AAC frames that end by output sample `upto` (and, when
        `last`, what is left)."""
        av = _av()
        while self._written is not None and (
            (self._buffer.shape[1] >= self._CHUNK and (upto is None or self._written + self._CHUNK <= upto))
            or (last and self._buffer.shape[1])
        ):
            chunk = np.ascontiguousarray(self._buffer[:, : self._CHUNK])
            self._buffer = self._buffer[:, self._CHUNK :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._layout)
            frame.sample_rate, frame.pts, frame.time_base = self._rate, self._written, Fraction(1, self._rate)
            self._written += chunk.shape[1]
            for packet in self._out.encode(frame):
                container.mux(packet)

    def _fail(self, exc: BaseException) -> None:
        warnings.warn(f"{self.source}: its sound stops here ({type(exc).__name__}: {exc})", stacklevel=4)
        self._done = self._broken = True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._input.close()


class TimelineRecorder:
    """Keeps each track's smoothed probabilities over time (a few floats per face and frame,
    never pixels) and draws them: one panel per track, one line per emotion.

    Examples:
        >>> timeline = TimelineRecorder(["happy", "sad"])
        >>> timeline.tracks
        0
    """

    def __init__(self, labels: Sequence[str], *, max_panels: int = 12) -> None:
        self.labels = tuple(labels)
        self.max_panels = max_panels
        self._times: dict[int, array[float]] = {}
        self._probs: dict[int, array[float]] = {}
        self._span: tuple[float, float] | None = None  # the analysed frames' first and last times

    @property
    def tracks(self) -> int:
        return len(self._times)

    def add(self, frame: FrameResult) -> None:
        if frame.time_s is None:
            return
        first, last = self._span or (frame.time_s, frame.time_s)
        self._span = (min(first, frame.time_s), max(last, frame.time_s))
        for face in frame.faces:
            if face.track_id is None:
                continue
            self._times.setdefault(face.track_id, array("f")).append(frame.time_s)
            self._probs.setdefault(face.track_id, array("f")).extend(
                face.probs.get(label, 0.0) for label in self.labels
            )

    def save(self, path: str | os.PathLike[str], *, title: str = "") -> Path:
        """Draw the timeline into `path` (PNG), atomically."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise DependencyError("matplotlib", "video", "the timeline plot (--plot)") from None
        ranked = sorted(self._times, key=lambda t: len(self._times[t]), reverse=True)[: self.max_panels]
        shown = sorted(ranked)
        panels = max(1, len(shown))
        figure = Figure(figsize=(10, 1.2 + 1.9 * panels), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
        for ax, track_id in zip(axes, shown, strict=False):
            times = np.frombuffer(self._times[track_id], dtype=np.float32)
            probs = np.frombuffer(self._probs[track_id], dtype=np.float32).reshape(-1, len(self.labels))
            times, probs = _broken_where_away(times, probs)
            for column, label in enumerate(self.labels):
                colour = np.array(EMOTION_COLOURS.get(label, (90, 90, 90))) / 255
                ax.plot(times, probs[:, column], color=colour, linewidth=1.4, label=label, marker=".",
                        markersize=3 if len(times) < 400 else 0)  # fmt: skip
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"track {track_id}")
            ax.grid(alpha=0.3)
        if not shown:
            axes[0].text(0.5, 0.5, "no faces found", ha="center", va="center", transform=axes[0].transAxes)
            axes[0].set_yticks([])
        axes[-1].set_xlabel("time (s)")
        if self._span is not None:  # the analysed span, not only where faces were (or 0..1)
            first, last = self._span
            axes[-1].set_xlim(first, last if last > first else first + 1.0)
        if shown:
            axes[0].legend(
                loc="upper center", bbox_to_anchor=(0.5, 1.32), ncol=len(self.labels), frameon=False
            )
        hidden = len(self._times) - len(shown)
        heading = title + (f" ({hidden} shorter tracks not shown)" if hidden else "")
        if heading:
            figure.suptitle(heading, y=0.995)
        figure.tight_layout()
        target = Path(path)
        with atomic_open(target, "wb") as handle:
            figure.savefig(handle, format="png")
        return target


def _broken_where_away(times: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The track's times and probabilities with a gap (NaN) where the face was away: a step of
    more than half a second and more than twice the usual step between its frames (frames
    analysed once a second are a line, not isolated points)."""
    steps = np.diff(times)
    if not len(steps):
        return times, probs
    usual = float(np.median(steps))
    gaps = np.flatnonzero(steps > max(0.5, 2.5 * usual)) + 1
    return np.insert(times, gaps, np.nan), np.insert(probs, gaps, np.nan, axis=0)


def _fitted(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` scaled to fit `width` x `height` whole, centred on black (a stream whose frame
    size changes midway, as WebRTC recordings do; the odd last row or column of the first size
    is the only thing cut)."""
    import cv2

    if image.shape[0] - height in (0, 1) and image.shape[1] - width in (0, 1):
        return image[:height, :width]  # the first size, an odd side trimmed for yuv420p
    scale = min(width / image.shape[1], height / image.shape[0])
    inner = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    resized = cv2.resize(image, inner, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - inner[1]) // 2, (width - inner[0]) // 2
    canvas[top : top + inner[1], left : left + inner[0]] = resized
    return canvas
