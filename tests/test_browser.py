"""The web page in a real browser: Playwright driving Debian's Chromium against `emovit serve`.

Needs /usr/bin/chromium (Debian package `chromium`; never `playwright install`) and the
`playwright` package; skipped with the reason otherwise. Screenshots go to
test-artifacts/browser/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO, SHARED, require_shared
from .servers import start_server

CHROMIUM = Path(os.environ.get("EMOVIT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts" / "browser"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[str]:
    yunet = require_shared(SHARED / "models" / "face_detection_yunet_2023mar.onnx")
    proc, url = start_server(tiny_model_dir, "--detector", "yunet", "--detector-model", str(yunet))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _y4m(path: Path, face: Path, frames: int = 12) -> Path:
    """A 640x480 Y4M video (the format Chromium's fake camera reads) showing `face`."""
    canvas = Image.new("RGB", (640, 480), (120, 130, 140))
    photo = Image.open(face).convert("RGB")
    photo.thumbnail((420, 420))
    canvas.paste(photo, ((640 - photo.width) // 2, (480 - photo.height) // 2))
    y, cb, cr = (np.asarray(c) for c in canvas.convert("YCbCr").split())
    u = np.asarray(Image.fromarray(cb).resize((320, 240), Image.BILINEAR))
    v = np.asarray(Image.fromarray(cr).resize((320, 240), Image.BILINEAR))
    with path.open("wb") as out:
        out.write(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n")
        for _ in range(frames):
            out.write(b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes())
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    video = _y4m(tmp_path_factory.mktemp("camera") / "face.y4m", REPO / "examples" / "astronaut.jpg")
    args = [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={video}",
    ]  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield instance
        instance.close()


def _until(condition: object, timeout: float = 10.0) -> None:
    """Poll `condition` from Python (the page's CSP forbids Playwright's in-page eval polling)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_upload_shows_boxes_and_labels(browser: object, server: str) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    page.set_input_files("#file-input", str(REPO / "examples" / "astronaut.jpg"))
    page.wait_for_selector("#faces-list .face-label", timeout=30_000)
    labels = page.locator("#faces-list .face-label").all_text_contents()
    assert len(labels) == 1 and labels[0].startswith("face 0: ")
    assert page.locator("#faces-list .bar").count() == 7
    assert page.locator("#photo-canvas").is_visible()
    # the box was drawn: the canvas differs from the plain photo around the detected face
    drawn = page.evaluate(
        "() => { const c = document.getElementById('photo-canvas');"
        " const d = c.getContext('2d').getImageData(150, 40, 140, 160).data;"
        " let coloured = 0; for (let i = 0; i < d.length; i += 4) {"
        " if (Math.abs(d[i] - d[i+1]) > 60 || Math.abs(d[i+1] - d[i+2]) > 60) coloured++; }"
        " return coloured; }"
    )
    assert drawn > 50
    assert "face(s) found" in page.locator("#photo-status").text_content()
    page.screenshot(path=str(ARTIFACTS / "upload.png"), full_page=True)
    assert errors == []


def test_a_failed_photo_clears_the_last_result_and_says_why_beside_it(
    browser: object, server: str, tmp_path: Path
) -> None:
    """The error went to one status line below the video section (out of sight) while the last
    photo's canvas and bars stayed; the same file chosen again sent nothing (no retry); a
    format the server reads and Chromium cannot draw (TIFF) threw the server's answer away."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    asked: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: asked.append(request.url) if "/v1/predict" in request.url else None)
    page.goto(server)
    page.set_input_files("#file-input", str(REPO / "examples" / "astronaut.jpg"))
    page.wait_for_selector("#faces-list .face-label", timeout=30_000)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    for attempt in (1, 2):  # chosen twice: sent twice
        page.set_input_files("#file-input", str(broken))
        _until(lambda n=attempt: len(asked) == 1 + n, 30)
        page.wait_for_selector("#photo-status.error", timeout=30_000)
    assert "broken.jpg" in page.locator("#photo-status").text_content()
    assert (
        page.locator("#photo-status").is_visible() and page.locator("#photo-status").bounding_box()["y"] < 900
    )
    assert not page.locator("#photo-canvas").is_visible() and page.locator("#faces-list li").count() == 0
    tiff = tmp_path / "face.tiff"
    Image.open(REPO / "examples" / "astronaut.jpg").save(tiff)
    page.set_input_files("#file-input", str(tiff))
    page.wait_for_selector("#faces-list .face-label", timeout=30_000)
    assert "cannot show this image format" in page.locator("#photo-status").text_content()
    assert errors == []
    page.close()


def test_the_page_fits_a_phone_screen(browser: object, server: str) -> None:
    """At 390 px the sections' 420 px minimum made the page scroll sideways (444 px wide)."""
    page = browser.new_page(viewport={"width": 390, "height": 800})  # type: ignore[attr-defined]
    page.goto(server)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    _until(lambda: "Ready." in (page.locator("#status").text_content() or ""), 30)  # /readyz said so
    page.close()


def test_webcam_and_capture_mode(browser: object, server: str) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server)
    page.fill("#capture-targets", "neutral, happy")
    page.fill("#capture-threshold", "0.1")  # the test model is untrained: any label clears 0.1
    page.click("#start-capture")
    page.wait_for_selector("#live-faces .face-label", timeout=30_000)
    page.locator("#captures img").nth(1).wait_for(timeout=30_000)
    captured = page.locator("#captures img").evaluate_all("els => els.map(e => e.dataset.label)")
    assert captured == ["neutral", "happy"]
    _until(
        lambda: all(
            (a.get_attribute("href") or "").startswith("blob:") for a in page.locator("#captures a").all()
        )
    )
    assert page.locator("#captures a").first.get_attribute("download") == "emovit-neutral.jpg"
    assert "All targets captured" in page.locator("#capture-status").text_content()
    overlay_has_box = page.evaluate(
        "() => { const c = document.getElementById('overlay'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; for (let i = 3; i < d.length; i += 4)"
        " { if (d[i] > 0) return true; } return false; }"
    )
    assert overlay_has_box
    page.screenshot(path=str(ARTIFACTS / "webcam-capture.png"), full_page=True)
    page.click("#stop-camera")


def test_denied_camera_message(browser: object, server: str) -> None:
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(server)
    page.evaluate(
        "() => { navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('denied', 'NotAllowedError')); }"
    )
    page.click("#start-camera")
    page.wait_for_selector("#camera-status.error", timeout=10_000)
    assert "denied" in page.locator("#camera-status").text_content()
    page.screenshot(path=str(ARTIFACTS / "camera-denied.png"))
    context.close()


def test_video_panel_draws_the_timeline_and_summary(
    browser: object, server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("av")
    from .video_clips import background, paste, write_clip

    face = np.asarray(Image.open(REPO / "examples" / "astronaut_face.jpg").convert("RGB").resize((120, 140)))
    frames = []
    for i in range(30):  # 1 s: one face drifting right
        canvas = background(320, 240)
        paste(canvas, face, 60 + 3 * i, 50)
        frames.append(canvas)
    clip = write_clip(tmp_path_factory.mktemp("clip") / "walk.mp4", frames)
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    page.fill("#video-fps", "10")
    page.set_input_files("#video-input", str(clip))
    page.wait_for_selector("#video-summary tbody tr", timeout=60_000)
    rows = page.locator("#video-summary tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-track") == "1"
    assert "10 frames analysed" in page.locator("#video-status").text_content()
    assert page.locator("#video-timeline").get_attribute("data-tracks") == "1"
    coloured = page.evaluate(
        "() => { const c = document.getElementById('video-timeline');"
        " const d = c.getContext('2d').getImageData(0, 30, c.width, c.height - 30).data;"
        " let n = 0; for (let i = 0; i < d.length; i += 4) {"
        " if (Math.abs(d[i] - d[i+1]) > 60 || Math.abs(d[i+1] - d[i+2]) > 60) n++; } return n; }"
    )
    assert coloured > 200  # the emotion lines were drawn in the track's panel
    page.screenshot(path=str(ARTIFACTS / "video-panel.png"), full_page=True)
    # a window of the clip (a video over the server's limit was refused with "analyse a window
    # of it: start and end", which the page had no way to ask for)
    window = clip.with_name("window.mp4")
    window.write_bytes(clip.read_bytes())
    page.fill("#video-start", "0.5")
    page.set_input_files("#video-input", str(window))
    page.wait_for_function(
        "() => document.getElementById('video-status').textContent.startsWith('window.mp4: ')"
    )
    assert "5 frames analysed" in page.locator("#video-status").text_content()
    page.fill("#video-end", "0.5")  # not after the start: said here, nothing sent
    page.set_input_files("#video-input", str(clip))
    page.wait_for_selector("#video-status.error", timeout=30_000)
    assert "must be after the start" in page.locator("#video-status").text_content()
    assert not page.locator("#video-timeline").is_visible()  # the window clip's, not under this error
    page.fill("#video-start", "0")
    page.fill("#video-end", "")
    page.set_input_files("#video-input", str(REPO / "examples" / "astronaut.jpg"))  # not a video
    page.wait_for_function(
        "() => document.getElementById('video-status').textContent"
        ".startsWith('Could not analyse the video astronaut.jpg')  // not 'Uploading astronaut.jpg'"
    )
    status = page.locator("#video-status").text_content()
    assert "Could not analyse the video astronaut.jpg" in status
    assert status.count("astronaut.jpg") == 1, status  # the server's "astronaut.jpg: …" said it twice
    # the last clip's timeline and table are not left under this one's error
    assert (
        not page.locator("#video-timeline").is_visible() and not page.locator("#video-summary").is_visible()
    )
    assert not page.locator("#choose-clip").is_disabled()
    assert errors == []


def test_a_clip_shows_its_upload_and_can_be_cancelled(
    browser: object, server: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A long clip said only "Analysing … N s" from the first byte sent (no upload progress)
    and could not be stopped; Cancel now ends the request, and the server stops its analysis
    (its one video slot is free for the next clip at once)."""
    pytest.importorskip("av")
    from .video_clips import background, paste, write_clip

    face = np.asarray(Image.open(REPO / "examples" / "astronaut_face.jpg").convert("RGB").resize((120, 140)))
    frames = []
    for i in range(600):  # 20 s at 30 frames/s: seconds of analysis
        canvas = background(320, 240, seed=i % 5)
        paste(canvas, face, 60 + i % 90, 50)
        frames.append(canvas)
    folder = tmp_path_factory.mktemp("long")
    clip = write_clip(folder / "long.mp4", frames)
    short = write_clip(folder / "short.mp4", frames[:10])
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    assert page.locator("#cancel-clip").is_disabled() and not page.locator("#video-progress").is_visible()
    page.fill("#video-fps", "30")
    page.set_input_files("#video-input", str(clip))
    _until(lambda: "Analysing long.mp4" in (page.locator("#video-status").text_content() or ""), 30)
    assert page.locator("#video-progress").is_visible() and page.locator("#choose-clip").is_disabled()
    page.click("#cancel-clip")
    _until(lambda: "Cancelled" in (page.locator("#video-status").text_content() or ""))
    assert page.locator("#video-status").text_content() == "Cancelled: long.mp4 was not analysed."
    assert not page.locator("#choose-clip").is_disabled() and page.locator("#cancel-clip").is_disabled()
    assert (
        not page.locator("#video-progress").is_visible() and not page.locator("#video-summary").is_visible()
    )
    page.set_input_files("#video-input", str(short))  # the slot the cancelled clip held is free
    page.wait_for_selector("#video-summary tbody tr", timeout=60_000)
    assert "10 frames analysed" in page.locator("#video-status").text_content()
    assert errors == []


def _canvas_sum(page: object, selector: str) -> list[int]:
    """Per-channel pixel sums of a canvas (what was drawn on it)."""
    return page.evaluate(  # type: ignore[attr-defined]
        f"() => {{ const c = document.querySelector('{selector}'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; const s = [0, 0, 0, 0];"
        " for (let i = 0; i < d.length; i += 4) {"
        " s[0] += d[i]; s[1] += d[i+1]; s[2] += d[i+2]; s[3] += d[i+3]; } return s; }"
    )


def test_why_toggle_lays_the_maps_over_the_photo_and_the_camera(browser: object, server: str) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    asked: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: asked.append(request.url))
    page.goto(server)
    page.set_input_files("#file-input", str(REPO / "examples" / "astronaut.jpg"))
    page.wait_for_selector("#faces-list .face-label", timeout=30_000)
    _until(lambda: page.locator("#photo-canvas").get_attribute("data-explained") == "0", 30)
    plain = _canvas_sum(page, "#photo-canvas")
    page.check("#why")  # the photo is analysed again, with the maps
    _until(lambda: page.locator("#photo-canvas").get_attribute("data-explained") == "1", 30)
    assert any("explain=true" in url for url in asked)
    explained = _canvas_sum(page, "#photo-canvas")
    assert sum(abs(a - b) for a, b in zip(plain[:3], explained[:3], strict=True)) > 100_000
    page.screenshot(path=str(ARTIFACTS / "why-photo.png"), full_page=True)
    page.click("#start-camera")
    _until(lambda: page.locator("#overlay").get_attribute("data-explained") == "1", 30)
    assert _canvas_sum(page, "#overlay")[3] > 0  # the live view's overlay holds the map
    page.screenshot(path=str(ARTIFACTS / "why-camera.png"), full_page=True)
    page.click("#stop-camera")
    assert errors == []


# ---------------------------------------------------------------------------- review (session 13)


def test_the_file_choosers_answer_the_keyboard(browser: object, server: str) -> None:
    """The "choose a file" / "choose a clip" controls were labels, which cannot take focus,
    and the drop zone ignored Enter: keyboard users could not upload anything."""
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server)
    page.evaluate(  # what opens the chooser: a click reaching the (hidden) file input
        "() => { window.opened = []; for (const id of ['file-input', 'video-input']) {"
        " document.getElementById(id).addEventListener('click', (e) => {"
        " window.opened.push(id); e.preventDefault(); }); } }"
    )
    for control, key, target in (
        ("#choose-file", "Enter", "file-input"),
        ("#drop-zone", "Enter", "file-input"),
        ("#drop-zone", " ", "file-input"),
        ("#choose-clip", "Enter", "video-input"),
    ):
        before = page.evaluate("() => window.opened.length")
        page.focus(control)
        page.keyboard.press(key)
        assert page.evaluate(f"() => window.opened.slice({before})") == [target], (control, key)
    page.close()


def _pump_until(page: object, condition: object, timeout: float = 20.0) -> None:
    """`_until` for conditions on what Playwright's handlers record: the sync API runs them
    only while it is called, so wait inside it."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        page.wait_for_timeout(100)  # type: ignore[attr-defined]


def test_live_mode_waits_when_the_server_is_busy_and_stops_without_a_token(
    browser: object, server: str
) -> None:
    """A 503 was asked again at the full frame rate, Retry-After ignored; a 401 (no token)
    was retried for ever."""
    import json
    import time

    page = browser.new_page()  # type: ignore[attr-defined]
    asked: list[float] = []
    answer = {"status": 503, "code": "overloaded"}

    def refuse(route: object) -> None:
        asked.append(time.monotonic())
        body = json.dumps({"error": {"code": answer["code"], "message": "busy", "request_id": "x"}})
        headers = {"Retry-After": "3", "Content-Type": "application/json"}
        route.fulfill(status=answer["status"], body=body, headers=headers)  # type: ignore[attr-defined]

    page.route("**/v1/predict*", refuse)
    page.goto(server)
    page.fill("#fps", "5")
    page.click("#start-camera")
    _pump_until(page, lambda: len(asked) >= 1)
    page.wait_for_timeout(2_000)
    assert len(asked) == 1, f"{len(asked)} requests while the server asked to wait 3 s"
    assert "busy" in page.locator("#camera-status").text_content()
    answer.update(status=401, code="unauthorized")
    _pump_until(page, lambda: "API token" in (page.locator("#camera-status").text_content() or ""))
    assert page.locator("#stop-camera").is_disabled() and not page.locator("#start-camera").is_disabled()
    count = len(asked)
    page.wait_for_timeout(1_000)
    assert len(asked) == count  # stopped: no more requests
    assert asked[1] - asked[0] >= 3.0  # the second request waited for Retry-After
    page.close()


def test_a_busy_server_is_tried_again_and_its_error_goes_when_frames_pass(
    browser: object, server: str, tmp_path: Path
) -> None:
    """A photo the server was too busy for (the page's own camera held the explain slot) was
    an error at once, the Retry-After ignored; the camera's "busy" error stayed red after the
    frames went through again; a photo without a file name extension was refused unsent."""
    import json

    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    refused: list[str] = []

    def busy_once(route: object) -> None:
        if not refused:
            refused.append(route.request.url)  # type: ignore[attr-defined]
            body = json.dumps({"error": {"code": "overloaded", "message": "busy", "request_id": "x"}})
            headers = {"Retry-After": "1", "Content-Type": "application/json"}
            route.fulfill(status=503, body=body, headers=headers)  # type: ignore[attr-defined]
        else:
            route.continue_()  # type: ignore[attr-defined]

    page.route("**/v1/predict*", busy_once)
    page.goto(server)
    plain = tmp_path / "astronaut"  # a JPEG without an extension: the browser gives it no type
    plain.write_bytes((REPO / "examples" / "astronaut.jpg").read_bytes())
    page.set_input_files("#file-input", str(plain))
    _until(
        lambda: "Waiting 1 s to send astronaut again" in (page.locator("#photo-status").text_content() or "")
    )
    page.wait_for_selector("#faces-list .face-label", timeout=30_000)
    assert "face(s) found" in page.locator("#photo-status").text_content() and len(refused) == 1
    refused.clear()  # the camera's first frame is refused, the next go through
    page.click("#start-camera")
    _pump_until(page, lambda: "busy" in (page.locator("#camera-status").text_content() or ""))
    _pump_until(page, lambda: page.locator("#camera-status").text_content() == "Camera on.")
    assert "error" not in (page.locator("#camera-status").get_attribute("class") or "")
    page.click("#stop-camera")
    assert errors == []
    page.close()


def test_one_camera_however_often_it_is_started(browser: object, server: str) -> None:
    """A second start during the permission prompt (or capture mode's start) opened a second
    stream and timer; Stop ended only one, and the other went on sending frames."""
    page = browser.new_page()  # type: ignore[attr-defined]
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/v1/predict" in request.url else None)
    page.goto(server)
    page.evaluate("() => { startCamera(); startCamera(); startCapture(); }")
    _pump_until(page, lambda: len(asked) >= 2, 30)
    page.click("#stop-camera")
    page.wait_for_timeout(500)  # an answer in flight may still arrive
    count = len(asked)
    page.wait_for_timeout(1_500)
    assert len(asked) == count, "frames were still sent after Stop"
    assert page.locator("#live-faces li").count() == 0  # Stop clears the live results
    page.close()


def test_capture_targets_follow_the_models_labels(browser: object, server: str) -> None:
    """The page knew only the seven emotions: a model with other labels could not be captured."""
    import json

    page = browser.new_page()  # type: ignore[attr-defined]
    labels = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    page.route(
        "**/v1/models",
        lambda route: route.fulfill(status=200, body=json.dumps({"result_labels": labels}),
                                    headers={"Content-Type": "application/json"}),
    )  # fmt: skip
    page.goto(server)
    _until(lambda: page.evaluate("() => EMOTIONS.length") == 8, 10)
    page.fill("#capture-targets", "contempt")
    page.click("#start-capture")
    assert "Waiting for: contempt" in page.locator("#capture-status").text_content()
    page.click("#stop-camera")
    page.close()
