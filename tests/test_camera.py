"""Live cameras (``camera://N``): read through OpenCV's capture, here a stand-in for
``cv2.VideoCapture`` that sends frames at a camera's pace (no camera on a CI machine)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")
pytest.importorskip("av")
pytest.importorskip("scipy")

from emovit import EmotionRecognizer  # noqa: E402
from emovit.errors import InputError  # noqa: E402
from emovit.video import (  # noqa: E402
    STOPPED_NOTE,
    CameraReader,
    VideoOptions,
    camera_device,
    is_camera,
    is_video,
)


class FakeCamera:
    """`cv2.VideoCapture` over `frames` (BGR), sent `fps` times a second as a camera does;
    after them it is unplugged (`grab` fails) unless `loop`."""

    devices: ClassVar[tuple[Any, ...]] = (0,)
    frames: ClassVar[list[np.ndarray]] = []
    fps: ClassVar[float] = 30.0
    loop: ClassVar[bool] = True
    dead: ClassVar[bool] = False  # opens, never sends a frame
    garbled: ClassVar[bool] = False  # sends frames that cannot be decoded
    opened: ClassVar[list[FakeCamera]] = []

    def __init__(self, device: Any, api: int | None = None) -> None:
        self.device, self.api = device, api
        self.released = False
        self.sent = 0
        self.next_at = time.monotonic()
        type(self).opened.append(self)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.device in self.devices

    def get(self, prop: int) -> float:
        height, width = self.frames[0].shape[:2]
        return {
            cv2.CAP_PROP_FPS: self.fps,
            cv2.CAP_PROP_FRAME_WIDTH: width,
            cv2.CAP_PROP_FRAME_HEIGHT: height,
        }.get(prop, 0.0)

    def grab(self) -> bool:
        if self.dead or (not self.loop and self.sent >= len(self.frames)):
            return False
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_at += 1.0 / self.fps
        self.sent += 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        if self.garbled:
            return False, None
        return True, self.frames[(self.sent - 1) % len(self.frames)].copy()

    def release(self) -> None:
        self.released = True


def _frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    """BGR frames: noise, with a pure blue top-left pixel (red once converted to RGB would be wrong)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    for frame in frames:
        frame[0, 0] = (255, 0, 0)  # blue in BGR
    return frames


@pytest.fixture
def camera(monkeypatch: pytest.MonkeyPatch) -> type[FakeCamera]:
    class Camera(FakeCamera):
        devices = (0, "/dev/video7")
        frames = _frames(8)
        opened: ClassVar[list[FakeCamera]] = []

    monkeypatch.setattr(cv2, "VideoCapture", Camera)
    monkeypatch.setattr("emovit.video._camera._SILENT_S", 0.3)  # a silent camera is given up sooner
    return Camera


@pytest.fixture(scope="module")
def whole(tiny_model_dir: Path) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", detector="none")


def test_camera_sources_are_named_by_number_or_device() -> None:
    assert is_camera("camera://0") and is_camera("CAMERA://2") and is_video("camera://1")
    assert not is_camera("camera.mp4") and not is_camera("rtsp://camera/0") and not is_camera(b"camera://0")
    assert camera_device("camera://12") == 12 and camera_device("camera:///dev/video7") == "/dev/video7"
    with pytest.raises(InputError, match=r"camera://front: not a camera: give its number \(camera://0"):
        camera_device("camera://front")
    with pytest.raises(InputError, match="on Linux, its device path"):  # not a video file by its name
        camera_device("camera:///tmp/clip.mp4")


def test_a_camera_is_analysed_at_its_pace_until_the_end(
    whole: EmotionRecognizer, camera: type[FakeCamera]
) -> None:
    run = whole.predict_video("camera://0", fps=10, end=0.55, keep_pixels=True)
    frames = list(run)
    times = [frame.time_s for frame in frames]
    assert 2 <= len(frames) <= 6, times  # 10 a second of a 30-fps camera for 0.55 s (fewer: dropped)
    assert times == sorted(set(times)) and times[0] < 0.35 and times[-1] < 0.55  # 0.0 but on a loaded machine
    assert np.diff(times).min() > 0.06  # one in three of its frames, not all of them
    assert all(frame.ok and frame.source == "camera://0" and len(frame.faces) == 1 for frame in frames)
    assert frames[0].image is not None and tuple(frames[0].image[0, 0]) == (0, 0, 255)  # BGR became RGB
    assert frames[0].faces[0].track_id is not None
    summary = run.summary()
    assert summary["complete"] is True and summary["video"]["codec"] == "camera"
    assert summary["video"]["duration_s"] is None and summary["video"]["width"] == 64
    assert [c.released for c in camera.opened] == [True]  # the device is let go


def test_a_camera_that_stops_sending_keeps_its_frames(
    whole: EmotionRecognizer, camera: type[FakeCamera]
) -> None:
    camera.loop = False  # 8 frames, then unplugged
    camera.fps = 10.0
    run = whole.predict_video("camera:///dev/video7")
    with pytest.warns(UserWarning, match=r"camera:///dev/video7: the camera stopped sending frames after"):
        frames = list(run)
    summary = run.summary()
    # every frame, but those a loaded machine had no time for (counted): the last one is kept
    dropped = sum(int(w.split()[0]) for w in summary["warnings"] if "frame(s) dropped" in w)
    indices = [f.frame for f in frames]
    assert indices == sorted(set(indices)) and indices[-1] == 7 and len(indices) + dropped == 8
    assert summary["complete"] is False
    assert any("camera stopped sending frames" in w for w in summary["warnings"]), summary["warnings"]
    assert camera.opened[0].device == "/dev/video7"


def test_a_missing_or_misnamed_camera_is_an_error_row(
    whole: EmotionRecognizer, camera: type[FakeCamera]
) -> None:
    [missing] = list(whole.predict_video("camera://3"))
    assert not missing.ok and missing.error_code == "not_found" and missing.source == "camera://3"
    assert "cannot open camera number 3: there is no such camera" in (missing.error or "")
    assert camera.opened[0].released
    [misnamed] = list(whole.predict_video("camera://front"))
    assert misnamed.error_code == "unsupported_input" and "not a camera" in (misnamed.error or "")
    with pytest.raises(InputError, match="camera://3: cannot open"):
        list(whole.predict_video("camera://3", errors="raise"))


def test_a_camera_drops_its_oldest_frames_when_the_analysis_falls_behind(camera: type[FakeCamera]) -> None:
    camera.fps, camera.loop = 200.0, False
    camera.frames = _frames(60)  # 0.3 s of frames
    with CameraReader("camera://0", options=VideoOptions(), quiet=True) as reader:
        got = []
        for frame in reader:
            got.append(frame)
            time.sleep(0.05)  # an analysis far slower than the camera
    assert reader.dropped > 0 and len(got) + reader.dropped == 60
    assert [f.index for f in got] == sorted(f.index for f in got)
    assert got[-1].index == 59  # the newest frame is analysed, not one from long ago
    assert any(f"{reader.dropped} frame(s) dropped" in w for w in reader.warnings)


def test_the_cli_reads_a_camera_with_the_photos(
    tiny_model_dir: Path, camera: type[FakeCamera], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from emovit.cli import main

    photo = tmp_path / "photo.png"
    Image.fromarray(_frames(1)[0]).save(photo)
    args = ["predict", "--model", str(tiny_model_dir), "--detector", "none", "--format", "jsonl"]
    result = CliRunner().invoke(
        main, [*args, "--fps", "10", "--end", "0.35", "camera://0", "camera://5", str(photo)]
    )
    assert result.exit_code == 1, result.output  # one source failed, the others answered
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    live = [row for row in rows if row["source"] == "camera://0"]
    assert len(live) >= 2 and all(row["frame"] is not None for row in live)
    assert [row["source"] for row in rows if row["source"] == str(photo)] == [str(photo)]
    [missing] = [row for row in rows if row["source"] == "camera://5"]
    assert missing["error_code"] == "not_found" and "cannot open camera number 5" in missing["error"]
    assert "2 of 3 inputs analysed (1 video(s)" in result.stderr
    annotated = tmp_path / "annotated"
    saved = CliRunner().invoke(
        main, [*args, "--end", "0.3", "--save-annotated", str(annotated), "camera://0"]
    )
    assert saved.exit_code == 0, saved.output
    assert [p.name for p in annotated.iterdir()] == ["camera-0.annotated.mp4"]
    ray = CliRunner().invoke(main, [*args, "--engine", "ray", "-o", str(tmp_path / "out"), "camera://0"])
    assert ray.exit_code == 2 and "a live camera is read on this machine" in ray.stderr


def test_explain_says_a_camera_is_not_a_photo(
    tiny_model_dir: Path, camera: type[FakeCamera], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from emovit.cli import main

    out = str(tmp_path / "maps")
    result = CliRunner().invoke(main, ["explain", "--model", str(tiny_model_dir), "-o", out, "camera://0"])
    assert result.exit_code == 2 and "'camera://0' is a live camera" in result.stderr
    assert camera.opened == []  # not opened to say so


def test_a_live_table_prints_each_row_as_it_comes_under_one_header() -> None:
    import io

    from emovit.results import FaceResult, FrameResult
    from emovit.writers import ResultWriter

    buffer = io.StringIO()
    writer = ResultWriter(buffer, "table", ["happy", "sad"], live=True)
    face = FaceResult({"happy": 0.9, "sad": 0.1}, box=(0, 0, 5, 5), track_id=1)
    lines = []
    for index in range(3):
        writer.write(FrameResult("camera://0", faces=[face], frame=index, time_s=index / 5))
        lines = buffer.getvalue().splitlines()
        assert len(lines) == index + 2 and f"(frame {index})" in lines[-1]  # printed at once
    writer.close()
    assert buffer.getvalue().splitlines() == lines and lines[0].split()[:3] == ["source", "label", "score"]
    starts = {line.index("#1 happy") for line in lines[1:]}
    assert len(starts) == 1  # one column, row after row


def test_a_camera_that_sends_nothing_or_garbage_is_an_error_row(
    whole: EmotionRecognizer, camera: type[FakeCamera]
) -> None:
    camera.dead = True
    [silent] = list(whole.predict_video("camera://0"))
    assert silent.error_code == "not_found" and "opened but sent no frame in 0.3 s" in (silent.error or "")
    camera.dead, camera.garbled = False, True
    [garbled] = list(whole.predict_video("camera://0"))
    assert garbled.error_code == "corrupt_video" and "cannot be decoded" in (garbled.error or "")
    assert [c.released for c in camera.opened] == [True, True]


def test_a_stop_ends_a_camera_run_while_it_waits_for_a_frame(
    whole: EmotionRecognizer, camera: type[FakeCamera]
) -> None:
    """Before --start no frame comes: a stop (Ctrl-C) ends the wait at once, not at the next frame."""
    import threading

    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    run = whole.predict_video("camera://0", start=30, stop=stop)
    assert list(run) == []
    assert time.monotonic() - began < 3
    summary = run.summary()
    assert summary["complete"] is False and summary["warnings"] == [STOPPED_NOTE]
    assert camera.opened[0].released


def test_the_end_of_a_live_run_never_replaces_its_last_frame(camera: type[FakeCamera]) -> None:
    camera.fps = 200.0
    with CameraReader("camera://0", options=VideoOptions(end=0.25), quiet=True) as reader:
        got = []
        for frame in reader:
            got.append(frame)
            time.sleep(0.03)
    assert reader.dropped > 0 and got[-1].time_s == reader.last_time_s  # the newest chosen frame
    assert len(got) + reader.dropped == reader.frames_in_range
    assert [w for w in reader.warnings if "dropped" in w] == [
        f"{reader.dropped} frame(s) dropped: the analysis was slower than the frames chosen (fewer frames "
        "per second keep up)"
    ]


_CLI_WITH_A_CAMERA = """
import sys, cv2
from tests.test_camera import FakeCamera, _frames
class Camera(FakeCamera):
    frames = _frames(8)
    opened = []
    def __init__(self, *args):
        super().__init__(*args)
        print("test camera opened", file=sys.stderr, flush=True)
cv2.VideoCapture = Camera
from emovit.cli import main
main(sys.argv[1:], prog_name="emovit")
"""


def test_ctrl_c_ends_a_cli_camera_run_at_once_even_before_a_frame(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Waiting for --start (no frame yet), one Ctrl-C ends the run within a moment: exit 130 and
    a summary that says it was interrupted (once: not also the library's 'stopped on request')."""
    import queue
    import signal
    import subprocess
    import sys
    import threading

    summary = tmp_path / "s.json"
    cmd = [
        sys.executable, "-c", _CLI_WITH_A_CAMERA, "predict", "camera://0", "--model", str(tiny_model_dir),
        "--detector", "none", "--format", "jsonl", "--start", "60", "--summary", str(summary),
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or []], daemon=True)
    reader.start()
    try:
        while "test camera opened" not in lines.get(timeout=120):  # the model loaded, the camera open
            pass
    except queue.Empty:
        proc.kill()
        pytest.fail("the CLI never opened the camera")
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        stdout = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    reader.join(5)
    stderr = "".join(lines.queue)
    assert time.monotonic() - sent < 5, "Ctrl-C waited for a frame"
    assert proc.returncode == 130, stderr
    assert stdout == ""
    [video] = json.loads(summary.read_text())["videos"]
    assert video["frames_analysed"] == 0 and video["complete"] is False
    assert video["warnings"] == [
        "interrupted (Ctrl-C or SIGTERM) after 0 analysed frames: its rows and summary stop there"
    ]
