"""Fuzzing the service's inputs: the multipart parser alone, then whole requests (mutated
multipart bodies and arbitrary JSON bodies) against the app in-process. Whatever comes in,
the answer is 200 or a JSON 4xx — never a 500, never an exception escaping.

Bounded like tests/test_fuzz.py (``EMOVIT_FUZZ_EXAMPLES`` per property, derandomised in CI)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
hypothesis = pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (the dev extra)")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from emovit import EmotionRecognizer  # noqa: E402
from emovit.serve import ServeSettings, create_app  # noqa: E402
from emovit.serve._multipart import MultipartError, parse_multipart  # noqa: E402

from .test_fuzz import FUZZ, encoded  # noqa: E402

BOUNDARY = "emovitfuzzboundary"


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    """A valid multipart body of fuzzed images, then possibly mutated (bytes flipped, cut,
    inserted): malformed framing, odd names, broken images."""
    names = st.text(st.characters(codec="utf-8", exclude_characters='"\r\n'), max_size=20)
    parts = draw(
        st.lists(
            st.tuples(st.sampled_from(["files", "other"]), st.one_of(st.none(), names), encoded()), max_size=4
        )
    )
    body = bytearray(_multipart(parts))
    for _ in range(draw(st.integers(0, 3))):
        if not body:
            break
        kind = draw(st.integers(0, 2))
        where = draw(st.integers(0, len(body) - 1))
        if kind == 0:
            body[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1:
            body = body[:where]
        else:
            body[where:where] = draw(st.binary(max_size=16))
    return bytes(body)


@FUZZ
@given(multipart_bodies(), st.sampled_from([BOUNDARY, "", "other", BOUNDARY[:-1]]))
def test_multipart_parser_returns_parts_or_raises_multipart_error(body: bytes, boundary: str) -> None:
    try:
        parts = parse_multipart(body, f"multipart/form-data; boundary={boundary}")
    except MultipartError:
        return
    assert all(isinstance(part.data, bytearray) for part in parts)


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path) -> Iterator[TestClient]:
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", detector="none")
    app = create_app(rec, ServeSettings(max_body_bytes=2_000_000, max_pixels=4_000_000))
    with contextlib.ExitStack() as stack:
        test_client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
        for _ in range(200):
            if test_client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        yield test_client


def _assert_answered(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status == 200 or 400 <= status < 500, (status, response.text)  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert ("results" in body) if status == 200 else ("error" in body)


@FUZZ
@given(multipart_bodies())
def test_any_multipart_request_is_answered(client: TestClient, body: bytes) -> None:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    _assert_answered(client.post("/v1/predict", content=body, headers=headers))


# (JSON has no NaN or infinity: a client cannot send them, so they are not fuzzed)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> object:
    """Arbitrary JSON, or the API's shape with fuzzed base64 data and names."""
    if draw(st.booleans()):
        return draw(json_values)
    images = st.fixed_dictionaries(
        {"data": st.one_of(st.text(max_size=40), st.binary(max_size=60).map(lambda b: b.hex()))},
        optional={"name": st.one_of(st.none(), st.text(max_size=20), st.integers())},
    )
    return {"images": draw(st.lists(images, max_size=3))}


@FUZZ
@given(json_bodies())
def test_any_json_request_is_answered(client: TestClient, body: object) -> None:
    _assert_answered(client.post("/v1/predict", json=body))
