"""Shared fixtures: tiny random ViTs, the reference architecture from ../shared, test images."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMOVIT_SHARED", REPO.parent / "shared"))
FER2013 = SHARED / "data" / "fer2013"
REFERENCE_FIXTURE = SHARED / "fixtures" / "dima806-facial-emotions"


def require_shared(path: Path) -> Path:
    """Skip (with the reason) when a file from ../shared is missing."""
    if not path.exists():
        pytest.skip(f"{path} is missing: tests read ../shared in place (set EMOVIT_SHARED to move it)")
    return path


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's caches or the network: a private HF cache, offline mode."""
    home = tmp_path_factory.mktemp("home")
    # COLUMNS: a piped table's width (pytest-xdist's workers set it to 80)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "EMOVIT_TOKEN", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EMOVIT_HOME", str(home / "emovit"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ViT (30x30, patch 2, hidden 32) with the reference label order."""
    from emovit.models import build_random_model

    return build_random_model(tmp_path_factory.mktemp("tiny") / "model", "vit-test", seed=0)


@pytest.fixture(scope="session")
def reference_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference architecture (ViT-B/16-224, dima806 config) with random weights."""
    require_shared(REFERENCE_FIXTURE / "config.json")
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    out = tmp_path_factory.mktemp("reference") / "dima806-random"
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig.from_pretrained(REFERENCE_FIXTURE))
    model.save_pretrained(out, safe_serialization=True)
    shutil.copy(REFERENCE_FIXTURE / "preprocessor_config.json", out)
    return out


def _smooth_rgb(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A natural-ish image: gradients plus noise, so resizing really averages pixels."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            127
            + 100
            * np.sin(x / max(width, 1) * rng.uniform(2, 9) + c)
            * np.cos(y / max(height, 1) * rng.uniform(2, 9))
            for c in range(3)
        ],
        axis=-1,
    )
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def make_image_zoo(count: int = 24, seed: int = 0) -> list[Image.Image]:
    """PIL images of many sizes and modes (opaque, so every reader agrees on their RGB)."""
    rng = np.random.default_rng(seed)
    sizes = [(48, 48), (17, 23), (224, 224), (300, 200), (640, 480), (31, 97), (1, 1), (225, 223)]
    modes = ["RGB", "L", "P", "CMYK", "RGBA", "LA", "YCbCr", "1"]
    zoo = []
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        rgb = Image.fromarray(_smooth_rgb(rng, height, width))
        mode = modes[(i * 3) % len(modes)]
        zoo.append(rgb if mode == "RGB" else rgb.convert(mode))
    return zoo


@pytest.fixture
def image_zoo() -> list[Image.Image]:
    return make_image_zoo()


def encode(image: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.fixture
def face_jpeg() -> Path:
    return REPO / "examples" / "astronaut_face.jpg"


def onnx_only_default(folder: Path) -> Path:
    """A copy of the embedded default model in `folder` with its ONNX file and no safetensors
    weights (a model that runs on the onnx backend only)."""
    default = REPO / "src" / "emovit" / "models" / "default"
    folder.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json", "emovit.json", "model.onnx"):
        shutil.copy(default / name, folder / name)
    return folder
