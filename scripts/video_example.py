"""Make the README's video example: a generated clip run through the real CLI.

The clip (640x360, 30 frames/s, 12 s) has two FER2013 faces on a gradient: on the left a face
that is happy, then surprised, then sad (4 s each: three test images the default model reads
that way), on the right a face that drifts in at 2 s and out at 10 s. The script runs

    emovit predict clip.mp4 --summary s.json --save-annotated out/ --plot out/

and copies the timeline, one annotated frame and the summary into docs/examples/.

Usage: python scripts/video_example.py [--out docs/examples]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
FER = SHARED / "data" / "fer2013" / "test"
WIDTH, HEIGHT, FPS, SIDE = 640, 360, 30, 150


def pick(rec: object, label: str, skip: int = 0) -> np.ndarray:
    """A FER2013 test face of `label` that YuNet finds and the default model reads as `label`."""
    for path in sorted((FER / label).glob("*.jpg"))[skip:]:
        face = np.asarray(Image.open(path).convert("RGB").resize((SIDE, SIDE), Image.BICUBIC))
        canvas = np.full((HEIGHT, WIDTH, 3), 120, np.uint8)
        canvas[100 : 100 + SIDE, 100 : 100 + SIDE] = face
        (result,) = rec.predict([canvas])  # type: ignore[attr-defined]
        if len(result.faces) == 1 and result.label == label and result.score > 0.6:
            return face
    raise SystemExit(f"no clear {label} face found")


def make_clip(path: Path) -> None:
    import av

    from emovit import EmotionRecognizer
    from emovit.faces import FaceOptions

    rec = EmotionRecognizer.from_pretrained(
        "default",
        device="cpu",
        faces=FaceOptions(detector="yunet", detector_model=YUNET, detect_max_side=320),
    )
    left = [pick(rec, label) for label in ("happy", "surprise", "sad")]
    right = pick(rec, "neutral", skip=3)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    back = np.stack([x / WIDTH * 160 + 60, y / HEIGHT * 120 + 80, np.full_like(x, 150)], -1).astype(np.uint8)
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    for index in range(12 * FPS):
        t = index / FPS
        canvas = back.copy()
        dy = round(8 * np.sin(2 * np.pi * t / 3))
        canvas[90 + dy : 90 + dy + SIDE, 60 : 60 + SIDE] = left[min(int(t // 4), 2)]
        if 2 <= t < 10:
            x0 = round(300 + 20 * (t - 2))
            canvas[150 : 150 + SIDE, x0 : x0 + SIDE] = right
        for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "examples")
    args = parser.parse_args()
    if not YUNET.is_file() or not FER.is_dir():
        sys.exit(f"skipped: {SHARED} lacks the YuNet model or FER2013")
    work = Path(tempfile.mkdtemp(prefix="video_example_"))
    try:
        clip = work / "clip.mp4"
        make_clip(clip)
        out = work / "out"
        command = [
            sys.executable, "-m", "emovit.cli", "predict", str(clip), "--detector", "yunet",
            "--detector-model", str(YUNET), "--summary", str(work / "s.json"), "--save-annotated", str(out),
            "--plot", str(out), "--format", "jsonl", "-o", str(work / "rows.jsonl"),
        ]  # fmt: skip
        subprocess.run(command, check=True)
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "clip.timeline.png", args.out / "clip.timeline.png")
        import av

        with av.open(str(out / "clip.annotated.mp4")) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index == 6 * FPS:
                    frame.to_image().save(args.out / "clip.annotated.jpg", quality=88)
                    break
        summary = json.loads((work / "s.json").read_text())
        summary["videos"][0]["source"] = "clip.mp4"
        (args.out / "clip.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
