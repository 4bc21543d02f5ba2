"""ONNX export round trip and backend selection."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

from emovit import EmotionRecognizer
from emovit.backends import OnnxBackend, TorchBackend
from emovit.backends.export import ExportError, export_onnx
from emovit.cli import main
from emovit.errors import ModelLoadError, OptionError
from emovit.models import describe_model

from .conftest import make_image_zoo


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    export_onnx(str(tiny_model_dir), root / "fp32")
    export_onnx(str(tiny_model_dir), root / "int8", quantize="int8")
    return {"fp32": root / "fp32", "int8": root / "int8"}


def _layers(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def _op_count(folder: Path, op_type: str) -> int:
    import onnx

    return sum(node.op_type == op_type for node in onnx.load(str(folder / "model.onnx")).graph.node)


def test_fp32_round_trip_equals_torch(exported: dict[str, Path], tiny_model_dir: Path) -> None:
    info = json.loads((exported["fp32"] / "export_info.json").read_text())
    assert info["max_abs_logit_diff"] <= 1e-3
    # every layer but the last (computed for the [CLS] token only) runs as one fused op
    assert info["fused_attention_ops"] == _layers(tiny_model_dir) - 1 and info["cls_only_last_layer"]
    assert _op_count(exported["fp32"], "Attention") == _layers(tiny_model_dir) - 1
    assert _op_count(exported["fp32"], "Softmax") == 1  # the last layer's, for one query
    assert sorted(p.name for p in exported["fp32"].iterdir()) == [
        "config.json",
        "export_info.json",
        "model.onnx",
        "preprocessor_config.json",
    ]
    images = [np.asarray(im.convert("RGB")) for im in make_image_zoo(12, seed=4)]
    torch_rec = EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none", backend="torch")
    onnx_rec = EmotionRecognizer.from_pretrained(exported["fp32"], detector="none")
    assert isinstance(onnx_rec.backend, OnnxBackend)  # auto picks onnx for an ONNX folder
    assert onnx_rec.model.model is None  # the torch weights were never loaded
    with pytest.raises(OptionError, match="only model.onnx"):  # not run as onnx behind its back
        EmotionRecognizer.from_pretrained(exported["fp32"], detector="none", backend="torch")
    np.testing.assert_allclose(onnx_rec.classify_arrays(images), torch_rec.classify_arrays(images), atol=1e-5)


def test_int8_is_close(exported: dict[str, Path], tiny_model_dir: Path) -> None:
    images = [np.asarray(im.convert("RGB")) for im in make_image_zoo(12, seed=5)]
    ref = EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none").classify_arrays(images)
    q = EmotionRecognizer.from_pretrained(exported["int8"], detector="none").classify_arrays(images)
    assert np.abs(q - ref).max() < 0.05
    info = json.loads((exported["int8"] / "export_info.json").read_text())
    assert info["quantize"] == "int8" and info["top1_agreement"] >= 0.9
    assert _op_count(exported["int8"], "QAttention") == _layers(tiny_model_dir) - 1  # in int8 too


def test_backend_selection(exported: dict[str, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    assert isinstance(
        EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none").backend, TorchBackend
    )
    with pytest.raises(ModelLoadError, match="emovit export"):
        EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none", backend="onnx")
    with pytest.raises(ValueError, match="backend must be"):
        EmotionRecognizer.from_pretrained(tiny_model_dir, detector="none", backend="tpu")


def test_a_tolerance_of_zero_is_a_tolerance(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`--tolerance 0` meant the default tolerance (0 read as "not given")."""
    from emovit.errors import ExportError

    with pytest.raises(ExportError, match=r"tolerance 0e\+00"):
        export_onnx(str(tiny_model_dir), tmp_path / "exact", tolerance=0.0)


def test_export_fails_loudly_beyond_tolerance(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="differs from torch.*nothing was written"):
        export_onnx(str(tiny_model_dir), tmp_path / "strict", tolerance=1e-12)
    assert list(tmp_path.iterdir()) == []  # no folder `--backend auto` would pick up, no leftovers


def test_export_keeps_the_models_framing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A model trained on tight grey crops is exported with its framing: the ONNX folder crops
    faces the way the torch folder does."""
    import shutil

    from emovit.models import Framing, read_framing, write_framing

    source = tmp_path / "trained"
    shutil.copytree(tiny_model_dir, source)
    framing = Framing(face_margin=0.0, face_align=True, grey=True)
    write_framing(source, framing)
    export_onnx(str(source), tmp_path / "onnx", check_images=2)
    assert read_framing(tmp_path / "onnx") == framing
    torch_rec = EmotionRecognizer.from_pretrained(source, detector="none")
    onnx_rec = EmotionRecognizer.from_pretrained(tmp_path / "onnx", detector="none")
    assert onnx_rec.model.framing == torch_rec.model.framing
    # exported again from a model without a framing: the old one does not linger
    export_onnx(str(tiny_model_dir), tmp_path / "onnx", check_images=2)
    assert read_framing(tmp_path / "onnx") is None
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == [
        "config.json", "export_info.json", "model.onnx", "preprocessor_config.json"
    ]  # fmt: skip
    # a damaged framing record was copied as it was: the export then would not load
    (source / "emovit.json").write_text('{"face_margin": "wide"}')
    with pytest.raises(ModelLoadError, match="unreadable framing record"):
        export_onnx(str(source), tmp_path / "damaged", check_images=2)
    assert not (tmp_path / "damaged").exists()


def test_bench_prints_the_side_by_side_table_and_writes_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from emovit.cli import main

    images = tmp_path / "images"
    for label, image in zip(["happy", "sad"] * 3, make_image_zoo(6), strict=True):
        (images / label).mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(images / label / f"{len(list((images / label).iterdir()))}.png")
    report_path = tmp_path / "bench.json"
    args = ["bench", str(tiny_model_dir), "--images", str(images), "--count", "4", "--agreement", "6"]
    args += ["--repeats", "2", "--batch-size", "2", "--crops-batch-size", "4", "--crops", "64"]
    args += ["-o", str(report_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert set(report["backends"]) == {"torch", "onnx-fp32", "onnx-int8", "hf-pipeline"}
    for name, row in report["backends"].items():
        assert len(row["throughput_runs"]) == 2 and row["images_per_s"] > 0
        assert row["latency_ms_p50"] <= row["latency_ms_p95"]
        # faces/s on in-memory crops is measured for emovit's backends, not the pipeline
        assert ("faces_per_s" in row) == (name != "hf-pipeline")
    assert report["backends"]["hf-pipeline"]["throughput_vs_pipeline"] == pytest.approx(1.0)
    assert (report["crops"], report["crops_batch_size"]) == (64, 4)
    fp32 = report["agreement"]["onnx-fp32"]
    assert fp32["images"] == 6 and fp32["top1_agreement_vs_torch"] == 1.0
    assert fp32["max_abs_prob_diff_vs_torch"] < 1e-4
    assert report["agreement"]["torch"]["accuracy_change_vs_torch"] == 0.0
    for name in report["backends"]:
        assert name in result.output  # the table
    assert f"cpu {report['machine']['model']} (" in result.output  # figures hold for the CPU named
    assert "Loading weights" not in result.output  # the pipeline baseline's bar broke into the table
    # an -o under a file is refused before the benchmark runs, not after (its results lost)
    (tmp_path / "a file").write_text("x")
    refused = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "a file" / "bench.json")])
    assert refused.exit_code == 2 and "its folder cannot be written there" in refused.output
    assert "repetition" not in refused.output


def test_an_onnx_file_answers_only_for_the_weights_it_was_exported_from(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """export records the weights' digest; backend auto runs torch (with one warning) where the
    weights beside model.onnx changed since; an export into another model's folder or a run,
    or onto a file, is refused (its config would sit beside weights it does not describe)."""
    import shutil
    import warnings

    from emovit.models import build_random_model, weights_digest

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    export_onnx(str(folder), folder, check_images=2)  # into the model's own folder: fine
    info = json.loads((folder / "export_info.json").read_text())
    assert info["weights_sha256"] == weights_digest(folder)
    assert isinstance(EmotionRecognizer.from_pretrained(folder, detector="none").backend, OnnxBackend)
    onnx = describe_model(folder).to_dict()["onnx"]
    assert onnx == {"file": "model.onnx", "exported_by_emovit": True, "quantize": None, "opset": 17,
                    "matches_weights": True}  # fmt: skip
    other = tmp_path / "other"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_random_model(other, "vit-test", seed=1)
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")  # trained on since
    with pytest.warns(UserWarning, match="exported from other weights") as said:
        rec = EmotionRecognizer.from_pretrained(folder, detector="none")
    assert (
        isinstance(rec.backend, TorchBackend) and len([w for w in said if "exported" in str(w.message)]) == 1
    )
    with pytest.raises(OptionError, match="exported from other weights .*or use backend torch") as refused:
        EmotionRecognizer.from_pretrained(folder, detector="none", backend="onnx")  # by name: it ran stale
    assert refused.value.option == "backend"
    shown = CliRunner().invoke(main, ["info", str(folder), "--format", "json"])  # says it, as auto does
    details = json.loads(shown.output)
    assert details["onnx"]["matches_weights"] is False and details["backend_auto_cpu"] == "torch"
    assert "STALE:" in CliRunner().invoke(main, ["info", str(folder)]).output
    with pytest.raises(
        OptionError, match="holds another model or training run .*model.safetensors"
    ) as raised:
        export_onnx(str(tiny_model_dir), other, check_images=2)
    assert raised.value.option == "output" and not (other / "model.onnx").exists()
    # an export folder (no weights) takes the same model again, never another one's export
    export_onnx(str(other), tmp_path / "exported", check_images=2)
    export_onnx(str(other), tmp_path / "exported", quantize="int8", check_images=2)  # the same model: fine
    with pytest.raises(OptionError, match=r"holds another model .*model.onnx, config.json"):
        export_onnx(str(tiny_model_dir), tmp_path / "exported", check_images=2)  # was replaced silently
    assert json.loads((tmp_path / "exported" / "export_info.json").read_text())["quantize"] == "int8"
    holiday = tmp_path / "holiday"  # a folder of photos: the model's files went in among them
    holiday.mkdir()
    (holiday / "IMG_0001.jpg").write_bytes(b"a photo")
    with pytest.raises(OptionError, match=r"holiday is not empty \(IMG_0001.jpg\) and holds no model"):
        export_onnx(str(tiny_model_dir), holiday, check_images=2)
    assert [p.name for p in holiday.iterdir()] == ["IMG_0001.jpg"]
    (tmp_path / "empty").mkdir()
    export_onnx(str(tiny_model_dir), tmp_path / "empty", check_images=2)  # an empty folder: fine
    (tmp_path / "a file").write_text("x")
    with pytest.raises(OptionError, match="a file, not a folder"):
        export_onnx(str(tiny_model_dir), tmp_path / "a file", check_images=2)
    with pytest.raises(OptionError, match="the model folder cannot be created") as raised:  # before loading
        export_onnx(str(tiny_model_dir), tmp_path / "a file" / "x", check_images=2)
    assert raised.value.option == "output"
    with pytest.raises(OptionError, match="opset 99") as raised:  # an internal error (exit 3)
        export_onnx(str(tiny_model_dir), tmp_path / "late", opset=99, check_images=2)
    assert raised.value.option == "opset" and not (tmp_path / "late").exists()


@pytest.mark.parametrize(
    "script", ["bench_preprocess.py", "bench_video.py", "serve_batching.py", "bench_backends.py"]
)
def test_benchmark_counts_must_be_at_least_one(script: str) -> None:
    """--repeats 0 (or --rounds 0) ended in a statistics error or a division by zero after the
    models had loaded; it is now a usage error before any work."""
    import argparse
    import subprocess
    import sys

    from emovit.bench import at_least_one

    assert at_least_one("3") == 3
    for bad in ("0", "-2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            at_least_one(bad)
    option = "--rounds" if script == "serve_batching.py" else "--repeats"
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    done = subprocess.run(
        [sys.executable, str(path), option, "0"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and f"argument {option}: must be at least 1, not 0" in done.stderr, (
        done.stderr
    )


def test_the_bench_table_keeps_its_columns_where_figures_are_missing() -> None:
    """Without the pipeline (or agreement, or faces/s) each "-" took one character, not its
    column's width: every figure after it slid left under the wrong heading."""
    from emovit.bench import format_table

    row = {"images_per_s": 7.72, "throughput_vs_pipeline": None, "latency_ms_p50": 373.8}
    row |= {"latency_ms_p95": 1576.1, "latency_p50_vs_pipeline": None}
    report = {"model": "m", "images": 4, "batch_size": 2, "repeats": 1, "threads": 2}
    report |= {
        "backends": {"torch": row, "onnx-fp32": {**row, "throughput_vs_pipeline": 1.5}},
        "agreement": {},
    }
    header, *rows = format_table(report).splitlines()[1:]
    assert all(len(line) == len(header) for line in rows), [header, *rows]
    assert rows[0].split() == ["torch", "7.72", "-", "373.8", "1576.1", "-", "-", "-", "-", "-"]


def test_bench_without_images_says_where_its_default_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run away from the repository, bench's default (../shared) was "no such image folder"."""
    from click.testing import CliRunner

    from emovit.cli import main

    monkeypatch.setenv("EMOVIT_SHARED", str(tmp_path))
    result = CliRunner().invoke(main, ["bench", "--count", "1"])
    assert result.exit_code == 2 and "set EMOVIT_SHARED to the folder holding data/fer2013" in result.output
    result = CliRunner().invoke(main, ["bench", "--images", str(tmp_path / "mine")])
    assert (
        result.exit_code == 2
        and "no such image folder" in result.output
        and "EMOVIT_SHARED" not in result.output
    )
