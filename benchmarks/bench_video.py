"""Video end to end: emovit's `predict_video` against the naive loop, side by side, and flat memory.

A 640x480, 30 frames/s clip with 1-3 FER2013 faces moving over a background is made with PyAV.
Both contenders decode it, find faces with YuNet, classify them with the default model and write
one JSONL row per result; emovit also tracks and smooths:

* emovit: ``for frame in rec.predict_video(clip): writer.write(frame)`` (decoding in its own
  thread, detection on a 320-pixel copy, the faces of 8 frames in one model batch);
* naive: decode each frame with PyAV and call ``rec.predict([frame])`` one frame at a time (what
  a user would write; the recognizer's own photo settings).

The two run interleaved, ``--repeats`` times each, every frame analysed; the medians are
reported with their ratio and the real-time factor (seconds of video per second of wall time).
Peak memory (RSS) of ``emovit predict`` (rows, summary, timeline) on a 1-minute and a 10-minute
clip is measured in separate processes; the 10-minute clip is the 1-minute one repeated
(stream copy), analysed at ``--memory-fps`` frames per second so the run stays short (every
frame is still decoded).

Usage: python benchmarks/bench_video.py [--seconds 20] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from emovit.bench import at_least_one, machine_info

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
FER = SHARED / "data" / "fer2013" / "test"
WIDTH, HEIGHT, FPS = 640, 480, 30


def detectable_faces(count: int) -> list[np.ndarray]:
    """FER2013 faces (120 px) that YuNet finds on the 320-pixel copy of a 640x480 frame."""
    from emovit.faces import ScaledDetector, create_detector

    detector = ScaledDetector(create_detector("yunet", model_path=YUNET), 320)
    faces = []
    for path in sorted((FER / "happy").glob("*.jpg")) + sorted((FER / "surprise").glob("*.jpg")):
        face = np.asarray(Image.open(path).convert("RGB").resize((120, 120), Image.BICUBIC))
        canvas = np.full((HEIGHT, WIDTH, 3), 110, np.uint8)
        canvas[180:300, 260:380] = face
        found = detector.detect(canvas)
        if len(found) == 1 and (found[0].score or 0) > 0.85:
            faces.append(face)
            if len(faces) == count:
                return faces
    raise SystemExit("not enough detectable FER2013 faces")


def make_clip(path: Path, seconds: float) -> Path:
    """1-3 faces drifting over a gradient: 1 face, then 2, then 3, every 10 s."""
    import av

    faces = detectable_faces(3)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    back = np.stack([x / WIDTH * 200 + 30, y / HEIGHT * 200 + 30, np.full_like(x, 90)], -1).astype(np.uint8)
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "23"}
    lanes = [(60, 40), (250, 170), (420, 300)]
    for index in range(round(seconds * FPS)):
        t = index / FPS
        canvas = back.copy()
        shown = 1 + int(t // 10) % 3
        for k, (face, (x0, y0)) in enumerate(zip(faces[:shown], lanes, strict=False)):
            dx = round(60 * np.sin(2 * np.pi * t / (6 + 2 * k)))
            dy = round(20 * np.cos(2 * np.pi * t / (5 + k)))
            canvas[y0 + dy + 20 : y0 + dy + 140, x0 + dx + 20 : x0 + dx + 140] = face
        for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def repeat_clip(source: Path, path: Path, times: int) -> Path:
    """`source` played `times` times in a row, by stream copy (no re-encoding)."""
    import av

    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        length = stream.duration  # in stream time base
    out = av.open(str(path), "w")
    template = None
    for round_ in range(times):
        with av.open(str(source)) as container:
            stream = container.streams.video[0]
            if template is None:
                template = out.add_stream_from_template(stream)
            for packet in container.demux(stream):
                if packet.dts is None:
                    continue
                packet.pts += round_ * length
                packet.dts += round_ * length
                packet.stream = template
                out.mux(packet)
    out.close()
    return path


def run_emovit(rec: object, clip: Path, seconds: float) -> tuple[float, int]:
    from emovit.writers import ResultWriter

    with open(os.devnull, "w") as sink:
        writer = ResultWriter(sink, "jsonl", rec.labels)  # type: ignore[attr-defined]
        start = time.perf_counter()
        frames = 0
        for frame in rec.predict_video(clip, end=seconds):  # type: ignore[attr-defined]
            writer.write(frame)
            frames += 1
        writer.close()
    return time.perf_counter() - start, frames


def run_naive(rec: object, clip: Path, seconds: float) -> tuple[float, int]:
    import av

    from emovit.writers import ResultWriter

    with open(os.devnull, "w") as sink:
        writer = ResultWriter(sink, "jsonl", rec.labels)  # type: ignore[attr-defined]
        start = time.perf_counter()
        frames = 0
        with av.open(str(clip)) as container:
            for frame in container.decode(video=0):
                if frame.time >= seconds:
                    break
                (result,) = rec.predict([frame.to_ndarray(format="rgb24")])  # type: ignore[attr-defined]
                writer.write(result)
                frames += 1
        writer.close()
    return time.perf_counter() - start, frames


def peak_rss_mb(clip: Path, out: Path, fps: float) -> dict[str, object]:
    """Run `emovit predict` on `clip` in its own process; its peak resident memory."""
    cmd = [
        sys.executable, "-m", "emovit.cli", "predict", str(clip), "--detector", "yunet",
        "--detector-model", str(YUNET), "--fps", str(fps), "--format", "jsonl", "-o", str(out / "rows.jsonl"),
        "--summary", str(out / "summary.json"), "--plot", str(out), "--quiet",
    ]  # fmt: skip
    code = (
        "import resource, subprocess, sys, time; start = time.perf_counter();"
        "rc = subprocess.run(sys.argv[1:]).returncode;"
        "print(rc, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
    rc, wall, rss_kb = done.stdout.split()
    summary = json.loads((out / "summary.json").read_text())["videos"][0]
    return {
        "exit_code": int(rc),
        "wall_s": round(float(wall), 1),
        "peak_rss_mb": round(int(rss_kb) / 1024, 1),
        "frames_analysed": summary["frames_analysed"],
        "video_s": summary["duration_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="video seconds timed per run")
    parser.add_argument("--repeats", type=at_least_one, default=3)
    parser.add_argument("--memory-fps", type=float, default=5.0)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_video.json")
    args = parser.parse_args()
    if not YUNET.is_file() or not FER.is_dir():
        sys.exit(f"skipped: {SHARED} lacks the YuNet model or FER2013")

    from emovit import EmotionRecognizer
    from emovit.faces import FaceOptions

    work = Path(tempfile.mkdtemp(prefix="bench_video_"))
    minute = make_clip(work / "minute.mp4", 60.0)
    rec = EmotionRecognizer.from_pretrained(
        "default", device="cpu", faces=FaceOptions(detector="yunet", detector_model=YUNET)
    )
    run_emovit(rec, minute, 2.0)  # warm-up (model, detector, thread pools)
    run_naive(rec, minute, 1.0)
    timings: dict[str, list[float]] = {"emovit": [], "naive": []}
    frames = {}
    for _ in range(args.repeats):
        for name, run in (("emovit", run_emovit), ("naive", run_naive)):
            wall, count = run(rec, minute, args.seconds)
            timings[name].append(count / wall)
            frames[name] = count
            print(f"{name}: {count / wall:.1f} frames/s", flush=True)
    emovit_fps = statistics.median(timings["emovit"])
    naive_fps = statistics.median(timings["naive"])
    report: dict[str, object] = {
        "benchmark": "bench_video",
        "command": " ".join(["python benchmarks/bench_video.py", *sys.argv[1:]]),
        "cpu": machine_info(),
        "clip": {"size": [WIDTH, HEIGHT], "fps": FPS, "faces": "1-3", "seconds_timed": args.seconds},
        "model": "default",
        "backend": rec.backend.name,
        "detector": "yunet",
        "frames_per_run": frames,
        "emovit_frames_per_s": round(emovit_fps, 1),
        "naive_frames_per_s": round(naive_fps, 1),
        "ratio_vs_naive": round(emovit_fps / naive_fps, 2),
        "real_time_factor": round(emovit_fps / FPS, 2),
        "runs_frames_per_s": {k: [round(v, 1) for v in vs] for k, vs in timings.items()},
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if not args.skip_memory:
        ten = repeat_clip(minute, work / "ten_minutes.mp4", 10)
        memory = {}
        for name, clip in (("1_minute", minute), ("10_minutes", ten)):
            out = work / name
            out.mkdir()
            memory[name] = peak_rss_mb(clip, out, args.memory_fps)
            print(name, memory[name], flush=True)
        memory["ratio_10_to_1"] = round(
            memory["10_minutes"]["peak_rss_mb"] / memory["1_minute"]["peak_rss_mb"],
            3,  # type: ignore[index]
        )
        memory["command"] = (
            f"emovit predict CLIP --detector yunet --fps {args.memory_fps:g} --format jsonl -o rows.jsonl "
            "--summary s.json --plot DIR"
        )
        report["memory"] = memory
    shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "cpu"}, indent=2))


if __name__ == "__main__":
    main()
