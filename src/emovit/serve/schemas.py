"""Request and response schemas of the HTTP API (the library's `to_dict` shape)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from emovit.errors import ERROR_CODES

__all__ = [
    "ErrorResponse",
    "ExplanationModel",
    "FaceModel",
    "ImageResultModel",
    "ModelInfoResponse",
    "PredictRequest",
    "PredictResponse",
    "VideoResponse",
]

_IMAGE_CODES = "; ".join(f"`{code}` ({stage}): {meaning}" for code, (stage, meaning) in ERROR_CODES.items())
_IMAGE_CODES += "; `internal`: an unexpected error on this image"
#: Codes of whole-request errors (an image's own codes are `ERROR_CODES`).
REQUEST_ERROR_CODES = {
    "unauthorized": "a bearer token is required and was missing or wrong (401)",
    "body_too_large": "the request body is over the limit (413)",
    "too_many_images": "more images than the limit (413)",
    "body_timeout": "the request body did not arrive within the time limit (408)",
    "header_timeout": "the request line and headers did not arrive within 10 s (408, connection closed)",
    "headers_too_large": "the request line and headers are over 16 KiB (431, connection closed)",
    "unsupported_media_type": "neither multipart/form-data nor JSON (415)",
    "no_images": "no images in the request (422)",
    "bad_request": "a malformed multipart or JSON body, or invalid query parameters (422)",
    "not_ready": "the model is still loading (503, Retry-After)",
    "overloaded": "the queue is full (503, Retry-After)",
    "shutting_down": "the server is draining after SIGTERM (503, Retry-After)",
    "deadline": "not answered within the deadline (504)",
    "not_available": "this server lacks an optional part the request needs, e.g. PyAV for /v1/video (501)",
    "video_too_long": "a video longer than the server's limit (413)",
    "one_video": "not exactly one clip in the multipart field 'files' of /v1/video (422)",
    "internal": "an unexpected server error; quote the request_id (500)",
    "not_found": "no such path (404)",
    "method_not_allowed": "the path does not take this method (405)",
}
_REQUEST_CODES = "; ".join(f"`{code}`: {meaning}" for code, meaning in REQUEST_ERROR_CODES.items())


class ErrorDetail(BaseModel):
    code: str = Field(
        description=(
            "machine-readable reason. Whole-request errors: "
            f"{_REQUEST_CODES}. When every image of a request fails, the first image's "
            "`error_code` (413 for too_many_pixels, 415 for unsupported_format and unsupported_input, "
            "else 422)."
        )
    )
    message: str = Field(description="what went wrong, naming the image when one is at fault")
    request_id: str | None = Field(
        None, description="this request's id (also the X-Request-ID header and the server's log lines)"
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Base64Image(BaseModel):
    data: str = Field(
        description="the encoded image file (JPEG, PNG, ...), base64; line breaks and a data URL "
        "prefix (data:image/jpeg;base64,) are accepted"
    )
    name: str | None = Field(None, description="a name to echo back as the result's source")


class PredictRequest(BaseModel):
    images: list[Base64Image] = Field(min_length=1)


class TopK(BaseModel):
    label: str
    score: float


class ExplanationModel(BaseModel):
    method: str = Field(description="rollout, grad-rollout, gradcam or smoothgrad")
    target: str | None = Field(description="the label explained (null: rollout, which is class-agnostic)")
    layer: str | None = Field(description="the layer gradcam read (null for the attention methods)")
    size: list[int] = Field(description="[width, height] of the face crop, and of `explanation_png`")
    crop_to_image: list[list[float]] = Field(
        description="2x3 affine matrix from crop pixels to image pixels: [[a, b, c], [d, e, f]] maps "
        "(x, y) to (a x + b y + c, d x + e y + f); the crop may be rotated (eye alignment)"
    )


class FaceModel(BaseModel):
    label: str
    score: float
    probs: dict[str, float]
    box: list[int] | None
    landmarks: list[list[float]] | None
    detection_score: float | None
    track_id: int | None = Field(None, description="videos: the face's track, stable across frames (from 1)")
    raw_probs: dict[str, float] | None = Field(
        None, description="videos: this frame's own probabilities (`probs`, `label`, `score` are smoothed)"
    )
    top_k: list[TopK] | None = None
    explanation: ExplanationModel | None = Field(None, description="with explain=true: how the map was made")
    explanation_png: str | None = Field(
        None,
        description="with explain=true: where on the face the model looked, as an 8-bit grey PNG (base64) "
        "at the face crop's size: 255 where the model looked most, 0 least",
    )


class ImageResultModel(BaseModel):
    source: str = Field(description="the uploaded file's name (or `image i`)")
    ok: bool = Field(description="false when this image failed; the request's other images are unaffected")
    error: str | None = Field(description="why this image failed, for people (null when ok)")
    error_code: str | None = Field(
        None, description=f"why this image failed, for programs (null when ok): {_IMAGE_CODES}"
    )
    error_stage: str | None = Field(
        None, description="the stage that failed: decode, detect, crop, preprocess or model (null when ok)"
    )
    image_size: list[int] | None = Field(description="[width, height] of the decoded image")
    label: str | None = Field(description="the first (largest) face's label")
    score: float | None
    probs: dict[str, float]
    faces: list[FaceModel]
    timings_ms: dict[str, float] = Field(
        description="milliseconds per stage for this image: decode, detect, preprocess, inference"
    )


class PredictResponse(BaseModel):
    model: str
    results: list[ImageResultModel] = Field(
        description="one per image, in order; a request with at least one readable image answers 200 "
        "and reports the images that failed with ok=false, error, error_code and error_stage"
    )


class VideoFrameModel(ImageResultModel):
    frame: int | None = Field(description="the frame's index in the video stream (null: the video failed)")
    time_s: float | None = Field(description="the frame's presentation time, in seconds")


class VideoTrackModel(BaseModel):
    track_id: int
    first_s: float = Field(description="when the track's face was first seen (s)")
    last_s: float = Field(description="when it was last seen (s)")
    duration_s: float
    frames: int = Field(description="analysed frames in which it was found")
    dominant: str = Field(description="the (smoothed) label it showed most often")
    share: dict[str, float] = Field(description="fraction of its frames with each label (sums to 1)")
    mean_probs: dict[str, float] = Field(description="its mean (smoothed) probabilities")


class VideoInfoModel(BaseModel):
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    rotation: int
    codec: str
    frames: int | None


class VideoSummaryModel(BaseModel):
    source: str
    frames_analysed: int
    duration_s: float
    fps_analysed: float
    faces_per_frame: float
    tracks: list[VideoTrackModel]
    frames_failed: int
    complete: bool = Field(description="false when the video ended early (damaged) or was cut at the limit")
    warnings: list[str]
    video: VideoInfoModel | None
    error: str | None = None
    error_code: str | None = None


class VideoResponse(BaseModel):
    model: str
    frames: list[VideoFrameModel] = Field(
        description="one per analysed frame, in order (an analysed frame without faces has `faces: []`)"
    )
    summary: VideoSummaryModel


class ModelInfoResponse(BaseModel):
    model_config = {"extra": "allow"}

    name: str
    architecture: str | None
    labels: list[str]
    result_labels: list[str]
    parameters: int | None = None
    processor: dict[str, Any]
    detector: str
    backend: str
