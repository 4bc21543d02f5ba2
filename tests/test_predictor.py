import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emovit import EMOTIONS, EmotionRecognizer, ImageError
from emovit.errors import RandomWeightsWarning
from emovit.faces import FaceOptions
from emovit.models import load_model

from .conftest import FER2013, encode, make_image_zoo, require_shared


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", batch_size=4, detector="none")


@pytest.mark.slow
def test_probabilities_equal_the_transformers_pipeline(reference_model_dir: Path) -> None:
    """The reference architecture (random weights, dima806 config) on 24 images of mixed
    sizes and modes plus FER2013 faces: emovit's probabilities equal
    transformers.pipeline("image-classification") within 1e-4."""
    from transformers import pipeline

    images = make_image_zoo(24, seed=7)
    if FER2013.exists():
        images += [Image.open(p) for p in sorted((FER2013 / "test" / "fear").glob("*.jpg"))[:4]]
    rec = EmotionRecognizer.from_pretrained(reference_model_dir, device="cpu", batch_size=8, detector="none")
    ours = rec.predict(images)
    classifier = pipeline("image-classification", model=str(reference_model_dir), device="cpu")
    worst = 0.0
    for image, result in zip(images, ours, strict=True):
        theirs = {d["label"]: d["score"] for d in classifier(image.convert("RGB"), top_k=7)}
        assert set(theirs) == set(result.probs) == set(EMOTIONS)
        worst = max(worst, max(abs(result.probs[k] - theirs[k]) for k in theirs))
    assert worst <= 1e-4, worst


def test_every_input_kind_gives_the_same_answer(tiny: EmotionRecognizer, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    png = encode(Image.fromarray(array))
    path = tmp_path / "face.png"
    path.write_bytes(png)
    inputs = [array, Image.fromarray(array), png, io.BytesIO(png), path, str(path)]
    results = tiny.predict(inputs)
    assert [r.source for r in results] == [
        "<array #0>",
        "<Image #1>",
        "<bytes #2>",
        "<file #3>",
        str(path),
        str(path),
    ]
    for result in results:
        assert result.ok
        assert result.image_size == (50, 40)
        assert list(result.probs) == list(EMOTIONS)
        for key in EMOTIONS:
            assert result.probs[key] == pytest.approx(results[0].probs[key], abs=1e-6)


def test_single_input_still_returns_a_list(tiny: EmotionRecognizer) -> None:
    results = tiny.predict(np.zeros((30, 30, 3), np.uint8))
    assert isinstance(results, list)
    assert len(results) == 1


def test_bad_inputs_become_error_results_in_place(tiny: EmotionRecognizer, tmp_path: Path) -> None:
    good = np.full((30, 30, 3), 90, np.uint8)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "cut.jpg").write_bytes(encode(Image.new("RGB", (64, 64)), "JPEG")[:150])
    inputs = [good, tmp_path / "empty.jpg", good, tmp_path / "text.jpg", tmp_path / "missing.png"]
    inputs += [tmp_path / "cut.jpg", b"junk", np.zeros((3, 3), np.float64), good]
    results = tiny.predict(inputs)
    assert [r.ok for r in results] == [True, False, True, False, False, False, False, False, True]
    for result in results:
        if not result.ok:
            assert result.error and result.source in result.error
            assert result.faces == [] and result.label is None and result.probs == {}
    assert "empty" in results[1].error and "no such file" in results[4].error
    with pytest.raises(ImageError, match="empty"):
        tiny.predict(inputs, errors="raise")


def test_batch_size_does_not_change_results(tiny: EmotionRecognizer) -> None:
    images = make_image_zoo(9, seed=3)
    one = tiny.predict(images, batch_size=1)
    many = tiny.predict(images, batch_size=7)
    for a, b in zip(one, many, strict=True):
        for key in EMOTIONS:
            assert a.probs[key] == pytest.approx(b.probs[key], abs=1e-5)


def test_stream_is_lazy(tiny: EmotionRecognizer) -> None:
    consumed = []

    def source():
        for i in range(10):
            consumed.append(i)
            yield np.full((30, 30, 3), i * 20, np.uint8)

    serial = EmotionRecognizer(tiny.model, faces=FaceOptions(detector="none"), prefetch=0)
    stream = serial.stream(source(), batch_size=4)
    assert next(stream).ok
    assert len(consumed) == 4  # only the first batch was pulled
    assert len(list(stream)) == 9


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_an_inputs_iterable_that_fails_gets_the_results_of_what_it_gave_first(
    tiny: EmotionRecognizer, prefetch: int
) -> None:
    """A generator that raises after 7 images: the 7 results, then its exception (the batch
    under way and the prefetched ones were lost: 2 inputs consumed, 1 result)."""

    def source():
        for i in range(7):
            yield np.full((30, 30, 3), i * 20, np.uint8)
        raise ValueError("the camera went away")

    rec = EmotionRecognizer(tiny.model, faces=FaceOptions(detector="none"), prefetch=prefetch)
    got = []
    with pytest.raises(ValueError, match="the camera went away"):
        got.extend(rec.stream(source(), batch_size=3))
    assert len(got) == 7 and all(result.ok for result in got)


def test_prefetch_keeps_memory_bounded_and_order(tiny: EmotionRecognizer, tmp_path: Path) -> None:
    """A long input: never more than (prefetch + 1) batches pulled ahead of the results,
    results in input order, broken inputs reported in place."""
    pulled = 0
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")

    def source():
        nonlocal pulled
        for i in range(300):
            pulled += 1
            yield broken if i % 37 == 5 else np.full((30, 30, 3), i % 256, np.uint8)

    rec = EmotionRecognizer(tiny.model, faces=FaceOptions(detector="none"), prefetch=2, batch_size=8)
    ahead = 0
    for n, result in enumerate(rec.stream(source()), start=1):
        ahead = max(ahead, pulled - n)
        assert result.ok == ((n - 1) % 37 != 5), n
        expected = str(broken) if (n - 1) % 37 == 5 else f"<array #{n - 1}>"
        assert result.source == expected
    assert n == 300
    assert ahead <= 8 * (2 + 1)


def test_results_round_trip(tiny: EmotionRecognizer) -> None:
    import json

    result = tiny.predict(np.zeros((30, 30, 3), np.uint8))[0]
    data = json.loads(result.to_json(top_k=2))
    assert data["label"] == result.label
    assert data["ok"] is True
    assert list(data["probs"]) == list(EMOTIONS)
    assert len(data["faces"]) == 1 and data["faces"][0]["box"] == [0, 0, 30, 30]
    assert [t["label"] for t in data["faces"][0]["top_k"]] == [lab for lab, _ in result.top_k(2)]
    assert set(data["timings_ms"]) == {"decode", "detect", "preprocess", "inference"}
    assert result.score == max(result.probs.values())


def test_fer2013_grey_faces_classify(tiny: EmotionRecognizer) -> None:
    faces = sorted(require_shared(FER2013 / "validation" / "sad").glob("*.jpg"))[:5]
    assert all(r.ok and r.image_size == (48, 48) for r in tiny.predict(faces))


def test_random_weights_warn(tiny_model_dir: Path) -> None:
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        load_model(tiny_model_dir)


def test_bad_arguments(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir)
    with pytest.raises(ValueError, match="batch_size"):
        EmotionRecognizer(loaded, batch_size=0, faces=FaceOptions(detector="none"))
    with pytest.raises(ValueError, match="errors must be"):
        EmotionRecognizer(loaded, faces=FaceOptions(detector="none")).predict([], errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no_face"):
        FaceOptions(detector="none", no_face="ignore")  # type: ignore[arg-type]


def test_wrong_kinds_of_argument_get_emovit_errors_that_say_what_to_do(
    tiny: EmotionRecognizer, tiny_model_dir: Path
) -> None:
    """Each of these was a bare TypeError or AttributeError from deep inside, or, for
    detector=None, accepted and then every image failed at detection."""
    from emovit import InputError, ModelLoadError, OptionError, load_image

    with pytest.raises(OptionError, match=r"from_pretrained"):
        EmotionRecognizer("default")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="detector must be") as raised:
        FaceOptions(detector=None)  # type: ignore[arg-type]
    assert raised.value.option == "detector"
    with pytest.raises(ModelLoadError, match="a str or a path"):
        load_model(5)  # type: ignore[arg-type]
    for bad in ("x", -1):
        with pytest.raises(OptionError, match="max_pixels"):
            load_image(np.zeros((8, 8, 3), np.uint8), max_pixels=bad)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="a URL: photos are read from files") as url:
        load_image("https://example.com/a.jpg")
    assert url.value.code == "not_found" and isinstance(url.value, InputError)
    for thing in (5, None):  # one input, as an error row naming it (iterating it failed)
        [row] = tiny.predict(thing)  # type: ignore[arg-type]
        assert row.error_code == "unsupported_input" and type(thing).__name__ in row.error
    with pytest.raises(OptionError, match="target must be one of"):
        tiny.explain(np.zeros((30, 30, 3), np.uint8), method="grad-rollout", target=3)  # type: ignore[arg-type]


def test_results_of_the_same_input_compare_equal_whatever_they_took(tiny: EmotionRecognizer) -> None:
    face = np.full((30, 30, 3), 90, np.uint8)
    first, second = tiny.predict(face)[0], tiny.predict(face)[0]
    first.timings["decode"] = second.timings["decode"] + 1.0  # no two runs time alike
    assert first == second
    assert first != tiny.predict(np.full((30, 30, 3), 200, np.uint8))[0]


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"batch_size": 1.5}, "batch_size"),
        ({"batch_size": "4"}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"threads": 1.5}, "threads"),
        ({"max_pixels": 0}, "max_pixels"),
        ({"decode_threads": 0}, "decode_threads"),
        ({"prefetch": -1}, "prefetch"),
        ({"faces": {"detector": "none"}}, "faces"),
        ({"backend": "tensorrt"}, "backend"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_bad_option_values_are_refused_before_the_model_loads(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, options: dict, option: str
) -> None:
    """Each option value that cannot work is an OptionError naming it, raised by from_pretrained
    before any weights are read (not a TypeError or a failure at the first predict)."""
    import emovit.models
    from emovit.errors import OptionError

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(emovit.models, "load_model", no_loading)
    with pytest.raises(OptionError) as raised:
        EmotionRecognizer.from_pretrained(str(tiny_model_dir), **options)
    assert raised.value.option == option and option in str(raised.value)
    with pytest.raises(TypeError, match="unexpected keyword arguments: bogus"):
        EmotionRecognizer.from_pretrained(str(tiny_model_dir), bogus=1)


def test_per_call_options_are_checked_at_the_call(tiny: EmotionRecognizer) -> None:
    """predict and stream check batch_size when called (stream too, not at its first result);
    top_k refuses a negative count (a slice would drop the last labels silently); an empty path
    is named as such (Path('') is the current folder)."""
    from emovit.errors import OptionError

    face = np.zeros((30, 30, 3), np.uint8)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(OptionError, match="batch_size"):
            tiny.predict([face], batch_size=bad)
        with pytest.raises(OptionError, match="batch_size"):
            tiny.stream([face], batch_size=bad)  # no next(): refused at the call
    result = tiny.predict(face)[0]
    assert len(result.top_k(0)) == 0 and len(result.top_k(7)) == 7
    for bad in (-1, 1.5):
        with pytest.raises(OptionError, match="top_k"):
            result.top_k(bad)
        with pytest.raises(OptionError, match="top_k"):
            result.to_dict(top_k=bad)
    [empty] = tiny.predict([""])
    assert (empty.error_code, empty.error) == ("not_found", "<empty path>: an empty path")


def test_plot_draws_on_the_analysed_pixels_or_says_why_not(tiny: EmotionRecognizer, tmp_path: Path) -> None:
    """A path is read again; an in-memory input (bytes, array, or a PIL image that was resized
    after opening: its file holds other pixels) needs keep_pixels or image=; pixels of another
    size than the analysed image are refused (the boxes would land elsewhere)."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save(photo)
    opened = Image.open(photo)
    opened.thumbnail((48, 48))  # 48x32 now; its filename still names the 96x64 file
    [from_path] = tiny.predict([photo])
    assert from_path.plot().shape == (64, 96, 3)
    [in_memory] = tiny.predict([opened])
    # its source is the file's path: "the input was not a path" named a path
    with pytest.raises(ValueError, match="read from memory .* keep_pixels=True"):
        in_memory.plot()
    assert in_memory.plot(np.asarray(opened.convert("RGB"))).shape == (32, 48, 3)
    assert tiny.predict([opened], keep_pixels=True)[0].plot().shape == (32, 48, 3)
    with pytest.raises(ValueError, match="the pixels to draw on are 96x64, the analysed image was 48x32"):
        in_memory.plot(np.zeros((64, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="keep_pixels=True"):
        tiny.predict([photo.read_bytes()])[0].save(tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()
    # a failed input (a path) was said to be "not a path"
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    [failed] = tiny.predict([text])
    with pytest.raises(ValueError, match=r"notes.jpg: the input failed \(.*\): there is nothing to draw"):
        failed.save(tmp_path / "out.png")


def test_torch_backend_fast_vit_path_gives_the_models_logits(tiny_model_dir: Path) -> None:
    """The [CLS]-only last layer is an optimisation, not an approximation."""
    from emovit.backends import TorchBackend

    loaded = load_model(tiny_model_dir)
    pixels = loaded.preprocessor([np.asarray(im.convert("RGB")) for im in make_image_zoo(6, seed=11)])
    fast, plain = TorchBackend(loaded), TorchBackend(loaded, fast_vit=False)
    assert fast._forward is not None and plain._forward is None
    np.testing.assert_allclose(fast(pixels), plain(pixels), atol=1e-5)


def test_bf16_is_opt_in_and_refused_on_cpus_without_native_bf16(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emovit.backends import torch_backend
    from emovit.backends.torch_backend import TorchBackend, cpu_has_bf16

    (tmp_path / "old").write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    (tmp_path / "new").write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert not cpu_has_bf16(tmp_path / "old") and cpu_has_bf16(tmp_path / "new")
    assert not cpu_has_bf16(tmp_path / "missing")

    loaded = load_model(tiny_model_dir)
    assert TorchBackend(loaded).precision == "fp32"  # the default is exact
    monkeypatch.setattr(torch_backend, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="AVX512_BF16"):
        TorchBackend(loaded, precision="bf16")
    with pytest.raises(ValueError, match="precision must be"):
        TorchBackend(loaded, precision="fp8")  # type: ignore[arg-type]
    monkeypatch.setattr(torch_backend, "cpu_has_bf16", lambda: True)
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none", precision="bf16")
    assert rec.backend.precision == "bf16"  # type: ignore[attr-defined]
    exact = EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none")
    images = [np.asarray(im.convert("RGB")) for im in make_image_zoo(6, seed=12)]
    close = np.abs(rec.classify_arrays(images) - exact.classify_arrays(images)).max()
    assert 0 < close < 0.05  # bf16 really ran (not fp32), and stays close


def test_cli_refuses_bf16_clearly_where_it_would_be_slow(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from emovit.backends import torch_backend
    from emovit.cli import main

    monkeypatch.setattr(torch_backend, "cpu_has_bf16", lambda: False)  # a CPU without native bf16
    make_image_zoo(1, seed=13)[0].save(tmp_path / "a.png")
    args = ["predict", str(tmp_path / "a.png"), "--model", str(tiny_model_dir), "--detector", "none"]
    result = CliRunner().invoke(main, [*args, "--precision", "bf16"])
    assert result.exit_code == 2 and "--precision" in result.output and "AVX512_BF16" in result.output


def _copy_model(source: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(source, dest)
    return dest


def _pipeline_worst(folder: Path, images: list[np.ndarray]) -> float:
    """The largest |probability difference| between emovit and transformers' pipeline."""
    from transformers import pipeline

    results = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none").predict(images)
    classifier = pipeline("image-classification", model=str(folder), device="cpu")
    worst = 0.0
    for image, result in zip(images, results, strict=True):
        assert result.ok, result.error
        theirs = {d["label"]: d["score"] for d in classifier(Image.fromarray(image), top_k=7)}
        worst = max(worst, max(abs(result.probs[k] - theirs[k]) for k in theirs))
    return worst


def _odd_images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 50), (61, 33), (100, 20))]


def test_a_checkpoint_saved_in_half_precision_answers_like_the_pipeline(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """transformers keeps a checkpoint's dtype: float32 pixels used to fail the first layer of
    an fp16 model (every input a model_failed row); they go in the weights' dtype now."""
    import torch
    from transformers import AutoModelForImageClassification

    folder = _copy_model(tiny_model_dir, tmp_path / "half")
    model = AutoModelForImageClassification.from_pretrained(tiny_model_dir).to(torch.float16)
    model.save_pretrained(folder, safe_serialization=True)
    assert _pipeline_worst(folder, _odd_images()) <= 2e-3  # fp16 arithmetic on both sides


def test_a_processor_type_with_its_own_defaults_is_read_as_transformers_reads_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """CLIP's processor reads an integer size as the shortest edge, then centre-crops: the fast
    path (which reads it as a square) is checked against transformers' at load time."""
    import json

    folder = _copy_model(tiny_model_dir, tmp_path / "clip-processor")
    config = {
        "image_processor_type": "CLIPImageProcessor",
        "size": 30,
        "crop_size": 30,
        "do_center_crop": True,
        "resample": 3,
        "image_mean": [0.48, 0.46, 0.41],
        "image_std": [0.27, 0.26, 0.28],
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    assert _pipeline_worst(folder, _odd_images()) <= 1e-4


def test_a_multi_label_checkpoint_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The pipeline reads a multi-label model with a sigmoid per class; emovit's softmax would
    give other numbers: such checkpoints are refused, saying why."""
    import json

    from emovit.errors import ModelLoadError

    folder = _copy_model(tiny_model_dir, tmp_path / "multi")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"problem_type": "multi_label_classification"}))
    with pytest.raises(ModelLoadError, match="multi-label"):
        EmotionRecognizer.from_pretrained(folder, detector="none")


def test_a_face_whose_model_output_is_not_a_number_is_an_error_row(tiny_model_dir: Path) -> None:
    """A NaN from the model made the face vanish (an ok image with no face, like "no face
    found"); it is that image's model_failed row now."""
    rec = EmotionRecognizer.from_pretrained(tiny_model_dir, device="cpu", detector="none")
    backend = rec.backend

    def poisoned(pixels: np.ndarray) -> np.ndarray:
        logits = backend(pixels)
        logits[0] = np.nan
        return logits

    rec.backend = poisoned  # type: ignore[assignment]
    first, second = rec.predict(_odd_images()[:2])
    assert (first.ok, first.error_code, second.ok) == (False, "model_failed", True)
    assert "not a number" in (first.error or "")


def test_a_third_party_onnx_file_beside_the_weights_is_not_picked_by_auto(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Hub repos may carry a model.onnx that is stale, quantised or broken: `auto` takes onnx
    only for emovit's own exports (export_info.json), and the weights answer."""
    pytest.importorskip("onnxruntime")
    from emovit.backends import TorchBackend

    folder = _copy_model(tiny_model_dir, tmp_path / "with-onnx")
    (folder / "model.onnx").write_bytes(b"not a model")
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none")
    assert isinstance(rec.backend, TorchBackend)
    assert all(result.ok for result in rec.predict(_odd_images()))


def test_without_resizing_the_image_the_model_fits_goes_through_whatever_its_batch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A processor that does not resize gives each image its own size: the one the model was
    built for (30x30 here) goes on even when other sizes outnumber it in its batch; it used to
    depend on which size happened to be the most common."""
    import json

    folder = _copy_model(tiny_model_dir, tmp_path / "no-resize")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(config | {"do_resize": False}))
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 50), (40, 50), (30, 30))]
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none", batch_size=3)
    results = rec.predict(images)
    assert [r.ok for r in results] == [False, False, True]
    assert results[0].error_code == "preprocess_failed" and "unlike" in (results[0].error or "")


def test_the_onnx_backend_on_a_gpu_device_is_refused_not_run_on_the_cpu(tmp_path: Path) -> None:
    """onnxruntime runs here on the CPU only: `--backend onnx --device cuda` ran on the CPU."""
    from types import SimpleNamespace

    from emovit.errors import OptionError
    from emovit.predictor import _create_backend

    (tmp_path / "model.onnx").write_bytes(b"not loaded: refused before")
    for model in (None, object()):  # an ONNX-only folder, and one with torch weights too
        loaded = SimpleNamespace(path=tmp_path, device="cuda:0", model=model)
        with pytest.raises(OptionError, match="onnx backend runs on the CPU") as caught:
            _create_backend("onnx" if model else "auto", loaded, None)  # type: ignore[arg-type]
        assert caught.value.option == "device"
    onnx_only = SimpleNamespace(path=tmp_path, device="cpu", model=None)  # bf16 fell back to onnx silently
    with pytest.raises(OptionError, match="only model.onnx .*precision bf16 is for the torch") as caught:
        _create_backend("auto", onnx_only, None, precision="bf16")  # type: ignore[arg-type]
    assert caught.value.option == "precision"


def test_many_faces_go_through_the_model_a_chunk_at_a_time(
    tiny: EmotionRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo of a crowd (or the server's micro-batch) was one model call over every face:
    its activations all at once. Calls take at most _MODEL_CHUNK faces, with the same answers."""
    import emovit.predictor

    pixels = np.random.default_rng(2).random((11, 3, 30, 30), dtype=np.float32)
    whole = tiny.probabilities(pixels)
    sizes: list[int] = []
    backend = tiny.backend
    monkeypatch.setattr(emovit.predictor, "_MODEL_CHUNK", 4)
    monkeypatch.setattr(tiny, "backend", lambda batch: sizes.append(len(batch)) or backend(batch))
    np.testing.assert_allclose(tiny.probabilities(pixels), whole, atol=1e-6)
    assert sizes == [4, 4, 3]
    # no face, no model call: an empty answer of the right width
    empty = tiny.probabilities(pixels[:0])
    assert empty.shape == (0, len(tiny.labels)) and sizes == [4, 4, 3]


def test_batches_of_other_shapes_in_one_model_call_fail_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The server joins several requests' batches in one `infer`: with a processor that does not
    resize, batches of other shapes could not be joined and every request of the call failed."""
    import json

    folder = _copy_model(tiny_model_dir, tmp_path / "no-resize")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps(config | {"do_resize": False}))
    rng = np.random.default_rng(6)
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none")
    fits, other = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((30, 30), (40, 50)))
    (good,), (bad,) = rec.infer([rec.prepare([fits]), rec.prepare([other])])
    assert good.ok and good.faces and not bad.ok and bad.error_code == "model_failed"
    assert good.faces[0].probs == rec.predict([fits])[0].faces[0].probs


def test_classify_arrays_frames_colour_crops_as_predict_does(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A model framed for grey faces: `classify_arrays` (the benchmark's entry) gave colour
    crops to the model as they were, while `predict` made them grey first."""
    import shutil

    from emovit.models import Framing, write_framing

    folder = tmp_path / "grey"
    shutil.copytree(tiny_model_dir, folder)
    write_framing(folder, Framing(face_margin=0.0, face_align=False, grey=True))
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none")
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(3)]
    crops[0][..., 0] = 255  # strongly coloured
    predicted = [[r.faces[0].probs[k] for k in rec.labels] for r in rec.predict(crops)]
    np.testing.assert_allclose(rec.classify_arrays(crops), predicted, atol=1e-6)


def test_a_generator_reusing_one_buffer_gets_each_frames_own_answer(tiny: EmotionRecognizer) -> None:
    """Inputs are read a batch ahead: a camera loop filling one array for every frame had its
    earlier frames answered with later frames' pixels."""
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(8)]
    expected = [[r.faces[0].probs[k] for k in tiny.labels] for r in tiny.predict(frames, batch_size=4)]
    buffer = np.empty_like(frames[0])

    def camera():  # type: ignore[no-untyped-def]
        for frame in frames:
            buffer[...] = frame
            yield buffer

    got = [[r.faces[0].probs[k] for k in tiny.labels] for r in tiny.predict(camera(), batch_size=4)]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_custom_detectors_numpy_score_still_writes_json(tiny_model_dir: Path) -> None:
    import json

    from emovit.faces import Detection

    class Detector:
        name = "custom"

        def detect(self, image: np.ndarray) -> list[Detection]:
            return [Detection((2.0, 2.0, 30.0, 30.0), score=np.float32(0.9))]  # type: ignore[arg-type]

    rec = EmotionRecognizer.from_pretrained(
        tiny_model_dir, device="cpu", faces=FaceOptions(detector=Detector())
    )
    result = rec.predict(np.zeros((40, 40, 3), np.uint8))[0]
    row = json.dumps(result.to_dict())  # raised TypeError: float32 is not JSON serializable
    assert json.loads(row)["faces"][0]["detection_score"] == pytest.approx(0.9)


def test_file_objects_from_a_generator_are_read_before_it_closes_them(
    tiny: EmotionRecognizer, tmp_path: Path
) -> None:
    """Inputs are read a batch ahead: `with open(p) as f: yield f` closed each file before it
    was read ("read of closed file")."""
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(encode(Image.fromarray(np.full((30, 30, 3), 40 * i, np.uint8))))

    def opened():  # type: ignore[no-untyped-def]
        for path in paths:
            with path.open("rb") as handle:
                yield handle

    results = tiny.predict(opened(), batch_size=4)
    assert all(r.ok for r in results), [r.error for r in results]
    assert [Path(r.source).name for r in results] == [p.name for p in paths]


def test_file_objects_already_read_or_closed_say_so(tiny: EmotionRecognizer, tmp_path: Path) -> None:
    """A file object read to its end said "no bytes (empty input)" under the file's name, as if
    the file on disk were empty; a closed one "cannot decode (ValueError: read of closed file)"."""
    path = tmp_path / "face.png"
    path.write_bytes(encode(Image.fromarray(np.full((30, 30, 3), 90, np.uint8))))
    read = path.open("rb")
    read.read()
    closed = path.open("rb")
    closed.close()
    spent = io.BytesIO(path.read_bytes())
    spent.read()
    results = tiny.predict([read, closed, spent, io.BytesIO(b""), path.open("rb")])
    codes = [(r.ok, r.error_code) for r in results]
    assert codes == [(False, "empty_file"), (False, "unsupported_input"), (False, "empty_file"),
                     (False, "empty_file"), (True, None)]  # fmt: skip
    size = path.stat().st_size
    expected = f"{path}: no bytes left to read: the file object is at byte {size}, its end"
    assert results[0].error == expected + " (read before; seek(0) first)"
    assert "the file object is closed" in (results[1].error or "")
    assert "at byte" in (results[2].error or "") and results[3].error == "<file #3>: no bytes (empty input)"
    read.close()
    # from a generator that closes each file once the next is asked for: the same words (the
    # empty one and the one read before were called closed), and a text-mode file an error row
    (tmp_path / "empty.png").write_bytes(b"")

    def opened():  # type: ignore[no-untyped-def]
        with (tmp_path / "empty.png").open("rb") as empty:
            yield empty
        with path.open("rb") as spent_file:
            spent_file.read()
            yield spent_file
        yield io.StringIO("text, not bytes")
        with path.open("rb") as good:
            yield good

    rows = tiny.predict(opened(), batch_size=4)
    assert [(r.ok, r.error_code) for r in rows] == [(False, "empty_file"), (False, "empty_file"),
                                                    (False, "unsupported_input"), (True, None)]  # fmt: skip
    assert rows[0].error is not None and rows[0].error.endswith("empty.png: no bytes (empty input)")
    assert "at byte" in (rows[1].error or "") and "binary mode" in (rows[2].error or "")
