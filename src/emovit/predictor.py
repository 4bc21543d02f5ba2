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
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emovit.errors import ImageError
from emovit.imageio import DEFAULT_MAX_PIXELS, describe_source, load_image
from emovit.results import FaceResult, ImageResult

if TYPE_CHECKING:
    from pathlib import Path

    from emovit.backends import Backend
    from emovit.faces import BorderMode, Detection, DetectorName, FaceDetector
    from emovit.imageio import ImageSource
    from emovit.models import LoadedModel

__all__ = ["EmotionRecognizer", "ErrorPolicy", "NoFacePolicy", "PreparedBatch"]

ErrorPolicy = Literal["include", "raise"]
BackendName = Literal["auto", "torch", "onnx"]
NoFacePolicy = Literal["skip", "whole"]
_SINGLE = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)


def _is_single(inputs: Any) -> bool:
    if isinstance(inputs, _SINGLE):
        return True
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return False
    return isinstance(inputs, Image.Image) or hasattr(inputs, "read")


@dataclass
class PreparedBatch:
    """A batch ready for the model: its results (faces still empty), the face crops (kept
    only on request), which result and detection each face belongs to, and the model input."""

    results: list[ImageResult]
    crops: list[np.ndarray]
    owners: list[tuple[ImageResult, Detection]]
    pixel_values: np.ndarray | None


def _onnxruntime_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _auto_picks_onnx(folder: Path, on_cpu: bool, precision: str = "fp32") -> bool:
    """What ``backend="auto"`` chooses on a folder: onnxruntime on CPU when the folder has
    ``model.onnx`` and onnxruntime is installed (or there are no torch weights), else torch;
    always torch for bf16 (onnxruntime runs the model file as it is)."""
    from emovit.backends import ONNX_FILE

    if not (on_cpu and precision == "fp32" and (folder / ONNX_FILE).is_file()):
        return False
    return _onnxruntime_installed() or not any(folder.glob("*.safetensors"))


def _create_backend(name: str, model: LoadedModel, threads: int | None, precision: str = "fp32") -> Backend:
    """``auto``: onnxruntime when the folder has ``model.onnx`` and onnxruntime is installed
    (faster on CPU), else torch; torch whenever ``precision`` is bf16."""
    from emovit.backends import ONNX_FILE, OnnxBackend, TorchBackend
    from emovit.errors import ModelLoadError

    if name not in ("auto", "torch", "onnx"):
        raise ValueError(f"backend must be auto, torch or onnx, got {name!r}")
    if name == "onnx" and precision != "fp32":
        raise ValueError(
            f"precision {precision} is for the torch backend; the onnx one runs the model file as is"
        )
    auto_onnx = name == "auto" and _auto_picks_onnx(model.path, model.device == "cpu", precision)
    if name == "onnx" or auto_onnx or model.model is None:
        if not (model.path / ONNX_FILE).is_file():
            raise ModelLoadError(f"{model.path}: no {ONNX_FILE} for the onnx backend (see `emovit export`)")
        return OnnxBackend(model.path, threads=threads)
    return TorchBackend(model, precision=precision)  # type: ignore[arg-type]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class EmotionRecognizer:
    """Tells the emotion of the face in each image.

    Each image goes through face detection first (``detector``: ``yunet`` by default, ``haar``,
    ``auto`` or ``none`` for pre-cropped faces); every face found is cropped and classified,
    and all faces of a batch of images go through the model together.

    Args:
        model: a loaded checkpoint (`emovit.models.load_model`).
        batch_size: images per batch.
        threads: torch intra-op threads (default: torch's own choice, the physical cores).
        max_pixels: refuse larger images undecoded (decompression bombs).
        detector: a detector name or object; ``detector_model`` a local YuNet ONNX file.
        det_threshold: minimum detection score (yunet).
        margin: context around each face box, as a fraction of its larger side.
        align: level the eyes using the detector's landmarks (yunet only).
        border: ``pad`` (replicate edge pixels) or ``clip`` crops at image borders.
        min_face: ignore faces smaller than this many pixels.
        max_faces: keep at most this many faces per image (the largest).
        backend: ``auto`` (onnxruntime when the folder has ``model.onnx``, else torch),
            ``torch``, ``onnx``, or a backend object.
        precision: ``fp32`` (default) or ``bf16`` (torch autocast, opt-in: on a GPU or a CPU
            with native bf16 only; answers may differ slightly from fp32).
        prefetch: batches prepared ahead in a thread while the model runs (0: none).
        decode_threads: threads decoding the images of a batch.
        no_face: ``skip`` (default: the result has no faces, not an error) or ``whole``
            (classify the whole image instead).

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
        backend: BackendName | Backend = "auto",
        detector: DetectorName | FaceDetector = "yunet",
        detector_model: str | os.PathLike[str] | None = None,
        det_threshold: float = 0.5,
        margin: float = 0.2,
        align: bool = True,
        border: BorderMode = "pad",
        min_face: int = 20,
        max_faces: int | None = None,
        no_face: NoFacePolicy = "skip",
        prefetch: int = 1,
        decode_threads: int = 2,
        precision: str = "fp32",
    ) -> None:
        if no_face not in ("skip", "whole"):
            raise ValueError(f"no_face must be 'skip' or 'whole', got {no_face!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be at least 1, got {threads}")
            import torch

            torch.set_num_threads(threads)
        self.model = model
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.backend: Backend = (
            _create_backend(backend, model, threads, precision) if isinstance(backend, str) else backend
        )
        self._order = np.asarray(model.label_map.order)
        self._labels = model.label_map.ordered_names
        if isinstance(detector, str):
            from emovit.faces import create_detector

            detector = create_detector(detector, model_path=detector_model, score_threshold=det_threshold)
        self.detector: FaceDetector = detector
        self.margin, self.align, self.border = margin, align, border
        self.min_face, self.max_faces, self.no_face = min_face, max_faces, no_face
        if prefetch < 0:
            raise ValueError(f"prefetch must be 0 or more, got {prefetch}")
        self.prefetch = prefetch
        self._decode_pool = (
            ThreadPoolExecutor(decode_threads, "emovit-decode") if decode_threads > 1 else None
        )

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
        **options: Any,
    ) -> EmotionRecognizer:
        """Load `model` (Hub id, local folder or registry name) and build a recognizer;
        `options` are those of the constructor (``detector``, ``margin``, ``no_face``, …)."""
        from emovit.models import load_model, resolve_device, resolve_model

        folder = resolve_model(
            model, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        backend = options.get("backend", "auto")
        on_cpu = resolve_device(device) == "cpu"
        precision = options.get("precision", "fp32")
        wants_onnx = backend == "onnx" or (backend == "auto" and _auto_picks_onnx(folder, on_cpu, precision))
        loaded = load_model(folder, device=device, load_weights=not wants_onnx)
        loaded.name = os.fspath(model)
        return cls(loaded, batch_size=batch_size, threads=threads, max_pixels=max_pixels, **options)

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
        keep_pixels: bool = False,
    ) -> list[ImageResult]:
        """Classify one input or many; always returns a list, one result per input, in order.

        Args:
            inputs: one input or an iterable of inputs (paths, bytes, file objects, PIL
                images, RGB uint8 arrays).
            batch_size: overrides the recognizer's batch size.
            errors: ``include`` (default) turns a bad input into a result with ``error`` set
                and goes on; ``raise`` raises its `ImageError`.
            keep_pixels: keep the decoded image and face crops on the results (for
                `ImageResult.plot` / `save` without re-decoding; costs memory).
        """
        return list(self.stream(inputs, batch_size=batch_size, errors=errors, keep_pixels=keep_pixels))

    def stream(
        self,
        inputs: ImageSource | Iterable[ImageSource],
        *,
        batch_size: int | None = None,
        errors: ErrorPolicy = "include",
        keep_pixels: bool = False,
    ) -> Iterator[ImageResult]:
        """Like `predict`, but yields results batch by batch (for long inputs and video)."""
        if errors not in ("include", "raise"):
            raise ValueError(f"errors must be 'include' or 'raise', got {errors!r}")
        size = batch_size or self.batch_size
        items: Iterable[Any] = [inputs] if _is_single(inputs) else inputs
        numbered = enumerate(items)
        chunks = iter(lambda: list(islice(numbered, size)), [])
        if self.prefetch == 0:
            for chunk in chunks:
                yield from self._infer(self._prepare(chunk, errors, keep_pixels))
            return
        # Batch N+1 is decoded and preprocessed in a thread while batch N is in the model;
        # at most `prefetch` batches wait, so memory stays flat however long the input is.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emovit-prefetch") as pool:
            pending: deque[Future[PreparedBatch]] = deque()
            for chunk in chunks:
                pending.append(pool.submit(self._prepare, chunk, errors, keep_pixels))
                if len(pending) > self.prefetch:
                    yield from self._infer(pending.popleft().result())
            while pending:
                yield from self._infer(pending.popleft().result())

    def _decode(
        self, index: int, source: Any, errors: ErrorPolicy, max_pixels: int | None = None
    ) -> tuple[ImageResult, np.ndarray | None]:
        name = describe_source(source, index)
        start = time.perf_counter()
        try:
            image = load_image(source, name=name, max_pixels=max_pixels or self.max_pixels)
        except ImageError as exc:
            if errors == "raise":
                raise
            return ImageResult(source=name, error=str(exc)), None
        result = ImageResult(source=name, image_size=(image.shape[1], image.shape[0]))
        result.timings["decode"] = (time.perf_counter() - start) * 1e3
        return result, image

    def _faces(
        self, image: np.ndarray, detector: FaceDetector | None = None, no_face: NoFacePolicy | None = None
    ) -> list[Detection]:
        found = (detector or self.detector).detect(image)
        detections = [d for d in found if d.whole_image or min(d.width, d.height) >= self.min_face]
        detections.sort(key=lambda d: d.width * d.height, reverse=True)
        if self.max_faces is not None:
            detections = detections[: self.max_faces]
        if not detections and (no_face or self.no_face) == "whole":
            from emovit.faces import WholeImageDetector

            detections = WholeImageDetector().detect(image)
        return detections

    def prepare(
        self,
        inputs: Sequence[ImageSource],
        *,
        errors: ErrorPolicy = "include",
        detector: FaceDetector | None = None,
        no_face: NoFacePolicy | None = None,
        max_pixels: int | None = None,
    ) -> PreparedBatch:
        """The first half of `predict`: decode, detect, crop and preprocess `inputs` (one
        batch). `probabilities` and `attach` finish it; the server batches that part across
        requests. `detector`, `no_face` and `max_pixels` override the recognizer's for this call."""
        return self._prepare(list(enumerate(inputs)), errors, False, detector, no_face, max_pixels)

    def probabilities(self, pixel_values: np.ndarray) -> np.ndarray:
        """Run the model on preprocessed faces: probabilities in `labels` order."""
        return _softmax(self.backend(pixel_values).astype(np.float64))[:, self._order]

    def attach(
        self, prepared: PreparedBatch, probs: np.ndarray | None, inference_ms: float = 0.0
    ) -> list[ImageResult]:
        """Give every face of `prepared` its row of `probs`; returns the batch's results."""
        if probs is not None and prepared.owners:
            share = inference_ms / len(prepared.owners)
            crops = prepared.crops or [None] * len(prepared.owners)
            for (result, det), row, crop in zip(prepared.owners, probs, crops, strict=True):
                result.timings["inference"] = result.timings.get("inference", 0.0) + share
                result.faces.append(
                    FaceResult(
                        probs=dict(zip(self._labels, row.tolist(), strict=True)),
                        box=tuple(round(v) for v in det.box),  # type: ignore[arg-type]
                        landmarks=[(float(x), float(y)) for x, y in det.landmarks]
                        if det.landmarks is not None
                        else None,
                        detection_score=det.score,
                        crop=crop,
                    )
                )
        return prepared.results

    def _prepare(
        self,
        chunk: Sequence[tuple[int, Any]],
        errors: ErrorPolicy,
        keep_pixels: bool,
        detector: FaceDetector | None = None,
        no_face: NoFacePolicy | None = None,
        max_pixels: int | None = None,
    ) -> PreparedBatch:
        """Decode, detect, crop and preprocess one batch (runs in the prefetch thread)."""
        from emovit.faces import crop_face

        if self._decode_pool is not None and len(chunk) > 1:
            decoded = list(
                self._decode_pool.map(lambda item: self._decode(item[0], item[1], errors, max_pixels), chunk)
            )
        else:
            decoded = [self._decode(i, src, errors, max_pixels) for i, src in chunk]
        crops: list[np.ndarray] = []
        owners: list[tuple[ImageResult, Detection]] = []
        for result, image in decoded:
            if image is None:
                continue
            start = time.perf_counter()
            for det in self._faces(image, detector, no_face):
                if det.whole_image:
                    crops.append(image)
                else:
                    crops.append(
                        crop_face(image, det, margin=self.margin, align=self.align, border=self.border)
                    )
                owners.append((result, det))
            result.timings["detect"] = (time.perf_counter() - start) * 1e3
            if keep_pixels:
                result.image = image
        pixel_values = None
        if crops:
            start = time.perf_counter()
            pixel_values = self.model.preprocessor(crops)
            share = (time.perf_counter() - start) * 1e3 / len(crops)
            for result, _ in owners:  # an image with k faces gets k shares of the batch's time
                result.timings["preprocess"] = result.timings.get("preprocess", 0.0) + share
        return PreparedBatch([r for r, _ in decoded], crops if keep_pixels else [], owners, pixel_values)

    def _infer(self, prepared: PreparedBatch) -> list[ImageResult]:
        """Run the model on a prepared batch and attach one `FaceResult` per face."""
        if prepared.pixel_values is None:
            return prepared.results
        start = time.perf_counter()
        probs = self.probabilities(prepared.pixel_values)
        return self.attach(prepared, probs, (time.perf_counter() - start) * 1e3)

    def classify_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (``N x len(labels)``, in `labels` order) for RGB uint8 face crops
        (no detection: each array is one face)."""
        return self.probabilities(self.model.preprocessor(list(images)))

    def __repr__(self) -> str:
        model, device = self.model.name, self.model.device
        return f"EmotionRecognizer(model={model!r}, device={device!r}, labels={self._labels})"
