"""Video decoding: PyAV (FFmpeg) in its own thread, a bounded queue, upright RGB frames with
their presentation times, and the frame sampling of `VideoOptions`.

Times come from each frame's presentation timestamp (PTS) relative to the stream's start, so
they are exact on variable-frame-rate files; frames without one (raw streams) take the
previous time plus one frame interval. Rotation metadata (phone videos) is applied. The
decoding thread stays at most ``queue_frames`` frames ahead (fewer for large frames), so
memory does not grow with the length of the video.

Needs the ``[video]`` extra (``av``: PyAV, which ships its own FFmpeg).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Self
from urllib.parse import urlsplit

import numpy as np

from emovit.errors import DependencyError, InputError
from emovit.imageio import check_file
from emovit.sources import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VIDEO_HEAD_BYTES,
    VIDEO_URL_SCHEMES,
    is_url,
    looks_like_video,
)
from emovit.video._options import VideoOptions

__all__ = [
    "DecodedFrame",
    "FrameReader",
    "FrameSampler",
    "VideoInfo",
    "VideoReader",
    "decode_packets",
    "is_video",
    "probe_video",
]

VideoInput = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
# Stills that FFmpeg also opens (as one-frame "videos"): they always take the photo path.
_IMAGE_FORMATS = ("image2", "gif", "apng", "webp", "tiff", "bmp")
# Decoded frames waiting in the queue take at most this many bytes (4K frames are 25 MB each).
_QUEUE_BYTES = 128 * 1024 * 1024
#: Frames up to this size are decoded by `probe_video` to read their rotation (8K UHD).
_PROBE_PIXELS = 7680 * 4320
#: Damaged packets in a row after which the rest of a file is taken as unreadable.
_DAMAGED_IN_A_ROW = 64
_NETWORK_TIMEOUT_S = 15.0
# The demuxers FFmpeg may use for bytes and file objects (uploads): video containers, and the
# still-image ones so that a photo is refused by name. Left out on purpose: concat, hls, dash,
# image2 and the other playlist or file-pattern demuxers, which open further files or URLs named
# inside the bytes (an ffconcat upload would otherwise make the server read its own disk).
_IN_MEMORY_FORMATS = ",".join(
    (
        *("mov", "matroska", "avi", "mpegts", "mpeg", "flv", "ogg", "asf", "mxf", "nut", "ivf", "dv"),
        *("m4v", "mpegvideo", "h264", "hevc", "obu", "av1", "mjpeg", "yuv4mpegpipe"),
        *("gif", "apng", "webp_pipe", "png_pipe", "jpeg_pipe", "bmp_pipe", "tiff_pipe"),
    )
)


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise DependencyError("av", "video", "video analysis", option="source") from None
    return av


@dataclass
class VideoInfo:
    """What the container says about a video (before decoding it).

    Attributes:
        width, height: frame size in pixels, upright (rotation applied), in square pixels (an
            anamorphic video's frames are stretched to the width players show).
        fps: the stream's frame rate as FFmpeg reads it (None when the file gives none): a
            constant-rate video's rate; for a variable-rate file, the finest rate its timestamps
            use, which times frames that carry none.
        average_fps: frames per second on average: the declared frame count over the declared
            duration when the file gives both (None otherwise); a summary of a video read to
            its end gives the frames counted over the duration analysed instead.
        duration_s: the video stream's duration (None when unknown: live streams, some files).
        rotation: degrees the frames are turned counter-clockwise to stand upright.
        codec: the video codec's name.
        frames: the frame count the container declares (None when it declares none).
        start_s: where the video stream's first frame lies in the file's timeline, which frame
            times count from (other streams, such as the sound, are placed against it): as the
            file declares it, corrected once decoding has begun where the declaration is off
            (AVI with B-frames).
    """

    width: int
    height: int
    fps: float | None
    duration_s: float | None
    rotation: int = 0
    codec: str = ""
    frames: int | None = None
    start_s: float = 0.0
    average_fps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "average_fps": self.average_fps,
            "duration_s": self.duration_s,
            "rotation": self.rotation,
            "codec": self.codec,
            "frames": self.frames,
        }


@dataclass
class DecodedFrame:
    """One frame chosen for analysis: its position in the stream, its time, its pixels."""

    index: int
    time_s: float
    image: np.ndarray = field(repr=False)
    decode_ms: float = 0.0


@dataclass
class _End:
    error: Exception | None = None


def _check_path(path: Path, label: str) -> None:
    check_file(path, label, "a video file", InputError)


def _open_container(source: VideoInput, label: str) -> Any:
    """The opened PyAV container, or an `InputError` naming what is wrong with `source`."""
    av = _av()
    options: dict[str, str] = {}
    target: Any
    if isinstance(source, str | os.PathLike) and is_url(os.fspath(source)):
        target = os.fspath(source)
        if urlsplit(target).scheme.lower() in ("rtsp", "rtsps"):
            options["rtsp_transport"] = "tcp"
    elif isinstance(source, str | os.PathLike):
        _check_path(Path(source), label)
        target = os.fspath(source)
    elif isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise InputError(label, "no bytes (empty input)", "empty_file")
        target = io.BytesIO(bytes(source))
        options["format_whitelist"] = _IN_MEMORY_FORMATS
    elif hasattr(source, "read"):
        target = source
        options["format_whitelist"] = _IN_MEMORY_FORMATS
    else:
        raise InputError(
            label, f"unsupported video input {type(source).__name__}; expected a path, URL, bytes or a "
            "binary file object", "unsupported_input",
        )  # fmt: skip
    try:
        return av.open(target, mode="r", options=options, timeout=_NETWORK_TIMEOUT_S)
    except av.error.InvalidDataError:
        if _looks_like_a_container(source):  # a recording cut before its index (MP4's moov)
            raise InputError(
                label, "a damaged or truncated video: its container cannot be read (an MP4 cut "
                "before its index, say)", "corrupt_video",
            ) from None  # fmt: skip
        raise InputError(label, "not a video or image format FFmpeg reads", "unsupported_format") from None
    except (av.error.FFmpegError, OSError) as exc:
        if isinstance(exc, av.error.ArgumentError) and "format_whitelist" in options:
            raise InputError(
                label, "not a video container emovit opens from bytes (playlists and lists of other "
                "files never are); it opens MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg, ASF, MXF, "
                "NUT, IVF, DV and raw H.264/HEVC/AV1/MPEG video/MJPEG streams",
                "unsupported_format",
            ) from None  # fmt: skip
        raise InputError(label, f"cannot open the video ({exc})", "not_found") from None


def _looks_like_a_container(source: VideoInput) -> bool:
    """Whether `source` starts like a video container FFmpeg knows (`looks_like_video`): one it
    then cannot open is damaged, not of an unknown format."""
    head = b""
    with contextlib.suppress(Exception):
        if isinstance(source, bytes | bytearray | memoryview):
            head = bytes(source[:VIDEO_HEAD_BYTES])
        elif isinstance(source, str | os.PathLike):
            with open(source, "rb") as file:
                head = file.read(VIDEO_HEAD_BYTES)
        elif hasattr(source, "seekable") and source.seekable():
            at = source.tell()  # where FFmpeg left it: the head is read from the start
            source.seek(0)
            head = source.read(VIDEO_HEAD_BYTES)
            source.seek(at)
    return looks_like_video(head)


def _video_stream(container: Any, label: str) -> Any:
    if _is_still(container):
        raise InputError(label, "a still image, not a video (send photos as photos)", "unsupported_format")
    moving = _moving_pictures(container)
    if not moving:
        kinds = sorted({_kind(stream) for stream in container.streams}) or ["no streams at all"]
        raise InputError(label, f"no video stream (it holds {', '.join(kinds)})", "no_video_stream")
    stream = moving[0]
    if stream.codec_context is None:  # a codec this FFmpeg has no decoder for
        codec = getattr(getattr(stream, "codec", None), "name", None) or "unknown"
        raise InputError(label, f"no decoder for its video codec ({codec})", "unsupported_format")
    return stream


def _moving_pictures(container: Any) -> list[Any]:
    """The video streams that are not a still picture attached to the file."""
    return [stream for stream in container.streams.video if not _is_cover(stream)]


def _is_cover(stream: Any) -> bool:
    """Whether `stream` is a picture attached to the file (an audio file's cover art is a
    one-frame "video" stream)."""
    return stream.type == "video" and bool(stream.disposition & _av().stream.Disposition.attached_pic)


def _kind(stream: Any) -> str:
    return "cover art" if _is_cover(stream) else stream.type


def _is_still(container: Any) -> bool:
    names = set((container.format.name or "").split(","))
    return any(n in _IMAGE_FORMATS or n.endswith("_pipe") for n in names)


def _seconds(value: Any, base: Any) -> float | None:
    return float(value * base) if value is not None and base is not None else None


def _tag_seconds(tag: str | None) -> float | None:
    """Seconds from a Matroska ``DURATION`` tag ("HH:MM:SS.nnnnnnnnn"), None when absent or odd."""
    try:
        hours, minutes, seconds = (tag or "").split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return value if value > 0 else None


def _non_square(stream: Any) -> float | None:
    """The width of the stream's pixels as a fraction of their height (anamorphic DVD or HDV
    video), or None for square pixels (or none declared)."""
    sar = stream.sample_aspect_ratio
    value = float(sar) if sar else 0.0
    return value if value > 0 and abs(value - 1.0) > 1e-3 else None


def _info(container: Any, stream: Any) -> VideoInfo:
    rate = stream.guessed_rate or stream.average_rate
    fps = float(rate) if rate else None
    duration = _seconds(stream.duration, stream.time_base)
    if duration is None:  # Matroska and WebM give a stream's duration as a tag
        duration = _tag_seconds((stream.metadata or {}).get("DURATION"))
    if duration is None and container.duration is not None and len(container.streams) == 1:
        duration = container.duration / 1_000_000  # the container's: only the video's when alone
    context = stream.codec_context
    sar = _non_square(stream)
    frames = int(stream.frames) or None
    return VideoInfo(
        width=int(context.width) if sar is None else max(2, round(context.width * sar)),
        height=int(context.height),
        fps=fps if fps and fps > 0 else None,
        duration_s=duration,
        codec=context.name or "",
        frames=frames,
        start_s=_declared_start(container, stream),
        average_fps=round(frames / duration, 6) if frames and duration else None,
    )


def _declared_start(container: Any, stream: Any) -> float:
    """The video stream's start as the file declares it (the stream's, else the container's)."""
    start = _seconds(stream.start_time, stream.time_base)
    if start is None and container.start_time is not None:
        start = container.start_time / 1_000_000
    return start or 0.0


def decode_packets(container: Any, stream: Any, damaged: list[str] | None = None) -> Iterator[Any]:
    """The frames of one stream of an open PyAV `container`, decoded packet by packet: a
    damaged packet is skipped (as FFmpeg's own tools do) and its error appended to `damaged`,
    not the end of the stream. Many damaged packets in a row (a file that is damaged from there
    on) end it with the decoder's error."""
    av = _av()
    in_a_row = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.EOFError:
            return
        except av.error.FFmpegError as error:
            in_a_row += 1
            if damaged is not None:
                damaged.append(str(error))
            if in_a_row >= _DAMAGED_IN_A_ROW:
                raise
            continue
        in_a_row = 0
        yield from frames


def probe_video(source: VideoInput, *, name: str | None = None, max_pixels: int | None = None) -> VideoInfo:
    """Open `source` (path, URL, bytes or binary file object) and describe its video stream;
    its first frame is decoded for the rotation, unless it is over `max_pixels`.

    Raises:
        InputError: not readable as a video (``not_found``, ``empty_file``,
            ``unsupported_format``, ``no_video_stream``).
        DependencyError: PyAV is not installed (``pip install 'emovit[video]'``).
    """
    label = name or (os.fspath(source) if isinstance(source, str | os.PathLike) else "<video>")
    container = _open_container(source, label)
    try:
        stream = _video_stream(container, label)
        info = _info(container, stream)
        limit = min(_PROBE_PIXELS, max_pixels or _PROBE_PIXELS)
        if info.width * info.height <= limit:  # the rotation is on the frames: read one
            with contextlib.suppress(Exception):  # a first frame that does not decode: as stored
                frame = next(container.decode(stream), None)
                turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
                info.rotation = turns * 90
                if turns % 2:
                    info.width, info.height = info.height, info.width
        return info
    finally:
        container.close()


def is_video(source: str | os.PathLike[str]) -> bool:
    """Whether the CLI treats `source` as a video rather than a photo.

    A URL (http, https, rtsp, …) or a known video extension (mp4, mov, mkv, webm, avi, m4v, …)
    is a video, unless an image decoder reads the file (a photo saved under a video's name); a
    still-image extension (JPEG, PNG, GIF, WebP, …) never is. Any other file is a
    video when no image decoder reads it and FFmpeg finds a video stream in it, or sound (an
    audio file then fails as a video without a video stream; the probe needs PyAV, without it
    such files take the photo path)."""
    text = os.fspath(source)
    if is_url(text):
        return urlsplit(text).scheme.lower() in VIDEO_URL_SCHEMES
    suffix = Path(text).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return False
    if suffix in VIDEO_EXTENSIONS:  # a photo whatever its name (a JPEG saved as .mp4 was refused)
        return not (Path(text).is_file() and _an_image(text))
    if not Path(text).is_file() or _an_image(text):
        return False
    try:
        av = _av()
    except DependencyError:
        return False
    try:
        with av.open(text) as container:
            # sound without pictures (an audio file, with cover art or not) is media too: it
            # fails as a video with "no video stream", not as an image format
            media = _moving_pictures(container) or container.streams.audio
            return bool(media) and not _is_still(container)
    except (av.error.FFmpegError, OSError):
        return False


def _an_image(path: str) -> bool:
    """Whether one of emovit's image decoders reads `path`'s header."""
    from PIL import Image

    from emovit.imageio import readable_formats

    try:
        with Image.open(path, formats=readable_formats()):
            return True
    except Exception:  # noqa: BLE001 - not an image emovit reads (or a bomb, or broken)
        return False


class FrameSampler:
    """Which frames `VideoOptions` chooses, given each frame's time: those within start/end,
    every N-th of them or one per 1/fps seconds (`tolerance`: half a frame interval)."""

    def __init__(self, options: VideoOptions, tolerance: float) -> None:
        self.options = options
        self.tolerance = tolerance
        self.in_range = 0  # frames seen within start/end, chosen or not
        self._next_time = options.start

    def verdict(self, t: float) -> Literal["before", "end", "skip", "take"]:
        """``before`` the start, at or past the ``end``, or within them: ``take`` or ``skip``."""
        opts = self.options
        if t < opts.start - 1e-9:
            return "before"
        if opts.end is not None and t >= opts.end - 1e-9:
            return "end"
        take = True
        if opts.every is not None:
            take = self.in_range % opts.every == 0
        elif opts.fps is not None:
            take = t + self.tolerance >= self._next_time
            if take:
                self._next_time += 1.0 / opts.fps
                while self._next_time <= t:
                    self._next_time += 1.0 / opts.fps
        self.in_range += 1
        return "take" if take else "skip"


class FrameReader:
    """A source of frames read in a background thread into a bounded queue, and yielded with
    the frames `options` selects (`FrameSampler`): what a video file and a camera share.

    A subclass opens its source at construction (setting `info`, then calling `_open_queue`),
    reads it in `_decode_frames` (handing each chosen frame to `_put`) and lets it go in
    `_release`. A `live` source (a camera) does not wait for the analysis: when the queue is
    full its oldest frame is dropped (counted in `dropped`), so what is analysed stays current.
    `stop` (an event set from elsewhere: Ctrl-C) ends the frames while waiting for the next.
    """

    live = False
    info: VideoInfo

    def __init__(
        self,
        options: VideoOptions | None,
        name: str,
        max_pixels: int | None,
        quiet: bool,
        stop: threading.Event | None = None,
    ) -> None:
        self.options = options or VideoOptions()
        self.stopped = False  # ended by `stop` before the source did
        self.name = name
        self.max_pixels = max_pixels
        self.quiet = quiet  # warnings only in `warnings`, never printed (a server's uploads)
        self.warnings: list[str] = []
        self.incomplete = False  # the frames ended before the video did (damage, truncation)
        self.reached_end = False  # a frame at or after `options.end` was decoded: the video goes on
        self.frames_decoded = 0
        self.dropped = 0  # chosen frames a live source dropped because the analysis fell behind
        self.last_time_s: float | None = None  # of the last frame chosen for analysis
        self._last_decoded_s: float | None = None  # of the last frame decoded at all
        self._last_shown_until_s: float | None = None  # and when it leaves the screen, if known
        self._sampler = FrameSampler(self.options, 1e-3)
        self._queue: queue.Queue[DecodedFrame | _End] = queue.Queue(2)
        self._stop = threading.Event()
        self._halt = stop
        self._thread: threading.Thread | None = None
        self._started = False
        self._notes: list[str] = []  # warnings found by the decoding thread, raised by the consumer
        self._damaged: list[str] = []  # the decoder's error for each packet skipped as damaged
        self._notes_raised = 0

    @property
    def frames_in_range(self) -> int:
        """Frames read within options.start/end, analysed or not."""
        return self._sampler.in_range

    def _open_queue(self, frames: int, least: int = 2) -> None:
        """Size the queue for `info`'s frames (at most `_QUEUE_BYTES`, at most `frames`, at
        least `least`) and time the sampling by `info.fps`."""
        frame_bytes = max(1, self.info.width * self.info.height * 3)
        self._queue = queue.Queue(max(least, min(frames, _QUEUE_BYTES // frame_bytes)))
        fps = self.info.fps
        self._sampler = FrameSampler(self.options, 0.5 / fps if fps else 1e-3)

    # ------------------------------------------------------------------ consumer side

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._started:
            raise RuntimeError(f"a {type(self).__name__} can be iterated once")
        self._started = True
        self._thread = threading.Thread(target=self._decode, name="emovit-video-decode", daemon=True)
        self._thread.start()
        yielded = 0
        try:
            while True:
                try:  # a wait for the next frame (a camera's, before --start) ends on `stop`
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    if self._halt is not None and self._halt.is_set():
                        self.stopped = True
                        return
                    continue
                while self._notes_raised < len(self._notes):
                    self._warn(self._notes[self._notes_raised])
                    self._notes_raised += 1
                if isinstance(item, _End):
                    if item.error is not None:
                        if yielded == 0:
                            raise self._as_input_error(item.error)
                        self.incomplete = True
                        self._warn(
                            f"decoding stopped at {self.last_time_s or 0:.2f} s ({item.error}); the "
                            f"{yielded} analysed frame(s) before the damage are kept"
                        )
                    elif (
                        yielded == 0
                        and not self.reached_end  # a window between two frames is merely empty
                        and self._last_decoded_s is not None
                        and self._last_decoded_s < self.options.start - 1e-9
                    ):
                        raise InputError(
                            self.name, f"nothing to analyse: the start ({self.options.start:g} s) is "
                            f"after its last frame ({self._last_decoded_s:.2f} s)", "start_after_end",
                        )  # fmt: skip
                    else:
                        self._check_complete()
                    return
                yielded += 1
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoding thread and close the file (safe to call twice)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(0.05)
        with contextlib.suppress(Exception):  # closing a damaged file must not hide the real outcome
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        if not self.quiet:
            warnings.warn(f"{self.name}: {message}", stacklevel=3)

    def _check_pixels(self, width: int, height: int) -> None:
        """`InputError` ``too_many_pixels`` for frames over `max_pixels` (checked on the size the
        container declares, and again on every frame before it is converted to RGB)."""
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise InputError(
                self.name, f"its frames are {width}x{height} = {width * height:,} pixels, over the "
                f"limit of {self.max_pixels:,}", "too_many_pixels",
            )  # fmt: skip

    def _as_input_error(self, error: Exception) -> InputError:
        if isinstance(error, InputError):
            return error
        return InputError(
            self.name, f"damaged video data, no frame could be decoded ({error})", "corrupt_video"
        )

    def _check_complete(self) -> None:
        """Warn when the frames end well before the duration the container declares (a
        truncated file FFmpeg does not complain about)."""
        duration, last, fps = self.info.duration_s, self._last_decoded_s, self.info.fps
        if duration is None or last is None or self._stop.is_set():
            return
        # a last frame held on screen (a screen recording ending on a still) is not missing ones
        last = max(last, self._last_shown_until_s or last)
        if self.options.end is not None and self.options.end <= duration:
            return
        slack = max(0.25, 3.0 / fps) if fps else 0.5
        if last + slack < duration:
            self.incomplete = True
            self._warn(
                f"the frames stop at {last:.2f} s of its {duration:.2f} s (truncated or damaged file); "
                "the frames before are kept"
            )

    # ------------------------------------------------------------------ decoding thread

    def _put(self, item: DecodedFrame | _End) -> bool:
        """Queue `item` for the consumer (False once it stopped): a file's reader waits for room,
        a live one makes room for a frame by dropping the oldest frame waiting (the end of
        the frames waits, as a file's do: it never replaces a frame)."""
        evict = self.live and isinstance(item, DecodedFrame)
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=None if evict else 0.1, block=not evict)
                return True
            except queue.Full:
                if evict:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
                        self.dropped += 1
        return False

    def _decode(self) -> None:
        try:
            self._decode_frames()
            if self._damaged and not self.frames_decoded:
                raise InputError(self.name, f"damaged video data ({self._damaged[0]})", "corrupt_video")
            if not self.frames_decoded and not self._stop.is_set():
                raise InputError(  # a file cut before its first whole frame was "1 of 1 analysed"
                    self.name, "not one frame could be decoded (a truncated or damaged file, or a "
                    "stream without frames)", "corrupt_video",
                )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which decides
            self._put(_End(exc))
        else:
            if self._damaged:
                self.incomplete = True
                self._notes.append(
                    f"{len(self._damaged)} damaged packet(s) skipped ({self._damaged[0]}): the frames "
                    "they held are missing, the others are kept"
                )
            if self.dropped:
                self._notes.append(
                    f"{self.dropped} frame(s) dropped: the analysis was slower than the frames chosen "
                    "(fewer frames per second keep up)"
                )
            self._put(_End())

    def _deliver(self, index: int, t: float, image: np.ndarray, begin: float) -> bool:
        """Hand a chosen frame (read since `begin`, a `time.perf_counter`) to the consumer;
        False once it stopped. Its time is kept to the nanosecond (0.09999999999999998 was 0.1 s)."""
        self.last_time_s = t = round(t, 9)
        return self._put(DecodedFrame(index, t, image, (time.perf_counter() - begin) * 1e3))

    def _decode_frames(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Let the source go (its file, its device)."""


class VideoReader(FrameReader):
    """Decodes one video in a background thread and yields the frames `options` selects.

    Opening happens at construction (an `InputError` names the problem: missing, empty, not a
    video, no video stream); decoding starts on iteration. A decoding error after some frames
    ends the video there with a warning (in `warnings` and through `warnings.warn`): the frames
    before the damage are kept. An error before the first frame raises ``corrupt_video``.

    Examples:
        >>> with VideoReader("clip.mp4", options=VideoOptions(fps=5)) as reader:  # doctest: +SKIP
        ...     for frame in reader:
        ...         frame.index, frame.time_s, frame.image.shape
    """

    def __init__(
        self,
        source: VideoInput,
        *,
        options: VideoOptions | None = None,
        name: str | None = None,
        max_pixels: int | None = None,
        quiet: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        label = name or (os.fspath(source) if isinstance(source, str | os.PathLike) else "<video>")
        super().__init__(options, label, max_pixels, quiet, stop)
        self._source = source  # opened again when a failed seek left the demuxer at its end
        self._container = _open_container(source, self.name)
        try:
            self._stream = _video_stream(self._container, self.name)
            self.info = _info(self._container, self._stream)
            self._check_pixels(self.info.width, self.info.height)
        except BaseException:
            self._container.close()
            raise
        self._stream.thread_type = "AUTO"
        self._sar = _non_square(self._stream)  # such pixels are stretched to square ones
        self._open_queue(self.options.queue_frames)

    def _release(self) -> None:
        self._container.close()

    def _origin(self) -> float:
        """The time of the stream's first frame (MPEG-TS streams start at 1.4 s, say)."""
        first = self._first_shown() if self._container.format.name == "avi" else None
        return first if first is not None else _declared_start(self._container, self._stream)

    def _first_shown(self, packets: int = 32) -> float | None:
        """The earliest presentation time among the first `packets` (None when there is none,
        or the source cannot be read twice), the demuxer put back at the start.

        AVI stores no presentation times: with B-frames FFmpeg derives them from the decoding
        order and the codec's delay, so the first frame is shown at 1/fps while the stream says
        it starts at 0: every time would be a frame late."""
        source: Any = self._source
        if hasattr(source, "read") and not (hasattr(source, "seekable") and source.seekable()):
            return None  # a pipe: what is read to peek is gone (its times stay a frame late)
        if isinstance(source, str) and "://" in source:
            return None  # a URL: going back could mean downloading it again
        times: list[int] = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.pts is not None:
                    times.append(packet.pts)
                if len(times) >= packets:
                    break
        except Exception:  # noqa: BLE001 - the stream's start then stays as the container says
            times = []
        self._rewind()
        return _seconds(min(times), self._stream.time_base) if times else None

    def _seek(self, start: float, origin: float) -> bool:
        """Jump to the key frame before `start`; False when the source cannot seek."""
        try:
            target = round((start + origin) / self._stream.time_base)
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
            return True
        except Exception:  # noqa: BLE001 - pipes and some streams cannot seek: decode from the start
            return False

    def _rewind(self) -> None:
        """Back to the first frame after a seek that failed or that no try could land before
        the start (a failed seek can leave the demuxer at the end of the file)."""
        with contextlib.suppress(Exception):
            self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
            return
        source: Any = self._source
        if hasattr(source, "read"):
            if not (hasattr(source, "seekable") and source.seekable()):
                return  # a pipe: decode on from where it is
            source.seek(0)
        self._container.close()
        self._container = _open_container(source, self.name)
        self._stream = _video_stream(self._container, self.name)
        self._stream.thread_type = "AUTO"

    def _frames_from(self, start: float, origin: float, tolerance: float) -> tuple[Iterator[Any], bool]:
        """Decoded frames from the key frame before `start`, and whether they come from a seek.

        A demuxer may land after the target (MPEG-TS lands on the next key frame): then it seeks
        again further back (1 s, 2 s, 4 s), and at worst decodes from the first frame (with
        B-frames a TS seek to the stream's very first time lands on the next key frame too)."""
        back = 0.0
        for _ in range(4):
            target = max(0.0, start - back)
            if not self._seek(target, origin):
                break
            frames = self._decoded()
            first = next(frames, None)
            if first is None:  # nothing after the seek: the demuxer is at the end
                break
            t = None if first.pts is None else float(first.time) - origin
            if t is None or t <= start + tolerance:
                return itertools.chain([first], frames), True
            if target == 0.0:  # even a seek to the first frame landed after the start
                break
            back = max(1.0, 2 * back)
        self._rewind()
        return self._decoded(), False

    def _decoded(self) -> Iterator[Any]:
        """The stream's frames (`decode_packets`): damaged packets skipped and counted."""
        return decode_packets(self._container, self._stream, self._damaged)

    def _decode_frames(self) -> None:
        av = _av()
        opts = self.options
        fps = self.info.fps
        origin = self.info.start_s = self._origin()
        tolerance = self._sampler.tolerance
        index, previous = -1, None
        warned_times = False
        damaged = 0  # damaged packets seen when the last frame was numbered
        try:
            if opts.start > 0:
                frames, seeked = self._frames_from(opts.start, origin, tolerance)
            else:
                frames, seeked = self._decoded(), False
            for frame in frames:
                if self._stop.is_set():
                    return
                begin = time.perf_counter()
                index += 1
                t = None if frame.pts is None else float(frame.time) - origin
                if t is None or (previous is not None and t <= previous):
                    if not fps:
                        raise InputError(
                            self.name, "its frames carry no timestamps and it has no frame rate",
                            "no_frame_rate",
                        )  # fmt: skip
                    if not warned_times and t is not None:
                        warned_times = True
                        self._notes.append(
                            f"its timestamps do not increase; times follow its frame rate ({fps:g}/s)"
                        )
                    t = previous + 1.0 / fps if previous is not None else 0.0
                if seeked and index == 0 and fps:
                    index = round(t * fps)  # after a seek: the position estimated from the time
                if len(self._damaged) != damaged and fps:  # frames lost with a damaged packet
                    damaged = len(self._damaged)
                    index = max(index, round(t * fps))
                previous = self._last_decoded_s = t
                shown = frame.duration * frame.time_base if frame.duration and frame.time_base else None
                self._last_shown_until_s = t + float(shown) if shown is not None else None
                self.frames_decoded += 1
                verdict = self._sampler.verdict(t)
                if verdict == "end":
                    self.reached_end = True
                    return
                if verdict != "take":
                    continue
                shown = frame.width if self._sar is None else max(2, round(frame.width * self._sar))
                self._check_pixels(max(shown, frame.width), frame.height)  # the declared size can lie
                if self._sar is not None:  # anamorphic (DVD, HDV): square pixels, as players show it
                    image = frame.to_ndarray(format="rgb24", width=shown, height=frame.height)
                    self.info.width = shown
                else:
                    image = frame.to_ndarray(format="rgb24")
                turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
                if turns:
                    image = np.ascontiguousarray(np.rot90(image, turns))
                    self.info.rotation = turns * 90
                    self.info.width, self.info.height = image.shape[1], image.shape[0]
                if not self._deliver(index, t, image, begin):
                    return
        except av.error.EOFError:
            return
