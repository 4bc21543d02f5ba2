"""The CLI's exit codes: 0 all inputs succeeded, 1 some failed, 2 usage error, 3 internal
error, 130 Ctrl-C (after the outputs were closed), 141 stdout closed by its reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from emovit.cli import main
from emovit.predictor import EmotionRecognizer
from emovit.writers import ResultWriter

from .conftest import make_image_zoo


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "in put"
    folder.mkdir()
    for index, image in enumerate(make_image_zoo(3, seed=5)):
        image.convert("RGB").save(folder / f"img {index}.png")
    return folder


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def predict(folder: Path, model: Path, *args: str) -> Result:
    return run("predict", str(folder), "--model", str(model), "--detector", "none", "-q", *args)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_0_when_every_input_succeeds(images: Path, tiny_model_dir: Path) -> None:
    result = predict(images, tiny_model_dir, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3


def test_1_when_some_inputs_fail(images: Path, tiny_model_dir: Path) -> None:
    (images / "broken.png").write_bytes(b"not a png")
    result = predict(images, tiny_model_dir, "--format", "jsonl")
    assert result.exit_code == 1, result.output
    assert len(result.stdout.splitlines()) == 4  # the others are still written


def test_2_on_usage_errors(images: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert run("predict", str(images), "--no-such-flag").exit_code == 2
    assert run("predict", str(images), "--no-face", "maybe").exit_code == 2
    unloadable = predict(images, tmp_path / "no model")
    assert unloadable.exit_code == 2 and "'--model'" in unloadable.stderr
    assert "Traceback" not in unloadable.output
    bad_face_model = predict(images, tiny_model_dir, "--detector", "yunet", "--detector-model", str(images))
    assert bad_face_model.exit_code == 2  # a folder is no YuNet file: click refuses it


def test_3_on_an_internal_error_one_line(
    images: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(EmotionRecognizer, "stream", broken)
    result = predict(images, tiny_model_dir)
    assert result.exit_code == 3
    assert error_lines(result) == [
        "error: internal error: RuntimeError: boom second line "
        "(run `emovit --debug COMMAND ...` for the traceback)"
    ]
    assert "Traceback" not in result.stderr
    debug = run("--debug", "predict", str(images), "--model", str(tiny_model_dir), "--detector", "none")
    assert debug.exit_code == 3
    assert "Traceback (most recent call last)" in debug.stderr and "RuntimeError: boom" in debug.stderr


def test_130_on_ctrl_c_leaves_no_half_written_file(
    images: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out" / "results.csv"
    out.parent.mkdir()
    out.write_text("the previous results\n")
    write = ResultWriter.write
    calls = []

    def interrupted(self: ResultWriter, result: object) -> None:
        calls.append(result)
        if len(calls) == 2:
            raise KeyboardInterrupt
        write(self, result)  # type: ignore[arg-type]

    monkeypatch.setattr(ResultWriter, "write", interrupted)
    result = predict(images, tiny_model_dir, "--format", "csv", "-o", str(out))
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert out.read_text() == "the previous results\n"  # untouched: whole or nothing
    assert [p.name for p in out.parent.iterdir()] == ["results.csv"]  # no temporary file left


def test_141_when_the_reader_of_stdout_goes_away(
    images: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def closed(self: ResultWriter, result: object) -> None:
        raise BrokenPipeError

    monkeypatch.setattr(ResultWriter, "write", closed)
    result = predict(images, tiny_model_dir, "--format", "jsonl")
    assert result.exit_code == 141
    assert error_lines(result) == []


def test_a_missing_image_is_an_error_row_not_a_crash(tiny_model_dir: Path, tmp_path: Path) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "ok.png")
    result = run(
        "predict", str(tmp_path / "ok.png"), str(tmp_path / "gone.png"), "--model", str(tiny_model_dir),
        "--detector", "none", "--format", "csv",
    )  # fmt: skip
    assert result.exit_code == 1
    assert ",error," in result.stdout and "not_found,decode" in result.stdout


def _many_photos(folder: Path, count: int) -> Path:
    """`count` small PNGs (24x24, drawn directly: the zoo's big sizes took 13 s for 1,500)."""
    folder.mkdir()
    rng = np.random.default_rng(9)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"p{index:04d}.png")
    return folder


def _terminated_when(proc: Any, ready: Any, timeout: float = 120) -> None:
    """SIGTERM `proc` once `ready()` holds (or fail if it ends first)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the command ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)


def test_sigterm_on_a_photo_run_keeps_the_rows_done(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Only runs with videos stopped cleanly: SIGTERM on photos killed the process where it
    stood (exit 143) and left its temporary results file behind."""
    import csv
    import subprocess
    import sys

    photos = _many_photos(tmp_path / "photos", 1500)
    out = tmp_path / "out.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emovit.cli", "predict", str(photos), "--model", str(tiny_model_dir),
         "--detector", "none", "--batch-size", "1", "--format", "csv", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # rows have reached the temporary file (its buffer flushed once): the run is well under way
    _terminated_when(proc, lambda: any(p.stat().st_size > 0 for p in tmp_path.glob(".out.csv.*.part")))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert 0 < len(rows) < 1500 and all(r["status"] == "ok" for r in rows)
    assert not list(tmp_path.glob(".*.part"))


def test_sigterm_on_any_command_cleans_up_and_exits_130(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SIGTERM killed `explain`, `evaluate`, `train` where they stood, temporary files left."""
    import subprocess
    import sys

    photos = _many_photos(tmp_path / "photos", 600)
    maps = tmp_path / "maps"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emovit.cli", "explain", str(photos), "--model", str(tiny_model_dir),
         "--detector", "none", "-o", str(maps), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _terminated_when(proc, lambda: maps.is_dir() and any(maps.glob("*.png")))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and not list(maps.glob(".*.part"))


def test_a_piped_table_is_as_wide_as_columns_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped, tables were 140 wide whatever COLUMNS said: long paths folded over lines (a
    `grep` for a file name missed it). COLUMNS is honoured; without it (or nonsense) 140."""
    import io

    from emovit.results import FaceResult, ImageResult

    source = "/photos/" + "a long folder name/" * 8 + "face.jpg"
    result = ImageResult(source, faces=[FaceResult({"happy": 0.9, "sad": 0.1}, box=(1, 2, 3, 4))])

    def table() -> str:
        buffer = io.StringIO()
        writer = ResultWriter(buffer, "table", ["happy", "sad"])
        writer.write(result)
        writer.close()
        return buffer.getvalue()

    monkeypatch.setenv("COLUMNS", "400")
    assert source in table()
    for columns in ("", "wide", "0", "-5"):
        monkeypatch.setenv("COLUMNS", columns)
        assert source not in table() and max(len(line) for line in table().splitlines()) == 140
    monkeypatch.setenv("COLUMNS", "12")  # 80 at least: narrower, the labels were cut to "…"
    assert max(len(line) for line in table().splitlines()) == 80 and "happy" in table()


def test_a_table_whose_reader_went_away_is_a_broken_pipe_not_exit_1() -> None:
    """`emovit predict … | head` exited 1 (rich's own console ends the process so on a broken
    pipe: "some inputs failed") with the table format, 141 with the others."""
    import io

    from emovit.results import FaceResult, ImageResult

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    writer = ResultWriter(Gone(), "table", ["happy", "sad"])
    writer.write(ImageResult("a.jpg", faces=[FaceResult({"happy": 0.9, "sad": 0.1}, box=(1, 2, 3, 4))]))
    with pytest.raises(BrokenPipeError):
        writer.close()


def test_the_faces_of_a_group_photo_are_told_apart_in_the_table() -> None:
    """Three rows of one photo with nothing to tell its faces apart (csv and json give the
    face's index and box; video rows their track): each row says its face's index."""
    import io

    from emovit.results import FaceResult, ImageResult

    faces = [FaceResult({"happy": p, "sad": 1 - p}, box=(i, 0, i + 9, 9)) for i, p in enumerate((0.9, 0.2))]
    buffer = io.StringIO()
    writer = ResultWriter(buffer, "table", ["happy", "sad"])
    writer.write(ImageResult("group.jpg", faces=faces))
    writer.write(ImageResult("one.jpg", faces=faces[:1]))
    writer.close()
    table = buffer.getvalue()
    assert "face 0: happy" in table and "face 1: sad" in table and table.count("face ") == 2


def test_ctrl_c_while_the_command_line_loads_is_an_interrupt_not_a_traceback() -> None:
    """A Ctrl-C in the first third of a second (Python importing the command line, before its
    handler exists) printed a KeyboardInterrupt traceback. The console script (and
    ``python -m emovit``) load it themselves: `interrupted`, exit 130."""
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "class Interrupt(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'emovit.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['emovit', '--version']\n"
        "from emovit.__main__ import main\n"
        "main()\n"
    )
    interrupted = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert interrupted.returncode == 130, interrupted.stderr
    assert interrupted.stderr == "interrupted\n"
    loaded = subprocess.run(
        [sys.executable, "-m", "emovit", "--version"], capture_output=True, text=True, timeout=60
    )
    assert loaded.returncode == 0 and loaded.stdout.startswith("emovit, version"), loaded.stderr
