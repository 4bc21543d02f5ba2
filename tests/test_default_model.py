"""The embedded default model (issue: default model): shape, size, loading, parity, quality."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emovit import EMOTIONS, EmotionRecognizer
from emovit.models import resolve_model
from emovit.models._loading import _embedded_folder
from emovit.preprocess import Preprocessor, read_processor_config

from .conftest import FER2013, make_image_zoo, require_shared

DEFAULT = _embedded_folder()
pytestmark = pytest.mark.skipif(
    not (DEFAULT / "config.json").is_file(), reason="the default model is not built (make train-default)"
)


def test_folder_is_a_small_complete_hugging_face_model() -> None:
    assert resolve_model("default") == DEFAULT
    names = {p.name for p in DEFAULT.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in names)
    assert sum(p.stat().st_size for p in DEFAULT.iterdir()) <= 25 * 2**20
    config = json.loads((DEFAULT / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(EMOTIONS)
    assert "emovit_random_weights" not in config and "auto_map" not in config
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(DEFAULT, use_safetensors=True)
    assert model.config.num_labels == 7
    card = (DEFAULT / "README.md").read_text()
    sections = ("## Data and splits", "## Preprocessing", "## Metrics on FER2013 test", "## Intended use")
    assert all(section in card for section in sections)


def test_preprocessing_equals_transformers_for_its_processor_config(tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    config = read_processor_config(DEFAULT)
    processor = AutoImageProcessor.from_pretrained(str(DEFAULT), backend="pil")
    ours = Preprocessor.from_config(config)
    images = make_image_zoo(12, seed=3)
    if FER2013.exists():
        images += [Image.open(p) for p in sorted((FER2013 / "test" / "sad").glob("*.jpg"))[:6]]
    for image in images:
        want = np.asarray(processor(images=image.convert("RGB"), return_tensors="np")["pixel_values"][0])
        got = ours([np.asarray(image.convert("RGB"))])[0]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5, image.size


def test_probabilities_equal_the_transformers_pipeline_on_fer2013() -> None:
    from transformers import pipeline

    faces = sorted(require_shared(FER2013 / "test").rglob("*.jpg"))[::200]
    rec = EmotionRecognizer.from_pretrained("default", detector="none", backend="torch")
    classifier = pipeline("image-classification", model=str(DEFAULT), device="cpu")
    for path, result in zip(faces, rec.predict([str(p) for p in faces]), strict=True):
        theirs = {d["label"]: d["score"] for d in classifier(str(path), top_k=7)}
        assert max(abs(result.probs[k] - theirs[k]) for k in theirs) <= 1e-4, path


def test_it_recognises_fer2013_test_faces_far_above_chance() -> None:
    """A trained model, not random weights: well above the 25 % majority class on a
    stratified slice of the test split (the full figures are in the card's metrics)."""
    test = require_shared(FER2013 / "test")
    faces, truth = [], []
    for folder in sorted(test.iterdir()):
        for path in sorted(folder.glob("*.jpg"))[:40]:
            faces.append(str(path))
            truth.append(folder.name)
    rec = EmotionRecognizer.from_pretrained("default", detector="none")
    predicted = [r.faces[0].label for r in rec.predict(faces, batch_size=64)]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert accuracy >= 0.45, accuracy
    shipped = json.loads((DEFAULT / "metrics.json").read_text())
    assert shipped["plain"]["images"] == 3589
