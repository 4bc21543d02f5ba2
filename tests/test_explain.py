"""Explanations: the methods (`emovit.explain`), the pipeline's explain path, the files of
`emovit explain` / `predict --explain`, the server's ``explain=true``, and the faithfulness
checks (deletion, model randomisation) on FER2013 test faces."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emovit import EmotionRecognizer
from emovit.errors import OptionError
from emovit.explain import (
    Explainer,
    deletion_test,
    gradcam_layer,
    randomisation_test,
    resize_map,
    resolve_method,
    spearman,
)
from emovit.faces import Detection, FaceOptions, crop_face, crop_matrix
from emovit.models import arch_preset, load_torch_model
from emovit.results import Explanation

from .conftest import FER2013, REPO, SHARED, onnx_only_default, require_shared

VIT_EXPLAIN = REPO / "tests" / "models" / "vit-explain"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
FACE = REPO / "examples" / "astronaut_face.jpg"


def _script() -> ModuleType:
    """scripts/explain_faithfulness.py: the face selection and the figures the report gives."""
    path = REPO / "scripts" / "explain_faithfulness.py"
    spec = importlib.util.spec_from_file_location("explain_faithfulness", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_maps(maps: np.ndarray, shape: tuple[int, ...]) -> None:
    assert maps.shape == shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0


@pytest.fixture(scope="module")
def default_rec() -> EmotionRecognizer:
    """The shipped model as `emovit predict` runs it: onnxruntime (maps from its torch weights)."""
    return EmotionRecognizer.from_pretrained("default", device="cpu", detector="none")


# ---------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", ["rollout", "grad-rollout"])
def test_vit_maps_are_finite_in_range_on_the_patch_grid_and_deterministic(
    tiny_model_dir: Path, method: str
) -> None:
    net = load_torch_model(tiny_model_dir).model
    explainer = Explainer(net, method)
    pixels = np.random.default_rng(0).normal(size=(3, 3, 30, 30)).astype(np.float32)
    maps = explainer(pixels, [0, 1, 2])
    _check_maps(maps, (3, 15, 15))  # 30 px, patch 2
    assert np.array_equal(maps, explainer(pixels, [0, 1, 2]))
    assert np.isclose(maps.reshape(3, -1).max(axis=1), 1.0).all()
    _check_maps(explainer.maps(pixels, [0, 1, 2]), (3, 30, 30))


def test_the_attention_forward_gives_the_models_logits(tiny_model_dir: Path) -> None:
    import torch

    from emovit.explain._methods import _vit_forward, _vit_parts

    net = load_torch_model(tiny_model_dir).model
    pixels = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        logits, attentions = _vit_forward(_vit_parts(net), pixels)  # type: ignore[arg-type]
        torch.testing.assert_close(logits, net(pixel_values=pixels).logits)
    assert len(attentions) == 2 and attentions[0].shape == (2, 4, 226, 226)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(2, 4, 226))


def test_gradient_weighted_rollout_depends_on_the_class(tiny_model_dir: Path) -> None:
    explainer = Explainer(load_torch_model(tiny_model_dir).model, "grad-rollout")
    pixels = np.random.default_rng(1).normal(size=(1, 3, 30, 30)).astype(np.float32)
    maps = [explainer(pixels, [k])[0] for k in range(7)]
    assert max(np.abs(maps[0] - m).max() for m in maps[1:]) > 1e-3
    rollout = Explainer(explainer.net, "rollout")
    assert np.array_equal(rollout(pixels, [0]), rollout(pixels, [5]))  # class-agnostic


def test_gradcam_reads_the_deepest_map_of_at_least_7x7() -> None:
    default = load_torch_model("default").model
    assert gradcam_layer(default) == ("mobilevit.encoder.layer.2", (8, 8))  # the last stage is 2x2
    resnet = arch_preset("resnet-teacher-64").build_model().eval()
    assert gradcam_layer(resnet) == ("resnet.encoder.stages.1", (8, 8))
    explainer = Explainer(default, "gradcam")
    pixels = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    maps = explainer(pixels)
    _check_maps(maps, (2, 8, 8))
    assert np.array_equal(maps, explainer(pixels))


def test_smoothgrad_maps_are_per_pixel_class_specific_and_deterministic(tiny_model_dir: Path) -> None:
    default = Explainer(load_torch_model("default").model, "smoothgrad")
    assert default.class_specific and default.layer is None
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    maps = default(pixels)
    _check_maps(maps, (2, 64, 64))  # the input's own resolution
    assert np.array_equal(maps, default(pixels))  # fixed noise: the same map every call
    alone = default(pixels[1:])[0]  # and a face's map does not depend on its batch
    assert np.allclose(alone, maps[1], atol=1e-4)
    per_class = [default(pixels[:1], [k])[0] for k in range(7)]
    assert max(np.abs(per_class[0] - m).max() for m in per_class[1:]) > 1e-3
    flat = np.full((1, 3, 64, 64), 0.5, dtype=np.float32)  # nothing differs from the mean
    assert not default(flat).any()
    vit = Explainer(load_torch_model(tiny_model_dir).model, "smoothgrad")  # any model
    _check_maps(vit(np.random.default_rng(1).normal(size=(1, 3, 30, 30)).astype(np.float32)), (1, 30, 30))


def test_per_pixel_maps_are_drawn_smoothed_and_kept_raw() -> None:
    speckle = np.zeros((80, 60), dtype=np.float32)
    speckle[::7, ::5] = 1.0
    raw = Explanation(crop_map=speckle.copy(), method="smoothgrad")
    shown = raw.display_map()
    assert shown.shape == speckle.shape and np.isclose(shown.max(), 1.0) and shown.min() >= 0
    assert (shown > 0.05).sum() > 4 * (speckle > 0.05).sum()  # each pixel spreads to a region
    assert np.array_equal(raw.crop_map, speckle)  # the raw map stays as it was
    coarse = Explanation(crop_map=speckle, method="gradcam")
    assert coarse.display_map() is coarse.crop_map


def test_auto_picks_per_architecture_and_unfit_methods_are_option_errors(tiny_model_dir: Path) -> None:
    vit = load_torch_model(tiny_model_dir).model
    mobilevit = load_torch_model("default").model
    assert resolve_method(vit, "auto") == "grad-rollout"
    assert resolve_method(mobilevit, "auto") == "smoothgrad"
    assert resolve_method(mobilevit, "gradcam") == "gradcam"
    with pytest.raises(OptionError, match="spatial feature map") as caught:
        Explainer(vit, "gradcam")
    assert caught.value.option == "method"
    with pytest.raises(OptionError, match="needs a ViT"):
        Explainer(mobilevit, "rollout")
    with pytest.raises(OptionError, match="method must be one of"):
        Explainer(vit, "lime")


def test_spearman() -> None:
    a = np.array([[1.0, 2, 3, 4], [1, 2, 3, 4], [1, 1, 1, 1]])
    b = np.array([[10.0, 20, 30, 40], [4, 3, 2, 1], [1, 2, 3, 4]])
    assert np.allclose(spearman(a, b), [1.0, -1.0, 0.0])
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (3, 50)), rng.random((3, 50))
    expected = [scipy_stats.spearmanr(x[i], y[i]).statistic for i in range(3)]
    assert np.allclose(spearman(x, y), expected)


def test_resize_map_keeps_0_to_1() -> None:
    grid = np.arange(16, dtype=np.float32).reshape(4, 4) / 15
    _check_maps(resize_map(grid, (37, 23)), (37, 23))
    assert resize_map(np.zeros((4, 4), np.float32), (8, 8)).max() == 0.0


# ---------------------------------------------------------------------------- geometry


def test_image_map_puts_the_crop_map_back_where_the_crop_came_from() -> None:
    pytest.importorskip("cv2")
    y, x = np.mgrid[0:200, 0:260]
    image = np.stack([(x + y) % 256, (2 * x) % 256, (3 * y) % 256], axis=-1).astype(np.uint8)
    marks = np.array([[110.0, 90], [150, 100], [130, 115], [115, 135], [148, 142]])  # tilted eyes
    detection = Detection(box=(100.0, 70.0, 165.0, 150.0), score=0.9, landmarks=marks)
    for align, border in [(True, "pad"), (False, "pad"), (False, "clip")]:
        crop = crop_face(image, detection, margin=0.3, align=align, border=border)  # type: ignore[arg-type]
        matrix = crop_matrix(detection, margin=0.3, align=align, border=border)  # type: ignore[arg-type]
        values = crop[..., 0].astype(np.float32) / 255
        explanation = Explanation(crop_map=values, method="gradcam", matrix=matrix, image_size=(260, 200))
        back = explanation.image_map(outside=np.nan)
        inside = ~np.isnan(back)
        assert 0.8 * crop.shape[0] * crop.shape[1] < inside.sum() < 1.2 * crop.shape[0] * crop.shape[1]
        truth = image[..., 0].astype(np.float32) / 255
        interior = inside & (np.abs(np.gradient(truth)[0]) < 0.05) & (np.abs(np.gradient(truth)[1]) < 0.05)
        assert np.median(np.abs(back[interior] - truth[interior])) < 0.02, (align, border)
        round_trip = explanation.crop_to_image() @ np.vstack([matrix, [0.0, 0.0, 1.0]])
        assert np.allclose(round_trip, [[1, 0, 0], [0, 1, 0]])


# ---------------------------------------------------------------------------- the pipeline


def test_explain_returns_predicts_results_with_a_map_per_face(default_rec: EmotionRecognizer) -> None:
    assert default_rec.backend.name == "onnx"  # the maps come from the torch weights all the same
    [plain] = default_rec.predict(FACE)
    [result] = default_rec.explain(FACE)
    assert result.ok and result.label == plain.label
    assert np.allclose(list(result.probs.values()), list(plain.probs.values()), atol=1e-6)
    face = result.faces[0]
    explanation = face.explanation
    assert explanation is not None and explanation.method == "smoothgrad"
    assert explanation.target == face.label and explanation.layer is None
    assert face.crop is not None
    width, height = result.image_size  # type: ignore[misc]
    _check_maps(explanation.crop_map, face.crop.shape[:2])
    _check_maps(explanation.image_map(), (height, width))
    [again] = default_rec.explain(FACE)
    assert np.array_equal(again.faces[0].explanation.crop_map, explanation.crop_map)  # type: ignore[union-attr]
    row = result.to_dict()["faces"][0]
    assert row["explanation"]["size"] == [width, height] and len(json.dumps(row)) < 2000
    assert "explain" in result.timings
    assert not np.array_equal(result.plot(), result.plot(explanations=False))
    card = face.plot_explanation()
    assert card.shape[1] >= 224 and card.shape[2] == 3


def test_a_strip_classified_whole_plots_within_bounds(default_rec: EmotionRecognizer) -> None:
    # a 20000x1 strip would be scaled to 224 pixels high: a canvas of 4.5 million pixels a side
    strip = np.full((1, 20000, 3), 128, np.uint8)
    [result] = default_rec.explain(strip, method="gradcam")
    face = result.faces[0]
    card = face.plot_explanation()
    assert card.shape[1] == 20000 and card.shape[0] < 100 and card.shape[2] == 3  # never scaled up
    [thin] = default_rec.explain(np.full((10, 1000, 3), 128, np.uint8), method="gradcam")
    card = thin.faces[0].plot_explanation()  # scaled up only until its longer side is 2048
    assert card.shape[1] == 2048 and 20 < card.shape[0] < 100


def test_target_names_the_label_to_explain(default_rec: EmotionRecognizer) -> None:
    [own] = default_rec.explain(FACE)
    [happy] = default_rec.explain(FACE, target="Happiness")
    assert happy.faces[0].explanation.target == "happy"  # type: ignore[union-attr]
    other = "sad" if own.label != "sad" else "angry"  # a label the face does not have: another map
    [why] = default_rec.explain(FACE, target=other)
    assert why.faces[0].explanation.target == other != own.label  # type: ignore[union-attr]
    assert not np.array_equal(why.faces[0].explanation.crop_map, own.faces[0].explanation.crop_map)  # type: ignore[union-attr]
    with pytest.raises(OptionError, match="one of the model's labels") as caught:
        default_rec.explain(FACE, target="bored")
    assert caught.value.option == "target"
    with pytest.raises(OptionError, match="needs a ViT") as caught:
        default_rec.explain(FACE, method="rollout")
    assert caught.value.option == "method"
    # batch_size 0 read no input for ever (a spinning core); others were internal errors
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises(OptionError, match="batch_size") as caught:
            default_rec.explain(FACE, batch_size=bad)  # type: ignore[arg-type]
        assert caught.value.option == "batch_size"


def test_vit_explanations_through_the_pipeline() -> None:
    rec = EmotionRecognizer.from_pretrained(VIT_EXPLAIN, device="cpu", detector="none")
    for method, target in [("rollout", None), ("grad-rollout", "happy")]:
        [result] = rec.explain(FACE, method=method, target=target)  # type: ignore[arg-type]
        explanation = result.faces[0].explanation
        assert explanation is not None and explanation.method == method and explanation.target == target
        _check_maps(explanation.crop_map, result.faces[0].crop.shape[:2])  # type: ignore[union-attr]
    with pytest.raises(OptionError, match="class-agnostic"):
        rec.explain(FACE, method="rollout", target="happy")


def test_no_face_gives_no_map_and_no_error_and_a_broken_input_is_its_own_row() -> None:
    require_shared(YUNET)
    rec = EmotionRecognizer.from_pretrained(
        "default", device="cpu", faces=FaceOptions(detector="yunet", detector_model=str(YUNET))
    )
    blank = np.full((240, 320, 3), 128, np.uint8)
    results = rec.explain([blank, b"not an image", REPO / "examples" / "astronaut.jpg"])
    assert results[0].ok and results[0].faces == [] and results[0].error is None
    assert not results[1].ok and results[1].error_code is not None
    assert results[2].ok and results[2].faces[0].explanation is not None
    matrix = results[2].faces[0].explanation.matrix  # type: ignore[union-attr]
    assert matrix is not None and matrix.shape == (2, 3)


def test_an_onnx_only_folder_says_explanations_need_torch_weights(tmp_path: Path) -> None:
    folder = onnx_only_default(tmp_path / "onnx only")
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none")
    with pytest.raises(OptionError, match="torch weights") as caught:
        rec.explain(FACE)
    assert caught.value.option == "model"  # the model is at fault, not the method asked for
    done = _cli(
        "explain", str(FACE), "-o", str(tmp_path / "out"), "--model", str(folder), "--detector", "none"
    )
    assert done.returncode == 2 and "torch weights" in done.stderr and "'--model'" in done.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emovit.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_explain_writes_a_png_and_the_raw_map_per_face(tmp_path: Path) -> None:
    photos = tmp_path / "my photos"
    photos.mkdir()
    shutil.copy(FACE, photos / "astro face.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    # an MP4's first box: a video, not explained, and it does not stop the photos' maps
    (photos / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
    (photos / "notes.mp4").write_text("meeting notes")  # it was called "a video"
    out = tmp_path / "why maps"
    done = _cli("explain", str(photos), "-o", str(out), "--detector", "none", "--target", "happy")
    assert done.returncode == 1, done.stderr  # the broken photo failed, the other was explained
    assert "broken.jpg" in done.stderr and "1 face(s) explained in 1 of 2 images" in done.stderr
    assert (
        "clip.mp4: a video; emovit explain takes photos" in done.stderr
        and "notes.mp4: not a photo (named like a video" in done.stderr
        and "(1 video(s) and 1 other file(s) left out)" in done.stderr
    )
    assert f"maps in {out}" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["astro face.face0.npy", "astro face.face0.png"]
    nothing = _cli("explain", str(photos / "broken.jpg"), "-o", str(tmp_path / "none"), "--detector", "none")
    assert nothing.returncode == 1 and "no maps written" in nothing.stderr  # no folder claimed
    assert "maps in" not in nothing.stderr and not (tmp_path / "none").exists()
    only = _cli("explain", str(photos / "clip.mp4"), "-o", str(tmp_path / "none"))
    assert only.returncode == 2 and "clip.mp4' is a video" in only.stderr, only.stderr
    named = _cli("explain", str(photos / "notes.mp4"), "-o", str(tmp_path / "none"))
    assert named.returncode == 2 and "notes.mp4' is not a photo (named like a video" in named.stderr
    raw = np.load(out / "astro face.face0.npy")
    _check_maps(raw, Image.open(FACE).size[::-1])  # detector none: the crop is the photo
    assert Image.open(out / "astro face.face0.png").mode == "RGB"


def test_cli_predict_explain_writes_the_same_beside_the_rows(tmp_path: Path) -> None:
    out = tmp_path / "maps"
    done = _cli("predict", str(FACE), "--detector", "none", "--format", "json", "--explain", str(out))
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert row["faces"][0]["explanation"]["method"] == "smoothgrad"
    assert {p.suffix for p in out.iterdir()} == {".png", ".npy"}
    assert _cli("predict", str(FACE), "--target", "happy").returncode == 2


def test_cli_a_map_that_fails_to_save_loses_no_other_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import emovit.explain_output
    from emovit.cli import main

    real = emovit.explain_output.write_explanations

    def out_of_memory_on_b(result: Any, folder: Any, stem: str, **kwargs: Any) -> list[Path]:
        if stem == "b":
            raise MemoryError
        return real(result, folder, stem, **kwargs)

    monkeypatch.setattr(emovit.explain_output, "write_explanations", out_of_memory_on_b)
    for name in ("a", "b", "c"):
        shutil.copy(FACE, tmp_path / f"{name}.jpg")
    rows = tmp_path / "rows.jsonl"
    photos = [str(tmp_path / f"{name}.jpg") for name in ("a", "b", "c")]
    done = CliRunner().invoke(main, ["predict", *photos, "--detector", "none", "--format", "jsonl",
                                     "-o", str(rows), "--explain", str(tmp_path / "maps"), "-q"])  # fmt: skip
    assert "b.jpg: its images could not be saved (MemoryError)" in done.stderr
    assert len(rows.read_text().splitlines()) == 3  # every row written
    assert sorted(p.stem for p in (tmp_path / "maps").glob("*.png")) == ["a.face0", "c.face0"]
    why = str(tmp_path / "why")
    explained = CliRunner().invoke(main, ["explain", *photos, "--detector", "none", "-o", why])
    assert explained.exit_code == 1
    assert "b.jpg: its maps could not be written (MemoryError)" in explained.stderr
    assert sorted(p.stem for p in (tmp_path / "why").glob("*.png")) == ["a.face0", "c.face0"]
    # a folder that cannot be made was found only when the first maps were written: every map
    # computed for nothing ("0 of 3 images", exit 1); now a usage error before the model runs
    (tmp_path / "a file").write_text("")
    blocked = CliRunner().invoke(
        main, ["explain", *photos, "--detector", "none", "-o", str(tmp_path / "a file" / "x")]
    )
    assert blocked.exit_code == 2 and "Invalid value for '--output'" in blocked.stderr, blocked.stderr


# ---------------------------------------------------------------------------- server


def test_server_adds_explanation_png_when_asked(default_rec: EmotionRecognizer) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from emovit.serve import ServeSettings, create_app

    with TestClient(create_app(default_rec, ServeSettings())) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
        files = {"files": ("face.jpg", FACE.read_bytes(), "image/jpeg")}
        plain = client.post("/v1/predict", files=files).json()["results"][0]["faces"][0]
        assert "explanation_png" not in plain or plain["explanation_png"] is None
        answer = client.post("/v1/predict?explain=true&explain_target=happy", files=files)
        assert answer.status_code == 200, answer.text
        face = answer.json()["results"][0]["faces"][0]
        png = Image.open(io.BytesIO(base64.b64decode(face["explanation_png"])))
        assert png.mode == "L" and list(png.size) == face["explanation"]["size"] == list(
            Image.open(FACE).size
        )
        assert face["explanation"]["target"] == "happy" and np.asarray(png).max() == 255
        bad = client.post("/v1/predict?explain=true&explain_method=rollout", files=files)
        assert bad.status_code == 422 and "ViT" in bad.json()["error"]["message"]
        assert bad.json()["error"]["message"].startswith("explain_method: ")  # which parameter
        # without explain=true they were ignored: a 200 without maps, no word why
        for query in ("explain_target=happy", "explain_method=smoothgrad", "explain=false&explain_target=x"):
            ignored = client.post(f"/v1/predict?{query}", files=files)
            assert ignored.status_code == 422, ignored.text
            assert "applies with explain=true only" in ignored.json()["error"]["message"]
        both = client.post("/v1/predict?explain_method=gradcam&explain_target=sad", files=files)
        assert both.json()["error"]["message"].startswith("explain_method and explain_target apply")
        # a bad target is refused before any work: with no face found it was a 200
        blank = {"files": ("blank.png", _png_bytes(np.zeros((64, 64, 3), np.uint8)), "image/png")}
        for upload in (files, blank):
            wrong = client.post("/v1/predict?explain=true&explain_target=bogus", files=upload)
            message = wrong.json()["error"]["message"]
            assert (
                wrong.status_code == 422
                and message.startswith("explain_target: ")
                and "must be one of" in message
            )
        # explanations are served one at a time (max_explain_jobs): another answers 503 at once,
        # plain requests go on, and every slot comes back
        from emovit.serve.state import get_state

        slots = get_state(client.app).explain_slots
        assert slots.busy == 0
        with slots.take(1):
            busy = client.post("/v1/predict?explain=true", files=files)
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
            assert client.post("/v1/predict", files=files).status_code == 200
        assert slots.busy == 0
        schema = client.get("/openapi.json").json()["components"]["schemas"]["FaceModel"]["properties"]
        assert "explanation_png" in schema and "8-bit grey PNG" in json.dumps(schema["explanation_png"])


# ---------------------------------------------------------------------------- faithfulness


@pytest.fixture(scope="module")
def fer_faces() -> list[Path]:
    require_shared(FER2013 / "test")
    return _script().pick_faces(FER2013, 100)


def _inputs(model: str | Path, faces: list[Path]) -> tuple[Any, np.ndarray]:
    loaded = load_torch_model(model)
    return loaded, _script().model_input(loaded, faces)


CASES = [
    pytest.param(
        "default",
        "gradcam",
        marks=pytest.mark.xfail(
            strict=True,
            reason="measured (docs/reports/explain/faithfulness.json): the default MobileViT's Grad-CAM "
            "deletion AUC is above random order's (why auto picks smoothgrad for it); rerun when the "
            "default model changes",
        ),
        id="default-gradcam",
    ),
    pytest.param("default", "smoothgrad", id="default-smoothgrad"),
    pytest.param(str(VIT_EXPLAIN), "rollout", id="vit-rollout"),
    pytest.param(str(VIT_EXPLAIN), "grad-rollout", id="vit-grad-rollout"),
]


@pytest.mark.parametrize(("model", "method"), CASES)
def test_deletion_falls_faster_in_the_maps_order_than_at_random(
    model: str, method: str, fer_faces: list[Path]
) -> None:
    loaded, pixels = _inputs(model, fer_faces)
    result = deletion_test(Explainer(loaded.model, method), pixels, steps=10)
    assert result.explained.shape == (100, 11) and np.allclose(result.explained[:, 0], result.random[:, 0])
    assert result.reduction >= 0.20, result.to_dict()


@pytest.mark.parametrize(
    ("model", "method"),
    [
        ("default", "smoothgrad"),
        ("default", "gradcam"),
        (str(VIT_EXPLAIN), "rollout"),
        (str(VIT_EXPLAIN), "grad-rollout"),
    ],
)
def test_maps_of_a_randomised_model_do_not_resemble_the_trained_ones(
    model: str, method: str, fer_faces: list[Path]
) -> None:
    loaded, pixels = _inputs(model, fer_faces)
    result = randomisation_test(Explainer(loaded.model, method), pixels)
    assert len(result.correlations) == 100 and result.mean < 0.5, result.to_dict()


def test_the_small_vit_is_small_and_better_than_chance() -> None:
    assert (VIT_EXPLAIN / "model.safetensors").stat().st_size < 5 * 2**20
    assert not (VIT_EXPLAIN / "checkpoint").exists()
    require_shared(FER2013 / "validation")
    from emovit.data import read_samples

    samples = sorted(read_samples(FER2013, "validation"), key=lambda s: str(s.source))
    chosen = [samples[i] for i in np.random.default_rng(0).choice(len(samples), 400, replace=False)]
    rec = EmotionRecognizer.from_pretrained(VIT_EXPLAIN, device="cpu", detector="none")
    right = sum(
        r.label == s.label for s, r in zip(chosen, rec.predict([s.source for s in chosen]), strict=True)
    )
    assert right / len(chosen) > 0.30  # FER2013 validation; chance: 1/7, the majority class (happy): 0.25


# ---------------------------------------------------------------------------- review (session 13)


def _vit_explain_at_input_size() -> tuple[EmotionRecognizer, np.ndarray]:
    rec = EmotionRecognizer.from_pretrained(VIT_EXPLAIN, device="cpu", detector="none", tta="flip")
    size = rec.model.preprocessor.output_size
    rng = np.random.default_rng(2)
    return rec, rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def test_with_flip_tta_the_map_explains_both_views_of_the_prediction() -> None:
    """With tta=flip the prediction averaged a face and its mirror image, and the map explained
    the face alone. Now the mirror image of a face gets the mirror map (and the same answer)."""
    rec, image = _vit_explain_at_input_size()
    for method in ("grad-rollout", "rollout"):
        plain, mirror = rec.explain([image, np.ascontiguousarray(image[:, ::-1])], method=method)
        assert plain.faces[0].probs == pytest.approx(mirror.faces[0].probs, abs=1e-5)
        a, b = plain.faces[0].explanation.crop_map, mirror.faces[0].explanation.crop_map
        np.testing.assert_allclose(a, b[:, ::-1], atol=1e-4)


def test_maps_of_a_centre_cropped_input_cover_what_the_model_saw() -> None:
    """With a resize to 256 and a 224 centre crop, the map was stretched over the whole face."""
    from emovit.preprocess import Preprocessor

    pre = Preprocessor(size=(256, 256), crop_size=(224, 224))
    top, left, height, width = pre.input_region(512, 512)
    assert (top, left, height, width) == (32.0, 32.0, 448.0, 448.0)
    assert Preprocessor(size=(64, 64)).input_region(100, 80) == (0.0, 0.0, 100.0, 80.0)
    grid = np.ones((4, 4), np.float32)
    grid[0, 0] = 0.0
    placed = resize_map(grid, (512, 512), (top, left, height, width))
    assert placed[:32].max() == 0.0 and placed[:, :32].max() == 0.0 and placed[-32:].max() == 0.0
    assert placed[256, 256] == pytest.approx(1.0)
    padded = Preprocessor(size=(200, 200), crop_size=(224, 224)).input_region(100, 100)
    assert padded == (-6.0, -6.0, 112.0, 112.0)  # the crop pads: the region reaches past the image


def test_a_half_precision_checkpoint_is_explained_in_float32(tmp_path: Path) -> None:
    """Maps of a checkpoint saved in fp16 were computed in fp16."""
    import torch

    folder = tmp_path / "half"
    shutil.copytree(VIT_EXPLAIN, folder)
    loaded = load_torch_model(VIT_EXPLAIN)
    assert loaded.model is not None
    loaded.model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none", backend="torch")
    assert next(rec.model.model.parameters()).dtype == torch.float16
    net = rec.explainer("grad-rollout").net
    assert next(net.parameters()).dtype == torch.float32
    reference = EmotionRecognizer.from_pretrained(VIT_EXPLAIN, device="cpu", detector="none", backend="torch")
    image = np.asarray(Image.open(FACE).convert("RGB"))
    half = rec.explain(image, method="grad-rollout")[0].faces[0].explanation.crop_map
    full = reference.explain(image, method="grad-rollout")[0].faces[0].explanation.crop_map
    assert np.abs(half - full).mean() < 0.02


def test_smoothgrad_noise_and_gradcam_probe_follow_the_models_input() -> None:
    """SmoothGrad's noise was fixed in normalised units (twice as strong, relative to the
    image, for a mean 0 / std 1 model as for a 0.5/0.5 one); Grad-CAM chose its stage at the
    config's image size, not the size the preprocessor makes."""
    default = EmotionRecognizer.from_pretrained("default", device="cpu", detector="none")
    vit = EmotionRecognizer.from_pretrained(VIT_EXPLAIN, device="cpu", detector="none")
    assert default._input_range() == pytest.approx(1.0) and vit._input_range() == pytest.approx(2.0)
    assert default.explainer("smoothgrad").input_range == pytest.approx(1.0)
    net = default.explainer("smoothgrad").net
    at_64, size_64 = gradcam_layer(net)
    at_128, size_128 = gradcam_layer(net, size=(128, 128))
    assert min(size_64) >= 7 and min(size_128) >= 7 and at_128 != at_64  # a deeper stage fits at 128


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()
