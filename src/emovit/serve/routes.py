"""The endpoints: ``/v1/predict``, ``/v1/video``, ``/v1/models``, ``/livez``, ``/readyz``,
``/metrics`` and the page.

``/v1/predict`` reads the uploaded images, prepares them in a thread
(`EmotionRecognizer.prepare`: decode, detect, crop, preprocess), hands the prepared batch to
the micro-batcher (one `EmotionRecognizer.infer` over the faces of concurrent requests), and
answers every image's result: an image that failed at any stage is reported with ``ok:
false`` and its ``error_code`` beside the others. Only when every image fails does the whole
request fail (413/415/422, naming the first file).

``/v1/video`` runs one uploaded clip through `EmotionRecognizer.predict_video` in a thread
(its own deadline; the model calls are the video's own batches of faces, not the micro-batcher's)
and answers every analysed frame and the video's summary.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
import threading
import time
from importlib import resources
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from emovit.errors import DependencyError, EmovitError, InputError
from emovit.imageio import declared_pixels
from emovit.serve.batcher import QueueFullError
from emovit.serve.errors import ApiError, status_for_input_error, validation_message
from emovit.serve.schemas import (
    ErrorResponse,
    ModelInfoResponse,
    PredictRequest,
    PredictResponse,
    VideoResponse,
)
from emovit.serve.state import get_state

if TYPE_CHECKING:
    from emovit.faces import FaceOptions
    from emovit.predictor import EmotionRecognizer
    from emovit.results import ImageResult
    from emovit.serve.metrics import Metrics
    from emovit.serve.settings import ServeSettings
    from emovit.serve.state import JobSlots, ServeState, Slot
    from emovit.video import VideoOptions

__all__ = ["router"]

router = APIRouter()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATIC = resources.files("emovit.serve").joinpath("static")
#: A video declared this much longer than the duration limit still passes (rounding in containers).
_DURATION_SLACK_S = 0.05

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (401, "a bearer token is required and was missing or wrong"),
        (408, "the request body did not arrive in time"),
        (413, "body, image count or (every image's) pixels over the limit"),
        (415, "not multipart/JSON, or every image in an unsupported format"),
        (422, "invalid request, or every image unreadable"),
        (500, "an unexpected server error (quote the request_id)"),
        (503, "loading, overloaded or shutting down; see Retry-After"),
        (504, "not answered within the deadline"),
    )
}


def safe_name(name: str | None, index: int) -> str:
    """An uploaded file's name without folders or control characters (``image i`` if none)."""
    base = re.split(r"[\\/]", name)[-1] if name else ""
    base = _CONTROL.sub("", base).strip()[:200]
    return base or f"image {index}"


def _request_schema() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                        },
                        "required": ["files"],
                    }
                },
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            },
        }
    }


#: One image of a request: its sanitised name, and its bytes or why it has none (bad base64).
Upload = tuple[str, bytes | InputError]


_DATA_URL = re.compile(r"^\s*data:[\w.+-]+/[\w.+-]+;base64,", re.IGNORECASE)


def _from_base64(text: str) -> bytes:
    """An image's bytes from base64 as people send it: wrapped at 76 columns (``base64 FILE``)
    or as a data URL (``data:image/jpeg;base64,...``, a canvas's toDataURL) too; anything
    else that is not base64 is refused (no silently skipped characters)."""
    return base64.b64decode("".join(_DATA_URL.sub("", text, count=1).split()), validate=True)


async def _images_from(request: Request, state: ServeState) -> list[Upload]:
    """The request's images as (sanitised name, bytes or the image's own error); `ApiError` for
    a malformed request.
    The body is parsed in a worker thread: a body of many tiny parts takes seconds to parse,
    and the event loop (every other request, /livez too) must not wait for it."""
    content_type = request.headers.get("content-type", "")
    media_type = _media_type(content_type)
    if media_type not in ("multipart/form-data", "application/json"):
        hint = "send multipart/form-data with field 'files', or JSON with base64 images"
        raise ApiError(415, "unsupported_media_type", hint)
    body = await request.body()
    return await asyncio.to_thread(_parse_images, body, content_type, media_type, state)


def _parse_images(body: bytes, content_type: str, media_type: str, state: ServeState) -> list[Upload]:
    """`_images_from`'s parsing and checks, off the event loop."""
    if media_type == "multipart/form-data":
        from emovit.serve._multipart import MultipartError, TooManyPartsError, parse_multipart

        if not body:
            raise ApiError(422, "no_images", "no images in the request (multipart field name: 'files')")
        try:
            parts = parse_multipart(body, content_type, max_parts=state.settings.max_images)
        except TooManyPartsError as exc:
            if exc.counted:
                raise _too_many_images(state) from None
            raise ApiError(422, "bad_request", f"the multipart body has {exc}") from None
        except MultipartError as exc:
            raise ApiError(422, "bad_request", str(exc)) from None
        images: list[Upload] = [
            (safe_name(p.filename, i), bytes(p.data)) for i, p in enumerate(parts) if p.name == "files"
        ]
    else:
        try:
            payload = PredictRequest.model_validate_json(body)
        except ValidationError as exc:
            message = f"invalid JSON body: {validation_message(exc.errors(), 'body')}"
            raise ApiError(422, "bad_request", message) from None
        if len(payload.images) > state.settings.max_images:  # before decoding any of them
            raise _too_many_images(state)
        images = []
        for i, item in enumerate(payload.images):
            name = safe_name(item.name, i)
            try:
                images.append((name, _from_base64(item.data)))
            except (binascii.Error, ValueError):  # this image's error row; the others go on
                images.append((name, InputError(name, "invalid base64", "bad_base64")))
    if not images:
        raise ApiError(422, "no_images", "no images in the request (multipart field name: 'files')")
    if len(images) > state.settings.max_images:
        raise _too_many_images(state)
    # before any is decoded: small files can hold huge, flat images. An image over the per-image
    # limit is not counted: it becomes its own too_many_pixels row without being decoded.
    declared = [(declared_pixels(data), name) for name, data in images if isinstance(data, bytes)]
    counted = [(pixels, name) for pixels, name in declared if pixels <= state.settings.max_pixels]
    total, budget = sum(pixels for pixels, _ in counted), state.settings.max_request_pixels
    if total > budget:
        largest, name = max(counted)
        state.metrics.rejections.labels("too_many_pixels").inc()
        raise ApiError(
            413, "too_many_pixels",
            f"the request's images hold {total:,} pixels in all, over the limit of {budget:,} "
            f"(the largest, {name}, {largest:,}): "
            + ("send fewer or smaller images" if len(counted) > 1 else "send a smaller image"),
        )  # fmt: skip
    return images


def _media_type(content_type: str) -> str:
    """The media type of a Content-Type header, lower-cased (media types are case-blind)."""
    return content_type.split(";", 1)[0].strip().lower()


def _too_many_images(state: ServeState) -> ApiError:
    """The 413 of a request with more images than the limit (counted)."""
    state.metrics.rejections.labels("too_many_images").inc()
    return ApiError(413, "too_many_images", f"at most {state.settings.max_images} images per request")


def _model_name(rec: EmotionRecognizer) -> str:
    """The model's name as answers give it: a Hub id or registry name, or a folder's own name
    (never the server's paths)."""
    name = rec.model.name
    return PurePath(name).name if os.path.isabs(name) else name


def _request_faces(faces: FaceOptions, detector: str, no_face: str | None) -> FaceOptions:
    """The server's face options with this request's overrides."""
    if detector == "none":
        return faces.replace(detector="none")
    return faces.replace(no_face=no_face)


def _all_failed(results: list[ImageResult]) -> ApiError:
    first = results[0]
    others = f" ({len(results) - 1} more image(s) failed too)" if len(results) > 1 else ""
    code = first.error_code or "internal"
    return ApiError(status_for_input_error(code), code, f"{first.error}{others}")


PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    501: {"model": ErrorResponse, "description": "explain=true on a model served from ONNX only"},
}


@router.post(
    "/v1/predict", response_model=PredictResponse, openapi_extra=_request_schema(), responses=PREDICT_ERRORS
)
async def predict(
    request: Request,
    detector: Literal["default", "none"] = Query("default", description="default: the server's detector"),
    top_k: int = Query(3, ge=1, le=20),
    no_face: Literal["skip", "whole"] | None = Query(None, description="images without a face"),
    explain: bool = Query(
        False,
        description="also say where on each face the model looked: each face gets `explanation` and "
        "`explanation_png` (the map as an 8-bit grey PNG at the face crop's size, base64)",
    ),
    explain_method: Literal["auto", "rollout", "grad-rollout", "gradcam", "smoothgrad"] = Query(
        "auto",
        description="with explain=true (else 422): the map's method (auto: grad-rollout for ViTs, else "
        "smoothgrad)",
    ),
    explain_target: str | None = Query(
        None,
        max_length=40,
        description="with explain=true (else 422): the label to explain (default: each face's own)",
    ),
) -> Any:
    """Classify the faces in one or more images (multipart field ``files``, or JSON base64).

    Answers 200 with one result per image when at least one image succeeds; the others carry
    ``ok: false``, ``error``, ``error_code`` and ``error_stage``. With ``explain=true`` each face
    also carries its explanation map (computed on the model's torch weights)."""
    state = get_state(request.app)
    state.require_ready()
    given = [name for name, value in (("explain_method", explain_method != "auto"),
                                      ("explain_target", explain_target is not None)) if value]  # fmt: skip
    if given and not explain:  # they were ignored: the caller got no maps and no word why
        verb = "applies" if len(given) == 1 else "apply"
        message = f"{' and '.join(given)} {verb} with explain=true only (add explain=true)"
        raise ApiError(422, "bad_request", message)
    if explain and not state.explainable:
        # the installation's limit, not the request's: said before the body is read
        raise ApiError(501, "not_available", "this server's model runs from ONNX only: explanations "
                       "need its torch weights (*.safetensors)")  # fmt: skip
    start = time.perf_counter()
    with _take(state, state.explain_slots) if explain else contextlib.nullcontext() as slot:
        return await _predict(
            request, state, slot, detector, no_face, top_k, explain_method, explain_target, start
        )


#: the library's option names (`OptionError.option`) of explain's query parameters
_EXPLAIN_PARAMS = {"method": "explain_method", "target": "explain_target"}


async def _predict(
    request: Request,
    state: ServeState,
    slot: Slot | None,
    detector: Literal["default", "none"],
    no_face: Literal["skip", "whole"] | None,
    top_k: int,
    explain_method: Literal["auto", "rollout", "grad-rollout", "gradcam", "smoothgrad"],
    explain_target: str | None,
    start: float,
) -> Any:
    """`predict`'s work; `slot` (explain=true): the explain job's slot, taken before the body."""
    rec, batcher, server_faces = state.require_ready()
    settings, metrics = state.settings, state.metrics
    if batcher.full:  # before the body is read and decoded: an overload must not cost decoding too
        raise _overloaded(state)
    images = await _images_from(request, state)
    faces = _request_faces(server_faces, detector, no_face)
    stop = threading.Event()  # set when the request gives up: its thread stops at the next image

    readable = [(name, data) for name, data in images if isinstance(data, bytes)]

    async def run() -> list[ImageResult]:
        prepared = await asyncio.to_thread(
            rec.prepare, [data for _, data in readable], errors="collect", faces=faces,
            max_pixels=settings.max_pixels, names=[name for name, _ in readable], stop=stop,
        )  # fmt: skip
        if not prepared.faces:  # nothing for the model: every image failed or had no face
            return prepared.results
        try:
            results = await batcher.submit(prepared)
        except QueueFullError:
            raise _overloaded(state) from None
        if slot is not None:  # explain=true: the maps in the explain pool, one job per slot
            return await slot.submit(
                rec.explain_prepared, prepared, method=explain_method, target=explain_target
            )
        return results

    try:
        if slot is not None and not rec.has_explainer(explain_method):  # the first explain=true loads
            # it (the torch weights of an onnx server): a one-off start-up cost, not the request's
            await asyncio.to_thread(rec.explainer, explain_method)
        if slot is not None:  # a bad target: 422 before decoding and inference (an image without a
            rec.check_explanation(explain_method, explain_target)  # face skipped the check: 200)
        results = await asyncio.wait_for(run(), timeout=settings.deadline_s)
    except TimeoutError:
        metrics.rejections.labels("deadline").inc()
        raise ApiError(504, "deadline", f"not answered within {settings.deadline_s:g} s") from None
    except EmovitError as exc:  # the explain method or target: the query parameter named
        param = _EXPLAIN_PARAMS.get(getattr(exc, "option", None) or "")
        raise ApiError(422, "bad_request", f"{param}: {exc}" if param else str(exc)) from None
    finally:  # answered, timed out, or cancelled (the client left, shutdown): no more decoding
        stop.set()
    results = _in_request_order(images, results)
    for result in results:
        if not result.ok:
            metrics.image_errors.labels(result.error_code or "internal").inc()
    if all(not result.ok for result in results):
        problem = _all_failed(results)
        metrics.rejections.labels(_rejection(problem)).inc()
        raise problem
    metrics.latency.labels("/v1/predict").observe(time.perf_counter() - start)
    return {"model": _model_name(rec), "results": [_result_dict(result, top_k) for result in results]}


def _in_request_order(images: list[Upload], results: list[ImageResult]) -> list[ImageResult]:
    """The results of the readable images, with an error row for each image that had no bytes
    (bad base64) where it was in the request."""
    from emovit.results import ImageResult

    readable = iter(results)
    return [
        next(readable) if isinstance(data, bytes) else ImageResult(source=name).fail(data)
        for name, data in images
    ]


def _rejection(problem: ApiError) -> str:
    """The rejection reason a refused upload is counted under (metrics)."""
    if problem.status == 413:
        return problem.code if problem.code == "video_too_long" else "too_many_pixels"
    return "bad_image"


def _overloaded(state: ServeState) -> ApiError:
    """The 503 of a full model queue (counted as ``queue_full``)."""
    state.metrics.rejections.labels("queue_full").inc()
    retry = {"Retry-After": str(state.settings.retry_after_s)}
    return ApiError(503, "overloaded", "the server is busy, retry shortly", retry)


def _result_dict(result: ImageResult, top_k: int) -> dict[str, Any]:
    """`ImageResult.to_dict`, with each explained face's map as ``explanation_png`` (base64)."""
    out = result.to_dict(top_k)
    for face, row in zip(result.faces, out["faces"], strict=True):
        if face.explanation is not None:
            row["explanation_png"] = base64.b64encode(face.explanation.png()).decode("ascii")
    return out


def _video_request_schema() -> dict[str, Any]:
    part = {"files": {"type": "string", "format": "binary", "description": "the video file (one clip)"}}
    schema = {"type": "object", "properties": part, "required": ["files"]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


VIDEO_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **{
        status: {"model": ErrorResponse, "description": text}
        for status, text in (
            (413, "body over --max-video-mb, or a video over --max-video-seconds"),
            (415, "not multipart, or not a video or image format FFmpeg reads"),
            (422, "not one clip, bad parameters, or an unreadable video (empty, damaged, no video stream)"),
            (501, "this server cannot analyse videos (installed without the video extra)"),
        )
    },
}


async def _video_from(request: Request) -> tuple[str, bytes]:
    """The one uploaded clip as (sanitised name, bytes)."""
    content_type = request.headers.get("content-type", "")
    if _media_type(content_type) != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send the clip as multipart/form-data, field 'files'")
    from emovit.serve._multipart import MultipartError, TooManyPartsError, parse_multipart

    body = await request.body()
    try:  # in a worker thread, as photos' bodies (up to --max-video-mb to split)
        parts = [
            part
            for part in await asyncio.to_thread(parse_multipart, body, content_type, max_parts=1)
            if part.name == "files"
        ]
    except TooManyPartsError as exc:
        if exc.counted:
            raise ApiError(
                422, "one_video", "send exactly one clip in the field 'files' (got more)"
            ) from None
        raise ApiError(422, "bad_request", f"the multipart body has {exc}") from None
    except MultipartError as exc:
        raise ApiError(422, "bad_request", str(exc)) from None
    if len(parts) != 1:
        raise ApiError(422, "one_video", f"send exactly one clip in the field 'files' (got {len(parts)})")
    return safe_name(parts[0].filename, 0), bytes(parts[0].data)


async def _stop_when_gone(
    request: Request, stop: threading.Event, metrics: Metrics, every_s: float = 0.25
) -> bool:
    """Set `stop` when the client goes away while its clip is analysed (the page's Cancel, a
    closed tab, a client's timeout): the analysis ends after its batch and frees its slot, rather
    than run to the end for nobody. Counted as the rejection ``client_gone``; True then."""
    while not stop.is_set():
        if await request.is_disconnected():
            stop.set()
            metrics.rejections.labels("client_gone").inc()
            return True
        await asyncio.sleep(every_s)
    return False


def _take(state: ServeState, slots: JobSlots) -> Slot:
    """A slot of `slots`, or 503 (counted as ``queue_full``) when all are busy."""
    try:
        return slots.take(state.settings.retry_after_s)
    except ApiError:
        state.metrics.rejections.labels("queue_full").inc()
        raise


def _analyse_video(
    rec: EmotionRecognizer,
    faces: FaceOptions,
    settings: ServeSettings,
    data: bytes,
    name: str,
    options: VideoOptions,
    stop: threading.Event,
    top_k: int,
    capped: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One uploaded clip's frames and summary (in a worker thread), or the `ApiError` for it.
    Its warnings go into the summary only: nothing a client uploads is logged. `capped`: the
    window's end is the duration limit's (from `options.start`), not the client's own."""
    from emovit.errors import InputError
    from emovit.video import probe_video

    try:
        info = probe_video(data, name=name, max_pixels=settings.max_pixels)
    except InputError as exc:
        raise ApiError(status_for_input_error(exc.code), exc.code, str(exc)) from None
    limit = settings.max_video_seconds
    if capped and info.duration_s is not None and info.duration_s > options.start + limit + _DURATION_SLACK_S:
        raise ApiError(  # a window the client ends within the limit is fine, however long the clip
            413, "video_too_long", f"{name}: {info.duration_s:.1f} s is over the {limit:g} s limit "
            "(analyse a window of it: start and end)",
        )  # fmt: skip
    if info.width * info.height > settings.max_pixels:
        raise ApiError(413, "too_many_pixels", f"{name}: its frames are {info.width}x{info.height}, "
                       f"over the limit of {settings.max_pixels:,} pixels")  # fmt: skip
    run = rec.predict_video(
        data, options=options, faces=faces, name=name, stop=stop, max_pixels=settings.max_pixels, quiet=True
    )
    frames = [frame.to_dict(top_k) for frame in run]
    if len(frames) == 1 and frames[0]["frame"] is None:  # the whole video failed
        code = frames[0]["error_code"] or "internal"
        raise ApiError(status_for_input_error(code), code, frames[0]["error"] or "unreadable video")
    if info.duration_s is None and run.reached_end and capped:  # no declared duration: by decoding
        raise ApiError(413, "video_too_long", f"{name}: longer than the {limit:g} s limit")
    return frames, run.summary()


@router.post(
    "/v1/video", response_model=VideoResponse, openapi_extra=_video_request_schema(), responses=VIDEO_ERRORS
)
async def video(
    request: Request,
    fps: float | None = Query(None, gt=0, le=120, description="frames analysed per second (default: all)"),
    every: int | None = Query(None, ge=1, le=1000, description="analyse every N-th frame (not with fps)"),
    smooth: float | None = Query(None, ge=0, le=30, description="smoothing time constant, s (0: off)"),
    start: float = Query(0.0, ge=0, le=86400, description="analyse from this time, s"),
    end: float | None = Query(None, gt=0, le=86400, description="stop at this time, s (default: the end)"),
    top_k: int = Query(3, ge=1, le=20),
) -> Any:
    """Analyse one video clip (multipart field ``files``): every analysed frame with its faces
    (each with a ``track_id``, probabilities smoothed over time and ``raw_probs``), and the
    video's summary (per track: time span, dominant emotion, shares). Videos over the size or
    duration limit answer 413; what is not a readable video 415 or 422."""
    from emovit.video import VideoOptions

    state = get_state(request.app)
    rec, _, server_faces = state.require_ready()
    settings, metrics = state.settings, state.metrics
    began = time.perf_counter()
    try:
        # at most --max-video-seconds from start is analysed (the tolerance is the declared
        # duration's, `_analyse_video`): a client's end within that ends the window; without one
        # (or past it) the clip must end there (413 video_too_long)
        cap = start + settings.max_video_seconds + _DURATION_SLACK_S
        capped = end is None or end > cap
        options = VideoOptions(fps=fps, every=every, start=start, end=cap if capped else end)
        options = options.replace(smooth=smooth)
    except EmovitError as exc:
        raise ApiError(422, "bad_request", str(exc)) from None
    stop = threading.Event()
    with _take(state, state.video_slots) as slot:  # before the body is read: see JobSlots
        name, data = await _video_from(request)
        job = slot.submit(
            _analyse_video, rec, server_faces, settings, data, name, options, stop, top_k, capped
        )
        watch = asyncio.ensure_future(_stop_when_gone(request, stop, metrics))
        try:
            frames, summary = await asyncio.wait_for(job, timeout=settings.video_deadline_s)
        except TimeoutError:
            metrics.rejections.labels("deadline").inc()
            raise ApiError(504, "deadline", f"not answered within {settings.video_deadline_s:g} s") from None
        except ApiError as problem:
            metrics.rejections.labels(_rejection(problem)).inc()
            raise
        except DependencyError as exc:  # the server's installation, not the client's request
            raise ApiError(501, "not_available", f"this server cannot analyse videos: {exc}") from None
        except EmovitError as exc:
            raise ApiError(422, "bad_request", str(exc)) from None
        finally:  # answered, timed out, the client gone, or the request cancelled (shutdown): the
            stop.set()  # thread stops after its batch, and its slot comes back then
            watch.cancel()
    if watch.done() and not watch.cancelled() and watch.result():  # nobody to answer: logged as 499
        raise ClientDisconnect("the client left while its video was analysed; the analysis stopped")
    metrics.latency.labels("/v1/video").observe(time.perf_counter() - began)
    return {"model": _model_name(rec), "frames": frames, "summary": summary}


@router.get("/v1/models", response_model=ModelInfoResponse, responses={k: ERRORS[k] for k in (401, 503)})
async def models(request: Request) -> Any:
    """The loaded model: architecture table, labels and preprocessing."""
    from emovit.models import describe_model

    rec, _, _ = get_state(request.app).require_ready()
    info = describe_model(rec.model.path).to_dict()
    info.pop("path", None)
    info["name"] = _model_name(rec)
    info["result_labels"] = list(rec.labels)
    info["detector"] = rec.detector.name
    info["backend"] = rec.backend.name
    return info


@router.get("/livez", response_class=PlainTextResponse)
@router.head("/livez", response_class=PlainTextResponse, operation_id="livez_head")  # HEAD: probes
async def livez() -> str:
    """The process is up."""
    return "ok"


_READYZ: dict[str, Any] = {
    "response_class": PlainTextResponse,
    "responses": {
        503: {
            "description": "loading, shutting down, or the model worker stopped",
            "content": {"text/plain": {}},
        }
    },
}


@router.get("/readyz", **_READYZ)
@router.head("/readyz", operation_id="readyz_head", **_READYZ)  # HEAD: probes
async def readyz(request: Request) -> Response:
    """200 once the model has loaded and run a warm-up inference; 503 before and while shutting down."""
    state = get_state(request.app)
    if state.shutting_down:
        return PlainTextResponse("shutting down", status_code=503)
    if state.error:
        return PlainTextResponse("model failed to load", status_code=503)
    if state.ready and state.batcher is not None and not state.batcher.alive:
        return PlainTextResponse("model worker stopped", status_code=503)
    return PlainTextResponse("ready" if state.ready else "loading", status_code=200 if state.ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(request: Request) -> Response:
    """Prometheus metrics."""
    state = get_state(request.app)
    if state.batcher is not None:
        state.metrics.queue.set(state.batcher.depth)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)  # HEAD: uptime probes
async def page() -> FileResponse:
    return FileResponse(str(_STATIC.joinpath("index.html")), media_type="text/html")


@router.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
async def favicon() -> FileResponse:
    """Browsers and bookmark tools ask for /favicon.ico whatever the page names: the same icon."""
    return FileResponse(str(_STATIC.joinpath("favicon.svg")), media_type="image/svg+xml")


# Swagger UI's script and style come from a CDN; a machine that cannot reach it would show a blank
# page. The text sits inside the element Swagger UI renders into, so it shows only when the
# script did not load.
_DOCS_OFFLINE = (
    '<div id="swagger-ui"><p style="font-family: sans-serif; margin: 2em">'
    "The interactive API page needs Swagger UI from cdn.jsdelivr.net, which this browser could not "
    "load. The API's schema is at <a href=\"{schema}\">{schema}</a> (OpenAPI, JSON); the README's "
    '"HTTP service" section describes every endpoint.</p></div>'
)


@router.get("/docs", include_in_schema=False)
async def api_docs(request: Request) -> Response:
    """Swagger UI over /openapi.json, with the schema's address shown when the CDN is out of reach."""
    from fastapi.openapi.docs import get_swagger_ui_html

    root = request.scope.get("root_path", "").rstrip("/")
    schema = f"{root}{request.app.openapi_url}"
    icon = f"{root}/static/favicon.svg"
    page = get_swagger_ui_html(
        openapi_url=schema, title=f"{request.app.title} - API", swagger_favicon_url=icon
    )
    html = bytes(page.body).decode()
    fallback = _DOCS_OFFLINE.format(schema=schema)
    html = re.sub(r'<div id="swagger-ui">\s*</div>', lambda _: fallback, html, count=1)
    return Response(html, media_type="text/html")
