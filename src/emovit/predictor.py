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

`predict_video` runs a video through the same stages: its frames (decoded in a thread by
`emovit.video.VideoReader`) go through faces and preprocess like photos, the faces of several
frames through the model in one batch, and then through the video stages (tracks, smoothing).

Examples:
    >>> rec = EmotionRecognizer.from_pretrained("dima806/facial_emotions_image_detection")  # doctest: +SKIP
    >>> rec.predict(["a.jpg"])[0].label  # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

import functools
import inspect
import io
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from emovit.errors import EmovitError, InputError, NoFaceError, OptionError, check_count
from emovit.faces import FaceOptions, check_detector
from emovit.imageio import DEFAULT_MAX_PIXELS, describe_source, load_image
from emovit.postprocess import TtaMode, softmax, to_result_order, tta_probabilities
from emovit.results import FaceResult, FrameResult, ImageResult

if TYPE_CHECKING:
    from emovit.backends import Backend
    from emovit.explain import Explainer, ExplainMethod
    from emovit.faces import Detection, DetectorName, FaceDetector
    from emovit.imageio import ImageSource
    from emovit.models import LoadedModel
    from emovit.video import DecodedFrame, VideoOptions, VideoPrediction, VideoSummary

__all__ = ["BackendName", "EmotionRecognizer", "ErrorPolicy", "PreparedBatch", "Precision"]

ErrorPolicy = Literal["collect", "raise", "include"]
BackendName = Literal["auto", "torch", "onnx"]
Precision = Literal["fp32", "bf16"]
_SINGLE = (str, bytes, bytearray, memoryview, os.PathLike, np.ndarray)
#: Faces per model call at most (memory: a call holds the activations of all its faces).
_MODEL_CHUNK = 256


def _is_single(inputs: Any) -> bool:
    """One input, not an iterable of them (what is neither, like None or 5, is one input too:
    its error row names it; iterating it was a bare TypeError)."""
    if isinstance(inputs, _SINGLE) or not isinstance(inputs, Iterable):
        return True
    from PIL import Image

    return isinstance(inputs, Image.Image) or hasattr(inputs, "read")


def _snapshot(source: Any) -> Any:
    """An input as it is now: inputs are read a batch (or more, prefetching) ahead of their
    results, and a caller may fill one array or buffer again for its next item (a camera loop
    reading into one frame): mutable arrays and buffers are copied, the rest kept."""
    if isinstance(source, np.ndarray):
        return source.copy()
    if isinstance(source, bytearray | memoryview):
        return bytes(source)
    if hasattr(source, "read") and not isinstance(source, str | bytes | os.PathLike):
        try:  # a generator may close (or reuse) its file once the next item is asked for
            content = source.read()
            data = io.BytesIO(content)
            if not content:  # where it stood: its error row tells an empty file from one read before
                data.seek(source.tell())
        except Exception:  # noqa: BLE001 - read again later, where its failure is an error row
            return source  # (text mode, closed, a pipe that cannot tell)
        name = getattr(source, "name", None)
        if isinstance(name, str) and name:
            data.name = name  # error rows name it as they would have
        return data
    return source


def _check_errors(errors: str) -> bool:
    """True when errors are raised; ``include`` is the old name of ``collect``."""
    if errors not in ("collect", "include", "raise"):
        raise OptionError(f"errors must be 'collect' or 'raise', got {errors!r}", option="errors")
    return errors == "raise"


@dataclass
class _Face:
    """One face on its way through the pipeline: whose it is, where it is, its crop (and the
    face options it was cut with, which place the crop in the image)."""

    result: ImageResult
    detection: Detection
    crop: np.ndarray
    options: FaceOptions | None = None


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


def _export_matches_weights(folder: Path) -> bool:
    """Whether the folder's ``model.onnx`` was exported from the weights beside it (an export
    records their digest; an older export without it is trusted as before). A mismatch (the
    run trained on after its export, or another model's files copied in) is warned about.
    The weights are hashed once per state of the files (size, modification time) and process:
    building a recognizer asks twice."""
    from emovit.backends import EXPORT_INFO

    files = sorted([folder / EXPORT_INFO, *folder.glob("*.safetensors")])
    try:
        stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    except OSError:
        return False
    return _export_matches(str(folder), stamp)


@functools.lru_cache(maxsize=64)
def _export_matches(folder_name: str, stamp: tuple[tuple[str, int, int], ...]) -> bool:
    """`_export_matches_weights` for one state of the folder's files (`stamp`)."""
    from emovit.models import export_matches_weights

    folder = Path(folder_name)
    if export_matches_weights(folder) is not False:  # the same, or an older export (trusted)
        return True
    warnings.warn(
        f"{folder}: its model.onnx was exported from other weights than the ones beside it (export "
        "again: emovit export); running the weights with torch",
        stacklevel=3,
    )
    return False


def auto_picks_onnx(folder: Path, on_cpu: bool, precision: str = "fp32") -> bool:
    """What ``backend="auto"`` chooses on a folder: onnxruntime on CPU when the folder has an
    ``model.onnx`` emovit made (`emovit export` records ``export_info.json``; the embedded
    model's is checked by its release) and onnxruntime is installed, or when there are no torch
    weights; else torch. A third party's ``model.onnx`` beside safetensors weights (perhaps
    stale, quantised or fp16) is not trusted to answer as the weights do. Always torch for bf16
    (onnxruntime runs the model file as it is)."""
    from emovit.backends import EXPORT_INFO, ONNX_FILE
    from emovit.models import DEFAULT_MODEL, resolve_model

    if not (on_cpu and precision == "fp32" and (folder / ONNX_FILE).is_file()):
        return False
    if not any(folder.glob("*.safetensors")):
        return True
    ours = (folder / EXPORT_INFO).is_file()
    if ours and not _export_matches_weights(folder):
        return False
    if not ours:
        try:  # the embedded model (its model.onnx is checked by its release)
            ours = folder.resolve() == resolve_model(DEFAULT_MODEL).resolve()
        except EmovitError:  # an installation without it
            ours = False
    return ours and _onnxruntime_installed()


def _check_options(
    *,
    faces: object = None,
    batch_size: object = 16,
    threads: object = None,
    max_pixels: object = None,
    backend: object = "auto",
    precision: object = "fp32",
    tta: object = "none",
    prefetch: object = 1,
    decode_threads: object = 2,
) -> None:
    """The recognizer's options, checked (an `OptionError` naming the first bad one); an
    unknown keyword is a `TypeError`, as for any call."""
    check_count(batch_size, "batch_size")
    check_count(prefetch, "prefetch", 0)
    check_count(decode_threads, "decode_threads")
    check_count(threads, "threads", optional=True)
    check_count(max_pixels, "max_pixels", optional=True)
    if tta not in ("none", "flip"):
        raise OptionError(f"tta must be 'none' or 'flip', got {tta!r}", option="tta")
    if faces is not None and not isinstance(faces, FaceOptions):
        raise OptionError(f"faces must be a FaceOptions, got {type(faces).__name__}", option="faces")
    if faces is not None:
        check_detector(faces.detector)  # OpenCV missing: said before the weights load
    if isinstance(backend, str) and backend not in ("auto", "torch", "onnx"):
        raise OptionError(f"backend must be auto, torch or onnx, got {backend!r}", option="backend")
    if precision not in ("fp32", "bf16"):
        raise OptionError(f"precision must be fp32 or bf16, got {precision!r}", option="precision")


def _create_backend(name: str, model: LoadedModel, threads: int | None, precision: str = "fp32") -> Backend:
    """``auto``: onnxruntime when the folder has ``model.onnx`` and onnxruntime is installed
    (faster on CPU), else torch; torch whenever ``precision`` is bf16."""
    from emovit.backends import ONNX_FILE, OnnxBackend, TorchBackend
    from emovit.errors import ModelLoadError
    from emovit.models import export_matches_weights

    if name == "onnx" and precision != "fp32":  # the names themselves: `_check_options`
        raise OptionError(
            f"precision {precision} is for the torch backend; the onnx one runs the model file as is",
            option="precision",
        )
    if name == "torch" and model.model is None:
        raise OptionError(
            f"{model.path} has only {ONNX_FILE} (no safetensors weights): the torch backend cannot run it; "
            "use backend onnx or auto",
            option="backend",
        )
    if model.model is None and precision != "fp32":  # auto falls back to onnx: not silently fp32
        raise OptionError(
            f"{model.path} has only {ONNX_FILE} (no safetensors weights): precision {precision} is for "
            "the torch backend; onnxruntime runs the model file as is",
            option="precision",
        )
    auto_onnx = name == "auto" and auto_picks_onnx(model.path, model.device == "cpu", precision)
    if name == "onnx" or auto_onnx or model.model is None:
        if not (model.path / ONNX_FILE).is_file():
            raise ModelLoadError(f"{model.path}: no {ONNX_FILE} for the onnx backend (see `emovit export`)")
        if name == "onnx" and export_matches_weights(model.path) is False:
            raise OptionError(  # asked for by name: a stale export would answer for other weights
                f"{model.path}: its {ONNX_FILE} was exported from other weights than the ones beside it; "
                "export again (emovit export) or use backend torch",
                option="backend",
            )
        if model.device != "cpu":  # onnxruntime runs here on the CPU only: not silently
            raise OptionError(
                f"the onnx backend runs on the CPU; device {model.device!r} needs the torch backend",
                option="device",
            )
        return OnnxBackend(model.path, threads=threads)
    try:
        return TorchBackend(model, precision=precision)  # type: ignore[arg-type]
    except ValueError as exc:  # bf16 on a CPU without native bf16, unknown precision
        raise OptionError(str(exc), option="precision") from None


def _failed_video(label: str, error: InputError) -> FrameResult:
    """The one result of a video that cannot be read (``frame`` None)."""
    result = FrameResult(source=label)
    result.fail(error)
    return result


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
        threads: torch / onnxruntime intra-op threads (default: the physical cores). An
            onnxruntime session keeps its own; torch has one thread count per process, so with
            the torch backend this also sets it for every other recognizer and torch user in
            the process.
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
        if not hasattr(model, "label_map"):  # a name or a folder: "'str' object has no attribute 'path'"
            raise OptionError(
                f"EmotionRecognizer takes a loaded model (emovit.load_model), got {model!r}; for a "
                "registry name, Hub id or folder use EmotionRecognizer.from_pretrained(...)",
                option="model",
            )
        _check_options(
            faces=faces, batch_size=batch_size, threads=threads, max_pixels=max_pixels, backend=backend,
            precision=precision, tta=tta, prefetch=prefetch, decode_threads=decode_threads,
        )  # fmt: skip
        if threads is not None:
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
        self._explainers: dict[str, Explainer] = {}
        self._explain_lock = threading.Lock()
        self._torch_module: Any = None  # an onnx recognizer's torch weights, for explanations

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
        from emovit.faces import ScaledDetector, create_detector

        if not isinstance(options.detector, str):
            return ScaledDetector.wrap(options.detector, options.detect_max_side)
        detector = create_detector(
            options.detector, model_path=options.detector_model, score_threshold=options.det_threshold
        )
        return ScaledDetector.wrap(detector, options.detect_max_side)

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
        unknown = sorted(set(options) - set(inspect.signature(cls.__init__).parameters) - {"model", "self"})
        if unknown:
            raise TypeError(f"from_pretrained() got unexpected keyword arguments: {', '.join(unknown)}")
        _check_options(faces=faces, **options)  # before the weights load
        folder = resolve_model(
            model, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        backend = options.get("backend", "auto")
        on_cpu = resolve_device(device) == "cpu"
        precision = options.get("precision", "fp32")
        wants_onnx = backend == "onnx" or (backend == "auto" and auto_picks_onnx(folder, on_cpu, precision))
        loaded = load_model(folder, device=device, load_weights=not wants_onnx)
        loaded.name = os.fspath(model)
        return cls(loaded, faces=faces, **options)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels results report, in their fixed order."""
        return self._labels

    @property
    def explainable(self) -> bool:
        """Whether `explain` can run: the torch model is in memory, or its weights
        (``*.safetensors``) are in the model folder (an ONNX-only folder is not explained)."""
        return self.model.model is not None or self._has_torch_weights()

    def _has_torch_weights(self) -> bool:
        """``*.safetensors`` in the model folder (False when it cannot be listed)."""
        try:
            return any(self.model.path.glob("*.safetensors"))
        except OSError:
            return False

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
                raises its `InputError` (`ImageError` for decoding), or `NoFaceError` for an
                input without a face under ``no_face="raise"``.
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
        """Like `predict`, but yields results batch by batch (for long inputs and video).
        Its options are checked at the call, before the first result is asked for."""
        _check_errors(errors)
        check_count(batch_size, "batch_size", optional=True)
        return self._stream(inputs, batch_size, errors, keep_pixels)

    def _stream(
        self, inputs: Any, batch_size: int | None, errors: ErrorPolicy, keep_pixels: bool
    ) -> Iterator[ImageResult]:
        for batch in self._prepared(inputs, batch_size, errors, keep_pixels):
            yield from self.infer([batch], errors=errors)[0]

    def _prepared(
        self, inputs: Any, batch_size: int | None, errors: ErrorPolicy, keep_pixels: bool
    ) -> Iterator[PreparedBatch]:
        """The inputs decoded, detected, cropped and preprocessed, batch by batch. An exception
        from the caller's iterable of inputs is raised after the results of every input it
        gave before it (they were lost: the batch under way and the prefetched ones)."""
        size = self.batch_size if batch_size is None else batch_size
        items: Iterable[Any] = [inputs] if _is_single(inputs) else inputs
        numbered = enumerate(items)
        failure: list[Exception] = []

        def read() -> Iterator[list[tuple[int, Any]]]:
            while not failure:
                chunk: list[tuple[int, Any]] = []
                try:
                    for i, x in islice(numbered, size):
                        chunk.append((i, _snapshot(x)))
                except Exception as exc:  # noqa: BLE001 - the caller's; raised once the chunk is done
                    failure.append(exc)
                if chunk:
                    yield chunk
                if len(chunk) < size:
                    return

        if self.prefetch == 0:
            for chunk in read():
                yield self._prepare(chunk, errors, keep_pixels)
        else:
            # Batch N+1 is decoded and preprocessed in a thread while batch N is in the model;
            # at most `prefetch` batches wait, so memory stays flat however long the input is.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emovit-prefetch") as pool:
                pending: deque[Future[PreparedBatch]] = deque()
                for chunk in read():
                    pending.append(pool.submit(self._prepare, chunk, errors, keep_pixels))
                    if len(pending) > self.prefetch:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
        if failure:
            raise failure[0]

    # ------------------------------------------------------------------ video

    def predict_video(
        self,
        source: str | os.PathLike[str] | bytes | Any,
        *,
        fps: float | None = None,
        every: int | None = None,
        start: float | None = None,
        end: float | None = None,
        smooth: float | None = None,
        track_buffer: int | None = None,
        options: VideoOptions | None = None,
        faces: FaceOptions | None = None,
        errors: ErrorPolicy = "collect",
        keep_pixels: bool = False,
        name: str | None = None,
        stop: threading.Event | None = None,
        max_pixels: int | None = None,
        quiet: bool = False,
    ) -> VideoPrediction:
        """Analyse a video: an iterable of `FrameResult`, one per analysed frame, whose
        ``summary()`` gives the video's summary (tracks, dominant emotions, shares).

        Frames are decoded in a thread (a bounded queue: memory stays flat), searched for
        faces on a scaled-down copy (`FaceOptions.detect_max_side`, default 320), and the faces
        of ``batch_frames`` frames go through the model together. Each face gets a
        ``track_id``; its ``probs`` (and ``label``, ``score``) are smoothed over the track's
        recent frames, ``raw_probs`` are the frame's own.

        Args:
            source: a path, an http(s)/rtsp URL, a live camera (``camera://0``), the file's bytes or a
                binary file object.
            fps, every, start, end, smooth, track_buffer: override `options`
                (`emovit.video.VideoOptions`: sampling, tracking and smoothing).
            faces: the face options for this video (default: the recognizer's).
            errors: ``collect`` (default): a video that cannot be read gives one failed
                `FrameResult` (``frame`` None) naming the problem, a frame that fails at a
                stage a failed `FrameResult` and the others go on; ``raise`` raises.
            keep_pixels: keep each frame's RGB image on its result (for annotated video).
            name: how results and errors name the video (default: its path).
            stop: when set, analysis stops after the current batch (a server deadline).
            max_pixels: frames with more pixels fail the video (``too_many_pixels``; default:
                the recognizer's ``max_pixels``).
            quiet: the video's warnings (damage, odd timestamps) go only into its summary,
                never through `warnings.warn` (a server does not log what clients upload).

        Examples:
            >>> run = rec.predict_video("clip.mp4", fps=10, smooth=0.5)  # doctest: +SKIP
            >>> frames = list(run)  # doctest: +SKIP
            >>> run.summary()["tracks"]  # doctest: +SKIP
        """
        from emovit.video import VideoOptions, VideoPrediction, VideoSummary

        raise_errors = _check_errors(errors)
        video = (options or VideoOptions()).replace(
            fps=fps, every=every, start=start, end=end, smooth=smooth, track_buffer=track_buffer
        )
        label = name or describe_source(source)
        summary = VideoSummary(label, self.labels, options=video)
        limit = max_pixels or self.max_pixels
        frames = self._video_frames(
            source, label, video, faces, raise_errors, keep_pixels, stop, summary, limit, quiet
        )
        return VideoPrediction(frames, summary)

    def _video_detector(self, faces: FaceOptions | None) -> tuple[FaceOptions, FaceDetector]:
        """The face options and detector for video frames: detection on a scaled-down copy."""
        from emovit.faces import ScaledDetector
        from emovit.video import VIDEO_DETECT_MAX_SIDE

        if faces is None:
            side = self.faces.detect_max_side or VIDEO_DETECT_MAX_SIDE
            return self.faces, ScaledDetector.wrap(self.detector, side)
        options = self._resolve_faces(faces)
        options = options.replace(detect_max_side=options.detect_max_side or VIDEO_DETECT_MAX_SIDE)
        return options, self._create_detector(options)

    def _video_frames(
        self,
        source: Any,
        label: str,
        video: VideoOptions,
        faces: FaceOptions | None,
        raise_errors: bool,
        keep_pixels: bool,
        stop: threading.Event | None,
        summary: VideoSummary,
        max_pixels: int | None = None,
        quiet: bool = False,
    ) -> Iterator[FrameResult]:
        """Decode → faces → preprocess → model (batches of frames, the next one prepared in a
        thread while this one is in the model) → tracks → smoothing, frame by frame."""
        from emovit.video import STOPPED_NOTE, ProbabilitySmoother, Tracker, open_video

        errors: ErrorPolicy = "raise" if raise_errors else "collect"
        try:
            options, detector = self._video_detector(faces)
            reader = open_video(
                source, options=video, name=label, max_pixels=max_pixels, quiet=quiet, stop=stop
            )
        except InputError as exc:
            if raise_errors:
                raise
            yield _failed_video(label, exc)
            return
        summary.attach(reader)
        tracker, smoother = Tracker(video.track_buffer), ProbabilitySmoother(video.smooth)
        frame_bytes = max(1, reader.info.width * reader.info.height * 3)
        per_batch = max(1, min(video.batch_frames, (64 << 20) // frame_bytes))  # 4K: a few at a time
        # a camera's frames are answered as they come: no batch waits for later frames
        per_batch, ahead = (1, 0) if reader.live else (per_batch, max(1, self.prefetch))
        frames = iter(reader)
        chunks = iter(lambda: list(islice(frames, per_batch)), [])

        def finish(batch: PreparedBatch) -> list[FrameResult]:
            done = self.infer([batch], errors=errors)[0]
            return [self._follow(result, tracker, smoother) for result in done]  # type: ignore[arg-type]

        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="emovit-video") as pool:
                pending: deque[Future[PreparedBatch]] = deque()
                try:
                    for chunk in chunks:
                        pending.append(pool.submit(self._prepare_frames, chunk, label, options, detector,
                                                   raise_errors, keep_pixels))  # fmt: skip
                        if len(pending) > ahead:
                            yield from finish(pending.popleft().result())
                        if stop is not None and stop.is_set():  # not the whole video: the summary says so
                            break
                except InputError as exc:  # the video could not be decoded at all
                    if raise_errors:
                        raise
                    if summary.frames_analysed == 0 and not pending:
                        yield _failed_video(label, exc)
                        return
                if stop is not None and stop.is_set():  # not the whole video: the summary says so
                    summary.stopped = True
                    summary.warnings.append(STOPPED_NOTE)
                while pending:
                    yield from finish(pending.popleft().result())
        finally:
            reader.close()

    def _prepare_frames(
        self,
        chunk: Sequence[DecodedFrame],
        label: str,
        options: FaceOptions,
        detector: FaceDetector,
        raise_errors: bool,
        keep_pixels: bool,
    ) -> PreparedBatch:
        """Faces and model input for a batch of decoded frames (the photo stages, per frame)."""
        results: list[ImageResult] = []
        faces: list[_Face] = []
        for frame in chunk:
            height, width = frame.image.shape[:2]
            result = FrameResult(
                source=label, image_size=(width, height), frame=frame.index, time_s=frame.time_s
            )
            result.timings["decode"] = frame.decode_ms
            faces += self._faces_of(result, frame.image, options, detector, raise_errors)
            if keep_pixels:
                result.image = frame.image
            results.append(result)
        kept, pixels = self._preprocess(faces, raise_errors)
        return PreparedBatch(results, kept, pixels, keep_pixels)

    @staticmethod
    def _follow(result: FrameResult, tracker: Any, smoother: Any) -> FrameResult:
        """Track ids and smoothed probabilities for the faces of one frame (in frame order)."""
        start = time.perf_counter()
        time_s = result.time_s or 0.0
        boxes = [face.box or (0, 0, *(result.image_size or (1, 1))) for face in result.faces]
        ids = tracker.update(boxes, time_s)
        smoother.forget(tracker.removed)
        for face, track_id in zip(result.faces, ids, strict=True):
            labels = list(face.probs)
            raw = np.array([face.probs[label] for label in labels])
            smoothed = smoother.update(track_id, raw, time_s)
            face.track_id, face.raw_probs = track_id, face.probs
            face.probs = dict(zip(labels, smoothed.tolist(), strict=True))
        result.timings["track"] = (time.perf_counter() - start) * 1e3
        return result

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
        stop: threading.Event | None = None,
    ) -> PreparedBatch:
        """The first half of `predict` for one batch: decode, detect, crop and preprocess.

        `faces` and `max_pixels` override the recognizer's for this call (margin, align and
        grey left unset still follow the model's framing); `names` name the inputs in
        results and errors (default: paths, or ``<bytes #i>``); `stop`, once set (the caller
        gave up: a deadline), ends the work before the next image's decoding or detection
        with `concurrent.futures.CancelledError`. `infer` finishes the batch."""
        _check_errors(errors)
        options = self._resolve_faces(faces) if faces is not None else None
        detector = self._create_detector(options) if options is not None else None
        chunk = list(enumerate(inputs))
        return self._prepare(chunk, errors, keep_pixels, options, detector, max_pixels, names, stop)

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
            if len({array.shape[1:] for array in arrays}) == 1:
                groups = [(faces, np.concatenate(arrays) if len(arrays) > 1 else arrays[0])]
            else:  # a processor without a fixed size: batches of other shapes run on their own
                groups = [
                    (b.faces, b.pixel_values) for b in batches if b.pixel_values is not None and b.faces
                ]
            parts = []
            for group_faces, pixels in groups:
                try:
                    parts.append(self.probabilities(pixels))
                except Exception:  # noqa: BLE001 - retried input by input
                    parts.append(self._retry_by_image(group_faces, pixels, raise_errors))
            probs = np.concatenate(parts) if len(parts) > 1 else parts[0]
            share = (time.perf_counter() - start) * 1e3 / len(faces)
            for face, row in zip(faces, probs, strict=True):
                result = face.result
                result.timings["inference"] = result.timings.get("inference", 0.0) + share
                if not result.ok:  # its model call failed (retried alone): the error row says so
                    continue
                if not np.isfinite(row).all():  # NaN/inf from the model itself: not "no face"
                    problem = "the model's output for a face is not a number (NaN or infinite)"
                    error = InputError(result.source, problem, "model_failed")
                    if raise_errors:
                        raise error
                    result.fail(error)
                    continue
                result.faces.append(self._face_result(face, row, any(b.keep_pixels for b in batches)))
        return [batch.results for batch in batches]

    def probabilities(self, pixel_values: np.ndarray) -> np.ndarray:
        """Run the model on preprocessed faces: probabilities in `labels` order (with the
        recognizer's test-time augmentation)."""
        return tta_probabilities(self._probabilities_once, pixel_values, self.tta)

    def _probabilities_once(self, pixel_values: np.ndarray) -> np.ndarray:
        # at most _MODEL_CHUNK faces per model call: a photo of hundreds of faces (or the server's
        # micro-batch of many requests) never needs the activations of all of them at once
        if not len(pixel_values):  # no face: no model call (a backend may refuse an empty batch)
            return np.zeros((0, len(self._order)), dtype=np.float32)
        chunks = [pixel_values[i : i + _MODEL_CHUNK] for i in range(0, len(pixel_values), _MODEL_CHUNK)]
        logits = [self.backend(chunk) for chunk in chunks]
        return to_result_order(softmax(np.concatenate(logits) if len(logits) > 1 else logits[0]), self._order)

    def classify_arrays(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (``N x len(labels)``, in `labels` order) for RGB uint8 face crops
        (no detection: each array is one face, framed already; made grey first when the
        recognizer's framing says so, as `predict` does)."""
        return self.probabilities(
            self.model.preprocessor([self._colour(image, self.faces) for image in images])
        )

    # ------------------------------------------------------------------ explanations

    def explain(
        self,
        inputs: ImageSource | Iterable[ImageSource],
        *,
        method: ExplainMethod = "auto",
        target: str | None = None,
        batch_size: int | None = None,
        errors: ErrorPolicy = "collect",
        keep_pixels: bool = False,
    ) -> list[ImageResult]:
        """Classify like `predict`, and say where on each face the model looked.

        Every face gets an `emovit.results.Explanation` (``FaceResult.explanation``): the map
        at the face crop's size (``crop_map``, 0..1) and in the image (``image_map()``);
        `ImageResult.plot` draws it over the photo, `FaceResult.plot_explanation` over the
        crop (the crops are kept on the faces for it). Probabilities and labels are the same as
        `predict`'s. The maps come from the torch model, also when the recognizer runs
        onnxruntime (its torch weights are then loaded on first use). A face that is not found
        gets no map and no error.

        Args:
            method: ``auto`` (grad-rollout for a ViT, smoothgrad for any other model),
                ``rollout`` (class-agnostic attention rollout), ``grad-rollout``, ``gradcam``
                or ``smoothgrad`` (see `emovit.explain`).
            target: explain this label on every face (default: each face's own label).
            batch_size, errors, keep_pixels: as in `predict`.

        Raises:
            OptionError: an unknown method or target, a method that does not fit the model, or
                a model folder without torch weights (``option`` ``method`` or ``target``).

        Examples:
            >>> result = rec.explain("photo.jpg", target="happy")[0]  # doctest: +SKIP
            >>> result.faces[0].explanation.crop_map.shape  # doctest: +SKIP
            (212, 212)
        """
        return list(
            self.explain_stream(
                inputs, method=method, target=target, batch_size=batch_size, errors=errors,
                keep_pixels=keep_pixels,
            )
        )  # fmt: skip

    def explain_stream(
        self,
        inputs: ImageSource | Iterable[ImageSource],
        *,
        method: ExplainMethod = "auto",
        target: str | None = None,
        batch_size: int | None = None,
        errors: ErrorPolicy = "collect",
        keep_pixels: bool = False,
    ) -> Iterator[ImageResult]:
        """Like `explain`, but yields results batch by batch. The method and target are checked
        (and the torch model loaded) before the first input is read."""
        _check_errors(errors)
        check_count(batch_size, "batch_size", optional=True)  # 0 read no input, for ever
        explainer = self.explainer(method)
        self._target_id(target, explainer)
        for batch in self._prepared(inputs, batch_size, errors, keep_pixels):
            self.infer([batch], errors=errors)
            yield from self._explain_batch(batch, explainer, target, errors == "raise")

    def explain_prepared(
        self,
        batch: PreparedBatch,
        *,
        method: ExplainMethod = "auto",
        target: str | None = None,
        errors: ErrorPolicy = "collect",
    ) -> list[ImageResult]:
        """The explanation step for doors that run `prepare` and `infer` themselves (the
        server): maps for the faces of `batch` once `infer` has classified them; returns the
        batch's results."""
        raise_errors = _check_errors(errors)
        explainer = self.explainer(method)
        self._target_id(target, explainer)
        return self._explain_batch(batch, explainer, target, raise_errors)

    def has_explainer(self, method: ExplainMethod = "auto") -> bool:
        """Whether `explainer` (of `method`) is made already: no weights to load, no wait."""
        return method in self._explainers

    def check_explanation(self, method: ExplainMethod = "auto", target: str | None = None) -> None:
        """Raise the `OptionError` `explain` would raise for `method` and `target` (a method that
        does not fit the model, a target that is not one of its labels), before any input is
        read: a server checks a request with it before decoding and inference."""
        self._target_id(target, self.explainer(method))

    def explainer(self, method: ExplainMethod = "auto") -> Explainer:
        """The `emovit.explain.Explainer` of `method` on this recognizer's torch model (made
        once per method; the torch weights are loaded here when the recognizer runs onnx)."""
        from emovit.explain import Explainer

        with self._explain_lock:
            if method not in self._explainers:
                pre = self.model.preprocessor
                size = getattr(pre, "output_size", None)
                self._explainers[method] = Explainer(
                    self._torch_net(), method, input_size=size, input_range=self._input_range()
                )
            return self._explainers[method]

    def _input_range(self) -> float:
        """How far apart black and white are in the model's input (the mean over channels):
        SmoothGrad's noise is a share of it."""
        pre = self.model.preprocessor
        black, white = (np.full((8, 8, 3), value, np.uint8) for value in (0, 255))
        span = np.asarray(pre([white]), dtype=np.float64) - np.asarray(pre([black]), dtype=np.float64)
        value = float(np.abs(span).mean())
        return value if np.isfinite(value) and value > 0 else 1.0

    def _torch_net(self) -> Any:
        """The torch module in float32: the recognizer's own, or its folder's weights loaded on
        first use (an ONNX folder, or a checkpoint kept in half precision: maps are computed in
        float32)."""
        own = self.model.model
        if own is not None and str(next(own.parameters()).dtype) == "torch.float32":
            return own
        if self._torch_module is None:
            from emovit.backends import ONNX_FILE
            from emovit.models import load_torch_model

            if own is not None and not self._has_torch_weights():
                return own  # built in memory: nothing to load in float32
            if not self.explainable:
                raise OptionError(
                    f"{self.model.path}: explanations need the model's torch weights (*.safetensors); "
                    f"this folder has only {ONNX_FILE}, which runs on the onnx backend but is not explained",
                    option="model",
                )
            self._torch_module = load_torch_model(
                self.model.path, device=self.model.device, float32=True
            ).model
        return self._torch_module

    def _target_id(self, target: str | None, explainer: Explainer) -> int | None:
        """The model's class id of the label `target` (canonical names and aliases allowed)."""
        if target is None:
            return None
        if not explainer.class_specific:
            raise OptionError(
                f"{explainer.method} is class-agnostic: a target needs grad-rollout, gradcam or smoothgrad",
                option="target",
            )
        from emovit.labels import canonical_label

        name = target if target in self._labels or not isinstance(target, str) else canonical_label(target)
        if name not in self._labels:
            raise OptionError(
                f"target must be one of the model's labels ({', '.join(self._labels)}), got {target!r}",
                option="target",
            )
        return self._order[self._labels.index(name)]

    def _explain_batch(
        self, batch: PreparedBatch, explainer: Explainer, target: str | None, raise_errors: bool
    ) -> list[ImageResult]:
        """Attach an `Explanation` to every classified face of `batch`; an image whose maps
        cannot be computed gets an error row (``model_failed``)."""
        from emovit.results import Explanation

        pixels = batch.pixel_values
        target_id = self._target_id(target, explainer)
        groups: dict[int, list[int]] = {}
        for row, face in enumerate(batch.faces):
            groups.setdefault(id(face.result), []).append(row)
        # `infer` appended one FaceResult per face, in the batch's order, to each image it classified
        pairs: list[tuple[int, FaceResult]] = []
        for rows in groups.values():
            result = batch.faces[rows[0]].result
            if result.ok and len(result.faces) >= len(rows):
                pairs += zip(rows, result.faces[-len(rows) :], strict=True)
        if not pairs or pixels is None:
            return batch.results
        start = time.perf_counter()
        own = [self._order[self._labels.index(face_result.label)] for _, face_result in pairs]
        ids = [target_id] * len(pairs) if target_id is not None else own
        maps = self._explanation_maps(explainer, batch, [row for row, _ in pairs], ids, raise_errors)
        share = (time.perf_counter() - start) * 1e3 / len(pairs)
        for (row, face_result), grid, class_id in zip(pairs, maps, ids, strict=True):
            face, result = batch.faces[row], batch.faces[row].result
            result.timings["explain"] = result.timings.get("explain", 0.0) + share
            if grid is None or not result.ok:
                continue
            from emovit.explain import resize_map

            face_result.crop = face.crop
            height, width = face.crop.shape[:2]
            region = getattr(self.model.preprocessor, "input_region", None)
            face_result.explanation = Explanation(
                crop_map=resize_map(grid, (height, width), region(height, width) if region else None),
                method=explainer.method,
                target=self._labels[self._order.index(class_id)] if explainer.class_specific else None,
                layer=explainer.layer,
                matrix=self._crop_matrix(face),
                image_size=result.image_size,
            )
        return batch.results

    def _explanation_maps(
        self, explainer: Explainer, batch: PreparedBatch, rows: list[int], ids: list[int], raise_errors: bool
    ) -> list[np.ndarray | None]:
        """Maps for the faces in `rows`, all at once; when that fails, image by image (an
        image that still fails is marked failed and its faces get None)."""
        assert batch.pixel_values is not None
        pixels = batch.pixel_values
        try:
            return list(explainer(pixels[rows], ids, tta=self.tta))
        except Exception:  # noqa: BLE001 - retried image by image below
            pass
        maps: list[np.ndarray | None] = [None] * len(rows)
        groups: dict[int, list[int]] = {}
        for position, row in enumerate(rows):
            groups.setdefault(id(batch.faces[row].result), []).append(position)
        for positions in groups.values():
            result = batch.faces[rows[positions[0]]].result
            try:
                found = explainer(
                    pixels[[rows[p] for p in positions]], [ids[p] for p in positions], tta=self.tta
                )
            except Exception as exc:
                error = InputError(result.source, f"explaining the model failed ({exc})", "model_failed")
                if raise_errors:
                    raise error from exc
                result.fail(error)
                continue
            for position, grid in zip(positions, found, strict=True):
                maps[position] = grid
        return maps

    @staticmethod
    def _crop_matrix(face: _Face) -> np.ndarray | None:
        """Image pixels → crop pixels for `face` (None: the crop is the whole image)."""
        from emovit.faces import crop_matrix

        if face.detection.whole_image or face.options is None:
            return None
        options = face.options
        return crop_matrix(face.detection, margin=options.margin or 0.0, align=bool(options.align),
                           border=options.border)  # fmt: skip

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
            detection_score=None if det.score is None else float(det.score),
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
        if isinstance(source, str | os.PathLike):
            result.path = os.fspath(source)  # what plot() reads again
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
        from emovit.faces import crop_face

        if det.whole_image:
            crop = image
        else:
            crop = crop_face(
                image, det, margin=options.margin or 0.0, align=bool(options.align), border=options.border
            )
        return self._colour(crop, options)

    @staticmethod
    def _colour(crop: np.ndarray, options: FaceOptions) -> np.ndarray:
        """A face crop as the model takes it: grey (in three equal channels) when `options` say so."""
        from emovit.faces import to_grey

        return to_grey(crop) if options.grey and crop.ndim == 3 else crop

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
            faces = [_Face(result, det, self._crop(image, det, options), options) for det in detections]
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
        pixels: np.ndarray | None
        try:
            pixels = self.model.preprocessor([face.crop for face in faces])
            kept = faces
        except Exception:  # noqa: BLE001 - find the culprit below
            done: list[tuple[list[_Face], np.ndarray]] = []
            groups: dict[int, list[_Face]] = {}
            for face in faces:
                groups.setdefault(id(face.result), []).append(face)
            for group in groups.values():
                try:
                    done.append((group, self.model.preprocessor([face.crop for face in group])))
                except Exception as exc:  # noqa: BLE001 - this image's error row (or raised there)
                    self._fail_preprocess(group, f"preprocessing failed ({exc})", raise_errors, exc)
            # A processor without a fixed output size (shortest_edge, no centre crop) sizes each
            # image its own way: the size the model was built for goes on (else the most common
            # one), the others get error rows.
            shapes = [part.shape[1:] for _, part in done]
            side = getattr(self.model.config, "image_size", None)  # what the model was built for
            fitting = next(
                (shape for shape in shapes if isinstance(side, int) and shape[-2:] == (side, side)), None
            )
            common = fitting or (max(set(shapes), key=shapes.count) if shapes else None)
            kept, parts = [], []
            for group, part in done:
                if part.shape[1:] == common:
                    kept += group
                    parts.append(part)
                    continue
                size = "x".join(map(str, part.shape[-2:]))
                self._fail_preprocess(
                    group, f"preprocessing gave a {size} input, unlike the rest of the batch; this "
                    "model's processor does not resize to a fixed size", raise_errors, None,
                )  # fmt: skip
            pixels = np.concatenate(parts) if parts else None
        if kept:
            share = (time.perf_counter() - start) * 1e3 / len(kept)
            for face in kept:  # an image with k faces gets k shares of the batch's time
                face.result.timings["preprocess"] = face.result.timings.get("preprocess", 0.0) + share
        return kept, pixels

    @staticmethod
    def _fail_preprocess(
        group: list[_Face], problem: str, raise_errors: bool, cause: Exception | None
    ) -> None:
        """The error row of an image whose faces could not be preprocessed (or the raise)."""
        error = InputError(group[0].result.source, problem, "preprocess_failed", "preprocess")
        if raise_errors:
            raise error from cause
        group[0].result.fail(error)

    def _prepare(
        self,
        chunk: Sequence[tuple[int, Any]],
        errors: ErrorPolicy,
        keep_pixels: bool,
        options: FaceOptions | None = None,
        detector: FaceDetector | None = None,
        max_pixels: int | None = None,
        names: Sequence[str] | None = None,
        stop: threading.Event | None = None,
    ) -> PreparedBatch:
        """Decode, detect, crop and preprocess one batch (runs in the prefetch thread)."""
        raise_errors = errors == "raise"
        options = options or self.faces
        detector = detector or self.detector

        def check() -> None:
            if stop is not None and stop.is_set():
                raise CancelledError("the caller stopped waiting for this batch")

        def decode(position: int) -> tuple[ImageResult, np.ndarray | None]:
            check()
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
            check()
            faces += self._faces_of(result, image, options, detector, raise_errors)
            if keep_pixels:
                result.image = image
        faces, pixels = self._preprocess(faces, raise_errors)
        return PreparedBatch([r for r, _ in decoded], faces, pixels, keep_pixels)

    def __repr__(self) -> str:
        model, device = self.model.name, self.model.device
        return f"EmotionRecognizer(model={model!r}, device={device!r}, labels={self._labels})"
