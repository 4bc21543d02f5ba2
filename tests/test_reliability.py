"""No single input can take down a run: every stage fails per input, with one error shape.

Each case failed before the predictor isolated its stages (the YuNet strip crashed the
whole run; a detector, crop, preprocessing or model error escaped; a FIFO was "empty")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emovit.errors import ERROR_CODES, InputError, NoFaceError
from emovit.faces import Detection, FaceOptions, WholeImageDetector
from emovit.predictor import EmotionRecognizer
from tests.conftest import SHARED, require_shared

YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"


class _Raising:
    """A detector that fails on images of one width and finds the whole image otherwise."""

    name = "raising"

    def __init__(self, bad_width: int) -> None:
        self.bad_width = bad_width

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.shape[1] == self.bad_width:
            raise RuntimeError("detector exploded")
        return WholeImageDetector().detect(image)


def _rec(folder: Path, **faces: object) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(folder, faces=FaceOptions(**faces), backend="torch")  # type: ignore[arg-type]


def _arrays(*widths: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, w, 3), dtype=np.uint8) for w in widths]


def test_a_very_wide_image_does_not_crash_yunet_runs(
    tmp_path: Path, tiny_model_dir: Path, face_jpeg: Path
) -> None:
    pytest.importorskip("cv2")
    require_shared(YUNET)
    wide = tmp_path / "wide.png"
    Image.new("RGB", (2600, 1)).save(wide)
    tall = tmp_path / "tall.png"
    Image.new("RGB", (1, 65535)).save(tall)
    rec = _rec(tiny_model_dir, detector="yunet", detector_model=YUNET)
    results = rec.predict([face_jpeg, wide, tall])
    assert [r.ok for r in results] == [True, True, True]
    assert results[0].faces and not results[1].faces and not results[2].faces


def test_detector_failure_is_one_error_row(tiny_model_dir: Path) -> None:
    rec = _rec(tiny_model_dir, detector=_Raising(bad_width=33))
    results = rec.predict(_arrays(40, 33, 50))
    assert [r.ok for r in results] == [True, False, True]
    bad = results[1]
    assert (bad.error_code, bad.error_stage) == ("detector_failed", "detect")
    assert "<array #1>" in bad.error or "#1" in bad.error
    assert "detector exploded" in bad.error
    with pytest.raises(InputError) as info:
        rec.predict(_arrays(33), errors="raise")
    assert info.value.code == "detector_failed"


def test_crop_failure_is_one_error_row(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import emovit.faces._crop as crop_module

    real = crop_module.crop_face

    def crop(image: np.ndarray, det: Detection, **kw: object) -> np.ndarray:
        if image.shape[1] == 33:
            raise ValueError("bad geometry")
        return real(image, det, **kw)  # type: ignore[arg-type]

    class Boxes:
        name = "boxes"

        def detect(self, image: np.ndarray) -> list[Detection]:
            return [Detection(box=(1.0, 1.0, 30.0, 30.0), score=0.9)]

    monkeypatch.setattr("emovit.faces.crop_face", crop)
    rec = _rec(tiny_model_dir, detector=Boxes())
    results = rec.predict(_arrays(40, 33))
    assert results[0].ok and results[0].faces
    assert (results[1].error_code, results[1].error_stage) == ("crop_failed", "crop")


def test_preprocess_failure_is_isolated(tiny_model_dir: Path) -> None:
    rec = _rec(tiny_model_dir, detector="none")
    real = rec.model.preprocessor

    def preprocess(images: list[np.ndarray]) -> np.ndarray:
        if any(image.shape[1] == 33 for image in images):
            raise ValueError("cannot resize")
        return real(images)

    rec.model.__dict__["preprocessor"] = preprocess
    results = rec.predict(_arrays(40, 33, 50))
    assert [r.ok for r in results] == [True, False, True]
    assert (results[1].error_code, results[1].error_stage) == ("preprocess_failed", "preprocess")


def test_a_processor_without_a_fixed_size_fails_only_the_odd_images(tiny_model_dir: Path) -> None:
    """Inputs of different sizes cannot share a batch: the most common size goes on, each other
    image gets an error row (not one exception for the whole stream)."""
    rec = _rec(tiny_model_dir, detector="none")
    real = rec.model.preprocessor

    def preprocess(images: list[np.ndarray]) -> np.ndarray:
        out = real(images)
        if len(images) > 1:
            raise ValueError("all the input array dimensions must match")
        return out[..., :-2, :-2] if images[0].shape[1] == 33 else out

    rec.model.__dict__["preprocessor"] = preprocess
    results = rec.predict(_arrays(40, 33, 50))
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error_code == "preprocess_failed" and "fixed size" in (results[1].error or "")


def test_a_failing_model_batch_is_retried_image_by_image(tiny_model_dir: Path) -> None:
    rec = _rec(tiny_model_dir, detector="none")
    real = rec.backend
    inputs = _arrays(40, 33, 50, 60)
    poison = rec.model.preprocessor([inputs[1]])[0]

    class Backend:
        name = "flaky"

        def __call__(self, pixels: np.ndarray) -> np.ndarray:
            if any(np.array_equal(row, poison) for row in pixels):
                raise RuntimeError("kernel crashed")
            return real(pixels)

    rec.backend = Backend()  # type: ignore[assignment]
    results = rec.predict(inputs, batch_size=4)
    assert [r.ok for r in results] == [True, False, True, True]
    assert (results[1].error_code, results[1].error_stage) == ("model_failed", "model")
    alone = rec.predict(inputs[:1])[0]
    assert alone.probs == pytest.approx(results[0].probs, abs=1e-6)


def test_no_face_raise(tiny_model_dir: Path) -> None:
    class Nothing:
        name = "nothing"

        def detect(self, image: np.ndarray) -> list[Detection]:
            return []

    rec = _rec(tiny_model_dir, detector=Nothing(), no_face="raise")
    (result,) = rec.predict(_arrays(40))
    assert (result.ok, result.error_code) == (False, "no_face")
    with pytest.raises(NoFaceError):
        rec.predict(_arrays(40), errors="raise")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_a_fifo_is_not_a_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    (result,) = _rec(tiny_model_dir, detector="none").predict([fifo])
    assert result.error_code == "not_a_file"
    assert "empty" not in result.error


def test_every_error_code_is_documented_with_a_stage() -> None:
    stages = {"decode", "detect", "crop", "preprocess", "model", "worker"}
    assert all(stage in stages for stage, _ in ERROR_CODES.values())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [code for code in ERROR_CODES if f"`{code}`" not in readme]
    assert missing == []


def test_error_rows_serialise_code_and_stage(tiny_model_dir: Path, tmp_path: Path) -> None:
    (result,) = _rec(tiny_model_dir, detector="none").predict([tmp_path / "missing.jpg"])
    row = json.loads(result.to_json())
    assert (row["ok"], row["error_code"], row["error_stage"]) == (False, "not_found", "decode")


def test_framing_follows_the_model_unless_overridden(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from emovit.models import Framing, write_framing

    folder = tmp_path / "framed"
    shutil.copytree(tiny_model_dir, folder)
    write_framing(folder, Framing(face_margin=0.05, face_align=False, grey=True))
    rec = _rec(folder, detector="none")
    assert (rec.faces.margin, rec.faces.align, rec.faces.grey) == (0.05, False, True)
    assert _rec(folder, detector="none", margin=0.3).faces.margin == 0.3
    plain = _rec(tiny_model_dir, detector="none")
    assert (plain.faces.margin, plain.faces.align, plain.faces.grey) == (0.2, True, False)
    colour = _arrays(40)[0]
    grey = np.repeat(np.asarray(Image.fromarray(colour).convert("L"))[:, :, None], 3, axis=2)
    assert rec.predict([colour])[0].probs == pytest.approx(plain.predict([grey])[0].probs, abs=1e-6)


def test_real_timings_and_flip_tta(tiny_model_dir: Path) -> None:
    image = _arrays(40)[0]
    rec = _rec(tiny_model_dir, detector="none")
    (result,) = rec.predict([image])
    assert result.timings["inference"] > 0 and result.timings["preprocess"] > 0
    flip = EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none", backend="torch", tta="flip")
    mirrored = rec.predict([np.ascontiguousarray(image[:, ::-1])])[0]
    expected = {k: (result.probs[k] + mirrored.probs[k]) / 2 for k in result.probs}
    assert flip.predict([image])[0].probs == pytest.approx(expected, abs=1e-5)


def test_a_tiff_whose_strip_offset_is_a_rational_is_an_image_error() -> None:
    """Found by fuzzing: Pillow raises TypeError (not OSError) when a TIFF's StripOffsets tag
    holds a RATIONAL; it must come out as the usual corrupt-image error, not a crash."""
    import io
    import struct

    from emovit.errors import ImageError
    from emovit.imageio import load_image

    buffer = io.BytesIO()
    Image.new("L", (4, 4), 7).save(buffer, format="TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets: LONG -> RATIONAL
            struct.pack_into("<HHII", data, entry, 273, 5, 1, 8)
    with pytest.raises(ImageError, match="corrupt or truncated") as caught:
        load_image(bytes(data), name="odd.tif")
    assert caught.value.code == "corrupt_image" and caught.value.source == "odd.tif"
