"""Video: decoding (PTS times, rotation, sampling, URLs), tracks, smoothing, summary, damaged
and odd files, the outputs (rows, annotated video, timeline, summary) and the CLI.

Clips are made here with PyAV from FER2013 faces moving over backgrounds along known
trajectories (tests/video_clips.py). The tiny random model serves where labels do not matter,
the embedded default model where they do.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import http.server
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("scipy")
pytest.importorskip("cv2")

from emovit import EMOTIONS, EmotionRecognizer
from emovit.errors import InputError, OptionError
from emovit.faces import FaceOptions
from emovit.results import FRAME_ROW_FIELDS, FaceResult, FrameResult, ImageResult
from emovit.video import ProbabilitySmoother, Tracker, VideoOptions, VideoReader, is_video, probe_video
from emovit.writers import ResultWriter

from .conftest import SHARED, require_shared
from .video_clips import (
    background,
    fer_faces,
    noise_frames,
    paste,
    write_audio_only,
    write_clip,
    write_held_last_frame,
    write_with_cover_art,
    write_with_sound,
    zero_timestamps,
)

YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"


@pytest.fixture(scope="module")
def yunet() -> Path:
    return require_shared(YUNET)


@pytest.fixture(scope="module")
def tiny_yunet(tiny_model_dir: Path, yunet: Path) -> EmotionRecognizer:
    faces = FaceOptions(detector="yunet", detector_model=yunet)
    return EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", faces=faces)


@pytest.fixture(scope="module")
def tiny_whole(tiny_model_dir: Path) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", detector="none")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def crossing(clips: Path) -> Path:
    """Two faces crossing: A (top) moves right, B (lower, drawn over A) moves left."""
    a = fer_faces("happy", 1, 96, start=4)[0]
    b = fer_faces("surprise", 1, 96, start=3)[0]
    frames = []
    for i in range(40):
        canvas = background(320, 240)
        paste(canvas, a, round(8 + 208 * i / 39), 40)
        paste(canvas, b, round(216 - 208 * i / 39), 100)
        frames.append(canvas)
    return write_clip(clips / "crossing.mp4", frames)


@pytest.fixture(scope="module")
def walking(clips: Path) -> Path:
    """One face that walks out of the right edge, stays out for 6 frames and comes back."""
    face = fer_faces("happy", 1, 96, start=4)[0]
    xs = [100 + 10 * i for i in range(15)] + [None] * 6 + [240 - 10 * i for i in range(15)]
    frames = []
    for x in xs:
        canvas = background(320, 240, seed=1)
        if x is not None:
            paste(canvas, face, x, 70)
        frames.append(canvas)
    return write_clip(clips / "walking.mp4", frames)


@pytest.fixture(scope="module")
def plain(clips: Path) -> Path:
    """60 frames (2 s at 30 fps) of one face, 160x120."""
    face = fer_faces("happy", 1, 64, start=4)[0]
    frames = []
    for i in range(60):
        canvas = background(160, 120)
        paste(canvas, face, 20 + i, 28)
        frames.append(canvas)
    return write_clip(clips / "plain.mp4", frames)


def _ids(frames: list[FrameResult]) -> set[int]:
    return {face.track_id for frame in frames for face in frame.faces if face.track_id is not None}


# ---------------------------------------------------------------------- tracks


def test_ids_stay_when_two_faces_cross(tiny_yunet: EmotionRecognizer, crossing: Path) -> None:
    frames = list(tiny_yunet.predict_video(crossing))
    assert [f.frame for f in frames] == list(range(40))
    assert _ids(frames) == {1, 2}

    def id_of_face_at(frame: FrameResult, left: bool, top: bool) -> int:
        faces = [f for f in frame.faces if (f.box[1] < 80) == top]  # type: ignore[index]
        assert len(faces) == 1, frame
        return faces[0].track_id  # type: ignore[return-value]

    a_start = id_of_face_at(frames[0], left=True, top=True)
    b_start = id_of_face_at(frames[0], left=False, top=False)
    assert a_start != b_start
    for frame in frames:
        for face in frame.faces:
            assert face.track_id == (a_start if face.box[1] < 80 else b_start)  # type: ignore[index]
    assert frames[-1].faces[0].box[0] > 150 or frames[-1].faces[1].box[0] > 150  # type: ignore[index]


def test_id_survives_leaving_the_frame_briefly(tiny_yunet: EmotionRecognizer, walking: Path) -> None:
    frames = list(tiny_yunet.predict_video(walking))
    assert len(frames) == 36  # every analysed frame appears, the empty ones too
    assert any(not f.faces for f in frames[15:21])
    assert _ids(frames) == {1}
    assert sum(bool(f.faces) for f in frames) >= 28
    # with no buffer the face comes back as a new track
    again = list(tiny_yunet.predict_video(walking, track_buffer=0))
    assert len(_ids(again)) >= 2


def test_tracker_crossing_with_full_overlap_and_misses() -> None:
    tracker = Tracker(track_buffer=3)
    out = []
    for i in range(21):  # two 20 px boxes crossing on the same line, one hidden at the crossing
        t = i / 30
        a = (5 * i, 0, 5 * i + 20, 20)
        b = (100 - 5 * i, 0, 120 - 5 * i, 20)
        boxes = [a] if 9 <= i <= 11 else [a, b]
        out.append(tracker.update(boxes, t))
    assert out[0] == [1, 2]
    assert all(ids == [1, 2] for ids in out if len(ids) == 2)
    assert tracker.update([], 1.0) == [] and tracker.removed == []
    for k in range(3):
        tracker.update([], 1.0 + (k + 1) / 30)
    assert sorted(tracker.removed + [t.id for t in tracker.tracks]) == [1, 2]
    assert tracker.update([(0, 0, 20, 20)], 2.0) == [3]  # after the buffer: a new id


def test_a_face_that_stays_keeps_its_id_when_its_neighbour_is_missed() -> None:
    """Two faces side by side; the right one is missed and a newcomer appears on the left. The
    solver used to maximise the number of matches: the face that had not moved took its lost
    neighbour's id so that its own could go to the newcomer."""
    for shift in (0, 5, 10):
        tracker = Tracker()
        assert tracker.update([(0, 0, 40, 40), (40, 0, 80, 40)], 0.0) == [1, 2]
        assert tracker.update([(shift, 0, 40 + shift, 40), (-40, 0, 0, 40)], 1 / 30) == [1, 3], shift


def test_tracker_motion_is_in_seconds() -> None:
    """The same motion sampled at 30 and at 5 frames/s predicts the same place."""
    for rate in (30, 5):
        tracker = Tracker()
        for i in range(rate):  # one second moving 60 px/s
            tracker.update([(60 * i / rate, 0, 60 * i / rate + 20, 20)], i / rate)
        assert tracker.tracks[0].velocity[0] == pytest.approx(60, rel=0.01)


# ---------------------------------------------------------------------- smoothing


def test_smoother_is_time_based() -> None:
    ends = []
    for rate in (30, 10):
        smoother = ProbabilitySmoother(0.3)
        smoother.update(1, np.array([1.0, 0.0]), 0.0)
        for i in range(1, rate + 1):
            value = smoother.update(1, np.array([0.0, 1.0]), i / rate)
        ends.append(value[1])
    assert ends[0] == pytest.approx(ends[1], abs=1e-9)
    assert ends[0] == pytest.approx(1 - np.exp(-1 / 0.3))
    off = ProbabilitySmoother(0)
    off.update(1, np.array([1.0, 0.0]), 0.0)
    assert off.update(1, np.array([0.0, 1.0]), 0.01).tolist() == [0.0, 1.0]


def test_smoothing_reduces_label_flips(clips: Path) -> None:
    """A clip of one expression with another flickering in for one frame in six (as single
    misread frames do): the frame-by-frame labels flip twice per flicker, the smoothed ones
    (default 0.3 s) hardly at all. Default model."""
    rec = EmotionRecognizer.from_pretrained("default", device="cpu", detector="none")
    candidates = fer_faces("happy", 12, 96) + fer_faces("surprise", 12, 96)
    probs = rec.classify_arrays(candidates)
    labels = [rec.labels[i] for i in probs.argmax(1)]
    # the most confident face of each side (how confident a model is decides how fast its
    # smoothed label may swing; these two sit far apart)
    happy = max((p.max(), i) for i, (lab, p) in enumerate(zip(labels, probs, strict=True)) if lab == "happy")
    other = max((p.max(), i) for i, (lab, p) in enumerate(zip(labels, probs, strict=True)) if lab != "happy")
    assert happy[0] > 0.6 and other[0] > 0.6
    happy, other = candidates[happy[1]], candidates[other[1]]
    frames = [other if i % 6 == 5 else happy for i in range(60)]
    clip = write_clip(clips / "alternating.mp4", frames, options={"crf": "10"})

    def flips(sequence: list[str]) -> int:
        return sum(a != b for a, b in itertools.pairwise(sequence))

    results = list(rec.predict_video(clip))
    raw = [max(r.faces[0].raw_probs, key=r.faces[0].raw_probs.get) for r in results]  # type: ignore[arg-type]
    smoothed = [r.faces[0].label for r in results]
    assert flips(raw) >= 15
    assert flips(smoothed) <= flips(raw) // 4
    off = [r.faces[0].label for r in rec.predict_video(clip, smooth=0)]
    assert off == raw
    assert all(r.faces[0].raw_probs is not None and r.faces[0].track_id == 1 for r in results)


# ---------------------------------------------------------------------- decoding


def test_a_video_given_as_a_photo_says_where_videos_go(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    """`predict` (and POST /v1/predict) on a video said "not an image file", no way onwards;
    told by its content (a video under another name too), not its name (a text file called
    .mp4 is no video)."""
    mp4 = write_clip(clips / "talk.mp4", noise_frames(3))
    mkv = write_clip(clips / "talk.mkv", noise_frames(3))
    renamed = clips / "talk.bin"
    renamed.write_bytes(mp4.read_bytes())
    (clips / "notes.mp4").write_text("not a video at all")
    sound = b"\x00\x00\x00\x20ftypM4A " + bytes(400)  # an ISO media file of sound only
    packets = b"G" + b"x" * 187 + b"G" + b"y" * 200  # two "sync bytes" are no transport stream
    inputs = [mp4, mkv, renamed, mp4.read_bytes(), clips / "notes.mp4", sound, packets]
    results = tiny_whole.predict(inputs)
    assert [r.error_code for r in results] == ["unsupported_format"] * len(inputs)
    assert all(
        "a video, not a photo" in (r.error or "") and "predict_video" in (r.error or "") for r in results[:4]
    )
    assert all("not an image file" in (r.error or "") for r in results[4:])


def test_times_are_exact_on_a_variable_frame_rate_clip(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    pts = [0, 33, 50, 120, 400, 433, 466, 1000, 1017, 1500]
    for suffix in ("mp4", "mkv"):
        clip = write_clip(clips / f"vfr.{suffix}", noise_frames(len(pts)), pts_ms=pts)
        run = tiny_whole.predict_video(clip)
        frames = list(run)
        assert [f.frame for f in frames] == list(range(len(pts)))
        assert [f.time_s for f in frames] == pytest.approx([p / 1000 for p in pts], abs=1e-9)
        # the mean rate is the frames counted over the duration, whatever rate the file declares
        summary = run.summary()
        assert summary["complete"] and summary["duration_s"] == pytest.approx(1.533, abs=0.002)
        assert summary["video"]["average_fps"] == pytest.approx(10 / summary["duration_s"])
        assert summary["video"]["fps"] > 2 * summary["video"]["average_fps"]
    # --fps samples by time, not by frame count: one frame per 0.25 s window
    sampled = list(tiny_whole.predict_video(clips / "vfr.mp4", fps=4))
    assert [f.time_s for f in sampled] == pytest.approx([0.0, 0.4, 1.0, 1.5])
    # the annotated video shows each frame until the next (the last as long as the gap before
    # it): its file said 1.1 s for these 1.5 s, the encoder's B-frames timing it at its own rate
    import av

    from emovit.video_output import AnnotatedVideoWriter

    for name, source in (("all", list(tiny_whole.predict_video(clip, keep_pixels=True))), ("sampled", None)):
        frames = source or list(tiny_whole.predict_video(clip, fps=4, keep_pixels=True))
        target = clips / f"vfr-{name}.annotated.mp4"
        with AnnotatedVideoWriter(target, fps=30) as writer:
            for frame in frames:
                writer.write(frame)
        with av.open(str(target)) as container:
            shown = [float(f.time) for f in container.decode(video=0)]
            assert container.duration / 1e6 == pytest.approx(1.5 + (1.5 - frames[-2].time_s), abs=0.01)
        assert shown == pytest.approx([f.time_s for f in frames], abs=1e-3)
    twins = [dataclasses.replace(frames[0], time_s=t) for t in (0.0, 0.0, 0.5, 0.5)]  # times repeat
    with AnnotatedVideoWriter(clips / "twins.annotated.mp4", fps=10) as writer:
        for frame in twins:
            writer.write(frame)
    with av.open(str(clips / "twins.annotated.mp4")) as container:  # the last shown a frame (0.1 s)
        assert container.duration / 1e6 == pytest.approx(0.6, abs=0.01)


def test_sampling_every_fps_start_end(tiny_whole: EmotionRecognizer, plain: Path) -> None:
    assert [f.frame for f in tiny_whole.predict_video(plain, every=7)] == list(range(0, 60, 7))
    tenth = list(tiny_whole.predict_video(plain, fps=10))
    assert [f.frame for f in tenth] == list(range(0, 60, 3))
    cut = list(tiny_whole.predict_video(plain, start=0.5, end=1.0))
    assert [f.frame for f in cut] == list(range(15, 30))
    assert cut[0].time_s == pytest.approx(0.5)
    with pytest.raises(OptionError):
        tiny_whole.predict_video(plain, fps=5, every=2)
    # not finite: fps=inf never ended (a sampling step of 0), smooth=nan made every score NaN
    for bad in ({"fps": float("inf")}, {"fps": 1e12}, {"smooth": float("nan")}, {"start": float("nan")}):
        with pytest.raises(OptionError, match=next(iter(bad))):
            tiny_whole.predict_video(plain, **bad)
    # a frame's pixels, not kept: said as a frame's (it was "the input was not a path")
    with pytest.raises(
        ValueError, match=r"\(frame 3\): a video frame's pixels .* predict_video with keep_pixels"
    ):
        tenth[1].plot()
    # one range for fps however it is out (-1 said "in [0, 1000.0]", 0 "more than 0")
    for fps in (0, -1, 1e12):
        with pytest.raises(OptionError, match=r"fps must be in \(0, 1000\.0\], got"):
            tiny_whole.predict_video(plain, fps=fps)
    # a start after the last frame (the clip is 2 s): an error row, not a silent "complete"
    run = tiny_whole.predict_video(plain, start=100)
    (row,) = list(run)
    assert (row.ok, row.error_code, row.frame) == (False, "start_after_end", None)
    assert "100 s" in (row.error or "") and not run.summary()["complete"]
    # a window between two frames (30 fps) holds no frame: empty, not "after the end"
    between = list(tiny_whole.predict_video(plain, start=0.31, end=0.32))
    assert between == []


def test_rotation_metadata_is_applied(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    image[:12, :16] = 255  # a white block at the top left of the stored frame
    clip = write_clip(clips / "phone.mp4", [image] * 3, rotation=-90)  # shown turned 90 deg clockwise
    with VideoReader(clip) as reader:
        frame = next(iter(reader))
    assert frame.image.shape == (64, 48, 3)
    assert frame.image[2:10, -14:-2].mean() > 200 and frame.image[-12:, :16].mean() < 50
    info = probe_video(clip)  # upright, as its docstring says (it was the stored size)
    assert (info.width, info.height, info.rotation) == (48, 64, 270)
    assert (reader.info.width, reader.info.height, reader.info.rotation) == (48, 64, 270)
    stored = probe_video(clip, max_pixels=100)  # over the limit: no frame decoded, as stored
    assert (stored.width, stored.height, stored.rotation) == (64, 48, 0)
    result = next(iter(tiny_whole.predict_video(clip)))
    assert result.image_size == (48, 64) and result.faces[0].box == (0, 0, 48, 64)


def test_anamorphic_frames_are_analysed_in_square_pixels(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    """A DVD or HDV frame stored 120x90 with pixels 4:3 wide is shown 160x90: faces were
    detected and classified squashed, and the annotated video played at the stored shape."""
    from fractions import Fraction

    image = np.zeros((90, 120, 3), np.uint8)
    image[:, 60:] = 255  # the right half white: it stays the right half once stretched
    clip = write_clip(clips / "anamorphic.mp4", [image] * 3, sample_aspect=Fraction(4, 3))
    assert (probe_video(clip).width, probe_video(clip).height) == (160, 90)
    with VideoReader(clip) as reader:
        frame = next(iter(reader))
    assert frame.image.shape == (90, 160, 3)
    assert frame.image[:, 84:].mean() > 200 and frame.image[:, :76].mean() < 30
    result = next(iter(tiny_whole.predict_video(clip)))
    assert result.image_size == (160, 90) and result.faces[0].box == (0, 0, 160, 90)
    # the stretched size is what memory holds: it is what the pixel limit checks
    (row,) = list(tiny_whole.predict_video(clip, max_pixels=120 * 90 + 10))
    assert (row.ok, row.error_code) == (False, "too_many_pixels")


def test_decoding_stays_a_bounded_queue_ahead(plain: Path) -> None:
    with VideoReader(plain, options=VideoOptions(queue_frames=4)) as reader:
        consumed = 0
        for consumed, _ in enumerate(reader, start=1):
            time.sleep(0.005)
            assert reader.frames_decoded - consumed <= 4 + 2
    assert consumed == 60


def test_http_url(tiny_whole: EmotionRecognizer, plain: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(plain.parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{plain.name}"
        assert is_video(url)
        frames = list(tiny_whole.predict_video(url, every=10))
        assert [f.frame for f in frames] == [0, 10, 20, 30, 40, 50] and frames[0].source == url
    finally:
        server.shutdown()


def test_is_video(clips: Path, plain: Path, tmp_path: Path) -> None:
    assert is_video("clip.MOV") and is_video("rtsp://camera/stream") and not is_video("a.jpg")
    odd = tmp_path / "recording.bin"
    odd.write_bytes(plain.read_bytes())
    assert is_video(odd)  # no known extension: the container is probed
    jpeg = tmp_path / "photo.data"
    Image.new("RGB", (20, 20)).save(jpeg, "JPEG")
    assert not is_video(jpeg)  # an image decoder reads it: a photo
    misnamed = tmp_path / "photo.mp4"  # a JPEG under a video's name: it was refused as "a still image"
    misnamed.write_bytes(jpeg.read_bytes())
    assert not is_video(misnamed) and is_video(tmp_path / "absent.mp4") and is_video(plain)
    assert probe_video(plain).frames == 60


def test_cover_art_is_not_a_video(tiny_whole: EmotionRecognizer, tmp_path: Path) -> None:
    """An audio file's cover picture is a one-frame "video" stream marked as attached: the file
    is media without a video (an error row naming it), and a video with a cover is its video."""
    song = write_with_cover_art(tmp_path / "song.m4a")
    assert is_video(song)  # media: it fails as a video, not as an image format
    (row,) = list(tiny_whole.predict_video(song))
    assert (row.ok, row.error_code) == (False, "no_video_stream")
    assert "cover art" in (row.error or "")
    covered = write_with_cover_art(tmp_path / "covered.mp4", noise_frames(20))
    assert probe_video(covered).fps == pytest.approx(10.0)
    run = tiny_whole.predict_video(covered)
    assert [r.frame for r in run] == list(range(20)) and run.summary()["complete"]


# ---------------------------------------------------------------------- bad input


def test_bad_videos_are_error_rows(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    (clips / "empty.mp4").write_bytes(b"")
    (clips / "text.mp4").write_text("not a video at all\n" * 20)
    audio = write_audio_only(clips / "audio.m4a")
    expected = {
        "empty.mp4": "empty_file",
        "text.mp4": "unsupported_format",
        "audio.m4a": "no_video_stream",
        "missing.mp4": "not_found",
    }
    for name, code in expected.items():
        run = tiny_whole.predict_video(clips / name if name != "audio.m4a" else audio)
        (row,) = list(run)
        assert (row.ok, row.error_code, row.error_stage, row.frame) == (False, code, "decode", None)
        assert name in (row.error or "")
        assert run.summary()["error_code"] == code and run.summary()["frames_analysed"] == 0
    with pytest.raises(InputError):
        list(tiny_whole.predict_video(clips / "text.mp4", errors="raise"))
    # a recording cut before its index (an MP4's moov comes last by default) is damaged, not
    # of an unknown format; the same bytes uploaded too
    whole = write_clip(clips / "indexed-last.mp4", noise_frames(30)).read_bytes()
    (clips / "cut-index.mp4").write_bytes(whole[: len(whole) // 2])
    cut_file = io.BytesIO(whole[: len(whole) // 2])  # a file object, as Ray reads remote videos
    for source in (clips / "cut-index.mp4", whole[: len(whole) // 2], cut_file):
        (row,) = list(tiny_whole.predict_video(source))
        assert (row.ok, row.error_code) == (False, "corrupt_video") and "truncated" in (row.error or "")


def test_truncated_file_keeps_the_frames_before_the_damage(
    tiny_whole: EmotionRecognizer, clips: Path
) -> None:
    frames = noise_frames(60)
    # a Matroska file with sound declares the video's duration as a tag only: it is read too
    cases = (("mp4", {"movflags": "faststart"}, False), ("mkv", None, False), ("mkv", None, True))
    for suffix, options, audio in cases:
        whole = write_clip(clips / f"whole.{suffix}", frames, options=options, audio=audio)
        assert probe_video(whole).duration_s == pytest.approx(2.0, abs=0.05)
        cut = clips / f"cut.{suffix}"
        data = whole.read_bytes()
        cut.write_bytes(data[: int(len(data) * 0.6)])
        run = tiny_whole.predict_video(cut)
        with pytest.warns(UserWarning, match="kept"):
            results = list(run)
        assert 10 < len(results) < 60 and all(r.ok for r in results)
        assert [r.frame for r in results] == list(range(len(results)))
        summary = run.summary()
        assert summary["frames_analysed"] == len(results) and not summary["complete"]
        assert summary["warnings"] and cut.name in str(summary["source"])
        # quiet (a server's uploads): the same warnings, in the summary only
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            quiet = tiny_whole.predict_video(cut.read_bytes(), name="upload", quiet=True)
            assert len(list(quiet)) == len(results)
        assert quiet.summary()["warnings"] == summary["warnings"]


def test_a_file_cut_inside_its_first_frame_is_corrupt_not_an_empty_success(
    tiny_whole: EmotionRecognizer, clips: Path
) -> None:
    """It was "1 of 1 inputs analysed (0 frames)", complete, exit 0: no frame decoded, no word."""
    import av

    whole = write_clip(clips / "short.mkv", noise_frames(10))
    with av.open(str(whole)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
        cut_at = int(first.pos) + first.size // 2
    cut = clips / "cut-in-first-frame.mkv"
    cut.write_bytes(whole.read_bytes()[:cut_at])
    for options in (VideoOptions(), VideoOptions(start=0.1)):  # with --start it was a success
        run = tiny_whole.predict_video(cut, options=options)
        (row,) = list(run)
        assert (row.ok, row.error_code) == (False, "corrupt_video") and "not one frame" in (row.error or "")
        assert run.summary()["error_code"] == "corrupt_video"


def test_a_damaged_packet_in_the_middle_is_skipped_not_the_end(
    tiny_whole: EmotionRecognizer, clips: Path
) -> None:
    """Flipped bits in one packet lose the frames of that packet's group of pictures, not the
    rest of the video (FFmpeg's tools skip such a packet; decoding used to stop there)."""
    whole = write_clip(
        clips / "gop.mp4", noise_frames(100), options={"movflags": "faststart"}, codec_options={"g": "10"}
    )
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = bytes(b ^ 0xFF for b in data[middle : middle + 3000])
    damaged = clips / "flipped.mp4"
    damaged.write_bytes(bytes(data))
    run = tiny_whole.predict_video(damaged)
    with pytest.warns(UserWarning, match="damaged packet"):
        results = list(run)
    assert 75 < len(results) < 100 and all(r.ok for r in results)
    assert max(r.frame for r in results) >= 95  # the frames after the damage are there
    assert not run.summary()["complete"]
    # damaged from there on: the frames before are kept, and decoding stops
    cut = len(data) // 8
    data[cut:] = bytes(len(data) - cut)
    (clips / "ruined.mp4").write_bytes(bytes(data))
    run = tiny_whole.predict_video(clips / "ruined.mp4")
    with pytest.warns(UserWarning, match="decoding stopped"):
        assert 0 < len(list(run)) < 25
    # damaged from the first byte of the pictures: an error row, no frame
    start = data.index(b"mdat") + 4
    data[start:] = bytes(len(data) - start)
    (clips / "ruined.mp4").write_bytes(bytes(data))
    (row,) = list(tiny_whole.predict_video(clips / "ruined.mp4"))
    assert (row.ok, row.error_code) == (False, "corrupt_video")


def test_frames_over_max_pixels_fail_the_video(tiny_whole: EmotionRecognizer, plain: Path) -> None:
    side = probe_video(plain)
    with pytest.raises(InputError, match="over the limit") as caught:
        VideoReader(plain, max_pixels=side.width * side.height - 1)
    assert caught.value.code == "too_many_pixels"
    (row,) = list(tiny_whole.predict_video(plain, max_pixels=side.width * side.height - 1))
    assert row.error_code == "too_many_pixels" and row.frame is None
    assert len(list(tiny_whole.predict_video(plain, max_pixels=side.width * side.height, every=20))) == 3


def test_zero_timestamps_and_raw_streams_take_times_from_the_frame_rate(
    tiny_whole: EmotionRecognizer, clips: Path
) -> None:
    fast = write_clip(clips / "fast.mp4", noise_frames(12), options={"movflags": "faststart"})
    zero = zero_timestamps(fast, clips / "zero.mp4")
    run = tiny_whole.predict_video(zero)
    with pytest.warns(UserWarning, match="timestamps do not increase"):
        frames = list(run)
    assert [f.time_s for f in frames] == pytest.approx([i / 30 for i in range(12)])
    summary = run.summary()  # a note, not damage: the whole file was read
    assert summary["complete"] is True and "timestamps do not increase" in summary["warnings"][0]
    raw = write_clip(clips / "raw.h264", noise_frames(12), container="h264")
    frames = list(tiny_whole.predict_video(raw))
    assert len(frames) == 12 and frames[-1].time_s == pytest.approx(11 / 30)


def test_video_without_faces_has_zero_tracks(tiny_yunet: EmotionRecognizer, clips: Path) -> None:
    clip = write_clip(clips / "nobody.mp4", [background(160, 120, seed=i) for i in range(10)])
    run = tiny_yunet.predict_video(clip)
    frames = list(run)
    assert len(frames) == 10 and all(f.ok and not f.faces for f in frames)
    summary = run.summary()
    assert summary["tracks"] == [] and summary["frames_analysed"] == 10 and "error" not in summary
    assert all(row["track_id"] is None and row["label"] is None for f in frames for row in f.rows())


def test_4k_frames_detect_on_a_small_copy_boxes_in_full_size(
    tiny_yunet: EmotionRecognizer, clips: Path
) -> None:
    face = fer_faces("happy", 1, 640, start=4)[0]
    canvas = background(3840, 2160)
    paste(canvas, face, 2400, 900)
    clip = write_clip(clips / "uhd.mp4", [canvas] * 2)
    frames = list(tiny_yunet.predict_video(clip))
    assert len(frames) == 2 and frames[0].image_size == (3840, 2160)
    (found,) = frames[0].faces
    x1, y1, x2, y2 = found.box  # type: ignore[misc]
    assert 1300 < y2 < 1600
    assert 2350 < x1 < 2550 and 850 < y1 < 1100 and 2900 < x2 < 3100 and 450 < x2 - x1 < 700


# ---------------------------------------------------------------------- rows and summary


def test_rows_summary_and_shares(tiny_yunet: EmotionRecognizer, crossing: Path) -> None:
    run = tiny_yunet.predict_video(crossing, keep_pixels=True)
    frames = list(run)
    assert frames[0].image is not None
    rows = [row for frame in frames for row in frame.rows()]
    assert len(rows) == sum(max(1, len(f.faces)) for f in frames)
    assert all(tuple(row) == FRAME_ROW_FIELDS for row in rows)
    face_row = next(row for row in rows if row["track_id"] is not None)
    assert face_row["label"] in EMOTIONS and set(face_row["raw_probs"]) == set(EMOTIONS)
    summary = run.summary()
    assert summary["frames_analysed"] == 40 and summary["duration_s"] == pytest.approx(40 / 30)
    assert summary["fps_analysed"] == pytest.approx(30) and summary["complete"]
    assert summary["faces_per_frame"] == pytest.approx(sum(len(f.faces) for f in frames) / 40)
    assert [t["track_id"] for t in summary["tracks"]] == [1, 2]
    for track in summary["tracks"]:
        assert sum(track["share"].values()) == pytest.approx(1.0)
        assert sum(track["mean_probs"].values()) == pytest.approx(1.0)
        assert track["dominant"] == max(track["share"], key=track["share"].get)
        assert track["first_s"] == 0 and track["last_s"] == pytest.approx(39 / 30)


def test_the_table_of_a_long_video_is_printed_as_it_goes() -> None:
    """The table format held every frame's result until the end (an hour of video: ~200 MB);
    it prints a table every few hundred results, and nothing twice."""
    from emovit.writers import TABLE_CHUNK

    buffer = io.StringIO()
    writer = ResultWriter(buffer, "table", ["happy", "sad"])
    count = TABLE_CHUNK * 2 + 10
    for index in range(count):
        writer.write(FrameResult("long.mp4", frame=index, time_s=index / 25))
        assert len(writer._pending) < TABLE_CHUNK
    assert "(frame 0)" in buffer.getvalue()  # printed before the end
    writer.close()
    text = buffer.getvalue()
    assert all(text.count(f"(frame {i})") == 1 for i in range(count))
    empty = io.StringIO()
    ResultWriter(empty, "table", ["happy"]).close()
    assert "source" in empty.getvalue()  # an empty run still prints its (empty) table


def test_csv_has_one_header_for_photos_and_videos() -> None:
    photo = ImageResult("a.jpg", faces=[FaceResult({"happy": 0.9, "sad": 0.1}, box=(1, 2, 3, 4))])
    face = FaceResult(
        {"happy": 0.2, "sad": 0.8}, box=(0, 0, 5, 5), track_id=3, raw_probs={"happy": 0.4, "sad": 0.6}
    )
    frames = [
        FrameResult("v.mp4", faces=[face], frame=0, time_s=0.0),
        FrameResult("v.mp4", frame=1, time_s=0.04),
    ]
    buffer = io.StringIO()
    writer = ResultWriter(buffer, "csv", ["happy", "sad"], video=True)
    for result in [photo, *frames]:
        writer.write(result)
    writer.close()
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert len(rows) == 3 and rows[0]["frame"] == "" and rows[0]["label"] == "happy"
    assert (rows[1]["track_id"], rows[1]["label"], rows[1]["raw_prob_sad"]) == ("3", "sad", "0.600000")
    assert (rows[2]["frame"], rows[2]["time_s"], rows[2]["label"]) == ("1", "0.040000", "")
    for fmt in ("json", "jsonl"):
        buffer = io.StringIO()
        writer = ResultWriter(buffer, fmt, ["happy", "sad"])  # type: ignore[arg-type]
        for result in [photo, *frames]:
            writer.write(result)
        writer.close()
        text = buffer.getvalue()
        parsed = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
        assert [row.get("frame") for row in parsed] == [None, 0, 1] and parsed[1]["track_id"] == 3


# ---------------------------------------------------------------------- CLI


def emovit(*args: str, **kwargs: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMOVIT_YUNET_URL": "http://127.0.0.1:9/offline"}
    return subprocess.run(
        [sys.executable, "-m", "emovit.cli", *args], capture_output=True, text=True, env=env, timeout=300,
        check=False, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def test_cli_video_outputs(tiny_model_dir: Path, yunet: Path, crossing: Path, tmp_path: Path) -> None:
    """emovit predict clip.mp4 photo.png --summary --save-annotated --plot, on paths with spaces."""
    root = tmp_path / "my clips"
    root.mkdir()
    clip = root / "two faces.mp4"
    clip.write_bytes(crossing.read_bytes())
    Image.fromarray(fer_faces("happy", 1, 96)[0]).save(root / "a photo.png")
    (root / "broken.mp4").write_text("not a video")
    out = tmp_path / "out dir"
    proc = emovit(
        "predict", str(root), "--model", str(tiny_model_dir), "--detector", "yunet", "--detector-model",
        str(yunet), "--format", "csv", "-o", str(out / "rows.csv"), "--summary", str(out / "s.json"),
        "--save-annotated", str(out), "--plot", str(out),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the broken clip is an error row; the rest goes on
    # the text file named .mp4 was counted among the videos analysed
    assert "2 of 3 inputs analysed (1 video(s), 40 frames), 1 failed" in proc.stderr
    rows = list(csv.DictReader((out / "rows.csv").open()))
    by_source = {Path(r["source"]).name for r in rows}
    assert by_source == {"two faces.mp4", "a photo.png", "broken.mp4"}
    broken = [r for r in rows if r["source"].endswith("broken.mp4")]
    assert len(broken) == 1 and broken[0]["error_code"] == "unsupported_format"
    video_rows = [r for r in rows if r["source"].endswith("two faces.mp4")]
    assert {int(r["frame"]) for r in video_rows} == set(range(40))
    assert {r["track_id"] for r in video_rows} == {"1", "2"}
    summary = json.loads((out / "s.json").read_text())
    (good, bad) = sorted(summary["videos"], key=lambda v: "error" in v)
    assert (
        good["frames_analysed"] == 40
        and len(good["tracks"]) == 2
        and bad["error_code"] == "unsupported_format"
        and good["video"]["average_fps"] == pytest.approx(30, rel=0.01)
    )  # each video's summary names its files (videos of one stem get _1, _2: nothing mapped them back)
    assert (good["annotated"], good["timeline"]) == (
        str(out / "two faces.annotated.mp4"), str(out / "two faces.timeline.png")
    )  # fmt: skip
    av = pytest.importorskip("av")
    with av.open(str(out / "two faces.annotated.mp4")) as container:
        decoded = list(container.decode(video=0))
        assert len(decoded) == 40 and container.streams.video[0].codec_context.name in ("h264", "mpeg4")
        assert float(container.streams.video[0].guessed_rate) == pytest.approx(30)
    assert (out / "two faces.timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3 inputs analysed" in proc.stderr or "of 3 inputs analysed" in proc.stderr


def test_cli_jsonl_rows_and_video_options(tiny_model_dir: Path, plain: Path) -> None:
    from click.testing import CliRunner

    from emovit.cli import main

    runner = CliRunner()
    args = ["predict", str(plain), "--model", str(tiny_model_dir), "--detector", "none", "--format", "jsonl"]
    result = runner.invoke(main, [*args, "--fps", "5", "--smooth", "0", "--start", "0.2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["frame"] for r in rows] == [6, 12, 18, 24, 30, 36, 42, 48, 54]
    assert all(set(FRAME_ROW_FIELDS) <= set(r) and r["probs"] == r["raw_probs"] for r in rows)
    both = runner.invoke(main, [*args, "--fps", "5", "--every", "2"])
    assert both.exit_code == 2 and "--every" in both.output


def test_cli_names_the_photo_options_a_video_leaves_unused(
    tiny_model_dir: Path, plain: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from emovit.cli import main

    args = ["predict", str(plain), "--model", str(tiny_model_dir), "--detector", "none", "--fps", "2", "-q"]
    unused = ["--explain", str(tmp_path / "why"), "--save-crops", str(tmp_path / "c")]
    result = CliRunner().invoke(main, [*args, *unused])
    assert result.exit_code == 0, result.output
    assert "warning: --explain writes the maps of photos; videos get none" in result.stderr
    assert "warning: --save-crops saves the faces of photos; videos get none" in result.stderr


def test_cli_sigterm_leaves_complete_files(tiny_model_dir: Path, clips: Path, tmp_path: Path) -> None:
    """SIGTERM mid-video: exit 130; rows, summary and a playable annotated video up to the last
    analysed frame."""
    clip = write_clip(clips / "long.mp4", [background(160, 120, seed=i % 3) for i in range(400)])
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "emovit.cli", "predict", str(clip), "--model", str(tiny_model_dir),
        "--detector", "none", "--format", "jsonl", "-o", str(out / "rows.jsonl"),
        "--summary", str(out / "s.json"), "--save-annotated", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def parts() -> list[Path]:  # the annotated video's temporary file (a unique name)
        return list(out.glob(".long.annotated.mp4.*.part")) if out.is_dir() else []

    deadline = time.monotonic() + 60
    while not parts() and proc.poll() is None:  # the first annotated frame is on its way
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert 0 < len(rows) < 400 and [r["frame"] for r in rows] == list(range(len(rows)))
    summary = json.loads((out / "s.json").read_text())["videos"][0]
    assert summary["frames_analysed"] == len(rows) and not summary["complete"]
    # says why it is incomplete (warnings were empty: a reader could not tell it from a damaged file)
    assert summary["warnings"] == [
        f"interrupted (Ctrl-C or SIGTERM) after {len(rows)} analysed frames: its rows, summary and "
        "annotated video stop there"
    ]
    av = pytest.importorskip("av")
    with av.open(str(out / "long.annotated.mp4")) as container:
        assert len(list(container.decode(video=0))) == len(rows)
    assert not parts()


# ---------------------------------------------------------------------- HTTP


def test_http_video_endpoint(
    tiny_whole: EmotionRecognizer, plain: Path, clips: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("prometheus_client")
    from fastapi.testclient import TestClient

    from emovit.serve import ServeSettings, create_app
    from emovit.serve.state import get_state

    settings = ServeSettings(max_video_seconds=1.5, max_video_bytes=2_000_000, max_body_bytes=1000)
    with TestClient(create_app(tiny_whole, settings)) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)

        def post(name: str, data: bytes, query: str = "") -> object:
            return client.post(f"/v1/video{query}", files=[("files", (name, data, "video/mp4"))])

        short = write_clip(clips / "short.mp4", noise_frames(30))  # 1 s
        response = post("short.mp4", short.read_bytes(), "?fps=10&smooth=0.5&top_k=2")
        assert response.status_code == 200, response.text[:300]  # type: ignore[attr-defined]
        body = response.json()  # type: ignore[attr-defined]
        assert [f["frame"] for f in body["frames"]] == list(range(0, 30, 3))
        assert all(
            f["faces"][0]["track_id"] == 1 and len(f["faces"][0]["top_k"]) == 2 for f in body["frames"]
        )
        summary = body["summary"]
        assert summary["source"] == "short.mp4" and summary["frames_analysed"] == 10
        assert sum(summary["tracks"][0]["share"].values()) == pytest.approx(1.0)
        # a window of the clip, as the CLI's --start/--end (they were ignored: all 30 frames)
        window = post("short.mp4", short.read_bytes(), "?start=0.5&end=0.8").json()  # type: ignore[attr-defined]
        assert [f["frame"] for f in window["frames"]] == list(range(15, 24))

        def error(response: object, status: int, code: str) -> None:
            assert response.status_code == status, response.text[:300]  # type: ignore[attr-defined]
            assert response.json()["error"]["code"] == code  # type: ignore[attr-defined]

        error(post("short.mp4", short.read_bytes(), "?start=0.8&end=0.5"), 422, "bad_request")
        # a window of a clip longer than the limit: the limit bounds what is analysed, from start
        for query, first in (("?start=1&end=2", 30), ("?start=0.6", 18)):
            windowed = post("long.mp4", plain.read_bytes(), query)
            assert windowed.status_code == 200, windowed.text[:300]  # type: ignore[attr-defined]
            assert windowed.json()["frames"][0]["frame"] == first  # type: ignore[attr-defined]
        error(post("long.mp4", plain.read_bytes(), "?start=0.2"), 413, "video_too_long")  # 0.2 + 1.5 < 2
        error(post("notes.mp4", b"plain text, not a video " * 10), 415, "unsupported_format")
        error(post("empty.mp4", b""), 422, "empty_file")
        error(post("audio.m4a", write_audio_only(clips / "sound.m4a").read_bytes()), 422, "no_video_stream")
        error(post("long.mp4", plain.read_bytes()), 413, "video_too_long")  # 2 s > 1.5 s
        # a video that declares no duration is found too long by decoding it
        long_mkv = write_clip(clips / "long.mkv", noise_frames(60), audio=True).read_bytes()
        short_mkv = write_clip(clips / "short.mkv", noise_frames(30), audio=True).read_bytes()
        with monkeypatch.context() as undeclared:
            undeclared.setattr("emovit.video._source._tag_seconds", lambda tag: None)
            error(post("long.mkv", long_mkv), 413, "video_too_long")
            assert post("short.mkv", short_mkv).status_code == 200  # type: ignore[attr-defined]
            # a window the client ends is not the limit's end: it was 413 "longer than the limit"
            windowed = post("short.mkv", short_mkv, "?end=0.5")
            assert windowed.status_code == 200, windowed.text[:300]  # type: ignore[attr-defined]
        assert 'emovit_rejections_total{reason="video_too_long"} 3.0' in client.get("/metrics").text
        error(post("big.mp4", b"\0" * 2_100_000), 413, "body_too_large")
        error(post("short.mp4", short.read_bytes(), "?fps=5&every=2"), 422, "bad_request")
        two = [("files", ("a.mp4", short.read_bytes(), "video/mp4"))] * 2
        error(client.post("/v1/video", files=two), 422, "one_video")
        error(client.post("/v1/video", content=b"{}", headers={"content-type": "application/json"}), 415,
              "unsupported_media_type")  # fmt: skip
        # a playlist naming a file on the server's disk is refused, not read
        monkeypatch.chdir(plain.parent)
        playlist = f"ffconcat version 1.0\nfile {plain.name}\n".encode()
        error(post("list.mp4", playlist), 415, "unsupported_format")
        assert '"/v1/video"' in client.get("/metrics").text
        assert get_state(client.app).video_slots.busy == 0  # every slot given back, whatever failed
    # frames over the server's pixel limit are refused before they are decoded
    with TestClient(create_app(tiny_whole, ServeSettings(max_pixels=96 * 64 - 1))) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        response = client.post("/v1/video", files=[("files", ("s.mp4", short.read_bytes(), "video/mp4"))])
        error(response, 413, "too_many_pixels")


def test_a_video_slot_is_taken_before_the_body_and_held_until_the_work_ends(
    tiny_whole: EmotionRecognizer, plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a 504 the analysis thread still runs: the next video is refused (503) until it has
    really stopped, and the stop event tells it to."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import emovit.serve.routes as routes
    from emovit.serve import ServeSettings, create_app
    from emovit.serve.state import get_state

    release, stopped = threading.Event(), threading.Event()
    real = routes._analyse_video

    def analyse(*args: Any) -> Any:
        stop = args[6]
        release.wait(30)
        if stop.is_set():
            stopped.set()
        return real(*args)

    monkeypatch.setattr(routes, "_analyse_video", analyse)
    with TestClient(create_app(tiny_whole, ServeSettings(video_deadline_s=0.2))) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        files = [("files", ("clip.mp4", plain.read_bytes(), "video/mp4"))]
        assert client.post("/v1/video", files=files).status_code == 504
        slots = get_state(client.app).video_slots
        assert slots.busy == 1  # the thread still runs
        busy = client.post("/v1/video", files=files)
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "overloaded"
        bad = client.post("/v1/video?fps=5&every=2", files=files)
        assert bad.status_code == 422  # options are checked before a slot is needed
        release.set()
        assert stopped.wait(10)  # the timed-out request had set its stop event
        for _ in range(200):
            if slots.busy == 0:
                break
            time.sleep(0.05)
        assert slots.busy == 0
        assert client.post("/v1/video", files=files).status_code != 503  # the slot is free again


def test_bytes_open_only_video_containers(plain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes and file objects (uploads) open as video containers only: a concatenation list or a
    playlist would make FFmpeg read the files it names."""
    monkeypatch.chdir(plain.parent)
    assert probe_video(plain.name).frames == 60  # a local file the playlist could name
    playlist = f"ffconcat version 1.0\nfile {plain.name}\n".encode()
    for source in (playlist, io.BytesIO(playlist)):
        with pytest.raises(InputError, match="not a video container emovit opens from bytes") as caught:
            probe_video(source, name="upload")
        assert caught.value.code == "unsupported_format"
    assert probe_video(plain.read_bytes()).frames == 60  # a real container still opens from bytes
    still = io.BytesIO()
    Image.new("RGB", (20, 20)).save(still, "JPEG")
    with pytest.raises(InputError, match="a still image"):
        VideoReader(still.getvalue(), name="photo")


def test_a_missing_extra_names_it(plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emovit.errors import DependencyError

    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails
    with pytest.raises(DependencyError) as caught:
        VideoReader(plain)
    assert caught.value.extra == "video" and "pip install 'emovit[video]'" in str(caught.value)
    odd = tmp_path / "clip.bin"
    odd.write_bytes(plain.read_bytes())
    assert not is_video(odd)  # without PyAV, files of unknown kinds take the photo path


def test_cli_a_missing_extra_fails_the_videos_and_the_photos_go_on(
    tiny_model_dir: Path, plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from emovit.cli import main

    photo = tmp_path / "face.png"
    Image.fromarray(background(64, 48)).save(photo)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the video extra's, for --plot
    args = ["predict", "--model", str(tiny_model_dir), "--detector", "none", "--format", "jsonl", "-q"]
    summary = tmp_path / "s.json"
    outputs = ["--summary", str(summary), "--plot", str(tmp_path / "plots")]
    mixed = CliRunner().invoke(main, [*args, *outputs, str(photo), str(plain)])
    assert mixed.exit_code == 1, mixed.output
    [video] = json.loads(summary.read_text())["videos"]
    assert video["source"] == str(plain) and video["error_code"] == "unsupported_input"
    assert "1 input(s) are videos: video analysis needs the optional package 'av'" in mixed.stderr
    ok, failed = (json.loads(line) for line in mixed.stdout.splitlines())
    assert ok["source"] == str(photo) and ok["ok"]
    assert (failed["source"], failed["ok"], failed["error_code"]) == (str(plain), False, "unsupported_input")
    assert "pip install 'emovit[video]'" in failed["error"]
    only = CliRunner().invoke(main, [*args, str(plain)])  # nothing else to do: the setup error
    assert only.exit_code == 2 and "pip install 'emovit[video]'" in only.output


def test_a_codec_without_a_decoder_is_an_error_row(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    """A stream whose codec this FFmpeg cannot decode has no codec context: reading its size
    raised AttributeError (an internal error for the CLI, 500 for the server)."""
    clip = write_clip(clips / "for-unknown.mkv", [background(64, 48)] * 5, container="matroska")
    data = clip.read_bytes()
    assert b"V_MPEG4/ISO/AVC" in data
    unknown = clips / "unknown codec.mkv"
    unknown.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    run = tiny_whole.predict_video(unknown)
    (row,) = list(run)
    assert (row.ok, row.error_code) == (False, "unsupported_format") and "no decoder" in (row.error or "")


def test_an_mpeg4_annotated_video_opens_its_encoder(
    plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MPEG-4 fallback (FFmpeg builds without libx264) failed to open: its time base was
    1/90000, over MPEG-4 Part 2's 16-bit limit."""
    av = pytest.importorskip("av")
    from emovit import video_output

    monkeypatch.setattr(video_output, "video_encoder", lambda: "mpeg4")
    frames = [FrameResult(source="x", frame=i, time_s=i / 29.97) for i in range(6)]
    target = tmp_path / "out.annotated.mp4"
    with video_output.AnnotatedVideoWriter(target, fps=29.97) as writer:
        for frame in frames:
            writer.write(frame, background(64, 48))
    with av.open(str(target)) as container:
        decoded = list(container.decode(video=0))
        assert len(decoded) == 6 and container.streams.video[0].codec_context.name == "mpeg4"
        assert decoded[-1].time == pytest.approx(5 / 29.97, abs=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.annotated.mp4"]


def test_an_annotated_video_keeps_the_whole_picture_when_the_frame_size_changes(tmp_path: Path) -> None:
    """A recording whose frames grow midway (WebRTC, adaptive streams): the later frames are
    scaled into the first size, not cut to its top-left corner."""
    av = pytest.importorskip("av")
    from emovit import video_output

    small = np.zeros((61, 81, 3), np.uint8)  # odd sides: trimmed to 80x60 for yuv420p
    large = np.zeros((120, 160, 3), np.uint8)
    large[:, 80:] = 255  # the right half white: cut to the corner, it would be lost
    target = tmp_path / "grown.annotated.mp4"
    with video_output.AnnotatedVideoWriter(target, fps=10) as writer:
        for index, image in enumerate([small, small, large, large]):
            writer.write(FrameResult(source="x", frame=index, time_s=index / 10), image)
    with av.open(str(target)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert [d.shape for d in decoded] == [(60, 80, 3)] * 4
    assert decoded[-1][:, 45:].mean() > 200 and decoded[-1][:, :35].mean() < 30


def test_an_annotated_video_that_cannot_be_written_loses_no_rows(
    tiny_model_dir: Path, plain: Path, tmp_path: Path
) -> None:
    """An annotated video that cannot be put in place (a folder holds its name): the video's
    rows and the other inputs' are all written, with a warning naming the video and exit 1 (it
    used to be an internal error that deleted the results file)."""
    pytest.importorskip("matplotlib")
    blocked = tmp_path / "annotated"
    (blocked / f"{plain.stem}.annotated.mp4").mkdir(parents=True)
    (blocked / f"{plain.stem}.timeline.png").mkdir(parents=True)
    photo = tmp_path / "face.png"
    Image.fromarray(fer_faces("happy", 1, 64)[0]).save(photo)
    out = tmp_path / "rows.jsonl"
    proc = emovit(
        "predict", str(plain), str(photo), "--model", str(tiny_model_dir), "--detector", "none",
        "--fps", "10", "--format", "jsonl", "-o", str(out), "--save-annotated", str(blocked),
        "--plot", str(blocked),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len([r for r in rows if r["source"] == str(plain)]) == 20 and rows[-1]["source"] == str(photo)
    assert f"warning: {plain}: its annotated video could not be written" in proc.stderr
    assert f"warning: {plain}: its timeline could not be written" in proc.stderr
    # one video lost two outputs: one input whose images could not be saved, not two
    assert "1 whose images could not be saved" in proc.stderr, proc.stderr


def test_a_stopped_video_is_not_summarised_as_complete(tiny_whole: EmotionRecognizer, plain: Path) -> None:
    """`stop` (the server's deadline) ends the analysis early: the summary said "complete"
    with the whole declared duration; it says what happened now."""
    import threading

    stop = threading.Event()
    stop.set()
    run = tiny_whole.predict_video(plain, stop=stop)
    frames = list(run)
    summary = run.summary()
    assert 0 < len(frames) < 60 and summary["complete"] is False
    assert any("stopped on request" in warning for warning in summary["warnings"])
    assert summary["duration_s"] < 2.0


def test_a_server_without_the_video_extra_says_so(
    tiny_whole: EmotionRecognizer, plain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The missing extra is the server's, not the client's fault: 501 not_available (it was
    422 bad_request, which told the client to fix its request)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("prometheus_client")
    from fastapi.testclient import TestClient

    from emovit.serve import create_app

    with TestClient(create_app(tiny_whole)) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails
        files = [("files", ("clip.mp4", plain.read_bytes(), "video/mp4"))]
        response = client.post("/v1/video", files=files)
    assert response.status_code == 501, response.text
    error = response.json()["error"]
    assert error["code"] == "not_available" and "pip install 'emovit[video]'" in error["message"]


_EVERY_SECOND = {"g": "30", "bf": "0"}
#: x264's usual settings: B-frames, a key frame every 2 s (a camcorder's or broadcast TS file)
_B_FRAMES = {"g": "60", "keyint_min": "60", "sc_threshold": "0", "preset": "veryfast"}


@pytest.mark.parametrize(
    ("container", "name", "codec_options"),
    [
        ("mpegts", "keyframes.ts", _EVERY_SECOND),
        ("h264", "raw.h264", _EVERY_SECOND),
        ("mpegts", "b.ts", _B_FRAMES),
    ],
)
def test_start_lands_on_the_first_frame_after_it(
    tiny_whole: EmotionRecognizer, clips: Path, container: str, name: str, codec_options: dict[str, str]
) -> None:
    """MPEG-TS seeks land on the next key frame (frames between the start and it were lost);
    a raw H.264 stream cannot seek at all, and the failed seek left the demuxer at its end
    (no frame analysed, nothing said). Both now start at the first frame at or after --start.
    With B-frames even a TS seek to the stream's first time lands on the next key frame (2 s):
    that is no start either, the reader decodes from the first frame."""
    frames = [background(64, 48, seed=i) for i in range(90)]  # 3 s at 30 fps
    clip = write_clip(clips / name, frames, container=container, codec_options=codec_options)
    options = VideoOptions(start=0.5, fps=10, smooth=0)
    times = [round(frame.time_s or 0, 3) for frame in tiny_whole.predict_video(clip, options=options)]
    assert times[:3] == [0.5, 0.6, 0.7] and len(times) == 25, times


def test_a_last_frame_held_on_screen_is_not_a_truncation(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    """A video ending on a still (its last frame shown 3 s) was "truncated or damaged",
    incomplete, its duration the last frame's start."""
    clip = write_held_last_frame(clips / "still-end.mp4", noise_frames(7), hold_ms=3000)
    run = tiny_whole.predict_video(clip, options=VideoOptions(smooth=0))
    assert len(list(run)) == 7
    summary = run.summary()
    assert summary["complete"] and not summary["warnings"], summary
    assert summary["duration_s"] == pytest.approx(3.2, abs=0.01)


def test_joined_ts_segments_count_every_second_they_hold(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    """Two TS segments joined by copying (a dashcam's or camera's pieces): the container says 1 s,
    the frames run 2 s. The summary's duration and rate were the container's (1 s, 60 fps)."""
    frames = [background(64, 48, seed=i) for i in range(30)]
    one = write_clip(clips / "segment.ts", frames, container="mpegts")
    joined = clips / "joined.ts"
    joined.write_bytes(one.read_bytes() * 2)
    run = tiny_whole.predict_video(joined, options=VideoOptions(smooth=0), quiet=True)
    assert len(list(run)) == 60
    summary = run.summary()
    assert summary["duration_s"] == pytest.approx(2.0, abs=0.05)
    assert summary["fps_analysed"] == pytest.approx(30.0, abs=1.0)


def test_avi_with_b_frames_starts_at_zero(tiny_whole: EmotionRecognizer, clips: Path) -> None:
    """AVI stores no presentation times: with B-frames FFmpeg derives them from the decoding
    order and the first frame is shown at 1/fps while the stream says it starts at 0, so every
    time (and --start) was a frame late."""
    frames = [background(64, 48, seed=i) for i in range(20)]
    clip = write_clip(clips / "bframes.avi", frames, fps=10, codec="mpeg4", container="avi", b_frames=2)
    with VideoReader(clip) as reader:
        read = [(frame.index, round(frame.time_s or 0, 3)) for frame in reader]
    assert read[:3] == [(0, 0.0), (1, 0.1), (2, 0.2)] and len(read) == 20, read
    options = VideoOptions(start=1.0, smooth=0)
    first = next(iter(tiny_whole.predict_video(clip, options=options)))
    assert (first.frame, round(first.time_s or 0, 3)) == (10, 1.0)
    with clip.open("rb") as handle, VideoReader(handle, name="bframes.avi") as reader:  # a file object too
        assert round(next(iter(reader)).time_s or 0, 3) == 0.0


def test_the_timeline_breaks_its_lines_only_where_the_face_was_away() -> None:
    from emovit.video_output import _broken_where_away

    probs = np.zeros((12, 7), np.float32)
    once_a_second = np.arange(12, dtype=np.float32)  # --fps 1: a line, not isolated points
    times, _ = _broken_where_away(once_a_second, probs)
    assert not np.isnan(times).any()
    away = np.concatenate([np.arange(6) * 0.1, 5 + np.arange(6) * 0.1]).astype(np.float32)
    times, values = _broken_where_away(away, probs)
    assert np.isnan(times).sum() == 1 and np.isnan(times[6]) and np.isnan(values[6]).all()
    sparse_away = np.array([0, 1, 2, 3, 10, 11, 12], np.float32)
    assert np.isnan(_broken_where_away(sparse_away, probs[:7])[0]).sum() == 1


def _sound(path: Path) -> tuple[np.ndarray, int] | None:
    """The first audio stream of `path` as mono samples and its rate (None: it has none)."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        assert stream.codec_context.format.is_planar  # AAC decodes to planar floats: row 0 is a channel
        chunks = [np.atleast_2d(frame.to_ndarray())[0] for frame in container.decode(stream)]
        return np.concatenate(chunks), stream.codec_context.sample_rate


def _loudness(sound: tuple[np.ndarray, int] | None, start: float, end: float) -> float:
    assert sound is not None
    samples, rate = sound
    return float(np.sqrt(np.mean(samples[int(start * rate) : int(end * rate)] ** 2)))


@pytest.mark.parametrize("start", [0.5, 1.5])
def test_an_annotated_video_keeps_the_sound_in_step_with_the_pictures(
    tiny_model_dir: Path, tmp_path: Path, start: float
) -> None:
    """The annotated video had no sound. It now carries the source's over the span analysed:
    a tone that starts half a second after --start in the source starts at 0.5 s in the
    annotated video (from 1.5 s the sound is read from a seek, as the pictures are)."""
    clip = write_clip(tmp_path / "talk.mp4", [background(64, 48, i) for i in range(40)], fps=10,
                      audio=True, tone_from_s=start + 0.5)  # fmt: skip
    out = tmp_path / "out"
    args = ["predict", str(clip), "--model", str(tiny_model_dir), "--detector", "none", "--start", str(start),
            "--format", "jsonl", "-o", str(tmp_path / "rows.jsonl"), "--save-annotated"]  # fmt: skip
    proc = emovit(*args, str(out))
    assert proc.returncode == 0, proc.stderr
    sound = _sound(out / "talk.annotated.mp4")
    assert sound is not None and len(sound[0]) / sound[1] == pytest.approx(4 - start, abs=0.1)  # as shown
    assert _loudness(sound, 0.05, 0.42) < 0.01 and _loudness(sound, 0.58, 4 - start - 0.2) > 0.2
    if start == 0.5:  # once is enough (a run costs seconds)
        proc = emovit(*args, str(tmp_path / "mute"), "--no-annotated-audio")
        assert proc.returncode == 0, proc.stderr
        assert _sound(tmp_path / "mute" / "talk.annotated.mp4") is None


def test_a_gap_in_the_sound_stays_a_gap(tmp_path: Path) -> None:
    """A stream whose sound stops for a second (a dropout; MPEG-TS keeps each packet's time):
    the sound after it was laid straight after the sound before, a second early for good."""
    av = pytest.importorskip("av")
    from emovit import video_output

    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * 44100) / 44100)
    chunks = [(at, tone[at : at + 1024].astype(np.float32)) for at in range(0, 3 * 44100 - 1024, 1024)]
    source = write_with_sound(  # a tone, but nothing from 1 s to 2 s
        tmp_path / "dropout.ts", "mpegts", "aac", [(at, c) for at, c in chunks if not 44100 <= at < 2 * 44100]
    )
    with av.open(str(source)) as container:  # the video stream's start in the file (MPEG-TS: not 0)
        start_s = float(container.streams.video[0].start_time * container.streams.video[0].time_base)
    assert start_s > 0.1 and probe_video(source).start_s == pytest.approx(start_s)  # it said 0.0
    target = tmp_path / "dropout.annotated.mp4"
    writer = video_output.AnnotatedVideoWriter(target, fps=10, audio_from=source, audio_offset_s=start_s)
    with writer:
        for index in range(30):
            writer.write(FrameResult(source="x", frame=index, time_s=index / 10), background(64, 48))
    sound_out = _sound(target)
    assert _loudness(sound_out, 0.2, 0.9) > 0.2 and _loudness(sound_out, 2.1, 2.9) > 0.2
    assert _loudness(sound_out, 1.1, 1.9) < 0.01


def test_a_sound_track_that_cannot_be_read_leaves_the_pictures_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sound in the source is no sound in the output, silently; a source that cannot be
    opened for its sound, or an FFmpeg without an AAC encoder, is a warning, and the video is
    written all the same (without an encoder the video was lost)."""
    av = pytest.importorskip("av")
    from emovit import video_output

    silent = write_clip(tmp_path / "silent.mp4", [background(64, 48)] * 3, fps=10)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    talk = write_clip(tmp_path / "talk.mp4", [background(64, 48)] * 3, fps=10, audio=True)
    codec = av.codec.Codec

    def no_aac(name: str, mode: str = "r") -> Any:
        if name == "aac" and mode == "w":
            raise av.codec.codec.UnknownCodecError(name)
        return codec(name, mode)

    for source, warns in ((silent, False), (broken, True), (talk, True)):
        if source == talk:
            monkeypatch.setattr(av.codec, "Codec", no_aac)
        target = tmp_path / f"{source.stem}.annotated.mp4"
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with video_output.AnnotatedVideoWriter(target, fps=10, audio_from=source) as writer:
                for index in range(3):
                    writer.write(FrameResult(source="x", frame=index, time_s=index / 10), background(64, 48))
        assert [str(w.message).startswith(f"{source}: its sound is left out") for w in seen] == [True] * warns
        with av.open(str(target)) as container:
            assert len(list(container.decode(video=0))) == 3 and not container.streams.audio


def test_the_sound_ends_with_the_pictures_whatever_its_packets(tmp_path: Path) -> None:
    """PCM sound in one-second packets (Matroska): the annotated video's sound ran on to the end
    of the packet that held the last frame's time, half a second past the pictures."""
    from emovit import video_output

    wave = (0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100) * 32767).astype(np.int16)
    seconds = [(second * 44100, wave) for second in range(3)]
    source = write_with_sound(tmp_path / "pcm.mkv", "matroska", "pcm_s16le", seconds)
    target = tmp_path / "pcm.annotated.mp4"
    with video_output.AnnotatedVideoWriter(target, fps=10, audio_from=source) as writer:
        for index in range(15):  # 1.5 s of pictures: interrupted, say
            writer.write(FrameResult(source="x", frame=index, time_s=index / 10), background(64, 48))
    sound_out = _sound(target)
    assert sound_out is not None and len(sound_out[0]) / sound_out[1] == pytest.approx(1.5, abs=0.03)


def test_a_videos_progress_moves_with_its_frames(tiny_whole: EmotionRecognizer, plain: Path) -> None:
    """predict's bar counted inputs: one long video sat at 0 % until it was done."""
    from emovit.cli._video import VideoJob
    from emovit.video import VideoOptions

    for options, frames in ((VideoOptions(), 60), (VideoOptions(start=0.5, end=1.0), 15)):
        steps: list[float] = []
        writer = ResultWriter(io.StringIO(), "jsonl", list(tiny_whole.labels), video=True)
        VideoJob(tiny_whole, options).run(str(plain), "plain", writer, None, steps.append)
        assert len(steps) > frames // 2 and all(step >= 0 for step in steps)
        assert sum(steps) == pytest.approx(1.0) and sum(steps[:-1]) > 0.8  # moved as it went
    missing: list[float] = []
    writer = ResultWriter(io.StringIO(), "jsonl", list(tiny_whole.labels), video=True)
    VideoJob(tiny_whole, VideoOptions()).run(
        str(plain.with_name("absent.mp4")), "absent", writer, None, missing.append
    )
    assert sum(missing) == pytest.approx(1.0)  # a failed video counts as done too


def test_the_timeline_spans_the_analysed_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without faces its axis ran 0..1 s (a 1.5 s clip); one frame gave -0.05..0.05 s."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from emovit.results import FaceResult
    from emovit.video_output import TimelineRecorder

    spans: list[tuple[float, float]] = []
    save = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda self, *a, **k: spans.append(self.axes[-1].get_xlim()) or save(self, *a, **k)
    )
    face = FaceResult(probs={"happy": 0.9, "sad": 0.1}, track_id=1)
    cases = {
        "faceless": [FrameResult("v.mp4", frame=i, time_s=i * 0.5) for i in range(4)],
        "one frame": [FrameResult("v.mp4", faces=[face], frame=0, time_s=0.0)],
        "face midway": [
            FrameResult("v.mp4", faces=[face] if i == 2 else [], frame=i, time_s=i / 2) for i in range(5)
        ],
    }
    for name, frames in cases.items():
        recorder = TimelineRecorder(["happy", "sad"])
        for frame in frames:
            recorder.add(frame)
        recorder.save(tmp_path / f"{name}.png")
    assert spans == [(0.0, 1.5), (0.0, 1.0), (0.0, 2.0)]
