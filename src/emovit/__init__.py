"""emovit: which emotion each face in a photo, video or camera stream shows.

Importing emovit is cheap and has no side effects: the heavy parts (torch, transformers)
load when first used.

Examples:
    >>> from emovit import EmotionRecognizer
    >>> rec = EmotionRecognizer.from_pretrained("dima806/facial_emotions_image_detection")  # doctest: +SKIP
    >>> rec.predict(["a.jpg"])[0].label  # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from emovit.errors import (
    DependencyError,
    EmovitError,
    ImageError,
    InputError,
    LabelError,
    ModelLoadError,
    NoFaceError,
    OptionError,
)
from emovit.labels import EMOTIONS

if TYPE_CHECKING:
    from emovit.imageio import load_image
    from emovit.models import list_models, load_model
    from emovit.predictor import EmotionRecognizer
    from emovit.results import FaceResult, FrameResult, ImageResult

__version__: str  # read when first asked for (`__getattr__`)

__all__ = [
    "DependencyError",
    "EMOTIONS",
    "EmotionRecognizer",
    "EmovitError",
    "FaceResult",
    "FrameResult",
    "ImageError",
    "ImageResult",
    "InputError",
    "LabelError",
    "ModelLoadError",
    "NoFaceError",
    "OptionError",
    "__version__",
    "list_models",
    "load_image",
    "load_model",
]

_LAZY = {
    "EmotionRecognizer": "emovit.predictor",
    "FaceResult": "emovit.results",
    "FrameResult": "emovit.results",
    "ImageResult": "emovit.results",
    "list_models": "emovit.models",
    "load_image": "emovit.imageio",
    "load_model": "emovit.models",
}


def _version() -> str:
    """The installed distribution's version (importlib.metadata takes about 50 ms to import: it is
    read when first asked for, so that the ``emovit`` command starts sooner)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emovit")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = value = _version()
        return value
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emovit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
