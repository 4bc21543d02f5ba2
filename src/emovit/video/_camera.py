"""Live cameras: ``camera://0`` (the first camera), ``camera://1``, or a device path on Linux
(``camera:///dev/video2``), read with OpenCV's capture (V4L2 on Linux, AVFoundation on macOS,
Media Foundation or DirectShow on Windows; PyAV's FFmpeg builds carry no camera input).

A camera has no timeline of its own: a frame's time is when it arrived, in seconds since the
first one, so ``start``, ``end``, ``fps`` and the smoothing work as on a file. The camera does
not wait for the analysis: when the analysis falls behind, the oldest frame waiting is dropped
(and counted), so what is analysed stays current. It runs until ``end``, until it is stopped
(Ctrl-C; `EmotionRecognizer.predict_video`'s ``stop``), or until the camera stops sending.

Needs OpenCV (``opencv-python-headless``, in the ``[video]`` and ``[faces]`` extras).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any
from urllib.parse import urlsplit

from emovit.errors import DependencyError, InputError
from emovit.sources import is_url
from emovit.video._options import VideoOptions
from emovit.video._source import DecodedFrame, FrameReader, VideoInfo, VideoReader

__all__ = ["CAMERA_SCHEME", "CameraReader", "camera_device", "is_camera", "open_video"]

CAMERA_SCHEME = "camera"
#: Frames chosen and waiting for the analysis at most: a live view keeps only the newest.
_LIVE_QUEUE = 2
#: Failed reads in a row after which the camera is taken as gone (unplugged, taken over).
_FAILED_READS = 10


def is_camera(source: Any) -> bool:
    """Whether `source` names a live camera (``camera://...``)."""
    return isinstance(source, str) and is_url(source) and urlsplit(source).scheme.lower() == CAMERA_SCHEME


def camera_device(source: str) -> int | str:
    """The camera `source` names: its number (``camera://0``) or its device path
    (``camera:///dev/video2``); an `InputError` for anything else.

    Examples:
        >>> camera_device("camera://1")
        1
        >>> camera_device("camera:///dev/video2")
        '/dev/video2'
    """
    rest = source.partition("://")[2]
    if rest.isascii() and rest.isdigit():
        return int(rest)
    if rest.startswith("/") and len(rest) > 1:
        return rest
    raise InputError(
        source, "not a camera: give its number (camera://0 is the first camera) or its device path "
        "(camera:///dev/video0)", "unsupported_input",
    )  # fmt: skip


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise DependencyError(
            "opencv-python-headless", "video", "reading a camera", option="source"
        ) from None
    return cv2


class CameraReader(FrameReader):
    """Reads a live camera in a background thread and yields the frames `options` selects,
    timed by their arrival (see the module's docstring).

    Opening happens at construction: a camera that does not exist, is in use or may not be
    read is an `InputError` (code ``not_found``) naming it. A camera that stops sending ends
    the run with a warning; the frames before are kept.

    Examples:
        >>> with CameraReader("camera://0", options=VideoOptions(fps=5, end=10)) as camera:  # doctest: +SKIP
        ...     for frame in camera:
        ...         frame.time_s, frame.image.shape
    """

    live = True
    _no_frames = "the camera opened but sent no frame"

    def __init__(
        self,
        source: str,
        *,
        options: VideoOptions | None = None,
        name: str | None = None,
        max_pixels: int | None = None,
        quiet: bool = False,
    ) -> None:
        super().__init__(options, name or source, max_pixels, quiet)
        device = camera_device(source)
        cv2 = _cv2()
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # its warnings: said below
        try:
            capture = cv2.VideoCapture(device, cv2.CAP_ANY)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not capture.isOpened():
            capture.release()
            where = f"camera number {device}" if isinstance(device, int) else os.fspath(device)
            raise InputError(
                self.name, f"cannot open {where}: there is no such camera, another program is using "
                "it, or this user may not read it", "not_found",
            )  # fmt: skip
        self._capture = capture
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.info = VideoInfo(
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=fps if 0 < fps < 1000 else None,
            duration_s=None,
            codec="camera",
        )
        try:
            self._check_pixels(self.info.width, self.info.height)
        except BaseException:
            capture.release()
            raise
        self._open_queue(_LIVE_QUEUE)

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._capture.release()

    def _decode_frames(self) -> None:
        cv2 = _cv2()
        origin: float | None = None
        failed = 0
        while not self._stop.is_set():
            begin = time.perf_counter()
            if not self._capture.grab():  # the next frame, not yet converted
                failed += 1
                if failed < _FAILED_READS:
                    time.sleep(0.05)
                    continue
                if self.frames_decoded:
                    self.incomplete = True
                    self._notes.append(
                        f"the camera stopped sending frames after {self._last_decoded_s or 0:.2f} s "
                        "(unplugged, or taken by another program); the frames before are kept"
                    )
                return
            failed = 0
            now = time.monotonic()
            origin = now if origin is None else origin
            t = now - origin
            self._last_decoded_s = t
            index = self.frames_decoded
            self.frames_decoded += 1
            verdict = self._sampler.verdict(t)
            if verdict == "end":
                self.reached_end = True
                return
            if verdict != "take":
                continue
            ok, bgr = self._capture.retrieve()
            if not ok or bgr is None:
                continue
            channels = 1 if bgr.ndim == 2 else bgr.shape[2]
            code = {1: cv2.COLOR_GRAY2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels, cv2.COLOR_BGR2RGB)
            image = cv2.cvtColor(bgr, code)
            height, width = image.shape[:2]
            self._check_pixels(width, height)
            self.info.width, self.info.height = width, height  # what it sends, whatever it said
            self.last_time_s = t = round(t, 9)
            if not self._put(DecodedFrame(index, t, image, (time.perf_counter() - begin) * 1e3)):
                return


def open_video(
    source: Any,
    *,
    options: VideoOptions | None = None,
    name: str | None = None,
    max_pixels: int | None = None,
    quiet: bool = False,
) -> FrameReader:
    """The reader for `source`: a `CameraReader` for ``camera://...``, else a `VideoReader`
    (a file, a URL, bytes or a file object)."""
    if is_camera(source):
        return CameraReader(source, options=options, name=name, max_pixels=max_pixels, quiet=quiet)
    return VideoReader(source, options=options, name=name, max_pixels=max_pixels, quiet=quiet)
