"""The HTTP API in-process: schemas, partial results, error codes, token, limits, headers,
micro-batching."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient

from emovit import EMOTIONS, EmotionRecognizer
from emovit.errors import OptionError
from emovit.faces import FaceOptions
from emovit.serve import ServeSettings, create_app, get_state

from .conftest import REPO, SHARED, onnx_only_default, require_shared

YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"


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
    assert body["error"]["request_id"] == response.headers["x-request-id"]
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
        (b"hello, not an image", 415, "unsupported_format"),
        (_png()[:60], 422, "corrupt_image"),
        (b"", 422, "empty_file"),
    ],
    ids=["text", "truncated", "empty"],
)
def test_bad_images(client: TestClient, content: bytes, status: int, code: str) -> None:
    """A request whose every image fails keeps the first failure's status and code."""
    response = client.post("/v1/predict", files=[("files", ("bad.png", content, "image/png"))])
    _assert_error(response, status, code)
    assert "bad.png" in response.json()["error"]["message"]


def test_partial_results(client: TestClient) -> None:
    """One readable image is enough for a 200: the others report why they failed, in order."""
    files = [
        ("files", ("good.png", _png(seed=3), "image/png")),
        ("files", ("notes.txt", b"hello, not an image", "text/plain")),
        ("files", ("cut.png", _png()[:60], "image/png")),
    ]
    response = client.post("/v1/predict", files=files)
    assert response.status_code == 200, response.text
    good, text, cut = response.json()["results"]
    assert good["ok"] and good["error_code"] is None and len(good["faces"]) == 1
    assert [text["source"], cut["source"]] == ["notes.txt", "cut.png"]
    assert (text["ok"], text["error_code"], text["error_stage"]) == (False, "unsupported_format", "decode")
    assert (cut["ok"], cut["error_code"], cut["error_stage"]) == (False, "corrupt_image", "decode")
    assert text["error"].startswith("notes.txt: ") and text["faces"] == [] and text["label"] is None
    assert "image_errors_total" in client.get("/metrics").text


def test_every_image_failing_names_the_first(client: TestClient) -> None:
    files = [
        ("files", ("cut.png", _png()[:60], "image/png")),
        ("files", ("notes.txt", b"hello, not an image", "text/plain")),
    ]
    response = client.post("/v1/predict", files=files)
    _assert_error(response, 422, "corrupt_image")
    assert response.json()["error"]["message"].startswith("cut.png: ")
    assert "1 more image(s) failed" in response.json()["error"]["message"]


def test_too_many_pixels_is_per_image(recognizer: EmotionRecognizer) -> None:
    with serving(recognizer, max_pixels=1000) as client:
        files = [("files", ("small.png", _png((20, 20)), "image/png")),
                 ("files", ("big.png", _png((40, 40)), "image/png"))]  # fmt: skip
        small, big = client.post("/v1/predict", files=files).json()["results"]
        assert small["ok"] and (big["ok"], big["error_code"]) == (False, "too_many_pixels")


def test_the_pixels_of_a_whole_request_are_capped_before_decoding(recognizer: EmotionRecognizer) -> None:
    """The per-image limit let 16 small files that decode to huge flat images through (a 72 kB
    PNG can be 25 megapixels): the request's total, from the headers, is capped too."""
    with serving(recognizer, max_pixels=1000, max_request_pixels=1500) as client:
        one = [("files", ("a.png", _png((30, 30)), "image/png"))]
        assert client.post("/v1/predict", files=one).status_code == 200
        two = [*one, ("files", ("b.png", _png((30, 30)), "image/png"))]
        _assert_error(client.post("/v1/predict", files=two), 413, "too_many_pixels")
        message = client.post("/v1/predict", files=two).json()["error"]["message"]
        assert "1,800 pixels in all" in message and "the largest, b.png, 900" in message
        # an image over the per-image limit is its own error row, not counted in the total
        big = [*one, ("files", ("big.png", _png((40, 40)), "image/png"))]
        answer = client.post("/v1/predict", files=big)
        assert answer.status_code == 200, answer.text
        small, refused = answer.json()["results"]
        assert small["ok"] and (refused["ok"], refused["error_code"]) == (False, "too_many_pixels")


def test_a_bad_base64_image_is_its_own_error_row(client: TestClient) -> None:
    good = base64.b64encode(_png()).decode("ascii")
    images = [{"data": good, "name": "a.png"}, {"data": "not base64!!", "name": "bad.png"}, {"data": good}]
    answer = client.post("/v1/predict", json={"images": images})
    assert answer.status_code == 200, answer.text
    first, bad, third = answer.json()["results"]
    assert first["ok"] and third["ok"] and first["source"] == "a.png"
    assert (bad["ok"], bad["error_code"], bad["error_stage"]) == (False, "bad_base64", "decode")
    assert bad["source"] == "bad.png" and "bad.png: invalid base64" in bad["error"]
    # as people send it: wrapped at 76 columns (`base64 FILE`), or a data URL (canvas.toDataURL)
    wrapped = "\n".join(good[i : i + 76] for i in range(0, len(good), 76))
    as_sent = [{"data": wrapped}, {"data": f"data:image/png;base64,{good}"}]
    answer = client.post("/v1/predict", json={"images": as_sent})
    assert [r["ok"] for r in answer.json()["results"]] == [True, True], answer.text


def test_results_carry_real_stage_timings(client: TestClient) -> None:
    """The model stage runs in the batcher (`infer`), yet each image reports its own times."""
    files = [("files", (f"{i}.png", _png(seed=i), "image/png")) for i in range(3)]
    for result in client.post("/v1/predict", files=files).json()["results"]:
        timings = result["timings_ms"]
        assert {"decode", "detect", "preprocess", "inference"} <= set(timings), timings
        assert timings["inference"] > 0 and timings["decode"] > 0


def test_names_are_sanitised(client: TestClient) -> None:
    files = [
        ("files", ("../../etc/evil.png", _png(), "image/png")),
        ("files", ("C:\\Users\\me\\photo.png", _png(), "image/png")),
    ]
    results = client.post("/v1/predict", files=files).json()["results"]
    assert [r["source"] for r in results] == ["evil.png", "photo.png"]
    data = base64.b64encode(_png()).decode()
    payload = {"images": [{"data": data, "name": "/tmp/a\x00\x1b[31mb.png"}, {"data": data, "name": "\n"}]}
    results = client.post("/v1/predict", json=payload).json()["results"]
    assert [r["source"] for r in results] == ["a[31mb.png", "image 1"]


def test_wide_strip_with_yunet_is_one_failed_image(tiny_model_dir: Path) -> None:
    """The 2600x1 strip that crashed YuNet fails alone: a face photo, the strip and a corrupt
    file answer 200 with three results (no_face="raise" makes a faceless image an error)."""
    if not YUNET.is_file():
        pytest.skip(f"{YUNET} is missing: the wide-strip case needs the YuNet detector")
    faces = FaceOptions(detector="yunet", detector_model=YUNET, no_face="raise")
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", faces=faces)
    strip = io.BytesIO()
    Image.new("RGB", (2600, 1), (120, 90, 60)).save(strip, "PNG")
    files = [
        ("files", ("face.jpg", (REPO / "examples" / "astronaut_face.jpg").read_bytes(), "image/jpeg")),
        ("files", ("strip.png", strip.getvalue(), "image/png")),
        ("files", ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg")),
    ]
    with serving(rec) as client:
        response = client.post("/v1/predict", files=files)
    assert response.status_code == 200, response.text
    face, wide, broken = response.json()["results"]
    assert face["ok"] and len(face["faces"]) >= 1 and face["timings_ms"]["inference"] > 0
    assert (wide["ok"], wide["error_code"], wide["error_stage"]) == (False, "no_face", "detect")
    assert wide["image_size"] == [2600, 1]
    assert broken["ok"] is False and broken["error_code"] in ("corrupt_image", "unsupported_format")


def test_bad_requests(client: TestClient) -> None:
    _assert_error(client.post("/v1/predict", content=b"xx", headers={"content-type": "text/plain"}), 415,
                  "unsupported_media_type")  # fmt: skip
    _assert_error(
        client.post("/v1/predict", files=[("other", ("a.png", _png(), "image/png"))]), 422, "no_images"
    )
    _assert_error(client.post("/v1/predict", json={"images": [{"data": "***"}]}), 422, "bad_base64")
    _assert_error(client.post("/v1/predict", json={"nope": 1}), 422, "bad_request")
    # a malformed or empty JSON body: one short line naming where, never the body echoed back
    json_headers = {"content-type": "application/json"}
    cut = client.post("/v1/predict", content=b'{"images": [{"data": "c2VjcmV0', headers=json_headers)
    _assert_error(cut, 422, "bad_request")
    message = cut.json()["error"]["message"]
    assert message.startswith("invalid JSON body: body: Invalid JSON") and "c2VjcmV0" not in message
    assert "pydantic" not in message and "\n" not in message
    empty = client.post("/v1/predict", json={"images": []})
    _assert_error(empty, 422, "bad_request")
    said = empty.json()["error"]["message"]
    assert said.startswith("invalid JSON body: body.images: List should have at least 1")
    assert (
        client.post("/v1/predict?top_k=0", files=[("files", ("a.png", _png(), "image/png"))]).status_code
        == 422
    )


def test_limits(recognizer: EmotionRecognizer) -> None:
    with serving(recognizer, max_body_bytes=2000, max_pixels=1000, max_images=2) as client:
        big = _png((100, 100))
        refused = client.post("/v1/predict", files=[("files", ("big.png", big, "image/png"))])
        _assert_error(refused, 413, "body_too_large")
        assert "over 0.00191 MiB (2,000 bytes)" in refused.json()["error"]["message"]  # was 0.00190735
        buffer = io.BytesIO()
        Image.new("RGB", (40, 40), (90, 90, 90)).save(buffer, "PNG")
        many = buffer.getvalue()  # a few hundred bytes, but 1,600 pixels > 1,000
        assert len(many) < 2000
        _assert_error(client.post("/v1/predict", files=[("files", ("px.png", many, "image/png"))]), 413,
                      "too_many_pixels")  # fmt: skip
        small = _png((10, 10))
        three = [("files", (f"{i}.png", small, "image/png")) for i in range(3)]
        _assert_error(client.post("/v1/predict", files=three), 413, "too_many_images")


def test_state_is_typed(client: TestClient, recognizer: EmotionRecognizer) -> None:
    state = get_state(client.app)
    assert state.ready and state.recognizer is recognizer and not state.shutting_down
    state.begin_shutdown()
    assert client.get("/readyz").status_code == 503
    _assert_error(client.post("/v1/predict", files=[("files", ("a.png", _png(), "image/png"))]), 503,
                  "shutting_down")  # fmt: skip
    with pytest.raises(TypeError):
        get_state(object())


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


def test_behind_a_proxy_prefix_the_gates_still_apply(
    recognizer: EmotionRecognizer, tiny_model_dir: Path
) -> None:
    """uvicorn's --root-path puts the prefix in scope["path"] too: the token gate, the shutdown
    gate and the body limits compared that path with "/v1/" and let every request through."""
    from emovit.imageio import declared_pixels

    app = create_app(recognizer, ServeSettings(token="s3cret"))
    with TestClient(app, root_path="/api") as client:
        for _ in range(200):
            if client.get("/api/readyz").status_code == 200:
                break
            time.sleep(0.05)
        files = [("files", ("a.png", _png(), "image/png"))]
        _assert_error(client.post("/api/v1/predict", files=files), 401, "unauthorized")
        answer = client.post("/api/v1/predict", files=files, headers={"Authorization": "Bearer s3cret"})
        assert answer.status_code == 200, answer.text[:200]
        # answers name the model as /v1/models does: never the server's folder
        assert answer.json()["model"] == tiny_model_dir.name
        metrics = client.get("/api/metrics").text
        assert 'emovit_request_seconds_count{path="/v1/predict"} 1.0' in metrics
    # the pixel budget reads headers as the decoder does: an EPS header is no image of emovit's
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8000 8000\n%%EndComments\n"
    assert declared_pixels(eps) == 0 and declared_pixels(_png((30, 20))) == 600


def test_explanations_from_an_onnx_only_model_are_not_available(tmp_path: Path) -> None:
    """The server's installation cannot explain, whatever the request: 501 before the body is
    read (it was a 422 "bad request" naming the server's folder)."""
    folder = onnx_only_default(tmp_path / "onnx only")
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none")
    with serving(rec) as client:
        files = [("files", ("a.png", _png(), "image/png"))]
        answer = client.post("/v1/predict?explain=true", files=files)
        _assert_error(answer, 501, "not_available")
        assert str(tmp_path) not in answer.text
        assert client.post("/v1/predict", files=files).status_code == 200  # plain requests go on


def test_headers_metrics_and_cors(client: TestClient, recognizer: EmotionRecognizer) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "emovit" in page.text
    assert client.head("/").status_code == 200  # uptime probes ask with HEAD (it was 405)
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


def test_favicon_and_api_docs_page(client: TestClient, recognizer: EmotionRecognizer) -> None:
    icon = client.get("/favicon.ico")  # browsers ask for it: it was a 404 in every page load's log
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert 'rel="icon" href="/static/favicon.svg"' in client.get("/").text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "SwaggerUIBundle" in docs.text and "url: '/openapi.json'" in docs.text
    # offline, the CDN's script never replaces the element's content: the schema's address stays
    assert "could not load" in docs.text and '<a href="/openapi.json">' in docs.text
    assert "fastapi.tiangolo.com" not in docs.text  # no third-party icon fetched from our page
    assert client.get("/openapi.json").json()["info"]["title"] == "emovit"
    with TestClient(create_app(recognizer), root_path="/api") as proxied:  # behind a proxy prefix
        assert '<a href="/api/openapi.json">' in proxied.get("/api/docs").text


class _SlowRecognizer:
    """Wraps a recognizer: counts model stage calls (`infer`, what the batcher runs) and the
    faces in each, and makes each one slow."""

    def __init__(self, rec: EmotionRecognizer, delay: float) -> None:
        self._rec, self.delay, self.calls, self.sizes = rec, delay, 0, []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self._rec, name)

    def infer(self, batches: list) -> list:
        with self._lock:
            self.calls += 1
            self.sizes.append(sum(len(batch.faces) for batch in batches))
        time.sleep(self.delay)
        return self._rec.infer(batches)


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


def test_a_busy_job_kind_says_when_its_running_job_should_end() -> None:
    """Retry-After of a full JobSlots: the server's floor until a job has ended, then what is
    left of the running job by the moving average of the jobs' times, at most MAX_RETRY_AFTER_S."""
    import asyncio

    from emovit.serve.errors import ApiError
    from emovit.serve.state import JobSlots

    now = [100.0]
    slots = JobSlots("explain", 1, clock=lambda: now[0])

    def retry_after() -> int:
        with pytest.raises(ApiError) as caught:
            slots.take(1)
        wait = caught.value.headers["Retry-After"]
        assert caught.value.status == 503 and caught.value.code == "overloaded"
        assert caught.value.message.endswith(f"busy with another explain job, retry in about {wait} s")
        return int(wait)

    def takes(seconds: float) -> None:  # a job that lasts `seconds` on the fake clock
        now[0] += seconds

    async def while_running(*moves: float) -> list[int]:
        """Retry-After while a job runs, after each move of the fake clock."""
        release = threading.Event()
        with slots.take(1) as slot:
            running = slot.submit(release.wait, 10)
        seen = []
        for move in moves:
            now[0] += move
            seen.append(retry_after())
        release.set()
        await running
        await asyncio.sleep(0.05)  # the slot comes back through the loop
        return seen

    async def scenario() -> None:
        with slots.take(1):  # taken, not yet running: nothing to go by
            assert retry_after() == 1
        assert await while_running(0.0) == [1]  # no job has ended yet
        assert slots.typical_s == pytest.approx(0.0, abs=1e-9)
        with slots.take(1) as slot:
            await slot.submit(takes, 10.0)
        await asyncio.sleep(0.05)
        assert slots.busy == 0 and slots.typical_s == pytest.approx(3.0)  # 0.7 * 0 + 0.3 * 10
        assert await while_running(0.0, 1.5, 30.0) == [3, 2, 1]  # 3 s, 1.5 left, overdue: the floor
        assert slots.typical_s == pytest.approx(0.7 * 3.0 + 0.3 * 31.5)
        with slots.take(1) as slot:
            await slot.submit(takes, 1000.0)
        await asyncio.sleep(0.05)
        assert await while_running(0.0) == [JobSlots.MAX_RETRY_AFTER_S]
        assert slots.busy == 0 and not slots._running

    asyncio.run(scenario())
    slots.close()


def test_loading_the_explainer_is_not_charged_to_the_first_explain_requests_deadline(
    recognizer: EmotionRecognizer,
) -> None:
    """The first explain=true builds the explainer (an onnx server loads its torch weights then,
    seconds on a busy machine): that one-off start-up cost ran inside the request's deadline,
    and the first explain request could answer 504."""

    class SlowLoad:
        loads = 0

        def __init__(self, rec: EmotionRecognizer) -> None:
            self._rec = rec

        def __getattr__(self, name: str) -> object:
            return getattr(self._rec, name)

        def explainer(self, method: str = "auto") -> object:
            if method not in self._rec._explainers:
                SlowLoad.loads += 1
                time.sleep(1.0)
            return self._rec.explainer(method)  # type: ignore[arg-type]

    with serving(SlowLoad(recognizer), deadline_s=0.8) as client:  # type: ignore[arg-type]
        files = [("files", ("a.png", _png(), "image/png"))]
        answer = client.post("/v1/predict?explain=true&detector=none", files=files)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["faces"][0]["explanation"]
    assert SlowLoad.loads == 1


def test_a_request_past_its_deadline_stops_decoding_and_detecting(tiny_model_dir: Path) -> None:
    """After a 504 the request's thread went on decoding and detecting all of its images (a
    worker's time for nobody); it now stops at the next image."""
    from emovit.faces import Detection

    class Slow:
        name = "slow"
        calls = 0

        def detect(self, image: np.ndarray) -> list[Detection]:
            Slow.calls += 1
            time.sleep(0.25)
            return [Detection((0.0, 0.0, 20.0, 20.0))]

    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", faces=FaceOptions(detector=Slow()))
    files = [("files", (f"{i}.png", _png(seed=i), "image/png")) for i in range(12)]
    with serving(rec, deadline_s=0.3) as client:
        Slow.calls = 0  # the warm-up detects nothing (detector none)
        _assert_error(client.post("/v1/predict", files=files), 504, "deadline")
        time.sleep(1.5)  # 12 images x 0.25 s: the whole request would take 3 s
    assert Slow.calls <= 3, Slow.calls  # the one under way when the deadline passed, and one more at most


class _GatedRecognizer:
    """Wraps a recognizer: once `hold` is called (after the server's warm-up), counts `prepare`
    calls (decode and detect) and holds the model stage until `gate` is set."""

    def __init__(self, rec: EmotionRecognizer) -> None:
        self._rec, self.prepared, self.holding = rec, 0, False
        self.gate, self.inferring = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._rec, name)

    def hold(self) -> None:
        self.prepared, self.holding = 0, True

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        self.prepared += 1
        return self._rec.prepare(*args, **kwargs)

    def infer(self, batches: list) -> list:
        if self.holding:
            self.inferring.set()
            assert self.gate.wait(30)
        return self._rec.infer(batches)


def _until(condition: Any, what: str) -> None:
    for _ in range(600):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def test_a_full_queue_answers_503_before_decoding(recognizer: EmotionRecognizer) -> None:
    """Overload is rejected before the body is decoded: with the model busy and the queue
    full, a third request costs no decoding or face detection."""

    gated = _GatedRecognizer(recognizer)
    with serving(gated, max_batch=1, max_wait_ms=0, max_queue=1) as client:  # type: ignore[arg-type]
        batcher = get_state(client.app).require_ready()[1]
        gated.hold()
        files = [("files", ("a.png", _png(), "image/png"))]
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, "/v1/predict", files=files)
            _until(gated.inferring.is_set, "the model holds the first request")
            second = pool.submit(client.post, "/v1/predict", files=files)
            _until(lambda: batcher.full, "the second request waits in the queue")
            _assert_error(client.post("/v1/predict", files=files), 503, "overloaded")
            assert gated.prepared == 2
            gated.gate.set()
            assert first.result().status_code == second.result().status_code == 200


def test_faces_through_the_api(tiny_model_dir: Path) -> None:
    yunet = require_shared(YUNET)
    faces = FaceOptions(detector="yunet", detector_model=yunet)
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", faces=faces)
    photo = (REPO / "examples" / "astronaut.jpg").read_bytes()
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


def test_faces_per_image_are_capped_by_the_app_unless_the_recognizer_caps_them(tiny_model_dir: Path) -> None:
    """The cap of 64 faces lived in `emovit serve`: an app built with `create_app` classified
    every face of a crowd's photo in one request."""
    from emovit.faces import Detection

    class Crowd:
        name = "crowd"

        def detect(self, image: np.ndarray) -> list[Detection]:
            return [Detection((4.0 * i, 0.0, 4.0 * i + 20 + i, 20.0 + i)) for i in range(5)]

    photo = _png((60, 60))
    for own, settings, expected in ((None, {}, 5), (None, {"max_faces": 2}, 2), (3, {"max_faces": 2}, 3)):
        faces = FaceOptions(detector=Crowd(), min_face=1, max_faces=own)
        rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", faces=faces)
        with serving(rec, **settings) as client:
            result = client.post("/v1/predict", files=[("files", ("crowd.png", photo, "image/png"))]).json()
        widths = [face["box"][2] - face["box"][0] for face in result["results"][0]["faces"]]
        assert len(widths) == expected and widths == sorted(widths, reverse=True)  # the largest
    assert ServeSettings().max_faces == 64
    with pytest.raises(OptionError, match="max_faces must be at least 1"):  # it failed the model's load
        ServeSettings(max_faces=0)


def test_every_openapi_reference_resolves(client: TestClient) -> None:
    """The JSON request body referred to PredictRequest, which was not in the components: /docs
    and client generators failed on it."""
    document = client.get("/openapi.json").json()
    refs: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            refs.update(v for k, v in node.items() if k == "$ref" and isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    schemas = document["components"]["schemas"]
    assert "#/components/schemas/PredictRequest" in refs
    assert sorted(ref for ref in refs if ref.rsplit("/", 1)[-1] not in schemas) == []
    # GET and HEAD of /livez and /readyz shared one operationId (FastAPI warned on every load
    # of the schema; client generators refuse duplicates)
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), ids
    assert {"get", "head"} <= set(document["paths"]["/readyz"])  # probes may HEAD them: documented


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


def test_the_model_worker_skips_jobs_whose_requests_gave_up() -> None:
    """Requests that timed out (504) left their jobs in the queue, and the worker ran the model
    on them for nobody (holding their pixels and the queue's room meanwhile)."""
    import asyncio
    from types import SimpleNamespace

    from emovit.serve.batcher import MicroBatcher

    gate, calls = threading.Event(), []

    def infer(batches: list) -> list:
        calls.append(len(batches))
        assert gate.wait(10)
        return [[] for _ in batches]

    batcher = MicroBatcher(infer, max_batch=1, max_wait_ms=0, max_queue=8)
    batcher.start()

    async def scenario() -> None:
        job = SimpleNamespace(faces=[1])
        first = asyncio.ensure_future(batcher.submit(job))  # type: ignore[arg-type]
        while not calls:  # the worker holds the first job
            await asyncio.sleep(0.01)
        for _ in range(3):  # these give up while they wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batcher.submit(job), timeout=0.05)  # type: ignore[arg-type]
        gate.set()
        assert await first == []
        assert await batcher.submit(job) == []  # type: ignore[arg-type]

    asyncio.run(scenario())
    batcher.stop(drain_timeout=1)
    assert calls == [1, 1]  # the first job and the last: none of the three abandoned ones


def test_a_non_ascii_token_and_a_capitalised_media_type_are_read_as_sent(
    recognizer: EmotionRecognizer,
) -> None:
    """The header was decoded as latin-1 and encoded again as UTF-8: a correct UTF-8 token got
    401. Media types are case-blind: Multipart/Form-Data got 415."""
    with serving(recognizer, token="pässwort") as client:
        body, headers = _multipart_body()
        wrong = client.post("/v1/predict", content=body, headers=headers | {"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        right = {
            "Authorization": "Bearer pässwort".encode(),
            "Content-Type": headers["Content-Type"].replace("multipart/form-data", "Multipart/Form-Data"),
        }
        answered = client.post("/v1/predict", content=body, headers=right)  # type: ignore[arg-type]
        assert answered.status_code == 200, answered.text


def _multipart_body() -> tuple[bytes, dict[str, str]]:
    boundary = "emovit-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + _png()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_server_whose_model_fails_to_load_stops_and_says_why(tmp_path: Path) -> None:
    """It went on answering /livez 200 and /readyz 503 for ever: a supervisor never restarted
    it, and the command never ended. It now exits 2 with the reason."""
    import subprocess
    import sys

    pytest.importorskip("uvicorn")
    broken = tmp_path / "broken model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "vit"}')  # no weights
    done = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "serve", "--model", str(broken), "--port", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "failed to load" in done.stderr and "safetensors" in done.stderr


def test_probes_schema_auth_and_cors_as_clients_use_them(recognizer: EmotionRecognizer) -> None:
    """HEAD /livez and /readyz were 405; /readyz's 503 and the bearer scheme were missing from
    the schema (/docs had no Authorize button); a browser could not send X-Request-ID through
    CORS; "Bearer  token" (RFC 7235 allows more than one space) was refused."""
    with serving(recognizer, token="s3cret", cors_origins=["http://example.test"]) as client:
        assert client.head("/livez").status_code == 200 and client.head("/readyz").status_code == 200
        schema = client.get("/openapi.json").json()
        assert "503" in schema["paths"]["/readyz"]["get"]["responses"]
        assert schema["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
        assert schema["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in schema["paths"]["/livez"]["get"]
        preflight = {
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-request-id",
        }
        assert client.options("/v1/predict", headers=preflight).status_code == 200
        files = [("files", ("a.png", _png(), "image/png"))]
        spaced = client.post("/v1/predict", files=files, headers={"Authorization": "Bearer  s3cret"})
        assert spaced.status_code == 200, spaced.text[:200]
        assert (
            client.post("/v1/predict", files=files, headers={"Authorization": "Bearer s3cre"}).status_code
            == 401
        )
    with serving(recognizer) as open_server:  # no token: no scheme claimed
        assert "securitySchemes" not in open_server.get("/openapi.json").json()["components"]


def test_a_server_stopped_while_its_model_loads_starts_no_worker(recognizer: EmotionRecognizer) -> None:
    """Stopped during loading, the lifespan found no worker to stop and returned; the loading
    thread then warmed the model up and started a worker nobody stopped (the process aborted at
    exit, "terminate called without an active exception"). Shutdown now waits for the loading,
    which starts no worker once shutdown has begun."""
    release = threading.Event()

    def slow_factory() -> EmotionRecognizer:
        release.wait(10)
        return recognizer

    app = create_app(slow_factory, ServeSettings(drain_timeout_s=10))
    state = get_state(app)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        threading.Timer(0.3, release.set).start()  # the load ends while the shutdown waits for it
    release.wait(10)
    time.sleep(1.0)  # whatever the loading thread does after the load, it has done by now
    assert state.shutting_down and not state.ready
    assert state.batcher is None or not state.batcher.alive


def test_the_body_is_parsed_off_the_event_loop(
    recognizer: EmotionRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body of many tiny parts takes seconds to split; it was split on the event loop, so
    every other request (/livez too) waited. While one body's parsing is held here, /livez
    answers."""
    from emovit.serve import _multipart

    parse, entered, gate, released = _multipart.parse_multipart, *(threading.Event() for _ in range(3))

    def held(body: bytes, content_type: str, **options: Any) -> list:
        entered.set()
        gate.wait(10)
        released.set()
        return parse(body, content_type, **options)

    monkeypatch.setattr(_multipart, "parse_multipart", held)
    with serving(recognizer) as client, ThreadPoolExecutor(1) as pool:
        upload = pool.submit(client.post, "/v1/predict", files=[("files", ("a.png", _png(), "image/png"))])
        assert entered.wait(20)
        assert client.get("/livez").status_code == 200
        assert not released.is_set()  # /livez answered while the parsing was still held
        gate.set()
        assert upload.result().status_code == 200


def test_a_multipart_body_cut_before_its_closing_boundary_is_refused(client: TestClient) -> None:
    """It was accepted: the cut file became a corrupt_image row, as if the client had sent a
    broken image, when the request itself was incomplete."""
    body, headers = _multipart_body()
    cut = body[: body.rindex(b"\r\n--")]  # the whole image, but no closing boundary
    _assert_error(client.post("/v1/predict", content=cut, headers=headers), 422, "bad_request")
    assert (
        "closing boundary"
        in client.post("/v1/predict", content=cut, headers=headers).json()["error"]["message"]
    )
    assert client.post("/v1/predict", content=body, headers=headers).status_code == 200


def test_multipart_splitting_stops_at_the_first_part_over_the_limit() -> None:
    """The body was split whole before the image count was checked: thousands of tiny parts
    cost seconds first. Splitting now stops at the first part over the limit: here, what
    follows it is not even valid multipart."""
    from emovit.serve._multipart import MultipartError, TooManyPartsError, parse_multipart

    boundary = "b0undary"
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'
            "data\r\n").encode()  # fmt: skip
    content_type = f"multipart/form-data; boundary={boundary}"
    body = part * 3 + b"\x00 no closing boundary"
    with pytest.raises(TooManyPartsError):
        parse_multipart(body, content_type, max_parts=2)
    with pytest.raises(MultipartError):  # without a limit it is read to the end, and refused
        parse_multipart(body, content_type)
    other = part.replace(b'name="files"', b'name="note"')
    parts = parse_multipart(part + other * 3 + f"--{boundary}--\r\n".encode(), content_type, max_parts=1)
    assert [p.name for p in parts] == ["files", "note", "note", "note"]  # only 'files' is counted
    # ... up to a few form fields: a body of thousands of parts of another name stops early too
    with pytest.raises(TooManyPartsError) as caught:
        parse_multipart(other * 40 + b"\x00 no closing boundary", content_type, max_parts=2)
    assert not caught.value.counted and "more than 18 parts in all" in str(caught.value)


def test_a_body_of_many_form_fields_or_none_at_all_is_refused_clearly(client: TestClient) -> None:
    boundary = "b0undary"
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n'.encode()
    answer = client.post("/v1/predict", content=field * 200 + f"--{boundary}--\r\n".encode(), headers=headers)
    _assert_error(answer, 422, "bad_request")
    assert "parts in all" in answer.json()["error"]["message"]
    _assert_error(client.post("/v1/predict", content=b"", headers=headers), 422, "no_images")


def test_readyz_and_requests_say_when_the_model_worker_has_stopped(recognizer: EmotionRecognizer) -> None:
    """/readyz answered 200 with no model worker left: every request then waited for its 504."""
    with serving(recognizer) as client:
        batcher = get_state(client.app).batcher
        assert batcher is not None and batcher.alive
        batcher.stop(0)
        assert not batcher.alive
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "worker" in ready.text
        _assert_error(client.post("/v1/predict", files=[("files", ("a.png", _png(), "image/png"))]), 503,
                      "not_ready")  # fmt: skip


def test_stopping_with_a_full_queue_answers_the_queued_work_and_returns() -> None:
    """`stop` put its end marker on the queue with a blocking put: with the queue full (the
    worker busy past the drain time) the server's shutdown hung for ever."""
    import asyncio
    from types import SimpleNamespace

    from emovit.serve.batcher import MicroBatcher, QueueFullError

    gate, started = threading.Event(), threading.Event()

    def infer(batches: Any) -> list:
        started.set()
        gate.wait(20)
        return [[] for _ in batches]

    batcher = MicroBatcher(infer, max_batch=1, max_wait_ms=0, max_queue=1)
    batcher.start()

    async def main() -> None:
        first = asyncio.ensure_future(batcher.submit(SimpleNamespace(faces=[0])))  # type: ignore[arg-type]
        assert await asyncio.to_thread(started.wait, 10)  # the worker holds it
        queued = asyncio.ensure_future(batcher.submit(SimpleNamespace(faces=[0])))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert batcher.full
        try:
            await asyncio.wait_for(asyncio.to_thread(batcher.stop, 0.2), 5)
            with pytest.raises(QueueFullError):
                await asyncio.wait_for(queued, 5)
        finally:
            gate.set()
        assert await asyncio.wait_for(first, 5) == []

    asyncio.run(main())


def test_serve_flags_reach_the_settings(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_images, the request pixel budget, both body timeouts and the job counts had no flags."""
    from click.testing import CliRunner

    import emovit.serve
    from emovit.cli import main

    seen: dict[str, Any] = {}

    def capture(factory: Any, settings: ServeSettings) -> None:
        seen.update(s=settings, factory=factory)

    monkeypatch.setattr(emovit.serve, "create_app", capture)
    monkeypatch.setattr(emovit.serve, "run_server", lambda app, **kw: None)
    args = ["serve", "--model", str(tiny_model_dir), "--max-images", "3", "--max-request-megapixels", "2.5",
            "--body-timeout", "7", "--video-body-timeout", "90", "--max-video-jobs", "2",
            "--max-explain-jobs", "4"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--max-connections", "100"], env={"EMOVIT_TOKEN": "s3cret\n"})
    assert result.exit_code == 0, result.output
    settings = seen["s"]
    assert (settings.max_images, settings.max_request_pixels) == (3, 2_500_000)
    assert settings.max_faces == 64 and seen["factory"]().faces.max_faces is None  # the app's default
    assert (settings.body_timeout_s, settings.video_body_timeout_s) == (7.0, 90.0)
    assert (settings.max_video_jobs, settings.max_explain_jobs) == (2, 4)
    assert settings.max_connections == 100  # it had no flag
    assert settings.token == "s3cret"  # read from a file with its newline, no client could send it
    # a raised --max-pixels: the default request budget (50 MP) refused every image over it
    result = CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir), "--max-pixels", "120000000"])
    assert result.exit_code == 0, result.output
    assert (seen["s"].max_pixels, seen["s"].max_request_pixels, seen["s"].max_connections) == (
        120_000_000,
        120_000_000,
        None,
    )
    given = ["--max-pixels", "120000000", "--max-request-megapixels", "60"]  # a budget given stays
    assert CliRunner().invoke(main, ["serve", "--model", str(tiny_model_dir), *given]).exit_code == 0
    assert seen["s"].max_request_pixels == 60_000_000


def test_serve_on_a_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    """uvicorn logged the bind error and exited 3, the code of a bug, after loading the model."""
    import socket
    import subprocess
    import sys

    pytest.importorskip("uvicorn")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "emovit.cli", "serve", "--model", str(tmp_path / "never loaded"),
             "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--port" in done.stderr and f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_serve_ends_by_sigterm_after_draining(tiny_model_dir: Path) -> None:
    """With SIGTERM turned into an interruption for every command, the server drained and then
    exited 130 ("interrupted"): a supervisor took the stop for a failure."""
    import signal

    from .servers import start_server

    proc, _ = start_server(tiny_model_dir, "--detector", "none")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
