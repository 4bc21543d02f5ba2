"""The options shared by predict, evaluate, serve and bench: declared once, one default each,
arriving in the command as `RecognizerOptions` and `FaceOptions`; and `emovit evaluate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from emovit.cli import _common, main
from emovit.cli._options import RecognizerOptions
from emovit.faces import FaceOptions

SHARED = {"model", "device", "backend", "precision", "threads", "max_pixels", "tta"}
FACES = {"detector", "detector_model", "det_threshold", "margin", "align", "grey", "min_face", "max_faces"}
FACES |= {"no_face"}
RUNNERS = ("predict", "evaluate", "serve")


def params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in main.commands[command].params if p.name}


def test_shared_options_have_one_default_everywhere() -> None:
    for name in SHARED | FACES | {"batch_size"}:
        commands = ("predict", "evaluate", "serve", "bench")  # bench's MODEL is an argument
        holders = [c for c in commands if isinstance(params(c).get(name), click.Option)]
        defaults = {repr(params(c)[name].default) for c in holders}
        opts = {tuple(params(c)[name].opts) for c in holders}
        assert len(defaults) == 1 and len(opts) == 1, (name, holders, defaults, opts)
    for command in RUNNERS:
        assert set(params(command)) >= SHARED | FACES, command
        assert params(command)["detector"].default == "auto"  # offline-first: haar when no YuNet
        for framing in ("margin", "align", "grey"):
            assert params(command)[framing].default is None
            assert "model's framing" in (params(command)[framing].help or "")
    assert params("bench")["batch_size"].default == params("predict")["batch_size"].default


@pytest.mark.parametrize(
    ("args", "tta"),
    [
        (["DATA"], "none"),
        (["DATA", "--tta"], "flip"),  # the old evaluate flag
        (["DATA", "--tta", "-o", "r"], "flip"),
        (["DATA", "--tta", "flip"], "flip"),
        (["--tta", "none", "DATA"], "none"),
        (["--tta=flip", "DATA"], "flip"),
    ],
)
def test_tta_is_a_choice_and_a_bare_flag(args: list[str], tta: str) -> None:
    ctx = main.commands["evaluate"].make_context("evaluate", [*args, "-o", "report"])
    assert ctx.params["tta"] == tta and ctx.params["data"] == "DATA"


def test_a_bare_tta_before_the_data_says_how_to_write_it() -> None:
    result = CliRunner().invoke(main, ["evaluate", "--tta", "data/", "-o", "r"])
    assert result.exit_code == 2 and "a bare --tta means flip" in result.stderr


def test_commands_receive_the_options_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def capture(options: RecognizerOptions, faces: FaceOptions, **kwargs: Any) -> None:
        seen.update(options=options, faces=faces)
        raise click.exceptions.Exit(0)

    monkeypatch.setattr(_common, "load_recognizer", capture)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    args = ["predict", str(tmp_path / "a.png"), "-m", "some/model", "--tta", "flip", "-b", "4"]
    args += ["--detector", "haar", "--margin", "0.1", "--no-align", "--max-faces", "2", "--no-face", "whole"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert seen["options"] == RecognizerOptions(model="some/model", tta="flip", batch_size=4)
    expected = FaceOptions(detector="haar", margin=0.1, align=False, max_faces=2, no_face="whole")
    assert seen["faces"] == expected and seen["faces"].grey is None  # grey: the model's framing


def test_an_option_error_names_its_flag(tiny_model_dir: Path, tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    args = ["predict", str(tmp_path / "a.png"), "-m", str(tiny_model_dir), "--detector", "none"]
    result = CliRunner().invoke(main, [*args, "--backend", "onnx", "--precision", "bf16"])
    assert result.exit_code == 2 and "'--precision'" in result.stderr  # OptionError(option="precision")


@pytest.fixture
def labelled(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("happy", "sad"):
        folder = tmp_path / "data" / "test" / label
        folder.mkdir(parents=True)
        for index in range(3):
            Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"{index}.png")
    return tmp_path / "data"


def test_evaluate_with_face_options_tta_and_exit_codes(
    labelled: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Needs `emovit.evaluation.evaluate(..., faces=, tta=, labels=)`."""
    out = tmp_path / "report"
    args = ["evaluate", str(labelled), "-m", str(tiny_model_dir), "-o", str(out), "--detector", "none", "-q"]
    result = CliRunner().invoke(main, [*args, "--tta"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 6 and summary["report"] == str(out / "report.md")
    assert json.loads((out / "metrics.json").read_text())["tta"] == "flip"
    (labelled / "test" / "sad" / "broken.png").write_bytes(b"not a png")
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 1, failed.output  # one image failed: counted, and exit 1
    assert sum(json.loads(failed.stdout)["failed"].values()) == 1
    missing = CliRunner().invoke(main, [*args[:1], str(tmp_path / "nothing"), *args[2:]])
    assert missing.exit_code == 2 and "'DATA'" in missing.stderr
