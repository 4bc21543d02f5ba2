import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emovit import EMOTIONS, EmotionRecognizer
from emovit.errors import ModelLoadError
from emovit.models import (
    ARCH_PRESETS,
    REFERENCE_ID2LABEL,
    _loading,
    build_random_model,
    describe_model,
    list_models,
    load_model,
    load_torch_model,
    resolve_model,
)

from .hub import populate_hf_cache

REFERENCE_ID = "dima806/facial_emotions_image_detection"


def test_registry_lists_known_models() -> None:
    assert list_models() == ["default", "dima806"]


def test_load_from_folder(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, device="cpu")
    assert loaded.label_map.names == tuple(REFERENCE_ID2LABEL.values())
    assert loaded.device == "cpu"
    assert not loaded.model.training
    assert loaded.random_weights


def test_describe_counts_parameters_without_loading(tiny_model_dir: Path) -> None:
    info = describe_model(tiny_model_dir).to_dict()
    loaded = load_model(tiny_model_dir, device="cpu")
    assert info["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert info["image_size"] == 30
    assert info["labels"] == list(REFERENCE_ID2LABEL.values())
    assert info["processor"]["size"] == {"height": 30, "width": 30}


def test_hub_id_from_a_prepopulated_cache_offline(tiny_model_dir: Path) -> None:
    snapshot = populate_hf_cache(Path(os.environ["HF_HUB_CACHE"]), REFERENCE_ID, tiny_model_dir)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert resolve_model(REFERENCE_ID) == snapshot
    assert resolve_model("dima806") == snapshot  # the registry name points at the same id
    rec = EmotionRecognizer.from_pretrained(REFERENCE_ID, device="cpu", detector="none")
    assert rec.labels == EMOTIONS
    result = rec.predict(np.zeros((30, 30, 3), np.uint8))[0]
    assert set(result.probs) == set(EMOTIONS)
    assert abs(sum(result.probs.values()) - 1) < 1e-6


def test_uncached_hub_id_offline_is_one_clear_error() -> None:
    with pytest.raises(ModelLoadError) as info:
        EmotionRecognizer.from_pretrained(REFERENCE_ID, detector="none")
    message = str(info.value)
    assert REFERENCE_ID in message
    assert "not in" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "give a local folder as the model" in message  # says what to do (whether MODEL or --model)


def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off, in the environment and in huggingface_hub's copy of it (read when it
    was first imported: with HF_HUB_OFFLINE=1 then, it refused every download here)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_unreachable_hub_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _online(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ModelLoadError, match="cannot be reached|cannot download"):
        resolve_model("someone/not-cached")


@pytest.mark.parametrize("ref", ["./no/such/folder", "/abs/missing", "not a valid id!"])
def test_bad_references(ref: str) -> None:
    with pytest.raises(ModelLoadError, match="not a model folder"):
        resolve_model(ref)


def test_a_file_given_as_the_model_is_named_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo or weights file given as the model (a relative name reads like a Hub id) is said
    to be a file, not looked up in the Hugging Face cache."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(b"x")
    for ref in ("photo.jpg", str(tmp_path / "photo.jpg")):
        with pytest.raises(ModelLoadError, match="is a file, not a model folder"):
            resolve_model(ref)


def test_missing_embedded_model_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_loading, "_embedded_folder", lambda: tmp_path / "nothing")
    with pytest.raises(ModelLoadError, match="make train-default"):
        resolve_model("default")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_pickle_weights_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors weights.*pytorch_model\.bin"):
        load_model(folder)


def test_a_checkpoint_missing_weights_is_refused_not_run_with_random_layers(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A checkpoint without its classifier (a headless backbone, a damaged export) loaded and
    answered with a random head, with no warning; training from it (--init) still may."""
    from safetensors.torch import load_file, save_file

    from emovit.models import load_torch_model

    folder = tmp_path / "headless"
    shutil.copytree(tiny_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"lacks weights of 2 tensor\(s\) .*classifier\.bias"):
        EmotionRecognizer.from_pretrained(str(folder), detector="none")
    assert load_torch_model(folder, ignore_mismatched_sizes=True).model is not None  # --init's way


def test_remote_code_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(folder)


def test_a_config_without_a_model_type_says_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    """It said "unknown model_type None", which reads like a Python internal."""
    folder = _copy(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="config.json names no model_type"):
        load_model(folder)


def test_remote_code_in_the_processor_config_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A processor config naming its own class (auto_map) is refused before transformers could
    import the folder's Python file, even where emovit would fall back to transformers' processor."""
    folder = _copy(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(crop_pct=0.9, auto_map={"AutoImageProcessor": "proc.EvilProcessor"})
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    (folder / "proc.py").write_text("raise SystemExit('the folder code ran')\n")
    for load_weights in (True, False):
        with pytest.raises(ModelLoadError, match="trust_remote_code"):
            load_model(folder, load_weights=load_weights)


def test_a_broken_processor_config_fails_the_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Not every image: the model cannot prepare any input, so loading it fails (exit 2)."""
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match="no preprocessor_config.json"):
        load_model(folder)
    (folder / "preprocessor_config.json").write_text("[1, 2")
    with pytest.raises(ModelLoadError, match="cannot read the processor config"):
        EmotionRecognizer.from_pretrained(folder, detector="none")


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_unavailable_device_is_refused(tiny_model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelLoadError, match="CUDA is not available") as caught:
        load_model(tiny_model_dir, device="cuda")
    assert caught.value.option == "device"
    for bad in ("gpu", "cpu:x", ""):  # named as the device, never a traceback
        with pytest.raises(ModelLoadError, match="unknown device") as caught:
            load_model(tiny_model_dir, device=bad)
        assert caught.value.option == "device"
    from click.testing import CliRunner

    from emovit.cli import main

    result = CliRunner().invoke(main, ["predict", "x.jpg", "--model", str(tiny_model_dir), "--device", "gpu"])
    assert result.exit_code == 2 and "'--device'" in result.output and "unknown device" in result.output


@pytest.mark.parametrize("preset", sorted(set(ARCH_PRESETS) - {"vit-base-patch16-224"}))
def test_presets_build_loadable_models_that_describe_themselves(preset: str, tmp_path: Path) -> None:
    folder = build_random_model(tmp_path / preset, preset, id2label=dict(enumerate(EMOTIONS)))
    rec = EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none")
    size = ARCH_PRESETS[preset].config["image_size"]
    probs = rec.classify_arrays([np.full((size, size, 3), 128, np.uint8)])
    assert probs.shape == (1, 7)
    # `emovit info`: the family's own fields, no empty ones
    info = describe_model(folder).to_dict()
    assert [k for k, v in info.items() if v is None] == []
    assert info["parameters"] == sum(p.numel() for p in rec.model.model.parameters())
    family = ARCH_PRESETS[preset].model_type
    expected = {
        "vit": {"patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads"},
        "mobilevit": {"hidden_sizes", "neck_hidden_sizes", "expand_ratio"},
        "resnet": {"hidden_sizes", "depths", "embedding_size", "layer_type"},
    }[family]
    assert expected <= set(info), (family, sorted(info))
    if family != "vit":
        assert "hidden_size" not in info and "num_hidden_layers" not in info


def test_a_damaged_weights_file_is_named_not_an_internal_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A truncated model.safetensors (a copy cut short) was SafetensorError, exit 3, no file
    named: info and every loading door say which file and that it is not readable."""
    from emovit.errors import ModelLoadError

    folder = _copy(tiny_model_dir, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"model\.safetensors: not readable safetensors weights"):
        describe_model(folder)
    with pytest.raises(ModelLoadError, match=r"cannot load the model \(.*header"):
        EmotionRecognizer.from_pretrained(folder, device="cpu", detector="none")


def test_describe_leaves_out_what_an_onnx_only_folder_lacks(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "model.onnx")  # only the file's presence matters here
    info = describe_model(folder).to_dict()
    assert "parameters" not in info and None not in info.values()


def test_load_torch_model_keeps_or_renews_the_head(tiny_model_dir: Path) -> None:
    """The same labels keep the checkpoint's head; other labels (or another order) get a head
    drawn afresh, never the old one reused by position."""
    import torch

    torch.manual_seed(0)
    base = load_torch_model(tiny_model_dir).model
    same = load_torch_model(tiny_model_dir, id2label=REFERENCE_ID2LABEL).model
    torch.testing.assert_close(same.classifier.weight, base.classifier.weight)
    reordered = dict(enumerate(reversed(REFERENCE_ID2LABEL.values())))
    renewed = load_torch_model(tiny_model_dir, id2label=reordered).model
    assert not torch.allclose(renewed.classifier.weight, base.classifier.weight)
    torch.testing.assert_close(renewed.vit.embeddings.cls_token, base.vit.embeddings.cls_token)
    with pytest.raises(ModelLoadError, match="cannot load the model"):
        load_torch_model(tiny_model_dir, id2label={0: "happy", 1: "sad"})  # 2 labels, a 7-way head
    two = load_torch_model(tiny_model_dir, id2label={0: "happy", 1: "sad"}, ignore_mismatched_sizes=True)
    assert two.model.classifier.out_features == 2 and two.label_map.names == ("happy", "sad")
    assert not two.model.training and two.path == tiny_model_dir


@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_a_vit_at_another_size_keeps_its_position_embeddings_resampled(kind: str, tmp_path: Path) -> None:
    """``config_overrides={"image_size": N}`` (``--init DIR --set image_size=N``) on a ViT or
    DeiT: the position embeddings are the checkpoint's, resampled to the new patch grid, so the
    model answers N x N faces as the checkpoint does with transformers' run-time
    ``interpolate_pos_encoding``; nothing drawn afresh, and the size survives a save."""
    import torch
    from transformers import DeiTConfig, DeiTForImageClassification, ViTConfig, ViTForImageClassification

    fields = {"image_size": 32, "patch_size": 8, "hidden_size": 24, "num_hidden_layers": 1,
              "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 3}  # fmt: skip
    torch.manual_seed(0)
    if kind == "vit":
        base: Any = ViTForImageClassification(ViTConfig(**fields))
    else:
        base = DeiTForImageClassification(DeiTConfig(**fields))
    with torch.no_grad():  # a table with structure: a resampled one differs from a fresh draw
        base.base_model.embeddings.position_embeddings.normal_(0.0, 1.0)
    base.eval().save_pretrained(tmp_path / "base")
    faces = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        expected = base(pixel_values=faces, interpolate_pos_encoding=True).logits

    def at(size: int) -> Any:
        overrides = {"image_size": size}
        loaded = load_torch_model(tmp_path / "base", config_overrides=overrides, ignore_mismatched_sizes=True)
        return loaded.model

    model = at(48)
    assert model.config.image_size == 48
    assert model.base_model.embeddings.position_embeddings.shape[1] == 36 + (1 if kind == "vit" else 2)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=faces).logits, expected)
    model.save_pretrained(tmp_path / "bigger")
    again = load_torch_model(tmp_path / "bigger").model  # a plain load: no mismatch, same answers
    with torch.no_grad():
        torch.testing.assert_close(again(pixel_values=faces).logits, expected)
    assert at(16).base_model.embeddings.position_embeddings.shape[1] == 4 + (1 if kind == "vit" else 2)
    from emovit.errors import OptionError

    with pytest.raises(OptionError, match="image_size=4 is smaller than the model's 8x8 patches"):
        at(4)


def test_one_loader_in_the_source() -> None:
    """Every checkpoint becomes a torch module in `load_torch_model`, behind the safety checks."""
    src = Path(__file__).resolve().parents[1] / "src" / "emovit"
    loaders = [
        str(path.relative_to(src))
        for path in src.rglob("*.py")
        if "AutoModelForImageClassification.from_pretrained" in path.read_text()
    ]
    assert loaders == ["models/_loading.py"]


def test_hub_download_through_a_local_server_then_offline(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .hub import FakeHub

    with FakeHub({REFERENCE_ID: tiny_model_dir}) as hub:
        _online(monkeypatch)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        folder = resolve_model(REFERENCE_ID)
        assert any(
            r.startswith("GET /dima806/facial_emotions_image_detection/resolve/") for r in hub.requests
        )
        with pytest.raises(ModelLoadError, match="no model 'nobody/nothing' on the Hugging Face Hub"):
            resolve_model("nobody/nothing")
    assert folder.is_relative_to(Path(os.environ["HF_HUB_CACHE"]))
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (folder / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    # Cached now: works with the server gone and offline mode on.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rec = EmotionRecognizer.from_pretrained(REFERENCE_ID, device="cpu", detector="none")
    assert rec.model.path == folder


def test_loading_weights_draws_no_bar_and_keeps_a_callers_hook(
    tiny_model_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' "Loading weights" bar reached every library user's stderr at each load
    (the CLI hid it by turning all of transformers' bars off); a tqdm hook of the caller's own
    still sees the other bars, and is theirs again afterwards."""
    from transformers.utils import logging as hf_logging

    from emovit.models import load_torch_model

    monkeypatch.setattr(hf_logging, "_tqdm_active", True)  # as in a fresh process (the CLI tests turn it off)
    seen: list[str] = []

    def mine(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seen.append(kwargs.get("desc", ""))
        return factory(*args, **kwargs)

    previous = hf_logging.set_tqdm_hook(mine)
    try:
        capfd.readouterr()
        load_torch_model(tiny_model_dir)
        assert "Loading weights" not in capfd.readouterr().err
        assert seen == ["Loading weights"]  # the caller's hook was asked (with the bar disabled)
        assert hf_logging.set_tqdm_hook(mine) is mine  # theirs again
    finally:
        hf_logging.set_tqdm_hook(previous)
