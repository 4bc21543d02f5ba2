"""Face detection, crops and the detector model cache."""

from __future__ import annotations

import csv
import hashlib
import http.server
import json
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")

from emovit import EmotionRecognizer  # noqa: E402
from emovit.errors import DependencyError, ModelLoadError  # noqa: E402
from emovit.faces import (  # noqa: E402
    YUNET,
    Detection,
    DownloadError,
    FaceOptions,
    HaarDetector,
    WholeImageDetector,
    YuNetDetector,
    create_detector,
    crop_face,
    eye_angle,
    fetch,
)

from .conftest import FER2013, SHARED, require_shared  # noqa: E402

YUNET_FILE = SHARED / "models" / "face_detection_yunet_2023mar.onnx"


@pytest.fixture(scope="module")
def yunet_path() -> Path:
    return require_shared(YUNET_FILE)


def _background(kind: int, rng: np.random.Generator, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    if kind == 0:  # flat colour
        return np.broadcast_to(rng.integers(40, 220, 3, dtype=np.uint8), (height, width, 3)).copy()
    if kind == 1:  # gradient
        base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
        return base.astype(np.uint8)
    if kind == 2:  # noisy texture
        return np.clip(rng.normal(128, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    # stripes and blobs
    pattern = 127 + 60 * np.sin(x / 17.0)[..., None] * np.cos(y / 23.0)[..., None] * np.array([1.0, 0.6, 0.3])
    return np.clip(pattern, 0, 255).astype(np.uint8)


def _fer_faces(count: int) -> list[np.ndarray]:
    classes = sorted(p for p in require_shared(FER2013 / "test").iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted(c.glob("*.jpg"))[:40]]
    picked = np.random.default_rng(1).choice(len(files), count, replace=False)
    return [np.asarray(Image.open(files[i]).convert("RGB")) for i in picked]


def _composites(
    n_images: int = 12, per_image: int = 3
) -> tuple[list[np.ndarray], list[list[tuple[int, ...]]]]:
    """640x480 scenes with `per_image` FER2013 faces pasted at known places (96-160 px)."""
    rng = np.random.default_rng(0)
    faces = iter(_fer_faces(n_images * per_image))
    images, truths = [], []
    for k in range(n_images):
        canvas = _background(k % 4, rng)
        boxes: list[tuple[int, ...]] = []
        slots = [(40, 60), (250, 200), (460, 60), (60, 300), (450, 300)]
        for x, y in [slots[i] for i in rng.permutation(len(slots))[:per_image]]:
            side = int(rng.integers(96, 161))
            face = np.asarray(Image.fromarray(next(faces)).resize((side, side), Image.BICUBIC))
            canvas[y : y + side, x : x + side] = face
            boxes.append((x, y, x + side, y + side))
        images.append(canvas)
        truths.append(boxes)
    return images, truths


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def test_yunet_finds_pasted_fer_faces(yunet_path: Path, tiny_model_dir: Path) -> None:
    images, truths = _composites(n_images=30)
    faces = FaceOptions(detector="yunet", detector_model=yunet_path)
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", faces=faces, batch_size=4)
    results = rec.predict(images, keep_pixels=True)
    found = total = false_positives = 0
    for result, boxes in zip(results, truths, strict=True):
        total += len(boxes)
        matched = [any(_iou(face.box, box) >= 0.4 for face in result.faces) for box in boxes]
        found += sum(matched)
        false_positives += sum(not any(_iou(face.box, b) >= 0.4 for b in boxes) for face in result.faces)
        # Batched with the other faces of the batch, or alone: the same answer.
        for face in result.faces:
            alone = rec.classify_arrays([face.crop])[0]
            np.testing.assert_allclose([face.probs[k] for k in rec.labels], alone, atol=1e-5)
    recall = found / total
    assert recall >= 0.85, f"recall {recall:.2f} ({found}/{total})"
    assert false_positives <= 3


def test_no_detections_on_empty_backgrounds(yunet_path: Path) -> None:
    detector = YuNetDetector(yunet_path)
    rng = np.random.default_rng(3)
    for kind in range(4):
        assert detector.detect(_background(kind, rng)) == []


def test_photo_without_a_face_is_not_an_error(yunet_path: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    photo = tmp_path / "landscape.png"
    Image.fromarray(_background(1, np.random.default_rng(0))).save(photo)
    faces = FaceOptions(detector="yunet", detector_model=yunet_path)
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", faces=faces)
    result = rec.predict(photo)[0]
    assert result.ok and result.faces == [] and result.label is None
    whole_faces = FaceOptions(detector=rec.detector, no_face="whole")
    whole = EmotionRecognizer(rec.model, faces=whole_faces).predict(photo)[0]
    assert len(whole.faces) == 1 and whole.faces[0].box == (0, 0, 640, 480)
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "predict", str(photo), "--model", str(tiny_model_dir),
         "--detector-model", str(yunet_path), "--format", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["faces"] == []


def _rotated_face_scene(angle: float) -> np.ndarray:
    face = Image.open(require_shared(Path(__file__).resolve().parents[1] / "examples" / "astronaut_face.jpg"))
    canvas = Image.new("RGB", (400, 400), (128, 128, 128))
    canvas.paste(face.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=(128, 128, 128)), (60, 60))
    return np.asarray(canvas)


def test_alignment_levels_known_eyes() -> None:
    """Two bright 'eyes' on a line tilted by 30 degrees: the aligned crop puts them on one row."""
    image = np.zeros((200, 200, 3), np.uint8)
    angle = np.radians(30)
    centre = np.array([100.0, 100.0])
    eyes = [
        centre + 25 * np.array([-np.cos(angle), -np.sin(angle)]),
        centre + 25 * np.array([np.cos(angle), np.sin(angle)]),
    ]
    for x, y in eyes:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    marks = np.array([*eyes, centre, centre + np.array([-15, 30]), centre + np.array([15, 30])])
    det = Detection(box=(60, 60, 140, 140), landmarks=marks)
    assert eye_angle(marks) == pytest.approx(30)

    def eye_rows(crop: np.ndarray) -> tuple[float, float]:
        grey = crop[..., 0].astype(float)
        half = crop.shape[1] // 2
        ys = np.arange(crop.shape[0])[:, None]
        left, right = grey[:, :half], grey[:, half:]
        return float((ys * left).sum() / left.sum()), float((ys * right).sum() / right.sum())

    aligned = eye_rows(crop_face(image, det, margin=0.0, align=True))
    unaligned = eye_rows(crop_face(image, det, margin=0.0, align=False))
    assert abs(aligned[0] - aligned[1]) < 1.5
    assert abs(unaligned[0] - unaligned[1]) > 15


def test_alignment_reduces_the_tilt_yunet_sees(yunet_path: Path) -> None:
    # YuNet's landmarks under-report in-plane rotation (a 40 degree turn moves its eye line
    # by about 11 degrees), so this checks the direction, not the size, of the correction.
    detector = YuNetDetector(yunet_path)
    scene = _rotated_face_scene(40)
    (face,) = detector.detect(scene)
    before = eye_angle(face.landmarks)
    (in_aligned,) = detector.detect(crop_face(scene, face, margin=0.6, align=True))
    (in_unaligned,) = detector.detect(crop_face(scene, face, margin=0.6, align=False))
    assert abs(before) > 5
    assert abs(eye_angle(in_aligned.landmarks)) < abs(eye_angle(in_unaligned.landmarks))


def test_faces_touching_the_border(yunet_path: Path) -> None:
    scene = _rotated_face_scene(0)[60:, 115:]  # the face is cut by the left edge
    (face,) = YuNetDetector(yunet_path).detect(scene)
    assert face.box[0] < 5 or face.box[1] < 5
    padded = crop_face(scene, face, margin=0.5, border="pad")
    side = round(max(face.width, face.height) * 1.5)
    assert padded.shape == (side, side, 3)
    clipped = crop_face(scene, face, margin=0.5, border="clip")
    assert clipped.shape[0] < side or clipped.shape[1] < side


def test_a_search_size_over_yunets_own_cap_is_used(yunet_path: Path) -> None:
    """YuNet scales photos to 1280 pixels itself: --detect-max-side 2560 searched at 1280."""
    from emovit.faces._detectors import ScaledDetector

    yunet = YuNetDetector(yunet_path)
    assert yunet.max_side == 1280
    wrapped = ScaledDetector.wrap(yunet, 2560)
    assert isinstance(wrapped, ScaledDetector) and yunet.max_side == 2560
    ScaledDetector.wrap(yunet, 320)  # a smaller search size is the wrapper's work alone
    assert yunet.max_side == 2560


def test_an_aligned_face_at_the_border_gets_no_black_wedges() -> None:
    """`clip` with a turned square filled what lay outside the image with black (a third of a
    corner face's crop): it replicates edge pixels, as `pad` does."""
    grey = np.full((100, 100, 3), 128, np.uint8)
    tilted = Detection(
        box=(-5, -5, 40, 45), landmarks=((10.0, 12.0), (30.0, 16.0), (20, 25), (12, 35), (28, 37))
    )
    for border in ("clip", "pad"):
        crop = crop_face(grey, tilted, margin=0.2, align=True, border=border)  # type: ignore[arg-type]
        assert (crop == 128).all(), border


def test_crop_geometry() -> None:
    image = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    inside = crop_face(image, Detection(box=(40, 40, 60, 60)), margin=0.5)
    assert inside.shape == (30, 30, 3)
    np.testing.assert_array_equal(inside, image[35:65, 35:65])
    corner = crop_face(image, Detection(box=(-10, -10, 10, 10)), margin=0.0)
    assert corner.shape == (20, 20, 3)
    np.testing.assert_array_equal(corner[10:, 10:], image[:10, :10])
    np.testing.assert_array_equal(corner[0, 10:], image[0, :10])  # padding replicates the edge
    np.testing.assert_array_equal(corner[:10, :10], np.broadcast_to(image[0, 0], (10, 10, 3)))


def test_haar_is_always_available() -> None:
    scene = _rotated_face_scene(0)
    faces = HaarDetector().detect(scene)
    assert len(faces) == 1
    assert faces[0].landmarks is None and faces[0].score is None
    # a large photo is searched on a copy of at most 1280 pixels (full size took seconds, under
    # the one lock every server request shares); boxes come back in the photo's pixels
    big = np.asarray(Image.fromarray(scene).resize((1600, 1600), Image.BILINEAR))
    calls: list[tuple[int, ...]] = []
    haar = HaarDetector(max_side=400)
    cascade = haar._cascade

    class Spy:
        def detectMultiScale(self, grey: np.ndarray, **kwargs: Any) -> Any:  # noqa: N802 - OpenCV's name
            calls.append(grey.shape)
            return cascade.detectMultiScale(grey, **kwargs)

    haar._cascade = Spy()
    (found,) = haar.detect(big)
    assert calls == [(400, 400)]
    np.testing.assert_allclose(found.box, np.array(faces[0].box) * 4, atol=16)


class _FileServer:
    """Serves one payload at /yunet.onnx on 127.0.0.1."""

    def __init__(self, payload: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/yunet.onnx"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> _FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_download_good_file(yunet_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMOVIT_HOME", str(tmp_path / "home"))
    with _FileServer(yunet_path.read_bytes()) as server:
        monkeypatch.setenv("EMOVIT_YUNET_URL", server.url)
        path = fetch(YUNET)
    assert path == tmp_path / "home" / "models" / YUNET.filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == YUNET.sha256
    assert [p.name for p in path.parent.iterdir()] == [YUNET.filename]  # no temporary files left
    monkeypatch.setenv("EMOVIT_YUNET_URL", "http://127.0.0.1:9/unreachable")
    assert isinstance(create_detector("yunet"), YuNetDetector)  # cached now: no network needed


def test_download_corrupted_file_is_deleted(
    yunet_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EMOVIT_HOME", str(tmp_path / "home"))
    corrupted = bytearray(yunet_path.read_bytes())
    corrupted[1000] ^= 0xFF
    with _FileServer(bytes(corrupted)) as server:
        monkeypatch.setenv("EMOVIT_YUNET_URL", server.url)
        with pytest.raises(DownloadError, match="sha256 .* expected 8f2383e4"):
            fetch(YUNET)
    assert list((tmp_path / "home" / "models").iterdir()) == []


def test_no_network_falls_back_to_haar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMOVIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMOVIT_YUNET_URL", "http://127.0.0.1:9/unreachable")
    with pytest.raises(ModelLoadError, match="--detector-model"):
        create_detector("yunet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = create_detector("auto")
    assert isinstance(detector, HaarDetector)
    assert len(caught) == 1 and "Haar" in str(caught[0].message)
    # a cache that cannot even be created (its path runs through a file) falls back the same way
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("EMOVIT_HOME", str(tmp_path / "a file" / "home"))
    with pytest.warns(UserWarning, match="Haar"):
        assert isinstance(create_detector("auto"), HaarDetector)


def test_without_opencv_auto_classifies_whole_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if opencv-python-headless were not installed
    for name in ("yunet", "haar"):  # asked for by name: a clear error
        with pytest.raises(DependencyError, match=r"pip install 'emovit\[faces\]'"):
            create_detector(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = create_detector("auto")
    assert isinstance(detector, WholeImageDetector)
    assert len(caught) == 1 and "emovit[faces]" in str(caught[0].message)


def test_cli_without_opencv_names_the_detector_option(tiny_model_dir: Path) -> None:
    code = "import sys; sys.modules['cv2'] = None; from emovit.cli import main; main()"
    photo = Path(__file__).parents[1] / "examples" / "astronaut_face.jpg"
    args = [sys.executable, "-c", code, "predict", str(photo), "--model", str(tiny_model_dir), "--format=csv"]

    def run(detector: str, *more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, f"--detector={detector}", *more], capture_output=True, text=True, timeout=300
        )

    # said before the model loads (seconds): a model folder that is not there is not reached
    failed = run("haar", "--model", str(tiny_model_dir.parent / "not there"))
    assert failed.returncode == 2
    assert (
        "'--detector'" in failed.stderr
        and "emovit[faces]" in failed.stderr
        and "not there" not in failed.stderr
    )
    auto = run("auto")
    assert auto.returncode == 0, auto.stderr
    assert "emovit[faces]" in auto.stderr and len(auto.stdout.strip().splitlines()) == 2  # header + one face


def test_cache_pointed_at_shared_models(yunet_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOVIT_HOME", str(yunet_path.parents[1]))
    monkeypatch.setenv("EMOVIT_YUNET_URL", "http://127.0.0.1:9/unreachable")
    assert create_detector("auto").name == "yunet"


def test_saved_image_names_never_collide_and_fit_the_file_system() -> None:
    from emovit.cli.predict import _OutputNames

    names = _OutputNames()
    sources = ("x/a_1.jpg", "y/a.jpg", "z/a.jpg", "w/A.png", "<bytes 0>", "v/Photo.jpg", "u/photo.jpg")
    stems = [names.next(source) for source in sources]
    assert stems == ["a_1", "a", "a_2", "A_3", "image", "Photo", "photo_1"]  # case-blind file systems too
    assert len(names.next("k" * 240 + ".jpg")) == _OutputNames.MAX_STEM_BYTES
    wide = names.next("顔" * 80 + ".jpg")  # 3 bytes a character: cut at a character boundary
    assert wide == "顔" * 50 and len(wide.encode()) == 150


def test_cli_keeps_every_row_when_images_cannot_be_saved(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long file name saves under a shortened stem; an image that cannot be written loses
    that image, with a warning and exit 1, never the results file. A folder that cannot be
    made is refused before the model runs (it was found at the first image)."""
    from click.testing import CliRunner

    from emovit.cli import main
    from emovit.results import ImageResult

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("k" * 240 + ".png", "b.png"):
        Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photos / name)
    out = tmp_path / "rows.jsonl"
    base = ["predict", str(photos), "--model", str(tiny_model_dir), "--detector", "none", "--format", "jsonl"]
    result = CliRunner().invoke(main, [*base, "-o", str(out), "--save-crops", str(tmp_path / "crops")])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2 and len(list((tmp_path / "crops").iterdir())) == 2
    blocked = tmp_path / "a file"
    blocked.write_text("")
    for flag in ("--save-annotated", "--save-crops", "--explain", "--plot"):
        result = CliRunner().invoke(
            main, [*base, "-o", str(tmp_path / "r.jsonl"), flag, str(blocked / "sub")]
        )
        assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output, result.output
        assert "the folder cannot be written" in result.output and not (tmp_path / "r.jsonl").exists()
    real = ImageResult.save

    def full_disk_on_b(self: ImageResult, path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(str(self.source)).name == "b.png":
            raise OSError(28, "No space left on device")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(ImageResult, "save", full_disk_on_b)
    result = CliRunner().invoke(main, [*base, "-o", str(out), "--save-annotated", str(tmp_path / "ann")])
    assert result.exit_code == 1
    assert len(out.read_text().splitlines()) == 2  # both rows, whatever failed after them
    assert "b.png: its images could not be saved" in result.output
    assert len(list((tmp_path / "ann").iterdir())) == 1


def test_cli_saves_annotated_images_and_crops(yunet_path: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    images, _ = _composites(n_images=1, per_image=3)
    photo = tmp_path / "group photo.png"
    Image.fromarray(images[0]).save(photo)
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "predict", str(photo), "--model", str(tiny_model_dir),
         "--detector-model", str(yunet_path), "--format", "csv", "--save-annotated", str(tmp_path / "ann"),
         "--save-crops", str(tmp_path / "crops")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(proc.stdout.splitlines()))
    assert len(rows) == len(list((tmp_path / "crops").iterdir())) >= 2
    assert [r["face"] for r in rows] == [str(i) for i in range(len(rows))]  # face index column
    annotated = np.asarray(Image.open(tmp_path / "ann" / "group photo.annotated.jpg"))
    assert annotated.shape == images[0].shape
    assert np.abs(annotated.astype(int) - images[0]).mean() > 0.5  # boxes were drawn


def test_saved_images_never_replace_the_inputs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The annotated image took the photo's own name: `--save-annotated` into the photos'
    folder replaced the originals. It is now `<stem>.annotated.jpg`, and no output is written
    over an input of the run."""
    folder = tmp_path / "photos"
    folder.mkdir()
    pixels = np.full((40, 40, 3), 120, np.uint8)
    Image.fromarray(pixels).save(folder / "a.jpg")
    Image.fromarray(pixels).save(folder / "b.jpg")
    Image.fromarray(pixels).save(folder / "b.annotated.jpg")  # an input with an output's name
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "predict", str(folder), "--model", str(tiny_model_dir),
         "--detector", "none", "--format", "csv", "--save-annotated", str(folder)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # b's annotated image was not written
    assert "is one of the inputs: it is not replaced" in proc.stderr
    assert all((folder / name).read_bytes() == data for name, data in before.items())
    assert (folder / "a.annotated.jpg").is_file()


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"max_faces": 2.5}, "max_faces"),
        ({"max_faces": True}, "max_faces"),
        ({"margin": float("nan")}, "margin"),
        ({"margin": float("inf")}, "margin"),
        ({"margin": "a"}, "margin"),
        ({"min_face": 1.5}, "min_face"),
        ({"align": "yes"}, "align"),
        ({"grey": 1}, "grey"),
        ({"det_threshold": 2}, "det_threshold"),
        ({"detect_max_side": 10}, "detect_max_side"),
    ],
)
def test_face_options_refuse_values_that_would_drop_or_fail_every_face(options: dict, option: str) -> None:
    """max_faces=2.5 kept no face at all (silently), a NaN margin failed every crop: such values
    are refused when the options are built, naming the option."""
    from emovit.errors import OptionError

    with pytest.raises(OptionError) as raised:
        FaceOptions(**options)
    assert raised.value.option == option


def test_face_options_take_numpy_scalars() -> None:
    options = FaceOptions(max_faces=np.int64(2), margin=np.float32(0.1), align=np.bool_(True))
    assert options.max_faces == 2 and options.align
