"""The pipeline: decode → preprocess → backend → postprocess → results.

`EmotionRecognizer` is the only place that knows the order of the stages; every door (the
CLI, and later the server, video and Ray adapters) goes through it.

Examples:
    >>> rec = EmotionRecognizer.from_pretrained("dima806/facial_emotions_image_detection")  # doctest: +SKIP
    >>> rec.predict(["a.jpg"])[0].label  # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emovit.errors import ImageError
from emovit.imageio import DEFAULT_MAX_PIXELS, describe_source, load_image
from emovit.results import FaceResult, ImageResult

if TYPE_CHECKING:
    from emovit.backends import Backend
    from emovit.imageio import ImageSource
    from emovit.models import LoadedModel

__all__ = ["EmotionRecognizer", "ErrorPolicy"]

ErrorPolicy = Literal["include", "raise"]
_SINGLE = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)


def _is_single(inputs: Any) -> bool:
    if isinstance(inputs, _SINGLE):
        return True
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return False
    return isinstance(inputs, Image.Image) or hasattr(inputs, "read")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class EmotionRecognizer:
    """Tells the emotion of the face in each image.

    Args:
        model: a loaded checkpoint (`emovit.models.load_model`).
        batch_size: images per forward pass.
        threads: torch intra-op threads (default: torch's own choice, the physical cores).
        max_pixels: refuse larger images undecoded (decompression bombs).

    Examples:
        >>> rec = EmotionRecognizer.from_pretrained("default")  # doctest: +SKIP
        >>> [r.label for r in rec.predict(["a.jpg", "b.png"])]  # doctest: +SKIP
        ['happy', 'neutral']
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        batch_size: int = 16,
        threads: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        backend: Backend | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be at least 1, got {threads}")
            import torch

            torch.set_num_threads(threads)
        from emovit.backends import TorchBackend

        self.model = model
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.backend: Backend = backend or TorchBackend(model)
        self._order = np.asarray(model.label_map.order)
        self._labels = model.label_map.ordered_names

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] = "default",
        *,
        device: str = "auto",
        batch_size: int = 16,
        threads: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
    ) -> EmotionRecognizer:
        """Load `model` (Hub id, local folder or registry name) and build a recognizer."""
        from emovit.models import load_model

        loaded = load_model(
            model,
            device=device,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        return cls(loaded, batch_size=batch_size, threads=threads, max_pixels=max_pixels)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels results report, in their fixed order."""
        return self._labels

    def predict(
        self,
        inputs: ImageSource | Iterable[ImageSource],
        *,
        batch_size: int | None = None,
        errors: ErrorPolicy = "include",
    ) -> list[ImageResult]:
        """Classify one input or many; always returns a list, one result per input, in order.

        Args:
            inputs: one input or an iterable of inputs (paths, bytes, file objects, PIL
                images, RGB uint8 arrays).
            batch_size: overrides the recognizer's batch size.
            errors: ``include`` (default) turns a bad input into a result with ``error`` set
                and goes on; ``raise`` raises its `ImageError`.
        """
        return list(self.stream(inputs, batch_size=batch_size, errors=errors))

    def stream(
        self,
        inputs: ImageSource | Iterable[ImageSource],
        *,
        batch_size: int | None = None,
        errors: ErrorPolicy = "include",
    ) -> Iterator[ImageResult]:
        """Like `predict`, but yields results batch by batch (for long inputs and video)."""
        if errors not in ("include", "raise"):
            raise ValueError(f"errors must be 'include' or 'raise', got {errors!r}")
        size = batch_size or self.batch_size
        items: Iterable[Any] = [inputs] if _is_single(inputs) else inputs
        numbered = enumerate(items)
        while chunk := list(islice(numbered, size)):
            yield from self._run_batch(chunk, errors)

    def _decode(self, index: int, source: Any, errors: ErrorPolicy) -> tuple[ImageResult, np.ndarray | None]:
        name = describe_source(source, index)
        start = time.perf_counter()
        try:
            image = load_image(source, name=name, max_pixels=self.max_pixels)
        except ImageError as exc:
            if errors == "raise":
                raise
            return ImageResult(source=name, error=str(exc)), None
        result = ImageResult(source=name, image_size=(image.shape[1], image.shape[0]))
        result.timings["decode"] = (time.perf_counter() - start) * 1e3
        return result, image

    def _run_batch(self, chunk: Sequence[tuple[int, Any]], errors: ErrorPolicy) -> list[ImageResult]:
        decoded = [self._decode(i, src, errors) for i, src in chunk]
        good = [(result, image) for result, image in decoded if image is not None]
        if good:
            probs = self._classify([image for _, image in good], [result for result, _ in good])
            for (result, _), row in zip(good, probs, strict=True):
                result.faces = [FaceResult(probs=dict(zip(self._labels, row.tolist(), strict=True)))]
        return [result for result, _ in decoded]

    def _classify(self, images: Sequence[np.ndarray], results: Sequence[ImageResult]) -> np.ndarray:
        start = time.perf_counter()
        pixel_values = self.model.preprocessor(images)
        mid = time.perf_counter()
        logits = self.backend(pixel_values)
        end = time.perf_counter()
        probs = _softmax(logits.astype(np.float64))[:, self._order]
        share = 1e3 / len(images)
        for result in results:
            result.timings["preprocess"] = (mid - start) * share
            result.timings["inference"] = (end - mid) * share
        return probs

    def classify_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (``N x len(labels)``, in `labels` order) for RGB uint8 arrays."""
        return self._classify(list(images), [ImageResult(source="") for _ in images])

    def __repr__(self) -> str:
        model, device = self.model.name, self.model.device
        return f"EmotionRecognizer(model={model!r}, device={device!r}, labels={self._labels})"
