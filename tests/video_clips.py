"""Video clips made inside the tests with PyAV: FER2013 faces moving over backgrounds along known
trajectories, variable frame rates, rotation metadata, damaged and odd files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .conftest import FER2013, require_shared


def fer_faces(label: str, count: int, side: int, *, start: int = 0) -> list[np.ndarray]:
    """`count` FER2013 test faces of `label` as RGB arrays scaled to `side` pixels."""
    folder = require_shared(FER2013 / "test" / label)
    files = sorted(folder.glob("*.jpg"))[start : start + count]
    return [np.asarray(Image.open(f).convert("RGB").resize((side, side), Image.BICUBIC)) for f in files]


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth coloured gradient (no face-like texture)."""
    y, x = np.mgrid[0:height, 0:width]
    shade = 60 + 40 * (seed % 3)
    rgb = [x / max(width, 1) * 200 + 30, y / max(height, 1) * 200 + 30, np.full_like(x, shade)]
    return np.stack(rgb, -1).astype(np.uint8)


def paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int) -> None:
    """Draw `face` with its top-left corner at (x, y), clipped at the canvas borders."""
    height, width = canvas.shape[:2]
    side_y, side_x = face.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + side_x, width), min(y + side_y, height)
    if x1 < x2 and y1 < y2:
        canvas[y1:y2, x1:x2] = face[y1 - y : y2 - y, x1 - x : x2 - x]


def write_clip(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 30,
    pts_ms: Sequence[int] | None = None,
    codec: str = "libx264",
    container: str | None = None,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
    b_frames: int | None = None,
    audio: bool = False,
    tone_from_s: float | None = None,
    sample_aspect: Fraction | None = None,
) -> Path:
    """Encode RGB `frames` into `path` (`pts_ms`: each frame's time in milliseconds, for a
    variable frame rate; `rotation`: display-matrix degrees, counter-clockwise; `audio`: a
    silent AAC track as long as the video, beside it, with a loud 440 Hz tone from `tone_from_s`
    on when that is given; `sample_aspect`: the pixels' width over
    their height, for an anamorphic video)."""
    av = pytest.importorskip("av")
    out = av.open(str(path), "w", format=container, options=options or {})
    frames = list(frames)
    height, width = frames[0].shape[:2]
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", **(codec_options or {})}
    if b_frames is not None:
        stream.codec_context.max_b_frames = b_frames
    if sample_aspect is not None:
        stream.codec_context.sample_aspect_ratio = sample_aspect
    if pts_ms is not None:
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    if audio:
        chunks = round(len(frames) / fps * 44100 / 1024)
        _silence(out, out.add_stream("aac", rate=44100), chunks, tone_from_s=tone_from_s)
    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def write_with_sound(
    path: Path, container: str, codec: str, chunks: Iterable[tuple[int, np.ndarray]], *, frames: int = 30
) -> Path:
    """`frames` plain frames at 10 fps and a 44.1 kHz mono sound track of `codec` made of
    `chunks` (each its time in samples and its samples: float32 for ``fltp`` codecs, int16 for
    ``s16`` ones), muxed into a `container` file as given: gaps between chunks stay gaps, and
    each chunk is one encoder input (PCM chunks stay whole packets where the container keeps them)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(codec, rate=44100, layout="mono")
        for pts, samples in chunks:
            kind = "s16" if samples.dtype == np.int16 else "fltp"
            chunk = av.AudioFrame.from_ndarray(samples[None], format=kind, layout="mono")
            chunk.sample_rate, chunk.pts = 44100, pts
            for packet in sound.encode(chunk):
                out.mux(packet)
        for _ in range(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(background(64, 48), format="rgb24")):
                out.mux(packet)
        for stream in (sound, video):
            for packet in stream.encode():
                out.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    av = pytest.importorskip("av")
    out = av.open(str(path), "w")
    _silence(out, out.add_stream("aac", rate=44100), 20)
    out.close()
    return path


def _silence(out: Any, stream: Any, chunks: int, *, tone_from_s: float | None = None) -> None:
    """Mux `chunks` x 1,024 samples of silence (44.1 kHz mono) into the AAC `stream` of `out`
    (a 440 Hz tone from `tone_from_s` on)."""
    av = pytest.importorskip("av")
    for index in range(chunks):
        t = (index * 1024 + np.arange(1024)) / 44100
        wave = 0.5 * np.sin(2 * np.pi * 440 * t) * (t >= tone_from_s) if tone_from_s is not None else 0 * t
        chunk = av.AudioFrame.from_ndarray(wave[None].astype(np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 44100, index * 1024
        for packet in stream.encode(chunk):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def noise_frames(count: int, width: int = 96, height: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Frames of noise: every frame costs about the same bytes (for truncation tests)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def zero_timestamps(mp4: Path, out: Path) -> Path:
    """A copy of a fast-start MP4 whose sample durations are all 0: every frame at time 0 (a
    broken muxer's "zero frame rate")."""
    data = bytearray(mp4.read_bytes())
    at = data.find(b"stts")
    entries = int.from_bytes(data[at + 8 : at + 12], "big")
    for k in range(entries):
        offset = at + 12 + 8 * k + 4
        data[offset : offset + 4] = (0).to_bytes(4, "big")
    out.write_bytes(bytes(data))
    return out


def write_held_last_frame(path: Path, frames: Sequence[np.ndarray], hold_ms: int, fps: int = 30) -> Path:
    """An MP4 whose last frame stays on screen `hold_ms` (a screen recording that ends on a
    still): the container's duration runs that far past the last frame's start."""
    av = pytest.importorskip("av")
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps)
    height, width = frames[0].shape[:2]
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    stream.options = {"bf": "0", "preset": "ultrafast"}
    packets = []
    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts, frame.time_base = round(index * 1000 / fps), Fraction(1, 1000)
        packets += stream.encode(frame)
    packets += stream.encode()
    for index, packet in enumerate(packets):
        packet.duration = hold_ms if index == len(packets) - 1 else round(1000 / fps)
        out.mux(packet)
    out.close()
    return path


def write_with_cover_art(path: Path, frames: Sequence[np.ndarray] = ()) -> Path:
    """An MP4 (an .m4a when there are no `frames`) with sound and a cover picture (a one-frame
    mjpeg stream marked as attached), and the `frames` as a real video stream after it."""
    av = pytest.importorskip("av")
    import io

    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), (255, 0, 0), np.uint8)).save(jpeg, "JPEG")
    out = av.open(str(path), "w", format="mp4")
    cover = out.add_stream("mjpeg")
    cover.width = cover.height = 64
    cover.pix_fmt = "yuvj420p"
    cover.disposition = av.stream.Disposition.attached_pic
    video = None
    if frames:
        video = out.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.options = {"preset": "ultrafast"}
    sound = out.add_stream("aac", rate=44100)
    packet = av.Packet(jpeg.getvalue())
    packet.stream, packet.pts, packet.dts, packet.is_keyframe = cover, 0, 0, True
    out.mux(packet)
    if video is not None:
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    _silence(out, sound, 40)
    out.close()
    return path
