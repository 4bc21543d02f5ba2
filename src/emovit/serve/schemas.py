"""Request and response schemas of the HTTP API (the library's `to_dict` shape)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "ErrorResponse",
    "FaceModel",
    "ImageResultModel",
    "ModelInfoResponse",
    "PredictRequest",
    "PredictResponse",
]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. body_too_large, image_not_image")
    message: str = Field(description="what went wrong, naming the image when one is at fault")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Base64Image(BaseModel):
    data: str = Field(description="the encoded image file (JPEG, PNG, ...), base64")
    name: str | None = Field(None, description="a name to echo back as the result's source")


class PredictRequest(BaseModel):
    images: list[Base64Image] = Field(min_length=1)


class TopK(BaseModel):
    label: str
    score: float


class FaceModel(BaseModel):
    label: str
    score: float
    probs: dict[str, float]
    box: list[int] | None
    landmarks: list[list[float]] | None
    detection_score: float | None
    top_k: list[TopK] | None = None


class ImageResultModel(BaseModel):
    source: str
    ok: bool
    error: str | None
    image_size: list[int] | None
    label: str | None
    score: float | None
    probs: dict[str, float]
    faces: list[FaceModel]
    timings_ms: dict[str, float]


class PredictResponse(BaseModel):
    model: str
    results: list[ImageResultModel]


class ModelInfoResponse(BaseModel):
    model_config = {"extra": "allow"}

    name: str
    architecture: str | None
    labels: list[str]
    result_labels: list[str]
    parameters: int | None
    processor: dict[str, Any]
    detector: str
    backend: str
