"""The HTTP API in-process: schemas, error codes, token, limits, headers, micro-batching."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient

from emovit import EMOTIONS, EmotionRecognizer
from emovit.serve import ServeSettings, create_app


def _png(size: tuple[int, int] = (40, 40), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def recognizer(tiny_model_dir: Path) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", detector="none")


@contextlib.contextmanager
def serving(rec: EmotionRecognizer, **settings: object) -> Iterator[TestClient]:
    app = create_app(rec, ServeSettings(**settings))  # type: ignore[arg-type]
    with TestClient(app) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        yield client


@pytest.fixture
def client(recognizer: EmotionRecognizer) -> Iterator[TestClient]:
    with serving(recognizer) as c:
        yield c


def _assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert (
        "Traceback" not in response.text
        and "/tmp" not in response.text
        and "site-packages" not in response.text
    )


def test_health_and_models(client: TestClient) -> None:
    assert client.get("/livez").text == "ok"
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/models").json()
    assert info["labels"] == ["sad", "disgust", "angry", "neutral", "fear", "surprise", "happy"]
    assert info["result_labels"] == list(EMOTIONS)
    assert info["patch_size"] == 2 and info["parameters"] > 0
    assert "path" not in info


def test_predict_multipart_matches_the_library(client: TestClient, recognizer: EmotionRecognizer) -> None:
    files = [
        ("files", ("a.png", _png(seed=1), "image/png")),
        ("files", ("b.png", _png((64, 32), 2), "image/png")),
    ]
    response = client.post("/v1/predict?top_k=2", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["source"] for r in results] == ["a.png", "b.png"]
    library = recognizer.predict([_png(seed=1), _png((64, 32), 2)])
    for got, want in zip(results, library, strict=True):
        assert got["image_size"] == list(want.image_size)
        assert set(got) == set(want.to_dict())
        assert got["probs"] == pytest.approx(want.probs, abs=1e-6)
        assert len(got["faces"][0]["top_k"]) == 2


def test_predict_json_base64(client: TestClient) -> None:
    payload = {"images": [{"data": base64.b64encode(_png()).decode(), "name": "x.png"}]}
    response = client.post("/v1/predict", json=payload)
    assert response.status_code == 200
    assert response.json()["results"][0]["source"] == "x.png"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"hello, not an image", 415, "image_not_image"),
        (_png()[:60], 422, "image_corrupt"),
        (b"", 422, "image_empty"),
    ],
    ids=["text", "truncated", "empty"],
)
def test_bad_images(client: TestClient, content: bytes, status: int, code: str) -> None:
    response = client.post("/v1/predict", files=[("files", ("bad.png", content, "image/png"))])
    _assert_error(response, status, code)
    assert "bad.png" in response.json()["error"]["message"]


def test_bad_requests(client: TestClient) -> None:
    _assert_error(client.post("/v1/predict", content=b"xx", headers={"content-type": "text/plain"}), 415,
                  "unsupported_media_type")  # fmt: skip
    _assert_error(
        client.post("/v1/predict", files=[("other", ("a.png", _png(), "image/png"))]), 422, "no_images"
    )
    _assert_error(client.post("/v1/predict", json={"images": [{"data": "***"}]}), 422, "bad_base64")
    _assert_error(client.post("/v1/predict", json={"nope": 1}), 422, "bad_request")
    assert (
        client.post("/v1/predict?top_k=0", files=[("files", ("a.png", _png(), "image/png"))]).status_code
        == 422
    )


def test_limits(recognizer: EmotionRecognizer) -> None:
    with serving(recognizer, max_body_bytes=2000, max_pixels=1000, max_images=2) as client:
        big = _png((100, 100))
        _assert_error(client.post("/v1/predict", files=[("files", ("big.png", big, "image/png"))]), 413,
                      "body_too_large")  # fmt: skip
        buffer = io.BytesIO()
        Image.new("RGB", (40, 40), (90, 90, 90)).save(buffer, "PNG")
        many = buffer.getvalue()  # a few hundred bytes, but 1,600 pixels > 1,000
        assert len(many) < 2000
        _assert_error(client.post("/v1/predict", files=[("files", ("px.png", many, "image/png"))]), 413,
                      "image_too_large")  # fmt: skip
        small = _png((10, 10))
        three = [("files", (f"{i}.png", small, "image/png")) for i in range(3)]
        _assert_error(client.post("/v1/predict", files=three), 413, "too_many_images")


def test_token(recognizer: EmotionRecognizer) -> None:
    with serving(recognizer, token="s3cret") as client:
        files = [("files", ("a.png", _png(), "image/png"))]
        _assert_error(client.post("/v1/predict", files=files), 401, "unauthorized")
        _assert_error(client.post("/v1/predict", files=files, headers={"Authorization": "Bearer nope"}), 401,
                      "unauthorized")  # fmt: skip
        ok = client.post("/v1/predict", files=files, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert client.get("/livez").status_code == 200  # health and metrics stay open
        assert client.get("/metrics").status_code == 200
        assert client.get("/").status_code == 200


def test_headers_metrics_and_cors(client: TestClient, recognizer: EmotionRecognizer) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "emovit" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200
    client.post("/v1/predict", files=[("files", ("a.png", _png(), "image/png"))])
    text = client.get("/metrics").text
    for name in ("emovit_requests_total", "emovit_request_seconds_bucket", "emovit_queue_depth",
                 "emovit_batch_faces_bucket", "emovit_rejections_total"):  # fmt: skip
        assert name in text, name
    preflight = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/predict", headers=preflight).headers
    with serving(recognizer, cors_origins=["http://example.test"]) as cors:
        allowed = cors.options("/v1/predict", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "http://example.test"


class _SlowRecognizer:
    """Wraps a recognizer: counts model calls and makes each one slow."""

    def __init__(self, rec: EmotionRecognizer, delay: float) -> None:
        self._rec, self.delay, self.calls, self.sizes = rec, delay, 0, []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self._rec, name)

    def probabilities(self, pixel_values: np.ndarray) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.sizes.append(len(pixel_values))
        time.sleep(self.delay)
        return self._rec.probabilities(pixel_values)


def test_micro_batching_groups_concurrent_requests(recognizer: EmotionRecognizer) -> None:
    slow = _SlowRecognizer(recognizer, 0.2)
    with serving(slow, max_batch=16, max_wait_ms=100) as client:  # type: ignore[arg-type]
        slow.calls, slow.sizes = 0, []
        files = [("files", ("a.png", _png(), "image/png"))]
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: client.post("/v1/predict", files=files).status_code, range(8)))
        assert statuses == [200] * 8
        assert slow.calls < 8 and max(slow.sizes) > 1


def test_overload_and_deadline(recognizer: EmotionRecognizer) -> None:
    slow = _SlowRecognizer(recognizer, 0.5)
    with serving(slow, max_batch=1, max_wait_ms=0, max_queue=1, retry_after_s=2) as client:  # type: ignore[arg-type]
        files = [("files", ("a.png", _png(), "image/png"))]
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: client.post("/v1/predict", files=files), range(6)))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes
        rejected = next(r for r in responses if r.status_code == 503)
        assert rejected.headers["retry-after"] == "2"
        assert rejected.json()["error"]["code"] == "overloaded"
    with serving(_SlowRecognizer(recognizer, 1.0), deadline_s=0.3) as client:  # type: ignore[arg-type]
        _assert_error(
            client.post("/v1/predict", files=[("files", ("a.png", _png(), "image/png"))]), 504, "deadline"
        )


def test_faces_through_the_api(tiny_model_dir: Path) -> None:
    from .conftest import SHARED, require_shared

    yunet = require_shared(SHARED / "models" / "face_detection_yunet_2023mar.onnx")
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", detector_model=yunet)
    photo = (Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg").read_bytes()
    with serving(rec) as client:
        result = client.post("/v1/predict", files=[("files", ("astronaut.jpg", photo, "image/jpeg"))]).json()
        (face,) = result["results"][0]["faces"]
        assert len(face["landmarks"]) == 5 and face["detection_score"] > 0.5
        x1, y1, x2, _ = face["box"]
        assert 150 < x1 < 200 and 40 < y1 < 90 and x2 - x1 > 60
        whole = client.post(
            "/v1/predict?detector=none", files=[("files", ("a.jpg", photo, "image/jpeg"))]
        ).json()
        assert whole["results"][0]["faces"][0]["box"] == [0, 0, 512, 512]


def test_openapi_conformance(recognizer: EmotionRecognizer) -> None:
    """Schemathesis against the app's own OpenAPI, in-process, every operation: no server
    errors, documented status codes, content types and response schemas. (Random bytes are
    valid 'binary' in the schema but not images, so positive_data_acceptance is left out.)"""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    app = create_app(recognizer, ServeSettings(max_body_bytes=256 * 1024))
    with TestClient(app) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {
            "/v1/predict",
            "/v1/models",
            "/livez",
            "/readyz",
            "/metrics",
        }
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case: object) -> None:
                case.call_and_validate(excluded_checks=[positive_data_acceptance])  # type: ignore[attr-defined]

            check()
