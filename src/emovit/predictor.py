"""The pipeline: decode → faces → preprocess → backend → postprocess → results.

`EmotionRecognizer` is the only place that knows the order of the stages; every door (the
CLI, the server, evaluation, video, Ray) goes through it. Each stage runs per input inside
its own guard: an input that fails at any stage becomes an error row naming the input, the
stage and the reason (``error``, ``error_code``, ``error_stage``), and never touches the
others. A model batch that fails is retried image by image so that only the culprit fails.

Two entry points serve every door:

* `stream` / `predict`: inputs in, results out, batch by batch (the next batch is decoded
  and preprocessed in a thread while the current one is in the model);
* `prepare` + `infer`: the same two halves, for doors that gather the model stage of
  several callers into one batch (the HTTP server's micro-batching).

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
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emovit.errors import InputError, NoFaceError, OptionError
from emovit.faces import FaceOptions
from emovit.imageio import DEFAULT_MAX_PIXELS, describe_source, load_image
from emovit.postprocess import TtaMode, softmax, to_result_order, tta_probabilities
from emovit.results import FaceResult, ImageResult

if TYPE_CHECKING:
    from pathlib import Path

    from emovit.backends import Backend
    from emovit.faces import Detection, DetectorName, FaceDetector
    from emovit.imageio import ImageSource
    from emovit.models import LoadedModel

__all__ = ["BackendName", "EmotionRecognizer", "ErrorPolicy", "PreparedBatch", "Precision"]

ErrorPolicy = Literal["collect", "raise", "include"]
BackendName = Literal["auto", "torch", "onnx"]
Precision = Literal["fp32", "bf16"]
_SINGLE = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)


def _is_single(inputs: Any) -> bool:
    if isinstance(inputs, _SINGLE):
        return True
    from PIL import Image

    return isinstance(inputs, Image.Image) or hasattr(inputs, "read")


def _check_errors(errors: str) -> bool:
    """True when errors are raised; ``include`` is the old name of ``collect``."""
    if errors not in ("collect", "include", "raise"):
        raise OptionError(f"errors must be 'collect' or 'raise', got {errors!r}", option="errors")
    return errors == "raise"


@dataclass
class _Face:
    """One face on its way through the pipeline: whose it is, where it is, its crop."""

    result: ImageResult
    detection: Detection
    crop: np.ndarray


@dataclass
class PreparedBatch:
    """A batch ready for the model: the results (faces still empty, failed inputs already
    marked), the faces with their crops, and the model input (one row per face)."""

    results: list[ImageResult]
    faces: list[_Face] = field(default_factory=list)
    pixel_values: np.ndarray | None = None
    keep_pixels: bool = False


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
        raise OptionError(f"backend must be auto, torch or onnx, got {name!r}", option="backend")
    if name == "onnx" and precision != "fp32":
        raise OptionError(
            f"precision {precision} is for the torch backend; the onnx one runs the model file as is",
            option="precision",
        )
    auto_onnx = name == "auto" and _auto_picks_onnx(model.path, model.device == "cpu", precision)
    if name == "onnx" or auto_onnx or model.model is None:
        if not (model.path / ONNX_FILE).is_file():
            raise ModelLoadError(f"{model.path}: no {ONNX_FILE} for the onnx backend (see `emovit export`)")
        return OnnxBackend(model.path, threads=threads)
    try:
        return TorchBackend(model, precision=precision)  # type: ignore[arg-type]
    except ValueError as exc:  # bf16 on a CPU without native bf16, unknown precision
        raise OptionError(str(exc), option="precision") from None


class EmotionRecognizer:
    """Tells the emotion of every face in each image.

    Each image goes through face detection first (`FaceOptions`: ``auto`` by default,
    ``yunet``, ``haar`` or ``none`` for pre-cropped faces); every face found is cropped the
    way the model was trained (its recorded framing, unless `faces` overrides it) and
    classified, and all faces of a batch of images go through the model together.

    Args:
        model: a loaded checkpoint (`emovit.models.load_model`).
        faces: the face stage's options (`FaceOptions`); default ``FaceOptions()``.
        batch_size: images per batch.
        threads: torch / onnxruntime intra-op threads (default: the physical cores).
        max_pixels: refuse larger images undecoded (decompression bombs).
        backend: ``auto`` (onnxruntime when the folder has ``model.onnx``, else torch),
            ``torch``, ``onnx``, or a backend object.
        precision: ``fp32`` (default) or ``bf16`` (torch autocast, opt-in: on a GPU or a CPU
            with native bf16 only; answers may differ slightly from fp32).
        tta: test-time augmentation: ``none`` (default) or ``flip`` (the mean over each face
            and its mirror image; twice the model work).
        prefetch: batches prepared ahead in a thread while the model runs (0: none).
        decode_threads: threads decoding the images of a batch.

    Examples:
        >>> rec = EmotionRecognizer.from_pretrained("default")  # doctest: +SKIP
        >>> [r.label for r in rec.predict(["a.jpg", "b.png"])]  # doctest: +SKIP
        ['happy', 'neutral']
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        faces: FaceOptions | None = None,
        batch_size: int = 16,
        threads: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        backend: BackendName | Backend = "auto",
        precision: Precision = "fp32",
        tta: TtaMode = "none",
        prefetch: int = 1,
        decode_threads: int = 2,
    ) -> None:
        if batch_size < 1:
            raise OptionError(f"batch_size must be at least 1, got {batch_size}", option="batch_size")
        if prefetch < 0:
            raise OptionError(f"prefetch must be 0 or more, got {prefetch}", option="prefetch")
        if tta not in ("none", "flip"):
            raise OptionError(f"tta must be 'none' or 'flip', got {tta!r}", option="tta")
        if threads is not None:
            if threads < 1:
                raise OptionError(f"threads must be at least 1, got {threads}", option="threads")
            import torch

            torch.set_num_threads(threads)
        self.model = model
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.tta: TtaMode = tta
        self.prefetch = prefetch
        self.backend: Backend = (
            _create_backend(backend, model, threads, precision) if isinstance(backend, str) else backend
        )
        self._order = model.label_map.order
        self._labels = model.label_map.ordered_names
        self.faces = self._resolve_faces(faces or FaceOptions())
        self.detector: FaceDetector = self._create_detector(self.faces)
        self._decode_pool = (
            ThreadPoolExecutor(decode_threads, "emovit-decode") if decode_threads > 1 else None
        )

    def _resolve_faces(self, options: FaceOptions) -> FaceOptions:
        """Fill margin, align and grey from the model's recorded framing where not given."""
        framing = self.model.framing
        return options.replace(
            margin=options.margin if options.margin is not None else framing.face_margin,
            align=options.align if options.align is not None else framing.face_align,
            grey=options.grey if options.grey is not None else framing.grey,
        )

    @staticmethod
    def _create_detector(options: FaceOptions) -> FaceDetector:
        if not isinstance(options.detector, str):
            return options.detector
        from emovit.faces import create_detector

        return create_detector(
            options.detector, model_path=options.detector_model, score_threshold=options.det_threshold
        )

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] = "default",
        *,
        faces: FaceOptions | None = None,
        detector: DetectorName | FaceDetector | None = None,
        device: str = "auto",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        **options: Any,
    ) -> EmotionRecognizer:
        """Load `model` (Hub id, local folder or registry name) and build a recognizer.

        `detector` is a shortcut for ``faces=FaceOptions(detector=...)``; `options` are the
        constructor's (``batch_size``, ``backend``, ``tta``, …)."""
        from emovit.models import load_model, resolve_device, resolve_model

        if detector is not None:
            faces = (faces or FaceOptions()).replace(detector=detector)
        folder = resolve_model(
            model, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        backend = options.get("backend", "auto")
        on_cpu = resolve_device(device) == "cpu"
        precision = options.get("precision", "fp32")
        wants_onnx = backend == "onnx" or (backend == "auto" and _auto_picks_onnx(folder, on_cpu, precision))
        loaded = load_model(folder, device=device, load_weights=not wants_onnx)
        loaded.name = os.fspath(model)
        return cls(loaded, faces=faces, **options)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels results report, in their fixed order."""
        return self._labels

    # ------------------------------------------------------------------ whole pipeline

    def predict(
        self,
        inputs: ImageSource | Iterable[ImageSource],
        *,
        batch_size: int | None = None,
        errors: ErrorPolicy = "collect",
        keep_pixels: bool = False,
    ) -> list[ImageResult]:
        """Classify one input or many; always returns a list, one result per input, in order.

        Args:
            inputs: one input or an iterable of inputs (paths, bytes, file objects, PIL
                images, RGB uint8 arrays).
            batch_size: overrides the recognizer's batch size.
            errors: ``collect`` (default) turns an input that fails at any stage into a result
                with ``error``, ``error_code`` and ``error_stage`` set and goes on; ``raise``
                raises its `InputError` (`ImageError` for decoding).
            keep_pixels: keep the decoded image and face crops on the results (for
                `ImageResult.plot` / `save` without re-decoding; costs memory).
        """
        return list(self.stream(inputs, batch_size=batch_size, errors=errors, keep_pixels=keep_pixels))

    def stream(
        self,
        inputs: ImageSource | Iterable[ImageSource],
        *,
        batch_size: int | None = None,
        errors: ErrorPolicy = "collect",
        keep_pixels: bool = False,
    ) -> Iterator[ImageResult]:
        """Like `predict`, but yields results batch by batch (for long inputs and video)."""
        _check_errors(errors)
        size = batch_size or self.batch_size
        items: Iterable[Any] = [inputs] if _is_single(inputs) else inputs
        numbered = enumerate(items)
        chunks = iter(lambda: list(islice(numbered, size)), [])
        if self.prefetch == 0:
            for chunk in chunks:
                yield from self.infer([self._prepare(chunk, errors, keep_pixels)], errors=errors)[0]
            return
        # Batch N+1 is decoded and preprocessed in a thread while batch N is in the model;
        # at most `prefetch` batches wait, so memory stays flat however long the input is.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emovit-prefetch") as pool:
            pending: deque[Future[PreparedBatch]] = deque()
            for chunk in chunks:
                pending.append(pool.submit(self._prepare, chunk, errors, keep_pixels))
                if len(pending) > self.prefetch:
                    yield from self.infer([pending.popleft().result()], errors=errors)[0]
            while pending:
                yield from self.infer([pending.popleft().result()], errors=errors)[0]

    # ------------------------------------------------------------------ the two halves

    def prepare(
        self,
        inputs: Sequence[ImageSource],
        *,
        errors: ErrorPolicy = "collect",
        faces: FaceOptions | None = None,
        max_pixels: int | None = None,
        names: Sequence[str] | None = None,
        keep_pixels: bool = False,
    ) -> PreparedBatch:
        """The first half of `predict` for one batch: decode, detect, crop and preprocess.

        `faces` and `max_pixels` override the recognizer's for this call (margin, align and
        grey left unset still follow the model's framing); `names` name the inputs in
        results and errors (default: paths, or ``<bytes #i>``). `infer` finishes the batch."""
        _check_errors(errors)
        options = self._resolve_faces(faces) if faces is not None else None
        detector = self._create_detector(options) if options is not None else None
        chunk = list(enumerate(inputs))
        return self._prepare(chunk, errors, keep_pixels, options, detector, max_pixels, names)

    def infer(
        self, batches: Sequence[PreparedBatch], *, errors: ErrorPolicy = "collect"
    ) -> list[list[ImageResult]]:
        """The second half: run the model once over the faces of all `batches`, attach one
        `FaceResult` per face, and return each batch's results.

        A model call that fails is retried image by image; an image whose faces still fail
        gets an error row (``model_failed``) and the others their answers."""
        raise_errors = _check_errors(errors)
        faces = [face for batch in batches for face in batch.faces]
        arrays = [batch.pixel_values for batch in batches if batch.pixel_values is not None]
        if faces and arrays:
            start = time.perf_counter()
            pixels = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            try:
                probs = self.probabilities(pixels)
            except Exception:  # noqa: BLE001 - retried input by input below
                probs = self._retry_by_image(faces, pixels, raise_errors)
            share = (time.perf_counter() - start) * 1e3 / len(faces)
            for face, row in zip(faces, probs, strict=True):
                result = face.result
                result.timings["inference"] = result.timings.get("inference", 0.0) + share
                if result.ok and not np.isnan(row).any():
                    result.faces.append(self._face_result(face, row, any(b.keep_pixels for b in batches)))
        return [batch.results for batch in batches]

    def probabilities(self, pixel_values: np.ndarray) -> np.ndarray:
        """Run the model on preprocessed faces: probabilities in `labels` order (with the
        recognizer's test-time augmentation)."""
        return tta_probabilities(self._probabilities_once, pixel_values, self.tta)

    def _probabilities_once(self, pixel_values: np.ndarray) -> np.ndarray:
        return to_result_order(softmax(self.backend(pixel_values)), self._order)

    def classify_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (``N x len(labels)``, in `labels` order) for RGB uint8 face crops
        (no detection: each array is one face, used as it is)."""
        return self.probabilities(self.model.preprocessor(list(images)))

    # ------------------------------------------------------------------ stages

    def _retry_by_image(self, faces: list[_Face], pixels: np.ndarray, raise_errors: bool) -> np.ndarray:
        """Probabilities face group by face group (one image's faces together); the rows of
        an image whose model call fails are NaN and the image is marked failed."""
        probs = np.full((len(faces), len(self._labels)), np.nan)
        groups: dict[int, list[int]] = {}
        for row, face in enumerate(faces):
            groups.setdefault(id(face.result), []).append(row)
        for rows in groups.values():
            result = faces[rows[0]].result
            try:
                probs[rows] = self.probabilities(pixels[rows])
            except Exception as exc:
                error = InputError(result.source, f"the model failed on this image ({exc})", "model_failed")
                if raise_errors:
                    raise error from exc
                result.fail(error)
        return probs

    def _face_result(self, face: _Face, row: np.ndarray, keep_pixels: bool) -> FaceResult:
        det = face.detection
        return FaceResult(
            probs=dict(zip(self._labels, row.tolist(), strict=True)),
            box=tuple(round(v) for v in det.box),  # type: ignore[arg-type]
            landmarks=[(float(x), float(y)) for x, y in det.landmarks] if det.landmarks is not None else None,
            detection_score=det.score,
            crop=face.crop if keep_pixels else None,
        )

    def _decode(
        self, index: int, source: Any, raise_errors: bool, max_pixels: int | None, name: str | None
    ) -> tuple[ImageResult, np.ndarray | None]:
        name = name or describe_source(source, index)
        start = time.perf_counter()
        try:
            image = load_image(source, name=name, max_pixels=max_pixels or self.max_pixels)
        except InputError as exc:
            if raise_errors:
                raise
            return ImageResult(source=name).fail(exc), None
        except Exception as exc:
            error = InputError(
                name, f"cannot decode ({type(exc).__name__}: {exc})", "corrupt_image", "decode"
            )
            if raise_errors:
                raise error from exc
            return ImageResult(source=name).fail(error), None
        result = ImageResult(source=name, image_size=(image.shape[1], image.shape[0]))
        result.timings["decode"] = (time.perf_counter() - start) * 1e3
        return result, image

    def _detect(self, image: np.ndarray, options: FaceOptions, detector: FaceDetector) -> list[Detection]:
        found = detector.detect(image)
        detections = [d for d in found if d.whole_image or min(d.width, d.height) >= options.min_face]
        detections.sort(key=lambda d: d.width * d.height, reverse=True)
        if options.max_faces is not None:
            detections = detections[: options.max_faces]
        if not detections and options.no_face == "whole":
            from emovit.faces import WholeImageDetector

            detections = WholeImageDetector().detect(image)
        return detections

    def _crop(self, image: np.ndarray, det: Detection, options: FaceOptions) -> np.ndarray:
        from emovit.faces import crop_face, to_grey

        if det.whole_image:
            crop = image
        else:
            crop = crop_face(
                image, det, margin=options.margin or 0.0, align=bool(options.align), border=options.border
            )
        return to_grey(crop) if options.grey else crop

    def _faces_of(
        self,
        result: ImageResult,
        image: np.ndarray,
        options: FaceOptions,
        detector: FaceDetector,
        raise_errors: bool,
    ) -> list[_Face]:
        """Detect and crop the faces of one decoded image (an error row on failure)."""
        start = time.perf_counter()
        stage, code = "detect", "detector_failed"
        try:
            detections = self._detect(image, options, detector)
            if not detections and options.no_face == "raise":
                raise NoFaceError(f"{result.source}: no face found")
            stage, code = "crop", "crop_failed"
            faces = [_Face(result, det, self._crop(image, det, options)) for det in detections]
        except NoFaceError as exc:
            if raise_errors:
                raise
            result.fail(InputError(result.source, "no face found", "no_face", "detect"))
            del exc
            return []
        except Exception as exc:
            what = "face detection" if stage == "detect" else "cropping a face"
            error = InputError(result.source, f"{what} failed ({type(exc).__name__}: {exc})", code, stage)  # type: ignore[arg-type]
            if raise_errors:
                raise error from exc
            result.fail(error)
            return []
        result.timings["detect"] = (time.perf_counter() - start) * 1e3
        return faces

    def _preprocess(self, faces: list[_Face], raise_errors: bool) -> tuple[list[_Face], np.ndarray | None]:
        """Model input for `faces` in one vectorised call; when that fails, image by image,
        and an image whose faces cannot be preprocessed gets an error row."""
        if not faces:
            return faces, None
        start = time.perf_counter()
        try:
            pixels = self.model.preprocessor([face.crop for face in faces])
            kept = faces
        except Exception:  # noqa: BLE001 - find the culprit below
            kept, parts = [], []
            groups: dict[int, list[_Face]] = {}
            for face in faces:
                groups.setdefault(id(face.result), []).append(face)
            for group in groups.values():
                try:
                    parts.append(self.model.preprocessor([face.crop for face in group]))
                    kept += group
                except Exception as exc:
                    source = group[0].result.source
                    error = InputError(
                        source, f"preprocessing failed ({exc})", "preprocess_failed", "preprocess"
                    )
                    if raise_errors:
                        raise error from exc
                    group[0].result.fail(error)
            pixels = np.concatenate(parts) if parts else None
        if kept:
            share = (time.perf_counter() - start) * 1e3 / len(kept)
            for face in kept:  # an image with k faces gets k shares of the batch's time
                face.result.timings["preprocess"] = face.result.timings.get("preprocess", 0.0) + share
        return kept, pixels

    def _prepare(
        self,
        chunk: Sequence[tuple[int, Any]],
        errors: ErrorPolicy,
        keep_pixels: bool,
        options: FaceOptions | None = None,
        detector: FaceDetector | None = None,
        max_pixels: int | None = None,
        names: Sequence[str] | None = None,
    ) -> PreparedBatch:
        """Decode, detect, crop and preprocess one batch (runs in the prefetch thread)."""
        raise_errors = errors == "raise"
        options = options or self.faces
        detector = detector or self.detector

        def decode(position: int) -> tuple[ImageResult, np.ndarray | None]:
            index, source = chunk[position]
            name = names[position] if names is not None else None
            return self._decode(index, source, raise_errors, max_pixels, name)

        positions = range(len(chunk))
        if self._decode_pool is not None and len(chunk) > 1:
            decoded = list(self._decode_pool.map(decode, positions))
        else:
            decoded = [decode(p) for p in positions]
        faces: list[_Face] = []
        for result, image in decoded:
            if image is None:
                continue
            faces += self._faces_of(result, image, options, detector, raise_errors)
            if keep_pixels:
                result.image = image
        faces, pixels = self._preprocess(faces, raise_errors)
        return PreparedBatch([r for r, _ in decoded], faces, pixels, keep_pixels)

    def __repr__(self) -> str:
        model, device = self.model.name, self.model.device
        return f"EmotionRecognizer(model={model!r}, device={device!r}, labels={self._labels})"
