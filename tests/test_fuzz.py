"""Property-based fuzzing of every stage a user's input reaches: decoding, the detectors and
the whole predictor. Generated images of every mode and size (1 px to extreme aspect
ratios), encoded in every format, then corrupted (bit flips, truncation): whatever comes
in, one row per input and no exception escaping.

The example budget is fixed (``EMOVIT_FUZZ_EXAMPLES``, default 60 per property) and
derandomised in CI, so the suite's time is bounded; raise it locally to fuzz longer.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED, require_shared

hypothesis = pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from emovit.errors import ImageError  # noqa: E402
from emovit.imageio import load_image  # noqa: E402

EXAMPLES = int(os.environ.get("EMOVIT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP")
# Sizes from a single pixel to strips thousands of pixels long.
SIDES = st.one_of(st.integers(1, 8), st.integers(9, 120), st.sampled_from([1, 2, 2600, 4000]))


@st.composite
def images(draw: st.DrawFn) -> Image.Image:
    width, height = draw(SIDES), draw(SIDES)
    if width * height > 4_000_000:
        height = 1
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (height, width)).astype(np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**20), 2**20, (height, width)).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.normal(0, 100, (height, width)).astype(np.float32))
    return rgb.convert(mode)


def _encode(image: Image.Image, fmt: str) -> bytes | None:
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return None  # Pillow cannot write this mode in this format: nothing to fuzz
    return buffer.getvalue()


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    """An image file's bytes, possibly corrupted by bit flips and/or truncation."""
    data = None
    while data is None:
        data = _encode(draw(images()), draw(st.sampled_from(FORMATS)))
    raw = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.integers(0, len(raw) - 1))
        raw[where] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw)


@FUZZ
@given(encoded())
def test_load_image_returns_rgb_or_raises_image_error(data: bytes) -> None:
    try:
        image = load_image(data, max_pixels=5_000_000)
    except ImageError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.code and error.stage == "decode"
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


arrays = st.builds(
    lambda w, h, seed: np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8),
    SIDES,
    SIDES,
    st.integers(0, 2**31 - 1),
).filter(lambda a: a.size <= 12_000_000)


@pytest.fixture(scope="module")
def detectors() -> list:
    pytest.importorskip("cv2", reason="detectors need the faces extra")
    from emovit.faces import HaarDetector, WholeImageDetector, YuNetDetector

    found = [WholeImageDetector(), HaarDetector()]
    if YUNET.is_file():
        found.append(YuNetDetector(YUNET))
    return found


@FUZZ
@given(arrays)
def test_detectors_never_raise_on_any_size(detectors: list, image: np.ndarray) -> None:
    for detector in detectors:
        for det in detector.detect(image):
            assert det.width >= 0 and det.height >= 0


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("cv2", reason="the predictor fuzz uses YuNet")
    require_shared(YUNET)
    from emovit.faces import FaceOptions
    from emovit.models import build_random_model
    from emovit.predictor import EmotionRecognizer

    folder = build_random_model(tmp_path_factory.mktemp("fuzz") / "model", "vit-test", seed=0)
    faces = FaceOptions(detector="yunet", detector_model=YUNET, no_face="whole")
    return EmotionRecognizer.from_pretrained(folder, faces=faces, batch_size=4, max_pixels=5_000_000)


@FUZZ
@given(st.lists(st.one_of(encoded(), arrays), min_size=1, max_size=6))
def test_predictor_gives_one_row_per_input(recognizer, inputs: list) -> None:
    results = recognizer.predict(inputs)
    assert len(results) == len(inputs)
    for result in results:
        if result.ok:
            assert result.faces, "no_face='whole' gives every readable image a face"
            for face in result.faces:
                assert abs(sum(face.probs.values()) - 1) < 1e-4
        else:
            assert result.error and result.error_code and result.error_stage
