"""Live cameras: ``camera://0`` (the first camera), ``camera://1``, or a device path on Linux
(``camera:///dev/video2``, opened with V4L2), read with OpenCV's capture (V4L2 on Linux,
AVFoundation on macOS, Media Foundation or DirectShow on Windows; PyAV's FFmpeg builds carry no
camera input).

A camera has no timeline of its own: a frame's time is when it arrived, in seconds since the
first one, so ``start``, ``end``, ``fps`` and the smoothing work as on a file. The camera does
not wait for the analysis: when the analysis falls behind, the oldest frame waiting is dropped
(and counted), so what is analysed stays current. It runs until ``end``, until it is stopped
(Ctrl-C; `EmotionRecognizer.predict_video`'s ``stop``), or until the camera stops sending.

Needs OpenCV (``opencv-python-headless``, in the ``[video]`` and ``[faces]`` extras).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from emovit.errors import DependencyError, InputError
from emovit.sources import is_url
from emovit.video._options import MAX_FPS, VideoOptions
from emovit.video._source import FrameReader, VideoInfo, VideoReader

__all__ = ["CAMERA_SCHEME", "CameraReader", "camera_device", "is_camera", "open_video"]

CAMERA_SCHEME = "camera"
#: Seconds without a frame after which the camera is taken as gone (unplugged, taken over), or,
#: before its first frame, as not sending (another program holds it; it is still warming up).
_SILENT_S = 5.0
#: Frames in a row that arrive but cannot be decoded after which the camera is given up.
_UNDECODABLE = 30
#: Seconds one V4L2 read waits for a frame (OpenCV's default, 10, held a stalled camera that long
#: at each try, and Ctrl-C with it); OpenCV reads it once, at the first read of any camera.
_V4L_WAIT_S = "2"


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
    if rest.startswith("/dev/") and len(rest) > len("/dev/"):
        return rest
    raise InputError(
        source, "not a camera: give its number (camera://0 is the first camera) or, on Linux, its "
        "device path (camera:///dev/video0)", "unsupported_input",
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
    read is an `InputError` (code ``not_found``) naming it, as is one that opens but sends no
    frame within `_SILENT_S` seconds. A camera that stops sending ends the run with a warning;
    the frames before are kept.

    Examples:
        >>> with CameraReader("camera://0", options=VideoOptions(fps=5, end=10)) as camera:  # doctest: +SKIP
        ...     for frame in camera:
        ...         frame.time_s, frame.image.shape
    """

    live = True

    def __init__(
        self,
        source: str,
        *,
        options: VideoOptions | None = None,
        name: str | None = None,
        max_pixels: int | None = None,
        quiet: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(options, name or source, max_pixels, quiet, stop)
        device = camera_device(source)
        if sys.platform.startswith("linux"):
            os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", _V4L_WAIT_S)
        cv2 = _cv2()
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # its warnings: said below
        try:  # a path is a V4L2 device (any backend would open a video file by its name too)
            capture = cv2.VideoCapture(device, cv2.CAP_ANY if isinstance(device, int) else cv2.CAP_V4L2)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not capture.isOpened():
            capture.release()
            where = f"camera number {device}" if isinstance(device, int) else device
            raise InputError(
                self.name, f"cannot open {where}: there is no such camera, another program is using "
                "it, or this user may not read it", "not_found",
            )  # fmt: skip
        self._capture = capture
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.info = VideoInfo(
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=fps if 0 < fps <= MAX_FPS else None,  # 0: the camera does not say
            duration_s=None,
            codec="camera",
        )
        try:
            self._check_pixels(self.info.width, self.info.height)
        except BaseException:
            capture.release()
            raise
        self._open_queue(1, least=1)  # the newest frame only: what is analysed stays current

    def _release(self) -> None:
        self._capture.release()

    def _decode_frames(self) -> None:
        cv2 = _cv2()
        origin: float | None = None
        heard = time.monotonic()  # when the camera last sent a frame (or was opened)
        undecodable = 0
        while not self._stop.is_set():
            if not self._capture.grab():  # the next frame, not yet converted
                silent = time.monotonic() - heard
                if silent < _SILENT_S:
                    time.sleep(0.05)
                    continue
                if not self.frames_decoded:
                    raise InputError(
                        self.name, f"the camera opened but sent no frame in {_SILENT_S:g} s (another "
                        "program may be using it)", "not_found",
                    )  # fmt: skip
                self.incomplete = True
                self._notes.append(
                    f"the camera stopped sending frames after {self._last_decoded_s or 0:.2f} s "
                    "(unplugged, or taken by another program); the frames before are kept"
                )
                return
            begin = time.perf_counter()
            heard = now = time.monotonic()
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
                undecodable += 1
                if undecodable >= _UNDECODABLE:
                    raise InputError(
                        self.name, f"the camera sends frames that cannot be decoded ({undecodable} in a "
                        "row)", "corrupt_video",
                    )  # fmt: skip
                continue
            undecodable = 0
            channels = 1 if bgr.ndim == 2 else bgr.shape[2]
            code = {1: cv2.COLOR_GRAY2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels, cv2.COLOR_BGR2RGB)
            image = cv2.cvtColor(bgr, code)
            height, width = image.shape[:2]
            self._check_pixels(width, height)
            self.info.width, self.info.height = width, height  # what it sends, whatever it said
            if not self._deliver(index, t, image, begin):
                return


def open_video(
    source: Any,
    *,
    options: VideoOptions | None = None,
    name: str | None = None,
    max_pixels: int | None = None,
    quiet: bool = False,
    stop: threading.Event | None = None,
) -> FrameReader:
    """The reader for `source`: a `CameraReader` for ``camera://...``, else a `VideoReader`
    (a file, a URL, bytes or a file object); `stop` ends its frames from elsewhere (Ctrl-C)."""
    reader = CameraReader if is_camera(source) else VideoReader
    return reader(source, options=options, name=name, max_pixels=max_pixels, quiet=quiet, stop=stop)
